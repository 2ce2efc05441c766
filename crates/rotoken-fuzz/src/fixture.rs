//! Fixed keys, clock and policy shared by the fuzz targets and the tests,
//! so a fuzz input means the same thing on every run and every machine.

use std::sync::Arc;
use std::time::Duration;

use rotoken::{Keyring, ManualClock, Options, Policy};

/// A key file for tests and fuzzing only: two numbered keys, key 1 active.
/// Never use it for anything else; it is public.
pub const TEST_KEY_FILE: &str = "rotoken-keys v1
# Test keys of rotoken-fuzz. Public: never use them outside tests.
storage IEspZzlYe-zu4x_ugNb8P4DDB0KQXYkDHZ-rQ4kzJPM
key 1 1700000000 mVmt0BMDU7eIzFT2wrW2WffEOX7Be817_eb_puLY6zY
key 2 1700000000 pC_H7bR10hloZLwI7dyORwRS9NeHItdLwkx8iFEJsUI
active 1
";

/// Where every fixture clock starts: 2023-11-14T22:13:20Z.
pub const T0: i64 = 1_700_000_000_000;
/// One second in milliseconds.
pub const SECOND: i64 = 1_000;
/// One minute in milliseconds.
pub const MINUTE: i64 = 60 * SECOND;
/// One hour in milliseconds.
pub const HOUR: i64 = 60 * MINUTE;

/// Grace window of [`policy`].
pub const GRACE: i64 = 30 * SECOND;
/// Idle lifetime of [`policy`].
pub const IDLE: i64 = HOUR;
/// Absolute lifetime of [`policy`].
pub const ABSOLUTE: i64 = 3 * HOUR;
/// Revoked retention of [`policy`].
pub const REVOKED_RETENTION: i64 = 2 * HOUR;
/// Event retention of [`policy`].
pub const EVENT_RETENTION: i64 = 4 * HOUR;
/// Generation limit of [`policy`]: small enough for a short sequence to reach.
pub const MAX_GENERATIONS: u32 = 6;

/// The test keyring of [`TEST_KEY_FILE`].
///
/// # Panics
///
/// Never: the file is a constant the crate's tests parse.
pub fn keyring() -> Keyring {
    Keyring::from_bytes(TEST_KEY_FILE.as_bytes()).expect("the test key file parses")
}

/// A policy whose limits a short sequence reaches: grace 30 s, idle 1 h,
/// absolute 3 h, revoked retention 2 h, event retention 4 h, 6 generations.
pub fn policy() -> Policy {
    let mut p = Policy::default();
    p.grace = Duration::from_secs(30);
    p.idle_lifetime = Duration::from_secs(3_600);
    p.absolute_lifetime = Duration::from_secs(3 * 3_600);
    p.max_generations = MAX_GENERATIONS;
    p.revoked_retention = Duration::from_secs(2 * 3_600);
    p.event_retention = Duration::from_secs(4 * 3_600);
    p
}

/// Engine options with `clock` and [`policy`], a small page cache, and no
/// background gc (the targets call gc themselves and compare its result).
pub fn options(clock: &ManualClock) -> Options {
    Options {
        clock: Arc::new(clock.clone()),
        policy: policy(),
        cache_size: Some(1 << 20),
        gc_every: None,
        ..Options::default()
    }
}

/// The scope every fixture grant carries.
pub const SCOPE: &str = "openid profile offline_access";

/// A grant of `subject` to `client` with [`SCOPE`].
///
/// # Panics
///
/// Never: the scope is a valid constant.
pub fn grant(subject: &str, client: &str) -> rotoken::Grant {
    rotoken::Grant::new(subject, client, rotoken::Scope::parse(SCOPE).expect("scope"))
}
