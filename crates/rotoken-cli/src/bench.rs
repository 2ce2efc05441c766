//! `rotoken bench`: a rotation workload with a progress bar.
//!
//! Issues `--families` families (relaxed durability, many callers, so group
//! commit packs them into big transactions), reopens the database with the
//! chosen durability, and has `--concurrency` threads rotate their own
//! families for `--duration` seconds. Then it compacts the database and
//! prints rotations per second, latency percentiles and bytes on disk per
//! live family. `--compare sqlite` runs the one-row-per-token SQLite design
//! (`rotoken_bench::sqlite_design`) on the same workload in the same run,
//! one rotation per transaction and then 100 per transaction. A list of
//! caller counts (`--concurrency 1,16,64`, alias `--callers`) runs each in
//! turn. With `--store postgres://...` the run is against rotoken's
//! PostgreSQL store instead, and `--compare postgres-peer` / `--bytes`
//! apply (`bench/postgres.rs`).
//!
//! The workload driver, the family grants and the measurement live in
//! `rotoken-bench`, shared with the criterion benchmarks. Progress goes to
//! standard error; with `--json` standard output holds exactly one JSON
//! object per run, a line each.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rotoken::{Durability, Engine, GroupCommit, Keyring};
use rotoken_bench::workload::{self, EngineRotator, Report, Workload};
use serde::Serialize;

use crate::output::{self, CliError};
use crate::{DurabilityArg, Global};

mod postgres;

/// Callers that issue the families before the run.
const POPULATE_THREADS: usize = 16;

/// Rotations per transaction in the batched SQLite run.
const SQLITE_BATCH: usize = 100;

/// `rotoken bench ...`. Durability comes from the global `--durability`
/// (`immediate`, the default, or `none`, the engine's relaxed mode).
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Concurrent callers (threads), each rotating its own share of the families;
    /// a list (`1,16,64`) runs each in turn. Capped at the number of families.
    #[arg(
        long,
        visible_alias = "callers",
        default_value = "64",
        value_delimiter = ',',
        value_name = "N[,N...]",
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub(crate) concurrency: Vec<u32>,
    /// Live families to issue before the run.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub(crate) families: u64,
    /// Length of each measured run, in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) duration: u64,
    /// Also run this design on the same workload in the same run, and print the ratio.
    #[arg(long, value_enum, value_name = "DESIGN")]
    pub(crate) compare: Option<CompareArg>,
    /// Print one JSON object per run (caller count, or --bytes rotation count), a line each,
    /// on standard output (progress still goes to standard error).
    #[arg(long)]
    pub(crate) json: bool,
    /// Run on the database and keys given by --db and --keys (the database is
    /// created if missing; the benchmark's families are added to it and it is
    /// compacted at the end) instead of a temporary database with fresh keys.
    #[arg(long)]
    pub(crate) use_db: bool,
    /// Most writes one group commit carries [default: the core's, 256]; 1 turns group commit off.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_batch: Option<u32>,
    /// PostgreSQL store only: instead of rotations per second, measure the bytes per
    /// family (tables, TOAST and indexes after VACUUM FULL) after each of --rotations.
    #[arg(long)]
    pub(crate) bytes: bool,
    /// With --bytes: rotations per family before each measure.
    #[arg(
        long,
        default_value = "0,10,100",
        value_delimiter = ',',
        value_name = "N[,N...]",
        requires = "bytes"
    )]
    pub(crate) rotations: Vec<u64>,
}

/// Designs `--compare` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CompareArg {
    /// One row per refresh token with a parent pointer, in SQLite (WAL, synchronous=FULL),
    /// as the SQL-backed servers keep them.
    Sqlite,
    /// The same one-row-per-token design on the PostgreSQL server of --store
    /// (`SELECT ... FOR UPDATE` on the presented token, one transaction per rotation).
    PostgresPeer,
}

/// The answer, as printed with `--json`.
#[derive(Debug, Serialize)]
struct BenchJson {
    rotations_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    bytes_per_family: f64,
    rotations: u64,
    duration_secs: f64,
    concurrency: usize,
    families: u64,
    durability: &'static str,
    max_batch: usize,
    file_bytes: u64,
    populate_secs: f64,
    /// Rotations per write transaction during the run (group commit's batch size).
    mean_batch: f64,
    /// The most rotations one write transaction carried.
    largest_batch: u64,
    /// Write transactions committed per second during the run.
    commits_per_sec: f64,
    /// Bytes written to storage per rotation during the run (Linux only).
    #[serde(skip_serializing_if = "Option::is_none")]
    write_bytes_per_rotation: Option<f64>,
    #[serde(flatten)]
    sqlite: Option<SqliteJson>,
}

