//! Rotation throughput against the number of live families, and bytes on
//! disk per family at each size.
//!
//! Sizes come from `ROTOKEN_BENCH_SCALING` (a comma-separated list of
//! family counts; default `10000,1000000`; the issue's full set is
//! `10000,1000000,10000000`, which takes a while: families are issued with
//! relaxed durability by 16 callers, so group commit packs them). For each
//! size:
//!
//! - `scaling/durable_64/{n}`: 64 callers, durable, group commit;
//! - `scaling/relaxed_1/{n}`: one caller, relaxed durability (the engine's CPU and B-tree cost);
//!
//! both rotating all `n` families in turn (so lookups land all over the
//! tree). After the runs the database is compacted and its size per family
//! is printed on standard error.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rotoken::{Durability, Engine, Keyring};
use rotoken_bench::workload::{self, EngineRotator, Stop, Workload};

fn sizes() -> Vec<usize> {
    let spec = std::env::var("ROTOKEN_BENCH_SCALING").unwrap_or_else(|_| "10000,1000000".to_owned());
    spec.split(',')
        .map(|s| {
            s.trim()
                .replace('_', "")
                .parse()
                .expect("ROTOKEN_BENCH_SCALING: family counts")
        })
        .collect()
}

fn scaling(c: &mut Criterion) {
    let mut group = c.benchmark_group("scaling");
    group
        .throughput(Throughput::Elements(1))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for n in sizes() {
        let dir = rotoken_bench::bench_dir().unwrap();
        let path = dir.path().join("tokens.redb");
        let keys = Keyring::generate().unwrap();
        let mut tokens = {
            let e = Engine::open(&path, keys.clone(), workload::engine_options(Durability::Relaxed, None)).unwrap();
            workload::issue_families(&e, 0, n, 16, None).unwrap()
        };
        for (name, durability, callers) in [
            ("durable_64", Durability::Immediate, 64),
            ("relaxed_1", Durability::Relaxed, 1),
        ] {
            let engine = Engine::open(&path, keys.clone(), workload::engine_options(durability, None)).unwrap();
            let rotator = EngineRotator::new(&engine);
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_custom(|iters| {
                    let w = Workload {
                        concurrency: callers.min(n),
                        batch: 1,
                        stop: Stop::Rotations(iters),
                    };
                    workload::run(&rotator, &mut tokens, &w, None).unwrap().elapsed
                });
            });
        }
        let f = workload::compact_and_measure(&path, keys).unwrap();
        eprintln!(
            "scaling: {n} families: {} bytes after compaction, {:.1} bytes per family",
            f.file_bytes, f.bytes_per_family
        );
    }
    group.finish();
}

criterion_group!(benches, scaling);
criterion_main!(benches);
