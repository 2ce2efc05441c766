//! [`RedbStore`]: families in an embedded redb file (the default store).
//!
//! Tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | name | schema version, key-check value, next event number |
//! | `families` | family id (16 bytes) | record body ‖ 16-byte MAC |
//! | `by_subject` | subject tag ‖ family id | `()` |
//! | `by_client` | client tag ‖ family id | `()` |
//! | `by_expiry` | gc time (u64 ms, big-endian) ‖ family id | `()` |
//! | `events` | sequence number | event |
//!
//! Every write transaction uses two-phase commit. redb admits one writer at
//! a time, so [`WriteTxn::lock_families`] is a plain read: the transaction
//! already excludes every other writer (contract rule 2).
//!
//! redb 4.6 panics (instead of returning an error) on some damaged files:
//! a flipped bit in a stored table definition, a region bitmap index out of
//! bounds, while opening, reading, writing or closing. Every call into redb
//! here runs inside [`catch_redb_panics`]; after the first panic the store
//! is marked damaged and refuses every later call with `corrupt`, since
//! redb's in-memory state is then unknown.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
    WriteTransaction,
};

use super::{
    BackupError, BackupInfo, Commit, Due, Index, IndexCheck, IndexKeys, Migration, ReadTxn, SchemaStatus, Store,
    TAG_LEN, WriteTxn,
};
use crate::error::{OpenError, StoreError, corrupt};
use crate::token::FamilyId;

/// The schema version this build reads and writes: the number of
/// [`MIGRATIONS`].
pub const SCHEMA_VERSION: u32 = 1;

/// One schema step: what it is, and the change it makes inside the
/// migration's write transaction.
struct RedbMigration {
    step: Migration,
    apply: fn(&WriteTransaction) -> Result<(), StoreError>,
}

/// Migration `n` (to version `n`) is `MIGRATIONS[n - 1]`; opening applies
/// the ones a database lacks in one write transaction, then records the
/// version. A schema change adds an entry and raises [`SCHEMA_VERSION`];
/// a migration that shipped is never edited (the fixtures of
/// crates/rotoken-conformance/fixtures hold databases of every release).
const MIGRATIONS: &[RedbMigration] = &[RedbMigration {
    step: Migration::new(
        1,
        "create the tables meta, families, by_subject, by_client, by_expiry and events",
    ),
    apply: create_tables_v1,
}];

fn create_tables_v1(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(META)?;
    txn.open_table(FAMILIES)?;
    txn.open_table(BY_SUBJECT)?;
    txn.open_table(BY_CLIENT)?;
    txn.open_table(BY_EXPIRY)?;
    txn.open_table(EVENTS)?;
    Ok(())
}

/// The schema version recorded in a database (0 for a new, empty one).
///
/// # Errors
///
/// [`OpenError::NotRotoken`] for a database with tables but no rotoken
/// schema version, `corrupt` for a malformed one, or a storage error.
fn schema_version(read: &ReadTransaction) -> Result<u32, OpenError> {
    let existing = read.list_tables().map_err(StoreError::from)?.count();
    let version = match read.open_table(META) {
        Ok(meta) => meta
            .get(META_SCHEMA)
            .map_err(StoreError::from)?
            .map(|v| v.value().to_vec()),
        Err(redb::TableError::TableDoesNotExist(_)) if existing == 0 => return Ok(0),
        Err(redb::TableError::TableDoesNotExist(_)) => return Err(OpenError::NotRotoken),
        Err(e) => return Err(StoreError::from(e).into()),
    };
    let version: [u8; 4] = version
        .ok_or(OpenError::NotRotoken)?
        .try_into()
        .map_err(|_| corrupt("meta", "schema version"))?;
    Ok(u32::from_be_bytes(version))
}

/// Brings a database at version `found` to the last version of
/// `migrations`, or refuses a newer one before writing anything.
fn migrate(db: &Database, found: u32, migrations: &[RedbMigration]) -> Result<SchemaStatus, OpenError> {
    let current = u32::try_from(migrations.len()).unwrap_or(u32::MAX);
    if found > current {
        return Err(OpenError::UnsupportedSchema {
            found,
            supported: current,
        });
    }
    let pending = migrations.get(found as usize..).unwrap_or_default();
    if !pending.is_empty() {
        let mut txn = db.begin_write().map_err(StoreError::from)?;
        txn.set_two_phase_commit(true);
        for m in pending {
            (m.apply)(&txn)?;
        }
        txn.open_table(META)
            .map_err(StoreError::from)?
            .insert(META_SCHEMA, current.to_be_bytes().as_slice())
            .map_err(StoreError::from)?;
        txn.commit().map_err(StoreError::from)?;
    }
    Ok(SchemaStatus::new(
        found,
        current,
        pending.iter().map(|m| m.step).collect(),
    ))
}

