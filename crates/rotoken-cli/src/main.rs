//! # `rotoken`: the command-line tool
//!
//! A thin adapter over the [`rotoken`] core: it parses arguments, calls the
//! engine and prints the answer. Every rule (token format, rotation, grace
//! window, reuse detection, revocation) lives in the core; this tool only
//! translates.
//!
//! ```text
//! rotoken keys generate                       # writes ./rotoken.keys (mode 0600)
//! rotoken clients add --id web-app --public   # issuing needs a registered client
//! rotoken issue --subject alice --client web-app --scope "openid offline_access"
//! echo "$TOKEN" | rotoken rotate - --client web-app
//! rotoken demo                                # a guided walk on a temporary database
//! ```
//!
//! ## Output contract
//!
//! * On success each command prints exactly one JSON object on standard
//!   output (`demo` prints readable text instead; `events` prints one JSON
//!   object per event, a line each).
//! * On failure it prints one JSON object `{"error": "<code>", "message": "..."}`
//!   on standard error and exits with 1 for a refusal or user error, 2 for a
//!   usage error (as clap does), 3 for a storage or corruption problem.
//!   Codes are the core's stable `.code()` values, plus a few of the tool's
//!   own (`keys_missing`, `keys_exist`, `keys_invalid`, `db_missing`, ...).
//! * `introspect` answers `{"active": false}` (exit 0) for any token that is
//!   not a family's live current token, malformed ones included (RFC 7662).
//! * `check` prints its report on standard output either way; when it finds
//!   problems it also prints `check_failed` with the list on standard error
//!   and exits 3.
//! * A token is never printed in an error message, and any token clap would
//!   echo in a usage error is shortened to `rt1_AbCd…`.
//! * A TOKEN argument of `-` is read from standard input, which keeps tokens
//!   out of `ps` listings and shell history.

#![forbid(unsafe_code)]

mod admin_client;
mod backup;
#[cfg(feature = "bench")]
mod bench;
mod clients;
mod clock;
mod commands;
mod demo;
mod events;
mod output;
mod policy;
mod serve;
mod signing;

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// The `rotoken` command line.
#[derive(Debug, Parser)]
#[command(
    name = "rotoken",
    version,
    about = "Refresh-token store and rotation engine (rotoken) from the command line"
)]
pub(crate) struct Cli {
    /// Options shared by every subcommand.
    #[command(flatten, next_help_heading = "Global options")]
    pub(crate) global: Global,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options shared by every subcommand: where the files are, and the policy
/// (for a new database; `rotoken policy set` changes an existing one's).
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// The database file.
    #[arg(
        long,
        global = true,
        env = "ROTOKEN_DB",
        default_value = "./rotoken.redb",
        value_name = "PATH"
    )]
    pub(crate) db: PathBuf,
    /// The store, instead of --db: a redb file path, or a PostgreSQL URL
    /// (`postgres://user@host/db`) shared by several servers.
    #[arg(long, global = true, env = "ROTOKEN_STORE", value_name = "PATH|URL")]
    pub(crate) store: Option<String>,
    /// The key file (create one with `rotoken keys generate`).
    #[arg(
        long,
        global = true,
        env = "ROTOKEN_KEYS",
        default_value = "./rotoken.keys",
        value_name = "PATH"
    )]
    pub(crate) keys: PathBuf,
    /// Grace window in seconds: a retry of the immediate predecessor within it gets the same successor
    /// [default: the core's, 30].
    #[arg(long, global = true, value_name = "SECS")]
    pub(crate) grace_secs: Option<u64>,
    /// Idle lifetime in days: a family unused this long expires [default: the core's, 30].
    #[arg(long, global = true, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) idle_days: Option<u32>,
    /// Absolute lifetime in days, counted from issue [default: the core's, 90].
    #[arg(long, global = true, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) absolute_days: Option<u32>,
    /// How long a revoked family is kept (answering `revoked`) before gc may remove it, in seconds;
    /// applies to families revoked by this command [default: the core's, 1 day].
    #[arg(long, global = true, value_name = "SECS")]
    pub(crate) revoked_retention_secs: Option<u64>,
    /// How long audit events are kept before gc removes them, in days [default: the core's, 30].
    #[arg(long, global = true, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) event_retention_days: Option<u32>,
    /// The most live families per (subject, client); issuing one more revokes the oldest
    /// [default: the core's, 200; 0: no cap].
    #[arg(long, global = true, value_name = "N")]
    pub(crate) max_families_per_user: Option<u32>,
    /// Commit durability [default: immediate]. `relaxed` may lose recent rotations on a crash.
    #[arg(long, global = true, value_enum, value_name = "MODE")]
    pub(crate) durability: Option<DurabilityArg>,
}

