//! `rotoken migrate`, `rotoken backup` and `rotoken restore`: a database
//! across releases, backups and restores.
//!
//! * `migrate` opens the store (which applies the migrations it lacks, in
//!   one transaction) and prints the schema versions before and after.
//! * `backup OUT` writes a consistent snapshot of a redb database into a
//!   new file: read-only from the file when no process holds it, or with
//!   `--admin-url` through a running `rotoken serve` (`POST /admin/backup`,
//!   which writes the file on the server's machine). A PostgreSQL store is
//!   backed up with its own tools (pg_dump, base backups).
//! * `restore BACKUP` copies the backup beside the database, revokes again
//!   every family the event stream (`--events`, JSON lines as `rotoken
//!   events` and `serve --events-to` write them) records as revoked after
//!   the backup, and only then renames the copy over the database.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use rotoken::backup::{BackupError, BackupInfo, RecordedEvent};
use rotoken::store::SchemaStatus;
use rotoken::{Engine, FamilyId, Options, RedbStore};
use rotoken_http::EventJson;
use serde::{Deserialize, Serialize};

use crate::Global;
use crate::admin_client::AdminClient;
use crate::commands::{existing_store, load_keys, policy};
use crate::output::{self, CliError};

/// How long a backup through the admin API may take.
const ADMIN_BACKUP_TIMEOUT: Duration = Duration::from_secs(3600);

/// Largest event stream `restore --events` reads.
const MAX_EVENTS_FILE: u64 = 1 << 30;

/// `rotoken backup ...`
#[derive(Debug, Args)]
pub(crate) struct BackupArgs {
    /// The backup file to create (never overwritten). With --admin-url it is
    /// written by the server, on the server's machine.
    #[arg(value_name = "OUT")]
    pub(crate) out: PathBuf,
    /// Back up through a running `rotoken serve`'s admin API
    /// (`http://127.0.0.1:8081`), the admin token in ROTOKEN_ADMIN_TOKEN:
    /// the way while the server holds the file.
    #[arg(long, value_name = "URL")]
    pub(crate) admin_url: Option<String>,
}

/// `rotoken restore ...`
#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// The backup file (from `rotoken backup`).
    #[arg(value_name = "BACKUP")]
    pub(crate) backup: PathBuf,
    /// The event stream kept since the backup (JSON lines, as `rotoken events`
    /// and `serve --events-to` write them): every family it records as
    /// revoked after the backup is revoked again.
    #[arg(long, value_name = "EVENTS.jsonl")]
    pub(crate) events: Option<PathBuf>,
    /// Replace an existing database file (never one a process has open).
    #[arg(long)]
    pub(crate) force: bool,
}

/// What `migrate` prints.
#[derive(Debug, Serialize)]
struct MigrateJson {
    store: &'static str,
    location: String,
    /// The version found (0: the database was empty).
    from: u32,
    to: u32,
    applied: Vec<MigrationJson>,
}

#[derive(Debug, Serialize)]
struct MigrationJson {
    version: u32,
    what: &'static str,
}

/// What `backup` prints, and what `POST /admin/backup` answers.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BackupJson {
    backup: String,
    families: u64,
    events: u64,
    last_event_seq: u64,
    bytes: u64,
}

impl BackupJson {
    fn new(path: &Path, info: &BackupInfo) -> Self {
        Self {
            backup: path.display().to_string(),
            families: info.families,
            events: info.events,
            last_event_seq: info.last_event_seq,
            bytes: info.bytes,
        }
    }
}

