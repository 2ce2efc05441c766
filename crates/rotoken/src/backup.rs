//! A database over the years: what opening did to its schema, consistent
//! backups while the engine runs, and, after a restore, the revocations
//! recorded since the backup applied again.
//!
//! A backup is one read transaction copied into a new file
//! ([`Store::backup`](crate::store::Store::backup)): a snapshot of the
//! moment it began, taken beside live writers. Restoring it brings the
//! database back to that moment, so everything after is lost: families
//! issued since are unknown, tokens rotated since are `diverged` (and the
//! family is revoked when one is presented), and families revoked since
//! are live again. The last is the dangerous one; the event stream
//! (`rotoken events --follow`, `serve --events-to`) recorded those
//! revocations, and [`Engine::reapply_revocations`] applies them again.
//! docs/reliability.md ("Backup and restore") says what a restore without
//! the stream loses.

use std::path::{Path, PathBuf};

use crate::error::{OpenError, RevokeError, StoreError};
use crate::store::SchemaStatus;
use crate::token::FamilyId;
use crate::{Engine, RevokeTarget};

/// What a backup holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupInfo {
    /// Families copied.
    pub families: u64,
    /// Events copied.
    pub events: u64,
    /// The sequence number of the last event numbered before the snapshot
    /// (0 if none): events of a stream with greater numbers happened after
    /// the backup.
    pub last_event_seq: u64,
    /// The size of the backup file.
    pub bytes: u64,
}

/// Why a backup failed. A partly written file is removed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The store has no snapshot of its own (the PostgreSQL store: use
    /// `pg_dump` or the database's own backups).
    #[error(
        "the {0} store has no backup of its own; back it up with its database's tools (PostgreSQL: pg_dump, base backups)"
    )]
    Unsupported(&'static str),
    /// The backup file exists already; a backup never overwrites.
    #[error("{} exists already; a backup never overwrites a file", .0.display())]
    Exists(PathBuf),
    /// Creating, writing or syncing the file failed.
    #[error("writing the backup {}: {source}", path.display())]
    Io {
        /// The backup file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The database to back up could not be opened (held by another
    /// process, not rotoken's, a newer schema).
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Reading the store or writing the copy failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BackupError {
    /// A stable snake_case code: `backup_unsupported`, `backup_exists`,
    /// `io_error`, or the open or storage error's code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unsupported(_) => "backup_unsupported",
            Self::Exists(_) => "backup_exists",
            Self::Io { .. } => "io_error",
            Self::Open(e) => e.code().as_str(),
            Self::Store(e) => e.code().as_str(),
        }
    }
}

/// One event of a recorded stream, as [`Engine::reapply_revocations`]
/// reads it: its number, its kind's name (`reuse_detected`, `diverged`,
/// `revoked`, `expired`: [`crate::EventKind::as_str`]) and its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedEvent<'a> {
    /// The event's sequence number.
    pub seq: u64,
    /// The event's kind.
    pub kind: &'a str,
    /// The family it is about.
    pub family: FamilyId,
}

/// True for the kinds of event that revoked their family.
pub fn revoked_its_family(kind: &str) -> bool {
    matches!(kind, "reuse_detected" | "diverged" | "revoked")
}

/// What [`Engine::reapply_revocations`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reapplied {
    /// Events after the backup that had revoked a family.
    pub revocations: u64,
    /// Families revoked again (live in the restored database).
    pub revoked: u64,
    /// Families already revoked in the restored database, or not in it
    /// (issued after the backup): nothing to do.
    pub unchanged: u64,
    /// The greatest sequence number in the stream (0 for an empty one).
    pub last_seq: u64,
    /// The first sequence number after the backup's, if the stream has
    /// any: when it is above the backup's last event plus one, the stream
    /// misses events in between (a revocation among them is not applied).
    pub first_seq_after: Option<u64>,
}

impl Reapplied {
    /// True if the stream starts after the event that follows the backup:
    /// revocations between the two are missing from it.
    pub fn has_gap(&self, backup_last_seq: u64) -> bool {
        self.first_seq_after
            .is_some_and(|first| first > backup_last_seq.saturating_add(1))
    }
}

impl Engine {
    /// What opening found and did to the store's schema (the version found,
    /// the migrations applied), when the store says; `None` otherwise.
    /// Opening migrates: a database of an older release is brought to this
    /// build's schema in one transaction, and this is the record of it.
    pub fn schema(&self) -> Option<&SchemaStatus> {
        self.core.store.schema()
    }

