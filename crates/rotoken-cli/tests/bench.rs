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

/// `--store URL bench` and the words of `rest`.
fn bench_on<'a>(url: &'a str, rest: &'a str) -> Vec<&'a str> {
    ["--store", url, "bench"]
        .into_iter()
        .chain(rest.split_whitespace())
        .collect()
}

/// Every JSON line on stdout of a successful run.
fn json_lines(dir: &Path, args: &[&str]) -> Vec<Value> {
    let (code, stdout, stderr) = rotoken(dir, args);
    assert_eq!(code, 0, "{args:?} failed: {stderr}");
    stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The schemas the benchmark made and left behind in `db` (none, when it cleans up).
fn bench_schemas(db: &rotoken_postgres::testing::TestDb) -> i64 {
    db.sql()
        .unwrap()
        .query_i64("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rotoken\\_bench\\_%'")
        .unwrap()
}

#[test]
fn bench_on_postgres_compares_the_peer_design_at_each_caller_count() {
    let Some(db) = rotoken_postgres::testing::database() else {
        return;
    };
    let url = db.url();
    let dir = tempfile::tempdir().unwrap();
    // A table of the user's own in the same database: the run must not touch it.
    db.sql()
        .unwrap()
        .execute("CREATE TABLE mine (x int); INSERT INTO mine VALUES (7)")
        .unwrap();
    let runs = json_lines(
        dir.path(),
        &bench_on(
            &url,
            "--duration 1 --families 8 --callers 1,4 --compare postgres-peer --json",
        ),
    );
    assert_eq!(runs.len(), 2, "one line per caller count: {runs:?}");
    for (v, callers) in runs.iter().zip([1, 4]) {
        assert_eq!(v["store"], "postgres", "{v}");
        assert_eq!(v["concurrency"], callers, "{v}");
        assert_eq!(v["families"], 8, "{v}");
        assert_eq!(v["durability"], "immediate", "{v}");
        assert_eq!(v["synchronous_commit"], "on", "{v}");
        for design in ["rotoken", "postgres_peer"] {
            let d = &v[design];
            positive(d, &["rotations_per_sec", "p50_us", "p99_us", "duration_secs"]);
            // Each design rotated at least once per caller, and the rate is the count over the time.
            let rotations = d["rotations"].as_u64().unwrap();
            assert!(rotations >= callers, "{design}: {d}");
            let rate = rotations as f64 / d["duration_secs"].as_f64().unwrap();
            let printed = d["rotations_per_sec"].as_f64().unwrap();
            assert!((rate - printed).abs() <= rate * 0.01 + 1.0, "{design}: {d}");
        }
        let ratio = v["ratio_vs_postgres_peer"].as_f64().unwrap();
        let expected = v["rotoken"]["rotations_per_sec"].as_f64().unwrap()
            / v["postgres_peer"]["rotations_per_sec"].as_f64().unwrap();
        assert!((ratio - expected).abs() < 0.02 * expected + 0.01, "{v}");
        assert!(v["mean_batch"].as_f64().unwrap() >= 1.0, "{v}");
    }
    // Without --compare: rotoken only.
    let v = json(dir.path(), &bench_on(&url, "--duration 1 --families 4 --json"));
    assert_eq!(v["concurrency"], 4, "capped at the families: {v}");
    assert!(
        v.get("postgres_peer").is_none() && v.get("ratio_vs_postgres_peer").is_none(),
        "{v}"
    );
    // Text output names both designs and the ratio.
    let (code, stdout, stderr) = rotoken(
        dir.path(),
        &bench_on(&url, "--duration 1 --families 2 --compare postgres-peer"),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("rotoken is") && stdout.contains("postgres-peer"),
        "{stdout}"
    );
    // Every schema it made is gone; the user's table is as it was.
    assert_eq!(bench_schemas(&db), 0);
    assert_eq!(db.sql().unwrap().query_i64("SELECT sum(x)::int8 FROM mine").unwrap(), 7);
    assert_eq!(
        db.sql()
            .unwrap()
            .query_i64("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .unwrap(),
        1,
        "nothing of the benchmark's in the user's schema"
    );
}

#[test]
fn bench_bytes_on_postgres_stays_flat_for_rotoken_and_grows_for_the_peer() {
    let Some(db) = rotoken_postgres::testing::database() else {
        return;
    };
    let url = db.url();
    let dir = tempfile::tempdir().unwrap();
    let lines = json_lines(
        dir.path(),
        &bench_on(
            &url,
            "--bytes --families 32 --rotations 0,20 --compare postgres-peer --json",
        ),
    );
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["rotations"], 0);
    assert_eq!(lines[1]["rotations"], 20);
    for v in &lines {
        assert_eq!(v["families"], 32);
        positive(&v["rotoken"], &["bytes_per_family", "total_bytes", "empty_bytes"]);
        positive(&v["postgres_peer"], &["bytes_per_family", "total_bytes", "empty_bytes"]);
    }
    let per = |i: usize, d: &str| lines[i][d]["bytes_per_family"].as_f64().unwrap();
    // One row per family: the same size after 20 rotations. One row per
    // token: 21 rows a family, far more than one.
    assert_eq!(per(0, "rotoken"), per(1, "rotoken"), "{lines:?}");
    assert!(per(1, "postgres_peer") > 4.0 * per(0, "postgres_peer"), "{lines:?}");
    assert_eq!(bench_schemas(&db), 0);
}

#[test]
fn bench_refuses_designs_that_do_not_fit_the_store() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["bench", "--compare", "postgres-peer", "--duration", "1"][..],
        &["bench", "--bytes"][..],
        &["--store", "postgres://u@h/db", "bench", "--compare", "sqlite"][..],
        &["--store", "postgres://u@h/db", "bench", "--use-db"][..],
    ] {
        let (code, stdout, stderr) = rotoken(dir.path(), args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(stderr.contains("invalid_input"), "{args:?}: {stderr}");
    }
}
