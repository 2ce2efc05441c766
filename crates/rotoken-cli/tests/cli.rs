//! Runs the real `rotoken` binary in temporary directories and checks its
//! JSON answers, error codes and exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use redb::ReadableTable as _;
use serde_json::Value;

/// A temporary working directory holding `rotoken.keys` and `rotoken.redb`.
struct Env {
    dir: tempfile::TempDir,
}

/// One run of the binary.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    /// The single JSON object on stdout; asserts success.
    fn ok(&self) -> Value {
        assert_eq!(self.code, 0, "expected success, got {self:?}");
        single_json(&self.stdout)
    }

    /// The JSON error on stderr; asserts the exit code and that stdout is empty.
    fn err(&self, exit: i32) -> Value {
        assert_eq!(self.code, exit, "expected exit {exit}, got {self:?}");
        assert!(self.stdout.is_empty(), "stdout should be empty on failure: {self:?}");
        let e = single_json(&self.stderr);
        assert!(e["error"].is_string() && e["message"].is_string(), "{e}");
        e
    }

    /// Asserts the error code and exit code.
    fn fails_with(&self, exit: i32, code: &str) -> Value {
        let e = self.err(exit);
        assert_eq!(e["error"], code, "{self:?}");
        e
    }
}

fn single_json(s: &str) -> Value {
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 1, "expected exactly one JSON line, got {s:?}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {s:?}"))
}

impl Env {
    /// A fresh directory whose clients file registers the clients the tests issue to.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clients: String = ["b", "c", "cli", "evil", "mobile", "web"]
            .iter()
            .map(|id| format!("[[client]]\nid = \"{id}\"\n"))
            .collect();
        std::fs::write(dir.path().join("rotoken.clients.toml"), clients).unwrap();
        Self { dir }
    }

    /// A fresh directory with a generated key file.
    fn with_keys() -> Self {
        let env = Self::new();
        env.run(&["keys", "generate"]).ok();
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rotoken"));
        c.args(args)
            .current_dir(self.dir.path())
            .env_remove("ROTOKEN_DB")
            .env_remove("ROTOKEN_KEYS")
            .env_remove("RUST_BACKTRACE");
        c
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_stdin(args, None)
    }

    /// Runs with `stdin` written to standard input (write errors from an
    /// early exit are ignored: the exit status is what is checked).
    fn run_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Out {
        let mut c = self.command(args);
        c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let writer = stdin.map(|input| {
            let mut pipe = child.stdin.take().unwrap();
            let input = input.to_vec();
            std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            })
        });
        let out = child.wait_with_output().unwrap();
        if let Some(w) = writer {
            w.join().unwrap();
        }
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(!stderr.contains("panicked"), "the binary panicked: {stderr}");
        Out {
            code: out.status.code().expect("killed by a signal"),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr,
        }
    }

    /// Issues a family and returns (token, family id).
    fn issue(&self, subject: &str, client: &str) -> (String, String) {
        let v = self
            .run(&[
                "issue",
                "--subject",
                subject,
                "--client",
                client,
                "--scope",
                "openid offline_access",
            ])
            .ok();
        (str_of(&v["refresh_token"]), str_of(&v["family_id"]))
    }
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}")).to_owned()
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok())
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn keys_generate_writes_0600_and_refuses_to_overwrite() {
    let env = Env::new();
    let v = env.run(&["keys", "generate"]).ok();
    assert_eq!(v["active_id"], 1);
    let keys = env.path("rotoken.keys");
    let original = std::fs::read(&keys).unwrap();
    #[cfg(unix)]
    assert_eq!(mode(&keys), 0o600);

    env.run(&["keys", "generate"]).fails_with(1, "keys_exist");
    assert_eq!(
        std::fs::read(&keys).unwrap(),
        original,
        "a refused generate must not change the file"
    );

    env.run(&["keys", "generate", "--force"]).ok();
    assert_ne!(std::fs::read(&keys).unwrap(), original);
    #[cfg(unix)]
    assert_eq!(mode(&keys), 0o600);
}

#[test]
fn keys_rotate_and_list_never_show_key_material() {
    let env = Env::with_keys();
    let file = std::fs::read_to_string(env.path("rotoken.keys")).unwrap();
    let (old, _) = env.issue("alice", "web");

    let v = env.run(&["keys", "rotate"]).ok();
    assert_eq!(v["active_id"], 2);
    let list = env.run(&["keys", "list"]);
    let v = list.ok();
    assert_eq!(v["active_id"], 2);
    let ids: Vec<u64> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2]);
    assert!(
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| is_rfc3339(&k["created_at"]))
    );
    for line in file
        .lines()
        .filter(|l| l.starts_with("key ") || l.starts_with("storage "))
    {
        let material = line.rsplit(' ').next().unwrap();
        assert!(!list.stdout.contains(material), "keys list leaked key material");
    }
    #[cfg(unix)]
    assert_eq!(mode(&env.path("rotoken.keys")), 0o600);

    // A token made under key 1 still rotates; its successor is made under key 2.
    let v = env.run(&["rotate", &old, "--client", "web"]).ok();
    assert_eq!(v["generation"], 1);
}

