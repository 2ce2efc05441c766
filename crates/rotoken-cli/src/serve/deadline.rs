//! The request's deadline and the last-resort time limit of `rotoken serve`.
//!
//! A client waits `request_timeout` for an answer. When the request's head
//! has been read, [`bounded`] stamps it with a
//! [`RequestDeadline`](rotoken_http::RequestDeadline): the time it was read
//! plus [`Budget::engine`], the request timeout less a margin for the
//! store's own bound. The engine never applies the request's work after
//! that instant; past it the answer is 503 `temporarily_unavailable` with
//! `Retry-After` and nothing was written, so the client retries the same
//! token. A store call that began just before the deadline may still run
//! for up to the store's bound (PostgreSQL: connect plus statement timeout,
//! plus a second), so the engine has answered by [`Budget::outer`] at the
//! latest.
//!
//! The outer limit sits at `outer`, after the engine's deadline plus the
//! store's longest call: it only ever fires for a request the engine has
//! stopped working on (a body that trickles in, say), and it answers 503
//! JSON with `Retry-After` too, never an empty 408. Dropping the request's
//! future there withdraws an operation still queued in the engine.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use rotoken_http::{OAuthError, RequestDeadline};
use rotoken_postgres::{PgOptions, StoreLocation};

/// The longest a redb store call takes in practice: an fsync on a slow disk.
const REDB_CALL_BOUND: Duration = Duration::from_secs(2);

/// Slack between the store's bound and the outer limit.
const OUTER_SLACK: Duration = Duration::from_secs(1);

/// How a request's time is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    /// From the request's arrival to its deadline in the engine: the request
    /// timeout less `min(store bound, request timeout / 2)`.
    pub(crate) engine: Duration,
    /// From the request's arrival to the last-resort 503: the engine's
    /// deadline plus the store's longest call plus a second.
    pub(crate) outer: Duration,
}

impl Budget {
    /// The budget of a request for `request_timeout` over `store`.
    pub(crate) fn new(request_timeout: Duration, store: &StoreLocation) -> Self {
        Self::with_store_bound(request_timeout, store_bound(store))
    }

    fn with_store_bound(request_timeout: Duration, store_bound: Duration) -> Self {
        let margin = store_bound.min(request_timeout / 2);
        let engine = request_timeout.saturating_sub(margin);
        Self {
            engine,
            outer: engine + store_bound + OUTER_SLACK,
        }
    }
}

/// The longest one call into the store may take.
fn store_bound(store: &StoreLocation) -> Duration {
    match store {
        StoreLocation::Postgres(url) => {
            // The PostgreSQL store drops a call after its connect plus
            // statement timeout and a second (rotoken-postgres's bridge),
            // as set by the URL's `connect_timeout_ms` and `statement_timeout_ms`.
            let mut o = PgOptions::default();
            // A bad parameter fails the open itself; the defaults meanwhile.
            let _ = o.take_url_parameters(url);
            o.connect_timeout + o.statement_timeout + Duration::from_secs(1)
        }
        _ => REDB_CALL_BOUND,
    }
}

/// Stamps the request with its deadline and answers 503 JSON with
/// `Retry-After` if nothing answered by the outer limit.
pub(crate) async fn bounded(mut request: Request, next: Next, budget: Budget, retry_after: u64) -> Response {
    let read_at = Instant::now();
    request
        .extensions_mut()
        .insert(RequestDeadline(read_at + budget.engine));
    match tokio::time::timeout(budget.outer, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                outer_ms = u64::try_from(budget.outer.as_millis()).unwrap_or(u64::MAX),
                "request not answered by the outer limit: 503, the client retries"
            );
            unavailable(retry_after)
        }
    }
}

/// 503 `temporarily_unavailable` with `Retry-After`, as rotoken-http answers.
fn unavailable(retry_after: u64) -> Response {
    OAuthError::temporarily_unavailable(
        "deadline_passed: the request was not completed in time; retry the same request",
    )
    .with_retry_after(retry_after)
    .into_response()
    .map(Body::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_deadline_comes_before_the_outer_limit_by_the_store_bound() {
        let secs = Duration::from_secs;
        // PostgreSQL's 16 s bound and the default 10 s: the engine gets 5 s,
        // the last resort is at 22 s.
        let b = Budget::with_store_bound(secs(10), secs(16));
        assert_eq!((b.engine, b.outer), (secs(5), secs(22)));
        // redb: 8 s in the engine, the last resort at 11 s.
        let b = Budget::with_store_bound(secs(10), REDB_CALL_BOUND);
        assert_eq!((b.engine, b.outer), (secs(8), secs(11)));
        for timeout in [1, 2, 10, 60, 3600] {
            for bound in [REDB_CALL_BOUND, secs(16)] {
                let b = Budget::with_store_bound(secs(timeout), bound);
                assert!(b.engine > Duration::ZERO && b.engine <= secs(timeout));
                assert!(b.outer >= b.engine + bound, "{b:?}");
            }
        }
    }

    #[test]
    fn the_store_bound_follows_the_urls_timeouts() {
        let pg = |url: &str| store_bound(&StoreLocation::Postgres(url.into()));
        assert_eq!(pg("postgres://db/rotoken"), Duration::from_secs(16));
        assert_eq!(
            pg("postgres://db/rotoken?connect_timeout_ms=1000&statement_timeout_ms=2000"),
            Duration::from_secs(4)
        );
        assert_eq!(store_bound(&StoreLocation::File("x.redb".into())), REDB_CALL_BOUND);
    }

    #[tokio::test]
    async fn the_last_resort_answer_is_503_json_with_retry_after() {
        let r = unavailable(3);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "3");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "temporarily_unavailable");
    }
}
