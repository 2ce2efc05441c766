//! The admin API, for servers in any language that run `rotoken serve` as a
//! sidecar. Every route needs `Authorization: Bearer <admin token>` (the
//! token set by `ROTOKEN_ADMIN_TOKEN`, or whose hash is `admin.token_hash`
//! in the config file); without a configured token the API is off (404).
//! Bodies are JSON; subjects never appear in URLs (and so not in logs).
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /admin/families` | `{"subject", "client_id", "scope", "dpop_jkt"?, "metadata"?}` | the token response: a refresh token only with `offline_access` |
//! | `POST /admin/revoke` | exactly one of `{"subject"}`, `{"client_id"}`, `{"family_id"}`, `{"token"}` | `{"revoked": n}` |
//! | `POST /admin/sessions` | `{"subject"}` | `{"sessions": [...]}` |

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::post;
use rotoken::{FamilyId, RevokeTarget, Scope};
use rotoken_http::{IpNet, IssueRequest, OAuthServer, SecretHash, Throttle, client_address};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::json;
use crate::output::{SessionJson, SessionsJson};

/// Largest admin request body.
const MAX_BODY: usize = 64 * 1024;

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    json(
        status,
        serde_json::json!({ "error": code, "error_description": description }).to_string(),
    )
}

/// The identity under which failed admin authentications are counted.
const THROTTLE_ID: &str = "admin";

/// The admin token and the budget of failed attempts against it.
struct AdminAuth {
    token: SecretHash,
    throttle: Throttle,
    trusted_proxies: Vec<IpNet>,
}

/// The admin routes, behind the token check. Failed checks are budgeted per
/// client address with the OAuth server's client-authentication limits
/// (`auth_max_failures` over `auth_failure_window`): past the budget a bad
/// token is answered 429, the right one is always accepted.
pub(super) fn router(oauth: Arc<OAuthServer>, token: Option<SecretHash>) -> Router {
    let c = oauth.config();
    let auth = token.map(|token| {
        Arc::new(AdminAuth {
            token,
            throttle: Throttle::new(
                c.auth_max_failures,
                c.auth_failure_window,
                c.auth_throttle_capacity,
                c.clock.clone(),
            ),
            trusted_proxies: c.trusted_proxies.clone(),
        })
    });
    let issue_oauth = oauth.clone();
    let revoke_oauth = oauth.clone();
    Router::new()
        .route("/families", post(move |r: Request| issue(issue_oauth.clone(), r)))
        .route("/revoke", post(move |r: Request| revoke(revoke_oauth.clone(), r)))
        .route("/sessions", post(move |r: Request| sessions(oauth.clone(), r)))
        .layer(axum::middleware::from_fn(move |r: Request, next: Next| {
            authorize(auth.clone(), r, next)
        }))
}

async fn authorize(auth: Option<Arc<AdminAuth>>, request: Request, next: Next) -> Response {
    let Some(auth) = auth else {
        return error(
            StatusCode::NOT_FOUND,
            "admin_disabled",
            "the admin API is off; set ROTOKEN_ADMIN_TOKEN or admin.token_hash to enable it",
        );
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip());
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    // Always checked: a right token is never refused for others' failures.
    if presented.is_some_and(|t| auth.token.verify(t.as_bytes())) {
        return next.run(request).await;
    }
    let client = client_address(peer, request.headers(), &auth.trusted_proxies);
    if let Err(wait) = auth.throttle.fail(client, THROTTLE_ID) {
        tracing::debug!(?client, "bad admin token past the failure budget");
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "too many bad admin tokens from this address; retry later",
        );
        let secs = wait.as_secs().saturating_add(u64::from(wait.subsec_nanos() > 0)).max(1);
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return r;
    }
    tracing::debug!("admin request refused: bad or missing admin token");
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "a valid admin bearer token is required",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"rotoken-admin\""),
    );
    r
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes.
async fn body<T: DeserializeOwned>(request: Request) -> Result<T, Response> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "the body must be application/json",
        ));
    }
    let bytes = axum::body::to_bytes(request.into_body(), MAX_BODY).await.map_err(|_| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "the body is too large",
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body is not the expected JSON object",
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueBody {
    subject: String,
    client_id: String,
    #[serde(default)]
    scope: String,
    dpop_jkt: Option<String>,
    metadata: Option<String>,
}

async fn issue(oauth: Arc<OAuthServer>, request: Request) -> Response {
    let b: IssueBody = match body(request).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(scope) = Scope::parse(&b.scope) else {
        return error(StatusCode::BAD_REQUEST, "invalid_scope", "the scope is malformed");
    };
    let mut req = IssueRequest::new(b.subject, b.client_id, scope);
    req.dpop_jkt = b.dpop_jkt;
    req.metadata = b.metadata.map(String::into_bytes).unwrap_or_default();
    let result = tokio::task::spawn_blocking(move || oauth.issue(&req)).await;
    match result {
        Ok(Ok(tokens)) => {
            let r = tokens.into_response();
            let (parts, body) = r.into_parts();
            Response::from_parts(parts, axum::body::Body::from(body))
        }
        Ok(Err(e)) if e.code() == "invalid_input" => error(StatusCode::BAD_REQUEST, "invalid_input", &e.to_string()),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "admin issue failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.code(), "issuing failed")
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "issuing failed"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    subject: Option<String>,
    client_id: Option<String>,
    family_id: Option<String>,
    token: Option<String>,
}

async fn revoke(oauth: Arc<OAuthServer>, request: Request) -> Response {
    let b: RevokeBody = match body(request).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let family = match b.family_id.as_deref().map(str::parse::<FamilyId>).transpose() {
        Ok(f) => f,
        Err(_) => return error(StatusCode::BAD_REQUEST, "invalid_input", "family_id is not a family id"),
    };
    let engine = oauth.engine().clone();
    let result = tokio::task::spawn_blocking(move || {
        let target = match (&b.subject, &b.client_id, family, &b.token) {
            (Some(s), None, None, None) => RevokeTarget::Subject(s),
            (None, Some(c), None, None) => RevokeTarget::Client(c),
            (None, None, Some(f), None) => RevokeTarget::Family(f),
            (None, None, None, Some(t)) => RevokeTarget::Token(t),
            _ => return None,
        };
        Some(engine.revoke(target))
    })
    .await;
    match result {
        Ok(None) => error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "give exactly one of subject, client_id, family_id, token",
        ),
        Ok(Some(Ok(n))) => {
            oauth.metrics().record_revocations(n);
            tracing::info!(families = n, "admin revocation");
            json(StatusCode::OK, serde_json::json!({ "revoked": n }).to_string())
        }
        Ok(Some(Err(e))) if e.code() == "invalid_token" => json(StatusCode::OK, r#"{"revoked":0}"#.to_owned()),
        Ok(Some(Err(e))) if e.code() == "invalid_input" => {
            error(StatusCode::BAD_REQUEST, "invalid_input", &e.to_string())
        }
        Ok(Some(Err(e))) => {
            tracing::error!(error = %e, "admin revocation failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.code(), "revocation failed")
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "revocation failed"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsBody {
    subject: String,
}

async fn sessions(oauth: Arc<OAuthServer>, request: Request) -> Response {
    let b: SessionsBody = match body(request).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let engine = oauth.engine().clone();
    match tokio::task::spawn_blocking(move || engine.sessions(&b.subject)).await {
        Ok(Ok(list)) => {
            let out = SessionsJson {
                sessions: list.into_iter().map(SessionJson::from).collect(),
            };
            json(StatusCode::OK, serde_json::to_string(&out).unwrap_or_default())
        }
        Ok(Err(e)) if e.code() == "invalid_input" => error(StatusCode::BAD_REQUEST, "invalid_input", &e.to_string()),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "admin sessions failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.code(), "listing sessions failed")
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "listing sessions failed",
        ),
    }
}
