//! # rotoken-bench
//!
//! The benchmark suite of rotoken (criterion benchmarks in `benches/`, see
//! `benches/README.md` and `docs/benchmarks.md`) and the code they share
//! with `rotoken bench`:
//!
//! - [`workload`]: the rotation workload driver (N callers, each rotating
//!   its own families for a duration or a rotation budget, latencies in an
//!   HDR histogram), the engine as a rotator, family population and the
//!   compacted bytes-per-family measurement;
//! - `sqlite_design` (feature `sqlite`, on by default): the one-row-per-token
//!   design of the SQL-backed servers over SQLite, the comparison baseline;
//! - `postgres_peer` (feature `postgres`, on by default): the same design
//!   over PostgreSQL, the baseline of the PostgreSQL store;
//! - `postgres_runs` and `postgres_scratch` (feature `postgres`): rotoken's
//!   PostgreSQL store and the peer design set up side by side, each in a
//!   schema of its own on the same server, and their bytes per family
//!   (`rotoken bench --store postgres://...` and the `postgres_compare`
//!   binary).

pub mod workload;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod opaque_token;

#[cfg(feature = "sqlite")]
pub mod sqlite_design;

#[cfg(feature = "postgres")]
pub mod postgres_peer;

#[cfg(feature = "postgres")]
pub mod postgres_runs;

#[cfg(feature = "postgres")]
pub mod postgres_scratch;

use std::path::PathBuf;

/// A fresh temporary directory under `$ROTOKEN_BENCH_DIR` (default: the
/// system temporary directory). Durable figures measure that file system's
/// `fsync`: never point it at a tmpfs.
///
/// # Errors
///
/// The directory could not be made.
pub fn bench_dir() -> std::io::Result<tempfile::TempDir> {
    match std::env::var_os("ROTOKEN_BENCH_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            std::fs::create_dir_all(&d)?;
            tempfile::tempdir_in(d)
        }
        None => tempfile::tempdir(),
    }
}
