//! The refresh token of the one-row-per-token baselines (SQLite and
//! PostgreSQL): 32 random bytes, stored as their BLAKE3 hash.

use crate::workload::BoxError;

/// 32 random bytes (a client would hold them base64-encoded).
#[derive(Clone, PartialEq, Eq)]
pub struct OpaqueToken(pub(crate) [u8; 32]);

impl std::fmt::Debug for OpaqueToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpaqueToken(…)")
    }
}

impl OpaqueToken {
    /// A fresh token from the OS CSPRNG.
    pub(crate) fn random() -> Result<Self, BoxError> {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).map_err(|e| format!("random: {e}"))?;
        Ok(Self(b))
    }

    /// What the database stores: the BLAKE3 hash of the token.
    pub(crate) fn hash(&self) -> [u8; 32] {
        *blake3::hash(&self.0).as_bytes()
    }
}
