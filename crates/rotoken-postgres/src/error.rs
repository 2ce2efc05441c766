//! PostgreSQL errors as [`StoreError`]s.

use rotoken::{OpenError, StoreError};
use tokio_postgres::error::SqlState;

/// A PostgreSQL error as the engine sees it: a serialization failure or a
/// deadlock is [`StoreError::Conflict`] (the engine runs the batch again),
/// a lock wait past `lock_timeout` (SQLSTATE 55P03) is [`StoreError::Busy`],
/// everything else [`StoreError::Storage`] with a [`PgStoreError::Postgres`]
/// source, whose text carries the SQLSTATE and the server's message.
pub(crate) fn from_pg(e: tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED => {
            StoreError::Conflict(describe(&e))
        }
        Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE => StoreError::Busy(describe(&e)),
        _ => StoreError::storage(PgStoreError::Postgres(e)),
    }
}

/// A pool's failure to hand out a connection.
pub(crate) fn from_pool(e: deadpool_postgres::PoolError) -> PgStoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => PgStoreError::Connect(e),
        other => PgStoreError::Pool(other.to_string()),
    }
}

/// What an operator needs from a `tokio_postgres` error: for an error the
/// server sent, `SQLSTATE 55P03: canceling statement due to lock timeout`
/// (with its detail and hint, if any); for any other, tokio-postgres's text
/// and every cause (`error connecting to server: Connection refused (os
/// error 111)`), where its own `Display` says only "db error".
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("SQLSTATE {}: {}", db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            s.push_str(" (detail: ");
            s.push_str(detail);
            s.push(')');
        }
        if let Some(hint) = db.hint() {
            s.push_str(" (hint: ");
            s.push_str(hint);
            s.push(')');
        }
        return s;
    }
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// A failure of the PostgreSQL store: the server's own errors (with their
/// SQLSTATE), and failures of this crate's making (a lost connection, a
/// timeout). The engine sees it as the source of a
/// [`StoreError::Storage`] (or of [`StoreError::OutcomeUnknown`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgStoreError {
    /// PostgreSQL reported an error, or the connection failed. Shown as
    /// `SQLSTATE <code>: <message>` (with the detail and hint) for an
    /// error the server sent.
    #[error("{}", describe(.0))]
    Postgres(tokio_postgres::Error),
    /// A new connection could not be made (the server is down, refuses
    /// connections, or is still starting up).
    #[error("could not connect to PostgreSQL: {}", describe(.0))]
    Connect(tokio_postgres::Error),
    /// No pooled connection could be had (every connection stayed busy
    /// past the wait timeout, or connecting took too long).
    #[error("no PostgreSQL connection: {0}")]
    Pool(String),
    /// An operation did not finish within the store's operation timeout;
    /// its connection was closed, so its transaction rolled back (unless
    /// its `COMMIT` had been sent: then the error is
    /// [`StoreError::OutcomeUnknown`]).
    #[error("PostgreSQL did not answer within {0:?}")]
    TimedOut(std::time::Duration),
    /// The transaction's connection was lost by an earlier failure.
    #[error("the transaction's connection is gone after an earlier failure")]
    ConnectionGone,
    /// A statement of this transaction failed earlier; it cannot commit.
    #[error("an earlier statement of this transaction failed")]
    Aborted,
    /// The store's runtime stopped.
    #[error("the PostgreSQL store's runtime stopped")]
    RuntimeGone,
    /// A value read back does not fit the type the engine expects.
    #[error("unexpected value in {0}")]
    BadValue(&'static str),
    /// A rotoken parameter of the connection URL has a value that is not
    /// what it takes (see [`crate::PgOptions::take_url_parameters`]).
    #[error("URL parameter {name}: {value:?} is not {expected}")]
    BadParameter {
        /// The parameter.
        name: String,
        /// Its value in the URL.
        value: String,
        /// What it takes.
        expected: &'static str,
    },
}

impl PgStoreError {
    /// The SQLSTATE PostgreSQL reported, if the server sent this error.
    pub fn code(&self) -> Option<&SqlState> {
        self.postgres().and_then(tokio_postgres::Error::code)
    }

    /// The `tokio_postgres` error underneath, if any.
    pub fn postgres(&self) -> Option<&tokio_postgres::Error> {
        match self {
            Self::Postgres(e) | Self::Connect(e) => Some(e),
            _ => None,
        }
    }

    /// True for a failure to reach the server that may clear by itself
    /// (refused or timed-out connections, a server starting up or shutting
    /// down, too many connections); false for errors that retrying does
    /// not mend (a bad URL, a refused password, a missing database, a
    /// schema problem).
    pub fn is_connection_failure(&self) -> bool {
        match self {
            Self::Pool(_) | Self::TimedOut(_) | Self::ConnectionGone => true,
            Self::Postgres(e) | Self::Connect(e) => match e.code() {
                Some(code) => is_transient_code(code),
                None => e.is_closed() || caused_by_io(e),
            },
            _ => false,
        }
    }
}

/// SQLSTATEs of a server that is not (yet, or any more) taking work.
fn is_transient_code(code: &SqlState) -> bool {
    let c = code.code();
    c.starts_with("08") // connection exception
        || c == "57P01" // admin_shutdown
        || c == "57P02" // crash_shutdown
        || c == "57P03" // cannot_connect_now: starting up, in recovery
        || c == "53300" // too_many_connections
}

fn caused_by_io(e: &tokio_postgres::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// True if opening failed because the server could not be reached (worth
/// trying again later), not because of what it holds or what it said.
pub fn is_unreachable(e: &OpenError) -> bool {
    let OpenError::Store(StoreError::Storage(source)) = e else {
        return false;
    };
    let source: &(dyn std::error::Error + 'static) = &**source;
    source
        .downcast_ref::<PgStoreError>()
        .is_some_and(PgStoreError::is_connection_failure)
}

impl From<PgStoreError> for StoreError {
    fn from(e: PgStoreError) -> Self {
        StoreError::storage(e)
    }
}

/// Damaged stored data in `table`.
pub(crate) fn corrupt(table: &'static str, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_errors_are_storage_errors() {
        let e: StoreError = PgStoreError::RuntimeGone.into();
        assert_eq!(e.code(), rotoken::Code::StorageError);
        assert!(matches!(e, StoreError::Storage(_)));
    }

    #[test]
    fn pool_timeouts_are_connection_failures_and_bad_parameters_are_not() {
        assert!(PgStoreError::Pool("timeout".into()).is_connection_failure());
        let bad = PgStoreError::BadParameter {
            name: "pool_size".into(),
            value: "x".into(),
            expected: "a number",
        };
        assert!(!bad.is_connection_failure());
        assert!(!is_unreachable(&OpenError::NotRotoken));
        assert!(is_unreachable(&OpenError::Store(
            PgStoreError::TimedOut(std::time::Duration::from_secs(1)).into()
        )));
    }
}
