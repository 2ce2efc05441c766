//! The rotation workload driver, shared by the criterion benchmarks and
//! `rotoken bench`.
//!
//! A workload is `concurrency` threads, each owning a disjoint share of the
//! families and rotating them in turn (each family's current token becomes
//! its successor) until a deadline or a rotation budget is reached. Every
//! call is timed into a latency histogram. The same driver runs the engine
//! ([`EngineRotator`]) and the SQLite design (`sqlite_design::SqliteRotator`),
//! so both see exactly the same workload.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rotoken::{Durability, Engine, Grant, GroupCommit, Options, Policy, RefreshToken, RotateRequest, Scope};

/// Any error a rotator or the driver returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client every benchmark family is issued to.
pub const CLIENT: &str = "web-app";

/// The scope of every benchmark family: three scope tokens, the shape the
/// storage target ("under 512 bytes for a family with a 3-scope grant") is
/// stated for.
pub const SCOPE: &str = "openid profile offline_access";

/// Largest latency the histograms hold: one minute, in nanoseconds.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Something that rotates refresh tokens: the engine, or a baseline design.
pub trait Rotator: Sync {
    /// One family's current refresh token, as its client holds it.
    type Token: Send;

    /// Rotates every token in `tokens` (each is replaced by its successor).
    /// One call is the unit of latency: the engine rotates one token per
    /// call, a batched baseline rotates the whole slice in one transaction.
    ///
    /// # Errors
    ///
    /// Any refusal or storage error: a benchmark presents only current
    /// tokens, so every error is a failure of the run.
    fn rotate(&self, tokens: &mut [Self::Token]) -> Result<(), BoxError>;
}

/// When a workload stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this long (each thread stops at its first call that ends past it).
    After(Duration),
    /// After this many rotations in all, shared evenly among the threads
    /// (what criterion's `iter_custom` asks for).
    Rotations(u64),
}

/// The shape of one run.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Threads, each a caller rotating its own families.
    pub concurrency: usize,
    /// Tokens per [`Rotator::rotate`] call: 1 for one rotation per call, 100
    /// for a baseline handed batches of 100.
    pub batch: usize,
    /// When to stop.
    pub stop: Stop,
}

impl Workload {
    /// `concurrency` callers, one rotation per call, for `duration`.
    pub fn for_duration(concurrency: usize, duration: Duration) -> Self {
        Self {
            concurrency,
            batch: 1,
            stop: Stop::After(duration),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Rotations completed, by all threads.
    pub rotations: u64,
    /// Wall time from the moment all threads were ready to the moment the last one finished.
    pub elapsed: Duration,
    /// Latency of each call in nanoseconds; a batched call is recorded once per rotation it carried.
    pub latency_ns: Histogram<u64>,
}

impl Report {
    /// Rotations per second of wall time.
    pub fn rotations_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.rotations as f64 / secs } else { 0.0 }
    }

    /// The latency at `quantile` (0.5, 0.99, 0.999) in microseconds.
    pub fn latency_us(&self, quantile: f64) -> f64 {
        self.latency_ns.value_at_quantile(quantile) as f64 / 1_000.0
    }
}

fn histogram() -> Result<Histogram<u64>, BoxError> {
    Ok(Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)?)
}

/// Splits `items` into `parts` non-empty runs whose lengths differ by at most one.
fn split_even<T>(mut items: &mut [T], parts: usize) -> Vec<&mut [T]> {
    let (base, extra) = (items.len() / parts, items.len() % parts);
    let mut out = Vec::with_capacity(parts);
    for i in 0..parts {
        let (head, tail) = items.split_at_mut(base + usize::from(i < extra));
        out.push(head);
        items = tail;
    }
    out
}

