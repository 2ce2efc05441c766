//! One policy per database, and per-user caps (issue 13 items 1 and 5).

use std::time::Duration;

use crate::{Backend, HOUR, Harness, MINUTE, grant, small_policy};
use rotoken::{Engine, EventKind, FamilyId, Policy, PolicyError, RevokeReason, RotateError, RotateRequest};

fn issue(engine: &Engine, subject: &str, client: &str) -> (FamilyId, String) {
    let i = engine.issue(&grant(subject, client)).unwrap();
    (i.family, i.refresh_token.expose().to_owned())
}

/// The first opener's policy is the database's: an opener bringing other
/// rules (a `rotoken gc` run with other flags than the server) runs by the
/// stored ones, and keeps only its own durability.
pub fn every_opener_runs_by_the_databases_policy(backend: &dyn Backend) {
    let h = Harness::new(backend, small_policy(1_000));
    drop(h.open());
    let other = Policy::default()
        .with_idle_lifetime(Duration::from_secs(60))
        .with_durability(rotoken::Durability::Relaxed);
    let engine = h.db.open(h.keys.clone(), h.options().with_policy(other)).unwrap();
    let p = engine.policy();
    assert_eq!(p.idle_lifetime, small_policy(1_000).idle_lifetime);
    assert_eq!(
        p.durability,
        rotoken::Durability::Relaxed,
        "durability is the opener's own"
    );
}

/// `set_policy` changes the rules for every later opener, records who
/// changed what, emits an event, and refuses nonsense without changing
/// anything.
pub fn a_policy_change_is_stored_recorded_and_evented(backend: &dyn Backend) {
    let h = Harness::new(backend, small_policy(1_000));
    let engine = h.open();
    let wider = engine.policy().with_grace(Duration::from_secs(5));
    let old = engine.set_policy(wider, "ops@example").unwrap();
    assert_eq!(old.grace, Duration::from_secs(30));
    assert_eq!(engine.policy().grace, Duration::from_secs(5));
    let bad = engine.policy().with_max_generations(0);
    assert!(matches!(
        engine.set_policy(bad, "ops@example"),
        Err(PolicyError::Invalid(_))
    ));
    assert!(matches!(
        engine.set_policy(engine.policy(), ""),
        Err(PolicyError::InvalidName)
    ));
    drop(engine);
    let engine = h.open();
    assert_eq!(
        engine.policy().grace,
        Duration::from_secs(5),
        "the next opener runs by it"
    );
    let history = engine.policy_history().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].by, "ops@example");
    assert_eq!(
        (history[0].old.grace, history[0].new.grace),
        (Duration::from_secs(30), Duration::from_secs(5))
    );
    let events = engine.events(0, 10).unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::PolicyChanged]
    );
}

/// Shortening the idle lifetime brings existing families' gc forward: a
/// family idle past the new lifetime is collected at once, not at the gc
/// time the old lifetime gave it.
pub fn shortening_the_idle_lifetime_reschedules_gc(backend: &dyn Backend) {
    let h = Harness::new(backend, small_policy(1_000));
    let engine = h.open();
    let (_, token) = issue(&engine, "alice", "web");
    h.advance_ms(20 * MINUTE);
    let shorter = engine.policy().with_idle_lifetime(Duration::from_secs(600));
    engine.set_policy(shorter, "ops").unwrap();
    assert!(matches!(
        engine.rotate(&token, &RotateRequest::new("web")),
        Err(RotateError::Expired { .. })
    ));
    let mut removed = 0;
    for _ in 0..10 {
        let r = engine.gc(100).unwrap();
        removed += r.removed;
        if !r.more {
            break;
        }
    }
    assert_eq!(removed, 1, "collected now, not an hour after issue");
    assert_eq!(engine.families_count().unwrap(), 0);
    let _ = HOUR;
}

/// Per-user caps: issuing one more family than the cap for a (subject,
/// client) removes the oldest live one (its tokens become unknown), with a
/// `revoked`/`cap` event; other clients and subjects are untouched.
pub fn issuing_past_the_cap_revokes_the_oldest(backend: &dyn Backend) {
    let h = Harness::new(backend, small_policy(1_000).with_max_families_per_user(2));
    let engine = h.open();
    let (first, first_token) = issue(&engine, "alice", "web");
    h.advance_ms(1_000);
    let (_, second) = issue(&engine, "alice", "web");
    let (_, other_client) = issue(&engine, "alice", "mobile");
    let (_, other_subject) = issue(&engine, "bob", "web");
    h.advance_ms(1_000);
    let (_, third) = issue(&engine, "alice", "web");
    assert!(matches!(
        engine.rotate(&first_token, &RotateRequest::new("web")),
        Err(RotateError::Unknown)
    ));
    for (t, client) in [
        (&second, "web"),
        (&third, "web"),
        (&other_client, "mobile"),
        (&other_subject, "web"),
    ] {
        assert!(engine.rotate(t, &RotateRequest::new(client)).is_ok());
    }
    let capped: Vec<FamilyId> = engine
        .events(0, 10)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::Revoked(RevokeReason::Cap))
        .map(|e| e.family)
        .collect();
    assert_eq!(capped, vec![first]);
    let live = engine
        .sessions("alice")
        .unwrap()
        .into_iter()
        .filter(|s| s.active && s.client_id == "web")
        .count();
    assert_eq!(live, 2);
}

/// Revoking a subject with more families than one step (1,000) takes
/// bounded steps: no transaction locks more than a step, and when the call
/// returns every family of the subject is revoked.
pub fn revoking_a_large_subject_takes_bounded_steps(backend: &dyn Backend) {
    const N: usize = 2_500;
    let policy = crate::relaxed_policy().with_max_families_per_user(0);
    let h = Harness::new(backend, policy);
    let engine = h.open();
    let tokens = crate::group_commit::together(8, |i| {
        (0..N / 8 + usize::from(i < N % 8))
            .map(|_| issue(&engine, "big", "web").1)
            .collect::<Vec<_>>()
    });
    let tokens: Vec<String> = tokens.into_iter().flatten().collect();
    assert_eq!(tokens.len(), N);
    let (_, bystander) = issue(&engine, "small", "web");
    let before = engine.stats().largest_lock;
    assert_eq!(engine.revoke(rotoken::RevokeTarget::Subject("big")).unwrap(), N);
    let largest = engine.stats().largest_lock;
    assert!(largest <= 1_000, "one transaction locked {largest} families");
    assert!(largest > before, "the revocation's steps locked families");
    for t in tokens.iter().step_by(97) {
        assert!(matches!(
            engine.rotate(t, &RotateRequest::new("web")),
            Err(RotateError::Revoked(RevokeReason::Subject))
        ));
    }
    assert!(engine.sessions("big").unwrap().iter().all(|s| !s.active));
    assert!(engine.rotate(&bystander, &RotateRequest::new("web")).is_ok());
    assert_eq!(
        engine.revoke(rotoken::RevokeTarget::Subject("big")).unwrap(),
        0,
        "already revoked"
    );
}
