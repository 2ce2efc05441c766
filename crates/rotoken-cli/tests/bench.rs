//! `rotoken bench`: runs the real binary on tiny workloads (one-second runs)
//! and checks the JSON contract. Figures are only checked to be positive:
//! speed is measured by benchmarks, never by tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn rotoken(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rotoken"))
        .args(args)
        .current_dir(dir)
        .env_remove("ROTOKEN_DB")
        .env_remove("ROTOKEN_KEYS")
        .env("ROTOKEN_BENCH_DIR", dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "the binary panicked: {stderr}");
    (
        out.status.code().expect("killed by a signal"),
        String::from_utf8(out.stdout).unwrap(),
        stderr,
    )
}

/// The one JSON object on stdout of a successful run.
fn json(dir: &Path, args: &[&str]) -> Value {
    let (code, stdout, stderr) = rotoken(dir, args);
    assert_eq!(code, 0, "{args:?} failed: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one JSON line on stdout, got {stdout:?}"
    );
    serde_json::from_str(lines[0]).unwrap()
}

fn positive(v: &Value, keys: &[&str]) {
    for k in keys {
        let x = v[k].as_f64().unwrap_or_else(|| panic!("{k} is not a number in {v}"));
        assert!(x > 0.0, "{k} = {x} in {v}");
    }
}

const ENGINE_KEYS: [&str; 5] = ["rotations_per_sec", "p50_us", "p99_us", "p999_us", "bytes_per_family"];

#[test]
fn bench_json_has_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    let v = json(dir.path(), &["bench", "--duration", "1", "--families", "50", "--json"]);
    positive(&v, &ENGINE_KEYS);
    positive(&v, &["rotations", "file_bytes"]);
    // 50 families feed at most 50 of the default 64 callers.
    assert_eq!(v["concurrency"], 50);
    assert_eq!(v["families"], 50);
    assert_eq!(v["durability"], "immediate");
    assert!(v.get("sqlite_rotations_per_sec").is_none(), "{v}");
    // The temporary database is gone.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bench_compare_sqlite_reports_both_designs() {
    let dir = tempfile::tempdir().unwrap();
    let v = json(
        dir.path(),
        &[
            "bench",
            "--duration",
            "1",
            "--families",
            "50",
            "--concurrency",
            "4",
            "--compare",
            "sqlite",
            "--durability",
            "none",
            "--json",
        ],
    );
    positive(&v, &ENGINE_KEYS);
    positive(
        &v,
        &[
            "sqlite_rotations_per_sec",
            "sqlite_batched_rotations_per_sec",
            "sqlite_bytes_per_family",
            "ratio_vs_sqlite",
        ],
    );
    assert_eq!(v["durability"], "none");
    assert_eq!(v["concurrency"], 4);
    // 50 families over 4 callers: batches of at most 12 per transaction.
    assert_eq!(v["sqlite_batch"], 12);
    // One row per token: the SQLite table grew by every rotation.
    assert!(v["sqlite_rows"].as_u64().unwrap() > 50, "{v}");
}

#[test]
fn bench_on_a_given_database_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    // Without a key file: the usual refusal, nothing on stdout.
    let (code, stdout, stderr) = rotoken(dir.path(), &["bench", "--use-db", "--duration", "1", "--families", "5"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("keys_missing"), "{stderr}");

    assert_eq!(rotoken(dir.path(), &["keys", "generate"]).0, 0);
    let v = json(
        dir.path(),
        &[
            "bench",
            "--use-db",
            "--duration",
            "1",
            "--families",
            "5",
            "--max-batch",
            "1",
            "--json",
        ],
    );
    positive(&v, &ENGINE_KEYS);
    assert_eq!(v["max_batch"], 1);
    assert_eq!(v["families"], 5);
    assert!(dir.path().join("rotoken.redb").exists());
    // The families stay: a second run adds to them.
    let v = json(
        dir.path(),
        &["bench", "--use-db", "--duration", "1", "--families", "3", "--json"],
    );
    assert_eq!(v["families"], 8);
    let (code, stdout, _) = rotoken(dir.path(), &["check"]);
    assert_eq!(code, 0, "{stdout}");
}
