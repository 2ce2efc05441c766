//! Lifetimes, limits, keys, opening, garbage collection, sessions, events
//! and introspection, all with a [`rotoken::ManualClock`] (reliability
//! checklist rows 10, 17 and 19).

use crate::{Backend, HOUR, Harness, MINUTE, SECOND, T0, active, assert_check, grant, key_id_of, ms, small_policy};
use rotoken::{
    Engine, EventKind, ExpiryKind, FamilyId, Keyring, OpenError, RevokeReason, RevokeTarget, RotateError,
    RotateRequest, Rotated,
};

const ABSOLUTE: i64 = 3 * HOUR;
const IDLE: i64 = HOUR;
const GRACE: i64 = 30 * SECOND;

fn harness(backend: &dyn Backend) -> Harness {
    Harness::new(backend, small_policy(1_000))
}

fn rotate(engine: &Engine, token: &str) -> Result<Rotated, RotateError> {
    engine.rotate(token, &RotateRequest::new("web"))
}

fn issue(engine: &Engine, subject: &str) -> (FamilyId, String) {
    let issued = engine.issue(&grant(subject, "web")).unwrap();
    (issued.family, issued.refresh_token.expose().to_owned())
}

/// Rotation never extends the absolute expiry.
pub fn rotation_never_extends_the_absolute_expiry(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let issued = engine.issue(&grant("alice", "web")).unwrap();
    assert_eq!(ms(issued.expires_at), T0 + IDLE);
    let mut tokens = vec![issued.refresh_token.expose().to_owned()];
    // Rotate every 50 minutes: each rotation pushes the idle deadline, never
    // the absolute one.
    while h.now() + 50 * MINUTE < T0 + ABSOLUTE {
        h.advance_ms(50 * MINUTE);
        let r = rotate(&engine, tokens.last().unwrap()).unwrap();
        let expires = ms(r.expires_at);
        assert!(expires <= T0 + ABSOLUTE, "rotation extended the absolute expiry");
        assert_eq!(expires, (h.now() + IDLE).min(T0 + ABSOLUTE));
        let i = engine.introspect(r.refresh_token.expose()).unwrap();
        assert_eq!(i.exp, Some(expires / 1000));
        tokens.push(r.refresh_token.expose().to_owned());
    }
    // One millisecond before the absolute expiry the family still works...
    h.clock.set_unix_millis(T0 + ABSOLUTE - 1);
    let last = rotate(&engine, tokens.last().unwrap()).unwrap();
    assert_eq!(ms(last.expires_at), T0 + ABSOLUTE);
    tokens.push(last.refresh_token.expose().to_owned());
    // ...and at it, nothing does: not the current token, not a retry of the
    // predecessor, not an older token (expired, not reuse: nothing revoked).
    h.clock.set_unix_millis(T0 + ABSOLUTE);
    let n = tokens.len();
    for t in [&tokens[n - 1], &tokens[n - 2], &tokens[0]] {
        assert!(matches!(
            rotate(&engine, t),
            Err(RotateError::Expired {
                kind: ExpiryKind::Absolute
            })
        ));
        assert!(!active(&engine, t));
    }
    assert_eq!(engine.events(0, 10).unwrap(), vec![]);
    let s = engine.sessions("alice").unwrap();
    assert_eq!(s.len(), 1);
    assert!(!s[0].active);
    assert_eq!(s[0].revoked, None);
    assert_eq!(ms(s[0].expires_at), T0 + ABSOLUTE);
    assert_check(&engine);
}

/// An idle family expires.
pub fn an_idle_family_expires(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let (_, t0) = issue(&engine, "alice");
    h.advance_ms(IDLE - 1);
    assert!(active(&engine, &t0));
    let r1 = rotate(&engine, &t0).unwrap();
    let t1 = r1.refresh_token.expose().to_owned();
    assert_eq!(ms(r1.expires_at), h.now() + IDLE);
    h.advance_ms(IDLE - 1);
    assert!(active(&engine, &t1));
    h.advance_ms(1);
    assert!(!active(&engine, &t1));
    for t in [&t1, &t0] {
        assert!(matches!(
            rotate(&engine, t),
            Err(RotateError::Expired { kind: ExpiryKind::Idle })
        ));
    }
    assert_eq!(engine.events(0, 10).unwrap(), vec![]);
    let s = engine.sessions("alice").unwrap();
    assert!(!s[0].active);
}

