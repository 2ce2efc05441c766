//! The storage seam: what a store keeps for the engine, and the contract it
//! keeps it by.
//!
//! A [`Store`] loads and stores bytes; it decides nothing. Every rule of the
//! protocol (what a presented token means, what a rotation writes, when a
//! family is revoked or collected) lives in the engine's protocol module; a
//! store sees only MAC'd record bytes, keyed 16-byte tags, times and event
//! bytes, so nothing it holds is usable without the server's keys (P1).
//!
//! Two stores ship: [`RedbStore`] (an embedded redb file, the default) and
//! the PostgreSQL store of the `rotoken-postgres` crate, for several servers
//! sharing one set of families.
//!
//! # What a store keeps
//!
//! * **families**: one value per family id (the record and its MAC, a few
//!   hundred bytes, the same size whatever the number of rotations: P2);
//! * three **indexes** derived from each family's [`IndexKeys`]: by subject
//!   tag, by client tag, and by gc time;
//! * the **event log**: values under sequence numbers that increase in
//!   commit order and are never reused, even after old events are removed;
//! * **meta**: a few named values (the key-check value); the store's own
//!   schema version is the store's business (checked when it opens).
//!
//! # The contract
//!
//! 1. **One transaction per batch.** Everything the engine does between
//!    [`Store::begin_write`] and [`WriteTxn::commit`] commits as a whole or
//!    not at all. An error from any call fails the whole batch: the engine
//!    drops the transaction (which must roll back) and answers every
//!    operation in it with that error.
//! 2. **Exactly one winner per family.** [`WriteTxn::lock_families`]
//!    returns each family's committed bytes and guarantees that no other
//!    transaction (of this process or, for a shared store, of any other
//!    process) commits a change to those families before this one ends.
//!    The engine decides on those bytes and writes the result; a store
//!    whose isolation cannot promise this must fail the commit with
//!    [`StoreError::Conflict`] instead of committing a lost update.
//! 3. **Conflicts are retried, not reported.** [`StoreError::Conflict`]
//!    (a serialization failure, a deadlock) means "nothing was written, run
//!    the batch again": the engine re-reads and re-decides the whole batch
//!    in a new transaction, so a caller who lost a race gets what the state
//!    machine gives a second presenter (the grace successor), never an
//!    error. Only after [`MAX_CONFLICT_RETRIES`] attempts does the caller
//!    see `storage_error`.
//! 4. **The engine never reads its own writes.** Within one write
//!    transaction the engine keeps what it wrote in memory and never asks
//!    the store for it again, so a store may buffer writes and send them at
//!    commit (the PostgreSQL store sends each kind of change as one
//!    statement).
//! 5. **Durability.** When [`WriteTxn::commit`] returns `Ok` for a
//!    transaction begun with [`Commit::Durable`], its changes survive a
//!    crash of the process and of the machine (redb: two-phase commit with
//!    an fsync; PostgreSQL: a commit acknowledged with `synchronous_commit`
//!    on, as configured on the server). [`Commit::Relaxed`] may lose the
//!    transaction in a crash but never tears it.
//! 6. **Panics are contained.** A store that can panic on damaged data
//!    (redb does) turns the panic into [`StoreError::Corrupt`] and from then
//!    on refuses every call with `corrupt`, rather than hanging or trusting
//!    state it no longer knows.
//! 7. **Meta is read to be set.** [`ReadTxn::meta`] called in a *write*
//!    transaction serialises that transaction with every other write
//!    transaction that reads meta, until it ends (redb: there is one writer;
//!    PostgreSQL: a transaction-level advisory lock). Read-then-set is
//!    therefore atomic: of two servers opening an empty shared database at
//!    once, exactly one records its key-check value and its policy, and the
//!    other reads them.
//! 8. **Event numbers have no gaps.** [`WriteTxn::append_event`] numbers
//!    events one more than the last committed number, in commit order, so
//!    a reader resuming after sequence number `n` (`rotoken events
//!    --follow`) never misses an event committed later under a smaller one.

mod redb;

pub use self::redb::{RedbStore, SCHEMA_VERSION};

pub use crate::backup::{BackupError, BackupInfo};
use crate::error::StoreError;
use crate::token::FamilyId;

/// Length of the keyed tags a store indexes (subject, client).
pub const TAG_LEN: usize = 16;

/// How many times the engine runs a batch whose transaction ended in
/// [`StoreError::Conflict`] before it gives up with that error.
pub const MAX_CONFLICT_RETRIES: usize = 16;

