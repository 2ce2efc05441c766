//! Issuing for the server's own authorization-code exchange (and the
//! admin API), under the one issuing rule.

use std::fmt;

use futures_lite::future::block_on;
use rotoken::{Grant, Scope};

use crate::endpoints::token::TokenResponse;
use crate::error::IssueTokensError;
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
    /// [`OAuthServer::dpop_thumbprint`] on the exchange request): the
    /// family's confirmation ([`Grant::confirmation`]). Formerly `dpop_jkt`.
    pub confirmation: Option<String>,
    /// Opaque data sealed with the family (for example the authentication context).
    pub metadata: Vec<u8>,
}

impl fmt::Debug for IssueRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssueRequest")
            .field("subject", &self.subject)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope.to_string())
            .field("dpop_bound", &self.confirmation.is_some())
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
            confirmation: None,
            metadata: Vec::new(),
        }
    }
}

/// The one rule for issuing, shared by [`OAuthServer::issue_async`] (and so
/// the admin API) and `rotoken issue`: the client must be registered (a
/// family of an unknown client could never be refreshed), and a refresh
/// token (a family) is issued only when the granted scope holds
/// `offline_access`. Returns the client and whether a refresh token is
/// granted.
///
/// ```
/// use rotoken::Scope;
/// use rotoken_http::{IssueTokensError, MemoryClients, RegisteredClient, issue_rule};
///
/// # futures_lite::future::block_on(async {
/// let clients = MemoryClients::new().with(RegisteredClient::public("web"));
/// let (_, refresh) = issue_rule(&clients, "web", &Scope::parse("openid offline_access").unwrap()).await.unwrap();
/// assert!(refresh);
/// let (_, refresh) = issue_rule(&clients, "web", &Scope::parse("openid").unwrap()).await.unwrap();
/// assert!(!refresh, "an access token only");
/// let unknown = issue_rule(&clients, "nobody", &Scope::parse("offline_access").unwrap()).await;
/// assert!(matches!(unknown, Err(IssueTokensError::UnknownClient)));
/// # });
/// ```
///
/// # Errors
///
/// [`IssueTokensError::UnknownClient`], or [`IssueTokensError::Registry`] if the registry fails.
pub async fn issue_rule(
    clients: &dyn ClientRegistry,
    client_id: &str,
    scope: &Scope,
) -> Result<(RegisteredClient, bool), IssueTokensError> {
    let client = clients
        .client(client_id)
        .await
        .map_err(IssueTokensError::Registry)?
        .ok_or(IssueTokensError::UnknownClient)?;
    Ok((client, scope.contains(OFFLINE_ACCESS)))
}

impl OAuthServer {
    /// Issues tokens for the server's own authorization-code exchange: an
    /// access token always, and a new refresh-token family only when the
    /// granted scope holds `offline_access`. The client lookup, the
    /// engine's commit and the access token are awaited on the caller's task.
    ///
    /// # Errors
    ///
    /// [`IssueTokensError::Core`] for an invalid grant or a storage failure,
    /// [`IssueTokensError::UnknownClient`] for a client the registry does
    /// not know, [`IssueTokensError::Registry`] if it cannot answer,
    /// [`IssueTokensError::Mint`] if the access token could not be minted.
    pub async fn issue_async(&self, request: &IssueRequest) -> Result<TokenResponse, IssueTokensError> {
        let (grant, client) = self.issue_checks(request).await?;
        let issued = match &grant {
            Some(g) => Some(self.engine.issue_async(g).await?),
            None => None,
        };
        self.issue_answer(request, &client, issued).await
    }

    /// [`OAuthServer::issue_async`], waited for on the calling thread.
    ///
    /// # Errors
    ///
    /// As [`OAuthServer::issue_async`].
    pub fn issue(&self, request: &IssueRequest) -> Result<TokenResponse, IssueTokensError> {
        block_on(self.issue_async(request))
    }

    /// The grant to issue a family for (`None`: no `offline_access`, an
    /// access token only) and the registered client.
    async fn issue_checks(
        &self,
        request: &IssueRequest,
    ) -> Result<(Option<Grant>, RegisteredClient), IssueTokensError> {
        let mut grant = Grant::new(
            request.subject.clone(),
            request.client_id.clone(),
            request.scope.clone(),
        )
        .with_metadata(request.metadata.clone());
        if let Some(jkt) = &request.confirmation {
            grant = grant.with_confirmation(jkt.clone());
        }
        grant.validate().map_err(rotoken::IssueError::from)?;
        let (client, refresh) = issue_rule(self.clients.as_ref(), &request.client_id, &request.scope).await?;
        Ok((refresh.then_some(grant), client))
    }

    /// The token response for an issue: the access token, and the family's
    /// first refresh token if one was issued.
    async fn issue_answer(
        &self,
        request: &IssueRequest,
        client: &RegisteredClient,
        issued: Option<rotoken::Issued>,
    ) -> Result<TokenResponse, IssueTokensError> {
        if let Some(i) = &issued {
            self.metrics.issued();
            tracing::info!(client_id = %request.client_id, family = %i.family, "family issued");
        }
        let family = issued.as_ref().map(|i| i.family);
        let access = self
            .minter
            .mint(&AccessTokenRequest {
                subject: &request.subject,
                client_id: &request.client_id,
                scope: &request.scope,
                confirmation: request.confirmation.as_deref(),
                family: family.as_ref(),
                metadata: &request.metadata,
                audience: self.audience(client),
                now: Some(self.clock.now()),
            })
            .await?;
        Ok(TokenResponse {
            access_token: access.value,
            token_type: if request.confirmation.is_some() {
                "DPoP"
            } else {
                "Bearer"
            },
            expires_in: access.expires_in,
            refresh_token: issued.as_ref().map(|i| i.refresh_token.expose().to_owned()),
            refresh_token_expires_in: issued.as_ref().map(|i| self.seconds_until(i.expires_at)),
            authorization_expires_in: issued.as_ref().map(|i| self.seconds_until(i.authorization_expires_at)),
            scope: None,
            family,
        })
    }
}
