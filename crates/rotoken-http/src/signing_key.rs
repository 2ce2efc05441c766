//! The access-token signing key (Ed25519 or HS256) and its key file.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::error::SigningKeyError;

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

pub(crate) const KEY_FILE_HEADER: &str = "rotoken-signing-key v1";
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

    pub(crate) fn algorithm(&self) -> Algorithm {
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
    pub(crate) fn expanded_ed25519(&self) -> Option<ed25519_dalek::SigningKey> {
        match &self.material {
            Material::Ed25519(seed) => Some(ed25519_dalek::SigningKey::from_bytes(seed)),
            Material::Hs256(_) => None,
        }
    }

    pub(crate) fn keys(&self) -> (EncodingKey, DecodingKey) {
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
        let io = SigningKeyError::io(path);
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
        crate::atomic_file::write_atomically(path, self.to_text().as_bytes()).map_err(SigningKeyError::io(path))
    }

    /// Loads the key file at `path`, or generates an Ed25519 key and writes
    /// it there if there is none. Returns the key and whether it was created.
    ///
    /// # Errors
    ///
    /// As [`SigningKey::load`] and [`SigningKey::save`].
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), SigningKeyError> {
        let (k, created) = Self::load_or_new(path)?;
        if created {
            k.save(path)?;
        }
        Ok((k, created))
    }

    /// Loads the key file at `path`, or generates an Ed25519 key if there is
    /// none, without writing it: for a server that saves it only once it is
    /// sure to start ([`SigningKey::save`]), so a refused start leaves no
    /// file behind. Returns the key and whether it is new.
    ///
    /// # Errors
    ///
    /// As [`SigningKey::load`], or the OS random number generator failed.
    pub fn load_or_new(path: &Path) -> Result<(Self, bool), SigningKeyError> {
        match Self::load(path) {
            Ok(k) => Ok((k, false)),
            Err(SigningKeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok((Self::generate_ed25519()?, true))
            }
            Err(e) => Err(e),
        }
    }
}

/// PKCS #8 v1 wrapping of an Ed25519 seed (RFC 8410 §7).
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

#[cfg(test)]
mod tests {
    use super::*;

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