/// Refuses a file that another process holds, that is not rotoken's, or
/// whose schema is newer than this build's, reading it through redb's
/// read-only backend (which never writes). A file redb cannot open read-only
/// (one that needs crash recovery) passes: the read-write open repairs it
/// and [`migrate`] checks its version before anything of rotoken's is written.
fn check_schema_read_only(path: &Path) -> Result<(), OpenError> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > 0 => {}
        _ => return Ok(()),
    }
    let db = match Database::builder().open_read_only(path) {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(OpenError::Locked),
        Err(_) => return Ok(()),
    };
    let read = db.begin_read().map_err(StoreError::from)?;
    let found = schema_version(&read)?;
    if found > SCHEMA_VERSION {
        return Err(OpenError::UnsupportedSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const FAMILIES: TableDefinition<'_, [u8; 16], &[u8]> = TableDefinition::new("families");
const BY_SUBJECT: TableDefinition<'_, [u8; 32], ()> = TableDefinition::new("by_subject");
const BY_CLIENT: TableDefinition<'_, [u8; 32], ()> = TableDefinition::new("by_client");
const BY_EXPIRY: TableDefinition<'_, [u8; 24], ()> = TableDefinition::new("by_expiry");
const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");

const META_SCHEMA: &str = "schema_version";
const META_EVENT_SEQ: &str = "next_event_seq";

/// Families in one redb file (or any redb storage backend).
pub struct RedbStore {
    db: Db,
    damaged: AtomicBool,
    /// What opening found and migrated.
    schema: SchemaStatus,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("damaged", &self.damaged.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

macro_rules! redb_into_store {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::storage(redb::Error::from(e))
            }
        }
    )*};
}
redb_into_store!(
    redb::Error,
    redb::DatabaseError,
    redb::CompactionError,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<redb::DatabaseError> for OpenError {
    fn from(e: redb::DatabaseError) -> Self {
        match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Self::Locked,
            e => Self::Store(e.into()),
        }
    }
}

impl RedbStore {
    /// Opens (or creates, mode 0600) the database file at `path`, with a page
    /// cache of `cache_size` bytes (redb's default when `None`).
    ///
    /// # Errors
    ///
    /// [`OpenError::Locked`] if another process has it open,
    /// [`OpenError::NotRotoken`] for a file that is not a redb database or a
    /// redb database without rotoken's tables,
    /// [`OpenError::UnsupportedSchema`], or a storage error.
    pub fn open(path: impl AsRef<Path>, cache_size: Option<usize>) -> Result<Self, OpenError> {
        let path = path.as_ref();
        let io = |e: std::io::Error| StoreError::from(redb::Error::from(e));
        if !looks_like_redb(path).map_err(io)? {
            return Err(OpenError::NotRotoken);
        }
        // Read the schema without writing first: opening for writing marks
        // the file, and a file of a newer rotoken must stay as it was.
        catch_redb_panics(|| check_schema_read_only(path))?;
        create_private(path).map_err(io)?;
        let mut b = Database::builder();
        if let Some(c) = cache_size {
            b.set_cache_size(c);
        }
        // redb panics inside `create` on some damaged files (an
        // `unreachable!` in its b-tree code, an `unwrap` reading the table
        // tree).
        let db = catch_redb_panics(|| b.create(path).map_err(OpenError::from))?;
        Self::init(db)
    }

    /// Opens (or creates) a database over any redb storage backend (for
    /// example `redb::backends::InMemoryBackend`, or a fault-injecting one
    /// in tests).
    ///
    /// # Errors
    ///
    /// As [`RedbStore::open`].
    pub fn open_with_backend(backend: impl redb::StorageBackend, cache_size: Option<usize>) -> Result<Self, OpenError> {
        let mut b = Database::builder();
        if let Some(c) = cache_size {
            b.set_cache_size(c);
        }
        let db = catch_redb_panics(|| b.create_with_backend(backend).map_err(OpenError::from))?;
        Self::init(db)
    }

    /// A new, empty database in memory (for tests and examples).
    ///
    /// # Errors
    ///
    /// A storage error.
    pub fn in_memory() -> Result<Self, OpenError> {
        Self::open_with_backend(redb::backends::InMemoryBackend::new(), None)
    }

    fn init(db: Database) -> Result<Self, OpenError> {
        let mut store = Self {
            db: Db(Some(db)),
            damaged: AtomicBool::new(false),
            schema: SchemaStatus::new(0, SCHEMA_VERSION, Vec::new()),
        };
        store.schema = store.guard(|| store.init_schema())?;
        Ok(store)
    }

    /// Checks the schema of an existing database and applies the
    /// migrations it lacks (durably, whatever the policy; all in one
    /// transaction), or writes the schema into a new one.
    fn init_schema(&self) -> Result<SchemaStatus, OpenError> {
        let read = self.db.begin_read().map_err(StoreError::from)?;
        let found = schema_version(&read)?;
        drop(read);
        migrate(&self.db, found, MIGRATIONS)
    }

    /// Runs `f` unless redb has panicked under this store before; a panic
    /// becomes [`StoreError::Corrupt`] and marks the store damaged.
    fn guard<T, E: From<StoreError>>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        catch_redb_panics_marking(&self.damaged, f)
    }
}

