//! A deterministic workload of engine operations and an observer of the
//! engine's visible state, shared by the power-loss and fault tests.
//!
//! The workload's *structure* (which operation on which family) comes from
//! a fixed seed, so every run makes the same calls and the same number of
//! syncs, although tokens and family ids are fresh each time. The state
//! observed after each operation is the reference a recovered database is
//! compared with: no model is needed, the engine's own answers before the
//! crash are the truth it must not lose.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use rotoken::{Engine, EventKind, FamilyId, ManualClock, RevokeReason, RevokeTarget, RotateError, RotateRequest};
use rotoken_fuzz::fixture;
use rotoken_fuzz::rng::Rng;

/// Subjects of the workload.
pub(crate) const SUBJECTS: usize = 3;

/// One workload step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WOp {
    /// Issue a family for subject `s`.
    Issue(usize),
    /// Rotate family `i`'s current token.
    Rotate(usize),
    /// Present family `i`'s predecessor again (a grace retry).
    Retry(usize),
    /// Present family `i`'s first token again (reuse: revokes when it is old).
    Reuse(usize),
    /// Revoke family `i`.
    RevokeFamily(usize),
    /// Revoke every family of subject `s`.
    RevokeSubject(usize),
    /// Move the clock.
    Advance(i64),
    /// One gc step.
    Gc(usize),
}

/// A workload of `n` steps from `seed`, mostly rotations.
pub(crate) fn script(seed: u64, n: usize) -> Vec<WOp> {
    let mut rng = Rng::new(seed);
    let mut issued = 0usize;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let op = match rng.below(20) {
            _ if issued == 0 => WOp::Issue(0),
            0..=2 => WOp::Issue(rng.index(SUBJECTS)),
            3..=11 => WOp::Rotate(rng.index(issued)),
            12 => WOp::Retry(rng.index(issued)),
            13 => WOp::Reuse(rng.index(issued)),
            14 => WOp::RevokeFamily(rng.index(issued)),
            15 => WOp::RevokeSubject(rng.index(SUBJECTS)),
            16 | 17 => WOp::Advance(i64::try_from(rng.below(20 * 60_000)).unwrap()),
            _ => WOp::Gc(1 + rng.index(4)),
        };
        if matches!(op, WOp::Issue(_)) {
            issued += 1;
        }
        out.push(op);
    }
    out
}

/// What the workload knows: every family and every token handed out.
#[derive(Debug, Default, Clone)]
pub(crate) struct Known {
    /// Family ids, in issue order.
    pub(crate) ids: Vec<FamilyId>,
    /// Subject of each family.
    pub(crate) subjects: Vec<usize>,
    /// `tokens[i][g]`: family `i`'s generation-`g` token.
    pub(crate) tokens: Vec<Vec<String>>,
}

fn subject(s: usize) -> String {
    format!("subject-{s}")
}

