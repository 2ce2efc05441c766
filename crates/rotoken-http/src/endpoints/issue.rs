//! Issuing for the server's own authorization-code exchange (and the
//! admin API), under the one issuing rule.

use std::fmt;

use rotoken::{Grant, Scope};

use crate::endpoints::token::TokenResponse;
use crate::error::IssueError;
use crate::minter::AccessTokenRequest;
use crate::registry::{ClientRegistry, RegisteredClient};
use crate::server::{OAuthServer, OFFLINE_ACCESS};

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

/// The one rule for issuing, shared by [`OAuthServer::issue`] (and so the
/// admin API) and `rotoken issue`: the client must be registered (a family
/// of an unknown client could never be refreshed), and a refresh token (a
/// family) is issued only when the granted scope holds `offline_access`.
/// Returns the client and whether a refresh token is granted.
///
/// ```
/// use rotoken::Scope;
/// use rotoken_http::{IssueError, MemoryClients, RegisteredClient, issue_rule};
///
/// let clients = MemoryClients::new().with(RegisteredClient::public("web"));
/// let (_, refresh) = issue_rule(&clients, "web", &Scope::parse("openid offline_access").unwrap()).unwrap();
/// assert!(refresh);
/// let (_, refresh) = issue_rule(&clients, "web", &Scope::parse("openid").unwrap()).unwrap();
/// assert!(!refresh, "an access token only");
/// assert!(matches!(issue_rule(&clients, "nobody", &Scope::parse("offline_access").unwrap()), Err(IssueError::UnknownClient)));
/// ```
///
/// # Errors
///
/// [`IssueError::UnknownClient`], or [`IssueError::Registry`] if the registry fails.
pub fn issue_rule(
    clients: &dyn ClientRegistry,
    client_id: &str,
    scope: &Scope,
) -> Result<(RegisteredClient, bool), IssueError> {
    let client = clients
        .client(client_id)
        .map_err(IssueError::Registry)?
        .ok_or(IssueError::UnknownClient)?;
    Ok((client, scope.contains(OFFLINE_ACCESS)))
}

impl OAuthServer {
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
        let (client, refresh) = issue_rule(self.clients.as_ref(), &request.client_id, &request.scope)?;
        let (refresh_token, family, expiry) = if refresh {
            let issued = self.engine.issue(&grant)?;
            self.metrics.issued();
            tracing::info!(client_id = %request.client_id, family = %issued.family, "family issued");
            (
                Some(issued.refresh_token.expose().to_owned()),
                Some(issued.family),
                Some((issued.expires_at, issued.authorization_expires_at)),
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
            now: Some(self.clock.now()),
        })?;
        Ok(TokenResponse {
            access_token: access.value,
            token_type: if request.dpop_jkt.is_some() { "DPoP" } else { "Bearer" },
            expires_in: access.expires_in,
            refresh_token,
            refresh_token_expires_in: expiry.map(|(at, _)| self.seconds_until(at)),
            authorization_expires_in: expiry.map(|(_, at)| self.seconds_until(at)),
            scope: None,
        })
    }
}