/// A grace retry extends nothing.
pub fn a_grace_retry_extends_nothing(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let (_, t0) = issue(&engine, "alice");
    h.advance_ms(5 * MINUTE);
    let rotated_at = h.now();
    let r1 = rotate(&engine, &t0).unwrap();
    let t1 = r1.refresh_token.expose().to_owned();
    for wait in [SECOND, 10 * SECOND, GRACE - 11 * SECOND - 1] {
        h.advance_ms(wait);
        let retry = rotate(&engine, &t0).unwrap();
        assert!(retry.retried);
        assert_eq!(retry.refresh_token.expose(), t1);
        assert_eq!(retry.generation, r1.generation);
        assert_eq!(retry.expires_at, r1.expires_at, "a retry must not extend the expiry");
        let i = engine.introspect(&t1).unwrap();
        assert_eq!(i.iat, Some(rotated_at / 1000));
        assert_eq!(i.exp, Some((rotated_at + IDLE) / 1000));
    }
    assert_eq!(h.now(), rotated_at + GRACE - 1);
    // The idle deadline still counts from the rotation, not the retries.
    h.clock.set_unix_millis(rotated_at + IDLE);
    assert!(matches!(
        rotate(&engine, &t1),
        Err(RotateError::Expired { kind: ExpiryKind::Idle })
    ));
}

/// The grace window ends exactly at its length.
pub fn the_grace_window_ends_exactly_at_its_length(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let (family, t0) = issue(&engine, "alice");
    let r1 = rotate(&engine, &t0).unwrap();
    h.advance_ms(GRACE - 1);
    assert!(rotate(&engine, &t0).unwrap().retried);
    h.advance_ms(1);
    assert!(matches!(
        rotate(&engine, &t0),
        Err(RotateError::ReuseDetected { family: f }) if f == family
    ));
    assert!(!active(&engine, r1.refresh_token.expose()));
}

/// The generation limit is enforced without revoking.
pub fn the_generation_limit_is_enforced_without_revoking(backend: &dyn Backend) {
    let h = Harness::new(backend, small_policy(5));
    let engine = h.open();
    let (_, t0) = issue(&engine, "alice");
    let mut tokens = vec![t0];
    for g in 1..5 {
        let r = rotate(&engine, tokens.last().unwrap()).unwrap();
        assert_eq!(r.generation, g);
        tokens.push(r.refresh_token.expose().to_owned());
    }
    assert!(matches!(
        rotate(&engine, tokens.last().unwrap()),
        Err(RotateError::TooManyGenerations)
    ));
    // Nothing changed: the last token is live, a retry of its predecessor
    // still gets it, and reuse is still detected.
    assert!(active(&engine, &tokens[4]));
    let retry = rotate(&engine, &tokens[3]).unwrap();
    assert!(retry.retried);
    assert_eq!(retry.refresh_token.expose(), tokens[4]);
    assert_eq!(engine.events(0, 10).unwrap(), vec![]);
    assert_check(&engine);
    assert!(matches!(
        rotate(&engine, &tokens[1]),
        Err(RotateError::ReuseDetected { .. })
    ));
}

