//! Model-based state-machine test (reliability checklist row 1).
//!
//! Random sequences of operations are applied both to the real [`Engine`]
//! (over a file, so `Reopen` drops and reopens it) and to a plain in-memory
//! reference model (`support/reference.rs`, shared with the `engine_ops` fuzz
//! target) written from the documented rules. Every answer is
//! compared, and after every step the invariants are checked: at most one
//! live token per family among all tokens ever issued, the engine's own
//! integrity check passes, the event log matches the model's.
//!
//! On failure proptest shrinks the sequence to a minimal one.

use std::collections::HashSet;

use crate::reference::{Answer, Expect, Model, answer, claims, client, session_rows, subject};
use crate::{Backend, HOUR, Harness, MINUTE, SECOND, forge, grant, ms, scope, small_policy};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rotoken::{Engine, RevokeError, RevokeReason, RevokeTarget, RotateRequest};

const SUBJECTS: usize = 3;
const CLIENTS: usize = 3;
/// Small enough that a 40-step sequence can reach it.
const MAX_GENERATIONS: u32 = 5;
const GRACE: i64 = 30 * SECOND;
const IDLE: i64 = HOUR;
const ABSOLUTE: i64 = 3 * HOUR;
const EVENT_RETENTION: i64 = 4 * HOUR;

/// The scope a rotation asks for.
#[derive(Debug, Clone, Copy)]
enum ScopeReq {
    /// None: the whole grant.
    Full,
    /// A subset of the grant.
    Narrow,
    /// More than the grant.
    Wide,
}

impl ScopeReq {
    fn request(self, client_id: &str) -> RotateRequest {
        let mut r = RotateRequest::new(client_id);
        r.scope = match self {
            Self::Full => None,
            Self::Narrow => Some(scope("openid")),
            Self::Wide => Some(scope("openid admin")),
        };
        r
    }
}

#[derive(Debug, Clone)]
enum Op {
    Issue {
        subject: usize,
        client: usize,
    },
    RotateCurrent {
        fam: Sel,
        scope: ScopeReq,
    },
    RotatePredecessor {
        fam: Sel,
        scope: ScopeReq,
    },
    RotateOlder {
        fam: Sel,
        back: Sel,
    },
    RotateWrongClient {
        fam: Sel,
        generation: Sel,
        other: usize,
    },
    RotateForged {
        fam: Sel,
        generation: Sel,
        bit: usize,
    },
    /// Revoke by a token of any generation; with `by`, as that client
    /// (`RevokeTarget::TokenOfClient`, what a revocation endpoint uses).
    RevokeToken {
        fam: Sel,
        generation: Sel,
        by: Option<usize>,
    },
    RevokeForged {
        fam: Sel,
        bit: usize,
    },
    RevokeFamily {
        fam: Sel,
    },
    RevokeSubject {
        subject: usize,
    },
    RevokeClient {
        client: usize,
    },
    Introspect {
        fam: Sel,
        generation: Sel,
    },
    Sessions {
        subject: usize,
    },
    Advance {
        ms: i64,
    },
    Gc {
        limit: usize,
    },
    Reopen,
}

/// Picks an element of a collection: `Sel(i)` is element `i % len`,
/// `Sel(usize::MAX)` the last one. Shrinks towards the first.
#[derive(Debug, Clone, Copy)]
struct Sel(usize);

impl Sel {
    fn of(self, len: usize) -> usize {
        assert!(len > 0);
        if self.0 == usize::MAX { len - 1 } else { self.0 % len }
    }
}

fn sel() -> impl Strategy<Value = Sel> {
    any::<u16>().prop_map(|v| Sel(usize::from(v)))
}

fn scope_req() -> impl Strategy<Value = ScopeReq> {
    prop_oneof![
        6 => Just(ScopeReq::Full),
        1 => Just(ScopeReq::Narrow),
        1 => Just(ScopeReq::Wide),
    ]
}

