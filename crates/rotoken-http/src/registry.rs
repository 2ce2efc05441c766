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
/// ```
/// use rotoken_http::{ClientRegistry, RegisteredClient, RegistryError};
///
/// /// Every client id starting with `app-` is a public client.
/// struct Convention;
///
/// impl ClientRegistry for Convention {
///     fn client(&self, id: &str) -> Result<Option<RegisteredClient>, RegistryError> {
///         Ok(id.starts_with("app-").then(|| RegisteredClient::public(id)))
///     }
/// }
/// assert!(Convention.client("app-web").unwrap().is_some());
/// ```
pub trait ClientRegistry: Send + Sync {
    /// The client with this id, or `None` if there is none.
    ///
    /// # Errors
    ///
    /// [`RegistryError`] if the registry cannot answer (answered with `server_error`).
    fn client(&self, id: &str) -> Result<Option<RegisteredClient>, RegistryError>;
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

impl ClientRegistry for MemoryClients {
    fn client(&self, id: &str) -> Result<Option<RegisteredClient>, RegistryError> {
        Ok(self.clients.get(id).cloned())
    }
}
