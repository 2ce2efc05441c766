//! The revocation endpoint (RFC 7009).

use std::time::Instant;

use bytes::Bytes;
use futures_lite::future::block_on;
use http::{Request, Response, StatusCode, header};
use rotoken::{RevokeError, RevokeTarget};

use crate::error::{ErrorCode, OAuthError, json_response};
use crate::metrics::Endpoint;
use crate::server::OAuthServer;

impl OAuthServer {
    /// The revocation endpoint (RFC 7009): revoking a refresh token revokes
    /// its family; unknown and invalid tokens answer 200. The client lookup
    /// and the revoking commit are awaited on the caller's task.
    pub async fn revoke_async<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Response<Bytes> {
        let start = Instant::now();
        let result = self.revoke_inner(request).await;
        self.count(Endpoint::Revoke, result.as_ref().err(), start);
        match result {
            Ok(()) => {
                // RFC 7009 §2.2: 200 with an empty body.
                let mut r = json_response(StatusCode::OK, Bytes::new());
                r.headers_mut().remove(header::CONTENT_TYPE);
                r
            }
            Err(e) => self.error_response(e),
        }
    }

    /// [`OAuthServer::revoke_async`], waited for on the calling thread.
    pub fn revoke<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Response<Bytes> {
        block_on(self.revoke_async(request))
    }

    async fn revoke_inner<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Result<(), OAuthError> {
        let form = self.read_form(request)?;
        let client = self.authenticate(request, &form).await?;
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
        Self::before_deadline(request)?;
        match self.engine.revoke_async(target).await {
            Ok(n) => {
                self.metrics.revoked(n);
                tracing::info!(client_id = %client.id, families = n, "revocation");
                Ok(())
            }
            Err(e @ RevokeError::ClientMismatch) => {
                tracing::debug!(client_id = %client.id, "revocation refused: the token belongs to another client");
                Err(e.into())
            }
            // Not a refresh token: an access token is refused as RFC 7009
            // §2.2.1 allows, anything else is not an error (§2.2).
            Err(RevokeError::Malformed(_)) if self.minter.introspect_at(token, self.clock.now()).is_some() => {
                Err(OAuthError::new(
                    ErrorCode::UnsupportedTokenType,
                    "access tokens are self-contained and expire on their own; revoke the refresh token",
                ))
            }
            Err(RevokeError::Malformed(_) | RevokeError::InvalidToken | RevokeError::InvalidInput(_)) => Ok(()),
            Err(e) if e.code().is_retryable() => {
                tracing::warn!(error = %e, "revocation not completed; the client retries");
                Err(e.into())
            }
            Err(e) => {
                tracing::error!(error = %e, "revocation failed");
                Err(e.into())
            }
        }
    }
}
