//! The OAuth server's configuration and shared state, and routing; each
//! endpoint lives in its own file under `endpoints/` and translates a
//! request into one core call and the core's answer into an RFC response.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future::block_on;
use http::{HeaderValue, Method, Request, Response, header};
use rotoken::{Clock, Engine};

use ipnet::IpNet;

use crate::dpop::DpopVerifier;
use crate::dpop_nonce::Nonces;
use crate::error::{ErrorCode, OAuthError};
use crate::form::{self, Form};
use crate::forwarded::client_address;
use crate::metrics::{Endpoint, Metrics};
use crate::minter::AccessTokenMinter;
use crate::registry::ClientRegistry;
use crate::rejections::Rejections;
use crate::replay::ReplayCache;
use crate::throttle::{DEFAULT_THROTTLE_CAPACITY, Throttle};

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
    /// Where time comes from. `None` (the default): the engine's clock
    /// ([`Engine::clock`]), so a test's `ManualClock` is given once, in the
    /// engine's options.
    pub clock: Option<Arc<dyn Clock>>,
    /// The directory `POST /admin/backup` may write into (the admin API's
    /// backups go nowhere else). `None` (the default): backups through the
    /// admin API are off. `rotoken serve` sets the database's directory.
    pub backup_dir: Option<PathBuf>,
    /// The `Retry-After` (whole seconds, at least 1) of a 503
    /// `temporarily_unavailable` answer: store trouble, a family busy in
    /// another transaction, a request whose deadline passed. Default 1 s.
    pub retry_after: Duration,
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
            clock: None,
            backup_dir: None,
            retry_after: Duration::from_secs(1),
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

/// The latest instant the request's work may be applied, if the adapter
/// sets one: put it in the request's extensions, as [`PeerAddr`]. The
/// token endpoint passes it to the engine ([`rotoken::RotateRequest::deadline`]);
/// revocation, introspection and the admin API refuse a request whose
/// deadline has passed before they ask the store. A request past its
/// deadline is answered 503 `temporarily_unavailable` with `Retry-After`
/// and nothing of it is applied, so the client retries the same token.
/// Without it the engine's own bound applies ([`rotoken::Options::deadline`]).
///
/// Set it to the time the request was read plus what its client waits,
/// less the store's longest call, so that the engine has answered before
/// the client (or a proxy) gives up: `rotoken serve` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestDeadline(pub Instant);

/// The peer's address, if the adapter knows it: put it in the request's
/// extensions so that failed client authentication is throttled per peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub IpAddr);

/// The OAuth endpoints over one [`Engine`]. `Send + Sync`: share it behind an `Arc`.
///
/// Async first: [`serve_async`](OAuthServer::serve_async),
/// [`handle_async`](OAuthServer::handle_async),
/// [`token_async`](OAuthServer::token_async),
/// [`revoke_async`](OAuthServer::revoke_async),
/// [`introspect_async`](OAuthServer::introspect_async) and
/// [`issue_async`](OAuthServer::issue_async) hold each endpoint's logic and
/// await the [`ClientRegistry`], the [`AccessTokenMinter`] and the engine's
/// commit without blocking the runtime's thread (the
/// [`OAuthService`](crate::OAuthService) calls them). The sync forms
/// (`serve`, `handle`, `token`, ...) wait for the async ones on the calling
/// thread, and may block on the engine's durable commit: call them outside
/// an async runtime, or from its blocking pool. A registry or minter whose
/// futures need a tokio runtime (a tokio-postgres pool, say) must be called
/// through the async forms, or the sync ones from inside a runtime's
/// blocking thread (`tokio::task::spawn_blocking`).
pub struct OAuthServer {
    pub(crate) engine: Arc<Engine>,
    pub(crate) clients: Arc<dyn ClientRegistry>,
    pub(crate) minter: Arc<dyn AccessTokenMinter>,
    pub(crate) config: Config,
    pub(crate) throttle: Throttle,
    pub(crate) dpop: DpopVerifier,
    /// `None`: nonces off; `Some(None)`: on, but no key could be drawn
    /// (every DPoP request then fails closed with `server_error`).
    pub(crate) nonces: Option<Option<Nonces>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) rejections: Rejections,
    /// The configured clock, else the engine's.
    pub(crate) clock: Arc<dyn Clock>,
}

