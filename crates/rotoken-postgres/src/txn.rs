//! The store's read and write transactions.
//!
//! A write transaction sends two kinds of round trip: reads that lock
//! (`lock_families`, `lock_due`, locking the event counter), with the
//! `BEGIN` riding on the first; and, at commit, every buffered change as
//! one statement per kind (arrays unnested) followed by `COMMIT`. A
//! rotation batch is therefore two round trips, whatever its size.

use std::collections::BTreeMap;

use rotoken::FamilyId;
use rotoken::StoreError;
use rotoken::store::{Due, Index, IndexCheck, IndexKeys, Locked, ReadTxn, TAG_LEN, WriteTxn};
use tokio_postgres::Row;

use crate::error::{PgStoreError, corrupt};
use crate::schema::ADVISORY_KEY;
use crate::session::{Params, Session, Statement};

/// Rows read per statement by [`ReadTxn::check_indexes`].
const CHECK_PAGE: i64 = 10_000;

fn p<T: tokio_postgres::types::ToSql + Sync + Send + 'static>(
    v: T,
) -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
    Box::new(v)
}

fn one(sql: &'static str, params: Params) -> Vec<Statement> {
    vec![(sql, params)]
}

/// The rows of the only statement run.
fn only(mut rows: Vec<Vec<Row>>) -> Vec<Row> {
    rows.pop().unwrap_or_default()
}

fn family_id(row: &Row, col: usize) -> Result<FamilyId, StoreError> {
    let bytes: &[u8] = row.try_get(col).map_err(StoreError::storage)?;
    let id: [u8; 16] = bytes
        .try_into()
        .map_err(|_| corrupt("families", "a family id is not 16 bytes"))?;
    Ok(FamilyId::from_bytes(id))
}

fn tag(row: &Row, col: usize) -> Option<[u8; TAG_LEN]> {
    row.try_get::<_, &[u8]>(col).ok().and_then(|b| b.try_into().ok())
}

fn seq_param(after: u64) -> i64 {
    i64::try_from(after).unwrap_or(i64::MAX)
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The read methods, shared by read and write transactions.
pub(crate) trait Reads {
    fn session(&self) -> &Session<'_>;

    /// Runs one statement (lock the meta key first in a write transaction).
    fn meta_statements(&self, name: &str) -> Vec<Statement> {
        one(
            "SELECT value FROM rotoken_meta WHERE name = $1",
            vec![p(name.to_owned())],
        )
    }
}

fn read_meta(r: &impl Reads, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let rows = r.session().run(r.meta_statements(name), false)?;
    match rows.last().and_then(|rows| rows.first()) {
        Some(row) => Ok(Some(row.try_get::<_, Vec<u8>>(0).map_err(StoreError::storage)?)),
        None => Ok(None),
    }
}

fn read_family(s: &Session<'_>, id: &FamilyId) -> Result<Option<Vec<u8>>, StoreError> {
    let rows = only(s.run(
        one(
            "SELECT record FROM rotoken_families WHERE id = $1",
            vec![p(id.as_bytes().to_vec())],
        ),
        false,
    )?);
    match rows.first() {
        Some(row) => Ok(Some(row.try_get(0).map_err(StoreError::storage)?)),
        None => Ok(None),
    }
}

fn read_families_by(s: &Session<'_>, index: Index, tag: &[u8; TAG_LEN]) -> Result<Vec<FamilyId>, StoreError> {
    let sql = match index {
        Index::Subject => "SELECT id FROM rotoken_families WHERE subject_tag = $1 ORDER BY id",
        _ => "SELECT id FROM rotoken_families WHERE client_tag = $1 ORDER BY id",
    };
    only(s.run(one(sql, vec![p(tag.to_vec())]), false)?)
        .iter()
        .map(|r| family_id(r, 0))
        .collect()
}

fn read_families_page(
    s: &Session<'_>,
    index: Index,
    tag: &[u8; TAG_LEN],
    after: Option<&FamilyId>,
    limit: usize,
) -> Result<Vec<FamilyId>, StoreError> {
    let sql = match index {
        Index::Subject => "SELECT id FROM rotoken_families WHERE subject_tag = $1 AND id > $2 ORDER BY id LIMIT $3",
        _ => "SELECT id FROM rotoken_families WHERE client_tag = $1 AND id > $2 ORDER BY id LIMIT $3",
    };
    // The empty bytea sorts before every id.
    let after = after.map_or_else(Vec::new, |f| f.as_bytes().to_vec());
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    only(s.run(one(sql, vec![p(tag.to_vec()), p(after), p(limit)]), false)?)
        .iter()
        .map(|r| family_id(r, 0))
        .collect()
}

fn read_events(s: &Session<'_>, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let rows = only(s.run(
        one(
            "SELECT seq, value FROM rotoken_events WHERE seq > $1 ORDER BY seq LIMIT $2",
            vec![p(seq_param(after)), p(limit_param(limit))],
        ),
        false,
    )?);
    rows.iter()
        .map(|r| {
            let seq: i64 = r.try_get(0).map_err(StoreError::storage)?;
            let seq = u64::try_from(seq).map_err(|_| corrupt("events", "negative sequence number"))?;
            Ok((seq, r.try_get(1).map_err(StoreError::storage)?))
        })
        .collect()
}

