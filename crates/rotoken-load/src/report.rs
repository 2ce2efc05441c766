//! What a run found: the [`Report`], its JSON form and its human summary.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::Config;
use crate::procfs::Sample;
use crate::worker::Stats;

/// Error samples kept in a report.
const MAX_SAMPLES: usize = 20;

/// The server's resident memory over the run, in KiB.
#[derive(Clone, Debug, Serialize)]
pub struct Rss {
    /// At the start of the measured loop.
    pub first_kib: u64,
    /// The first sample at or after the warm-up.
    pub after_warmup_kib: u64,
    /// At the end.
    pub last_kib: u64,
    /// The largest sample.
    pub max_kib: u64,
    /// Every sample, one a second: `[seconds since start, KiB]`.
    pub samples: Vec<(f64, u64)>,
}

/// CPU time (user plus system) spent during the run, in seconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Cpu {
    /// This load generator (every thread).
    pub client_secs: Option<f64>,
    /// The server, when its process id was given.
    pub server_secs: Option<f64>,
}

/// The outcome of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Concurrent connections.
    pub connections: usize,
    /// Measured time, in seconds.
    pub duration_secs: f64,
    /// The seed of the per-connection choices.
    pub seed: u64,
    /// Configured probabilities per step.
    pub replay_share: f64,
    /// See [`Config::revoke_share`].
    pub revoke_share: f64,
    /// See [`Config::retry_share`].
    pub retry_share: f64,
    /// Every request of the measured loop (refreshes, replays, revocations,
    /// retries, checks, family creations).
    pub requests: u64,
    /// `requests` per second.
    pub requests_per_sec: f64,
    /// Successful rotations of a connection's current token.
    pub refreshes: u64,
    /// `refreshes` per second.
    pub refresh_per_sec: f64,
    /// Median latency of a refresh of the current token, in µs.
    pub p50_us: u64,
    /// 99th percentile, in µs.
    pub p99_us: u64,
    /// 99.9th percentile, in µs.
    pub p999_us: u64,
    /// Slowest, in µs.
    pub max_us: u64,
    /// Mean, in µs.
    pub mean_us: f64,
    /// Answers by HTTP status code.
    pub status: BTreeMap<String, u64>,
    /// Answers with a 5xx status.
    pub status_5xx: u64,
    /// Answers by OAuth `error` code (expected ones included: replays and
    /// revocations are answered `invalid_grant`).
    pub oauth_errors: BTreeMap<String, u64>,
    /// Requests that got no HTTP answer.
    pub transport_errors: u64,
    /// Replays detected as reuse (family revoked, current token refused).
    pub replays: u64,
    /// Revocations that took effect.
    pub revocations: u64,
    /// Grace retries answered with the current token.
    pub grace_retries: u64,
    /// Families created during the loop to replace revoked ones.
    pub families_issued: u64,
    /// Unexpected answers (5xx, refused live token, accepted replay,
    /// transport errors, ...).
    pub errors: u64,
    /// The first few reasons (no tokens).
    pub error_samples: Vec<String>,
    /// Connections whose current token was refused at the end.
    pub lost_rotations: u64,
    /// Connections whose current token still refreshed at the end.
    pub final_refreshes: u64,
    /// Growth of the server's `rotoken_rotations_total` over the run,
    /// final refreshes included (`refreshes` + `final_refreshes` when no
    /// one else uses the server).
    pub server_rotations: Option<u64>,
    /// The server's memory, with `server_pid`.
    pub rss: Option<Rss>,
    /// CPU time of both sides.
    pub cpu: Cpu,
}

impl Report {
    /// No 5xx, no unexpected answer, no lost rotation.
    pub fn is_clean(&self) -> bool {
        self.status_5xx == 0 && self.errors == 0 && self.lost_rotations == 0
    }
}

