//! redb storage backends for fault tests: a shared in-memory image, a
//! power-loss simulator with live and durable images, and a countdown fault
//! injector (after redb's `tests/crash_consistency.rs` and
//! `fuzz/fuzz_targets/fuzz_redb.rs`).
//!
//! All three are cheap to clone: clones share the same storage, so a test
//! can hand one clone to an [`rotoken::Engine`], drop the engine, and
//! reopen the same bytes with another clone (a reopen, not a crash).

use std::io::{Error, ErrorKind};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redb::StorageBackend;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn to_usize(v: u64) -> Result<usize, Error> {
    usize::try_from(v).map_err(|_| Error::new(ErrorKind::InvalidInput, "offset out of range"))
}

fn read_from(image: &[u8], offset: u64, out: &mut [u8]) -> Result<(), Error> {
    let start = to_usize(offset)?;
    let end = start
        .checked_add(out.len())
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "read past the end"))?;
    match image.get(start..end) {
        Some(src) => {
            out.copy_from_slice(src);
            Ok(())
        }
        None => Err(Error::from(ErrorKind::UnexpectedEof)),
    }
}

fn write_into(image: &mut Vec<u8>, offset: u64, data: &[u8]) -> Result<(), Error> {
    let start = to_usize(offset)?;
    let end = start
        .checked_add(data.len())
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "write past the end"))?;
    if end > image.len() {
        image.resize(end, 0);
    }
    image[start..end].copy_from_slice(data);
    Ok(())
}

/// A byte image in memory, shared by every clone.
#[derive(Debug, Clone, Default)]
pub struct SharedMemory(Arc<Mutex<Vec<u8>>>);

impl SharedMemory {
    /// An empty image (redb creates a database in it).
    pub fn new() -> Self {
        Self::default()
    }

    /// An image holding `bytes` (for example a file read from disk, or a crash image).
    pub fn from_image(bytes: Vec<u8>) -> Self {
        Self(Arc::new(Mutex::new(bytes)))
    }

    /// A copy of the current bytes.
    pub fn image(&self) -> Vec<u8> {
        lock(&self.0).clone()
    }
}

impl StorageBackend for SharedMemory {
    fn len(&self) -> Result<u64, Error> {
        Ok(lock(&self.0).len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), Error> {
        read_from(&lock(&self.0), offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), Error> {
        lock(&self.0).resize(to_usize(len)?, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        write_into(&mut lock(&self.0), offset, data)
    }
}

/// One write not yet made durable by a sync.
#[derive(Debug, Clone)]
pub enum Pending {
    /// `write(offset, data)`.
    Write(u64, Vec<u8>),
    /// `set_len(len)`.
    SetLen(u64),
}

impl Pending {
    fn apply(&self, image: &mut Vec<u8>) {
        match self {
            // Offsets and lengths were checked when the live image took them.
            Self::Write(offset, data) => {
                let _ = write_into(image, *offset, data);
            }
            Self::SetLen(len) => image.resize(usize::try_from(*len).unwrap_or(image.len()), 0),
        }
    }
}

/// What the disk held when sync number `k` was called: the durable image
/// left by sync `k - 1`, and every write issued since, any of which may or
/// may not have reached the platter when the power went.
#[derive(Debug, Clone)]
pub struct CrashPoint {
    /// The sync index (1-based) during which the power failed.
    pub sync: u64,
    /// The image made durable by the previous sync.
    pub durable: Vec<u8>,
    /// Writes and length changes issued since, in order.
    pub pending: Vec<Pending>,
}

/// Which of the pending writes a simulated crash keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Survivors {
    /// None: the durable image alone.
    None,
    /// All of them (the sync itself was lost, not the writes).
    All,
    /// Only writes to the header (offset 0), as in redb's crash test: the
    /// header reached the disk, the pages it points to did not.
    HeaderOnly,
    /// Each pending write independently, with probability one half, chosen
    /// by the given seed.
    Random(u64),
}

impl CrashPoint {
    /// The bytes a reboot would find.
    pub fn image(&self, survivors: Survivors) -> Vec<u8> {
        let mut image = self.durable.clone();
        let mut rng = crate::rng::Rng::new(match survivors {
            Survivors::Random(seed) => seed,
            _ => 0,
        });
        for p in &self.pending {
            let keep = match survivors {
                Survivors::None => false,
                Survivors::All => true,
                Survivors::HeaderOnly => matches!(p, Pending::Write(0, _)),
                Survivors::Random(_) => rng.below(2) == 1,
            };
            if keep {
                p.apply(&mut image);
            }
        }
        image
    }
}

#[derive(Debug, Default)]
struct PowerState {
    live: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
    syncs: u64,
    capture_at: Option<u64>,
    captured: Option<CrashPoint>,
    /// While false, `sync_data` does nothing durable (a disk that lies about flushing).
    honest: bool,
}

/// A backend that keeps a live image (every write) and a durable image
/// (what the last completed `sync_data` made safe), and can capture the
/// state of the disk at any sync index to build crash images.
#[derive(Debug, Clone)]
pub struct PowerLoss(Arc<Mutex<PowerState>>);

impl Default for PowerLoss {
    fn default() -> Self {
        Self::new()
    }
}

impl PowerLoss {
    /// An empty disk whose syncs work.
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(PowerState {
            honest: true,
            ..PowerState::default()
        })))
    }

    /// A disk whose `sync_data` returns success without making anything
    /// durable: used to show that the checks notice lost acknowledged writes.
    pub fn lying() -> Self {
        Self(Arc::new(Mutex::new(PowerState::default())))
    }

    /// Captures the disk's state when sync number `k` (1-based) is called.
    pub fn capture_at(&self, k: u64) {
        lock(&self.0).capture_at = Some(k);
    }

    /// The state captured by [`PowerLoss::capture_at`], once that sync happened.
    pub fn captured(&self) -> Option<CrashPoint> {
        lock(&self.0).captured.clone()
    }

    /// How many times `sync_data` was called.
    pub fn syncs(&self) -> u64 {
        lock(&self.0).syncs
    }

    /// The durable image now (what a crash right now would leave if no pending write survived).
    pub fn durable(&self) -> Vec<u8> {
        lock(&self.0).durable.clone()
    }

    /// The live image now.
    pub fn live(&self) -> Vec<u8> {
        lock(&self.0).live.clone()
    }
}

