//! The reference model of the engine: families, the answer each rotation
//! must get, revocation, gc, expiry and the event log, written plainly from
//! the rules of `docs/design.md` (the state table) and the state machine in
//! `crates/rotoken/src/state.rs`: checks run in the order state, client,
//! confirmation key, expiry, generation, scope, generation limit.
//!
//! One copy serves both users: the model-based test of the conformance
//! suite (`model.rs`, run against every store) and the `engine_ops` fuzz
//! target of `crates/rotoken-fuzz`, which includes this file by path. It
//! depends on nothing but `rotoken` and `time`.

use std::time::Duration;

use rotoken::{
    EventKind, ExpiryKind, FamilyId, GcReport, Introspection, Policy, RevokeReason, RotateError, Rotated, Scope,
    Session,
};

/// The confirmation key thumbprint bound to families issued with `bound`.
pub(crate) const JKT: &str = "jkt-good";

/// The subject of index `i`.
pub(crate) fn subject(i: usize) -> String {
    format!("user-{i}")
}

/// The client of index `i`.
pub(crate) fn client(i: usize) -> String {
    format!("client-{i}")
}

/// Unix milliseconds of a timestamp.
pub(crate) fn millis(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// A rotation's answer, reduced to what the model predicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
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
    Revoked(RevokeReason),
    ClientMismatch,
    ConfirmationMismatch,
    Expired(ExpiryKind),
    ReuseDetected(FamilyId),
    ScopeWidened,
    TooManyGenerations,
    Other(String),
}

/// The engine's answer to a rotation, reduced to an [`Answer`].
pub(crate) fn answer(r: &Result<Rotated, RotateError>) -> Answer {
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
        Err(RotateError::Revoked(r)) => Answer::Revoked(*r),
        Err(RotateError::ClientMismatch) => Answer::ClientMismatch,
        Err(RotateError::ConfirmationMismatch) => Answer::ConfirmationMismatch,
        Err(RotateError::Expired { kind }) => Answer::Expired(*kind),
        Err(RotateError::ReuseDetected { family }) => Answer::ReuseDetected(*family),
        Err(RotateError::ScopeWidened) => Answer::ScopeWidened,
        Err(RotateError::TooManyGenerations) => Answer::TooManyGenerations,
        Err(e) => Answer::Other(format!("{e:?}")),
    }
}

fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The policy's limits, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) grace: i64,
    pub(crate) idle: i64,
    pub(crate) absolute: i64,
    pub(crate) revoked_retention: i64,
    pub(crate) event_retention: i64,
    pub(crate) max_generations: u32,
    /// Most live families per (subject, client); 0 for no cap.
    pub(crate) cap: u32,
}

impl Limits {
    /// The limits of the policy the engine under test is opened with.
    pub(crate) fn of(p: &Policy) -> Self {
        Self {
            grace: duration_millis(p.grace),
            idle: duration_millis(p.idle_lifetime),
            absolute: duration_millis(p.absolute_lifetime),
            revoked_retention: duration_millis(p.revoked_retention),
            event_retention: duration_millis(p.event_retention),
            max_generations: p.max_generations,
            cap: p.max_families_per_user,
        }
    }
}

/// One family in the model.
#[derive(Debug)]
pub(crate) struct MFamily {
    pub(crate) id: FamilyId,
    pub(crate) subject: usize,
    pub(crate) client: usize,
    /// Bound to the confirmation key [`JKT`].
    pub(crate) bound: bool,
    /// `tokens[g]` is the token of generation `g`; the last is the current one.
    pub(crate) tokens: Vec<String>,
    pub(crate) revoked: Option<RevokeReason>,
    /// Removed by gc: its tokens are unknown from then on.
    pub(crate) removed: bool,
    pub(crate) created_at: i64,
    /// When the current token was minted.
    pub(crate) rotated_at: i64,
    /// Absolute expiry; never moves.
    pub(crate) expires_at: i64,
    /// When gc next looks at the family.
    pub(crate) gc_at: i64,
    /// The policy's idle lifetime.
    idle: i64,
}

impl MFamily {
    pub(crate) fn generation(&self) -> u32 {
        u32::try_from(self.tokens.len() - 1).unwrap_or(u32::MAX)
    }

    /// The earlier of the absolute expiry and the idle deadline.
    pub(crate) fn deadline(&self) -> i64 {
        self.expires_at.min(self.rotated_at + self.idle)
    }

    pub(crate) fn expiry(&self, now: i64) -> Option<ExpiryKind> {
        if now >= self.expires_at {
            Some(ExpiryKind::Absolute)
        } else if now >= self.rotated_at + self.idle {
            Some(ExpiryKind::Idle)
        } else {
            None
        }
    }