/// Runs `workload` over `tokens` (every family's current token; each thread
/// takes a contiguous share and cycles through it). On return `tokens`
/// holds each family's new current token. `progress`, if given, is
/// increased by every rotation as it completes (for a progress bar).
///
/// # Errors
///
/// Fewer tokens than threads, a zero batch, or the first error a rotation
/// returned (the other threads then stop at their next call).
pub fn run<R: Rotator>(
    rotator: &R,
    tokens: &mut [R::Token],
    workload: &Workload,
    progress: Option<&AtomicU64>,
) -> Result<Report, BoxError> {
    let threads = workload.concurrency;
    if threads == 0 || workload.batch == 0 {
        return Err("concurrency and batch must be at least 1".into());
    }
    if tokens.len() < threads {
        return Err(format!("{} families cannot feed {threads} callers", tokens.len()).into());
    }
    let shares = split_even(tokens, threads);
    let budgets: Vec<Option<u64>> = (0..threads as u64)
        .map(|t| match workload.stop {
            Stop::After(_) => None,
            Stop::Rotations(n) => Some(n / threads as u64 + u64::from(t < n % threads as u64)),
        })
        .collect();
    let ready = Barrier::new(threads + 1);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<BoxError>> = Mutex::new(None);
    let merged = Mutex::new(histogram()?);
    let total = AtomicU64::new(0);

    let elapsed = std::thread::scope(|s| {
        for (share, budget) in shares.into_iter().zip(budgets) {
            let (ready, failed, first_error, merged, total) = (&ready, &failed, &first_error, &merged, &total);
            s.spawn(move || {
                let mut hist = match histogram() {
                    Ok(h) => h,
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        *first_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                        ready.wait();
                        return;
                    }
                };
                ready.wait();
                let deadline = match workload.stop {
                    Stop::After(d) => Some(Instant::now() + d),
                    Stop::Rotations(_) => None,
                };
                let mut done = 0u64;
                let mut next = 0usize;
                loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut n = workload.batch.min(share.len() - next);
                    if let Some(b) = budget {
                        if done >= b {
                            break;
                        }
                        n = n.min(usize::try_from(b - done).unwrap_or(usize::MAX));
                    }
                    let start = Instant::now();
                    let result = rotator.rotate(&mut share[next..next + n]);
                    let end = Instant::now();
                    if let Err(e) = result {
                        failed.store(true, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .get_or_insert(e);
                        break;
                    }
                    let ns = u64::try_from((end - start).as_nanos()).unwrap_or(u64::MAX);
                    hist.saturating_record_n(ns.max(1), n as u64);
                    done += n as u64;
                    if let Some(p) = progress {
                        p.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    next = (next + n) % share.len();
                    if deadline.is_some_and(|d| end >= d) {
                        break;
                    }
                }
                total.fetch_add(done, Ordering::Relaxed);
                let mut m = merged.lock().unwrap_or_else(PoisonError::into_inner);
                if m.add(&hist).is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
            });
        }
        ready.wait();
        let start = Instant::now();
        // The scope joins every thread before it returns; time it from here.
        start
    })
    .elapsed();

    if let Some(e) = first_error.into_inner().unwrap_or_else(PoisonError::into_inner) {
        return Err(e);
    }
    Ok(Report {
        rotations: total.into_inner(),
        elapsed,
        latency_ns: merged.into_inner().unwrap_or_else(PoisonError::into_inner),
    })
}

/// The engine as a [`Rotator`]: one [`Engine::rotate`] per token, each its
/// own call (concurrent calls share commits through group commit).
#[derive(Debug)]
pub struct EngineRotator<'a> {
    /// The engine under test.
    pub engine: &'a Engine,
    /// The request every rotation presents (client [`CLIENT`], whole scope).
    pub request: RotateRequest,
}

impl<'a> EngineRotator<'a> {
    /// Rotates as [`CLIENT`] for the whole granted scope.
    pub fn new(engine: &'a Engine) -> Self {
        Self {
            engine,
            request: RotateRequest::new(CLIENT),
        }
    }
}

impl Rotator for EngineRotator<'_> {
    type Token = RefreshToken;

    fn rotate(&self, tokens: &mut [RefreshToken]) -> Result<(), BoxError> {
        for token in tokens {
            *token = self.engine.rotate(token.expose(), &self.request)?.refresh_token;
        }
        Ok(())
    }
}

