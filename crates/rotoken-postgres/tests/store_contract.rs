//! The store contract (crates/rotoken/src/store/mod.rs) against PostgreSQL,
//! directly through the `Store` trait: locking across connections, whole-
//! batch rollback, schema refusal, event numbers, skip-locked gc.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::time::Duration;

use rotoken::store::{Commit, IndexKeys, Store};
use rotoken::{FamilyId, OpenError, StoreError};
use rotoken_postgres::testing;

fn id(n: u8) -> FamilyId {
    FamilyId::from_bytes([n; 16])
}

fn keys(gc_at: i64) -> IndexKeys {
    IndexKeys {
        subject: [1; 16],
        client: [2; 16],
        gc_at,
    }
}

fn insert(store: &impl Store, family: FamilyId, record: &[u8], gc_at: i64) {
    let mut txn = store.begin_write(Commit::Durable).unwrap();
    txn.insert_family(&family, record, &keys(gc_at)).unwrap();
    txn.commit().unwrap();
}

#[test]
fn a_second_transaction_locking_a_family_waits_for_the_first_to_commit() {
    let Some(db) = testing::database() else { return };
    let a = db.store().unwrap();
    let b = db.store().unwrap();
    insert(&a, id(1), b"v0", 10);

    let mut first = a.begin_write(Commit::Durable).unwrap();
    assert_eq!(first.lock_families(&[id(1)]).unwrap(), vec![Some(b"v0".to_vec())]);

    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut second = b.begin_write(Commit::Durable).unwrap();
            tx.send("locking").unwrap();
            let seen = second.lock_families(&[id(1)]).unwrap();
            tx.send("locked").unwrap();
            // It must see what the first committed, not what was there when it asked.
            assert_eq!(seen, vec![Some(b"v1".to_vec())]);
            second.update_family(&id(1), b"v2", &keys(10), &keys(10)).unwrap();
            second.commit().unwrap();
        });
        assert_eq!(rx.recv().unwrap(), "locking");
        // The second is blocked on the row lock: PostgreSQL says so.
        let sql = db.sql().unwrap();
        loop {
            let waiting = sql
                .query_i64(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .unwrap();
            if waiting == 1 {
                break;
            }
            assert!(
                rx.try_recv().is_err(),
                "the second transaction did not wait for the lock"
            );
            std::thread::yield_now();
        }
        first.update_family(&id(1), b"v1", &keys(10), &keys(10)).unwrap();
        first.commit().unwrap();
        assert_eq!(rx.recv().unwrap(), "locked");
    });
    assert_eq!(a.begin_read().unwrap().family(&id(1)).unwrap(), Some(b"v2".to_vec()));
}

#[test]
fn a_batch_that_fails_rolls_back_entirely() {
    let Some(db) = testing::database() else { return };
    let store = db.store().unwrap();
    insert(&store, id(1), b"existing", 10);
    insert(&store, id(4), b"four", 10);

    let mut bad = store.begin_write(Commit::Durable).unwrap();
    bad.lock_families(&[id(1)]).unwrap();
    bad.update_family(&id(1), b"changed", &keys(10), &keys(20)).unwrap();
    bad.insert_family(&id(5), b"new", &keys(10)).unwrap();
    bad.append_event(5, b"event").unwrap();
    bad.set_meta("m", b"x").unwrap();
    // Collides with a stored family: PostgreSQL refuses it at commit.
    bad.insert_family(&id(4), b"collides", &keys(10)).unwrap();
    let err = bad.commit().unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");

    let read = store.begin_read().unwrap();
    assert_eq!(read.family(&id(1)).unwrap(), Some(b"existing".to_vec()));
    assert_eq!(read.family(&id(5)).unwrap(), None);
    assert_eq!(read.family(&id(4)).unwrap(), Some(b"four".to_vec()));
    assert_eq!(read.meta("m").unwrap(), None);
    assert!(read.events(0, 10).unwrap().is_empty());
    drop(read);

    // A transaction dropped without commit changes nothing either.
    let mut dropped = store.begin_write(Commit::Durable).unwrap();
    dropped.lock_families(&[id(1)]).unwrap();
    dropped.update_family(&id(1), b"dropped", &keys(10), &keys(10)).unwrap();
    drop(dropped);

    // The store keeps working after the failure (and the lock is gone).
    let mut txn = store.begin_write(Commit::Durable).unwrap();
    assert_eq!(txn.lock_families(&[id(1)]).unwrap(), vec![Some(b"existing".to_vec())]);
    txn.update_family(&id(1), b"later", &keys(10), &keys(10)).unwrap();
    txn.commit().unwrap();
    assert_eq!(
        store.begin_read().unwrap().family(&id(1)).unwrap(),
        Some(b"later".to_vec())
    );
}

#[test]
fn a_newer_schema_is_refused_and_nothing_is_written() {
    let Some(db) = testing::database() else { return };
    drop(db.store().unwrap());
    let sql = db.sql().unwrap();
    let newer = rotoken_postgres::SCHEMA_VERSION + 1;
    sql.execute(&format!("INSERT INTO rotoken_migrations (version) VALUES ({newer})"))
        .unwrap();
    let before = db.pg_dump().unwrap();
    // pg_dump marks its output with a fresh random `\restrict` key each run.
    fn without_restrict_keys(dump: &[u8]) -> Vec<&[u8]> {
        dump.split(|b| *b == b'\n')
            .filter(|l| !l.starts_with(b"\\restrict") && !l.starts_with(b"\\unrestrict"))
            .collect()
    }
    let err = db.store().unwrap_err();
    assert!(
        matches!(err, OpenError::UnsupportedSchema { found, supported }
            if found == newer && supported == rotoken_postgres::SCHEMA_VERSION),
        "{err}"
    );
    assert!(
        without_restrict_keys(&db.pg_dump().unwrap()) == without_restrict_keys(&before),
        "opening a newer schema changed the database"
    );
}

