//! Two `rotoken serve` processes on one PostgreSQL database (issue 11,
//! reliability checklist rows 24 and 25): two tabs whose refreshes land on
//! different servers get the identical successor; a replay on one server
//! revokes the family on the other at once; SIGKILL of one server under
//! load loses no acknowledged rotation, and `rotoken check` passes after.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::{Value, json};

mod common;

use common::Served;

const ADMIN: &str = "admin-token-for-tests-0123456789";

use common::rotoken_json as rotoken;

/// One `rotoken serve` over the shared store, in the shared directory
/// (same keys, same signing key, same clients file).
struct Server {
    served: Served,
    base: String,
    admin: String,
}

impl Server {
    fn start(dir: &Path, store: &str, name: &str) -> Self {
        let mut command = Served::command(dir, &["--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"]);
        command.env("ROTOKEN_STORE", store).env("ROTOKEN_ADMIN_TOKEN", ADMIN);
        let served = Served::start(command, &dir.join(format!("{name}.log")));
        Self {
            base: format!("http://{}", served.listening()),
            admin: format!("http://{}", served.admin_listening()),
            served,
        }
    }

    fn issue(&self, subject: &str) -> String {
        let (status, v) = post(
            &format!("{}/admin/families", self.admin),
            Some(ADMIN),
            "application/json",
            json!({"subject": subject, "client_id": "spa", "scope": "openid offline_access"}).to_string(),
        )
        .unwrap();
        assert_eq!(status, 200, "{v}");
        v["refresh_token"].as_str().unwrap().to_owned()
    }

    /// A refresh: the status and the answer, or a transport error.
    fn refresh(&self, token: &str) -> Result<(u16, Value), String> {
        post(
            &format!("{}/oauth/token", self.base),
            None,
            "application/x-www-form-urlencoded",
            format!("grant_type=refresh_token&client_id=spa&refresh_token={token}"),
        )
    }
}

fn post(url: &str, bearer: Option<&str>, content_type: &str, body: String) -> Result<(u16, Value), String> {
    common::post_within(url, bearer, content_type, body, Duration::from_secs(30))
}

/// A database of its own, its URL, and a directory with keys and the
/// public client `spa` for the servers; `None` without PostgreSQL.
fn shared_store() -> Option<(rotoken_postgres::testing::TestDb, String, tempfile::TempDir)> {
    let db = rotoken_postgres::testing::database()?;
    let url = db.url();
    Some((db, url, common::server_dir()))
}

fn refreshed(answer: &(u16, Value)) -> String {
    assert_eq!(answer.0, 200, "{}", answer.1);
    answer.1["refresh_token"].as_str().unwrap().to_owned()
}

#[test]
fn two_servers_on_one_postgres_share_every_family() {
    let Some((_db, url, dir)) = shared_store() else {
        return;
    };
    let d = dir.path();
    // The first server writes the signing key; the second reads it.
    let a = Server::start(d, &url, "a");
    let b = Server::start(d, &url, "b");

    // Two tabs, one on each server, with the same token at the same moment.
    let t0 = a.issue("alice");
    let barrier = Barrier::new(2);
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| {
            barrier.wait();
            a.refresh(&t0).unwrap()
        });
        let hb = s.spawn(|| {
            barrier.wait();
            b.refresh(&t0).unwrap()
        });
        (ha.join().unwrap(), hb.join().unwrap())
    });
    let t1 = refreshed(&ra);
    assert_eq!(t1, refreshed(&rb), "both tabs get the identical successor");

    // A replay on one server revokes the family on the other at once.
    let t2 = refreshed(&a.refresh(&t1).unwrap());
    let replay = b.refresh(&t0).unwrap();
    assert_eq!((replay.0, replay.1["error"].as_str()), (400, Some("invalid_grant")));
    let after = a.refresh(&t2).unwrap();
    assert_eq!(
        (after.0, after.1["error"].as_str()),
        (400, Some("invalid_grant")),
        "revoked on A too"
    );

    // rotoken-load spreads its connections over both servers: replays,
    // revocations and grace retries on families whose refreshes alternate
    // servers, with nothing lost and every rotation counted by a server.
    let mut config = rotoken_load::Config::new(a.base.clone(), ADMIN, "spa");
    config.admin_url = Some(a.admin.clone());
    config.more_servers = vec![(b.base.clone(), b.admin.clone())];
    config.connections = 4;
    config.steps = Some(60);
    config.replay_share = 0.05;
    config.revoke_share = 0.02;
    config.retry_share = 0.05;
    config.seed = 11;
    let report = rotoken_load::run(&config).unwrap();
    assert_eq!(
        (
            report.status_5xx,
            report.errors,
            report.transport_errors,
            report.lost_rotations
        ),
        (0, 0, 0, 0),
        "{report}"
    );
    assert_eq!(
        report.server_rotations,
        Some(report.refreshes + report.final_refreshes),
        "{report}"
    );

    // Load on both servers, then SIGKILL of A in the middle of it.
    let a = Arc::new(std::sync::Mutex::new(Some(a)));
    let b = Arc::new(b);
    let families: Vec<String> = (0..8).map(|i| b.issue(&format!("load-{i}"))).collect();
    let acked = AtomicUsize::new(0);
    let last: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = families
            .iter()
            .enumerate()
            .map(|(i, first)| {
                let (a, b, acked) = (&a, &b, &acked);
                s.spawn(move || {
                    let mut current = first.clone();
                    for step in 0..40 {
                        // Even steps go to A while it lives, the rest to B.
                        let on_a = step % 2 == i % 2;
                        let answer = if on_a {
                            let guard = a.lock().unwrap().as_ref().map(|s| s.base.clone());
                            match guard {
                                Some(base) => post(
                                    &format!("{base}/oauth/token"),
                                    None,
                                    "application/x-www-form-urlencoded",
                                    format!("grant_type=refresh_token&client_id=spa&refresh_token={current}"),
                                ),
                                None => b.refresh(&current),
                            }
                        } else {
                            b.refresh(&current)
                        };
                        match answer {
                            // Acknowledged: this is now the family's token.
                            Ok((200, v)) => {
                                current = v["refresh_token"].as_str().unwrap().to_owned();
                                acked.fetch_add(1, Ordering::SeqCst);
                            }
                            // A died before answering: the rotation may or may
                            // not have committed; keep presenting the last
                            // acknowledged token (a retry gets the grace answer).
                            Err(_) => {}
                            Ok((status, v)) => panic!("family {i} step {step}: {status} {v}"),
                        }
                    }
                    current
                })
            })
            .collect();
        // Kill A once the load is well under way.
        while acked.load(Ordering::SeqCst) < 100 {
            std::thread::yield_now();
        }
        if let Some(mut server) = a.lock().unwrap().take() {
            server.served.child.kill().unwrap();
            server.served.child.wait().unwrap();
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Every acknowledged token is still the family's: B rotates each one.
    for (i, t) in last.iter().enumerate() {
        let answer = b.refresh(t).unwrap();
        assert_eq!(
            answer.0, 200,
            "family {i}: an acknowledged rotation was lost: {}",
            answer.1
        );
    }
    let (ok, report) = rotoken(d, &["--store", &url, "check"]);
    assert!(ok && report["ok"] == true, "{report}");
}