impl Store for RedbStore {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn begin_read(&self) -> Result<Box<dyn ReadTxn + '_>, StoreError> {
        let txn = self.guard(|| Ok::<_, StoreError>(self.db.begin_read()?))?;
        Ok(Box::new(RedbRead {
            store: self,
            txn: Some(txn),
        }))
    }

    fn begin_write(&self, commit: Commit) -> Result<Box<dyn WriteTxn + '_>, StoreError> {
        let txn = self.guard(|| {
            let mut txn = self.db.begin_write()?;
            txn.set_two_phase_commit(true);
            if commit == Commit::Relaxed {
                txn.set_durability(redb::Durability::None)?;
            }
            Ok::<_, StoreError>(txn)
        })?;
        Ok(Box::new(RedbWrite {
            store: self,
            txn: Some(txn),
        }))
    }

    /// First every table is rewritten in key order in one durable write
    /// transaction: a b-tree filled by random inserts (family ids are
    /// random) keeps its leaves about two-thirds full, while an ascending
    /// load packs them. Then redb's own compaction moves pages to the front
    /// and shrinks the file, repeated until it has nothing left to move. A
    /// crash part-way leaves the database as it was or compacted, never
    /// half-rewritten.
    fn compact(&mut self) -> Result<(), StoreError> {
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

    fn schema(&self) -> Option<&SchemaStatus> {
        Some(&self.schema)
    }

    /// One read transaction (redb's MVCC snapshot: writers go on meanwhile)
    /// copied table by table into a new database file, committed durably
    /// with two-phase commit.
    fn backup(&self, out: &Path) -> Result<BackupInfo, BackupError> {
        write_backup(out, || Ok(self.guard(|| Ok::<_, StoreError>(self.db.begin_read()?))?))
    }
}

impl RedbStore {
    /// Backs up the database file at `source`, which no process may have
    /// open, into a new file at `out` (mode 0600), as [`Store::backup`] does
    /// for an open store. `source` is opened read-only: nothing is written
    /// to it, so an older release's file is copied as it is (not migrated).
    ///
    /// # Errors
    ///
    /// [`BackupError::Open`] with [`OpenError::Locked`] while another process
    /// has it open, [`OpenError::NotRotoken`] for a file that is not a redb
    /// database of rotoken's (or one that needs crash recovery: open it
    /// once first), and the errors of [`Store::backup`].
    pub fn backup_file(source: &Path, out: &Path) -> Result<BackupInfo, BackupError> {
        let io = |e: std::io::Error| OpenError::Store(StoreError::from(redb::Error::from(e)));
        if std::fs::metadata(source).map_err(io)?.len() == 0 || !looks_like_redb(source).map_err(io)? {
            return Err(OpenError::NotRotoken.into());
        }
        let db = catch_redb_panics(|| match Database::builder().open_read_only(source) {
            Ok(db) => Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(OpenError::Locked),
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))) => {
                Err(OpenError::Store(StoreError::from(redb::Error::from(e))))
            }
            Err(_) => Err(OpenError::NotRotoken),
        })?;
        write_backup(out, || {
            let read = catch_redb_panics(|| Ok::<_, StoreError>(db.begin_read()?))?;
            catch_redb_panics(|| schema_version(&read))?;
            Ok::<_, BackupError>(read)
        })
    }

    /// True if another process has the database file at `path` open
    /// (`rotoken serve`, say): replacing it then would go unnoticed by that
    /// process, which keeps writing to the file it opened.
    pub fn is_held(path: &Path) -> bool {
        matches!(
            catch_redb_panics(|| Ok::<_, StoreError>(Database::builder().open_read_only(path).map(drop))),
            Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen))
        )
    }

    /// The sequence number of the last event this database has numbered
    /// (0 if none): the events of a stream with greater numbers happened
    /// after it (after the backup it was restored from, say), even if gc
    /// has removed the events themselves.
    ///
    /// # Errors
    ///
    /// A storage error, or `corrupt` for a malformed counter.
    pub fn last_event_seq(&self) -> Result<u64, StoreError> {
        self.guard(|| {
            let read = self.db.begin_read()?;
            Ok(next_event_seq(&read.open_table(META)?)?.saturating_sub(1))
        })
    }

    /// Makes the next event number at least `seq + 1`, so numbers that an
    /// event stream already holds (written before a restore brought the
    /// database back to an earlier state) are never given to new events.
    ///
    /// # Errors
    ///
    /// A storage error, or `corrupt` for a malformed counter.
    pub fn skip_event_seqs_through(&self, seq: u64) -> Result<(), StoreError> {
        self.guard(|| {
            let mut txn = self.db.begin_write()?;
            txn.set_two_phase_commit(true);
            {
                let mut meta = txn.open_table(META)?;
                let next = next_event_seq(&meta)?.max(seq.saturating_add(1));
                meta.insert(META_EVENT_SEQ, next.to_be_bytes().as_slice())?;
            }
            txn.commit()?;
            Ok(())
        })
    }
}

