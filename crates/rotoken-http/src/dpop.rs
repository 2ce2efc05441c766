//! DPoP proofs (RFC 9449 §4.3): the proof's signature, `typ`, `alg`,
//! `htm`, `htu`, `iat` window and `jti` replay are all checked here, and
//! only then is the key's thumbprint handed to the core to compare with the
//! family's binding. A thumbprint is never taken from a bare header.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::Digest as _;

use crate::replay::{Digest, Remembered, ReplayCache};

/// Largest DPoP proof accepted, in bytes.
pub const MAX_PROOF_LEN: usize = 4096;
/// Largest `jti` accepted, in bytes.
const MAX_JTI_LEN: usize = 256;
/// The signature algorithms accepted in proofs.
pub const DPOP_ALGORITHMS: [&str; 2] = ["ES256", "EdDSA"];

/// Why a DPoP proof was refused. Every variant is answered with
/// `invalid_dpop_proof` (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DpopError {
    /// More than one `DPoP` header field.
    #[error("more than one DPoP header")]
    MultipleHeaders,
    /// Not a compact JWS, or a part that does not decode.
    #[error("the DPoP proof is malformed: {0}")]
    Malformed(&'static str),
    /// `typ` is not `dpop+jwt`.
    #[error("the DPoP proof's typ must be dpop+jwt")]
    WrongType,
    /// `alg` is not ES256 or EdDSA.
    #[error("the DPoP proof's alg must be ES256 or EdDSA")]
    UnsupportedAlgorithm,
    /// The `jwk` is missing, private, of the wrong kind for `alg`, or not a valid point.
    #[error("the DPoP proof's jwk is not a valid public key for its alg")]
    InvalidKey,
    /// The signature does not verify with the proof's own key.
    #[error("the DPoP proof's signature does not verify")]
    InvalidSignature,
    /// `htm` is not the request's method.
    #[error("the DPoP proof's htm does not match the request method")]
    MethodMismatch,
    /// `htu` is not the endpoint's URL.
    #[error("the DPoP proof's htu does not match the endpoint URL")]
    UriMismatch,
    /// `iat` is outside the accepted window.
    #[error("the DPoP proof's iat is outside the accepted window")]
    Stale,
    /// The `jti` was seen before for this key within the window.
    #[error("the DPoP proof was already used")]
    Replayed,
    /// Server nonces are on and the proof carries none, or not a current
    /// one (RFC 9449 §8): answered `use_dpop_nonce` with a fresh `DPoP-Nonce`.
    #[error("the DPoP proof must carry the server's current nonce (see the DPoP-Nonce header)")]
    UseNonce,
    /// Server nonces are on but no nonce key could be drawn at start-up.
    #[error("DPoP nonces are unavailable on this server")]
    NonceUnavailable,
}

/// A proof whose signature, `typ`, `alg`, `htm`, `htu` and `iat` were
/// checked, not yet remembered against replay.
#[derive(Debug)]
pub(crate) struct CheckedProof {
    /// The key's RFC 7638 thumbprint.
    pub(crate) jkt: String,
    /// The server nonce the proof carries, if any.
    pub(crate) nonce: Option<String>,
    jti: Digest,
    until: i64,
}

/// The accepted `iat` window and the replay cache.
#[derive(Debug)]
pub(crate) struct DpopVerifier {
    /// How old a proof may be, seconds.
    pub(crate) max_age: i64,
    /// How far in the future a proof's `iat` may be (clock skew), seconds.
    pub(crate) max_skew: i64,
    pub(crate) replay: ReplayCache,
}

impl DpopVerifier {
    /// Verifies `proof` for a request with `method` to `url` at `now`
    /// (unix seconds) and remembers it: the key's RFC 7638 thumbprint.
    #[cfg(test)]
    pub(crate) fn verify(&self, proof: &str, method: &str, url: &str, now: i64) -> Result<String, DpopError> {
        let checked = self.check(proof, method, url, now)?;
        self.remember(&checked, now)?;
        Ok(checked.jkt)
    }

