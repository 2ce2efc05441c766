//! The default minter: JWT access tokens (RFC 9068 shape) signed with
//! the [`SigningKey`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use rotoken::{Clock, SystemClock};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::error::{BoxError, MintError};
use crate::minter::{AccessToken, AccessTokenMinter, AccessTokenRequest};
use crate::signing_key::SigningKey;
use crate::signing_keys::SigningKeys;

/// The claims of a JWT access token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    /// The refresh-token family (session) the token comes from: what
    /// introspection checks so that a revocation reaches the access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    client_id: String,
    scope: String,
    exp: i64,
    iat: i64,
    jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cnf: Option<Confirmation>,
    /// The integrator's claims ([`JwtMinter::with_claims`]).
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Confirmation {
    jkt: String,
}

/// The claims [`JwtMinter`] sets itself, which a claims hook may not set:
/// a hook returning one of them fails the mint with
/// [`MintError::ReservedClaim`] (a bug in the hook, found by the first
/// test that mints a token, never a token with a forged `sub` or `exp`).
pub const RESERVED_CLAIMS: [&str; 11] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "client_id",
    "scope",
    "sid",
    "cnf",
];

/// A claims hook: extra claims for one access token, from what it is
/// minted for (subject, client, scope, the grant's sealed metadata).
pub type ClaimsHook = dyn Fn(&AccessTokenRequest<'_>) -> Result<Map<String, Value>, BoxError> + Send + Sync;

/// A key that verifies tokens: the current one, or a retired one until
/// the tokens it signed have expired.
struct VerifyingKey {
    kid: String,
    algorithm: jsonwebtoken::Algorithm,
    decoding: DecodingKey,
    jwk: Option<Value>,
    /// `None` for the current key; for a retired one, the Unix time after
    /// which no token it signed is unexpired (retired + lifetime).
    valid_until: Option<i64>,
}

impl VerifyingKey {
    fn of(key: &SigningKey, valid_until: Option<i64>) -> Self {
        Self {
            kid: key.kid().to_owned(),
            algorithm: key.algorithm(),
            decoding: key.keys().1,
            jwk: key.public_jwk(),
            valid_until,
        }
    }

    fn live(&self, now: i64) -> bool {
        self.valid_until.is_none_or(|until| now < until)
    }
}

/// Signs JWT access tokens (header `typ: at+jwt`, RFC 9068) with claims
/// `iss`, `sub`, `aud` (the request's, else the minter's, else the issuer),
/// `sid` (the refresh-token family, if any), `client_id`, `scope`, `exp`,
/// `iat`, `jti`, and `cnf.jkt` for DPoP-bound tokens, plus the claims of
/// its [claims hook](JwtMinter::with_claims).
///
/// The JWK Set publishes the current key and the [retired
/// ones](JwtMinter::from_keys) whose tokens may still be unexpired, each
/// with its `kid`; introspection verifies with whichever the token names.
///
/// ```
/// use rotoken_http::{AccessTokenMinter, AccessTokenRequest, JwtMinter, SigningKey};
/// use rotoken::Scope;
///
/// let minter = JwtMinter::new(SigningKey::generate_ed25519()?, "https://auth.example", std::time::Duration::from_secs(300));
/// let scope = Scope::parse("openid")?;
/// let token = minter.sign(&AccessTokenRequest::new("alice", "web", &scope))?;
/// assert_eq!(token.expires_in, 300);
/// assert_eq!(minter.introspect(&token.value).unwrap()["sub"], "alice");
/// assert_eq!(minter.jwks()["keys"][0]["alg"], "EdDSA");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct JwtMinter {
    key: SigningKey,
    /// The expanded Ed25519 key (EdDSA); `None` for HS256.
    ed25519: Option<ed25519_dalek::SigningKey>,
    /// The JOSE header, base64url: the same for every token.
    header_b64: String,
    encoding: EncodingKey,
    /// The current key first, then the retired ones.
    verifying: Vec<VerifyingKey>,
    issuer: String,
    audience: Option<String>,
    lifetime: Duration,
    clock: Arc<dyn Clock>,
    claims: Option<Arc<ClaimsHook>>,
}

