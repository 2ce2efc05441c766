//! `/healthz` and `/metrics` for a server that links rotoken: the same
//! routes `rotoken serve` answers.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use rotoken_http::{METRICS_CONTENT_TYPE, OAuthServer};

/// `GET /healthz`: `{"status":"ok"}` while the database answers a read,
/// else 503 `{"status":"unavailable"}`. Safe on a public listener. Any
/// state type `S`, as [`router`](crate::router).
pub fn health_router<S: Clone + Send + Sync + 'static>(server: Arc<OAuthServer>) -> Router<S> {
    Router::new().route("/healthz", get(move || health(server.clone())))
}

/// `GET /metrics`: the counters of `server` (rotations, reuse detections,
/// requests per endpoint and outcome, latency...) and the number of
/// families, in the OpenMetrics text format. Mount it on an internal
/// listener: the counts tell an outsider how busy the server is.
pub fn metrics_router<S: Clone + Send + Sync + 'static>(server: Arc<OAuthServer>) -> Router<S> {
    Router::new().route("/metrics", get(move || metrics(server.clone())))
}

async fn health(server: Arc<OAuthServer>) -> Response {
    let engine = server.engine().clone();
    let ok = tokio::task::spawn_blocking(move || engine.families_count().is_ok())
        .await
        .unwrap_or(false);
    let (status, text) = if ok {
        (StatusCode::OK, r#"{"status":"ok"}"#)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"unavailable"}"#)
    };
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn metrics(server: Arc<OAuthServer>) -> Response {
    let engine = server.engine().clone();
    if let Ok(Ok(n)) = tokio::task::spawn_blocking(move || engine.families_count()).await {
        server.metrics().set_families(n);
    }
    let mut r = Response::new(Body::from(server.metrics().render()));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
    r
}