fn advance() -> impl Strategy<Value = i64> {
    prop_oneof![
        // Well inside the grace window.
        6 => 0..5 * SECOND,
        // Around the grace window's edge, and exactly on it.
        3 => (GRACE - 5 * SECOND)..(GRACE + 5 * SECOND),
        2 => (GRACE - 1)..=(GRACE + 1),
        // Past the grace window, well inside the idle lifetime.
        3 => (GRACE + 1)..(50 * MINUTE),
        // Around the idle lifetime, and exactly on it.
        1 => (IDLE - 5 * MINUTE)..(IDLE + 5 * MINUTE),
        1 => (IDLE - 1)..=(IDLE + 1),
        // Past the absolute lifetime and the retentions.
        1 => ABSOLUTE..(2 * EVENT_RETENTION),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..SUBJECTS, 0..CLIENTS).prop_map(|(subject, client)| Op::Issue { subject, client }),
        16 => (sel(), scope_req()).prop_map(|(fam, scope)| Op::RotateCurrent { fam, scope }),
        6 => (sel(), scope_req()).prop_map(|(fam, scope)| Op::RotatePredecessor { fam, scope }),
        2 => (sel(), sel()).prop_map(|(fam, back)| Op::RotateOlder { fam, back }),
        2 => (sel(), sel(), 1..CLIENTS)
            .prop_map(|(fam, generation, other)| Op::RotateWrongClient { fam, generation, other }),
        2 => (sel(), sel(), 0..128usize)
            .prop_map(|(fam, generation, bit)| Op::RotateForged { fam, generation, bit }),
        1 => (sel(), sel(), proptest::option::of(0..CLIENTS))
            .prop_map(|(fam, generation, by)| Op::RevokeToken { fam, generation, by }),
        1 => (sel(), 0..128usize).prop_map(|(fam, bit)| Op::RevokeForged { fam, bit }),
        1 => sel().prop_map(|fam| Op::RevokeFamily { fam }),
        1 => (0..SUBJECTS).prop_map(|subject| Op::RevokeSubject { subject }),
        1 => (0..CLIENTS).prop_map(|client| Op::RevokeClient { client }),
        2 => (sel(), sel()).prop_map(|(fam, generation)| Op::Introspect { fam, generation }),
        1 => (0..SUBJECTS).prop_map(|subject| Op::Sessions { subject }),
        10 => advance().prop_map(|ms| Op::Advance { ms }),
        4 => (0..4usize).prop_map(|limit| Op::Gc { limit }),
        2 => Just(Op::Reopen),
    ]
}

/// The system under test plus its model.
struct World {
    h: Harness,
    engine: Option<Engine>,
    model: Model,
    /// Every token string the engine ever handed out.
    seen: HashSet<String>,
}

impl World {
    /// A fresh world; `relaxed` selects relaxed durability (with a durable
    /// commit every third one), which must lose nothing across a clean reopen.
    fn new(backend: &dyn Backend, relaxed: bool) -> Self {
        // A cap small enough that the random sequences reach it.
        let mut policy = small_policy(MAX_GENERATIONS).with_max_families_per_user(3);
        if relaxed {
            policy.durability = rotoken::Durability::Relaxed;
            policy.relaxed_flush_every = 3;
        }
        let model = Model::new(&policy);
        let h = Harness::new(backend, policy);
        let engine = Some(h.open());
        Self {
            h,
            engine,
            model,
            seen: HashSet::new(),
        }
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }

    fn pick(&self, fam: &Sel) -> Option<usize> {
        (!self.model.fams.is_empty()).then(|| fam.of(self.model.fams.len()))
    }