/// The database's policy may change (`Engine::set_policy`). A family that
/// has more generations than a lowered limit is simply at its limit:
/// `check` verifies the database's integrity and must not report it as a
/// problem.
pub fn lowering_the_generation_limit_is_not_corruption(backend: &dyn Backend) {
    let h = Harness::new(backend, small_policy(1_000));
    let engine = h.open();
    let (_, t0) = issue(&engine, "alice");
    let mut current = t0;
    for _ in 0..6 {
        current = rotate(&engine, &current).unwrap().refresh_token.expose().to_owned();
    }
    engine.set_policy(small_policy(5), "test").unwrap();
    drop(engine);
    let engine = h.open();
    assert!(matches!(
        rotate(&engine, &current),
        Err(RotateError::TooManyGenerations)
    ));
    assert!(active(&engine, &current));
    assert_check(&engine);
}

/// Keys rotate without invalidating live families.
pub fn keys_rotate_without_invalidating_live_families(backend: &dyn Backend) {
    let h = harness(backend);
    let k1 = h.keys.clone();
    assert_eq!(k1.active_id(), 1);
    let engine = h.open();
    let (_, a0) = issue(&engine, "alice");
    let a1 = rotate(&engine, &a0).unwrap().refresh_token.expose().to_owned();
    let (_, b0) = issue(&engine, "bob");
    let (c_family, c0) = issue(&engine, "carol");
    assert_eq!(key_id_of(&a1), 1);
    drop(engine);

    // Key 2 becomes active; key 1 still verifies.
    let mut k2 = k1.clone();
    assert_eq!(k2.rotate().unwrap(), 2);
    let engine = h.try_open(k2.clone()).unwrap();
    let (_, d0) = issue(&engine, "dave");
    assert_eq!(key_id_of(&d0), 2);
    let a2 = rotate(&engine, &a1).unwrap();
    assert_eq!(key_id_of(a2.refresh_token.expose()), 2);
    assert_eq!(a2.generation, 2);
    // A key-1 predecessor retried within the window gets the key-2 successor.
    let retry = rotate(&engine, &a1).unwrap();
    assert!(retry.retried);
    assert_eq!(retry.refresh_token, a2.refresh_token);
    let b1 = rotate(&engine, &b0).unwrap().refresh_token.expose().to_owned();
    assert_eq!(key_id_of(&b1), 2);
    assert!(active(&engine, &c0), "an untouched key-1 family is live");
    // Reuse of a key-1 token is still detected.
    assert!(matches!(rotate(&engine, &a0), Err(RotateError::ReuseDetected { .. })));
    assert!(!active(&engine, a2.refresh_token.expose()));
    assert_check(&engine);
    drop(engine);

    // Key 1 retired: its tokens no longer verify, key-2 tokens work.
    let mut k3 = k2.clone();
    k3.retire(1).unwrap();
    assert!(k3.retire(2).is_err(), "the active key cannot be retired");
    let engine = h.try_open(k3).unwrap();
    let b2 = rotate(&engine, &b1).unwrap();
    assert_eq!(b2.grant.subject, "bob", "a grant resealed with key 2 still opens");
    for t in [&b0, &c0, &a0, &a1] {
        assert!(
            matches!(rotate(&engine, t), Err(RotateError::InvalidToken)),
            "key-1 token"
        );
        assert!(!active(&engine, t));
    }
    assert!(
        active(&engine, b2.refresh_token.expose()),
        "an invalid old token revokes nothing"
    );
    assert!(rotate(&engine, &d0).is_ok());
    // The untouched key-1 family (carol) fails closed: its grant no longer
    // opens, which check reports; nothing else is reported.
    let report = engine.check().unwrap();
    let keys: Vec<&str> = report.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, vec![c_family.to_string().as_str()], "{:?}", report.problems);
    // Once it has expired, gc removes it and the database checks clean.
    h.advance_ms(ABSOLUTE);
    while engine.gc(100).unwrap().more {}
    assert_check(&engine);
    drop(engine);
    // A keyring with another storage key is refused.
    assert!(matches!(
        h.try_open(Keyring::generate().unwrap()),
        Err(OpenError::WrongKeys)
    ));
}

