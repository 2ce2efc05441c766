//! DPoP at the token endpoint: the request's proof checked, its nonce,
//! and the proof remembered only once the request is otherwise
//! authenticated.

use http::HeaderMap;

use crate::dpop::{CheckedProof, DpopError};
use crate::error::OAuthError;
use crate::server::OAuthServer;

/// The OAuth error for a refused DPoP proof.
pub(crate) fn dpop_error(e: DpopError) -> OAuthError {
    tracing::debug!(reason = %e, "DPoP proof refused");
    OAuthError::from(e)
}

impl OAuthServer {
    /// Verifies the `DPoP` header of a request with `method` to `url` (for
    /// a server's own token endpoint) and returns the proven key's
    /// thumbprint; `None` without a header.
    ///
    /// # Errors
    ///
    /// [`DpopError`] for a bad, stale or replayed proof, or several headers.
    ///
    /// Call it once the exchange request is otherwise authenticated (client
    /// and code): the proof is remembered against replay here. With
    /// [`Config::dpop_nonce`](crate::Config::dpop_nonce) on, a proof without the current nonce gets
    /// [`DpopError::UseNonce`]: answer `use_dpop_nonce` with
    /// [`OAuthServer::dpop_nonce`] in a `DPoP-Nonce` header.
    pub fn dpop_thumbprint(&self, headers: &HeaderMap, method: &str, url: &str) -> Result<Option<String>, DpopError> {
        let Some(proof) = self.check_dpop(headers, method, url)? else {
            return Ok(None);
        };
        let now = self.clock.now().unix_timestamp();
        self.dpop.remember(&proof, now)?;
        Ok(Some(proof.jkt))
    }

    /// The DPoP nonce to send in `DPoP-Nonce` now, if nonces are on.
    pub fn dpop_nonce(&self) -> Option<String> {
        let nonces = self.nonces.as_ref()?.as_ref()?;
        Some(nonces.current(self.clock.now().unix_timestamp()))
    }

    /// Checks the `DPoP` header's proof and nonce, without remembering it.
    pub(crate) fn check_dpop(
        &self,
        headers: &HeaderMap,
        method: &str,
        url: &str,
    ) -> Result<Option<CheckedProof>, DpopError> {
        let mut values = headers.get_all("dpop").iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(DpopError::MultipleHeaders);
        }
        let proof = value
            .to_str()
            .map_err(|_| DpopError::Malformed("the header is not ASCII"))?;
        let now = self.clock.now().unix_timestamp();
        let checked = self.dpop.check(proof, method, url, now)?;
        match &self.nonces {
            None => {}
            Some(None) => return Err(DpopError::NonceUnavailable),
            Some(Some(nonces)) if !checked.nonce.as_deref().is_some_and(|n| nonces.accepts(n, now)) => {
                return Err(DpopError::UseNonce);
            }
            Some(Some(_)) => {}
        }
        Ok(Some(checked))
    }

    pub(crate) fn dpop_from(
        &self,
        headers: &HeaderMap,
        method: &str,
        url: &str,
    ) -> Result<Option<CheckedProof>, OAuthError> {
        self.check_dpop(headers, method, url).map_err(dpop_error)
    }

    /// True if `token` is a refresh token with a valid authenticator from
    /// this server's keys. Reads no storage.
    pub(crate) fn authenticates(&self, token: &str) -> bool {
        rotoken::token::parse(token.as_bytes()).is_ok_and(|t| self.engine.keyring().verify(&t))
    }
}