#[test]
fn opening_twice_migrates_once_and_an_empty_database_is_created() {
    let Some(db) = testing::database() else { return };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| db.store());
        let b = s.spawn(|| db.store());
        (a.join().unwrap(), b.join().unwrap())
    });
    a.unwrap();
    b.unwrap();
    let sql = db.sql().unwrap();
    assert_eq!(sql.query_i64("SELECT count(*) FROM rotoken_migrations").unwrap(), 1);
}

#[test]
fn event_numbers_increase_in_commit_order_and_are_never_reused() {
    let Some(db) = testing::database() else { return };
    let a = db.store().unwrap();
    let b = db.store().unwrap();
    let mut seen = Vec::new();
    for round in 0..3 {
        let mut t = a.begin_write(Commit::Durable).unwrap();
        seen.push(t.append_event(round, b"a1").unwrap());
        seen.push(t.append_event(round, b"a2").unwrap());
        t.commit().unwrap();
        let mut t = b.begin_write(Commit::Durable).unwrap();
        seen.push(t.append_event(round, b"b1").unwrap());
        t.commit().unwrap();
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    // Remove every event, then append again: the numbers keep rising.
    let mut t = a.begin_write(Commit::Durable).unwrap();
    t.remove_events(&seen).unwrap();
    t.commit().unwrap();
    assert!(a.begin_read().unwrap().events(0, 100).unwrap().is_empty());
    let mut t = a.begin_write(Commit::Durable).unwrap();
    let next = t.append_event(10, b"after").unwrap();
    t.commit().unwrap();
    let last = *seen.last().unwrap();
    assert!(next > last, "{next} after {last}");
    assert_eq!(
        a.begin_read().unwrap().events(0, 10).unwrap(),
        vec![(next, b"after".to_vec())]
    );

    // While one transaction holds the counter, another waits for its commit
    // and then numbers after it.
    let mut first = a.begin_write(Commit::Durable).unwrap();
    let n1 = first.append_event(11, b"first").unwrap();
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut second = b.begin_write(Commit::Durable).unwrap();
            let n2 = second.append_event(12, b"second").unwrap();
            second.commit().unwrap();
            n2
        });
        std::thread::sleep(Duration::from_millis(50));
        first.commit().unwrap();
        let n2 = h.join().unwrap();
        assert!(n2 > n1, "{n2} committed after {n1}");
    });
}

#[test]
fn lock_due_skips_families_another_server_holds() {
    let Some(db) = testing::database() else { return };
    let a = db.store().unwrap();
    let b = db.store().unwrap();
    for n in 1..=6 {
        insert(&a, id(n), &[n; 4], i64::from(n));
    }
    insert(&a, id(9), b"later", 1_000);

    let mut first = a.begin_write(Commit::Durable).unwrap();
    let due_a: Vec<FamilyId> = first.lock_due(100, 3).unwrap().into_iter().map(|d| d.family).collect();
    assert_eq!(due_a, vec![id(1), id(2), id(3)], "earliest first");
    let mut second = b.begin_write(Commit::Durable).unwrap();
    let due_b = second.lock_due(100, 10).unwrap();
    let due_b_ids: Vec<FamilyId> = due_b.iter().map(|d| d.family).collect();
    assert_eq!(
        due_b_ids,
        vec![id(4), id(5), id(6)],
        "the held ones are skipped, not waited for"
    );
    assert_eq!(due_b[0].gc_at, 4);
    assert_eq!(due_b[0].record, vec![4; 4]);
    for d in &due_b {
        second.remove_family(&d.family, &keys(d.gc_at)).unwrap();
    }
    for f in &due_a {
        first.remove_family(f, &keys(0)).unwrap();
    }
    second.commit().unwrap();
    first.commit().unwrap();
    let read = a.begin_read().unwrap();
    assert_eq!(read.family_count().unwrap(), 1);
    assert_eq!(read.family(&id(9)).unwrap(), Some(b"later".to_vec()));
}

#[test]
fn indexes_list_families_by_tag_and_the_check_agrees() {
    let Some(db) = testing::database() else { return };
    let store = db.store().unwrap();
    let mut t = store.begin_write(Commit::Durable).unwrap();
    for n in [3u8, 1, 2] {
        let k = IndexKeys {
            subject: [n % 2; 16],
            client: [7; 16],
            gc_at: i64::from(n),
        };
        t.insert_family(&id(n), b"r", &k).unwrap();
    }
    t.commit().unwrap();
    let read = store.begin_read().unwrap();
    use rotoken::store::Index;
    assert_eq!(read.families_by(Index::Subject, &[1; 16]).unwrap(), vec![id(1), id(3)]);
    assert_eq!(
        read.families_by(Index::Client, &[7; 16]).unwrap(),
        vec![id(1), id(2), id(3)]
    );
    assert_eq!(
        read.scan_families(Some(&id(1)), 1).unwrap(),
        vec![(id(2), b"r".to_vec())]
    );
    let mut expected = std::collections::BTreeMap::new();
    for n in [1u8, 2, 3] {
        expected.insert(
            id(n),
            Some(IndexKeys {
                subject: [n % 2; 16],
                client: [7; 16],
                gc_at: i64::from(n),
            }),
        );
    }
    let check = read.check_indexes(&expected).unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    expected.insert(id(2), Some(keys(99)));
    let check = read.check_indexes(&expected).unwrap();
    assert_eq!(check.problems.len(), 3, "{:?}", check.problems);
}
