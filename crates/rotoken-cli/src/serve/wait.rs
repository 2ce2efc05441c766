//! `rotoken serve` waits for its database at start: a PostgreSQL server
//! that is not reachable yet (started alongside, restarting, failing over)
//! is tried again with back-off and a log line per attempt, up to
//! `db_wait_secs` (default 30 s), then `serve` exits with a clear error.
//! Only connection failures are retried (`OpenError::Store(StoreError::Storage(_))`);
//! a database that is not rotoken's, a newer schema or wrong keys fail at once.

use std::time::{Duration, Instant};

use rotoken::{Engine, Keyring, OpenError, Options, StoreError};
use rotoken_postgres::{PgOptions, PostgresStore, StoreLocation};

use crate::output::CliError;

/// The pause after the first failed attempt; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause between attempts.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Opens the engine over `store`, waiting up to `wait` for a PostgreSQL
/// server that cannot be reached yet. Blocking: call it off the runtime.
pub(crate) fn open(store: &StoreLocation, keys: Keyring, options: Options, wait: Duration) -> Result<Engine, CliError> {
    let StoreLocation::Postgres(url) = store else {
        return Ok(store.open(keys, options)?);
    };
    options.policy.validate().map_err(OpenError::InvalidPolicy)?;
    let pg = retry(store, wait, std::thread::sleep, || {
        PostgresStore::connect(url, PgOptions::default())
    })?;
    Ok(Engine::with_store(pg, keys, options)?)
}

/// Calls `connect` until it succeeds, fails with anything but a connection
/// failure, or `wait` has passed; `sleep` pauses between attempts.
fn retry<T>(
    shown: &StoreLocation,
    wait: Duration,
    mut sleep: impl FnMut(Duration),
    mut connect: impl FnMut() -> Result<T, OpenError>,
) -> Result<T, CliError> {
    let start = Instant::now();
    let mut pause = FIRST_PAUSE;
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let e = match connect() {
            Ok(store) => {
                if attempt > 1 {
                    tracing::info!(attempt, store = %shown, "database reachable");
                }
                return Ok(store);
            }
            Err(OpenError::Store(StoreError::Storage(e))) => e,
            Err(other) => return Err(other.into()),
        };
        let left = wait.saturating_sub(start.elapsed());
        if left.is_zero() {
            tracing::error!(attempt, store = %shown, error = %e, "database not reachable; giving up");
            return Err(CliError::storage(
                "db_unreachable",
                format!(
                    "could not reach the database at {shown} within {} s ({attempt} attempts; \
                     db_wait_secs / --db-wait-secs sets the bound): {e}",
                    wait.as_secs()
                ),
            ));
        }
        let next = pause.min(left);
        tracing::warn!(
            attempt,
            store = %shown,
            error = %e,
            retry_in_ms = u64::try_from(next.as_millis()).unwrap_or(u64::MAX),
            "database not reachable yet; retrying"
        );
        sleep(next);
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg() -> StoreLocation {
        StoreLocation::Postgres("postgres://rt:secret@db/rotoken".into())
    }

    fn refused() -> OpenError {
        OpenError::Store(StoreError::storage(std::io::Error::other("connection refused")))
    }

    #[test]
    fn connection_failures_are_retried_until_it_answers() {
        let mut attempts = 0;
        let mut pauses = Vec::new();
        let r = retry(
            &pg(),
            Duration::from_secs(3600),
            |d| pauses.push(d),
            || {
                attempts += 1;
                if attempts < 5 { Err(refused()) } else { Ok(attempts) }
            },
        );
        assert_eq!(r.unwrap(), 5);
        let ms: Vec<u128> = pauses.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [250, 500, 1000, 2000], "back-off doubles");
    }

    #[test]
    fn other_open_errors_are_not_retried() {
        let mut attempts = 0;
        let r: Result<(), _> = retry(
            &pg(),
            Duration::from_secs(3600),
            |_| {},
            || {
                attempts += 1;
                Err(OpenError::NotRotoken)
            },
        );
        assert!(r.is_err());
        assert_eq!(attempts, 1);
    }

    #[test]
    fn no_wait_tries_once_and_says_why_without_the_password() {
        let mut attempts = 0;
        let r: Result<(), _> = retry(
            &pg(),
            Duration::ZERO,
            |_| {},
            || {
                attempts += 1;
                Err(refused())
            },
        );
        let e = r.unwrap_err();
        assert_eq!(attempts, 1);
        let text = format!("{e:?}");
        assert!(
            text.contains("db_unreachable") && text.contains("connection refused"),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
    }
}
