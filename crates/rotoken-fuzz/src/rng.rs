//! A small deterministic random number generator for tests (SplitMix64),
//! so every randomised test can print its seed and be replayed exactly.

/// SplitMix64: fast, tiny, good enough to pick offsets and delays.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator seeded from the environment variable `name` if it is set
    /// to a number, else from `default`; returns the seed too, to print.
    /// Tests run by `cargo test` use this, so every run draws the same
    /// values unless the variable asks for others.
    pub fn from_env_or(name: &str, default: u64) -> (Self, u64) {
        let seed = seed_from_env(name).unwrap_or(default);
        (Self::new(seed), seed)
    }

    /// A generator seeded from the environment variable `name` if it is set
    /// to a number, else from the clock: for the random campaigns that run
    /// apart from `cargo test` (docs/fuzzing.md); returns the seed, to print
    /// and to replay with.
    pub fn random_unless_env(name: &str) -> (Self, u64) {
        let seed = seed_from_env(name).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
        (Self::new(seed), seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// An index in `0..n` (0 if `n` is 0).
    pub fn index(&mut self, n: usize) -> usize {
        usize::try_from(self.below(n as u64)).unwrap_or(0)
    }
}

/// The number the environment variable `name` holds, if it holds one.
fn seed_from_env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_seed_is_used_when_the_variable_is_unset() {
        let (mut a, seed) = Rng::from_env_or("ROTOKEN_RNG_TEST_SEED_NEVER_SET", 42);
        assert_eq!(seed, 42);
        let mut b = Rng::new(42);
        assert_eq!(a.next_u64(), b.next_u64());
    }
}
