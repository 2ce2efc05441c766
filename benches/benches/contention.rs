//! Rotation under contention: N concurrent callers on one engine, durable,
//! with group commit, and in the same run the baselines the targets are
//! stated against (see `benches/README.md` and `docs/benchmarks.md`):
//!
//! - `contention/rotoken_durable/{1,4,16,64,256}`: the engine, durable, group commit (core defaults);
//! - `contention/rotoken_durable_no_group_commit/{1,64}`: the same with `max_batch = 1`;
//! - `contention/rotoken_relaxed/1`: the engine's own non-durable one-caller figure;
//! - `contention/sqlite_full/{1,64}`: the one-row-per-token SQLite design
//!   (`rotoken_bench::sqlite_design`), WAL, `synchronous=FULL`, one rotation per transaction;
//! - `contention/sqlite_full_batch100/64`: the same handed 100 rotations per transaction.
//!
//! One iteration is one rotation: criterion's `iter_custom` asks for a
//! number of rotations, the shared workload driver spreads them over the
//! callers and the wall time of the whole run is reported.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rotoken::{Durability, Engine, GroupCommit, Keyring};
use rotoken_bench::sqlite_design::{SqliteDesign, SqliteRotator, Synchronous};
use rotoken_bench::workload::{self, EngineRotator, Rotator, Stop, Workload};

/// Families every run rotates (enough for 64 callers with batches of 100).
const FAMILIES: usize = 8_192;
const CALLERS: [usize; 5] = [1, 4, 16, 64, 256];

/// One benchmark: `iters` rotations spread over `callers` threads, `batch` per call.
fn bench<R: Rotator>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    rotator: &R,
    tokens: &mut [R::Token],
    callers: usize,
    batch: usize,
) {
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let w = Workload {
                concurrency: callers,
                batch,
                stop: Stop::Rotations(iters),
            };
            workload::run(rotator, tokens, &w, None).unwrap().elapsed
        });
    });
}

/// An engine over a fresh file, populated with [`FAMILIES`] families.
fn engine(
    dir: &tempfile::TempDir,
    durability: Durability,
    group_commit: GroupCommit,
) -> (Engine, Vec<rotoken::RefreshToken>) {
    let path = dir.path().join("tokens.redb");
    let keys = Keyring::generate().unwrap();
    let tokens = {
        let e = Engine::open(&path, keys.clone(), workload::engine_options(Durability::Relaxed, None)).unwrap();
        workload::issue_families(&e, 0, FAMILIES, 16, None).unwrap()
    };
    let e = Engine::open(&path, keys, workload::engine_options(durability, Some(group_commit))).unwrap();
    (e, tokens)
}

/// Group commit off: one commit per rotation. (`GroupCommit` is
/// non-exhaustive, so no struct-update syntax outside the core.)
#[allow(clippy::field_reassign_with_default)]
fn no_group_commit() -> GroupCommit {
    let mut g = GroupCommit::default();
    g.max_batch = 1;
    g
}

fn contention(c: &mut Criterion) {
    let mut group = c.benchmark_group("contention");
    group
        .throughput(Throughput::Elements(1))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));

    {
        let dir = rotoken_bench::bench_dir().unwrap();
        let (engine, mut tokens) = engine(&dir, Durability::Immediate, GroupCommit::default());
        let rotator = EngineRotator::new(&engine);
        for callers in CALLERS {
            let id = BenchmarkId::new("rotoken_durable", callers);
            bench(&mut group, id, &rotator, &mut tokens, callers, 1);
        }
    }
    {
        let off = no_group_commit();
        let dir = rotoken_bench::bench_dir().unwrap();
        let (engine, mut tokens) = engine(&dir, Durability::Immediate, off);
        let rotator = EngineRotator::new(&engine);
        for callers in [1, 64] {
            let id = BenchmarkId::new("rotoken_durable_no_group_commit", callers);
            bench(&mut group, id, &rotator, &mut tokens, callers, 1);
        }
    }
    {
        let dir = rotoken_bench::bench_dir().unwrap();
        let (engine, mut tokens) = engine(&dir, Durability::Relaxed, GroupCommit::default());
        let rotator = EngineRotator::new(&engine);
        bench(
            &mut group,
            BenchmarkId::new("rotoken_relaxed", 1),
            &rotator,
            &mut tokens,
            1,
            1,
        );
    }
    {
        let dir = rotoken_bench::bench_dir().unwrap();
        let design = SqliteDesign::open(dir.path().join("peer.sqlite"), Synchronous::Full).unwrap();
        let mut tokens = design
            .issue_many(FAMILIES, 10_000, |i| {
                let subject = workload::grant(i as u64).unwrap().subject;
                (subject, workload::CLIENT.to_owned(), workload::SCOPE.to_owned())
            })
            .unwrap();
        let rotator = SqliteRotator {
            design: &design,
            client_id: workload::CLIENT,
        };
        for callers in [1, 64] {
            let id = BenchmarkId::new("sqlite_full", callers);
            bench(&mut group, id, &rotator, &mut tokens, callers, 1);
        }
        let id = BenchmarkId::new("sqlite_full_batch100", 64);
        bench(&mut group, id, &rotator, &mut tokens, 64, 100);
    }
    group.finish();
}

criterion_group!(benches, contention);
criterion_main!(benches);