impl fmt::Debug for JwtMinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtMinter")
            .field("key", &self.key)
            .field(
                "retired_kids",
                &self.verifying.iter().skip(1).map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("lifetime", &self.lifetime)
            .field("claims_hook", &self.claims.is_some())
            .finish_non_exhaustive()
    }
}

impl JwtMinter {
    /// A minter signing with `key`, naming `issuer` in `iss`, whose tokens live `lifetime`.
    pub fn new(key: SigningKey, issuer: impl Into<String>, lifetime: Duration) -> Self {
        Self::from_keys(SigningKeys::new(key), issuer, lifetime)
    }

    /// A minter signing with `keys.current`, and publishing and verifying
    /// each of `keys.previous` until `lifetime` after it was retired (when
    /// the last token it signed expires).
    pub fn from_keys(keys: SigningKeys, issuer: impl Into<String>, lifetime: Duration) -> Self {
        let key = keys.current;
        let header = serde_json::json!({"typ": "at+jwt", "alg": key.algorithm_name(), "kid": key.kid()});
        let secs = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        let mut verifying = vec![VerifyingKey::of(&key, None)];
        verifying.extend(
            keys.previous
                .iter()
                .filter(|r| r.key.kid() != key.kid())
                .map(|r| VerifyingKey::of(&r.key, Some(r.retired_at.unix_timestamp().saturating_add(secs)))),
        );
        Self {
            ed25519: key.expanded_ed25519(),
            header_b64: URL_SAFE_NO_PAD.encode(header.to_string()),
            encoding: key.keys().0,
            key,
            verifying,
            issuer: issuer.into(),
            audience: None,
            lifetime,
            clock: Arc::new(SystemClock),
            claims: None,
        }
    }

