//! What only the redb file store does: one process per file (`locked`),
//! foreign and garbage files refused, compaction shrinking the file, a disk
//! that fails in the middle of a group commit, and the in-memory database.
//! Everything every store does is in the conformance suite (run against
//! redb by `tests/redb.rs` beside this file).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::StorageBackend;
use redb::backends::InMemoryBackend;
use rotoken::{
    Engine, FamilyId, Keyring, OpenError, Options, RevokeTarget, RotateError, RotateRequest, Rotated, StoreError,
};
use rotoken_conformance::group_commit::{issue_many, together};
use rotoken_conformance::{Harness, RedbDatabase, SECOND, active, assert_check, grant, small_policy};

const GRACE: i64 = 30 * SECOND;

/// A harness over a redb file, and the file's directory and path.
fn harness_with(policy: rotoken::Policy) -> (Harness, std::path::PathBuf, std::path::PathBuf) {
    let db = RedbDatabase::new();
    let (dir, path) = (db.dir().to_owned(), db.path().to_owned());
    (Harness::with_database(Box::new(db), policy), dir, path)
}

fn rotate(engine: &Engine, token: &str) -> Result<Rotated, RotateError> {
    engine.rotate(token, &RotateRequest::new("web"))
}

fn issue(engine: &Engine, subject: &str) -> (FamilyId, String) {
    let issued = engine.issue(&grant(subject, "web")).unwrap();
    (issued.family, issued.refresh_token.expose().to_owned())
}

#[test]
fn opening_with_other_keys_twice_or_a_foreign_file_fails_clearly() {
    let (h, dir, _) = harness_with(small_policy(1_000));
    let engine = h.open();
    let (_, t0) = issue(&engine, "alice");
    // A second handle in the same process.
    assert!(matches!(h.try_open(h.keys.clone()), Err(OpenError::Locked)));
    drop(engine);
    // Other keys.
    let other = Keyring::generate().unwrap();
    assert!(matches!(h.try_open(other), Err(OpenError::WrongKeys)));
    // The right keys still work and nothing was lost.
    let engine = h.open();
    assert!(active(&engine, &t0));
    drop(engine);

    // A redb file that is not a rotoken database.
    let foreign = dir.join("other.redb");
    {
        const T: redb::TableDefinition<'_, &str, u64> = redb::TableDefinition::new("accounts");
        let db = redb::Database::create(&foreign).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(T).unwrap().insert("alice", 1).unwrap();
        txn.commit().unwrap();
    }
    let got = rotoken::Engine::open(&foreign, h.keys.clone(), h.options());
    assert!(matches!(got, Err(OpenError::NotRotoken)), "{got:?}");
    // Not a redb file at all: an error, not a panic.
    let garbage = dir.join("garbage.redb");
    std::fs::write(&garbage, vec![0x5a; 64 * 1024]).unwrap();
    assert!(rotoken::Engine::open(&garbage, h.keys.clone(), h.options()).is_err());
    let text = dir.join("text.redb");
    std::fs::write(&text, b"hello, this is not a database\n").unwrap();
    assert!(rotoken::Engine::open(&text, h.keys.clone(), h.options()).is_err());
}

/// Issues `n` families through the engine and checks that no family id,
/// secret or authenticator repeats.
fn issued_tokens_are_distinct(n: usize) {
    // One subject and client for every family: no per-user cap here, the
    // test is about the randomness of what is issued.
    let (h, _, _) = harness_with(rotoken_conformance::relaxed_policy().with_max_families_per_user(0));
    let engine =
        Engine::open_with_backend(redb::backends::InMemoryBackend::new(), h.keys.clone(), h.options()).unwrap();
    let mut families = HashSet::with_capacity(n);
    let mut secrets = HashSet::with_capacity(n);
    let mut authenticators = HashSet::with_capacity(n);
    let g = grant("alice", "web");
    for _ in 0..n {
        let issued = engine.issue(&g).unwrap();
        let t = rotoken::token::parse(issued.refresh_token.expose().as_bytes()).unwrap();
        assert_eq!(t.family, issued.family);
        assert!(families.insert(issued.family), "duplicate family id");
        assert!(secrets.insert(*t.secret.expose()), "duplicate secret");
        assert!(authenticators.insert(t.authenticator), "duplicate authenticator");
    }
    assert_eq!(engine.families_count().unwrap(), u64::try_from(n).unwrap());
    // The secrets look random: every byte value appears as a first byte
    // (missing one by chance among 10,000 has probability below 1e-14).
    let first: HashSet<u8> = secrets.iter().map(|s| s[0]).collect();
    assert_eq!(first.len(), 256);
}

