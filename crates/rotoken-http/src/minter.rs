//! Access tokens: the trait a server implements to mint them, and the
//! default minter that signs JWT access tokens (RFC 9068 shape) with an
//! Ed25519 (EdDSA) or HS256 key.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rotoken::{Clock, FamilyId, Scope, SystemClock};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::error::{MintError, SigningKeyError};

/// What an access token is minted for.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct AccessTokenRequest<'a> {
    /// The resource owner.
    pub subject: &'a str,
    /// The client the token is for.
    pub client_id: &'a str,
    /// The scope of this access token (the grant's, or a narrower requested one).
    pub scope: &'a Scope,
    /// The DPoP key thumbprint the token is bound to (`cnf.jkt`, RFC 9449 §6), if any.
    pub dpop_jkt: Option<&'a str>,
    /// The refresh-token family this token comes from, if any.
    pub family: Option<&'a FamilyId>,
    /// The family's sealed metadata (for example an authentication context).
    pub metadata: &'a [u8],
    /// The `aud` for this token (the client's), instead of the minter's default.
    pub audience: Option<&'a str>,
}

/// A minted access token.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessToken {
    /// The token itself.
    pub value: String,
    /// Its lifetime in seconds (`expires_in`).
    pub expires_in: u64,
}

impl AccessToken {
    /// An access token valid for `expires_in` seconds.
    pub fn new(value: impl Into<String>, expires_in: u64) -> Self {
        Self {
            value: value.into(),
            expires_in,
        }
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &"..")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Mints access tokens. A server implements it to issue its own kind of
/// token; [`JwtMinter`] signs JWTs.
///
/// ```
/// use rotoken_http::{AccessToken, AccessTokenMinter, AccessTokenRequest, MintError};
///
/// /// Opaque random access tokens, kept by the server's resource servers.
/// struct Opaque;
///
/// impl AccessTokenMinter for Opaque {
///     fn mint(&self, _request: &AccessTokenRequest<'_>) -> Result<AccessToken, MintError> {
///         let mut bytes = [0u8; 32];
///         getrandom::fill(&mut bytes).map_err(MintError::Random)?;
///         let value = bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
///         Ok(AccessToken::new(value, 300))
///     }
/// }
/// ```
pub trait AccessTokenMinter: Send + Sync {
    /// Mints one access token.
    ///
    /// # Errors
    ///
    /// [`MintError`]; the endpoint answers `server_error`.
    fn mint(&self, request: &AccessTokenRequest<'_>) -> Result<AccessToken, MintError>;

    /// The public keys resource servers verify access tokens with (a JWK
    /// Set). Default: no keys.
    fn jwks(&self) -> Value {
        json!({ "keys": [] })
    }

    /// RFC 7662 members for an access token this minter issued and that is
    /// still valid (`active` is added by the caller). Default: `None`.
    fn introspect(&self, _token: &str) -> Option<Map<String, Value>> {
        None
    }
}

/// An access-token signing key: Ed25519 (`EdDSA`, published at the JWKS
/// endpoint) or an HS256 secret (never published).
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    material: Material,
}

#[derive(Clone)]
enum Material {
    Ed25519(Zeroizing<[u8; 32]>),
    Hs256(Zeroizing<Vec<u8>>),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.algorithm_name())
            .finish_non_exhaustive()
    }
}

const KEY_FILE_HEADER: &str = "rotoken-signing-key v1";
const MAX_KEY_FILE_LEN: u64 = 16 * 1024;

