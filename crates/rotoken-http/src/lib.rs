//! # rotoken-http
//!
//! OAuth 2.0 endpoints over the [`rotoken`] engine, on plain [`http`]
//! request and response types, so hyper, axum, actix or a gateway can
//! mount them (a [`tower::Service`](OAuthService) ships too):
//!
//! * the token endpoint for `grant_type=refresh_token` (RFC 6749 §6, §5.1,
//!   §5.2), with client authentication `client_secret_basic`,
//!   `client_secret_post` and `none` through a [`ClientRegistry`];
//! * revocation (RFC 7009) and introspection (RFC 7662);
//! * DPoP proofs (RFC 9449) for families bound to a key;
//! * authorization server metadata (RFC 8414) and the JWK Set of the
//!   access-token signing keys;
//! * [`OAuthServer::issue_async`] for the server's own authorization-code
//!   exchange: a refresh token only when `offline_access` was granted.
//!
//! Every rule lives in the core; this crate translates.
//!
//! Async first: each endpoint's one implementation is an `async` method
//! ([`OAuthServer::serve_async`], [`OAuthServer::handle_async`],
//! [`OAuthServer::issue_async`], ...) that awaits the [`ClientRegistry`] and
//! the [`AccessTokenMinter`] you supply (both async traits, implemented
//! with [`async_trait`](macro@async_trait)) and the engine's commit. The sync forms below
//! ([`OAuthServer::handle`], [`OAuthServer::issue`]) wait for them on the
//! calling thread: fine in tests and blocking contexts, never on an async
//! runtime's own threads.
//!
//! ```
//! use std::sync::Arc;
//! use rotoken::{Engine, Keyring, Options, Scope};
//! use rotoken_http::{Config, IssueRequest, JwtMinter, MemoryClients, OAuthServer, RegisteredClient, SigningKey};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let engine = Arc::new(Engine::open(dir.path().join("t.redb"), Keyring::generate()?, Options::default())?);
//! let issuer = "http://127.0.0.1:8080";
//! let clients = MemoryClients::new().with(RegisteredClient::public("web-app"));
//! let minter = JwtMinter::new(SigningKey::generate_ed25519()?, issuer, std::time::Duration::from_secs(300));
//! let server = OAuthServer::new(engine, Arc::new(clients), Arc::new(minter), Config::new(issuer));
//!
//! // The server's own authorization-code exchange granted offline_access:
//! let first = server.issue(&IssueRequest::new("alice", "web-app", Scope::parse("openid offline_access")?))?;
//! let refresh_token = first.refresh_token.expect("offline_access was granted");
//!
//! // The client refreshes at the token endpoint.
//! let request = http::Request::post("/oauth/token")
//!     .header("content-type", "application/x-www-form-urlencoded")
//!     .body(format!("grant_type=refresh_token&client_id=web-app&refresh_token={refresh_token}"))?;
//! let response = server.handle(&request);
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.headers()["cache-control"], "no-store");
//! let json: serde_json::Value = serde_json::from_slice(response.body())?;
//! assert_eq!(json["token_type"], "Bearer");
//! assert_ne!(json["refresh_token"], refresh_token.as_str());
//!
//! // Replaying the old token after the grace window revokes the family;
//! // within it (as here) the client gets the same successor again.
//! let again: serde_json::Value = serde_json::from_slice(server.handle(&request).body())?;
//! assert_eq!(again["refresh_token"], json["refresh_token"]);
//! # Ok(())
//! # }
//! ```
//!
//! Error answers are RFC 6749 §5.2 JSON (`invalid_request`,
//! `invalid_client`, `invalid_grant`, `unauthorized_client`,
//! `unsupported_grant_type`, `invalid_scope`, plus `invalid_dpop_proof`).
//! Store trouble and deadlines (every [`rotoken::Code::is_retryable`]
//! code) are 503 `temporarily_unavailable` with `Retry-After`
//! ([`Config::retry_after`]) at every endpoint and in the admin API:
//! nothing was decided against the client, which retries the same request
//! with the same refresh token. The only other 5xx is 500 `server_error`
//! (damaged data, wrong keys, a failing minter or registry). Put a
//! [`RequestDeadline`] in a request's extensions and the engine never
//! applies it later than that (see [`RequestDeadline`]). Logs (`tracing`)
//! never contain a token or a secret.

#![forbid(unsafe_code)]

mod admin;
mod atomic_file;
mod backup_path;
mod clients_file;
mod config_setters;
mod core_error;
mod credentials;
mod dpop;
mod dpop_nonce;
mod endpoints;
mod engine_metrics;
mod error;
mod event_json;
mod form;
mod forwarded;
mod jwt;
mod metrics;
mod minter;
mod registry;
mod rejections;
mod replay;
mod secret_hash;
mod server;
#[cfg(feature = "tower")]
mod service;
mod signing_key;
mod signing_keys;
mod throttle;

pub use admin::{
    AdminApi, AdminRoute, DEFAULT_EVENTS_LIMIT, MAX_ADMIN_BODY, MAX_EVENTS_LIMIT, SessionJson, SessionsJson,
};
/// The attribute for implementing [`ClientRegistry`] and
/// [`AccessTokenMinter`] (the `async-trait` crate's): `#[rotoken_http::async_trait]`.
pub use async_trait::async_trait;
pub use clients_file::{ClientEntry, FileClients};
pub use dpop::{DPOP_ALGORITHMS, DpopError, MAX_PROOF_LEN, jwk_thumbprint};
pub use endpoints::issue::{IssueRequest, issue_rule};
pub use endpoints::token::TokenResponse;
#[allow(deprecated)]
pub use error::IssueError;
pub use error::{
    BoxError, ClientFileError, DEFAULT_RETRY_AFTER_SECS, ErrorCode, IssueTokensError, MintError, OAuthError,
    RegistryError, SigningKeyError,
};
pub use event_json::{EventJson, EventsJson};
pub use form::{Form, parse_form};
pub use forwarded::client_address;
pub use ipnet::IpNet;
pub use jwt::{ClaimsHook, JwtMinter, RESERVED_CLAIMS};
pub use metrics::{METRICS_CONTENT_TYPE, Metrics};
pub use minter::{AccessToken, AccessTokenMinter, AccessTokenRequest};
pub use registry::{ClientRegistry, MemoryClients, RegisteredClient};
pub use secret_hash::{MAX_CLIENT_ID_LEN, MAX_CLIENT_SECRET_LEN, MIN_CLIENT_SECRET_LEN, SecretHash, SecretHashError};
pub use server::{Config, METADATA_PATH, OAuthServer, OFFLINE_ACCESS, PeerAddr, RequestDeadline, Route};
#[cfg(feature = "tower")]
pub use service::{AdminService, OAuthService};
pub use signing_key::SigningKey;
pub use signing_keys::{RetiredKey, SigningKeys};
pub use throttle::{DEFAULT_THROTTLE_CAPACITY, Throttle};
