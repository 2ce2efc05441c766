//! Criterion benchmarks of the rotation engine, with raw redb baselines
//! measured in the same run (see `benches/README.md`).
//!
//! Databases live in a temporary directory under `$ROTOKEN_BENCH_DIR`
//! (default: the system temporary directory). Durable figures measure that
//! file system's `fsync`; do not point it at a tmpfs.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use rotoken::{Durability, Engine, Grant, Keyring, Options, Policy, RotateRequest, Scope};
use tempfile::TempDir;

const CLIENT: &str = "web-app";
/// The engine's default `Policy::relaxed_flush_every`, mirrored by `raw_redb/relaxed`.
const RELAXED_FLUSH_EVERY: u64 = 1_000;

const RAW: TableDefinition<'_, [u8; 16], &[u8]> = TableDefinition::new("families");

fn bench_dir() -> TempDir {
    match std::env::var_os("ROTOKEN_BENCH_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            std::fs::create_dir_all(&d).unwrap();
            tempfile::tempdir_in(d).unwrap()
        }
        None => tempfile::tempdir().unwrap(),
    }
}

fn grant() -> Grant {
    Grant::new(
        "auth0|65f1c2d3e4a5b6c7d8e9f0a1",
        CLIENT,
        Scope::parse("openid profile email offline_access").unwrap(),
    )
}

fn engine(dir: &TempDir, durability: Durability) -> Engine {
    let mut policy = Policy::default();
    policy.durability = durability;
    // Criterion may run more than the default 1,000,000 rotations of one family.
    policy.max_generations = u32::MAX;
    let options = Options {
        policy,
        ..Options::default()
    };
    Engine::open(dir.path().join("tokens.redb"), Keyring::generate().unwrap(), options).unwrap()
}

/// The length of the family record (body and MAC) the engine stores for
/// [`grant`] after one rotation, read back with raw redb: the raw baselines
/// write a value of this size (about 250-350 bytes, depending on the grant).
fn engine_record_len() -> usize {
    let dir = bench_dir();
    {
        let engine = engine(&dir, Durability::Immediate);
        let issued = engine.issue(&grant()).unwrap();
        engine
            .rotate(issued.refresh_token.expose(), &RotateRequest::new(CLIENT))
            .unwrap();
    }
    let db = redb::Database::open(dir.path().join("tokens.redb")).unwrap();
    let read = db.begin_read().unwrap();
    let table = read.open_table(RAW).unwrap();
    let (_, value) = table.first().unwrap().unwrap();
    value.value().len()
}

/// Times exactly one `rotate` per iteration; the returned token is the next input.
fn rotate(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, durability: Durability) {
    let dir = bench_dir();
    let engine = engine(&dir, durability);
    let request = RotateRequest::new(CLIENT);
    let mut current = engine.issue(&grant()).unwrap().refresh_token;
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let rotated = engine.rotate(current.expose(), &request);
                total += start.elapsed();
                current = rotated.unwrap().refresh_token;
            }
            total
        });
    });
}

fn engine_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("rotate");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    rotate(&mut group, "durable", Durability::Immediate);
    group.sample_size(30).measurement_time(Duration::from_secs(4));
    rotate(&mut group, "relaxed", Durability::Relaxed);
    group.finish();

    let mut group = c.benchmark_group("issue");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    {
        let dir = bench_dir();
        let engine = engine(&dir, Durability::Immediate);
        let grant = grant();
        group.bench_function("durable", |b| b.iter(|| engine.issue(black_box(&grant)).unwrap()));
    }
    group.finish();

    {
        let dir = bench_dir();
        let engine = engine(&dir, Durability::Immediate);
        let issued = engine.issue(&grant()).unwrap();
        let current = engine
            .rotate(issued.refresh_token.expose(), &RotateRequest::new(CLIENT))
            .unwrap()
            .refresh_token;
        assert!(engine.introspect(current.expose()).unwrap().active);
        // Read-only: the current token stays current.
        c.bench_function("introspect", |b| {
            b.iter(|| engine.introspect(black_box(current.expose())).unwrap())
        });
    }

    let mut group = c.benchmark_group("token");
    group.throughput(Throughput::Elements(1));
    group.sample_size(30).measurement_time(Duration::from_secs(2));
    {
        let dir = bench_dir();
        let engine = engine(&dir, Durability::Relaxed);
        let text = engine.issue(&grant()).unwrap().refresh_token;
        let parsed = rotoken::token::parse(text.expose().as_bytes()).unwrap();
        group.bench_function("parse", |b| {
            b.iter(|| rotoken::token::parse(black_box(text.expose().as_bytes())).unwrap())
        });
        group.bench_function("format", |b| b.iter(|| rotoken::token::format(black_box(&parsed))));
    }
    group.finish();
}

