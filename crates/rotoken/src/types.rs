//! The engine's public types: how to open it, what its calls take and return.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::batch::GroupCommit;
use crate::clock::{Clock, SystemClock};
use crate::grant::{Grant, Scope};
use crate::notify::EventSink;
use crate::policy::Policy;
use crate::record::RevokeReason;
use crate::token::{FamilyId, RefreshToken};

/// How to open an [`Engine`].
#[derive(Clone)]
pub struct Options {
    /// The rules families live by.
    pub policy: Policy,
    /// Where time comes from.
    pub clock: Arc<dyn Clock>,
    /// A subscriber called with each event after its commit (for alerting
    /// and audit), on the engine's delivery thread, never on the commit
    /// path. See [`Engine::subscribe`](crate::Engine::subscribe), which
    /// also adds subscribers to an open engine.
    pub on_event: Option<EventSink>,
    /// How often the engine's background thread collects expired families
    /// and events past retention (in bounded steps). Default every 60 s;
    /// `None` leaves gc to the caller ([`Engine::gc`](crate::Engine::gc)).
    pub gc_every: Option<Duration>,
    /// redb page cache size in bytes (redb's default when `None`).
    pub cache_size: Option<usize>,
    /// How concurrent writes share commits.
    pub group_commit: GroupCommit,
    /// How long an operation may wait to be applied when its caller gives
    /// no deadline of its own ([`RotateRequest::deadline`]). Past it the
    /// operation is never applied and fails with
    /// [`StoreError::DeadlinePassed`](crate::StoreError::DeadlinePassed)
    /// (retryable). Default 10 s.
    pub deadline: Duration,
    /// How long the whole process may stand still (SIGSTOP, a VM pause, a
    /// starved container) before the engine calls it a stall: operations
    /// that came with a request's deadline and were received before the
    /// stall was seen, or within this long after, are not applied and fail
    /// with [`StoreError::DeadlinePassed`](crate::StoreError::DeadlinePassed),
    /// since their clients have likely given up and retried elsewhere.
    /// Default 2 s; `None` turns the watch (a thread) off.
    pub stall_threshold: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            clock: Arc::new(SystemClock),
            on_event: None,
            gc_every: Some(Duration::from_secs(60)),
            cache_size: None,
            group_commit: GroupCommit::default(),
            deadline: Duration::from_secs(10),
            stall_threshold: Some(Duration::from_secs(2)),
        }
    }
}

/// Setters in the builder style every rotoken crate uses:
/// `Options::default().with_policy(p).with_gc_every(None)`.
impl Options {
    /// The rules families live by.
    #[must_use]
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Where time comes from (a [`ManualClock`](crate::ManualClock) in tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A subscriber for every committed event (see [`Options::on_event`]).
    #[must_use]
    pub fn with_subscriber(mut self, sink: impl Fn(&crate::Notice) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(sink));
        self
    }

    /// How often background gc runs; `None` turns it off.
    #[must_use]
    pub fn with_gc_every(mut self, every: Option<Duration>) -> Self {
        self.gc_every = every;
        self
    }

    /// redb page cache size in bytes.
    #[must_use]
    pub fn with_cache_size(mut self, bytes: usize) -> Self {
        self.cache_size = Some(bytes);
        self
    }

    /// How concurrent writes share commits.
    #[must_use]
    pub fn with_group_commit(mut self, group_commit: GroupCommit) -> Self {
        self.group_commit = group_commit;
        self
    }

    /// How long an operation may wait to be applied (see [`Options::deadline`]).
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("policy", &self.policy)
            .field("clock", &self.clock)
            .field("on_event", &self.on_event.is_some())
            .field("gc_every", &self.gc_every)
            .field("cache_size", &self.cache_size)
            .field("group_commit", &self.group_commit)
            .field("deadline", &self.deadline)
            .field("stall_threshold", &self.stall_threshold)
            .finish()
    }
}

/// A newly issued family.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Issued {
    /// The first refresh token (generation 0).
    pub refresh_token: RefreshToken,
    /// The new family.
    pub family: FamilyId,
    /// Always 0.
    pub generation: u32,
    /// When the token stops working unless rotated (the earlier of idle and absolute expiry).
    pub expires_at: OffsetDateTime,
    /// When the family ends whatever its use (its absolute lifetime): the
    /// end of the authorization, after which the user must sign in again.
    pub authorization_expires_at: OffsetDateTime,
}