pub(crate) fn build(
    config: &Config,
    elapsed: Duration,
    s: Stats,
    samples: &[Sample],
    cpu: Cpu,
    server_rotations: Option<u64>,
) -> Report {
    let secs = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    let h = &s.latency;
    let q = |q: f64| if h.is_empty() { 0 } else { h.value_at_quantile(q) };
    let mut error_samples = s.samples;
    error_samples.truncate(MAX_SAMPLES);
    Report {
        connections: config.connections,
        duration_secs: secs,
        seed: config.seed,
        replay_share: config.replay_share,
        revoke_share: config.revoke_share,
        retry_share: config.retry_share,
        requests: s.requests,
        requests_per_sec: s.requests as f64 / secs,
        refreshes: s.refreshes,
        refresh_per_sec: s.refreshes as f64 / secs,
        p50_us: q(0.5),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: h.max(),
        mean_us: if h.is_empty() { 0.0 } else { h.mean() },
        status_5xx: s.status.range(500..600).map(|(_, n)| n).sum(),
        status: s.status.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        oauth_errors: s.oauth_errors,
        transport_errors: s.transport_errors,
        replays: s.replays,
        revocations: s.revocations,
        grace_retries: s.grace_retries,
        families_issued: s.families_issued,
        errors: s.errors,
        error_samples,
        lost_rotations: s.lost_rotations,
        final_refreshes: s.final_ok,
        server_rotations,
        rss: rss(samples, config.warmup.as_secs_f64()),
        cpu,
    }
}

fn rss(samples: &[Sample], warmup: f64) -> Option<Rss> {
    let first = samples.first()?.1;
    let last = samples.last()?.1;
    let after_warmup = samples.iter().find(|(t, _)| *t >= warmup).map_or(last, |s| s.1);
    Some(Rss {
        first_kib: first,
        after_warmup_kib: after_warmup,
        last_kib: last,
        max_kib: samples.iter().map(|s| s.1).max().unwrap_or(last),
        samples: samples.iter().map(|(t, k)| ((t * 10.0).round() / 10.0, *k)).collect(),
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} connections, {:.1} s (replay {}, revoke {}, retry {}, seed {})",
            self.connections, self.duration_secs, self.replay_share, self.revoke_share, self.retry_share, self.seed
        )?;
        writeln!(
            f,
            "requests      {} ({:.0}/s); refreshes {} ({:.0}/s)",
            self.requests, self.requests_per_sec, self.refreshes, self.refresh_per_sec
        )?;
        writeln!(
            f,
            "refresh latency  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  mean {:.2} ms",
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us),
            self.mean_us / 1000.0
        )?;
        let status: Vec<String> = self.status.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        writeln!(f, "status        {}", status.join(", "))?;
        if !self.oauth_errors.is_empty() {
            let codes: Vec<String> = self.oauth_errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            writeln!(f, "oauth errors  {}", codes.join(", "))?;
        }
        writeln!(
            f,
            "expected      {} replays detected, {} revocations, {} grace retries, {} new families",
            self.replays, self.revocations, self.grace_retries, self.families_issued
        )?;
        writeln!(
            f,
            "unexpected    {} errors ({} 5xx, {} transport), {} lost rotations ({} connections refreshed at the end)",
            self.errors, self.status_5xx, self.transport_errors, self.lost_rotations, self.final_refreshes
        )?;
        for s in &self.error_samples {
            writeln!(f, "  - {s}")?;
        }
        if let Some(n) = self.server_rotations {
            writeln!(f, "server        rotoken_rotations_total +{n}")?;
        }
        if let Some(r) = &self.rss {
            writeln!(
                f,
                "server RSS    first {:.1} MiB, after warm-up {:.1} MiB, last {:.1} MiB, max {:.1} MiB ({} samples)",
                mib(r.first_kib),
                mib(r.after_warmup_kib),
                mib(r.last_kib),
                mib(r.max_kib),
                r.samples.len()
            )?;
        }
        let secs = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.1} s"));
        writeln!(
            f,
            "CPU           load generator {}, server {} (over {:.1} s of wall time)",
            secs(self.cpu.client_secs),
            secs(self.cpu.server_secs),
            self.duration_secs
        )?;
        write!(
            f,
            "verdict       {}",
            if self.is_clean() { "clean" } else { "NOT CLEAN" }
        )
    }
}
