//! The policy kept in the database: changing it (with a history of who
//! changed what, and an event), picking up another server's change, and
//! the sweep that brings families' gc times forward when the idle
//! lifetime shrinks.
//!
//! The database's policy is recorded by its first opener ([`crate::Engine::open`]
//! and friends); every later opener runs by it, whatever policy it brings,
//! so `rotoken gc` with other flags than the server can no longer apply
//! other rules.

use time::OffsetDateTime;

use crate::clock::from_millis;
use crate::core::{Core, META_POLICY};
use crate::error::{StoreError, corrupt};
use crate::policy::Policy;
use crate::protocol::Protocol;
use crate::record::{EventKind, FamilyState};
use crate::store::{Commit, WriteTxn};
use crate::token::FamilyId;

/// The last changes of the policy (meta `policy_history`).
const META_HISTORY: &str = "policy_history";
/// Where the gc-time sweep has got to (meta `gc_sweep`): absent or
/// [`SWEEP_DONE`] when none is pending, empty to start from the first
/// family, else the last family swept.
const META_SWEEP: &str = "gc_sweep";
const SWEEP_DONE: &[u8] = &[0];
/// Changes the history keeps.
const HISTORY_LEN: usize = 64;
/// Longest name a change is recorded under.
pub const MAX_CHANGED_BY_LEN: usize = 64;

/// One change of the database's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PolicyChange {
    /// When it was made.
    pub at: OffsetDateTime,
    /// Who made it (the name given to [`crate::Engine::set_policy`]).
    pub by: String,
    /// The rules before.
    pub old: Policy,
    /// The rules after.
    pub new: Policy,
}

/// Errors from [`crate::Engine::set_policy`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The new policy does not make sense; nothing was changed.
    #[error("invalid policy: {0}")]
    Invalid(String),
    /// The name is empty, longer than 64 bytes, or holds control characters.
    #[error("the name a policy change is recorded under must be 1-64 printable bytes")]
    InvalidName,
    /// From the store; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PolicyError {
    /// The stable code of the error.
    pub fn code(&self) -> crate::Code {
        match self {
            Self::Invalid(_) => crate::Code::InvalidPolicy,
            Self::InvalidName => crate::Code::InvalidInput,
            Self::Store(e) => e.code(),
        }
    }
}

impl Core {
    /// See [`crate::Engine::set_policy`].
    pub(crate) fn set_policy(&self, new: Policy, by: &str) -> Result<Policy, PolicyError> {
        new.validate().map_err(PolicyError::Invalid)?;
        if by.is_empty() || by.len() > MAX_CHANGED_BY_LEN || by.chars().any(char::is_control) {
            return Err(PolicyError::InvalidName);
        }
        let ours = self.protocol.rules().policy.clone();
        let (old, events) = self.retrying_conflicts(|| {
            let mut txn = self.store.begin_write(Commit::Durable)?;
            let now = self.now();
            // Read under contract rule 7: changes from two servers serialise.
            let old = stored_policy(&mut *txn, &ours)?;
            let new = Policy {
                durability: ours.durability,
                relaxed_flush_every: ours.relaxed_flush_every,
                ..new.clone()
            };
            txn.set_meta(META_POLICY, &new.to_stored())?;
            let mut history = txn.meta(META_HISTORY)?.unwrap_or_default();
            append_history(&mut history, now, by, &old, &new);
            txn.set_meta(META_HISTORY, &history)?;
            if new.idle_lifetime < old.idle_lifetime {
                txn.set_meta(META_SWEEP, &[])?;
            }
            let events = Self::append_events(
                &mut *txn,
                vec![(FamilyId::from_bytes([0; 16]), EventKind::PolicyChanged)],
                now,
            )?;
            self.commit(txn, Commit::Durable)?;
            Ok((old, events))
        })?;
        self.protocol.set_policy(Policy {
            durability: ours.durability,
            relaxed_flush_every: ours.relaxed_flush_every,
            ..new
        });
        // Policy events concern no family: subscribers get them without a grant.
        self.emit_unattached(events);
        Ok(old)
    }

    /// See [`crate::Engine::policy_history`].
    pub(crate) fn policy_history(&self) -> Result<Vec<PolicyChange>, StoreError> {
        let bytes = self.store.begin_read()?.meta(META_HISTORY)?.unwrap_or_default();
        decode_history(&bytes, &self.protocol.rules().policy)
    }

    /// Puts the database's policy in force if another server changed it.
    pub(crate) fn reload_policy(&self) -> Result<(), StoreError> {
        let ours = self.protocol.rules().policy.clone();
        let Some(bytes) = self.store.begin_read()?.meta(META_POLICY)? else {
            return Ok(());
        };
        let stored = Policy::from_stored(&bytes, &ours).map_err(|e| corrupt("meta", e))?;
        if !stored.same_rules(&ours) {
            self.protocol.set_policy(stored);
        }
        Ok(())
    }

