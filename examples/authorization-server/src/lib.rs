//! # An authorization server that links rotoken in-process
//!
//! This is what a custom authorization server looks like when it embeds
//! rotoken instead of running `rotoken serve` beside it: its own
//! authorization endpoint and its own authorization-code exchange (with
//! PKCE), whose success calls [`OAuthServer::issue_async`]. That issues a refresh
//! token family only when `offline_access` was granted. The refresh grant,
//! revocation, introspection, metadata and JWKS are rotoken-http's.
//!
//! The login step is a stand-in (every authorization request is approved
//! for the user `alice`); a real server shows a login and consent page.
//!
//! ```
//! use std::sync::Arc;
//! use rotoken::{Engine, Keyring, Options};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let engine = Engine::open(dir.path().join("as.redb"), Keyring::generate()?, Options::default())?;
//! let app = rotoken_example_authorization_server::App::new(
//!     Arc::new(engine),
//!     "http://127.0.0.1:9090",
//!     rotoken_http::SigningKey::generate_ed25519()?,
//! );
//! let router: axum::Router = rotoken_example_authorization_server::router(Arc::new(app));
//! # let _ = router;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::{any, get};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use rotoken::{Engine, Scope};
use rotoken_http::{
    Config, ErrorCode, IssueRequest, JwtMinter, MemoryClients, OAuthError, OAuthServer, OAuthService, RegisteredClient,
    Route, SigningKey,
};
use sha2::Digest as _;

/// The one client this example knows: a public browser app using PKCE.
pub const CLIENT_ID: &str = "demo-app";
/// Where it may be sent back to.
pub const REDIRECT_URI: &str = "http://127.0.0.1:3000/callback";
/// How long an authorization code is good for.
const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// Largest token request body.
const MAX_BODY: usize = 16 * 1024;

/// A code waiting to be exchanged.
struct Pending {
    subject: String,
    client_id: String,
    redirect_uri: String,
    scope: Scope,
    code_challenge: String,
    issued: Instant,
}

/// The server's state: rotoken's endpoints and the codes in flight.
pub struct App {
    oauth: Arc<OAuthServer>,
    codes: Mutex<HashMap<String, Pending>>,
}

impl App {
    /// The app over `engine`, answering as `issuer`, signing access tokens with `key`.
    pub fn new(engine: Arc<Engine>, issuer: &str, key: SigningKey) -> Self {
        let clients = MemoryClients::new().with(RegisteredClient::public(CLIENT_ID));
        let minter = JwtMinter::new(key, issuer, Duration::from_secs(300));
        let mut config = Config::new(issuer);
        config.authorization_endpoint = Some(format!("{}/authorize", issuer.trim_end_matches('/')));
        config.extra_grant_types = vec!["authorization_code".into()];
        config.scopes_supported = vec!["openid".into(), "profile".into(), "offline_access".into()];
        Self {
            oauth: Arc::new(OAuthServer::new(engine, Arc::new(clients), Arc::new(minter), config)),
            codes: Mutex::new(HashMap::new()),
        }
    }

    /// rotoken's endpoints.
    pub fn oauth(&self) -> &Arc<OAuthServer> {
        &self.oauth
    }