/// Reliability checklist row 17 at 10^5 (dependencies are optimised in the
/// dev profile, so this takes seconds, not minutes).
#[test]
fn a_hundred_thousand_issued_tokens_are_all_distinct() {
    issued_tokens_are_distinct(100_000);
}

#[test]
fn compaction_keeps_every_answer_and_shrinks_the_file() {
    let (h, _, path) = harness_with(small_policy(1_000));
    let mut engine = h.open();
    // Families of several subjects, some rotated, one revoked by reuse, one
    // by subject: every table (families, indexes, expiry, events) has rows.
    let mut live = Vec::new();
    let mut dead = Vec::new();
    for i in 0..300 {
        let (_, t0) = issue(&engine, &format!("user-{}", i % 7));
        let t1 = rotate(&engine, &t0).unwrap().refresh_token.expose().to_owned();
        dead.push(t0);
        live.push(t1);
    }
    let reused = live.pop().unwrap();
    let t2 = rotate(&engine, &reused).unwrap().refresh_token.expose().to_owned();
    h.advance_ms(GRACE + SECOND);
    assert!(matches!(
        rotate(&engine, &reused),
        Err(RotateError::ReuseDetected { .. })
    ));
    dead.extend([reused, t2]);
    let user6 = engine.revoke(RevokeTarget::Subject("user-6")).unwrap();
    assert!(user6 > 0);
    let (live, revoked): (Vec<String>, Vec<String>) = live.into_iter().partition(|t| active(&engine, t));
    assert_eq!(revoked.len(), user6);
    let events = engine.events(0, 1_000).unwrap();
    let sessions = engine.sessions("user-3").unwrap();
    let before = std::fs::metadata(&path).unwrap().len();

    engine.compact().unwrap();
    let after = std::fs::metadata(&path).unwrap().len();
    assert!(after < before, "compaction must shrink the file: {before} -> {after}");
    assert_check(&engine);
    assert_eq!(engine.events(0, 1_000).unwrap(), events);
    assert_eq!(engine.sessions("user-3").unwrap(), sessions);
    assert_eq!(engine.families_count().unwrap(), 300);
    for t in dead.iter().chain(&revoked) {
        assert!(!active(&engine, t));
    }
    // Compacting again changes nothing; the database still works after a reopen.
    engine.compact().unwrap();
    drop(engine);
    let engine = h.open();
    for t in &live {
        assert!(active(&engine, t));
        rotate(&engine, t).unwrap();
    }
    assert_check(&engine);
}

#[test]
fn a_failed_commit_fails_every_request_in_it_and_loses_nothing_committed() {
    let backend = FlakySync {
        inner: Arc::new(InMemoryBackend::new()),
        fail: Arc::new(AtomicBool::new(false)),
    };
    let keys = Keyring::generate().unwrap();
    let engine = Engine::open_with_backend(backend.clone(), keys.clone(), Options::default()).unwrap();
    let tokens = issue_many(&engine, "u", 8);
    backend.fail.store(true, Ordering::SeqCst);
    let results = together(8, |i| engine.rotate(&tokens[i], &RotateRequest::new("web")));
    for r in &results {
        // Nobody is told "done", and nobody gets a token.
        assert!(matches!(r, Err(RotateError::Store(StoreError::Storage(_)))), "{r:?}");
    }
    drop(engine);
    // Once the disk works again and the database is reopened, every
    // original token is still the live one: no half-committed rotation.
    backend.fail.store(false, Ordering::SeqCst);
    let engine = Engine::open_with_backend(backend, keys, Options::default()).unwrap();
    assert!(engine.check().unwrap().is_ok());
    for t in &tokens {
        let r = engine.rotate(t, &RotateRequest::new("web")).unwrap();
        assert_eq!(r.generation, 1);
        assert!(!r.retried);
    }
}

/// A storage backend whose `sync_data` fails while `fail` is set: a disk
/// that stops accepting writes in the middle of a group commit.
#[derive(Debug, Clone)]
struct FlakySync {
    inner: Arc<InMemoryBackend>,
    fail: Arc<AtomicBool>,
}

impl StorageBackend for FlakySync {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected sync failure"));
        }
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.inner.write(offset, data)
    }
}
