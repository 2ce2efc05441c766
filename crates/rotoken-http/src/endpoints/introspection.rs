//! The introspection endpoint (RFC 7662).

use std::time::Instant;

use bytes::Bytes;
use futures_lite::future::block_on;
use http::{Request, Response, StatusCode};
use rotoken::FamilyId;
use serde_json::{Map, Value, json};

use crate::error::{OAuthError, json_response};
use crate::metrics::Endpoint;
use crate::server::OAuthServer;

impl OAuthServer {
    /// The introspection endpoint (RFC 7662), for authenticated
    /// (confidential) clients. A client registered with `introspect` sees
    /// every token; any other sees only tokens issued to itself. The client
    /// lookup and the store reads are awaited on the caller's task.
    pub async fn introspect_async<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Response<Bytes> {
        let start = Instant::now();
        let result = self.introspect_inner(request).await;
        self.count(Endpoint::Introspect, result.as_ref().err(), start);
        match result {
            Ok(v) => json_response(StatusCode::OK, Bytes::from(v.to_string())),
            Err(e) => self.error_response(e),
        }
    }

    /// [`OAuthServer::introspect_async`], waited for on the calling thread.
    pub fn introspect<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Response<Bytes> {
        block_on(self.introspect_async(request))
    }

    async fn introspect_inner<B: AsRef<[u8]>>(&self, request: &Request<B>) -> Result<Value, OAuthError> {
        let form = self.read_form(request)?;
        let client = self.authenticate(request, &form).await?;
        if !client.is_confidential() {
            return Err(OAuthError::invalid_client(
                "introspection requires client authentication with a secret",
            ));
        }
        let token = form
            .get("token")
            .ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
        let inactive = json!({ "active": false });
        let visible = |owner: Option<&str>| client.introspect || owner == Some(client.id.as_str());
        Self::before_deadline(request)?;
        let i = self
            .engine
            .introspect_async(token)
            .await
            .map_err(introspection_failed)?;
        if i.active {
            if !visible(i.client_id.as_deref()) {
                return Ok(inactive);
            }
            let mut m = Map::new();
            m.insert("active".into(), true.into());
            if let Some(s) = i.scope {
                m.insert("scope".into(), s.to_string().into());
            }
            if let Some(c) = i.client_id {
                m.insert("client_id".into(), c.into());
            }
            if let Some(s) = i.sub {
                m.insert("sub".into(), s.into());
            }
            if let Some(e) = i.exp {
                m.insert("exp".into(), e.into());
            }
            if let Some(t) = i.iat {
                m.insert("iat".into(), t.into());
            }
            m.insert("iss".into(), self.config.issuer.clone().into());
            m.insert("token_type".into(), "refresh_token".into());
            if let Some(j) = i.cnf_jkt {
                m.insert("cnf".into(), json!({ "jkt": j }));
            }
            return Ok(Value::Object(m));
        }
        match self.minter.introspect_at(token, self.clock.now()) {
            Some(mut m) if visible(m.get("client_id").and_then(Value::as_str)) => {
                // RFC 7009 §2.1: an access token of a revoked (or expired)
                // family is inactive at once, not only when it expires.
                if let Some(sid) = m.get("sid").and_then(Value::as_str) {
                    let Ok(family) = sid.parse::<FamilyId>() else {
                        return Ok(inactive);
                    };
                    let live = self
                        .engine
                        .family_is_active_async(&family)
                        .await
                        .map_err(introspection_failed)?;
                    if !live {
                        return Ok(inactive);
                    }
                }
                m.insert("active".into(), true.into());
                Ok(Value::Object(m))
            }
            _ => Ok(inactive),
        }
    }
}

/// A store failure at introspection: 503 when retryable, else 500.
fn introspection_failed(e: rotoken::StoreError) -> OAuthError {
    if e.is_retryable() {
        tracing::warn!(error = %e, "introspection not completed; the client retries");
    } else {
        tracing::error!(error = %e, "introspection failed: storage error");
    }
    OAuthError::from(e)
}
