//! The engine: the state machine of [`crate::state`] over a redb database.
//!
//! Tables (see `docs/design.md`):
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | name | schema version, key-check value |
//! | `families` | family id (16 bytes) | record body ‖ 16-byte MAC |
//! | `by_subject` | subject tag ‖ family id | `()` |
//! | `by_client` | client tag ‖ family id | `()` |
//! | `by_expiry` | gc time (u64 ms, big-endian) ‖ family id | `()` |
//! | `events` | sequence number | event |
//!
//! Every write is one redb write transaction with two-phase commit.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle, WriteTransaction,
};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::batch::{Apply, Batcher, GroupCommit};
use crate::clock::{Clock, SystemClock, duration_millis, from_millis, to_millis};
use crate::error::{IssueError, OpenError, RevokeError, RotateError, StoreError};
use crate::grant::{Grant, MAX_CLIENT_ID_LEN, MAX_CONFIRMATION_LEN, MAX_SUBJECT_LEN, Scope, check_text};
use crate::keys::{Keyring, TAG16, TagKind};
use crate::policy::{Durability, Policy};
use crate::record::{Event, EventKind, FamilyRecord, FamilyState, RevokeReason};
use crate::state::{self, Attempt, Decision, Limits, Refusal, SecretCheck};
use crate::token::{self, FamilyId, RefreshToken, Secret, Token};

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const FAMILIES: TableDefinition<'_, [u8; 16], &[u8]> = TableDefinition::new("families");
const BY_SUBJECT: TableDefinition<'_, [u8; 32], ()> = TableDefinition::new("by_subject");
const BY_CLIENT: TableDefinition<'_, [u8; 32], ()> = TableDefinition::new("by_client");
const BY_EXPIRY: TableDefinition<'_, [u8; 24], ()> = TableDefinition::new("by_expiry");
const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");

const META_SCHEMA: &str = "schema_version";
const META_KEY_CHECK: &str = "key_check";
const META_EVENT_SEQ: &str = "next_event_seq";

/// A callback that receives every event after the commit that recorded it.
pub type EventSink = Arc<dyn Fn(&Event) + Send + Sync>;

/// How to open an [`Engine`].
#[derive(Clone)]
pub struct Options {
    /// The rules families live by.
    pub policy: Policy,
    /// Where time comes from.
    pub clock: Arc<dyn Clock>,
    /// Called with each event after its commit (for alerting and audit).
    pub on_event: Option<EventSink>,
    /// redb page cache size in bytes (redb's default when `None`).
    pub cache_size: Option<usize>,
    /// How concurrent writes share commits.
    pub group_commit: GroupCommit,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            clock: Arc::new(SystemClock),
            on_event: None,
            cache_size: None,
            group_commit: GroupCommit::default(),
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("policy", &self.policy)
            .field("clock", &self.clock)
            .field("on_event", &self.on_event.is_some())
            .field("cache_size", &self.cache_size)
            .field("group_commit", &self.group_commit)
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

/// The refresh-token engine over one redb database file.
///
/// `Engine` is `Send + Sync`; share it behind an `Arc`. redb serialises
/// writers, so concurrent rotations of one token have exactly one winner.
pub struct Engine {
    db: Db,
    /// Set once redb has panicked under this engine: its in-memory state is
    /// then unknown, so every later call is refused with `corrupt`.
    damaged: AtomicBool,
    keys: Keyring,
    policy: Policy,
    limits: Limits,
    clock: Arc<dyn Clock>,
    on_event: Option<EventSink>,
    relaxed_commits: AtomicU32,
    batcher: Arc<Batcher<Op, Done>>,
    stats: Counters,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    operations: AtomicU64,
    durable_commits: AtomicU64,
    largest_batch: AtomicU64,
}

/// Counters of the write path since the engine was opened.
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
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("keys", &self.keys)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Runs `f`, turning a panic into [`StoreError::Corrupt`]. redb 4.6 panics
/// (instead of returning an error) on some damaged files: a flipped bit in a
/// stored table definition, a region bitmap index out of bounds. A damaged
/// file must give the caller an error, not bring the server down. Used where
/// no engine exists yet (opening); an open engine uses
/// [`Engine::catch_redb_panics`], which also marks the engine damaged.
fn catch_redb_panics<T, E: From<StoreError>>(f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| Err(redb_panicked().into()))
}

/// [`catch_redb_panics`] for an open engine: refuses at once if `damaged`
/// is set, and sets it when `f` panics.
fn catch_redb_panics_marking<T, E: From<StoreError>>(
    damaged: &AtomicBool,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    if damaged.load(Ordering::SeqCst) {
        return Err(engine_damaged().into());
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        damaged.store(true, Ordering::SeqCst);
        Err(redb_panicked().into())
    })
}

fn redb_panicked() -> StoreError {
    corrupt("storage", "the storage engine panicked reading damaged data")
}

fn engine_damaged() -> StoreError {
    corrupt(
        "storage",
        "the storage engine panicked earlier on damaged data; reopen after `rotoken check`",
    )
}

/// The redb database, closed inside [`catch_redb_panics`]: redb writes its
/// allocator state when the database is dropped, and panics there on some
/// damaged files.
struct Db(Option<Database>);

impl std::ops::Deref for Db {
    type Target = Database;
    fn deref(&self) -> &Database {
        match &self.0 {
            Some(db) => db,
            // Taken only in `drop`.
            None => unreachable!("database used after close"),
        }
    }
}

impl std::ops::DerefMut for Db {
    fn deref_mut(&mut self) -> &mut Database {
        match &mut self.0 {
            Some(db) => db,
            None => unreachable!("database used after close"),
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let db = self.0.take();
        let _ = catch_redb_panics(move || {
            drop(db);
            Ok::<(), StoreError>(())
        });
    }
}

/// Replaces `def` by a copy written in ascending key order (see
/// [`Engine::compact`]): a scratch table is filled, the original deleted,
/// the scratch table renamed, all inside `txn`.
fn rewrite_in_key_order<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &WriteTransaction,
    def: TableDefinition<'_, K, V>,
) -> Result<(), StoreError> {
    let scratch_name = format!("{}.compacting", def.name());
    let scratch: TableDefinition<'_, K, V> = TableDefinition::new(&scratch_name);
    {
        let from = txn.open_table(def)?;
        let mut to = txn.open_table(scratch)?;
        for entry in from.iter()? {
            let (k, v) = entry?;
            to.insert(k.value(), v.value())?;
        }
    }
    txn.delete_table(def)?;
    txn.rename_table(scratch, def)?;
    Ok(())
}

/// The families listed under `tag` in a subject or client index.
fn index_scan(table: &impl ReadableTable<[u8; 32], ()>, tag: &[u8; TAG16]) -> Result<Vec<FamilyId>, StoreError> {
    let mut out = Vec::new();
    for entry in table.range(pair(tag, &[0; 16])..=pair(tag, &[0xff; 16]))? {
        let k = entry?.0.value();
        let mut f = [0u8; 16];
        f.copy_from_slice(&k[16..]);
        out.push(FamilyId::from_bytes(f));
    }
    Ok(out)
}

/// An operation prepared on its caller's thread, applied by a batch leader.
pub(crate) enum Op {
    Issue(Box<PreparedIssue>),
    Rotate(Box<PreparedRotate>),
    Revoke(PreparedRevoke),
}