/// What `restore` prints.
#[derive(Debug, Serialize)]
struct RestoreJson {
    restored: String,
    backup: String,
    families: u64,
    backup_last_event_seq: u64,
    schema_from: u32,
    schema_to: u32,
    /// Events of the stream after the backup that had revoked a family.
    revocations_after_backup: u64,
    /// Of those, families revoked again.
    revoked_again: u64,
    /// Of those, families already revoked in the backup or not in it.
    unchanged: u64,
    /// New events are numbered after this (the stream's last number).
    next_event_after: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// `rotoken migrate`.
pub(crate) fn migrate(g: &Global) -> Result<(), CliError> {
    let location = existing_store(g)?;
    let store = location.open_store()?;
    let schema = store
        .schema()
        .cloned()
        .unwrap_or_else(|| SchemaStatus::new(0, 0, Vec::new()));
    output::print_json(&MigrateJson {
        store: store.name(),
        location: location.to_string(),
        from: schema.found,
        to: schema.current,
        applied: schema
            .applied
            .iter()
            .map(|m| MigrationJson {
                version: m.version,
                what: m.what,
            })
            .collect(),
    })
}

/// `rotoken backup`.
pub(crate) fn backup(g: &Global, a: &BackupArgs) -> Result<(), CliError> {
    if let Some(base) = &a.admin_url {
        let out = std::path::absolute(&a.out)
            .map_err(|e| CliError::refused("invalid_input", format!("{}: {e}", a.out.display())))?;
        let admin = AdminClient::from_env(base, ADMIN_BACKUP_TIMEOUT)?;
        let body = admin.post_json("/admin/backup", &serde_json::json!({ "path": out }))?;
        let answer: BackupJson = serde_json::from_str(&body)
            .map_err(|e| CliError::storage("admin_failed", format!("not a backup answer: {e}")))?;
        return output::print_json(&answer);
    }
    let location = existing_store(g)?;
    let Some(file) = location.file() else {
        return Err(backup_error(BackupError::Unsupported("postgres")));
    };
    let info = RedbStore::backup_file(file, &a.out).map_err(|e| match e {
        BackupError::Open(rotoken::OpenError::Locked) => CliError::refused(
            "locked",
            format!(
                "{} is open in another process; while `rotoken serve` has it, back it up with --admin-url",
                file.display()
            ),
        ),
        e => backup_error(e),
    })?;
    output::print_json(&BackupJson::new(&a.out, &info))
}

/// A backup error as the tool prints it.
pub(crate) fn backup_error(e: BackupError) -> CliError {
    match e {
        BackupError::Open(e) => CliError::from(e),
        BackupError::Store(e) => CliError::from(e),
        e @ BackupError::Io { .. } => CliError::storage(e.code(), e.to_string()),
        e => CliError::refused(e.code(), e.to_string()),
    }
}

/// `rotoken restore`.
pub(crate) fn restore(g: &Global, a: &RestoreArgs) -> Result<(), CliError> {
    let location = g.store();
    let Some(target) = location.file() else {
        return Err(CliError::refused(
            "restore_unsupported",
            "`rotoken restore` restores a redb file; restore a PostgreSQL database with its own tools (psql, pg_restore)",
        ));
    };
    // Everything that can be refused is refused before anything is written.
    let stream = a.events.as_deref().map(read_stream).transpose()?;
    if RedbStore::is_held(target) {
        return Err(CliError::refused(
            "locked",
            format!(
                "{} is open in another process; stop `rotoken serve` before restoring",
                target.display()
            ),
        ));
    }
    if target.exists() && !a.force {
        return Err(CliError::refused(
            "db_exists",
            format!(
                "{} exists; pass --force to replace it with the backup",
                target.display()
            ),
        ));
    }
    let keys = load_keys(&g.keys)?;
    let staging = staging_path(target);
    let _ = std::fs::remove_file(&staging);
    let result = restore_into(&staging, a, g, keys, stream.as_deref());
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&staging);
            return Err(e);
        }
    };
    let io = |e: std::io::Error| CliError::storage("io_error", format!("putting the backup in place: {e}"));
    std::fs::rename(&staging, target).map_err(io)?;
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    output::print_json(&RestoreJson {
        restored: target.display().to_string(),
        ..report
    })
}

