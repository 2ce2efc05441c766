//! `rotoken events`: the audit events (reuse detected, diverged, revoked,
//! expired) as JSON lines on standard output, one event a line in the shape
//! of [`rotoken_http::EventJson`], oldest first.
//!
//! Without `--follow` it prints the events with a sequence number above
//! `--after` and exits; with it, it keeps polling and prints each new event
//! once it has committed, until interrupted. A reader that remembers the
//! last `seq` it handled resumes with `--after SEQ` and sees no event twice.
//!
//! The events come from the store (`--db` / `--store`) or, with
//! `--admin-url`, from a running `rotoken serve`'s admin API
//! (`GET /admin/events`, the admin token in `ROTOKEN_ADMIN_TOKEN`): a redb
//! file is locked by the server that has it open, so that is the way to
//! follow it while it serves. A PostgreSQL store can be read directly
//! beside any number of servers.

use std::io::Write as _;
use std::time::Duration;

use clap::Args;
use rotoken::Engine;
use rotoken_http::{EventJson, EventsJson, MAX_EVENTS_LIMIT};

use crate::Global;
use crate::admin_client::AdminClient;
use crate::output::{CliError, EXIT_STORAGE};

/// Events asked for at a time.
const PAGE: usize = MAX_EVENTS_LIMIT;

/// `rotoken events ...`
#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// Print only events with a greater sequence number: the last `seq` already handled.
    #[arg(long, default_value_t = 0, value_name = "SEQ")]
    pub(crate) after: u64,
    /// Keep polling, and print each new event once it has committed, until interrupted.
    #[arg(long)]
    pub(crate) follow: bool,
    /// With --follow: milliseconds between polls when nothing is new.
    #[arg(long, default_value_t = 1000, value_name = "MS", value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub(crate) interval_ms: u64,
    /// Read through a running `rotoken serve`'s admin API (`http://127.0.0.1:8081`)
    /// with the admin token in ROTOKEN_ADMIN_TOKEN, instead of opening the store.
    #[arg(long, value_name = "URL")]
    pub(crate) admin_url: Option<String>,
}

/// Where events are read from.
enum Source {
    Store(Box<Engine>),
    Admin(AdminClient),
}

impl Source {
    /// Events after `after`, at most [`PAGE`].
    fn page(&self, after: u64) -> Result<Vec<EventJson>, CliError> {
        match self {
            Self::Store(engine) => Ok(engine.events(after, PAGE)?.iter().map(EventJson::from).collect()),
            Self::Admin(admin) => {
                let body = admin.get(
                    "/admin/events",
                    &[("after", after.to_string()), ("limit", PAGE.to_string())],
                )?;
                let answer: EventsJson = serde_json::from_str(&body)
                    .map_err(|e| CliError::storage("admin_failed", format!("not an events answer: {e}")))?;
                Ok(answer.events)
            }
        }
    }
}

/// Runs `rotoken events`.
///
/// # Errors
///
/// A store or admin API error (while following, storage errors are
/// reported on standard error and retried), or standard output failing
/// for another reason than a closed pipe (which ends the command quietly).
pub(crate) fn run(g: &Global, a: &EventsArgs) -> Result<(), CliError> {
    let source = match &a.admin_url {
        Some(base) => Source::Admin(AdminClient::from_env(base, Duration::from_secs(30))?),
        None => Source::Store(Box::new(crate::commands::open(g, false, true).map_err(|e| {
            if e.code == "locked" {
                CliError::refused(
                    e.code,
                    format!(
                        "{}; while `rotoken serve` has it, read its events with --admin-url",
                        e.message
                    ),
                )
            } else {
                e
            }
        })?)),
    };
    let interval = Duration::from_millis(a.interval_ms);
    let mut after = a.after;
    loop {
        let page = match source.page(after) {
            Ok(p) => p,
            Err(e) if a.follow && e.exit_code() == EXIT_STORAGE => {
                crate::output::print_error(&e);
                std::thread::sleep(interval);
                continue;
            }
            Err(e) => return Err(e),
        };
        match print(&page) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => {
                return Err(CliError::storage(
                    "output_failed",
                    format!("could not write to standard output: {e}"),
                ));
            }
        }
        if let Some(last) = page.last() {
            after = last.seq;
        }
        if page.len() < PAGE {
            if !a.follow {
                return Ok(());
            }
            std::thread::sleep(interval);
        }
    }
}

/// Writes one JSON line per event and flushes.
fn print(events: &[EventJson]) -> std::io::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for e in events {
        serde_json::to_writer(&mut out, e)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
