//! `rotoken-load`: drives a running `rotoken serve` with connections that
//! each follow their own family's rotating refresh token. See the library
//! documentation for what is measured.
//!
//! Exit status: 0 for a clean run (no 5xx, no unexpected answer, no lost
//! rotation), 1 for a run that was not clean, 2 for a usage error, 3 when
//! the run could not be made.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rotoken_load::{ClientCredentials, Config};

/// Load and soak generator for `rotoken serve`: each connection refreshes
/// its own family in a loop, following the rotating token.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Base URL of the server (plain HTTP, loopback).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Base URL of the server's admin listener (`--admin-bind`), for
    /// `/admin/families` and `/metrics`.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    admin_url: String,
    /// Another server on the same (PostgreSQL) store, as BASE_URL,ADMIN_URL;
    /// repeat for more. Connections are spread over all the servers.
    #[arg(long = "also", value_name = "URL,ADMIN_URL")]
    also: Vec<String>,
    /// The server's admin token, to create families.
    #[arg(long, env = "ROTOKEN_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Client the families belong to (register it first, for example with
    /// `rotoken clients add --id load --public`).
    #[arg(long, default_value = "load")]
    client_id: String,
    /// Secret of a confidential client (sent as `client_secret`).
    #[arg(long, env = "ROTOKEN_LOAD_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// Scope of the families; must hold offline_access.
    #[arg(long, default_value = "openid offline_access")]
    scope: String,
    /// Subjects are PREFIX-<connection>.
    #[arg(long, default_value = "load")]
    subject_prefix: String,
    /// Concurrent keep-alive connections, one family each.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Length of the measured run, in seconds.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Steps per connection, instead of running for --duration seconds.
    #[arg(long)]
    steps: Option<u64>,
    /// The server RSS sample at this many seconds is the "after warm-up" one
    /// [default: a fifth of the duration, at most 10].
    #[arg(long)]
    warmup: Option<u64>,
    /// Probability per step of replaying a token two generations old
    /// (reuse detection; the connection then takes a new family).
    #[arg(long, default_value_t = 0.0)]
    replay_share: f64,
    /// Probability per step of revoking the current token at /oauth/revoke.
    #[arg(long, default_value_t = 0.0)]
    revoke_share: f64,
    /// Probability per step of retrying the immediate predecessor (grace window).
    #[arg(long, default_value_t = 0.0)]
    retry_share: f64,
    /// The server's grace window in seconds (retries are sent within half of it).
    #[arg(long, default_value_t = 30)]
    grace_secs: u64,
    /// Process id of the server, to sample its RSS every second and its CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Time limit of one request, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Seed of the per-connection choices [default: random].
    #[arg(long)]
    seed: Option<u64>,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let mut config = Config::new(a.url, a.admin_token, a.client_id);
    config.admin_url = Some(a.admin_url);
    for pair in &a.also {
        let Some((base, admin)) = pair.split_once(',') else {
            eprintln!("--also takes BASE_URL,ADMIN_URL, not {pair:?}");
            return ExitCode::from(2);
        };
        config.more_servers.push((base.to_owned(), admin.to_owned()));
    }
    config.client = ClientCredentials {
        id: config.client.id,
        secret: a.client_secret,
    };
    config.scope = a.scope;
    config.subject_prefix = a.subject_prefix;
    config.connections = a.connections;
    config.duration = Duration::from_secs(a.duration);
    config.steps = a.steps;
    config.warmup = Duration::from_secs(a.warmup.unwrap_or((a.duration / 5).min(10)));
    config.replay_share = a.replay_share;
    config.revoke_share = a.revoke_share;
    config.retry_share = a.retry_share;
    config.grace = Duration::from_secs(a.grace_secs);
    config.server_pid = a.server_pid;
    config.request_timeout = Duration::from_secs(a.timeout);
    config.seed = a.seed.unwrap_or_else(|| fastrand::u64(..));

    match rotoken_load::run(&config) {
        Ok(report) => {
            if a.json {
                match serde_json::to_string(&report) {
                    Ok(j) => println!("{j}"),
                    Err(e) => {
                        eprintln!("rotoken-load: cannot write the report: {e}");
                        return ExitCode::from(3);
                    }
                }
            } else {
                println!("{report}");
            }
            if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            if a.json {
                eprintln!("{}", serde_json::json!({ "error": e.to_string() }));
            } else {
                eprintln!("rotoken-load: {e}");
            }
            ExitCode::from(3)
        }
    }
}
