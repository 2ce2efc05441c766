//! Measures the on-disk cost of a family.
//!
//! `bytes_per_family [FAMILIES] [ROTATIONS]` (defaults 10,000 and 10) opens a
//! fresh database in a temporary directory, issues `FAMILIES` families with
//! realistic grants, rotates each `ROTATIONS` times with relaxed durability,
//! reopens it with immediate durability for one final durable commit,
//! compacts it, and prints one JSON object:
//!
//! - `file_bytes`: the database file size after compaction;
//! - `bytes_per_family`: `file_bytes / families`;
//! - `file_bytes_before_compact`, timings of each phase, and the mean length
//!   of a stored family record (read back with raw redb) for context.
//!
//! With a third argument `sqlite` (and the `sqlite` feature, on by default)
//! it also stores the same families in the one-row-per-token SQLite design
//! (`rotoken_bench::sqlite_design`), rotates each `ROTATIONS` times (1,000
//! rotations per transaction, `synchronous=NORMAL`: only the size matters
//! here), `VACUUM`s it and adds `sqlite_file_bytes`, `sqlite_bytes_per_family`
//! and `sqlite_rows` to the JSON object.
//!
//! Set `ROTOKEN_BENCH_DIR` to choose where the temporary directory is made.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use rotoken::{Durability, Engine, Grant, Keyring, Options, Policy, RefreshToken, RotateRequest, Scope};

const FAMILIES: TableDefinition<'_, [u8; 16], &[u8]> = TableDefinition::new("families");

const CLIENTS: [&str; 5] = [
    "web-app",
    "ios-app",
    "android-app",
    "3f9c2b1e-8d4a-4c6f-9e7b-2a1d5c8f0b34",
    "partner-portal.example.com",
];

const SCOPES: [&str; 4] = [
    "openid offline_access",
    "openid profile email offline_access",
    "openid profile email offline_access read:orders write:orders",
    "openid offline_access api:read api:write billing:read",
];

/// A small deterministic generator, so runs are comparable.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn grant(i: usize, rng: &mut SplitMix) -> Result<Grant, Box<dyn Error>> {
    // Identity-provider style subjects: "auth0|<24 hex>" or an e-mail address.
    let subject = if i.is_multiple_of(3) {
        format!("user{:06}@example.com", rng.next() % 1_000_000)
    } else {
        format!("auth0|{:016x}{:08x}", rng.next(), rng.next() as u32)
    };
    let client = CLIENTS[(rng.next() % CLIENTS.len() as u64) as usize];
    let scope = Scope::parse(SCOPES[(rng.next() % SCOPES.len() as u64) as usize])?;
    let mut grant = Grant::new(subject, client, scope);
    if i.is_multiple_of(4) {
        // A DPoP key thumbprint (43 base64url characters).
        let jkt: String = (0..43)
            .map(|_| {
                let c = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                char::from(c[(rng.next() % 64) as usize])
            })
            .collect();
        grant = grant.with_confirmation(jkt);
    }
    Ok(grant)
}

fn arg(n: usize, default: usize) -> Result<usize, Box<dyn Error>> {
    match std::env::args().nth(n) {
        Some(a) => Ok(a.replace('_', "").parse()?),
        None => Ok(default),
    }
}

