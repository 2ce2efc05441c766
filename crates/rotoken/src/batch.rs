//! Group commit: many callers, one write transaction, one durable commit.
//!
//! Callers put prepared operations in a queue. Whoever finds no batch in
//! progress becomes the leader: it takes up to `max_batch` queued
//! operations, applies them all in one write transaction, commits once, and
//! hands each caller its own result. Callers that arrive while a batch is
//! committing queue up and form the next batch, so under load one `fsync`
//! serves many rotations; a lone caller leads its own one-operation batch at
//! once and is not delayed.
//!
//! Synchronous callers lead inline. Asynchronous callers never lead on the
//! runtime's thread: helper threads (started at the first async call) lead
//! batches that hold only async work, and wake each caller's task.
//!
//! A store that takes writers from several transactions at once (the
//! PostgreSQL store, whose row locks serialise only writers of the same
//! family) lets more than one batch be in flight: up to
//! [`Store::concurrent_batches`](crate::Store::concurrent_batches) leaders
//! run at a time, so one slow commit round trip does not hold up every
//! other caller. redb has one writer, so its batches run one at a time.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How concurrent writes are grouped into commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommit {
    /// The most operations one write transaction carries. Default 256.
    /// 1 turns group commit off (one commit per operation).
    pub max_batch: usize,
    /// How long a leader that already sees company waits for more callers
    /// before it commits. Default zero: a batch commits as soon as its leader
    /// has taken what is queued, and a lone caller never waits.
    pub max_wait: Duration,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self {
            max_batch: 256,
            max_wait: Duration::ZERO,
        }
    }
}

/// When an operation must have been applied by. A leader never applies an
/// operation past it, nor one whose caller has gone away (its future
/// dropped): those are answered [`Apply::late`] or dropped, untouched.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    /// The latest instant to apply it.
    pub(crate) at: Instant,
    /// When the engine received it, if the deadline came from a request
    /// (an adapter's): the stall watch judges those too (see `stall.rs`).
    pub(crate) received: Option<Instant>,
}

/// Something that applies a batch of operations and returns one result each, in order.
pub(crate) trait Apply<Op, Done> {
    fn apply_batch(&self, ops: Vec<Op>) -> Vec<Done>;
    /// True if an operation with this deadline must not be applied now.
    fn expired(&self, deadline: &Deadline) -> bool;
    /// The result given to a caller whose operation was not applied
    /// because its deadline passed.
    fn late(&self) -> Done;
    /// A result whose caller went away while its batch ran (the operation
    /// was applied, but nobody will hear of it).
    fn undelivered(&self, done: Done);
    /// The result given to a caller whose batch could not run at all.
    fn failed(&self, why: &'static str) -> Done;
    /// The result given to each caller of a batch during which the storage
    /// engine panicked (the batch did not commit).
    fn panicked(&self) -> Done;
}

struct Slot<Done> {
    done: Option<Done>,
    waker: Option<Waker>,
    /// A synchronous caller (woken by unparking its thread, and able to lead).
    sync: bool,
    /// The caller went away (its future was dropped before the result).
    abandoned: bool,
}

impl<Done> Slot<Done> {
    fn new(waker: Option<Waker>, sync: bool) -> SlotRef<Done> {
        Arc::new(Mutex::new(Self {
            done: None,
            waker,
            sync,
            abandoned: false,
        }))
    }
}

/// Wakes a synchronous caller parked in [`Batcher::submit`].
struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

type SlotRef<Done> = Arc<Mutex<Slot<Done>>>;

/// A queued operation.
struct Entry<Op, Done> {
    op: Op,
    slot: SlotRef<Done>,
    deadline: Deadline,
}

struct State<Op, Done> {
    pending: VecDeque<Entry<Op, Done>>,
    /// Batches in flight.
    leaders: usize,
    helpers_started: bool,
    shutdown: bool,
}

impl<Op, Done> State<Op, Done> {
    fn may_lead(&self, most: usize) -> bool {
        self.leaders < most
    }
}

/// The queue of one engine.
pub(crate) struct Batcher<Op, Done> {
    state: Mutex<State<Op, Done>>,
    cv: Condvar,
    config: GroupCommit,
    /// The most batches in flight at once (at least 1).
    most_leaders: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent: every
    // critical section is a few field updates.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<Op: Send + 'static, Done: Send + 'static> Batcher<Op, Done> {
    /// A queue whose batches run at most `concurrent` at a time.
    pub(crate) fn new(config: GroupCommit, concurrent: usize) -> Self {
        Self {
            state: Mutex::new(State {
                pending: VecDeque::new(),
                leaders: 0,
                helpers_started: false,
                shutdown: false,
            }),
            cv: Condvar::new(),
            config: GroupCommit {
                max_batch: config.max_batch.max(1),
                ..config
            },
            most_leaders: concurrent.max(1),
        }
    }

