//! The admin API, for servers in any language that run `rotoken serve` as
//! a sidecar, on plain `http` types. Every route needs `Authorization:
//! Bearer <admin token>`; without a configured token the API is off (404
//! `admin_disabled`). Bodies are JSON; subjects never appear in URLs (and
//! so not in logs).
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /admin/families` | `{"subject", "client_id", "scope", "confirmation"?, "metadata"?}` (`confirmation`: the DPoP key thumbprint to bind the family to; `dpop_jkt` is accepted for it) | the token response: a refresh token only with `offline_access`, for a registered client |
//! | `POST /admin/revoke` | exactly one of `{"subject"}`, `{"client_id"}`, `{"family_id"}`, `{"token"}` | `{"revoked": n}` |
//! | `POST /admin/sessions` | `{"subject"}` | `{"sessions": [...]}` |
//! | `GET /admin/events?after=N&limit=M` | none | `{"events": [...]}`: events with `seq > N` (default 0), at most `M` (default 100, at most 1000), oldest first, each as [`EventJson`](crate::EventJson) |
//! | `POST /admin/backup` | `{"path"}`: an absolute path on the server's machine, a new file directly inside the backup directory ([`Config::backup_dir`](crate::Config::backup_dir)) | `{"backup", "families", "events", "last_event_seq", "bytes"}`: a consistent snapshot written there, mode 0600 ([`rotoken::Engine::backup`]); 409 `backup_exists`; 400 `backup_path_refused` for any other path; 403 `backup_disabled` without a backup directory; 400 `backup_unsupported` for a PostgreSQL store |
//!
//! An engine failure that is retryable ([`rotoken::Code::is_retryable`]:
//! store trouble, a busy family, a passed deadline) answers 503 with
//! `Retry-After` and the RFC 6749 body `{"error": "temporarily_unavailable",
//! ...}`, as the OAuth endpoints do; other failures answer 500 with the
//! core code as `error`.
//!
//! Bad admin tokens spend the client address's failure budget (the OAuth
//! server's `auth_max_failures` over `auth_failure_window`); past it they
//! are answered 429. The right token is always checked and accepted.

use std::sync::Arc;

use bytes::Bytes;
use futures_lite::future::block_on;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use rotoken::{Code, FamilyId, RevokeTarget, Scope};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::backup_path::{BackupPathError, backup_path};
use crate::error::json_response;
use crate::event_json::EventsJson;
use crate::throttle::retry_after_secs;
use crate::{IssueRequest, IssueTokensError, OAuthError, OAuthServer, SecretHash, Throttle};

/// Largest admin request body, in bytes.
pub const MAX_ADMIN_BODY: usize = 64 * 1024;

/// The identity under which failed admin authentications are counted.
const THROTTLE_ID: &str = "admin";

/// The admin routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdminRoute {
    /// `POST /admin/families`: issue.
    Families,
    /// `POST /admin/revoke`.
    Revoke,
    /// `POST /admin/sessions`: a subject's families.
    Sessions,
    /// `GET /admin/events`: the audit events after a sequence number.
    Events,
    /// `POST /admin/backup`: a snapshot of the database into a new file.
    Backup,
}

