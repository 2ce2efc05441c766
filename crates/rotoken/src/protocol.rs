//! The protocol: every rule about what a presented token means and what
//! each operation writes, in one place. A store loads and stores bytes; the
//! engine moves operations between callers, this module and the store.
//!
//! Each operation has two halves:
//!
//! * **prepare**, on the caller's thread, with no storage: parse and
//!   authenticate the token, check the request, compute keyed tags, and
//!   mint the would-be successor (signed and sealed under the presented
//!   token);
//! * **transition**, inside the batch's write transaction: from the stored
//!   record, the prepared operation and the time, establish the facts
//!   (current secret or predecessor, client and confirmation match, scope),
//!   let [`state::decide`] decide, and return the answer together with what
//!   to write: the new record (its [`IndexKeys`] follow from it) and the
//!   event.
//!
//! # The order of the checks of a rotation
//!
//! Written here once; `docs/design.md` and [`RotateError`] refer to it.
//!
//! 1. checksum and layout (the parser, no key) → `invalid_token`
//! 2. authenticator (the keyring, no storage) → `invalid_token`
//! 3. request fields: client id, confirmation (no storage) → `invalid_input`
//! 4. lookup of the family → `unknown_token`
//! 5. state: revoked → `revoked`
//! 6. client tag ≠ the request's client → `client_mismatch` (never revokes)
//! 7. confirmation key ≠ the binding → `confirmation_mismatch` (never revokes)
//! 8. expiry, absolute or idle → `expired`
//! 9. generation, with the secret comparison → rotate, grace,
//!    `reuse_detected` or `diverged` (the last two revoke)
//! 10. scope wider than the grant → `scope_widened`
//! 11. generation limit → `too_many_generations`
//!
//! Steps 5 to 11 are [`state::decide`], a pure function tested row by row
//! against the state table of `docs/design.md`.

use subtle::ConstantTimeEq;

use crate::clock::{duration_millis, from_millis};
use crate::error::{IssueError, RevokeError, RotateError, StoreError, corrupt};
use crate::grant::{Grant, MAX_CLIENT_ID_LEN, MAX_CONFIRMATION_LEN, MAX_SUBJECT_LEN, check_text};
use crate::keys::{Keyring, TAG16, TagKind};
use crate::policy::Policy;
use crate::record::{EventKind, FamilyRecord, FamilyState, RevokeReason, SEALED_SUCCESSOR_LEN};
use crate::state::{self, Attempt, Decision, Limits, Refusal, SecretCheck};
use crate::store::{Index, IndexKeys};
use crate::token::{self, FamilyId, Secret, Token};
use crate::types::{Introspection, Issued, RevokeTarget, RotateRequest, Rotated, Session};
use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};

/// The keys and rules every operation runs by.
pub(crate) struct Protocol {
    pub(crate) keys: Keyring,
    /// Replaced whole when the stored policy changes; each operation runs
    /// by the rules it took at its start.
    rules: RwLock<Arc<Rules>>,
}

/// A policy and the limits derived from it.
pub(crate) struct Rules {
    pub(crate) policy: Policy,
    pub(crate) limits: Limits,
}

/// An issue, prepared on its caller's thread.
pub(crate) struct PreparedIssue {
    pub(crate) rec: FamilyRecord,
    pub(crate) issued: Issued,
}

/// A rotation, prepared on its caller's thread.
pub(crate) struct PreparedRotate {
    pub(crate) presented: Token,
    client_tag: [u8; TAG16],
    confirmation_tag: Option<[u8; TAG16]>,
    scope: Option<crate::Scope>,
    successor: Token,
    successor_hash: [u8; TAG16],
    sealed_successor: [u8; SEALED_SUCCESSOR_LEN],
}

/// A revocation, prepared on its caller's thread.
pub(crate) enum PreparedRevoke {
    /// A family; with the tag of the client it must belong to, for
    /// [`RevokeTarget::TokenOfClient`].
    Family(FamilyId, RevokeReason, Option<[u8; TAG16]>),
    /// Every family of a subject tag.
    Subject([u8; TAG16]),
    /// Every family of a client tag.
    Client([u8; TAG16]),
    /// One step of a large subject or client revocation: these families.
    Listed(Vec<FamilyId>, RevokeReason),
    /// The last step of a large subject or client revocation: every family
    /// under the tag when its transaction lists them, but those the earlier
    /// steps already took.
    Rest(Index, [u8; TAG16], Arc<HashSet<FamilyId>>),
}