/// The grant of benchmark family `i`: an identity-provider style subject
/// (`auth0|` and 24 hexadecimal digits, unique per family), client
/// [`CLIENT`], scope [`SCOPE`], no confirmation key, no metadata.
///
/// # Errors
///
/// Never in practice ([`SCOPE`] is valid); kept fallible so no caller unwraps.
pub fn grant(i: u64) -> Result<Grant, BoxError> {
    let subject = format!("auth0|{:08x}{:016x}", i >> 32, i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    Ok(Grant::new(subject, CLIENT, Scope::parse(SCOPE)?))
}

/// Engine options for benchmarks: the given durability, the generation
/// limit raised to `u32::MAX` (so a few families can be rotated as often as
/// a long run asks), and `group_commit` (the core's default if `None`).
/// `ROTOKEN_BENCH_CACHE_MB` sets redb's page cache (redb's default, 1 GiB,
/// otherwise): at 10 million families the database is several gigabytes,
/// and a server that size would give redb a cache to match.
pub fn engine_options(durability: Durability, group_commit: Option<GroupCommit>) -> Options {
    let mut policy = Policy::default();
    policy.durability = durability;
    policy.max_generations = u32::MAX;
    let cache_size = std::env::var("ROTOKEN_BENCH_CACHE_MB")
        .ok()
        .and_then(|mb| mb.parse::<usize>().ok())
        .map(|mb| mb.saturating_mul(1 << 20));
    Options {
        policy,
        cache_size,
        group_commit: group_commit.unwrap_or_default(),
        ..Options::default()
    }
}

/// Issues families `first..first + count` ([`grant`]) from `threads`
/// concurrent callers, so group commit packs them into shared
/// transactions; open the engine with relaxed durability to populate
/// millions quickly. Returns their first tokens in order.
///
/// # Errors
///
/// The first issue error.
pub fn issue_families(
    engine: &Engine,
    first: u64,
    count: usize,
    threads: usize,
    progress: Option<&AtomicU64>,
) -> Result<Vec<RefreshToken>, BoxError> {
    let threads = threads.clamp(1, count.max(1));
    let mut slots: Vec<Option<RefreshToken>> = vec![None; count];
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<BoxError>> = Mutex::new(None);
    std::thread::scope(|s| {
        let mut offset = first;
        for share in split_even(&mut slots, threads) {
            let base = offset;
            offset += share.len() as u64;
            let (failed, first_error) = (&failed, &first_error);
            s.spawn(move || {
                for (i, slot) in share.iter_mut().enumerate() {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let issued = grant(base + i as u64).and_then(|g| Ok(engine.issue(&g)?));
                    match issued {
                        Ok(issued) => *slot = Some(issued.refresh_token),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .get_or_insert(e);
                            return;
                        }
                    }
                    if let Some(p) = progress {
                        p.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(PoisonError::into_inner) {
        return Err(e);
    }
    slots
        .into_iter()
        .map(|t| t.ok_or_else(|| BoxError::from("a family was not issued")))
        .collect()
}

/// Bytes this process has caused to be written to storage so far
/// (`write_bytes` of `/proc/self/io`); `None` where that is not available.
/// The difference around a run, divided by its rotations, is the write
/// amplification of a rotation (pages rewritten, WAL, metadata).
pub fn process_write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The file size after compaction, and what it comes to per family.
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    /// Families stored (all live in a benchmark run).
    pub families: u64,
    /// Database file size after one durable commit and `compact()`.
    pub file_bytes: u64,
    /// `file_bytes / families`.
    pub bytes_per_family: f64,
}

/// Reopens the database at `path` with immediate durability, makes one
/// durable commit (an empty gc step, so redb can free every page the run
/// left behind), compacts it and measures it. Call after dropping every
/// engine open on `path`.
///
/// # Errors
///
/// An open, gc, compaction or file-system error.
pub fn compact_and_measure(path: &std::path::Path, keys: rotoken::Keyring) -> Result<Footprint, BoxError> {
    let mut engine = Engine::open(path, keys, engine_options(Durability::Immediate, None))?;
    engine.gc(0)?;
    // redb may need more than one pass to move every page to the front.
    engine.compact()?;
    let families = engine.families_count()?;
    drop(engine);
    let file_bytes = std::fs::metadata(path)?.len();
    Ok(Footprint {
        families,
        file_bytes,
        bytes_per_family: file_bytes as f64 / families.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Counts calls and tokens; fails on demand.
    struct Counting {
        fail_at: Option<u64>,
        calls: AtomicU64,
    }

    impl Rotator for Counting {
        type Token = u64;
        fn rotate(&self, tokens: &mut [u64]) -> Result<(), BoxError> {
            let call = self.calls.fetch_add(1, Ordering::Relaxed);
            if Some(call) == self.fail_at {
                return Err("boom".into());
            }
            for t in tokens {
                *t += 1;
            }
            Ok(())
        }
    }

    #[test]
    fn split_even_covers_everything() {
        let mut v: Vec<u32> = (0..10).collect();
        let parts = split_even(&mut v, 3);
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![4, 3, 3]);
    }

    #[test]
    fn rotation_budget_is_exact_and_spread_over_families() {
        let r = Counting {
            fail_at: None,
            calls: AtomicU64::new(0),
        };
        let mut tokens = vec![0u64; 10];
        let progress = AtomicU64::new(0);
        let w = Workload {
            concurrency: 3,
            batch: 2,
            stop: Stop::Rotations(31),
        };
        let report = run(&r, &mut tokens, &w, Some(&progress)).unwrap();
        assert_eq!(report.rotations, 31);
        assert_eq!(progress.load(Ordering::Relaxed), 31);
        assert_eq!(tokens.iter().sum::<u64>(), 31);
        assert_eq!(report.latency_ns.len(), 31);
        // Each thread cycles through its own families: no family is starved.
        assert!(tokens.iter().all(|&t| t >= 2), "{tokens:?}");
    }

    #[test]
    fn duration_stop_and_errors() {
        let r = Counting {
            fail_at: None,
            calls: AtomicU64::new(0),
        };
        let mut tokens = vec![0u64; 4];
        let report = run(
            &r,
            &mut tokens,
            &Workload::for_duration(2, Duration::from_millis(20)),
            None,
        )
        .unwrap();
        assert!(report.rotations > 0 && report.rotations_per_sec() > 0.0);
        assert!(
            run(
                &r,
                &mut tokens,
                &Workload::for_duration(5, Duration::from_millis(1)),
                None
            )
            .is_err()
        );
        let failing = Counting {
            fail_at: Some(3),
            calls: AtomicU64::new(0),
        };
        let err = run(
            &failing,
            &mut tokens,
            &Workload::for_duration(2, Duration::from_secs(5)),
            None,
        );
        assert_eq!(err.unwrap_err().to_string(), "boom");
    }

    #[test]
    fn engine_workload_rotates_every_family() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let keys = rotoken::Keyring::generate().unwrap();
        let engine = Engine::open(&path, keys.clone(), engine_options(Durability::Relaxed, None)).unwrap();
        let mut tokens = issue_families(&engine, 0, 8, 3, None).unwrap();
        let before = tokens.clone();
        let w = Workload {
            concurrency: 4,
            batch: 1,
            stop: Stop::Rotations(16),
        };
        let report = run(&EngineRotator::new(&engine), &mut tokens, &w, None).unwrap();
        assert_eq!(report.rotations, 16);
        assert!(tokens.iter().zip(&before).all(|(a, b)| a != b));
        for t in &tokens {
            assert!(engine.introspect(t.expose()).unwrap().active);
        }
        drop(engine);
        let f = compact_and_measure(&path, keys).unwrap();
        assert_eq!(f.families, 8);
        assert!(f.bytes_per_family > 0.0);
    }
}