fn read_count(s: &Session<'_>) -> Result<u64, StoreError> {
    let rows = only(s.run(one("SELECT count(*) FROM rotoken_families", vec![]), false)?);
    let n: i64 = rows
        .first()
        .ok_or(PgStoreError::BadValue("count"))?
        .try_get(0)
        .map_err(StoreError::storage)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn read_scan(s: &Session<'_>, after: Option<&FamilyId>, limit: usize) -> Result<Vec<(FamilyId, Vec<u8>)>, StoreError> {
    let stmt = match after {
        Some(a) => (
            "SELECT id, record FROM rotoken_families WHERE id > $1 ORDER BY id LIMIT $2",
            vec![p(a.as_bytes().to_vec()), p(limit_param(limit))],
        ),
        None => (
            "SELECT id, record FROM rotoken_families ORDER BY id LIMIT $1",
            vec![p(limit_param(limit))],
        ),
    };
    only(s.run(vec![stmt], false)?)
        .iter()
        .map(|r| Ok((family_id(r, 0)?, r.try_get(1).map_err(StoreError::storage)?)))
        .collect()
}

/// The index columns of every row, compared with what the records say.
fn read_check(s: &Session<'_>, expected: &BTreeMap<FamilyId, Option<IndexKeys>>) -> Result<IndexCheck, StoreError> {
    let mut report = IndexCheck::default();
    let mut seen = 0usize;
    let mut after: Vec<u8> = Vec::new();
    loop {
        let rows = only(s.run(
            one(
                "SELECT id, subject_tag, client_tag, gc_at FROM rotoken_families
                 WHERE id > $1 ORDER BY id LIMIT $2",
                vec![p(after.clone()), p(CHECK_PAGE)],
            ),
            false,
        )?);
        let Some(last) = rows.last() else { break };
        after = last.try_get::<_, Vec<u8>>(0).map_err(StoreError::storage)?;
        for row in &rows {
            let family = family_id(row, 0)?;
            report.entries += 3;
            let Some(found) = expected.get(&family) else {
                for name in ["by_subject", "by_client", "by_expiry"] {
                    report
                        .problems
                        .push((name, family, "entry without a matching family".into()));
                }
                continue;
            };
            seen += 1;
            let Some(keys) = found else { continue }; // the record is reported already
            let gc_at: Option<i64> = row.try_get(3).ok();
            for (name, ok) in [
                ("by_subject", tag(row, 1) == Some(keys.subject)),
                ("by_client", tag(row, 2) == Some(keys.client)),
                ("by_expiry", gc_at == Some(keys.gc_at)),
            ] {
                if !ok {
                    report
                        .problems
                        .push((name, family, "entry disagrees with the family's record".into()));
                }
            }
        }
    }
    if seen < expected.len() {
        // Families the caller scanned that have no row here (another snapshot?).
        report.problems.push((
            "families",
            FamilyId::from_bytes([0; 16]),
            format!("{} families were not found by the index scan", expected.len() - seen),
        ));
    }
    Ok(report)
}

/// The [`ReadTxn`] methods over a [`Reads`] type.
macro_rules! pg_reads {
    ($t:ident) => {
        impl ReadTxn for $t<'_> {
            fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
                read_meta(self, name)
            }

            fn family(&self, id: &FamilyId) -> Result<Option<Vec<u8>>, StoreError> {
                read_family(self.session(), id)
            }

            fn families_by(&self, index: Index, tag: &[u8; TAG_LEN]) -> Result<Vec<FamilyId>, StoreError> {
                read_families_by(self.session(), index, tag)
            }

            fn families_by_page(
                &self,
                index: Index,
                tag: &[u8; TAG_LEN],
                after: Option<&FamilyId>,
                limit: usize,
            ) -> Result<Vec<FamilyId>, StoreError> {
                read_families_page(self.session(), index, tag, after, limit)
            }

            fn events(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
                read_events(self.session(), after, limit)
            }

            fn family_count(&self) -> Result<u64, StoreError> {
                read_count(self.session())
            }

            fn scan_families(
                &self,
                after: Option<&FamilyId>,
                limit: usize,
            ) -> Result<Vec<(FamilyId, Vec<u8>)>, StoreError> {
                read_scan(self.session(), after, limit)
            }

            fn check_indexes(
                &self,
                expected: &BTreeMap<FamilyId, Option<IndexKeys>>,
            ) -> Result<IndexCheck, StoreError> {
                read_check(self.session(), expected)
            }
        }
    };
}