    /// Rotates family `i`'s generation-`p` token as `client` and compares
    /// the answer with the model's.
    fn rotate(&mut self, i: usize, p: u32, client_ix: usize, scope: ScopeReq) -> Result<(), TestCaseError> {
        let now = self.h.now();
        let token = self.model.fams[i].tokens[p as usize].clone();
        let request = scope.request(&client(client_ix));
        let got = self.engine().rotate(&token, &request);
        let expect = self
            .model
            .rotate(i, p, client_ix, None, matches!(scope, ScopeReq::Wide), now);
        let ok = |retried| self.model.ok_answer(i, retried, request.scope.as_ref(), now);
        match expect {
            Expect::Fail(want) => prop_assert_eq!(answer(&got), want, "rotate gen {} of family {}", p, i),
            Expect::Grace => {
                prop_assert_eq!(answer(&got), ok(true), "grace retry of family {}", i);
                let returned = got.unwrap().refresh_token;
                prop_assert_eq!(
                    Some(returned.expose()),
                    self.model.fams[i].tokens.last().map(String::as_str),
                    "a grace retry must return the successor already minted"
                );
            }
            Expect::Rotate => {
                prop_assert_eq!(answer(&got), ok(false), "rotation of family {}", i);
                let new = got.unwrap().refresh_token.expose().to_owned();
                prop_assert!(self.seen.insert(new.clone()), "a rotation returned a token seen before");
                let g = self.model.fams[i].generation();
                prop_assert_eq!(crate::generation_of(&new), g + 1, "generation inside the token");
                self.model.rotated(i, new, now);
            }
        }
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.h.now();
        match op {
            Op::Issue { subject: s, client: c } => {
                let issued = self.engine().issue(&grant(&subject(*s), &client(*c))).unwrap();
                prop_assert_eq!(issued.generation, 0, "issue");
                prop_assert_eq!(ms(issued.expires_at), self.model.issued_expiry(now), "issued expiry");
                let token = issued.refresh_token.expose().to_owned();
                prop_assert!(self.seen.insert(token.clone()), "issue returned a token seen before");
                prop_assert!(
                    self.model.fams.iter().all(|f| f.id != issued.family),
                    "family id reused"
                );
                self.model.issue(issued.family, *s, *c, false, token, now);
            }
            Op::RotateCurrent { fam, scope } => {
                if let Some(i) = self.pick(fam) {
                    let (g, c) = (self.model.fams[i].generation(), self.model.fams[i].client);
                    self.rotate(i, g, c, *scope)?;
                }
            }
            Op::RotatePredecessor { fam, scope } => {
                if let Some(i) = self.pick(fam) {
                    let (g, c) = (self.model.fams[i].generation(), self.model.fams[i].client);
                    self.rotate(i, g.saturating_sub(1), c, *scope)?;
                }
            }
            Op::RotateOlder { fam, back } => {
                if let Some(i) = self.pick(fam) {
                    let (g, c) = (self.model.fams[i].generation(), self.model.fams[i].client);
                    // Strictly older than the predecessor when there is one.
                    let p = back.of(g.saturating_sub(1).max(1) as usize);
                    self.rotate(i, u32::try_from(p).unwrap(), c, ScopeReq::Full)?;
                }
            }
            Op::RotateWrongClient { fam, generation, other } => {
                if let Some(i) = self.pick(fam) {
                    let f = &self.model.fams[i];
                    let p = generation.of(f.tokens.len());
                    let wrong = (f.client + other) % CLIENTS;
                    // The model answers Unknown/Revoked first, else ClientMismatch,
                    // and never changes anything.
                    self.rotate(i, u32::try_from(p).unwrap(), wrong, ScopeReq::Full)?;
                }
            }
            Op::RotateForged { fam, generation, bit } => {
                if let Some(i) = self.pick(fam) {
                    let f = &self.model.fams[i];
                    let token = &f.tokens[generation.of(f.tokens.len())];
                    let forged = forge(token, *bit);
                    let got = self.engine().rotate(&forged, &RotateRequest::new(client(f.client)));
                    prop_assert_eq!(answer(&got), Answer::InvalidToken, "forged token");
                    prop_assert!(!self.engine().introspect(&forged).unwrap().active);
                }
            }
            Op::RevokeToken { fam, generation, by } => {
                if let Some(i) = self.pick(fam) {
                    let f = &self.model.fams[i];
                    let token = f.tokens[generation.of(f.tokens.len())].clone();
                    let by = by.map(client);
                    let target = match &by {
                        None => RevokeTarget::Token(&token),
                        Some(c) => RevokeTarget::TokenOfClient {
                            token: &token,
                            client_id: c,
                        },
                    };
                    let got = self.engine().revoke(target);
                    // Another client's token revokes nothing, whatever its
                    // generation or state, unless gc removed the family.
                    if by.is_some_and(|c| c != client(f.client)) && !f.removed {
                        prop_assert!(
                            matches!(got, Err(RevokeError::ClientMismatch)),
                            "revoke as another client: {:?}",
                            got
                        );
                    } else {
                        let want = self.model.revoke_all(&[i], RevokeReason::Token, now);
                        prop_assert_eq!(got.unwrap(), want, "revoke by token");
                    }
                }
            }
            Op::RevokeForged { fam, bit } => {
                if let Some(i) = self.pick(fam) {
                    let f = &self.model.fams[i];
                    let forged = forge(f.tokens.last().unwrap(), *bit);
                    let got = self.engine().revoke(RevokeTarget::Token(&forged));
                    prop_assert!(
                        matches!(got, Err(RevokeError::InvalidToken)),
                        "revoke with a forged token: {:?}",
                        got
                    );
                }
            }
            Op::RevokeFamily { fam } => {
                if let Some(i) = self.pick(fam) {
                    let got = self
                        .engine()
                        .revoke(RevokeTarget::Family(self.model.fams[i].id))
                        .unwrap();
                    let want = self.model.revoke_all(&[i], RevokeReason::Family, now);
                    prop_assert_eq!(got, want, "revoke by family");
                }
            }
            Op::RevokeSubject { subject: s } => {
                let got = self.engine().revoke(RevokeTarget::Subject(&subject(*s))).unwrap();
                let list = self.model.indexed(|f| f.subject == *s);
                let want = self.model.revoke_all(&list, RevokeReason::Subject, now);
                prop_assert_eq!(got, want, "revoke by subject");
            }
            Op::RevokeClient { client: c } => {
                let got = self.engine().revoke(RevokeTarget::Client(&client(*c))).unwrap();
                let list = self.model.indexed(|f| f.client == *c);
                let want = self.model.revoke_all(&list, RevokeReason::Client, now);
                prop_assert_eq!(got, want, "revoke by client");
            }
            Op::Introspect { fam, generation } => {
                if let Some(i) = self.pick(fam) {
                    let f = &self.model.fams[i];
                    let g = generation.of(f.tokens.len());
                    let got = self.engine().introspect(&f.tokens[g]).unwrap();
                    let live = f.live(g, now);
                    prop_assert_eq!(got.active, live, "introspect gen {} of family {}", g, i);
                    if live {
                        prop_assert_eq!(claims(&got), f.claims(), "introspect gen {} of family {}", g, i);
                    } else {
                        prop_assert_eq!(got, rotoken::Introspection::default(), "inactive answers are empty");
                    }
                }
            }
            Op::Sessions { subject: s } => {
                let got = session_rows(self.engine().sessions(&subject(*s)).unwrap());
                prop_assert_eq!(got, self.model.sessions(*s, now), "sessions of {}", subject(*s));
            }
            Op::Advance { ms } => self.h.advance_ms(*ms),
            Op::Gc { limit } => {
                let got = self.engine().gc(*limit).unwrap();
                let want = self.model.gc(*limit, now);
                prop_assert_eq!(got, want, "gc({})", limit);
            }
            Op::Reopen => {
                drop(self.engine.take());
                self.engine = Some(self.h.open());
            }
        }
        Ok(())
    }

