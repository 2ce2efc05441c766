//! Time, through a clock the caller can replace (tests control it), and
//! the engine's floor under it: a time that never goes back.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current wall-clock time (it may be stepped back or forward).
    fn now(&self) -> OffsetDateTime;

    /// Time elapsed since some fixed point, never stepped back (a
    /// monotonic clock), if the clock has one. The engine uses it to keep
    /// time moving while the wall clock is behind a time it has already
    /// acted on (see [`Floor`]). `None` (the default): the engine holds
    /// its time still until the wall clock catches up.
    fn elapsed(&self) -> Option<Duration> {
        None
    }
}

/// The system's wall clock, with the system's monotonic clock beside it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn elapsed(&self) -> Option<Duration> {
        static START: OnceLock<Instant> = OnceLock::new();
        Some(START.get_or_init(Instant::now).elapsed())
    }
}

/// How far ahead of the engine's time a time read from the store may be and
/// still be taken (see [`Floor::at_least`]): far more than servers kept by
/// NTP ever differ, far less than a clock set a day or a year wrong.
pub(crate) const MAX_STORE_AHEAD_MS: i64 = 60_000;

/// The engine's time: the wall clock, except that it never goes back.
///
/// If the wall clock is behind the last time the engine acted on (it was
/// stepped back, or it is behind the floor persisted by an earlier run),
/// the engine's time is that last time plus the monotonic time elapsed
/// since, so windows measured in it (the grace window, lifetimes) still
/// end after their length of real time. A forward step is taken at once
/// and kept: see docs/design.md, "Time".
#[derive(Debug)]
pub(crate) struct Floor {
    last: Mutex<(i64, Option<Duration>)>,
}

impl Floor {
    /// A floor at `millis` (a time persisted by an earlier run), from which
    /// time moves on at the speed of `clock`'s monotonic clock.
    pub(crate) fn new(millis: i64, clock: &dyn Clock) -> Self {
        let floor = Self {
            last: Mutex::new((millis, None)),
        };
        floor.now(clock);
        floor
    }

    /// The time to act on now, in unix ms.
    pub(crate) fn now(&self, clock: &dyn Clock) -> i64 {
        self.at_least(i64::MIN, clock)
    }

    /// The time to act on now, and never before `seen`: a time read from
    /// the store (another server's rotation, stamped by a clock ahead of
    /// this one). The floor rises to it, so from here on time moves on from
    /// `seen` at the speed of real time, as after a forward step. A `seen`
    /// more than [`MAX_STORE_AHEAD_MS`] ahead is not taken (a server with a
    /// clock that far wrong must not drag every server's time with it); the
    /// caller sees it in the answer being earlier than `seen`.
    pub(crate) fn at_least(&self, seen: i64, clock: &dyn Clock) -> i64 {
        let wall = to_millis(clock.now());
        let mono = clock.elapsed();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let carried = match (last.1, mono) {
            (Some(then), Some(now)) if now >= then => last.0.saturating_add(duration_millis(now - then)),
            _ => last.0,
        };
        let t = wall.max(carried);
        let t = if seen.saturating_sub(t) <= MAX_STORE_AHEAD_MS {
            t.max(seen)
        } else {
            t
        };
        *last = (t, mono);
        t
    }
}

/// A clock that only moves when told to; clones share the same time.
///
/// It has a wall clock and a monotonic clock: [`ManualClock::advance`]
/// moves both (time passes), [`ManualClock::set_unix_millis`] moves only
/// the wall clock (an operator or NTP steps it, forward or back).
///
/// ```
/// use rotoken::{Clock, ManualClock};
/// let clock = ManualClock::at_unix_millis(1_000);
/// clock.advance(std::time::Duration::from_secs(2));
/// assert_eq!(clock.now().unix_timestamp(), 3);
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    wall: Arc<AtomicI64>,
    monotonic: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock stopped at `millis` milliseconds after the Unix epoch.
    pub fn at_unix_millis(millis: i64) -> Self {
        Self {
            wall: Arc::new(AtomicI64::new(millis)),
            monotonic: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Lets time pass: moves the wall and the monotonic clock forward (saturating).
    pub fn advance(&self, by: Duration) {
        let ms = duration_millis(by);
        for clock in [&self.wall, &self.monotonic] {
            let _ = clock.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| Some(t.saturating_add(ms)));
        }
    }

    /// Steps the wall clock to `millis` milliseconds after the Unix epoch,
    /// forward or back; the monotonic clock does not move.
    pub fn set_unix_millis(&self, millis: i64) {
        self.wall.store(millis, Ordering::SeqCst);
    }

    /// The wall clock's time in milliseconds after the Unix epoch.
    pub fn unix_millis(&self) -> i64 {
        self.wall.load(Ordering::SeqCst)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        from_millis(self.unix_millis())
    }

    fn elapsed(&self) -> Option<Duration> {
        let ms = self.monotonic.load(Ordering::SeqCst);
        Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    }
}

/// Milliseconds since the Unix epoch, saturating.
pub(crate) fn to_millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The time `millis` milliseconds after the Unix epoch, clamped to what `time` can hold.
pub(crate) fn from_millis(millis: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).unwrap_or(if millis < 0 {
        OffsetDateTime::UNIX_EPOCH
    } else {
        time::macros::datetime!(9999-12-31 23:59:59 UTC)
    })
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_never_goes_back_and_keeps_real_time_moving() {
        let clock = ManualClock::at_unix_millis(1_000_000);
        let floor = Floor::new(0, &clock);
        assert_eq!(floor.now(&clock), 1_000_000);
        clock.advance(Duration::from_secs(1));
        assert_eq!(floor.now(&clock), 1_001_000);
        // Stepped back 600 s: time goes on from where it was.
        clock.set_unix_millis(401_000);
        assert_eq!(floor.now(&clock), 1_001_000);
        clock.advance(Duration::from_secs(30));
        assert_eq!(floor.now(&clock), 1_031_000, "30 s of real time passed");
        // Stepped forward: taken at once.
        clock.set_unix_millis(5_000_000);
        assert_eq!(floor.now(&clock), 5_000_000);
    }

    #[test]
    fn a_time_seen_in_the_store_raises_the_floor_and_real_time_moves_on_from_it() {
        let clock = ManualClock::at_unix_millis(1_000_000);
        let floor = Floor::new(0, &clock);
        // Another server stamped a rotation 2 s ahead of this clock.
        assert_eq!(floor.at_least(1_002_000, &clock), 1_002_000);
        assert_eq!(floor.now(&clock), 1_002_000, "kept once seen");
        clock.advance(Duration::from_secs(31));
        assert_eq!(floor.now(&clock), 1_033_000, "31 s of real time since it was seen");
        // A time behind the engine's changes nothing.
        assert_eq!(floor.at_least(5, &clock), 1_033_000);
        // A time more than a minute ahead (a server a day wrong) is not taken.
        assert_eq!(floor.at_least(1_033_000 + 86_400_000, &clock), 1_033_000);
        assert_eq!(floor.at_least(1_033_000 + MAX_STORE_AHEAD_MS, &clock), 1_093_000);
    }

    #[test]
    fn a_persisted_floor_holds_a_clock_set_back_before_the_start() {
        let clock = ManualClock::at_unix_millis(10_000);
        let floor = Floor::new(50_000, &clock);
        assert_eq!(floor.now(&clock), 50_000);
        clock.advance(Duration::from_secs(5));
        assert_eq!(floor.now(&clock), 55_000);
    }
}
