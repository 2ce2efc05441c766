//! Shared setup: engines over a test database, a manual clock, a small policy.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rotoken::{Engine, Event, Grant, Keyring, ManualClock, Options, Policy, Scope};
use rotoken_postgres::testing::TestDb;

/// Where every manual clock starts: 2023-11-14T22:13:20Z.
pub(crate) const T0: i64 = 1_700_000_000_000;
pub(crate) const SECOND: i64 = 1_000;
pub(crate) const HOUR: i64 = 3_600 * SECOND;

/// Grace 30 s, idle 1 h, absolute 3 h, revoked retention 2 h, event retention 4 h.
pub(crate) fn small_policy() -> Policy {
    let mut p = Policy::default();
    p.grace = Duration::from_secs(30);
    p.idle_lifetime = Duration::from_secs(3_600);
    p.absolute_lifetime = Duration::from_secs(3 * 3_600);
    p.max_generations = 1_000;
    p.revoked_retention = Duration::from_secs(2 * 3_600);
    p.event_retention = Duration::from_secs(4 * 3_600);
    p
}

/// One test database, its keys, one clock for every server, and the events
/// every engine delivered.
pub(crate) struct Servers {
    pub(crate) db: TestDb,
    pub(crate) keys: Keyring,
    pub(crate) clock: ManualClock,
    pub(crate) policy: Policy,
    pub(crate) sink: Arc<Mutex<Vec<Event>>>,
}

impl Servers {
    pub(crate) fn new(db: TestDb) -> Self {
        Self {
            db,
            keys: Keyring::generate().unwrap(),
            clock: ManualClock::at_unix_millis(T0),
            policy: small_policy(),
            sink: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub(crate) fn options(&self) -> Options {
        let sink = Arc::clone(&self.sink);
        Options {
            clock: Arc::new(self.clock.clone()),
            policy: self.policy.clone(),
            on_event: Some(Arc::new(move |e: &Event| sink.lock().unwrap().push(e.clone()))),
            ..Default::default()
        }
    }

    /// A "server": an engine with its own store and pool on the shared database.
    pub(crate) fn engine(&self) -> Engine {
        Engine::with_store(self.db.store().unwrap(), self.keys.clone(), self.options()).unwrap()
    }

    pub(crate) fn advance_ms(&self, ms: i64) {
        self.clock.advance(Duration::from_millis(u64::try_from(ms).unwrap()));
    }

    pub(crate) fn sunk(&self) -> Vec<Event> {
        self.sink.lock().unwrap().clone()
    }
}

pub(crate) fn grant(subject: &str, client: &str) -> Grant {
    Grant::new(subject, client, Scope::parse("openid offline_access profile").unwrap())
}

pub(crate) fn assert_check(engine: &Engine) {
    let report = engine.check().expect("check runs");
    assert!(report.is_ok(), "check found problems: {:?}", report.problems);
}