    /// Invariants that hold after every step.
    fn invariants(&self) -> Result<(), TestCaseError> {
        let now = self.h.now();
        let engine = self.engine();
        let report = engine.check().unwrap();
        prop_assert!(report.is_ok(), "check found problems: {:?}", report.problems);
        let (present, not_revoked) = (self.model.present(), self.model.not_revoked());
        prop_assert_eq!(report.families, present, "families stored");
        prop_assert_eq!(report.active, not_revoked, "families not revoked");
        prop_assert_eq!(
            engine.families_count().unwrap(),
            u64::try_from(present).unwrap(),
            "families_count"
        );
        for (i, f) in self.model.fams.iter().enumerate() {
            let mut live = 0;
            for (g, t) in f.tokens.iter().enumerate() {
                let active = engine.introspect(t).unwrap().active;
                prop_assert_eq!(active, f.live(g, now), "liveness of gen {} of family {}", g, i);
                live += usize::from(active);
            }
            prop_assert!(live <= 1, "family {} has {} live tokens", i, live);
        }
        let events = engine.events(0, usize::MAX).unwrap();
        prop_assert!(
            events.windows(2).all(|w| w[0].seq < w[1].seq),
            "event sequence numbers increase"
        );
        let got: Vec<_> = events.iter().map(|e| (e.seq, e.at_millis, e.family, e.kind)).collect();
        prop_assert_eq!(&got, &self.model.events, "event log");
        Ok(())
    }
}

