//! The rotation state machine, as plain functions over records.
//!
//! Nothing here touches storage or keys: the engine computes the facts
//! (does the client match, does the secret match) and [`decide`] returns
//! what to do. Another storage engine could sit under these rules.
//!
//! Checks run in this order: state, client, confirmation key, expiry,
//! generation (with the secret), scope, generation limit. A client or
//! confirmation mismatch is refused and never revokes: a stranger must not
//! be able to log users out.

use crate::record::{FamilyRecord, FamilyState, RevokeReason};

/// Which expiry was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpiryKind {
    /// The family's absolute lifetime has passed.
    Absolute,
    /// The family was not used for its idle lifetime.
    Idle,
}

/// How the presented secret compares with what the record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretCheck {
    /// The token is the family's current one (its hash matches).
    Current,
    /// The token is the immediate predecessor and opened the sealed successor.
    Predecessor,
    /// The token's generation matched the current or previous one but its
    /// secret did not: a token from a fork (lost commit or restored backup).
    Mismatch,
    /// Not compared: the generation is neither current nor previous.
    NotApplicable,
}

/// The facts the engine established about one rotation attempt.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// Generation carried by the presented token.
    pub presented: u32,
    /// Result of comparing the presented secret.
    pub secret: SecretCheck,
    /// The requesting client is the family's client.
    pub client_matches: bool,
    /// The presented confirmation key matches the family's binding (true if unbound).
    pub confirmation_matches: bool,
    /// The requested scope is within the grant (true if none requested).
    pub scope_within_grant: bool,
    /// The current time, unix ms.
    pub now: i64,
}

/// The limits [`decide`] applies, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Grace window, counted from the rotation that minted the current token.
    pub grace_ms: i64,
    /// Idle lifetime, counted from the last rotation.
    pub idle_ms: i64,
    /// Highest number of generations.
    pub max_generations: u32,
}

impl Limits {
    /// The limits of a policy.
    pub fn of(policy: &crate::Policy) -> Self {
        use crate::clock::duration_millis;
        Self {
            grace_ms: duration_millis(policy.grace),
            idle_ms: duration_millis(policy.idle_lifetime),
            max_generations: policy.max_generations,
        }
    }
}

/// What to do with a rotation attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Mint the next generation.
    Rotate,
    /// Return the successor already minted (a retry within the grace window).
    Grace,
    /// Refuse; change nothing.
    Refuse(Refusal),
    /// Revoke the family, record an event, and refuse.
    Revoke(RevokeReason),
}

/// Why an attempt is refused without a state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The family is already revoked.
    Revoked(RevokeReason),
    /// The family has expired.
    Expired(ExpiryKind),
    /// Another client presented the token.
    ClientMismatch,
    /// The confirmation key does not match the family's binding.
    ConfirmationMismatch,
    /// The requested scope is wider than the grant.
    ScopeWidened,
    /// The family reached its generation limit.
    TooManyGenerations,
    /// The immediate predecessor was presented, but the engine's time is
    /// before the rotation that retired it (by more than the bound a time
    /// read from the store is taken within): whether the grace window is
    /// open cannot be told on this clock. Neither the successor nor a
    /// revocation: retryable (P9, P11).
    ClockBehind,
}

/// The instant a family stops being usable: the earlier of its absolute
/// expiry and its idle deadline.
pub fn deadline(rec: &FamilyRecord, limits: &Limits) -> i64 {
    rec.expires_at.min(rec.rotated_at.saturating_add(limits.idle_ms))
}

/// Why a live-looking family is expired at `now`, if it is.
pub fn expiry(rec: &FamilyRecord, limits: &Limits, now: i64) -> Option<ExpiryKind> {
    if now >= rec.expires_at {
        Some(ExpiryKind::Absolute)
    } else if now >= rec.rotated_at.saturating_add(limits.idle_ms) {
        Some(ExpiryKind::Idle)
    } else {
        None
    }
}

