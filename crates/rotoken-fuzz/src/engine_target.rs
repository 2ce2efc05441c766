//! Fuzz target `engine_ops`: a structure-aware sequence of engine
//! operations with clock moves, applied to the real engine (over an
//! in-memory redb image, so `Reopen` really reopens) and to a plain
//! reference model, comparing every answer and checking the invariants
//! after each step.
//!
//! The model is the one the conformance suite's model test uses, included from
//! `crates/rotoken-conformance/src/reference.rs` (one copy for both); this
//! target adds confirmation-key binding and concurrent rotations of one token.

use std::collections::HashSet;
use std::time::Duration;

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rotoken::{
    Engine, Introspection, ManualClock, RevokeError, RevokeReason, RevokeTarget, RotateError, RotateRequest, Rotated,
    Scope,
};

use crate::backend::SharedMemory;
use crate::fixture::{self, ABSOLUTE, EVENT_RETENTION, GRACE, IDLE, T0};

#[path = "../../rotoken-conformance/src/reference.rs"]
mod reference;

use reference::{Answer, Expect, JKT, Model, answer, claims, client, millis, session_rows, subject};

/// At most this many operations of an input are applied.
pub const MAX_OPS: usize = 64;
/// At most this many families are issued (later issues are skipped).
pub const MAX_FAMILIES: usize = 12;
const SUBJECTS: u8 = 3;
const CLIENTS: u8 = 3;

/// The scope a rotation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum ScopeReq {
    /// None: the whole grant.
    Full,
    /// A subset of the grant.
    Narrow,
    /// More than the grant.
    Wide,
}

/// A clock move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum Step {
    /// Up to 65 s, in milliseconds: inside or just past the grace window.
    Millis(u16),
    /// The grace window plus an offset in milliseconds.
    GraceEdge(i8),
    /// The idle lifetime plus an offset in milliseconds.
    IdleEdge(i8),
    /// Up to 255 minutes: past the idle and absolute lifetimes.
    Minutes(u8),
    /// Past the absolute lifetime and every retention.
    Far,
}

impl Step {
    fn millis(self) -> i64 {
        match self {
            Self::Millis(ms) => i64::from(ms),
            Self::GraceEdge(d) => GRACE + i64::from(d),
            Self::IdleEdge(d) => IDLE + i64::from(d),
            Self::Minutes(m) => i64::from(m) * fixture::MINUTE,
            Self::Far => ABSOLUTE + EVENT_RETENTION + fixture::HOUR,
        }
    }
}

/// One operation. `fam` and `generation` pick among existing families and
/// their tokens (modulo their count); operations on no family are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum Op {
    /// Issue a family; `bound` binds it to a confirmation key.
    Issue {
        /// Subject index (modulo 3).
        subject: u8,
        /// Client index (modulo 3).
        client: u8,
        /// Bind to [`JKT`].
        bound: bool,
    },
    /// Rotate the family's current token.
    RotateCurrent {
        /// Family index.
        fam: u8,
        /// Requested scope.
        scope: ScopeReq,
    },
    /// Present the immediate predecessor again (grace retry or reuse).
    RotatePredecessor {
        /// Family index.
        fam: u8,
        /// Requested scope.
        scope: ScopeReq,
    },
    /// Present a token older than the predecessor (reuse).
    RotateOlder {
        /// Family index.
        fam: u8,
        /// Which older token.
        back: u8,
    },
    /// Present any token of the family as another client: refused, never revokes.
    RotateWrongClient {
        /// Family index.
        fam: u8,
        /// Which token.
        generation: u8,
        /// Which other client (1 or 2 steps away).
        other: u8,
    },
    /// Present the current token with a wrong confirmation key, or none.
    RotateWrongKey {
        /// Family index.
        fam: u8,
        /// True: no key at all; false: another key.
        none: bool,
    },
    /// Present a token with one bit changed (re-checksummed) or one character changed.
    RotateForged {
        /// Family index.
        fam: u8,
        /// Which token.
        generation: u8,
        /// Which bit of the payload, or (past 448) which character.
        bit: u16,
    },
    /// Several threads present the current token at once.
    RotateRace {
        /// Family index.
        fam: u8,
        /// Threads, 2 + (n % 3).
        n: u8,
    },
    /// Revoke the family through one of its tokens (RFC 7009).
    RevokeToken {
        /// Family index.
        fam: u8,
        /// Which token.
        generation: u8,
    },
    /// Revoke by family id.
    RevokeFamily {
        /// Family index.
        fam: u8,
    },
    /// Revoke every family of a subject.
    RevokeSubject {
        /// Subject index.
        subject: u8,
    },
    /// Revoke every family of a client.
    RevokeClient {
        /// Client index.
        client: u8,
    },
    /// Introspect a token.
    Introspect {
        /// Family index.
        fam: u8,
        /// Which token.
        generation: u8,
    },
    /// List a subject's sessions.
    Sessions {
        /// Subject index.
        subject: u8,
    },
    /// Move the clock forward.
    Advance(Step),
    /// One bounded gc step.
    Gc {
        /// Limit, modulo 5.
        limit: u8,
    },
    /// Drop the engine and reopen the same bytes.
    Reopen,
}