/// `rotoken events --follow` reads a shared PostgreSQL store directly,
/// beside a running server (no lock, unlike a redb file): it prints a
/// replay the server detected after the follower started, and
/// `--after` resumes without repeats.
#[test]
fn events_follow_a_postgres_store_beside_a_server() {
    let Some((_db, url, dir)) = shared_store() else {
        return;
    };
    let d = dir.path();
    let server = Server::start(d, &url, "a");
    let mut follower = common::Follower::spawn(d, &["--store", &url], &[]);

    let t0 = server.issue("alice");
    let t1 = refreshed(&server.refresh(&t0).unwrap());
    let _t2 = refreshed(&server.refresh(&t1).unwrap());
    // Two generations back: reuse whatever the grace window.
    let replay = server.refresh(&t0).unwrap();
    assert_eq!((replay.0, replay.1["error"].as_str()), (400, Some("invalid_grant")));
    let reuse = follower.wait_for(|e| e["kind"] == "reuse_detected");
    assert_eq!(
        (reuse["presented"].as_u64(), reuse["current"].as_u64()),
        (Some(0), Some(2))
    );
    // Revoked by another process (the tool) on the same store.
    let _t3 = server.issue("alice");
    let (ok, v) = rotoken(d, &["--store", &url, "revoke", "--subject", "alice"]);
    assert!(ok && v["revoked"] == 1, "{v}");
    let revoked = follower.wait_for(|e| e["kind"] == "revoked");
    assert_eq!(revoked["reason"], "subject");
    common::strictly_increasing(&follower.seen);
    drop(follower);

    let after = reuse["seq"].as_u64().unwrap().to_string();
    let rest = common::events(d, &["--store", &url, "--after", &after], &[]);
    assert_eq!(rest, vec![revoked]);
}

#[test]
fn migrate_creates_a_postgres_schema_then_finds_it_current_and_backup_points_at_pg_dump() {
    let Some((_db, url, dir)) = shared_store() else {
        return;
    };
    let d = dir.path();
    let (ok, first) = rotoken(d, &["--store", &url, "migrate"]);
    assert!(ok, "{first}");
    assert_eq!(first["store"], "postgres");
    let current = u64::from(rotoken_postgres::SCHEMA_VERSION);
    assert_eq!(
        (first["from"].as_u64(), first["to"].as_u64()),
        (Some(0), Some(current)),
        "{first}"
    );
    assert_eq!(first["applied"].as_array().unwrap().len(), current as usize, "{first}");
    assert!(!first["location"].as_str().unwrap().is_empty());
    let (ok, again) = rotoken(d, &["--store", &url, "migrate"]);
    assert!(ok, "{again}");
    assert_eq!(
        (again["from"].as_u64(), again["to"].as_u64()),
        (Some(current), Some(current))
    );
    assert_eq!(again["applied"], json!([]));
    let (ok, refused) = rotoken(d, &["--store", &url, "backup", "pg.redb"]);
    assert!(!ok);
    assert_eq!(refused["error"], "backup_unsupported");
    assert!(refused["message"].as_str().unwrap().contains("pg_dump"), "{refused}");
    assert!(!d.join("pg.redb").exists());
}

/// A server started on the shared store with another keyring (here: none,
/// so it would make a development one) is refused with `wrong_keys`, and
/// leaves nothing behind: no key file, no signing key (issue 19, "refusal
/// before side effects"; it used to write both before it was refused).
#[test]
fn a_server_with_another_keyring_is_refused_and_writes_no_file() {
    let Some((_db, url, dir)) = shared_store() else {
        return;
    };
    let a = Server::start(dir.path(), &url, "a");
    refreshed(&a.refresh(&a.issue("alice")).unwrap());

    let stranger = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rotoken"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .current_dir(stranger.path())
        .env("ROTOKEN_STORE", &url)
        .env("ROTOKEN_DB_WAIT_SECS", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("wrong_keys"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(stranger.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "a refused server wrote {left:?}");
    // The store is untouched: the first server goes on.
    refreshed(&a.refresh(&a.issue("bob")).unwrap());
}
