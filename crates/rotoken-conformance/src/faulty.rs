//! A store in front of any other that fails on command the way a real one
//! does in a fault: a commit whose connection breaks after `COMMIT` was
//! sent (it committed, or it did not, and the engine cannot tell), reads
//! that fail while the database is away, and a commit held up (a frozen
//! database) until the test lets it go.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use rotoken::store::{Commit, Due, Index, IndexCheck, IndexKeys, Locked, ReadTxn, Store, WriteTxn};
use rotoken::{FamilyId, StoreError};

/// What the next commit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CommitFault {
    /// Commits as the store does.
    None = 0,
    /// Commits, then reports that the connection broke during `COMMIT`.
    CommitThenLose = 1,
    /// Does not commit, and reports that the connection broke during `COMMIT`.
    LoseBeforeCommit = 2,
}

/// The faults armed on a [`Faulty`] store, shared with the test.
#[derive(Debug, Default)]
pub struct Faults {
    next_commit: AtomicU8,
    reads_fail: AtomicBool,
    held: Mutex<bool>,
    waiting: Mutex<usize>,
    cv: Condvar,
}

impl Faults {
    /// New faults, none armed.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Arms what the next commit does (once).
    pub fn next_commit(&self, fault: CommitFault) {
        self.next_commit.store(fault as u8, Ordering::SeqCst);
    }

    /// Makes every read transaction fail (the database is away), or not.
    pub fn reads_fail(&self, fail: bool) {
        self.reads_fail.store(fail, Ordering::SeqCst);
    }

    /// Holds every commit until [`Faults::release`] (a frozen database).
    pub fn hold_commits(&self) {
        *self.held.lock().unwrap() = true;
    }

    /// Lets held commits go.
    pub fn release(&self) {
        *self.held.lock().unwrap() = false;
        self.cv.notify_all();
    }

    /// Waits until a commit is held.
    pub fn wait_for_a_held_commit(&self) {
        let mut waiting = self.waiting.lock().unwrap();
        while *waiting == 0 {
            waiting = self.cv.wait(waiting).unwrap();
        }
    }

    fn take_commit_fault(&self) -> CommitFault {
        match self.next_commit.swap(CommitFault::None as u8, Ordering::SeqCst) {
            1 => CommitFault::CommitThenLose,
            2 => CommitFault::LoseBeforeCommit,
            _ => CommitFault::None,
        }
    }

    fn wait_while_held(&self) {
        let mut held = self.held.lock().unwrap();
        if *held {
            *self.waiting.lock().unwrap() += 1;
            self.cv.notify_all();
            while *held {
                held = self.cv.wait(held).unwrap();
            }
            *self.waiting.lock().unwrap() -= 1;
        }
    }
}

/// The error a store gives when its connection broke during `COMMIT`.
#[derive(Debug, thiserror::Error)]
#[error("connection lost while waiting for the answer to COMMIT (injected)")]
pub struct LostDuringCommit;

/// The error reads give while the database is away.
#[derive(Debug, thiserror::Error)]
#[error("the database is unreachable (injected)")]
pub struct Unreachable;

/// A store that fails as [`Faults`] says, in front of `inner`.
pub struct Faulty {
    inner: Box<dyn Store>,
    faults: Arc<Faults>,
}

impl Faulty {
    /// `inner` behind `faults`.
    pub fn new(inner: Box<dyn Store>, faults: Arc<Faults>) -> Self {
        Self { inner, faults }
    }
}

impl Store for Faulty {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn begin_read(&self) -> Result<Box<dyn ReadTxn + '_>, StoreError> {
        if self.faults.reads_fail.load(Ordering::SeqCst) {
            return Err(StoreError::storage(Unreachable));
        }
        self.inner.begin_read()
    }

    fn begin_write(&self, commit: Commit) -> Result<Box<dyn WriteTxn + '_>, StoreError> {
        Ok(Box::new(FaultyWrite {
            inner: self.inner.begin_write(commit)?,
            faults: &self.faults,
        }))
    }

    fn concurrent_batches(&self) -> usize {
        self.inner.concurrent_batches()
    }
}

struct FaultyWrite<'a> {
    inner: Box<dyn WriteTxn + 'a>,
    faults: &'a Faults,
}

impl ReadTxn for FaultyWrite<'_> {
    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.meta(name)
    }

    fn family(&self, id: &FamilyId) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.family(id)
    }

    fn families_by(&self, index: Index, tag: &[u8; 16]) -> Result<Vec<FamilyId>, StoreError> {
        self.inner.families_by(index, tag)
    }

    fn events(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.events(after, limit)
    }

    fn family_count(&self) -> Result<u64, StoreError> {
        self.inner.family_count()
    }

    fn scan_families(&self, after: Option<&FamilyId>, limit: usize) -> Result<Vec<(FamilyId, Vec<u8>)>, StoreError> {
        self.inner.scan_families(after, limit)
    }

    fn check_indexes(&self, expected: &BTreeMap<FamilyId, Option<IndexKeys>>) -> Result<IndexCheck, StoreError> {
        self.inner.check_indexes(expected)
    }
}

impl WriteTxn for FaultyWrite<'_> {
    fn set_meta(&mut self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.inner.set_meta(name, value)
    }

    fn lock_families(&mut self, ids: &[FamilyId]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.inner.lock_families(ids)
    }

    fn try_lock_families(&mut self, ids: &[FamilyId]) -> Result<Vec<Locked>, StoreError> {
        self.inner.try_lock_families(ids)
    }

    fn raise_meta_i64(&mut self, name: &str, value: i64) -> Result<(), StoreError> {
        self.inner.raise_meta_i64(name, value)
    }

    fn insert_family(&mut self, id: &FamilyId, record: &[u8], keys: &IndexKeys) -> Result<(), StoreError> {
        self.inner.insert_family(id, record, keys)
    }

    fn update_family(
        &mut self,
        id: &FamilyId,
        record: &[u8],
        old: &IndexKeys,
        new: &IndexKeys,
    ) -> Result<(), StoreError> {
        self.inner.update_family(id, record, old, new)
    }

    fn remove_family(&mut self, id: &FamilyId, old: &IndexKeys) -> Result<(), StoreError> {
        self.inner.remove_family(id, old)
    }

    fn lock_due(&mut self, now: i64, limit: usize) -> Result<Vec<Due>, StoreError> {
        self.inner.lock_due(now, limit)
    }

    fn append_event(&mut self, at_millis: i64, value: &[u8]) -> Result<u64, StoreError> {
        self.inner.append_event(at_millis, value)
    }

    fn remove_events(&mut self, seqs: &[u64]) -> Result<(), StoreError> {
        self.inner.remove_events(seqs)
    }

    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.faults.wait_while_held();
        match self.faults.take_commit_fault() {
            CommitFault::None => self.inner.commit(),
            CommitFault::CommitThenLose => {
                self.inner.commit()?;
                Err(StoreError::outcome_unknown(LostDuringCommit))
            }
            CommitFault::LoseBeforeCommit => Err(StoreError::outcome_unknown(LostDuringCommit)),
        }
    }
}
