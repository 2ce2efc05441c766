//! Shared setup: "servers" (engines with their own stores) over one test
//! database, one manual clock; helpers from rotoken-conformance.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rotoken::{Engine, Event, Keyring, ManualClock, Notice, Options, Policy};
use rotoken_postgres::testing::TestDb;

#[allow(unused_imports)] // each test file uses some of them
pub(crate) use rotoken_conformance::{HOUR, SECOND, T0, assert_check, grant};

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
            policy: rotoken_conformance::small_policy(1_000),
            sink: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub(crate) fn options(&self) -> Options {
        self.options_with_clock(&self.clock)
    }

    /// The options of a server with a clock of its own.
    pub(crate) fn options_with_clock(&self, clock: &ManualClock) -> Options {
        let sink = Arc::clone(&self.sink);
        Options {
            clock: Arc::new(clock.clone()),
            policy: self.policy.clone(),
            on_event: Some(Arc::new(move |n: &Notice| sink.lock().unwrap().push(n.event.clone()))),
            gc_every: None,
            ..Default::default()
        }
    }

    /// A "server": an engine with its own store and pool on the shared database.
    pub(crate) fn engine(&self) -> Engine {
        Engine::with_store(self.db.store().unwrap(), self.keys.clone(), self.options()).unwrap()
    }

    /// A "server" whose clock is `clock` instead of the shared one.
    pub(crate) fn engine_with_clock(&self, clock: &ManualClock) -> Engine {
        Engine::with_store(
            self.db.store().unwrap(),
            self.keys.clone(),
            self.options_with_clock(clock),
        )
        .unwrap()
    }

    pub(crate) fn advance_ms(&self, ms: i64) {
        self.clock.advance(Duration::from_millis(u64::try_from(ms).unwrap()));
    }

    /// What every engine delivered, once `engine` has delivered all it committed.
    pub(crate) fn sunk(&self, engine: &Engine) -> Vec<Event> {
        engine.flush_events();
        self.sink.lock().unwrap().clone()
    }
}
