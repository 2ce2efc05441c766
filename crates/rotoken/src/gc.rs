//! Garbage collection in bounded steps: families past their life (or
//! revoked past retention) and events past retention.

use crate::clock::duration_millis;
use crate::core::Core;
use crate::error::{StoreError, corrupt};
use crate::notify::Committed;
use crate::protocol::{GcAction, Protocol};
use crate::record::Event;
use crate::store::IndexKeys;
use crate::types::GcReport;

impl Core {
    /// See [`crate::Engine::gc`].
    pub(crate) fn gc(&self, limit: usize) -> Result<GcReport, StoreError> {
        let sweeping = self.sweep_step(limit)?;
        let (mut report, events) = self.retrying_conflicts(|| self.gc_once(limit))?;
        self.emit(events);
        report.more |= sweeping;
        Ok(report)
    }

    /// One step of the background gc: true if more is due. A failure is
    /// counted in the stats and retried at the next interval.
    pub(crate) fn background_gc(&self, limit: usize) -> bool {
        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // Another server may have changed the database's policy.
            self.reload_policy()?;
            self.gc(limit)
        }));
        match step {
            Ok(Ok(report)) => {
                self.count_gc(&report);
                report.more
            }
            _ => {
                self.count_gc_failure();
                false
            }
        }
    }

    fn gc_once(&self, limit: usize) -> Result<(GcReport, Committed), StoreError> {
        let now = self.now();
        let mut report = GcReport::default();
        let mode = self.next_commit();
        let mut txn = self.store.begin_write(mode)?;
        let mut due = txn.lock_due(now, limit.saturating_add(1))?;
        report.more = due.len() > limit;
        due.truncate(limit);
        let mut expired = Vec::new();
        let mut records = Vec::new();
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
                        records.push(rec);
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
        let cutoff = now.saturating_sub(duration_millis(self.protocol.rules().policy.event_retention));
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
        let committed = if self.events_wanted() {
            events.into_iter().zip(records.into_iter().map(Some)).collect()
        } else {
            Vec::new()
        };
        Ok((report, committed))
    }
}
