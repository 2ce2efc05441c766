//! Fuzz target `engine_ops`: a structure-aware sequence of engine
//! operations with clock moves, applied to the real engine (over an
//! in-memory redb image, so `Reopen` really reopens) and to a plain
//! reference model, comparing every answer and checking the invariants
//! after each step.
//!
//! The model follows `crates/rotoken/tests/model.rs` (and the state table
//! in `docs/design.md`), adding confirmation-key binding and concurrent
//! rotations of one token.

use std::collections::HashSet;
use std::time::Duration;

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rotoken::{
    Engine, EventKind, ExpiryKind, FamilyId, GcReport, Introspection, ManualClock, RevokeError, RevokeReason,
    RevokeTarget, RotateError, RotateRequest, Rotated, Scope,
};

use crate::backend::SharedMemory;
use crate::fixture::{self, ABSOLUTE, EVENT_RETENTION, GRACE, IDLE, MAX_GENERATIONS, REVOKED_RETENTION, T0};

/// At most this many operations of an input are applied.
pub const MAX_OPS: usize = 64;
/// At most this many families are issued (later issues are skipped).
pub const MAX_FAMILIES: usize = 12;
const SUBJECTS: u8 = 3;
const CLIENTS: u8 = 3;
/// The confirmation key thumbprint bound to families issued with `bound`.
const JKT: &str = "jkt-good";

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

fn subject(i: usize) -> String {
    format!("user-{i}")
}

fn client(i: usize) -> String {
    format!("client-{i}")
}

/// A rotation's answer, reduced to what the model predicts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Answer {
    Ok {
        generation: u32,
        retried: bool,
        expires_at: i64,
        scope: String,
        subject: String,
        client: String,
    },
    InvalidToken,
    Malformed,
    Unknown,
    Revoked(u8),
    ClientMismatch,
    ConfirmationMismatch,
    Expired(bool),
    ReuseDetected(FamilyId),
    ScopeWidened,
    TooManyGenerations,
    Other(String),
}

fn millis(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn answer(r: &Result<Rotated, RotateError>) -> Answer {
    match r {
        Ok(r) => Answer::Ok {
            generation: r.generation,
            retried: r.retried,
            expires_at: millis(r.expires_at),
            scope: r.scope.to_string(),
            subject: r.grant.subject.clone(),
            client: r.grant.client_id.clone(),
        },
        Err(RotateError::InvalidToken) => Answer::InvalidToken,
        Err(RotateError::Malformed(_)) => Answer::Malformed,
        Err(RotateError::Unknown) => Answer::Unknown,
        Err(RotateError::Revoked(r)) => Answer::Revoked(*r as u8),
        Err(RotateError::ClientMismatch) => Answer::ClientMismatch,
        Err(RotateError::ConfirmationMismatch) => Answer::ConfirmationMismatch,
        Err(RotateError::Expired { kind }) => Answer::Expired(*kind == ExpiryKind::Absolute),
        Err(RotateError::ReuseDetected { family }) => Answer::ReuseDetected(*family),
        Err(RotateError::ScopeWidened) => Answer::ScopeWidened,
        Err(RotateError::TooManyGenerations) => Answer::TooManyGenerations,
        Err(e) => Answer::Other(format!("{e:?}")),
    }
}

#[derive(Debug)]
struct MFamily {
    id: FamilyId,
    subject: usize,
    client: usize,
    bound: bool,
    /// `tokens[g]` is generation `g`'s token; the last is current.
    tokens: Vec<String>,
    revoked: Option<RevokeReason>,
    removed: bool,
    created_at: i64,
    rotated_at: i64,
    expires_at: i64,
    gc_at: i64,
}

impl MFamily {
    fn generation(&self) -> u32 {
        u32::try_from(self.tokens.len() - 1).unwrap_or(u32::MAX)
    }

    fn deadline(&self) -> i64 {
        self.expires_at.min(self.rotated_at + IDLE)
    }

    fn expiry(&self, now: i64) -> Option<bool> {
        if now >= self.expires_at {
            Some(true)
        } else if now >= self.rotated_at + IDLE {
            Some(false)
        } else {
            None
        }
    }

    fn live(&self, g: usize, now: i64) -> bool {
        !self.removed && self.revoked.is_none() && g + 1 == self.tokens.len() && self.expiry(now).is_none()
    }

    fn confirmation(&self) -> Option<&'static str> {
        self.bound.then_some(JKT)
    }
}

