//! Delivers committed events to in-process subscribers, off the commit path.
//!
//! A batch leader hands each commit's events to a bounded queue and goes
//! on: it never runs a subscriber, never waits for one, and never opens a
//! grant for one. A delivery thread (started with the first subscriber)
//! opens each event's grant and calls every subscriber in turn, catching
//! a subscriber's panic. So a subscriber may call the engine (revoke the
//! subject on reuse, say) without deadlocking the writer, and a panicking
//! one cannot turn a committed answer into an error.
//!
//! When subscribers fall more than the queue's capacity behind, the
//! newest commits' events are not queued (the commit path never blocks);
//! [`Stats::events_not_delivered`](crate::Stats::events_not_delivered)
//! counts them, and the stored log ([`Engine::events`](crate::Engine::events))
//! still has every one: a subscriber that cares resumes from it by
//! sequence number.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::grant::Grant;
use crate::protocol::Protocol;
use crate::record::{Event, FamilyRecord};

/// A subscriber: called on the engine's delivery thread with each event,
/// after the commit that recorded it, in commit order.
pub type EventSink = Arc<dyn Fn(&Notice) + Send + Sync>;

/// An event as an in-process subscriber sees it: the stored event (which
/// names only the family, P1) and the family's opened grant, so a
/// subscriber can tie it to a user. The grant never leaves the process
/// unless the subscriber sends it somewhere.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Notice {
    /// The event, as stored in the log.
    pub event: Event,
    /// The family's grant (subject, client, scope, metadata); `None` when
    /// it cannot be opened (sealed under a key since removed).
    pub grant: Option<Grant>,
}

/// One commit's events, each with the family's record as committed
/// (`None` for events that concern no family: a policy change).
pub(crate) type Committed = Vec<(Event, Option<FamilyRecord>)>;

/// Commits' worth of events the queue holds before new ones are counted
/// as not delivered.
pub(crate) const QUEUE_COMMITS: usize = 1024;

/// What the delivery thread receives.
enum Msg {
    /// One commit's events.
    Events(Committed),
    /// Answer once everything queued before has been delivered.
    Flush(SyncSender<()>),
}

/// The queue and the subscribers of one engine.
pub(crate) struct Delivery {
    queue: Mutex<Option<SyncSender<Msg>>>,
    sinks: Arc<RwLock<Vec<EventSink>>>,
    counts: Arc<Counts>,
    capacity: usize,
}

#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) not_delivered: AtomicU64,
    pub(crate) subscriber_panics: AtomicU64,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("subscribers", &read(&self.sinks).len())
            .finish_non_exhaustive()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

impl Delivery {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::new(None),
            sinks: Arc::new(RwLock::new(Vec::new())),
            counts: Arc::new(Counts::default()),
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn counts(&self) -> &Counts {
        &self.counts
    }

    /// True if anyone listens (the commit path skips gathering records otherwise).
    pub(crate) fn wanted(&self) -> bool {
        !read(&self.sinks).is_empty()
    }

    /// Adds a subscriber, starting the delivery thread with the first.
    ///
    /// # Errors
    ///
    /// The operating system refused a thread.
    pub(crate) fn subscribe(&self, sink: EventSink, protocol: &Arc<Protocol>) -> std::io::Result<()> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.is_none() {
            let (tx, rx) = sync_channel(self.capacity);
            let (sinks, counts, protocol) = (Arc::clone(&self.sinks), Arc::clone(&self.counts), Arc::clone(protocol));
            std::thread::Builder::new()
                .name("rotoken-events".into())
                .spawn(move || deliver(&rx, &sinks, &counts, &protocol))?;
            *queue = Some(tx);
        }
        self.sinks.write().unwrap_or_else(PoisonError::into_inner).push(sink);
        Ok(())
    }

    /// Queues one commit's events; never blocks.
    pub(crate) fn send(&self, committed: Committed) {
        if committed.is_empty() {
            return;
        }
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = queue.as_ref() else {
            return;
        };
        match tx.try_send(Msg::Events(committed)) {
            Ok(()) => {}
            Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) => {
                if let Msg::Events(c) = m {
                    self.counts.not_delivered.fetch_add(c.len() as u64, Ordering::Relaxed);
                }
            }
        }
    }

    /// Blocks until every event queued before this call has been handed to
    /// every subscriber (at once if there are none).
    pub(crate) fn flush(&self) {
        let tx = self.queue.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let Some(tx) = tx else {
            return;
        };
        let (done_tx, done_rx) = sync_channel(1);
        if tx.send(Msg::Flush(done_tx)).is_ok() {
            // An error means the delivery thread is gone: nothing to wait for.
            let _ = done_rx.recv();
        }
    }
}

/// The delivery thread: runs until the engine (the queue's sender) is gone.
fn deliver(rx: &Receiver<Msg>, sinks: &RwLock<Vec<EventSink>>, counts: &Counts, protocol: &Protocol) {
    while let Ok(msg) = rx.recv() {
        let committed = match msg {
            Msg::Events(c) => c,
            Msg::Flush(done) => {
                // The flusher may have given up waiting; nothing to do then.
                let _ = done.send(());
                continue;
            }
        };
        for (event, rec) in committed {
            let grant = rec.and_then(|rec| protocol.grant_if_openable(&event.family, &rec).ok().flatten());
            let notice = Notice { event, grant };
            // Cloned out so a subscriber may subscribe another without deadlock.
            let now: Vec<EventSink> = read(sinks).clone();
            for sink in now {
                if catch_unwind(AssertUnwindSafe(|| sink(&notice))).is_err() {
                    counts.subscriber_panics.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::EventKind;
    use crate::{Grant, Keyring, Policy, Scope};

    /// A subscriber that does not keep up never blocks the commit path:
    /// what does not fit in the queue is counted, and delivery goes on.
    #[test]
    fn a_stuck_subscriber_never_blocks_a_commit() {
        let protocol = Arc::new(Protocol::new(Keyring::generate().unwrap(), Policy::default()));
        let grant = Grant::new("alice", "web", Scope::parse("openid").unwrap());
        let issued = protocol.prepare_issue(&grant, 0).unwrap();
        let committed = |seq| {
            let event = Event {
                seq,
                at_millis: 0,
                family: issued.issued.family,
                kind: EventKind::Expired,
            };
            vec![(event, Some(issued.rec.clone()))]
        };
        let delivery = Delivery::new(2);
        let (release_tx, release_rx) = sync_channel::<()>(0);
        let release_rx = Mutex::new(release_rx);
        let got = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&got);
        delivery
            .subscribe(
                Arc::new(move |n: &Notice| {
                    // Held until the test releases it, once per event.
                    let _ = release_rx.lock().unwrap().recv();
                    seen.lock()
                        .unwrap()
                        .push((n.event.seq, n.grant.clone().map(|g| g.subject)));
                }),
                &protocol,
            )
            .unwrap();
        // One event is taken by the stuck subscriber, two wait in the
        // queue; the rest do not fit. None of these sends blocks.
        for seq in 1..=10 {
            delivery.send(committed(seq));
        }
        let not_delivered = delivery.counts().not_delivered.load(Ordering::Relaxed);
        assert!((7..=8).contains(&not_delivered), "{not_delivered}");
        for _ in 0..10 - not_delivered {
            release_tx.send(()).unwrap();
        }
        delivery.flush();
        let got = got.lock().unwrap().clone();
        assert_eq!(got.len() as u64, 10 - not_delivered);
        assert_eq!(got[0], (1, Some("alice".to_owned())), "in order, with the grant");
    }
}
