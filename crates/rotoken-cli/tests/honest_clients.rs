//! Faults never log out an honest user (issue 18, P11; reliability
//! checklist rows 28-30): real `rotoken serve` processes on a real
//! PostgreSQL, faults made from outside, and honest clients (each presents
//! only the token it was last given, and after any failure retries that
//! same token, later than the grace window). Each test asserts that no
//! honest family is revoked, expired or deleted, and that no acknowledged
//! rotation is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::Served;

const ADMIN: &str = "admin-token-for-tests-0123456789";

/// The grace window the tests' databases are created with: short, so a
/// retry "after the window" comes within seconds.
const GRACE_SECS: u64 = 1;

use common::{rotoken_json as rotoken, server_dir};

/// One `rotoken serve` over the store, in the shared directory.
struct Server {
    served: Served,
    base: String,
    admin: String,
}

impl Server {
    fn start(dir: &Path, store: &str, name: &str) -> Self {
        let grace = GRACE_SECS.to_string();
        let mut command = Served::command(
            dir,
            &[
                "--bind",
                "127.0.0.1:0",
                "--admin-bind",
                "127.0.0.1:0",
                "--grace-secs",
                &grace,
            ],
        );
        command.env("ROTOKEN_STORE", store).env("ROTOKEN_ADMIN_TOKEN", ADMIN);
        let served = Served::start(command, &dir.join(format!("{name}.log")));
        Self {
            base: format!("http://{}", served.listening()),
            admin: format!("http://{}", served.admin_listening()),
            served,
        }
    }

    fn issue(&self, subject: &str) -> String {
        let (status, v) = common::post_within(
            &format!("{}/admin/families", self.admin),
            Some(ADMIN),
            "application/json",
            json!({"subject": subject, "client_id": "spa", "scope": "openid offline_access"}).to_string(),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(status, 200, "{v}");
        v["refresh_token"].as_str().unwrap().to_owned()
    }

    /// A refresh with a client that waits at most `patience`.
    fn refresh_within(&self, token: &str, patience: Duration) -> Result<(u16, Value), String> {
        common::post_within(
            &format!("{}/oauth/token", self.base),
            None,
            "application/x-www-form-urlencoded",
            format!("grant_type=refresh_token&client_id=spa&refresh_token={token}"),
            patience,
        )
    }

    fn refresh(&self, token: &str) -> Result<(u16, Value), String> {
        self.refresh_within(token, Duration::from_secs(60))
    }

    /// SIGSTOP / SIGCONT: the server paused (a VM pause, a starved container).
    fn signal(&self, signal: &str) {
        let pid = self.served.child.id().to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
    }
}

fn refreshed(answer: &(u16, Value)) -> String {
    assert_eq!(answer.0, 200, "{}", answer.1);
    answer.1["refresh_token"].as_str().unwrap().to_owned()
}

/// What an honest client saw, counted.
#[derive(Default)]
struct Seen {
    ok: AtomicUsize,
    unavailable: AtomicUsize,
    transport: AtomicUsize,
    other: std::sync::Mutex<Vec<String>>,
}

impl Seen {
    /// Counts one answer; the new token if it was a success.
    fn count(&self, answer: Result<(u16, Value), String>) -> Option<String> {
        match answer {
            Ok((200, v)) => {
                self.ok.fetch_add(1, Ordering::SeqCst);
                Some(v["refresh_token"].as_str().unwrap().to_owned())
            }
            Ok((503, v)) if v["error"] == "temporarily_unavailable" => {
                self.unavailable.fetch_add(1, Ordering::SeqCst);
                None
            }
            Err(_) => {
                self.transport.fetch_add(1, Ordering::SeqCst);
                None
            }
            Ok((status, v)) => {
                self.other.lock().unwrap().push(format!("{status} {v}"));
                None
            }
        }
    }

