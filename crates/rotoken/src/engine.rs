//! The engine's front door: opening, and every operation a caller makes,
//! each in a blocking and an `async` form.
//!
//! [`Engine`] is a handle on the shared insides ([`crate::core`]) that its
//! background threads also use: event delivery ([`crate::notify`]) and
//! garbage collection ([`Options::gc_every`]).
//!
//! # Async first
//!
//! A tokio (or any other) server calls the `*_async` methods. None of them
//! blocks the runtime's thread: writes (issue, rotate, revoke) queue for
//! group commit and wake the caller when their commit is done; reads
//! (introspect, sessions, events, gc, check) run on a small blocking pool,
//! so a store round trip (PostgreSQL) never stalls the runtime. The plain
//! methods are for threads that may block: CLIs, tests, FFI callers.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::core::Core;
use crate::error::{IssueError, OpenError, RevokeError, RotateError, StoreError};
use crate::grant::Grant;
use crate::keys::Keyring;
use crate::notify::EventSink;
use crate::policy::Policy;
use crate::policy_store::{PolicyChange, PolicyError};
use crate::record::Event;
use crate::store::{RedbStore, Store};
use crate::token::FamilyId;
use crate::types::{
    CheckReport, GcReport, Introspection, Issued, Options, RevokeTarget, RotateRequest, Rotated, Session, Stats,
};

/// Families one background gc transaction removes at most.
const GC_STEP: usize = 1000;

/// The refresh-token engine over one [`Store`] (a redb file by default).
///
/// `Engine` is `Send + Sync`; share it behind an `Arc`. The store's write
/// transactions give each family exactly one winner, so concurrent
/// rotations of one token mint one successor. Unless
/// [`Options::gc_every`] is `None`, a background thread collects expired
/// families and old events; it stops when the engine is dropped.
pub struct Engine {
    pub(crate) core: Arc<Core>,
    collector: Option<Collector>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.core.fmt(f)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(c) = self.collector.take() {
            c.stop();
        }
    }
}

impl Engine {
    /// Opens (or creates) the redb database file at `path`.
    ///
    /// # Errors
    ///
    /// [`OpenError::Locked`] if another process has it open,
    /// [`OpenError::NotRotoken`] for a file that is not a redb database or a
    /// redb database without rotoken's tables, [`OpenError::UnsupportedSchema`],
    /// [`OpenError::WrongKeys`], [`OpenError::InvalidPolicy`], or a storage error.
    pub fn open(path: impl AsRef<Path>, keys: Keyring, options: Options) -> Result<Self, OpenError> {
        options.policy.validate().map_err(OpenError::InvalidPolicy)?;
        let store = RedbStore::open(path, options.cache_size)?;
        Self::with_store(store, keys, options)
    }

    /// Opens (or creates) a redb database over any redb storage backend
    /// (for example `redb::backends::InMemoryBackend`, or a fault-injecting one in tests).
    ///
    /// # Errors
    ///
    /// As [`Engine::open`].
    pub fn open_with_backend(
        backend: impl redb::StorageBackend,
        keys: Keyring,
        options: Options,
    ) -> Result<Self, OpenError> {
        options.policy.validate().map_err(OpenError::InvalidPolicy)?;
        let store = RedbStore::open_with_backend(backend, options.cache_size)?;
        Self::with_store(store, keys, options)
    }

    /// A new engine over an empty database in memory: for tests and
    /// examples; everything is gone when it is dropped.
    ///
    /// # Errors
    ///
    /// [`OpenError::InvalidPolicy`], or a storage error.
    pub fn in_memory(keys: Keyring, options: Options) -> Result<Self, OpenError> {
        Self::open_with_backend(redb::backends::InMemoryBackend::new(), keys, options)
    }

