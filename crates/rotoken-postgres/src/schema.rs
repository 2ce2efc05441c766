//! The schema: versioned migrations, applied when a store opens.
//!
//! `rotoken_migrations` lists every applied version. Opening takes a
//! transaction-level advisory lock (so two servers starting at once do not
//! both migrate), reads the highest version, refuses a newer schema than
//! this build knows (rolling back: nothing is written), and applies the
//! missing migrations in that one transaction, under a statement timeout
//! of its own (`PgOptions::migration_timeout`), not the requests' one.

use rotoken::store::{Migration, SchemaStatus};
use rotoken::{OpenError, StoreError};

use crate::conn::Conn;
use crate::error::{PgStoreError, from_pg};

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The advisory lock key that serialises migrations and the first
/// server's key check (`pg_advisory_xact_lock`): "rotoken" in ASCII. No
/// rotation or issue takes it; a session holding it (`pg_advisory_lock`)
/// delays only stores connecting to a new or older database.
pub const ADVISORY_KEY: i64 = 0x0072_6f74_6f6b_656e;

/// What each of [`MIGRATIONS`] does, in the same order (for logs and
/// `rotoken migrate`).
const STEPS: &[Migration] = &[Migration::new(
    1,
    "create the tables rotoken_families, rotoken_events, rotoken_event_seq and rotoken_meta",
)];

/// Migration `n` is `MIGRATIONS[n - 1]`. A schema change adds an entry
/// (and one to [`STEPS`]) and raises [`SCHEMA_VERSION`]; a migration that
/// shipped is never edited (crates/rotoken-conformance/fixtures holds a
/// dump of every release's database).
const MIGRATIONS: &[&str] = &[
    // 1: one row per family (P2): the MAC'd record and, as columns, what the
    // indexes need. The record is rewritten on every rotation while the tags
    // and usually the gc time stay, so updates can be HOT (heap-only: no
    // index write) when the page has room: fillfactor leaves that room.
    "CREATE TABLE rotoken_families (
         id bytea PRIMARY KEY,
         record bytea NOT NULL,
         subject_tag bytea NOT NULL,
         client_tag bytea NOT NULL,
         gc_at bigint NOT NULL
     ) WITH (fillfactor = 80);
     CREATE INDEX rotoken_families_subject ON rotoken_families (subject_tag);
     CREATE INDEX rotoken_families_client ON rotoken_families (client_tag);
     CREATE INDEX rotoken_families_gc_at ON rotoken_families (gc_at);
     CREATE TABLE rotoken_events (
         seq bigint PRIMARY KEY,
         at_millis bigint NOT NULL,
         value bytea NOT NULL
     );
     CREATE TABLE rotoken_event_seq (
         one boolean PRIMARY KEY DEFAULT true CHECK (one),
         next bigint NOT NULL
     );
     INSERT INTO rotoken_event_seq (next) VALUES (1);
     CREATE TABLE rotoken_meta (
         name text PRIMARY KEY,
         value bytea NOT NULL
     );",
];

/// Brings the database on `conn` to [`SCHEMA_VERSION`], or refuses it;
/// says what it found and applied.
pub(crate) async fn migrate(conn: &mut Conn, timeout: std::time::Duration) -> Result<SchemaStatus, OpenError> {
    conn.in_txn = true;
    let result = migrate_in_txn(conn, timeout).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    conn.client().batch_execute(end).await.map_err(from_pg)?;
    conn.in_txn = false;
    result
}

async fn migrate_in_txn(conn: &Conn, timeout: std::time::Duration) -> Result<SchemaStatus, OpenError> {
    let c = conn.client();
    // The migration (and the wait for another server's) is not held to
    // the statement timeout of requests: its own, for this transaction only.
    c.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL statement_timeout = {}",
        timeout.as_millis().max(1)
    ))
    .await
    .map_err(from_pg)?;
    c.execute("SELECT pg_advisory_xact_lock($1)", &[&ADVISORY_KEY])
        .await
        .map_err(from_pg)?;
    let exists: bool = c
        .query_one("SELECT to_regclass('rotoken_migrations') IS NOT NULL", &[])
        .await
        .map_err(from_pg)?
        .get(0);
    let current: u32 = if exists {
        let v: Option<i32> = c
            .query_one("SELECT max(version) FROM rotoken_migrations", &[])
            .await
            .map_err(from_pg)?
            .get(0);
        u32::try_from(v.unwrap_or(0)).map_err(|_| StoreError::from(PgStoreError::BadValue("rotoken_migrations")))?
    } else {
        let families: bool = c
            .query_one("SELECT to_regclass('rotoken_families') IS NOT NULL", &[])
            .await
            .map_err(from_pg)?
            .get(0);
        if families {
            // Tables of ours without the migrations table: not something we wrote.
            return Err(OpenError::NotRotoken);
        }
        0
    };
    if current > SCHEMA_VERSION {
        return Err(OpenError::UnsupportedSchema {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    if !exists {
        c.batch_execute(
            "CREATE TABLE rotoken_migrations (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(from_pg)?;
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        c.batch_execute(sql).await.map_err(from_pg)?;
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        c.execute("INSERT INTO rotoken_migrations (version) VALUES ($1)", &[&version])
            .await
            .map_err(from_pg)?;
    }
    let applied = STEPS.get(current as usize..).unwrap_or_default().to_vec();
    Ok(SchemaStatus::new(current, SCHEMA_VERSION, applied))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_version_has_a_migration() {
        assert_eq!(MIGRATIONS.len(), SCHEMA_VERSION as usize);
        assert_eq!(STEPS.len(), MIGRATIONS.len());
        for (i, step) in STEPS.iter().enumerate() {
            assert_eq!(step.version as usize, i + 1);
        }
    }
}