fn options(durability: Durability) -> Options {
    let mut policy = Policy::default();
    policy.durability = durability;
    Options {
        policy,
        ..Options::default()
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let families = arg(1, 10_000)?;
    let rotations = arg(2, 10)?;
    let dir = match std::env::var_os("ROTOKEN_BENCH_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            std::fs::create_dir_all(&d)?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir()?,
    };
    let path = dir.path().join("tokens.redb");
    let keys = Keyring::generate()?;
    let mut rng = SplitMix(0x5eed);

    let engine = Engine::open(&path, keys.clone(), options(Durability::Relaxed))?;
    let started = Instant::now();
    let mut current: Vec<(RefreshToken, RotateRequest)> = Vec::with_capacity(families);
    for i in 0..families {
        let grant = grant(i, &mut rng)?;
        let mut request = RotateRequest::new(grant.client_id.clone());
        request.confirmation = grant.confirmation.clone();
        current.push((engine.issue(&grant)?.refresh_token, request));
    }
    let issue_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for _ in 0..rotations {
        for (token, request) in &mut current {
            *token = engine.rotate(token.expose(), request)?.refresh_token;
        }
    }
    let rotate_secs = started.elapsed().as_secs_f64();
    drop(engine);

    // Reopen durably: one durable commit (an empty gc step), then compact.
    let mut engine = Engine::open(&path, keys, options(Durability::Immediate))?;
    engine.gc(0)?;
    let before = std::fs::metadata(&path)?.len();
    let started = Instant::now();
    engine.compact()?;
    let compact_secs = started.elapsed().as_secs_f64();
    let stored = engine.families_count()?;
    drop(engine);
    let file_bytes = std::fs::metadata(&path)?.len();

    // The mean stored record (body and MAC), read with raw redb.
    let db = redb::Database::open(&path)?;
    let read = db.begin_read()?;
    let table = read.open_table(FAMILIES)?;
    let mut record_bytes = 0u64;
    for entry in table.iter()? {
        record_bytes += entry?.1.value().len() as u64;
    }
    let mean_record = record_bytes as f64 / table.len()?.max(1) as f64;
    // Where the bytes are: per table, redb's stored (keys and values),
    // metadata (per-entry offsets, page headers) and fragmented (free space
    // inside pages) bytes, per family.
    let mut tables = String::new();
    for name in read.list_tables()? {
        let stats = read.open_untyped_table(name.clone())?.stats()?;
        let per = |b: u64| b as f64 / families.max(1) as f64;
        tables.push_str(&format!(
            "{}\"{}\":{{\"stored\":{:.1},\"metadata\":{:.1},\"fragmented\":{:.1},\"leaf_pages\":{},\"height\":{}}}",
            if tables.is_empty() { "" } else { "," },
            name.name(),
            per(stats.stored_bytes()),
            per(stats.metadata_bytes()),
            per(stats.fragmented_bytes()),
            stats.leaf_pages(),
            stats.tree_height()
        ));
    }

    let per_family = file_bytes as f64 / families.max(1) as f64;
    let sqlite = if std::env::args().nth(3).as_deref() == Some("sqlite") {
        sqlite(dir.path(), families, rotations)?
    } else {
        String::new()
    };
    println!(
        "{{\"families\":{families},\"rotations_per_family\":{rotations},\"file_bytes\":{file_bytes},\
         \"bytes_per_family\":{per_family:.1},\"file_bytes_before_compact\":{before},\
         \"families_stored\":{stored},\"mean_record_bytes\":{mean_record:.1},\
         \"issue_secs\":{issue_secs:.3},\"rotate_secs\":{rotate_secs:.3},\"compact_secs\":{compact_secs:.3},\
         \"per_family_by_table\":{{{tables}}}{sqlite}}}"
    );
    Ok(())
}

/// The same families and rotations in the SQLite design; returns the extra
/// JSON fields (with a leading comma).
#[cfg(feature = "sqlite")]
fn sqlite(dir: &std::path::Path, families: usize, rotations: usize) -> Result<String, Box<dyn Error>> {
    use rotoken_bench::sqlite_design::{SqliteDesign, Synchronous};

    let design = SqliteDesign::open(dir.join("peer.sqlite"), Synchronous::Normal).map_err(|e| e.to_string())?;
    let mut rng = SplitMix(0x5eed);
    let mut grants = Vec::with_capacity(families);
    for i in 0..families {
        let g = grant(i, &mut rng)?;
        grants.push((g.subject.clone(), g.client_id.clone(), g.scope.to_string()));
    }
    let mut tokens = design
        .issue_many(families, 1_000, |i| grants[i].clone())
        .map_err(|e| e.to_string())?;
    for _ in 0..rotations {
        for (chunk, i) in tokens.chunks_mut(1_000).zip((0..).step_by(1_000)) {
            // Every family of a chunk shares its client only if the grants do:
            // rotate per client within the chunk.
            for client in CLIENTS {
                let mut mine: Vec<usize> = (0..chunk.len()).filter(|&j| grants[i + j].1 == client).collect();
                if mine.is_empty() {
                    continue;
                }
                let mut batch: Vec<_> = mine.iter().map(|&j| chunk[j].clone()).collect();
                design.rotate_all(&mut batch, client).map_err(|e| e.to_string())?;
                for (j, t) in mine.drain(..).zip(batch) {
                    chunk[j] = t;
                }
            }
        }
    }
    let bytes = design.compact_and_size().map_err(|e| e.to_string())?;
    let live = design.live_families().map_err(|e| e.to_string())?;
    let rows = design.rows().map_err(|e| e.to_string())?;
    Ok(format!(
        ",\"sqlite_file_bytes\":{bytes},\"sqlite_bytes_per_family\":{:.1},\"sqlite_rows\":{rows}",
        bytes as f64 / live.max(1) as f64
    ))
}

#[cfg(not(feature = "sqlite"))]
fn sqlite(_: &std::path::Path, _: usize, _: usize) -> Result<String, Box<dyn Error>> {
    Err("built without the `sqlite` feature".into())
}
