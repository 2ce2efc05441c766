//! # rotoken-conformance
//!
//! One conformance suite, written once, that every [`rotoken::Store`]
//! passes: the reference-model property test, the properties of the design
//! brief (P1 nothing usable at rest, P2 constant size, P3/P7 forgery and
//! cheap rejection, P4 grace, P6 one winner), lifecycle and group commit.
//!
//! A store crate implements [`Backend`] (how to make a fresh database of
//! its kind, reopen it, read it as an attacker would, back it up and
//! restore it) and expands [`conformance_tests!`] in one integration test:
//!
//! ```no_run
//! rotoken_conformance::conformance_tests!(rotoken_conformance::RedbBackend);
//! ```
//!
//! Every test opens its own database, so the tests run in parallel.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rotoken::store::Store;
use rotoken::{Engine, Event, Grant, Keyring, ManualClock, Notice, OpenError, Options, Policy, RedbStore, Scope};
use time::OffsetDateTime;

pub mod at_rest;
pub mod clock_steps;
pub mod concurrency;
pub mod constant_size;
pub mod faults;
pub mod faulty;
pub mod forgery;
pub mod group_commit;
pub mod lifecycle;
pub mod model;
pub mod policy_rules;
pub mod reference;
pub mod subscribers;

/// A kind of store under test.
pub trait Backend: Sync {
    /// A short name for messages (`redb`, `postgres`).
    fn name(&self) -> &'static str;

    /// A new, empty database of this kind, used by one test.
    fn create(&self) -> Box<dyn Database>;

    /// How many random sequences the model test runs (each in a fresh
    /// database). Default 256.
    fn model_cases(&self) -> u32 {
        256
    }
}

/// One database of a [`Backend`].
pub trait Database: Send + Sync {
    /// Opens the store (again: engines may be opened and dropped many times).
    ///
    /// # Errors
    ///
    /// Whatever opening the store gives.
    fn open_store(&self, options: &Options) -> Result<Box<dyn Store>, OpenError>;

    /// Everything the store holds, as someone who can read it but has no
    /// keys sees it: the database file, or a plain-text dump. Called with
    /// every engine closed.
    fn at_rest(&self) -> Vec<u8>;

    /// The bytes the store occupies once compacted (redb: the file after
    /// [`Store::compact`]; PostgreSQL: its tables and indexes after
    /// `VACUUM FULL`). Called with every engine closed.
    fn footprint(&self) -> u64;

    /// Copies the whole database aside under `name`. Called with every engine closed.
    fn backup(&self, name: &str);

    /// Replaces the database by the copy saved as `name`. Called with every engine closed.
    fn restore(&self, name: &str);

    /// Opens an engine over this database.
    ///
    /// # Errors
    ///
    /// As [`Engine::with_store`].
    fn open(&self, keys: Keyring, options: Options) -> Result<Engine, OpenError> {
        let store = self.open_store(&options)?;
        Engine::with_store(store, keys, options)
    }

    /// The stored bytes of every family (for record sizes), read without keys.
    fn records(&self) -> Vec<Vec<u8>> {
        let store = self.open_store(&Options::default()).expect("open the store");
        let read = store.begin_read().expect("read");
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = read.scan_families(after.as_ref(), 1024).expect("scan");
            let Some(last) = page.last().map(|(f, _)| *f) else {
                break;
            };
            out.extend(page.into_iter().map(|(_, v)| v));
            after = Some(last);
        }
        out
    }
}

/// The embedded redb file.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedbBackend;

/// A redb database file in a temporary directory.
#[derive(Debug)]
pub struct RedbDatabase {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl RedbDatabase {
    /// A new database file (not created yet) in a new temporary directory.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.redb");
        Self { dir, path }
    }

    /// The database file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The temporary directory holding it (for other files of a test).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Default for RedbDatabase {
    fn default() -> Self {
        Self::new()
    }
}

impl Backend for RedbBackend {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn create(&self) -> Box<dyn Database> {
        Box::new(RedbDatabase::new())
    }
}

impl Database for RedbDatabase {
    fn open_store(&self, options: &Options) -> Result<Box<dyn Store>, OpenError> {
        Ok(Box::new(RedbStore::open(&self.path, options.cache_size)?))
    }

    fn at_rest(&self) -> Vec<u8> {
        std::fs::read(&self.path).expect("read the database file")
    }

    fn footprint(&self) -> u64 {
        let mut store = RedbStore::open(&self.path, None).expect("open");
        store.compact().expect("compact");
        drop(store);
        std::fs::metadata(&self.path).expect("stat").len()
    }

    fn backup(&self, name: &str) {
        std::fs::copy(&self.path, self.dir.path().join(format!("{name}.backup"))).expect("backup");
    }

    fn restore(&self, name: &str) {
        std::fs::copy(self.dir.path().join(format!("{name}.backup")), &self.path).expect("restore");
    }
}