impl fmt::Debug for OAuthServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthServer")
            .field("engine", &self.engine)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

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
        let clock = config.clock.clone().unwrap_or_else(|| Arc::clone(engine.clock()));
        let nonces = config.dpop_nonce.then(|| {
            Nonces::new(config.dpop_nonce_lifetime.as_secs())
                .inspect_err(|e| tracing::error!(error = %e, "no key for DPoP nonces: DPoP requests will fail"))
                .ok()
        });
        let metrics = Arc::new(Metrics::for_engine(&engine));
        Self {
            throttle: Throttle::new(
                config.auth_max_failures,
                config.auth_failure_window,
                config.auth_throttle_capacity,
                Arc::clone(&clock),
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
            clock,
            metrics,
            rejections: Rejections::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The clock the endpoints read (the configured one, else the engine's).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
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
    pub(crate) fn count(&self, endpoint: Endpoint, error: Option<&OAuthError>, start: Instant) {
        let code = error.map(OAuthError::code);
        self.metrics.request(endpoint, code, start.elapsed());
        if let Some(code) = code.filter(|c| !matches!(c, ErrorCode::ServerError | ErrorCode::TemporarilyUnavailable)) {
            self.rejections.record(code, self.clock.now());
        }
    }

    /// The response for an endpoint's error: a 503 `temporarily_unavailable`
    /// carries the configured `Retry-After` and is counted by its cause.
    pub(crate) fn error_response(&self, e: OAuthError) -> Response<Bytes> {
        if e.code() != ErrorCode::TemporarilyUnavailable {
            return e.into_response();
        }
        self.metrics.unavailable(e.core_code());
        e.with_retry_after(self.config.retry_after.as_secs()).into_response()
    }

    /// The request's deadline, if its adapter set one ([`RequestDeadline`]).
    pub(crate) fn deadline<B>(request: &Request<B>) -> Option<Instant> {
        request.extensions().get::<RequestDeadline>().map(|d| d.0)
    }

    /// `deadline_passed` (503) if the request's deadline has passed: for
    /// the operations the engine takes no deadline for, checked before the
    /// store is asked.
    pub(crate) fn before_deadline<B>(request: &Request<B>) -> Result<(), OAuthError> {
        match Self::deadline(request) {
            Some(d) if Instant::now() >= d => Err(OAuthError::from_code(rotoken::Code::DeadlinePassed)),
            _ => Ok(()),
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
    pub async fn handle_async<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Response<Bytes> {
        match self.route(request.uri().path()) {
            Some(route) => self.serve_async(route, request).await,
            None => OAuthError::not_found().into_response(),
        }
    }

    /// Answers a request on one route: the endpoints' one implementation,
    /// which awaits the client registry, the minter and the engine.
    pub async fn serve_async<B: AsRef<[u8]>>(&self, route: Route, request: &Request<B>) -> Response<Bytes> {
        match route {
            Route::Token => self.token_async(request).await,
            Route::Revocation => self.revoke_async(request).await,
            Route::Introspection => self.introspect_async(request).await,
            Route::Metadata => self.metadata(request),
            Route::Jwks => self.jwks(request),
        }
    }

    /// [`OAuthServer::handle_async`], waited for on the calling thread.
    pub fn handle<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Response<Bytes> {
        block_on(self.handle_async(request))
    }

    /// [`OAuthServer::serve_async`], waited for on the calling thread.
    pub fn serve<B: AsRef<[u8]>>(&self, route: Route, request: &Request<B>) -> Response<Bytes> {
        block_on(self.serve_async(route, request))
    }

    /// The client's address: the peer, or behind a trusted proxy the
    /// address it forwarded for (see [`Config::trusted_proxies`]).
    pub fn client_address<B>(&self, request: &Request<B>) -> Option<IpAddr> {
        let peer = request.extensions().get::<PeerAddr>().map(|p| p.0);
        client_address(peer, request.headers(), &self.config.trusted_proxies)
    }

    /// Method, size and content type, then the strict form parse.
    pub(crate) fn read_form<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Result<Form, OAuthError> {
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
}

/// `application/x-www-form-urlencoded`, with any parameters (charset...).
pub(crate) fn is_form(value: &HeaderValue) -> bool {
    let Ok(s) = value.to_str() else {
        return false;
    };
    let essence = s.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
}