/// Encodes operations so that `Vec::<Op>::arbitrary_take_rest` (which is
/// what `fuzz_target!(|ops: Vec<Op>| ...)` decodes) gives them back: how
/// the seed corpus is written. A test checks the round trip.
pub fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        out.push(1); // "another element follows"
        op.encode(&mut out);
    }
    out
}

/// The `u32` that arbitrary's derived enums map to variant `index` of `count`.
fn variant(out: &mut Vec<u8>, index: u64, count: u64) {
    let v = (index << 32).div_ceil(count);
    out.extend_from_slice(&u32::try_from(v).unwrap_or(u32::MAX).to_le_bytes());
}

impl ScopeReq {
    fn encode(self, out: &mut Vec<u8>) {
        variant(out, self as u64, 3);
    }

    fn request(self, client_id: &str, confirmation: Option<&str>) -> RotateRequest {
        let mut r = RotateRequest::new(client_id);
        r.confirmation = confirmation.map(str::to_owned);
        r.scope = match self {
            Self::Full => None,
            Self::Narrow => Scope::parse("openid").ok(),
            Self::Wide => Scope::parse("openid admin").ok(),
        };
        r
    }
}

impl Step {
    fn encode(self, out: &mut Vec<u8>) {
        match self {
            Self::Millis(ms) => {
                variant(out, 0, 5);
                out.extend_from_slice(&ms.to_le_bytes());
            }
            Self::GraceEdge(d) => {
                variant(out, 1, 5);
                out.extend_from_slice(&d.to_le_bytes());
            }
            Self::IdleEdge(d) => {
                variant(out, 2, 5);
                out.extend_from_slice(&d.to_le_bytes());
            }
            Self::Minutes(m) => {
                variant(out, 3, 5);
                out.push(m);
            }
            Self::Far => variant(out, 4, 5),
        }
    }
}

impl Op {
    fn encode(self, out: &mut Vec<u8>) {
        const N: u64 = 17;
        match self {
            Self::Issue { subject, client, bound } => {
                variant(out, 0, N);
                out.extend_from_slice(&[subject, client, u8::from(bound)]);
            }
            Self::RotateCurrent { fam, scope } => {
                variant(out, 1, N);
                out.push(fam);
                scope.encode(out);
            }
            Self::RotatePredecessor { fam, scope } => {
                variant(out, 2, N);
                out.push(fam);
                scope.encode(out);
            }
            Self::RotateOlder { fam, back } => {
                variant(out, 3, N);
                out.extend_from_slice(&[fam, back]);
            }
            Self::RotateWrongClient { fam, generation, other } => {
                variant(out, 4, N);
                out.extend_from_slice(&[fam, generation, other]);
            }
            Self::RotateWrongKey { fam, none } => {
                variant(out, 5, N);
                out.extend_from_slice(&[fam, u8::from(none)]);
            }
            Self::RotateForged { fam, generation, bit } => {
                variant(out, 6, N);
                out.extend_from_slice(&[fam, generation]);
                out.extend_from_slice(&bit.to_le_bytes());
            }
            Self::RotateRace { fam, n } => {
                variant(out, 7, N);
                out.extend_from_slice(&[fam, n]);
            }
            Self::RevokeToken { fam, generation } => {
                variant(out, 8, N);
                out.extend_from_slice(&[fam, generation]);
            }
            Self::RevokeFamily { fam } => {
                variant(out, 9, N);
                out.push(fam);
            }
            Self::RevokeSubject { subject } => {
                variant(out, 10, N);
                out.push(subject);
            }
            Self::RevokeClient { client } => {
                variant(out, 11, N);
                out.push(client);
            }
            Self::Introspect { fam, generation } => {
                variant(out, 12, N);
                out.extend_from_slice(&[fam, generation]);
            }
            Self::Sessions { subject } => {
                variant(out, 13, N);
                out.push(subject);
            }
            Self::Advance(step) => {
                variant(out, 14, N);
                step.encode(out);
            }
            Self::Gc { limit } => {
                variant(out, 15, N);
                out.push(limit);
            }
            Self::Reopen => variant(out, 16, N),
        }
    }
}