/// What the model expects from one presentation.
enum Expect {
    Rotate,
    Grace,
    Fail(Answer),
}

/// The reference model: the documented rules, written plainly.
#[derive(Debug, Default)]
struct Model {
    fams: Vec<MFamily>,
    events: Vec<(u64, i64, FamilyId, EventKind)>,
    next_seq: u64,
}

impl Model {
    fn revoke(&mut self, i: usize, reason: RevokeReason, kind: EventKind, now: i64) {
        let f = &mut self.fams[i];
        f.revoked = Some(reason);
        f.gc_at = now + REVOKED_RETENTION;
        self.next_seq += 1;
        self.events.push((self.next_seq, now, f.id, kind));
    }

    /// Predicts presenting family `i`'s generation-`p` token; applies any revocation.
    fn rotate(
        &mut self,
        i: usize,
        p: u32,
        client: usize,
        confirmation: Option<&str>,
        scope: ScopeReq,
        now: i64,
    ) -> Expect {
        let f = &self.fams[i];
        if f.removed {
            return Expect::Fail(Answer::Unknown);
        }
        if let Some(r) = f.revoked {
            return Expect::Fail(Answer::Revoked(r as u8));
        }
        if client != f.client {
            return Expect::Fail(Answer::ClientMismatch);
        }
        if f.bound && confirmation != Some(JKT) {
            return Expect::Fail(Answer::ConfirmationMismatch);
        }
        if let Some(absolute) = f.expiry(now) {
            return Expect::Fail(Answer::Expired(absolute));
        }
        let g = f.generation();
        let graceable = g > 0 && p == g - 1 && now < f.rotated_at + GRACE;
        if p != g && !graceable {
            let id = f.id;
            let kind = EventKind::ReuseDetected {
                presented: p,
                current: g,
            };
            self.revoke(i, RevokeReason::ReuseDetected, kind, now);
            return Expect::Fail(Answer::ReuseDetected(id));
        }
        if scope == ScopeReq::Wide {
            return Expect::Fail(Answer::ScopeWidened);
        }
        if graceable {
            return Expect::Grace;
        }
        if g + 1 >= MAX_GENERATIONS {
            return Expect::Fail(Answer::TooManyGenerations);
        }
        Expect::Rotate
    }

