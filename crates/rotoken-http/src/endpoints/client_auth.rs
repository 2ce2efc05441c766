//! Client authentication (`client_secret_basic`, `client_secret_post`,
//! `none`) with failure budgets per client address.

use http::Request;

use crate::credentials;
use crate::error::OAuthError;
use crate::form::Form;
use crate::registry::RegisteredClient;
use crate::secret_hash::{MAX_CLIENT_ID_LEN, MAX_CLIENT_SECRET_LEN, SecretHash};
use crate::server::OAuthServer;
use crate::throttle::retry_after_secs;

/// A secret hash nobody's secret matches, verified for unknown clients so
/// that they take as long as known ones.
pub(crate) const DUMMY_SECRET: &str = "blake3-v1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// At most 64 characters of an unauthenticated client id, for logs.
pub(crate) fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl OAuthServer {
    /// Client authentication: `client_secret_basic`, `client_secret_post`
    /// or `none`, throttled per (peer, client id).
    pub(crate) async fn authenticate<B>(
        &self,
        request: &Request<B>,
        form: &Form,
    ) -> Result<RegisteredClient, OAuthError> {
        let presented = credentials::presented(request.headers(), form)?;
        let Some(id) = presented.id else {
            return Err(OAuthError::invalid_client("client authentication is required"));
        };
        let secret = presented.secret.filter(|s| !s.is_empty());
        let well_formed =
            id.len() <= MAX_CLIENT_ID_LEN && secret.as_ref().is_none_or(|s| s.len() <= MAX_CLIENT_SECRET_LEN);
        let client = if well_formed {
            self.clients.client(&id).await.map_err(|e| {
                tracing::error!(error = %e, "client registry failed");
                OAuthError::server_error()
            })?
        } else {
            None
        };
        let presented_secret = secret.as_ref().map(|s| s.as_bytes());
        let ok = match &client {
            Some(c) => match (&c.secret, presented_secret) {
                (Some(hash), Some(s)) => hash.verify(s),
                (None, None) => true,
                _ => false,
            },
            None => {
                if let Ok(dummy) = DUMMY_SECRET.parse::<SecretHash>() {
                    let _ = dummy.verify(presented_secret.unwrap_or_default());
                }
                false
            }
        };
        match client {
            // Always checked, always accepted: failures made by others
            // never lock out a correct credential.
            Some(c) if ok => Ok(c),
            _ => {
                self.metrics.auth_failure();
                let peer = self.client_address(request);
                let throttled = self.throttle.fail(peer, truncate(&id));
                tracing::debug!(client_id = ?truncate(&id), basic = presented.basic, throttled = throttled.is_err(), "client authentication failed");
                match throttled {
                    Ok(()) => Err(OAuthError::invalid_client("client authentication failed")),
                    Err(wait) => {
                        self.metrics.throttle();
                        Err(OAuthError::throttled(retry_after_secs(wait)))
                    }
                }
            }
        }
    }
}
