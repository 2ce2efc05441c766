//! # rotoken-postgres
//!
//! A [`rotoken::Store`] in PostgreSQL, for several servers (several
//! `rotoken serve` processes, or authorization servers linking rotoken)
//! sharing one set of refresh-token families.
//!
//! ```no_run
//! use rotoken::{Engine, Grant, Keyring, Options, RotateRequest, Scope};
//! use rotoken_postgres::{PgOptions, PostgresStore};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Every server connects to the same database with the same keys.
//! let keys = Keyring::generate()?;
//! let store = PostgresStore::connect("postgres://rotoken@db.internal/rotoken", PgOptions::default())?;
//! let engine = Engine::with_store(store, keys, Options::default())?;
//!
//! let first = engine.issue(&Grant::new("alice", "web-app", Scope::parse("openid offline_access")?))?;
//! let second = engine.rotate(first.refresh_token.expose(), &RotateRequest::new("web-app"))?;
//! assert_eq!(second.generation, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # What is stored
//!
//! | table | row |
//! |---|---|
//! | `rotoken_families` | one per family: `id` (16 bytes, primary key), `record` (the MAC'd record), `subject_tag`, `client_tag` (16-byte keyed tags, indexed), `gc_at` (ms, indexed) |
//! | `rotoken_events` | `seq`, `at_millis`, `value` (the encoded event) |
//! | `rotoken_event_seq` | one row: the next event number |
//! | `rotoken_meta` | `name`, `value` (the key-check value) |
//! | `rotoken_migrations` | each applied schema version |
//!
//! No row per token: a family's row keeps its size however often it rotates
//! (P2), and every value is a keyed hash, a MAC'd record or sealed bytes (P1).
//!
//! # How the store keeps the contract
//!
//! * **One winner per family, across servers.** A batch locks its families
//!   with one `SELECT ... WHERE id = ANY($1) ORDER BY id FOR UPDATE` (one
//!   round trip, one lock order for everyone). Under `READ COMMITTED` that
//!   waits for another server's transaction holding the row and then reads
//!   its committed result, so the engine decides on the latest state: the
//!   loser of a race is answered as a second presenter (the grace
//!   successor), never with an error. Serialization failures and deadlocks
//!   (SQLSTATE 40001, 40P01) are [`rotoken::StoreError::Conflict`]: the
//!   engine runs the batch again.
//! * **Few round trips.** The `BEGIN` rides with the locking read; every
//!   change is buffered and sent at commit as one statement per kind
//!   (arrays unnested) together with the `COMMIT`: a rotation batch of any
//!   size is two round trips.
//! * **A held row fails only its family.** The engine locks through
//!   [`WriteTxn::try_lock_families`]: the same read under `lock_timeout`
//!   ([`PgOptions::lock_wait`], default 2 s) inside a savepoint, in the same
//!   round trip. A row another session holds past that (a stuck `psql`, a
//!   frozen server) is reported busy after one rollback to the savepoint
//!   and a `SKIP LOCKED` read of the rest; only its operations fail
//!   (retryably, `busy`), and the rest of the batch commits.
//! * **No global lock on the write path.** The clock floor every engine
//!   raises is one upsert sent with the `COMMIT`
//!   ([`WriteTxn::raise_meta_i64`]), compared as `int8`, never lowered;
//!   the advisory lock ([`ADVISORY_KEY`]) is taken only by migrations and
//!   by the first server's key check on an empty database.
//! * **Isolation, explicitly.** Write transactions begin `ISOLATION LEVEL
//!   READ COMMITTED` whatever the server's default, because the locking
//!   read must return the latest committed row (under `REPEATABLE READ` a
//!   race with another server would be a serialization failure and a
//!   whole-batch retry instead of a second presenter's answer).
//! * **gc from many servers.** `lock_due` uses `FOR UPDATE SKIP LOCKED`, so
//!   servers collecting at once take different families.
//! * **Event numbers** come from a counter row locked by the transactions
//!   that write events (revocations, reuse, gc; never a plain rotation), in
//!   blocks: they increase in commit order and are never reused.
//! * **Durability.** [`rotoken::store::Commit::Durable`] commits with the
//!   server's `synchronous_commit`, which must be `on` (the default) for a
//!   rotation to survive a crash of the database server;
//!   [`rotoken::store::Commit::Relaxed`] is `SET LOCAL synchronous_commit = off`.
//! * **Schema.** Created and upgraded at [`PostgresStore::connect`] under an
//!   advisory lock, in one transaction; [`Store::schema`] says what was
//!   found and applied. A newer schema than [`SCHEMA_VERSION`] is refused
//!   with [`rotoken::OpenError::UnsupportedSchema`] and nothing is written.
//! * **Backups** are PostgreSQL's own (`pg_dump`, base backups and WAL
//!   archiving): [`Store::backup`] refuses with `backup_unsupported`.
//!
//! # Client crates, and why
//!
//! [`tokio_postgres`] is the maintained native PostgreSQL client of the
//! Rust ecosystem (rust-postgres), and the only one that **pipelines**:
//! requests issued together go out together, which is what turns a batch
//! into two round trips. [`deadpool_postgres`] is its small, widely used
//! pool, with per-connection prepared-statement caches and wait/create
//! timeouts. The sync `postgres` crate cannot pipeline and `block_on`s on
//! the caller's thread (a panic inside a runtime); sqlx would add a query
//! macro layer and its own pool for six statements.
//!
//! The [`rotoken::Store`] trait is synchronous, so the store owns a small
//! tokio runtime: each call is spawned onto it and the caller waits on a
//! plain channel. That works from a plain thread (the engine's batch
//! leader, its commit thread) and from a `spawn_blocking` thread, and does
//! not panic even on a runtime worker.
//!
//! # Settings
//!
//! [`PgOptions`] holds the pool size, the timeouts, the lock wait and the
//! idle timeout; each can be set from the URL too
//! (`postgres://rotoken@db/rotoken?pool_size=8&statement_timeout_ms=5000`:
//! the table is at [`PgOptions::take_url_parameters`]).
//! [`PostgresStore::connect_waiting`] waits for a database that is not up
//! yet. Pooled connections unused for [`PgOptions::idle_timeout`] are
//! closed. The schema migration runs under [`PgOptions::migration_timeout`],
//! not the request statement timeout.
//!
//! # Failure behaviour
//!
//! A database that is down or unreachable gives callers `storage_error`
//! ([`rotoken::StoreError::Storage`]) within the timeouts of [`PgOptions`],
//! never a panic or a hang; the pool reconnects when the database is back.
//! A transaction interrupted by a failure or a timeout closes its
//! connection (the server rolls it back), so nothing half-done is ever
//! committed, and a rotation is acknowledged only after its `COMMIT` was.
//! When the failure came after the `COMMIT` may have reached the server
//! (the connection lost or timed out waiting for its answer), the commit
//! returns [`rotoken::StoreError::OutcomeUnknown`] and the engine reads the
//! outcome back. Every storage error's text carries PostgreSQL's SQLSTATE
//! and message ([`PgStoreError`]).