/// What a refresh asks for, besides the token.
#[derive(Debug, Clone, Default)]
pub struct RotateRequest {
    /// The authenticated client presenting the token.
    pub client_id: String,
    /// A narrower scope for the access token the caller will mint.
    pub scope: Option<Scope>,
    /// Thumbprint of the key the client proved possession of (DPoP `jkt`, mTLS).
    pub confirmation: Option<String>,
    /// The latest instant the rotation may be applied: an adapter passes
    /// its request's (the time it read the request plus what its client
    /// waits). Past it, or once the caller has gone away (its future
    /// dropped), the rotation is never applied and fails with
    /// [`StoreError::DeadlinePassed`](crate::StoreError::DeadlinePassed),
    /// retryable: a request its client abandoned and retried elsewhere
    /// must not be judged late as a replay. `None`: the engine's
    /// [`Options::deadline`] from the call.
    pub deadline: Option<std::time::Instant>,
}

impl RotateRequest {
    /// A request from `client_id` for the whole granted scope.
    pub fn new(client_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            ..Self::default()
        }
    }
}

/// The result of a successful refresh.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Rotated {
    /// The new refresh token to hand to the client.
    pub refresh_token: RefreshToken,
    /// The family.
    pub family: FamilyId,
    /// The new token's generation.
    pub generation: u32,
    /// When the new token stops working unless rotated.
    pub expires_at: OffsetDateTime,
    /// When the family ends whatever its use (its absolute lifetime, never
    /// moved by a rotation): the end of the authorization.
    pub authorization_expires_at: OffsetDateTime,
    /// The family's grant (subject, client, granted scope, binding, metadata); never changed by a refresh.
    pub grant: Grant,
    /// The scope for the access token: the requested narrower scope, or the grant's.
    pub scope: Scope,
    /// True if this was a retry of the immediate predecessor within the
    /// grace window, answered with the successor minted before.
    pub retried: bool,
}

/// RFC 7662 introspection of a refresh token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Introspection {
    /// True only for a family's current token, live and unexpired.
    pub active: bool,
    /// Granted scope.
    pub scope: Option<Scope>,
    /// Client the token is bound to.
    pub client_id: Option<String>,
    /// Subject.
    pub sub: Option<String>,
    /// Expiry, unix seconds.
    pub exp: Option<i64>,
    /// When this token was minted, unix seconds.
    pub iat: Option<i64>,
    /// Always `refresh_token` when active.
    pub token_type: Option<&'static str>,
    /// Confirmation key thumbprint (RFC 9449 §6.2 `cnf.jkt`).
    pub cnf_jkt: Option<String>,
    /// The family id.
    pub family: Option<FamilyId>,
    /// The token's generation.
    pub generation: Option<u32>,
}

/// What to revoke.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum RevokeTarget<'a> {
    /// The family of this token, whoever it was issued to (an operator's
    /// or the owning server's own call).
    Token(&'a str),
    /// The family of this token, only if it was issued to `client_id`: what
    /// a revocation endpoint must use (RFC 7009 §2.1), so a client holding
    /// another client's token (current or old) cannot end that client's
    /// session. A mismatch is [`RevokeError::ClientMismatch`] and revokes
    /// nothing.
    TokenOfClient {
        /// The presented refresh token (any generation of the family).
        token: &'a str,
        /// The authenticated client making the request.
        client_id: &'a str,
    },
    /// One family.
    Family(FamilyId),
    /// Every family of a subject (log out everywhere).
    Subject(&'a str),
    /// Every family of a client.
    Client(&'a str),
}

/// One family of a subject, as listed by [`Engine::sessions`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Session {
    /// The family.
    pub family: FamilyId,
    /// Its client.
    pub client_id: String,
    /// Its granted scope.
    pub scope: Scope,
    /// Current generation.
    pub generation: u32,
    /// When it was issued.
    pub created_at: OffsetDateTime,
    /// When it last rotated.
    pub rotated_at: OffsetDateTime,
    /// When it stops working unless rotated.
    pub expires_at: OffsetDateTime,
    /// Whether it can still be refreshed (not revoked, not expired).
    pub active: bool,
    /// Why it was revoked, if it was.
    pub revoked: Option<RevokeReason>,
    /// Set when the family's grant cannot be opened (sealed under a key
    /// since removed from the key file): what is wrong, naming the key.
    /// `client_id` and `scope` are empty then; the other sessions are
    /// listed as usual.
    pub unreadable: Option<String>,
}

/// What one [`Engine::gc`] step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct GcReport {
    /// Families removed (expired or revoked past retention).
    pub removed: usize,
    /// Live families whose expiry-index entry was moved to their later deadline.
    pub rescheduled: usize,
    /// Events removed past retention.
    pub events_removed: usize,
    /// True if more work was due than `limit` allowed; call again.
    pub more: bool,
}