pub(crate) struct PreparedIssue {
    rec: FamilyRecord,
    issued: Issued,
}

pub(crate) struct PreparedRotate {
    presented: Token,
    client_tag: [u8; TAG16],
    confirmation_tag: Option<[u8; TAG16]>,
    scope: Option<Scope>,
    successor: Token,
    successor_hash: [u8; TAG16],
    sealed_successor: [u8; crate::record::SEALED_SUCCESSOR_LEN],
}

pub(crate) enum PreparedRevoke {
    /// A family; with the tag of the client it must belong to, for
    /// [`RevokeTarget::TokenOfClient`].
    Family(FamilyId, RevokeReason, Option<[u8; TAG16]>),
    Subject([u8; TAG16]),
    Client([u8; TAG16]),
}

/// What a rotation's storage half hands back to its caller.
pub(crate) struct RotateDone {
    family: FamilyId,
    rec: FamilyRecord,
    successor: Token,
    grant: Grant,
    retried: bool,
}

/// One operation's outcome from a batch.
pub(crate) enum Done {
    Issue(Result<Issued, IssueError>),
    Rotate(Result<Box<RotateDone>, RotateError>),
    Revoke(Result<usize, RevokeError>),
    /// The batch did not commit; nothing of this operation reached the disk.
    Failed(StoreError),
}

impl Done {
    /// A storage failure that poisons the batch (a refusal or corrupt record does not).
    fn storage_failure(&self) -> Option<StoreError> {
        let e = match self {
            Self::Issue(Err(IssueError::Store(e)))
            | Self::Rotate(Err(RotateError::Store(e)))
            | Self::Revoke(Err(RevokeError::Store(e)))
            | Self::Failed(e) => e,
            _ => return None,
        };
        matches!(e, StoreError::Storage(_)).then(|| e.clone())
    }

    fn mismatch() -> StoreError {
        corrupt("engine", "a batch returned another operation's result")
    }

    fn into_issue(self) -> Result<Issued, IssueError> {
        match self {
            Self::Issue(r) => r,
            Self::Failed(e) => Err(e.into()),
            _ => Err(Self::mismatch().into()),
        }
    }

    fn into_rotate(self) -> Result<Box<RotateDone>, RotateError> {
        match self {
            Self::Rotate(r) => r,
            Self::Failed(e) => Err(e.into()),
            _ => Err(Self::mismatch().into()),
        }
    }

    fn into_revoke(self) -> Result<usize, RevokeError> {
        match self {
            Self::Revoke(r) => r,
            Self::Failed(e) => Err(e.into()),
            _ => Err(Self::mismatch().into()),
        }
    }
}

impl Apply<Op, Done> for Engine {
    fn apply_batch(&self, ops: Vec<Op>) -> Vec<Done> {
        self.run_batch(ops)
    }

    fn failed(&self, why: &str) -> Done {
        Done::Failed(corrupt("engine", why))
    }

    fn panicked(&self) -> Done {
        self.damaged.store(true, Ordering::SeqCst);
        Done::Failed(redb_panicked())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.batcher.shutdown();
    }
}

fn retired_grant_key(family: &FamilyId) -> StoreError {
    corrupt(
        "families",
        format!("grant of live family {family} is sealed with a retired key"),
    )
}

fn corrupt(table: &'static str, reason: impl fmt::Display) -> StoreError {
    StoreError::Corrupt {
        table,
        reason: reason.to_string(),
    }
}

fn pair(a: &[u8; 16], b: &[u8; 16]) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(a);
    k[16..].copy_from_slice(b);
    k
}

/// The expiry-index key: `at` as an order-preserving u64, then the family.
fn expiry_key(at: i64, family: &FamilyId) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&(at.max(0) as u64).to_be_bytes());
    k[8..].copy_from_slice(family.as_bytes());
    k
}

fn grant_ad(family: &FamilyId, rec: &FamilyRecord) -> Vec<u8> {
    let mut ad = Vec::with_capacity(128);
    ad.extend_from_slice(b"rotoken grant v1");
    ad.extend_from_slice(family.as_bytes());
    ad.extend_from_slice(&rec.subject_tag);
    ad.extend_from_slice(&rec.client_tag);
    ad.extend_from_slice(&rec.confirmation_tag.unwrap_or([0; TAG16]));
    ad.push(u8::from(rec.confirmation_tag.is_some()));
    ad.extend_from_slice(&rec.created_at.to_be_bytes());
    ad.extend_from_slice(&rec.expires_at.to_be_bytes());
    ad
}

fn successor_ad(family: &FamilyId, generation: u32) -> [u8; 40] {
    let mut ad = [0u8; 40];
    ad[..20].copy_from_slice(b"rotoken successor v1");
    ad[20..36].copy_from_slice(family.as_bytes());
    ad[36..].copy_from_slice(&generation.to_be_bytes());
    ad
}

impl Engine {
    /// Opens (or creates) the database at `path`.
    ///
    /// # Errors
    ///
    /// [`OpenError::Locked`] if another process has it open,
    /// [`OpenError::NotRotoken`] for a file that is not a redb database or a
    /// redb database without rotoken's tables, [`OpenError::UnsupportedSchema`],
    /// [`OpenError::WrongKeys`], [`OpenError::InvalidPolicy`], or a storage error.
    pub fn open(path: impl AsRef<Path>, keys: Keyring, options: Options) -> Result<Self, OpenError> {
        options.policy.validate().map_err(OpenError::InvalidPolicy)?;
        let path = path.as_ref();
        if !looks_like_redb(path).map_err(|e| StoreError::from(redb::Error::from(e)))? {
            return Err(OpenError::NotRotoken);
        }
        create_private(path).map_err(|e| StoreError::from(redb::Error::from(e)))?;
        let mut b = Database::builder();
        if let Some(c) = options.cache_size {
            b.set_cache_size(c);
        }
        // redb panics inside `create` on some damaged files (an
        // `unreachable!` in its b-tree code, an `unwrap` reading the table
        // tree): contained like every other read of stored data.
        let db = catch_redb_panics(|| b.create(path).map_err(OpenError::from))?;
        Self::init(db, keys, options)
    }