/// The CRC-32 (ISO-HDLC) of the token format.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = !0u32;
    for b in parts.iter().flat_map(|p| p.iter()) {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A forgery of `token`: bit `bit` (below 448) of the authenticated fields
/// or authenticator flipped, checksum fixed, so only the authenticator can
/// catch it; or (from 448 on) one character replaced, which the checksum catches.
pub fn forge(token: &str, bit: u16) -> String {
    let bit = usize::from(bit) % (448 + rotoken::token::TOKEN_LEN);
    let prefix = rotoken::token::PREFIX;
    if bit >= 448 {
        let mut b = token.as_bytes().to_vec();
        let at = bit - 448;
        b[at] = if b[at] == b'A' { b'B' } else { b'A' };
        return String::from_utf8_lossy(&b).into_owned();
    }
    let mut payload = [0u8; rotoken::token::PAYLOAD_LEN];
    let _ = URL_SAFE_NO_PAD.decode_slice(&token.as_bytes()[prefix.len()..], &mut payload);
    payload[bit / 8] ^= 1 << (bit % 8);
    let crc = crc32(&[prefix.as_bytes(), &payload[..56]]);
    payload[56..].copy_from_slice(&crc.to_be_bytes());
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(payload))
}

/// The engine, its storage, its clock and the model.
struct World {
    mem: SharedMemory,
    clock: ManualClock,
    engine: Option<Engine>,
    model: Model,
    seen: HashSet<String>,
}

impl World {
    fn new() -> Self {
        let mem = SharedMemory::new();
        let clock = ManualClock::at_unix_millis(T0);
        let engine = Some(Self::open(&mem, &clock));
        Self {
            mem,
            clock,
            engine,
            model: Model::new(&fixture::policy()),
            seen: HashSet::new(),
        }
    }

    fn open(mem: &SharedMemory, clock: &ManualClock) -> Engine {
        Engine::open_with_backend(mem.clone(), fixture::keyring(), fixture::options(clock))
            .unwrap_or_else(|e| panic!("the database does not reopen: {e}"))
    }

    fn engine(&self) -> &Engine {
        self.engine
            .as_ref()
            .unwrap_or_else(|| unreachable!("the engine is always open between steps"))
    }

    fn now(&self) -> i64 {
        self.clock.unix_millis()
    }

    fn pick(&self, fam: u8) -> Option<usize> {
        (!self.model.fams.is_empty()).then(|| usize::from(fam) % self.model.fams.len())
    }