    fn indexed(&self, pick: impl Fn(&MFamily) -> bool) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.fams.len())
            .filter(|&i| !self.fams[i].removed && pick(&self.fams[i]))
            .collect();
        v.sort_by_key(|&i| *self.fams[i].id.as_bytes());
        v
    }

    fn revoke_all(&mut self, list: &[usize], reason: RevokeReason, now: i64) -> usize {
        let mut n = 0;
        for &i in list {
            if !self.fams[i].removed && self.fams[i].revoked.is_none() {
                self.revoke(i, reason, EventKind::Revoked(reason), now);
                n += 1;
            }
        }
        n
    }

    fn gc(&mut self, limit: usize, now: i64) -> GcReport {
        let mut due: Vec<usize> = (0..self.fams.len())
            .filter(|&i| !self.fams[i].removed && self.fams[i].gc_at <= now)
            .collect();
        due.sort_by_key(|&i| (self.fams[i].gc_at, *self.fams[i].id.as_bytes()));
        let mut report = GcReport::default();
        report.more = due.len() > limit;
        for &i in due.iter().take(limit) {
            let f = &mut self.fams[i];
            if f.revoked.is_some() || f.expiry(now).is_some() {
                f.removed = true;
                if f.revoked.is_none() {
                    let id = f.id;
                    self.next_seq += 1;
                    self.events.push((self.next_seq, now, id, EventKind::Expired));
                }
                report.removed += 1;
            } else {
                f.gc_at = f.deadline();
                report.rescheduled += 1;
            }
        }
        let cutoff = now - EVENT_RETENTION;
        let old = self.events.iter().take_while(|e| e.1 < cutoff).count();
        if old > limit {
            report.more = true;
        }
        let n = old.min(limit);
        self.events.drain(..n);
        report.events_removed = n;
        report
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
            model: Model::default(),
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

    /// The answer the model predicts for a successful rotation or grace.
    fn ok_answer(&self, i: usize, retried: bool, scope: ScopeReq, now: i64) -> Answer {
        let f = &self.model.fams[i];
        let (generation, expires_at) = if retried {
            (f.generation(), f.deadline())
        } else {
            (f.generation() + 1, f.expires_at.min(now + IDLE))
        };
        Answer::Ok {
            generation,
            retried,
            expires_at,
            scope: match scope {
                ScopeReq::Narrow => "openid".to_owned(),
                _ => "offline_access openid profile".to_owned(),
            },
            subject: subject(f.subject),
            client: client(f.client),
        }
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
            match self.model.rotate(i, p, client_ix, confirmation, scope, now) {
                Expect::Fail(a) => want.push(a),
                Expect::Grace => want.push(self.ok_answer(i, true, scope, now)),
                Expect::Rotate => {
                    want.push(self.ok_answer(i, false, scope, now));
                    minted = Some(k);
                    // Stand-in until the engine's token is known.
                    self.model.fams[i].tokens.push(String::new());
                    self.model.fams[i].rotated_at = now;
                }
            }
        }
        let mut got_answers: Vec<Answer> = got.iter().map(answer).collect();
        got_answers.sort();
        want.sort();
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
                assert_eq!(millis(issued.expires_at), now + IDLE.min(ABSOLUTE), "issued expiry");
                let token = issued.refresh_token.expose().to_owned();
                assert!(self.seen.insert(token.clone()), "issue returned a token seen before");
                assert!(
                    self.model.fams.iter().all(|f| f.id != issued.family),
                    "family id reused"
                );
                self.model.fams.push(MFamily {
                    id: issued.family,
                    subject: s,
                    client: c,
                    bound,
                    tokens: vec![token],
                    revoked: None,
                    removed: false,
                    created_at: now,
                    rotated_at: now,
                    expires_at: now + ABSOLUTE,
                    gc_at: now + IDLE.min(ABSOLUTE),
                });
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
            assert_eq!(got.generation, Some(f.generation()));
            assert_eq!(got.family, Some(f.id));
            assert_eq!(got.sub, Some(subject(f.subject)));
            assert_eq!(got.client_id, Some(client(f.client)));
            assert_eq!(got.cnf_jkt.as_deref(), f.confirmation());
            assert_eq!(got.exp, Some(f.deadline().div_euclid(1000)));
            assert_eq!(got.iat, Some(f.rotated_at.div_euclid(1000)));
        } else {
            assert_eq!(got, Introspection::default(), "inactive answers are empty");
        }
        live
    }

    fn sessions(&self, s: usize) {
        let now = self.now();
        let mut got: Vec<_> = self
            .engine()
            .sessions(&subject(s))
            .unwrap_or_else(|e| panic!("sessions: {e}"))
            .into_iter()
            .map(|x| {
                (
                    x.family,
                    x.client_id,
                    x.generation,
                    x.active,
                    x.revoked,
                    millis(x.created_at),
                    millis(x.rotated_at),
                    millis(x.expires_at),
                )
            })
            .collect();
        got.sort_by_key(|x| *x.0.as_bytes());
        let want: Vec<_> = self
            .model
            .indexed(|f| f.subject == s)
            .into_iter()
            .map(|i| {
                let f = &self.model.fams[i];
                (
                    f.id,
                    client(f.client),
                    f.generation(),
                    f.revoked.is_none() && f.expiry(now).is_none(),
                    f.revoked,
                    f.created_at,
                    f.rotated_at,
                    f.deadline(),
                )
            })
            .collect();
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
        let present = self.model.fams.iter().filter(|f| !f.removed).count();
        let active = self
            .model
            .fams
            .iter()
            .filter(|f| !f.removed && f.revoked.is_none())
            .count();
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
