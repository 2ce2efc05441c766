//! `rotoken demo`: a guided walk through rotation, an idempotent retry,
//! reuse detection and revocation, on a temporary database with its own
//! key and a manual clock (time passes without sleeping).
//!
//! Every step checks that the core behaved as documented, so the demo is
//! also a smoke test: it exits 0 only if every step did.

use std::fmt::Display;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use rotoken::{
    Engine, EventKind, Grant, Keyring, ManualClock, Options, Policy, RevokeReason, RevokeTarget, RotateError,
    RotateRequest, Scope,
};

use crate::output::CliError;

/// 2026-01-01T00:00:00Z, where the demo's clock starts.
const START_MILLIS: i64 = 1_767_225_600_000;

/// A step's outcome: `Err` says what did not behave as expected.
type Step = Result<(), String>;

/// Runs the demo with `policy` (the global policy flags apply).
///
/// # Errors
///
/// `demo_failed` (exit 1) if a step did not behave as expected; a storage
/// error if the temporary database could not be set up.
pub(crate) fn run(policy: &Policy) -> Result<(), CliError> {
    let dir = tempfile::Builder::new()
        .prefix("rotoken-demo-")
        .tempdir()
        .map_err(|e| CliError::storage("storage_error", format!("could not create a temporary directory: {e}")))?;
    let keys = Keyring::generate().map_err(|e| CliError::storage("random_failed", e.to_string()))?;
    let clock = ManualClock::at_unix_millis(START_MILLIS);
    let options = Options {
        policy: policy.clone(),
        clock: Arc::new(clock.clone()),
        ..Options::default()
    };
    let db = dir.path().join("demo.redb");
    let engine = Engine::open(&db, keys, options)?;

    say(&format!(
        "rotoken demo\n\
         ============\n\
         Working on a temporary database ({}) with a freshly generated key.\n\
         Your ./rotoken.redb and ./rotoken.keys (and --db / --keys) are not touched; everything is\n\
         deleted when the demo ends. The clock is simulated, so time passes without waiting.\n\
         Policy: grace window {}, idle lifetime {}, absolute lifetime {}.",
        db.display(),
        human(policy.grace),
        human(policy.idle_lifetime),
        human(policy.absolute_lifetime),
    ));

    let mut demo = Demo {
        engine,
        clock,
        grace: policy.grace,
        step: 0,
    };
    let outcome = demo.walk();
    drop(demo);
    let _ = dir.close();
    match outcome {
        Ok(()) => {
            say("\nEvery step behaved as expected.");
            Ok(())
        }
        Err(what) => {
            say(&format!("\nFAILED: {what}"));
            Err(CliError::refused("demo_failed", what))
        }
    }
}

/// The demo's state between steps.
struct Demo {
    engine: Engine,
    clock: ManualClock,
    grace: Duration,
    step: usize,
}

impl Demo {
    /// Prints a numbered step heading.
    fn heading(&mut self, title: &str) {
        self.step += 1;
        say(&format!("\n{}. {title}", self.step));
    }