    /// Presents family `i`'s generation-`p` token `n` times at once and
    /// checks the answers against the model's, as a multiset.
    #[allow(clippy::too_many_arguments)]
    fn present(&mut self, i: usize, p: u32, client_ix: usize, confirmation: Option<&str>, scope: ScopeReq, n: usize) {
        let now = self.now();
        let token = self.model.fams[i].tokens[p as usize].clone();
        let request = scope.request(&client(client_ix), confirmation);
        let got: Vec<Result<Rotated, RotateError>> = if n == 1 {
            vec![self.engine().rotate(&token, &request)]
        } else {
            let engine = self.engine();
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..n).map(|_| s.spawn(|| engine.rotate(&token, &request))).collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| panic!("a rotating thread panicked")))
                    .collect()
            })
        };
        // The model sees the same presentations one after the other.
        let mut want = Vec::new();
        let mut minted: Option<usize> = None;
        for k in 0..n {
            let widen = scope == ScopeReq::Wide;
            match self.model.rotate(i, p, client_ix, confirmation, widen, now) {
                Expect::Fail(a) => want.push(a),
                Expect::Grace => want.push(self.model.ok_answer(i, true, request.scope.as_ref(), now)),
                Expect::Rotate => {
                    want.push(self.model.ok_answer(i, false, request.scope.as_ref(), now));
                    minted = Some(k);
                    // Stand-in until the engine's token is known.
                    self.model.rotated(i, String::new(), now);
                }
            }
        }
        // Compared as multisets: both sides in one (any) fixed order.
        let mut got_answers: Vec<Answer> = got.iter().map(answer).collect();
        got_answers.sort_by_cached_key(|a| format!("{a:?}"));
        want.sort_by_cached_key(|a| format!("{a:?}"));
        assert_eq!(
            got_answers, want,
            "presenting generation {p} of family {i} {n} time(s) (client {client_ix}, {scope:?})"
        );
        // Exactly one fresh token, shared by the grace answers; errors hand out nothing.
        let tokens: HashSet<String> = got
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|r| r.refresh_token.expose().to_owned())
            .collect();
        assert!(
            tokens.len() <= 1,
            "one presentation round handed out {} different tokens",
            tokens.len()
        );
        if minted.is_some() {
            let new = tokens.into_iter().next().unwrap_or_default();
            assert!(self.seen.insert(new.clone()), "a rotation returned a token seen before");
            let parsed = rotoken::token::parse(new.as_bytes()).unwrap_or_else(|e| panic!("minted token: {e}"));
            let f = &mut self.model.fams[i];
            assert_eq!(parsed.generation, f.generation(), "generation inside the token");
            assert_eq!(parsed.family, f.id, "family inside the token");
            if let Some(last) = f.tokens.last_mut() {
                *last = new;
            }
        } else if let Some(t) = tokens.into_iter().next() {
            let f = &self.model.fams[i];
            assert_eq!(
                &t,
                f.tokens.last().unwrap_or(&String::new()),
                "a grace retry must return the current token"
            );
        }
    }

    fn step(&mut self, op: Op) {
        let now = self.now();
        match op {
            Op::Issue {
                subject: s,
                client: c,
                bound,
            } => {
                if self.model.fams.len() >= MAX_FAMILIES {
                    return;
                }
                let (s, c) = (usize::from(s % SUBJECTS), usize::from(c % CLIENTS));
                let mut g = fixture::grant(&subject(s), &client(c));
                if bound {
                    g = g.with_confirmation(JKT);
                }
                let issued = self.engine().issue(&g).unwrap_or_else(|e| panic!("issue: {e}"));
                assert_eq!(issued.generation, 0);
                assert_eq!(
                    millis(issued.expires_at),
                    self.model.issued_expiry(now),
                    "issued expiry"
                );
                let token = issued.refresh_token.expose().to_owned();
                assert!(self.seen.insert(token.clone()), "issue returned a token seen before");
                assert!(
                    self.model.fams.iter().all(|f| f.id != issued.family),
                    "family id reused"
                );
                self.model.issue(issued.family, s, c, bound, token, now);
            }
            Op::RotateCurrent { fam, scope } => {
                if let Some(i) = self.pick(fam) {
                    let f = &self.model.fams[i];
                    let (g, c, k) = (f.generation(), f.client, f.confirmation());
                    self.present(i, g, c, k, scope, 1);
                }
            }
            Op::RotatePredecessor { fam, scope } => {
                if let Some(i) = self.pick(fam) {
                    let f = &self.model.fams[i];
                    let (g, c, k) = (f.generation(), f.client, f.confirmation());
                    self.present(i, g.saturating_sub(1), c, k, scope, 1);
                }
            }
            Op::RotateOlder { fam, back } => {
                if let Some(i) = self.pick(fam) {
                    let f = &self.model.fams[i];
                    let (g, c, k) = (f.generation(), f.client, f.confirmation());
                    let older = g.saturating_sub(1).max(1);
                    let p = u32::from(back) % older;
                    self.present(i, p, c, k, ScopeReq::Full, 1);
                }
            }
            Op::RotateWrongClient { fam, generation, other } => {
                if let Some(i) = self.pick(fam) {
                    let f = &self.model.fams[i];
                    let p = usize::from(generation) % f.tokens.len();
                    let wrong = (f.client + 1 + usize::from(other % 2)) % usize::from(CLIENTS);
                    let k = f.confirmation();
                    self.present(i, u32::try_from(p).unwrap_or(0), wrong, k, ScopeReq::Full, 1);
                }
            }
            Op::RotateWrongKey { fam, none } => {
                if let Some(i) = self.pick(fam) {
                    let f = &self.model.fams[i];
                    let (g, c) = (f.generation(), f.client);
                    let k = if none { None } else { Some("jkt-other") };
                    self.present(i, g, c, k, ScopeReq::Full, 1);
                }
            }
            Op::RotateForged { fam, generation, bit } => {
                if let Some(i) = self.pick(fam) {
                    let f = &self.model.fams[i];
                    let token = &f.tokens[usize::from(generation) % f.tokens.len()];
                    let forged = forge(token, bit);
                    let request = ScopeReq::Full.request(&client(f.client), f.confirmation());
                    let got = answer(&self.engine().rotate(&forged, &request));
                    assert!(
                        got == Answer::InvalidToken || got == Answer::Malformed,
                        "a forged token got {got:?}"
                    );
                    let i = self
                        .engine()
                        .introspect(&forged)
                        .unwrap_or_else(|e| panic!("introspect: {e}"));
                    assert!(!i.active, "a forged token introspects as active");
                    let r = self.engine().revoke(RevokeTarget::Token(&forged));
                    assert!(
                        matches!(r, Err(RevokeError::InvalidToken | RevokeError::Malformed(_))),
                        "revoking with a forged token: {r:?}"
                    );
                }
            }
            Op::RotateRace { fam, n } => {
                if let Some(i) = self.pick(fam) {
                    let f = &self.model.fams[i];
                    let (g, c, k) = (f.generation(), f.client, f.confirmation());
                    self.present(i, g, c, k, ScopeReq::Full, 2 + usize::from(n % 3));
                }
            }
            Op::RevokeToken { fam, generation } => {
                if let Some(i) = self.pick(fam) {
                    let f = &self.model.fams[i];
                    let token = f.tokens[usize::from(generation) % f.tokens.len()].clone();
                    let got = self.engine().revoke(RevokeTarget::Token(&token));
                    let want = self.model.revoke_all(&[i], RevokeReason::Token, now);
                    assert_eq!(got.ok(), Some(want), "revoke by token");
                }
            }
            Op::RevokeFamily { fam } => {
                if let Some(i) = self.pick(fam) {
                    let got = self.engine().revoke(RevokeTarget::Family(self.model.fams[i].id));
                    let want = self.model.revoke_all(&[i], RevokeReason::Family, now);
                    assert_eq!(got.ok(), Some(want), "revoke by family");
                }
            }
            Op::RevokeSubject { subject: s } => {
                let s = usize::from(s % SUBJECTS);
                let got = self.engine().revoke(RevokeTarget::Subject(&subject(s)));
                let list = self.model.indexed(|f| f.subject == s);
                let want = self.model.revoke_all(&list, RevokeReason::Subject, now);
                assert_eq!(got.ok(), Some(want), "revoke by subject");
            }
            Op::RevokeClient { client: c } => {
                let c = usize::from(c % CLIENTS);
                let got = self.engine().revoke(RevokeTarget::Client(&client(c)));
                let list = self.model.indexed(|f| f.client == c);
                let want = self.model.revoke_all(&list, RevokeReason::Client, now);
                assert_eq!(got.ok(), Some(want), "revoke by client");
            }
            Op::Introspect { fam, generation } => {
                if let Some(i) = self.pick(fam) {
                    let g = usize::from(generation) % self.model.fams[i].tokens.len();
                    self.introspect(i, g);
                }
            }
            Op::Sessions { subject: s } => self.sessions(usize::from(s % SUBJECTS)),
            Op::Advance(step) => self.clock.advance(Duration::from_millis(step.millis().unsigned_abs())),
            Op::Gc { limit } => {
                let limit = usize::from(limit % 5);
                let got = self.engine().gc(limit).unwrap_or_else(|e| panic!("gc: {e}"));
                let want = self.model.gc(limit, now);
                assert_eq!(got, want, "gc({limit})");
            }
            Op::Reopen => {
                drop(self.engine.take());
                self.engine = Some(Self::open(&self.mem, &self.clock));
            }
        }
    }

    fn introspect(&self, i: usize, g: usize) -> bool {
        let now = self.now();
        let f = &self.model.fams[i];
        let got = self
            .engine()
            .introspect(&f.tokens[g])
            .unwrap_or_else(|e| panic!("introspect: {e}"));
        let live = f.live(g, now);
        assert_eq!(got.active, live, "introspect generation {g} of family {i}");
        if live {
            assert_eq!(claims(&got), f.claims(), "introspect generation {g} of family {i}");
        } else {
            assert_eq!(got, Introspection::default(), "inactive answers are empty");
        }
        live
    }

    fn sessions(&self, s: usize) {
        let now = self.now();
        let got = session_rows(
            self.engine()
                .sessions(&subject(s))
                .unwrap_or_else(|e| panic!("sessions: {e}")),
        );
        let want = self.model.sessions(s, now);
        assert_eq!(got, want, "sessions of {}", subject(s));
    }

    /// Invariants after every step: the integrity check passes and agrees
    /// with the model's counts, the event log matches, and no family of
    /// `touched` (every family after a reopen or at the end) has more than
    /// one live token, each token's liveness being the model's.
    fn invariants(&self, touched: Option<usize>) {
        let engine = self.engine();
        let report = engine.check().unwrap_or_else(|e| panic!("check: {e}"));
        assert!(report.is_ok(), "check found problems: {:?}", report.problems);
        let (present, active) = (self.model.present(), self.model.not_revoked());
        assert_eq!(report.families, present, "families stored");
        assert_eq!(report.active, active, "families not revoked");
        let events = engine.events(0, usize::MAX).unwrap_or_else(|e| panic!("events: {e}"));
        let got: Vec<_> = events.iter().map(|e| (e.seq, e.at_millis, e.family, e.kind)).collect();
        assert_eq!(got, self.model.events, "event log");
        let families: Vec<usize> = match touched {
            Some(i) => vec![i],
            None => (0..self.model.fams.len()).collect(),
        };
        for i in families {
            let live = (0..self.model.fams[i].tokens.len())
                .filter(|&g| self.introspect(i, g))
                .count();
            assert!(live <= 1, "family {i} has {live} live tokens");
        }
    }
}