#[test]
fn issue_rotate_and_retry_within_grace() {
    let env = Env::with_keys();
    let issued = env
        .run(&[
            "issue",
            "--subject",
            "alice",
            "--client",
            "web",
            "--scope",
            "openid offline_access",
            "--metadata",
            "acr=mfa",
        ])
        .ok();
    let t0 = str_of(&issued["refresh_token"]);
    assert!(t0.starts_with("rt1_"));
    assert_eq!(issued["generation"], 0);
    assert_eq!(str_of(&issued["family_id"]).len(), 32);
    assert!(is_rfc3339(&issued["expires_at"]), "{issued}");

    let r1 = env.run(&["rotate", &t0, "--client", "web"]).ok();
    let t1 = str_of(&r1["refresh_token"]);
    assert_ne!(t1, t0);
    assert_eq!(r1["generation"], 1);
    assert_eq!(r1["retried"], false);
    assert_eq!(r1["family_id"], issued["family_id"]);
    assert_eq!(r1["subject"], "alice");
    assert_eq!(r1["client_id"], "web");
    assert_eq!(r1["scope"], "offline_access openid");
    assert!(is_rfc3339(&r1["expires_at"]));

    // The same old token again, within the default 30 s grace window: the same successor.
    let retry = env.run(&["rotate", &t0, "--client", "web"]).ok();
    assert_eq!(retry["refresh_token"], r1["refresh_token"]);
    assert_eq!(retry["retried"], true);
    assert_eq!(retry["generation"], 1);

    // Narrowing the scope is allowed, widening is not.
    let narrow = env.run(&["rotate", &t1, "--client", "web", "--scope", "openid"]).ok();
    assert_eq!(narrow["scope"], "openid");
    let t2 = str_of(&narrow["refresh_token"]);
    env.run(&["rotate", &t2, "--client", "web", "--scope", "openid admin"])
        .fails_with(1, "scope_widened");
    // Another client is refused and changes nothing.
    env.run(&["rotate", &t2, "--client", "evil"])
        .fails_with(1, "client_mismatch");
    assert_eq!(env.run(&["introspect", &t2]).ok()["active"], true);
}

#[test]
fn reuse_detection_revokes_the_family() {
    let env = Env::with_keys();
    let (t0, family) = env.issue("alice", "web");
    let t1 = str_of(&env.run(&["rotate", &t0, "--client", "web"]).ok()["refresh_token"]);
    let t2 = str_of(&env.run(&["rotate", &t1, "--client", "web"]).ok()["refresh_token"]);

    // Two generations old: reuse, whatever the grace window.
    let out = env.run(&["rotate", &t0, "--client", "web"]);
    out.fails_with(1, "reuse_detected");
    assert!(!out.stderr.contains(&t0), "an error must never print a token");
    assert!(out.stderr.contains(&family), "the message names the revoked family");

    let e = env.run(&["rotate", &t2, "--client", "web"]).fails_with(1, "revoked");
    assert!(str_of(&e["message"]).contains("reuse_detected"), "{e}");
    assert_eq!(env.run(&["introspect", &t2]).ok(), serde_json::json!({"active": false}));
}

#[test]
fn reuse_of_the_immediate_predecessor_without_grace() {
    let env = Env::with_keys();
    let (t0, _) = env.issue("alice", "web");
    let t1 = str_of(&env.run(&["rotate", &t0, "--client", "web"]).ok()["refresh_token"]);
    // Global options are accepted after the subcommand too.
    env.run(&["policy", "set", "--by", "test", "--grace-secs", "0"]).ok();
    env.run(&["--grace-secs", "0", "rotate", &t0, "--client", "web"])
        .fails_with(1, "reuse_detected");
    env.run(&["rotate", &t1, "--client", "web"]).fails_with(1, "revoked");
}

