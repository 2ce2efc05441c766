//! Failed-authentication budgets: each (address, identity) may fail a few
//! times in a window; past the budget its failures are answered 429 with
//! `Retry-After`. A correct credential is always checked and always
//! accepted, so failures made by a guesser never lock out the owner
//! (issue 12, item 2).
//!
//! The budget is a GCRA rate limiter (`governor`): `max_failures` cells
//! that come back one every `window / max_failures`. The table is bounded:
//! when full, only keys whose budget has fully come back are forgotten
//! (an active penalty never is), and failures of new keys are counted
//! against their address's overflow key, then a shared one.

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use rotoken::Clock;

/// The default number of keys remembered.
pub const DEFAULT_THROTTLE_CAPACITY: usize = 65_536;

/// Who failed: an address (IPv6 by its /64 network) and an identity
/// (a client id, or `admin`); `None` for the overflow keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    source: Option<IpAddr>,
    id: Option<Box<str>>,
}

/// The engine's clock as governor's: time since the Unix epoch.
#[derive(Clone)]
struct UnixClock(Arc<dyn Clock>);

impl GovernorClock for UnixClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        // Clamped to what governor's nanosecond counter holds (584 years).
        let nanos = self.0.now().unix_timestamp_nanos().clamp(0, i128::from(u64::MAX / 2));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
    }
}

type Limiter = RateLimiter<Key, DashMapStateStore<Key>, UnixClock, NoOpMiddleware<Duration>>;

/// A budget of failed authentications per (address, identity). See the module docs.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use rotoken_http::Throttle;
///
/// let t = Throttle::new(2, Duration::from_secs(60), 1000, Arc::new(rotoken::SystemClock));
/// let peer = Some("192.0.2.1".parse().unwrap());
/// assert!(t.fail(peer, "web").is_ok());
/// assert!(t.fail(peer, "web").is_ok());
/// assert!(t.fail(peer, "web").is_err(), "over budget: answer 429");
/// assert!(t.fail(peer, "spa").is_ok(), "another identity has its own budget");
/// ```
pub struct Throttle {
    limiter: Limiter,
    capacity: usize,
    /// When the table was last swept of fully recovered keys (ns since the epoch).
    last_sweep: AtomicU64,
    /// How long one failure takes to come back: sweeping more often finds nothing new.
    cell: Duration,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("keys", &self.limiter.len())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Throttle {
    /// A budget of `max_failures` failures per key that comes back over
    /// `window`, remembering about `capacity` keys, on `clock`'s time.
    pub fn new(max_failures: u32, window: Duration, capacity: usize, clock: Arc<dyn Clock>) -> Self {
        let burst = NonZeroU32::new(max_failures).unwrap_or(NonZeroU32::MIN);
        let window = window.max(Duration::from_millis(1));
        let cell = (window / burst.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(cell)
            .unwrap_or_else(|| Quota::per_second(burst))
            .allow_burst(burst);
        Self {
            limiter: RateLimiter::new(quota, DashMapStateStore::default(), UnixClock(clock)),
            capacity: capacity.max(1),
            last_sweep: AtomicU64::new(0),
            cell,
        }
    }

    /// Records a failed authentication of `id` from `peer`.
    ///
    /// # Errors
    ///
    /// The time until the key has budget again, if it had none left: answer
    /// 429 with `Retry-After`.
    pub fn fail(&self, peer: Option<IpAddr>, id: &str) -> Result<(), Duration> {
        let key = self.key(peer, id);
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// True if no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key to count a failure under: its own while the table has room,
    /// else its address's overflow key, else the shared one.
    fn key(&self, peer: Option<IpAddr>, id: &str) -> Key {
        let source = peer.map(network);
        let own = Key {
            source,
            id: Some(id.into()),
        };
        if self.limiter.len() < self.capacity {
            return own;
        }
        self.sweep();
        let len = self.limiter.len();
        if len < self.capacity {
            own
        } else if len < self.capacity.saturating_add(self.capacity / 4) {
            Key { source, id: None }
        } else {
            Key { source: None, id: None }
        }
    }

    /// Forgets keys whose budget has fully come back (never an active
    /// penalty), at most once per cell period: a flood of new keys does not
    /// make every failure scan the table.
    fn sweep(&self) {
        let now = u64::try_from(self.limiter.clock().now().as_nanos()).unwrap_or(u64::MAX);
        let cell = u64::try_from(self.cell.as_nanos()).unwrap_or(u64::MAX);
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) < cell {
            return;
        }
        if self
            .last_sweep
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.limiter.retain_recent();
        }
    }
}

/// IPv4 addresses as they are, IPv6 by their /64 network (one host
/// usually holds a whole /64).
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

/// Whole seconds to wait, rounded up, at least 1: the `Retry-After` value.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs().saturating_add(u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rotoken::ManualClock;

    fn throttle(max: u32, capacity: usize) -> (Throttle, ManualClock) {
        let clock = ManualClock::at_unix_millis(1_700_000_000_000);
        let t = Throttle::new(max, Duration::from_secs(60), capacity, Arc::new(clock.clone()));
        (t, clock)
    }

    #[test]
    fn the_budget_comes_back_one_failure_at_a_time() {
        let (t, clock) = throttle(3, 100);
        let peer = Some(IpAddr::from([192, 0, 2, 1]));
        for _ in 0..3 {
            assert!(t.fail(peer, "a").is_ok());
        }
        let wait = t.fail(peer, "a").unwrap_err();
        assert_eq!(retry_after_secs(wait), 20);
        assert!(t.fail(None, "a").is_ok(), "another address has its own budget");
        assert!(t.fail(peer, "b").is_ok());
        clock.advance(Duration::from_secs(20));
        assert!(t.fail(peer, "a").is_ok(), "one failure came back");
        assert!(t.fail(peer, "a").is_err());
    }

    #[test]
    fn a_full_table_keeps_active_penalties_and_overflows_per_address() {
        let (t, clock) = throttle(2, 50);
        let peer = Some(IpAddr::from([192, 0, 2, 1]));
        let _ = t.fail(peer, "web");
        let _ = t.fail(peer, "web");
        assert!(t.fail(peer, "web").is_err());
        for i in 0..10_000 {
            if i % 100 == 0 {
                clock.advance(Duration::from_millis(1));
            }
            let _ = t.fail(peer, &format!("junk-{i}"));
        }
        assert!(t.len() <= 50 + 50 / 4 + 1, "bounded: {}", t.len());
        assert!(t.fail(peer, "web").is_err(), "the penalty survives the flood");
        // The junk went to the address's overflow key, which is spent too;
        // another address is untouched.
        assert!(t.fail(Some(IpAddr::from([192, 0, 2, 2])), "web").is_ok());
    }

    #[test]
    fn ipv6_hosts_count_by_their_64_network() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(network(a), network(b));
        assert_ne!(network(a), network(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(network(mapped), IpAddr::from([192, 0, 2, 1]));
    }
}
