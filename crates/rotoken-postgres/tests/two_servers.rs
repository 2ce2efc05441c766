//! Two servers (two engines, two stores, two pools) on one database:
//! one winner per rotation across servers (P6), the loser answered with the
//! identical grace successor and never an error, and a replay at one server
//! revoking the family at the other at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Barrier;

use common::{HOUR, SECOND, Servers, T0, assert_check, grant};
use rotoken::{ManualClock, RotateError, RotateRequest, Rotated};
use rotoken_postgres::testing;

/// Callers per server in each round.
const CALLERS: usize = 8;
const ROUNDS: usize = 40;

#[test]
fn the_same_token_rotated_on_both_servers_at_once_has_one_successor() {
    let Some(db) = testing::database() else { return };
    let s = Servers::new(db);
    let servers = [s.engine(), s.engine()];
    let req = RotateRequest::new("web-app");
    let mut token = servers[0].issue(&grant("alice", "web-app")).unwrap().refresh_token;
    for round in 0..ROUNDS {
        let barrier = Barrier::new(2 * CALLERS);
        let results: Vec<Result<Rotated, RotateError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2 * CALLERS)
                .map(|i| {
                    let (engine, barrier, token, req) = (&servers[i % 2], &barrier, &token, &req);
                    scope.spawn(move || {
                        barrier.wait();
                        engine.rotate(token.expose(), req)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ok: Vec<&Rotated> = results
            .iter()
            .map(|r| {
                r.as_ref()
                    .unwrap_or_else(|e| panic!("round {round}: a caller got {e:?}"))
            })
            .collect();
        let winners: Vec<&&Rotated> = ok.iter().filter(|r| !r.retried).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one mints the successor");
        let successor = &winners[0].refresh_token;
        assert!(
            ok.iter().all(|r| r.refresh_token == *successor),
            "round {round}: every loser gets the identical successor"
        );
        assert_eq!(winners[0].generation as usize, round + 1);
        token = successor.clone();
    }
    for engine in &servers {
        assert!(engine.introspect(token.expose()).unwrap().active);
        assert_check(engine);
    }
    let conflicts: u64 = servers.iter().map(|e| e.stats().conflicts_retried).sum();
    eprintln!("conflicts retried inside the engines: {conflicts}");
}

#[test]
fn a_replay_at_one_server_revokes_the_family_at_the_other_at_once() {
    let Some(db) = testing::database() else { return };
    let s = Servers::new(db);
    let (a, b) = (s.engine(), s.engine());
    let req = RotateRequest::new("web-app");
    let first = a.issue(&grant("alice", "web-app")).unwrap().refresh_token;
    let second = a.rotate(first.expose(), &req).unwrap().refresh_token;
    s.advance_ms(60 * SECOND);
    let third = b.rotate(second.expose(), &req).unwrap().refresh_token;
    assert!(a.introspect(third.expose()).unwrap().active);

    // The thief replays the first token at server B.
    let replay = b.rotate(first.expose(), &req);
    assert!(matches!(replay, Err(RotateError::ReuseDetected { .. })), "{replay:?}");
    // Server A knows at once: the live token is dead there too.
    assert!(!a.introspect(third.expose()).unwrap().active);
    let at_a = a.rotate(third.expose(), &req);
    assert!(matches!(at_a, Err(RotateError::Revoked(_))), "{at_a:?}");
}

#[test]
fn the_current_and_an_old_token_at_two_servers_at_once_revoke_the_family() {
    let Some(db) = testing::database() else { return };
    let s = Servers::new(db);
    let (a, b) = (s.engine(), s.engine());
    let req = RotateRequest::new("web-app");
    for _ in 0..10 {
        let t0 = a.issue(&grant("alice", "web-app")).unwrap().refresh_token;
        let t1 = a.rotate(t0.expose(), &req).unwrap().refresh_token;
        let t2 = a.rotate(t1.expose(), &req).unwrap().refresh_token;
        // t0 is older than the predecessor: reuse whenever it arrives.
        let barrier = Barrier::new(2);
        let (current, old) = std::thread::scope(|scope| {
            let c = scope.spawn(|| {
                barrier.wait();
                a.rotate(t2.expose(), &req)
            });
            let o = scope.spawn(|| {
                barrier.wait();
                b.rotate(t0.expose(), &req)
            });
            (c.join().unwrap(), o.join().unwrap())
        });
        assert!(matches!(old, Err(RotateError::ReuseDetected { .. })), "{old:?}");
        if let Ok(r) = current {
            assert!(!b.introspect(r.refresh_token.expose()).unwrap().active);
        }
        assert!(!a.introspect(t2.expose()).unwrap().active);
    }
}

/// Server A's clock runs 2 s ahead of server B's (or B read its clock before
/// it waited for the family's lock): B must still see A's rotation as just
/// done, so a second tab's retry there gets the grace successor, not a
/// revoked session; and B's window then lasts the grace period of real
/// time from when it saw the rotation, however far behind its clock is.
#[test]
fn a_server_whose_clock_is_behind_still_answers_the_second_tab_with_the_successor() {
    let Some(db) = testing::database() else { return };
    let s = Servers::new(db);
    let ahead = ManualClock::at_unix_millis(T0 + 2 * SECOND);
    let (a, b) = (s.engine_with_clock(&ahead), s.engine());
    let req = RotateRequest::new("web-app");
    let t0 = a.issue(&grant("alice", "web-app")).unwrap().refresh_token;
    let t1 = a.rotate(t0.expose(), &req).unwrap();
    let retry = b.rotate(t0.expose(), &req);
    let retry = retry.unwrap_or_else(|e| panic!("the second tab at the server behind got {e:?}"));
    assert!(retry.retried);
    assert_eq!(retry.refresh_token, t1.refresh_token);

    // Rotating at B never stamps a time before A's rotation.
    let t2 = b.rotate(t1.refresh_token.expose(), &req).unwrap();
    assert!(t2.expires_at >= t1.expires_at);

    // 31 s of real time after B first saw the rotation, t1 is past the
    // 30 s window at B, though B's clock still reads 29 s after it.
    s.advance_ms(31 * SECOND);
    let late = b.rotate(t1.refresh_token.expose(), &req);
    assert!(matches!(late, Err(RotateError::ReuseDetected { .. })), "{late:?}");
}

/// Server A's clock is a day ahead (set wrong): its rotations must not drag
/// server B's time a day forward (B's families would all expire, and stay
/// expired after A is fixed). B does not take a time that far ahead, counts
/// it (Stats::store_time_ahead), and its own rotations keep its own time.
#[test]
fn a_server_a_day_ahead_does_not_drag_the_others_time() {
    let Some(db) = testing::database() else { return };
    let s = Servers::new(db);
    let wrong = ManualClock::at_unix_millis(T0 + 24 * HOUR);
    let (a, b) = (s.engine_with_clock(&wrong), s.engine());
    let req = RotateRequest::new("web-app");
    let t0 = a.issue(&grant("alice", "web-app")).unwrap().refresh_token;
    let t1 = a.rotate(t0.expose(), &req).unwrap();
    // At B, the family was rotated "a day from now": not taken as B's time,
    // so the second tab's retry is before the rotation, answered
    // clock_behind (retryable; neither answered nor revoked, since the
    // core's issue-18 change) and the mismatch is counted for an alert.
    let retry = b.rotate(t0.expose(), &req);
    assert!(matches!(retry, Err(RotateError::ClockBehind)), "{retry:?}");
    assert_eq!(b.stats().store_time_ahead, 1);
    // B's time is still B's: a family it issues now lives from B's clock.
    let other = b.issue(&grant("bob", "web-app")).unwrap();
    let t2 = b.rotate(other.refresh_token.expose(), &req).unwrap();
    assert!(t2.expires_at < t1.expires_at, "B did not jump a day");
    assert_eq!(a.stats().store_time_ahead, 0);
}
