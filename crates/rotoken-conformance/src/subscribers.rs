//! Event subscribers and background gc: what an engine linked into a
//! server does on its own threads. Events reach subscribers off the commit
//! path, with the family's grant; a subscriber may call the engine; a
//! panicking one changes no answer; gc runs without being called.

use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::{Backend, HOUR, Harness, SECOND, grant, small_policy};
use rotoken::{Engine, EventKind, Notice, RevokeReason, RevokeTarget, RotateError, RotateRequest};

/// How long a test waits for a background thread before it fails (never
/// reached unless the engine is broken: the work takes milliseconds).
const PATIENCE: Duration = Duration::from_secs(60);

fn harness(backend: &dyn Backend) -> Harness {
    Harness::new(backend, small_policy(1_000))
}

fn first_token(engine: &Engine, subject: &str) -> String {
    engine
        .issue(&grant(subject, "web"))
        .unwrap()
        .refresh_token
        .expose()
        .to_owned()
}

fn replay(engine: &Engine, subject: &str) -> Result<rotoken::Rotated, RotateError> {
    let t0 = first_token(engine, subject);
    let r = RotateRequest::new("web");
    let t1 = engine.rotate(&t0, &r).unwrap();
    engine.rotate(t1.refresh_token.expose(), &r).unwrap();
    engine.rotate(&t0, &r)
}

fn next<T>(rx: &Receiver<T>) -> T {
    rx.recv_timeout(PATIENCE).expect("a notice within the patience limit")
}

/// Notices carry the opened grant, so a subscriber can tie an event to a
/// user; the stored event itself names only the family.
pub fn notices_carry_the_families_grant(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    engine
        .subscribe(move |n: &Notice| {
            let _ = tx.lock().unwrap().send(n.clone());
        })
        .unwrap();
    assert!(matches!(
        replay(&engine, "alice"),
        Err(RotateError::ReuseDetected { .. })
    ));
    let n = next(&rx);
    assert!(matches!(n.event.kind, EventKind::ReuseDetected { .. }));
    let g = n.grant.expect("the grant opens");
    assert_eq!((g.subject.as_str(), g.client_id.as_str()), ("alice", "web"));
    assert_eq!(
        engine.events(0, 10).unwrap(),
        vec![n.event],
        "the log holds the same event"
    );
}

/// A subscriber that answers reuse by revoking every family of the user
/// calls the engine from its delivery thread: no deadlock, and once the
/// events are delivered the user's other session is revoked.
pub fn a_subscriber_may_call_the_engine(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = Arc::new(h.open());
    let weak: Weak<Engine> = Arc::downgrade(&engine);
    let revoked = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&revoked);
    engine
        .subscribe(move |n: &Notice| {
            if let (EventKind::ReuseDetected { .. }, Some(g), Some(engine)) = (n.event.kind, &n.grant, weak.upgrade()) {
                let count = engine.revoke(RevokeTarget::Subject(&g.subject)).unwrap();
                seen.lock().unwrap().push(count);
            }
        })
        .unwrap();
    let other = first_token(&engine, "alice");
    let bystander = first_token(&engine, "bob");
    assert!(matches!(
        replay(&engine, "alice"),
        Err(RotateError::ReuseDetected { .. })
    ));
    // Delivers the reuse event (whose subscriber revokes), then the
    // subject revocation's own event.
    engine.flush_events();
    engine.flush_events();
    assert_eq!(*revoked.lock().unwrap(), vec![1], "the other session of alice");
    assert!(matches!(
        engine.rotate(&other, &RotateRequest::new("web")),
        Err(RotateError::Revoked(RevokeReason::Subject))
    ));
    assert!(engine.rotate(&bystander, &RotateRequest::new("web")).is_ok());
}

/// A subscriber that panics changes no answer: the replay is still
/// reported as reuse (not as a storage error), later events are still
/// delivered, and the panic is counted.
pub fn a_panicking_subscriber_changes_no_answer(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    engine
        .subscribe(|n: &Notice| {
            assert!(
                !matches!(n.event.kind, EventKind::ReuseDetected { .. }),
                "a subscriber that panics on reuse"
            );
        })
        .unwrap();
    engine
        .subscribe(move |n: &Notice| {
            let _ = tx.lock().unwrap().send(n.event.kind);
        })
        .unwrap();
    assert!(matches!(
        replay(&engine, "alice"),
        Err(RotateError::ReuseDetected { .. })
    ));
    let t = first_token(&engine, "bob");
    assert_eq!(engine.revoke(RevokeTarget::Token(&t)).unwrap(), 1);
    assert!(matches!(next(&rx), EventKind::ReuseDetected { .. }));
    assert_eq!(next(&rx), EventKind::Revoked(RevokeReason::Token));
    assert_eq!(engine.stats().subscriber_panics, 1);
}

/// A linked engine collects garbage without being asked: expired families
/// are removed by its background thread.
pub fn background_gc_removes_expired_families(backend: &dyn Backend) {
    let h = harness(backend);
    let options = h.options().with_gc_every(Some(Duration::from_millis(20)));
    let engine = h.db.open(h.keys.clone(), options).unwrap();
    for s in ["a", "b", "c"] {
        first_token(&engine, s);
    }
    assert_eq!(engine.families_count().unwrap(), 3);
    h.advance_ms(3 * HOUR + SECOND);
    // The gc thread counts what it removed after its commit: wait for the
    // count, not for the store to empty, or the count may still be behind.
    let deadline = Instant::now() + PATIENCE;
    while engine.stats().gc_removed < 3 {
        assert!(
            Instant::now() < deadline,
            "background gc never ran: {:?}",
            engine.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(engine.stats().gc_removed, 3);
    assert_eq!(engine.families_count().unwrap(), 0);
    assert_eq!(engine.stats().gc_failures, 0);
    let expired = engine.events(0, 10).unwrap();
    assert_eq!(expired.iter().filter(|e| e.kind == EventKind::Expired).count(), 3);
}
