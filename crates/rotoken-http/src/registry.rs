//! Registered clients and the registry a server implements.

use std::collections::HashMap;

use crate::error::RegistryError;
use crate::secret_hash::SecretHash;

/// A registered client, as a [`ClientRegistry`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegisteredClient {
    /// The client id.
    pub id: String,
    /// The hash of its secret; `None` for a public client (authentication method `none`).
    pub secret: Option<SecretHash>,
    /// May use the `refresh_token` grant at the token endpoint. Default true.
    pub refresh: bool,
    /// May introspect any token (a resource server). Without it a
    /// confidential client may introspect only tokens issued to itself.
    pub introspect: bool,
    /// The `aud` of this client's access tokens, instead of the server's.
    pub audience: Option<String>,
}

impl RegisteredClient {
    /// A public client: identified by its id alone, no secret.
    pub fn public(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: None,
            refresh: true,
            introspect: false,
            audience: None,
        }
    }

    /// A confidential client authenticated by a secret.
    pub fn confidential(id: impl Into<String>, secret: SecretHash) -> Self {
        Self {
            secret: Some(secret),
            ..Self::public(id)
        }
    }

    /// Allows this client to introspect any token.
    #[must_use]
    pub fn with_introspection(mut self) -> Self {
        self.introspect = true;
        self
    }

    /// Sets the `aud` of this client's access tokens.
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Forbids the `refresh_token` grant (`unauthorized_client`).
    #[must_use]
    pub fn without_refresh(mut self) -> Self {
        self.refresh = false;
        self
    }

    /// True for a client with a secret.
    pub fn is_confidential(&self) -> bool {
        self.secret.is_some()
    }
}

/// Where the endpoints look clients up. A server implements it over its own
/// client store; [`MemoryClients`] and [`FileClients`](crate::FileClients) ship here.
///
/// The lookup is async, so a store behind an async database driver (sqlx,
/// tokio-postgres) awaits its query instead of blocking. Implement it with
/// [`async_trait`](crate::async_trait) (re-exported here), which keeps the
/// trait usable as `Arc<dyn ClientRegistry>`:
///
/// ```
/// use rotoken_http::{ClientRegistry, RegisteredClient, RegistryError};
///
/// /// Every client id starting with `app-` is a public client.
/// struct Convention;
///
/// #[rotoken_http::async_trait]
/// impl ClientRegistry for Convention {
///     async fn client(&self, id: &str) -> Result<Option<RegisteredClient>, RegistryError> {
///         // An async store awaits its query here.
///         Ok(id.starts_with("app-").then(|| RegisteredClient::public(id)))
///     }
/// }
/// # futures_lite::future::block_on(async {
/// assert!(Convention.client("app-web").await.unwrap().is_some());
/// # });
/// ```
///
/// The endpoints' async forms ([`OAuthServer::serve_async`](crate::OAuthServer::serve_async),
/// the [`OAuthService`](crate::OAuthService)) await the lookup on the
/// caller's task. Their sync forms wait for it on the calling thread: a
/// registry whose futures need a tokio runtime (a tokio-postgres pool, say)
/// must then be called through the async forms, or from a runtime's
/// blocking thread (`tokio::task::spawn_blocking`).
#[async_trait::async_trait]
pub trait ClientRegistry: Send + Sync {
    /// The client with this id, or `None` if there is none.
    ///
    /// # Errors
    ///
    /// [`RegistryError`] if the registry cannot answer (answered with `server_error`).
    async fn client(&self, id: &str) -> Result<Option<RegisteredClient>, RegistryError>;
}

/// An in-memory registry, for tests and servers that configure clients in code.
#[derive(Debug, Clone, Default)]
pub struct MemoryClients {
    clients: HashMap<String, RegisteredClient>,
}

impl MemoryClients {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a client.
    #[must_use]
    pub fn with(mut self, client: RegisteredClient) -> Self {
        self.clients.insert(client.id.clone(), client);
        self
    }
}

#[async_trait::async_trait]
impl ClientRegistry for MemoryClients {
    async fn client(&self, id: &str) -> Result<Option<RegisteredClient>, RegistryError> {
        Ok(self.clients.get(id).cloned())
    }
}