impl PreparedRevoke {
    /// The index and tag of a subject or client revocation.
    pub(crate) fn tag(&self) -> Option<(Index, [u8; TAG16])> {
        match self {
            Self::Subject(t) => Some((Index::Subject, *t)),
            Self::Client(t) => Some((Index::Client, *t)),
            _ => None,
        }
    }
}

/// Why a subject or client revocation revokes.
pub(crate) fn tag_reason(index: Index) -> RevokeReason {
    match index {
        Index::Subject => RevokeReason::Subject,
        _ => RevokeReason::Client,
    }
}

/// What a rotation hands back to its caller once its batch has committed.
pub(crate) struct RotateDone {
    family: FamilyId,
    rec: FamilyRecord,
    successor: Token,
    grant: Grant,
    retried: bool,
}

impl RotateDone {
    /// The family, generation and token hash of the successor this
    /// rotation minted; `None` for a retry answered with one minted before.
    pub(crate) fn minted(&self) -> Option<(FamilyId, u32, [u8; TAG16])> {
        (!self.retried).then_some((self.family, self.rec.generation, self.rec.current_hash))
    }
}

impl PreparedRotate {
    /// The family, generation and token hash of the successor this
    /// rotation mints if it rotates.
    pub(crate) fn would_mint(&self) -> (FamilyId, u32, [u8; TAG16]) {
        (self.presented.family, self.successor.generation, self.successor_hash)
    }
}

/// A change to one family: its new record and the event to record.
pub(crate) struct Transition {
    pub(crate) record: FamilyRecord,
    pub(crate) event: Option<EventKind>,
}

/// What gc does with a family that came due.
pub(crate) enum GcAction {
    /// Remove it and its index entries; record `Expired` if it was live.
    Remove {
        /// The event to record (none for a revoked family past retention).
        event: Option<EventKind>,
    },
    /// Still live: move its gc time to its current deadline.
    Reschedule(FamilyRecord),
}

impl Protocol {
    pub(crate) fn new(keys: Keyring, policy: Policy) -> Self {
        Self {
            rules: RwLock::new(Arc::new(Rules {
                limits: Limits::of(&policy),
                policy,
            })),
            keys,
        }
    }

    /// When a live family stops working unless rotated, under the rules in force.
    pub(crate) fn deadline(&self, rec: &FamilyRecord) -> i64 {
        state::deadline(rec, &self.rules().limits)
    }