/// The next event number recorded in `meta` (1 when none was numbered).
fn next_event_seq(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<u64, StoreError> {
    match meta.get(META_EVENT_SEQ)?.map(|v| <[u8; 8]>::try_from(v.value())) {
        Some(Ok(b)) => Ok(u64::from_be_bytes(b)),
        Some(Err(_)) => Err(corrupt("meta", "event sequence")),
        None => Ok(1),
    }
}

/// Creates `out` (0600, never over an existing file) and copies the
/// snapshot `begin` starts into it; removes the file again on failure.
fn write_backup(
    out: &Path,
    begin: impl FnOnce() -> Result<ReadTransaction, BackupError>,
) -> Result<BackupInfo, BackupError> {
    let io = |source| BackupError::Io {
        path: out.to_path_buf(),
        source,
    };
    create_new_private(out).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => BackupError::Exists(out.to_path_buf()),
        _ => io(e),
    })?;
    let written = begin().and_then(|read| {
        catch_redb_panics(|| {
            let copy = Database::builder().create(out)?;
            let info = copy_snapshot(&read, &copy)?;
            drop(copy);
            Ok::<_, StoreError>(info)
        })
        .map_err(BackupError::Store)
    });
    let sized = written.and_then(|mut info| {
        let file = std::fs::File::open(out).map_err(io)?;
        file.sync_all().map_err(io)?;
        info.bytes = file.metadata().map_err(io)?.len();
        Ok(info)
    });
    if sized.is_err() {
        let _ = std::fs::remove_file(out);
    }
    sized
}

/// Copies every table of the snapshot `read` into the empty database
/// `copy` in one durable write transaction.
fn copy_snapshot(read: &ReadTransaction, copy: &Database) -> Result<BackupInfo, StoreError> {
    let mut txn = copy.begin_write()?;
    txn.set_two_phase_commit(true);
    copy_table(read, &txn, META)?;
    let families = copy_table(read, &txn, FAMILIES)?;
    copy_table(read, &txn, BY_SUBJECT)?;
    copy_table(read, &txn, BY_CLIENT)?;
    copy_table(read, &txn, BY_EXPIRY)?;
    let events = copy_table(read, &txn, EVENTS)?;
    let last_event_seq = next_event_seq(&read.open_table(META)?)?.saturating_sub(1);
    txn.commit()?;
    Ok(BackupInfo {
        families,
        events,
        last_event_seq,
        bytes: 0,
    })
}

/// Copies one table from a snapshot into a write transaction of another
/// database; returns how many entries it copied.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    read: &ReadTransaction,
    txn: &WriteTransaction,
    def: TableDefinition<'_, K, V>,
) -> Result<u64, StoreError> {
    let from = read.open_table(def)?;
    let mut to = txn.open_table(def)?;
    let mut n = 0;
    for entry in from.iter()? {
        let (k, v) = entry?;
        to.insert(k.value(), v.value())?;
        n += 1;
    }
    Ok(n)
}

/// A read transaction. Closed inside [`catch_redb_panics`].
struct RedbRead<'s> {
    store: &'s RedbStore,
    txn: Option<ReadTransaction>,
}

/// A write transaction. Rolled back (when not committed) inside
/// [`catch_redb_panics`].
struct RedbWrite<'s> {
    store: &'s RedbStore,
    txn: Option<WriteTransaction>,
}

impl Drop for RedbRead<'_> {
    fn drop(&mut self) {
        let txn = self.txn.take();
        let _ = catch_redb_panics(move || {
            drop(txn);
            Ok::<(), StoreError>(())
        });
    }
}

impl Drop for RedbWrite<'_> {
    fn drop(&mut self) {
        let txn = self.txn.take();
        let _ = catch_redb_panics(move || {
            drop(txn);
            Ok::<(), StoreError>(())
        });
    }
}

fn closed() -> StoreError {
    corrupt("storage", "transaction used after it ended")
}

impl RedbRead<'_> {
    fn txn(&self) -> Result<&ReadTransaction, StoreError> {
        self.txn.as_ref().ok_or_else(closed)
    }
}

impl RedbWrite<'_> {
    fn txn(&self) -> Result<&WriteTransaction, StoreError> {
        self.txn.as_ref().ok_or_else(closed)
    }
}

