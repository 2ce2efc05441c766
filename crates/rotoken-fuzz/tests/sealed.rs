//! Sealed records swapped between families; key id, nonce and associated
//! data altered (reliability checklist row 9, and the last clause of row 8:
//! a sealed record with a bad tag is rejected).
//!
//! The database is opened with raw redb (`families`: family id → record
//! body ‖ 16-byte MAC) and records are swapped or altered in two ways:
//!
//! * as they are: the record MAC (keyed BLAKE3 over family id and body)
//!   must reject every change, including a whole record moved to another
//!   family's key;
//! * with the MAC recomputed (as someone holding the storage key could):
//!   the layers behind the MAC must still hold. The sealed grant is bound by
//!   its AEAD associated data to the family id, tags, creation and absolute
//!   expiry, so a swapped grant, another key id, another nonce, a changed
//!   tag byte or changed associated data all fail to open. The sealed
//!   successor is bound to family and generation and keyed by the
//!   predecessor's secret, so a swapped one never opens.
//!
//! Every variant must be caught: `check()` reports it, or (for sealed
//! successors, which only the predecessor's holder can open) the grace
//! retry that needs it fails closed. Never is a token handed out that the
//! record should not give.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use redb::Database;
use rotoken::record::FamilyRecord;
use rotoken::{Engine, FamilyId, ManualClock, RotateError, RotateRequest, StoreError};
use rotoken_fuzz::backend::SharedMemory;
use rotoken_fuzz::fixture::{self, T0};
use rotoken_fuzz::raw::{self, RawKeys, TagKind};

/// Two families, each rotated once (so each holds a sealed successor).
struct Db {
    mem: SharedMemory,
    clock: ManualClock,
    a: Fam,
    b: Fam,
}

#[derive(Clone)]
struct Fam {
    id: FamilyId,
    first: String,
    current: String,
}

fn setup() -> Db {
    let mem = SharedMemory::new();
    let clock = ManualClock::at_unix_millis(T0);
    let engine = Engine::open_with_backend(mem.clone(), fixture::keyring(), fixture::options(&clock)).unwrap();
    let fam = |subject: &str| {
        let issued = engine
            .issue(&fixture::grant(subject, "web").with_metadata(subject.as_bytes().to_vec()))
            .unwrap();
        let r = engine
            .rotate(issued.refresh_token.expose(), &RotateRequest::new("web"))
            .unwrap();
        Fam {
            id: issued.family,
            first: issued.refresh_token.expose().to_owned(),
            current: r.refresh_token.expose().to_owned(),
        }
    };
    let (a, b) = (fam("alice"), fam("bob"));
    drop(engine);
    Db { mem, clock, a, b }
}

fn raw_db(mem: &SharedMemory) -> Database {
    Database::builder().create_with_backend(mem.clone()).unwrap()
}

fn value(mem: &SharedMemory, id: &FamilyId) -> Vec<u8> {
    let db = raw_db(mem);
    raw::families(&db)
        .unwrap()
        .into_iter()
        .find(|(f, _)| f == id)
        .unwrap()
        .1
}

fn put(mem: &SharedMemory, id: &FamilyId, v: &[u8]) {
    raw::put_family(&raw_db(mem), id, v).unwrap();
}

fn record(mem: &SharedMemory, id: &FamilyId) -> FamilyRecord {
    let v = value(mem, id);
    FamilyRecord::decode(raw::split_value(&v).unwrap().0).unwrap()
}

fn keys() -> RawKeys {
    RawKeys::of(&fixture::keyring())
}

fn engine(db: &Db) -> Engine {
    Engine::open_with_backend(db.mem.clone(), fixture::keyring(), fixture::options(&db.clock)).unwrap()
}

/// The problems `check()` reports for family `id`.
fn problems(e: &Engine, id: &FamilyId) -> Vec<String> {
    e.check()
        .unwrap()
        .problems
        .into_iter()
        .filter(|p| p.key == id.to_string())
        .map(|p| format!("{}: {}", p.table, p.what))
        .collect()
}

fn is_corrupt<T: std::fmt::Debug>(r: &Result<T, RotateError>) -> bool {
    matches!(r, Err(RotateError::Store(StoreError::Corrupt { .. })))
}

#[test]
fn raw_layout_matches_the_engine() {
    // The canary for `rotoken_fuzz::raw`: if the core changes a context
    // string or a layout, this fails first and says where.
    let db = setup();
    let k = keys();
    let v = value(&db.mem, &db.a.id);
    let (body, mac) = raw::split_value(&v).unwrap();
    assert_eq!(k.record_mac(&db.a.id, body), mac, "record MAC construction changed");
    let rec = FamilyRecord::decode(body).unwrap();
    assert_eq!(
        rec.subject_tag,
        k.tag(TagKind::Subject, "alice"),
        "index tag construction changed"
    );
    assert_eq!(rec.client_tag, k.tag(TagKind::Client, "web"));
    let current = rotoken::token::parse(db.a.current.as_bytes()).unwrap();
    assert_eq!(
        rec.current_hash,
        k.token_hash(&current),
        "token hash construction changed"
    );
    let plain = k
        .open(&raw::grant_ad(&db.a.id, &rec), &rec.sealed_grant)
        .expect("grant sealing or associated data changed");
    let grant = fixture::grant("alice", "web").with_metadata(b"alice".to_vec());
    assert_eq!(plain, raw::encode_grant(&grant), "grant plaintext layout changed");
    // A record re-sealed here is accepted by the engine as its own.
    let mut resealed = rec.clone();
    resealed.sealed_grant = k.seal(1, [3; 24], &raw::grant_ad(&db.a.id, &rec), &plain).unwrap();
    put(&db.mem, &db.a.id, &k.seal_value(&db.a.id, &resealed.encode()));
    let e = engine(&db);
    assert!(e.check().unwrap().is_ok());
    assert_eq!(e.introspect(&db.a.current).unwrap().sub.as_deref(), Some("alice"));
}

