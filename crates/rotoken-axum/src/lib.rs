//! # rotoken-axum
//!
//! [`router`] returns an axum [`Router`] serving rotoken's OAuth
//! endpoints: the token endpoint (refresh grant), revocation,
//! introspection, the RFC 8414 metadata document and the JWK Set, at the
//! paths in the [`rotoken_http::Config`]; [`admin_router`] mounts the admin
//! API ([`rotoken_http::AdminApi`]); [`health_router`] and
//! [`metrics_router`] answer `/healthz` and `/metrics` as `rotoken serve`
//! does. Everything else is in
//! [`rotoken_http`]; this crate only mounts it.
//!
//! ```
//! use std::sync::Arc;
//! use rotoken::{Engine, Keyring, Options};
//! use rotoken_http::{Config, JwtMinter, MemoryClients, OAuthServer, RegisteredClient, SigningKey};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let engine = Arc::new(Engine::open(dir.path().join("t.redb"), Keyring::generate()?, Options::default())?);
//! let issuer = "http://127.0.0.1:8080";
//! let minter = JwtMinter::new(SigningKey::generate_ed25519()?, issuer, std::time::Duration::from_secs(300));
//! let clients = MemoryClients::new().with(RegisteredClient::public("web-app"));
//! let oauth = Arc::new(OAuthServer::new(engine, Arc::new(clients), Arc::new(minter), Config::new(issuer)));
//!
//! // Your own routes (authorize, login...) merge with these.
//! let app: axum::Router = rotoken_axum::router(oauth);
//! // axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await?;
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so
//! that failed client authentications are throttled per peer address.

#![forbid(unsafe_code)]

mod ops;

pub use ops::{health_router, metrics_router};

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use rotoken_http::{AdminApi, AdminRoute, AdminService, METADATA_PATH, OAuthServer, OAuthService, PeerAddr, Route};
use tower::util::MapRequestLayer;

/// The OAuth routes of `server`: token, revocation, introspection (POST),
/// metadata and JWKS (GET). Other methods get the RFC 6749 §5.2 error JSON
/// with 405, never axum's empty default. The router takes any state type
/// `S`, so it merges into your own router before or after `with_state`.
pub fn router<S: Clone + Send + Sync + 'static>(server: Arc<OAuthServer>) -> Router<S> {
    let c = server.config();
    let routes = [
        (c.token_path.clone(), Route::Token),
        (c.revocation_path.clone(), Route::Revocation),
        (c.introspection_path.clone(), Route::Introspection),
        (METADATA_PATH.to_owned(), Route::Metadata),
        (c.jwks_path.clone(), Route::Jwks),
    ];
    routes
        .into_iter()
        .fold(Router::new(), |r, (path, route)| {
            r.route_service(&path, OAuthService::route(server.clone(), route))
        })
        .layer(MapRequestLayer::new(peer_addr))
}

/// The admin API routes of `api` (`/admin/families`, `/admin/revoke`,
/// `/admin/sessions`, `/admin/events`, `/admin/backup`), for a listener
/// only your own servers reach. Any state type `S`, as [`router`].
pub fn admin_router<S: Clone + Send + Sync + 'static>(api: Arc<AdminApi>) -> Router<S> {
    AdminRoute::ALL
        .into_iter()
        .fold(Router::new(), |r, (path, route)| {
            r.route_service(path, AdminService::route(api.clone(), route))
        })
        .layer(MapRequestLayer::new(peer_addr))
}

/// Copies axum's connection info into the extension rotoken-http reads.
fn peer_addr(mut request: Request) -> Request {
    if let Some(ConnectInfo(addr)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        request.extensions_mut().insert(PeerAddr(addr.ip()));
    }
    request
}

/// The Rust snippets of the README and the guides in `docs/`, compiled
/// (and, unless marked `no_run`, run) by `cargo test --doc -p rotoken-axum`:
/// this crate's tests depend on everything they use. `tests/docs.rs`
/// checks that every document with a Rust snippet is listed here.
#[cfg(doctest)]
mod doc_snippets {
    #[doc = include_str!("../../../README.md")]
    struct Readme;

    #[doc = include_str!("../../../docs/integration.md")]
    struct Integration;

    #[doc = include_str!("../../../crates/rotoken-http/README.md")]
    struct HttpReadme;

    #[doc = include_str!("../../../crates/rotoken-axum/README.md")]
    struct AxumReadme;

    #[doc = include_str!("../../../crates/rotoken/README.md")]
    struct CoreReadme;
}
