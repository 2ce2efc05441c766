//! The endpoints: token (refresh grant), revocation, introspection,
//! metadata and JWKS, plus the issue entry point for a server's own
//! authorization-code exchange. Each translates a request into one core
//! call and the core's answer into an RFC response.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use rotoken::{
    Clock, Engine, FamilyId, Grant, RevokeError, RevokeTarget, RotateError, RotateRequest, Scope, SystemClock,
};
use serde::Serialize;
use serde_json::{Map, Value, json};

use ipnet::IpNet;

use crate::client::{self, ClientRegistry, MAX_CLIENT_ID_LEN, MAX_CLIENT_SECRET_LEN, RegisteredClient};
use crate::dpop::{CheckedProof, DPOP_ALGORITHMS, DpopError, DpopVerifier};
use crate::dpop_nonce::Nonces;
use crate::error::{ErrorCode, IssueError, OAuthError, json_response};
use crate::form::{self, Form};
use crate::forwarded::client_address;
use crate::metrics::{Endpoint, Metrics};
use crate::minter::{AccessTokenMinter, AccessTokenRequest};
use crate::rejections::Rejections;
use crate::replay::ReplayCache;
use crate::throttle::{DEFAULT_THROTTLE_CAPACITY, Throttle, retry_after_secs};

/// The path of the authorization server metadata document (RFC 8414 §3).
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

/// The scope that asks for a refresh token (OpenID Connect Core §11).
pub const OFFLINE_ACCESS: &str = "offline_access";

