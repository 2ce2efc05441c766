//! A client's DPoP key that signs proofs, for tests. One copy serves both the
//! integration tests (through `tests/common/mod.rs`) and the unit tests of
//! `src/dpop.rs` (through a `#[path]` module); each parent module has
//! `jwk_thumbprint` in scope for [`DpopKey::jkt`].
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer as _;
use serde_json::{Value, json};

use super::jwk_thumbprint;

/// A client's DPoP key.
pub enum DpopKey {
    Es256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

impl DpopKey {
    pub fn es256(seed: u8) -> Self {
        Self::Es256(p256::ecdsa::SigningKey::from_slice(&[seed.max(1); 32]).unwrap())
    }

    pub fn ed25519(seed: u8) -> Self {
        Self::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        match self {
            Self::Es256(k) => {
                let p = k.verifying_key().to_encoded_point(false);
                json!({"kty": "EC", "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(p.x().unwrap()), "y": URL_SAFE_NO_PAD.encode(p.y().unwrap())})
            }
            Self::Ed25519(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(k.verifying_key().as_bytes())})
            }
        }
    }

    /// The JWK thumbprint (`jkt`) a proof from this key binds to.
    pub fn jkt(&self) -> String {
        jwk_thumbprint(&self.jwk()).unwrap()
    }

    /// A well-formed proof for a request with method `htm` to `htu`.
    pub fn proof(&self, htm: &str, htu: &str, iat: i64, jti: &str) -> String {
        let alg = match self {
            Self::Es256(_) => "ES256",
            Self::Ed25519(_) => "EdDSA",
        };
        self.sign_raw(
            &json!({"typ": "dpop+jwt", "alg": alg, "jwk": self.jwk()}),
            &json!({"jti": jti, "htm": htm, "htu": htu, "iat": iat}),
        )
    }

    /// A proof carrying a server-provided `nonce` (RFC 9449 §8).
    pub fn proof_with_nonce(&self, htm: &str, htu: &str, iat: i64, jti: &str, nonce: &str) -> String {
        let alg = match self {
            Self::Es256(_) => "ES256",
            Self::Ed25519(_) => "EdDSA",
        };
        self.sign_raw(
            &json!({"typ": "dpop+jwt", "alg": alg, "jwk": self.jwk()}),
            &json!({"jti": jti, "htm": htm, "htu": htu, "iat": iat, "nonce": nonce}),
        )
    }

    /// Any header and claims, signed with this key whatever `alg` says.
    pub fn sign_raw(&self, header: &Value, claims: &Value) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = match self {
            Self::Es256(k) => {
                let s: p256::ecdsa::Signature = k.sign(signed.as_bytes());
                s.to_bytes().to_vec()
            }
            Self::Ed25519(k) => ed25519_dalek::Signer::sign(k, signed.as_bytes()).to_bytes().to_vec(),
        };
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}
