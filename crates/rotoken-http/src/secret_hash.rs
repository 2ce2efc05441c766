//! Client secrets, stored only as salted BLAKE3 hashes.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

/// Largest client id accepted, in bytes (the core's limit).
pub const MAX_CLIENT_ID_LEN: usize = rotoken::grant::MAX_CLIENT_ID_LEN;
/// Largest client secret accepted, in bytes.
pub const MAX_CLIENT_SECRET_LEN: usize = 512;
/// Shortest client secret [`SecretHash::new`] accepts, in bytes.
pub const MIN_CLIENT_SECRET_LEN: usize = 16;

const HASH_PREFIX: &str = "blake3-v1$";
const HASH_CONTEXT: &str = "rotoken client secret v1";

/// A client secret, stored only as a salted BLAKE3 hash.
///
/// The text form is `blake3-v1$<salt>$<hash>` (URL-safe base64). Client
/// secrets are machine-generated, high-entropy values (RFC 6749 §2.3.1), so
/// a fast hash suffices; [`SecretHash::new`] refuses secrets shorter than
/// [`MIN_CLIENT_SECRET_LEN`] bytes. Verification compares in constant time.
///
/// ```
/// use rotoken_http::SecretHash;
/// let hash = SecretHash::new(b"s3cret-s3cret-s3cret").unwrap();
/// assert!(hash.verify(b"s3cret-s3cret-s3cret"));
/// assert!(!hash.verify(b"guess"));
/// let stored = hash.to_string();
/// assert!(stored.parse::<SecretHash>().unwrap().verify(b"s3cret-s3cret-s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash {
    salt: [u8; 16],
    hash: [u8; 32],
}

/// Why a secret or a stored hash was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretHashError {
    /// The secret is shorter than [`MIN_CLIENT_SECRET_LEN`] or longer than [`MAX_CLIENT_SECRET_LEN`].
    #[error("a client secret must be {MIN_CLIENT_SECRET_LEN} to {MAX_CLIENT_SECRET_LEN} bytes")]
    Length,
    /// The stored text is not `blake3-v1$<salt>$<hash>`.
    #[error("not a rotoken secret hash (expected blake3-v1$<salt>$<hash>)")]
    Format,
    /// The OS random number generator failed.
    #[error("OS random number generator failed")]
    Random,
}

impl SecretHash {
    /// Hashes `secret` with a fresh random salt.
    ///
    /// # Errors
    ///
    /// [`SecretHashError::Length`] for a too short or too long secret,
    /// [`SecretHashError::Random`] if the OS generator fails.
    pub fn new(secret: &[u8]) -> Result<Self, SecretHashError> {
        if !(MIN_CLIENT_SECRET_LEN..=MAX_CLIENT_SECRET_LEN).contains(&secret.len()) {
            return Err(SecretHashError::Length);
        }
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|_| SecretHashError::Random)?;
        Ok(Self {
            salt,
            hash: digest(&salt, secret),
        })
    }

    /// True if `presented` is the secret. Constant time in the secret's content.
    pub fn verify(&self, presented: &[u8]) -> bool {
        let computed = digest(&self.salt, presented);
        bool::from(computed.ct_eq(&self.hash))
    }
}

fn digest(salt: &[u8; 16], secret: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(HASH_CONTEXT);
    h.update(salt);
    h.update(secret);
    *h.finalize().as_bytes()
}

impl fmt::Display for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{HASH_PREFIX}{}${}",
            URL_SAFE_NO_PAD.encode(self.salt),
            URL_SAFE_NO_PAD.encode(self.hash)
        )
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

impl std::str::FromStr for SecretHash {
    type Err = SecretHashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix(HASH_PREFIX).ok_or(SecretHashError::Format)?;
        let (salt, hash) = rest.split_once('$').ok_or(SecretHashError::Format)?;
        let salt = URL_SAFE_NO_PAD.decode(salt).map_err(|_| SecretHashError::Format)?;
        let hash = URL_SAFE_NO_PAD.decode(hash).map_err(|_| SecretHashError::Format)?;
        Ok(Self {
            salt: salt.try_into().map_err(|_| SecretHashError::Format)?,
            hash: hash.try_into().map_err(|_| SecretHashError::Format)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_hashes_round_trip_and_verify() {
        let h = SecretHash::new(b"0123456789abcdef").unwrap();
        let parsed: SecretHash = h.to_string().parse().unwrap();
        assert_eq!(parsed, h);
        assert!(parsed.verify(b"0123456789abcdef"));
        assert!(!parsed.verify(b"0123456789abcdeF"));
        assert!(!parsed.verify(b""));
        assert_eq!(SecretHash::new(b"short"), Err(SecretHashError::Length));
        assert!("blake3-v1$x$y".parse::<SecretHash>().is_err());
        assert!("plain".parse::<SecretHash>().is_err());
        assert_ne!(SecretHash::new(b"0123456789abcdef").unwrap(), h, "salted");
        assert_eq!(format!("{h:?}"), "SecretHash(..)");
    }
}