#[test]
fn tokens_can_be_read_from_stdin() {
    let env = Env::with_keys();
    let (t0, family) = env.issue("alice", "web");
    let line = format!("{t0}\n");

    let v = env.run_stdin(&["introspect", "-"], Some(line.as_bytes())).ok();
    assert_eq!(v["active"], true);
    assert_eq!(v["sub"], "alice");
    assert_eq!(v["client_id"], "web");
    assert_eq!(v["scope"], "offline_access openid");
    assert_eq!(v["token_type"], "refresh_token");
    assert_eq!(v["family_id"], family.as_str());
    assert_eq!(v["generation"], 0);
    assert!(v["exp"].as_i64().unwrap() > v["iat"].as_i64().unwrap());
    assert!(v.get("cnf").is_none());

    let crlf = format!("{t0}\r\n");
    let r = env
        .run_stdin(&["rotate", "-", "--client", "web"], Some(crlf.as_bytes()))
        .ok();
    assert_eq!(r["generation"], 1);
    let t1 = str_of(&r["refresh_token"]);

    let out = env.run_stdin(&["revoke", "--token", "-"], Some(t1.as_bytes())).ok();
    assert_eq!(out["revoked"], 1);
}

#[test]
fn introspect_shows_the_confirmation_binding() {
    let env = Env::with_keys();
    let v = env
        .run(&[
            "issue",
            "--subject",
            "alice",
            "--client",
            "web",
            "--confirmation",
            "jkt-123",
        ])
        .ok();
    let t0 = str_of(&v["refresh_token"]);
    let i = env.run(&["introspect", &t0]).ok();
    assert_eq!(i["cnf"], serde_json::json!({"jkt": "jkt-123"}));
    env.run(&["rotate", &t0, "--client", "web"])
        .fails_with(1, "confirmation_mismatch");
    env.run(&["rotate", &t0, "--client", "web", "--confirmation", "other"])
        .fails_with(1, "confirmation_mismatch");
    let r = env
        .run(&["rotate", &t0, "--client", "web", "--confirmation", "jkt-123"])
        .ok();
    assert_eq!(r["generation"], 1);
}

#[test]
fn a_missing_key_file_is_a_clear_error() {
    let env = Env::new();
    let fake = "rt1_AAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for args in [
        &["issue", "--subject", "a", "--client", "c"][..],
        &["rotate", fake, "--client", "c"],
        &["introspect", fake],
        &["revoke", "--subject", "a"],
        &["sessions", "--subject", "a"],
        &["gc"],
        &["check"],
        &["keys", "rotate"],
        &["keys", "list"],
    ] {
        let e = env.run(args).fails_with(1, "keys_missing");
        assert!(str_of(&e["message"]).contains("rotoken keys generate"), "{e}");
    }
    assert!(
        !env.path("rotoken.redb").exists(),
        "nothing may be created without keys"
    );
    assert!(!env.path("rotoken.keys").exists());
}

#[test]
fn a_wrong_key_file_is_refused_at_open() {
    let env = Env::with_keys();
    let (t0, _) = env.issue("alice", "web");
    env.run(&["--keys", "other.keys", "keys", "generate"]).ok();
    for args in [
        &["--keys", "other.keys", "introspect", &t0][..],
        &["--keys", "other.keys", "rotate", &t0, "--client", "web"],
        &["--keys", "other.keys", "issue", "--subject", "a", "--client", "c"],
        &["--keys", "other.keys", "check"],
    ] {
        env.run(args).fails_with(1, "wrong_keys");
    }
    // The right keys still work: nothing was changed.
    assert_eq!(env.run(&["introspect", &t0]).ok()["active"], true);
}

#[test]
fn a_malformed_key_file_is_refused() {
    let env = Env::new();
    std::fs::write(env.path("rotoken.keys"), "not a key file\n").unwrap();
    env.run(&["issue", "--subject", "a", "--client", "c"])
        .fails_with(1, "keys_invalid");
}