/// The read methods, written once over redb's two table types.
macro_rules! redb_reads {
    ($t:ident) => {
        impl ReadTxn for $t<'_> {
            fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
                self.store.guard(|| {
                    let t = self.txn()?.open_table(META)?;
                    Ok(t.get(name)?.map(|v| v.value().to_vec()))
                })
            }

            fn family(&self, id: &FamilyId) -> Result<Option<Vec<u8>>, StoreError> {
                self.store.guard(|| {
                    let t = self.txn()?.open_table(FAMILIES)?;
                    Ok(t.get(id.as_bytes())?.map(|v| v.value().to_vec()))
                })
            }

            fn families_by(&self, index: Index, tag: &[u8; TAG_LEN]) -> Result<Vec<FamilyId>, StoreError> {
                self.store
                    .guard(|| index_scan(&self.txn()?.open_table(index_table(index))?, tag))
            }

            fn families_by_page(
                &self,
                index: Index,
                tag: &[u8; TAG_LEN],
                after: Option<&FamilyId>,
                limit: usize,
            ) -> Result<Vec<FamilyId>, StoreError> {
                self.store
                    .guard(|| index_page(&self.txn()?.open_table(index_table(index))?, tag, after, limit))
            }

            fn events(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
                self.store.guard(|| {
                    let t = self.txn()?.open_table(EVENTS)?;
                    let mut out = Vec::new();
                    for entry in t.range(after.saturating_add(1)..)?.take(limit) {
                        let (k, v) = entry?;
                        out.push((k.value(), v.value().to_vec()));
                    }
                    Ok(out)
                })
            }

            fn family_count(&self) -> Result<u64, StoreError> {
                self.store.guard(|| Ok(self.txn()?.open_table(FAMILIES)?.len()?))
            }

            fn scan_families(
                &self,
                after: Option<&FamilyId>,
                limit: usize,
            ) -> Result<Vec<(FamilyId, Vec<u8>)>, StoreError> {
                self.store.guard(|| {
                    let t = self.txn()?.open_table(FAMILIES)?;
                    let range = match after {
                        Some(a) => t.range::<[u8; 16]>((
                            std::ops::Bound::Excluded(*a.as_bytes()),
                            std::ops::Bound::Unbounded,
                        ))?,
                        None => t.range::<[u8; 16]>(..)?,
                    };
                    let mut out = Vec::new();
                    for entry in range.take(limit) {
                        let (k, v) = entry?;
                        out.push((FamilyId::from_bytes(k.value()), v.value().to_vec()));
                    }
                    Ok(out)
                })
            }

            fn check_indexes(
                &self,
                expected: &BTreeMap<FamilyId, Option<IndexKeys>>,
            ) -> Result<IndexCheck, StoreError> {
                self.store.guard(|| {
                    let txn = self.txn()?;
                    check_indexes(
                        expected,
                        &txn.open_table(BY_SUBJECT)?,
                        &txn.open_table(BY_CLIENT)?,
                        &txn.open_table(BY_EXPIRY)?,
                    )
                })
            }
        }
    };
}
redb_reads!(RedbRead);
redb_reads!(RedbWrite);

impl WriteTxn for RedbWrite<'_> {
    fn set_meta(&mut self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.store.guard(|| {
            self.txn()?.open_table(META)?.insert(name, value)?;
            Ok(())
        })
    }

    fn lock_families(&mut self, ids: &[FamilyId]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        // redb has one writer at a time: reading inside the write
        // transaction is locking.
        self.store.guard(|| {
            let t = self.txn()?.open_table(FAMILIES)?;
            ids.iter()
                .map(|id| Ok(t.get(id.as_bytes())?.map(|v| v.value().to_vec())))
                .collect()
        })
    }

    fn insert_family(&mut self, id: &FamilyId, record: &[u8], keys: &IndexKeys) -> Result<(), StoreError> {
        self.store.guard(|| {
            let txn = self.txn()?;
            if txn.open_table(FAMILIES)?.insert(id.as_bytes(), record)?.is_some() {
                // 128 random bits never collide in practice; refuse rather than overwrite.
                return Err(corrupt("families", "family id collision"));
            }
            txn.open_table(BY_SUBJECT)?
                .insert(pair(&keys.subject, id.as_bytes()), ())?;
            txn.open_table(BY_CLIENT)?
                .insert(pair(&keys.client, id.as_bytes()), ())?;
            txn.open_table(BY_EXPIRY)?.insert(expiry_key(keys.gc_at, id), ())?;
            Ok(())
        })
    }

    fn update_family(
        &mut self,
        id: &FamilyId,
        record: &[u8],
        old: &IndexKeys,
        new: &IndexKeys,
    ) -> Result<(), StoreError> {
        self.store.guard(|| {
            let txn = self.txn()?;
            txn.open_table(FAMILIES)?.insert(id.as_bytes(), record)?;
            if old.subject != new.subject {
                let mut t = txn.open_table(BY_SUBJECT)?;
                t.remove(pair(&old.subject, id.as_bytes()))?;
                t.insert(pair(&new.subject, id.as_bytes()), ())?;
            }
            if old.client != new.client {
                let mut t = txn.open_table(BY_CLIENT)?;
                t.remove(pair(&old.client, id.as_bytes()))?;
                t.insert(pair(&new.client, id.as_bytes()), ())?;
            }
            if old.gc_at != new.gc_at {
                let mut t = txn.open_table(BY_EXPIRY)?;
                t.remove(expiry_key(old.gc_at, id))?;
                t.insert(expiry_key(new.gc_at, id), ())?;
            }
            Ok(())
        })
    }

    fn remove_family(&mut self, id: &FamilyId, old: &IndexKeys) -> Result<(), StoreError> {
        self.store.guard(|| {
            let txn = self.txn()?;
            txn.open_table(FAMILIES)?.remove(id.as_bytes())?;
            txn.open_table(BY_SUBJECT)?.remove(pair(&old.subject, id.as_bytes()))?;
            txn.open_table(BY_CLIENT)?.remove(pair(&old.client, id.as_bytes()))?;
            txn.open_table(BY_EXPIRY)?.remove(expiry_key(old.gc_at, id))?;
            Ok(())
        })
    }

    fn lock_due(&mut self, now: i64, limit: usize) -> Result<Vec<Due>, StoreError> {
        self.store.guard(|| {
            let txn = self.txn()?;
            let mut expiry = txn.open_table(BY_EXPIRY)?;
            let families = txn.open_table(FAMILIES)?;
            let keys: Vec<[u8; 24]> = expiry
                .range(..=expiry_key(now, &FamilyId::from_bytes([0xff; 16])))?
                .take(limit)
                .map(|e| e.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()?;
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                let (gc_at, family) = split_expiry_key(&key);
                match families.get(family.as_bytes())? {
                    Some(v) => out.push(Due {
                        family,
                        gc_at,
                        record: v.value().to_vec(),
                    }),
                    None => {
                        expiry.remove(key)?;
                    }
                }
            }
            Ok(out)
        })
    }

    fn append_event(&mut self, _at_millis: i64, value: &[u8]) -> Result<u64, StoreError> {
        self.store.guard(|| {
            let txn = self.txn()?;
            // The next sequence number lives in `meta` so numbers are never
            // reused, even after gc has emptied the log.
            let mut meta = txn.open_table(META)?;
            let seq = next_event_seq(&meta)?;
            meta.insert(META_EVENT_SEQ, seq.saturating_add(1).to_be_bytes().as_slice())?;
            txn.open_table(EVENTS)?.insert(seq, value)?;
            Ok(seq)
        })
    }

    fn remove_events(&mut self, seqs: &[u64]) -> Result<(), StoreError> {
        self.store.guard(|| {
            let mut t = self.txn()?.open_table(EVENTS)?;
            for seq in seqs {
                t.remove(seq)?;
            }
            Ok(())
        })
    }

    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let txn = self.txn.take().ok_or_else(closed)?;
        self.store.guard(|| Ok(txn.commit()?))
    }
}

