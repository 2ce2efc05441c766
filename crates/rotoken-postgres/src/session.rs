//! One pooled connection carrying one transaction, driven from a
//! synchronous caller: statements are sent pipelined, the `BEGIN` rides
//! with the first of them, and the `COMMIT` with the buffered writes.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rotoken::StoreError;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::PostgresStore;
use crate::bridge::{Pending, pipeline};
use crate::conn::Conn;
use crate::error::{PgStoreError, corrupt, from_pg, from_pool};

/// A statement's parameters, owned (they travel to the store's runtime).
pub(crate) type Params = Vec<Box<dyn ToSql + Sync + Send>>;

/// A statement and its parameters.
pub(crate) type Statement = (&'static str, Params);

struct State {
    /// The connection, taken from the pool by the first statement (in the
    /// same trip to the store's runtime).
    conn: Option<Conn>,
    /// A connection was taken (so `conn: None` means it was lost).
    connected: bool,
    /// The `BEGIN` not sent yet: it goes with the first statement.
    begin: Option<&'static str>,
    /// A statement failed: the server has aborted the transaction.
    failed: bool,
}

/// A transaction on one connection. Dropping it ends the transaction
/// (rolls it back) without waiting.
pub(crate) struct Session<'s> {
    pub(crate) store: &'s PostgresStore,
    state: RefCell<State>,
}

impl<'s> Session<'s> {
    /// A transaction that starts with `begin` (sent with the first statement).
    pub(crate) fn new(store: &'s PostgresStore, begin: &'static str) -> Self {
        Self {
            store,
            state: RefCell::new(State {
                conn: None,
                connected: false,
                begin: Some(begin),
                failed: false,
            }),
        }
    }

    /// Whether anything has been sent (so there is a transaction to end).
    pub(crate) fn begun(&self) -> bool {
        self.state.borrow().begin.is_none()
    }

    /// Runs `statements` in order in one round trip (with the pending
    /// `BEGIN` first and, if `commit`, `COMMIT` last) and returns each one's rows.
    /// The first failure is the result; the transaction is then aborted.
    ///
    /// With `commit`, a failure after the `COMMIT` may have reached the
    /// server (the connection lost or timed out with no statement refused
    /// before it) is [`StoreError::OutcomeUnknown`]: the transaction may
    /// have committed. A failure before anything was sent, or a statement
    /// the server refused (so the `COMMIT` rolled back), is not.
    pub(crate) fn run(&self, statements: Vec<Statement>, commit: bool) -> Result<Vec<Vec<Row>>, StoreError> {
        let mut st = self.state.borrow_mut();
        if st.failed {
            return Err(PgStoreError::Aborted.into());
        }
        let conn = st.conn.take();
        if conn.is_none() && st.connected {
            return Err(PgStoreError::ConnectionGone.into());
        }
        st.connected = true;
        let begin = st.begin.take();
        let pool = self.store.pool.clone();
        let sent = Arc::new(AtomicBool::new(false));
        let sent_there = Arc::clone(&sent);
        let ran = self.store.bridge.run(async move {
            let mut conn = match conn {
                Some(c) => c,
                None => Conn::new(pool.get().await.map_err(|e| StoreError::from(from_pool(e)))?),
            };
            if begin.is_some() {
                conn.in_txn = true;
            }
            let result = run_pipelined(&conn, begin, &statements, commit, &sent_there).await;
            if let Ok(true) = &result.1 {
                // The transaction ended (committed, or rolled back after a failure).
                conn.in_txn = false;
            }
            Ok((conn, result))
        });
        let (conn, (rows, ended)) = match ran {
            Ok(r) => r,
            Err(e) => {
                // No connection, or timed out: the connection was dropped
                // (closed), and with it the transaction, unless the server
                // had the COMMIT already.
                st.failed = true;
                return Err(match e {
                    StoreError::Storage(source) if commit && sent.load(Ordering::Acquire) => {
                        StoreError::OutcomeUnknown(source)
                    }
                    e => e,
                });
            }
        };
        st.conn = Some(conn);
        match (rows, ended) {
            (Ok(rows), _) => Ok(rows),
            (Err(e), _) => {
                st.failed = true;
                Err(e)
            }
        }
    }