#![forbid(unsafe_code)]

mod bridge;
mod conn;
mod error;
mod location;
mod schema;
mod session;
mod txn;

#[cfg(feature = "testing")]
pub mod testing;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rotoken::store::{Commit, ReadTxn, SchemaStatus, Store, WriteTxn};
use rotoken::{OpenError, StoreError};

pub use deadpool_postgres;
pub use error::{PgStoreError, is_unreachable};
pub use location::StoreLocation;
pub use schema::{ADVISORY_KEY, SCHEMA_VERSION};
pub use tokio_postgres;

use crate::bridge::Bridge;
use crate::conn::Conn;
use crate::error::from_pool;
use crate::session::Session;
use crate::txn::{PgRead, PgWrite};

/// Connection settings of a [`PostgresStore`].
///
/// Each field can also be set by a parameter of the connection URL (see
/// [`PgOptions::take_url_parameters`]); a parameter in the URL overrides
/// the field.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgOptions {
    /// Most connections open at once. Default 16: the engine keeps up to
    /// half of them busy with write batches in flight at once (families
    /// that two batches share are serialised by row locks); the rest serve
    /// reads. URL: `pool_size`.
    pub pool_size: usize,
    /// How long connecting, or waiting for a free connection, may take.
    /// Default 5 s. URL: `connect_timeout_ms` (libpq's `connect_timeout`,
    /// in seconds, sets the connection attempt alone).
    pub connect_timeout: Duration,
    /// The server's `statement_timeout` for every statement (lock waits
    /// included). Default 10 s. URL: `statement_timeout_ms`.
    pub statement_timeout: Duration,
    /// How long a batch waits for a family's row lock that another
    /// transaction holds (a stuck session, a long transaction) before that
    /// family is reported busy ([`rotoken::store::Locked::Busy`]: only its
    /// operations fail, retryably, and the rest of the batch commits). From
    /// then on it also bounds every other lock wait of that transaction.
    /// Default 2 s. URL: `lock_wait_ms`.
    pub lock_wait: Duration,
    /// A pooled connection unused for this long is closed, so a server
    /// past a burst gives its connections back to the database (whose
    /// `max_connections` all servers share). `None`: never. Default 60 s.
    /// URL: `idle_timeout_ms` (0: never).
    pub idle_timeout: Option<Duration>,
    /// The server's `idle_in_transaction_session_timeout`: a server that
    /// stops mid-transaction (frozen, partitioned) has its locks released
    /// after this. Default 30 s. URL: `idle_in_transaction_timeout_ms`.
    pub idle_in_transaction_timeout: Duration,
    /// The `statement_timeout` of the schema migration run when a store
    /// connects (instead of [`PgOptions::statement_timeout`]: an upgrade
    /// of a large table, or waiting for another server's migration, takes
    /// longer than a request may). Default 10 min. URL: `migration_timeout_ms`.
    pub migration_timeout: Duration,
    /// Worker threads of the store's runtime. Default 2.
    pub runtime_threads: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            lock_wait: Duration::from_secs(2),
            idle_timeout: Some(Duration::from_secs(60)),
            idle_in_transaction_timeout: Duration::from_secs(30),
            migration_timeout: Duration::from_secs(600),
            runtime_threads: 2,
        }
    }
}