/// A read transaction: one `REPEATABLE READ, READ ONLY` snapshot, so a
/// whole-store check sees one consistent state.
pub(crate) struct PgRead<'s> {
    pub(crate) session: Session<'s>,
}

impl<'s> Reads for PgRead<'s> {
    fn session(&self) -> &Session<'_> {
        &self.session
    }
}

pg_reads!(PgRead);

/// A family's row as it will be written at commit.
struct Row5 {
    record: Vec<u8>,
    keys: IndexKeys,
}

/// A write transaction, begun `ISOLATION LEVEL READ COMMITTED` whatever
/// the server's `default_transaction_isolation`: every family it changes
/// is locked by `SELECT ... FOR UPDATE` first, which waits for the current
/// holder and then reads the latest committed row. That is what the
/// engine needs (rule 2: it decides on the latest state, and the loser of
/// a race is answered as a second presenter); under `REPEATABLE READ` or
/// `SERIALIZABLE` the same lock would instead end in a serialization
/// failure (SQLSTATE 40001) whenever another server changed the row after
/// the snapshot, and every such race would cost a whole batch retry.
pub(crate) struct PgWrite<'s> {
    pub(crate) session: Session<'s>,
    /// The meta advisory lock is held (see [`WriteTxn`] `meta`).
    meta_locked: std::cell::Cell<bool>,
    inserts: BTreeMap<FamilyId, Row5>,
    updates: BTreeMap<FamilyId, Row5>,
    removes: Vec<FamilyId>,
    events: Vec<(i64, i64, Vec<u8>)>,
    removed_events: Vec<i64>,
    meta: BTreeMap<String, Vec<u8>>,
    /// `raise_meta_i64`: the highest value asked for, per name.
    raises: BTreeMap<String, i64>,
    /// The next event number, once the counter row is locked.
    next_seq: Option<i64>,
}

impl<'s> PgWrite<'s> {
    pub(crate) fn new(session: Session<'s>) -> Self {
        Self {
            session,
            meta_locked: std::cell::Cell::new(false),
            inserts: BTreeMap::new(),
            updates: BTreeMap::new(),
            removes: Vec::new(),
            events: Vec::new(),
            removed_events: Vec::new(),
            meta: BTreeMap::new(),
            raises: BTreeMap::new(),
            next_seq: None,
        }
    }
}

impl<'s> Reads for PgWrite<'s> {
    fn session(&self) -> &Session<'_> {
        &self.session
    }

    /// Meta is read to be set (the key check of the first opener): the
    /// read takes a transaction-level advisory lock first, so two servers
    /// opening an empty database at once cannot both record their keys.
    fn meta_statements(&self, name: &str) -> Vec<Statement> {
        let mut out = Vec::new();
        if !self.meta_locked.replace(true) {
            out.push(("SELECT pg_advisory_xact_lock($1)", vec![p(ADVISORY_KEY)]));
        }
        out.push((
            "SELECT value FROM rotoken_meta WHERE name = $1",
            vec![p(name.to_owned())],
        ));
        out
    }
}