/// Following the documented retirement rule (retire a key only after the
/// longest absolute lifetime has passed since a newer key became active)
/// must not break listing a subject's sessions, even before gc has removed
/// the expired key-1 families.
pub fn retiring_a_key_after_the_absolute_lifetime_keeps_sessions_listable(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let (_, old) = issue(&engine, "alice");
    drop(engine);
    // Key 2 becomes active now; the absolute lifetime passes; only then is
    // key 1 retired, as the documentation of `Keyring::retire` says.
    let mut k2 = h.keys.clone();
    k2.rotate().unwrap();
    h.advance_ms(ABSOLUTE + MINUTE);
    let engine = h.try_open(k2.clone()).unwrap();
    let (_, new) = issue(&engine, "alice");
    drop(engine);
    let mut k3 = k2;
    k3.retire(1).unwrap();
    let engine = h.try_open(k3).unwrap();
    assert!(!active(&engine, &old));
    assert!(active(&engine, &new));
    let sessions = engine.sessions("alice");
    assert!(
        sessions.is_ok(),
        "sessions after a documented key retirement: {sessions:?}"
    );
    assert_eq!(sessions.unwrap().iter().filter(|s| s.active).count(), 1);
}

/// A key retired too early (a live family's grant is sealed under it) is
/// partial damage: `sessions` lists the subject's other families and marks
/// that one unreadable, naming the missing key, instead of failing whole.
pub fn a_removed_key_makes_one_session_unreadable_not_the_list(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let (sealed_under_1, _) = issue(&engine, "alice");
    drop(engine);
    let mut k2 = h.keys.clone();
    k2.rotate().unwrap();
    let engine = h.try_open(k2.clone()).unwrap();
    let (readable, _) = issue(&engine, "alice");
    drop(engine);
    k2.retire(1).unwrap();
    let engine = h.try_open(k2).unwrap();
    let sessions = engine.sessions("alice").unwrap();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let damaged = sessions.iter().find(|s| s.family == sealed_under_1).unwrap();
    let why = damaged.unreadable.as_deref().expect("marked unreadable");
    assert!(why.contains("key 1"), "{why}");
    assert!(damaged.client_id.is_empty());
    let fine = sessions.iter().find(|s| s.family == readable).unwrap();
    assert_eq!((fine.unreadable.as_deref(), fine.client_id.as_str()), (None, "web"));
}

/// Gc removes expired and revoked families in bounded steps.
pub fn gc_removes_expired_and_revoked_families_in_bounded_steps(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let mut fams = Vec::new();
    for i in 0..10 {
        fams.push(issue(&engine, &format!("user-{i}")));
    }
    // A live family that was due (its first deadline passed) is rescheduled, not removed.
    let (_, live0) = issue(&engine, "keeper");
    for (f, _) in &fams[..3] {
        assert_eq!(engine.revoke(RevokeTarget::Family(*f)).unwrap(), 1);
    }
    h.advance_ms(50 * MINUTE);
    let live1 = rotate(&engine, &live0).unwrap().refresh_token.expose().to_owned();
    h.advance_ms(11 * MINUTE);
    // Nothing revoked is past its retention yet; the 7 live ones idled out;
    // the keeper is due but alive.
    let r = engine.gc(100).unwrap();
    assert_eq!((r.removed, r.rescheduled, r.more), (7, 1, false));
    assert!(active(&engine, &live1));
    assert_eq!(engine.families_count().unwrap(), 4);
    assert_check(&engine);

    // Past the revoked retention (2 h): the 3 revoked ones go, in steps of 2.
    h.advance_ms(2 * HOUR);
    let mut removed = Vec::new();
    loop {
        let r = engine.gc(2).unwrap();
        assert!(r.removed <= 2);
        removed.push(r.removed);
        assert_check(&engine);
        if !r.more {
            break;
        }
    }
    // 3 revoked + the keeper, which idled out meanwhile.
    assert_eq!(removed.iter().sum::<usize>(), 4, "{removed:?}");
    assert!(removed.len() >= 2, "bounded steps: {removed:?}");
    assert_eq!(engine.families_count().unwrap(), 0);
    for (f, t) in &fams {
        assert!(matches!(rotate(&engine, t), Err(RotateError::Unknown)), "{f}");
    }
    assert!(engine.sessions("user-0").unwrap().is_empty());

    // The Expired events: one per live family removed; revoked ones get none.
    let events = engine.events(0, 100).unwrap();
    let expired = events.iter().filter(|e| e.kind == EventKind::Expired).count();
    let revoked = events
        .iter()
        .filter(|e| e.kind == EventKind::Revoked(RevokeReason::Family))
        .count();
    assert_eq!((expired, revoked, events.len()), (8, 3, 11));
    assert_eq!(h.sunk(&engine), events, "the sink saw exactly the recorded events");

    // Events past retention (4 h) go, in bounded steps, oldest first.
    h.clock.set_unix_millis(T0 + 4 * HOUR + 1);
    let r = engine.gc(2).unwrap();
    assert_eq!((r.events_removed, r.more), (2, true));
    let r = engine.gc(2).unwrap();
    assert_eq!((r.events_removed, r.more), (1, false));
    let left = engine.events(0, 100).unwrap();
    assert_eq!(left, events[3..].to_vec());
    assert!(left.iter().all(|e| e.kind == EventKind::Expired));
    assert_check(&engine);
}