impl SigningKey {
    /// A new random Ed25519 key; its `kid` is its JWK thumbprint.
    ///
    /// # Errors
    ///
    /// [`SigningKeyError::Random`] if the OS generator fails.
    pub fn generate_ed25519() -> Result<Self, SigningKeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(SigningKeyError::Random)?;
        Ok(Self::ed25519(seed))
    }

    /// An Ed25519 key from its 32-byte seed.
    pub fn ed25519_from_seed(seed: [u8; 32]) -> Self {
        Self::ed25519(Zeroizing::new(seed))
    }

    fn ed25519(seed: Zeroizing<[u8; 32]>) -> Self {
        let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        let kid = crate::dpop::thumbprint_okp(&URL_SAFE_NO_PAD.encode(public.as_bytes()));
        Self {
            kid,
            material: Material::Ed25519(seed),
        }
    }

    /// An HS256 key from a shared secret of at least 32 bytes.
    ///
    /// # Errors
    ///
    /// [`SigningKeyError::WeakSecret`] for a shorter secret.
    pub fn hs256(kid: impl Into<String>, secret: &[u8]) -> Result<Self, SigningKeyError> {
        if secret.len() < 32 {
            return Err(SigningKeyError::WeakSecret);
        }
        Ok(Self {
            kid: kid.into(),
            material: Material::Hs256(Zeroizing::new(secret.to_vec())),
        })
    }

    /// The key id (`kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `EdDSA` or `HS256`.
    pub fn algorithm_name(&self) -> &'static str {
        match self.material {
            Material::Ed25519(_) => "EdDSA",
            Material::Hs256(_) => "HS256",
        }
    }

    fn algorithm(&self) -> Algorithm {
        match self.material {
            Material::Ed25519(_) => Algorithm::EdDSA,
            Material::Hs256(_) => Algorithm::HS256,
        }
    }

    /// The public JWK (`None` for HS256, whose secret is never published).
    pub fn public_jwk(&self) -> Option<Value> {
        match &self.material {
            Material::Ed25519(seed) => {
                let public = ed25519_dalek::SigningKey::from_bytes(seed).verifying_key();
                Some(json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(public.as_bytes()),
                    "kid": self.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                }))
            }
            Material::Hs256(_) => None,
        }
    }

    /// The expanded Ed25519 key, kept by the minter so that signing does
    /// not derive it again for every token.
    fn expanded_ed25519(&self) -> Option<ed25519_dalek::SigningKey> {
        match &self.material {
            Material::Ed25519(seed) => Some(ed25519_dalek::SigningKey::from_bytes(seed)),
            Material::Hs256(_) => None,
        }
    }

    fn keys(&self) -> (EncodingKey, DecodingKey) {
        match &self.material {
            Material::Ed25519(seed) => {
                let mut der = Zeroizing::new(Vec::with_capacity(48));
                der.extend_from_slice(&ED25519_PKCS8_PREFIX);
                der.extend_from_slice(seed.as_ref());
                let public = ed25519_dalek::SigningKey::from_bytes(seed).verifying_key();
                (
                    EncodingKey::from_ed_der(&der),
                    DecodingKey::from_ed_der(public.as_bytes()),
                )
            }
            Material::Hs256(secret) => (EncodingKey::from_secret(secret), DecodingKey::from_secret(secret)),
        }
    }

    /// Parses a key file's contents.
    ///
    /// # Errors
    ///
    /// [`SigningKeyError::Format`].
    pub fn from_text(text: &str) -> Result<Self, SigningKeyError> {
        let fail = |s: &str| SigningKeyError::Format(s.to_owned());
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        if lines.next() != Some(KEY_FILE_HEADER) {
            return Err(fail("the first line must be `rotoken-signing-key v1`"));
        }
        let (mut kid, mut alg, mut key) = (None, None, None);
        for line in lines {
            match line.split_once(' ') {
                Some(("kid", v)) => kid = Some(v.trim().to_owned()),
                Some(("alg", v)) => alg = Some(v.trim().to_owned()),
                Some(("key", v)) => {
                    key = Some(Zeroizing::new(
                        URL_SAFE_NO_PAD
                            .decode(v.trim())
                            .map_err(|_| fail("key is not base64url"))?,
                    ));
                }
                _ => return Err(fail("unknown line")),
            }
        }
        let key = key.ok_or_else(|| fail("no key line"))?;
        match alg.as_deref() {
            Some("EdDSA") => {
                let seed: [u8; 32] = key
                    .as_slice()
                    .try_into()
                    .map_err(|_| fail("an EdDSA key is 32 bytes"))?;
                let k = Self::ed25519(Zeroizing::new(seed));
                match kid {
                    Some(kid) if kid != k.kid => Err(fail("kid does not match the key")),
                    _ => Ok(k),
                }
            }
            Some("HS256") => Self::hs256(kid.ok_or_else(|| fail("no kid line"))?, &key),
            _ => Err(fail("alg must be EdDSA or HS256")),
        }
    }

    /// The key file's contents.
    pub fn to_text(&self) -> Zeroizing<String> {
        let key = match &self.material {
            Material::Ed25519(seed) => URL_SAFE_NO_PAD.encode(seed.as_ref()),
            Material::Hs256(secret) => URL_SAFE_NO_PAD.encode(secret.as_slice()),
        };
        Zeroizing::new(format!(
            "{KEY_FILE_HEADER}\n# Secret: whoever holds this file can sign access tokens.\nkid {}\nalg {}\nkey {key}\n",
            self.kid,
            self.algorithm_name()
        ))
    }

    /// Loads a key file.
    ///
    /// # Errors
    ///
    /// [`SigningKeyError::Io`] or [`SigningKeyError::Format`].
    pub fn load(path: &Path) -> Result<Self, SigningKeyError> {
        use std::io::Read as _;
        let io = |source| SigningKeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut text = Zeroizing::new(String::new());
        std::fs::File::open(path)
            .map_err(io)?
            .take(MAX_KEY_FILE_LEN)
            .read_to_string(&mut text)
            .map_err(io)?;
        Self::from_text(&text)
    }

    /// Writes the key file (mode 0600), replacing it atomically.
    ///
    /// # Errors
    ///
    /// [`SigningKeyError::Io`].
    pub fn save(&self, path: &Path) -> Result<(), SigningKeyError> {
        crate::client::write_atomically(path, self.to_text().as_bytes()).map_err(|source| SigningKeyError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Loads the key file at `path`, or generates an Ed25519 key and writes
    /// it there if there is none. Returns the key and whether it was created.
    ///
    /// # Errors
    ///
    /// As [`SigningKey::load`] and [`SigningKey::save`].
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), SigningKeyError> {
        match Self::load(path) {
            Ok(k) => Ok((k, false)),
            Err(SigningKeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                let k = Self::generate_ed25519()?;
                k.save(path)?;
                Ok((k, true))
            }
            Err(e) => Err(e),
        }
    }
}