#[test]
fn every_altered_byte_of_a_stored_record_is_rejected_by_its_mac() {
    let db = setup();
    let original = value(&db.mem, &db.a.id);
    let mut cases = 0;
    for at in 0..original.len() {
        for mask in [0x01u8, 0x80] {
            let mut v = original.clone();
            v[at] ^= mask;
            put(&db.mem, &db.a.id, &v);
            let e = engine(&db);
            assert!(
                !problems(&e, &db.a.id).is_empty(),
                "byte {at} ^ {mask:#x}: check passed"
            );
            assert!(
                is_corrupt(&e.rotate(&db.a.current, &RotateRequest::new("web"))),
                "byte {at}: rotate"
            );
            assert!(
                matches!(e.introspect(&db.a.current), Err(StoreError::Corrupt { .. })),
                "byte {at}"
            );
            // The other family is untouched.
            assert!(e.introspect(&db.b.current).unwrap().active, "byte {at}: family b");
            cases += 1;
        }
    }
    // Shortened and lengthened values.
    for v in [
        &original[..original.len() - 1],
        &original[..10],
        &[][..],
        &[original.clone(), vec![0]].concat(),
    ] {
        put(&db.mem, &db.a.id, v);
        let e = engine(&db);
        assert!(!problems(&e, &db.a.id).is_empty());
        assert!(is_corrupt(&e.rotate(&db.a.current, &RotateRequest::new("web"))));
        cases += 1;
    }
    println!(
        "record MAC: {cases} altered values of a {}-byte record, all rejected",
        original.len()
    );
}

#[test]
fn records_swapped_between_families_are_rejected() {
    let db = setup();
    let (va, vb) = (value(&db.mem, &db.a.id), value(&db.mem, &db.b.id));
    put(&db.mem, &db.a.id, &vb);
    put(&db.mem, &db.b.id, &va);
    let e = engine(&db);
    for f in [&db.a, &db.b] {
        assert!(
            problems(&e, &f.id).iter().any(|p| p.contains("MAC")),
            "{:?}",
            problems(&e, &f.id)
        );
        assert!(is_corrupt(&e.rotate(&f.current, &RotateRequest::new("web"))));
        assert!(is_corrupt(&e.rotate(&f.first, &RotateRequest::new("web"))));
        assert!(matches!(e.introspect(&f.current), Err(StoreError::Corrupt { .. })));
    }
}

/// Applies `alter` to family a's record, re-MACs it (a forger holding the
/// storage key) and returns the engine over the result.
fn forged(db: &Db, alter: impl FnOnce(&mut FamilyRecord, &FamilyRecord)) -> Engine {
    let k = keys();
    let other = record(&db.mem, &db.b.id);
    let mut rec = record(&db.mem, &db.a.id);
    alter(&mut rec, &other);
    put(&db.mem, &db.a.id, &k.seal_value(&db.a.id, &rec.encode()));
    engine(db)
}

/// A variant the grant's sealing must catch: `check()` names it, and no
/// operation hands out a token or the grant.
fn grant_rejected(name: &str, alter: impl FnOnce(&mut FamilyRecord, &FamilyRecord)) {
    let db = setup();
    let e = forged(&db, alter);
    let p = problems(&e, &db.a.id);
    assert!(!p.is_empty(), "{name}: check passed");
    println!("{name}: check reports {p:?}");
    assert!(
        matches!(e.introspect(&db.a.current), Err(StoreError::Corrupt { .. })) || {
            // A tag change makes the token's client or subject look foreign: refused too.
            !e.introspect(&db.a.current).map(|i| i.active).unwrap_or(false)
        }
    );
    let mut req = RotateRequest::new("web");
    req.scope = Some(rotoken::Scope::parse("openid").unwrap());
    let r = e.rotate(&db.a.current, &req);
    assert!(r.is_err(), "{name}: rotated with a scope: {r:?}");
    let r = e.rotate(&db.a.current, &RotateRequest::new("web"));
    assert!(r.is_err(), "{name}: rotated: {r:?}");
    // Refused, or listed as unreadable without its grant's contents.
    assert!(
        e.sessions("alice").map_or(true, |list| list
            .iter()
            .all(|s| s.unreadable.is_some() && s.client_id.is_empty())),
        "{name}: sessions"
    );
}