#[test]
fn environment_variables_name_the_files() {
    let env = Env::new();
    let mut c = env.command(&["keys", "generate"]);
    let out = c.env("ROTOKEN_KEYS", env.path("k")).output().unwrap();
    assert!(out.status.success());
    let mut c = env.command(&["issue", "--subject", "a", "--client", "c"]);
    let out = c
        .env("ROTOKEN_KEYS", env.path("k"))
        .env("ROTOKEN_DB", env.path("d.redb"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(env.path("d.redb").exists());
    assert!(!env.path("rotoken.redb").exists());
}

#[test]
fn garbage_tokens_are_invalid_and_never_panic() {
    let env = Env::with_keys();
    let (t0, _) = env.issue("alice", "web");
    // One character changed: the checksum catches it.
    let mut flipped = t0.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let long = "x".repeat(10_000);
    for garbage in ["", "garbage", "-x", "rt1_", "rt2_abc", "rt1_é", &flipped, &long] {
        let out = env.run(&["rotate", garbage, "--client", "web"]);
        out.fails_with(1, "invalid_token");
        assert!(
            garbage.len() < 5 || !out.stderr.contains(garbage),
            "the token was echoed"
        );
        env.run(&["revoke", "--token", garbage]).fails_with(1, "invalid_token");
        assert_eq!(
            env.run(&["introspect", garbage]).ok(),
            serde_json::json!({"active": false})
        );
    }
    // Not UTF-8, through standard input.
    env.run_stdin(&["rotate", "-", "--client", "web"], Some(b"rt1_\xff\xfe\x00\n"))
        .fails_with(1, "invalid_token");
    // The real token is untouched by all of this.
    assert_eq!(env.run(&["introspect", &t0]).ok()["active"], true);
}

#[test]
fn a_one_megabyte_token_on_stdin_is_invalid() {
    let env = Env::with_keys();
    env.issue("alice", "web");
    let big = vec![b'A'; 1 << 20];
    let out = env.run_stdin(&["rotate", "-", "--client", "web"], Some(&big));
    let e = out.fails_with(1, "invalid_token");
    assert!(out.stderr.len() < 1000, "the error should not echo the input");
    assert!(str_of(&e["message"]).contains("characters"), "{e}");
    let out = env.run_stdin(&["introspect", "-"], Some(&big));
    assert_eq!(out.ok(), serde_json::json!({"active": false}));
}

#[test]
fn revoke_each_target() {
    let env = Env::with_keys();
    let (a_web, _) = env.issue("alice", "web");
    let (a_mobile, a_mobile_family) = env.issue("alice", "mobile");
    let (b_web, _) = env.issue("bob", "web");
    let (c_cli, _) = env.issue("carol", "cli");
    let (c_web, _) = env.issue("carol", "web");

    // By token: its family only.
    assert_eq!(
        env.run(&["revoke", "--token", &a_web]).ok(),
        serde_json::json!({"revoked": 1})
    );
    env.run(&["rotate", &a_web, "--client", "web"]).fails_with(1, "revoked");
    // Again: already revoked counts 0.
    assert_eq!(env.run(&["revoke", "--token", &a_web]).ok()["revoked"], 0);
    assert_eq!(env.run(&["introspect", &a_mobile]).ok()["active"], true);

    // By family id.
    assert_eq!(env.run(&["revoke", "--family", &a_mobile_family]).ok()["revoked"], 1);
    env.run(&["rotate", &a_mobile, "--client", "mobile"])
        .fails_with(1, "revoked");
    env.run(&["revoke", "--family", "not-hex"])
        .fails_with(1, "invalid_input");

    // By client: bob's and carol's web families.
    assert_eq!(env.run(&["revoke", "--client", "web"]).ok()["revoked"], 2);
    env.run(&["rotate", &b_web, "--client", "web"]).fails_with(1, "revoked");
    env.run(&["rotate", &c_web, "--client", "web"]).fails_with(1, "revoked");
    assert_eq!(env.run(&["introspect", &c_cli]).ok()["active"], true);

    // By subject.
    assert_eq!(env.run(&["revoke", "--subject", "carol"]).ok()["revoked"], 1);
    let e = env.run(&["rotate", &c_cli, "--client", "cli"]).fails_with(1, "revoked");
    assert!(str_of(&e["message"]).contains("subject"), "{e}");
    assert_eq!(env.run(&["revoke", "--subject", "nobody"]).ok()["revoked"], 0);

    // Exactly one target: usage errors otherwise.
    assert_eq!(env.run(&["revoke"]).code, 2);
    assert_eq!(env.run(&["revoke", "--subject", "a", "--client", "b"]).code, 2);
    env.run(&["revoke", "--subject", ""]).fails_with(1, "invalid_input");
}

#[test]
fn sessions_lists_a_subjects_families() {
    let env = Env::with_keys();
    let (_, web) = env.issue("alice", "web");
    let (_, mobile) = env.issue("alice", "mobile");
    env.issue("bob", "web");
    env.run(&["revoke", "--family", &mobile]).ok();

    let v = env.run(&["sessions", "--subject", "alice"]).ok();
    let sessions = v["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let by_id = |id: &str| sessions.iter().find(|s| s["family_id"] == id).unwrap().clone();
    let w = by_id(&web);
    assert_eq!(w["client_id"], "web");
    assert_eq!(w["scope"], "offline_access openid");
    assert_eq!(w["generation"], 0);
    assert_eq!(w["active"], true);
    assert_eq!(w["revoked"], Value::Null);
    for field in ["created_at", "rotated_at", "expires_at"] {
        assert!(is_rfc3339(&w[field]), "{w}");
    }
    let m = by_id(&mobile);
    assert_eq!(m["active"], false);
    assert_eq!(m["revoked"], "family");

    assert_eq!(
        env.run(&["sessions", "--subject", "nobody"]).ok(),
        serde_json::json!({"sessions": []})
    );
}

#[test]
fn gc_removes_revoked_families_past_retention() {
    let env = Env::with_keys();
    let (_, keep) = env.issue("alice", "web");
    for _ in 0..5 {
        env.issue("bob", "web");
    }
    // Nothing is due yet.
    let v = env.run(&["gc"]).ok();
    assert_eq!(
        v,
        serde_json::json!({"removed": 0, "rescheduled": 0, "events_removed": 0, "steps": 1})
    );

    // Revoked with no retention: due at once. A limit of 2 takes several steps.
    env.run(&["policy", "set", "--revoked-retention-secs", "0", "--by", "test"])
        .ok();
    env.run(&["revoke", "--subject", "bob"]).ok();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let v = env.run(&["gc", "--limit", "2"]).ok();
    assert_eq!(v["removed"], 5, "{v}");
    assert!(v["steps"].as_u64().unwrap() >= 3, "{v}");
    assert_eq!(
        env.run(&["sessions", "--subject", "bob"]).ok()["sessions"],
        serde_json::json!([])
    );
    let alice = env.run(&["sessions", "--subject", "alice"]).ok();
    assert_eq!(alice["sessions"][0]["family_id"], keep.as_str());
    assert_eq!(env.run(&["check"]).ok()["ok"], true);
    assert_eq!(env.run(&["gc", "--limit", "0"]).code, 2);
}

/// The database's policy is the one every command runs by: flags that
/// disagree are refused (they used to apply other rules silently), and
/// `rotoken policy set` changes it, with a history of who changed what.
#[test]
fn policy_flags_that_disagree_with_the_database_are_refused_until_set() {
    let env = Env::with_keys();
    env.issue("alice", "web");
    env.run(&["--idle-days", "7", "gc"]).fails_with(1, "policy_mismatch");
    let shown = env.run(&["policy", "show"]).ok();
    assert_eq!(shown["policy"]["idle_lifetime_secs"], 30 * 86_400, "{shown}");
    assert_eq!(shown["policy"]["max_families_per_user"], 200, "{shown}");
    let set = env
        .run(&["--idle-days", "7", "policy", "set", "--by", "alice@ops"])
        .ok();
    assert_eq!(set["policy"]["idle_lifetime_secs"], 7 * 86_400, "{set}");
    assert_eq!(set["history"][0]["by"], "alice@ops");
    assert_eq!(set["history"][0]["old"]["idle_lifetime_secs"], 30 * 86_400);
    env.run(&["--idle-days", "7", "gc"]).ok();
    env.run(&["gc"]).ok();
    assert_eq!(
        env.run(&["--idle-days", "0", "policy", "set"]).code,
        2,
        "clap refuses 0 days"
    );
}

#[test]
fn check_reports_a_healthy_database() {
    let env = Env::with_keys();
    env.run(&["check"]).fails_with(1, "db_missing");
    let (t0, _) = env.issue("alice", "web");
    env.run(&["rotate", &t0, "--client", "web"]).ok();
    env.issue("bob", "web");
    env.run(&["revoke", "--subject", "bob"]).ok();
    let v = env.run(&["check"]).ok();
    assert_eq!(v["ok"], true);
    assert_eq!(v["families"], 2);
    assert_eq!(v["active"], 1);
    assert_eq!(v["events"], 1);
    assert_eq!(v["problems"], serde_json::json!([]));
    // Changing the policy does not make a sound database look broken.
    env.run(&["--idle-days", "1", "policy", "set", "--by", "test"]).ok();
    assert_eq!(env.run(&["check"]).ok()["ok"], true);
}

#[test]
fn compact_shrinks_the_file_and_keeps_every_token() {
    let env = Env::with_keys();
    env.run(&["compact"]).fails_with(1, "db_missing");
    let (t0, _) = env.issue("alice", "web");
    let t1 = str_of(&env.run(&["rotate", &t0, "--client", "web"]).ok()["refresh_token"]);
    for _ in 0..20 {
        env.issue("bob", "web");
    }
    let v = env.run(&["compact"]).ok();
    let (before, after) = (v["bytes_before"].as_u64().unwrap(), v["bytes_after"].as_u64().unwrap());
    assert!(after < before, "{v}");
    assert_eq!(after, std::fs::metadata(env.path("rotoken.redb")).unwrap().len());
    assert_eq!(env.run(&["introspect", &t1]).ok()["active"], true);
    assert_eq!(env.run(&["introspect", &t0]).ok()["active"], false);
    assert_eq!(env.run(&["check"]).ok()["families"], 21);
}

#[test]
fn commands_other_than_issue_do_not_create_a_database() {
    let env = Env::with_keys();
    let fake = "rt1_AAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    env.run(&["introspect", fake]).fails_with(1, "db_missing");
    env.run(&["sessions", "--subject", "a"]).fails_with(1, "db_missing");
    env.run(&["gc"]).fails_with(1, "db_missing");
    assert!(!env.path("rotoken.redb").exists());
}

#[test]
fn a_file_that_is_not_a_database_is_a_storage_error() {
    let env = Env::with_keys();
    std::fs::write(env.path("rotoken.redb"), vec![0x5a; 8192]).unwrap();
    let e = env.run(&["check"]).err(3);
    assert!(
        ["storage_error", "corrupt", "not_rotoken"].contains(&e["error"].as_str().unwrap()),
        "{e}"
    );
}

#[test]
fn invalid_grants_are_refused() {
    let env = Env::with_keys();
    env.run(&["issue", "--subject", "", "--client", "c"])
        .fails_with(1, "invalid_input");
    env.run(&["issue", "--subject", "a\nb", "--client", "c"])
        .fails_with(1, "invalid_input");
    env.run(&["issue", "--subject", "a", "--client", "c", "--scope", "bad\"scope"])
        .fails_with(1, "invalid_input");
    let big = "m".repeat(100_000);
    env.run(&["issue", "--subject", "a", "--client", "c", "--metadata", &big])
        .fails_with(1, "invalid_input");
    assert_eq!(
        env.run(&["issue", "--subject", "a"]).code,
        2,
        "missing --client is a usage error"
    );
    assert_eq!(env.run(&["--durability", "sometimes", "check"]).code, 2);
    env.run(&["--durability", "relaxed", "issue", "--subject", "a", "--client", "c"])
        .ok();
}

#[test]
fn demo_runs_to_completion() {
    let env = Env::new();
    let out = env.run(&["demo"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("temporary database"), "{}", out.stdout);
    assert!(out.stdout.contains("Every step behaved as expected."), "{}", out.stdout);
    assert!(out.stdout.contains("reuse detected"));
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    // Tokens are only ever shown truncated.
    assert!(
        !out.stdout
            .split_whitespace()
            .any(|w| w.starts_with("rt1_") && w.len() > 40)
    );
    // It works without keys and leaves the working directory alone (the
    // clients file the test environment wrote is all there is).
    let left: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["rotoken.clients.toml"]);
}

#[test]
fn demo_reports_a_misbehaving_step() {
    // With no grace window the retry step cannot succeed: the demo must say so and exit 1.
    let env = Env::new();
    let out = env.run(&["--grace-secs", "0", "demo"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("FAILED"), "{}", out.stdout);
    assert_eq!(single_json(&out.stderr)["error"], "demo_failed");
}

#[test]
fn a_database_open_elsewhere_is_locked() {
    let env = Env::with_keys();
    let (t0, _) = env.issue("alice", "web");
    let keys = rotoken::Keyring::load(env.path("rotoken.keys")).unwrap();
    let engine = rotoken::Engine::open(env.path("rotoken.redb"), keys, rotoken::Options::default()).unwrap();
    env.run(&["rotate", &t0, "--client", "web"]).fails_with(1, "locked");
    drop(engine);
    assert_eq!(env.run(&["rotate", &t0, "--client", "web"]).ok()["generation"], 1);
}

#[test]
fn keys_rotate_at_the_highest_key_id_is_refused_not_a_panic() {
    let env = Env::with_keys();
    let path = env.path("rotoken.keys");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replace("\nkey 1 ", "\nkey 4294967295 ")
        .replace("\nactive 1\n", "\nactive 4294967295\n");
    std::fs::write(&path, &text).unwrap();
    assert_eq!(env.run(&["keys", "list"]).ok()["active_id"], 4_294_967_295_u64);
    env.run(&["keys", "rotate"]).fails_with(1, "keys_exhausted");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "the key file must be unchanged"
    );
}

#[cfg(unix)]
#[test]
fn an_endless_key_file_is_refused() {
    let env = Env::new();
    env.run(&["--keys", "/dev/zero", "keys", "list"])
        .fails_with(1, "keys_invalid");
    env.run(&["--keys", ".", "issue", "--subject", "a", "--client", "c"])
        .fails_with(1, "keys_io");
}

#[test]
fn check_lists_problems_and_exits_3() {
    let env = Env::with_keys();
    let (_, family) = env.issue("alice", "web");
    env.issue("bob", "web");
    {
        // Remove alice's subject-index entry behind the engine's back.
        let by_subject: redb::TableDefinition<'_, [u8; 32], ()> = redb::TableDefinition::new("by_subject");
        let db = redb::Database::open(env.path("rotoken.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(by_subject).unwrap();
            let key = table
                .iter()
                .unwrap()
                .map(|e| e.unwrap().0.value())
                .find(|k| k[16..] == hex(&family))
                .unwrap();
            table.remove(key).unwrap();
        }
        txn.commit().unwrap();
    }
    let out = env.run(&["check"]);
    assert_eq!(out.code, 3, "{out:?}");
    let report = single_json(&out.stdout);
    assert_eq!(report["ok"], false);
    assert_eq!(report["families"], 2);
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["table"], "by_subject");
    assert_eq!(problems[0]["key"], family.as_str());
    let e = single_json(&out.stderr);
    assert_eq!(e["error"], "check_failed");
    assert!(str_of(&e["message"]).contains(&family), "{e}");
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn usage_errors_never_echo_a_token() {
    let env = Env::with_keys();
    let (t0, _) = env.issue("alice", "web");
    for args in [
        &["revoke", &t0][..],
        &["rotate", &t0, &t0, "--client", "web"],
        &["introspect", "--token", &t0],
    ] {
        let out = env.run(args);
        assert_eq!(out.code, 2, "{out:?}");
        assert!(
            !out.stderr.contains(&t0),
            "a usage error echoed the token: {}",
            out.stderr
        );
        assert!(out.stderr.contains("rt1_"), "{}", out.stderr);
    }
}

#[test]
fn issue_follows_the_same_rule_as_the_admin_api() {
    let env = Env::with_keys();
    env.run(&["issue", "--subject", "a", "--client", "stranger"])
        .fails_with(1, "unknown_client");
    env.run(&["issue", "--subject", "a", "--client", "web", "--scope", "openid"])
        .fails_with(1, "offline_access_required");
    let v = env.run(&["issue", "--subject", "a", "--client", "web"]).ok();
    assert!(str_of(&v["refresh_token"]).starts_with("rt1_"));
}

/// Rotates `token` as client `web` in the database `db`; the successor.
fn rotate_in(env: &Env, db: &str, token: &str) -> String {
    str_of(&env.run(&["--db", db, "rotate", token, "--client", "web"]).ok()["refresh_token"])
}

/// Rotating `token` as client `web` in the database `db` is refused with `code`.
fn refused_in(env: &Env, db: &str, token: &str, code: &str) {
    env.run(&["--db", db, "rotate", token, "--client", "web"])
        .fails_with(1, code);
}

/// The state after a backup: what happened since, and the event stream
/// that recorded it. Returns (tokens, the reused family's id).
struct AfterBackup {
    /// Family A's token at the backup (generation 0); A was revoked by reuse after it.
    a0: String,
    /// A's current token when it was revoked (generation 2).
    a2: String,
    /// Family B's token rotated after the backup (generation 1).
    b1: String,
    /// A family issued after the backup.
    c0: String,
    a_family: String,
    /// The greatest sequence number in the stream.
    last_seq: u64,
}

/// Issues A and B, backs up to `backup.redb`, then rotates A twice and
/// replays its first token (reuse: A revoked), rotates B, issues C, and
/// writes the event stream to `events.jsonl`.
fn issue_backup_and_revoke(env: &Env) -> AfterBackup {
    let (a0, a_family) = env.issue("alice", "web");
    let (b0, _) = env.issue("bob", "web");
    let v = env.run(&["backup", "backup.redb"]).ok();
    assert_eq!(
        (v["families"].as_u64(), v["last_event_seq"].as_u64()),
        (Some(2), Some(0)),
        "{v}"
    );
    assert_eq!(mode(&env.path("backup.redb")), 0o600);
    env.run(&["backup", "backup.redb"]).fails_with(1, "backup_exists");

    let a1 = rotate_in(env, "rotoken.redb", &a0);
    let a2 = rotate_in(env, "rotoken.redb", &a1);
    env.run(&["rotate", &a0, "--client", "web"])
        .fails_with(1, "reuse_detected");
    let b1 = rotate_in(env, "rotoken.redb", &b0);
    let (c0, _) = env.issue("carol", "web");
    let out = env.run(&["events"]);
    assert_eq!(out.code, 0, "{out:?}");
    let events: Vec<Value> = out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0]["kind"].as_str(), events[0]["family"].as_str()),
        (Some("reuse_detected"), Some(a_family.as_str()))
    );
    std::fs::write(env.path("events.jsonl"), &out.stdout).unwrap();
    AfterBackup {
        a0,
        a2,
        b1,
        c0,
        a_family,
        last_seq: events[0]["seq"].as_u64().unwrap(),
    }
}

#[test]
fn a_restore_with_the_event_stream_keeps_a_family_revoked_after_the_backup_revoked() {
    let env = Env::with_keys();
    let after = issue_backup_and_revoke(&env);
    let db = "restored.redb";
    let v = env
        .run(&["--db", db, "restore", "backup.redb", "--events", "events.jsonl"])
        .ok();
    assert_eq!(v["revocations_after_backup"], 1, "{v}");
    assert_eq!(v["revoked_again"], 1, "{v}");
    assert_eq!(v["backup_last_event_seq"], 0, "{v}");
    assert!(v.get("warnings").is_none(), "{v}");
    assert_eq!(mode(&env.path(db)), 0o600);
    assert!(
        !env.path(&format!(".{db}.restoring")).exists(),
        "the staging file was left behind"
    );

    // A's token of the backup is live in the backup, but A was revoked since: still revoked.
    refused_in(&env, db, &after.a0, "revoked");
    refused_in(&env, db, &after.a2, "revoked");
    // What happened after the backup is never accepted.
    refused_in(&env, db, &after.c0, "unknown_token");
    refused_in(&env, db, &after.b1, "diverged");
    assert_eq!(env.run(&["--db", db, "check"]).ok()["ok"], true);

    // Event numbers the stream holds are never given again: new events follow it.
    let out = env.run(&["--db", db, "events"]);
    let seqs: Vec<(u64, String)> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|e| (e["seq"].as_u64().unwrap(), e["kind"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(seqs.len(), 2, "{seqs:?}");
    assert!(seqs.iter().all(|(seq, _)| *seq > after.last_seq), "{seqs:?}");
    assert_eq!(seqs[0].1, "revoked");
    assert_eq!(seqs[1].1, "diverged");
    let revoked = env.run(&["--db", db, "sessions", "--subject", "alice"]).ok();
    assert_eq!(revoked["sessions"][0]["family_id"], after.a_family.as_str());
    assert_eq!(revoked["sessions"][0]["active"], false);

    // Restoring over a database needs --force.
    env.run(&["--db", db, "restore", "backup.redb"])
        .fails_with(1, "db_exists");
    env.run(&[
        "--db",
        db,
        "restore",
        "backup.redb",
        "--force",
        "--events",
        "events.jsonl",
    ])
    .ok();
}

#[test]
fn a_restore_without_the_stream_revives_a_revoked_family_but_never_accepts_a_later_token() {
    let env = Env::with_keys();
    let after = issue_backup_and_revoke(&env);
    let db = "bare.redb";
    let v = env.run(&["--db", db, "restore", "backup.redb"]).ok();
    assert_eq!(v["revoked_again"], 0, "{v}");
    assert!(v["warnings"][0].as_str().unwrap().contains("live again"), "{v}");

    // What the stream would have kept: A, revoked after the backup, is live again.
    assert_eq!(env.run(&["--db", db, "introspect", &after.a0]).ok()["active"], true);
    // Tokens issued or rotated after the backup are unknown or diverged, never accepted.
    refused_in(&env, db, &after.c0, "unknown_token");
    refused_in(&env, db, &after.b1, "diverged");
    refused_in(&env, db, &after.a2, "diverged");
    // ... and a diverged token revoked its family, the backup's token with it.
    refused_in(&env, db, &after.a0, "revoked");
}

#[test]
fn restore_refuses_a_bad_stream_and_a_postgres_store_before_writing() {
    let env = Env::with_keys();
    env.issue("alice", "web");
    env.run(&["backup", "backup.redb"]).ok();
    std::fs::write(env.path("events.jsonl"), "{\"seq\":1,\"kind\":\"revoked\"}\n").unwrap();
    let e = env
        .run(&["--db", "new.redb", "restore", "backup.redb", "--events", "events.jsonl"])
        .fails_with(1, "events_invalid");
    assert!(e["message"].as_str().unwrap().contains("line 1"), "{e}");
    assert!(!env.path("new.redb").exists());
    env.run(&["--store", "postgres://nobody@127.0.0.1:1/x", "restore", "backup.redb"])
        .fails_with(1, "restore_unsupported");
    env.run(&["--store", "postgres://nobody@127.0.0.1:1/x", "backup", "pg.redb"])
        .fails_with(1, "backup_unsupported");
    env.run(&["--db", "none.redb", "backup", "x.redb"])
        .fails_with(1, "db_missing");
}

#[test]
fn migrate_says_what_it_found_and_a_newer_schema_is_refused_with_nothing_written() {
    let env = Env::with_keys();
    env.run(&["migrate"]).fails_with(1, "db_missing");
    env.issue("alice", "web");
    let v = env.run(&["migrate"]).ok();
    assert_eq!(v["store"], "redb");
    assert_eq!((v["from"].as_u64(), v["to"].as_u64()), (Some(1), Some(1)), "{v}");
    assert_eq!(v["applied"], serde_json::json!([]));

    let path = env.path("rotoken.redb");
    {
        const META: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("meta");
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 2u32.to_be_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let e = env.run(&["migrate"]).fails_with(3, "unsupported_schema");
    assert!(e["message"].as_str().unwrap().contains("version 2"), "{e}");
    env.run(&["check"]).fails_with(3, "unsupported_schema");
    assert!(std::fs::read(&path).unwrap() == before, "a newer schema was written to");
}