    /// Writes a consistent snapshot of the database into a new file at
    /// `out` (mode 0600) while the engine keeps serving: see
    /// [`Store::backup`](crate::store::Store::backup).
    ///
    /// # Errors
    ///
    /// As [`Store::backup`](crate::store::Store::backup).
    pub fn backup(&self, out: impl AsRef<Path>) -> Result<BackupInfo, BackupError> {
        self.core.store.backup(out.as_ref())
    }

    /// After a restore from a backup whose last event was `after`: revokes
    /// again every family that an event of `events` numbered above `after`
    /// revoked (kinds `reuse_detected`, `diverged`, `revoked`), so no
    /// family revoked since the backup comes back to life. Each is revoked
    /// as [`RevokeTarget::Family`] (its new event says `family`); a family
    /// the database does not hold (issued after the backup) or holds
    /// revoked already is left as it is.
    ///
    /// # Errors
    ///
    /// A [`RevokeError`] from revoking (a storage error); the revocations
    /// before it were applied, and running it again is harmless.
    pub fn reapply_revocations<'a>(
        &self,
        events: impl IntoIterator<Item = RecordedEvent<'a>>,
        after: u64,
    ) -> Result<Reapplied, RevokeError> {
        let mut report = Reapplied::default();
        for e in events {
            report.last_seq = report.last_seq.max(e.seq);
            if e.seq <= after {
                continue;
            }
            report.first_seq_after = Some(report.first_seq_after.map_or(e.seq, |f| f.min(e.seq)));
            if !revoked_its_family(e.kind) {
                continue;
            }
            report.revocations += 1;
            match self.revoke(RevokeTarget::Family(e.family))? {
                0 => report.unchanged += 1,
                _ => report.revoked += 1,
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Grant, Keyring, Options, Scope};

    #[test]
    fn only_revocations_after_the_backup_are_applied_again_and_a_gap_is_seen() {
        let engine = Engine::in_memory(Keyring::generate().unwrap(), Options::default()).unwrap();
        let grant = Grant::new("alice", "web", Scope::parse("openid offline_access").unwrap());
        let live = engine.issue(&grant).unwrap().family;
        let other = engine.issue(&grant).unwrap().family;
        let unknown = FamilyId::from_bytes([7; 16]);
        let events = [
            // At or before the backup: already in it.
            RecordedEvent {
                seq: 3,
                kind: "revoked",
                family: other,
            },
            // After it, but not a revocation.
            RecordedEvent {
                seq: 7,
                kind: "expired",
                family: other,
            },
            RecordedEvent {
                seq: 8,
                kind: "reuse_detected",
                family: live,
            },
            // A family issued after the backup: not in the database.
            RecordedEvent {
                seq: 9,
                kind: "diverged",
                family: unknown,
            },
        ];
        let done = engine.reapply_revocations(events, 5).unwrap();
        assert_eq!((done.revocations, done.revoked, done.unchanged), (2, 1, 1));
        assert_eq!((done.last_seq, done.first_seq_after), (9, Some(7)));
        assert!(done.has_gap(5) && !done.has_gap(6));
        assert!(!engine.family_is_active(&live).unwrap());
        assert!(engine.family_is_active(&other).unwrap());
        // Running it again changes nothing more.
        let again = engine.reapply_revocations(events, 5).unwrap();
        assert_eq!((again.revoked, again.unchanged), (0, 2));
    }

    #[test]
    fn a_store_without_a_backup_of_its_own_says_so() {
        struct NoBackup(crate::RedbStore);
        impl crate::store::Store for NoBackup {
            fn name(&self) -> &'static str {
                "other"
            }
            fn begin_read(&self) -> Result<Box<dyn crate::store::ReadTxn + '_>, StoreError> {
                self.0.begin_read()
            }
            fn begin_write(
                &self,
                commit: crate::store::Commit,
            ) -> Result<Box<dyn crate::store::WriteTxn + '_>, StoreError> {
                self.0.begin_write(commit)
            }
        }
        let store = NoBackup(crate::RedbStore::in_memory().unwrap());
        let engine = Engine::with_store(store, Keyring::generate().unwrap(), crate::Options::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = engine.backup(dir.path().join("b.redb")).unwrap_err();
        assert!(matches!(err, BackupError::Unsupported("other")), "{err}");
        assert_eq!(err.code(), "backup_unsupported");
        assert!(engine.schema().is_none());
    }
}
