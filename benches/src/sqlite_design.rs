//! The design the SQL-backed servers use, over SQLite: the comparison
//! baseline for `rotoken bench --compare sqlite` and the criterion
//! `contention` benchmarks.
//!
//! One row per refresh token, as Ory Hydra and Supabase Auth v1 keep them:
//!
//! ```sql
//! CREATE TABLE refresh_tokens (
//!     id INTEGER PRIMARY KEY,    -- rowid
//!     token_hash BLOB NOT NULL UNIQUE,
//!     family_id BLOB NOT NULL,   -- Hydra's request_id, Supabase's session_id
//!     parent_id INTEGER,         -- the token this one replaced
//!     revoked INTEGER NOT NULL,  -- 0 live, 1 used (rotated), 2 revoked
//!     created_at INTEGER NOT NULL,
//!     client_id TEXT NOT NULL,
//!     subject TEXT NOT NULL,
//!     scope TEXT NOT NULL
//! );
//! CREATE INDEX refresh_tokens_parent ON refresh_tokens(parent_id);
//! CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);
//! ```
//!
//! A rotation is one transaction (`BEGIN IMMEDIATE`): look the presented
//! token up by the hash of its text; a live token is marked used and a
//! child row inserted (it copies the grant and points at its parent); a
//! used token is reuse, so the family is walked from that token down the
//! parent pointers (a recursive query) and every row revoked; a revoked
//! token is refused. Tokens are 32 random bytes; only their BLAKE3 hash is
//! stored (Hydra stores an HMAC signature, Supabase v1 the plain text: a
//! hash is the cheaper of the honest choices). No grace window: a
//! benchmark presents only current tokens, so it would never be consulted.
//!
//! The database runs in WAL mode with `synchronous=FULL` (or `NORMAL`, for
//! comparison). All transactions go through one connection behind a mutex:
//! SQLite has one writer at a time anyway, and queueing on a mutex is the
//! best any server can do with it (separate connections would contend
//! through `busy_timeout`, whose sleep-and-retry is far slower).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::workload::{BoxError, Rotator};

/// A refresh token of the SQLite design.
pub type SqlToken = crate::opaque_token::OpaqueToken;

/// What presenting a token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The token was live: it is now used and this is its successor.
    Rotated(SqlToken),
    /// The token was already used: its family was walked and `revoked` rows revoked.
    ReuseDetected {
        /// Rows newly revoked by the walk (the presented one included).
        revoked: usize,
    },
    /// The token's family is revoked.
    Revoked,
    /// No such token.
    Unknown,
    /// Another client presented it; nothing changed.
    ClientMismatch,
}

/// SQLite's `synchronous` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// `FULL`: the WAL is synced at every commit (durable, as the peers run it).
    Full,
    /// `NORMAL`: the WAL is synced only at checkpoints (a crash may lose recent commits).
    Normal,
}

/// The one-row-per-token design over one SQLite database file.
#[derive(Debug)]
pub struct SqliteDesign {
    conn: Mutex<Connection>,
    path: PathBuf,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS refresh_tokens (
    id INTEGER PRIMARY KEY,
    token_hash BLOB NOT NULL UNIQUE,
    family_id BLOB NOT NULL,
    parent_id INTEGER,
    revoked INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    scope TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS refresh_tokens_parent ON refresh_tokens(parent_id);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens(family_id);
";

const INSERT: &str = "INSERT INTO refresh_tokens \
     (token_hash, family_id, parent_id, revoked, created_at, client_id, subject, scope) \
     VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, ?7)";

impl SqliteDesign {
    /// Opens (or creates) the database at `path` in WAL mode with the given `synchronous`.
    ///
    /// # Errors
    ///
    /// A SQLite error.
    pub fn open(path: impl AsRef<Path>, synchronous: Synchronous) -> Result<Self, BoxError> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("SQLite refused WAL mode (got {mode})").into());
        }
        conn.pragma_update(
            None,
            "synchronous",
            match synchronous {
                Synchronous::Full => "FULL",
                Synchronous::Normal => "NORMAL",
            },
        )?;
        conn.execute_batch(SCHEMA)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(Self {
            conn: Mutex::new(conn),
            path,
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Issues one family (its first token), in its own transaction.
    ///
    /// # Errors
    ///
    /// A SQLite error.
    pub fn issue(&self, subject: &str, client_id: &str, scope: &str) -> Result<SqlToken, BoxError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let token = insert_family(&tx, subject, client_id, scope)?;
        tx.commit()?;
        Ok(token)
    }

    /// Issues `count` families with `grant(i)` giving (subject, client, scope),
    /// `per_transaction` to a transaction (to populate quickly).
    ///
    /// # Errors
    ///
    /// A SQLite error.
    pub fn issue_many(
        &self,
        count: usize,
        per_transaction: usize,
        grant: impl Fn(usize) -> (String, String, String),
    ) -> Result<Vec<SqlToken>, BoxError> {
        let mut out = Vec::with_capacity(count);
        let mut conn = self.conn();
        while out.len() < count {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let end = count.min(out.len() + per_transaction.max(1));
            for i in out.len()..end {
                let (subject, client, scope) = grant(i);
                out.push(insert_family(&tx, &subject, &client, &scope)?);
            }
            tx.commit()?;
        }
        Ok(out)
    }

    /// Presents `token` from `client_id`: one transaction.
    ///
    /// # Errors
    ///
    /// A SQLite error (refusals are [`Outcome`]s).
    pub fn rotate(&self, token: &SqlToken, client_id: &str) -> Result<Outcome, BoxError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let outcome = rotate_in(&tx, token, client_id)?;
        tx.commit()?;
        Ok(outcome)
    }