    /// The rules in force now.
    pub(crate) fn rules(&self) -> Arc<Rules> {
        Arc::clone(&self.rules.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `policy` in force for every later operation.
    pub(crate) fn set_policy(&self, policy: Policy) {
        let rules = Arc::new(Rules {
            limits: Limits::of(&policy),
            policy,
        });
        *self.rules.write().unwrap_or_else(PoisonError::into_inner) = rules;
    }

    /// Where a record appears in the indexes.
    pub(crate) fn index_keys(rec: &FamilyRecord) -> IndexKeys {
        IndexKeys {
            subject: rec.subject_tag,
            client: rec.client_tag,
            gc_at: rec.gc_at,
        }
    }

    /// Parses and authenticates a token without touching storage (checks 1-2).
    pub(crate) fn authenticate(&self, token: &str) -> Result<Token, RotateError> {
        let t = token::parse(token.as_bytes())?;
        if !self.keys.verify(&t) {
            return Err(RotateError::InvalidToken);
        }
        Ok(t)
    }

    /// True if the family can still be refreshed at `now`.
    pub(crate) fn is_live(&self, rec: &FamilyRecord, now: i64) -> bool {
        rec.state == FamilyState::Active && state::expiry(rec, &self.rules().limits, now).is_none()
    }

    /// Everything about an issue that needs no storage: validation, random
    /// ids, the token, the sealed grant.
    pub(crate) fn prepare_issue(&self, grant: &Grant, now: i64) -> Result<PreparedIssue, IssueError> {
        grant.validate()?;
        let family = FamilyId::random().map_err(StoreError::from)?;
        let token = self.keys.sign(family, 0, Secret::random().map_err(StoreError::from)?);
        let mut rec = FamilyRecord {
            state: FamilyState::Active,
            generation: 0,
            created_at: now,
            rotated_at: now,
            expires_at: now.saturating_add(duration_millis(self.rules().policy.absolute_lifetime)),
            gc_at: 0,
            subject_tag: self.keys.tag(TagKind::Subject, &grant.subject),
            client_tag: self.keys.tag(TagKind::Client, &grant.client_id),
            confirmation_tag: grant
                .confirmation
                .as_deref()
                .map(|c| self.keys.tag(TagKind::Confirmation, c)),
            current_hash: self.keys.token_hash(&token),
            sealed_successor: None,
            successor_undelivered: false,
            sealed_grant: Vec::new(),
        };
        rec.gc_at = state::deadline(&rec, &self.rules().limits);
        rec.sealed_grant = self.seal_grant(&family, &rec, grant)?;
        Ok(PreparedIssue {
            issued: Issued {
                refresh_token: token::format(&token),
                family,
                generation: 0,
                expires_at: from_millis(rec.gc_at),
                authorization_expires_at: from_millis(rec.expires_at),
            },
            rec,
        })
    }

    /// Everything about a rotation that needs no storage (checks 1-3), and
    /// the would-be successor, already signed and sealed under the
    /// presented token, so batch leaders only touch the database.
    pub(crate) fn prepare_rotate(&self, token: &str, request: &RotateRequest) -> Result<PreparedRotate, RotateError> {
        let presented = self.authenticate(token)?;
        check_text("client_id", &request.client_id, MAX_CLIENT_ID_LEN)?;
        if let Some(c) = &request.confirmation {
            check_text("confirmation", c, MAX_CONFIRMATION_LEN)?;
        }
        let family = presented.family;
        let next = presented.generation.saturating_add(1);
        let successor = self
            .keys
            .sign(family, next, Secret::random().map_err(StoreError::from)?);
        let sealed = self
            .keys
            .seal_successor(&presented, &successor, &successor_ad(&family, next))
            .map_err(StoreError::from)?;
        let sealed_successor = <[u8; SEALED_SUCCESSOR_LEN]>::try_from(sealed.as_slice())
            .map_err(|_| corrupt("families", "sealed successor has the wrong length"))?;
        Ok(PreparedRotate {
            client_tag: self.keys.tag(TagKind::Client, &request.client_id),
            confirmation_tag: request
                .confirmation
                .as_deref()
                .map(|c| self.keys.tag(TagKind::Confirmation, c)),
            scope: request.scope.clone(),
            successor_hash: self.keys.token_hash(&successor),
            successor,
            sealed_successor,
            presented,
        })
    }

    /// Checks a revocation's target without storage.
    pub(crate) fn prepare_revoke(&self, target: RevokeTarget<'_>) -> Result<PreparedRevoke, RevokeError> {
        Ok(match target {
            RevokeTarget::Token(t) => PreparedRevoke::Family(self.revoked_family(t)?, RevokeReason::Token, None),
            RevokeTarget::TokenOfClient { token, client_id } => {
                check_text("client_id", client_id, MAX_CLIENT_ID_LEN)?;
                let family = self.revoked_family(token)?;
                PreparedRevoke::Family(
                    family,
                    RevokeReason::Token,
                    Some(self.keys.tag(TagKind::Client, client_id)),
                )
            }
            RevokeTarget::Family(f) => PreparedRevoke::Family(f, RevokeReason::Family, None),
            RevokeTarget::Subject(s) => {
                check_text("subject", s, MAX_SUBJECT_LEN)?;
                PreparedRevoke::Subject(self.keys.tag(TagKind::Subject, s))
            }
            RevokeTarget::Client(c) => {
                check_text("client_id", c, MAX_CLIENT_ID_LEN)?;
                PreparedRevoke::Client(self.keys.tag(TagKind::Client, c))
            }
        })
    }

    /// The family a presented token names, once its authenticator verifies.
    fn revoked_family(&self, token: &str) -> Result<FamilyId, RevokeError> {
        let presented = self.authenticate(token).map_err(|e| match e {
            RotateError::Malformed(p) => RevokeError::Malformed(p),
            _ => RevokeError::InvalidToken,
        })?;
        Ok(presented.family)
    }

    /// A rotation against the family's record (checks 5-11): the answer,
    /// and the change to write (none for a refusal or a grace retry).
    pub(crate) fn rotate(
        &self,
        rec: &FamilyRecord,
        op: &PreparedRotate,
        now: i64,
    ) -> (Result<RotateDone, RotateError>, Option<Transition>) {
        match self.rotate_facts(rec, op, now) {
            Ok(step) => step,
            Err(e) => (Err(e), None),
        }
    }

    fn rotate_facts(
        &self,
        rec: &FamilyRecord,
        op: &PreparedRotate,
        now: i64,
    ) -> Result<(Result<RotateDone, RotateError>, Option<Transition>), RotateError> {
        let presented = &op.presented;
        let family = presented.family;
        let mut opened_successor = None;
        let secret = if presented.generation == rec.generation {
            if bool::from(self.keys.token_hash(presented).ct_eq(&rec.current_hash)) {
                SecretCheck::Current
            } else {
                SecretCheck::Mismatch
            }
        } else if rec.generation > 0 && presented.generation == rec.generation - 1 {
            let ad = successor_ad(&family, rec.generation);
            match rec
                .sealed_successor
                .as_ref()
                .map(|blob| self.keys.open_successor(presented, &ad, blob))
            {
                // The opened successor must be the stored current token.
                Some(Ok(successor)) if bool::from(self.keys.token_hash(&successor).ct_eq(&rec.current_hash)) => {
                    opened_successor = Some(successor);
                    SecretCheck::Predecessor
                }
                Some(_) => SecretCheck::Mismatch,
                None => SecretCheck::NotApplicable,
            }
        } else {
            SecretCheck::NotApplicable
        };
        // Opened before anything is written, so a grant that does not open
        // (tampered under a recomputed MAC, or sealed under a retired key)
        // refuses the rotation instead of committing it. `None` only for a
        // key retired after the family's life; then the family is refused
        // as expired.
        let grant = self.grant_if_openable(&family, rec)?;
        let confirmation_matches = match (&rec.confirmation_tag, &op.confirmation_tag) {
            (None, _) => true,
            (Some(bound), Some(c)) => bool::from(bound.ct_eq(c)),
            (Some(_), None) => false,
        };
        let attempt = Attempt {
            presented: presented.generation,
            secret,
            client_matches: bool::from(op.client_tag.ct_eq(&rec.client_tag)),
            confirmation_matches,
            scope_within_grant: match (&op.scope, &grant) {
                (Some(s), Some(g)) => s.is_subset(&g.scope),
                _ => true,
            },
            now,
        };
        Ok(match state::decide(rec, &attempt, &self.rules().limits) {
            Decision::Refuse(r) => (Err(refusal(r)), None),
            Decision::Grace => {
                let successor = opened_successor.ok_or_else(|| corrupt("families", "successor vanished"))?;
                let grant = grant.ok_or_else(|| retired_grant_key(&family))?;
                let done = RotateDone {
                    family,
                    rec: rec.clone(),
                    successor,
                    grant,
                    retried: true,
                };
                (Ok(done), None)
            }
            Decision::Rotate => {
                let grant = grant.ok_or_else(|| retired_grant_key(&family))?;
                let mut next = rec.clone();
                next.generation = op.successor.generation;
                next.current_hash = op.successor_hash;
                next.rotated_at = now;
                next.successor_undelivered = false;
                next.sealed_successor = Some(op.sealed_successor);
                if crate::keys::sealed_key_id(&next.sealed_grant) != Some(self.keys.active_id()) {
                    // Move the grant to the active key so old keys can retire.
                    next.sealed_grant = self.seal_grant(&family, &next, &grant)?;
                }
                let done = RotateDone {
                    family,
                    rec: next.clone(),
                    successor: op.successor.clone(),
                    grant,
                    retried: false,
                };
                (
                    Ok(done),
                    Some(Transition {
                        record: next,
                        event: None,
                    }),
                )
            }
            Decision::Revoke(reason) => {
                let (current, presented) = (rec.generation, presented.generation);
                let (kind, err) = if reason == RevokeReason::Diverged {
                    (
                        EventKind::Diverged { presented, current },
                        RotateError::Diverged { family },
                    )
                } else {
                    (
                        EventKind::ReuseDetected { presented, current },
                        RotateError::ReuseDetected { family },
                    )
                };
                (Err(err), Some(self.revoked(rec, reason, kind, now)))
            }
        })
    }

    /// `rec` with its current token marked never delivered, if that token
    /// is still the one a rotation to `generation` with hash `hash` minted
    /// (and the family is live and keeps it sealed); `None` otherwise.
    pub(crate) fn mark_undelivered(rec: &FamilyRecord, generation: u32, hash: &[u8; TAG16]) -> Option<FamilyRecord> {
        let same = rec.generation == generation && bool::from(rec.current_hash.ct_eq(hash));
        if !same || rec.state != FamilyState::Active || rec.sealed_successor.is_none() || rec.successor_undelivered {
            return None;
        }
        let mut next = rec.clone();
        next.successor_undelivered = true;
        Some(next)
    }

    /// A revocation of one family: `Ok(None)` if it is revoked already.
    /// With `owner`, the family's client tag must match (RFC 7009 §2.1),
    /// checked whatever the family's state, so the answer does not depend
    /// on a rotation racing the call.
    pub(crate) fn revoke(
        &self,
        rec: &FamilyRecord,
        reason: RevokeReason,
        owner: Option<&[u8; TAG16]>,
        now: i64,
    ) -> Result<Option<Transition>, RevokeError> {
        if owner.is_some_and(|tag| !bool::from(tag.ct_eq(&rec.client_tag))) {
            return Err(RevokeError::ClientMismatch);
        }
        if rec.state != FamilyState::Active {
            return Ok(None);
        }
        Ok(Some(self.revoked(rec, reason, EventKind::Revoked(reason), now)))
    }

    /// A family marked revoked: no successor kept, collected after the
    /// revoked retention.
    fn revoked(&self, rec: &FamilyRecord, reason: RevokeReason, event: EventKind, now: i64) -> Transition {
        let mut next = rec.clone();
        next.state = FamilyState::Revoked(reason);
        next.sealed_successor = None;
        next.successor_undelivered = false;
        next.gc_at = now.saturating_add(duration_millis(self.rules().policy.revoked_retention));
        Transition {
            record: next,
            event: Some(event),
        }
    }

    /// The per-user cap: of the live families `(issued at, id)` of one
    /// (subject, client), the ones to remove so that one more family keeps
    /// them within [`Policy::max_families_per_user`]: the oldest, by issue
    /// time then id.
    pub(crate) fn over_cap(&self, mut live: Vec<(i64, FamilyId)>) -> Vec<FamilyId> {
        let cap = self.rules().policy.max_families_per_user as usize;
        if cap == 0 {
            return Vec::new();
        }
        let excess = (live.len() + 1).saturating_sub(cap);
        live.sort_unstable_by_key(|(created, f)| (*created, *f.as_bytes()));
        live.into_iter().take(excess).map(|(_, f)| f).collect()
    }

    /// What gc does with a family whose gc time has come.
    pub(crate) fn gc(&self, rec: &FamilyRecord, now: i64) -> GcAction {
        let revoked = rec.state != FamilyState::Active;
        if revoked {
            GcAction::Remove { event: None }
        } else if state::expiry(rec, &self.rules().limits, now).is_some() {
            GcAction::Remove {
                event: Some(EventKind::Expired),
            }
        } else {
            let mut next = rec.clone();
            next.gc_at = state::deadline(rec, &self.rules().limits);
            GcAction::Reschedule(next)
        }
    }

    /// Introspection of a presented token against its family's record:
    /// active only for the current token of a live family.
    pub(crate) fn introspect(
        &self,
        presented: &Token,
        rec: &FamilyRecord,
        now: i64,
    ) -> Result<Introspection, StoreError> {
        let family = presented.family;
        let live = presented.generation == rec.generation
            && bool::from(self.keys.token_hash(presented).ct_eq(&rec.current_hash))
            && self.is_live(rec, now);
        if !live {
            return Ok(Introspection::default());
        }
        let grant = self.open_grant(&family, rec)?;
        Ok(Introspection {
            active: true,
            scope: Some(grant.scope),
            client_id: Some(grant.client_id),
            sub: Some(grant.subject),
            exp: Some(state::deadline(rec, &self.rules().limits).div_euclid(1000)),
            iat: Some(rec.rotated_at.div_euclid(1000)),
            token_type: Some("refresh_token"),
            cnf_jkt: grant.confirmation,
            family: Some(family),
            generation: Some(rec.generation),
        })
    }

    /// One family as a session; `None` for a family past its life whose
    /// grant was sealed with a retired key (gone but for gc). A live family
    /// whose grant is sealed under a key removed from the keyring is listed
    /// with [`Session::unreadable`] naming that key, and no client or scope.
    pub(crate) fn session(
        &self,
        family: FamilyId,
        rec: &FamilyRecord,
        now: i64,
    ) -> Result<Option<Session>, StoreError> {
        let live = self.is_live(rec, now);
        let (client_id, scope, unreadable) = match self.grant_or_missing_key(&family, rec)? {
            Ok(g) => (g.client_id, g.scope, None),
            Err(_) if !live => return Ok(None),
            Err(key) => (
                String::new(),
                crate::Scope::default(),
                Some(format!(
                    "its grant is sealed under key {key}, which is no longer in the key file; restore that key to read it"
                )),
            ),
        };
        let revoked = match rec.state {
            FamilyState::Revoked(r) => Some(r),
            FamilyState::Active => None,
        };
        Ok(Some(Session {
            family,
            client_id,
            scope,
            generation: rec.generation,
            created_at: from_millis(rec.created_at),
            rotated_at: from_millis(rec.rotated_at),
            expires_at: from_millis(state::deadline(rec, &self.rules().limits)),
            active: live,
            revoked,
            unreadable,
        }))
    }

    /// Builds the caller's answer after the commit, on the caller's thread.
    pub(crate) fn finish_rotate(&self, done: RotateDone, request: &RotateRequest) -> Rotated {
        let grant = done.grant;
        Rotated {
            refresh_token: token::format(&done.successor),
            family: done.family,
            generation: done.rec.generation,
            expires_at: from_millis(state::deadline(&done.rec, &self.rules().limits)),
            authorization_expires_at: from_millis(done.rec.expires_at),
            scope: request.scope.clone().unwrap_or_else(|| grant.scope.clone()),
            grant,
            retried: done.retried,
        }
    }
}

pub(crate) fn retired_grant_key(family: &FamilyId) -> StoreError {
    corrupt(
        "families",
        format!("grant of live family {family} is sealed with a retired key"),
    )
}

/// Associated data of a sealed successor: the family and the generation it is.
fn successor_ad(family: &FamilyId, generation: u32) -> [u8; 40] {
    let mut ad = [0u8; 40];
    ad[..20].copy_from_slice(b"rotoken successor v1");
    ad[20..36].copy_from_slice(family.as_bytes());
    ad[36..].copy_from_slice(&generation.to_be_bytes());
    ad
}

fn refusal(r: Refusal) -> RotateError {
    match r {
        Refusal::Revoked(reason) => RotateError::Revoked(reason),
        Refusal::Expired(kind) => RotateError::Expired { kind },
        Refusal::ClientMismatch => RotateError::ClientMismatch,
        Refusal::ConfirmationMismatch => RotateError::ConfirmationMismatch,
        Refusal::ScopeWidened => RotateError::ScopeWidened,
        Refusal::TooManyGenerations => RotateError::TooManyGenerations,
        Refusal::ClockBehind => RotateError::ClockBehind,
    }
}