    /// Checks everything but replay: remember the proof with
    /// [`DpopVerifier::remember`] once the request is otherwise authenticated.
    pub(crate) fn check(&self, proof: &str, method: &str, url: &str, now: i64) -> Result<CheckedProof, DpopError> {
        let verified = verify_signature(proof)?;
        let claims = &verified.claims;
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        let jti = text("jti").ok_or(DpopError::Malformed("jti is missing"))?;
        if jti.is_empty() || jti.len() > MAX_JTI_LEN {
            return Err(DpopError::Malformed("jti must be 1 to 256 bytes"));
        }
        let htm = text("htm").ok_or(DpopError::Malformed("htm is missing"))?;
        let htu = text("htu").ok_or(DpopError::Malformed("htu is missing"))?;
        let iat = claims
            .get("iat")
            .and_then(|v| {
                v.as_i64()
                    .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            })
            .ok_or(DpopError::Malformed("iat is missing or not a number"))?;
        if htm != method {
            return Err(DpopError::MethodMismatch);
        }
        match (normalize_url(htu), normalize_url(url)) {
            (Some(a), Some(b)) if a == b => {}
            _ => return Err(DpopError::UriMismatch),
        }
        if iat < now.saturating_sub(self.max_age) || iat > now.saturating_add(self.max_skew) {
            return Err(DpopError::Stale);
        }
        let nonce = match claims.get("nonce") {
            None => None,
            Some(Value::String(n)) if n.len() <= MAX_JTI_LEN => Some(n.clone()),
            Some(_) => return Err(DpopError::Malformed("nonce must be a string of at most 256 bytes")),
        };
        Ok(CheckedProof {
            jti: *blake3::hash(jti.as_bytes()).as_bytes(),
            until: iat.saturating_add(self.max_age).max(now.saturating_add(self.max_skew)),
            jkt: verified.jkt,
            nonce,
        })
    }

    /// Remembers a checked proof's `jti` for its key.
    ///
    /// # Errors
    ///
    /// [`DpopError::Replayed`] if the key used it before within the window.
    pub(crate) fn remember(&self, proof: &CheckedProof, now: i64) -> Result<(), DpopError> {
        let key = *blake3::hash(proof.jkt.as_bytes()).as_bytes();
        match self.replay.remember(key, proof.jti, now, proof.until) {
            Remembered::New => Ok(()),
            Remembered::Replayed => Err(DpopError::Replayed),
        }
    }
}

struct Verified {
    jkt: String,
    claims: serde_json::Map<String, Value>,
}

/// Checks the JWS structure, `typ`, `alg`, the `jwk` and the signature.
fn verify_signature(proof: &str) -> Result<Verified, DpopError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(DpopError::Malformed("the proof is too long"));
    }
    let mut parts = proof.split('.');
    let (Some(h64), Some(p64), Some(s64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(DpopError::Malformed("not a compact JWS"));
    };
    let header = decode_object(h64).ok_or(DpopError::Malformed("the header is not base64url JSON"))?;
    let claims = decode_object(p64).ok_or(DpopError::Malformed("the payload is not base64url JSON"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|_| DpopError::Malformed("the signature is not base64url"))?;
    if !header
        .get("typ")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt"))
    {
        return Err(DpopError::WrongType);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(DpopError::UnsupportedAlgorithm)?;
    let jwk = header
        .get("jwk")
        .and_then(Value::as_object)
        .ok_or(DpopError::InvalidKey)?;
    if jwk.contains_key("d") {
        return Err(DpopError::InvalidKey);
    }
    let field = |name: &str| -> Result<Vec<u8>, DpopError> {
        let v = jwk.get(name).and_then(Value::as_str).ok_or(DpopError::InvalidKey)?;
        URL_SAFE_NO_PAD.decode(v).map_err(|_| DpopError::InvalidKey)
    };
    let kty = jwk.get("kty").and_then(Value::as_str);
    let crv = jwk.get("crv").and_then(Value::as_str);
    let signed = &proof.as_bytes()[..h64.len() + 1 + p64.len()];
    let jkt = match alg {
        "ES256" => {
            if kty != Some("EC") || crv != Some("P-256") {
                return Err(DpopError::InvalidKey);
            }
            let (x, y) = (field("x")?, field("y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err(DpopError::InvalidKey);
            }
            let mut point = [0u8; 65];
            point[0] = 4;
            point[1..33].copy_from_slice(&x);
            point[33..].copy_from_slice(&y);
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(|_| DpopError::InvalidKey)?;
            let sig = p256::ecdsa::Signature::from_slice(&signature).map_err(|_| DpopError::InvalidSignature)?;
            p256::ecdsa::signature::Verifier::verify(&key, signed, &sig).map_err(|_| DpopError::InvalidSignature)?;
            thumbprint_ec(&URL_SAFE_NO_PAD.encode(x), &URL_SAFE_NO_PAD.encode(y))
        }
        "EdDSA" => {
            if kty != Some("OKP") || crv != Some("Ed25519") {
                return Err(DpopError::InvalidKey);
            }
            let x: [u8; 32] = field("x")?.try_into().map_err(|_| DpopError::InvalidKey)?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| DpopError::InvalidKey)?;
            let sig = ed25519_dalek::Signature::from_slice(&signature).map_err(|_| DpopError::InvalidSignature)?;
            key.verify_strict(signed, &sig)
                .map_err(|_| DpopError::InvalidSignature)?;
            thumbprint_okp(&URL_SAFE_NO_PAD.encode(x))
        }
        _ => return Err(DpopError::UnsupportedAlgorithm),
    };
    Ok(Verified { jkt, claims })
}

fn decode_object(b64: &str) -> Option<serde_json::Map<String, Value>> {
    if b64.len() > MAX_PROOF_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// RFC 7638 thumbprint of a P-256 key from its base64url coordinates.
fn thumbprint_ec(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()))
}

/// RFC 7638 thumbprint of an Ed25519 key from its base64url public key.
pub(crate) fn thumbprint_okp(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()))
}

