//! A fault is never a theft (P11): what an honest client sees when the
//! store loses a commit's answer, when its request outlives its deadline or
//! its caller, when a server's clock was days ahead, and what a refusal
//! costs. Each test fails on the engine before issue 18.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::clock_steps::{issued, present};
use crate::faulty::{CommitFault, Faults, Faulty};
use crate::{Backend, HOUR, Harness, MINUTE, SECOND, T0, small_policy};
use rotoken::{Code, Engine, EventKind, RotateError, RotateRequest, StoreError};

fn harness(backend: &dyn Backend) -> Harness {
    Harness::new(backend, small_policy(1_000))
}

/// An engine over the harness's database behind a [`Faulty`] store.
fn open_faulty(h: &Harness) -> (Engine, Arc<Faults>) {
    let faults = Faults::new();
    let options = h.options();
    let store = h.db.open_store(&options).expect("open the store");
    let engine = Engine::with_store(Faulty::new(store, Arc::clone(&faults)), h.keys.clone(), options).expect("open");
    (engine, faults)
}

fn token(r: Result<rotoken::Rotated, RotateError>) -> String {
    r.unwrap_or_else(|e| panic!("refused: {e:?}"))
        .refresh_token
        .expose()
        .to_owned()
}

/// The connection broke after `COMMIT` reached the store: the rotation
/// committed, and the engine, reading it back, answers its successor
/// instead of an error.
pub fn a_commit_whose_answer_was_lost_is_answered_with_its_successor(backend: &dyn Backend) {
    let h = harness(backend);
    let (engine, faults) = open_faulty(&h);
    let t0 = issued(&engine);
    faults.next_commit(CommitFault::CommitThenLose);
    let t1 = token(present(&engine, &t0));
    assert_eq!(engine.stats().outcomes_settled, 1);
    // It is the live token, and the family is whole.
    let t2 = token(present(&engine, &t1));
    assert!(engine.introspect(&t2).unwrap().active);
}

/// The connection broke before `COMMIT` took effect: a clean, retryable
/// failure, and the retry (whenever it comes) rotates.
pub fn a_commit_lost_before_it_took_effect_is_a_clean_retry(backend: &dyn Backend) {
    let h = harness(backend);
    let (engine, faults) = open_faulty(&h);
    let t0 = issued(&engine);
    faults.next_commit(CommitFault::LoseBeforeCommit);
    let err = present(&engine, &t0).unwrap_err();
    assert!(err.code().is_retryable(), "{err:?}");
    h.advance_ms(40 * SECOND);
    let retry = present(&engine, &t0).unwrap();
    assert!(!retry.retried, "nothing had been rotated");
}

/// The store failed during the commit and could not be read back: the
/// client is told "outcome unknown, retry the same token". It committed;
/// its successor is marked undelivered once the store answers, and the
/// client's retry gets it however late (here 40 s, past the 30 s window).
/// Once that successor is used, the old token is reuse again.
pub fn an_unknown_outcome_is_settled_and_a_late_retry_gets_the_successor(backend: &dyn Backend) {
    let h = harness(backend);
    let (engine, faults) = open_faulty(&h);
    let t0 = issued(&engine);
    faults.next_commit(CommitFault::CommitThenLose);
    faults.reads_fail(true);
    let err = present(&engine, &t0).unwrap_err();
    assert_eq!(err.code(), Code::OutcomeUnknown, "{err:?}");
    faults.reads_fail(false);
    // Another client's write lets the engine settle first.
    issued(&engine);
    h.advance_ms(40 * SECOND);
    let late = present(&engine, &t0).unwrap_or_else(|e| panic!("the honest late retry was refused: {e:?}"));
    assert!(late.retried);
    let t1 = late.refresh_token.expose().to_owned();
    let t2 = token(present(&engine, &t1));
    assert!(matches!(present(&engine, &t0), Err(RotateError::ReuseDetected { .. })));
    assert!(!engine.introspect(&t2).unwrap().active, "the replay revoked the family");
}

/// The same, with nothing else written in between: the retry's own batch
/// settles the outcome before it decides.
pub fn a_late_retry_settles_its_own_unknown_outcome(backend: &dyn Backend) {
    let h = harness(backend);
    let (engine, faults) = open_faulty(&h);
    let t0 = issued(&engine);
    faults.next_commit(CommitFault::CommitThenLose);
    faults.reads_fail(true);
    assert_eq!(present(&engine, &t0).unwrap_err().code(), Code::OutcomeUnknown);
    faults.reads_fail(false);
    h.advance_ms(5 * MINUTE);
    let late = present(&engine, &t0).unwrap_or_else(|e| panic!("the honest late retry was refused: {e:?}"));
    assert!(late.retried);
}