/// The `--compare sqlite` half of the answer.
#[derive(Debug, Serialize)]
struct SqliteJson {
    sqlite_rotations_per_sec: f64,
    sqlite_p50_us: f64,
    sqlite_p99_us: f64,
    sqlite_p999_us: f64,
    sqlite_batched_rotations_per_sec: f64,
    sqlite_batch: usize,
    sqlite_bytes_per_family: f64,
    sqlite_rows: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sqlite_write_bytes_per_rotation: Option<f64>,
    ratio_vs_sqlite: f64,
    ratio_vs_sqlite_batched: f64,
}

fn failed(what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::storage("bench_failed", format!("{what}: {e}"))
}

/// Runs `rotoken bench`: on a PostgreSQL store when --store is a URL,
/// else on a redb file, once per caller count.
///
/// # Errors
///
/// A key, database or SQLite error, or a rotation that failed during the run.
pub(crate) fn run(g: &Global, a: BenchArgs) -> Result<(), CliError> {
    let durability = match g.durability {
        Some(DurabilityArg::Relaxed) => Durability::Relaxed,
        Some(DurabilityArg::Immediate) | None => Durability::Immediate,
    };
    if let rotoken_postgres::StoreLocation::Postgres(url) = g.store() {
        return postgres::run(&url, durability, &a);
    }
    if a.compare == Some(CompareArg::PostgresPeer) || a.bytes {
        return Err(CliError::refused(
            "invalid_input",
            "--compare postgres-peer and --bytes need a PostgreSQL store: --store postgres://...",
        ));
    }
    if a.compare == Some(CompareArg::Sqlite) && !cfg!(feature = "sqlite") {
        return Err(CliError::refused(
            "feature_missing",
            "this rotoken was built without the `sqlite` feature; `--compare sqlite` needs it",
        ));
    }
    for &callers in &a.concurrency {
        run_redb(g, &a, callers, durability)?;
    }
    Ok(())
}

/// The group-commit settings of `--max-batch`.
fn group_commit(a: &BenchArgs) -> GroupCommit {
    let mut group_commit = GroupCommit::default();
    if let Some(n) = a.max_batch {
        group_commit.max_batch = usize::try_from(n).unwrap_or(usize::MAX);
    }
    group_commit
}

/// `--families` as a count, and `wanted` callers capped at it (saying so).
fn families_and_callers(a: &BenchArgs, wanted: u32) -> Result<(usize, usize), CliError> {
    let families =
        usize::try_from(a.families).map_err(|_| CliError::refused("invalid_input", "--families too large"))?;
    let wanted = usize::try_from(wanted).unwrap_or(usize::MAX);
    let concurrency = wanted.min(families);
    if concurrency < wanted && !a.json {
        eprintln!("note: {families} families feed only {concurrency} callers; running {concurrency}");
    }
    Ok((families, concurrency))
}

/// One run on a redb file with `callers` callers.
fn run_redb(g: &Global, a: &BenchArgs, callers: u32, durability: Durability) -> Result<(), CliError> {
    let (families, concurrency) = families_and_callers(a, callers)?;
    let group_commit = group_commit(a);
    let duration = Duration::from_secs(a.duration);

    // Where the database lives, and its keys.
    let (_temp, path, keys) = if a.use_db {
        let path = g.store().file().map_or_else(|| g.db.clone(), Path::to_path_buf);
        (None, path, crate::commands::load_keys(&g.keys)?)
    } else {
        let dir = rotoken_bench::bench_dir().map_err(|e| failed("temporary directory", e))?;
        let path = dir.path().join("bench.redb");
        let keys = Keyring::generate().map_err(|e| failed("key generation", e))?;
        (Some(dir), path, keys)
    };

    // Populate with relaxed durability, many callers: group commit batches them.
    let started = Instant::now();
    let mut tokens = {
        let engine = Engine::open(&path, keys.clone(), workload::engine_options(Durability::Relaxed, None))?;
        let first = engine.families_count()?;
        let bar = counter_bar(a.families, "issuing families");
        let done = AtomicU64::new(0);
        let issued = with_bar(&bar, &done, false, || {
            workload::issue_families(&engine, first, families, POPULATE_THREADS, Some(&done))
        })?;
        issued.map_err(|e| failed("issuing families", e))?
    };
    let populate_secs = started.elapsed().as_secs_f64();

    // The measured run.
    let engine = Engine::open(
        &path,
        keys.clone(),
        workload::engine_options(durability, Some(group_commit)),
    )?;
    let before = engine.stats();
    let (report, written) = timed_run(
        "rotoken",
        &EngineRotator::new(&engine),
        &mut tokens,
        concurrency,
        1,
        duration,
    )?;
    let after = engine.stats();
    drop(engine);
    drop(tokens);
    let batches = after.batches.saturating_sub(before.batches);
    let operations = after.operations.saturating_sub(before.operations);

    let spin = spinner("compacting");
    let footprint = workload::compact_and_measure(&path, keys).map_err(|e| failed("compaction", e));
    spin.finish_and_clear();
    let footprint = footprint?;

    let sqlite = match a.compare {
        Some(CompareArg::Sqlite) => Some(compare_sqlite(
            path.parent().unwrap_or(Path::new(".")),
            families,
            concurrency,
            duration,
            report.rotations_per_sec(),
        )?),
        _ => None,
    };

    let answer = BenchJson {
        rotations_per_sec: round1(report.rotations_per_sec()),
        p50_us: round1(report.latency_us(0.5)),
        p99_us: round1(report.latency_us(0.99)),
        p999_us: round1(report.latency_us(0.999)),
        bytes_per_family: round1(footprint.bytes_per_family),
        rotations: report.rotations,
        duration_secs: round3(report.elapsed.as_secs_f64()),
        concurrency,
        families: footprint.families,
        durability: match durability {
            Durability::Relaxed => "none",
            _ => "immediate",
        },
        max_batch: group_commit.max_batch,
        file_bytes: footprint.file_bytes,
        populate_secs: round3(populate_secs),
        mean_batch: round1(operations as f64 / batches.max(1) as f64),
        largest_batch: after.largest_batch,
        commits_per_sec: round1(batches as f64 / report.elapsed.as_secs_f64().max(1e-9)),
        write_bytes_per_rotation: written,
        sqlite,
    };
    if a.json {
        output::print_json(&answer)
    } else {
        print_text(&answer, &path, a.use_db);
        Ok(())
    }
}