/// Where a family appears in the indexes: derived from its record by the
/// engine, given to the store with every write so it can keep its indexes
/// (redb: index tables; PostgreSQL: columns of the family's row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IndexKeys {
    /// Keyed tag of the subject.
    pub subject: [u8; TAG_LEN],
    /// Keyed tag of the client.
    pub client: [u8; TAG_LEN],
    /// When gc should look at the family next (unix ms).
    pub gc_at: i64,
}

/// A tag index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Index {
    /// Families by subject tag.
    Subject,
    /// Families by client tag.
    Client,
}

/// Whether a commit must be durable before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Commit {
    /// Survives a crash once `commit` returns.
    Durable,
    /// May be lost in a crash (never torn); the policy chose relaxed durability.
    Relaxed,
}

/// One family as [`WriteTxn::try_lock_families`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Locked {
    /// Locked for this transaction: its committed bytes (`None` if absent).
    Held(Option<Vec<u8>>),
    /// Another transaction held it past the store's lock wait; not locked.
    Busy,
}

/// A family that gc should look at, from [`WriteTxn::lock_due`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The family.
    pub family: FamilyId,
    /// The gc time it is indexed under.
    pub gc_at: i64,
    /// Its stored bytes.
    pub record: Vec<u8>,
}

/// What [`ReadTxn::check_indexes`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexCheck {
    /// Index entries examined.
    pub entries: usize,
    /// Inconsistencies: (index name, family, what is wrong).
    pub problems: Vec<(&'static str, FamilyId, String)>,
}

/// One step of a store's schema: migration `version` brings a database
/// from `version - 1` to `version` (version 0 is a new, empty database).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// The version it brings the database to.
    pub version: u32,
    /// What it changes, in a few words (for logs and `rotoken migrate`).
    pub what: &'static str,
}

impl Migration {
    /// A migration to `version` that does `what`.
    pub const fn new(version: u32, what: &'static str) -> Self {
        Self { version, what }
    }
}

/// What opening a store found and did to its schema: the reason a store
/// that migrates on open gives for having written to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchemaStatus {
    /// The version found (0: a new, empty database).
    pub found: u32,
    /// The version now: the build's.
    pub current: u32,
    /// The migrations opening applied, oldest first (empty when the
    /// database was already current).
    pub applied: Vec<Migration>,
}

impl SchemaStatus {
    /// `found`, `current`, and what was applied between them.
    pub fn new(found: u32, current: u32, applied: Vec<Migration>) -> Self {
        Self {
            found,
            current,
            applied,
        }
    }

    /// True if opening upgraded an existing database (not a new one).
    pub fn upgraded(&self) -> bool {
        self.found > 0 && !self.applied.is_empty()
    }
}

/// A store of families. See the [module docs](self) for the contract.
pub trait Store: Send + Sync + 'static {
    /// A short name for messages and metrics (`redb`, `postgres`).
    fn name(&self) -> &'static str;

    /// Starts a read-only view of committed data. Never blocks writers.
    ///
    /// # Errors
    ///
    /// A storage error.
    fn begin_read(&self) -> Result<Box<dyn ReadTxn + '_>, StoreError>;

    /// Starts a write transaction (one per batch).
    ///
    /// # Errors
    ///
    /// A storage error.
    fn begin_write(&self, commit: Commit) -> Result<Box<dyn WriteTxn + '_>, StoreError>;

    /// Gives free space back (redb: rewrite the tables in key order, then
    /// compact the file). Needs exclusive access. Stores without such a
    /// step do nothing.
    ///
    /// # Errors
    ///
    /// A storage error; nothing is lost.
    fn compact(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// How many write transactions may usefully run at once. The engine
    /// keeps at most this many batches in flight; 1 (the default, and
    /// redb's) runs them one after another. A store whose transactions lock
    /// only the families they touch (PostgreSQL's row locks) returns the
    /// number of connections it can hold: batches that share no family
    /// then commit side by side, and those that do are serialised by the
    /// store's locks (contract rule 2).
    fn concurrent_batches(&self) -> usize {
        1
    }

    /// What opening found and did to the schema (the version found, the
    /// migrations applied), for stores that migrate when they open; `None`
    /// for stores that do not say.
    fn schema(&self) -> Option<&SchemaStatus> {
        None
    }

    /// Writes a consistent snapshot of the store (one read transaction)
    /// into a new redb database file at `out`, created with mode 0600; the
    /// file must not exist. The snapshot opens like any database, with the
    /// same keys. Stores without such a snapshot (PostgreSQL: use
    /// `pg_dump` or the database's own backups) refuse with
    /// [`BackupError::Unsupported`], the default.
    ///
    /// # Errors
    ///
    /// [`BackupError::Unsupported`], [`BackupError::Exists`], an I/O error
    /// creating the file, or a storage error; a partly written file is removed.
    fn backup(&self, out: &std::path::Path) -> Result<BackupInfo, BackupError> {
        let _ = out;
        Err(BackupError::Unsupported(self.name()))
    }
}

