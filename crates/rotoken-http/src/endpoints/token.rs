//! The token endpoint: `grant_type=refresh_token` (RFC 6749 §6), async
//! (with a sync form that waits for it), and its answers (RFC 6749 §5.1, §5.2).

use std::fmt;
use std::time::Instant;

use bytes::Bytes;
use futures_lite::future::block_on;
use http::{HeaderValue, Request, Response, StatusCode};
use rotoken::{RotateError, RotateRequest, Rotated, Scope};
use serde::Serialize;

use crate::endpoints::dpop_request::dpop_error;
use crate::error::{ErrorCode, OAuthError, json_response};
use crate::form::Form;
use crate::metrics::Endpoint;
use crate::minter::AccessTokenRequest;
use crate::registry::RegisteredClient;
use crate::server::OAuthServer;

/// A refresh request that passed the checks, ready for the engine.
pub(crate) struct Refresh<'f> {
    client: RegisteredClient,
    token: &'f str,
    rotate: RotateRequest,
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// `Bearer`, or `DPoP` for a DPoP-bound access token.
    pub token_type: &'static str,
    /// Lifetime of the access token in seconds.
    pub expires_in: u64,
    /// The refresh token (absent when `offline_access` was not granted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Seconds until the refresh token expires unless rotated (the earlier
    /// of the idle and the absolute expiry;
    /// draft-ietf-oauth-refresh-token-expiration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token_expires_in: Option<u64>,
    /// Seconds until the authorization ends whatever its use (the family's
    /// absolute lifetime, which rotation never extends); the user must sign
    /// in again then (draft-ietf-oauth-refresh-token-expiration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_expires_in: Option<u64>,
    /// The scope, when it differs from the one requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The refresh token's family, for the server's own records (tie a
    /// session, an event or a logout to it). Never sent to the client.
    #[serde(skip)]
    pub family: Option<rotoken::FamilyId>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"..")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| ".."))
            .field("refresh_token_expires_in", &self.refresh_token_expires_in)
            .field("authorization_expires_in", &self.authorization_expires_in)
            .field("scope", &self.scope)
            .field("family", &self.family)
            .finish()
    }
}

impl TokenResponse {
    /// The HTTP response: 200, JSON, `Cache-Control: no-store`.
    pub fn into_response(self) -> Response<Bytes> {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        json_response(StatusCode::OK, Bytes::from(body))
    }
}

impl OAuthServer {
    /// The token endpoint: `grant_type=refresh_token` (RFC 6749 §6).
    ///
    /// A [`RequestDeadline`](crate::RequestDeadline) in the request's
    /// extensions becomes the rotation's deadline
    /// ([`rotoken::RotateRequest::deadline`]): a rotation not applied by
    /// then is never applied, and the answer is 503
    /// `temporarily_unavailable` with `Retry-After`.
    ///
    /// The checks, the client lookup ([`ClientRegistry`](crate::ClientRegistry)),
    /// the rotation (the engine's commit thread) and the access token
    /// ([`AccessTokenMinter`](crate::AccessTokenMinter)) are awaited on the
    /// caller's task: nothing blocks the runtime's thread.
    pub async fn token_async<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Response<Bytes> {
        let start = Instant::now();
        let result = self.refresh(request).await;
        self.token_response(result, start)
    }

    /// [`OAuthServer::token_async`], waited for on the calling thread.
    pub fn token<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Response<Bytes> {
        block_on(self.token_async(request))
    }

    /// The refresh: the checks, the rotation and the access token.
    async fn refresh<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Result<TokenResponse, OAuthError> {
        let form = self.read_form(request)?;
        let refresh = self.token_checks(request, &form).await?;
        let rotated = self.engine.rotate_async(refresh.token, &refresh.rotate).await;
        self.token_answer(&refresh, rotated).await
    }

    /// Counts the answer and adds the DPoP nonce, if nonces are on.
    fn token_response(&self, result: Result<TokenResponse, OAuthError>, start: Instant) -> Response<Bytes> {
        self.count(Endpoint::Token, result.as_ref().err(), start);
        let mut response = match result {
            Ok(r) => r.into_response(),
            Err(e) => self.error_response(e),
        };
        if let Some(nonce) = self.dpop_nonce()
            && let Ok(v) = HeaderValue::try_from(nonce)
        {
            response.headers_mut().insert("dpop-nonce", v);
        }
        response
    }

