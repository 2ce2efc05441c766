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

use super::{Commit, Due, Index, IndexCheck, IndexKeys, ReadTxn, Store, TAG_LEN, WriteTxn};
use crate::error::{OpenError, StoreError, corrupt};
use crate::token::FamilyId;

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

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
        let store = Self {
            db: Db(Some(db)),
            damaged: AtomicBool::new(false),
        };
        store.guard(|| store.init_schema())?;
        Ok(store)
    }

    /// Checks the schema of an existing database, or writes it (durably,
    /// whatever the policy) into a new one.
    fn init_schema(&self) -> Result<(), OpenError> {
        let read = self.db.begin_read().map_err(StoreError::from)?;
        let existing = read.list_tables().map_err(StoreError::from)?.count();
        let version = match read.open_table(META) {
            Ok(meta) => Some(
                meta.get(META_SCHEMA)
                    .map_err(StoreError::from)?
                    .map(|v| v.value().to_vec()),
            ),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(StoreError::from(e).into()),
        };
        drop(read);
        match version {
            None if existing > 0 => Err(OpenError::NotRotoken),
            None => {
                let mut txn = self.db.begin_write().map_err(StoreError::from)?;
                txn.set_two_phase_commit(true);
                {
                    let mut meta = txn.open_table(META).map_err(StoreError::from)?;
                    meta.insert(META_SCHEMA, SCHEMA_VERSION.to_be_bytes().as_slice())
                        .map_err(StoreError::from)?;
                    txn.open_table(FAMILIES).map_err(StoreError::from)?;
                    txn.open_table(BY_SUBJECT).map_err(StoreError::from)?;
                    txn.open_table(BY_CLIENT).map_err(StoreError::from)?;
                    txn.open_table(BY_EXPIRY).map_err(StoreError::from)?;
                    txn.open_table(EVENTS).map_err(StoreError::from)?;
                }
                txn.commit().map_err(StoreError::from)?;
                Ok(())
            }
            Some(Some(version)) => {
                let version: [u8; 4] = version.try_into().map_err(|_| corrupt("meta", "schema version"))?;
                let found = u32::from_be_bytes(version);
                if found != SCHEMA_VERSION {
                    return Err(OpenError::UnsupportedSchema {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                Ok(())
            }
            Some(None) => Err(OpenError::NotRotoken),
        }
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
            let seq = match meta.get(META_EVENT_SEQ)?.map(|v| <[u8; 8]>::try_from(v.value())) {
                Some(Ok(b)) => u64::from_be_bytes(b),
                Some(Err(_)) => return Err(corrupt("meta", "event sequence")),
                None => 1,
            };
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