    /// True if the token of generation `g` should introspect as active.
    pub(crate) fn live(&self, g: usize, now: i64) -> bool {
        !self.removed && self.revoked.is_none() && g + 1 == self.tokens.len() && self.expiry(now).is_none()
    }

    /// The claims introspecting the current token must show.
    pub(crate) fn claims(&self) -> Claims {
        (
            Some(self.generation()),
            Some(self.id),
            Some(subject(self.subject)),
            Some(client(self.client)),
            self.confirmation().map(str::to_owned),
            Some(self.deadline().div_euclid(1000)),
            Some(self.rotated_at.div_euclid(1000)),
        )
    }

    /// The confirmation key a rotation of this family must present.
    pub(crate) fn confirmation(&self) -> Option<&'static str> {
        self.bound.then_some(JKT)
    }
}

/// What the model expects from one presentation.
pub(crate) enum Expect {
    /// A new generation is minted.
    Rotate,
    /// The successor already minted (the current token) is returned again.
    Grace,
    /// An error.
    Fail(Answer),
}

/// One session as compared: id, client, generation, active, revoked,
/// created, rotated, expires.
pub(crate) type SessionRow = (FamilyId, String, u32, bool, Option<RevokeReason>, i64, i64, i64);

/// The engine's sessions, as compared, in family id order.
pub(crate) fn session_rows(got: Vec<Session>) -> Vec<SessionRow> {
    let mut rows: Vec<SessionRow> = got
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
    rows.sort_by_key(|x| *x.0.as_bytes());
    rows
}

/// The claims of an active introspection, as compared: generation, family,
/// sub, client, confirmation key, exp, iat.
pub(crate) type Claims = (
    Option<u32>,
    Option<FamilyId>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

/// The claims of an engine's introspection answer.
pub(crate) fn claims(got: &Introspection) -> Claims {
    (
        got.generation,
        got.family,
        got.sub.clone(),
        got.client_id.clone(),
        got.cnf_jkt.clone(),
        got.exp,
        got.iat,
    )
}

/// The reference model: what the rules in the design document and the API
/// docs say the engine must answer.
#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) limits: Limits,
    pub(crate) fams: Vec<MFamily>,
    /// The event log: sequence number, time, family, kind; in commit order.
    pub(crate) events: Vec<(u64, i64, FamilyId, EventKind)>,
    /// The next event's sequence number: never reused, even after gc.
    next_seq: u64,
}

impl Model {
    /// An empty model of an engine opened with `policy`.
    pub(crate) fn new(policy: &Policy) -> Self {
        Self {
            limits: Limits::of(policy),
            fams: Vec::new(),
            events: Vec::new(),
            next_seq: 0,
        }
    }

    /// The expiry the engine must report for a family issued at `now`.
    pub(crate) fn issued_expiry(&self, now: i64) -> i64 {
        now + self.limits.idle.min(self.limits.absolute)
    }

    /// Records a family the engine issued at `now` with generation-0 `token`,
    /// and the removal (with a `revoked`/`cap` event) of the oldest live
    /// families of the same (subject, client) it pushed over
    /// [`rotoken::Policy::max_families_per_user`].
    pub(crate) fn issue(&mut self, id: FamilyId, subject: usize, client: usize, bound: bool, token: String, now: i64) {
        if self.limits.cap > 0 {
            let mut live: Vec<usize> = (0..self.fams.len())
                .filter(|&i| {
                    let f = &self.fams[i];
                    f.subject == subject
                        && f.client == client
                        && !f.removed
                        && f.revoked.is_none()
                        && f.expiry(now).is_none()
                })
                .collect();
            live.sort_by_key(|&i| (self.fams[i].created_at, *self.fams[i].id.as_bytes()));
            let excess = (live.len() + 1).saturating_sub(self.limits.cap as usize);
            for &i in &live[..excess] {
                // Removed at once: its tokens are unknown from now on.
                self.fams[i].removed = true;
                self.next_seq += 1;
                self.events.push((
                    self.next_seq,
                    now,
                    self.fams[i].id,
                    EventKind::Revoked(RevokeReason::Cap),
                ));
            }
        }
        self.fams.push(MFamily {
            id,
            subject,
            client,
            bound,
            tokens: vec![token],
            revoked: None,
            removed: false,
            created_at: now,
            rotated_at: now,
            expires_at: now + self.limits.absolute,
            gc_at: self.issued_expiry(now),
            idle: self.limits.idle,
        });
    }

