//! Rejected requests are logged one line each only at debug; at warn, a
//! summary at most once per interval says how many were rejected and why
//! (issue 12, item 6), so a flood of bad requests cannot flood the log.

use std::sync::Mutex;

use time::OffsetDateTime;

use crate::ErrorCode;

/// Seconds between two summaries.
const SUMMARY_INTERVAL_SECS: i64 = 10;

/// Counts rejections since the last summary.
#[derive(Debug, Default)]
pub(crate) struct Rejections {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the last summary was written (unix s); `None` before the first.
    last: Option<i64>,
    /// Rejections per code since then.
    counts: Vec<(ErrorCode, u64)>,
}

impl Rejections {
    /// Counts a rejection with `code` at `now`, and writes the summary if
    /// the interval has passed since the last one.
    pub(crate) fn record(&self, code: ErrorCode, now: OffsetDateTime) {
        let now = now.unix_timestamp();
        let Ok(mut s) = self.state.lock() else { return };
        match s.counts.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => s.counts.push((code, 1)),
        }
        if s.last.is_some_and(|t| now.saturating_sub(t) < SUMMARY_INTERVAL_SECS) {
            return;
        }
        let since = s.last.map(|t| now.saturating_sub(t));
        s.last = Some(now);
        let counts = std::mem::take(&mut s.counts);
        drop(s);
        let total: u64 = counts.iter().map(|(_, n)| n).sum();
        let by_code = counts
            .iter()
            .map(|(c, n)| format!("{}={n}", c.as_str()))
            .collect::<Vec<_>>()
            .join(" ");
        tracing::warn!(
            rejected = total,
            since_secs = since,
            by_code = %by_code,
            "requests rejected (one line each at debug; next summary in {SUMMARY_INTERVAL_SECS} s at the earliest)"
        );
    }
}