impl AdminRoute {
    /// Every route with its path.
    pub const ALL: [(&'static str, AdminRoute); 5] = [
        ("/admin/families", AdminRoute::Families),
        ("/admin/revoke", AdminRoute::Revoke),
        ("/admin/sessions", AdminRoute::Sessions),
        ("/admin/events", AdminRoute::Events),
        ("/admin/backup", AdminRoute::Backup),
    ];

    /// The one method the route accepts.
    pub fn method(self) -> Method {
        match self {
            Self::Events => Method::GET,
            _ => Method::POST,
        }
    }

    /// [`AdminRoute::method`] as an `Allow` header value.
    fn allow(self) -> HeaderValue {
        match self {
            Self::Events => HeaderValue::from_static("GET"),
            _ => HeaderValue::from_static("POST"),
        }
    }
}

/// Events per `GET /admin/events` answer unless `limit` says otherwise.
pub const DEFAULT_EVENTS_LIMIT: usize = 100;

/// The most events one `GET /admin/events` answer holds.
pub const MAX_EVENTS_LIMIT: usize = 1000;

/// The admin API over an [`OAuthServer`]. `Send + Sync`.
///
/// [`serve_async`](AdminApi::serve_async) and
/// [`handle_async`](AdminApi::handle_async) hold the logic (the
/// [`AdminService`](crate::AdminService) calls them); `serve` and `handle`
/// wait for them on the calling thread and may block on the engine's
/// durable commit: call them from a blocking context.
pub struct AdminApi {
    oauth: Arc<OAuthServer>,
    token: Option<SecretHash>,
    throttle: Throttle,
}

impl std::fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApi")
            .field("enabled", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

fn error(status: StatusCode, code: &str, description: &str) -> Response<Bytes> {
    let body = serde_json::json!({ "error": code, "error_description": description }).to_string();
    json_response(status, Bytes::from(body))
}

fn ok_json(value: &impl Serialize) -> Response<Bytes> {
    match serde_json::to_vec(value) {
        Ok(body) => json_response(StatusCode::OK, Bytes::from(body)),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "encoding failed"),
    }
}

impl AdminApi {
    /// The admin API of `oauth`, enabled by `token` (the hash of the admin
    /// bearer token); `None`: every route answers 404 `admin_disabled`.
    pub fn new(oauth: Arc<OAuthServer>, token: Option<SecretHash>) -> Self {
        let c = oauth.config();
        let throttle = Throttle::new(
            c.auth_max_failures,
            c.auth_failure_window,
            c.auth_throttle_capacity,
            Arc::clone(oauth.clock()),
        );
        Self { oauth, token, throttle }
    }

    /// Which route a path is, if any.
    pub fn route(path: &str) -> Option<AdminRoute> {
        AdminRoute::ALL.iter().find(|(p, _)| *p == path).map(|(_, r)| *r)
    }

    /// Answers a request on any admin route, chosen by its path (404 JSON for others).
    pub async fn handle_async<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Response<Bytes> {
        match Self::route(request.uri().path()) {
            Some(route) => self.serve_async(route, request).await,
            None => error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
        }
    }

    /// Answers a request on one admin route: the one implementation, which
    /// awaits the client registry, the minter and the engine (a backup runs
    /// on the `blocking` crate's thread pool), never blocking the caller's thread.
    pub async fn serve_async<B: AsRef<[u8]>>(&self, route: AdminRoute, request: &Request<B>) -> Response<Bytes> {
        if let Err(r) = self.authorize(request) {
            return *r;
        }
        let method = route.method();
        if request.method() != method {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                &format!("this endpoint accepts only {method}"),
            );
            r.headers_mut().insert(header::ALLOW, route.allow());
            return r;
        }
        // A request past its deadline (`RequestDeadline`) asks nothing of the store.
        if let Err(e) = OAuthServer::before_deadline(request) {
            return self.oauth.error_response(e);
        }
        match route {
            AdminRoute::Families => match body(request) {
                Ok(b) => self.issue(b).await,
                Err(refusal) => *refusal,
            },
            AdminRoute::Revoke => match body(request) {
                Ok(b) => self.revoke(b).await,
                Err(refusal) => *refusal,
            },
            AdminRoute::Sessions => match body(request) {
                Ok(b) => self.sessions(b).await,
                Err(refusal) => *refusal,
            },
            AdminRoute::Events => match events_query(request.uri().query()) {
                Ok((after, limit)) => self.events(after, limit).await,
                Err(refusal) => *refusal,
            },
            AdminRoute::Backup => match body(request) {
                Ok(b) => self.backup(b).await,
                Err(refusal) => *refusal,
            },
        }
    }

