//! Memory and CPU time of a process, from Linux's /proc.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Clock ticks per second of `utime` and `stime` in /proc/PID/stat
/// (`USER_HZ`, 100 on every Linux architecture rotoken runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// The resident set size (`VmRSS`) of `pid`, in KiB.
pub(crate) fn rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("{path}: no VmRSS line"))
}

/// User plus system CPU time of `pid` (this process for `None`), in seconds.
pub(crate) fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or_else(|| "/proc/self/stat".to_owned(), |p| format!("/proc/{p}/stat"));
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields from the last ')'. utime and stime are fields 14 and 15.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SEC)
}

/// One RSS sample: seconds since the start of the run, and KiB.
pub(crate) type Sample = (f64, u64);

/// Samples a process's RSS once a second.
pub(crate) struct Sampler;

impl Sampler {
    /// Samples `pid` from `start` until `done` is set (or the process is
    /// gone), once a second, plus one last sample when it stops.
    pub(crate) fn run(pid: u32, start: Instant, done: &AtomicBool) -> Vec<Sample> {
        let mut samples = Vec::new();
        let mut next = start;
        loop {
            let stop = done.load(Ordering::SeqCst);
            match rss_kib(pid) {
                Ok(kib) => samples.push((start.elapsed().as_secs_f64(), kib)),
                Err(_) => break,
            }
            if stop {
                break;
            }
            next += Duration::from_secs(1);
            // Sleep in short steps so the end of the run is not delayed.
            while Instant::now() < next && !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50).min(next.saturating_duration_since(Instant::now())));
            }
        }
        samples
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(cpu_secs(Some(pid)).is_some());
        assert!(cpu_secs(None).is_some());
        assert!(rss_kib(u32::MAX).is_err());
    }
}