fn index_table(index: Index) -> TableDefinition<'static, [u8; 32], ()> {
    match index {
        Index::Subject => BY_SUBJECT,
        Index::Client => BY_CLIENT,
    }
}

/// The families listed under `tag` in a subject or client index.
fn index_scan(table: &impl ReadableTable<[u8; 32], ()>, tag: &[u8; TAG_LEN]) -> Result<Vec<FamilyId>, StoreError> {
    let mut out = Vec::new();
    for entry in table.range(pair(tag, &[0; 16])..=pair(tag, &[0xff; 16]))? {
        let k = entry?.0.value();
        out.push(FamilyId::from_bytes(second_half(&k)));
    }
    Ok(out)
}

/// Up to `limit` ids under `tag` after `after`, from the index itself.
fn index_page(
    table: &impl ReadableTable<[u8; 32], ()>,
    tag: &[u8; TAG_LEN],
    after: Option<&FamilyId>,
    limit: usize,
) -> Result<Vec<FamilyId>, StoreError> {
    let start = pair(tag, after.map_or(&[0; 16], |f| f.as_bytes()));
    let mut out = Vec::new();
    for entry in table.range(start..=pair(tag, &[0xff; 16]))? {
        let id = FamilyId::from_bytes(second_half(&entry?.0.value()));
        if after == Some(&id) {
            continue;
        }
        if out.len() >= limit {
            break;
        }
        out.push(id);
    }
    Ok(out)
}

/// Compares the three index tables with what the records say.
fn check_indexes<T: ReadableTable<[u8; 32], ()>>(
    expected: &BTreeMap<FamilyId, Option<IndexKeys>>,
    by_subject: &T,
    by_client: &T,
    by_expiry: &impl ReadableTable<[u8; 24], ()>,
) -> Result<IndexCheck, StoreError> {
    let mut report = IndexCheck::default();
    for (family, keys) in expected {
        let Some(keys) = keys else { continue };
        for (name, present) in [
            (
                "by_subject",
                by_subject.get(pair(&keys.subject, family.as_bytes()))?.is_some(),
            ),
            (
                "by_client",
                by_client.get(pair(&keys.client, family.as_bytes()))?.is_some(),
            ),
            ("by_expiry", by_expiry.get(expiry_key(keys.gc_at, family))?.is_some()),
        ] {
            if !present {
                report.problems.push((name, *family, "index entry missing".into()));
            }
        }
    }
    for (name, index) in [("by_subject", by_subject), ("by_client", by_client)] {
        for entry in index.iter()? {
            let k = entry?.0.value();
            report.entries += 1;
            let family = FamilyId::from_bytes(second_half(&k));
            let tag = first_half(&k);
            let matches = match expected.get(&family) {
                Some(None) => true, // the record is reported already
                Some(Some(keys)) => {
                    tag == if name == "by_subject" {
                        keys.subject
                    } else {
                        keys.client
                    }
                }
                None => false,
            };
            if !matches {
                report
                    .problems
                    .push((name, family, "entry without a matching family".into()));
            }
        }
    }
    for entry in by_expiry.iter()? {
        let k = entry?.0.value();
        report.entries += 1;
        let (at, family) = split_expiry_key(&k);
        let matches = match expected.get(&family) {
            Some(None) => true,
            Some(Some(keys)) => keys.gc_at.max(0) == at,
            None => false,
        };
        if !matches {
            report
                .problems
                .push(("by_expiry", family, "entry without a matching family".into()));
        }
    }
    Ok(report)
}

/// Replaces `def` by a copy written in ascending key order: a scratch table
/// is filled, the original deleted, the scratch table renamed, all inside
/// `txn`.
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

fn pair(a: &[u8; 16], b: &[u8; 16]) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(a);
    k[16..].copy_from_slice(b);
    k
}