    /// Rotates every token in `tokens` in one transaction (a server that
    /// batches its requests); each token is replaced by its successor.
    ///
    /// # Errors
    ///
    /// A SQLite error, or any token that is not live (nothing is committed then).
    pub fn rotate_all(&self, tokens: &mut [SqlToken], client_id: &str) -> Result<(), BoxError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut next = Vec::with_capacity(tokens.len());
        for token in tokens.iter() {
            match rotate_in(&tx, token, client_id)? {
                Outcome::Rotated(t) => next.push(t),
                other => return Err(format!("a benchmark token was refused: {other:?}").into()),
            }
        }
        tx.commit()?;
        for (slot, t) in tokens.iter_mut().zip(next) {
            *slot = t;
        }
        Ok(())
    }

    /// Families with a live token.
    ///
    /// # Errors
    ///
    /// A SQLite error.
    pub fn live_families(&self) -> Result<u64, BoxError> {
        let n: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM refresh_tokens WHERE revoked = 0", [], |r| {
                r.get(0)
            })?;
        Ok(u64::try_from(n)?)
    }

    /// Rows stored (one per token ever issued).
    ///
    /// # Errors
    ///
    /// A SQLite error.
    pub fn rows(&self) -> Result<u64, BoxError> {
        let n: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM refresh_tokens", [], |r| r.get(0))?;
        Ok(u64::try_from(n)?)
    }

    /// Checkpoints and truncates the WAL, `VACUUM`s (SQLite's compaction),
    /// and returns the size of the database file and its WAL.
    ///
    /// # Errors
    ///
    /// A SQLite or file-system error.
    pub fn compact_and_size(&self) -> Result<u64, BoxError> {
        let conn = self.conn();
        conn.execute_batch("VACUUM")?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let wal = self.path.with_extension(
            self.path
                .extension()
                .map_or_else(|| "wal".to_owned(), |e| format!("{}-wal", e.to_string_lossy())),
        );
        let wal_bytes = std::fs::metadata(&wal).map_or(0, |m| m.len());
        Ok(std::fs::metadata(&self.path)?.len() + wal_bytes)
    }
}

fn insert_family(tx: &Transaction<'_>, subject: &str, client_id: &str, scope: &str) -> Result<SqlToken, BoxError> {
    let token = SqlToken::random()?;
    let mut family = [0u8; 16];
    getrandom::fill(&mut family).map_err(|e| format!("random: {e}"))?;
    tx.prepare_cached(INSERT)?.execute(params![
        token.hash().as_slice(),
        family.as_slice(),
        Option::<i64>::None,
        now_ms(),
        client_id,
        subject,
        scope
    ])?;
    Ok(token)
}

