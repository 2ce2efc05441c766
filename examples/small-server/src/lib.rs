//! # A small server of its own, linking rotoken
//!
//! Password login (`POST /login`) issues a refresh-token family through
//! [`OAuthServer::issue_async`]; clients refresh, revoke and introspect at
//! the endpoints [`rotoken_axum::router`] mounts; access tokens are the
//! server's own ([`HmacMinter`]); `POST /logout-everywhere` revokes every
//! family of the access token's subject; a replayed refresh token is
//! recorded against its user ([`Server::reused_subjects`]).

#![forbid(unsafe_code)]

mod minter;
mod users;

pub use minter::HmacMinter;
pub use users::Users;

use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use rotoken::{Engine, EventKind, InvalidInput, Notice, RevokeTarget, Scope, StoreError};
use rotoken_http::{Config, IssueRequest, MemoryClients, OAuthError, OAuthServer, RegisteredClient};
use serde::Deserialize;
use serde_json::json;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The one client: the server's own web app (public, refreshing at `/oauth/token`).
pub const CLIENT_ID: &str = "web-app";

/// The server's state.
pub struct Server {
    oauth: Arc<OAuthServer>,
    users: Users,
    minter: Arc<HmacMinter>,
    scope: Scope,
    reused: Arc<Mutex<Vec<String>>>,
}

/// Could not set the server up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The engine's event thread did not start.
    #[error(transparent)]
    Subscribe(#[from] StoreError),
    /// The login scope did not parse.
    #[error(transparent)]
    Scope(#[from] InvalidInput),
}

impl Server {
    /// The server over `engine`, answering as `issuer`, for `users`, with access tokens from `minter`.
    ///
    /// # Errors
    ///
    /// [`SetupError`] if the engine cannot deliver events.
    pub fn new(engine: Arc<Engine>, issuer: &str, users: Users, minter: HmacMinter) -> Result<Arc<Self>, SetupError> {
        let reused = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&reused);
        engine.subscribe(move |notice: &Notice| {
            if let (EventKind::ReuseDetected { .. }, Some(grant)) = (notice.event.kind, &notice.grant) {
                record
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(grant.subject.clone());
            }
        })?;
        let minter = Arc::new(minter);
        let clients = MemoryClients::new().with(RegisteredClient::public(CLIENT_ID));
        let oauth = OAuthServer::new(engine, Arc::new(clients), minter.clone(), Config::new(issuer));
        Ok(Arc::new(Self {
            oauth: Arc::new(oauth),
            users,
            minter,
            scope: Scope::parse("openid offline_access")?,
            reused,
        }))
    }

    /// The subjects whose family was revoked because a refresh token was replayed.
    pub fn reused_subjects(&self) -> Vec<String> {
        self.reused.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// The public routes: login, logout everywhere, the OAuth endpoints and `/healthz`.
pub fn app(server: Arc<Server>) -> Router {
    Router::new()
        .route("/login", post(login))
        .route("/logout-everywhere", post(logout_everywhere))
        .with_state(server.clone())
        .merge(rotoken_axum::router(server.oauth.clone()))
        .merge(rotoken_axum::health_router(server.oauth.clone()))
}

/// `/metrics` and `/healthz`, for an internal listener.
pub fn internal_app(server: &Server) -> Router {
    rotoken_axum::metrics_router(server.oauth.clone()).merge(rotoken_axum::health_router(server.oauth.clone()))
}

/// A login form, JSON or URL-encoded; the password is wiped when dropped.
#[derive(Deserialize, Zeroize, ZeroizeOnDrop)]
struct Credentials {
    username: String,
    password: String,
}

impl<S: Send + Sync> FromRequest<S> for Credentials {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let content_type = request.headers().get(header::CONTENT_TYPE);
        if content_type.is_some_and(|v| v.as_bytes().starts_with(b"application/json")) {
            Ok(Json::from_request(request, state)
                .await
                .map_err(IntoResponse::into_response)?
                .0)
        } else {
            Ok(Form::from_request(request, state)
                .await
                .map_err(IntoResponse::into_response)?
                .0)
        }
    }
}

fn unauthorized(error: &str) -> Response {
    let challenge = [(header::WWW_AUTHENTICATE, "Bearer")];
    (StatusCode::UNAUTHORIZED, challenge, Json(json!({ "error": error }))).into_response()
}

fn oauth_error(error: impl Into<OAuthError>) -> Response {
    error.into().into_response().map(Body::from)
}

async fn login(State(server): State<Arc<Server>>, credentials: Credentials) -> Response {
    // Argon2 takes tens of milliseconds: off the runtime's threads.
    let checker = Arc::clone(&server);
    let username = credentials.username.clone();
    let valid = tokio::task::spawn_blocking(move || checker.users.verify(&credentials.username, &credentials.password));
    if !valid.await.unwrap_or(false) {
        return unauthorized("invalid_credentials");
    }
    let request = IssueRequest::new(username, CLIENT_ID, server.scope.clone());
    match server.oauth.issue_async(&request).await {
        Ok(tokens) => tokens.into_response().map(Body::from),
        Err(e) => oauth_error(e),
    }
}

async fn logout_everywhere(State(server): State<Arc<Server>>, request: Request) -> Response {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = bearer.and_then(|v| v.strip_prefix("Bearer "));
    let now = server.oauth.clock().now();
    let Some(claims) = token.and_then(|t| server.minter.verify(t, now)) else {
        return unauthorized("invalid_token");
    };
    match server
        .oauth
        .engine()
        .revoke_async(RevokeTarget::Subject(&claims.sub))
        .await
    {
        Ok(revoked) => {
            server.oauth.metrics().record_revocations(revoked);
            Json(json!({ "revoked": revoked })).into_response()
        }
        Err(e) => oauth_error(e),
    }
}
