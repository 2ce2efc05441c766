//! Shared setup for the integration tests: an engine over a file in a
//! temporary directory, driven by a [`ManualClock`] so no test depends on
//! wall-clock timing.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rotoken::{Engine, Event, Grant, Keyring, ManualClock, OpenError, Options, Policy, Scope};
use time::OffsetDateTime;

/// Where every manual clock starts: 2023-11-14T22:13:20Z.
pub(crate) const T0: i64 = 1_700_000_000_000;

pub(crate) const SECOND: i64 = 1_000;
pub(crate) const MINUTE: i64 = 60 * SECOND;
pub(crate) const HOUR: i64 = 60 * MINUTE;

/// A small policy that makes every limit reachable in a short test:
/// grace 30 s, idle 1 h, absolute 3 h, revoked retention 2 h, event
/// retention 4 h, at most `max_generations` generations.
pub(crate) fn small_policy(max_generations: u32) -> Policy {
    let mut p = Policy::default();
    p.grace = Duration::from_secs(30);
    p.idle_lifetime = Duration::from_secs(3_600);
    p.absolute_lifetime = Duration::from_secs(3 * 3_600);
    p.max_generations = max_generations;
    p.revoked_retention = Duration::from_secs(2 * 3_600);
    p.event_retention = Duration::from_secs(4 * 3_600);
    p
}

/// The default policy with relaxed durability (for tests that write a lot).
pub(crate) fn relaxed_policy() -> Policy {
    let mut p = Policy::default();
    p.durability = rotoken::Durability::Relaxed;
    p
}

/// One database file, its keys, its clock and everything needed to
/// (re)open it. Events delivered to `Options::on_event` are collected in
/// `sink`.
pub(crate) struct Harness {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
    pub(crate) keys: Keyring,
    pub(crate) clock: ManualClock,
    pub(crate) policy: Policy,
    pub(crate) sink: Arc<Mutex<Vec<Event>>>,
}

impl Harness {
    /// A fresh directory and keyring, the clock at [`T0`].
    pub(crate) fn new(policy: Policy) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.redb");
        Self {
            dir,
            path,
            keys: Keyring::generate().expect("keyring"),
            clock: ManualClock::at_unix_millis(T0),
            policy,
            sink: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Options with this harness's clock, policy and event sink.
    pub(crate) fn options(&self) -> Options {
        let sink = Arc::clone(&self.sink);
        Options {
            clock: Arc::new(self.clock.clone()),
            policy: self.policy.clone(),
            on_event: Some(Arc::new(move |e: &Event| sink.lock().unwrap().push(e.clone()))),
            ..Default::default()
        }
    }

    /// Opens the database with the harness's keys.
    pub(crate) fn open(&self) -> Engine {
        self.try_open(self.keys.clone()).expect("open")
    }

    /// Opens the database with the given keys.
    pub(crate) fn try_open(&self, keys: Keyring) -> Result<Engine, OpenError> {
        Engine::open(&self.path, keys, self.options())
    }

    /// Moves the clock forward by `ms` milliseconds.
    pub(crate) fn advance_ms(&self, ms: i64) {
        self.clock.advance(Duration::from_millis(u64::try_from(ms).unwrap()));
    }

    /// The clock's time, unix ms.
    pub(crate) fn now(&self) -> i64 {
        self.clock.unix_millis()
    }

    /// The events the sink received so far.
    pub(crate) fn sunk(&self) -> Vec<Event> {
        self.sink.lock().unwrap().clone()
    }
}

/// A grant with the scope `openid offline_access profile`.
pub(crate) fn grant(subject: &str, client: &str) -> Grant {
    Grant::new(subject, client, scope("openid offline_access profile"))
}

pub(crate) fn scope(s: &str) -> Scope {
    Scope::parse(s).unwrap()
}

/// Unix milliseconds of a timestamp.
pub(crate) fn ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap()
}

/// A token with a valid checksum whose authenticator has bit `bit` flipped.
pub(crate) fn forge(token: &str, bit: usize) -> String {
    let mut t = rotoken::token::parse(token.as_bytes()).expect("a real token parses");
    let bit = bit % (t.authenticator.len() * 8);
    t.authenticator[bit / 8] ^= 1 << (bit % 8);
    let forged = rotoken::token::format(&t).expose().to_owned();
    assert!(
        rotoken::token::parse(forged.as_bytes()).is_ok(),
        "the forgery must pass the parser's checksum"
    );
    assert_ne!(forged, token);
    forged
}

/// The generation a token string carries.
pub(crate) fn generation_of(token: &str) -> u32 {
    rotoken::token::parse(token.as_bytes()).unwrap().generation
}

/// The key id a token string carries.
pub(crate) fn key_id_of(token: &str) -> u32 {
    rotoken::token::parse(token.as_bytes()).unwrap().key_id
}

/// True if the engine reports `token` as live.
pub(crate) fn active(engine: &Engine, token: &str) -> bool {
    engine.introspect(token).unwrap().active
}

/// Asserts the engine's integrity check finds nothing wrong.
pub(crate) fn assert_check(engine: &Engine) {
    let report = engine.check().expect("check runs");
    assert!(report.is_ok(), "check found problems: {:?}", report.problems);
}