    /// Opens (or creates) a database over any redb storage backend
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
        let mut b = Database::builder();
        if let Some(c) = options.cache_size {
            b.set_cache_size(c);
        }
        let db = catch_redb_panics(|| b.create_with_backend(backend).map_err(OpenError::from))?;
        Self::init(db, keys, options)
    }

    fn init(db: Database, keys: Keyring, options: Options) -> Result<Self, OpenError> {
        let db = Db(Some(db));
        catch_redb_panics(|| Self::init_unguarded(db, keys, options))
    }

    fn init_unguarded(db: Db, keys: Keyring, options: Options) -> Result<Self, OpenError> {
        let check = keys.key_check();
        let read = db.begin_read().map_err(StoreError::from)?;
        let existing = read.list_tables().map_err(StoreError::from)?.count();
        let stored = match read.open_table(META) {
            Ok(meta) => {
                let version = meta
                    .get(META_SCHEMA)
                    .map_err(StoreError::from)?
                    .map(|v| v.value().to_vec());
                let kc = meta
                    .get(META_KEY_CHECK)
                    .map_err(StoreError::from)?
                    .map(|v| v.value().to_vec());
                Some((version, kc))
            }
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(StoreError::from(e).into()),
        };
        drop(read);
        let fresh = stored.is_none();
        match stored {
            None if existing > 0 => return Err(OpenError::NotRotoken),
            None => {}
            Some((Some(version), Some(kc))) => {
                let version: [u8; 4] = version.try_into().map_err(|_| corrupt("meta", "schema version"))?;
                let found = u32::from_be_bytes(version);
                if found != SCHEMA_VERSION {
                    return Err(OpenError::UnsupportedSchema {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                if !bool::from(kc.as_slice().ct_eq(&check)) {
                    return Err(OpenError::WrongKeys);
                }
            }
            Some(_) => return Err(OpenError::NotRotoken),
        }
        let engine = Self {
            db,
            damaged: AtomicBool::new(false),
            limits: Limits::of(&options.policy),
            policy: options.policy,
            clock: options.clock,
            on_event: options.on_event,
            keys,
            relaxed_commits: AtomicU32::new(0),
            batcher: Arc::new(Batcher::new(options.group_commit)),
            stats: Counters::default(),
        };
        if fresh {
            // The schema is always committed durably, whatever the policy.
            let mut txn = engine.db.begin_write().map_err(StoreError::from)?;
            txn.set_two_phase_commit(true);
            {
                let mut meta = txn.open_table(META).map_err(StoreError::from)?;
                meta.insert(META_SCHEMA, SCHEMA_VERSION.to_be_bytes().as_slice())
                    .map_err(StoreError::from)?;
                meta.insert(META_KEY_CHECK, check.as_slice())
                    .map_err(StoreError::from)?;
                txn.open_table(FAMILIES).map_err(StoreError::from)?;
                txn.open_table(BY_SUBJECT).map_err(StoreError::from)?;
                txn.open_table(BY_CLIENT).map_err(StoreError::from)?;
                txn.open_table(BY_EXPIRY).map_err(StoreError::from)?;
                txn.open_table(EVENTS).map_err(StoreError::from)?;
            }
            txn.commit().map_err(StoreError::from)?;
        }
        Ok(engine)
    }

    /// The keyring in use.
    pub fn keyring(&self) -> &Keyring {
        &self.keys
    }

    /// The policy in use.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Write-path counters: how many batches, operations and durable commits.
    pub fn stats(&self) -> Stats {
        Stats {
            batches: self.stats.batches.load(Ordering::Relaxed),
            operations: self.stats.operations.load(Ordering::Relaxed),
            durable_commits: self.stats.durable_commits.load(Ordering::Relaxed),
            largest_batch: self.stats.largest_batch.load(Ordering::Relaxed),
        }
    }

    /// Compacts the database file. Needs exclusive access.
    ///
    /// First every table is rewritten in key order in one durable write
    /// transaction: a b-tree filled by random inserts (family ids are random)
    /// keeps its leaves about two-thirds full, while an ascending load packs
    /// them. Then redb's own compaction moves pages to the front and shrinks
    /// the file, repeated until it has nothing left to move. Runs in time
    /// and transient space proportional to the database; a crash part-way
    /// leaves the database as it was or compacted, never half-rewritten.
    ///
    /// # Errors
    ///
    /// A storage error (nothing is lost: the rewrite is one transaction).
    pub fn compact(&mut self) -> Result<(), StoreError> {
        let db = &mut self.db;
        catch_redb_panics_marking(&self.damaged, || {
            let mut txn = db.begin_write()?;
            txn.set_two_phase_commit(true);
            rewrite_in_key_order(&txn, META)?;
            rewrite_in_key_order(&txn, FAMILIES)?;
            rewrite_in_key_order(&txn, BY_SUBJECT)?;
            rewrite_in_key_order(&txn, BY_CLIENT)?;
            rewrite_in_key_order(&txn, BY_EXPIRY)?;
            rewrite_in_key_order(&txn, EVENTS)?;
            txn.commit()?;
            while db.compact()? {}
            Ok(())
        })
    }

    fn now(&self) -> i64 {
        to_millis(self.clock.now())
    }

    /// Starts a write transaction with two-phase commit. In relaxed mode the
    /// commit is not flushed, except when [`Policy::relaxed_flush_every`]
    /// relaxed commits have gone by since the last durable one.
    fn begin_write(&self) -> Result<Txn, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_two_phase_commit(true);
        let mut durable = true;
        if self.policy.durability == Durability::Relaxed {
            // Writers are serialised by redb, so this count is exact.
            let since = self.relaxed_commits.load(Ordering::Relaxed);
            if since.saturating_add(1) < self.policy.relaxed_flush_every {
                txn.set_durability(redb::Durability::None)?;
                durable = false;
            }
        }
        Ok(Txn { txn, durable })
    }

    /// Commits, and keeps count of relaxed commits since the last durable one.
    fn commit(&self, txn: Txn) -> Result<(), StoreError> {
        txn.txn.commit()?;
        if txn.durable {
            self.stats.durable_commits.fetch_add(1, Ordering::Relaxed);
            self.relaxed_commits.store(0, Ordering::Relaxed);
        } else {
            self.relaxed_commits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn load(
        &self,
        table: &impl ReadableTable<[u8; 16], &'static [u8]>,
        family: &FamilyId,
    ) -> Result<Option<FamilyRecord>, StoreError> {
        let Some(guard) = table.get(family.as_bytes())? else {
            return Ok(None);
        };
        self.decode_record(family, guard.value()).map(Some)
    }

    fn decode_record(&self, family: &FamilyId, bytes: &[u8]) -> Result<FamilyRecord, StoreError> {
        let Some(split) = bytes.len().checked_sub(TAG16) else {
            return Err(corrupt("families", format!("record of {family} is truncated")));
        };
        let (body, mac) = bytes.split_at(split);
        if !bool::from(self.keys.record_mac(family, body).ct_eq(mac)) {
            return Err(corrupt("families", format!("record of {family} fails its MAC")));
        }
        FamilyRecord::decode(body).map_err(|e| corrupt("families", format!("record of {family}: {e}")))
    }

    fn store(
        &self,
        table: &mut redb::Table<'_, [u8; 16], &'static [u8]>,
        family: &FamilyId,
        rec: &FamilyRecord,
    ) -> Result<(), StoreError> {
        table.insert(family.as_bytes(), self.record_bytes(family, rec).as_slice())?;
        Ok(())
    }

    /// A record as stored: its encoding followed by its MAC.
    fn record_bytes(&self, family: &FamilyId, rec: &FamilyRecord) -> Vec<u8> {
        let mut bytes = rec.encode();
        let mac = self.keys.record_mac(family, &bytes);
        bytes.extend_from_slice(&mac);
        bytes
    }

    /// Opens a family's sealed grant; `None` if it was sealed with a key that
    /// has since been retired (expected only for families past their
    /// absolute lifetime, which is when keys may retire).
    fn grant_if_openable(&self, family: &FamilyId, rec: &FamilyRecord) -> Result<Option<Grant>, StoreError> {
        let pt = match self.keys.open(&grant_ad(family, rec), &rec.sealed_grant) {
            Ok(pt) => pt,
            Err(crate::SealError::UnknownKey(_)) => return Ok(None),
            Err(e) => return Err(corrupt("families", format!("grant of {family}: {e}"))),
        };
        crate::record::decode_grant(&pt)
            .map(Some)
            .map_err(|e| corrupt("families", format!("grant of {family}: {e}")))
    }

    /// Opens the grant of a family that is still in use; a retired key is corruption here.
    fn open_grant(&self, family: &FamilyId, rec: &FamilyRecord) -> Result<Grant, StoreError> {
        self.grant_if_openable(family, rec)?
            .ok_or_else(|| retired_grant_key(family))
    }

    /// True if the family can still be refreshed at `now`.
    fn is_live(&self, rec: &FamilyRecord, now: i64) -> bool {
        rec.state == FamilyState::Active && state::expiry(rec, &self.limits, now).is_none()
    }

    fn seal_grant(&self, family: &FamilyId, rec: &FamilyRecord, grant: &Grant) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .keys
            .seal(&grant_ad(family, rec), &crate::record::encode_grant(grant))?)
    }

    fn emit(&self, events: &[Event]) {
        if let Some(sink) = &self.on_event {
            for e in events {
                sink(e);
            }
        }
    }

    /// Issues a new family for `grant` and returns its first refresh token.
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
        let op = self.prepare_issue(grant)?;
        Done::into_issue(self.batcher.submit(Op::Issue(Box::new(op)), self))
    }

    /// [`Engine::issue`] for async callers: waits for the commit without
    /// blocking the runtime's thread (a helper thread commits).
    ///
    /// # Errors
    ///
    /// As [`Engine::issue`].
    pub async fn issue_async(self: &Arc<Self>, grant: &Grant) -> Result<Issued, IssueError> {
        let op = self.prepare_issue(grant)?;
        Done::into_issue(self.submit_async(Op::Issue(Box::new(op))).await)
    }

    /// Rotates a refresh token: checks it, and returns its successor.
    ///
    /// Checks run in this order: checksum and authenticator (no storage
    /// access), lookup, revoked state, client, confirmation key, expiry,
    /// generation, scope, generation limit. See `docs/design.md` for the
    /// full state table. Concurrent calls share write transactions and
    /// durable commits (group commit); a token is returned only after the
    /// commit that stored it.
    ///
    /// # Errors
    ///
    /// Every [`RotateError`] variant. [`RotateError::ReuseDetected`] and
    /// [`RotateError::Diverged`] have revoked the family and recorded an
    /// event; all other errors changed nothing.
    pub fn rotate(&self, token: &str, request: &RotateRequest) -> Result<Rotated, RotateError> {
        let op = self.prepare_rotate(token, request)?;
        let done = Done::into_rotate(self.batcher.submit(Op::Rotate(Box::new(op)), self))?;
        Ok(self.finish_rotate(done, request))
    }

    /// [`Engine::rotate`] for async callers: waits for the commit without
    /// blocking the runtime's thread (a helper thread commits).
    ///
    /// # Errors
    ///
    /// As [`Engine::rotate`].
    pub async fn rotate_async(self: &Arc<Self>, token: &str, request: &RotateRequest) -> Result<Rotated, RotateError> {
        let op = self.prepare_rotate(token, request)?;
        let done = Done::into_rotate(self.submit_async(Op::Rotate(Box::new(op))).await)?;
        Ok(self.finish_rotate(done, request))
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
    /// [`RevokeError::InvalidInput`], or a storage error.
    pub fn revoke(&self, target: RevokeTarget<'_>) -> Result<usize, RevokeError> {
        let op = self.prepare_revoke(target)?;
        Done::into_revoke(self.batcher.submit(Op::Revoke(op), self))
    }

    /// [`Engine::revoke`] for async callers.
    ///
    /// # Errors
    ///
    /// As [`Engine::revoke`].
    pub async fn revoke_async(self: &Arc<Self>, target: RevokeTarget<'_>) -> Result<usize, RevokeError> {
        let op = self.prepare_revoke(target)?;
        Done::into_revoke(self.submit_async(Op::Revoke(op)).await)
    }

    async fn submit_async(self: &Arc<Self>, op: Op) -> Done {
        match self.batcher.submit_async(op, Arc::downgrade(self)).await {
            Ok(done) => done,
            Err(why) => Done::Failed(StoreError::Corrupt {
                table: "engine",
                reason: why.to_owned(),
            }),
        }
    }

    /// Everything about an issue that needs no storage: validation, random
    /// ids, the token, the sealed grant. Runs on the caller's thread.
    fn prepare_issue(&self, grant: &Grant) -> Result<PreparedIssue, IssueError> {
        grant.validate()?;
        let now = self.now();
        let family = FamilyId::random().map_err(StoreError::from)?;
        let token = self.keys.sign(family, 0, Secret::random().map_err(StoreError::from)?);
        let mut rec = FamilyRecord {
            state: FamilyState::Active,
            generation: 0,
            created_at: now,
            rotated_at: now,
            expires_at: now.saturating_add(duration_millis(self.policy.absolute_lifetime)),
            gc_at: 0,
            subject_tag: self.keys.tag(TagKind::Subject, &grant.subject),
            client_tag: self.keys.tag(TagKind::Client, &grant.client_id),
            confirmation_tag: grant
                .confirmation
                .as_deref()
                .map(|c| self.keys.tag(TagKind::Confirmation, c)),
            current_hash: self.keys.token_hash(&token),
            sealed_successor: None,
            sealed_grant: Vec::new(),
        };
        rec.gc_at = state::deadline(&rec, &self.limits);
        rec.sealed_grant = self.seal_grant(&family, &rec, grant)?;
        Ok(PreparedIssue {
            issued: Issued {
                refresh_token: token::format(&token),
                family,
                generation: 0,
                expires_at: from_millis(rec.gc_at),
            },
            rec,
        })
    }

    fn apply_issue(&self, txn: &Txn, op: PreparedIssue) -> Result<Issued, IssueError> {
        let family = op.issued.family;
        let rec = &op.rec;
        let mut families = txn.open_table(FAMILIES).map_err(StoreError::from)?;
        if families.get(family.as_bytes()).map_err(StoreError::from)?.is_some() {
            // 128 random bits never collide in practice; refuse rather than overwrite.
            return Err(corrupt("families", "family id collision").into());
        }
        self.store(&mut families, &family, rec)?;
        txn.open_table(BY_SUBJECT)
            .map_err(StoreError::from)?
            .insert(pair(&rec.subject_tag, family.as_bytes()), ())
            .map_err(StoreError::from)?;
        txn.open_table(BY_CLIENT)
            .map_err(StoreError::from)?
            .insert(pair(&rec.client_tag, family.as_bytes()), ())
            .map_err(StoreError::from)?;
        txn.open_table(BY_EXPIRY)
            .map_err(StoreError::from)?
            .insert(expiry_key(rec.gc_at, &family), ())
            .map_err(StoreError::from)?;
        Ok(op.issued)
    }

    /// Everything about a rotation that needs no storage: parsing,
    /// authentication, request checks, tags, and the would-be successor,
    /// already signed and sealed under the presented token. Runs on the
    /// caller's thread, so batch leaders only touch the database.
    fn prepare_rotate(&self, token: &str, request: &RotateRequest) -> Result<PreparedRotate, RotateError> {
        let presented = self.authenticate(token)?;
        check_text("client_id", &request.client_id, MAX_CLIENT_ID_LEN)?;
        if let Some(c) = &request.confirmation {
            check_text("confirmation", c, MAX_CONFIRMATION_LEN)?;
        }
        let family = presented.family;
        let next = presented.generation.saturating_add(1);
        let successor = self
            .keys
            .sign(family, next, Secret::random().map_err(StoreError::from)?);
        let sealed = self
            .keys
            .seal_successor(&presented, &successor, &successor_ad(&family, next))
            .map_err(StoreError::from)?;
        let sealed_successor = <[u8; crate::record::SEALED_SUCCESSOR_LEN]>::try_from(sealed.as_slice())
            .map_err(|_| corrupt("families", "sealed successor has the wrong length"))?;
        Ok(PreparedRotate {
            client_tag: self.keys.tag(TagKind::Client, &request.client_id),
            confirmation_tag: request
                .confirmation
                .as_deref()
                .map(|c| self.keys.tag(TagKind::Confirmation, c)),
            scope: request.scope.clone(),
            successor_hash: self.keys.token_hash(&successor),
            successor,
            sealed_successor,
            presented,
        })
    }

    /// The storage half of a rotation, inside a batch's write transaction.
    /// Returns the op's own outcome and the events it recorded.
    fn apply_rotate(
        &self,
        txn: &Txn,
        op: PreparedRotate,
        now: i64,
    ) -> (Result<Box<RotateDone>, RotateError>, Vec<Event>) {
        let mut events = Vec::new();
        let result = self.apply_rotate_inner(txn, op, now, &mut events).map(Box::new);
        (result, events)
    }

    fn apply_rotate_inner(
        &self,
        txn: &Txn,
        op: PreparedRotate,
        now: i64,
        events: &mut Vec<Event>,
    ) -> Result<RotateDone, RotateError> {
        let presented = &op.presented;
        let family = presented.family;
        let mut families = txn.open_table(FAMILIES).map_err(StoreError::from)?;
        // One descent for the read and the overwrite (copy-on-write of the
        // path happens here even if the rotation is then refused; the
        // committed content is unchanged then).
        let mut slot = families.get_mut(family.as_bytes()).map_err(StoreError::from)?;
        let Some(stored) = slot.as_mut() else {
            return Err(RotateError::Unknown);
        };
        let mut rec = self.decode_record(&family, stored.value())?;
        let mut opened_successor = None;
        let secret = if presented.generation == rec.generation {
            if bool::from(self.keys.token_hash(presented).ct_eq(&rec.current_hash)) {
                SecretCheck::Current
            } else {
                SecretCheck::Mismatch
            }
        } else if rec.generation > 0 && presented.generation == rec.generation - 1 {
            let ad = successor_ad(&family, rec.generation);
            match rec
                .sealed_successor
                .as_ref()
                .map(|blob| self.keys.open_successor(presented, &ad, blob))
            {
                // The opened successor must be the stored current token.
                Some(Ok(successor)) if bool::from(self.keys.token_hash(&successor).ct_eq(&rec.current_hash)) => {
                    opened_successor = Some(successor);
                    SecretCheck::Predecessor
                }
                Some(_) => SecretCheck::Mismatch,
                None => SecretCheck::NotApplicable,
            }
        } else {
            SecretCheck::NotApplicable
        };
        // Opened before any write, so a grant that does not open (tampered
        // under a recomputed MAC, or sealed under a retired key) refuses the
        // rotation instead of committing it. `None` only for a key retired
        // after the family's life; then the family is refused as expired.
        let grant = self.grant_if_openable(&family, &rec)?;
        let confirmation_matches = match (&rec.confirmation_tag, &op.confirmation_tag) {
            (None, _) => true,
            (Some(bound), Some(c)) => bool::from(bound.ct_eq(c)),
            (Some(_), None) => false,
        };
        let attempt = Attempt {
            presented: presented.generation,
            secret,
            client_matches: bool::from(op.client_tag.ct_eq(&rec.client_tag)),
            confirmation_matches,
            scope_within_grant: match (&op.scope, &grant) {
                (Some(s), Some(g)) => s.is_subset(&g.scope),
                _ => true,
            },
            now,
        };
        match state::decide(&rec, &attempt, &self.limits) {
            Decision::Refuse(r) => Err(refusal(r)),
            Decision::Grace => {
                let successor = opened_successor.ok_or_else(|| corrupt("families", "successor vanished"))?;
                let grant = grant.ok_or_else(|| retired_grant_key(&family))?;
                Ok(RotateDone {
                    family,
                    rec,
                    successor,
                    grant,
                    retried: true,
                })
            }
            Decision::Rotate => {
                let g = grant.ok_or_else(|| retired_grant_key(&family))?;
                rec.generation = op.successor.generation;
                rec.current_hash = op.successor_hash;
                rec.rotated_at = now;
                rec.sealed_successor = Some(op.sealed_successor);
                if crate::keys::sealed_key_id(&rec.sealed_grant) != Some(self.keys.active_id()) {
                    // Move the grant to the active key so old keys can retire.
                    rec.sealed_grant = self.seal_grant(&family, &rec, &g)?;
                }
                stored
                    .insert(self.record_bytes(&family, &rec).as_slice())
                    .map_err(StoreError::from)?;
                Ok(RotateDone {
                    family,
                    rec,
                    successor: op.successor,
                    grant: g,
                    retried: false,
                })
            }
            Decision::Revoke(reason) => {
                let (current, presented) = (rec.generation, presented.generation);
                let (kind, err) = if reason == RevokeReason::Diverged {
                    (
                        EventKind::Diverged { presented, current },
                        RotateError::Diverged { family },
                    )
                } else {
                    (
                        EventKind::ReuseDetected { presented, current },
                        RotateError::ReuseDetected { family },
                    )
                };
                drop(slot);
                events.push(self.mark_revoked(txn, &mut families, &family, &mut rec, reason, kind, now)?);
                Err(err)
            }
        }
    }

    /// Builds the caller's answer after the commit, on the caller's thread
    /// (formatting the token outside the write lock).
    fn finish_rotate(&self, done: Box<RotateDone>, request: &RotateRequest) -> Rotated {
        let grant = done.grant;
        Rotated {
            refresh_token: token::format(&done.successor),
            family: done.family,
            generation: done.rec.generation,
            expires_at: from_millis(state::deadline(&done.rec, &self.limits)),
            scope: request.scope.clone().unwrap_or_else(|| grant.scope.clone()),
            grant,
            retried: done.retried,
        }
    }

    fn prepare_revoke(&self, target: RevokeTarget<'_>) -> Result<PreparedRevoke, RevokeError> {
        Ok(match target {
            RevokeTarget::Token(t) => PreparedRevoke::Family(self.revoked_family(t)?, RevokeReason::Token, None),
            RevokeTarget::TokenOfClient { token, client_id } => {
                check_text("client_id", client_id, MAX_CLIENT_ID_LEN)?;
                let family = self.revoked_family(token)?;
                PreparedRevoke::Family(
                    family,
                    RevokeReason::Token,
                    Some(self.keys.tag(TagKind::Client, client_id)),
                )
            }
            RevokeTarget::Family(f) => PreparedRevoke::Family(f, RevokeReason::Family, None),
            RevokeTarget::Subject(s) => {
                check_text("subject", s, MAX_SUBJECT_LEN)?;
                PreparedRevoke::Subject(self.keys.tag(TagKind::Subject, s))
            }
            RevokeTarget::Client(c) => {
                check_text("client_id", c, MAX_CLIENT_ID_LEN)?;
                PreparedRevoke::Client(self.keys.tag(TagKind::Client, c))
            }
        })
    }

    /// The family a presented token names, once its authenticator verifies.
    fn revoked_family(&self, token: &str) -> Result<FamilyId, RevokeError> {
        let presented = self.authenticate(token).map_err(|e| match e {
            RotateError::Malformed(p) => RevokeError::Malformed(p),
            _ => RevokeError::InvalidToken,
        })?;
        Ok(presented.family)
    }

    fn apply_revoke(&self, txn: &Txn, op: PreparedRevoke, now: i64) -> (Result<usize, RevokeError>, Vec<Event>) {
        let mut events = Vec::new();
        let result = (|| {
            let (families, reason, owner) = match op {
                PreparedRevoke::Family(f, reason, owner) => (vec![f], reason, owner),
                PreparedRevoke::Subject(tag) => (
                    index_scan(&txn.open_table(BY_SUBJECT).map_err(StoreError::from)?, &tag)?,
                    RevokeReason::Subject,
                    None,
                ),
                PreparedRevoke::Client(tag) => (
                    index_scan(&txn.open_table(BY_CLIENT).map_err(StoreError::from)?, &tag)?,
                    RevokeReason::Client,
                    None,
                ),
            };
            let mut table = txn.open_table(FAMILIES).map_err(StoreError::from)?;
            for family in &families {
                let Some(mut rec) = self.load(&table, family)? else {
                    continue;
                };
                // Checked in the write transaction, whatever the family's state:
                // the answer does not depend on a rotation racing this call.
                if owner.is_some_and(|tag| !bool::from(tag.ct_eq(&rec.client_tag))) {
                    return Err(RevokeError::ClientMismatch);
                }
                if rec.state != FamilyState::Active {
                    continue;
                }
                let kind = EventKind::Revoked(reason);
                events.push(self.mark_revoked(txn, &mut table, family, &mut rec, reason, kind, now)?);
            }
            Ok::<usize, RevokeError>(events.len())
        })();
        (result, events)
    }

    /// Applies one batch in one write transaction and commits it once.
    /// Each operation gets its own outcome; a storage failure in any
    /// operation, or a failed commit, fails every operation of the batch,
    /// since none of their changes reached the disk.
    fn run_batch(&self, ops: Vec<Op>) -> Vec<Done> {
        let n = ops.len();
        if self.damaged.load(Ordering::SeqCst) {
            return (0..n).map(|_| Done::Failed(engine_damaged())).collect();
        }
        let mut dones = Vec::with_capacity(n);
        let mut events = Vec::new();
        let outcome = (|| {
            let txn = self.begin_write()?;
            let now = self.now();
            for op in ops {
                let done = match op {
                    Op::Issue(op) => Done::Issue(self.apply_issue(&txn, *op)),
                    Op::Rotate(op) => {
                        let (r, ev) = self.apply_rotate(&txn, *op, now);
                        events.extend(ev);
                        Done::Rotate(r)
                    }
                    Op::Revoke(op) => {
                        let (r, ev) = self.apply_revoke(&txn, op, now);
                        events.extend(ev);
                        Done::Revoke(r)
                    }
                };
                if let Some(e) = done.storage_failure() {
                    return Err(e);
                }
                dones.push(done);
            }
            self.commit(txn)
        })();
        match outcome {
            Ok(()) => {
                let n = n as u64;
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.stats.operations.fetch_add(n, Ordering::Relaxed);
                self.stats.largest_batch.fetch_max(n, Ordering::Relaxed);
                self.emit(&events);
                dones
            }
            Err(e) => (0..n).map(|_| Done::Failed(e.clone())).collect(),
        }
    }

    /// Parses and authenticates a token without touching storage.
    fn authenticate(&self, token: &str) -> Result<Token, RotateError> {
        let t = token::parse(token.as_bytes())?;
        if !self.keys.verify(&t) {
            return Err(RotateError::InvalidToken);
        }
        Ok(t)
    }

    /// Marks a family revoked inside `txn`, moves its expiry entry to the
    /// end of the revoked retention, and appends `kind` to the event log.
    #[allow(clippy::too_many_arguments)]
    fn mark_revoked(
        &self,
        txn: &WriteTransaction,
        families: &mut redb::Table<'_, [u8; 16], &'static [u8]>,
        family: &FamilyId,
        rec: &mut FamilyRecord,
        reason: RevokeReason,
        kind: EventKind,
        now: i64,
    ) -> Result<Event, StoreError> {
        let mut expiry = txn.open_table(BY_EXPIRY)?;
        expiry.remove(expiry_key(rec.gc_at, family))?;
        rec.state = FamilyState::Revoked(reason);
        rec.sealed_successor = None;
        rec.gc_at = now.saturating_add(duration_millis(self.policy.revoked_retention));
        expiry.insert(expiry_key(rec.gc_at, family), ())?;
        self.store(families, family, rec)?;
        self.append_event(txn, *family, kind, now)
    }

    fn append_event(
        &self,
        txn: &WriteTransaction,
        family: FamilyId,
        kind: EventKind,
        now: i64,
    ) -> Result<Event, StoreError> {
        // The next sequence number lives in `meta` so numbers are never
        // reused, even after gc has emptied the log.
        let mut meta = txn.open_table(META)?;
        let seq = match meta.get(META_EVENT_SEQ)?.map(|v| <[u8; 8]>::try_from(v.value())) {
            Some(Ok(b)) => u64::from_be_bytes(b),
            Some(Err(_)) => return Err(corrupt("meta", "event sequence")),
            None => 1,
        };
        meta.insert(META_EVENT_SEQ, seq.saturating_add(1).to_be_bytes().as_slice())?;
        let mut events = txn.open_table(EVENTS)?;
        let event = Event {
            seq,
            at_millis: now,
            family,
            kind,
        };
        events.insert(seq, event.encode().as_slice())?;
        Ok(event)
    }

    /// Introspects a refresh token (RFC 7662). Never changes state.
    /// Malformed, forged, unknown, retired, revoked and expired tokens are
    /// all simply `active: false`.
    ///
    /// # Errors
    ///
    /// A storage error only.
    pub fn introspect(&self, token: &str) -> Result<Introspection, StoreError> {
        self.catch_redb_panics(|| self.introspect_unguarded(token))
    }

    fn introspect_unguarded(&self, token: &str) -> Result<Introspection, StoreError> {
        let Ok(presented) = self.authenticate(token) else {
            return Ok(Introspection::default());
        };
        let family = presented.family;
        let read = self.db.begin_read()?;
        let families = read.open_table(FAMILIES)?;
        let Some(rec) = self.load(&families, &family)? else {
            return Ok(Introspection::default());
        };
        let live = rec.state == FamilyState::Active
            && presented.generation == rec.generation
            && bool::from(self.keys.token_hash(&presented).ct_eq(&rec.current_hash))
            && state::expiry(&rec, &self.limits, self.now()).is_none();
        if !live {
            return Ok(Introspection::default());
        }
        let grant = self.open_grant(&family, &rec)?;
        Ok(Introspection {
            active: true,
            scope: Some(grant.scope),
            client_id: Some(grant.client_id),
            sub: Some(grant.subject),
            exp: Some(state::deadline(&rec, &self.limits).div_euclid(1000)),
            iat: Some(rec.rotated_at.div_euclid(1000)),
            token_type: Some("refresh_token"),
            cnf_jkt: grant.confirmation,
            family: Some(family),
            generation: Some(rec.generation),
        })
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
        self.catch_redb_panics(|| {
            let read = self.db.begin_read()?;
            let families = read.open_table(FAMILIES)?;
            Ok(self
                .load(&families, family)?
                .is_some_and(|rec| self.is_live(&rec, self.now())))
        })
    }

    /// Lists a subject's families (its sessions), revoked ones included
    /// until gc removes them.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`] for a bad subject, or a storage error.
    pub fn sessions(&self, subject: &str) -> Result<Vec<Session>, crate::Error> {
        self.catch_redb_panics(|| self.sessions_unguarded(subject))
    }

    fn sessions_unguarded(&self, subject: &str) -> Result<Vec<Session>, crate::Error> {
        check_text("subject", subject, MAX_SUBJECT_LEN)?;
        let now = self.now();
        let read = self.db.begin_read().map_err(StoreError::from)?;
        let table = read.open_table(FAMILIES).map_err(StoreError::from)?;
        let mut out = Vec::new();
        let by_subject = read.open_table(BY_SUBJECT).map_err(StoreError::from)?;
        for family in index_scan(&by_subject, &self.keys.tag(TagKind::Subject, subject))? {
            let Some(rec) = self.load(&table, &family)? else {
                continue;
            };
            let live = self.is_live(&rec, now);
            let grant = match self.grant_if_openable(&family, &rec)? {
                Some(g) => g,
                // Past its life and sealed with a retired key: gone but for gc.
                None if !live => continue,
                None => return Err(retired_grant_key(&family).into()),
            };
            let revoked = match rec.state {
                FamilyState::Revoked(r) => Some(r),
                FamilyState::Active => None,
            };
            out.push(Session {
                family,
                client_id: grant.client_id,
                scope: grant.scope,
                generation: rec.generation,
                created_at: from_millis(rec.created_at),
                rotated_at: from_millis(rec.rotated_at),
                expires_at: from_millis(state::deadline(&rec, &self.limits)),
                active: live,
                revoked,
            });
        }
        Ok(out)
    }

    /// Events with a sequence number greater than `after`, at most `limit`.
    ///
    /// # Errors
    ///
    /// A storage error, or [`StoreError::Corrupt`] for an undecodable event.
    pub fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.catch_redb_panics(|| self.events_unguarded(after, limit))
    }

    fn events_unguarded(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(EVENTS)?;
        let mut out = Vec::new();
        for entry in table.range(after.saturating_add(1)..)?.take(limit) {
            let (k, v) = entry?;
            out.push(Event::decode(k.value(), v.value()).map_err(|e| corrupt("events", e))?);
        }
        Ok(out)
    }

    /// One bounded garbage-collection step: removes up to `limit` expired
    /// or revoked-past-retention families (with their index entries) and up
    /// to `limit` events past retention. Call again while `more` is true.
    ///
    /// # Errors
    ///
    /// A storage error; nothing is removed then.
    pub fn gc(&self, limit: usize) -> Result<GcReport, StoreError> {
        self.catch_redb_panics(|| self.gc_unguarded(limit))
    }

    fn gc_unguarded(&self, limit: usize) -> Result<GcReport, StoreError> {
        let now = self.now();
        let mut report = GcReport::default();
        let mut events = Vec::new();
        let txn = self.begin_write()?;
        {
            let mut expiry = txn.open_table(BY_EXPIRY)?;
            let mut families = txn.open_table(FAMILIES)?;
            let due: Vec<[u8; 24]> = expiry
                .range(..=expiry_key(now, &FamilyId::from_bytes([0xff; 16])))?
                .take(limit.saturating_add(1))
                .map(|e| e.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()?;
            report.more = due.len() > limit;
            for key in due.into_iter().take(limit) {
                let mut f = [0u8; 16];
                f.copy_from_slice(&key[8..]);
                let family = FamilyId::from_bytes(f);
                expiry.remove(key)?;
                let Some(mut rec) = self.load(&families, &family)? else {
                    continue;
                };
                let revoked = rec.state != FamilyState::Active;
                if revoked || state::expiry(&rec, &self.limits, now).is_some() {
                    families.remove(family.as_bytes())?;
                    txn.open_table(BY_SUBJECT)?
                        .remove(pair(&rec.subject_tag, family.as_bytes()))?;
                    txn.open_table(BY_CLIENT)?
                        .remove(pair(&rec.client_tag, family.as_bytes()))?;
                    if !revoked {
                        events.push(self.append_event(&txn, family, EventKind::Expired, now)?);
                    }
                    report.removed += 1;
                } else {
                    rec.gc_at = state::deadline(&rec, &self.limits);
                    expiry.insert(expiry_key(rec.gc_at, &family), ())?;
                    self.store(&mut families, &family, &rec)?;
                    report.rescheduled += 1;
                }
            }
            let cutoff = now.saturating_sub(duration_millis(self.policy.event_retention));
            let mut log = txn.open_table(EVENTS)?;
            let mut old = Vec::new();
            for entry in log.iter()?.take(limit.saturating_add(1)) {
                let (k, v) = entry?;
                let e = Event::decode(k.value(), v.value()).map_err(|e| corrupt("events", e))?;
                if e.at_millis >= cutoff {
                    break;
                }
                old.push(k.value());
            }
            if old.len() > limit {
                report.more = true;
                old.truncate(limit);
            }
            for seq in &old {
                log.remove(seq)?;
            }
            report.events_removed = old.len();
        }
        self.commit(txn)?;
        self.emit(&events);
        Ok(report)
    }

    /// Verifies every record and index entry: record MACs and layouts,
    /// that each grant opens and matches its record's tags, that every
    /// family has its three index entries and every index entry its family,
    /// that no live family's expiry entry lies after its absolute expiry, and that
    /// every event decodes. Reads one snapshot; never changes anything.
    ///
    /// # Errors
    ///
    /// A storage error. Inconsistencies are reported in [`CheckReport::problems`].
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        self.catch_redb_panics(|| self.check_unguarded())
    }

    fn check_unguarded(&self) -> Result<CheckReport, StoreError> {
        let now = self.now();
        let read = self.db.begin_read()?;
        let families = read.open_table(FAMILIES)?;
        let by_subject = read.open_table(BY_SUBJECT)?;
        let by_client = read.open_table(BY_CLIENT)?;
        let by_expiry = read.open_table(BY_EXPIRY)?;
        let events = read.open_table(EVENTS)?;
        let mut report = CheckReport::default();
        let mut problems = Vec::new();
        let mut recs = std::collections::HashMap::new();
        for entry in families.iter()? {
            let (k, v) = entry?;
            let family = FamilyId::from_bytes(k.value());
            report.families += 1;
            let rec = match self.decode_record(&family, v.value()) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(problem("families", family.to_string(), e.to_string()));
                    continue;
                }
            };
            match self.grant_if_openable(&family, &rec) {
                Ok(None) if !self.is_live(&rec, now) => {}
                Ok(None) => problems.push(problem(
                    "families",
                    family.to_string(),
                    "a live family's grant is sealed with a retired key".into(),
                )),
                Ok(Some(g)) => {
                    if self.keys.tag(TagKind::Subject, &g.subject) != rec.subject_tag
                        || self.keys.tag(TagKind::Client, &g.client_id) != rec.client_tag
                    {
                        problems.push(problem(
                            "families",
                            family.to_string(),
                            "grant does not match the record's tags".into(),
                        ));
                    }
                }
                Err(e) => problems.push(problem("families", family.to_string(), e.to_string())),
            }
            if rec.state == FamilyState::Active {
                report.active += 1;
                // The entry may lag the idle deadline (gc moves it lazily) but
                // never the absolute expiry, which no policy change moves.
                if rec.gc_at > rec.expires_at {
                    problems.push(problem(
                        "by_expiry",
                        family.to_string(),
                        "expiry entry lies after the family's absolute expiry".into(),
                    ));
                }
                if (rec.generation > 0) != rec.sealed_successor.is_some() {
                    problems.push(problem(
                        "families",
                        family.to_string(),
                        "sealed successor present iff generation > 0 is violated".into(),
                    ));
                }
            }
            for (table, present) in [
                (
                    "by_subject",
                    by_subject.get(pair(&rec.subject_tag, family.as_bytes()))?.is_some(),
                ),
                (
                    "by_client",
                    by_client.get(pair(&rec.client_tag, family.as_bytes()))?.is_some(),
                ),
                ("by_expiry", by_expiry.get(expiry_key(rec.gc_at, &family))?.is_some()),
            ] {
                if !present {
                    problems.push(problem(table, family.to_string(), "index entry missing".into()));
                }
            }
            recs.insert(family, rec);
        }
        for (table, index) in [("by_subject", &by_subject), ("by_client", &by_client)] {
            for entry in index.iter()? {
                let k = entry?.0.value();
                report.index_entries += 1;
                let mut f = [0u8; 16];
                f.copy_from_slice(&k[16..]);
                let family = FamilyId::from_bytes(f);
                let tag_ok = recs.get(&family).map(|r| {
                    if table == "by_subject" {
                        r.subject_tag
                    } else {
                        r.client_tag
                    }
                }) == Some(read_tag(&k));
                if !tag_ok
                    && !problems
                        .iter()
                        .any(|p: &Problem| p.key == family.to_string() && p.table == "families")
                {
                    problems.push(problem(
                        table,
                        family.to_string(),
                        "entry without a matching family".into(),
                    ));
                }
            }
        }
        for entry in by_expiry.iter()? {
            let k = entry?.0.value();
            report.index_entries += 1;
            let mut f = [0u8; 16];
            f.copy_from_slice(&k[8..]);
            let family = FamilyId::from_bytes(f);
            let at = i64::from_be_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]]);
            if recs.get(&family).map(|r| r.gc_at.max(0)) != Some(at)
                && !problems
                    .iter()
                    .any(|p: &Problem| p.key == family.to_string() && p.table == "families")
            {
                problems.push(problem(
                    "by_expiry",
                    family.to_string(),
                    "entry without a matching family".into(),
                ));
            }
        }
        for entry in events.iter()? {
            let (k, v) = entry?;
            report.events += 1;
            if let Err(e) = Event::decode(k.value(), v.value()) {
                problems.push(problem("events", k.value().to_string(), e.to_string()));
            }
        }
        report.problems = problems;
        Ok(report)
    }

    /// The number of families stored (live, expired or revoked, until gc removes them).
    ///
    /// # Errors
    ///
    /// A storage error.
    pub fn families_count(&self) -> Result<u64, StoreError> {
        self.catch_redb_panics(|| {
            let read = self.db.begin_read()?;
            Ok(read.open_table(FAMILIES)?.len()?)
        })
    }

    /// Runs `f` unless redb has panicked under this engine before, turning
    /// a panic into [`StoreError::Corrupt`] and marking the engine damaged
    /// (see [`catch_redb_panics`]).
    fn catch_redb_panics<T, E: From<StoreError>>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        catch_redb_panics_marking(&self.damaged, f)
    }
}

