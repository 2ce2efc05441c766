//! Garbage collection in bounded steps: families past their life (or
//! revoked past retention) and events past retention.

use crate::clock::duration_millis;
use crate::engine::Engine;
use crate::error::{StoreError, corrupt};
use crate::protocol::{GcAction, Protocol};
use crate::record::Event;
use crate::store::IndexKeys;
use crate::types::GcReport;

impl Engine {
    /// One bounded garbage-collection step: removes up to `limit` expired
    /// or revoked-past-retention families (with their index entries) and up
    /// to `limit` events past retention. Call again while `more` is true.
    /// Several servers sharing a store may collect at once: each takes
    /// families the others do not hold.
    ///
    /// # Errors
    ///
    /// A storage error, or [`StoreError::Corrupt`] for a damaged record that
    /// came due; nothing is removed then.
    pub fn gc(&self, limit: usize) -> Result<GcReport, StoreError> {
        let (report, events) = self.retrying_conflicts(|| self.gc_once(limit))?;
        self.emit(&events);
        Ok(report)
    }

    fn gc_once(&self, limit: usize) -> Result<(GcReport, Vec<Event>), StoreError> {
        let now = self.now();
        let mut report = GcReport::default();
        let mode = self.next_commit();
        let mut txn = self.store.begin_write(mode)?;
        let mut due = txn.lock_due(now, limit.saturating_add(1))?;
        report.more = due.len() > limit;
        due.truncate(limit);
        let mut expired = Vec::new();
        for d in due {
            let rec = self.protocol.decode_record(&d.family, &d.record)?;
            // The entry came due under the time it is indexed at.
            let old = IndexKeys {
                gc_at: d.gc_at,
                ..Protocol::index_keys(&rec)
            };
            match self.protocol.gc(&rec, now) {
                GcAction::Remove { event } => {
                    txn.remove_family(&d.family, &old)?;
                    if let Some(kind) = event {
                        expired.push((d.family, kind));
                    }
                    report.removed += 1;
                }
                GcAction::Reschedule(next) => {
                    let bytes = self.protocol.record_bytes(&d.family, &next);
                    txn.update_family(&d.family, &bytes, &old, &Protocol::index_keys(&next))?;
                    report.rescheduled += 1;
                }
            }
        }
        let cutoff = now.saturating_sub(duration_millis(self.protocol.policy.event_retention));
        let mut old_events = Vec::new();
        for (seq, value) in txn.events(0, limit.saturating_add(1))? {
            let e = Event::decode(seq, &value).map_err(|e| corrupt("events", e))?;
            if e.at_millis >= cutoff {
                break;
            }
            old_events.push(seq);
        }
        if old_events.len() > limit {
            report.more = true;
            old_events.truncate(limit);
        }
        txn.remove_events(&old_events)?;
        report.events_removed = old_events.len();
        let events = Self::append_events(&mut *txn, expired, now)?;
        self.commit(txn, mode)?;
        Ok((report, events))
    }
}
