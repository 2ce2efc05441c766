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
//!    fresh database; rotoken and the peer alternate. For reference, the
//!    default store (a redb file in `$ROTOKEN_BENCH_DIR`, durable) runs the
//!    same workload after them.
//! 2. **Bytes per family**: `FAMILIES` families rotated 0, 10 and 100
//!    times each (relaxed durability: sizes do not depend on it), then
//!    `VACUUM FULL` and the main forks of the tables, TOAST and indexes
//!    (`rotoken_postgres::testing::TestDb::compacted_bytes`), minus the
//!    same measure of the empty schema, divided by `FAMILIES`.
//!
//! The server is `ROTOKEN_TEST_POSTGRES_URL` if set, else a throwaway
//! cluster of the installed binaries in `$TMPDIR` (never a tmpfs for
//! durable figures). Prints a table and one JSON line per figure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rotoken::{Durability, Engine, Keyring};
use rotoken_bench::postgres_peer::{PeerDesign, PeerRotator};
use rotoken_bench::workload::{self, BoxError, CLIENT, EngineRotator, Report, SCOPE, Stop, Workload};
use rotoken_postgres::testing::{self, TestDb};
use rotoken_postgres::{PgOptions, PostgresStore};

const CALLERS: [usize; 3] = [1, 16, 64];
const ROTATIONS: [u64; 3] = [0, 10, 100];
/// Families per caller in the throughput runs.
const FAMILIES_PER_CALLER: usize = 8;

fn database() -> Result<TestDb, BoxError> {
    testing::database().ok_or_else(|| "no PostgreSQL: set ROTOKEN_TEST_POSTGRES_URL or install it".into())
}

fn engine(db: &TestDb, durability: Durability) -> Result<Engine, BoxError> {
    let store = PostgresStore::connect_with(db.config().clone(), PgOptions::default())?;
    Ok(Engine::with_store(
        store,
        Keyring::generate()?,
        workload::engine_options(durability, None),
    )?)
}

fn peer_grant(i: usize) -> (String, String, String) {
    let g = workload::grant(i as u64).expect("the benchmark grant is valid");
    (g.subject, CLIENT.to_owned(), SCOPE.to_owned())
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

fn rotoken_throughput(callers: usize, secs: u64) -> Result<Report, BoxError> {
    let db = database()?;
    let engine = engine(&db, Durability::Immediate)?;
    let mut tokens = workload::issue_families(&engine, 0, callers * FAMILIES_PER_CALLER, 16, None)?;
    let r = workload::run(
        &EngineRotator::new(&engine),
        &mut tokens,
        &Workload::for_duration(callers, Duration::from_secs(secs)),
        None,
    )?;
    let s = engine.stats();
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

fn peer_throughput(callers: usize, secs: u64) -> Result<Report, BoxError> {
    let db = database()?;
    let design = PeerDesign::open(db.config().clone(), callers, true)?;
    let mut tokens = design.issue_many(callers * FAMILIES_PER_CALLER, 1_000, peer_grant)?;
    workload::run(
        &PeerRotator {
            design: &design,
            client_id: CLIENT,
        },
        &mut tokens,
        &Workload::for_duration(callers, Duration::from_secs(secs)),
        None,
    )
}

/// Compacted bytes of `pattern`'s tables with `families` families rotated
/// `rotations` times each, and of the empty schema.
fn rotoken_bytes(families: usize, rotations: u64) -> Result<(u64, u64), BoxError> {
    let db = database()?;
    let e = engine(&db, Durability::Relaxed)?;
    let empty = db.compacted_bytes("rotoken\\_%")?;
    let mut tokens = workload::issue_families(&e, 0, families, 16, None)?;
    rotate_each(&EngineRotator::new(&e), &mut tokens, rotations)?;
    drop(e);
    Ok((db.compacted_bytes("rotoken\\_%")?, empty))
}

fn peer_bytes(families: usize, rotations: u64) -> Result<(u64, u64), BoxError> {
    let db = database()?;
    let design = PeerDesign::open(db.config().clone(), 16, false)?;
    let empty = db.compacted_bytes("peer\\_%")?;
    let mut tokens = design.issue_many(families, 1_000, peer_grant)?;
    rotate_each(
        &PeerRotator {
            design: &design,
            client_id: CLIENT,
        },
        &mut tokens,
        rotations,
    )?;
    drop(design);
    Ok((db.compacted_bytes("peer\\_%")?, empty))
}

/// Rotates every token `rotations` times (16 callers, each cycling its share).
fn rotate_each<R: workload::Rotator>(r: &R, tokens: &mut [R::Token], rotations: u64) -> Result<(), BoxError> {
    if rotations == 0 {
        return Ok(());
    }
    let w = Workload {
        concurrency: 16,
        batch: 1,
        stop: Stop::Rotations(tokens.len() as u64 * rotations),
    };
    workload::run(r, tokens, &w, None)?;
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let families: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1024);
    if !families.is_multiple_of(16) {
        return Err("FAMILIES must be a multiple of 16 (16 callers rotate equal shares)".into());
    }
    println!("load average before: {}", loadavg());
    println!("== rotations per second, durable (synchronous_commit = on), {secs} s each");
    for callers in CALLERS {
        let r = rotoken_throughput(callers, secs)?;
        print("rotoken", callers, &r);
        let p = peer_throughput(callers, secs)?;
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
        for (design, (total, empty)) in [
            ("rotoken", rotoken_bytes(families, rotations)?),
            ("peer", peer_bytes(families, rotations)?),
        ] {
            let per = total.saturating_sub(empty) as f64 / families as f64;
            println!(
                "{design:<8} after {rotations:>3} rotations: {per:>8.0} bytes/family  ({total} bytes, empty schema {empty})"
            );
            println!(
                "{{\"figure\":\"bytes_per_family\",\"design\":\"{design}\",\"rotations\":{rotations},\"families\":{families},\"bytes_per_family\":{per:.0},\"total\":{total},\"empty\":{empty}}}"
            );
        }
    }
    println!("load average at the end: {}", loadavg());
    Ok(())
}
