//! The engine's own counters ([`rotoken::Stats`]: commits, batches, gc,
//! event delivery) in the metrics text, read from the engine at each scrape.

use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use rotoken::{Engine, Stats};

/// Reads [`Engine::stats`] when the metrics are rendered. Holds the engine
/// weakly: the metrics do not keep a closed engine alive.
#[derive(Debug)]
pub(crate) struct EngineCollector {
    engine: Weak<Engine>,
}

impl EngineCollector {
    pub(crate) fn new(engine: &Arc<Engine>) -> Self {
        Self {
            engine: Arc::downgrade(engine),
        }
    }
}

/// Counters: name (without `_total`), help, value.
fn counters(s: &Stats) -> [(&'static str, &'static str, u64); 19] {
    [
        (
            "rotoken_engine_batches",
            "Committed write batches (issue, rotate, revoke).",
            s.batches,
        ),
        (
            "rotoken_engine_operations",
            "Operations carried by committed batches.",
            s.operations,
        ),
        (
            "rotoken_engine_durable_commits",
            "Commits made durable, gc included.",
            s.durable_commits,
        ),
        (
            "rotoken_engine_conflicts_retried",
            "Transactions run again after a conflict with another writer of a shared store.",
            s.conflicts_retried,
        ),
        (
            "rotoken_engine_gc_removed",
            "Families removed by the background gc.",
            s.gc_removed,
        ),
        (
            "rotoken_engine_gc_failures",
            "Background gc steps that failed (retried at the next interval).",
            s.gc_failures,
        ),
        (
            "rotoken_engine_events_not_delivered",
            "Committed events not handed to subscribers (the delivery queue was full).",
            s.events_not_delivered,
        ),
        (
            "rotoken_engine_subscriber_panics",
            "Event subscriber calls that panicked (caught).",
            s.subscriber_panics,
        ),
        (
            "rotoken_engine_store_time_ahead",
            "Batches that read a rotation stamped more than a minute ahead of this server's clock.",
            s.store_time_ahead,
        ),
        (
            "rotoken_engine_deadline_passed",
            "Operations not applied: their deadline passed, their caller went away, or the process stalled.",
            s.deadline_passed,
        ),
        (
            "rotoken_engine_undelivered",
            "Rotations applied after their caller went away; their successors answer a late retry.",
            s.undelivered,
        ),
        (
            "rotoken_engine_outcomes_settled",
            "Commits that failed after they may have reached the store, read back and answered as what happened.",
            s.outcomes_settled,
        ),
        (
            "rotoken_engine_outcomes_unknown",
            "Commits that failed and could not be read back (answered outcome_unknown, settled later).",
            s.outcomes_unknown,
        ),
        (
            "rotoken_engine_busy",
            "Operations refused because another transaction held their family past the lock wait.",
            s.busy,
        ),
        (
            "rotoken_engine_reuse_detected",
            "Rotations that detected reuse and revoked their family (counted by the engine).",
            s.reuse_detected,
        ),
        (
            "rotoken_engine_diverged",
            "Rotations whose token disagreed with the store (family revoked).",
            s.diverged,
        ),
        (
            "rotoken_engine_refused",
            "Rotations refused without a change (revoked, expired, mismatched, widened, limit).",
            s.refused,
        ),
        (
            "rotoken_engine_revoked",
            "Families revoked by this engine, for any reason.",
            s.revoked,
        ),
        (
            "rotoken_engine_clock_floor_ignored",
            "Opens that found the store's clock floor more than a minute ahead and did not adopt it.",
            s.clock_floor_ignored,
        ),
    ]
}

/// Gauges: name, help, value.
fn gauges(s: &Stats) -> [(&'static str, &'static str, u64); 2] {
    [
        (
            "rotoken_engine_largest_batch",
            "The most operations one batch carried.",
            s.largest_batch,
        ),
        (
            "rotoken_engine_largest_lock",
            "The most families one write transaction locked.",
            s.largest_lock,
        ),
    ]
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(engine) = self.engine.upgrade() else {
            return Ok(());
        };
        let stats = engine.stats();
        for (name, help, value) in counters(&stats) {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        for (name, help, value) in gauges(&stats) {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}
