//! Lifetimes, grace window, limits and durability.

use std::time::Duration;

/// How commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Every acknowledged change is on disk before the call returns (default).
    #[default]
    Immediate,
    /// Commits are not flushed: a crash may lose recent rotations and bring
    /// their predecessors back. An explicit, documented trade of safety for
    /// speed; a durable commit still runs every
    /// [`Policy::relaxed_flush_every`] commits so the file does not grow
    /// without bound.
    Relaxed,
}

/// The rules every family lives by. All fields have documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    /// How long after a rotation its predecessor, presented again by the same
    /// client, returns the same successor. Default 30 s.
    pub grace: Duration,
    /// A family expires when unused this long. Default 30 days.
    pub idle_lifetime: Duration,
    /// A family expires this long after issue, whatever its use. Default 90 days.
    pub absolute_lifetime: Duration,
    /// The largest number of generations a family may reach. Default 1,000,000.
    pub max_generations: u32,
    /// How long a revoked family is kept (answering `revoked`) before gc removes it. Default 1 day.
    pub revoked_retention: Duration,
    /// How long events are kept before gc removes them. Default 30 days.
    pub event_retention: Duration,
    /// Commit durability. Default [`Durability::Immediate`].
    pub durability: Durability,
    /// In relaxed mode, every this many commits one is made durable. Default 1,000.
    pub relaxed_flush_every: u32,
    /// The most live families one (subject, client) pair may hold: issuing
    /// one more removes the oldest (its tokens become unknown; a `revoked`
    /// event with reason `cap` is recorded). Default 200 (Auth0 keeps 200
    /// per user per application); 0 means no cap.
    pub max_families_per_user: u32,
}

const DAY: Duration = Duration::from_secs(86_400);

impl Default for Policy {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(30),
            idle_lifetime: DAY * 30,
            absolute_lifetime: DAY * 90,
            max_generations: 1_000_000,
            revoked_retention: DAY,
            event_retention: DAY * 30,
            durability: Durability::Immediate,
            relaxed_flush_every: 1_000,
            max_families_per_user: 200,
        }
    }
}

/// Setters in the builder style every rotoken crate uses:
/// `Policy::default().with_grace(Duration::from_secs(10))`. The result is
/// checked when an engine opens ([`Policy::validate`]).
impl Policy {
    /// How long a retried predecessor returns the same successor.
    #[must_use]
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How long an unused family lives.
    #[must_use]
    pub fn with_idle_lifetime(mut self, idle: Duration) -> Self {
        self.idle_lifetime = idle;
        self
    }

    /// How long a family lives whatever its use.
    #[must_use]
    pub fn with_absolute_lifetime(mut self, absolute: Duration) -> Self {
        self.absolute_lifetime = absolute;
        self
    }

    /// The largest generation a family may reach.
    #[must_use]
    pub fn with_max_generations(mut self, max: u32) -> Self {
        self.max_generations = max;
        self
    }

    /// How long a revoked family keeps answering `revoked`.
    #[must_use]
    pub fn with_revoked_retention(mut self, retention: Duration) -> Self {
        self.revoked_retention = retention;
        self
    }

    /// How long events are kept.
    #[must_use]
    pub fn with_event_retention(mut self, retention: Duration) -> Self {
        self.event_retention = retention;
        self
    }

    /// Commit durability.
    #[must_use]
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// In relaxed mode, every this many commits one is made durable.
    #[must_use]
    pub fn with_relaxed_flush_every(mut self, commits: u32) -> Self {
        self.relaxed_flush_every = commits;
        self
    }

    /// The most live families per (subject, client); 0 for no cap.
    #[must_use]
    pub fn with_max_families_per_user(mut self, max: u32) -> Self {
        self.max_families_per_user = max;
        self
    }
}

/// Version of the stored policy layout.
const STORED_VERSION: u8 = 1;
/// Length of the stored policy.
const STORED_LEN: usize = 1 + 5 * 8 + 2 * 4;

/// The policy as the database keeps it (meta `policy`): the rules every
/// opener uses. Durability is not stored: it is each process's own
/// trade of safety for speed.
impl Policy {
    pub(crate) fn to_stored(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STORED_LEN);
        out.push(STORED_VERSION);
        for d in [
            self.grace,
            self.idle_lifetime,
            self.absolute_lifetime,
            self.revoked_retention,
            self.event_retention,
        ] {
            out.extend_from_slice(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX).to_be_bytes());
        }
        out.extend_from_slice(&self.max_generations.to_be_bytes());
        out.extend_from_slice(&self.max_families_per_user.to_be_bytes());
        out
    }

    /// The stored rules, with this process's durability settings.
    pub(crate) fn from_stored(bytes: &[u8], durability: &Policy) -> Result<Self, String> {
        if bytes.len() != STORED_LEN || bytes[0] != STORED_VERSION {
            return Err(format!("stored policy has an unknown layout ({} bytes)", bytes.len()));
        }
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[1 + 8 * i..9 + 8 * i]);
            Duration::from_millis(u64::from_be_bytes(b))
        };
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[at..at + 4]);
            u32::from_be_bytes(b)
        };
        let p = Self {
            grace: u64_at(0),
            idle_lifetime: u64_at(1),
            absolute_lifetime: u64_at(2),
            revoked_retention: u64_at(3),
            event_retention: u64_at(4),
            max_generations: u32_at(41),
            max_families_per_user: u32_at(45),
            durability: durability.durability,
            relaxed_flush_every: durability.relaxed_flush_every,
        };
        p.validate()?;
        Ok(p)
    }

    /// The same rules (everything but durability).
    pub(crate) fn same_rules(&self, other: &Policy) -> bool {
        self.to_stored() == other.to_stored()
    }
}

impl Policy {
    /// Checks that the policy makes sense: positive lifetimes, at least one
    /// generation, and a grace window shorter than the idle lifetime.
    ///
    /// # Errors
    ///
    /// A description of the first problem found.
    pub fn validate(&self) -> Result<(), String> {
        if self.absolute_lifetime.is_zero() || self.idle_lifetime.is_zero() {
            return Err("lifetimes must be longer than zero".into());
        }
        if self.max_generations == 0 {
            return Err("max_generations must be at least 1".into());
        }
        if self.grace >= self.idle_lifetime {
            return Err("the grace window must be shorter than the idle lifetime".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_policy_round_trips_and_keeps_the_openers_durability() {
        let p = Policy::default()
            .with_grace(Duration::from_secs(7))
            .with_max_families_per_user(3)
            .with_event_retention(Duration::from_secs(99));
        let relaxed = Policy::default().with_durability(Durability::Relaxed);
        let back = Policy::from_stored(&p.to_stored(), &relaxed).unwrap();
        assert!(back.same_rules(&p));
        assert_eq!(back.durability, Durability::Relaxed);
        assert!(Policy::from_stored(&p.to_stored()[1..], &p).is_err());
    }

    #[test]
    fn default_is_valid_and_nonsense_is_not() {
        assert!(Policy::default().validate().is_ok());
        let d = Policy::default();
        for bad in [
            Policy {
                max_generations: 0,
                ..d.clone()
            },
            Policy {
                grace: d.idle_lifetime,
                ..d.clone()
            },
            Policy {
                absolute_lifetime: Duration::ZERO,
                ..d.clone()
            },
            Policy {
                idle_lifetime: Duration::ZERO,
                ..d.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
