//! rotoken's PostgreSQL store against the peers' one-row-per-token design
//! (`rotoken_bench::postgres_peer`) on the same PostgreSQL server, in the
//! same run.
//!
//! `postgres_compare [SECONDS] [FAMILIES]` (defaults 10 and 1024):
//!
//! 1. **Rotations per second**, durable (`synchronous_commit = on`), at 1,
//!    16 and 64 callers: each caller rotates its own families' current
//!    tokens for `SECONDS`; rotoken through one engine (one "server":
//!    group commit, two round trips per batch), the peer design with one
//!    connection per caller (one transaction per rotation). Each run gets a
//!    fresh schema (`rotoken_bench::postgres_scratch`); rotoken and the peer
//!    alternate. For reference, the
//!    default store (a redb file in `$ROTOKEN_BENCH_DIR`, durable) runs the
//!    same workload after them.
//! 2. **Bytes per family**: `FAMILIES` families rotated 0, 10 and 100
//!    times each (relaxed durability: sizes do not depend on it), then
//!    `VACUUM FULL` and the main forks of the tables, TOAST and indexes
//!    (`rotoken_bench::postgres_runs::bytes_per_family`), minus the
//!    same measure of the empty schema, divided by `FAMILIES`.
//!
//! The server is `ROTOKEN_TEST_POSTGRES_URL` if set, else a throwaway
//! cluster of the installed binaries in `$TMPDIR` (never a tmpfs for
//! durable figures). Prints a table and one JSON line per figure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rotoken::{Durability, Engine, Keyring};
use rotoken_bench::postgres_runs::{self, PeerOnPostgres, PgDesign, RotokenOnPostgres};
use rotoken_bench::workload::{self, BoxError, EngineRotator, Report, Workload};
use rotoken_postgres::testing::{self, TestDb};

const CALLERS: [usize; 3] = [1, 16, 64];
const ROTATIONS: [u64; 3] = [0, 10, 100];
/// Families per caller in the throughput runs.
const FAMILIES_PER_CALLER: usize = 8;

fn database() -> Result<TestDb, BoxError> {
    testing::database().ok_or_else(|| "no PostgreSQL: set ROTOKEN_TEST_POSTGRES_URL or install it".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn print(design: &str, callers: usize, r: &Report) {
    println!(
        "{design:<8} {callers:>3} callers: {:>9.0} rotations/s  p50 {:>8.0} us  p99 {:>8.0} us  ({} rotations in {:.1} s)",
        r.rotations_per_sec(),
        r.latency_us(0.5),
        r.latency_us(0.99),
        r.rotations,
        r.elapsed.as_secs_f64()
    );
    println!(
        "{{\"figure\":\"rotations_per_sec\",\"design\":\"{design}\",\"callers\":{callers},\"per_sec\":{:.0},\"p50_us\":{:.0},\"p99_us\":{:.0}}}",
        r.rotations_per_sec(),
        r.latency_us(0.5),
        r.latency_us(0.99)
    );
}

fn rotoken_throughput(db: &TestDb, callers: usize, secs: u64) -> Result<Report, BoxError> {
    let (on, mut tokens) = RotokenOnPostgres::populate(
        db.config(),
        callers * FAMILIES_PER_CALLER,
        Durability::Immediate,
        None,
        None,
    )?;
    let r = workload::run(
        &EngineRotator::new(on.engine()),
        &mut tokens,
        &Workload::for_duration(callers, Duration::from_secs(secs)),
        None,
    )?;
    let s = on.engine().stats();
    eprintln!(
        "  rotoken: {} batches, largest {}, {} conflicts retried",
        s.batches, s.largest_batch, s.conflicts_retried
    );
    Ok(r)
}

/// The default store on the same machine, for reference: a redb file in
/// `rotoken_bench::bench_dir()`, durable.
fn redb_throughput(callers: usize, secs: u64) -> Result<Report, BoxError> {
    let dir = rotoken_bench::bench_dir()?;
    let engine = Engine::open(
        dir.path().join("tokens.redb"),
        Keyring::generate()?,
        workload::engine_options(Durability::Immediate, None),
    )?;
    let mut tokens = workload::issue_families(&engine, 0, callers * FAMILIES_PER_CALLER, 16, None)?;
    workload::run(
        &EngineRotator::new(&engine),
        &mut tokens,
        &Workload::for_duration(callers, Duration::from_secs(secs)),
        None,
    )
}

fn peer_throughput(db: &TestDb, callers: usize, secs: u64) -> Result<Report, BoxError> {
    let (on, mut tokens) = PeerOnPostgres::populate(db.config(), callers * FAMILIES_PER_CALLER, callers, true)?;
    workload::run(
        &on.rotator(),
        &mut tokens,
        &Workload::for_duration(callers, Duration::from_secs(secs)),
        None,
    )
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let families: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let db = database()?;
    println!("load average before: {}", loadavg());
    println!("== rotations per second, durable (synchronous_commit = on), {secs} s each");
    for callers in CALLERS {
        let r = rotoken_throughput(&db, callers, secs)?;
        print("rotoken", callers, &r);
        let p = peer_throughput(&db, callers, secs)?;
        print("peer", callers, &p);
        print("redb", callers, &redb_throughput(callers, secs)?);
        println!(
            "         ratio rotoken / peer at {callers}: {:.2}",
            r.rotations_per_sec() / p.rotations_per_sec().max(f64::MIN_POSITIVE)
        );
    }
    println!("load average after the throughput runs: {}", loadavg());
    println!("== bytes per family ({families} families, VACUUM FULL, tables + TOAST + indexes)");
    for rotations in ROTATIONS {
        for design in [PgDesign::Rotoken, PgDesign::Peer] {
            let b = postgres_runs::bytes_per_family(db.config(), design, families, rotations)?;
            let (name, per, total, empty) = (design.as_str(), b.per_family, b.total, b.empty);
            println!(
                "{name:<13} after {rotations:>3} rotations: {per:>8.0} bytes/family  ({total} bytes, empty schema {empty})"
            );
            println!(
                "{{\"figure\":\"bytes_per_family\",\"design\":\"{name}\",\"rotations\":{rotations},\"families\":{families},\"bytes_per_family\":{per:.0},\"total\":{total},\"empty\":{empty}}}"
            );
        }
    }
    println!("load average at the end: {}", loadavg());
    Ok(())
}
