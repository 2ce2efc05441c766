//! The DPoP replay cache: proof ids (`jti`) remembered per key until their
//! `iat` window has passed.
//!
//! Fair and never refusing (issue 12, item 1): each key holds at most
//! `per_key` ids (its own oldest make room for its new ones), and a full
//! cache forgets the oldest id of all rather than refuse a proof. Only
//! proofs that came with an authenticated client and a refresh token whose
//! authenticator verifies are ever remembered, so filling it costs an
//! attacker a real token per proof. Every operation is O(`per_key`)
//! (amortized), under one short lock.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// A 32-byte digest: of a key thumbprint, or of a `jti`.
pub(crate) type Digest = [u8; 32];

/// See the module docs.
#[derive(Debug)]
pub(crate) struct ReplayCache {
    inner: Mutex<Inner>,
    capacity: usize,
    per_key: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// Per key: (jti, remembered until), oldest first.
    by_key: HashMap<Digest, VecDeque<(Digest, i64)>>,
    /// Every insertion, oldest first; entries already gone are skipped.
    order: VecDeque<(Digest, Digest)>,
    /// Ids held in `by_key`.
    len: usize,
}

/// The outcome of [`ReplayCache::remember`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Remembered {
    /// A new id, now remembered.
    New,
    /// The id was seen before within its window.
    Replayed,
}

impl ReplayCache {
    pub(crate) fn new(capacity: usize, per_key: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            inner: Mutex::new(Inner::default()),
            capacity,
            per_key: per_key.clamp(1, capacity),
        }
    }

    /// Remembers `jti` of `key` until `until` (unix s), unless it is there
    /// already and not past its time at `now`.
    pub(crate) fn remember(&self, key: Digest, jti: Digest, now: i64, until: i64) -> Remembered {
        // A poisoned lock only means another thread panicked mid-update;
        // the maps stay consistent enough to go on (counts are re-derived).
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Inner { by_key, order, len } = &mut *inner;
        let slot = by_key.entry(key).or_default();
        let before = slot.len();
        slot.retain(|&(_, t)| t >= now);
        if slot.iter().any(|(j, _)| *j == jti) {
            *len -= before - slot.len();
            return Remembered::Replayed;
        }
        if slot.len() >= self.per_key {
            slot.pop_front();
        }
        slot.push_back((jti, until));
        *len = *len + slot.len() - before;
        order.push_back((key, jti));
        // Forget the oldest ids until within capacity.
        while *len > self.capacity {
            let Some((k, j)) = order.pop_front() else { break };
            if let Some(s) = by_key.get_mut(&k) {
                if let Some(i) = s.iter().position(|(x, _)| *x == j) {
                    s.remove(i);
                    *len -= 1;
                }
                if s.is_empty() {
                    by_key.remove(&k);
                }
            }
        }
        // Ids a key pushed out of its own slot, or that expired, leave stale
        // entries in the order queue: drop them once they are as many as
        // the live ones (amortized O(per_key) per insertion).
        if order.len() > 2 * self.capacity {
            order.retain(|(k, j)| by_key.get(k).is_some_and(|s| s.iter().any(|(x, _)| x == j)));
        }
        Remembered::New
    }

    /// Ids remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|i| i.len).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u32) -> Digest {
        let mut b = [0; 32];
        b[..4].copy_from_slice(&n.to_be_bytes());
        b
    }

    #[test]
    fn an_id_is_good_once_within_its_window() {
        let c = ReplayCache::new(10, 4);
        assert_eq!(c.remember(d(1), d(1), 100, 160), Remembered::New);
        assert_eq!(c.remember(d(1), d(1), 150, 210), Remembered::Replayed);
        assert_eq!(c.remember(d(2), d(1), 150, 210), Remembered::New, "per key");
        assert_eq!(c.remember(d(1), d(1), 161, 221), Remembered::New, "past its window");
    }

    #[test]
    fn one_key_never_crowds_out_another_and_a_full_cache_never_refuses() {
        let c = ReplayCache::new(8, 2);
        assert_eq!(c.remember(d(1), d(100), 0, 60), Remembered::New);
        for j in 0..1000 {
            assert_eq!(c.remember(d(2), d(j), 0, 60), Remembered::New);
        }
        assert_eq!(
            c.remember(d(1), d(100), 0, 60),
            Remembered::Replayed,
            "still remembered"
        );
        for k in 10..1000 {
            assert_eq!(c.remember(d(k), d(0), 0, 60), Remembered::New);
            assert!(c.len() <= 8);
        }
        let inner = c.inner.lock().unwrap();
        assert!(inner.order.len() <= 16);
        assert!(inner.by_key.len() <= 8);
    }
}
