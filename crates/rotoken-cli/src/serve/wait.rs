//! `rotoken serve` waits for its database at start: a PostgreSQL server
//! that is not reachable yet (started alongside, restarting, failing over)
//! is tried again with back-off and a log line per attempt
//! ([`PostgresStore::connect_waiting`]), up to `db_wait_secs` (default
//! 30 s), then `serve` exits with `db_unreachable` and the last cause. Only
//! connection failures are retried; a bad URL, a refused password, a
//! database that is not rotoken's or a newer schema fail at once.

use std::time::Duration;

use rotoken::{Engine, Keyring, OpenError, Options};
use rotoken_postgres::{PgOptions, PostgresStore, StoreLocation};

use crate::output::CliError;

/// Opens the engine over `store`, waiting up to `wait` for a PostgreSQL
/// server that cannot be reached yet. Blocking: call it off the runtime.
pub(crate) fn open(store: &StoreLocation, keys: Keyring, options: Options, wait: Duration) -> Result<Engine, CliError> {
    let StoreLocation::Postgres(url) = store else {
        return Ok(store.open(keys, options)?);
    };
    options.policy.validate().map_err(OpenError::InvalidPolicy)?;
    let mut attempts = 1;
    let connected = PostgresStore::connect_waiting(url, PgOptions::default(), wait, |r| {
        attempts = r.attempt + 1;
        tracing::warn!(
            attempt = r.attempt,
            store = %store,
            error = %r.error,
            retry_in_ms = millis(r.retry_in),
            waited_ms = millis(r.waited),
            "database not reachable yet; retrying"
        );
    });
    let pg = match connected {
        Ok(pg) => {
            if attempts > 1 {
                tracing::info!(attempt = attempts, store = %store, "database reachable");
            }
            pg
        }
        Err(e) if rotoken_postgres::is_unreachable(&e) => return Err(unreachable(store, wait, attempts, &e)),
        Err(e) => return Err(e.into()),
    };
    Ok(Engine::with_store(pg, keys, options)?)
}

/// The error `serve` exits with once it gave up.
fn unreachable(store: &StoreLocation, wait: Duration, attempts: u32, e: &OpenError) -> CliError {
    tracing::error!(attempt = attempts, store = %store, error = %e, "database not reachable; giving up");
    CliError::storage(
        "db_unreachable",
        format!(
            "could not reach the database at {store} within {} s ({attempts} attempts; \
             --db-wait-secs / db_wait_secs sets how long serve waits): {e}",
            wait.as_secs()
        ),
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rotoken::StoreError;

    #[test]
    fn the_message_says_why_and_how_long_without_the_password() {
        let store = StoreLocation::Postgres("postgres://rt:secret@db/rotoken".into());
        let cause = OpenError::Store(StoreError::storage(std::io::Error::other("connection refused")));
        let e = unreachable(&store, Duration::from_secs(30), 7, &cause);
        let text = format!("{e:?}");
        assert!(
            text.contains("db_unreachable") && text.contains("connection refused"),
            "{text}"
        );
        assert!(text.contains("within 30 s (7 attempts"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}
