//! Counters and a latency histogram, rendered in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::ErrorCode;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The endpoints counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Token,
    Revoke,
    Introspect,
}

impl Endpoint {
    const ALL: [Endpoint; 3] = [Endpoint::Token, Endpoint::Revoke, Endpoint::Introspect];

    fn name(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Revoke => "revoke",
            Self::Introspect => "introspect",
        }
    }
}

const OUTCOMES: [&str; 11] = [
    "ok",
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "unsupported_token_type",
    "invalid_dpop_proof",
    "use_dpop_nonce",
    "server_error",
];

fn outcome_index(code: Option<ErrorCode>) -> usize {
    let name = code.map_or("ok", ErrorCode::as_str);
    OUTCOMES.iter().position(|o| *o == name).unwrap_or(OUTCOMES.len() - 1)
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// What the endpoints count. Shared by every request; read with [`Metrics::render`].
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [[AtomicU64; OUTCOMES.len()]; 3],
    latency: [Histogram; 3],
    rotations: AtomicU64,
    grace_retries: AtomicU64,
    reuse_detections: AtomicU64,
    revocations: AtomicU64,
    families_issued: AtomicU64,
    client_auth_failures: AtomicU64,
    throttled: AtomicU64,
}

impl Metrics {
    pub(crate) fn request(&self, endpoint: Endpoint, code: Option<ErrorCode>, latency: Duration) {
        let e = endpoint as usize;
        self.requests[e][outcome_index(code)].fetch_add(1, Ordering::Relaxed);
        self.latency[e].observe(latency);
    }

    pub(crate) fn rotation(&self, retried: bool) {
        if retried {
            self.grace_retries.fetch_add(1, Ordering::Relaxed);
        } else {
            self.rotations.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn reuse_detected(&self) {
        self.reuse_detections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn revoked(&self, families: usize) {
        self.revocations
            .fetch_add(u64::try_from(families).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn issued(&self) {
        self.families_issued.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn auth_failure(&self) {
        self.client_auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn throttle(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts families revoked outside the endpoints (for example by an admin API).
    pub fn record_revocations(&self, families: usize) {
        self.revoked(families);
    }

    /// Counts a family issued outside [`crate::OAuthServer::issue`].
    pub fn record_issue(&self) {
        self.issued();
    }

    /// Rotations that minted a new token (grace retries not included).
    pub fn rotations(&self) -> u64 {
        self.rotations.load(Ordering::Relaxed)
    }

    /// Refreshes answered from the grace window with the existing successor.
    pub fn grace_retries(&self) -> u64 {
        self.grace_retries.load(Ordering::Relaxed)
    }

    /// Reuse (and divergence) detections, each of which revoked a family.
    pub fn reuse_detections(&self) -> u64 {
        self.reuse_detections.load(Ordering::Relaxed)
    }

    /// Families revoked through the revocation endpoint or [`Metrics::record_revocations`].
    pub fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::Relaxed)
    }

    /// The metrics in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        };
        counter(
            &mut out,
            "rotoken_rotations_total",
            "Refresh token rotations that minted a new token.",
            &self.rotations,
        );
        counter(
            &mut out,
            "rotoken_grace_retries_total",
            "Refreshes answered within the grace window with the existing successor.",
            &self.grace_retries,
        );
        counter(
            &mut out,
            "rotoken_reuse_detections_total",
            "Retired or diverged tokens presented; each revoked its family.",
            &self.reuse_detections,
        );
        counter(
            &mut out,
            "rotoken_revocations_total",
            "Families revoked by request.",
            &self.revocations,
        );
        counter(
            &mut out,
            "rotoken_families_issued_total",
            "Token families issued.",
            &self.families_issued,
        );
        counter(
            &mut out,
            "rotoken_client_auth_failures_total",
            "Failed client authentications.",
            &self.client_auth_failures,
        );
        counter(
            &mut out,
            "rotoken_client_auth_throttled_total",
            "Client authentications refused by throttling.",
            &self.throttled,
        );
        let _ = writeln!(
            out,
            "# HELP rotoken_http_requests_total OAuth endpoint requests by outcome.\n# TYPE rotoken_http_requests_total counter"
        );
        for e in Endpoint::ALL {
            for (i, outcome) in OUTCOMES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "rotoken_http_requests_total{{endpoint=\"{}\",outcome=\"{outcome}\"}} {}",
                    e.name(),
                    self.requests[e as usize][i].load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP rotoken_http_request_duration_seconds OAuth endpoint latency.\n# TYPE rotoken_http_request_duration_seconds histogram"
        );
        for e in Endpoint::ALL {
            let h = &self.latency[e as usize];
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "rotoken_http_request_duration_seconds_bucket{{endpoint=\"{}\",le=\"{le}\"}} {}",
                    e.name(),
                    h.buckets[i].load(Ordering::Relaxed)
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "rotoken_http_request_duration_seconds_bucket{{endpoint=\"{}\",le=\"+Inf\"}} {count}",
                e.name()
            );
            let _ = writeln!(
                out,
                "rotoken_http_request_duration_seconds_sum{{endpoint=\"{}\"}} {}",
                e.name(),
                h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "rotoken_http_request_duration_seconds_count{{endpoint=\"{}\"}} {count}",
                e.name()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.request(Endpoint::Token, None, Duration::from_micros(700));
        m.request(
            Endpoint::Token,
            Some(ErrorCode::InvalidGrant),
            Duration::from_millis(30),
        );
        m.rotation(false);
        m.rotation(true);
        m.reuse_detected();
        let text = m.render();
        assert!(text.contains("rotoken_rotations_total 1\n"));
        assert!(text.contains("rotoken_grace_retries_total 1\n"));
        assert!(text.contains("rotoken_reuse_detections_total 1\n"));
        assert!(text.contains("rotoken_http_requests_total{endpoint=\"token\",outcome=\"invalid_grant\"} 1\n"));
        assert!(text.contains("rotoken_http_request_duration_seconds_bucket{endpoint=\"token\",le=\"0.001\"} 1\n"));
        assert!(text.contains("rotoken_http_request_duration_seconds_bucket{endpoint=\"token\",le=\"0.05\"} 2\n"));
        assert!(text.contains("rotoken_http_request_duration_seconds_count{endpoint=\"token\"} 2\n"));
    }
}