    /// Opens an engine over any [`Store`] (the PostgreSQL store of
    /// `rotoken-postgres`, say). The first opener records the keyring's
    /// key-check value; later openers must bring the same keys.
    ///
    /// # Errors
    ///
    /// [`OpenError::WrongKeys`], [`OpenError::InvalidPolicy`], a storage
    /// error, or [`StoreError::Unavailable`] if a background thread could
    /// not be started.
    pub fn with_store(store: impl Store, keys: Keyring, options: Options) -> Result<Self, OpenError> {
        let gc_every = options.gc_every;
        let sink = options.on_event.clone();
        let core = Arc::new(Core::new(Box::new(store), keys, options)?);
        core.adopt();
        if let Some(sink) = sink {
            core.subscribe(sink).map_err(thread_refused)?;
        }
        let collector = match gc_every {
            Some(every) => Some(Collector::start(Arc::clone(&core), every).map_err(thread_refused)?),
            None => None,
        };
        Ok(Self { core, collector })
    }

    /// Adds an event subscriber: `sink` is called on the engine's delivery
    /// thread with every event committed from now on, in commit order, with
    /// the family's opened grant (see [`Notice`](crate::Notice)). It may call the engine
    /// (hold a [`std::sync::Weak`] to it, not an `Arc`, or the engine is
    /// never dropped); a panic in it is caught and counted in
    /// [`Stats::subscriber_panics`]. Slow subscribers never slow commits:
    /// see [`Stats::events_not_delivered`] and [`Engine::events`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the delivery thread could not be started.
    pub fn subscribe(&self, sink: impl Fn(&crate::Notice) + Send + Sync + 'static) -> Result<(), StoreError> {
        let sink: EventSink = Arc::new(sink);
        self.core
            .subscribe(sink)
            .map_err(|_| StoreError::Unavailable("could not start the event thread"))
    }

    /// Blocks until every event committed before this call has been handed
    /// to every subscriber: before a graceful exit, or in a test that looks
    /// at what a subscriber received.
    pub fn flush_events(&self) {
        self.core.flush_events();
    }

    /// The clock the engine reads (give the same one to anything else that
    /// must agree with it, such as rotoken-http's access-token minter).
    pub fn clock(&self) -> &Arc<dyn crate::Clock> {
        self.core.clock()
    }

    /// The keyring in use.
    pub fn keyring(&self) -> &Keyring {
        self.core.keyring()
    }

    /// The policy in force: the database's (see [`Engine::set_policy`]),
    /// with this opener's durability.
    pub fn policy(&self) -> Policy {
        self.core.policy()
    }

    /// Changes the database's policy for every opener, recording `by` (an
    /// operator's name, 1-64 bytes) in the policy history and a
    /// `policy_changed` event; returns the policy before. It is in force
    /// for this engine at once and for other servers of a shared store at
    /// their next background gc tick (or when they open). Shortening the
    /// idle lifetime brings the gc time of existing families forward (the
    /// background gc sweeps them in bounded steps). A shorter absolute
    /// lifetime applies to families issued from now on (an issued family's
    /// absolute expiry never moves).
    ///
    /// # Errors
    ///
    /// [`PolicyError::Invalid`], [`PolicyError::InvalidName`], or a storage
    /// error; nothing is changed then.
    pub fn set_policy(&self, policy: Policy, by: &str) -> Result<Policy, PolicyError> {
        self.core.set_policy(policy, by)
    }

    /// The last changes of the database's policy, oldest first.
    ///
    /// # Errors
    ///
    /// A storage error.
    pub fn policy_history(&self) -> Result<Vec<PolicyChange>, StoreError> {
        self.core.policy_history()
    }

