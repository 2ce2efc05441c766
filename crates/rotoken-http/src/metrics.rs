//! Counters and a latency histogram per endpoint, rendered by the
//! `prometheus-client` crate in the OpenMetrics text format.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use rotoken::Engine;

use crate::ErrorCode;
use crate::engine_metrics::EngineCollector;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The content type of [`Metrics::render`]'s text.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The endpoints counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Token,
    Revoke,
    Introspect,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Revoke => "revoke",
            Self::Introspect => "introspect",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// What the endpoints count. Shared by every request; read with [`Metrics::render`].
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    unavailable: Family<CauseLabels, Counter>,
    latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    rotations: Counter,
    grace_retries: Counter,
    reuse_detections: Counter,
    revocations: Counter,
    families_issued: Counter,
    client_auth_failures: Counter,
    throttled: Counter,
    families: Gauge,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("rotations", &self.rotations.get())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    /// The endpoints' metrics alone, without an engine's counters.
    fn default() -> Self {
        Self::build(None)
    }
}

impl Metrics {
    /// The endpoints' metrics and `engine`'s own counters
    /// ([`rotoken::Stats`], as `rotoken_engine_*`), read at each render.
    pub fn for_engine(engine: &Arc<Engine>) -> Self {
        Self::build(Some(engine))
    }