/// Which family an operation touches, if one.
fn touched(op: &Op, world: &World) -> Option<usize> {
    match *op {
        Op::RotateCurrent { fam, .. }
        | Op::RotatePredecessor { fam, .. }
        | Op::RotateOlder { fam, .. }
        | Op::RotateWrongClient { fam, .. }
        | Op::RotateWrongKey { fam, .. }
        | Op::RotateForged { fam, .. }
        | Op::RotateRace { fam, .. }
        | Op::RevokeToken { fam, .. }
        | Op::RevokeFamily { fam }
        | Op::Introspect { fam, .. } => world.pick(fam),
        Op::Issue { .. } => world.model.fams.len().checked_sub(1),
        _ => None,
    }
}

/// Applies up to [`MAX_OPS`] operations to a fresh engine and to the model,
/// comparing every answer and checking the invariants after each step and,
/// for every family, at the end.
///
/// # Panics
///
/// When the engine and the model disagree or an invariant fails.
pub fn engine_ops(ops: Vec<Op>) {
    let mut world = World::new();
    for op in ops.iter().take(MAX_OPS) {
        world.step(*op);
        let all = matches!(
            op,
            Op::Reopen | Op::RevokeSubject { .. } | Op::RevokeClient { .. } | Op::Gc { .. }
        );
        world.invariants(if all { None } else { touched(op, &world) });
    }
    world.invariants(None);
}