/// One rotation inside an open transaction.
fn rotate_in(tx: &Transaction<'_>, token: &SqlToken, client_id: &str) -> Result<Outcome, BoxError> {
    type Row = (i64, Vec<u8>, i64, String, String, String);
    let row: Option<Row> = tx
        .prepare_cached(
            "SELECT id, family_id, revoked, client_id, subject, scope FROM refresh_tokens WHERE token_hash = ?1",
        )?
        .query_row(params![token.hash().as_slice()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })
        .optional()?;
    let Some((id, family, revoked, client, subject, scope)) = row else {
        return Ok(Outcome::Unknown);
    };
    if client != client_id {
        return Ok(Outcome::ClientMismatch);
    }
    match revoked {
        0 => {}
        1 => {
            // Reuse: walk the family from the presented token down its
            // descendants (the current token among them) and revoke them all.
            let revoked = tx
                .prepare_cached(
                    "WITH RECURSIVE chain(id) AS ( \
                         SELECT ?1 \
                         UNION ALL \
                         SELECT t.id FROM refresh_tokens t JOIN chain c ON t.parent_id = c.id \
                     ) \
                     UPDATE refresh_tokens SET revoked = 2 WHERE id IN chain AND revoked != 2",
                )?
                .execute(params![id])?;
            return Ok(Outcome::ReuseDetected { revoked });
        }
        _ => return Ok(Outcome::Revoked),
    }
    tx.prepare_cached("UPDATE refresh_tokens SET revoked = 1 WHERE id = ?1")?
        .execute(params![id])?;
    let child = SqlToken::random()?;
    tx.prepare_cached(INSERT)?.execute(params![
        child.hash().as_slice(),
        family,
        id,
        now_ms(),
        client,
        subject,
        scope
    ])?;
    Ok(Outcome::Rotated(child))
}

/// The design as a workload [`Rotator`]: a call of one token is one
/// transaction; a call of many rotates them all in one transaction.
#[derive(Debug)]
pub struct SqliteRotator<'a> {
    /// The database.
    pub design: &'a SqliteDesign,
    /// The client presenting every token.
    pub client_id: &'a str,
}

impl Rotator for SqliteRotator<'_> {
    type Token = SqlToken;

    fn rotate(&self, tokens: &mut [SqlToken]) -> Result<(), BoxError> {
        match tokens {
            [one] => match self.design.rotate(one, self.client_id)? {
                Outcome::Rotated(next) => {
                    *one = next;
                    Ok(())
                }
                other => Err(format!("a benchmark token was refused: {other:?}").into()),
            },
            many => self.design.rotate_all(many, self.client_id),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn design() -> (tempfile::TempDir, SqliteDesign) {
        let dir = tempfile::tempdir().unwrap();
        let d = SqliteDesign::open(dir.path().join("peer.sqlite"), Synchronous::Normal).unwrap();
        (dir, d)
    }

    fn rotated(o: Outcome) -> SqlToken {
        match o {
            Outcome::Rotated(t) => t,
            other => panic!("expected a rotation, got {other:?}"),
        }
    }

    #[test]
    fn reuse_of_an_old_token_revokes_the_whole_family() {
        let (_dir, d) = design();
        let other = d.issue("bob", "web-app", "openid").unwrap();
        let t0 = d.issue("alice", "web-app", "openid offline_access").unwrap();
        let t1 = rotated(d.rotate(&t0, "web-app").unwrap());
        let t2 = rotated(d.rotate(&t1, "web-app").unwrap());
        let t3 = rotated(d.rotate(&t2, "web-app").unwrap());
        assert_eq!(d.rows().unwrap(), 5, "one row per token");

        // Another client is refused without changing anything.
        assert_eq!(d.rotate(&t3, "evil-app").unwrap(), Outcome::ClientMismatch);
        assert_eq!(
            d.rotate(&crate::opaque_token::OpaqueToken([9; 32]), "web-app").unwrap(),
            Outcome::Unknown
        );

        // The generation-1 token comes back: the walk reaches t1, t2 and t3.
        assert_eq!(d.rotate(&t1, "web-app").unwrap(), Outcome::ReuseDetected { revoked: 3 });
        // The thief's and the victim's current token are both dead now.
        assert_eq!(d.rotate(&t3, "web-app").unwrap(), Outcome::Revoked);
        assert_eq!(d.rotate(&t0, "web-app").unwrap(), Outcome::ReuseDetected { revoked: 1 });
        // The other family is untouched.
        assert_eq!(d.live_families().unwrap(), 1);
        rotated(d.rotate(&other, "web-app").unwrap());
    }

    #[test]
    fn batches_rotate_in_one_transaction_and_all_or_nothing() {
        let (_dir, d) = design();
        let mut tokens = d
            .issue_many(10, 4, |i| (format!("user{i}"), "web-app".into(), "openid".into()))
            .unwrap();
        let first = tokens.clone();
        SqliteRotator {
            design: &d,
            client_id: "web-app",
        }
        .rotate(&mut tokens)
        .unwrap();
        assert_eq!(d.rows().unwrap(), 20);
        assert_eq!(d.live_families().unwrap(), 10);
        // A batch holding a used token fails whole: nothing of it is committed.
        let mut mixed = vec![tokens[0].clone(), first[1].clone()];
        assert!(d.rotate_all(&mut mixed, "web-app").is_err());
        assert_eq!(d.rows().unwrap(), 20);
        assert!(d.compact_and_size().unwrap() > 0);
    }
}
