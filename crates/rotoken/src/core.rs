//! The engine's insides, shared by its callers and its background threads
//! (event delivery, gc): the write path (group commit into a [`Store`])
//! and the reads.
//!
//! The rules live in [`crate::protocol`]; the bytes live in the store. This
//! file moves operations between callers, the protocol and the store: it
//! prepares each operation on its caller's thread, and a batch leader runs
//! a batch in one store transaction (lock the families the batch names,
//! apply each operation through the protocol in order, write back, commit).
//! The public [`crate::Engine`] (engine.rs) is a handle on it.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use crate::batch::{Apply, Batcher, Deadline};
use crate::clock::{Clock, Floor, MAX_STORE_AHEAD_MS};
use crate::error::{IssueError, OpenError, RevokeError, RotateError, StoreError, corrupt};
use crate::grant::{Grant, MAX_SUBJECT_LEN, check_text};
use crate::keys::{Keyring, TAG16, TagKind};
use crate::notify::{Committed, Delivery, EventSink, QUEUE_COMMITS};
use crate::policy::{Durability, Policy};
use crate::protocol::{PreparedIssue, PreparedRevoke, PreparedRotate, Protocol, RotateDone, Transition, tag_reason};
use crate::record::{Event, EventKind, FamilyRecord, RevokeReason};
use crate::stall::StallWatch;
use crate::store::{Commit, Index, IndexKeys, Locked, MAX_CONFLICT_RETRIES, Store, WriteTxn};
use crate::token::FamilyId;
use crate::types::{Introspection, Issued, Options, RevokeTarget, RotateRequest, Rotated, Session, Stats};

const META_KEY_CHECK: &str = "key_check";
/// The policy every opener uses (`Policy::to_stored`).
pub(crate) const META_POLICY: &str = "policy";
/// The engine's time is never earlier than this (unix ms, big-endian i64).
const META_CLOCK_FLOOR: &str = "clock_floor";
/// How far the engine's time runs ahead of the persisted floor before a
/// write transaction raises it.
const FLOOR_STEP_MS: i64 = 1_000;
/// How often unsettled outcomes are tried again while the store is away.
const SETTLE_RETRY: Duration = Duration::from_millis(500);

/// Everything an engine is, behind the public handle's `Arc`.
pub(crate) struct Core {
    pub(crate) store: Box<dyn Store>,
    pub(crate) protocol: Arc<Protocol>,
    clock: Arc<dyn Clock>,
    /// The engine's time never goes back (docs/design.md, "Time").
    floor: Floor,
    persisted_floor: AtomicI64,
    delivery: Delivery,
    relaxed_commits: AtomicU32,
    batcher: Arc<Batcher<Op, Done>>,
    stats: Counters,
    /// How long an operation may wait to be applied when its caller gives no deadline.
    deadline: Duration,
    /// Sees the process stall; `None` when [`Options::stall_threshold`] is.
    stall: Option<StallWatch>,
    /// Rotations whose commit's outcome could not be read back: settled
    /// (marked undelivered if they committed) once the store answers again;
    /// and whether a settler thread is retrying them.
    unsettled: Mutex<(Vec<Settle>, bool)>,
    /// This core, for the threads it starts.
    /// (Given up while the engine compacts, which needs the only reference.)
    me: Mutex<Option<Weak<Core>>>,
    /// The stored floor not adopted at open (too far ahead), if any.
    floor_ignored: Option<i64>,
}

/// A successor to mark as never delivered, if it is still the family's
/// current token: its predecessor is then answered with it until it is
/// first used, however late the retry (docs/design.md, "Settled outcomes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settle {
    pub(crate) family: FamilyId,
    pub(crate) generation: u32,
    pub(crate) hash: [u8; TAG16],
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    operations: AtomicU64,
    durable_commits: AtomicU64,
    largest_batch: AtomicU64,
    conflicts: AtomicU64,
    gc_removed: AtomicU64,
    gc_failures: AtomicU64,
    largest_lock: AtomicU64,
    store_time_ahead: AtomicU64,
    deadline_passed: AtomicU64,
    undelivered: AtomicU64,
    outcomes_settled: AtomicU64,
    outcomes_unknown: AtomicU64,
    busy: AtomicU64,
    reuse_detected: AtomicU64,
    diverged: AtomicU64,
    refused: AtomicU64,
    revoked: AtomicU64,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.store.name())
            .field("keys", &self.protocol.keys)
            .field("policy", &self.protocol.rules().policy)
            .finish_non_exhaustive()
    }
}

/// An operation prepared on its caller's thread, applied by a batch leader.
pub(crate) enum Op {
    Issue(Box<PreparedIssue>),
    Rotate(Box<PreparedRotate>),
    Revoke(PreparedRevoke),
}

/// One operation's outcome from a batch.
pub(crate) enum Done {
    Issue(Result<Issued, IssueError>),
    Rotate(Result<Box<RotateDone>, RotateError>),
    Revoke(Result<usize, RevokeError>),
    /// The batch did not commit; nothing of this operation reached the store.
    Failed(StoreError),
}

impl Done {
    pub(crate) fn into_issue(self) -> Result<Issued, IssueError> {
        match self {
            Self::Issue(r) => r,
            Self::Failed(e) => Err(e.into()),
            _ => Err(mismatch().into()),
        }
    }

    pub(crate) fn into_rotate(self) -> Result<Box<RotateDone>, RotateError> {
        match self {
            Self::Rotate(r) => r,
            Self::Failed(e) => Err(e.into()),
            _ => Err(mismatch().into()),
        }
    }

    pub(crate) fn into_revoke(self) -> Result<usize, RevokeError> {
        match self {
            Self::Revoke(r) => r,
            Self::Failed(e) => Err(e.into()),
            _ => Err(mismatch().into()),
        }
    }
}