    fn summary(&self) -> String {
        format!(
            "200: {}, 503: {}, transport errors: {}, other: {:?}",
            self.ok.load(Ordering::SeqCst),
            self.unavailable.load(Ordering::SeqCst),
            self.transport.load(Ordering::SeqCst),
            self.other.lock().unwrap()
        )
    }
}

/// A server paused (SIGSTOP) far longer than the grace window behind a
/// balancer that retries on the other server: its clients give up, retry
/// the same token at the other server and rotate on there. When it
/// resumes, it must not apply the requests it read from the kernel's
/// queue: their tokens are generations old now, and applying them revoked
/// 15 of 16 honest families before.
#[test]
fn a_paused_server_applies_no_abandoned_request() {
    let Some(db) = rotoken_postgres::testing::database() else {
        return;
    };
    let url = db.url();
    let dir = server_dir();
    let d = dir.path();
    let a = Server::start(d, &url, "a");
    let b = Server::start(d, &url, "b");
    const FAMILIES: usize = 8;
    let firsts: Vec<String> = (0..FAMILIES).map(|i| b.issue(&format!("paused-{i}"))).collect();

    a.signal("-STOP");
    let lasts: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = firsts
            .iter()
            .map(|first| {
                let (a, b) = (&a, &b);
                s.spawn(move || {
                    // The balancer sends it to A, which answers nothing.
                    assert!(a.refresh_within(first, Duration::from_millis(700)).is_err());
                    // It retries the same token on B and goes on there.
                    let mut current = refreshed(&b.refresh(first).unwrap());
                    for _ in 0..3 {
                        current = refreshed(&b.refresh(&current).unwrap());
                    }
                    current
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Paused well past the grace window, then resumed.
    std::thread::sleep(Duration::from_secs(GRACE_SECS + 3));
    a.signal("-CONT");
    // A answers again: the first requests after the stall are answered
    // 503 (the stall watch cannot tell them from the queued ones); an
    // honest client retries the same token after Retry-After.
    let probe = a.issue("probe");
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = a.refresh(&probe).unwrap();
        if answer.0 == 200 {
            break;
        }
        assert_eq!(answer.1["error"], "temporarily_unavailable", "{}", answer.1);
        assert!(Instant::now() < until, "A never answered again: {}", answer.1);
        std::thread::sleep(Duration::from_secs(1));
    }

    // Not one honest family was revoked: each rotates from its last token.
    let revoked: Vec<usize> = lasts
        .iter()
        .enumerate()
        .filter(|(_, t)| b.refresh(t).unwrap().0 != 200)
        .map(|(i, _)| i)
        .collect();
    assert!(
        revoked.is_empty(),
        "honest families revoked by the paused server: {revoked:?}; A's log: {}",
        a.served.log()
    );
}

/// The database frozen (every PostgreSQL process stopped) for longer than
/// the grace window under load, then restarted with `-m immediate` four
/// times, with
/// clients that after any failure retry the same token later than the
/// window. Every answer is 200, or 503 `temporarily_unavailable`; no
/// honest family is revoked; no acknowledged rotation is lost.
#[test]
fn a_frozen_then_restarted_database_logs_no_honest_user_out() {
    let Some(cluster) = rotoken_postgres::testing::LateCluster::new() else {
        return;
    };
    cluster.start().unwrap();
    let url = cluster.url();
    let dir = server_dir();
    let d = dir.path();
    let servers = [Server::start(d, &url, "a"), Server::start(d, &url, "b")];
    const FAMILIES: usize = 8;
    let firsts: Vec<String> = (0..FAMILIES)
        .map(|i| servers[i % 2].issue(&format!("frozen-{i}")))
        .collect();
    let seen = Seen::default();
    let stop = AtomicBool::new(false);
    let acked = AtomicUsize::new(0);
    let lasts: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = firsts
            .iter()
            .enumerate()
            .map(|(i, first)| {
                let (servers, seen, stop, acked) = (&servers, &seen, &stop, &acked);
                s.spawn(move || {
                    let mut current = first.clone();
                    let mut step = i;
                    while !stop.load(Ordering::SeqCst) {
                        // Every request alternates servers (a round-robin balancer).
                        step += 1;
                        match seen.count(servers[step % 2].refresh_within(&current, Duration::from_secs(30))) {
                            Some(next) => {
                                current = next;
                                acked.fetch_add(1, Ordering::SeqCst);
                            }
                            // After any failure: the same token, after the window.
                            None => std::thread::sleep(Duration::from_millis(GRACE_SECS * 1000 + 500)),
                        }
                    }
                    current
                })
            })
            .collect();
        let wait_for = |n: usize| {
            let until = Instant::now() + Duration::from_secs(60);
            while acked.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < until, "no progress: {}", seen.summary());
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait_for(40);
        cluster.freeze().unwrap();
        std::thread::sleep(Duration::from_secs(GRACE_SECS + 3));
        cluster.thaw().unwrap();
        let after_freeze = acked.load(Ordering::SeqCst);
        wait_for(after_freeze + 40);
        // Restarted the hard way, several times: a restart that lands while
        // a COMMIT is in flight leaves an outcome the server must settle.
        for _ in 0..4 {
            cluster.restart_immediate().unwrap();
            let after_restart = acked.load(Ordering::SeqCst);
            wait_for(after_restart + 20);
        }
        stop.store(true, Ordering::SeqCst);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(seen.other.lock().unwrap().is_empty(), "{}", seen.summary());
    eprintln!("frozen, then restarted -m immediate: {}", seen.summary());
    for (i, t) in lasts.iter().enumerate() {
        let answer = servers[i % 2].refresh(t).unwrap();
        assert_eq!(
            answer.0,
            200,
            "family {i}: revoked, or an acknowledged rotation lost: {} ({})",
            answer.1,
            seen.summary()
        );
    }
    let (ok, report) = rotoken(d, &["--store", &url, "check"]);
    assert!(ok && report["ok"] == true, "{report}");
}

/// A server with its clock 40 days ahead persisted its time as the store's
/// clock floor (written here as it would have). A correct server restarted
/// afterwards adopted it before: it answered `session_expired` to every
/// honest refresh and its gc deleted the live families. Now the floor is
/// not adopted, `check` reports it, and `rotoken clock lower-floor` repairs it.
#[test]
fn a_floor_written_days_ahead_expires_and_deletes_nothing_after_a_restart() {
    let Some(db) = rotoken_postgres::testing::database() else {
        return;
    };
    let url = db.url();
    let dir = server_dir();
    let d = dir.path();
    let server = Server::start(d, &url, "a");
    let tokens: Vec<String> = (0..10)
        .map(|i| refreshed(&server.refresh(&server.issue(&format!("floor-{i}"))).unwrap()))
        .collect();
    drop(server);
    let sql = db.sql().unwrap();
    sql.execute(
        "UPDATE rotoken_meta SET value = int8send((extract(epoch from clock_timestamp()) * 1000)::int8 + 40::int8 * 86400000)
         WHERE name = 'clock_floor'",
    )
    .unwrap();
    let server = Server::start(d, &url, "a2");
    let tokens: Vec<String> = tokens.iter().map(|t| refreshed(&server.refresh(t).unwrap())).collect();
    drop(server);
    let (ok, gc) = rotoken(d, &["--store", &url, "gc"]);
    assert!(ok, "{gc}");
    assert_eq!(
        sql.query_i64("SELECT count(*) FROM rotoken_families").unwrap(),
        10,
        "{gc}"
    );
    let (ok, report) = rotoken(d, &["--store", &url, "check"]);
    assert!(!ok && report.to_string().contains("clock floor"), "{report}");
    let (ok, lowered) = rotoken(d, &["--store", &url, "clock", "lower-floor"]);
    assert!(ok && lowered["lowered"] == true, "{lowered}");
    let (ok, report) = rotoken(d, &["--store", &url, "check"]);
    assert!(ok && report["ok"] == true, "{report}");
    let server = Server::start(d, &url, "a3");
    for t in &tokens {
        refreshed(&server.refresh(t).unwrap());
    }
}