    /// [`AdminApi::handle_async`], waited for on the calling thread (which
    /// may block on the engine's commit: a blocking context).
    pub fn handle<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Response<Bytes> {
        block_on(self.handle_async(request))
    }

    /// [`AdminApi::serve_async`], waited for on the calling thread.
    pub fn serve<B: AsRef<[u8]>>(&self, route: AdminRoute, request: &Request<B>) -> Response<Bytes> {
        block_on(self.serve_async(route, request))
    }

    /// `Err`: the refusal to send.
    fn authorize<B>(&self, request: &Request<B>) -> Result<(), Box<Response<Bytes>>> {
        let Some(token) = &self.token else {
            return Err(Box::new(error(
                StatusCode::NOT_FOUND,
                "admin_disabled",
                "the admin API is off; set ROTOKEN_ADMIN_TOKEN or admin.token_hash to enable it",
            )));
        };
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        // Always checked: the right token is never refused for others' failures.
        if presented.is_some_and(|t| token.verify(t.as_bytes())) {
            return Ok(());
        }
        let client = self.oauth.client_address(request);
        if let Err(wait) = self.throttle.fail(client, THROTTLE_ID) {
            tracing::debug!(?client, "bad admin token past the failure budget");
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "too many bad admin tokens from this address; retry later",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
            return Err(Box::new(r));
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
        Err(Box::new(r))
    }

    async fn issue(&self, b: IssueBody) -> Response<Bytes> {
        let Ok(scope) = Scope::parse(&b.scope) else {
            return error(StatusCode::BAD_REQUEST, "invalid_scope", "the scope is malformed");
        };
        let mut req = IssueRequest::new(b.subject, b.client_id, scope);
        req.confirmation = b.confirmation;
        req.metadata = b.metadata.map(String::into_bytes).unwrap_or_default();
        match self.oauth.issue_async(&req).await {
            Ok(tokens) => tokens.into_response(),
            Err(e) if e.code() == "invalid_input" => error(StatusCode::BAD_REQUEST, "invalid_input", &e.to_string()),
            Err(e) if e.code() == "unknown_client" => error(
                StatusCode::BAD_REQUEST,
                "unknown_client",
                "the client is not registered; add it with `rotoken clients add` first",
            ),
            Err(IssueTokensError::Core(e)) if e.code().is_retryable() => {
                self.engine_failure(e.code(), &e, "admin issue")
            }
            Err(e) => {
                tracing::error!(error = %e, "admin issue failed");
                error(StatusCode::INTERNAL_SERVER_ERROR, e.code(), "issuing failed")
            }
        }
    }

    async fn revoke(&self, b: RevokeBody) -> Response<Bytes> {
        let family = match b.family_id.as_deref().map(str::parse::<FamilyId>).transpose() {
            Ok(f) => f,
            Err(_) => return error(StatusCode::BAD_REQUEST, "invalid_input", "family_id is not a family id"),
        };
        let target = match (&b.subject, &b.client_id, family, &b.token) {
            (Some(s), None, None, None) => RevokeTarget::Subject(s),
            (None, Some(c), None, None) => RevokeTarget::Client(c),
            (None, None, Some(f), None) => RevokeTarget::Family(f),
            (None, None, None, Some(t)) => RevokeTarget::Token(t),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "give exactly one of subject, client_id, family_id, token",
                );
            }
        };
        match self.oauth.engine().revoke_async(target).await {
            Ok(n) => {
                self.oauth.metrics().record_revocations(n);
                tracing::info!(families = n, "admin revocation");
                ok_json(&serde_json::json!({ "revoked": n }))
            }
            Err(e) if e.code() == Code::InvalidToken => ok_json(&serde_json::json!({ "revoked": 0 })),
            Err(e) if e.code() == Code::InvalidInput => error(StatusCode::BAD_REQUEST, "invalid_input", &e.to_string()),
            Err(e) => self.engine_failure(e.code(), &e, "admin revocation"),
        }
    }

    async fn sessions(&self, b: SessionsBody) -> Response<Bytes> {
        match self.oauth.engine().sessions_async(&b.subject).await {
            Ok(list) => ok_json(&SessionsJson::new(list)),
            Err(e) if e.code() == Code::InvalidInput => error(StatusCode::BAD_REQUEST, "invalid_input", &e.to_string()),
            Err(e) => self.engine_failure(e.code(), &e, "admin sessions"),
        }
    }
}