/// Why a batch's transaction did not commit as planned.
enum Unsent {
    /// Before its commit was sent: nothing reached the store.
    Before(StoreError),
    /// Its commit failed, perhaps after reaching the store: to be settled.
    AtCommit(StoreError, Box<Attempt>),
}

impl From<StoreError> for Unsent {
    fn from(e: StoreError) -> Self {
        Self::Before(e)
    }
}

/// A batch whose commit failed: its answers if it did commit, and how to
/// tell whether it did.
struct Attempt {
    dones: Vec<Done>,
    committed: Committed,
    /// A family it wrote: its bytes as written, and as they were before.
    witness: Option<(FamilyId, Vec<u8>, Option<Vec<u8>>)>,
    /// The clock floor it raised (`i64::MIN`: none).
    floor_raised: i64,
}

/// Why a commit's outcome is unknown.
#[derive(Debug, thiserror::Error)]
#[error("the store failed during the commit and could not be read back: {0}")]
struct Unsettled(String);

impl Settle {
    fn new((family, generation, hash): (FamilyId, u32, [u8; TAG16])) -> Self {
        Self {
            family,
            generation,
            hash,
        }
    }
}

impl Op {
    /// The successor this operation would mint, if it is a rotation.
    fn minted(&self) -> Option<Settle> {
        match self {
            Self::Rotate(p) => Some(Settle::new(p.would_mint())),
            _ => None,
        }
    }
}

fn mismatch() -> StoreError {
    StoreError::Unavailable("a batch returned another operation's result")
}

impl crate::revoke_steps::Submit for Core {
    fn submit(&self, op: Op) -> Done {
        self.batcher.submit(op, self.deadline_for(None), self)
    }
}

impl Apply<Op, Done> for Core {
    fn apply_batch(&self, ops: Vec<Op>) -> Vec<Done> {
        self.run_batch(&ops)
    }

    fn expired(&self, deadline: &Deadline) -> bool {
        let now = Instant::now();
        deadline.at <= now
            || deadline
                .received
                .is_some_and(|r| self.stall.as_ref().is_some_and(|w| w.is_stale(r, now)))
    }

    fn late(&self) -> Done {
        self.stats.deadline_passed.fetch_add(1, Ordering::Relaxed);
        Done::Failed(StoreError::DeadlinePassed)
    }

    /// A rotation that minted a successor its caller never received (the
    /// caller went away while the batch ran): the successor is marked
    /// undelivered, so the retry the client will make with its predecessor
    /// gets it whenever it comes.
    fn undelivered(&self, done: Done) {
        if let Done::Rotate(Ok(d)) = done
            && let Some(minted) = d.minted()
        {
            self.stats.undelivered.fetch_add(1, Ordering::Relaxed);
            self.settle_later(vec![Settle::new(minted)]);
        }
    }

    fn failed(&self, why: &'static str) -> Done {
        Done::Failed(StoreError::Unavailable(why))
    }

    fn panicked(&self) -> Done {
        Done::Failed(StoreError::Unavailable(
            "the batch panicked; nothing of it was committed",
        ))
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.batcher.shutdown();
    }
}

impl Core {
    /// The insides of a new engine over `store`: the first opener records
    /// the keyring's key-check value; later openers must bring the same keys.
    pub(crate) fn new(store: Box<dyn Store>, keys: Keyring, options: Options) -> Result<Self, OpenError> {
        options.policy.validate().map_err(OpenError::InvalidPolicy)?;
        let check = keys.key_check();
        let (stored_check, stored_policy) = establish(&*store, &check, &options.policy)?;
        if !bool::from(stored_check.as_slice().ct_eq(&check)) {
            return Err(OpenError::WrongKeys);
        }
        // Every opener runs by the database's policy (its own durability aside).
        let policy = Policy::from_stored(&stored_policy, &options.policy).map_err(|e| corrupt("meta", e))?;
        let concurrent = store.concurrent_batches();
        let stored_floor = store
            .begin_read()?
            .meta(META_CLOCK_FLOOR)?
            .map_or(Ok(i64::MIN), |v| decode_floor(&v))?;
        // A stored floor is adopted only within the bound a rotation stamp
        // is (P9): one server, or one CLI run, with a clock days ahead must
        // not expire every family for the servers that open after it.
        let wall = crate::clock::to_millis(options.clock.now());
        let ahead = stored_floor.saturating_sub(wall);
        let ignored = ahead > MAX_STORE_AHEAD_MS;
        let floor = if ignored { wall } else { stored_floor };
        let core = Self {
            store,
            protocol: Arc::new(Protocol::new(keys, policy)),
            floor: Floor::new(floor, &*options.clock),
            clock: options.clock,
            persisted_floor: AtomicI64::new(stored_floor),
            delivery: Delivery::new(QUEUE_COMMITS),
            relaxed_commits: AtomicU32::new(0),
            batcher: Arc::new(Batcher::new(options.group_commit, concurrent)),
            stats: Counters::default(),
            deadline: options.deadline,
            stall: options.stall_threshold.map(StallWatch::start),
            unsettled: Mutex::new((Vec::new(), false)),
            me: Mutex::new(None),
            floor_ignored: ignored.then_some(stored_floor),
        };
        if ignored {
            let ahead_secs = u32::try_from(ahead / 1000).unwrap_or(u32::MAX);
            // Recorded for the operator; opening goes on if it cannot be.
            let _ = core.record_unattached(EventKind::ClockFloorIgnored { ahead_secs });
        }
        Ok(core)
    }

    /// The stored clock floor this engine did not adopt at open because it
    /// was more than [`MAX_STORE_AHEAD_MS`] ahead of its clock (unix ms).
    pub(crate) fn floor_ignored(&self) -> Option<i64> {
        self.floor_ignored
    }