/// The RFC 7638 SHA-256 thumbprint (`jkt`) of a public JWK (P-256 or
/// Ed25519), as a server binds a family to it at issue.
///
/// ```
/// // RFC 8037 §A.3: the thumbprint of the example Ed25519 key.
/// let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
/// assert_eq!(rotoken_http::jwk_thumbprint(&jwk).unwrap(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
/// ```
///
/// # Errors
///
/// [`DpopError::InvalidKey`] for anything else.
pub fn jwk_thumbprint(jwk: &Value) -> Result<String, DpopError> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str).ok_or(DpopError::InvalidKey);
    let bytes = |name: &str| -> Result<Vec<u8>, DpopError> {
        URL_SAFE_NO_PAD.decode(text(name)?).map_err(|_| DpopError::InvalidKey)
    };
    match (text("kty")?, text("crv")?) {
        ("EC", "P-256") => {
            let (x, y) = (bytes("x")?, bytes("y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err(DpopError::InvalidKey);
            }
            Ok(thumbprint_ec(&URL_SAFE_NO_PAD.encode(x), &URL_SAFE_NO_PAD.encode(y)))
        }
        ("OKP", "Ed25519") => {
            let x = bytes("x")?;
            if x.len() != 32 {
                return Err(DpopError::InvalidKey);
            }
            Ok(thumbprint_okp(&URL_SAFE_NO_PAD.encode(x)))
        }
        _ => Err(DpopError::InvalidKey),
    }
}

/// `scheme://authority/path` with scheme and host lower-cased, default
/// ports dropped, and no query or fragment (RFC 9449 §4.3 step 9).
fn normalize_url(url: &str) -> Option<String> {
    let without_fragment = url.split('#').next()?;
    let uri: http::Uri = without_fragment.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    let host = authority.host().to_ascii_lowercase();
    let port = match (authority.port_u16(), scheme.as_str()) {
        (Some(443), "https") | (Some(80), "http") | (None, _) => String::new(),
        (Some(p), _) => format!(":{p}"),
    };
    let path = match uri.path() {
        "" => "/",
        p => p,
    };
    Some(format!("{scheme}://{host}{port}{path}"))
}

/// The tests' DPoP key: the same one the integration tests sign proofs with.
#[cfg(test)]
#[path = "../tests/common/dpop_key.rs"]
mod dpop_key;

#[cfg(test)]
pub(crate) mod tests {
    use super::dpop_key::DpopKey;
    use super::*;
    use serde_json::json;

    const URL: &str = "https://as.example/oauth/token";