impl AdminApi {
    /// An engine failure: 503 `temporarily_unavailable` with `Retry-After`
    /// for a retryable code (the caller retries the same request), else 500
    /// with the core code as `error`.
    fn engine_failure(&self, code: Code, e: &dyn std::fmt::Display, what: &'static str) -> Response<Bytes> {
        if code.is_retryable() {
            tracing::warn!(error = %e, reason = %code, "{what} not completed; the caller retries");
            return self.oauth.error_response(OAuthError::from_code(code));
        }
        tracing::error!(error = %e, "{what} failed");
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            code.as_str(),
            &format!("{what} failed"),
        )
    }

    async fn events(&self, after: u64, limit: usize) -> Response<Bytes> {
        match self.oauth.engine().events_async(after, limit).await {
            Ok(list) => ok_json(&EventsJson::new(&list)),
            Err(e) => self.engine_failure(e.code(), &e, "admin events"),
        }
    }
}

impl AdminApi {
    async fn backup(&self, b: BackupBody) -> Response<Bytes> {
        use rotoken::backup::BackupError;
        let Some(dir) = self.oauth.config().backup_dir.clone() else {
            return error(
                StatusCode::FORBIDDEN,
                "backup_disabled",
                "backups through the admin API are off: configure a backup directory",
            );
        };
        let requested = std::path::PathBuf::from(&b.path);
        // A backup copies the whole database: off the caller's thread.
        let engine = Arc::clone(self.oauth.engine());
        let written = blocking::unblock(move || {
            let out = backup_path(&dir, &requested)?;
            Ok::<_, BackupPathError>((engine.backup(out.clone()), out))
        })
        .await;
        let (result, path) = match written {
            Ok(w) => w,
            Err(e) => return error(StatusCode::BAD_REQUEST, "backup_path_refused", &e.to_string()),
        };
        match result {
            Ok(info) => {
                tracing::info!(path = %path.display(), families = info.families, bytes = info.bytes, "backup written");
                ok_json(&serde_json::json!({
                    "backup": b.path,
                    "families": info.families,
                    "events": info.events,
                    "last_event_seq": info.last_event_seq,
                    "bytes": info.bytes,
                }))
            }
            Err(e @ BackupError::Exists(_)) => error(StatusCode::CONFLICT, e.code(), &e.to_string()),
            Err(e @ BackupError::Unsupported(_)) => error(StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
            Err(e) => {
                tracing::error!(error = %e, "admin backup failed");
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    e.code(),
                    "the backup failed; see the server's log",
                )
            }
        }
    }
}

/// `after` (default 0) and `limit` (default [`DEFAULT_EVENTS_LIMIT`], at
/// most [`MAX_EVENTS_LIMIT`]) of an events query string.
fn events_query(query: Option<&str>) -> Result<(u64, usize), Box<Response<Bytes>>> {
    let bad = |what: &str| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("{what} must be a whole number"),
        ))
    };
    let form = crate::form::parse(query.unwrap_or_default().as_bytes())
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, "invalid_request", &e.description())))?;
    let after = match form.get("after") {
        Some(v) => v.parse::<u64>().map_err(|_| bad("after"))?,
        None => 0,
    };
    let limit = match form.get("limit") {
        Some(v) => v.parse::<usize>().map_err(|_| bad("limit"))?,
        None => DEFAULT_EVENTS_LIMIT,
    };
    Ok((after, limit.clamp(1, MAX_EVENTS_LIMIT)))
}