/// Where every manual clock starts: 2023-11-14T22:13:20Z.
pub const T0: i64 = 1_700_000_000_000;
/// A second, in ms.
pub const SECOND: i64 = 1_000;
/// A minute, in ms.
pub const MINUTE: i64 = 60 * SECOND;
/// An hour, in ms.
pub const HOUR: i64 = 60 * MINUTE;

/// A small policy that makes every limit reachable in a short test:
/// grace 30 s, idle 1 h, absolute 3 h, revoked retention 2 h, event
/// retention 4 h, at most `max_generations` generations.
pub fn small_policy(max_generations: u32) -> Policy {
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
pub fn relaxed_policy() -> Policy {
    let mut p = Policy::default();
    p.durability = rotoken::Durability::Relaxed;
    p
}

/// One database, its keys, its clock and everything needed to (re)open
/// it. Events delivered to `Options::on_event` are collected in `sink`.
pub struct Harness {
    /// The database.
    pub db: Box<dyn Database>,
    /// The keys every open uses.
    pub keys: Keyring,
    /// The engine's clock.
    pub clock: ManualClock,
    /// The policy every open uses.
    pub policy: Policy,
    /// Events received by the event sink.
    pub sink: Arc<Mutex<Vec<Notice>>>,
}

impl Harness {
    /// A fresh database of `backend` and a fresh keyring, the clock at [`T0`].
    pub fn new(backend: &dyn Backend, policy: Policy) -> Self {
        Self::with_database(backend.create(), policy)
    }

    /// A harness over `db` (for a store's own tests), with a fresh keyring,
    /// the clock at [`T0`].
    pub fn with_database(db: Box<dyn Database>, policy: Policy) -> Self {
        Self {
            db,
            keys: Keyring::generate().expect("keyring"),
            clock: ManualClock::at_unix_millis(T0),
            policy,
            sink: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Options with this harness's clock, policy and event sink.
    pub fn options(&self) -> Options {
        let sink = Arc::clone(&self.sink);
        Options {
            clock: Arc::new(self.clock.clone()),
            policy: self.policy.clone(),
            on_event: Some(Arc::new(move |n: &Notice| sink.lock().unwrap().push(n.clone()))),
            // The suite collects by hand, counting what each call removes.
            gc_every: None,
            ..Options::default()
        }
    }

    /// Opens the database with the harness's keys.
    pub fn open(&self) -> Engine {
        self.try_open(self.keys.clone()).expect("open")
    }

    /// Opens the database with the given keys.
    ///
    /// # Errors
    ///
    /// As [`Engine::with_store`].
    pub fn try_open(&self, keys: Keyring) -> Result<Engine, OpenError> {
        self.db.open(keys, self.options())
    }

    /// Moves the clock forward by `ms` milliseconds.
    pub fn advance_ms(&self, ms: i64) {
        self.clock.advance(Duration::from_millis(u64::try_from(ms).unwrap()));
    }

    /// The clock's time, unix ms.
    pub fn now(&self) -> i64 {
        self.clock.unix_millis()
    }

    /// The events the sink received, once `engine` has delivered every
    /// event committed so far.
    pub fn sunk(&self, engine: &Engine) -> Vec<Event> {
        self.notices(engine).into_iter().map(|n| n.event).collect()
    }

    /// What the sink received (events with their grants), once `engine`
    /// has delivered every event committed so far.
    pub fn notices(&self, engine: &Engine) -> Vec<Notice> {
        engine.flush_events();
        self.sink.lock().unwrap().clone()
    }
}

/// A grant with the scope `openid offline_access profile`.
pub fn grant(subject: &str, client: &str) -> Grant {
    Grant::new(subject, client, scope("openid offline_access profile"))
}

/// A scope from its string form.
pub fn scope(s: &str) -> Scope {
    Scope::parse(s).unwrap()
}

/// Unix milliseconds of a timestamp.
pub fn ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap()
}

/// A token with a valid checksum whose authenticator has bit `bit` flipped.
pub fn forge(token: &str, bit: usize) -> String {
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
pub fn generation_of(token: &str) -> u32 {
    rotoken::token::parse(token.as_bytes()).unwrap().generation
}

/// The key id a token string carries.
pub fn key_id_of(token: &str) -> u32 {
    rotoken::token::parse(token.as_bytes()).unwrap().key_id
}

/// True if the engine reports `token` as live.
pub fn active(engine: &Engine, token: &str) -> bool {
    engine.introspect(token).unwrap().active
}

/// Asserts the engine's integrity check finds nothing wrong.
pub fn assert_check(engine: &Engine) {
    let report = engine.check().expect("check runs");
    assert!(report.is_ok(), "check found problems: {:?}", report.problems);
}

/// Expands to one `#[test]` per conformance test, each given `$backend`
/// (an expression of a type implementing [`Backend`]).
#[macro_export]
macro_rules! conformance_tests {
    ($backend:expr) => {
        $crate::conformance_tests!(@each $backend;
            model::engine_matches_model,
            model::scripted_sequence_matches_model,
            model::generation_limit_is_reached,
            at_rest::store_holds_no_token_secret_or_grant_text,
            constant_size::ten_thousand_rotations_take_no_more_space_than_one,
            constant_size::every_earlier_generation_is_detected,
            concurrency::sixteen_threads_one_winner_fifty_rounds,
            concurrency::from_two_to_sixty_four_threads_one_winner,
            concurrency::current_and_older_token_at_once_revoke_the_family,
            concurrency::current_and_predecessor_after_the_window_at_once_revoke_the_family,
            forgery::forged_authenticator_is_invalid_and_changes_nothing,
            forgery::tampered_fields_with_the_old_authenticator_are_invalid,
            forgery::forged_tokens_answer_the_same_for_existing_and_unknown_families,
            forgery::token_from_another_keyring_is_invalid,
            forgery::another_client_is_refused_and_never_revokes,
            forgery::another_clients_revocation_revokes_nothing,
            forgery::a_confirmation_bound_family_needs_its_key,
            forgery::an_unbound_family_ignores_a_presented_confirmation,
            forgery::scope_may_narrow_never_widen,
            forgery::a_token_ahead_of_a_restored_backup_diverges,
            forgery::a_forked_token_of_the_current_generation_diverges,
            forgery::a_forked_predecessor_diverges_instead_of_getting_the_successor,
            forgery::malformed_inputs_are_malformed,
            forgery::invalid_request_fields_are_refused_before_anything_changes,
            lifecycle::rotation_never_extends_the_absolute_expiry,
            lifecycle::an_idle_family_expires,
            lifecycle::a_grace_retry_extends_nothing,
            lifecycle::the_grace_window_ends_exactly_at_its_length,
            lifecycle::the_generation_limit_is_enforced_without_revoking,
            lifecycle::lowering_the_generation_limit_is_not_corruption,
            lifecycle::keys_rotate_without_invalidating_live_families,
            lifecycle::retiring_a_key_after_the_absolute_lifetime_keeps_sessions_listable,
            lifecycle::a_removed_key_makes_one_session_unreadable_not_the_list,
            lifecycle::gc_removes_expired_and_revoked_families_in_bounded_steps,
            lifecycle::event_sequence_numbers_never_repeat_after_gc,
            lifecycle::sessions_list_a_subjects_families,
            lifecycle::the_event_sink_receives_reuse_and_revocation_events,
            lifecycle::introspection_never_changes_state,
            group_commit::concurrent_durable_rotations_share_commits,
            group_commit::a_refusal_in_a_batch_does_not_fail_the_others,
            group_commit::group_commit_can_be_turned_off,
            group_commit::relaxed_durability_still_commits_durably_every_n_commits,
            group_commit::async_callers_are_served_without_leading_a_batch,
            clock_steps::a_clock_corrected_back_does_not_reopen_the_grace_window,
            clock_steps::a_clock_set_back_an_hour_keeps_the_window_in_real_time,
            clock_steps::the_floor_survives_a_restart,
            clock_steps::a_forward_step_is_kept_after_the_clock_is_corrected,
            clock_steps::a_retry_right_after_a_restart_under_a_clock_set_back_gets_the_successor,
            clock_steps::a_restart_under_a_clock_set_back_far_neither_answers_nor_revokes_the_predecessor,
            faults::a_commit_whose_answer_was_lost_is_answered_with_its_successor,
            faults::a_commit_lost_before_it_took_effect_is_a_clean_retry,
            faults::an_unknown_outcome_is_settled_and_a_late_retry_gets_the_successor,
            faults::a_late_retry_settles_its_own_unknown_outcome,
            faults::an_unknown_outcome_that_did_not_commit_rotates_on_retry,
            faults::a_rotation_past_its_deadline_is_not_applied,
            faults::a_rotation_whose_caller_went_away_answers_its_late_retry,
            faults::presenting_a_revoked_or_expired_token_writes_nothing,
            faults::a_floor_written_days_ahead_poisons_no_one,
            policy_rules::every_opener_runs_by_the_databases_policy,
            policy_rules::a_policy_change_is_stored_recorded_and_evented,
            policy_rules::shortening_the_idle_lifetime_reschedules_gc,
            policy_rules::issuing_past_the_cap_revokes_the_oldest,
            policy_rules::revoking_a_large_subject_takes_bounded_steps,
            subscribers::notices_carry_the_families_grant,
            subscribers::a_subscriber_may_call_the_engine,
            subscribers::a_panicking_subscriber_changes_no_answer,
            subscribers::background_gc_removes_expired_families,
        );
    };
    (@each $backend:expr; $($module:ident :: $test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                $crate::$module::$test(&$backend);
            }
        )*
    };
}