pg_reads!(PgWrite);

fn unzip_rows(rows: &BTreeMap<FamilyId, Row5>) -> Params {
    let mut ids = Vec::with_capacity(rows.len());
    let mut records = Vec::with_capacity(rows.len());
    let mut subjects = Vec::with_capacity(rows.len());
    let mut clients = Vec::with_capacity(rows.len());
    let mut gc = Vec::with_capacity(rows.len());
    for (id, r) in rows {
        ids.push(id.as_bytes().to_vec());
        records.push(r.record.clone());
        subjects.push(r.keys.subject.to_vec());
        clients.push(r.keys.client.to_vec());
        gc.push(r.keys.gc_at);
    }
    vec![p(ids), p(records), p(subjects), p(clients), p(gc)]
}

const LOCK_FAMILIES: &str =
    "SELECT id, record FROM rotoken_families WHERE id = ANY($1::bytea[]) ORDER BY id FOR UPDATE";
/// The bounded wait of `try_lock_families`: set before the savepoint, so it
/// stays for the rest of the transaction (every later lock wait of the
/// batch is bounded too) even after a rollback to it.
const SET_LOCK_WAIT: &str = "SELECT set_config('lock_timeout', $1, true)";
const LOCK_SAVEPOINT: &str = "rotoken_lock";
const SAVEPOINT: &str = "SAVEPOINT rotoken_lock";
const RELEASE: &str = "RELEASE SAVEPOINT rotoken_lock";
const LOCK_FREE_FAMILIES: &str =
    "SELECT id, record FROM rotoken_families WHERE id = ANY($1::bytea[]) ORDER BY id FOR UPDATE SKIP LOCKED";
const FAMILIES_PRESENT: &str = "SELECT id FROM rotoken_families WHERE id = ANY($1::bytea[])";
/// Raises each value, never lowers it: values are big-endian `i64`s,
/// compared as `int8` (a bytea comparison would put -1, `ff..ff`, above 1).
/// The conflicting row is locked by the upsert until commit, and a
/// concurrent raise waits for it and then compares with the committed
/// value; no advisory lock.
const RAISE_META: &str = "INSERT INTO rotoken_meta (name, value)
     SELECT * FROM unnest($1::text[], $2::bytea[])
     ON CONFLICT (name) DO UPDATE SET value = excluded.value
     WHERE ('x' || encode(rotoken_meta.value, 'hex'))::bit(64)::int8
         < ('x' || encode(excluded.value, 'hex'))::bit(64)::int8";

/// Ids in the one lock order every locker uses (bytea sorts as bytes), so
/// two transactions never wait on each other in a cycle.
fn sorted_ids(ids: &[FamilyId]) -> Vec<Vec<u8>> {
    let mut sorted: Vec<Vec<u8>> = ids.iter().map(|id| id.as_bytes().to_vec()).collect();
    sorted.sort_unstable();
    sorted
}

/// The `(id, record)` rows of a locking read.
fn records(rows: &[Row]) -> Result<BTreeMap<FamilyId, Vec<u8>>, StoreError> {
    let mut found = BTreeMap::new();
    for r in rows {
        found.insert(
            family_id(r, 0)?,
            r.try_get::<_, Vec<u8>>(1).map_err(StoreError::storage)?,
        );
    }
    Ok(found)
}

const INSERT_FAMILIES: &str = "INSERT INTO rotoken_families (id, record, subject_tag, client_tag, gc_at)
     SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[], $5::int8[])";
const UPDATE_FAMILIES: &str = "UPDATE rotoken_families f
     SET record = u.record, subject_tag = u.subject_tag, client_tag = u.client_tag, gc_at = u.gc_at
     FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[], $5::int8[])
          AS u(id, record, subject_tag, client_tag, gc_at)
     WHERE f.id = u.id";
const DELETE_FAMILIES: &str = "DELETE FROM rotoken_families WHERE id = ANY($1::bytea[])";
const INSERT_EVENTS: &str = "INSERT INTO rotoken_events (seq, at_millis, value)
     SELECT * FROM unnest($1::int8[], $2::int8[], $3::bytea[])";