    /// Runs `op` in a batch and returns its result, leading a batch on this
    /// thread whenever none is in progress.
    ///
    /// Waiting callers park and are woken one by one (their own result, or
    /// the turn to lead the next batch), never all at once.
    pub(crate) fn submit(&self, op: Op, deadline: Deadline, engine: &impl Apply<Op, Done>) -> Done {
        let slot = Slot::new(Some(Waker::from(Arc::new(Unpark(std::thread::current())))), true);
        let mut st = lock(&self.state);
        st.pending.push_back(Entry {
            op,
            slot: Arc::clone(&slot),
            deadline,
        });
        loop {
            if let Some(done) = lock(&slot).done.take() {
                return done;
            }
            // Lead only if there is work: with several leaders allowed, a
            // caller whose operation another leader already took waits for
            // its result instead of committing an empty batch.
            if st.may_lead(self.most_leaders) && !st.pending.is_empty() {
                st = self.lead(st, engine);
                continue;
            }
            drop(st);
            // An unpark that raced ahead of this park makes it return at once.
            std::thread::park();
            st = lock(&self.state);
        }
    }

    /// Queues `op` for an async caller; the returned future resolves when
    /// its batch has committed (or failed). Never runs a batch on the
    /// caller's thread. Dropping the future withdraws the operation if no
    /// batch has taken it yet; if one has, its result goes to
    /// [`Apply::undelivered`].
    pub(crate) fn submit_async<E>(self: &Arc<Self>, op: Op, deadline: Deadline, engine: Weak<E>) -> Wait<Done>
    where
        E: Apply<Op, Done> + Send + Sync + 'static,
    {
        let slot = Slot::new(None, false);
        let mut st = lock(&self.state);
        st.pending.push_back(Entry {
            op,
            slot: Arc::clone(&slot),
            deadline,
        });
        let idle = st.may_lead(self.most_leaders);
        if !st.helpers_started {
            st.helpers_started = true;
            // One helper per batch that may be in flight; at least the
            // first must start, or async callers would never be served.
            for n in 0..self.most_leaders {
                let me = Arc::clone(self);
                let engine = Weak::clone(&engine);
                let spawned = std::thread::Builder::new()
                    .name(format!("rotoken-commit-{n}"))
                    .spawn(move || me.helper(&engine));
                if spawned.is_err() && n == 0 {
                    st.helpers_started = false;
                    st.pending.retain(|e| !Arc::ptr_eq(&e.slot, &slot));
                    return Wait {
                        slot,
                        fallback: Some("could not start the commit thread"),
                        lost: None,
                    };
                }
            }
        }
        if idle {
            // Otherwise the running leader hands over when it is done.
            self.cv.notify_all();
        }
        let lost: Lost<Done> = Box::new(move |done| {
            if let Some(engine) = engine.upgrade() {
                engine.undelivered(done);
            }
        });
        Wait {
            slot,
            fallback: None,
            lost: Some(lost),
        }
    }