/// An unknown outcome that did not commit: the late retry simply rotates.
pub fn an_unknown_outcome_that_did_not_commit_rotates_on_retry(backend: &dyn Backend) {
    let h = harness(backend);
    let (engine, faults) = open_faulty(&h);
    let t0 = issued(&engine);
    faults.next_commit(CommitFault::LoseBeforeCommit);
    faults.reads_fail(true);
    assert_eq!(present(&engine, &t0).unwrap_err().code(), Code::OutcomeUnknown);
    faults.reads_fail(false);
    h.advance_ms(5 * MINUTE);
    let retry = present(&engine, &t0).unwrap();
    assert!(!retry.retried);
}

/// A rotation whose deadline has passed is never applied: the caller gets
/// a retryable `deadline_passed`, and the same token rotates afterwards.
pub fn a_rotation_past_its_deadline_is_not_applied(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let t0 = issued(&engine);
    let mut late = RotateRequest::new("web");
    late.deadline = Some(
        Instant::now()
            .checked_sub(Duration::from_millis(1))
            .unwrap_or_else(Instant::now),
    );
    let err = engine.rotate(&t0, &late).unwrap_err();
    assert!(matches!(err, RotateError::Store(StoreError::DeadlinePassed)), "{err:?}");
    assert!(err.code().is_retryable());
    assert_eq!(engine.stats().deadline_passed, 1);
    let t1 = present(&engine, &t0).unwrap();
    assert!(!t1.retried, "the late request had rotated nothing");
}

/// A caller that goes away while its rotation commits (a client that timed
/// out, a paused server's abandoned request) never received the successor:
/// it is marked undelivered, and the client's retry with the predecessor,
/// after the grace window, gets it instead of revoking the family.
pub fn a_rotation_whose_caller_went_away_answers_its_late_retry(backend: &dyn Backend) {
    let h = harness(backend);
    let (engine, faults) = open_faulty(&h);
    let t0 = issued(&engine);
    faults.hold_commits();
    {
        let request = RotateRequest::new("web");
        let mut abandoned = Box::pin(engine.rotate_async(&t0, &request));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(abandoned.as_mut().poll(&mut cx), Poll::Pending));
        faults.wait_for_a_held_commit();
        // The caller gives up while the commit is in flight.
    }
    faults.release();
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.stats().undelivered == 0 {
        assert!(Instant::now() < deadline, "the abandoned result never came back");
        std::thread::sleep(Duration::from_millis(5));
    }
    h.advance_ms(10 * MINUTE);
    let late = present(&engine, &t0).unwrap_or_else(|e| panic!("the honest late retry was refused: {e:?}"));
    assert!(late.retried);
}

/// A refusal writes nothing: a revoked or expired family's token presented
/// again and again costs no commit.
pub fn presenting_a_revoked_or_expired_token_writes_nothing(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let revoked = issued(&engine);
    engine.revoke(rotoken::RevokeTarget::Token(&revoked)).unwrap();
    let expiring = issued(&engine);
    h.advance_ms(2 * HOUR);
    let before = engine.stats().durable_commits;
    for _ in 0..20 {
        assert!(matches!(present(&engine, &revoked), Err(RotateError::Revoked(_))));
        assert!(matches!(present(&engine, &expiring), Err(RotateError::Expired { .. })));
    }
    assert_eq!(engine.stats().durable_commits, before, "refusals committed");
    assert_eq!(engine.stats().refused, 40);
}

/// One engine with its clock 40 days ahead writes to the store (its floor
/// is persisted 40 days ahead). A correct engine that opens after it does
/// not adopt that floor: its honest families keep refreshing, gc removes
/// none of them, and the refusal is an event; an operator lowers the floor.
pub fn a_floor_written_days_ahead_poisons_no_one(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let honest = issued(&engine);
    drop(engine);
    // The wrong server: 40 days ahead, it issues and rotates its own family.
    h.clock.set_unix_millis(T0 + 40 * 24 * HOUR);
    let wrong = h.open();
    let theirs = issued(&wrong);
    token(present(&wrong, &theirs));
    drop(wrong);
    // The correct server restarts.
    h.clock.set_unix_millis(T0 + MINUTE);
    let engine = h.open();
    assert!(engine.clock_floor_ignored().is_some());
    assert_eq!(engine.stats().clock_floor_ignored, 1);
    let next = token(present(&engine, &honest));
    assert_eq!(engine.gc(1_000).unwrap().removed, 0, "gc removed a live family");
    assert!(engine.introspect(&next).unwrap().active);
    // In the event log (recorded while opening, before subscribers attach).
    assert!(
        engine
            .events(0, 1_000)
            .unwrap()
            .iter()
            .any(|e| matches!(e.kind, EventKind::ClockFloorIgnored { ahead_secs } if ahead_secs > 39 * 24 * 3600))
    );
    // The operator's repair: lowered to this clock, with an event.
    assert!(
        engine
            .lower_clock_floor()
            .unwrap()
            .is_some_and(|f| f > T0 + 39 * 24 * HOUR)
    );
    assert!(
        h.sunk(&engine)
            .iter()
            .any(|e| matches!(e.kind, EventKind::ClockFloorLowered { .. }))
    );
    drop(engine);
    let engine = h.open();
    assert_eq!(engine.clock_floor_ignored(), None);
    token(present(&engine, &next));
}