fn first_half(k: &[u8; 32]) -> [u8; 16] {
    let mut t = [0u8; 16];
    t.copy_from_slice(&k[..16]);
    t
}

fn second_half(k: &[u8; 32]) -> [u8; 16] {
    let mut t = [0u8; 16];
    t.copy_from_slice(&k[16..]);
    t
}

/// The expiry-index key: `at` as an order-preserving u64, then the family.
fn expiry_key(at: i64, family: &FamilyId) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&(at.max(0) as u64).to_be_bytes());
    k[8..].copy_from_slice(family.as_bytes());
    k
}

fn split_expiry_key(k: &[u8; 24]) -> (i64, FamilyId) {
    let mut at = [0u8; 8];
    at.copy_from_slice(&k[..8]);
    let mut f = [0u8; 16];
    f.copy_from_slice(&k[8..]);
    (
        i64::try_from(u64::from_be_bytes(at)).unwrap_or(i64::MAX),
        FamilyId::from_bytes(f),
    )
}

/// Runs `f`, turning a panic into [`StoreError::Corrupt`]. Used where no
/// store exists yet (opening) and for closing; an open store uses
/// [`RedbStore::guard`], which also marks the store damaged.
fn catch_redb_panics<T, E: From<StoreError>>(f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| Err(redb_panicked().into()))
}

/// [`catch_redb_panics`] for an open store: refuses at once if `damaged`
/// is set, and sets it when `f` panics.
fn catch_redb_panics_marking<T, E: From<StoreError>>(
    damaged: &AtomicBool,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    if damaged.load(Ordering::SeqCst) {
        return Err(corrupt(
            "storage",
            "the storage engine panicked earlier on damaged data; reopen after `rotoken check`",
        )
        .into());
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        damaged.store(true, Ordering::SeqCst);
        Err(redb_panicked().into())
    })
}

fn redb_panicked() -> StoreError {
    corrupt("storage", "the storage engine panicked reading damaged data")
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

/// False if `path` is a non-empty file that does not start with redb's
/// magic number (so it is certainly not a rotoken database); true if it
/// does, or if it is missing or empty (redb creates it).
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
    match create_new_private(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `path`, mode 0600; fails with `AlreadyExists` if it exists.
fn create_new_private(path: &Path) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path).map(drop)
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
            let err = RedbStore::open(&path, None).unwrap_err();
            assert!(matches!(err, OpenError::NotRotoken), "{err}");
            assert_eq!(std::fs::read(&path).unwrap(), content, "the file was changed");
        }
        std::fs::write(&path, b"").unwrap();
        assert!(RedbStore::open(&path, None).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn a_new_database_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.redb");
        drop(RedbStore::open(&path, None).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "database created with mode {mode:o}");
    }

    #[test]
    fn expiry_keys_round_trip_in_time_order() {
        let f = FamilyId::from_bytes([3; 16]);
        let (a, b) = (expiry_key(5, &f), expiry_key(1_000_000, &f));
        assert!(a < b);
        assert_eq!(split_expiry_key(&b), (1_000_000, f));
        assert_eq!(split_expiry_key(&expiry_key(-7, &f)), (0, f));
    }
}

#[cfg(test)]
mod schema_tests {
    use super::*;

    /// Writes `version` into the schema entry of the closed database at `path`.
    fn set_version(path: &Path, version: u32) {
        let db = Database::open(path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(META_SCHEMA, version.to_be_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused_and_the_file_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.redb");
        drop(RedbStore::open(&path, None).unwrap());
        set_version(&path, SCHEMA_VERSION + 1);
        let before = std::fs::read(&path).unwrap();
        let err = RedbStore::open(&path, None).unwrap_err();
        assert!(
            matches!(err, OpenError::UnsupportedSchema { found, supported }
                if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
            "{err}"
        );
        assert!(
            std::fs::read(&path).unwrap() == before,
            "opening a newer schema changed the file"
        );
    }
}

#[cfg(test)]
mod migration_tests {
    use super::*;

    const EXTRA: TableDefinition<'_, u64, u64> = TableDefinition::new("extra");

    fn add_extra(txn: &WriteTransaction) -> Result<(), StoreError> {
        txn.open_table(EXTRA)?.insert(1, 2)?;
        Ok(())
    }

    /// Today's migrations plus one more, as the next release would have them.
    const NEXT: &[RedbMigration] = &[
        RedbMigration {
            step: Migration::new(1, "tables"),
            apply: create_tables_v1,
        },
        RedbMigration {
            step: Migration::new(2, "an extra table"),
            apply: add_extra,
        },
    ];

    #[test]
    fn a_new_database_gets_every_migration_and_an_old_one_the_missing_ones() {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        let created = migrate(&db, 0, MIGRATIONS).unwrap();
        assert_eq!((created.found, created.current), (0, SCHEMA_VERSION));
        assert_eq!(created.applied.len(), MIGRATIONS.len());
        assert!(!created.upgraded());

        let found = schema_version(&db.begin_read().unwrap()).unwrap();
        let upgraded = migrate(&db, found, NEXT).unwrap();
        assert_eq!((upgraded.found, upgraded.current), (1, 2));
        assert_eq!(upgraded.applied, vec![Migration::new(2, "an extra table")]);
        assert!(upgraded.upgraded());
        let read = db.begin_read().unwrap();
        assert_eq!(schema_version(&read).unwrap(), 2);
        assert_eq!(read.open_table(EXTRA).unwrap().get(1).unwrap().unwrap().value(), 2);
        drop(read);

        let again = migrate(&db, 2, NEXT).unwrap();
        assert!(again.applied.is_empty() && !again.upgraded());
        // This build does not know version 2: refused.
        assert!(matches!(
            migrate(&db, 2, MIGRATIONS),
            Err(OpenError::UnsupportedSchema { found: 2, supported: 1 })
        ));
    }

    #[test]
    fn opening_reports_what_it_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.redb");
        let new = RedbStore::open(&path, None).unwrap();
        assert_eq!(new.schema().unwrap().found, 0);
        drop(new);
        let old = RedbStore::open(&path, None).unwrap();
        assert_eq!(
            old.schema().unwrap(),
            &SchemaStatus::new(SCHEMA_VERSION, SCHEMA_VERSION, Vec::new())
        );
    }

    #[test]
    fn a_held_file_is_locked_before_anything_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.redb");
        let _held = RedbStore::open(&path, None).unwrap();
        assert!(matches!(RedbStore::open(&path, None), Err(OpenError::Locked)));
    }
}

#[cfg(test)]
mod backup_tests {
    use super::*;