fn run(backend: &dyn Backend, relaxed: bool, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut w = World::new(backend, relaxed);
    w.invariants()?;
    for op in ops {
        w.step(op)?;
        w.invariants()?;
    }
    Ok(())
}

/// Random sequences of up to 39 operations, [`Backend::model_cases`] of
/// them, each in a fresh database, from a fixed seed (the same cases every
/// run; `ROTOKEN_MODEL_SEED=N` draws others); a failure is shrunk to a
/// minimal sequence and printed with the seed.
pub fn engine_matches_model(backend: &dyn Backend) {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let seed: u64 = std::env::var("ROTOKEN_MODEL_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0x5eed_0f40_404e_1000);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases: backend.model_cases(),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
    let strategy = (any::<bool>(), proptest::collection::vec(op(), 1..40));
    if let Err(e) = runner.run(&strategy, |(relaxed, ops)| run(backend, relaxed, &ops)) {
        panic!(
            "{} store, model seed {seed} (ROTOKEN_MODEL_SEED replays it): {e}",
            backend.name()
        );
    }
}

/// A fixed sequence through every path of the model, so a change that
/// makes random generation miss a path still exercises it.
pub fn scripted_sequence_matches_model(backend: &dyn Backend) {
    let ix = Sel;
    let ops = vec![
        Op::Issue { subject: 0, client: 0 },
        Op::Issue { subject: 1, client: 1 },
        Op::RotateCurrent {
            fam: ix(0),
            scope: ScopeReq::Full,
        },
        Op::RotatePredecessor {
            fam: ix(0),
            scope: ScopeReq::Narrow,
        },
        Op::RotatePredecessor {
            fam: ix(0),
            scope: ScopeReq::Wide,
        },
        Op::RotateCurrent {
            fam: ix(0),
            scope: ScopeReq::Wide,
        },
        Op::RotateWrongClient {
            fam: ix(0),
            generation: ix(0),
            other: 1,
        },
        Op::RotateForged {
            fam: ix(0),
            generation: ix(0),
            bit: 5,
        },
        Op::Reopen,
        Op::Advance { ms: GRACE },
        Op::RotatePredecessor {
            fam: ix(0),
            scope: ScopeReq::Full,
        },
        Op::Gc { limit: 0 },
        Op::RotateCurrent {
            fam: ix(usize::MAX),
            scope: ScopeReq::Full,
        },
        Op::Sessions { subject: 1 },
        Op::Advance { ms: IDLE },
        Op::RotateCurrent {
            fam: ix(usize::MAX),
            scope: ScopeReq::Full,
        },
        Op::Gc { limit: 1 },
        Op::Gc { limit: 3 },
        Op::Advance {
            ms: EVENT_RETENTION + HOUR,
        },
        Op::Gc { limit: 3 },
        Op::Issue { subject: 2, client: 2 },
        Op::RevokeClient { client: 2 },
        Op::RevokeSubject { subject: 2 },
        Op::RevokeToken {
            fam: ix(usize::MAX),
            generation: ix(0),
            by: Some(1),
        },
        Op::RevokeToken {
            fam: ix(usize::MAX),
            generation: ix(0),
            by: None,
        },
    ];
    run(backend, false, &ops).unwrap();
    run(backend, true, &ops).unwrap();
}

/// Generation limit is reached.
pub fn generation_limit_is_reached(backend: &dyn Backend) {
    let ops: Vec<Op> = std::iter::once(Op::Issue { subject: 0, client: 0 })
        .chain((0..MAX_GENERATIONS + 1).map(|_| Op::RotateCurrent {
            fam: Sel(0),
            scope: ScopeReq::Full,
        }))
        .collect();
    run(backend, false, &ops).unwrap();
}
