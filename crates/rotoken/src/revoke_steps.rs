//! Revoking a subject or a client with very many families in bounded
//! steps: no transaction locks more than [`REVOKE_STEP`] families (plus
//! those issued while the revocation runs), and when the call returns,
//! every family of the subject or client that existed when its last step
//! listed them is revoked, so none of them can rotate.
//!
//! A small revocation (fewer families than one step) stays what it was:
//! one transaction that lists and revokes, so a family issued concurrently
//! is either revoked or issued after the revocation.

use std::collections::HashSet;
use std::sync::Arc;

use crate::core::{Core, Done, Op};
use crate::error::RevokeError;
use crate::protocol::{PreparedRevoke, tag_reason};
use crate::store::Index;
use crate::token::FamilyId;

/// The most families one step of a large revocation locks.
pub(crate) const REVOKE_STEP: usize = 1000;

/// How a revocation's steps reach the write path (a sync caller's batch, or
/// an async caller's commit thread).
pub(crate) trait Submit {
    fn submit(&self, op: Op) -> Done;
}

impl Core {
    /// Revokes by `op`, in steps if it names a subject or client with more
    /// families than one step.
    pub(crate) fn revoke_prepared(&self, op: PreparedRevoke, submit: &impl Submit) -> Result<usize, RevokeError> {
        let Some((index, tag)) = op.tag() else {
            return Done::into_revoke(submit.submit(Op::Revoke(op)));
        };
        let first = self
            .store
            .begin_read()?
            .families_by_page(index, &tag, None, REVOKE_STEP)?;
        if first.len() < REVOKE_STEP {
            return Done::into_revoke(submit.submit(Op::Revoke(op)));
        }
        self.revoke_in_steps(index, tag, first, submit)
    }

    fn revoke_in_steps(
        &self,
        index: Index,
        tag: [u8; 16],
        first: Vec<FamilyId>,
        submit: &impl Submit,
    ) -> Result<usize, RevokeError> {
        let reason = tag_reason(index);
        let mut taken: HashSet<FamilyId> = HashSet::new();
        let mut revoked = 0;
        let mut page = first;
        loop {
            let after = page.last().copied();
            let full = page.len() >= REVOKE_STEP;
            taken.extend(page.iter().copied());
            revoked += Done::into_revoke(submit.submit(Op::Revoke(PreparedRevoke::Listed(page, reason))))?;
            if !full {
                break;
            }
            page = self
                .store
                .begin_read()?
                .families_by_page(index, &tag, after.as_ref(), REVOKE_STEP)?;
        }
        // Families issued while the steps ran (ids anywhere in the order):
        // listed and revoked in one last transaction.
        let rest = PreparedRevoke::Rest(index, tag, Arc::new(taken));
        revoked += Done::into_revoke(submit.submit(Op::Revoke(rest)))?;
        Ok(revoked)
    }
}