    /// Sets the `aud` claim.
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Uses `clock` for `iat` and `exp` when the request carries no time
    /// (an [`OAuthServer`](crate::OAuthServer) always passes its own, so set
    /// this only for a minter used on its own).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Adds the claims `hook` returns to every token (for example `acr`,
    /// `auth_time` or roles from the grant's sealed metadata). A hook error
    /// fails the mint ([`MintError::Other`], answered `server_error`); a
    /// claim in [`RESERVED_CLAIMS`] fails it with
    /// [`MintError::ReservedClaim`]. Introspection returns the extra claims too.
    ///
    /// ```
    /// use rotoken_http::{AccessTokenMinter, AccessTokenRequest, JwtMinter, SigningKey};
    /// use serde_json::{Map, Value};
    ///
    /// let minter = JwtMinter::new(SigningKey::generate_ed25519()?, "https://auth.example", std::time::Duration::from_secs(300))
    ///     .with_claims(|request| {
    ///         // The metadata your code exchange sealed with the family (IssueRequest::metadata).
    ///         let mut claims: Map<String, Value> = serde_json::from_slice(request.metadata).unwrap_or_default();
    ///         claims.insert("tenant".into(), "acme".into());
    ///         Ok(claims)
    ///     });
    /// let scope = rotoken::Scope::parse("openid")?;
    /// let mut request = AccessTokenRequest::new("alice", "web", &scope);
    /// request.metadata = br#"{"acr":"mfa"}"#;
    /// let token = minter.sign(&request)?;
    /// let claims = minter.introspect(&token.value).unwrap();
    /// assert_eq!((claims["acr"].as_str(), claims["tenant"].as_str()), (Some("mfa"), Some("acme")));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn with_claims(
        mut self,
        hook: impl Fn(&AccessTokenRequest<'_>) -> Result<Map<String, Value>, BoxError> + Send + Sync + 'static,
    ) -> Self {
        self.claims = Some(Arc::new(hook));
        self
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The hook's claims for `request`, refused if one is reserved.
    fn extra_claims(&self, request: &AccessTokenRequest<'_>) -> Result<Map<String, Value>, MintError> {
        let Some(hook) = &self.claims else {
            return Ok(Map::new());
        };
        let extra = hook(request).map_err(MintError::Other)?;
        if let Some(name) = extra.keys().find(|k| RESERVED_CLAIMS.contains(&k.as_str())) {
            return Err(MintError::ReservedClaim(name.clone()));
        }
        Ok(extra)
    }

    fn verifying_key(&self, kid: &str, now: i64) -> Option<&VerifyingKey> {
        self.verifying.iter().find(|k| k.kid == kid && k.live(now))
    }
}

impl JwtMinter {
    /// Signs one access token for `request`: [`AccessTokenMinter::mint`]
    /// without the future (signing with a key in memory never waits).
    ///
    /// # Errors
    ///
    /// [`MintError::Random`] without randomness for the `jti`,
    /// [`MintError::Signing`], or the [claims hook](JwtMinter::with_claims)'s
    /// error ([`MintError::ReservedClaim`], [`MintError::Other`]).
    pub fn sign(&self, request: &AccessTokenRequest<'_>) -> Result<AccessToken, MintError> {
        let now = request.now.unwrap_or_else(|| self.clock.now()).unix_timestamp();
        let lifetime = i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX);
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(MintError::Random)?;
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: request.subject.to_owned(),
            aud: Some(
                request
                    .audience
                    .or(self.audience.as_deref())
                    .unwrap_or(&self.issuer)
                    .to_owned(),
            ),
            sid: request.family.map(ToString::to_string),
            client_id: request.client_id.to_owned(),
            scope: request.scope.to_string(),
            exp: now.saturating_add(lifetime),
            iat: now,
            jti: URL_SAFE_NO_PAD.encode(jti),
            cnf: request.confirmation.map(|j| Confirmation { jkt: j.to_owned() }),
            extra: self.extra_claims(request)?,
        };
        let value = match &self.ed25519 {
            // EdDSA with the key expanded once (jsonwebtoken would expand it
            // from its DER form again for every token: a second scalar
            // multiplication per refresh).
            Some(key) => {
                let payload = serde_json::to_vec(&claims).map_err(|e| MintError::Signing(e.to_string()))?;
                let mut jwt = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 92);
                jwt.push_str(&self.header_b64);
                jwt.push('.');
                URL_SAFE_NO_PAD.encode_string(&payload, &mut jwt);
                let signature = ed25519_dalek::Signer::sign(key, jwt.as_bytes());
                jwt.push('.');
                URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut jwt);
                jwt
            }
            None => {
                let mut header = Header::new(self.key.algorithm());
                header.typ = Some("at+jwt".to_owned());
                header.kid = Some(self.key.kid().to_owned());
                jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(|e| MintError::Signing(e.to_string()))?
            }
        };
        Ok(AccessToken::new(value, self.lifetime.as_secs()))
    }
}

#[async_trait::async_trait]
impl AccessTokenMinter for JwtMinter {
    async fn mint(&self, request: &AccessTokenRequest<'_>) -> Result<AccessToken, MintError> {
        self.sign(request)
    }

    fn jwks(&self) -> Value {
        self.jwks_at(self.clock.now())
    }

    fn jwks_at(&self, now: OffsetDateTime) -> Value {
        let now = now.unix_timestamp();
        let keys: Vec<&Value> = self
            .verifying
            .iter()
            .filter(|k| k.live(now))
            .filter_map(|k| k.jwk.as_ref())
            .collect();
        json!({ "keys": keys })
    }

    fn introspect(&self, token: &str) -> Option<Map<String, Value>> {
        self.introspect_at(token, self.clock.now())
    }