const UPDATE_EVENT_SEQ: &str = "UPDATE rotoken_event_seq SET next = $1";
const DELETE_EVENTS: &str = "DELETE FROM rotoken_events WHERE seq = ANY($1::int8[])";
const UPSERT_META: &str = "INSERT INTO rotoken_meta (name, value)
     SELECT * FROM unnest($1::text[], $2::bytea[])
     ON CONFLICT (name) DO UPDATE SET value = excluded.value";

impl WriteTxn for PgWrite<'_> {
    fn set_meta(&mut self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(name.to_owned(), value.to_vec());
        Ok(())
    }

    fn lock_families(&mut self, ids: &[FamilyId]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = only(self.session.run(one(LOCK_FAMILIES, vec![p(sorted_ids(ids))]), false)?);
        let found = records(&rows)?;
        Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
    }

    /// The locking read of `lock_families` under `lock_timeout` (the
    /// store's lock wait), inside a savepoint, in the same round trip (with
    /// the `BEGIN` too, for the first read). When a row stays locked past
    /// the wait (SQLSTATE 55P03), one more round trip rolls back to the
    /// savepoint (releasing what the read had locked) and one more locks
    /// what is free now (`SKIP LOCKED`) and lists which ids exist: those
    /// that exist but were skipped are [`Locked::Busy`].
    fn try_lock_families(&mut self, ids: &[FamilyId]) -> Result<Vec<Locked>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sorted = sorted_ids(ids);
        let first = self.session.run(
            vec![
                (SET_LOCK_WAIT, vec![p(self.session.store.lock_wait.clone())]),
                (SAVEPOINT, vec![]),
                (LOCK_FAMILIES, vec![p(sorted.clone())]),
                (RELEASE, vec![]),
            ],
            false,
        );
        match first {
            Ok(rows) => {
                let found = records(rows.get(2).map_or(&[][..], Vec::as_slice))?;
                return Ok(ids.iter().map(|id| Locked::Held(found.get(id).cloned())).collect());
            }
            Err(StoreError::Busy(_)) => {}
            Err(e) => return Err(e),
        }
        self.session.rollback_to(LOCK_SAVEPOINT)?;
        let rows = self.session.run(
            vec![
                (LOCK_FREE_FAMILIES, vec![p(sorted.clone())]),
                (FAMILIES_PRESENT, vec![p(sorted)]),
            ],
            false,
        )?;
        let locked = records(rows.first().map_or(&[][..], Vec::as_slice))?;
        let present = rows
            .get(1)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(|r| family_id(r, 0))
            .collect::<Result<std::collections::BTreeSet<FamilyId>, _>>()?;
        Ok(ids
            .iter()
            .map(|id| match locked.get(id) {
                Some(record) => Locked::Held(Some(record.clone())),
                None if present.contains(id) => Locked::Busy,
                None => Locked::Held(None),
            })
            .collect())
    }

    /// One buffered upsert per transaction, sent with the `COMMIT`, that
    /// never lowers the stored value and takes no advisory lock (the
    /// engine's clock floor: every server raises it, and a lock every batch
    /// took would stall every server behind one stuck session).
    fn raise_meta_i64(&mut self, name: &str, value: i64) -> Result<(), StoreError> {
        let v = self.raises.entry(name.to_owned()).or_insert(value);
        *v = (*v).max(value);
        Ok(())
    }

    fn insert_family(&mut self, id: &FamilyId, record: &[u8], keys: &IndexKeys) -> Result<(), StoreError> {
        let row = Row5 {
            record: record.to_vec(),
            keys: *keys,
        };
        if self.inserts.insert(*id, row).is_some() {
            return Err(corrupt("families", "family id collision"));
        }
        Ok(())
    }

    fn update_family(
        &mut self,
        id: &FamilyId,
        record: &[u8],
        _old: &IndexKeys,
        new: &IndexKeys,
    ) -> Result<(), StoreError> {
        let row = Row5 {
            record: record.to_vec(),
            keys: *new,
        };
        match self.inserts.get_mut(id) {
            Some(inserted) => *inserted = row,
            None => {
                self.updates.insert(*id, row);
            }
        }
        Ok(())
    }

    fn remove_family(&mut self, id: &FamilyId, _old: &IndexKeys) -> Result<(), StoreError> {
        self.updates.remove(id);
        if self.inserts.remove(id).is_none() {
            self.removes.push(*id);
        }
        Ok(())
    }

    fn lock_due(&mut self, now: i64, limit: usize) -> Result<Vec<Due>, StoreError> {
        let rows = only(self.session.run(
            one(
                "SELECT id, gc_at, record FROM rotoken_families WHERE gc_at <= $1
                 ORDER BY gc_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
                vec![p(now), p(limit_param(limit))],
            ),
            false,
        )?);
        rows.iter()
            .map(|r| {
                Ok(Due {
                    family: family_id(r, 0)?,
                    gc_at: r.try_get(1).map_err(StoreError::storage)?,
                    record: r.try_get(2).map_err(StoreError::storage)?,
                })
            })
            .collect()
    }

    fn append_event(&mut self, at_millis: i64, value: &[u8]) -> Result<u64, StoreError> {
        let seq = match self.next_seq {
            Some(n) => n,
            None => {
                // The counter row stays locked until this transaction ends,
                // so numbers increase in commit order, without gaps, and are
                // never handed out twice; the new value is written at commit.
                let rows = only(
                    self.session
                        .run(one("SELECT next FROM rotoken_event_seq FOR UPDATE", vec![]), false)?,
                );
                rows.first()
                    .ok_or(PgStoreError::BadValue("rotoken_event_seq"))?
                    .try_get(0)
                    .map_err(StoreError::storage)?
            }
        };
        self.next_seq = Some(
            seq.checked_add(1)
                .ok_or_else(|| corrupt("events", "sequence exhausted"))?,
        );
        self.events.push((seq, at_millis, value.to_vec()));
        u64::try_from(seq).map_err(|_| corrupt("events", "negative sequence number"))
    }

    fn remove_events(&mut self, seqs: &[u64]) -> Result<(), StoreError> {
        self.removed_events.extend(seqs.iter().map(|s| seq_param(*s)));
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let mut statements: Vec<Statement> = Vec::new();
        if !self.inserts.is_empty() {
            statements.push((INSERT_FAMILIES, unzip_rows(&self.inserts)));
        }
        if !self.updates.is_empty() {
            statements.push((UPDATE_FAMILIES, unzip_rows(&self.updates)));
        }
        if !self.removes.is_empty() {
            let ids: Vec<Vec<u8>> = self.removes.iter().map(|id| id.as_bytes().to_vec()).collect();
            statements.push((DELETE_FAMILIES, vec![p(ids)]));
        }
        if !self.events.is_empty() {
            let seqs: Vec<i64> = self.events.iter().map(|e| e.0).collect();
            let ats: Vec<i64> = self.events.iter().map(|e| e.1).collect();
            let values: Vec<Vec<u8>> = self.events.iter().map(|e| e.2.clone()).collect();
            statements.push((INSERT_EVENTS, vec![p(seqs), p(ats), p(values)]));
        }
        if let Some(next) = self.next_seq {
            statements.push((UPDATE_EVENT_SEQ, vec![p(next)]));
        }
        if !self.removed_events.is_empty() {
            statements.push((DELETE_EVENTS, vec![p(self.removed_events.clone())]));
        }
        if !self.meta.is_empty() {
            let names: Vec<String> = self.meta.keys().cloned().collect();
            let values: Vec<Vec<u8>> = self.meta.values().cloned().collect();
            statements.push((UPSERT_META, vec![p(names), p(values)]));
        }
        if !self.raises.is_empty() {
            let names: Vec<String> = self.raises.keys().cloned().collect();
            let values: Vec<Vec<u8>> = self.raises.values().map(|v| v.to_be_bytes().to_vec()).collect();
            statements.push((RAISE_META, vec![p(names), p(values)]));
        }
        if statements.is_empty() && !self.session.begun() {
            return Ok(()); // nothing read, nothing written
        }
        // Every family updated or removed is locked by this transaction
        // (`lock_families`, `lock_due`), so the changes and the `COMMIT`
        // go in one round trip.
        self.session.run(statements, true)?;
        Ok(())
    }
}