/// False if `path` is a non-empty file that does not start with redb's
/// magic number (so it is certainly not a rotoken database); true if it does,
/// or if it is missing or empty (redb creates it).
fn looks_like_redb(path: &Path) -> std::io::Result<bool> {
    use std::io::Read as _;
    const MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
    let mut head = Vec::with_capacity(MAGIC.len());
    match std::fs::File::open(path) {
        Ok(f) => f.take(MAGIC.len() as u64).read_to_end(&mut head)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    Ok(head.is_empty() || head == MAGIC)
}

/// Creates `path` readable and writable by its owner only (0600) if it does
/// not exist yet, so redb never creates a world-readable database: the file
/// holds families (sealed, but still nobody else's business).
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    match o.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// A write transaction and whether its commit will be durable.
struct Txn {
    txn: WriteTransaction,
    durable: bool,
}

impl std::ops::Deref for Txn {
    type Target = WriteTransaction;
    fn deref(&self) -> &WriteTransaction {
        &self.txn
    }
}

fn problem(table: &'static str, key: String, what: String) -> Problem {
    Problem { table, key, what }
}

fn read_tag(k: &[u8; 32]) -> [u8; TAG16] {
    let mut t = [0u8; TAG16];
    t.copy_from_slice(&k[..16]);
    t
}

fn refusal(r: Refusal) -> RotateError {
    match r {
        Refusal::Revoked(reason) => RotateError::Revoked(reason),
        Refusal::Expired(kind) => RotateError::Expired { kind },
        Refusal::ClientMismatch => RotateError::ClientMismatch,
        Refusal::ConfirmationMismatch => RotateError::ConfirmationMismatch,
        Refusal::ScopeWidened => RotateError::ScopeWidened,
        Refusal::TooManyGenerations => RotateError::TooManyGenerations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_not_redb_are_not_rotoken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        for content in [&b"hello, world, this is text"[..], b"r", &[0u8; 4096]] {
            std::fs::write(&path, content).unwrap();
            let err = Engine::open(&path, Keyring::generate().unwrap(), Options::default()).unwrap_err();
            assert!(matches!(err, OpenError::NotRotoken), "{err}");
            assert_eq!(std::fs::read(&path).unwrap(), content, "the file was changed");
        }
        std::fs::write(&path, b"").unwrap();
        assert!(Engine::open(&path, Keyring::generate().unwrap(), Options::default()).is_ok());
    }

    #[test]
    fn family_is_active_follows_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path().join("db"), Keyring::generate().unwrap(), Options::default()).unwrap();
        let grant = Grant::new("alice", "web", Scope::parse("openid").unwrap());
        let issued = engine.issue(&grant).unwrap();
        assert!(engine.family_is_active(&issued.family).unwrap());
        assert!(!engine.family_is_active(&FamilyId::from_bytes([7; 16])).unwrap());
        engine.revoke(RevokeTarget::Family(issued.family)).unwrap();
        assert!(!engine.family_is_active(&issued.family).unwrap());
    }

    #[cfg(unix)]
    #[test]
    fn a_new_database_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.redb");
        drop(Engine::open(&path, Keyring::generate().unwrap(), Options::default()).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "database created with mode {mode:o}");
    }
}