/// The URL parameters [`PgOptions::take_url_parameters`] takes.
pub const URL_PARAMETERS: &[&str] = &[
    "pool_size",
    "connect_timeout_ms",
    "statement_timeout_ms",
    "lock_wait_ms",
    "idle_timeout_ms",
    "idle_in_transaction_timeout_ms",
    "migration_timeout_ms",
];

impl PgOptions {
    /// The longest any one store call may take before the caller gets a
    /// storage error: a connection, then a statement, with a second to spare.
    fn operation_timeout(&self) -> Duration {
        self.connect_timeout + self.statement_timeout + Duration::from_secs(1)
    }

    /// Sets the fields named by rotoken's own parameters in the query of
    /// `url` (a `postgres://` or `postgresql://` URL) and returns the URL
    /// without them, for `tokio_postgres` (which refuses parameters it does
    /// not know). Every other parameter (`host`, `sslmode`,
    /// `application_name`, libpq's `connect_timeout`...) stays.
    ///
    /// | parameter | field | unit |
    /// |---|---|---|
    /// | `pool_size` | [`PgOptions::pool_size`] | connections (at least 1) |
    /// | `connect_timeout_ms` | [`PgOptions::connect_timeout`] | ms |
    /// | `statement_timeout_ms` | [`PgOptions::statement_timeout`] | ms |
    /// | `lock_wait_ms` | [`PgOptions::lock_wait`] | ms |
    /// | `idle_timeout_ms` | [`PgOptions::idle_timeout`] | ms, 0 = never |
    /// | `idle_in_transaction_timeout_ms` | [`PgOptions::idle_in_transaction_timeout`] | ms |
    /// | `migration_timeout_ms` | [`PgOptions::migration_timeout`] | ms |
    ///
    /// A `key=value` connection string (not a URL) is returned unchanged.
    ///
    /// # Errors
    ///
    /// [`PgStoreError::BadParameter`] for a value that is not a number (or
    /// a zero pool size or timeout).
    pub fn take_url_parameters(&mut self, url: &str) -> Result<String, PgStoreError> {
        let lower = url.get(..13).unwrap_or(url).to_ascii_lowercase();
        if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
            return Ok(url.to_owned());
        }
        let Some((base, query)) = url.split_once('?') else {
            return Ok(url.to_owned());
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !URL_PARAMETERS.contains(&name) {
                kept.push(pair);
                continue;
            }
            let bad = |expected| PgStoreError::BadParameter {
                name: name.to_owned(),
                value: value.to_owned(),
                expected,
            };
            let n: u64 = value.parse().map_err(|_| bad("a whole number"))?;
            let ms = Duration::from_millis(n);
            let positive = |d: Duration| if d.is_zero() { Err(bad("above 0")) } else { Ok(d) };
            match name {
                "pool_size" => {
                    self.pool_size = usize::try_from(n)
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad("at least 1"))?
                }
                "connect_timeout_ms" => self.connect_timeout = positive(ms)?,
                "statement_timeout_ms" => self.statement_timeout = positive(ms)?,
                "lock_wait_ms" => self.lock_wait = positive(ms)?,
                "idle_timeout_ms" => self.idle_timeout = (n > 0).then_some(ms),
                "idle_in_transaction_timeout_ms" => self.idle_in_transaction_timeout = positive(ms)?,
                _ => self.migration_timeout = positive(ms)?,
            }
        }
        Ok(if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        })
    }
}