    /// Commits one event that concerns no family (the family id is all
    /// zeros), in a transaction of its own.
    pub(crate) fn record_unattached(&self, kind: EventKind) -> Result<(), StoreError> {
        let now = self.now();
        let events = self.retrying_conflicts(|| {
            let mut txn = self.store.begin_write(Commit::Durable)?;
            let events = Self::append_events(&mut *txn, vec![(FamilyId::from_bytes([0; 16]), kind)], now)?;
            self.commit(txn, Commit::Durable)?;
            Ok(events)
        })?;
        self.emit_unattached(events);
        Ok(())
    }

    /// Lowers the persisted clock floor to this engine's clock (an
    /// operator's repair after a server with a clock far ahead wrote it),
    /// with an event; returns the floor as it was. See
    /// [`crate::Engine::lower_clock_floor`].
    pub(crate) fn lower_clock_floor(&self) -> Result<Option<i64>, StoreError> {
        let wall = crate::clock::to_millis(self.clock.now());
        let before = self.retrying_conflicts(|| {
            let mut txn = self.store.begin_write(Commit::Durable)?;
            let stored = txn.meta(META_CLOCK_FLOOR)?.map(|v| decode_floor(&v)).transpose()?;
            if stored.is_some_and(|f| f > wall) {
                txn.set_meta(META_CLOCK_FLOOR, &wall.to_be_bytes())?;
                let by_secs = u32::try_from(stored.unwrap_or(wall).saturating_sub(wall) / 1000).unwrap_or(u32::MAX);
                let events = Self::append_events(
                    &mut *txn,
                    vec![(FamilyId::from_bytes([0; 16]), EventKind::ClockFloorLowered { by_secs })],
                    wall,
                )?;
                self.commit(txn, Commit::Durable)?;
                self.emit_unattached(events);
            }
            Ok(stored)
        })?;
        self.persisted_floor.store(wall, Ordering::Relaxed);
        Ok(before)
    }

    /// See [`crate::Engine::keyring`].
    pub(crate) fn keyring(&self) -> &Keyring {
        &self.protocol.keys
    }

    /// See [`crate::Engine::clock`].
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// See [`crate::Engine::policy`].
    pub(crate) fn policy(&self) -> Policy {
        self.protocol.rules().policy.clone()
    }