/// One inconsistency found by [`Engine::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The table it was found in.
    pub table: &'static str,
    /// The entry's key, as text.
    pub key: String,
    /// What is wrong.
    pub what: String,
}

/// The result of [`Engine::check`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CheckReport {
    /// Families examined.
    pub families: usize,
    /// Of which active (not revoked).
    pub active: usize,
    /// Index entries examined.
    pub index_entries: usize,
    /// Events examined.
    pub events: usize,
    /// Every inconsistency found; empty when the database is sound.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// True if no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Counters since the engine was opened: the write path, background gc,
/// and event delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Committed batches (write transactions of issue, rotate and revoke).
    pub batches: u64,
    /// Operations carried by those batches.
    pub operations: u64,
    /// Commits made durable (every commit, unless durability is relaxed), gc included.
    pub durable_commits: u64,
    /// The most operations one batch carried.
    pub largest_batch: u64,
    /// Transactions run again because the store reported a conflict with
    /// another writer (a shared store's serialization failure or deadlock).
    pub conflicts_retried: u64,
    /// The most families one write transaction locked (a large subject or
    /// client revocation takes steps of at most 1,000).
    pub largest_lock: u64,
    /// Families the background gc removed.
    pub gc_removed: u64,
    /// Background gc steps that failed (a storage error or damaged record;
    /// retried at the next interval).
    pub gc_failures: u64,
    /// Events committed (and in the stored log) but not handed to
    /// subscribers because they were more than the queue behind.
    pub events_not_delivered: u64,
    /// Subscriber calls that panicked (caught; delivery went on).
    pub subscriber_panics: u64,
    /// Batches that read a rotation stamped more than a minute ahead of
    /// this engine's time (a server sharing the store with a clock that far
    /// ahead): not taken as the time, so a retry there may be seen as a
    /// replay. Alert on it; fix the clocks (docs/design.md, "Time").
    pub store_time_ahead: u64,
    /// Operations not applied because their deadline passed, their caller
    /// went away, or the process stalled while they waited (retryable).
    pub deadline_passed: u64,
    /// Rotations applied after their caller went away: their successors
    /// were marked undelivered, so the client's retry gets them.
    pub undelivered: u64,
    /// Commits that failed after they may have reached the store and
    /// whose outcome was read back (then answered as what happened).
    pub outcomes_settled: u64,
    /// Commits that failed and could not be read back: answered
    /// `outcome_unknown`, and their successors marked undelivered by the
    /// next batch that commits, if they did commit.
    pub outcomes_unknown: u64,
    /// Operations not applied because another transaction held their
    /// family's lock past the store's lock wait (retryable).
    pub busy: u64,
    /// Rotations that detected reuse and revoked their family (counted by
    /// the engine, so a revocation whose request is gone is still seen).
    pub reuse_detected: u64,
    /// Rotations whose token disagreed with the store (family revoked).
    pub diverged: u64,
    /// Rotations refused without a change (revoked, expired, client or
    /// confirmation mismatch, scope widened, generation limit, unknown).
    pub refused: u64,
    /// Families revoked by this engine, for any reason (reuse, divergence,
    /// requests, the per-user cap).
    pub revoked: u64,
    /// Opens that found the store's clock floor more than a minute ahead of
    /// this engine's clock and did not adopt it (0 or 1 per engine).
    pub clock_floor_ignored: u64,
}