/// Copies the backup to `staging`, migrates it, moves its event numbers
/// past the stream's and applies the stream's revocations.
fn restore_into(
    staging: &Path,
    a: &RestoreArgs,
    g: &Global,
    keys: rotoken::Keyring,
    stream: Option<&[StreamEvent]>,
) -> Result<RestoreJson, CliError> {
    let info = RedbStore::backup_file(&a.backup, staging).map_err(backup_error)?;
    let store = RedbStore::open(staging, None)?;
    let schema = rotoken::store::Store::schema(&store)
        .cloned()
        .unwrap_or_else(|| SchemaStatus::new(0, 0, Vec::new()));
    let after = store.last_event_seq()?;
    let stream = stream.unwrap_or_default();
    let last_in_stream = stream.iter().map(|e| e.seq).max().unwrap_or(0);
    store.skip_event_seqs_through(last_in_stream)?;
    let options = Options {
        policy: policy(g),
        gc_every: None,
        ..Options::default()
    };
    let engine = Engine::with_store(store, keys, options)?;
    let done = engine.reapply_revocations(
        stream.iter().map(|e| RecordedEvent {
            seq: e.seq,
            kind: &e.kind,
            family: e.family,
        }),
        after,
    )?;
    drop(engine);
    let mut warnings = Vec::new();
    let policy_changes = stream
        .iter()
        .filter(|e| e.seq > after && e.kind == "policy_changed")
        .count();
    if policy_changes > 0 {
        warnings.push(format!(
            "the stream records {policy_changes} policy change(s) after the backup: the restored database runs by the backup's policy; check it with `rotoken policy show` and set it again"
        ));
    }
    if a.events.is_none() {
        warnings.push(
            "no event stream given: families revoked after the backup are live again (docs/reliability.md, \"Backup and restore\")"
                .to_owned(),
        );
    } else if done.has_gap(after) {
        warnings.push(format!(
            "the stream's first event after the backup is {}, but the backup's last event is {after}: revocations numbered in between are missing from it",
            done.first_seq_after.unwrap_or_default()
        ));
    }
    Ok(RestoreJson {
        restored: String::new(),
        backup: a.backup.display().to_string(),
        families: info.families,
        backup_last_event_seq: after,
        schema_from: schema.found,
        schema_to: schema.current,
        revocations_after_backup: done.revocations,
        revoked_again: done.revoked,
        unchanged: done.unchanged,
        next_event_after: after.max(last_in_stream),
        warnings,
    })
}

/// Where the restored copy is prepared: beside the database, so the final
/// rename replaces it in one step.
fn staging_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map_or_else(|| "rotoken.redb".into(), |n| n.to_string_lossy().into_owned());
    target.with_file_name(format!(".{name}.restoring"))
}

/// One event of the stream, as restore needs it.
struct StreamEvent {
    seq: u64,
    kind: String,
    family: FamilyId,
}

/// Reads an event stream file: one [`EventJson`] a line (blank lines
/// skipped). Any other line refuses the restore, naming the line.
fn read_stream(path: &Path) -> Result<Vec<StreamEvent>, CliError> {
    use std::io::Read as _;
    let refuse = |what: String| CliError::refused("events_invalid", format!("{}: {what}", path.display()));
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_EVENTS_FILE + 1).read_to_string(&mut text))
        .map_err(|e| refuse(e.to_string()))?;
    if text.len() as u64 > MAX_EVENTS_FILE {
        // Reading part of it would skip the revocations at its end.
        return Err(refuse(format!("larger than {MAX_EVENTS_FILE} bytes")));
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let e: EventJson =
            serde_json::from_str(line).map_err(|e| refuse(format!("line {}: not an event: {e}", i + 1)))?;
        let family = e
            .family
            .parse::<FamilyId>()
            .map_err(|e| refuse(format!("line {}: family: {e}", i + 1)))?;
        out.push(StreamEvent {
            seq: e.seq,
            kind: e.kind,
            family,
        });
    }
    Ok(out)
}