    /// A helper thread of async callers: leads while work is queued and
    /// fewer than the most leaders run; exits when the engine is gone.
    fn helper<E: Apply<Op, Done>>(&self, engine: &Weak<E>) {
        let mut st = lock(&self.state);
        loop {
            if st.shutdown {
                return;
            }
            if st.may_lead(self.most_leaders) && !st.pending.is_empty() {
                let Some(strong) = engine.upgrade() else {
                    return;
                };
                // Release the queue before the engine: dropping the last
                // handle runs the engine's drop, which takes the queue lock.
                drop(self.lead(st, &*strong));
                drop(strong);
                st = lock(&self.state);
                continue;
            }
            st = self.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Leads one batch: takes up to `max_batch` queued operations, applies
    /// them without holding the queue lock, fills their slots, and wakes
    /// everyone waiting.
    fn lead<'a>(
        &'a self,
        mut st: MutexGuard<'a, State<Op, Done>>,
        engine: &impl Apply<Op, Done>,
    ) -> MutexGuard<'a, State<Op, Done>> {
        st.leaders += 1;
        let mut batch = self.take(&mut st, Vec::new(), engine);
        if !self.config.max_wait.is_zero() && batch.len() > 1 && batch.len() < self.config.max_batch {
            drop(st);
            std::thread::sleep(self.config.max_wait);
            st = lock(&self.state);
            batch = self.take(&mut st, batch, engine);
        }
        drop(st);
        let (ops, slots): (Vec<Op>, Vec<SlotRef<Done>>) = batch.into_iter().unzip();
        let expected = slots.len();
        let run = if ops.is_empty() {
            Ok(Vec::new())
        } else {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.apply_batch(ops)))
        };
        match run {
            Ok(dones) if dones.len() == expected => {
                for (slot, done) in slots.iter().zip(dones) {
                    finish(slot, done, engine);
                }
            }
            Ok(_) => {
                for slot in &slots {
                    finish(
                        slot,
                        engine.failed("a batch returned the wrong number of results"),
                        engine,
                    );
                }
            }
            Err(_) => {
                for slot in &slots {
                    finish(slot, engine.panicked(), engine);
                }
            }
        }
        let mut st = lock(&self.state);
        st.leaders -= 1;
        self.hand_over(&st);
        st
    }

    /// Wakes whoever should lead the next batch: the caller at the head of
    /// the queue if it is synchronous, else the helper thread.
    fn hand_over(&self, st: &State<Op, Done>) {
        let Some(Entry { slot: head, .. }) = st.pending.front() else {
            return;
        };
        let head = lock(head);
        match (&head.waker, head.sync) {
            (Some(w), true) => w.wake_by_ref(),
            _ => self.cv.notify_all(),
        }
    }

    /// Takes queued operations into `batch`, up to `max_batch`, except
    /// those whose caller went away (dropped) and those past their
    /// deadline (answered [`Apply::late`]): neither is ever applied.
    fn take(
        &self,
        st: &mut State<Op, Done>,
        mut batch: Vec<(Op, SlotRef<Done>)>,
        engine: &impl Apply<Op, Done>,
    ) -> Vec<(Op, SlotRef<Done>)> {
        while batch.len() < self.config.max_batch {
            let Some(entry) = st.pending.pop_front() else {
                break;
            };
            if lock(&entry.slot).abandoned {
                continue;
            }
            if engine.expired(&entry.deadline) {
                finish(&entry.slot, engine.late(), engine);
                continue;
            }
            batch.push((entry.op, entry.slot));
        }
        batch
    }

    /// Stops the helper thread (called when the engine is dropped).
    pub(crate) fn shutdown(&self) {
        lock(&self.state).shutdown = true;
        self.cv.notify_all();
    }
}

/// Stores a caller's result and wakes it; a result whose caller went away
/// goes to [`Apply::undelivered`].
fn finish<Op, Done>(slot: &SlotRef<Done>, done: Done, engine: &impl Apply<Op, Done>) {
    let mut s = lock(slot);
    if s.abandoned {
        drop(s);
        engine.undelivered(done);
        return;
    }
    s.done = Some(done);
    if let Some(w) = s.waker.take() {
        w.wake();
    }
}

/// Where a result goes whose future was dropped after it was ready.
type Lost<Done> = Box<dyn FnOnce(Done) + Send>;

/// A future that resolves to an async caller's result, or to `Err` with a
/// reason if the operation could not be queued.
pub(crate) struct Wait<Done> {
    slot: SlotRef<Done>,
    fallback: Option<&'static str>,
    lost: Option<Lost<Done>>,
}