impl StorageBackend for PowerLoss {
    fn len(&self) -> Result<u64, Error> {
        Ok(lock(&self.0).live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), Error> {
        read_from(&lock(&self.0).live, offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), Error> {
        let mut s = lock(&self.0);
        s.live.resize(to_usize(len)?, 0);
        s.pending.push(Pending::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> Result<(), Error> {
        let mut s = lock(&self.0);
        s.syncs += 1;
        if s.capture_at == Some(s.syncs) {
            s.captured = Some(CrashPoint {
                sync: s.syncs,
                durable: s.durable.clone(),
                pending: s.pending.clone(),
            });
        }
        if s.honest {
            let pending = std::mem::take(&mut s.pending);
            for p in &pending {
                p.apply(&mut s.durable);
            }
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let mut s = lock(&self.0);
        write_into(&mut s.live, offset, data)?;
        s.pending.push(Pending::Write(offset, data.to_vec()));
        Ok(())
    }
}

/// Which backend calls a [`Faulty`] backend counts and can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOn {
    /// `write` only.
    Write,
    /// `set_len` only.
    SetLen,
    /// `sync_data` only.
    Sync,
    /// Any of the three.
    Any,
}

impl FaultOn {
    /// The four choices, for loops.
    pub const ALL: [Self; 4] = [Self::Write, Self::SetLen, Self::Sync, Self::Any];

    fn counts(self, call: FaultOn) -> bool {
        self == Self::Any || self == call
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::SetLen => "set_len",
            Self::Sync => "sync",
            Self::Any => "any",
        }
    }
}

/// When and how a [`Faulty`] backend fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultPlan {
    /// Which calls are counted.
    pub on: FaultOn,
    /// The index (0-based) among counted calls of the first one to fail.
    pub at: u64,
    /// True: every counted call from `at` on fails until [`Faulty::heal`]
    /// (a full disk). False: only call `at` fails.
    pub persistent: bool,
    /// True: fail with `ENOSPC` (`StorageFull`); false: a generic I/O error.
    pub no_space: bool,
}

#[derive(Debug, Default)]
struct FaultState {
    plan: Option<FaultPlan>,
    counted: u64,
    fired: u64,
}

/// A [`SharedMemory`] image whose write, `set_len` or sync calls start failing
/// at a chosen count. A failed write changes nothing; a failed `set_len`
/// changes nothing; a failed sync has still written (like a real disk,
/// the bytes are in the live image but the caller was told it failed).
#[derive(Debug, Clone, Default)]
pub struct Faulty {
    mem: SharedMemory,
    state: Arc<Mutex<FaultState>>,
}

impl Faulty {
    /// A fault-free backend over an empty image.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fault-free backend over the given image.
    pub fn over(mem: SharedMemory) -> Self {
        Self {
            mem,
            state: Arc::default(),
        }
    }

    /// Starts counting calls from zero under `plan`.
    pub fn arm(&self, plan: FaultPlan) {
        let mut s = lock(&self.state);
        s.plan = Some(plan);
        s.counted = 0;
    }

    /// Stops failing (the disk has space again). Counting stops too.
    pub fn heal(&self) {
        lock(&self.state).plan = None;
    }

    /// Calls counted since [`Faulty::arm`].
    pub fn counted(&self) -> u64 {
        lock(&self.state).counted
    }

    /// How many calls failed so far.
    pub fn fired(&self) -> u64 {
        lock(&self.state).fired
    }

    /// The shared image.
    pub fn memory(&self) -> &SharedMemory {
        &self.mem
    }

    /// Counts one call; returns the error to fail it with, if it must fail.
    fn check(&self, call: FaultOn) -> Result<(), Error> {
        let mut s = lock(&self.state);
        let Some(plan) = s.plan else {
            return Ok(());
        };
        if !plan.on.counts(call) {
            return Ok(());
        }
        let n = s.counted;
        s.counted += 1;
        let fail = if plan.persistent { n >= plan.at } else { n == plan.at };
        if !fail {
            return Ok(());
        }
        s.fired += 1;
        Err(if plan.no_space {
            Error::new(ErrorKind::StorageFull, "injected: no space left on device")
        } else {
            Error::other(format!("injected {} failure at call {n}", call.name()))
        })
    }
}

impl StorageBackend for Faulty {
    fn len(&self) -> Result<u64, Error> {
        self.mem.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), Error> {
        self.mem.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), Error> {
        self.check(FaultOn::SetLen)?;
        self.mem.set_len(len)
    }

    fn sync_data(&self) -> Result<(), Error> {
        self.check(FaultOn::Sync)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.check(FaultOn::Write)?;
        self.mem.write(offset, data)
    }
}