    /// See [`crate::Engine::store_name`].
    pub(crate) fn store_name(&self) -> &'static str {
        self.store.name()
    }

    /// See [`crate::Engine::stats`].
    pub(crate) fn stats(&self) -> Stats {
        Stats {
            batches: self.stats.batches.load(Ordering::Relaxed),
            operations: self.stats.operations.load(Ordering::Relaxed),
            durable_commits: self.stats.durable_commits.load(Ordering::Relaxed),
            largest_batch: self.stats.largest_batch.load(Ordering::Relaxed),
            conflicts_retried: self.stats.conflicts.load(Ordering::Relaxed),
            gc_removed: self.stats.gc_removed.load(Ordering::Relaxed),
            gc_failures: self.stats.gc_failures.load(Ordering::Relaxed),
            largest_lock: self.stats.largest_lock.load(Ordering::Relaxed),
            events_not_delivered: self.delivery.counts().not_delivered.load(Ordering::Relaxed),
            subscriber_panics: self.delivery.counts().subscriber_panics.load(Ordering::Relaxed),
            store_time_ahead: self.stats.store_time_ahead.load(Ordering::Relaxed),
            deadline_passed: self.stats.deadline_passed.load(Ordering::Relaxed),
            undelivered: self.stats.undelivered.load(Ordering::Relaxed),
            outcomes_settled: self.stats.outcomes_settled.load(Ordering::Relaxed),
            outcomes_unknown: self.stats.outcomes_unknown.load(Ordering::Relaxed),
            busy: self.stats.busy.load(Ordering::Relaxed),
            reuse_detected: self.stats.reuse_detected.load(Ordering::Relaxed),
            diverged: self.stats.diverged.load(Ordering::Relaxed),
            refused: self.stats.refused.load(Ordering::Relaxed),
            revoked: self.stats.revoked.load(Ordering::Relaxed),
            clock_floor_ignored: u64::from(self.floor_ignored.is_some()),
        }
    }

    /// Counts what a background gc step removed.
    pub(crate) fn count_gc(&self, report: &crate::GcReport) {
        self.stats
            .gc_removed
            .fetch_add(report.removed as u64, Ordering::Relaxed);
    }

    /// Counts a background gc step that failed.
    pub(crate) fn count_gc_failure(&self) {
        self.stats.gc_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// See [`crate::Engine::compact`].
    pub(crate) fn compact(&mut self) -> Result<(), StoreError> {
        self.store.compact()
    }

    /// The time to act on: the wall clock, never earlier than a time acted on before.
    pub(crate) fn now(&self) -> i64 {
        self.floor.now(&*self.clock)
    }

    fn floor_persisted(&self, now: i64) {
        self.persisted_floor.fetch_max(now, Ordering::Relaxed);
    }

    /// Whether the next write transaction commits durably: always, unless
    /// durability is relaxed; then every [`Policy::relaxed_flush_every`]-th.
    pub(crate) fn next_commit(&self) -> Commit {
        let rules = self.protocol.rules();
        if rules.policy.durability == Durability::Relaxed {
            // Exact when batches run one at a time (redb); with several in
            // flight a durable commit may come a few commits late.
            let since = self.relaxed_commits.load(Ordering::Relaxed);
            if since.saturating_add(1) < rules.policy.relaxed_flush_every {
                return Commit::Relaxed;
            }
        }
        Commit::Durable
    }

    /// Commits, and keeps count of relaxed commits since the last durable one.
    pub(crate) fn commit(&self, txn: Box<dyn WriteTxn + '_>, mode: Commit) -> Result<(), StoreError> {
        txn.commit()?;
        if mode == Commit::Durable {
            self.stats.durable_commits.fetch_add(1, Ordering::Relaxed);
            self.relaxed_commits.store(0, Ordering::Relaxed);
        } else {
            self.relaxed_commits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Runs `attempt` until it does not end in [`StoreError::Conflict`],
    /// at most [`MAX_CONFLICT_RETRIES`] more times (contract rule 3).
    pub(crate) fn retrying_conflicts<T>(
        &self,
        mut attempt: impl FnMut() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut retries = 0;
        loop {
            match attempt() {
                Err(StoreError::Conflict(_)) if retries < MAX_CONFLICT_RETRIES => {
                    retries += 1;
                    self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                other => return other,
            }
        }
    }

    /// Appends events in order and returns them with their sequence numbers.
    pub(crate) fn append_events(
        txn: &mut dyn WriteTxn,
        events: Vec<(FamilyId, EventKind)>,
        now: i64,
    ) -> Result<Vec<Event>, StoreError> {
        let mut out = Vec::with_capacity(events.len());
        for (family, kind) in events {
            let mut event = Event {
                seq: 0,
                at_millis: now,
                family,
                kind,
            };
            event.seq = txn.append_event(now, &event.encode())?;
            out.push(event);
        }
        Ok(out)
    }

    /// Hands committed events to the subscribers' queue (never blocks).
    pub(crate) fn emit(&self, committed: Committed) {
        self.delivery.send(committed);
    }

    /// Hands committed events that concern no family to the subscribers' queue.
    pub(crate) fn emit_unattached(&self, events: Vec<Event>) {
        self.delivery.send(events.into_iter().map(|e| (e, None)).collect());
    }

    /// True if committed events must be kept with their records for subscribers.
    pub(crate) fn events_wanted(&self) -> bool {
        self.delivery.wanted()
    }

    /// See [`crate::Engine::flush_events`].
    pub(crate) fn flush_events(&self) {
        self.delivery.flush();
    }

    /// Adds an event subscriber (see [`crate::Engine::subscribe`]).
    pub(crate) fn subscribe(&self, sink: EventSink) -> std::io::Result<()> {
        self.delivery.subscribe(sink, &self.protocol)
    }

    /// The deadline of an operation called now: the caller's (a request's),
    /// or the engine's default from now.
    fn deadline_for(&self, at: Option<Instant>) -> Deadline {
        let now = Instant::now();
        match at {
            Some(at) => Deadline {
                at,
                received: Some(now),
            },
            None => Deadline {
                at: now + self.deadline,
                received: None,
            },
        }
    }

    /// See [`crate::Engine::issue`].
    pub(crate) fn issue(&self, grant: &Grant) -> Result<Issued, IssueError> {
        let op = self.protocol.prepare_issue(grant, self.now())?;
        let deadline = self.deadline_for(None);
        Done::into_issue(self.batcher.submit(Op::Issue(Box::new(op)), deadline, self))
    }

    /// See [`crate::Engine::issue_async`].
    pub(crate) async fn issue_async(self: &Arc<Self>, grant: &Grant) -> Result<Issued, IssueError> {
        let op = self.protocol.prepare_issue(grant, self.now())?;
        Done::into_issue(self.submit_async(Op::Issue(Box::new(op)), None).await)
    }

    /// See [`crate::Engine::rotate`].
    pub(crate) fn rotate(&self, token: &str, request: &RotateRequest) -> Result<Rotated, RotateError> {
        let op = self.protocol.prepare_rotate(token, request)?;
        let deadline = self.deadline_for(request.deadline);
        let done = self.batcher.submit(Op::Rotate(Box::new(op)), deadline, self);
        Ok(self.protocol.finish_rotate(*self.judged(done)?, request))
    }

    /// See [`crate::Engine::rotate_async`].
    pub(crate) async fn rotate_async(
        self: &Arc<Self>,
        token: &str,
        request: &RotateRequest,
    ) -> Result<Rotated, RotateError> {
        let op = self.protocol.prepare_rotate(token, request)?;
        let done = self.submit_async(Op::Rotate(Box::new(op)), request.deadline).await;
        Ok(self.protocol.finish_rotate(*self.judged(done)?, request))
    }

    /// A rotation's outcome, counted where it happens: reuse, divergence
    /// and refusals are seen here even when the caller that asked is gone.
    fn judged(&self, done: Done) -> Result<Box<RotateDone>, RotateError> {
        let r = Done::into_rotate(done);
        if let Err(e) = &r {
            let counter = match e {
                RotateError::ReuseDetected { .. } => &self.stats.reuse_detected,
                RotateError::Diverged { .. } => &self.stats.diverged,
                RotateError::Store(_) => return r,
                _ => &self.stats.refused,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Lets the core start threads that hold it weakly (called by
    /// [`crate::Engine`] once the core is shared, and again after a
    /// compaction, which needs it to [`Core::disown`] itself).
    pub(crate) fn adopt(self: &Arc<Self>) {
        *self.me.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::downgrade(self));
    }

    /// Drops the core's reference to itself (see [`Core::adopt`]), so that
    /// the engine can hold the only one while it compacts.
    pub(crate) fn disown(&self) {
        *self.me.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Queues successors to be marked undelivered: by the next batch that
    /// commits (before it decides anything), or by a settler thread that
    /// retries every half second until the store answers, so another
    /// server sharing the store sees the mark too.
    fn settle_later(&self, settles: Vec<Settle>) {
        if settles.is_empty() {
            return;
        }
        let mut pending = self.unsettled.lock().unwrap_or_else(PoisonError::into_inner);
        pending.0.extend(settles);
        if pending.1 {
            return;
        }
        let Some(me) = self.me.lock().unwrap_or_else(PoisonError::into_inner).clone() else {
            return; // not shared yet: the next batch settles
        };
        pending.1 = std::thread::Builder::new()
            .name("rotoken-settler".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(SETTLE_RETRY);
                    let Some(core) = me.upgrade() else { return };
                    {
                        let mut pending = core.unsettled.lock().unwrap_or_else(PoisonError::into_inner);
                        if pending.0.is_empty() {
                            pending.1 = false;
                            return;
                        }
                    }
                    core.run_batch(&[]);
                }
            })
            .is_ok();
    }

    /// See [`crate::Engine::revoke`].
    pub(crate) fn revoke(&self, target: RevokeTarget<'_>) -> Result<usize, RevokeError> {
        let op = self.protocol.prepare_revoke(target)?;
        self.revoke_prepared(op, self)
    }

    /// See [`crate::Engine::revoke_async`].
    pub(crate) async fn revoke_async(self: &Arc<Self>, target: RevokeTarget<'_>) -> Result<usize, RevokeError> {
        let op = self.protocol.prepare_revoke(target)?;
        if op.tag().is_none() {
            return Done::into_revoke(self.submit_async(Op::Revoke(op), None).await);
        }
        // A subject or client revocation may take many steps: on the
        // blocking pool, each step through the commit path.
        let core = Arc::clone(self);
        blocking::unblock(move || core.revoke_prepared(op, &*core)).await
    }

    async fn submit_async(self: &Arc<Self>, op: Op, deadline: Option<Instant>) -> Done {
        let deadline = self.deadline_for(deadline);
        match self.batcher.submit_async(op, deadline, Arc::downgrade(self)).await {
            Ok(done) => done,
            Err(why) => Done::Failed(StoreError::Unavailable(why)),
        }
    }

    /// Applies one batch in one store transaction and commits it once,
    /// running it again from the start if the store reports a conflict.
    /// Each operation gets its own outcome; a store failure, or a failed
    /// commit, fails every operation of the batch, since none of their
    /// changes reached the store. A commit that failed after it may have
    /// reached the store is settled first: read back, and answered as
    /// what happened (docs/design.md, "Settled outcomes").
    fn run_batch(&self, ops: &[Op]) -> Vec<Done> {
        let settles = std::mem::take(&mut self.unsettled.lock().unwrap_or_else(PoisonError::into_inner).0);
        let result = self.retrying_conflicts(|| match self.apply_batch_once(ops, &settles) {
            Ok(done) => Ok(done),
            Err(Unsent::Before(e)) => Err(e),
            Err(Unsent::AtCommit(e, attempt)) => self.settle_commit(e, *attempt),
        });
        match result {
            Ok((dones, events)) => {
                let n = ops.len() as u64;
                self.stats.batches.fetch_add(u64::from(n > 0), Ordering::Relaxed);
                self.stats.operations.fetch_add(n, Ordering::Relaxed);
                self.stats.largest_batch.fetch_max(n, Ordering::Relaxed);
                self.emit(events);
                dones
            }
            Err(e) => {
                // Not applied: they wait for the next batch that commits.
                self.settle_later(settles);
                if let StoreError::OutcomeUnknown(_) = e {
                    self.stats.outcomes_unknown.fetch_add(1, Ordering::Relaxed);
                    // Whatever happened, each successor minted here is
                    // marked undelivered once the store answers, if it
                    // committed: the client was told "retry".
                    self.settle_later(ops.iter().filter_map(Op::minted).collect());
                }
                ops.iter().map(|_| Done::Failed(e.clone())).collect()
            }
        }
    }

    /// A commit that failed with `e` after it may have reached the store:
    /// reads back one family the batch wrote. Its bytes as written: the
    /// batch committed, and its answers stand. As before the batch: it did
    /// not, and `e` stands (retryable). Unreadable or changed since by
    /// someone else: [`StoreError::OutcomeUnknown`].
    fn settle_commit(&self, e: StoreError, attempt: Attempt) -> Result<(Vec<Done>, Committed), StoreError> {
        let Some((family, written, before)) = attempt.witness else {
            return Err(e);
        };
        let unknown = |why: &StoreError| StoreError::OutcomeUnknown(std::sync::Arc::new(Unsettled(why.to_string())));
        let read = self.store.begin_read().and_then(|r| r.family(&family));
        match read {
            Ok(now) if now.as_deref() == Some(written.as_slice()) => {
                self.stats.outcomes_settled.fetch_add(1, Ordering::Relaxed);
                self.floor_persisted(attempt.floor_raised);
                Ok((attempt.dones, attempt.committed))
            }
            Ok(now) if now == before => {
                self.stats.outcomes_settled.fetch_add(1, Ordering::Relaxed);
                Err(match e {
                    StoreError::OutcomeUnknown(source) => StoreError::Storage(source),
                    other => other,
                })
            }
            Ok(_) => Err(unknown(&e)),
            Err(read_error) => Err(unknown(&read_error)),
        }
    }

    fn apply_batch_once(&self, ops: &[Op], settles: &[Settle]) -> Result<(Vec<Done>, Committed), Unsent> {
        let mode = self.next_commit();
        let mut txn = self.store.begin_write(mode)?;
        let mut batch = Working::lock(&mut *txn, ops, settles, &self.protocol)?;
        self.stats
            .largest_lock
            .fetch_max(batch.slots.len() as u64, Ordering::Relaxed);
        // Decided at a time read once the families are locked (another
        // batch, here or at another server, may have rotated one while this
        // one waited for its lock), and never before a rotation one of them
        // records: a second presenter is then inside the grace window, not
        // "before the rotation" (docs/design.md, "Time").
        let latest = batch.latest_rotation();
        let now = self.floor.at_least(latest, &*self.clock);
        if latest > now {
            self.stats.store_time_ahead.fetch_add(1, Ordering::Relaxed);
        }
        batch.settle(settles);
        let dones: Vec<Done> = ops.iter().map(|op| batch.apply(&self.protocol, op, now)).collect();
        self.stats.busy.fetch_add(batch.busy_refused as u64, Ordering::Relaxed);
        if batch.dirty.is_empty() && batch.events.is_empty() {
            // Refusals write nothing (a revoked or expired family's token
            // presented again costs no commit): rolled back.
            return Ok((dones, Vec::new()));
        }
        batch.write_back(&mut *txn, &self.protocol)?;
        let events = Self::append_events(&mut *txn, std::mem::take(&mut batch.events), now)?;
        // The floor rides with a batch that writes anyway, raised in one
        // statement that locks nothing every batch would wait on.
        let raised = now
            > self
                .persisted_floor
                .load(Ordering::Relaxed)
                .saturating_add(FLOOR_STEP_MS);
        if raised {
            txn.raise_meta_i64(META_CLOCK_FLOOR, now)?;
        }
        let committed = if self.events_wanted() {
            batch.with_records(events)
        } else {
            Vec::new()
        };
        let revoked = batch.revoked;
        match self.commit(txn, mode) {
            Ok(()) => {
                if raised {
                    self.floor_persisted(now);
                }
                self.stats.revoked.fetch_add(revoked as u64, Ordering::Relaxed);
                Ok((dones, committed))
            }
            Err(e @ StoreError::Conflict(_)) => Err(Unsent::Before(e)),
            Err(e) => Err(Unsent::AtCommit(
                e,
                Box::new(Attempt {
                    dones,
                    committed,
                    // Encoded only when a commit failed: no cost otherwise.
                    witness: batch.witness(&self.protocol),
                    floor_raised: if raised { now } else { i64::MIN },
                }),
            )),
        }
    }

    /// See [`crate::Engine::introspect`].
    pub(crate) fn introspect(&self, token: &str) -> Result<Introspection, StoreError> {
        let Ok(presented) = self.protocol.authenticate(token) else {
            return Ok(Introspection::default());
        };
        let family = presented.family;
        let Some(bytes) = self.store.begin_read()?.family(&family)? else {
            return Ok(Introspection::default());
        };
        let rec = self.protocol.decode_record(&family, &bytes)?;
        self.protocol.introspect(&presented, &rec, self.now())
    }

    /// See [`crate::Engine::family_is_active`].
    pub(crate) fn family_is_active(&self, family: &FamilyId) -> Result<bool, StoreError> {
        let Some(bytes) = self.store.begin_read()?.family(family)? else {
            return Ok(false);
        };
        let rec = self.protocol.decode_record(family, &bytes)?;
        Ok(self.protocol.is_live(&rec, self.now()))
    }

    /// See [`crate::Engine::sessions`].
    pub(crate) fn sessions(&self, subject: &str) -> Result<Vec<Session>, crate::Error> {
        check_text("subject", subject, MAX_SUBJECT_LEN)?;
        let now = self.now();
        let read = self.store.begin_read()?;
        let tag = self.protocol.keys.tag(TagKind::Subject, subject);
        let mut out = Vec::new();
        for family in read.families_by(Index::Subject, &tag)? {
            let Some(bytes) = read.family(&family)? else {
                continue;
            };
            let rec = self.protocol.decode_record(&family, &bytes)?;
            if let Some(s) = self.protocol.session(family, &rec, now)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// See [`crate::Engine::events`].
    pub(crate) fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.store
            .begin_read()?
            .events(after, limit)?
            .into_iter()
            .map(|(seq, v)| Event::decode(seq, &v).map_err(|e| corrupt("events", e)))
            .collect()
    }

    /// See [`crate::Engine::families_count`].
    pub(crate) fn families_count(&self) -> Result<u64, StoreError> {
        self.store.begin_read()?.family_count()
    }
}

/// One family as a batch sees it.
enum Slot {
    /// Not in the store.
    Absent,
    /// Its stored bytes did not verify or decode.
    Damaged(StoreError),
    /// Its record as of this point in the batch.
    Present(FamilyRecord),
    /// Another transaction held its lock past the store's lock wait.
    Busy,
}

/// The families of one batch: locked in the store once, then changed in
/// memory by each operation in turn (a later operation sees what an earlier
/// one wrote), and written back once (contract rule 4).
struct Working {
    slots: HashMap<FamilyId, Slot>,
    /// How each family is stored now (`None`: new in this batch).
    stored: HashMap<FamilyId, IndexKeys>,
    /// The families a subject or client revocation of this batch names, as
    /// the store lists them.
    listed: HashMap<(Index, [u8; TAG16]), Vec<FamilyId>>,
    /// Families issued in this batch, in order.
    issued: Vec<FamilyId>,
    dirty: BTreeSet<FamilyId>,
    /// Families removed in this batch, as they were (for subscribers).
    removed: HashMap<FamilyId, FamilyRecord>,
    events: Vec<(FamilyId, EventKind)>,
    /// Each locked family's bytes as stored before this batch.
    before: HashMap<FamilyId, Vec<u8>>,
    /// Operations refused because a family they name was busy.
    busy_refused: usize,
    /// Families revoked in this batch.
    revoked: usize,
}

impl Working {
    /// Locks every family the batch names, in one call to the store.
    fn lock(txn: &mut dyn WriteTxn, ops: &[Op], settles: &[Settle], protocol: &Protocol) -> Result<Self, StoreError> {
        let mut listed = HashMap::new();
        let mut ids: Vec<FamilyId> = settles.iter().map(|s| s.family).collect();
        // How many families this batch issues per subject tag.
        let mut issuing: HashMap<[u8; TAG16], usize> = HashMap::new();
        for op in ops {
            if let Op::Issue(p) = op {
                *issuing.entry(p.rec.subject_tag).or_default() += 1;
            }
        }
        for op in ops {
            match op {
                Op::Rotate(r) => ids.push(r.presented.family),
                Op::Revoke(PreparedRevoke::Family(f, ..)) => ids.push(*f),
                Op::Revoke(PreparedRevoke::Subject(tag)) => {
                    let found = txn.families_by(Index::Subject, tag)?;
                    ids.extend_from_slice(&found);
                    listed.insert((Index::Subject, *tag), found);
                }
                Op::Revoke(PreparedRevoke::Client(tag)) => {
                    let found = txn.families_by(Index::Client, tag)?;
                    ids.extend_from_slice(&found);
                    listed.insert((Index::Client, *tag), found);
                }
                Op::Revoke(PreparedRevoke::Listed(families, _)) => ids.extend_from_slice(families),
                Op::Revoke(PreparedRevoke::Rest(index, tag, taken)) => {
                    let rest: Vec<FamilyId> = txn
                        .families_by(*index, tag)?
                        .into_iter()
                        .filter(|f| !taken.contains(f))
                        .collect();
                    ids.extend_from_slice(&rest);
                    listed.entry((*index, *tag)).or_insert(rest);
                }
                Op::Issue(p) => {
                    // The (subject, client) cap needs the subject's families,
                    // but only once it has as many as the cap (of any
                    // client or state): below that, none can be over it.
                    let tag = p.rec.subject_tag;
                    let cap = protocol.rules().policy.max_families_per_user as usize;
                    if cap > 0 && !listed.contains_key(&(Index::Subject, tag)) {
                        let found = txn.families_by(Index::Subject, &tag)?;
                        if found.len() + issuing.get(&tag).copied().unwrap_or(1) > cap {
                            ids.extend_from_slice(&found);
                        }
                        listed.insert((Index::Subject, tag), found);
                    }
                }
            }
        }
        // One order for every locker, so two batches never wait on each other in a cycle.
        ids.sort_unstable();
        ids.dedup();
        let found = txn.try_lock_families(&ids)?;
        let mut slots = HashMap::with_capacity(ids.len());
        let mut stored = HashMap::with_capacity(ids.len());
        let mut before = HashMap::with_capacity(ids.len());
        for (id, locked) in ids.into_iter().zip(found) {
            let slot = match locked {
                Locked::Busy => Slot::Busy,
                Locked::Held(Some(b)) => match protocol.decode_record(&id, &b) {
                    Ok(rec) => {
                        stored.insert(id, Protocol::index_keys(&rec));
                        before.insert(id, b);
                        Slot::Present(rec)
                    }
                    Err(e) => Slot::Damaged(e),
                },
                Locked::Held(None) => Slot::Absent,
            };
            slots.insert(id, slot);
        }
        Ok(Self {
            slots,
            stored,
            listed,
            issued: Vec::new(),
            dirty: BTreeSet::new(),
            removed: HashMap::new(),
            events: Vec::new(),
            before,
            busy_refused: 0,
            revoked: 0,
        })
    }

    /// Marks each successor still current as never delivered (see [`Settle`]).
    fn settle(&mut self, settles: &[Settle]) {
        for s in settles {
            if let Some(Slot::Present(rec)) = self.slots.get(&s.family)
                && let Some(next) = Protocol::mark_undelivered(rec, s.generation, &s.hash)
            {
                self.record(
                    s.family,
                    Transition {
                        record: next,
                        event: None,
                    },
                );
            }
        }
    }

    /// A family this batch writes, with its bytes as written and as stored
    /// before: what [`Core::settle_commit`] reads back.
    fn witness(&self, protocol: &Protocol) -> Option<(FamilyId, Vec<u8>, Option<Vec<u8>>)> {
        self.dirty.iter().find_map(|family| match self.slots.get(family) {
            Some(Slot::Present(rec)) => {
                let before = self.before.get(family).cloned();
                Some((*family, protocol.record_bytes(family, rec), before))
            }
            _ => None,
        })
    }

    /// The latest rotation (or issue) among the locked families.
    fn latest_rotation(&self) -> i64 {
        self.slots
            .values()
            .filter_map(|slot| match slot {
                Slot::Present(rec) => Some(rec.rotated_at),
                _ => None,
            })
            .max()
            .unwrap_or(i64::MIN)
    }

    fn apply(&mut self, protocol: &Protocol, op: &Op, now: i64) -> Done {
        match op {
            Op::Issue(p) => Done::Issue(self.issue(protocol, p, now)),
            Op::Rotate(p) => Done::Rotate(self.rotate(protocol, p, now).map(Box::new)),
            Op::Revoke(p) => Done::Revoke(self.revoke(protocol, p, now)),
        }
    }

    fn issue(&mut self, protocol: &Protocol, p: &PreparedIssue, now: i64) -> Result<Issued, IssueError> {
        let family = p.issued.family;
        if self.slots.contains_key(&family) {
            // 128 random bits never collide in practice; refuse rather than overwrite.
            return Err(corrupt("families", "family id collision").into());
        }
        let capped = self.over_cap(protocol, &p.rec, now);
        self.slots.insert(family, Slot::Present(p.rec.clone()));
        self.dirty.insert(family);
        self.issued.push(family);
        for old in capped {
            // Removed at once, not kept as revoked: a client issuing without
            // end for one user cannot grow the store, nor the work of its
            // next issue. Its tokens are unknown from now on.
            if let Some(Slot::Present(rec)) = self.slots.insert(old, Slot::Absent) {
                self.removed.insert(old, rec);
            }
            self.dirty.insert(old);
            self.revoked += 1;
            self.events.push((old, EventKind::Revoked(RevokeReason::Cap)));
        }
        Ok(p.issued.clone())
    }

    /// The families to remove so the new family's (subject, client) stays
    /// within [`crate::Policy::max_families_per_user`] (the rule:
    /// [`Protocol::over_cap`]).
    fn over_cap(&self, protocol: &Protocol, new: &FamilyRecord, now: i64) -> Vec<FamilyId> {
        let live: Vec<(i64, FamilyId)> = self
            .named(Index::Subject, &new.subject_tag)
            .into_iter()
            .filter_map(|f| match self.slots.get(&f) {
                Some(Slot::Present(rec))
                    if bool::from(rec.client_tag.ct_eq(&new.client_tag)) && protocol.is_live(rec, now) =>
                {
                    Some((rec.created_at, f))
                }
                // A damaged family is not counted (its tags cannot be
                // trusted); check reports it.
                _ => None,
            })
            .collect();
        protocol.over_cap(live)
    }

    fn rotate(&mut self, protocol: &Protocol, p: &PreparedRotate, now: i64) -> Result<RotateDone, RotateError> {
        let family = p.presented.family;
        let (answer, change) = match self.slots.get(&family) {
            None | Some(Slot::Absent) => return Err(RotateError::Unknown),
            Some(Slot::Damaged(e)) => return Err(e.clone().into()),
            Some(Slot::Busy) => {
                self.busy_refused += 1;
                return Err(busy(&family).into());
            }
            Some(Slot::Present(rec)) => protocol.rotate(rec, p, now),
        };
        if let Some(t) = change {
            self.record(family, t);
        }
        answer
    }

    fn revoke(&mut self, protocol: &Protocol, p: &PreparedRevoke, now: i64) -> Result<usize, RevokeError> {
        let (families, reason, owner) = match p {
            PreparedRevoke::Family(f, reason, owner) => (vec![*f], *reason, owner.as_ref()),
            PreparedRevoke::Subject(tag) => (self.named(Index::Subject, tag), RevokeReason::Subject, None),
            PreparedRevoke::Client(tag) => (self.named(Index::Client, tag), RevokeReason::Client, None),
            PreparedRevoke::Listed(families, reason) => (families.clone(), *reason, None),
            PreparedRevoke::Rest(index, tag, _) => (self.named(*index, tag), tag_reason(*index), None),
        };
        // Decided for every family first: an error revokes none of them.
        let mut changes = Vec::new();
        for family in families {
            match self.slots.get(&family) {
                None | Some(Slot::Absent) => {}
                Some(Slot::Damaged(e)) => return Err(e.clone().into()),
                Some(Slot::Busy) => {
                    self.busy_refused += 1;
                    return Err(busy(&family).into());
                }
                Some(Slot::Present(rec)) => {
                    if let Some(t) = protocol.revoke(rec, reason, owner, now)? {
                        changes.push((family, t));
                    }
                }
            }
        }
        let n = changes.len();
        for (family, t) in changes {
            self.record(family, t);
        }
        Ok(n)
    }

    /// The families a subject or client revocation covers: those the store
    /// listed, and those issued earlier in this batch under the same tag.
    fn named(&self, index: Index, tag: &[u8; TAG16]) -> Vec<FamilyId> {
        let mut out = self.listed.get(&(index, *tag)).cloned().unwrap_or_default();
        for f in &self.issued {
            if let Some(Slot::Present(rec)) = self.slots.get(f) {
                let t = match index {
                    Index::Subject => &rec.subject_tag,
                    _ => &rec.client_tag,
                };
                if bool::from(t.ct_eq(tag)) {
                    out.push(*f);
                }
            }
        }
        out
    }

    fn record(&mut self, family: FamilyId, t: Transition) {
        self.slots.insert(family, Slot::Present(t.record));
        self.dirty.insert(family);
        if let Some(kind) = t.event {
            self.revoked += 1;
            self.events.push((family, kind));
        }
    }

    /// Each committed event with its family's record as committed.
    fn with_records(&self, events: Vec<Event>) -> Committed {
        events
            .into_iter()
            .filter_map(|e| match self.slots.get(&e.family) {
                Some(Slot::Present(rec)) => Some((e, Some(rec.clone()))),
                _ => self.removed.get(&e.family).map(|rec| (e, Some(rec.clone()))),
            })
            .collect()
    }

    /// Writes every changed family once.
    fn write_back(&self, txn: &mut dyn WriteTxn, protocol: &Protocol) -> Result<(), StoreError> {
        for family in &self.dirty {
            let Some(Slot::Present(rec)) = self.slots.get(family) else {
                if let Some(old) = self.stored.get(family) {
                    txn.remove_family(family, old)?;
                }
                continue;
            };
            let bytes = protocol.record_bytes(family, rec);
            let keys = Protocol::index_keys(rec);
            match self.stored.get(family) {
                None => txn.insert_family(family, &bytes, &keys)?,
                Some(old) => txn.update_family(family, &bytes, old, &keys)?,
            }
        }
        Ok(())
    }
}

/// The key-check value and the policy as stored, recording this opener's
/// when the database has none yet (a new database; for the policy, also one
/// written before policies were stored). Read under contract rule 7, so of
/// two first openers of a shared store exactly one records its own.
fn establish(store: &dyn Store, check: &[u8], policy: &Policy) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
    let read = |store: &dyn Store| -> Result<_, StoreError> {
        let r = store.begin_read()?;
        Ok((r.meta(META_KEY_CHECK)?, r.meta(META_POLICY)?))
    };
    if let (Some(kc), Some(p)) = read(store)? {
        return Ok((kc, p));
    }
    // Always committed durably, whatever the policy.
    let mut txn = store.begin_write(Commit::Durable)?;
    if txn.meta(META_KEY_CHECK)?.is_none() {
        txn.set_meta(META_KEY_CHECK, check)?;
    }
    if txn.meta(META_POLICY)?.is_none() {
        txn.set_meta(META_POLICY, &policy.to_stored())?;
    }
    txn.commit()?;
    match read(store)? {
        (Some(kc), Some(p)) => Ok((kc, p)),
        _ => Err(corrupt("meta", "key check or policy missing after it was written")),
    }
}

/// A family whose lock another transaction held past the store's wait.
fn busy(family: &FamilyId) -> StoreError {
    StoreError::Busy(format!("family {family} is locked by another transaction"))
}

fn decode_floor(bytes: &[u8]) -> Result<i64, StoreError> {
    let b: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt("meta", "clock floor is not 8 bytes"))?;
    Ok(i64::from_be_bytes(b))
}