    /// The store's name (`redb`, `postgres`).
    pub fn store_name(&self) -> &'static str {
        self.core.store_name()
    }

    /// Counters: batches, operations and durable commits of the write
    /// path, background gc, and event delivery.
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    /// The store's clock floor (unix ms) if this engine found it more than
    /// a minute ahead of its own clock when it opened and did not adopt it
    /// (a server or a CLI run with a clock set wrong wrote it; an event
    /// `clock_floor_ignored` was recorded). An adapter logs a warning;
    /// [`Engine::lower_clock_floor`] repairs the store.
    pub fn clock_floor_ignored(&self) -> Option<i64> {
        self.core.floor_ignored()
    }

    /// Lowers the store's clock floor to this engine's clock if it is
    /// ahead of it, recording a `clock_floor_lowered` event, and returns
    /// the floor as it was (`None`: none stored). The operator's repair
    /// after a server with a clock far ahead persisted its time: engines
    /// already refuse to adopt such a floor, and this removes it. Run it
    /// on a server whose clock is right.
    ///
    /// # Errors
    ///
    /// A storage error; nothing was changed.
    pub fn lower_clock_floor(&self) -> Result<Option<i64>, StoreError> {
        self.core.lower_clock_floor()
    }

    /// Gives free space back to the file system (redb: rewrite every table
    /// in key order, then compact the file). Needs exclusive access: the
    /// background gc pauses meanwhile.
    ///
    /// # Errors
    ///
    /// A storage error (nothing is lost: the rewrite is one transaction),
    /// or [`StoreError::Unavailable`] while another handle (an async call
    /// in flight) shares the engine's insides.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        let every = self.collector.take().map(Collector::stop);
        self.core.disown();
        let result = match Arc::get_mut(&mut self.core) {
            Some(core) => core.compact(),
            None => Err(StoreError::Unavailable("compaction needs the engine to itself")),
        };
        self.core.adopt();
        if let Some(every) = every {
            self.collector = Some(
                Collector::start(Arc::clone(&self.core), every)
                    .map_err(|_| StoreError::Unavailable("could not restart the gc thread"))?,
            );
        }
        result
    }

    /// Issues a new family for `grant` and returns its first refresh token
    /// and its family id.
    ///
    /// Concurrent calls share write transactions and durable commits with
    /// other writes (group commit); the call returns once the commit that
    /// holds the new family is done.
    ///
    /// # Errors
    ///
    /// [`IssueError::InvalidInput`] for a grant that fails
    /// [`Grant::validate`], or a storage error.
    pub fn issue(&self, grant: &Grant) -> Result<Issued, IssueError> {
        self.core.issue(grant)
    }

    /// [`Engine::issue`] for async callers: waits for the commit without
    /// blocking the runtime's thread (a helper thread commits).
    ///
    /// # Errors
    ///
    /// As [`Engine::issue`].
    pub async fn issue_async(&self, grant: &Grant) -> Result<Issued, IssueError> {
        self.core.issue_async(grant).await
    }

    /// Rotates a refresh token: checks it, and returns its successor.
    ///
    /// The checks run in the order written in `protocol.rs` (and
    /// `docs/design.md`): checksum and authenticator (no storage access),
    /// request fields, lookup, revoked state, client, confirmation key,
    /// expiry, generation, scope, generation limit. Concurrent calls share
    /// write transactions and durable commits (group commit); a token is
    /// returned only after the commit that stored it.
    ///
    /// # Errors
    ///
    /// Every [`RotateError`] variant. [`RotateError::ReuseDetected`] and
    /// [`RotateError::Diverged`] have revoked the family and recorded an
    /// event; all other errors changed nothing.
    pub fn rotate(&self, token: &str, request: &RotateRequest) -> Result<Rotated, RotateError> {
        self.core.rotate(token, request)
    }

    /// [`Engine::rotate`] for async callers: waits for the commit without
    /// blocking the runtime's thread (a helper thread commits).
    ///
    /// # Errors
    ///
    /// As [`Engine::rotate`].
    pub async fn rotate_async(&self, token: &str, request: &RotateRequest) -> Result<Rotated, RotateError> {
        self.core.rotate_async(token, request).await
    }

    /// Revokes families; returns how many were newly revoked (already
    /// revoked or unknown families count 0). Revoking a token revokes its
    /// family (RFC 7009), whichever generation the token is. Subject and
    /// client revocations find their families inside the same write
    /// transaction, so a family issued concurrently is either revoked or
    /// issued after the revocation, never missed in between.
    ///
    /// # Errors
    ///
    /// [`RevokeError::Malformed`] or [`RevokeError::InvalidToken`] for a bad
    /// token (an HTTP adapter answers these with 200, as RFC 7009 says),
    /// [`RevokeError::InvalidInput`], [`RevokeError::ClientMismatch`], or a
    /// storage error.
    pub fn revoke(&self, target: RevokeTarget<'_>) -> Result<usize, RevokeError> {
        self.core.revoke(target)
    }

    /// [`Engine::revoke`] for async callers.
    ///
    /// # Errors
    ///
    /// As [`Engine::revoke`].
    pub async fn revoke_async(&self, target: RevokeTarget<'_>) -> Result<usize, RevokeError> {
        self.core.revoke_async(target).await
    }

    /// Introspects a refresh token (RFC 7662). Never changes state.
    /// Malformed, forged, unknown, retired, revoked and expired tokens are
    /// all simply `active: false`.
    ///
    /// # Errors
    ///
    /// A storage error only.
    pub fn introspect(&self, token: &str) -> Result<Introspection, StoreError> {
        self.core.introspect(token)
    }

    /// [`Engine::introspect`] for async callers (runs on the blocking pool).
    ///
    /// # Errors
    ///
    /// As [`Engine::introspect`].
    pub async fn introspect_async(&self, token: &str) -> Result<Introspection, StoreError> {
        let token = Zeroizing::new(token.to_owned());
        self.off_runtime(move |core| core.introspect(&token)).await
    }

    /// True if `family` exists, is not revoked and has not expired: what an
    /// introspection endpoint asks about the family an access token names
    /// (its `sid`), so a revocation reaches access tokens at once. Opens no
    /// grant and changes nothing.
    ///
    /// # Errors
    ///
    /// A storage error, or [`StoreError::Corrupt`] for a damaged record.
    pub fn family_is_active(&self, family: &FamilyId) -> Result<bool, StoreError> {
        self.core.family_is_active(family)
    }

    /// [`Engine::family_is_active`] for async callers (runs on the blocking pool).
    ///
    /// # Errors
    ///
    /// As [`Engine::family_is_active`].
    pub async fn family_is_active_async(&self, family: &FamilyId) -> Result<bool, StoreError> {
        let family = *family;
        self.off_runtime(move |core| core.family_is_active(&family)).await
    }

    /// Lists a subject's families (its sessions), revoked ones included
    /// until gc removes them.
    ///
    /// # Errors
    ///
    /// [`crate::InvalidInput`] for a bad subject, or a storage error.
    pub fn sessions(&self, subject: &str) -> Result<Vec<Session>, crate::Error> {
        self.core.sessions(subject)
    }

    /// [`Engine::sessions`] for async callers (runs on the blocking pool).
    ///
    /// # Errors
    ///
    /// As [`Engine::sessions`].
    pub async fn sessions_async(&self, subject: &str) -> Result<Vec<Session>, crate::Error> {
        let subject = subject.to_owned();
        self.off_runtime(move |core| core.sessions(&subject)).await
    }

    /// Events with a sequence number greater than `after`, at most `limit`.
    ///
    /// # Errors
    ///
    /// A storage error, or [`StoreError::Corrupt`] for an undecodable event.
    pub fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.core.events(after, limit)
    }

    /// [`Engine::events`] for async callers (runs on the blocking pool).
    ///
    /// # Errors
    ///
    /// As [`Engine::events`].
    pub async fn events_async(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.off_runtime(move |core| core.events(after, limit)).await
    }

    /// The number of families stored (live, expired or revoked, until gc removes them).
    ///
    /// # Errors
    ///
    /// A storage error.
    pub fn families_count(&self) -> Result<u64, StoreError> {
        self.core.families_count()
    }

    /// One bounded garbage-collection step: removes up to `limit` expired
    /// or revoked-past-retention families (with their index entries) and up
    /// to `limit` events past retention. Call again while `more` is true.
    /// Several servers sharing a store may collect at once: each takes
    /// families the others do not hold. The engine's background gc
    /// ([`Options::gc_every`]) calls this for you.
    ///
    /// # Errors
    ///
    /// A storage error, or [`StoreError::Corrupt`] for a damaged record that
    /// came due; nothing is removed then.
    pub fn gc(&self, limit: usize) -> Result<GcReport, StoreError> {
        self.core.gc(limit)
    }

    /// [`Engine::gc`] for async callers (runs on the blocking pool).
    ///
    /// # Errors
    ///
    /// As [`Engine::gc`].
    pub async fn gc_async(&self, limit: usize) -> Result<GcReport, StoreError> {
        self.off_runtime(move |core| core.gc(limit)).await
    }

    /// Verifies every record and index entry: record MACs and layouts,
    /// that each grant opens and matches its record's tags, that every
    /// family has its index entries and every index entry its family, that
    /// no live family's gc time lies after its absolute expiry, and that
    /// every event decodes. Reads one snapshot; never changes anything.
    ///
    /// # Errors
    ///
    /// A storage error. Inconsistencies are reported in [`CheckReport::problems`].
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        self.core.check()
    }

    /// [`Engine::check`] for async callers (runs on the blocking pool).
    ///
    /// # Errors
    ///
    /// As [`Engine::check`].
    pub async fn check_async(&self) -> Result<CheckReport, StoreError> {
        self.off_runtime(Core::check).await
    }

    /// Runs a read on the blocking pool, so an async caller's thread never
    /// waits for the store.
    async fn off_runtime<T: Send + 'static>(&self, read: impl FnOnce(&Core) -> T + Send + 'static) -> T {
        let core = Arc::clone(&self.core);
        blocking::unblock(move || read(&core)).await
    }
}

