//! A clock that can't go back (docs/design.md, "Time"): the wall clock
//! stepped back or forward, within one engine and across a restart.

use std::time::Duration;

use crate::{Backend, HOUR, Harness, MINUTE, SECOND, T0, grant, ms, small_policy};
use rotoken::{Engine, ExpiryKind, RotateError, RotateRequest};

fn harness(backend: &dyn Backend) -> Harness {
    Harness::new(backend, small_policy(1_000))
}

/// Issues a family for alice at the clock's time: its first token.
pub(crate) fn issued(engine: &Engine) -> String {
    engine
        .issue(&grant("alice", "web"))
        .unwrap()
        .refresh_token
        .expose()
        .to_owned()
}

/// Issues at the clock's time, then rotates once: (predecessor, successor).
fn rotated_once(engine: &Engine) -> (String, String) {
    let t0 = issued(engine);
    let t1 = engine.rotate(&t0, &RotateRequest::new("web")).unwrap();
    (t0, t1.refresh_token.expose().to_owned())
}

pub(crate) fn present(engine: &Engine, token: &str) -> Result<rotoken::Rotated, RotateError> {
    engine.rotate(token, &RotateRequest::new("web"))
}

/// Rotating while the clock runs 600 s fast, then correcting it: 40 s of
/// real time later the predecessor is past the 30 s grace window and
/// revokes the family (it used to get the live successor for 560 s).
pub fn a_clock_corrected_back_does_not_reopen_the_grace_window(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    h.clock.set_unix_millis(T0 + 600 * SECOND);
    let (t0, _t1) = rotated_once(&engine);
    h.clock.set_unix_millis(T0);
    h.clock.advance(Duration::from_secs(40));
    assert!(matches!(present(&engine, &t0), Err(RotateError::ReuseDetected { .. })));
}

/// A clock set back an hour: the engine keeps its time, so a retry inside
/// the window still works and one after it still revokes.
pub fn a_clock_set_back_an_hour_keeps_the_window_in_real_time(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let (t0, t1) = rotated_once(&engine);
    h.clock.set_unix_millis(T0 - HOUR);
    h.clock.advance(Duration::from_secs(10));
    let retry = present(&engine, &t0).unwrap();
    assert!(retry.retried);
    assert_eq!(retry.refresh_token.expose(), t1);
    // Stamped at the engine's time, not the stepped-back wall clock.
    assert!(ms(retry.expires_at) >= T0 + HOUR);
    h.clock.advance(Duration::from_secs(30));
    assert!(matches!(present(&engine, &t0), Err(RotateError::ReuseDetected { .. })));
}

/// The floor survives a restart: an engine reopened under a clock set
/// back (by less than the minute a stored time is taken within) starts
/// from the time the last one acted on.
pub fn the_floor_survives_a_restart(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    h.clock.set_unix_millis(T0 + 10 * MINUTE);
    let (t0, _t1) = rotated_once(&engine);
    drop(engine);
    h.clock.set_unix_millis(T0 + 10 * MINUTE - 50 * SECOND);
    let engine = h.open();
    h.clock.advance(Duration::from_secs(40));
    assert!(matches!(present(&engine, &t0), Err(RotateError::ReuseDetected { .. })));
}

/// Set back further than that, a restarted engine cannot tell its clock
/// from another server's wrong one, and does not adopt the floor (P9, P11).
/// The grace window is still not reopened: the predecessor of a rotation
/// stamped after the engine's time is neither answered with the successor
/// nor revoked (`clock_behind`, retryable), the successor rotates, and once
/// the clock is past the window the predecessor is reuse.
pub fn a_restart_under_a_clock_set_back_far_neither_answers_nor_revokes_the_predecessor(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    h.clock.set_unix_millis(T0 + 10 * MINUTE);
    let (t0, t1) = rotated_once(&engine);
    drop(engine);
    h.clock.set_unix_millis(T0);
    let engine = h.open();
    h.clock.advance(Duration::from_secs(40));
    let err = present(&engine, &t0).unwrap_err();
    assert!(matches!(err, RotateError::ClockBehind), "{err:?}");
    assert!(err.code().is_retryable());
    assert!(engine.introspect(&t1).unwrap().active, "nothing was revoked");
    h.clock.set_unix_millis(T0 + 11 * MINUTE);
    assert!(matches!(present(&engine, &t0), Err(RotateError::ReuseDetected { .. })));
}

/// A forward step is taken at once and kept: a family it jumps past
/// expires, and correcting the clock does not bring it back.
pub fn a_forward_step_is_kept_after_the_clock_is_corrected(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let (_t0, t1) = rotated_once(&engine);
    h.clock.set_unix_millis(T0 + 2 * HOUR);
    assert!(matches!(
        present(&engine, &t1),
        Err(RotateError::Expired { kind: ExpiryKind::Idle })
    ));
    h.clock.set_unix_millis(T0 + MINUTE);
    assert!(matches!(
        present(&engine, &t1),
        Err(RotateError::Expired { kind: ExpiryKind::Idle })
    ));
}

/// The floor is persisted in steps of a second, so an engine reopened under
/// a clock set back may start up to a second before the last rotation it
/// made. A retry of that rotation's predecessor right away is still inside
/// the window (the engine never acts before a rotation it reads); it used
/// to be "before the rotation" and revoked the family.
pub fn a_retry_right_after_a_restart_under_a_clock_set_back_gets_the_successor(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    // The issue persists the floor; the rotation half a second later does not.
    let t0 = issued(&engine);
    h.clock.advance(Duration::from_millis(500));
    let t1 = present(&engine, &t0).unwrap().refresh_token.expose().to_owned();
    drop(engine);
    h.clock.set_unix_millis(T0 - 30 * SECOND);
    let engine = h.open();
    let retry = present(&engine, &t0).unwrap_or_else(|e| panic!("the retry after the restart got {e:?}"));
    assert!(retry.retried);
    assert_eq!(retry.refresh_token.expose(), t1);
    // The window still closes 30 s of real time after the rotation.
    h.clock.advance(Duration::from_secs(31));
    assert!(matches!(present(&engine, &t0), Err(RotateError::ReuseDetected { .. })));
}