/// `Event::seq` is documented as increasing and `events(after, ..)` reads
/// "events after a sequence number": a consumer tailing the log must never
/// see a number reused, even after gc emptied the log.
pub fn event_sequence_numbers_never_repeat_after_gc(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let (f1, _) = issue(&engine, "alice");
    engine.revoke(RevokeTarget::Family(f1)).unwrap();
    let first = engine.events(0, 10).unwrap();
    assert_eq!(first.len(), 1);
    let cursor = first[0].seq;
    // Past both retentions: gc removes the family and its event.
    h.advance_ms(5 * HOUR);
    while engine.gc(10).unwrap().more {}
    assert!(engine.events(0, 10).unwrap().is_empty());
    let (f2, _) = issue(&engine, "bob");
    engine.revoke(RevokeTarget::Family(f2)).unwrap();
    let tail = engine.events(cursor, 10).unwrap();
    assert_eq!(tail.len(), 1, "a consumer at seq {cursor} must see the new event");
    assert!(tail[0].seq > cursor);
}

/// Sessions list a subjects families.
pub fn sessions_list_a_subjects_families(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let (fa, ta) = issue(&engine, "alice");
    let mut g = grant("alice", "mobile");
    g.scope = crate::scope("openid offline_access");
    let ib = engine.issue(&g).unwrap();
    let (fc, _) = issue(&engine, "alice");
    let (_, _) = issue(&engine, "bob");
    h.advance_ms(MINUTE);
    let ra = rotate(&engine, &ta).unwrap();
    engine.revoke(RevokeTarget::Family(fc)).unwrap();
    let mut s = engine.sessions("alice").unwrap();
    s.sort_by_key(|x| {
        if x.family == fa {
            0
        } else if x.family == ib.family {
            1
        } else {
            2
        }
    });
    assert_eq!(s.len(), 3);
    assert_eq!(s.iter().map(|x| x.family).collect::<Vec<_>>(), vec![fa, ib.family, fc]);
    assert_eq!(s[0].client_id, "web");
    assert_eq!(s[0].generation, 1);
    assert_eq!(ms(s[0].rotated_at), T0 + MINUTE);
    assert_eq!(ms(s[0].created_at), T0);
    assert_eq!(s[0].expires_at, ra.expires_at);
    assert!(s[0].active);
    assert_eq!(s[1].client_id, "mobile");
    assert_eq!(s[1].scope, crate::scope("openid offline_access"));
    assert_eq!(s[1].generation, 0);
    assert!(s[1].active);
    assert!(!s[2].active);
    assert_eq!(s[2].revoked, Some(RevokeReason::Family));
    assert_eq!(engine.sessions("bob").unwrap().len(), 1);
    assert!(engine.sessions("nobody").unwrap().is_empty());
    assert!(engine.sessions("").is_err());
    // Log out everywhere.
    assert_eq!(engine.revoke(RevokeTarget::Subject("alice")).unwrap(), 2);
    assert!(engine.sessions("alice").unwrap().iter().all(|x| !x.active));
    assert!(engine.sessions("bob").unwrap()[0].active);
}

