//! DPoP server nonces (RFC 9449 §8), off by default. A nonce is a keyed
//! BLAKE3 MAC of the current period number under a key drawn at start-up:
//! nothing is stored, every period brings a new one, and the nonces of
//! the current and the previous period are accepted.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

/// Makes and checks nonces.
pub(crate) struct Nonces {
    key: Zeroizing<[u8; 32]>,
    /// Seconds per period, at least 1.
    period: i64,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

const CONTEXT: &[u8] = b"rotoken dpop nonce v1";

impl Nonces {
    /// Nonces under a fresh random key, a new one every `period_secs`.
    pub(crate) fn new(period_secs: u64) -> Result<Self, getrandom::Error> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut_slice())?;
        Ok(Self {
            key,
            period: i64::try_from(period_secs).unwrap_or(i64::MAX).max(1),
        })
    }

    fn at_period(&self, n: i64) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(CONTEXT);
        h.update(&n.to_be_bytes());
        URL_SAFE_NO_PAD.encode(&h.finalize().as_bytes()[..16])
    }

    /// The nonce to hand out at `now` (unix s).
    pub(crate) fn current(&self, now: i64) -> String {
        self.at_period(now.div_euclid(self.period))
    }

    /// True if `nonce` is the current or the previous period's at `now`.
    pub(crate) fn accepts(&self, nonce: &str, now: i64) -> bool {
        let n = now.div_euclid(self.period);
        [n, n.saturating_sub(1)]
            .iter()
            .any(|&p| bool::from(self.at_period(p).as_bytes().ct_eq(nonce.as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_lives_one_to_two_periods() {
        let n = Nonces::new(60).unwrap();
        let a = n.current(120);
        assert!(n.accepts(&a, 120) && n.accepts(&a, 179) && n.accepts(&a, 239));
        assert!(!n.accepts(&a, 240));
        assert!(!n.accepts(&a, 119), "not before its period");
        assert_ne!(n.current(180), a);
        assert!(!n.accepts("", 120));
        assert!(!Nonces::new(60).unwrap().accepts(&a, 120), "another server's key");
    }
}