/// PKCS #8 v1 wrapping of an Ed25519 seed (RFC 8410 §7).
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

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
}

#[derive(Debug, Serialize, Deserialize)]
struct Confirmation {
    jkt: String,
}

/// Signs JWT access tokens (header `typ: at+jwt`, RFC 9068) with claims
/// `iss`, `sub`, `aud` (the request's, else the minter's, else the issuer),
/// `sid` (the refresh-token family, if any), `client_id`, `scope`, `exp`,
/// `iat`, `jti`, and `cnf.jkt` for DPoP-bound tokens.
///
/// ```
/// use rotoken_http::{AccessTokenMinter, AccessTokenRequest, JwtMinter, SigningKey};
/// use rotoken::Scope;
///
/// let minter = JwtMinter::new(SigningKey::generate_ed25519()?, "https://auth.example", std::time::Duration::from_secs(300));
/// let scope = Scope::parse("openid")?;
/// let token = minter.mint(&AccessTokenRequest::new("alice", "web", &scope))?;
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
    decoding: DecodingKey,
    issuer: String,
    audience: Option<String>,
    lifetime: Duration,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for JwtMinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtMinter")
            .field("key", &self.key)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl JwtMinter {
    /// A minter signing with `key`, naming `issuer` in `iss`, whose tokens live `lifetime`.
    pub fn new(key: SigningKey, issuer: impl Into<String>, lifetime: Duration) -> Self {
        let (encoding, decoding) = key.keys();
        let header = serde_json::json!({"typ": "at+jwt", "alg": key.algorithm_name(), "kid": key.kid});
        Self {
            ed25519: key.expanded_ed25519(),
            header_b64: URL_SAFE_NO_PAD.encode(header.to_string()),
            key,
            encoding,
            decoding,
            issuer: issuer.into(),
            audience: None,
            lifetime,
            clock: Arc::new(SystemClock),
        }
    }

    /// Sets the `aud` claim.
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Uses `clock` for `iat` and `exp`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }
}

