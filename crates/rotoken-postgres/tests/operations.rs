//! The store as operators run it (issue 18): a row lock or the advisory
//! lock held by another session, a database that is not up yet, idle
//! connections given back, settings from the URL, errors that name the
//! SQLSTATE, a clock floor that is never lowered, a commit whose answer
//! never came.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{SECOND, Servers, grant};
use rotoken::store::{Commit, IndexKeys, Locked, Store};
use rotoken::{Code, Engine, FamilyId, OpenError, RotateRequest, StoreError};
use rotoken_postgres::testing::{self, LateCluster, Sql, TestDb};
use rotoken_postgres::{ADVISORY_KEY, PgOptions, PgStoreError, PostgresStore};

fn id(n: u8) -> FamilyId {
    FamilyId::from_bytes([n; 16])
}

fn keys() -> IndexKeys {
    IndexKeys {
        subject: [1; 16],
        client: [2; 16],
        gc_at: 10,
    }
}

fn insert(store: &impl Store, family: FamilyId, record: &[u8]) {
    let mut txn = store.begin_write(Commit::Durable).unwrap();
    txn.insert_family(&family, record, &keys()).unwrap();
    txn.commit().unwrap();
}

/// Options whose statement timeout is long (so a lock wait that is not
/// bounded by `lock_wait` ends in a storage error, not `Busy`) and whose
/// lock wait is short.
fn short_lock_wait() -> PgOptions {
    let mut o = PgOptions::default();
    o.lock_wait = Duration::from_millis(300);
    o.statement_timeout = Duration::from_secs(20);
    o
}

/// Another session holding the row lock of `family` until it is dropped.
fn hold_row_lock(db: &TestDb, family: &FamilyId) -> Sql {
    let other = db.sql().unwrap();
    other.execute("BEGIN").unwrap();
    let hex: String = family.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    other
        .execute(&format!(
            "SELECT 1 FROM rotoken_families WHERE id = '\\x{hex}'::bytea FOR UPDATE"
        ))
        .unwrap();
    other
}

#[test]
fn a_family_whose_row_another_session_holds_is_busy_and_the_others_lock_and_commit() {
    let Some(db) = testing::database() else { return };
    let store = db.store_with(short_lock_wait()).unwrap();
    for n in 1..=3 {
        insert(&store, id(n), b"v0");
    }

    // Nobody else holds them: every family is held, an absent one too.
    let mut txn = store.begin_write(Commit::Durable).unwrap();
    assert_eq!(
        txn.try_lock_families(&[id(3), id(1), id(9)]).unwrap(),
        vec![
            Locked::Held(Some(b"v0".to_vec())),
            Locked::Held(Some(b"v0".to_vec())),
            Locked::Held(None)
        ]
    );
    drop(txn);

    let other = hold_row_lock(&db, &id(2));
    let mut txn = store.begin_write(Commit::Durable).unwrap();
    let locked = txn.try_lock_families(&[id(1), id(2), id(3), id(9)]).unwrap();
    assert_eq!(
        locked,
        vec![
            Locked::Held(Some(b"v0".to_vec())),
            Locked::Busy,
            Locked::Held(Some(b"v0".to_vec())),
            Locked::Held(None)
        ]
    );
    // The families reported held are held: another store cannot take them.
    let second = db.store_with(short_lock_wait()).unwrap();
    let mut t2 = second.begin_write(Commit::Durable).unwrap();
    assert_eq!(t2.try_lock_families(&[id(1)]).unwrap(), vec![Locked::Busy]);
    drop(t2);
    // The rest of the batch commits.
    txn.update_family(&id(1), b"v1", &keys(), &keys()).unwrap();
    txn.update_family(&id(3), b"v1", &keys(), &keys()).unwrap();
    txn.commit().unwrap();
    drop(other);
    let read = store.begin_read().unwrap();
    assert_eq!(read.family(&id(1)).unwrap(), Some(b"v1".to_vec()));
    assert_eq!(read.family(&id(2)).unwrap(), Some(b"v0".to_vec()));
    assert_eq!(read.family(&id(3)).unwrap(), Some(b"v1".to_vec()));
}