#[test]
fn sealed_grants_swapped_between_families_do_not_open() {
    grant_rejected("grant swapped", |rec, other| {
        rec.sealed_grant = other.sealed_grant.clone()
    });
}

#[test]
fn a_sealed_grant_under_another_key_id_does_not_open() {
    grant_rejected("key id 1 -> 2", |rec, _| rec.sealed_grant[3] = 2);
    grant_rejected("key id 1 -> 9 (unknown)", |rec, _| rec.sealed_grant[3] = 9);
}

#[test]
fn a_sealed_grant_with_another_nonce_or_tag_does_not_open() {
    grant_rejected("nonce byte", |rec, _| rec.sealed_grant[4] ^= 1);
    grant_rejected("ciphertext byte", |rec, _| rec.sealed_grant[30] ^= 1);
    grant_rejected("tag byte", |rec, _| {
        let n = rec.sealed_grant.len();
        rec.sealed_grant[n - 1] ^= 1;
    });
    grant_rejected("truncated", |rec, _| rec.sealed_grant.truncate(40));
}

#[test]
fn a_sealed_grant_with_altered_associated_data_does_not_open() {
    grant_rejected("created_at", |rec, _| rec.created_at -= 1);
    grant_rejected("expires_at extended", |rec, _| rec.expires_at += 86_400_000);
    grant_rejected("subject tag", |rec, other| rec.subject_tag = other.subject_tag);
    grant_rejected("client tag", |rec, _| rec.client_tag[0] ^= 1);
    grant_rejected("confirmation added", |rec, _| rec.confirmation_tag = Some([7; 16]));
}

#[test]
fn a_whole_record_replayed_under_another_family_does_not_open() {
    // b's record, re-MACed under a's id: the grant's associated data names b.
    grant_rejected("record of b under a", |rec, other| *rec = other.clone());
}

/// Sealed successors only open with the predecessor's secret, so `check()`
/// cannot verify them; a swapped or altered one must make the grace retry
/// fail closed (the family is revoked as diverged), never hand out
/// another family's token.
#[test]
fn swapped_or_altered_sealed_successors_fail_closed() {
    for (name, alter) in [
        (
            "successor swapped",
            Box::new(|rec: &mut FamilyRecord, other: &FamilyRecord| rec.sealed_successor = other.sealed_successor)
                as Box<dyn FnOnce(&mut FamilyRecord, &FamilyRecord)>,
        ),
        (
            "successor key id",
            Box::new(|rec: &mut FamilyRecord, _: &FamilyRecord| {
                if let Some(s) = rec.sealed_successor.as_mut() {
                    s[3] = 2;
                }
            }),
        ),
        (
            "successor nonce",
            Box::new(|rec: &mut FamilyRecord, _: &FamilyRecord| {
                if let Some(s) = rec.sealed_successor.as_mut() {
                    s[10] ^= 1;
                }
            }),
        ),
        (
            "successor tag",
            Box::new(|rec: &mut FamilyRecord, _: &FamilyRecord| {
                if let Some(s) = rec.sealed_successor.as_mut() {
                    s[rotoken::record::SEALED_SUCCESSOR_LEN - 1] ^= 1;
                }
            }),
        ),
    ] {
        let db = setup();
        let e = forged(&db, alter);
        // Within the grace window, the predecessor asks for its successor.
        let r = e.rotate(&db.a.first, &RotateRequest::new("web"));
        assert!(
            matches!(r, Err(RotateError::Diverged { .. })),
            "{name}: the grace retry gave {r:?}"
        );
        // The family is now revoked: its current token is refused too.
        assert!(matches!(
            e.rotate(&db.a.current, &RotateRequest::new("web")),
            Err(RotateError::Revoked(_))
        ));
        assert!(e.introspect(&db.b.current).unwrap().active, "{name}: family b");
    }
}

#[test]
fn a_swapped_token_hash_fails_closed() {
    let db = setup();
    let e = forged(&db, |rec, other| rec.current_hash = other.current_hash);
    assert!(!e.introspect(&db.a.current).unwrap().active);
    assert!(
        !e.introspect(&db.b.current)
            .map(|i| i.family == Some(db.a.id))
            .unwrap_or(false)
    );
    let r = e.rotate(&db.a.current, &RotateRequest::new("web"));
    assert!(matches!(r, Err(RotateError::Diverged { .. })), "{r:?}");
}

/// A rotation refused for a corrupt grant must change nothing: the docs of
/// `Engine::rotate` say only reuse and divergence change state.
#[test]
fn a_rotation_refused_for_a_corrupt_grant_changes_nothing() {
    let db = setup();
    let before = record(&db.mem, &db.a.id).generation;
    let e = forged(&db, |rec, other| rec.sealed_grant = other.sealed_grant.clone());
    let r = e.rotate(&db.a.current, &RotateRequest::new("web"));
    assert!(is_corrupt(&r), "{r:?}");
    drop(e);
    assert_eq!(
        record(&db.mem, &db.a.id).generation,
        before,
        "a refused rotation advanced the generation"
    );
}