/// A JSON body of at most [`MAX_ADMIN_BODY`] bytes.
fn body<T: DeserializeOwned, B: AsRef<[u8]>>(request: &Request<B>) -> Result<T, Box<Response<Bytes>>> {
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
        return Err(Box::new(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "the body must be application/json",
        )));
    }
    let bytes = request.body().as_ref();
    if bytes.len() > MAX_ADMIN_BODY {
        return Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "the body is too large",
        )));
    }
    serde_json::from_slice(bytes).map_err(|_| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body is not the expected JSON object",
        ))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueBody {
    subject: String,
    client_id: String,
    #[serde(default)]
    scope: String,
    /// The DPoP key thumbprint to bind the family to; `dpop_jkt` was its name.
    #[serde(alias = "dpop_jkt")]
    confirmation: Option<String>,
    metadata: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    subject: Option<String>,
    client_id: Option<String>,
    family_id: Option<String>,
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupBody {
    path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsBody {
    subject: String,
}

/// One session (family) in a `sessions` answer, as the admin API and
/// `rotoken sessions` print it.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct SessionJson {
    /// The family id.
    pub family_id: String,
    /// Its client.
    pub client_id: String,
    /// Its granted scope.
    pub scope: String,
    /// Current generation.
    pub generation: u32,
    /// When it was issued (RFC 3339).
    pub created_at: String,
    /// When it last rotated (RFC 3339).
    pub rotated_at: String,
    /// When it stops working unless rotated (RFC 3339).
    pub expires_at: String,
    /// Whether it can still be refreshed.
    pub active: bool,
    /// Why it was revoked, if it was.
    pub revoked: Option<&'static str>,
    /// Why its grant cannot be read (a key removed from the key file),
    /// naming the key; client and scope are empty then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

/// RFC 3339, or the Unix time for a year RFC 3339 cannot hold.
fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

impl From<rotoken::Session> for SessionJson {
    fn from(s: rotoken::Session) -> Self {
        Self {
            family_id: s.family.to_string(),
            client_id: s.client_id,
            scope: s.scope.to_string(),
            generation: s.generation,
            created_at: rfc3339(s.created_at),
            rotated_at: rfc3339(s.rotated_at),
            expires_at: rfc3339(s.expires_at),
            active: s.active,
            revoked: s.revoked.map(rotoken::RevokeReason::as_str),
            unreadable: s.unreadable,
        }
    }
}

/// A subject's sessions: `{"sessions": [...]}`.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct SessionsJson {
    /// The subject's families, revoked ones included until gc removes them.
    pub sessions: Vec<SessionJson>,
}

impl SessionsJson {
    /// The answer for `sessions`.
    pub fn new(sessions: Vec<rotoken::Session>) -> Self {
        Self {
            sessions: sessions.into_iter().map(SessionJson::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn events_query_defaults_caps_and_refuses() {
        assert_eq!(events_query(None).unwrap(), (0, DEFAULT_EVENTS_LIMIT));
        assert_eq!(events_query(Some("after=7&limit=3")).unwrap(), (7, 3));
        assert_eq!(events_query(Some("limit=1000000")).unwrap(), (0, MAX_EVENTS_LIMIT));
        assert_eq!(events_query(Some("limit=0")).unwrap(), (0, 1));
        for bad in ["after=-1", "after=x", "limit=1e3", "after=1&after=2"] {
            let r = events_query(Some(bad)).unwrap_err();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn only_events_is_read_with_get() {
        for (_, route) in AdminRoute::ALL {
            let expected = if route == AdminRoute::Events {
                Method::GET
            } else {
                Method::POST
            };
            assert_eq!(route.method(), expected);
            assert_eq!(route.allow(), expected.as_str());
        }
    }
}