    /// Every step in order; stops at the first that misbehaves.
    fn walk(&mut self) -> Step {
        let web = RotateRequest::new("web-app");

        self.heading("Issue a family");
        let grant = Grant::new("alice", "web-app", scope("openid offline_access")?);
        let first = self.engine.issue(&grant).map_err(|e| unexpected("issue", e))?;
        let family = first.family;
        let t0 = first.refresh_token.expose().to_owned();
        note(&format!(
            "alice signs in to web-app. rotoken creates family {family}\n\
             and hands out its first refresh token, token A = {} (generation 0).\n\
             Only a keyed hash of it is stored.",
            short(&t0)
        ));

        self.heading("Rotate it");
        self.clock.advance(Duration::from_secs(60 * 60));
        let second = self
            .engine
            .rotate(&t0, &web)
            .map_err(|e| unexpected("rotating the first token", e))?;
        let t1 = second.refresh_token.expose().to_owned();
        ensure(second.generation == 1, "the successor should be generation 1")?;
        ensure(!second.retried, "a first rotation must not be reported as a retry")?;
        note(&format!(
            "An hour later web-app refreshes with token A. A is retired and its successor,\n\
             token B = {} (generation 1), is issued, in one atomic write.",
            short(&t1)
        ));

        self.heading("Retry the old token within the grace window");
        let wait = Duration::from_secs(1).min(self.grace / 2);
        self.clock.advance(wait);
        let retry = self
            .engine
            .rotate(&t0, &web)
            .map_err(|e| unexpected("retrying within the grace window", e))?;
        ensure(retry.retried, "the retry should be reported as `retried: true`")?;
        ensure(
            retry.refresh_token.expose() == t1,
            "the retry should get the very same successor, not a second live token",
        )?;
        note(&format!(
            "A second tab (or a retry after a dropped response) presents token A again, {} later.\n\
             A is the immediate predecessor and within the grace window, so it gets the same\n\
             successor, token B (retried: true). No fork, and nobody is logged out.",
            human(wait)
        ));

        self.heading("Present the old token after the grace window");
        self.clock.advance(self.grace + Duration::from_secs(1));
        match self.engine.rotate(&t0, &web) {
            Err(RotateError::ReuseDetected { family: f }) if f == family => {}
            other => {
                return Err(unexpected_outcome(
                    "the old token after the grace window",
                    "reuse_detected",
                    other,
                ));
            }
        }
        note(&format!(
            "{} later, past the {} grace window, token A comes back. A retired token outside\n\
             the grace window means someone copied it: reuse detected, and the whole family is revoked.",
            human(self.grace + Duration::from_secs(1)),
            human(self.grace)
        ));

        self.heading("The current token is refused too");
        match self.engine.rotate(&t1, &web) {
            Err(RotateError::Revoked(RevokeReason::ReuseDetected)) => {}
            other => return Err(unexpected_outcome("the current token after reuse", "revoked", other)),
        }
        let intro = self
            .engine
            .introspect(&t1)
            .map_err(|e| unexpected("introspecting", e))?;
        ensure(
            !intro.active,
            "introspection of a revoked family's token should be inactive",
        )?;
        note(
            "Even the latest token, token B, is now refused (revoked: reuse_detected) and\n\
             introspects as active: false. rotoken cannot tell the thief from the victim, so\n\
             both must sign in again.",
        );

        self.heading("The recorded events");
        let events = self
            .engine
            .events(0, 100)
            .map_err(|e| unexpected("reading events", e))?;
        for e in &events {
            let detail = match e.kind {
                EventKind::ReuseDetected { presented, current } => {
                    format!("presented generation {presented} while the current one was {current}")
                }
                EventKind::Revoked(r) => format!("reason {}", r.as_str()),
                _ => String::new(),
            };
            note(&format!("#{} {} family {} {detail}", e.seq, e.kind.as_str(), e.family));
        }
        let reuse = events.iter().any(|e| {
            e.family == family
                && matches!(
                    e.kind,
                    EventKind::ReuseDetected {
                        presented: 0,
                        current: 1
                    }
                )
        });
        ensure(
            reuse && events.len() == 1,
            "exactly one reuse_detected event (presented 0, current 1) should be recorded",
        )?;
        note(
            "The event log holds only the random family id, never a subject, client or token;\n\
             an alerting hook (Options::on_event) receives the same events as they happen.",
        );

        self.heading("Log a user out everywhere");
        let bob_web = self
            .engine
            .issue(&Grant::new("bob", "web-app", scope("openid")?))
            .map_err(|e| unexpected("issue", e))?;
        let bob_mobile = self
            .engine
            .issue(&Grant::new("bob", "mobile-app", scope("openid offline_access")?))
            .map_err(|e| unexpected("issue", e))?;
        let n = self
            .engine
            .revoke(RevokeTarget::Subject("bob"))
            .map_err(|e| unexpected("revoking by subject", e))?;
        ensure(n == 2, &format!("revoking bob should revoke 2 families, not {n}"))?;
        match self
            .engine
            .rotate(bob_mobile.refresh_token.expose(), &RotateRequest::new("mobile-app"))
        {
            Err(RotateError::Revoked(RevokeReason::Subject)) => {}
            other => return Err(unexpected_outcome("bob's token after revocation", "revoked", other)),
        }
        let sessions = self
            .engine
            .sessions("bob")
            .map_err(|e| unexpected("listing sessions", e))?;
        ensure(
            sessions.len() == 2 && sessions.iter().all(|s| !s.active),
            "bob's two sessions should be listed, both inactive",
        )?;
        note(&format!(
            "bob is signed in on two clients: web-app (family {}) and\n\
             mobile-app (family {}). Revoking by subject (log out everywhere)\n\
             revoked {n} families; bob's mobile token {} is now refused (revoked: subject).",
            bob_web.family,
            bob_mobile.family,
            short(bob_mobile.refresh_token.expose())
        ));

        self.heading("Check the database");
        let report = self.engine.check().map_err(|e| unexpected("check", e))?;
        ensure(
            report.is_ok(),
            &format!("check should find no problem, found {:?}", report.problems),
        )?;
        ensure(report.families == 3, "check should see 3 families")?;
        note(&format!(
            "check verified {} families, {} index entries and {} events: every record's MAC,\n\
             every sealed grant, every index entry. No problems.",
            report.families, report.index_entries, report.events
        ));
        Ok(())
    }
}

/// Prints a line on standard output. A closed standard output is ignored:
/// the exit code still reports the outcome.
fn say(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Prints an indented explanation.
fn note(text: &str) {
    for line in text.lines() {
        say(&format!("   {line}"));
    }
}

/// `Ok` if `ok`, else `what` as the failure.
fn ensure(ok: bool, what: &str) -> Step {
    if ok { Ok(()) } else { Err(what.to_owned()) }
}

/// Parses a fixed scope.
fn scope(s: &str) -> Result<Scope, String> {
    Scope::parse(s).map_err(|e| format!("scope {s:?}: {e}"))
}

/// Describes an unexpected error.
fn unexpected(during: &str, e: impl Display) -> String {
    format!("{during} failed unexpectedly: {e}")
}

/// Describes an outcome other than the expected error.
fn unexpected_outcome(what: &str, expected: &str, got: Result<rotoken::Rotated, RotateError>) -> String {
    match got {
        Ok(r) => format!(
            "{what} should be refused with {expected}, but was accepted (generation {})",
            r.generation
        ),
        Err(e) => format!("{what} should be refused with {expected}, but got {}: {e}", e.code()),
    }
}

/// A token shortened for display: its first eight characters and an ellipsis.
fn short(token: &str) -> String {
    let head: String = token.chars().take(8).collect();
    format!("{head}…")
}

/// A duration in the largest whole unit that fits.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 || s == 0 {
        format!("{} ms", d.as_millis())
    } else if s >= 86_400 && s.is_multiple_of(86_400) {
        format!("{} days", s / 86_400)
    } else if s >= 3_600 && s.is_multiple_of(3_600) {
        format!("{} hours", s / 3_600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_shortened() {
        assert_eq!(short("rt1_AbCdEfGh"), "rt1_AbCd…");
        assert_eq!(short("ab"), "ab…");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_secs(30)), "30 s");
        assert_eq!(human(Duration::from_secs(86_400 * 30)), "30 days");
        assert_eq!(human(Duration::from_secs(90)), "90 s");
        assert_eq!(human(Duration::from_millis(500)), "500 ms");
    }
}
