//! `rotoken bench --store postgres://...`: the rotation workload against
//! rotoken's PostgreSQL store and, with `--compare postgres-peer`, the
//! peers' one-row-per-token design on the same server in the same run;
//! `--bytes` measures bytes per family after some rotations instead.
//!
//! Each design runs in a schema of its own, made for the run and dropped
//! after it (`rotoken_bench::postgres_scratch`): nothing else in the
//! database is read, written or vacuumed. Durable runs commit with the
//! server's `synchronous_commit`, which is printed beside the figures.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use rotoken::Durability;
use rotoken_bench::postgres_runs::{self, BytesPerFamily, PeerOnPostgres, PgDesign, RotokenOnPostgres};
use rotoken_bench::workload::{EngineRotator, Report};
use rotoken_postgres::tokio_postgres::Config;
use serde::Serialize;

use super::{
    BenchArgs, CompareArg, counter_bar, failed, families_and_callers, group_commit, round1, round2, round3, spinner,
    timed_run, with_bar,
};
use crate::output::{self, CliError};

/// One design's figures in a throughput run.
#[derive(Debug, Serialize)]
struct RunJson {
    rotations_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    rotations: u64,
    duration_secs: f64,
}

impl From<&Report> for RunJson {
    fn from(r: &Report) -> Self {
        Self {
            rotations_per_sec: round1(r.rotations_per_sec()),
            p50_us: round1(r.latency_us(0.5)),
            p99_us: round1(r.latency_us(0.99)),
            p999_us: round1(r.latency_us(0.999)),
            rotations: r.rotations,
            duration_secs: round3(r.elapsed.as_secs_f64()),
        }
    }
}

/// A throughput run, as printed with `--json` (one line per caller count).
#[derive(Debug, Serialize)]
struct PgBenchJson {
    store: &'static str,
    concurrency: usize,
    families: usize,
    durability: &'static str,
    /// The server's `synchronous_commit` (durable runs need `on`).
    synchronous_commit: String,
    max_batch: usize,
    rotoken: RunJson,
    /// Rotations per write transaction (group commit's batch size).
    mean_batch: f64,
    largest_batch: u64,
    /// Batches run again after a serialization failure or deadlock.
    conflicts_retried: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    postgres_peer: Option<RunJson>,
    /// rotoken's rotations per second over the peer design's.
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_vs_postgres_peer: Option<f64>,
}

/// One design's bytes per family.
#[derive(Debug, Serialize)]
struct BytesJson {
    bytes_per_family: f64,
    /// Tables, TOAST and indexes after `VACUUM FULL`.
    total_bytes: u64,
    /// The same for the empty tables (subtracted before dividing).
    empty_bytes: u64,
}

impl From<BytesPerFamily> for BytesJson {
    fn from(b: BytesPerFamily) -> Self {
        Self {
            bytes_per_family: round1(b.per_family),
            total_bytes: b.total,
            empty_bytes: b.empty,
        }
    }
}

/// A `--bytes` measure, as printed with `--json` (one line per rotation count).
#[derive(Debug, Serialize)]
struct PgBytesJson {
    store: &'static str,
    families: usize,
    rotations: u64,
    rotoken: BytesJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    postgres_peer: Option<BytesJson>,
}

/// Runs the PostgreSQL benchmark on the server of `url`.
///
/// # Errors
///
/// A bad URL or option, a connection or schema error, or a failed rotation.
pub(super) fn run(url: &str, durability: Durability, a: &BenchArgs) -> Result<(), CliError> {
    if a.compare == Some(CompareArg::Sqlite) {
        return Err(CliError::refused(
            "invalid_input",
            "--compare sqlite runs beside the redb store; with a PostgreSQL store, use --compare postgres-peer",
        ));
    }
    if a.use_db {
        return Err(CliError::refused(
            "invalid_input",
            "--use-db is for a redb file; a PostgreSQL run makes (and drops) a schema of its own",
        ));
    }
    let base: Config = url
        .parse()
        .map_err(|e| CliError::refused("invalid_input", format!("--store: {e}")))?;
    let peer = a.compare == Some(CompareArg::PostgresPeer);
    if a.bytes {
        let families =
            usize::try_from(a.families).map_err(|_| CliError::refused("invalid_input", "--families too large"))?;
        for &rotations in &a.rotations {
            bytes(&base, families, rotations, peer, a.json)?;
        }
        return Ok(());
    }
    for &callers in &a.concurrency {
        throughput(&base, a, callers, durability, peer)?;
    }
    Ok(())
}