/// Decides a rotation attempt against a family record.
pub fn decide(rec: &FamilyRecord, a: &Attempt, limits: &Limits) -> Decision {
    if let FamilyState::Revoked(r) = rec.state {
        return Decision::Refuse(Refusal::Revoked(r));
    }
    if !a.client_matches {
        return Decision::Refuse(Refusal::ClientMismatch);
    }
    if !a.confirmation_matches {
        return Decision::Refuse(Refusal::ConfirmationMismatch);
    }
    if let Some(kind) = expiry(rec, limits, a.now) {
        return Decision::Refuse(Refusal::Expired(kind));
    }
    let current = rec.generation;
    let predecessor = current > 0 && a.presented == current - 1 && rec.sealed_successor.is_some();
    // A successor never delivered is the predecessor's answer until it is
    // first used, however late the retry; otherwise only within the window.
    let graceable = predecessor
        && (rec.successor_undelivered
            || (a.now >= rec.rotated_at && a.now < rec.rotated_at.saturating_add(limits.grace_ms)));
    let proceed = match a.secret {
        SecretCheck::Mismatch => return Decision::Revoke(RevokeReason::Diverged),
        _ if a.presented > current => return Decision::Revoke(RevokeReason::Diverged),
        SecretCheck::Current if a.presented == current => Decision::Rotate,
        SecretCheck::Predecessor if graceable => Decision::Grace,
        SecretCheck::Predecessor if predecessor && a.now < rec.rotated_at => {
            return Decision::Refuse(Refusal::ClockBehind);
        }
        _ => return Decision::Revoke(RevokeReason::ReuseDetected),
    };
    if !a.scope_within_grant {
        return Decision::Refuse(Refusal::ScopeWidened);
    }
    if proceed == Decision::Rotate && current.saturating_add(1) >= limits.max_generations {
        return Decision::Refuse(Refusal::TooManyGenerations);
    }
    proceed
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        grace_ms: 30_000,
        idle_ms: 1_000_000,
        max_generations: 10,
    };

    fn rec(generation: u32) -> FamilyRecord {
        FamilyRecord {
            state: FamilyState::Active,
            generation,
            created_at: 0,
            rotated_at: 100_000,
            expires_at: 10_000_000,
            gc_at: 1_100_000,
            subject_tag: [0; 16],
            client_tag: [0; 16],
            confirmation_tag: None,
            current_hash: [0; 16],
            sealed_successor: (generation > 0).then_some([0; crate::record::SEALED_SUCCESSOR_LEN]),
            successor_undelivered: false,
            sealed_grant: vec![],
        }
    }

    fn attempt(presented: u32, secret: SecretCheck, now: i64) -> Attempt {
        Attempt {
            presented,
            secret,
            client_matches: true,
            confirmation_matches: true,
            scope_within_grant: true,
            now,
        }
    }

    use SecretCheck::*;

    /// The state table of docs/design.md, row by row.
    #[test]
    fn state_table() {
        let t = 100_000;
        let rows: &[(u32, Attempt, Decision)] = &[
            (3, attempt(3, Current, t + 1), Decision::Rotate),
            (3, attempt(3, Mismatch, t + 1), Decision::Revoke(RevokeReason::Diverged)),
            (3, attempt(2, Predecessor, t + 29_999), Decision::Grace),
            (3, attempt(2, Predecessor, t), Decision::Grace),
            // Before the rotation (a clock behind it by more than the bound
            // the engine takes the store's time within): cannot be judged.
            (
                3,
                attempt(2, Predecessor, t - 1),
                Decision::Refuse(Refusal::ClockBehind),
            ),
            // ...but a token older than the predecessor is reuse whatever the time.
            (
                3,
                attempt(1, NotApplicable, t - 1),
                Decision::Revoke(RevokeReason::ReuseDetected),
            ),
            (
                3,
                attempt(2, Predecessor, t + 30_000),
                Decision::Revoke(RevokeReason::ReuseDetected),
            ),
            (3, attempt(2, Mismatch, t + 1), Decision::Revoke(RevokeReason::Diverged)),
            (
                3,
                attempt(1, NotApplicable, t + 1),
                Decision::Revoke(RevokeReason::ReuseDetected),
            ),
            (
                3,
                attempt(0, NotApplicable, t + 1),
                Decision::Revoke(RevokeReason::ReuseDetected),
            ),
            (
                3,
                attempt(4, NotApplicable, t + 1),
                Decision::Revoke(RevokeReason::Diverged),
            ),
            (0, attempt(0, Current, t + 1), Decision::Rotate),
            (
                9,
                attempt(9, Current, t + 1),
                Decision::Refuse(Refusal::TooManyGenerations),
            ),
            (8, attempt(8, Current, t + 1), Decision::Rotate),
            (
                3,
                attempt(3, Current, 10_000_000),
                Decision::Refuse(Refusal::Expired(ExpiryKind::Absolute)),
            ),
            (
                3,
                attempt(3, Current, t + 1_000_000),
                Decision::Refuse(Refusal::Expired(ExpiryKind::Idle)),
            ),
        ];
        for (i, (generation, a, want)) in rows.iter().enumerate() {
            assert_eq!(decide(&rec(*generation), a, &LIMITS), *want, "row {i}");
        }
    }

    #[test]
    fn mismatches_refuse_and_never_revoke() {
        let mut a = attempt(1, NotApplicable, 100_001); // an old token: would revoke
        a.client_matches = false;
        assert_eq!(decide(&rec(3), &a, &LIMITS), Decision::Refuse(Refusal::ClientMismatch));
        a.client_matches = true;
        a.confirmation_matches = false;
        assert_eq!(
            decide(&rec(3), &a, &LIMITS),
            Decision::Refuse(Refusal::ConfirmationMismatch)
        );
    }

    #[test]
    fn revoked_families_stay_revoked() {
        let mut r = rec(3);
        r.state = FamilyState::Revoked(RevokeReason::Subject);
        for a in [attempt(3, Current, 100_001), attempt(2, Predecessor, 100_001)] {
            assert_eq!(
                decide(&r, &a, &LIMITS),
                Decision::Refuse(Refusal::Revoked(RevokeReason::Subject))
            );
        }
    }

    #[test]
    fn scope_widening_is_refused_on_rotate_and_grace() {
        for a in [attempt(3, Current, 100_001), attempt(2, Predecessor, 100_001)] {
            let a = Attempt {
                scope_within_grant: false,
                ..a
            };
            assert_eq!(decide(&rec(3), &a, &LIMITS), Decision::Refuse(Refusal::ScopeWidened));
        }
        // ...but reuse is still detected whatever the scope.
        let a = Attempt {
            scope_within_grant: false,
            ..attempt(1, NotApplicable, 100_001)
        };
        assert_eq!(
            decide(&rec(3), &a, &LIMITS),
            Decision::Revoke(RevokeReason::ReuseDetected)
        );
    }

    #[test]
    fn deadline_is_the_earlier_expiry() {
        let r = rec(1);
        assert_eq!(deadline(&r, &LIMITS), 1_100_000);
        let long_idle = Limits {
            idle_ms: i64::MAX,
            ..LIMITS
        };
        assert_eq!(deadline(&r, &long_idle), 10_000_000);
    }

    #[test]
    fn an_undelivered_successor_answers_its_predecessor_until_it_is_used() {
        let late = 100_000 + 500_000; // far past the 30 s window, before idle expiry
        let mut r = rec(3);
        assert_eq!(
            decide(&r, &attempt(2, Predecessor, late), &LIMITS),
            Decision::Revoke(RevokeReason::ReuseDetected)
        );
        r.successor_undelivered = true;
        assert_eq!(decide(&r, &attempt(2, Predecessor, late), &LIMITS), Decision::Grace);
        // Only the immediate predecessor with its whole secret.
        assert_eq!(
            decide(&r, &attempt(1, NotApplicable, late), &LIMITS),
            Decision::Revoke(RevokeReason::ReuseDetected)
        );
        assert_eq!(
            decide(&r, &attempt(2, Mismatch, late), &LIMITS),
            Decision::Revoke(RevokeReason::Diverged)
        );
        // Expiry still ends the family.
        assert_eq!(
            decide(&r, &attempt(2, Predecessor, 1_100_000), &LIMITS),
            Decision::Refuse(Refusal::Expired(ExpiryKind::Idle))
        );
    }
}
