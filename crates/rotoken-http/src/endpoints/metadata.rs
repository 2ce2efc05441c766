//! The authorization server metadata (RFC 8414) and the JWK Set.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use serde_json::json;

use crate::dpop::DPOP_ALGORITHMS;
use crate::error::{OAuthError, json_response};
use crate::server::OAuthServer;

impl OAuthServer {
    /// The authorization server metadata (RFC 8414).
    pub fn metadata<B>(&self, request: &Request<B>) -> Response<Bytes> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return OAuthError::method_not_allowed("GET").into_response();
        }
        let c = &self.config;
        let auth = ["client_secret_basic", "client_secret_post", "none"];
        let mut grant_types = vec!["refresh_token".to_owned()];
        grant_types.extend(c.extra_grant_types.iter().cloned());
        let mut m = json!({
            "issuer": c.issuer,
            "token_endpoint": c.url(&c.token_path),
            "revocation_endpoint": c.url(&c.revocation_path),
            "introspection_endpoint": c.url(&c.introspection_path),
            "jwks_uri": c.url(&c.jwks_path),
            "grant_types_supported": grant_types,
            "token_endpoint_auth_methods_supported": auth,
            "revocation_endpoint_auth_methods_supported": auth,
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "dpop_signing_alg_values_supported": DPOP_ALGORITHMS,
            // Token responses carry refresh_token_expires_in
            // (draft-ietf-oauth-refresh-token-expiration).
            "refresh_token_expires_in_supported": true,
        });
        // Only what is served: response types belong to an authorization
        // endpoint, which this server has only if the embedding one does.
        if let Some(a) = &c.authorization_endpoint {
            m["authorization_endpoint"] = a.clone().into();
            m["response_types_supported"] = json!(["code"]);
        }
        if !c.scopes_supported.is_empty() {
            m["scopes_supported"] = c.scopes_supported.clone().into();
        }
        let mut r = json_response(StatusCode::OK, Bytes::from(m.to_string()));
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
        r.headers_mut().remove(header::PRAGMA);
        r
    }

    /// The JWK Set of the access-token signing keys.
    pub fn jwks<B>(&self, request: &Request<B>) -> Response<Bytes> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return OAuthError::method_not_allowed("GET").into_response();
        }
        let mut r = json_response(
            StatusCode::OK,
            Bytes::from(self.minter.jwks_at(self.clock.now()).to_string()),
        );
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/jwk-set+json"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
        r.headers_mut().remove(header::PRAGMA);
        r
    }
}