/// A boxed store is a store: an engine can be opened over a store chosen
/// at run time.
impl<S: Store + ?Sized> Store for Box<S> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn begin_read(&self) -> Result<Box<dyn ReadTxn + '_>, StoreError> {
        (**self).begin_read()
    }

    fn begin_write(&self, commit: Commit) -> Result<Box<dyn WriteTxn + '_>, StoreError> {
        (**self).begin_write(commit)
    }

    fn compact(&mut self) -> Result<(), StoreError> {
        (**self).compact()
    }

    fn concurrent_batches(&self) -> usize {
        (**self).concurrent_batches()
    }

    fn schema(&self) -> Option<&SchemaStatus> {
        (**self).schema()
    }

    fn backup(&self, out: &std::path::Path) -> Result<BackupInfo, BackupError> {
        (**self).backup(out)
    }
}

/// Reads, inside a read or a write transaction.
pub trait ReadTxn {
    /// A meta value.
    ///
    /// # Errors
    ///
    /// A storage error.
    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// A family's stored bytes.
    ///
    /// # Errors
    ///
    /// A storage error.
    fn family(&self, id: &FamilyId) -> Result<Option<Vec<u8>>, StoreError>;

    /// The families listed under `tag` in `index`, in family-id order.
    ///
    /// # Errors
    ///
    /// A storage error.
    fn families_by(&self, index: Index, tag: &[u8; TAG_LEN]) -> Result<Vec<FamilyId>, StoreError>;

    /// Up to `limit` of the families listed under `tag` in `index` whose id
    /// is greater than `after`, in family-id order: a large subject or
    /// client revocation walks its families with it. The default filters
    /// [`ReadTxn::families_by`]; a store should answer from its index.
    ///
    /// # Errors
    ///
    /// A storage error.
    fn families_by_page(
        &self,
        index: Index,
        tag: &[u8; TAG_LEN],
        after: Option<&FamilyId>,
        limit: usize,
    ) -> Result<Vec<FamilyId>, StoreError> {
        Ok(self
            .families_by(index, tag)?
            .into_iter()
            .filter(|f| after.is_none_or(|a| f > a))
            .take(limit)
            .collect())
    }

    /// Up to `limit` events with a sequence number above `after`, in order.
    ///
    /// # Errors
    ///
    /// A storage error.
    fn events(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;

    /// How many families are stored.
    ///
    /// # Errors
    ///
    /// A storage error.
    fn family_count(&self) -> Result<u64, StoreError>;

    /// Up to `limit` families with an id above `after` (from the first when
    /// `None`), in id order: for whole-store checks in bounded pieces.
    ///
    /// # Errors
    ///
    /// A storage error.
    fn scan_families(&self, after: Option<&FamilyId>, limit: usize) -> Result<Vec<(FamilyId, Vec<u8>)>, StoreError>;

    /// Compares the store's indexes with `expected`: every family's keys as
    /// its record says (`None` for a family whose record could not be read,
    /// whose entries are then not judged). Reports entries missing, entries
    /// without a family, and entries that disagree.
    ///
    /// # Errors
    ///
    /// A storage error.
    fn check_indexes(
        &self,
        expected: &std::collections::BTreeMap<FamilyId, Option<IndexKeys>>,
    ) -> Result<IndexCheck, StoreError>;
}

/// A write transaction: one batch. Dropping it without [`WriteTxn::commit`]
/// rolls it back.
pub trait WriteTxn: ReadTxn {
    /// Sets a meta value.
    ///
    /// # Errors
    ///
    /// A storage error.
    fn set_meta(&mut self, name: &str, value: &[u8]) -> Result<(), StoreError>;