    /// One step of the gc-time sweep, if one is pending: brings the gc time
    /// of up to `limit` families forward to their deadline under the
    /// current rules (after the idle lifetime shrank). True if more is left.
    pub(crate) fn sweep_step(&self, limit: usize) -> Result<bool, StoreError> {
        let pending = self.store.begin_read()?.meta(META_SWEEP)?;
        match pending.as_deref() {
            None | Some(SWEEP_DONE) => return Ok(false),
            Some(_) => {}
        }
        self.retrying_conflicts(|| {
            let mut txn = self.store.begin_write(self.next_commit())?;
            let after = match txn.meta(META_SWEEP)?.as_deref() {
                None | Some(SWEEP_DONE) => return Ok(false),
                Some([]) => None,
                Some(b) => Some(FamilyId::from_bytes(
                    b.try_into().map_err(|_| corrupt("meta", "bad sweep cursor"))?,
                )),
            };
            let page = txn.scan_families(after.as_ref(), limit.max(1))?;
            let ids: Vec<FamilyId> = page.iter().map(|(f, _)| *f).collect();
            // Locked before they are rewritten (contract rule 2).
            let locked = txn.lock_families(&ids)?;
            for (family, bytes) in ids.iter().zip(locked) {
                let Some(bytes) = bytes else { continue };
                self.bring_gc_forward(&mut *txn, family, &bytes)?;
            }
            let more = ids.len() >= limit.max(1);
            match (more, ids.last()) {
                (true, Some(last)) => txn.set_meta(META_SWEEP, last.as_bytes())?,
                _ => txn.set_meta(META_SWEEP, SWEEP_DONE)?,
            }
            self.commit(txn, Commit::Durable)?;
            Ok(more)
        })
    }

    fn bring_gc_forward(&self, txn: &mut dyn WriteTxn, family: &FamilyId, bytes: &[u8]) -> Result<(), StoreError> {
        let rec = self.protocol.decode_record(family, bytes)?;
        if rec.state != FamilyState::Active {
            return Ok(());
        }
        let deadline = self.protocol.deadline(&rec);
        if deadline >= rec.gc_at {
            return Ok(());
        }
        let mut next = rec.clone();
        next.gc_at = deadline;
        let bytes = self.protocol.record_bytes(family, &next);
        txn.update_family(
            family,
            &bytes,
            &Protocol::index_keys(&rec),
            &Protocol::index_keys(&next),
        )
    }
}

fn stored_policy(txn: &mut dyn WriteTxn, ours: &Policy) -> Result<Policy, StoreError> {
    let bytes = txn
        .meta(META_POLICY)?
        .ok_or_else(|| corrupt("meta", "no stored policy"))?;
    Policy::from_stored(&bytes, ours).map_err(|e| corrupt("meta", e))
}

/// Appends a change (time, name, old rules, new rules), keeping the last
/// [`HISTORY_LEN`].
fn append_history(history: &mut Vec<u8>, at: i64, by: &str, old: &Policy, new: &Policy) {
    let mut entries = split_history(history).unwrap_or_default();
    let mut entry = Vec::new();
    entry.extend_from_slice(&at.to_be_bytes());
    // At most 64 bytes (checked by the caller).
    entry.push(u8::try_from(by.len()).unwrap_or(u8::MAX));
    entry.extend_from_slice(by.as_bytes());
    entry.extend_from_slice(&old.to_stored());
    entry.extend_from_slice(&new.to_stored());
    entries.push(entry);
    let skip = entries.len().saturating_sub(HISTORY_LEN);
    history.clear();
    for e in entries.into_iter().skip(skip) {
        history.extend_from_slice(&u16::try_from(e.len()).unwrap_or(u16::MAX).to_be_bytes());
        history.extend_from_slice(&e);
    }
}

fn split_history(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
        out.push(rest.get(2..2 + len)?.to_vec());
        rest = &rest[2 + len..];
    }
    Some(out)
}

fn decode_history(bytes: &[u8], ours: &Policy) -> Result<Vec<PolicyChange>, StoreError> {
    let bad = || corrupt("meta", "policy history does not decode");
    let stored_len = ours.to_stored().len();
    split_history(bytes)
        .ok_or_else(bad)?
        .into_iter()
        .map(|e| {
            let at = i64::from_be_bytes(e.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
            let n = usize::from(*e.get(8).ok_or_else(bad)?);
            let by = String::from_utf8(e.get(9..9 + n).ok_or_else(bad)?.to_vec()).map_err(|_| bad())?;
            let rest = e.get(9 + n..).ok_or_else(bad)?;
            if rest.len() != 2 * stored_len {
                return Err(bad());
            }
            let old = Policy::from_stored(&rest[..stored_len], ours).map_err(|e| corrupt("meta", e))?;
            let new = Policy::from_stored(&rest[stored_len..], ours).map_err(|e| corrupt("meta", e))?;
            Ok(PolicyChange {
                at: from_millis(at),
                by,
                old,
                new,
            })
        })
        .collect()
}
