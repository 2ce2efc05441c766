//! A bounded soak of the real `rotoken serve` on a loopback port: eight
//! connections refresh their own families for a fixed number of steps (100
//! to warm up, then 400 measured), with a share of replays (reuse
//! detection), revocations and grace retries, driven by `rotoken-load`. No
//! 5xx, no unexpected answer, no lost rotation, server memory flat from the
//! end of the warm-up to the end; then SIGTERM, a clean exit and `rotoken
//! check`. Bounded by work, not time, so every count asserted follows from
//! the seed (fixed; `ROTOKEN_SOAK_SEED` draws others) on any machine.
//! `ROTOKEN_SOAK_SCALE=N` runs N times as many steps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::Served;

const ADMIN: &str = "soak-admin-token-0123456789abcdef";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rotoken")
}

/// Runs `rotoken ARGS` in `dir`; its JSON answer (stdout, or stderr on failure).
fn rotoken(dir: &Path, args: &[&str]) -> Value {
    let out = Command::new(bin()).args(args).current_dir(dir).output().unwrap();
    let text = if out.status.success() { &out.stdout } else { &out.stderr };
    serde_json::from_slice(text).unwrap_or_else(|_| panic!("not JSON: {out:?}"))
}

/// The seed of the connections' choices `cargo test` uses.
const SOAK_SEED: u64 = 0x50A6_0010;
/// Steps per connection of the warm-up and of the measured run.
const WARMUP_STEPS: u64 = 100;
const STEPS: u64 = 400;

/// What every run must show: no 5xx, no unexpected answer, no lost
/// rotation, and every rotation the server counted handed to a client.
fn assert_sound(report: &rotoken_load::Report) {
    assert_eq!(report.status_5xx, 0, "{report}");
    assert_eq!(report.errors, 0, "{report}");
    assert_eq!(report.transport_errors, 0, "{report}");
    assert_eq!(report.lost_rotations, 0, "{report}");
    assert_eq!(report.final_refreshes, 8, "{report}");
    assert_eq!(
        report.server_rotations,
        Some(report.refreshes + report.final_refreshes),
        "{report}"
    );
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn a_bounded_soak_has_no_5xx_no_lost_rotation_and_flat_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(
        rotoken(d, &["clients", "add", "--id", "soak", "--public"])["type"],
        "public"
    );
    let mut command = Served::command(d, &["--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"]);
    command.env("ROTOKEN_ADMIN_TOKEN", ADMIN).env_remove("ROTOKEN_LOG");
    let mut server = Served::start(command, &d.join("serve.log"));
    let ready = server.ready.clone();
    let addr = ready["listening"].as_str().unwrap();

    let seed = env_u64("ROTOKEN_SOAK_SEED").unwrap_or(SOAK_SEED);
    let scale = env_u64("ROTOKEN_SOAK_SCALE").unwrap_or(1).max(1);
    let admin = ready["admin_listening"].as_str().unwrap();
    let mut config = rotoken_load::Config::new(format!("http://{addr}"), ADMIN, "soak");
    config.admin_url = Some(format!("http://{admin}"));
    config.connections = 8;
    config.replay_share = 0.05;
    config.revoke_share = 0.02;
    config.retry_share = 0.02;
    config.server_pid = Some(server.child.id());
    config.request_timeout = Duration::from_secs(60);
    config.seed = seed;
    // Warm-up, then the measured run; both bounded by steps, not time.
    config.steps = Some(WARMUP_STEPS * scale);
    let warmup = rotoken_load::run(&config).unwrap();
    assert_sound(&warmup);
    let rss_after_warmup = rotoken_load::rss_kib(server.child.id()).unwrap();
    config.steps = Some(STEPS * scale);
    config.seed = seed.wrapping_add(1);
    let report = rotoken_load::run(&config).unwrap();
    let rss_at_end = rotoken_load::rss_kib(server.child.id()).unwrap();
    println!(
        "seed {seed} (ROTOKEN_SOAK_SEED replays it), server RSS {rss_after_warmup} KiB after warm-up, \
         {rss_at_end} KiB at the end\n{report}"
    );
    assert_sound(&report);
    // The counts follow from the seed and the number of steps, not from
    // the machine's speed.
    assert!(report.refreshes > 100, "{report}");
    assert!(
        report.replays > 0 && report.revocations > 0 && report.grace_retries > 0,
        "{report}"
    );
    assert!(
        rss_at_end <= rss_after_warmup * 3 / 2 + 8 * 1024,
        "server memory grew after warm-up: {rss_after_warmup} KiB -> {rss_at_end} KiB"
    );

    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = server.log();
    assert!(status.success(), "{status:?}: {log}");
    assert!(log.contains("database closed"), "{log}");
    assert!(!log.contains("rt1_") && !log.contains(ADMIN), "a token reached the log");
    let check = rotoken(d, &["check"]);
    assert_eq!(check["ok"], true, "{check}");
}