    fn introspect_at(&self, token: &str, now: OffsetDateTime) -> Option<Map<String, Value>> {
        let now = now.unix_timestamp();
        // Only what looks like one of ours is verified (bounded work).
        if token.len() > 8 * 1024 || token.bytes().filter(|&b| b == b'.').count() != 2 {
            return None;
        }
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.typ.as_deref() != Some("at+jwt") {
            return None;
        }
        let key = self.verifying_key(header.kid.as_deref()?, now)?;
        let mut validation = Validation::new(key.algorithm);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.set_issuer(&[&self.issuer]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .ok()?
            .claims;
        if claims.exp <= now {
            return None;
        }
        let mut out = claims.extra;
        out.insert("scope".into(), claims.scope.into());
        out.insert("client_id".into(), claims.client_id.into());
        out.insert("sub".into(), claims.sub.into());
        out.insert("exp".into(), claims.exp.into());
        out.insert("iat".into(), claims.iat.into());
        out.insert("iss".into(), claims.iss.into());
        out.insert("jti".into(), claims.jti.into());
        if let Some(aud) = claims.aud {
            out.insert("aud".into(), aud.into());
        }
        if let Some(sid) = claims.sid {
            out.insert("sid".into(), sid.into());
        }
        let token_type = if claims.cnf.is_some() { "DPoP" } else { "Bearer" };
        out.insert("token_type".into(), token_type.into());
        if let Some(cnf) = claims.cnf {
            out.insert("cnf".into(), json!({ "jkt": cnf.jkt }));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SigningKeyError;
    use jsonwebtoken::Algorithm;
    use rotoken::Scope;

    fn scope() -> Scope {
        Scope::parse("openid offline_access").unwrap()
    }

    #[test]
    fn ed25519_tokens_carry_the_claims_and_verify_with_the_published_key() {
        let key = SigningKey::ed25519_from_seed([7; 32]);
        let minter = JwtMinter::new(key.clone(), "https://as.example", Duration::from_secs(60));
        let s = scope();
        let mut req = AccessTokenRequest::new("alice", "web", &s);
        req.confirmation = Some("jkt-1");
        let token = minter.sign(&req).unwrap();
        let header = jsonwebtoken::decode_header(&token.value).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        // Verify with the JWKS the endpoint publishes.
        let jwks = minter.jwks();
        let x = jwks["keys"][0]["x"].as_str().unwrap();
        let mut v = Validation::new(Algorithm::EdDSA);
        v.validate_aud = false;
        let claims: Value = jsonwebtoken::decode(&token.value, &DecodingKey::from_ed_components(x).unwrap(), &v)
            .unwrap()
            .claims;
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["client_id"], "web");
        assert_eq!(claims["scope"], "offline_access openid");
        assert_eq!(claims["iss"], "https://as.example");
        assert_eq!(claims["cnf"]["jkt"], "jkt-1");
        assert!(claims["jti"].as_str().unwrap().len() >= 16);
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 60);
        let intro = minter.introspect(&token.value).unwrap();
        assert_eq!(intro["token_type"], "DPoP");
    }

    #[test]
    fn hs256_keys_are_never_published_and_must_be_long() {
        assert!(matches!(
            SigningKey::hs256("k", b"short"),
            Err(SigningKeyError::WeakSecret)
        ));
        let key = SigningKey::hs256("k1", &[1; 32]).unwrap();
        let minter = JwtMinter::new(key, "iss", Duration::from_secs(60)).with_audience("api");
        assert_eq!(minter.jwks()["keys"].as_array().unwrap().len(), 0);
        let s = scope();
        let t = minter.sign(&AccessTokenRequest::new("bob", "cli", &s)).unwrap();
        let intro = minter.introspect(&t.value).unwrap();
        assert_eq!(intro["aud"], "api");
        assert_eq!(intro["token_type"], "Bearer");
    }

    #[test]
    fn introspection_refuses_expired_foreign_and_garbage_tokens() {
        let clock = rotoken::ManualClock::at_unix_millis(1_000_000_000);
        let minter = JwtMinter::new(SigningKey::ed25519_from_seed([1; 32]), "iss", Duration::from_secs(60))
            .with_clock(Arc::new(clock.clone()));
        let other = JwtMinter::new(SigningKey::ed25519_from_seed([2; 32]), "iss", Duration::from_secs(60));
        let s = scope();
        let req = AccessTokenRequest::new("alice", "web", &s);
        let t = minter.sign(&req).unwrap();
        assert!(minter.introspect(&t.value).is_some());
        assert!(minter.introspect(&other.sign(&req).unwrap().value).is_none());
        assert!(minter.introspect("a.b.c").is_none());
        assert!(minter.introspect("rt1_whatever").is_none());
        clock.advance(Duration::from_secs(61));
        assert!(minter.introspect(&t.value).is_none());
    }
}