/// One throughput run with `callers` callers: rotoken, then the peer design.
fn throughput(base: &Config, a: &BenchArgs, callers: u32, durability: Durability, peer: bool) -> Result<(), CliError> {
    let (families, concurrency) = families_and_callers(a, callers)?;
    let group_commit = group_commit(a);
    let duration = Duration::from_secs(a.duration);

    let bar = counter_bar(a.families, "issuing families");
    let done = AtomicU64::new(0);
    let populated = with_bar(&bar, &done, false, || {
        RotokenOnPostgres::populate(base, families, durability, Some(group_commit), Some(&done))
    })?;
    let (on, mut tokens) = populated.map_err(|e| failed("setting up rotoken's PostgreSQL store", e))?;
    let synchronous_commit = on
        .scratch()
        .setting("synchronous_commit")
        .map_err(|e| failed("reading synchronous_commit", e))?;
    let before = on.engine().stats();
    let (report, _) = timed_run(
        "rotoken (postgres)",
        &EngineRotator::new(on.engine()),
        &mut tokens,
        concurrency,
        1,
        duration,
    )?;
    let after = on.engine().stats();
    drop(tokens);
    drop(on);
    let batches = after.batches.saturating_sub(before.batches);
    let operations = after.operations.saturating_sub(before.operations);

    let peer_report = if peer {
        let spin = spinner("postgres-peer: issuing families");
        let populated = PeerOnPostgres::populate(base, families, concurrency, durability == Durability::Immediate);
        spin.finish_and_clear();
        let (on, mut tokens) = populated.map_err(|e| failed("setting up the peer design", e))?;
        let (r, _) = timed_run("postgres-peer", &on.rotator(), &mut tokens, concurrency, 1, duration)?;
        Some(r)
    } else {
        None
    };

    let answer = PgBenchJson {
        store: "postgres",
        concurrency,
        families,
        durability: match durability {
            Durability::Relaxed => "none",
            _ => "immediate",
        },
        synchronous_commit,
        max_batch: group_commit.max_batch,
        rotoken: RunJson::from(&report),
        mean_batch: round1(operations as f64 / batches.max(1) as f64),
        largest_batch: after.largest_batch,
        conflicts_retried: after.conflicts_retried.saturating_sub(before.conflicts_retried),
        postgres_peer: peer_report.as_ref().map(RunJson::from),
        ratio_vs_postgres_peer: peer_report.as_ref().map(|p| {
            if p.rotations_per_sec() > 0.0 {
                round2(report.rotations_per_sec() / p.rotations_per_sec())
            } else {
                0.0
            }
        }),
    };
    if a.json {
        output::print_json(&answer)
    } else {
        print_run(&answer);
        Ok(())
    }
}

/// `--bytes` for one rotation count.
fn bytes(base: &Config, families: usize, rotations: u64, peer: bool, json: bool) -> Result<(), CliError> {
    let measure = |design: PgDesign| {
        let spin = spinner(&format!(
            "{}: {families} families, {rotations} rotations each",
            design.as_str()
        ));
        let b = postgres_runs::bytes_per_family(base, design, families, rotations);
        spin.finish_and_clear();
        b.map(BytesJson::from)
            .map_err(|e| failed(&format!("measuring {}", design.as_str()), e))
    };
    let answer = PgBytesJson {
        store: "postgres",
        families,
        rotations,
        rotoken: measure(PgDesign::Rotoken)?,
        postgres_peer: if peer { Some(measure(PgDesign::Peer)?) } else { None },
    };
    if json {
        return output::print_json(&answer);
    }
    let line = |name: &str, b: &BytesJson| {
        println!(
            "  {name:<14} {:>10.1} bytes/family   ({} bytes, {} empty)",
            b.bytes_per_family, b.total_bytes, b.empty_bytes
        );
    };
    println!(
        "PostgreSQL, {families} families rotated {rotations} times each, after VACUUM FULL (tables + TOAST + indexes):"
    );
    line("rotoken", &answer.rotoken);
    if let Some(p) = &answer.postgres_peer {
        line("postgres-peer", p);
    }
    Ok(())
}

fn print_run(a: &PgBenchJson) {
    println!(
        "rotoken bench on PostgreSQL: {} callers, {} families, durability {} (synchronous_commit = {}), group commit up to {} per commit",
        a.concurrency, a.families, a.durability, a.synchronous_commit, a.max_batch
    );
    let line = |name: &str, r: &RunJson| {
        println!(
            "  {name:<14} {:>10.0} rotations/s   p50 {:.0} µs  p99 {:.0} µs  p999 {:.0} µs   ({} rotations)",
            r.rotations_per_sec, r.p50_us, r.p99_us, r.p999_us, r.rotations
        );
    };
    line("rotoken", &a.rotoken);
    println!(
        "  {:<14} {:>10.1} rotations per commit on average (largest {}, {} conflicts retried)",
        "", a.mean_batch, a.largest_batch, a.conflicts_retried
    );
    if let (Some(p), Some(ratio)) = (&a.postgres_peer, a.ratio_vs_postgres_peer) {
        line("postgres-peer", p);
        println!("  rotoken is {ratio:.2}x the peer design (one row per token, one transaction per rotation)");
    }
    if a.durability == "immediate" && a.synchronous_commit != "on" {
        println!(
            "  note: the server's synchronous_commit is {}, so no commit here waited for its WAL flush",
            a.synchronous_commit
        );
    }
}