impl AccessTokenRequest<'_> {
    /// A request for `subject` and `client_id` with `scope`, unbound, outside any family.
    pub fn new<'a>(subject: &'a str, client_id: &'a str, scope: &'a Scope) -> AccessTokenRequest<'a> {
        AccessTokenRequest {
            subject,
            client_id,
            scope,
            dpop_jkt: None,
            family: None,
            metadata: &[],
            audience: None,
        }
    }
}

impl AccessTokenMinter for JwtMinter {
    fn mint(&self, request: &AccessTokenRequest<'_>) -> Result<AccessToken, MintError> {
        let now = self.clock.now().unix_timestamp();
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
            cnf: request.dpop_jkt.map(|j| Confirmation { jkt: j.to_owned() }),
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
                header.kid = Some(self.key.kid.clone());
                jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(|e| MintError::Signing(e.to_string()))?
            }
        };
        Ok(AccessToken::new(value, self.lifetime.as_secs()))
    }

    fn jwks(&self) -> Value {
        json!({ "keys": self.key.public_jwk().into_iter().collect::<Vec<_>>() })
    }

    fn introspect(&self, token: &str) -> Option<Map<String, Value>> {
        // Only what looks like one of ours is verified (bounded work).
        if token.len() > 8 * 1024 || token.bytes().filter(|&b| b == b'.').count() != 2 {
            return None;
        }
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.typ.as_deref() != Some("at+jwt") || header.kid.as_deref() != Some(self.key.kid()) {
            return None;
        }
        let mut validation = Validation::new(self.key.algorithm());
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.set_issuer(&[&self.issuer]);
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .ok()?
            .claims;
        if claims.exp <= self.clock.now().unix_timestamp() {
            return None;
        }
        let mut out = Map::new();
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

    fn scope() -> Scope {
        Scope::parse("openid offline_access").unwrap()
    }

    #[test]
    fn ed25519_tokens_carry_the_claims_and_verify_with_the_published_key() {
        let key = SigningKey::ed25519_from_seed([7; 32]);
        let minter = JwtMinter::new(key.clone(), "https://as.example", Duration::from_secs(60));
        let s = scope();
        let mut req = AccessTokenRequest::new("alice", "web", &s);
        req.dpop_jkt = Some("jkt-1");
        let token = minter.mint(&req).unwrap();
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
        let t = minter.mint(&AccessTokenRequest::new("bob", "cli", &s)).unwrap();
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
        let t = minter.mint(&req).unwrap();
        assert!(minter.introspect(&t.value).is_some());
        assert!(minter.introspect(&other.mint(&req).unwrap().value).is_none());
        assert!(minter.introspect("a.b.c").is_none());
        assert!(minter.introspect("rt1_whatever").is_none());
        clock.advance(Duration::from_secs(61));
        assert!(minter.introspect(&t.value).is_none());
    }

    #[test]
    fn key_files_round_trip_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let (k1, created) = SigningKey::load_or_generate(&path).unwrap();
        assert!(created);
        let (k2, created) = SigningKey::load_or_generate(&path).unwrap();
        assert!(!created);
        assert_eq!(k1.kid(), k2.kid());
        assert_eq!(k1.public_jwk(), k2.public_jwk());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let hs = SigningKey::hs256("k", &[9; 40]).unwrap();
        assert_eq!(SigningKey::from_text(&hs.to_text()).unwrap().kid(), "k");
        assert!(SigningKey::from_text("nope").is_err());
        assert!(SigningKey::from_text("rotoken-signing-key v1\nalg EdDSA\nkey AAAA\n").is_err());
        assert!(format!("{k1:?}").contains("EdDSA"));
    }
}