/// The event sink receives reuse and revocation events.
pub fn the_event_sink_receives_reuse_and_revocation_events(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let (fa, a0) = issue(&engine, "alice");
    let a1 = rotate(&engine, &a0).unwrap();
    let _a2 = rotate(&engine, a1.refresh_token.expose()).unwrap();
    assert!(h.sunk(&engine).is_empty(), "rotations emit no event");
    assert!(matches!(rotate(&engine, &a0), Err(RotateError::ReuseDetected { .. })));
    let (fb, b0) = issue(&engine, "bob");
    let (fc, _) = engine
        .issue(&grant("carol", "other-client"))
        .map(|i| (i.family, ()))
        .unwrap();
    assert_eq!(engine.revoke(RevokeTarget::Token(&b0)).unwrap(), 1);
    assert_eq!(engine.revoke(RevokeTarget::Token(&b0)).unwrap(), 0, "already revoked");
    assert_eq!(engine.revoke(RevokeTarget::Client("other-client")).unwrap(), 1);
    let sunk = h.sunk(&engine);
    let kinds: Vec<(FamilyId, EventKind)> = sunk.iter().map(|e| (e.family, e.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (
                fa,
                EventKind::ReuseDetected {
                    presented: 0,
                    current: 2
                }
            ),
            (fb, EventKind::Revoked(RevokeReason::Token)),
            (fc, EventKind::Revoked(RevokeReason::Client)),
        ]
    );
    assert_eq!(sunk, engine.events(0, 100).unwrap(), "sink and log agree");
    assert!(sunk.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(sunk.iter().all(|e| e.at_millis == T0));
    // Refusals emit nothing.
    let before = h.sunk(&engine).len();
    let _ = rotate(&engine, &a0);
    let _ = engine.rotate(&b0, &RotateRequest::new("not-web"));
    assert_eq!(h.sunk(&engine).len(), before);
}

/// Introspection never changes state.
pub fn introspection_never_changes_state(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let (family, t0) = issue(&engine, "alice");
    let i = engine.introspect(&t0).unwrap();
    assert!(i.active);
    assert_eq!(i.family, Some(family));
    assert_eq!(i.generation, Some(0));
    assert_eq!(i.sub.as_deref(), Some("alice"));
    assert_eq!(i.client_id.as_deref(), Some("web"));
    assert_eq!(i.token_type, Some("refresh_token"));
    // Introspecting the current token, then rotating it: still works.
    let r1 = rotate(&engine, &t0).unwrap();
    assert!(!r1.retried);
    let t1 = r1.refresh_token.expose().to_owned();
    // Introspecting retired tokens, many times, revokes nothing and leaves the retry intact.
    for _ in 0..5 {
        assert!(!engine.introspect(&t0).unwrap().active);
        assert!(engine.introspect(&t1).unwrap().active);
    }
    let retry = rotate(&engine, &t0).unwrap();
    assert!(retry.retried);
    assert_eq!(retry.refresh_token.expose(), t1);
    // Introspection does not count as use: the idle deadline does not move.
    let rotated_at = h.now();
    h.advance_ms(IDLE - 1);
    assert!(engine.introspect(&t1).unwrap().active);
    h.advance_ms(1);
    assert!(!engine.introspect(&t1).unwrap().active);
    assert!(matches!(
        rotate(&engine, &t1),
        Err(RotateError::Expired { kind: ExpiryKind::Idle })
    ));
    assert_eq!(h.now(), rotated_at + IDLE);
    assert!(engine.events(0, 10).unwrap().is_empty());
}