/// How the endpoints are reached and what they accept.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The issuer identifier: an `https` (or loopback `http`) URL without a
    /// query or fragment. Endpoint URLs are the issuer followed by their paths.
    pub issuer: String,
    /// Path of the token endpoint. Default `/oauth/token`.
    pub token_path: String,
    /// Path of the revocation endpoint (RFC 7009). Default `/oauth/revoke`.
    pub revocation_path: String,
    /// Path of the introspection endpoint (RFC 7662). Default `/oauth/introspect`.
    pub introspection_path: String,
    /// Path of the JWK Set of access-token signing keys. Default `/oauth/jwks`.
    pub jwks_path: String,
    /// The server's own authorization endpoint, published in the metadata.
    pub authorization_endpoint: Option<String>,
    /// Grant types the server handles itself (for example `authorization_code`),
    /// published in the metadata besides `refresh_token`.
    pub extra_grant_types: Vec<String>,
    /// Scopes published in the metadata (`scopes_supported`), if any.
    pub scopes_supported: Vec<String>,
    /// The `aud` of access tokens (RFC 9068 §2.2) for clients without an
    /// audience of their own. Default: the minter's, else the issuer.
    pub access_token_audience: Option<String>,
    /// Largest request body accepted, in bytes (413 beyond). Default 16 KiB.
    pub max_body_bytes: usize,
    /// How old a DPoP proof's `iat` may be. Default 60 s.
    pub dpop_max_age: Duration,
    /// How far ahead of this server's clock a DPoP proof's `iat` may be. Default 5 s.
    pub dpop_max_skew: Duration,
    /// Most DPoP proof ids remembered for replay detection; when full, the
    /// oldest is forgotten (a valid proof is never refused). Default 100,000.
    pub dpop_replay_capacity: usize,
    /// Most proof ids remembered per DPoP key: a key's new proofs push out
    /// its own oldest, never another key's. Default 32.
    pub dpop_replay_per_key: usize,
    /// Require DPoP proofs at the token endpoint to carry a server nonce
    /// (RFC 9449 §8): `use_dpop_nonce` and a `DPoP-Nonce` header otherwise.
    /// Default off.
    pub dpop_nonce: bool,
    /// How often the DPoP nonce changes; a nonce is accepted for one to two
    /// of these. Default 300 s.
    pub dpop_nonce_lifetime: Duration,
    /// Failed client authentications per (address, client id) before
    /// further failures are answered 429 with `Retry-After`; the budget
    /// comes back over `auth_failure_window`. A correct credential is
    /// always accepted. Default 10.
    pub auth_max_failures: u32,
    /// The time over which a spent failure budget comes back. Default 60 s.
    pub auth_failure_window: Duration,
    /// Most (address, client id) budgets remembered; a full table never
    /// forgets an active penalty. Default 65,536.
    pub auth_throttle_capacity: usize,
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` header names the
    /// client address that failures are counted under. Empty by default:
    /// the peer address is the client.
    pub trusted_proxies: Vec<IpNet>,
    /// Where time comes from (share the engine's in tests).
    pub clock: Arc<dyn Clock>,
}

impl Config {
    /// Defaults for an issuer.
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            token_path: "/oauth/token".into(),
            revocation_path: "/oauth/revoke".into(),
            introspection_path: "/oauth/introspect".into(),
            jwks_path: "/oauth/jwks".into(),
            authorization_endpoint: None,
            extra_grant_types: Vec::new(),
            scopes_supported: Vec::new(),
            access_token_audience: None,
            max_body_bytes: 16 * 1024,
            dpop_max_age: Duration::from_secs(60),
            dpop_max_skew: Duration::from_secs(5),
            dpop_replay_capacity: 100_000,
            dpop_replay_per_key: 32,
            dpop_nonce: false,
            dpop_nonce_lifetime: Duration::from_secs(300),
            auth_max_failures: 10,
            auth_failure_window: Duration::from_secs(60),
            auth_throttle_capacity: DEFAULT_THROTTLE_CAPACITY,
            trusted_proxies: Vec::new(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The absolute URL of an endpoint path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer.trim_end_matches('/'))
    }
}

/// The routes the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Route {
    /// The token endpoint (refresh grant).
    Token,
    /// The revocation endpoint.
    Revocation,
    /// The introspection endpoint.
    Introspection,
    /// The metadata document.
    Metadata,
    /// The JWK Set.
    Jwks,
}

/// The peer's address, if the adapter knows it: put it in the request's
/// extensions so that failed client authentication is throttled per peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub IpAddr);

/// A successful token response (RFC 6749 §5.1).
#[derive(Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// `Bearer`, or `DPoP` for a DPoP-bound access token.
    pub token_type: &'static str,
    /// Lifetime of the access token in seconds.
    pub expires_in: u64,
    /// The refresh token (absent when `offline_access` was not granted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Seconds until the refresh token expires unless rotated (the earlier
    /// of the idle and the absolute expiry;
    /// draft-ietf-oauth-refresh-token-expiration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token_expires_in: Option<u64>,
    /// The scope, when it differs from the one requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"..")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| ".."))
            .field("refresh_token_expires_in", &self.refresh_token_expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

impl TokenResponse {
    /// The HTTP response: 200, JSON, `Cache-Control: no-store`.
    pub fn into_response(self) -> Response<Bytes> {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        json_response(StatusCode::OK, Bytes::from(body))
    }
}

/// A new family for the server's own authorization-code exchange.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IssueRequest {
    /// The resource owner.
    pub subject: String,
    /// The client the code was issued to.
    pub client_id: String,
    /// The granted scope. A refresh token is issued only if it holds `offline_access`.
    pub scope: Scope,
    /// The DPoP key thumbprint to bind the family and access token to (from
    /// [`OAuthServer::dpop_thumbprint`] on the exchange request).
    pub dpop_jkt: Option<String>,
    /// Opaque data sealed with the family (for example the authentication context).
    pub metadata: Vec<u8>,
}

impl fmt::Debug for IssueRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssueRequest")
            .field("subject", &self.subject)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope.to_string())
            .field("dpop_bound", &self.dpop_jkt.is_some())
            .field("metadata_len", &self.metadata.len())
            .finish()
    }
}

impl IssueRequest {
    /// A request for `subject` and `client_id` with `scope`, unbound, without metadata.
    pub fn new(subject: impl Into<String>, client_id: impl Into<String>, scope: Scope) -> Self {
        Self {
            subject: subject.into(),
            client_id: client_id.into(),
            scope,
            dpop_jkt: None,
            metadata: Vec::new(),
        }
    }
}

/// The OAuth endpoints over one [`Engine`]. `Send + Sync`: share it behind an `Arc`.
///
/// Every method that takes a request is synchronous and may block on the
/// engine's durable commit: call it from a blocking context (the
/// [`OAuthService`](crate::OAuthService) does so on tokio's blocking pool).
pub struct OAuthServer {
    engine: Arc<Engine>,
    clients: Arc<dyn ClientRegistry>,
    minter: Arc<dyn AccessTokenMinter>,
    config: Config,
    throttle: Throttle,
    dpop: DpopVerifier,
    /// `None`: nonces off; `Some(None)`: on, but no key could be drawn
    /// (every DPoP request then fails closed with `server_error`).
    nonces: Option<Option<Nonces>>,
    metrics: Arc<Metrics>,
    rejections: Rejections,
}

impl fmt::Debug for OAuthServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthServer")
            .field("engine", &self.engine)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A secret hash nobody's secret matches, verified for unknown clients so
/// that they take as long as known ones.
const DUMMY_SECRET: &str = "blake3-v1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

impl OAuthServer {
    /// The endpoints over `engine`, authenticating clients with `clients`
    /// and minting access tokens with `minter`.
    pub fn new(
        engine: Arc<Engine>,
        clients: Arc<dyn ClientRegistry>,
        minter: Arc<dyn AccessTokenMinter>,
        config: Config,
    ) -> Self {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let nonces = config.dpop_nonce.then(|| {
            Nonces::new(config.dpop_nonce_lifetime.as_secs())
                .inspect_err(|e| tracing::error!(error = %e, "no key for DPoP nonces: DPoP requests will fail"))
                .ok()
        });
        Self {
            throttle: Throttle::new(
                config.auth_max_failures,
                config.auth_failure_window,
                config.auth_throttle_capacity,
                config.clock.clone(),
            ),
            dpop: DpopVerifier {
                max_age: secs(config.dpop_max_age),
                max_skew: secs(config.dpop_max_skew),
                replay: ReplayCache::new(config.dpop_replay_capacity, config.dpop_replay_per_key),
            },
            nonces,
            engine,
            clients,
            minter,
            config,
            metrics: Arc::new(Metrics::default()),
            rejections: Rejections::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The counters, for a `/metrics` endpoint.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Counts a request in the metrics, and a rejection in the log summary.
    fn count(&self, endpoint: Endpoint, error: Option<&OAuthError>, start: Instant) {
        let code = error.map(OAuthError::code);
        self.metrics.request(endpoint, code, start.elapsed());
        if let Some(code) = code.filter(|c| *c != ErrorCode::ServerError) {
            self.rejections.record(code, self.config.clock.now());
        }
    }

    /// Which route a path is, if any.
    pub fn route(&self, path: &str) -> Option<Route> {
        let c = &self.config;
        if path == c.token_path {
            Some(Route::Token)
        } else if path == c.revocation_path {
            Some(Route::Revocation)
        } else if path == c.introspection_path {
            Some(Route::Introspection)
        } else if path == METADATA_PATH {
            Some(Route::Metadata)
        } else if path == c.jwks_path {
            Some(Route::Jwks)
        } else {
            None
        }
    }

    /// Answers a request on any route, chosen by its path (404 JSON for others).
    pub fn handle<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Response<Bytes> {
        match self.route(request.uri().path()) {
            Some(route) => self.serve(route, request),
            None => OAuthError::not_found().into_response(),
        }
    }

    /// Answers a request on one route.
    pub fn serve<B: AsRef<[u8]>>(&self, route: Route, request: &Request<B>) -> Response<Bytes> {
        match route {
            Route::Token => self.token(request),
            Route::Revocation => self.revoke(request),
            Route::Introspection => self.introspect(request),
            Route::Metadata => self.metadata(request),
            Route::Jwks => self.jwks(request),
        }
    }

    /// The token endpoint: `grant_type=refresh_token` (RFC 6749 §6).
    pub fn token<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Response<Bytes> {
        let start = Instant::now();
        let result = self.token_inner(request);
        self.count(Endpoint::Token, result.as_ref().err(), start);
        let mut response = match result {
            Ok(r) => r.into_response(),
            Err(e) => e.into_response(),
        };
        if let Some(nonce) = self.dpop_nonce()
            && let Ok(v) = HeaderValue::try_from(nonce)
        {
            response.headers_mut().insert("dpop-nonce", v);
        }
        response
    }

    fn token_inner<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Result<TokenResponse, OAuthError> {
        let form = self.read_form(request)?;
        let grant_type = form
            .get("grant_type")
            .ok_or_else(|| OAuthError::invalid_request("grant_type is missing"))?;
        if grant_type != "refresh_token" {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "this endpoint supports grant_type=refresh_token only",
            ));
        }
        let client = self.authenticate(request, &form)?;
        if !client.refresh {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "this client may not use the refresh_token grant",
            ));
        }
        let token = form
            .get("refresh_token")
            .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
        let scope = match form.get("scope") {
            Some(s) => {
                Some(Scope::parse(s).map_err(|_| OAuthError::new(ErrorCode::InvalidScope, "the scope is malformed"))?)
            }
            None => None,
        };
        let url = self.config.url(&self.config.token_path);
        let proof = self.dpop_from(request.headers(), request.method().as_str(), &url)?;
        if let Some(proof) = &proof {
            // Remembered only for a request that could be honest: an
            // authenticated client and a refresh token whose authenticator
            // verifies (no storage read), so garbage cannot fill the cache.
            if !self.authenticates(token) {
                return Err(self.rotate_error(RotateError::InvalidToken, &client.id));
            }
            let now = self.config.clock.now().unix_timestamp();
            self.dpop.remember(proof, now).map_err(dpop_error)?;
        }
        let dpop = proof.map(|p| p.jkt);
        let mut rotate = RotateRequest::new(client.id.clone());
        rotate.scope = scope.clone();
        rotate.confirmation = dpop.clone();
        let rotated = self
            .engine
            .rotate(token, &rotate)
            .map_err(|e| self.rotate_error(e, &client.id))?;
        self.metrics.rotation(rotated.retried);
        tracing::debug!(
            client_id = %client.id,
            family = %rotated.family,
            generation = rotated.generation,
            retried = rotated.retried,
            dpop = dpop.is_some(),
            "refresh token rotated"
        );
        let access = self
            .minter
            .mint(&AccessTokenRequest {
                subject: &rotated.grant.subject,
                client_id: &client.id,
                scope: &rotated.scope,
                dpop_jkt: dpop.as_deref(),
                family: Some(&rotated.family),
                metadata: &rotated.grant.metadata,
                audience: self.audience(&client),
            })
            .map_err(|e| {
                tracing::error!(error = %e, client_id = %client.id, "minting the access token failed");
                OAuthError::server_error()
            })?;
        let requested = scope.as_ref().unwrap_or(&rotated.grant.scope);
        Ok(TokenResponse {
            access_token: access.value,
            token_type: if dpop.is_some() { "DPoP" } else { "Bearer" },
            expires_in: access.expires_in,
            refresh_token: Some(rotated.refresh_token.expose().to_owned()),
            refresh_token_expires_in: Some(self.seconds_until(rotated.expires_at)),
            scope: (rotated.scope != *requested).then(|| rotated.scope.to_string()),
        })
    }

    /// The OAuth error for a refused refresh. Every `invalid_grant`
    /// description starts with a stable cause (`refresh_token_reused:`,
    /// `session_revoked:`...) for the client's operator; none tells more
    /// than the presented token already does.
    fn rotate_error(&self, e: RotateError, client_id: &str) -> OAuthError {
        let code = e.code();
        let err = match e {
            RotateError::ReuseDetected { family } | RotateError::Diverged { family } => {
                self.metrics.reuse_detected();
                tracing::warn!(%family, client_id, reason = code, "refresh token reuse detected; family revoked");
                return OAuthError::invalid_grant(if code == "diverged" {
                    "refresh_token_diverged: the refresh token disagrees with the session's state, \
                     as when a copy of the session was used elsewhere; the session is revoked, sign in again"
                } else {
                    "refresh_token_reused: the refresh token was already used; \
                     the session is revoked, sign in again"
                });
            }
            RotateError::Malformed(_) | RotateError::InvalidToken | RotateError::Unknown => {
                OAuthError::invalid_grant("refresh_token_invalid: the refresh token is invalid")
            }
            RotateError::Revoked(_) => {
                OAuthError::invalid_grant("session_revoked: the refresh token's session is revoked; sign in again")
            }
            RotateError::Expired { .. } => {
                OAuthError::invalid_grant("session_expired: the refresh token has expired; sign in again")
            }
            RotateError::ClientMismatch => {
                OAuthError::invalid_grant("client_mismatch: the refresh token was issued to another client")
            }
            RotateError::ConfirmationMismatch => OAuthError::invalid_grant(
                "dpop_key_mismatch: the refresh token is bound to a DPoP key; send a DPoP proof made with that key",
            ),
            RotateError::TooManyGenerations => {
                OAuthError::invalid_grant("refresh_limit_reached: the session reached its refresh limit; sign in again")
            }
            RotateError::ScopeWidened => {
                OAuthError::new(ErrorCode::InvalidScope, "the requested scope exceeds the granted scope")
            }
            RotateError::InvalidInput(_) => OAuthError::invalid_request("a request parameter is invalid"),
            RotateError::Store(e) => {
                tracing::error!(error = %e, client_id, "refresh failed: storage error");
                return OAuthError::server_error();
            }
            other => {
                tracing::error!(error = %other, client_id, "refresh failed");
                return OAuthError::server_error();
            }
        };
        tracing::debug!(client_id, reason = code, "refresh refused");
        err
    }

    /// The `aud` for `client`'s access tokens: its own, else the server's
    /// (else the minter's default).
    fn audience<'a>(&'a self, client: &'a RegisteredClient) -> Option<&'a str> {
        client
            .audience
            .as_deref()
            .or(self.config.access_token_audience.as_deref())
    }

    /// Whole seconds from now until `at`, 0 if past.
    fn seconds_until(&self, at: time::OffsetDateTime) -> u64 {
        u64::try_from((at - self.config.clock.now()).whole_seconds()).unwrap_or(0)
    }

    /// The revocation endpoint (RFC 7009): revoking a refresh token revokes
    /// its family; unknown and invalid tokens answer 200.
    pub fn revoke<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Response<Bytes> {
        let start = Instant::now();
        let result = self.revoke_inner(request);
        self.count(Endpoint::Revoke, result.as_ref().err(), start);
        match result {
            Ok(()) => {
                // RFC 7009 §2.2: 200 with an empty body.
                let mut r = json_response(StatusCode::OK, Bytes::new());
                r.headers_mut().remove(header::CONTENT_TYPE);
                r
            }
            Err(e) => e.into_response(),
        }
    }

    fn revoke_inner<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Result<(), OAuthError> {
        let form = self.read_form(request)?;
        let client = self.authenticate(request, &form)?;
        let token = form
            .get("token")
            .ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
        // RFC 7009 §2.1: a client revokes only tokens issued to it; the core
        // checks the family's owner inside the revoking transaction, for
        // every generation of the family, not just the current token.
        let target = RevokeTarget::TokenOfClient {
            token,
            client_id: &client.id,
        };
        match self.engine.revoke(target) {
            Ok(n) => {
                self.metrics.revoked(n);
                tracing::info!(client_id = %client.id, families = n, "revocation");
                Ok(())
            }
            Err(RevokeError::ClientMismatch) => {
                tracing::debug!(client_id = %client.id, "revocation refused: the token belongs to another client");
                Err(OAuthError::new(
                    ErrorCode::UnauthorizedClient,
                    "the token was issued to another client",
                ))
            }
            // Not a refresh token: an access token is refused as RFC 7009
            // §2.2.1 allows, anything else is not an error (§2.2).
            Err(RevokeError::Malformed(_)) if self.minter.introspect(token).is_some() => Err(OAuthError::new(
                ErrorCode::UnsupportedTokenType,
                "access tokens are self-contained and expire on their own; revoke the refresh token",
            )),
            Err(RevokeError::Malformed(_) | RevokeError::InvalidToken | RevokeError::InvalidInput(_)) => Ok(()),
            Err(e) => {
                tracing::error!(error = %e, "revocation failed");
                Err(OAuthError::server_error())
            }
        }
    }

    /// The introspection endpoint (RFC 7662), for authenticated
    /// (confidential) clients. A client registered with `introspect` sees
    /// every token; any other sees only tokens issued to itself.
    pub fn introspect<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Response<Bytes> {
        let start = Instant::now();
        let result = self.introspect_inner(request);
        self.count(Endpoint::Introspect, result.as_ref().err(), start);
        match result {
            Ok(v) => json_response(StatusCode::OK, Bytes::from(v.to_string())),
            Err(e) => e.into_response(),
        }
    }

    fn introspect_inner<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Result<Value, OAuthError> {
        let form = self.read_form(request)?;
        let client = self.authenticate(request, &form)?;
        if !client.is_confidential() {
            return Err(OAuthError::invalid_client(
                "introspection requires client authentication with a secret",
            ));
        }
        let token = form
            .get("token")
            .ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
        let inactive = json!({ "active": false });
        let visible = |owner: Option<&str>| client.introspect || owner == Some(client.id.as_str());
        let i = self.engine.introspect(token).map_err(|e| {
            tracing::error!(error = %e, "introspection failed: storage error");
            OAuthError::server_error()
        })?;
        if i.active {
            if !visible(i.client_id.as_deref()) {
                return Ok(inactive);
            }
            let mut m = Map::new();
            m.insert("active".into(), true.into());
            if let Some(s) = i.scope {
                m.insert("scope".into(), s.to_string().into());
            }
            if let Some(c) = i.client_id {
                m.insert("client_id".into(), c.into());
            }
            if let Some(s) = i.sub {
                m.insert("sub".into(), s.into());
            }
            if let Some(e) = i.exp {
                m.insert("exp".into(), e.into());
            }
            if let Some(t) = i.iat {
                m.insert("iat".into(), t.into());
            }
            m.insert("iss".into(), self.config.issuer.clone().into());
            m.insert("token_type".into(), "refresh_token".into());
            if let Some(j) = i.cnf_jkt {
                m.insert("cnf".into(), json!({ "jkt": j }));
            }
            return Ok(Value::Object(m));
        }
        match self.minter.introspect(token) {
            Some(mut m) if visible(m.get("client_id").and_then(Value::as_str)) => {
                // RFC 7009 §2.1: an access token of a revoked (or expired)
                // family is inactive at once, not only when it expires.
                if let Some(sid) = m.get("sid").and_then(Value::as_str) {
                    let Ok(family) = sid.parse::<FamilyId>() else {
                        return Ok(inactive);
                    };
                    let live = self.engine.family_is_active(&family).map_err(|e| {
                        tracing::error!(error = %e, "introspection failed: storage error");
                        OAuthError::server_error()
                    })?;
                    if !live {
                        return Ok(inactive);
                    }
                }
                m.insert("active".into(), true.into());
                Ok(Value::Object(m))
            }
            _ => Ok(inactive),
        }
    }

    /// The authorization server metadata (RFC 8414).
    pub fn metadata<B>(&self, request: &Request<B>) -> Response<Bytes> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return OAuthError::method_not_allowed("GET").into_response();
        }
        let c = &self.config;
        let auth = ["client_secret_basic", "client_secret_post", "none"];
        let mut grant_types = vec!["refresh_token".to_owned()];
        grant_types.extend(c.extra_grant_types.iter().cloned());
        let mut m = json!({
            "issuer": c.issuer,
            "token_endpoint": c.url(&c.token_path),
            "revocation_endpoint": c.url(&c.revocation_path),
            "introspection_endpoint": c.url(&c.introspection_path),
            "jwks_uri": c.url(&c.jwks_path),
            "grant_types_supported": grant_types,
            "token_endpoint_auth_methods_supported": auth,
            "revocation_endpoint_auth_methods_supported": auth,
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "dpop_signing_alg_values_supported": DPOP_ALGORITHMS,
            // Token responses carry refresh_token_expires_in
            // (draft-ietf-oauth-refresh-token-expiration).
            "refresh_token_expires_in_supported": true,
        });
        // Only what is served: response types belong to an authorization
        // endpoint, which this server has only if the embedding one does.
        if let Some(a) = &c.authorization_endpoint {
            m["authorization_endpoint"] = a.clone().into();
            m["response_types_supported"] = json!(["code"]);
        }
        if !c.scopes_supported.is_empty() {
            m["scopes_supported"] = c.scopes_supported.clone().into();
        }
        let mut r = json_response(StatusCode::OK, Bytes::from(m.to_string()));
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
        r.headers_mut().remove(header::PRAGMA);
        r
    }

    /// The JWK Set of the access-token signing keys.
    pub fn jwks<B>(&self, request: &Request<B>) -> Response<Bytes> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return OAuthError::method_not_allowed("GET").into_response();
        }
        let mut r = json_response(StatusCode::OK, Bytes::from(self.minter.jwks().to_string()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/jwk-set+json"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
        r.headers_mut().remove(header::PRAGMA);
        r
    }

    /// Issues tokens for the server's own authorization-code exchange: an
    /// access token always, and a new refresh-token family only when the
    /// granted scope holds `offline_access`.
    ///
    /// # Errors
    ///
    /// [`IssueError::Core`] for an invalid grant or a storage failure,
    /// [`IssueError::Mint`] if the access token could not be minted.
    pub fn issue(&self, request: &IssueRequest) -> Result<TokenResponse, IssueError> {
        let mut grant = Grant::new(
            request.subject.clone(),
            request.client_id.clone(),
            request.scope.clone(),
        )
        .with_metadata(request.metadata.clone());
        if let Some(jkt) = &request.dpop_jkt {
            grant = grant.with_confirmation(jkt.clone());
        }
        grant.validate().map_err(rotoken::IssueError::from)?;
        let client = self
            .clients
            .client(&request.client_id)
            .map_err(IssueError::Registry)?
            .ok_or(IssueError::UnknownClient)?;
        let (refresh_token, family, expires_at) = if request.scope.contains(OFFLINE_ACCESS) {
            let issued = self.engine.issue(&grant)?;
            self.metrics.issued();
            tracing::info!(client_id = %request.client_id, family = %issued.family, "family issued");
            (
                Some(issued.refresh_token.expose().to_owned()),
                Some(issued.family),
                Some(issued.expires_at),
            )
        } else {
            (None, None, None)
        };
        let access = self.minter.mint(&AccessTokenRequest {
            subject: &request.subject,
            client_id: &request.client_id,
            scope: &request.scope,
            dpop_jkt: request.dpop_jkt.as_deref(),
            family: family.as_ref(),
            metadata: &request.metadata,
            audience: self.audience(&client),
        })?;
        Ok(TokenResponse {
            access_token: access.value,
            token_type: if request.dpop_jkt.is_some() { "DPoP" } else { "Bearer" },
            expires_in: access.expires_in,
            refresh_token,
            refresh_token_expires_in: expires_at.map(|at| self.seconds_until(at)),
            scope: None,
        })
    }

    /// Verifies the `DPoP` header of a request with `method` to `url` (for
    /// a server's own token endpoint) and returns the proven key's
    /// thumbprint; `None` without a header.
    ///
    /// # Errors
    ///
    /// [`DpopError`] for a bad, stale or replayed proof, or several headers.
    ///
    /// Call it once the exchange request is otherwise authenticated (client
    /// and code): the proof is remembered against replay here. With
    /// [`Config::dpop_nonce`] on, a proof without the current nonce gets
    /// [`DpopError::UseNonce`]: answer `use_dpop_nonce` with
    /// [`OAuthServer::dpop_nonce`] in a `DPoP-Nonce` header.
    pub fn dpop_thumbprint(&self, headers: &HeaderMap, method: &str, url: &str) -> Result<Option<String>, DpopError> {
        let Some(proof) = self.check_dpop(headers, method, url)? else {
            return Ok(None);
        };
        let now = self.config.clock.now().unix_timestamp();
        self.dpop.remember(&proof, now)?;
        Ok(Some(proof.jkt))
    }

    /// The DPoP nonce to send in `DPoP-Nonce` now, if nonces are on.
    pub fn dpop_nonce(&self) -> Option<String> {
        let nonces = self.nonces.as_ref()?.as_ref()?;
        Some(nonces.current(self.config.clock.now().unix_timestamp()))
    }

    /// Checks the `DPoP` header's proof and nonce, without remembering it.
    fn check_dpop(&self, headers: &HeaderMap, method: &str, url: &str) -> Result<Option<CheckedProof>, DpopError> {
        let mut values = headers.get_all("dpop").iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(DpopError::MultipleHeaders);
        }
        let proof = value
            .to_str()
            .map_err(|_| DpopError::Malformed("the header is not ASCII"))?;
        let now = self.config.clock.now().unix_timestamp();
        let checked = self.dpop.check(proof, method, url, now)?;
        match &self.nonces {
            None => {}
            Some(None) => return Err(DpopError::NonceUnavailable),
            Some(Some(nonces)) => {
                if !checked.nonce.as_deref().is_some_and(|n| nonces.accepts(n, now)) {
                    return Err(DpopError::UseNonce);
                }
            }
        }
        Ok(Some(checked))
    }

    fn dpop_from(&self, headers: &HeaderMap, method: &str, url: &str) -> Result<Option<CheckedProof>, OAuthError> {
        self.check_dpop(headers, method, url).map_err(dpop_error)
    }

    /// True if `token` is a refresh token with a valid authenticator from
    /// this server's keys. Reads no storage.
    fn authenticates(&self, token: &str) -> bool {
        rotoken::token::parse(token.as_bytes()).is_ok_and(|t| self.engine.keyring().verify(&t))
    }

    /// The client's address: the peer, or behind a trusted proxy the
    /// address it forwarded for (see [`Config::trusted_proxies`]).
    pub fn client_address<B>(&self, request: &Request<B>) -> Option<IpAddr> {
        let peer = request.extensions().get::<PeerAddr>().map(|p| p.0);
        client_address(peer, request.headers(), &self.config.trusted_proxies)
    }

    /// Method, size and content type, then the strict form parse.
    fn read_form<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Result<Form, OAuthError> {
        if request.method() != Method::POST {
            return Err(OAuthError::method_not_allowed("POST"));
        }
        let body = request.body().as_ref();
        if body.len() > self.config.max_body_bytes {
            return Err(OAuthError::payload_too_large());
        }
        let mut types = request.headers().get_all(header::CONTENT_TYPE).iter();
        let content_type = types.next();
        if types.next().is_some() {
            return Err(OAuthError::invalid_request("more than one Content-Type header"));
        }
        match content_type {
            Some(ct) if is_form(ct) => {}
            // No body and no type: an empty form, answered for its missing parameters.
            None if body.is_empty() => {}
            _ => return Err(OAuthError::unsupported_media_type()),
        }
        form::parse_form(body)
    }

    /// Client authentication: `client_secret_basic`, `client_secret_post`
    /// or `none`, throttled per (peer, client id).
    fn authenticate<B>(&self, request: &Request<B>, form: &Form) -> Result<RegisteredClient, OAuthError> {
        let presented = client::presented(request.headers(), form)?;
        let Some(id) = presented.id else {
            return Err(OAuthError::invalid_client("client authentication is required"));
        };
        let secret = presented.secret.filter(|s| !s.is_empty());
        let well_formed =
            id.len() <= MAX_CLIENT_ID_LEN && secret.as_ref().is_none_or(|s| s.len() <= MAX_CLIENT_SECRET_LEN);
        let client = if well_formed {
            self.clients.client(&id).map_err(|e| {
                tracing::error!(error = %e, "client registry failed");
                OAuthError::server_error()
            })?
        } else {
            None
        };
        let presented_secret = secret.as_ref().map(|s| s.as_bytes());
        let ok = match &client {
            Some(c) => match (&c.secret, presented_secret) {
                (Some(hash), Some(s)) => hash.verify(s),
                (None, None) => true,
                _ => false,
            },
            None => {
                if let Ok(dummy) = DUMMY_SECRET.parse::<client::SecretHash>() {
                    let _ = dummy.verify(presented_secret.unwrap_or_default());
                }
                false
            }
        };
        match client {
            // Always checked, always accepted: failures made by others
            // never lock out a correct credential.
            Some(c) if ok => Ok(c),
            _ => {
                self.metrics.auth_failure();
                let peer = self.client_address(request);
                let throttled = self.throttle.fail(peer, truncate(&id));
                tracing::debug!(client_id = ?truncate(&id), basic = presented.basic, throttled = throttled.is_err(), "client authentication failed");
                match throttled {
                    Ok(()) => Err(OAuthError::invalid_client("client authentication failed")),
                    Err(wait) => {
                        self.metrics.throttle();
                        Err(OAuthError::throttled(retry_after_secs(wait)))
                    }
                }
            }
        }
    }
}

/// The OAuth error for a refused DPoP proof.
fn dpop_error(e: DpopError) -> OAuthError {
    tracing::debug!(reason = %e, "DPoP proof refused");
    match e {
        DpopError::UseNonce => OAuthError::new(ErrorCode::UseDpopNonce, e.to_string()),
        DpopError::NonceUnavailable => OAuthError::server_error(),
        _ => OAuthError::new(ErrorCode::InvalidDpopProof, e.to_string()),
    }
}

/// At most 64 characters of an unauthenticated client id, for logs.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `application/x-www-form-urlencoded`, with any parameters (charset...).
fn is_form(value: &HeaderValue) -> bool {
    let Ok(s) = value.to_str() else {
        return false;
    };
    let essence = s.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
}