/// The smallest raw redb write equivalent to one rotation: one write
/// transaction with two-phase commit, one `get` of a 16-byte key and one
/// overwrite of a value as long as an engine record. `durable_every` makes every n-th commit
/// `Immediate` and the others `None` (1 = all durable, 0 = none).
fn raw(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, value_len: usize, durable_every: u64) {
    let dir = bench_dir();
    let db = redb::Database::create(dir.path().join("raw.redb")).unwrap();
    let key = [7u8; 16];
    let mut value = vec![0u8; value_len];
    {
        let txn = db.begin_write().unwrap();
        txn.open_table(RAW).unwrap().insert(key, value.as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let mut n = 0u64;
    group.bench_function(name, |b| {
        b.iter(|| {
            n += 1;
            let mut txn = db.begin_write().unwrap();
            txn.set_two_phase_commit(true);
            let durable = durable_every != 0 && n.is_multiple_of(durable_every);
            if !durable {
                txn.set_durability(redb::Durability::None).unwrap();
            }
            {
                let mut table = txn.open_table(RAW).unwrap();
                let old = table.get(key).unwrap().unwrap();
                value[0] = old.value()[0].wrapping_add(1);
                drop(old);
                table.insert(key, value.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        })
    });
}

/// The batched form of [`raw`]: one write transaction that does `batch`
/// lookups and overwrites of distinct keys (as a group commit of `batch`
/// rotations does), then one commit, durable or `Durability::None`. One
/// iteration is the whole transaction; throughput is per rotation.
fn raw_batched(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, value_len: usize, batch: usize, durable: bool) {
    const KEYS: u64 = 4_096;
    let dir = bench_dir();
    let db = redb::Database::create(dir.path().join("raw.redb")).unwrap();
    let key = |i: u64| {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
        k
    };
    let mut value = vec![0u8; value_len];
    {
        let txn = db.begin_write().unwrap();
        let mut table = txn.open_table(RAW).unwrap();
        for i in 0..KEYS {
            table.insert(key(i), value.as_slice()).unwrap();
        }
        drop(table);
        txn.commit().unwrap();
    }
    let mut next = 0u64;
    group.throughput(Throughput::Elements(batch as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            let mut txn = db.begin_write().unwrap();
            txn.set_two_phase_commit(true);
            if !durable {
                txn.set_durability(redb::Durability::None).unwrap();
            }
            {
                let mut table = txn.open_table(RAW).unwrap();
                for _ in 0..batch {
                    let k = key(next % KEYS);
                    next += 1;
                    let old = table.get(k).unwrap().unwrap();
                    value[0] = old.value()[0].wrapping_add(1);
                    drop(old);
                    table.insert(k, value.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        })
    });
    group.throughput(Throughput::Elements(1));
}

/// The read side of [`raw`], a baseline for `introspect`: one read
/// transaction, one `get` of a 16-byte key, touching the value.
fn raw_read(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, value_len: usize) {
    let dir = bench_dir();
    let db = redb::Database::create(dir.path().join("raw.redb")).unwrap();
    let key = [7u8; 16];
    {
        let txn = db.begin_write().unwrap();
        txn.open_table(RAW)
            .unwrap()
            .insert(key, vec![1u8; value_len].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    group.bench_function(name, |b| {
        b.iter(|| {
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(RAW).unwrap();
            let value = table.get(black_box(key)).unwrap().unwrap();
            black_box(value.value()[0])
        })
    });
}

fn raw_redb_benches(c: &mut Criterion) {
    let value_len = engine_record_len();
    eprintln!("raw_redb: value length {value_len} bytes (one engine family record)");
    let mut group = c.benchmark_group("raw_redb");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    raw(&mut group, "durable", value_len, 1);
    group.sample_size(30).measurement_time(Duration::from_secs(4));
    raw(&mut group, "relaxed", value_len, RELAXED_FLUSH_EVERY);
    group.sample_size(30).measurement_time(Duration::from_secs(3));
    raw(&mut group, "none", value_len, 0);
    raw_read(&mut group, "read", value_len);
    // Batched: what one group commit of 256 rotations (the core's default
    // `GroupCommit::max_batch`) costs the storage engine, per rotation.
    group.sample_size(10).measurement_time(Duration::from_secs(4));
    raw_batched(&mut group, "batch256_durable", value_len, 256, true);
    raw_batched(&mut group, "batch256_none", value_len, 256, false);
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = engine_benches, raw_redb_benches
}
criterion_main!(benches);