impl Global {
    /// The store: `--store` (or `ROTOKEN_STORE`) if given, else `--db`.
    pub(crate) fn store(&self) -> rotoken_postgres::StoreLocation {
        match &self.store {
            Some(s) => rotoken_postgres::StoreLocation::parse(s),
            None => rotoken_postgres::StoreLocation::File(self.db.clone()),
        }
    }
}

/// The `--durability` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DurabilityArg {
    /// Every acknowledged change is on disk before the command returns.
    Immediate,
    /// Commits are not flushed (an explicit trade of safety for speed). `none` is an alias.
    #[value(alias = "none")]
    Relaxed,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Manage the key file.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Issue a new token family and print its first refresh token.
    Issue(IssueArgs),
    /// Rotate a refresh token: retire it and print its successor.
    Rotate(RotateArgs),
    /// Introspect a refresh token (RFC 7662 fields). Never changes anything.
    Introspect(IntrospectArgs),
    /// Revoke families: by token (its family, RFC 7009), family id, subject or client.
    Revoke(RevokeArgs),
    /// List a subject's families (sessions).
    Sessions(SessionsArgs),
    /// Remove expired and revoked families and old events, in bounded steps.
    Gc(GcArgs),
    /// Verify the database's invariants; exits non-zero if problems are found.
    Check,
    /// Show or change the database's policy (lifetimes, grace, limits,
    /// retention, per-user caps), which every server and command runs by.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Rewrite the database compactly (tables in key order, free pages
    /// dropped) and print the file size before and after. Needs the database
    /// to itself: stop `rotoken serve` first. Run `gc` before it to drop
    /// expired families.
    Compact,
    /// Bring the database's schema to this release's (applying the
    /// migrations it lacks) and print the versions before and after.
    /// Every command migrates when it opens an older database; this one
    /// does only that, and says so. A newer schema is refused
    /// (`unsupported_schema`) and nothing is written.
    Migrate,
    /// Write a consistent snapshot of the redb database into a new file
    /// (mode 0600): from the file itself, or with --admin-url from a running
    /// `rotoken serve`. A PostgreSQL store is backed up with pg_dump.
    Backup(backup::BackupArgs),
    /// Put a backup in place of the database (stop `rotoken serve` first),
    /// then revoke again every family that the event stream (--events)
    /// records as revoked after the backup.
    Restore(backup::RestoreArgs),
    /// Print the audit events (reuse detected, diverged, revoked, expired) as JSON lines;
    /// `--follow` keeps printing new ones, `--after SEQ` resumes.
    Events(events::EventsArgs),
    /// A guided walk through rotation, retries and reuse detection on a temporary database.
    Demo,
    #[cfg(feature = "bench")]
    /// Benchmark rotation: throughput, latency percentiles and bytes per family
    /// (`--compare sqlite` runs the one-row-per-token SQLite design on the same workload;
    /// with `--store postgres://...`, rotoken's PostgreSQL store and `--compare postgres-peer`).
    Bench(bench::BenchArgs),
    /// Serve the OAuth endpoints (token, revocation, introspection, metadata, JWKS), health,
    /// metrics and the admin API over HTTP, on an embedded database.
    Serve(Box<serve::ServeArgs>),
    /// Manage the clients `serve` authenticates (a file of ids and secret hashes).
    #[command(subcommand)]
    Clients(clients::ClientsCommand),
    /// The store's clock floor: lower one that a server with a clock set
    /// wrong persisted far ahead.
    #[command(subcommand)]
    Clock(clock::ClockCommand),
}

/// `rotoken keys ...`
#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Write a new key file (mode 0600).
    Generate {
        /// Replace an existing key file. Every database made with the old keys becomes unreadable.
        #[arg(long)]
        force: bool,
    },
    /// Add a new active key to the key file; older keys keep verifying existing tokens.
    Rotate,
    /// List key ids, creation times and the active id (never key material).
    List,
    /// Replace serve's access-token signing key with a new Ed25519 key. The
    /// old key moves to `<signing key>.previous` and stays in the JWKS and
    /// verifies its tokens until they expire; send `rotoken serve` a SIGHUP
    /// (or restart it) to sign with the new key.
    RotateSigning(signing::RotateSigningArgs),
}