/// A caller that stops waiting withdraws its operation: a batch not yet
/// formed never applies it; a result already made goes to the engine.
impl<Done> Drop for Wait<Done> {
    fn drop(&mut self) {
        if self.fallback.is_some() {
            return;
        }
        let mut s = lock(&self.slot);
        s.waker = None;
        match s.done.take() {
            Some(done) => {
                drop(s);
                if let Some(lost) = self.lost.take() {
                    lost(done);
                }
            }
            None => s.abandoned = true,
        }
    }
}

impl<Done> Future for Wait<Done> {
    type Output = Result<Done, &'static str>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(why) = self.fallback {
            return Poll::Ready(Err(why));
        }
        let mut s = lock(&self.slot);
        match s.done.take() {
            Some(done) => Poll::Ready(Ok(done)),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Echoes each operation, records batch sizes, holds its first batch
    /// until `gate` opens, and panics on the operation `u32::MAX`.
    #[derive(Default)]
    struct Recorder {
        sizes: Mutex<Vec<usize>>,
        gate: AtomicBool,
        undelivered: Mutex<Vec<u32>>,
    }

    impl Apply<u32, u32> for Recorder {
        fn apply_batch(&self, ops: Vec<u32>) -> Vec<u32> {
            assert!(!ops.is_empty(), "an empty batch was led");
            let first = {
                let mut sizes = lock(&self.sizes);
                sizes.push(ops.len());
                sizes.len() == 1
            };
            while first && !self.gate.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            assert!(!ops.contains(&u32::MAX), "a batch leader panics");
            ops
        }

        fn failed(&self, _why: &'static str) -> u32 {
            1_000_000
        }

        fn panicked(&self) -> u32 {
            2_000_000
        }

        fn expired(&self, deadline: &Deadline) -> bool {
            deadline.at <= Instant::now()
        }

        fn late(&self) -> u32 {
            3_000_000
        }

        fn undelivered(&self, done: u32) {
            lock(&self.undelivered).push(done);
        }
    }

    fn soon() -> Deadline {
        Deadline {
            at: Instant::now() + Duration::from_secs(60),
            received: None,
        }
    }

    fn wait_until(mut ready: impl FnMut() -> bool) {
        while !ready() {
            std::thread::yield_now();
        }
    }

    /// Callers that arrive while a batch commits form the next batch, all
    /// of them together, each getting its own result.
    #[test]
    fn callers_queued_behind_a_batch_share_the_next_one() {
        let batcher = Arc::new(Batcher::<u32, u32>::new(GroupCommit::default(), 1));
        let rec = Arc::new(Recorder::default());
        std::thread::scope(|s| {
            let first = s.spawn(|| batcher.submit(0, soon(), &*rec));
            wait_until(|| lock(&rec.sizes).len() == 1);
            let rest: Vec<_> = (1..=7)
                .map(|i| {
                    let (batcher, rec) = (&batcher, &rec);
                    s.spawn(move || batcher.submit(i, soon(), &**rec))
                })
                .collect();
            wait_until(|| lock(&batcher.state).pending.len() == 7);
            rec.gate.store(true, Ordering::SeqCst);
            assert_eq!(first.join().unwrap(), 0);
            let mut got: Vec<u32> = rest.into_iter().map(|h| h.join().unwrap()).collect();
            got.sort_unstable();
            assert_eq!(got, (1..=7).collect::<Vec<_>>());
        });
        assert_eq!(*lock(&rec.sizes), vec![1, 7]);
    }

    /// A leader that panics fails its own batch (every caller in it gets
    /// the `panicked` answer) and hangs nobody; the next batch runs.
    #[test]
    fn a_panicking_batch_fails_its_callers_and_the_batcher_goes_on() {
        let batcher = Arc::new(Batcher::<u32, u32>::new(GroupCommit::default(), 1));
        let rec = Arc::new(Recorder::default());
        rec.gate.store(true, Ordering::SeqCst);
        let answers: Vec<u32> = std::thread::scope(|s| {
            let hs: Vec<_> = [5, u32::MAX, 6]
                .into_iter()
                .map(|op| {
                    let (batcher, rec) = (&batcher, &rec);
                    s.spawn(move || batcher.submit(op, soon(), &**rec))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // The panicking operation's batch answered `panicked`; others may
        // have been in other batches and got their echo.
        assert_eq!(answers[1], 2_000_000);
        for (op, got) in [(5, answers[0]), (6, answers[2])] {
            assert!(got == op || got == 2_000_000, "{op} -> {got}");
        }
        assert_eq!(batcher.submit(9, soon(), &*rec), 9, "the batcher still works");
    }

    /// A store that takes several writers at once gets several batches in
    /// flight: a caller arriving while one batch is held up leads its own.
    #[test]
    fn a_second_batch_runs_beside_a_held_one_when_the_store_allows_two() {
        let batcher = Arc::new(Batcher::<u32, u32>::new(GroupCommit::default(), 2));
        let rec = Arc::new(Recorder::default());
        std::thread::scope(|s| {
            let first = s.spawn(|| batcher.submit(0, soon(), &*rec));
            wait_until(|| lock(&rec.sizes).len() == 1);
            // The first batch is still held at the gate.
            assert_eq!(batcher.submit(1, soon(), &*rec), 1);
            assert_eq!(lock(&batcher.state).leaders, 1);
            rec.gate.store(true, Ordering::SeqCst);
            assert_eq!(first.join().unwrap(), 0);
        });
        assert_eq!(*lock(&rec.sizes), vec![1, 1]);
    }

    /// An operation whose deadline passed while it was queued is answered
    /// `late` and never reaches a batch.
    #[test]
    fn an_operation_past_its_deadline_is_never_applied() {
        let batcher = Arc::new(Batcher::<u32, u32>::new(GroupCommit::default(), 1));
        let rec = Arc::new(Recorder::default());
        std::thread::scope(|s| {
            let first = s.spawn(|| batcher.submit(0, soon(), &*rec));
            wait_until(|| lock(&rec.sizes).len() == 1);
            let short = Deadline {
                at: Instant::now() + Duration::from_millis(20),
                received: None,
            };
            let (b, r) = (&batcher, &rec);
            let late = s.spawn(move || b.submit(7, short, &**r));
            wait_until(|| lock(&batcher.state).pending.len() == 1);
            std::thread::sleep(Duration::from_millis(40));
            rec.gate.store(true, Ordering::SeqCst);
            assert_eq!(first.join().unwrap(), 0);
            assert_eq!(late.join().unwrap(), 3_000_000);
        });
        assert_eq!(*lock(&rec.sizes), vec![1], "the late operation formed no batch");
    }

    /// An async caller that stops waiting withdraws its operation: it is
    /// never applied; and a result made after its caller left goes to
    /// `undelivered`.
    #[test]
    fn a_dropped_waiter_withdraws_its_operation_or_hands_its_result_back() {
        let batcher = Arc::new(Batcher::<u32, u32>::new(GroupCommit::default(), 1));
        let rec = Arc::new(Recorder::default());
        std::thread::scope(|s| {
            let first = s.spawn(|| batcher.submit(0, soon(), &*rec));
            wait_until(|| lock(&rec.sizes).len() == 1);
            // Queued behind the held batch, then abandoned.
            drop(batcher.submit_async(5, soon(), Arc::downgrade(&rec)));
            rec.gate.store(true, Ordering::SeqCst);
            assert_eq!(first.join().unwrap(), 0);
        });
        assert_eq!(batcher.submit(9, soon(), &*rec), 9);
        assert_eq!(*lock(&rec.sizes), vec![1, 1], "5 was never applied");
        assert!(lock(&rec.undelivered).is_empty());

        // Taken into a batch, then abandoned while it runs.
        let rec = Arc::new(Recorder::default());
        let batcher = Arc::new(Batcher::<u32, u32>::new(GroupCommit::default(), 1));
        let wait = batcher.submit_async(6, soon(), Arc::downgrade(&rec));
        wait_until(|| lock(&rec.sizes).len() == 1);
        drop(wait);
        rec.gate.store(true, Ordering::SeqCst);
        wait_until(|| !lock(&rec.undelivered).is_empty());
        assert_eq!(*lock(&rec.undelivered), vec![6]);
    }
}