    /// Records that family `i` was rotated at `now` to `token`.
    pub(crate) fn rotated(&mut self, i: usize, token: String, now: i64) {
        let f = &mut self.fams[i];
        f.tokens.push(token);
        f.rotated_at = now;
    }

    fn revoke(&mut self, i: usize, reason: RevokeReason, kind: EventKind, now: i64) {
        let f = &mut self.fams[i];
        f.revoked = Some(reason);
        f.gc_at = now + self.limits.revoked_retention;
        self.next_seq += 1;
        self.events.push((self.next_seq, now, f.id, kind));
    }

    /// Predicts presenting family `i`'s generation-`p` token as `client` with
    /// `confirmation`, asking for a scope wider than the grant if `widen`;
    /// applies any state change (reuse revokes) to the model.
    pub(crate) fn rotate(
        &mut self,
        i: usize,
        p: u32,
        client: usize,
        confirmation: Option<&str>,
        widen: bool,
        now: i64,
    ) -> Expect {
        let f = &self.fams[i];
        if f.removed {
            return Expect::Fail(Answer::Unknown);
        }
        if let Some(r) = f.revoked {
            return Expect::Fail(Answer::Revoked(r));
        }
        if client != f.client {
            return Expect::Fail(Answer::ClientMismatch);
        }
        if f.bound && confirmation != Some(JKT) {
            return Expect::Fail(Answer::ConfirmationMismatch);
        }
        if let Some(kind) = f.expiry(now) {
            return Expect::Fail(Answer::Expired(kind));
        }
        let g = f.generation();
        let graceable = g > 0 && p == g - 1 && now < f.rotated_at + self.limits.grace;
        if p != g && !graceable {
            let id = f.id;
            let kind = EventKind::ReuseDetected {
                presented: p,
                current: g,
            };
            self.revoke(i, RevokeReason::ReuseDetected, kind, now);
            return Expect::Fail(Answer::ReuseDetected(id));
        }
        if widen {
            return Expect::Fail(Answer::ScopeWidened);
        }
        if graceable {
            return Expect::Grace;
        }
        if g + 1 >= self.limits.max_generations {
            return Expect::Fail(Answer::TooManyGenerations);
        }
        Expect::Rotate
    }

    /// The answer a successful rotation (or, with `retried`, a grace retry)
    /// of family `i` at `now` gets, the scope being `scope` (`None`: the
    /// whole grant).
    pub(crate) fn ok_answer(&self, i: usize, retried: bool, scope: Option<&Scope>, now: i64) -> Answer {
        let f = &self.fams[i];
        let (generation, expires_at) = if retried {
            (f.generation(), f.deadline())
        } else {
            (f.generation() + 1, f.expires_at.min(now + self.limits.idle))
        };
        Answer::Ok {
            generation,
            retried,
            expires_at,
            scope: scope.map_or_else(|| "offline_access openid profile".to_owned(), ToString::to_string),
            subject: subject(f.subject),
            client: client(f.client),
        }
    }

    /// Families a revoke-by-index would find, in index (family id) order.
    pub(crate) fn indexed(&self, pick: impl Fn(&MFamily) -> bool) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.fams.len())
            .filter(|&i| !self.fams[i].removed && pick(&self.fams[i]))
            .collect();
        v.sort_by_key(|&i| *self.fams[i].id.as_bytes());
        v
    }

    /// Revokes the listed families that are still active; returns how many.
    pub(crate) fn revoke_all(&mut self, list: &[usize], reason: RevokeReason, now: i64) -> usize {
        let mut n = 0;
        for &i in list {
            if !self.fams[i].removed && self.fams[i].revoked.is_none() {
                self.revoke(i, reason, EventKind::Revoked(reason), now);
                n += 1;
            }
        }
        n
    }

    /// What `Engine::sessions` must list for subject `s` at `now`, in family id order.
    pub(crate) fn sessions(&self, s: usize, now: i64) -> Vec<SessionRow> {
        self.indexed(|f| f.subject == s)
            .into_iter()
            .map(|i| {
                let f = &self.fams[i];
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
            .collect()
    }

    /// How many families are stored (not removed by gc).
    pub(crate) fn present(&self) -> usize {
        self.fams.iter().filter(|f| !f.removed).count()
    }

    /// How many stored families are not revoked.
    pub(crate) fn not_revoked(&self) -> usize {
        self.fams.iter().filter(|f| !f.removed && f.revoked.is_none()).count()
    }

    pub(crate) fn gc(&mut self, limit: usize, now: i64) -> GcReport {
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
        let cutoff = now - self.limits.event_retention;
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
