//! Fuzz target `records`: decoding stored records from arbitrary bytes, both
//! with the pure decoders and through the engine reading a planted record.

use std::sync::OnceLock;

use redb::Database;
use rotoken::record::{Event, FamilyRecord, FamilyState};
use rotoken::{Engine, FamilyId, ManualClock, RevokeTarget, RotateError, RotateRequest, StoreError};

use crate::backend::SharedMemory;
use crate::fixture::{self, T0};
use crate::raw::{self, RawKeys};

/// A database image with one family in it, made once per process.
pub struct Template {
    /// The database bytes.
    pub image: Vec<u8>,
    /// The family.
    pub family: FamilyId,
    /// Its generation-0 token (now the predecessor).
    pub first: String,
    /// Its generation-1 token (the current one).
    pub current: String,
    /// The family's stored value (body ‖ MAC) as the engine wrote it.
    pub value: Vec<u8>,
    /// The subject and client of the family.
    pub subject: &'static str,
    /// The client of the family.
    pub client: &'static str,
}

/// The template: fixture keys, clock at [`T0`], one family issued and rotated once.
///
/// # Panics
///
/// If the engine fails on a fresh in-memory database.
pub fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let mem = SharedMemory::new();
        let clock = ManualClock::at_unix_millis(T0);
        let engine = Engine::open_with_backend(mem.clone(), fixture::keyring(), fixture::options(&clock))
            .expect("open the template");
        let issued = engine
            .issue(&fixture::grant("alice", "web").with_confirmation("jkt-1"))
            .expect("issue");
        clock.advance(std::time::Duration::from_secs(1));
        let mut req = RotateRequest::new("web");
        req.confirmation = Some("jkt-1".into());
        let rotated = engine.rotate(issued.refresh_token.expose(), &req).expect("rotate");
        drop(engine);
        let db = Database::builder().create_with_backend(mem.clone()).expect("raw open");
        let value = raw::families(&db).expect("read").remove(0).1;
        drop(db);
        Template {
            image: mem.image(),
            family: issued.family,
            first: issued.refresh_token.expose().to_owned(),
            current: rotated.refresh_token.expose().to_owned(),
            value,
            subject: "alice",
            client: "web",
        }
    })
}

fn raw_keys() -> &'static RawKeys {
    static K: OnceLock<RawKeys> = OnceLock::new();
    K.get_or_init(|| RawKeys::of(&fixture::keyring()))
}

/// Decodes `data` as stored records. The first byte picks the mode:
///
/// * `0`: the pure decoders. `FamilyRecord::decode` and `Event::decode`
///   never panic, and a record that decodes re-encodes to the same bytes
///   (one encoding per record).
/// * `1`: the rest is planted as the template family's record body under a
///   *valid* MAC, then the engine opens the database and introspects,
///   rotates, lists sessions, checks, collects garbage and revokes.
/// * `2`: the rest is planted as the stored value as it is (no MAC fix-up):
///   every operation must refuse it as corrupt.
/// * `3`: the rest is grant plaintext, sealed with the right key and
///   associated data into an otherwise valid record: exercises the grant decoder.
///
/// In modes 1 to 3 nothing may panic, and no token may be accepted unless
/// the planted record really makes it the current token of a live family.
///
/// # Panics
///
/// When a property fails.
pub fn records(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => decoders(rest),
        1 => {
            let t = template();
            planted(&raw_keys().seal_value(&t.family, rest));
        }
        2 => planted(rest),
        _ => planted(&grant_record(rest)),
    }
}

fn decoders(bytes: &[u8]) {
    if let Ok(r) = FamilyRecord::decode(bytes) {
        assert_eq!(r.encode(), bytes, "a record decoded but re-encodes differently");
    }
    if let Ok(e) = Event::decode(7, bytes) {
        assert_eq!(e.seq, 7);
        let _ = e.kind.as_str();
    }
}

/// The template record with its grant replaced by `plaintext`, sealed properly, under a valid MAC.
fn grant_record(plaintext: &[u8]) -> Vec<u8> {
    let t = template();
    let k = raw_keys();
    let (body, _) = raw::split_value(&t.value).expect("template value");
    let mut rec = FamilyRecord::decode(body).expect("template record decodes");
    let ad = raw::grant_ad(&t.family, &rec);
    rec.sealed_grant = k.seal(1, [7; 24], &ad, plaintext).expect("seal");
    k.seal_value(&t.family, &rec.encode())
}

/// What the planted value makes of the family, decided outside the engine.
fn expected(value: &[u8]) -> Option<FamilyRecord> {
    let t = template();
    let (body, mac) = raw::split_value(value)?;
    if raw_keys().record_mac(&t.family, body) != mac {
        return None;
    }
    FamilyRecord::decode(body).ok()
}

fn planted(value: &[u8]) {
    let t = template();
    let mem = SharedMemory::from_image(t.image.clone());
    {
        let db = Database::builder()
            .create_with_backend(mem.clone())
            .expect("raw open of the template");
        raw::put_family(&db, &t.family, value).expect("plant the record");
    }
    let decoded = expected(value);
    let clock = ManualClock::at_unix_millis(T0 + 2 * fixture::SECOND);
    let engine = Engine::open_with_backend(mem, fixture::keyring(), fixture::options(&clock))
        .expect("the template opens whatever one record holds");
    let keys = raw_keys();
    // A token may be active only if the planted record makes it current.
    for token in [&t.first, &t.current] {
        let parsed = rotoken::token::parse(token.as_bytes()).expect("template token");
        let may_be_current = decoded.as_ref().is_some_and(|r| {
            r.state == FamilyState::Active
                && r.generation == parsed.generation
                && r.current_hash == keys.token_hash(&parsed)
        });
        match engine.introspect(token) {
            Ok(i) if i.active => {
                assert!(
                    may_be_current,
                    "introspect accepted a token the record does not make current"
                );
                assert_eq!(i.family, Some(t.family));
            }
            Ok(_) => {}
            Err(e) => assert!(matches!(e, StoreError::Corrupt { .. }), "introspect: {e}"),
        }
    }
    let check = engine.check().expect("check reads a sound redb file");
    if decoded.is_none() {
        assert!(!check.is_ok(), "check passed a record with a bad MAC or layout");
    }
    let mut req = RotateRequest::new(t.client);
    req.confirmation = Some("jkt-1".into());
    let before_current = engine.introspect(&t.current).map(|i| i.active).unwrap_or(false);
    match engine.rotate(&t.current, &req) {
        Ok(r) => {
            assert!(
                before_current || r.retried,
                "rotate accepted a token that was not current"
            );
            assert!(
                decoded.is_some(),
                "rotate accepted a token of a record with a bad MAC or layout"
            );
            assert_eq!(r.family, t.family);
        }
        Err(RotateError::Store(StoreError::Corrupt { .. })) => {}
        Err(e) if decoded.is_none() => panic!("a corrupt record gave {e:?}, not Corrupt"),
        Err(_) => {}
    }
    let _ = engine.rotate(&t.first, &req);
    let _ = engine.sessions(t.subject);
    let _ = engine.events(0, 100);
    clock.advance(std::time::Duration::from_secs(6 * 3_600));
    let _ = engine.gc(10);
    let _ = engine.revoke(RevokeTarget::Subject(t.subject));
    let _ = engine.revoke(RevokeTarget::Family(t.family));
    let _ = engine.check();
}
