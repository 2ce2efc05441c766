//! P6, reliability checklist rows 2 and 3: one winner.
//!
//! Threads released together by a barrier rotate the same token. With a
//! stopped clock every loser is inside the grace window, so exactly one
//! call mints the successor and every other call gets that very successor
//! back. When the current token and an older one arrive together, the
//! family ends revoked whichever is first, and no token survives.

use std::collections::HashSet;
use std::sync::Barrier;

use crate::{Backend, Harness, active, grant, small_policy};
use rotoken::{Engine, RevokeReason, RotateError, RotateRequest, Rotated};

fn harness(backend: &dyn Backend) -> Harness {
    Harness::new(backend, small_policy(1_000_000))
}

/// Runs `tokens[i]` through `rotate` on one thread each, all released at once.
fn race(engine: &Engine, tokens: &[String], client: &str) -> Vec<Result<Rotated, RotateError>> {
    let barrier = Barrier::new(tokens.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = tokens
            .iter()
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    let request = RotateRequest::new(client);
                    barrier.wait();
                    engine.rotate(t, &request)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// `threads` threads rotate the same current token, `rounds` times in a row.
fn same_token_rounds(backend: &dyn Backend, threads: usize, rounds: usize) {
    let h = harness(backend);
    let engine = h.open();
    let issued = engine.issue(&grant("alice", "web")).unwrap();
    let mut current = issued.refresh_token.expose().to_owned();
    let mut issued_tokens = vec![current.clone()];
    for round in 0..rounds {
        let results = race(&engine, &vec![current.clone(); threads], "web");
        let oks: Vec<&Rotated> = results
            .iter()
            .map(|r| {
                r.as_ref()
                    .unwrap_or_else(|e| panic!("round {round}: with a stopped clock every call is answered: {e:?}"))
            })
            .collect();
        let winners: Vec<&&Rotated> = oks.iter().filter(|r| !r.retried).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one call mints the successor");
        let successor = winners[0].refresh_token.expose().to_owned();
        for r in &oks {
            assert_eq!(
                r.refresh_token.expose(),
                successor,
                "round {round}: every retry gets the identical successor"
            );
            assert_eq!(r.generation, u32::try_from(round + 1).unwrap());
            assert_eq!(r.expires_at, winners[0].expires_at);
        }
        assert!(!issued_tokens.contains(&successor));
        issued_tokens.push(successor.clone());
        // Never two live tokens: of every token ever issued, only the successor is live.
        let live: Vec<usize> = issued_tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| active(&engine, t))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(live, vec![round + 1], "round {round}: live tokens");
        current = successor;
    }
    assert_eq!(engine.events(0, 10).unwrap(), vec![]);
    crate::assert_check(&engine);
}

/// Rounds for the 16-thread race: 50 by default; set `ROTOKEN_STRESS_ROUNDS`
/// (for example to 1000, as in the reliability checklist) for a long run.
fn rounds() -> usize {
    std::env::var("ROTOKEN_STRESS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// Sixteen threads one winner fifty rounds.
pub fn sixteen_threads_one_winner_fifty_rounds(backend: &dyn Backend) {
    same_token_rounds(backend, 16, rounds());
}

/// From two to sixty four threads one winner.
pub fn from_two_to_sixty_four_threads_one_winner(backend: &dyn Backend) {
    for threads in [2, 3, 4, 8, 32, 64] {
        same_token_rounds(backend, threads, 5);
    }
}

/// What the race between current and older tokens must end in. Returns
/// true if a successor was minted (the current token won the race).
fn assert_revoked_and_dead(
    engine: &Engine,
    results: &[Result<Rotated, RotateError>],
    mut all: Vec<String>,
    what: &str,
) -> bool {
    let reuse = results
        .iter()
        .filter(|r| matches!(r, Err(RotateError::ReuseDetected { .. })))
        .count();
    assert_eq!(reuse, 1, "{what}: exactly one call detects the reuse: {results:?}");
    let minted = results.iter().filter(|r| matches!(r, Ok(r) if !r.retried)).count();
    assert!(minted <= 1, "{what}: at most one successor minted");
    for r in results {
        match r {
            Ok(r) => all.push(r.refresh_token.expose().to_owned()),
            Err(RotateError::ReuseDetected { .. } | RotateError::Revoked(RevokeReason::ReuseDetected)) => {}
            Err(e) => panic!("{what}: unexpected {e:?}"),
        }
    }
    let distinct: HashSet<&String> = all.iter().collect();
    for t in distinct {
        assert!(!active(engine, t), "{what}: a token survived the revocation");
    }
    assert!(matches!(
        engine.rotate(all.last().unwrap(), &RotateRequest::new("web")),
        Err(RotateError::Revoked(RevokeReason::ReuseDetected))
    ));
    crate::assert_check(engine);
    minted == 1
}

/// Issues a family and rotates it `n` times.
fn chain(engine: &Engine, n: usize) -> Vec<String> {
    let issued = engine.issue(&grant("bob", "web")).unwrap();
    let mut tokens = vec![issued.refresh_token.expose().to_owned()];
    for _ in 0..n {
        let r = engine
            .rotate(tokens.last().unwrap(), &RotateRequest::new("web"))
            .unwrap();
        tokens.push(r.refresh_token.expose().to_owned());
    }
    tokens
}

/// For 2 to 8 threads, 8 rounds each: builds a chain of `rotations`, lets
/// `advance_ms` pass, and races the tokens `pick(thread, round, chain)`
/// chooses; every round must end with the family revoked and no live token,
/// whichever token arrives first.
fn race_to_revocation(
    backend: &dyn Backend,
    rotations: usize,
    advance_ms: i64,
    pick: impl Fn(usize, usize, &[String]) -> String,
) {
    let h = harness(backend);
    let engine = h.open();
    let mut orders = [0usize; 2];
    for threads in 2..=8 {
        for round in 0..8 {
            let tokens = chain(&engine, rotations);
            h.advance_ms(advance_ms);
            let presented: Vec<String> = (0..threads).map(|i| pick(i, round, &tokens)).collect();
            let results = race(&engine, &presented, "web");
            let what = format!("{threads} threads, round {round}");
            orders[usize::from(assert_revoked_and_dead(&engine, &results, tokens, &what))] += 1;
        }
    }
    // Which token won is up to the scheduler; both orders must end the same.
    println!(
        "older token first: {} rounds, current token first: {} rounds",
        orders[0], orders[1]
    );
}

/// Current and older token at once revoke the family.
pub fn current_and_older_token_at_once_revoke_the_family(backend: &dyn Backend) {
    // Even threads present the current token; odd ones alternate between the
    // two tokens older than the predecessor.
    race_to_revocation(backend, 3, 0, |i, round, tokens| {
        if i % 2 == 0 {
            tokens[3].clone()
        } else {
            tokens[(i / 2 + round) % 2].clone()
        }
    });
}

/// Current and predecessor after the window at once revoke the family.
pub fn current_and_predecessor_after_the_window_at_once_revoke_the_family(backend: &dyn Backend) {
    // Past the 30 s grace window of the last rotation, the predecessor is reuse.
    race_to_revocation(backend, 2, 31 * crate::SECOND, |i, round, tokens| {
        tokens[if (i + round) % 2 == 0 { 2 } else { 1 }].clone()
    });
}