    fn build(engine: Option<&Arc<Engine>>) -> Self {
        let mut registry = Registry::default();
        if let Some(engine) = engine {
            registry.register_collector(Box::new(EngineCollector::new(engine)));
        }
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let counters: [(&str, &str, Counter); 7] = [
            (
                "rotoken_rotations",
                "Refresh token rotations that minted a new token.",
                Counter::default(),
            ),
            (
                "rotoken_grace_retries",
                "Refreshes answered within the grace window with the existing successor.",
                Counter::default(),
            ),
            (
                "rotoken_reuse_detections",
                "Retired or diverged tokens presented; each revoked its family.",
                Counter::default(),
            ),
            (
                "rotoken_revocations",
                "Families revoked by request.",
                Counter::default(),
            ),
            ("rotoken_families_issued", "Token families issued.", Counter::default()),
            (
                "rotoken_client_auth_failures",
                "Failed client authentications.",
                Counter::default(),
            ),
            (
                "rotoken_client_auth_throttled",
                "Failed client authentications past the failure budget (answered 429).",
                Counter::default(),
            ),
        ];
        for (name, help, c) in &counters {
            registry.register(*name, *help, c.clone());
        }
        registry.register(
            "rotoken_http_requests",
            "OAuth endpoint requests by outcome.",
            requests.clone(),
        );
        let unavailable = Family::<CauseLabels, Counter>::default();
        registry.register(
            "rotoken_temporarily_unavailable",
            "Answers 503 temporarily_unavailable (every endpoint and the admin API) by core cause: \
             storage_error, unavailable, busy, deadline_passed, outcome_unknown, clock_behind. \
             The client retries the same request.",
            unavailable.clone(),
        );
        registry.register(
            "rotoken_http_request_duration_seconds",
            "OAuth endpoint latency.",
            latency.clone(),
        );
        let families = Gauge::default();
        registry.register(
            "rotoken_families",
            "Families in the database (live, expired and revoked until gc), when the server reports it.",
            families.clone(),
        );
        let [
            rotations,
            grace_retries,
            reuse_detections,
            revocations,
            families_issued,
            client_auth_failures,
            throttled,
        ] = counters.map(|(_, _, c)| c);
        Self {
            registry,
            requests,
            unavailable,
            latency,
            rotations,
            grace_retries,
            reuse_detections,
            revocations,
            families_issued,
            client_auth_failures,
            throttled,
            families,
        }
    }
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Metrics {
    pub(crate) fn request(&self, endpoint: Endpoint, code: Option<ErrorCode>, latency: Duration) {
        let outcome = code.map_or("ok", ErrorCode::as_str);
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.name(),
                outcome,
            })
            .inc();
        self.latency
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.name(),
            })
            .observe(latency.as_secs_f64());
    }

    /// Counts a 503 `temporarily_unavailable` answer by its core cause.
    pub(crate) fn unavailable(&self, cause: Option<rotoken::Code>) {
        let cause = cause.map_or("other", rotoken::Code::as_str);
        self.unavailable.get_or_create(&CauseLabels { cause }).inc();
    }

    pub(crate) fn rotation(&self, retried: bool) {
        if retried {
            self.grace_retries.inc();
        } else {
            self.rotations.inc();
        }
    }

    pub(crate) fn reuse_detected(&self) {
        self.reuse_detections.inc();
    }

    pub(crate) fn revoked(&self, families: usize) {
        self.revocations.inc_by(count(families));
    }

    pub(crate) fn issued(&self) {
        self.families_issued.inc();
    }

    pub(crate) fn auth_failure(&self) {
        self.client_auth_failures.inc();
    }

    pub(crate) fn throttle(&self) {
        self.throttled.inc();
    }

    /// Counts families revoked outside the endpoints (for example by an admin API).
    pub fn record_revocations(&self, families: usize) {
        self.revoked(families);
    }

    /// Counts a rotation made outside the token endpoint (a server calling
    /// `Engine::rotate` itself): a rotation or a grace retry when it
    /// succeeded, a reuse detection when the refusal revoked a family
    /// ([`rotoken::Code::revoked_a_family`]). Other refusals count nothing.
    pub fn record_rotate(&self, result: Result<&rotoken::Rotated, &rotoken::RotateError>) {
        match result {
            Ok(rotated) => self.rotation(rotated.retried),
            Err(e) if e.code().revoked_a_family() => self.reuse_detected(),
            Err(_) => {}
        }
    }

    /// Counts a family issued outside [`crate::OAuthServer::issue`].
    pub fn record_issue(&self) {
        self.issued();
    }

    /// Sets the `rotoken_families` gauge (the server counts them when scraped).
    pub fn set_families(&self, families: u64) {
        self.families.set(i64::try_from(families).unwrap_or(i64::MAX));
    }

    /// Rotations that minted a new token (grace retries not included).
    pub fn rotations(&self) -> u64 {
        self.rotations.get()
    }

    /// Refreshes answered from the grace window with the existing successor.
    pub fn grace_retries(&self) -> u64 {
        self.grace_retries.get()
    }

    /// Reuse (and divergence) detections, each of which revoked a family.
    pub fn reuse_detections(&self) -> u64 {
        self.reuse_detections.get()
    }

    /// Families revoked through the revocation endpoint or [`Metrics::record_revocations`].
    pub fn revocations(&self) -> u64 {
        self.revocations.get()
    }

    /// The metrics in the OpenMetrics text format ([`METRICS_CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
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
        m.set_families(3);
        let text = m.render();
        assert!(text.contains("rotoken_rotations_total 1\n"), "{text}");
        assert!(text.contains("rotoken_grace_retries_total 1\n"));
        assert!(text.contains("rotoken_reuse_detections_total 1\n"));
        assert!(text.contains("rotoken_families 3\n"));
        assert!(
            text.contains("rotoken_http_requests_total{endpoint=\"token\",outcome=\"invalid_grant\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("rotoken_http_request_duration_seconds_bucket{le=\"0.001\",endpoint=\"token\"} 1\n")
                || text.contains("rotoken_http_request_duration_seconds_bucket{endpoint=\"token\",le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("rotoken_http_request_duration_seconds_count{endpoint=\"token\"} 2\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        assert!(!text.contains("rotoken_engine_"), "no engine, no engine counters");
    }

    #[test]
    fn an_engines_counters_are_read_at_each_render() {
        let engine =
            Arc::new(Engine::in_memory(rotoken::Keyring::generate().unwrap(), rotoken::Options::default()).unwrap());
        let m = Metrics::for_engine(&engine);
        assert!(m.render().contains("rotoken_engine_batches_total 0\n"));
        let grant = rotoken::Grant::new("alice", "web", rotoken::Scope::parse("openid").unwrap());
        engine.issue(&grant).unwrap();
        let text = m.render();
        assert!(text.contains("rotoken_engine_batches_total 1\n"), "{text}");
        assert!(text.contains("rotoken_engine_operations_total 1\n"), "{text}");
        assert!(text.contains("# TYPE rotoken_engine_largest_batch gauge\n"), "{text}");
        assert!(text.contains("rotoken_engine_largest_batch 1\n"), "{text}");
        assert!(text.contains("rotoken_engine_gc_removed_total 0\n"), "{text}");
        drop(engine);
        assert!(
            !m.render().contains("rotoken_engine_"),
            "a closed engine is not kept alive"
        );
    }
}