/// `rotoken issue ...`
#[derive(Debug, Args)]
pub(crate) struct IssueArgs {
    /// The subject (user) the family acts for.
    #[arg(long)]
    pub(crate) subject: String,
    /// The client the family is bound to.
    #[arg(long)]
    pub(crate) client: String,
    /// The granted scope, space-delimited; it must hold offline_access, as
    /// for every refresh token rotoken issues.
    #[arg(long, default_value = "offline_access")]
    pub(crate) scope: String,
    /// Bind the family to a confirmation key thumbprint (DPoP `jkt` or mTLS).
    #[arg(long, value_name = "JKT")]
    pub(crate) confirmation: Option<String>,
    /// Opaque metadata, sealed at rest.
    #[arg(long)]
    pub(crate) metadata: Option<String>,
    /// Where the client must be registered (`rotoken clients add`).
    #[command(flatten)]
    pub(crate) clients: clients::FileArg,
}

/// `rotoken rotate ...`
#[derive(Debug, Args)]
pub(crate) struct RotateArgs {
    /// The refresh token, or `-` to read it from standard input.
    #[arg(value_name = "TOKEN", allow_hyphen_values = true)]
    pub(crate) token: OsString,
    /// The client presenting the token.
    #[arg(long)]
    pub(crate) client: String,
    /// A narrower scope for this refresh, space-delimited.
    #[arg(long)]
    pub(crate) scope: Option<String>,
    /// The confirmation key thumbprint the client proved possession of.
    #[arg(long, value_name = "JKT")]
    pub(crate) confirmation: Option<String>,
}

/// `rotoken introspect ...`
#[derive(Debug, Args)]
pub(crate) struct IntrospectArgs {
    /// The refresh token, or `-` to read it from standard input.
    #[arg(value_name = "TOKEN", allow_hyphen_values = true)]
    pub(crate) token: OsString,
}

/// `rotoken revoke ...`: exactly one target.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).multiple(false)))]
pub(crate) struct RevokeArgs {
    /// Revoke the family of this token (`-` reads it from standard input).
    #[arg(long, group = "target", value_name = "TOKEN", allow_hyphen_values = true)]
    pub(crate) token: Option<OsString>,
    /// Revoke one family by id (32 hexadecimal characters).
    #[arg(long, group = "target", value_name = "FAMILY_ID")]
    pub(crate) family: Option<String>,
    /// Revoke every family of a subject (log out everywhere).
    #[arg(long, group = "target")]
    pub(crate) subject: Option<String>,
    /// Revoke every family of a client.
    #[arg(long, group = "target")]
    pub(crate) client: Option<String>,
}

/// `rotoken sessions ...`
#[derive(Debug, Args)]
pub(crate) struct SessionsArgs {
    /// The subject whose families to list.
    #[arg(long)]
    pub(crate) subject: String,
}

/// `rotoken gc ...`
#[derive(Debug, Args)]
pub(crate) struct GcArgs {
    /// Most families (and events) removed per transaction.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) limit: u32,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with code 0; usage errors to stderr
            // with code 2, with any token clap echoes (a misplaced argument) shortened.
            if e.use_stderr() {
                let text = output::redact_tokens(&e.render().to_string());
                let _ = write!(std::io::stderr().lock(), "{text}");
            } else {
                let _ = e.print();
            }
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    quiet_panics();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| commands::run(cli)))
        .unwrap_or_else(|_| Err(output::CliError::internal(last_panic())));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::print_error(&e);
            ExitCode::from(e.exit_code())
        }
    }
}

/// Where and why the last panic happened, as the hook of [`quiet_panics`] recorded it.
static LAST_PANIC: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Replaces the default panic hook, which would print a panic message above
/// the tool's JSON answer even when the panic is contained: the core turns a
/// panic of the storage engine on damaged pages into a `corrupt` error. The
/// hook records the panic for [`last_panic`] and logs it through `tracing`
/// (seen by `rotoken serve`'s log, silent for the one-shot commands); a panic
/// that escapes a command becomes an `internal` JSON error in `main`.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let why = info.payload_as_str().unwrap_or_default();
        let text = output::redact_tokens(&format!("panicked at {at}: {why}"));
        tracing::warn!(panic = %text, "a panic (contained if the storage engine was reading damaged data)");
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = text;
        }
    }));
}

/// The text recorded by the last panic, for the `internal` error.
fn last_panic() -> String {
    LAST_PANIC.lock().map(|s| s.clone()).unwrap_or_default()
}