    #[test]
    fn a_backup_is_the_snapshot_of_every_table_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path().join("tokens.redb"), None).unwrap();
        let keys = IndexKeys {
            subject: [1; 16],
            client: [2; 16],
            gc_at: 5,
        };
        let mut txn = store.begin_write(Commit::Durable).unwrap();
        txn.insert_family(&FamilyId::from_bytes([9; 16]), b"record", &keys)
            .unwrap();
        txn.append_event(1, b"event one").unwrap();
        txn.append_event(2, b"event two").unwrap();
        txn.set_meta("key_check", b"kc").unwrap();
        txn.commit().unwrap();

        let out = dir.path().join("backup.redb");
        let info = store.backup(&out).unwrap();
        assert_eq!((info.families, info.events, info.last_event_seq), (1, 2, 2));
        assert_eq!(info.bytes, std::fs::metadata(&out).unwrap().len());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
        }
        // A backup never overwrites.
        assert!(matches!(store.backup(&out), Err(BackupError::Exists(_))));

        let copy = RedbStore::open(&out, None).unwrap();
        let names = |s: &RedbStore| {
            let r = s.db.begin_read().unwrap();
            let mut n: Vec<String> = r.list_tables().unwrap().map(|t| t.name().to_owned()).collect();
            n.sort();
            n
        };
        assert_eq!(names(&copy), names(&store), "a table was left out of the backup");
        let read = copy.begin_read().unwrap();
        assert_eq!(read.family(&FamilyId::from_bytes([9; 16])).unwrap().unwrap(), b"record");
        assert_eq!(read.meta("key_check").unwrap().unwrap(), b"kc");
        assert_eq!(read.events(0, 10).unwrap().len(), 2);
        let mut expected = BTreeMap::new();
        expected.insert(FamilyId::from_bytes([9; 16]), Some(keys));
        assert!(read.check_indexes(&expected).unwrap().problems.is_empty());
        drop(read);
        assert_eq!(copy.last_event_seq().unwrap(), 2);
        copy.skip_event_seqs_through(7).unwrap();
        assert_eq!(copy.last_event_seq().unwrap(), 7);
        copy.skip_event_seqs_through(3).unwrap();
        let mut txn = copy.begin_write(Commit::Durable).unwrap();
        assert_eq!(
            txn.append_event(3, b"after restore").unwrap(),
            8,
            "an event number was reused"
        );
    }

    #[test]
    fn a_closed_file_is_backed_up_without_a_write_and_a_held_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.redb");
        let store = RedbStore::open(&path, None).unwrap();
        let mut txn = store.begin_write(Commit::Durable).unwrap();
        txn.append_event(1, b"event").unwrap();
        txn.commit().unwrap();
        assert!(RedbStore::is_held(&path));
        let err = RedbStore::backup_file(&path, &dir.path().join("held.redb")).unwrap_err();
        assert!(matches!(err, BackupError::Open(OpenError::Locked)), "{err}");
        assert!(!dir.path().join("held.redb").exists(), "a failed backup left its file");
        drop(store);
        assert!(!RedbStore::is_held(&path));

        let before = std::fs::read(&path).unwrap();
        let out = dir.path().join("closed.redb");
        let info = RedbStore::backup_file(&path, &out).unwrap();
        assert_eq!((info.events, info.last_event_seq), (1, 1));
        assert!(
            std::fs::read(&path).unwrap() == before,
            "backing up wrote to the source"
        );
        assert_eq!(RedbStore::open(&out, None).unwrap().last_event_seq().unwrap(), 1);

        let text = dir.path().join("text");
        std::fs::write(&text, b"not a database").unwrap();
        let err = RedbStore::backup_file(&text, &dir.path().join("t.redb")).unwrap_err();
        assert!(matches!(err, BackupError::Open(OpenError::NotRotoken)), "{err}");
    }
}