    /// Rolls the transaction back to `savepoint` after a statement failed
    /// (so it may go on): one round trip.
    pub(crate) fn rollback_to(&self, savepoint: &'static str) -> Result<(), StoreError> {
        let mut st = self.state.borrow_mut();
        let Some(conn) = st.conn.take() else {
            st.failed = true;
            return Err(PgStoreError::ConnectionGone.into());
        };
        let sql = format!("ROLLBACK TO SAVEPOINT {savepoint}");
        let ran = self.store.bridge.run(async move {
            let r = conn.client().batch_execute(&sql).await.map_err(from_pg);
            Ok((conn, r))
        });
        match ran {
            Ok((conn, r)) => {
                st.conn = Some(conn);
                r?;
                st.failed = false;
                Ok(())
            }
            Err(e) => {
                st.failed = true;
                Err(e)
            }
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        let Some(mut conn) = st.conn.take() else { return };
        if !conn.in_txn {
            return; // nothing begun or already ended: back to the pool
        }
        // Read transactions commit, write transactions roll back: either
        // way nothing of an unfinished write survives.
        self.store.bridge.detach(async move {
            if conn.client().batch_execute("ROLLBACK").await.is_ok() {
                conn.in_txn = false;
            }
            drop(conn);
        });
    }
}

/// The rows of each statement, and whether the `COMMIT` completed (the
/// transaction is over, whatever happened to the statements). `sent` is
/// set once the statements (and the `COMMIT`) are on their way.
async fn run_pipelined(
    conn: &Conn,
    begin: Option<&'static str>,
    statements: &[Statement],
    commit: bool,
    sent: &AtomicBool,
) -> (Result<Vec<Vec<Row>>, StoreError>, Result<bool, ()>) {
    let c = conn.client();
    let mut prepared = Vec::with_capacity(statements.len());
    for (sql, _) in statements {
        // Cached per connection: a round trip only the first time.
        match c.prepare_cached(sql).await {
            Ok(s) => prepared.push(s),
            Err(e) => return (Err(from_pg(e)), Err(())),
        }
    }
    let mut work: Vec<Pending<'_, Option<Vec<Row>>>> = Vec::with_capacity(statements.len() + 2);
    if let Some(b) = begin {
        work.push(Box::pin(async move { c.batch_execute(b).await.map(|()| None) }));
    }
    for (stmt, (_, params)) in prepared.iter().zip(statements) {
        work.push(Box::pin(async move {
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
            c.query(stmt, &refs).await.map(Some)
        }));
    }
    if commit {
        work.push(Box::pin(async move { c.batch_execute("COMMIT").await.map(|()| None) }));
    }
    sent.store(true, Ordering::Release);
    let results = pipeline(work).await;
    let ended = match (commit, results.last()) {
        (true, Some(Ok(_))) => Ok(true),
        (true, _) => Err(()),
        (false, _) => Ok(false),
    };
    let mut rows = Vec::with_capacity(statements.len());
    let last = results.len().saturating_sub(1);
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(Some(r)) => rows.push(r),
            Ok(None) => {}
            Err(e) if commit && commit_may_have_happened(&e, i == last) => {
                return (Err(StoreError::outcome_unknown(PgStoreError::Postgres(e))), ended);
            }
            Err(e) => return (Err(classify(e)), ended),
        }
    }
    (Ok(rows), ended)
}

/// Whether the first failure of a pipeline ending in `COMMIT` leaves the
/// commit's outcome unknown: the connection failed (lost, closed, timed
/// out) with every request possibly sent, or the `COMMIT` itself was met
/// by the server going away. A statement the server refused means the
/// transaction was aborted (its `COMMIT` rolls back), and a session the
/// server ended before the `COMMIT` was reached was rolled back.
fn commit_may_have_happened(e: &tokio_postgres::Error, is_commit: bool) -> bool {
    match e.code() {
        None => true,
        Some(code) => {
            let c = code.code();
            is_commit
                && (c.starts_with("08") // connection exception
                    || c.starts_with("57P") // admin / crash shutdown
                    || c.starts_with("58") // system error (I/O writing the commit)
                    || c.starts_with("XX")) // internal error, PANIC
        }
    }
}

/// [`from_pg`], with a duplicate family id reported as corruption (128
/// random bits never collide in practice; the store refuses to overwrite).
fn classify(e: tokio_postgres::Error) -> StoreError {
    let duplicate_family = e.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && e.as_db_error().and_then(|d| d.table()) == Some("rotoken_families");
    if duplicate_family {
        return corrupt("families", "family id collision");
    }
    from_pg(e)
}