    /// Everything a refresh checks before the engine sees the token: the
    /// grant type, the client, the parameters, the DPoP proof.
    async fn token_checks<'f, B>(&self, request: &Request<B>, form: &'f Form) -> Result<Refresh<'f>, OAuthError> {
        let grant_type = form
            .get("grant_type")
            .ok_or_else(|| OAuthError::invalid_request("grant_type is missing"))?;
        if grant_type != "refresh_token" {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "this endpoint supports grant_type=refresh_token only",
            ));
        }
        let client = self.authenticate(request, form).await?;
        if !client.refresh {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "this client may not use the refresh_token grant",
            ));
        }
        let token = form
            .get("refresh_token")
            .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
        let scope = match form.get("scope") {
            Some(s) => {
                Some(Scope::parse(s).map_err(|_| OAuthError::new(ErrorCode::InvalidScope, "the scope is malformed"))?)
            }
            None => None,
        };
        let proof = if request.headers().contains_key("dpop") {
            let url = self.config.url(&self.config.token_path);
            self.dpop_from(request.headers(), request.method().as_str(), &url)?
        } else {
            None
        };
        if let Some(proof) = &proof {
            // Remembered only for a request that could be honest: an
            // authenticated client and a refresh token whose authenticator
            // verifies (no storage read), so garbage cannot fill the cache.
            if !self.authenticates(token) {
                return Err(self.rotate_error(RotateError::InvalidToken, &client.id));
            }
            let now = self.clock.now().unix_timestamp();
            self.dpop.remember(proof, now).map_err(dpop_error)?;
        }
        let mut rotate = RotateRequest::new(client.id.clone());
        rotate.scope = scope;
        rotate.confirmation = proof.map(|p| p.jkt);
        // The engine never applies the rotation past the request's deadline
        // (it fails `deadline_passed`, a 503): a request its client gave up
        // on and retried elsewhere is never judged late as a replay.
        rotate.deadline = Self::deadline(request);
        Ok(Refresh { client, token, rotate })
    }

    /// The token response for the engine's answer: the access token and
    /// the new refresh token, or the refusal.
    async fn token_answer(
        &self,
        refresh: &Refresh<'_>,
        rotated: Result<Rotated, RotateError>,
    ) -> Result<TokenResponse, OAuthError> {
        let client = &refresh.client;
        let rotated = rotated.map_err(|e| self.rotate_error(e, &client.id))?;
        let dpop = refresh.rotate.confirmation.as_deref();
        self.metrics.rotation(rotated.retried);
        tracing::debug!(
            client_id = %client.id,
            family = %rotated.family,
            generation = rotated.generation,
            retried = rotated.retried,
            dpop = dpop.is_some(),
            "refresh token rotated"
        );
        let access = self
            .minter
            .mint(&AccessTokenRequest {
                subject: &rotated.grant.subject,
                client_id: &client.id,
                scope: &rotated.scope,
                confirmation: dpop,
                family: Some(&rotated.family),
                metadata: &rotated.grant.metadata,
                audience: self.audience(client),
                now: Some(self.clock.now()),
            })
            .await
            .map_err(|e| {
                tracing::error!(error = %e, client_id = %client.id, "minting the access token failed");
                OAuthError::server_error()
            })?;
        let requested = refresh.rotate.scope.as_ref().unwrap_or(&rotated.grant.scope);
        Ok(TokenResponse {
            access_token: access.value,
            token_type: if dpop.is_some() { "DPoP" } else { "Bearer" },
            expires_in: access.expires_in,
            refresh_token: Some(rotated.refresh_token.expose().to_owned()),
            refresh_token_expires_in: Some(self.seconds_until(rotated.expires_at)),
            authorization_expires_in: Some(self.seconds_until(rotated.authorization_expires_at)),
            scope: (rotated.scope != *requested).then(|| rotated.scope.to_string()),
            family: Some(rotated.family),
        })
    }

    /// The OAuth error for a refused refresh. Every `invalid_grant`
    /// description starts with a stable cause (`refresh_token_reused:`,
    /// `session_revoked:`...) for the client's operator; none tells more
    /// than the presented token already does.
    pub(crate) fn rotate_error(&self, e: RotateError, client_id: &str) -> OAuthError {
        let code = e.code();
        match &e {
            RotateError::ReuseDetected { family } | RotateError::Diverged { family } => {
                self.metrics.reuse_detected();
                tracing::warn!(%family, client_id, reason = %code, "refresh token reuse detected; family revoked");
            }
            _ if code.is_retryable() => {
                tracing::warn!(error = %e, client_id, reason = %code, "refresh not completed; the client retries");
            }
            _ if !code.is_client_error() => tracing::error!(error = %e, client_id, "refresh failed"),
            _ => tracing::debug!(client_id, reason = %code, "refresh refused"),
        }
        OAuthError::from(e)
    }

    /// The `aud` for `client`'s access tokens: its own, else the server's
    /// (else the minter's default).
    pub(crate) fn audience<'a>(&'a self, client: &'a RegisteredClient) -> Option<&'a str> {
        client
            .audience
            .as_deref()
            .or(self.config.access_token_audience.as_deref())
    }

    /// Whole seconds from now until `at`, 0 if past.
    pub(crate) fn seconds_until(&self, at: time::OffsetDateTime) -> u64 {
        u64::try_from((at - self.clock.now()).whole_seconds()).unwrap_or(0)
    }
}