/// One failed attempt of [`PostgresStore::connect_waiting`], for its log line.
#[derive(Debug)]
#[non_exhaustive]
pub struct ConnectRetry<'a> {
    /// Which attempt failed (1 for the first).
    pub attempt: u32,
    /// Why.
    pub error: &'a OpenError,
    /// How long the next attempt is away.
    pub retry_in: Duration,
    /// How long connecting has taken so far.
    pub waited: Duration,
}

/// Families in a PostgreSQL database, shared by any number of servers.
/// See the [crate docs](crate).
pub struct PostgresStore {
    // Dropped before the runtime its connections run on.
    pub(crate) pool: Pool,
    pub(crate) bridge: Bridge,
    /// What connecting found and migrated.
    schema: SchemaStatus,
    /// The lock wait of [`WriteTxn::try_lock_families`], as `set_config` takes it.
    pub(crate) lock_wait: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL or a
    /// `key=value` connection string), creating or upgrading rotoken's
    /// tables. rotoken's own URL parameters (`pool_size`,
    /// `statement_timeout_ms`...: [`PgOptions::take_url_parameters`])
    /// override the fields of `options`.
    ///
    /// # Errors
    ///
    /// [`OpenError::UnsupportedSchema`] for a database written by a newer
    /// rotoken (nothing is written then), [`OpenError::NotRotoken`] for a
    /// database with a `rotoken_families` table that rotoken did not make,
    /// or a storage error (a bad URL, an unreachable server, a timeout).
    pub fn connect(url: &str, options: PgOptions) -> Result<Self, OpenError> {
        let (config, options) = parse_url(url, options)?;
        Self::connect_with(config, options)
    }

    /// [`PostgresStore::connect`], trying again while the server cannot be
    /// reached (refused or timed-out connections, a server still starting
    /// up: see [`PgStoreError::is_connection_failure`]) for up to `wait`,
    /// with back-off (0.1 s doubling to 5 s between attempts). Each failed
    /// attempt that will be retried is given to `on_retry` (for a log
    /// line). Errors that waiting does not mend (a bad URL, wrong
    /// credentials, a missing database, a schema refused) return at once.
    /// A server that starts before its database does (`rotoken serve` in a
    /// container next to PostgreSQL's) calls this instead of
    /// [`PostgresStore::connect`].
    ///
    /// # Errors
    ///
    /// As [`PostgresStore::connect`]: the last attempt's error once `wait`
    /// has passed.
    pub fn connect_waiting(
        url: &str,
        options: PgOptions,
        wait: Duration,
        mut on_retry: impl FnMut(&ConnectRetry<'_>),
    ) -> Result<Self, OpenError> {
        let (config, options) = parse_url(url, options)?;
        let start = std::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            let error = match Self::connect_with(config.clone(), options.clone()) {
                Ok(store) => return Ok(store),
                Err(e) => e,
            };
            let waited = start.elapsed();
            let left = wait.saturating_sub(waited);
            if !is_unreachable(&error) || left.is_zero() {
                return Err(error);
            }
            let retry_in = delay.min(left);
            on_retry(&ConnectRetry {
                attempt,
                error: &error,
                retry_in,
                waited,
            });
            std::thread::sleep(retry_in);
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// [`PostgresStore::connect`] with a parsed configuration.
    ///
    /// # Errors
    ///
    /// As [`PostgresStore::connect`].
    pub fn connect_with(mut config: tokio_postgres::Config, options: PgOptions) -> Result<Self, OpenError> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        let server_settings = format!(
            "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
            options.statement_timeout.as_millis(),
            options.idle_in_transaction_timeout.as_millis()
        );
        let all = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} {server_settings}"),
            _ => server_settings,
        };
        config.options(&all);
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| StoreError::from(PgStoreError::Pool(e.to_string())))?;
        let bridge = Bridge::new(options.runtime_threads, options.operation_timeout()).map_err(StoreError::storage)?;
        if let Some(idle) = options.idle_timeout {
            bridge.spawn_background(release_idle(pool.weak(), idle));
        }
        let mut store = Self {
            pool,
            bridge,
            schema: SchemaStatus::new(0, SCHEMA_VERSION, Vec::new()),
            lock_wait: format!("{}ms", options.lock_wait.as_millis().max(1)),
        };
        let mut conn = store.checkout()?;
        let migration_timeout = options.migration_timeout;
        let migrated = store
            .bridge
            .run_for(migration_timeout + options.connect_timeout, async move {
                let r = schema::migrate(&mut conn, migration_timeout).await;
                Ok((conn, r))
            })?;
        let (_conn, result) = migrated;
        store.schema = result?;
        Ok(store)
    }

    /// A connection from the pool (connecting if none is idle).
    fn checkout(&self) -> Result<Conn, StoreError> {
        let pool = self.pool.clone();
        self.bridge
            .run(async move { pool.get().await.map(Conn::new).map_err(|e| from_pool(e).into()) })
    }
}