    fn verifier() -> DpopVerifier {
        DpopVerifier {
            max_age: 60,
            max_skew: 5,
            replay: ReplayCache::new(4, 4),
        }
    }

    #[test]
    fn valid_proofs_give_the_thumbprint_once() {
        let v = verifier();
        for key in [DpopKey::es256(3), DpopKey::ed25519(3)] {
            let p = key.proof("POST", URL, 1000, "j1");
            assert_eq!(v.verify(&p, "POST", URL, 1000), Ok(key.jkt()));
            assert_eq!(v.verify(&p, "POST", URL, 1001), Err(DpopError::Replayed));
        }
    }

    #[test]
    fn every_check_refuses_its_case() {
        let v = verifier();
        let k = DpopKey::es256(5);
        let cases = [
            (k.proof("GET", URL, 1000, "a"), DpopError::MethodMismatch),
            (
                k.proof("POST", "https://other.example/oauth/token", 1000, "b"),
                DpopError::UriMismatch,
            ),
            (k.proof("POST", URL, 900, "c"), DpopError::Stale),
            (k.proof("POST", URL, 1010, "d"), DpopError::Stale),
            (
                k.sign_raw(
                    &json!({"typ": "JWT", "alg": "ES256", "jwk": k.jwk()}),
                    &json!({"jti": "e", "htm": "POST", "htu": URL, "iat": 1000}),
                ),
                DpopError::WrongType,
            ),
            (
                k.sign_raw(
                    &json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": "AAAA"}}),
                    &json!({"jti": "f", "htm": "POST", "htu": URL, "iat": 1000}),
                ),
                DpopError::UnsupportedAlgorithm,
            ),
            (
                k.sign_raw(
                    &json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": k.jwk()}),
                    &json!({"jti": "g", "htm": "POST", "htu": URL, "iat": 1000}),
                ),
                DpopError::InvalidKey,
            ),
            (
                k.sign_raw(
                    &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": DpopKey::es256(6).jwk()}),
                    &json!({"jti": "h", "htm": "POST", "htu": URL, "iat": 1000}),
                ),
                DpopError::InvalidSignature,
            ),
            (
                k.sign_raw(
                    &json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}}),
                    &json!({"jti": "i", "htm": "POST", "htu": URL, "iat": 1000}),
                ),
                DpopError::InvalidKey,
            ),
            (
                k.sign_raw(
                    &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": k.jwk()}),
                    &json!({"htm": "POST", "htu": URL, "iat": 1000}),
                ),
                DpopError::Malformed("jti is missing"),
            ),
            ("a.b".to_owned(), DpopError::Malformed("not a compact JWS")),
            (
                "!!.!!.!!".to_owned(),
                DpopError::Malformed("the header is not base64url JSON"),
            ),
            ("x".repeat(5000), DpopError::Malformed("the proof is too long")),
        ];
        for (proof, expected) in cases {
            assert_eq!(v.verify(&proof, "POST", URL, 1000), Err(expected));
        }
        let mut private = k.jwk();
        private["d"] = json!("AAAA");
        let p = k.sign_raw(
            &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": private}),
            &json!({"jti": "j", "htm": "POST", "htu": URL, "iat": 1000}),
        );
        assert_eq!(v.verify(&p, "POST", URL, 1000), Err(DpopError::InvalidKey));
    }

    #[test]
    fn htu_ignores_query_fragment_case_and_default_port() {
        let v = verifier();
        let k = DpopKey::ed25519(9);
        let p = k.proof("POST", "HTTPS://AS.example:443/oauth/token?x=1#f", 1000, "q");
        assert!(v.verify(&p, "POST", URL, 1000).is_ok());
        let p = k.proof("POST", "https://as.example/oauth/token/", 1000, "r");
        assert_eq!(v.verify(&p, "POST", URL, 1000), Err(DpopError::UriMismatch));
    }

    #[test]
    fn thumbprints_follow_rfc7638() {
        // RFC 7638 §3.1 is RSA; RFC 8037 §A.3 gives the Ed25519 example.
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        assert_eq!(
            jwk_thumbprint(&jwk).unwrap(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        assert!(jwk_thumbprint(&json!({"kty": "RSA"})).is_err());
    }
}