/// Runs the workload on `rotator` for `duration` behind a progress bar.
fn timed_run<R: workload::Rotator>(
    label: &str,
    rotator: &R,
    tokens: &mut [R::Token],
    concurrency: usize,
    batch: usize,
    duration: Duration,
) -> Result<(Report, Option<f64>), CliError> {
    let bar = ProgressBar::new(duration.as_secs()).with_style(
        ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    let done = AtomicU64::new(0);
    let w = Workload {
        concurrency,
        batch,
        stop: workload::Stop::After(duration),
    };
    let before = workload::process_write_bytes();
    let report = with_bar(&bar, &done, true, || workload::run(rotator, tokens, &w, Some(&done)))?;
    let report = report.map_err(|e| failed(&format!("{label} run"), e))?;
    let written = before
        .zip(workload::process_write_bytes())
        .map(|(b, a)| round1(a.saturating_sub(b) as f64 / report.rotations.max(1) as f64));
    Ok((report, written))
}

/// Runs `work` on a scoped thread while the bar follows `done` (a count,
/// or with `timed` the elapsed seconds and the rate so far).
fn with_bar<T: Send>(
    bar: &ProgressBar,
    done: &AtomicU64,
    timed: bool,
    work: impl FnOnce() -> T + Send,
) -> Result<T, CliError> {
    let started = Instant::now();
    let result = std::thread::scope(|s| {
        let handle = s.spawn(work);
        while !handle.is_finished() {
            let n = done.load(Ordering::Relaxed);
            if timed {
                let secs = started.elapsed().as_secs_f64();
                bar.set_position(secs as u64);
                bar.set_message(format!("{n} rotations, {:.0}/s", n as f64 / secs.max(1e-9)));
            } else {
                bar.set_position(n);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        handle.join()
    });
    bar.finish_and_clear();
    result.map_err(|_| CliError::storage("bench_failed", "a benchmark thread panicked"))
}

fn counter_bar(len: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len).with_style(
        ProgressStyle::with_template("{prefix:>24} [{bar:30}] {human_pos}/{human_len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

fn spinner(label: &str) -> ProgressBar {
    let s = ProgressBar::new_spinner();
    s.set_message(label.to_owned());
    s.enable_steady_tick(Duration::from_millis(120));
    s
}

/// `--compare sqlite`: the same families, callers and duration over the
/// SQLite design, one rotation per transaction and then 100 per transaction.
#[cfg(feature = "sqlite")]
fn compare_sqlite(
    near: &Path,
    families: usize,
    concurrency: usize,
    duration: Duration,
    engine_rate: f64,
) -> Result<SqliteJson, CliError> {
    use rotoken_bench::sqlite_design::{SqliteDesign, SqliteRotator, Synchronous};

    let dir = tempfile::tempdir_in(near).map_err(|e| failed("temporary directory for SQLite", e))?;
    let design = SqliteDesign::open(dir.path().join("peer.sqlite"), Synchronous::Full)
        .map_err(|e| failed("opening SQLite", e))?;
    let spin = spinner("sqlite: issuing families");
    let tokens = design.issue_many(families, 10_000, |i| {
        let g = workload::grant(i as u64);
        let subject = g.map(|g| g.subject).unwrap_or_default();
        (subject, workload::CLIENT.to_owned(), workload::SCOPE.to_owned())
    });
    spin.finish_and_clear();
    let mut tokens = tokens.map_err(|e| failed("issuing SQLite families", e))?;
    let rotator = SqliteRotator {
        design: &design,
        client_id: workload::CLIENT,
    };
    let (single, written) = timed_run("sqlite (1 per txn)", &rotator, &mut tokens, concurrency, 1, duration)?;
    let batch = SQLITE_BATCH.min(families / concurrency).max(1);
    let (batched, _) = timed_run(
        "sqlite (100 per txn)",
        &rotator,
        &mut tokens,
        concurrency,
        batch,
        duration,
    )?;
    let spin = spinner("sqlite: vacuum");
    let measured = design
        .compact_and_size()
        .and_then(|bytes| Ok((bytes, design.live_families()?, design.rows()?)));
    spin.finish_and_clear();
    let (bytes, live, rows) = measured.map_err(|e| failed("measuring SQLite", e))?;
    let ratio = |other: f64| if other > 0.0 { round2(engine_rate / other) } else { 0.0 };
    Ok(SqliteJson {
        sqlite_rotations_per_sec: round1(single.rotations_per_sec()),
        sqlite_p50_us: round1(single.latency_us(0.5)),
        sqlite_p99_us: round1(single.latency_us(0.99)),
        sqlite_p999_us: round1(single.latency_us(0.999)),
        sqlite_batched_rotations_per_sec: round1(batched.rotations_per_sec()),
        sqlite_batch: batch,
        sqlite_bytes_per_family: round1(bytes as f64 / live.max(1) as f64),
        sqlite_rows: rows,
        sqlite_write_bytes_per_rotation: written,
        ratio_vs_sqlite: ratio(single.rotations_per_sec()),
        ratio_vs_sqlite_batched: ratio(batched.rotations_per_sec()),
    })
}

#[cfg(not(feature = "sqlite"))]
fn compare_sqlite(_: &Path, _: usize, _: usize, _: Duration, _: f64) -> Result<SqliteJson, CliError> {
    Err(CliError::refused(
        "feature_missing",
        "this rotoken was built without the `sqlite` feature; `--compare sqlite` needs it",
    ))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn print_text(a: &BenchJson, path: &Path, kept: bool) {
    let db = if kept {
        path.display().to_string()
    } else {
        "a temporary database".to_owned()
    };
    println!(
        "rotoken bench: {} callers, {} families, {:.1} s, durability {}, group commit up to {} per commit, on {db}",
        a.concurrency, a.families, a.duration_secs, a.durability, a.max_batch
    );
    println!(
        "  rotations/s      {:>12.0}   ({} rotations)",
        a.rotations_per_sec, a.rotations
    );
    println!(
        "  latency          p50 {:.0} µs   p99 {:.0} µs   p999 {:.0} µs",
        a.p50_us, a.p99_us, a.p999_us
    );
    println!(
        "  bytes/family     {:>12.1}   ({} bytes after compaction)",
        a.bytes_per_family, a.file_bytes
    );
    println!("  populate         {:>12.1} s (relaxed durability)", a.populate_secs);
    println!(
        "  group commit     {:>12.1} rotations per commit on average ({:.0} commits/s, largest {})",
        a.mean_batch, a.commits_per_sec, a.largest_batch
    );
    if let Some(w) = a.write_bytes_per_rotation {
        println!("  written/rotation {w:>12.0} bytes (storage writes during the run)");
    }
    if let Some(s) = &a.sqlite {
        println!("SQLite, one row per token (WAL, synchronous=FULL), same callers and families:");
        println!(
            "  1 rotation/txn   {:>12.0}/s   p50 {:.0} µs  p99 {:.0} µs   rotoken is {:.2}x",
            s.sqlite_rotations_per_sec, s.sqlite_p50_us, s.sqlite_p99_us, s.ratio_vs_sqlite
        );
        println!(
            "  {:<16} {:>12.0}/s   rotoken is {:.2}x",
            format!("{} rotations/txn", s.sqlite_batch),
            s.sqlite_batched_rotations_per_sec,
            s.ratio_vs_sqlite_batched
        );
        println!(
            "  bytes/family     {:>12.1}   ({} rows for {} families, after VACUUM)",
            s.sqlite_bytes_per_family, s.sqlite_rows, a.families
        );
    }
}
