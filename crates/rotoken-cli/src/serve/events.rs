//! `rotoken serve --events-to FILE|-`: the audit events, as JSON lines in
//! the shape of [`rotoken_http::EventJson`] (the same as `rotoken events`),
//! appended to a file or written to standard output for a SIEM.
//!
//! A task polls [`Engine::events`] every `events_poll_ms` and writes each
//! new event once it has committed (events written by other processes on a
//! shared PostgreSQL store included), oldest first, flushing (and, for a
//! file, `fdatasync`ing) after each batch. The file is created with mode
//! 0600 and only ever appended to. At start the last line of an existing
//! file names the last event written, and writing resumes after it, so a
//! restart neither skips nor repeats events (unless the server stopped
//! between writing a batch and syncing it: delivery is at least once, and
//! `seq` tells a repeat). Standard output has no memory: each start writes
//! every retained event again, from the first.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rotoken::Engine;
use rotoken_http::EventJson;

use crate::output::CliError;

/// Events read and written at a time.
const PAGE: usize = 1_000;

/// How much of the end of an existing file is read to find its last event
/// (an event line is under 200 bytes).
const TAIL: u64 = 64 * 1024;

/// Where `--events-to` sends events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EventsTo {
    /// Appended to this file.
    File(PathBuf),
    /// Standard output (`-`).
    Stdout,
}

impl EventsTo {
    /// `-` is standard output; anything else a file path.
    pub(crate) fn parse(s: &str) -> Self {
        if s == "-" {
            Self::Stdout
        } else {
            Self::File(PathBuf::from(s))
        }
    }
}

impl std::fmt::Display for EventsTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Stdout => f.write_str("-"),
        }
    }
}

/// The open destination and the last event written to it.
#[derive(Debug)]
pub(crate) struct EventSink {
    file: Option<File>,
    after: u64,
}

impl EventSink {
    /// Opens (creating, mode 0600) the file, or standard output, and finds
    /// where to resume.
    ///
    /// # Errors
    ///
    /// `events_io` when the file cannot be opened, read or written.
    pub(crate) fn open(to: &EventsTo) -> Result<Self, CliError> {
        let path = match to {
            EventsTo::Stdout => return Ok(Self { file: None, after: 0 }),
            EventsTo::File(p) => p,
        };
        let io = |e: std::io::Error| CliError::refused("events_io", format!("events file {}: {e}", path.display()));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let mode = file.metadata().map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the events file is readable by others; chmod 600 it");
        }
        let (after, ends_cleanly) = last_seq(&mut file, path).map_err(io)?;
        if !ends_cleanly {
            // A line cut short by a crash: end it, so the next event starts a line of its own.
            file.write_all(b"\n").map_err(io)?;
        }
        Ok(Self {
            file: Some(file),
            after,
        })
    }

    /// The last event written (0: none).
    pub(crate) fn after(&self) -> u64 {
        self.after
    }

    /// Writes every event after [`EventSink::after`] that `engine` holds.
    /// Returns how many were written.
    fn drain(&mut self, engine: &Engine) -> Result<usize, String> {
        let mut written = 0;
        loop {
            let page = engine
                .events(self.after, PAGE)
                .map_err(|e| format!("reading events: {e}"))?;
            let Some(last) = page.last().map(|e| e.seq) else {
                return Ok(written);
            };
            let mut buf = Vec::with_capacity(page.len() * 160);
            for e in &page {
                serde_json::to_writer(&mut buf, &EventJson::from(e)).map_err(|e| format!("encoding an event: {e}"))?;
                buf.push(b'\n');
            }
            self.write(&buf).map_err(|e| format!("writing events: {e}"))?;
            self.after = last;
            written += page.len();
            if page.len() < PAGE {
                return Ok(written);
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => {
                f.write_all(buf)?;
                f.sync_data()
            }
            None => {
                let mut out = std::io::stdout().lock();
                out.write_all(buf)?;
                out.flush()
            }
        }
    }
}

/// The `seq` of the last event line in `file`, and whether the file ends
/// with a newline (or is empty).
fn last_seq(file: &mut File, path: &Path) -> std::io::Result<(u64, bool)> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok((0, true));
    }
    let start = len.saturating_sub(TAIL);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.take(TAIL).read_to_end(&mut tail)?;
    let ends_cleanly = tail.last() == Some(&b'\n');
    let seq = tail
        .split(|b| *b == b'\n')
        .rev()
        .find_map(|line| serde_json::from_slice::<EventJson>(line).ok())
        .map(|e| e.seq);
    if seq.is_none() {
        tracing::warn!(path = %path.display(), "no event line at the end of the events file; writing every event from the first");
    }
    Ok((seq.unwrap_or(0), ends_cleanly))
}

/// Writes new events to `sink` every `every` until shutdown, then once more.
pub(crate) async fn forward_events(
    engine: Arc<Engine>,
    mut sink: EventSink,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = ticks.tick() => false,
            _ = stop.wait_for(|stopped| *stopped) => true,
        };
        let e = engine.clone();
        match tokio::task::spawn_blocking(move || {
            let r = sink.drain(&e);
            (sink, r)
        })
        .await
        {
            Ok((back, result)) => {
                sink = back;
                match result {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(events = n, last = sink.after(), "events written"),
                    Err(e) => tracing::error!(error = %e, "events not written; will retry"),
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "the events task failed; no more events are written");
                return;
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_new_file_is_private_and_an_old_one_resumes_after_its_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let to = EventsTo::parse(path.to_str().unwrap());
        assert_eq!(EventSink::open(&to).unwrap().after(), 0);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        let line = |seq: u64| {
            format!("{{\"seq\":{seq},\"at\":\"2026-01-01T00:00:00Z\",\"family\":\"00\",\"kind\":\"expired\"}}\n")
        };
        std::fs::write(&path, format!("{}{}", line(4), line(9))).unwrap();
        assert_eq!(EventSink::open(&to).unwrap().after(), 9);
        // A last line cut short by a crash: resume after the last whole one,
        // on a line of its own.
        std::fs::write(&path, format!("{}{{\"seq\":1", line(11))).unwrap();
        assert_eq!(EventSink::open(&to).unwrap().after(), 11);
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("{\"seq\":1\n"));
        assert_eq!(EventsTo::parse("-"), EventsTo::Stdout);
    }
}