fn thread_refused(_: std::io::Error) -> OpenError {
    OpenError::Store(StoreError::Unavailable("could not start a background thread"))
}

/// The background gc thread of one engine.
struct Collector {
    every: Duration,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

impl Collector {
    fn start(core: Arc<Core>, every: Duration) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("rotoken-gc".into())
            .spawn(move || collect(&core, every, &signal))?;
        Ok(Self { every, stop, thread })
    }

    /// Stops the thread (after the step it may be in) and returns its interval.
    fn stop(self) -> Duration {
        *self.stop.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.stop.1.notify_all();
        // A panic in gc was already counted; nothing more to do with it here.
        let _ = self.thread.join();
        self.every
    }
}

/// Every `every`, collects in bounded steps until nothing is due, checking
/// for the stop signal between steps.
fn collect(core: &Core, every: Duration, stop: &(Mutex<bool>, Condvar)) {
    let (flag, cv) = stop;
    let mut stopped = flag.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        stopped = cv
            .wait_timeout_while(stopped, every, |s| !*s)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        if *stopped {
            return;
        }
        drop(stopped);
        loop {
            let more = core.background_gc(GC_STEP);
            if !more || *flag.lock().unwrap_or_else(PoisonError::into_inner) {
                break;
            }
        }
        stopped = flag.lock().unwrap_or_else(PoisonError::into_inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Options, Scope};

    #[test]
    fn family_is_active_follows_revocation() {
        let engine = Engine::in_memory(Keyring::generate().unwrap(), Options::default()).unwrap();
        let grant = Grant::new("alice", "web", Scope::parse("openid").unwrap());
        let issued = engine.issue(&grant).unwrap();
        assert!(engine.family_is_active(&issued.family).unwrap());
        assert!(!engine.family_is_active(&FamilyId::from_bytes([7; 16])).unwrap());
        engine.revoke(RevokeTarget::Family(issued.family)).unwrap();
        assert!(!engine.family_is_active(&issued.family).unwrap());
    }

    #[test]
    fn a_wrong_keyring_is_refused_and_the_right_one_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let keys = Keyring::generate().unwrap();
        let bytes = keys.to_bytes();
        drop(Engine::open(&path, keys, Options::default()).unwrap());
        let err = Engine::open(&path, Keyring::generate().unwrap(), Options::default()).unwrap_err();
        assert!(matches!(err, OpenError::WrongKeys), "{err}");
        assert!(Engine::open(&path, Keyring::from_bytes(&bytes).unwrap(), Options::default()).is_ok());
    }
}