/// The configuration and options a URL names (rotoken's parameters taken out).
fn parse_url(url: &str, mut options: PgOptions) -> Result<(tokio_postgres::Config, PgOptions), OpenError> {
    let url = options.take_url_parameters(url).map_err(StoreError::from)?;
    let config = url.parse().map_err(|e| StoreError::from(PgStoreError::Postgres(e)))?;
    Ok((config, options))
}

/// Closes pooled connections unused for `idle` (deadpool has no reaper of
/// its own), checking a few times per `idle`; ends with the pool.
async fn release_idle(pool: deadpool_postgres::WeakPool, idle: Duration) {
    let every = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(15));
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        // Dropping a removed connection closes it.
        drop(pool.retain(|_, metrics| metrics.last_used() < idle));
    }
}

impl Store for PostgresStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn concurrent_batches(&self) -> usize {
        (self.pool.status().max_size / 2).max(1)
    }

    fn schema(&self) -> Option<&SchemaStatus> {
        Some(&self.schema)
    }

    fn begin_read(&self) -> Result<Box<dyn ReadTxn + '_>, StoreError> {
        Ok(Box::new(PgRead {
            session: Session::new(self, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"),
        }))
    }

    fn begin_write(&self, commit: Commit) -> Result<Box<dyn WriteTxn + '_>, StoreError> {
        let begin = match commit {
            Commit::Relaxed => "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL synchronous_commit = off",
            _ => "BEGIN ISOLATION LEVEL READ COMMITTED",
        };
        Ok(Box::new(PgWrite::new(Session::new(self, begin))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotokens_url_parameters_set_options_and_leave_the_rest() {
        let mut o = PgOptions::default();
        let url = o
            .take_url_parameters(
                "postgres://rt:pw@db/rotoken?sslmode=disable&pool_size=8&statement_timeout_ms=2500\
                 &lock_wait_ms=100&idle_timeout_ms=0&connect_timeout=3&migration_timeout_ms=1000\
                 &connect_timeout_ms=700&idle_in_transaction_timeout_ms=9000",
            )
            .unwrap();
        assert_eq!(url, "postgres://rt:pw@db/rotoken?sslmode=disable&connect_timeout=3");
        assert_eq!(o.pool_size, 8);
        assert_eq!(o.statement_timeout, Duration::from_millis(2500));
        assert_eq!(o.lock_wait, Duration::from_millis(100));
        assert_eq!(o.idle_timeout, None);
        assert_eq!(o.migration_timeout, Duration::from_secs(1));
        assert_eq!(o.connect_timeout, Duration::from_millis(700));
        assert_eq!(o.idle_in_transaction_timeout, Duration::from_secs(9));
        // Only ours: nothing left, no `?`.
        assert_eq!(
            PgOptions::default()
                .take_url_parameters("postgresql://db/x?pool_size=2")
                .unwrap(),
            "postgresql://db/x"
        );
        // A key=value string is not a URL: untouched.
        let kv = "host=/run/pg dbname=x";
        assert_eq!(PgOptions::default().take_url_parameters(kv).unwrap(), kv);
        assert!(
            url.parse::<tokio_postgres::Config>().is_ok(),
            "the driver takes what is left"
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_parameters_name() {
        for bad in [
            "pool_size=0",
            "pool_size=x",
            "statement_timeout_ms=0",
            "lock_wait_ms=-1",
        ] {
            let e = PgOptions::default()
                .take_url_parameters(&format!("postgres://db/x?{bad}"))
                .unwrap_err();
            assert!(e.to_string().contains(bad.split('=').next().unwrap()), "{e}");
        }
    }
}
