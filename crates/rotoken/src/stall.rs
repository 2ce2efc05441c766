//! Sees the process stall (SIGSTOP, a VM pause, a starved container), so
//! requests read just after it are not applied.
//!
//! A paused server's clients time out, retry the same token at another
//! server and move on. When it resumes, it reads the requests they sent
//! during the pause: their deadlines, taken when the request is read, look
//! fresh, but their tokens may now be generations old, and applying them
//! would revoke honest families as replays (issue 18, fault 1). A thread
//! ticks on the monotonic clock; a tick that comes much later than due
//! means the whole process stood still. Operations that came from a
//! request ([`crate::RotateRequest::deadline`] set by an adapter) and were
//! received before the stall was seen, or within one threshold after it,
//! fail with [`crate::StoreError::DeadlinePassed`] without being applied:
//! a retry of an honest client then succeeds, and nothing is judged on a
//! request its client abandoned.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The watch: a ticking thread and what it saw.
#[derive(Debug)]
pub(crate) struct StallWatch {
    seen: Arc<Seen>,
    threshold: Duration,
    /// The ticking thread, woken and joined when the watch is dropped.
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct Seen {
    /// The last tick and the end of the last stall seen.
    ticks: Mutex<Ticks>,
    stop: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct Ticks {
    last: Instant,
    resumed: Option<Instant>,
}

impl StallWatch {
    /// A watch that calls a gap of more than `threshold` between ticks a
    /// stall, with its thread started. The thread ends when the watch is
    /// dropped. If the thread cannot start, stalls are still seen by
    /// [`StallWatch::is_stale`] as a tick long overdue.
    pub(crate) fn start(threshold: Duration) -> Self {
        let mut watch = Self::new(threshold, Instant::now());
        let seen = Arc::clone(&watch.seen);
        let period = (threshold / 10).max(Duration::from_millis(10));
        watch.thread = std::thread::Builder::new()
            .name("rotoken-stall-watch".into())
            .spawn(move || {
                while !seen.stop.load(Ordering::Relaxed) {
                    // Woken early (unparked) when the watch is dropped.
                    std::thread::park_timeout(period);
                    seen.tick(Instant::now(), threshold);
                }
            })
            .ok();
        watch
    }

    /// A watch without its thread, last ticked at `now` (tests tick it).
    fn new(threshold: Duration, now: Instant) -> Self {
        Self {
            seen: Arc::new(Seen {
                ticks: Mutex::new(Ticks {
                    last: now,
                    resumed: None,
                }),
                stop: AtomicBool::new(false),
            }),
            threshold,
            thread: None,
        }
    }

    /// True if an operation received at `received` must not be applied at
    /// `now`: the process is stalled right now (the tick is overdue, so the
    /// ticking thread has not run either), or it was received before the
    /// last stall was seen (it waited through it), or within one threshold
    /// after (read from the kernel's queue once the process ran again).
    pub(crate) fn is_stale(&self, received: Instant, now: Instant) -> bool {
        let t = *self.seen.ticks.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(t.last) > self.threshold {
            return true;
        }
        t.resumed.is_some_and(|resumed| received < resumed + self.threshold)
    }
}

impl Seen {
    fn tick(&self, now: Instant, threshold: Duration) {
        let mut t = self.ticks.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(t.last) > threshold {
            t.resumed = Some(now);
        }
        t.last = now;
    }
}

/// Stops the ticking thread and waits for it (a few instructions once it
/// is woken), so no thread of a dropped engine outlives it.
impl Drop for StallWatch {
    fn drop(&mut self) {
        self.seen.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(2);

    #[test]
    fn without_a_stall_nothing_is_stale() {
        let t0 = Instant::now();
        let w = StallWatch::new(T, t0);
        for ms in (200..=4_000).step_by(200) {
            w.seen.tick(t0 + Duration::from_millis(ms), T);
        }
        let now = t0 + Duration::from_millis(4_010);
        assert!(!w.is_stale(t0 + Duration::from_millis(3_900), now));
        assert!(
            !w.is_stale(t0, now),
            "received long ago but no stall: only its deadline judges it"
        );
    }

    #[test]
    fn requests_received_around_a_stall_are_stale_and_later_ones_are_not() {
        let t0 = Instant::now();
        let w = StallWatch::new(T, t0);
        w.seen.tick(t0 + Duration::from_millis(200), T);
        // Paused 40 s: the next tick comes 40 s late.
        let resumed = t0 + Duration::from_millis(40_200);
        // Before the thread ticks again, the overdue tick says "stalled".
        assert!(w.is_stale(resumed, resumed + Duration::from_millis(5)));
        w.seen.tick(resumed + Duration::from_millis(10), T);
        let now = resumed + Duration::from_millis(20);
        // Read just after the resume (queued in the kernel during the pause).
        assert!(w.is_stale(resumed, now));
        assert!(w.is_stale(resumed + Duration::from_millis(500), now));
        // Received well after the resume: fresh.
        for ms in (210..=2_110).step_by(200) {
            w.seen.tick(resumed + Duration::from_millis(ms), T);
        }
        let later = resumed + Duration::from_millis(2_110);
        assert!(!w.is_stale(later, later + Duration::from_millis(1)));
    }

    #[test]
    fn the_ticking_thread_keeps_an_idle_watch_fresh() {
        let w = StallWatch::start(Duration::from_millis(500));
        std::thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        assert!(!w.is_stale(now, now));
    }
}