    /// `GET /authorize?response_type=code&client_id&redirect_uri&scope&state&code_challenge&code_challenge_method=S256`
    fn authorize(&self, query: &str) -> Result<Response, OAuthError> {
        let q = rotoken_http::parse_form(query.as_bytes())?;
        let param = |name: &'static str| {
            q.get(name)
                .ok_or_else(|| OAuthError::invalid_request(format!("{name} is missing")))
        };
        if param("client_id")? != CLIENT_ID || param("redirect_uri")? != REDIRECT_URI {
            // Never redirect to an unregistered URI (RFC 6749 §4.1.2.1).
            return Err(OAuthError::invalid_request("unknown client or redirect_uri"));
        }
        if param("response_type")? != "code" || q.get("code_challenge_method") != Some("S256") {
            return Err(OAuthError::invalid_request(
                "response_type=code with PKCE S256 is required",
            ));
        }
        let scope = Scope::parse(q.get("scope").unwrap_or("openid"))
            .map_err(|_| OAuthError::new(ErrorCode::InvalidScope, "the scope is malformed"))?;
        // A real server authenticates the user and asks for consent here.
        let code = random()?;
        let pending = Pending {
            subject: "alice".into(),
            client_id: CLIENT_ID.into(),
            redirect_uri: REDIRECT_URI.into(),
            scope,
            code_challenge: param("code_challenge")?.to_owned(),
            issued: Instant::now(),
        };
        self.codes
            .lock()
            .map_err(|_| OAuthError::server_error())?
            .insert(code.clone(), pending);
        let mut location = format!("{REDIRECT_URI}?code={code}");
        if let Some(state) = q.get("state") {
            location.push_str("&state=");
            location.push_str(&percent_encode(state));
        }
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::FOUND;
        r.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(&location).map_err(|_| OAuthError::server_error())?,
        );
        Ok(r)
    }

    /// The authorization-code exchange (RFC 6749 §4.1.3, RFC 7636 §4.6),
    /// ending in [`OAuthServer::issue_async`].
    async fn exchange(&self, request: &http::Request<Bytes>) -> Result<rotoken_http::TokenResponse, OAuthError> {
        let form = rotoken_http::parse_form(request.body())?;
        let param = |name: &'static str| {
            form.get(name)
                .ok_or_else(|| OAuthError::invalid_request(format!("{name} is missing")))
        };
        let code = param("code")?;
        // One use only: the code leaves the map whatever happens next.
        let pending = self
            .codes
            .lock()
            .map_err(|_| OAuthError::server_error())?
            .remove(code)
            .ok_or_else(|| OAuthError::invalid_grant("the code is invalid or was already used"))?;
        if pending.issued.elapsed() > CODE_LIFETIME {
            return Err(OAuthError::invalid_grant("the code has expired"));
        }
        if param("client_id")? != pending.client_id {
            return Err(OAuthError::invalid_grant("the code was issued to another client"));
        }
        if param("redirect_uri")? != pending.redirect_uri {
            return Err(OAuthError::invalid_grant("redirect_uri does not match"));
        }
        let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(param("code_verifier")?.as_bytes()));
        if challenge != pending.code_challenge {
            return Err(OAuthError::invalid_grant("the code_verifier does not match"));
        }
        // A DPoP proof on the exchange binds the family to the client's key.
        let url = self.oauth.config().url(&self.oauth.config().token_path);
        let confirmation = self.oauth.dpop_thumbprint(request.headers(), "POST", &url)?;
        let mut issue = IssueRequest::new(pending.subject, pending.client_id, pending.scope);
        issue.confirmation = confirmation;
        // In-process: a family (when offline_access was granted) and an access token.
        // An unknown client is `invalid_client`, a storage failure `server_error`.
        Ok(self
            .oauth
            .issue_async(&issue)
            .await
            .inspect_err(|e| tracing::error!(error = %e, "issuing failed"))?)
    }

    /// The token endpoint: `authorization_code` here, everything else rotoken's.
    async fn token(&self, request: &http::Request<Bytes>) -> http::Response<Bytes> {
        let is_form = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let is_code = request.method() == http::Method::POST
            && is_form
            && rotoken_http::parse_form(request.body())
                .is_ok_and(|f| f.get("grant_type") == Some("authorization_code"));
        if !is_code {
            // Anything else, malformed requests included, gets rotoken's answer.
            return self.oauth.token_async(request).await;
        }
        match self.exchange(request).await {
            Ok(tokens) => tokens.into_response(),
            Err(e) => e.into_response(),
        }
    }
}

/// 32 random bytes, base64url.
fn random() -> Result<String, OAuthError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|_| OAuthError::server_error())?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn to_axum(r: http::Response<Bytes>) -> Response {
    r.map(Body::from)
}

/// The routes: `/authorize` and `/oauth/token` here, and rotoken's
/// revocation, introspection, metadata and JWKS.
pub fn router(app: Arc<App>) -> Router {
    let authorize = {
        let app = app.clone();
        move |request: Request| async move {
            let query = request.uri().query().unwrap_or_default().to_owned();
            match app.authorize(&query) {
                Ok(r) => r,
                Err(e) => to_axum(e.into_response()),
            }
        }
    };
    let token = {
        let app = app.clone();
        move |request: Request| async move {
            let (parts, body) = request.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
                return to_axum(OAuthError::payload_too_large().into_response());
            };
            to_axum(app.token(&http::Request::from_parts(parts, bytes)).await)
        }
    };
    // rotoken-http answers the other endpoints; /oauth/token is ours.
    let c = app.oauth.config();
    let others = [
        (c.revocation_path.clone(), Route::Revocation),
        (c.introspection_path.clone(), Route::Introspection),
        (rotoken_http::METADATA_PATH.to_owned(), Route::Metadata),
        (c.jwks_path.clone(), Route::Jwks),
    ];
    let token_path = c.token_path.clone();
    others.into_iter().fold(
        Router::new()
            .route("/authorize", get(authorize))
            .route(&token_path, any(token)),
        |r, (path, route)| r.route_service(&path, OAuthService::route(app.oauth.clone(), route)),
    )
}