    /// The committed bytes of each family in `ids` (in the same order;
    /// `None` if absent), held for this transaction: no other transaction
    /// commits a change to them until this one ends (rule 2).
    ///
    /// # Errors
    ///
    /// A storage error, or [`StoreError::Conflict`].
    fn lock_families(&mut self, ids: &[FamilyId]) -> Result<Vec<Option<Vec<u8>>>, StoreError>;

    /// [`WriteTxn::lock_families`], except that a family whose lock another
    /// transaction holds past the store's lock wait is reported
    /// [`Locked::Busy`] instead of failing the transaction: the engine then
    /// fails only the operations on that family (retryably) and commits the
    /// rest of the batch. The families reported locked are held as
    /// `lock_families` holds them (rule 2). The default, for a store with
    /// one writer (redb), never reports a family busy.
    ///
    /// # Errors
    ///
    /// A storage error, or [`StoreError::Conflict`].
    fn try_lock_families(&mut self, ids: &[FamilyId]) -> Result<Vec<Locked>, StoreError> {
        Ok(self.lock_families(ids)?.into_iter().map(Locked::Held).collect())
    }

    /// Raises the meta value `name`, a big-endian `i64`, to `value` if it
    /// is lower or absent; never lowers it. Unlike a [`ReadTxn::meta`]
    /// read followed by [`WriteTxn::set_meta`], it need not serialise with
    /// every other writer (rule 7): the engine raises its clock floor this
    /// way, and a lock every batch of every server takes would stall them
    /// all behind one stuck session. The default reads and sets (redb has
    /// one writer anyway); a shared store should raise in one statement
    /// that holds the value's row only until this transaction commits.
    ///
    /// # Errors
    ///
    /// A storage error; [`StoreError::Corrupt`] if the stored value is not 8 bytes.
    fn raise_meta_i64(&mut self, name: &str, value: i64) -> Result<(), StoreError> {
        let stored = match self.meta(name)? {
            None => None,
            Some(v) => Some(i64::from_be_bytes(v.as_slice().try_into().map_err(|_| {
                StoreError::Corrupt {
                    table: "meta",
                    reason: format!("{name} is not 8 bytes"),
                }
            })?)),
        };
        if stored.is_none_or(|s| s < value) {
            self.set_meta(name, &value.to_be_bytes())?;
        }
        Ok(())
    }

    /// Stores a new family. A family id that exists already (128 random
    /// bits: never in practice) is [`StoreError::Corrupt`].
    ///
    /// # Errors
    ///
    /// A storage error.
    fn insert_family(&mut self, id: &FamilyId, record: &[u8], keys: &IndexKeys) -> Result<(), StoreError>;

    /// Overwrites a family locked in this transaction; `old` are the keys it
    /// was stored with, `new` the keys it is stored with now.
    ///
    /// # Errors
    ///
    /// A storage error.
    fn update_family(
        &mut self,
        id: &FamilyId,
        record: &[u8],
        old: &IndexKeys,
        new: &IndexKeys,
    ) -> Result<(), StoreError>;

    /// Removes a family locked in this transaction, with its index entries.
    ///
    /// # Errors
    ///
    /// A storage error.
    fn remove_family(&mut self, id: &FamilyId, old: &IndexKeys) -> Result<(), StoreError>;

    /// Up to `limit` families whose gc time is at or before `now`, earliest
    /// first, locked like [`WriteTxn::lock_families`], with the gc time they
    /// are indexed under and their bytes. A shared store skips families
    /// another transaction holds (they are someone else's work), so several
    /// servers collect at once without doing the same work twice. An index
    /// entry without a family is removed by the store.
    ///
    /// # Errors
    ///
    /// A storage error.
    fn lock_due(&mut self, now: i64, limit: usize) -> Result<Vec<Due>, StoreError>;

    /// Appends an event (its encoded value; `at_millis` is its time, for
    /// stores that index it) and returns its sequence number: greater than
    /// every number committed before, never reused.
    ///
    /// # Errors
    ///
    /// A storage error.
    fn append_event(&mut self, at_millis: i64, value: &[u8]) -> Result<u64, StoreError>;

    /// Removes these events.
    ///
    /// # Errors
    ///
    /// A storage error.
    fn remove_events(&mut self, seqs: &[u64]) -> Result<(), StoreError>;

    /// Commits the transaction (rule 5 says what survives a crash).
    ///
    /// # Errors
    ///
    /// A storage error or [`StoreError::Conflict`]; nothing was committed then.
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
}
