//! `rotoken serve` under store faults (issue 18), with real processes: a
//! PostgreSQL that is not up yet when serve starts (serve waits for it,
//! with back-off and a bound), and a request whose engine work outlives
//! the request timeout (a row lock held by another session): the client
//! gets 503 JSON with `Retry-After`, never an empty 408, and the same
//! token works once the store is back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::Served;

const ADMIN: &str = "admin-token-for-tests-0123456789";

/// How long a test waits for a process before it fails. Generous: a
/// passing test never waits this long.
const PATIENCE: Duration = Duration::from_secs(90);

use common::server_dir as setup;

/// An answer: status, `Retry-After`, body as JSON (`Null` if it is not).
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
    raw: String,
}

fn post(url: &str, bearer: Option<&str>, content_type: &str, body: String) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(PATIENCE))
        .build()
        .into();
    let mut req = http::Request::post(url).header("content-type", content_type);
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    let mut resp = agent.run(req.body(body).unwrap()).unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let raw = resp.body_mut().read_to_string().unwrap();
    Answer {
        status,
        retry_after,
        body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw,
    }
}

fn issue(served: &Served) -> String {
    let a = post(
        &format!("http://{}/admin/families", served.admin_listening()),
        Some(ADMIN),
        "application/json",
        json!({"subject": "alice", "client_id": "spa", "scope": "openid offline_access"}).to_string(),
    );
    assert_eq!(a.status, 200, "{}", a.raw);
    a.body["refresh_token"].as_str().unwrap().to_owned()
}

fn refresh(served: &Served, token: &str) -> Answer {
    post(
        &format!("http://{}/oauth/token", served.listening()),
        None,
        "application/x-www-form-urlencoded",
        format!("grant_type=refresh_token&client_id=spa&refresh_token={token}"),
    )
}

fn serve(dir: &Path, store: &str, extra: &[&str]) -> Command {
    let mut args = vec!["--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut command = Served::command(dir, &args);
    command.env("ROTOKEN_STORE", store).env("ROTOKEN_ADMIN_TOKEN", ADMIN);
    command
}

/// Waits (bounded by [`PATIENCE`]) until `log` holds `needle`.
fn wait_for_log(log: &Path, needle: &str) {
    let start = Instant::now();
    while !std::fs::read_to_string(log).unwrap_or_default().contains(needle) {
        assert!(start.elapsed() < PATIENCE, "no {needle:?} in the log");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `serve` started before its PostgreSQL: it retries with a log line per
/// attempt, comes up once the database does, and answers.
#[test]
fn serve_waits_for_a_database_that_comes_up_after_it() {
    // A cluster of the test's own, initialized but not started.
    let Some(cluster) = rotoken_postgres::testing::LateCluster::new() else {
        return;
    };
    let dir = setup();
    let log = dir.path().join("serve.log");
    let command = serve(dir.path(), &cluster.url(), &["--db-wait-secs", "60"]);
    let served = std::thread::scope(|s| {
        let starter = s.spawn(|| {
            // The database comes up once serve has found it missing.
            wait_for_log(&log, "database not reachable yet");
            cluster.start().unwrap();
        });
        let served = Served::start(command, &log);
        starter.join().unwrap();
        served
    });
    let text = served.log();
    assert!(text.contains("database not reachable yet"), "{text}");
    assert!(text.contains("database reachable"), "{text}");
    let token = issue(&served);
    let a = refresh(&served, &token);
    assert_eq!(a.status, 200, "{}", a.raw);
}

/// With nothing ever listening, `serve` gives up after the bound
/// (`ROTOKEN_DB_WAIT_SECS`) with a clear message and a non-zero exit.
#[test]
fn serve_gives_up_on_an_unreachable_database_after_the_bound() {
    let dir = setup();
    let nowhere = tempfile::tempdir().unwrap();
    let host = nowhere.path().to_string_lossy().replace('/', "%2F");
    let mut command = serve(dir.path(), &format!("postgresql://postgres@/postgres?host={host}"), &[]);
    command.env("ROTOKEN_DB_WAIT_SECS", "2");
    let start = Instant::now();
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("serve still waiting after {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let waited = start.elapsed();
    let text = reader.join().unwrap();
    assert!(!status.success(), "{text}");
    assert!(text.contains("db_unreachable"), "{text}");
    assert!(text.contains("could not reach the database"), "{text}");
    assert!(
        text.matches("database not reachable yet").count() >= 2,
        "a log line per attempt: {text}"
    );
    assert!(waited >= Duration::from_secs(2), "gave up after {waited:?}: {text}");
}

/// A refresh whose engine work outlives the 1 s request timeout (its
/// family's row is locked by another session; the database's lock_timeout
/// ends the wait after 3 s): the client gets 503 JSON with `Retry-After`,
/// not an empty 408 while the engine may still commit; once the lock is
/// gone the same token rotates and its successor works.
#[test]
fn a_request_that_outlives_its_timeout_gets_503_json_and_the_same_token_works_after() {
    let Some(db) = rotoken_postgres::testing::database() else {
        return;
    };
    db.admin_sql()
        .unwrap()
        .execute(&format!("ALTER DATABASE {} SET lock_timeout = '3s'", db.name()))
        .unwrap();
    let dir = setup();
    let served = Served::start(
        serve(dir.path(), &db.url(), &["--request-timeout-secs", "1"]),
        &dir.path().join("serve.log"),
    );
    let t0 = issue(&served);

    let locker = db.sql().unwrap();
    locker
        .execute("BEGIN; SELECT 1 FROM rotoken_families FOR UPDATE")
        .unwrap();
    let a = refresh(&served, &t0);
    assert_eq!(a.status, 503, "{} {}", a.status, a.raw);
    assert!(a.retry_after.is_some(), "Retry-After on a 503");
    assert_eq!(a.body["error"], "temporarily_unavailable", "{}", a.raw);
    assert!(a.body["error_description"].is_string(), "{}", a.raw);

    locker.execute("COMMIT").unwrap();
    let a = refresh(&served, &t0);
    assert_eq!(a.status, 200, "the same token after the store is back: {}", a.raw);
    let t1 = a.body["refresh_token"].as_str().unwrap().to_owned();
    let a = refresh(&served, &t1);
    assert_eq!(a.status, 200, "its successor works: {}", a.raw);
}