/// A storage failure seen by the workload (what fault tests react to):
/// the error's stable code and its message.
#[derive(Debug)]
pub(crate) struct StorageFailed(pub(crate) &'static str, pub(crate) String);

fn is_storage(code: &str) -> bool {
    code == "storage_error" || code == "corrupt"
}

impl Known {
    /// Applies one step. Refusals are normal outcomes; a storage error is
    /// returned for the caller to handle. A step on a family not issued
    /// yet (its issue failed) does nothing.
    pub(crate) fn apply(&mut self, engine: &Engine, clock: &ManualClock, op: WOp) -> Result<(), StorageFailed> {
        let web = RotateRequest::new("web");
        let rotate = |t: &str| match engine.rotate(t, &web) {
            Err(e) if is_storage(e.code().as_str()) => Err(StorageFailed(e.code().as_str(), e.to_string())),
            r => Ok(r),
        };
        match op {
            WOp::Issue(s) => {
                let issued = engine
                    .issue(&fixture::grant(&subject(s), "web"))
                    .map_err(|e| StorageFailed(e.code().as_str(), e.to_string()))?;
                self.ids.push(issued.family);
                self.subjects.push(s);
                self.tokens.push(vec![issued.refresh_token.expose().to_owned()]);
            }
            WOp::Rotate(i) if i < self.ids.len() => {
                let current = self.tokens[i].last().unwrap().clone();
                if let Ok(r) = rotate(&current)? {
                    assert!(!r.retried, "rotating the current token was answered as a retry");
                    self.tokens[i].push(r.refresh_token.expose().to_owned());
                }
            }
            WOp::Retry(i) if i < self.ids.len() && self.tokens[i].len() >= 2 => {
                let n = self.tokens[i].len();
                let predecessor = self.tokens[i][n - 2].clone();
                if let Ok(r) = rotate(&predecessor)? {
                    assert!(r.retried);
                    assert_eq!(
                        r.refresh_token.expose(),
                        self.tokens[i][n - 1],
                        "grace returned another token"
                    );
                }
            }
            WOp::Reuse(i) if i < self.ids.len() => {
                let first = self.tokens[i][0].clone();
                let r = rotate(&first)?;
                if self.tokens[i].len() >= 3 {
                    assert!(r.is_err(), "a token two generations old was accepted");
                } else if let Ok(r) = r {
                    // The current token (one generation) or a grace retry (two).
                    if self.tokens[i].len() == 1 {
                        self.tokens[i].push(r.refresh_token.expose().to_owned());
                    }
                }
            }
            WOp::RevokeFamily(i) if i < self.ids.len() => {
                engine
                    .revoke(RevokeTarget::Family(self.ids[i]))
                    .map_err(|e| StorageFailed(e.code().as_str(), e.to_string()))?;
            }
            WOp::RevokeSubject(s) => {
                engine
                    .revoke(RevokeTarget::Subject(&subject(s)))
                    .map_err(|e| StorageFailed(e.code().as_str(), e.to_string()))?;
            }
            WOp::Advance(ms) => clock.advance(Duration::from_millis(ms.unsigned_abs())),
            WOp::Gc(limit) => {
                engine
                    .gc(limit)
                    .map_err(|e| StorageFailed(e.code().as_str(), e.to_string()))?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// One family as seen through the public API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Current generation.
    pub(crate) generation: u32,
    /// Why it was revoked, if it was.
    pub(crate) revoked: Option<RevokeReason>,
    /// Index of the token that introspects as active, if one does.
    pub(crate) live: Option<usize>,
}

/// Everything visible: families (absent once gc removed them) and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observed {
    /// Family index → state.
    pub(crate) families: BTreeMap<usize, Seen>,
    /// Events: sequence number, kind, family index (`None`: a family the workload never saw).
    pub(crate) events: Vec<(u64, EventKind, Option<usize>)>,
    /// Families listed by `sessions` that the workload never saw issued (an
    /// issue whose answer was lost to a crash or a failed commit).
    pub(crate) strangers: usize,
}

/// Reads the visible state through the public API, and checks on the way
/// that no family has two live tokens and that a live token is the
/// family's current generation.
pub(crate) fn observe(engine: &Engine, known: &Known) -> Result<Observed, String> {
    let mut families = BTreeMap::new();
    let mut strangers = 0;
    for s in 0..SUBJECTS {
        for session in engine.sessions(&subject(s)).map_err(|e| format!("sessions: {e}"))? {
            let Some(i) = known.ids.iter().position(|id| *id == session.family) else {
                strangers += 1;
                continue;
            };
            let mut live = None;
            for (g, t) in known.tokens[i].iter().enumerate() {
                if engine.introspect(t).map_err(|e| format!("introspect: {e}"))?.active {
                    if let Some(other) = live {
                        return Err(format!("family {i} has two live tokens: {other} and {g}"));
                    }
                    live = Some(g);
                }
            }
            if let Some(g) = live
                && u32::try_from(g).ok() != Some(session.generation)
            {
                return Err(format!(
                    "family {i}: token {g} is live but the family is at generation {}",
                    session.generation
                ));
            }
            families.insert(
                i,
                Seen {
                    generation: session.generation,
                    revoked: session.revoked,
                    live,
                },
            );
        }
    }
    let events = engine
        .events(0, usize::MAX)
        .map_err(|e| format!("events: {e}"))?
        .into_iter()
        .map(|e| (e.seq, e.kind, known.ids.iter().position(|id| *id == e.family)))
        .collect();
    Ok(Observed {
        families,
        events,
        strangers,
    })
}

/// `check()` passes and agrees with what `observe` saw.
pub(crate) fn check_sound(engine: &Engine) -> Result<(), String> {
    let report = engine.check().map_err(|e| format!("check: {e}"))?;
    if !report.is_ok() {
        return Err(format!("check found problems: {:?}", report.problems));
    }
    Ok(())
}

/// Which rotation errors are refusals (the engine working as designed).
pub(crate) fn is_refusal(e: &RotateError) -> bool {
    !is_storage(e.code().as_str())
}