#[test]
fn an_engine_answers_busy_for_a_held_family_and_rotates_the_others() {
    let Some(db) = testing::database() else { return };
    let s = Servers::new(db);
    let mut options = short_lock_wait();
    options.statement_timeout = Duration::from_secs(3);
    let engine = Engine::with_store(s.db.store_with(options).unwrap(), s.keys.clone(), s.options()).unwrap();
    let req = RotateRequest::new("web-app");
    let tokens: Vec<_> = (0..4)
        .map(|i| engine.issue(&grant(&format!("user{i}"), "web-app")).unwrap())
        .collect();
    let held = engine
        .introspect(tokens[0].refresh_token.expose())
        .unwrap()
        .family
        .unwrap();
    s.advance_ms(SECOND);
    let other = hold_row_lock(&s.db, &held);

    let barrier = Barrier::new(tokens.len());
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = tokens
            .iter()
            .map(|t| {
                let (engine, req, barrier) = (&engine, &req, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    engine.rotate(t.refresh_token.expose(), req)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first = results[0].as_ref().map(|r| r.generation);
    assert!(
        matches!(&results[0], Err(e) if e.code() == Code::Busy),
        "the held family: {first:?}"
    );
    for (i, r) in results.iter().enumerate().skip(1) {
        assert_eq!(r.as_ref().map(|r| r.generation).ok(), Some(1), "family {i}: {r:?}");
    }
    // Once the other session lets go, the same token rotates.
    drop(other);
    let again = engine.rotate(tokens[0].refresh_token.expose(), &req).unwrap();
    assert_eq!(again.generation, 1);
}

#[test]
fn a_session_holding_the_advisory_lock_stops_no_issue_or_rotation() {
    let Some(db) = testing::database() else { return };
    let s = Servers::new(db);
    let mut options = PgOptions::default();
    // An unbounded wait would end here, as a storage error.
    options.statement_timeout = Duration::from_secs(2);
    let engine = Engine::with_store(s.db.store_with(options).unwrap(), s.keys.clone(), s.options()).unwrap();
    let req = RotateRequest::new("web-app");

    let other = s.db.sql().unwrap();
    other
        .execute(&format!("SELECT pg_advisory_lock({ADVISORY_KEY})"))
        .unwrap();
    let mut token = engine.issue(&grant("alice", "web-app")).unwrap().refresh_token;
    for round in 0..5 {
        // Far enough for the engine to raise its clock floor each time.
        s.advance_ms(2 * SECOND);
        engine
            .issue(&grant("bob", "web-app"))
            .unwrap_or_else(|e| panic!("issue {round}: {e}"));
        token = engine
            .rotate(token.expose(), &req)
            .unwrap_or_else(|e| panic!("rotate {round}: {e}"))
            .refresh_token;
    }
    other
        .execute(&format!("SELECT pg_advisory_unlock({ADVISORY_KEY})"))
        .unwrap();
}

fn floor_of(store: &PostgresStore) -> Option<i64> {
    store
        .begin_read()
        .unwrap()
        .meta("floor")
        .unwrap()
        .map(|v| i64::from_be_bytes(v.try_into().unwrap()))
}

fn raise(store: &PostgresStore, value: i64) {
    let mut txn = store.begin_write(Commit::Durable).unwrap();
    txn.raise_meta_i64("floor", value).unwrap();
    txn.commit().unwrap();
}

#[test]
fn raise_meta_i64_never_lowers_for_any_i64() {
    let Some(db) = testing::database() else { return };
    let store = db.store().unwrap();
    assert_eq!(floor_of(&store), None);
    raise(&store, -5);
    assert_eq!(floor_of(&store), Some(-5));
    raise(&store, -3);
    assert_eq!(floor_of(&store), Some(-3));
    raise(&store, -10);
    assert_eq!(floor_of(&store), Some(-3));
    raise(&store, 1);
    // As bytes, -1 (ff..ff) is above 1.
    raise(&store, -1);
    assert_eq!(floor_of(&store), Some(1));
    raise(&store, i64::MAX);
    raise(&store, i64::MIN);
    assert_eq!(floor_of(&store), Some(i64::MAX));
}

#[test]
fn raise_meta_i64_never_lowers_when_transactions_race() {
    let Some(db) = testing::database() else { return };
    let store = db.store().unwrap();
    raise(&store, 10);

    // Another writer has the row (uncommitted 200): two raises wait for it.
    let other = db.sql().unwrap();
    let be = |v: i64| v.to_be_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>();
    other.execute("BEGIN").unwrap();
    other
        .execute(&format!(
            "UPDATE rotoken_meta SET value = '\\x{}'::bytea WHERE name = 'floor'",
            be(200)
        ))
        .unwrap();
    let waiting = || {
        db.sql()
            .unwrap()
            .query_i64(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .unwrap()
    };
    std::thread::scope(|scope| {
        let a = scope.spawn(|| raise(&store, 100));
        let b = scope.spawn(|| raise(&store, 150));
        while waiting() < 2 {
            assert!(!a.is_finished() && !b.is_finished(), "a raise did not wait for the row");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Both read 10 before; the committed value they meet is 200.
        other.execute("COMMIT").unwrap();
        a.join().unwrap();
        b.join().unwrap();
    });
    assert_eq!(floor_of(&store), Some(200));

    // And with the other writer rolling back: the higher raise wins, whatever the order.
    other.execute("BEGIN").unwrap();
    other
        .execute(&format!(
            "UPDATE rotoken_meta SET value = '\\x{}'::bytea WHERE name = 'floor'",
            be(5)
        ))
        .unwrap();
    std::thread::scope(|scope| {
        let a = scope.spawn(|| raise(&store, 300));
        let b = scope.spawn(|| raise(&store, 250));
        while waiting() < 2 {
            std::thread::sleep(Duration::from_millis(10));
        }
        other.execute("ROLLBACK").unwrap();
        a.join().unwrap();
        b.join().unwrap();
    });
    assert_eq!(floor_of(&store), Some(300));
}

#[test]
fn storage_errors_carry_the_sqlstate_and_the_servers_message() {
    let Some(db) = testing::database() else { return };
    // A statement timeout, set from the URL.
    let url = format!("{}&statement_timeout_ms=300", db.url());
    let store = PostgresStore::connect(&url, PgOptions::default()).unwrap();
    insert(&store, id(1), b"v0");
    let other = hold_row_lock(&db, &id(1));
    let mut txn = store.begin_write(Commit::Durable).unwrap();
    let e = txn.lock_families(&[id(1)]).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("SQLSTATE 57014: canceling statement due to statement timeout"),
        "{text}"
    );
    assert!(matches!(&e, StoreError::Storage(_)), "{e:?}");
    // Nothing was sent with the COMMIT: a plain storage error, not an unknown outcome.
    let commit = txn.commit().unwrap_err();
    assert!(matches!(commit, StoreError::Storage(_)), "{commit:?}");
    drop(other);

    // A database that does not exist: the server's words, and no waiting.
    let missing = db.url().replace(db.name(), "no_such_database");
    let mut retries = 0;
    let e = PostgresStore::connect_waiting(&missing, PgOptions::default(), Duration::from_secs(30), |_| {
        retries += 1;
    })
    .unwrap_err();
    assert!(e.to_string().contains("SQLSTATE 3D000"), "{e}");
    assert_eq!(retries, 0, "{e}");

    // A rotoken parameter with a bad value.
    let bad = format!("{}&pool_size=many", db.url());
    let e = PostgresStore::connect(&bad, PgOptions::default()).unwrap_err();
    assert!(e.to_string().contains("pool_size"), "{e}");
}

#[test]
fn url_parameters_set_the_options_and_are_not_passed_to_the_driver() {
    let Some(db) = testing::database() else { return };
    let url = format!(
        "{}&pool_size=3&connect_timeout_ms=4000&statement_timeout_ms=7000&lock_wait_ms=250\
         &idle_timeout_ms=0&idle_in_transaction_timeout_ms=9000&migration_timeout_ms=60000\
         &application_name=rotoken-test",
        db.url()
    );
    let store = PostgresStore::connect(&url, PgOptions::default()).unwrap();
    assert_eq!(store.concurrent_batches(), 1, "pool_size=3: {store:?}");
    insert(&store, id(1), b"v0");
    let sql = db.sql().unwrap();
    let named = sql
        .query_i64("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rotoken-test'")
        .unwrap();
    assert!(named >= 1, "libpq parameters pass through");
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    let Some(db) = testing::database() else { return };
    let mut options = PgOptions::default();
    options.idle_timeout = Some(Duration::from_millis(500));
    let store = db.store_with(options).unwrap();
    insert(&store, id(1), b"v0");
    let sql = db.sql().unwrap();
    let connections = || {
        sql.query_i64(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .unwrap()
    };
    // Load: five transactions at once, so five connections.
    {
        let reads: Vec<_> = (0..5).map(|_| store.begin_read().unwrap()).collect();
        for r in &reads {
            assert!(r.family(&id(1)).unwrap().is_some());
        }
    }
    assert!(connections() >= 5, "{}", connections());
    // Then idle: every connection is given back to the server.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while connections() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "idle connections stayed open: {}",
            connections()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // And the store reconnects when needed.
    assert_eq!(
        store.begin_read().unwrap().family(&id(1)).unwrap(),
        Some(b"v0".to_vec())
    );
}

#[test]
fn connect_waiting_waits_for_a_database_that_is_not_up_yet() {
    let Some(cluster) = LateCluster::new() else { return };
    let url = cluster.url();

    // Not up, and not coming: a clean error once the wait has passed.
    let mut retries = Vec::new();
    let e = PostgresStore::connect_waiting(&url, PgOptions::default(), Duration::from_millis(700), |r| {
        retries.push((r.attempt, r.retry_in, r.error.to_string()));
    })
    .unwrap_err();
    assert_eq!(e.code(), Code::StorageError, "{e}");
    assert!(e.to_string().contains("could not connect to PostgreSQL"), "{e}");
    assert!(retries.len() >= 2, "{retries:?}");
    assert_eq!(retries[0].0, 1);
    assert!(retries[1].1 > retries[0].1, "back-off: {retries:?}");

    // Coming up a moment later: connected once it is.
    let cluster = Arc::new(cluster);
    let starter = {
        let cluster = Arc::clone(&cluster);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            cluster.start().unwrap();
        })
    };
    let mut attempts = 0;
    let store = PostgresStore::connect_waiting(&url, PgOptions::default(), Duration::from_secs(60), |r| {
        attempts = r.attempt;
    });
    starter.join().unwrap();
    let store = store.unwrap();
    assert!(attempts >= 1, "it had to wait");
    insert(&store, id(1), b"v0");
    assert_eq!(
        store.begin_read().unwrap().family(&id(1)).unwrap(),
        Some(b"v0".to_vec())
    );
    drop(store);
}

/// Sends `signal` to a process.
fn signal(pid: i64, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {signal} {pid}");
}

/// Resumes a stopped backend however the test ends.
struct Resume(i64);

impl Drop for Resume {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

#[test]
fn a_commit_whose_answer_never_comes_has_an_unknown_outcome() {
    let Some(db) = testing::database() else { return };
    let mut options = PgOptions::default();
    options.connect_timeout = Duration::from_millis(500);
    options.statement_timeout = Duration::from_millis(500);
    let store = db.store_with(options).unwrap();
    insert(&store, id(1), b"v0");
    let update = |record: &[u8]| {
        let mut txn = store.begin_write(Commit::Durable).unwrap();
        txn.lock_families(&[id(1)]).unwrap();
        txn.update_family(&id(1), record, &keys(), &keys()).unwrap();
        txn
    };
    // The connection has its statements prepared: the commit is one trip.
    update(b"v0").commit().unwrap();
    let txn = update(b"v1");
    // The server stalls (a frozen VM, a stuck disk) with the transaction
    // open: the COMMIT goes out and no answer comes back.
    let sql = db.sql().unwrap();
    let pid = sql
        .query_i64(
            "SELECT pid::int8 FROM pg_stat_activity
             WHERE datname = current_database() AND state = 'idle in transaction'",
        )
        .unwrap();
    signal(pid, "-STOP");
    let resume = Resume(pid);
    let e = txn.commit().unwrap_err();
    assert!(matches!(e, StoreError::OutcomeUnknown(_)), "{e:?}");
    assert_eq!(e.code(), Code::OutcomeUnknown);
    // The outcome settles once the server resumes: here it finds the
    // client gone when it answers the first statement and rolls back (had
    // the answer to the COMMIT been the one lost, it would have committed).
    drop(resume);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sql
        .query_i64(&format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"))
        .unwrap()
        > 0
    {
        assert!(std::time::Instant::now() < deadline, "the resumed backend did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    let settled = store.begin_read().unwrap().family(&id(1)).unwrap().unwrap();
    assert!(settled == b"v0" || settled == b"v1", "{settled:?}");
}

#[test]
fn connection_failures_are_told_apart_from_other_errors() {
    assert!(PgStoreError::Pool("wait timeout".into()).is_connection_failure());
    let e = OpenError::UnsupportedSchema { found: 9, supported: 1 };
    assert_ne!(e.code(), Code::StorageError);
}
