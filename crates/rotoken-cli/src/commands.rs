//! Each subcommand: load keys, open the engine, call it, print the answer.
//!
//! No rule lives here. The tool decides only what is about files and
//! arguments: where the key file is, whether the database exists, how a
//! token is read from standard input.

use std::ffi::OsString;
use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use rotoken::{
    Durability, Engine, FamilyId, Grant, KeyError, Keyring, Options, Policy, RevokeTarget, RotateRequest, Scope,
};
use zeroize::Zeroizing;

use crate::output::{
    self, CheckJson, CliError, CompactJson, GcJson, IntrospectionJson, IssuedJson, KeysJson, RevokedJson, RotatedJson,
};
use crate::{Cli, Command, DurabilityArg, Global, KeysCommand};

/// Largest input read from standard input for a token. Anything longer is
/// not a token; the core rejects it by its length.
const MAX_STDIN: u64 = 16 * 1024 * 1024;

/// Largest key file read. A key line takes about 80 bytes, so this holds
/// thousands of keys.
const MAX_KEY_FILE: u64 = 1024 * 1024;

const DAY_SECS: u64 = 86_400;

/// Runs one parsed command line.
///
/// # Errors
///
/// The [`CliError`] to print.
pub(crate) fn run(cli: Cli) -> Result<(), CliError> {
    let g = &cli.global;
    match cli.command {
        Command::Keys(KeysCommand::Generate { force }) => keys_generate(&g.keys, force),
        Command::Keys(KeysCommand::Rotate) => keys_rotate(&g.keys),
        Command::Keys(KeysCommand::RotateSigning(a)) => crate::signing::rotate_signing(&a),
        Command::Keys(KeysCommand::List) => output::print_json(&KeysJson::of(&g.keys, &load_keys(&g.keys)?)),
        Command::Issue(a) => {
            // The same rule as `serve`'s admin API: a registered client and
            // offline_access, or no refresh token.
            let scope = Scope::parse(&a.scope)?;
            let clients = rotoken_http::FileClients::open(&a.clients.path)
                .map_err(|e| CliError::refused("clients_invalid", e.to_string()))?;
            // The clients file answers at once: nothing to wait for but the lookup.
            let rule = futures_lite::future::block_on(rotoken_http::issue_rule(&clients, &a.client, &scope));
            let (_, refresh) = rule.map_err(|e| match e {
                rotoken_http::IssueTokensError::UnknownClient => CliError::refused(
                    "unknown_client",
                    format!(
                        "client `{}` is not registered in {}; add it with `rotoken clients add` first",
                        a.client,
                        a.clients.path.display()
                    ),
                ),
                other => CliError::refused(other.code(), other.to_string()),
            })?;
            if !refresh {
                return Err(CliError::refused(
                    "offline_access_required",
                    "a refresh token is issued only for a scope that holds offline_access",
                ));
            }
            let engine = open(g, true, true)?;
            let mut grant = Grant::new(a.subject, a.client, scope);
            if let Some(c) = a.confirmation {
                grant = grant.with_confirmation(c);
            }
            if let Some(m) = a.metadata {
                grant = grant.with_metadata(m.into_bytes());
            }
            let issued = engine.issue(&grant)?;
            output::print_json(&IssuedJson {
                refresh_token: issued.refresh_token.expose(),
                family_id: issued.family.to_string(),
                generation: issued.generation,
                expires_at: output::rfc3339(issued.expires_at),
            })
        }
        Command::Rotate(a) => {
            let token = read_token(a.token)?;
            let engine = open(g, false, true)?;
            let mut request = RotateRequest::new(a.client);
            request.scope = a.scope.as_deref().map(Scope::parse).transpose()?;
            request.confirmation = a.confirmation;
            let r = engine.rotate(&token, &request)?;
            output::print_json(&RotatedJson {
                refresh_token: r.refresh_token.expose(),
                family_id: r.family.to_string(),
                generation: r.generation,
                expires_at: output::rfc3339(r.expires_at),
                retried: r.retried,
                subject: &r.grant.subject,
                client_id: &r.grant.client_id,
                scope: r.scope.to_string(),
            })
        }
        Command::Introspect(a) => {
            let token = read_token(a.token)?;
            let engine = open(g, false, true)?;
            output::print_json(&IntrospectionJson::from(engine.introspect(&token)?))
        }
        Command::Revoke(a) => {
            // clap's ArgGroup guarantees exactly one target.
            let token = a.token.map(read_token).transpose()?;
            let family = a
                .family
                .as_deref()
                .map(|f| {
                    f.parse::<FamilyId>()
                        .map_err(|e| CliError::refused("invalid_input", format!("--family: {e}")))
                })
                .transpose()?;
            let target = match (&token, family, &a.subject, &a.client) {
                (Some(t), None, None, None) => RevokeTarget::Token(t),
                (None, Some(f), None, None) => RevokeTarget::Family(f),
                (None, None, Some(s), None) => RevokeTarget::Subject(s),
                (None, None, None, Some(c)) => RevokeTarget::Client(c),
                _ => {
                    return Err(CliError {
                        code: "usage",
                        message: "give exactly one of --token, --family, --subject, --client".into(),
                        exit: 2,
                    });
                }
            };
            let engine = open(g, false, true)?;
            output::print_json(&RevokedJson {
                revoked: engine.revoke(target)?,
            })
        }
        Command::Sessions(a) => {
            let engine = open(g, false, true)?;
            let sessions = engine.sessions(&a.subject)?;
            output::print_json(&rotoken_http::SessionsJson::new(sessions))
        }
        Command::Gc(a) => {
            let engine = open(g, false, true)?;
            let limit = usize::try_from(a.limit).unwrap_or(usize::MAX);
            let mut total = GcJson::default();
            loop {
                // Each step removes the index entries it examined, so the loop ends.
                let step = engine.gc(limit)?;
                total.removed += step.removed;
                total.rescheduled += step.rescheduled;
                total.events_removed += step.events_removed;
                total.steps += 1;
                if !step.more {
                    break;
                }
            }
            output::print_json(&total)
        }
        Command::Policy(c) => crate::policy::run(g, c),
        Command::Check => {
            let engine = open(g, false, true)?;
            let report = CheckJson::from(engine.check()?);
            output::print_json(&report)?;
            if report.ok {
                return Ok(());
            }
            let list: Vec<String> = report
                .problems
                .iter()
                .map(|p| format!("{} {}: {}", p.table, p.key, p.what))
                .collect();
            Err(CliError::storage(
                "check_failed",
                format!("{} problem(s) found: {}", list.len(), list.join("; ")),
            ))
        }
        Command::Compact => {
            let store = g.store();
            let Some(file) = store.file() else {
                return Err(CliError::refused(
                    "not_a_file_store",
                    "`rotoken compact` compacts a redb file; a PostgreSQL store is compacted by PostgreSQL (VACUUM)",
                ));
            };
            let mut engine = open(g, false, true)?;
            let size = |what| {
                std::fs::metadata(file)
                    .map(|m| m.len())
                    .map_err(|e| CliError::storage("storage_error", format!("reading the size of {what}: {e}")))
            };
            let bytes_before = size("the database")?;
            engine.compact()?;
            drop(engine);
            output::print_json(&CompactJson {
                bytes_before,
                bytes_after: size("the compacted database")?,
            })
        }
        Command::Migrate => crate::backup::migrate(g),
        Command::Backup(a) => crate::backup::backup(g, &a),
        Command::Restore(a) => crate::backup::restore(g, &a),
        Command::Events(a) => crate::events::run(g, &a),
        Command::Demo => crate::demo::run(&policy(g)),
        #[cfg(feature = "bench")]
        Command::Bench(a) => crate::bench::run(g, a),
        Command::Serve(a) => crate::serve::run(g, &a),
        Command::Clients(c) => crate::clients::run(c),
        Command::Clock(c) => crate::clock::run(g, &c),
    }
}

/// The policy: the core's defaults, with the global flags applied.
/// The policy the flags describe (the core's defaults where none is given).
pub(crate) fn policy(g: &Global) -> Policy {
    with_flags(g, Policy::default())
}

/// `base` with the policy flags given on the command line applied (the
/// others keep `base`'s values): a new database's policy from the core's
/// defaults, or `rotoken policy set`'s change to the stored one.
pub(crate) fn with_flags(g: &Global, base: Policy) -> Policy {
    let mut p = base;
    if let Some(s) = g.grace_secs {
        p.grace = Duration::from_secs(s);
    }
    if let Some(d) = g.idle_days {
        p.idle_lifetime = Duration::from_secs(u64::from(d) * DAY_SECS);
    }
    if let Some(d) = g.absolute_days {
        p.absolute_lifetime = Duration::from_secs(u64::from(d) * DAY_SECS);
    }
    if let Some(s) = g.revoked_retention_secs {
        p.revoked_retention = Duration::from_secs(s);
    }
    if let Some(d) = g.event_retention_days {
        p.event_retention = Duration::from_secs(u64::from(d) * DAY_SECS);
    }
    if let Some(n) = g.max_families_per_user {
        p.max_families_per_user = n;
    }
    match g.durability {
        Some(DurabilityArg::Immediate) => p.durability = Durability::Immediate,
        Some(DurabilityArg::Relaxed) => p.durability = Durability::Relaxed,
        None => {}
    }
    p
}

/// Translates a key-file error.
fn key_error(e: KeyError) -> CliError {
    match &e {
        KeyError::Io { path, source } => match source.kind() {
            std::io::ErrorKind::NotFound => CliError::refused(
                "keys_missing",
                format!(
                    "no key file at {path}; run `rotoken keys generate` to create one \
                     (or point --keys / ROTOKEN_KEYS at the existing one)"
                ),
            ),
            std::io::ErrorKind::AlreadyExists => CliError::refused(
                "keys_exist",
                format!(
                    "{e}; pass --force to replace it (every database made with the old keys becomes unreadable), \
                     or `rotoken keys rotate` to add a key"
                ),
            ),
            _ => CliError::refused("keys_io", e.to_string()),
        },
        KeyError::Format { .. } => CliError::refused("keys_invalid", format!("not a rotoken key file: {e}")),
        KeyError::Random(_) => CliError::storage("random_failed", e.to_string()),
        _ => CliError::refused("keys", e.to_string()),
    }
}

/// Loads the key file. Reads at most [`MAX_KEY_FILE`] bytes, so pointing
/// `--keys` at `/dev/zero` or a huge file fails cleanly (`Keyring::load`
/// reads the whole file, however large).
pub(crate) fn load_keys(path: &Path) -> Result<Keyring, CliError> {
    let io = |source| {
        key_error(KeyError::Io {
            path: path.display().to_string(),
            source,
        })
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_KEY_FILE + 1).read_to_end(&mut bytes).map_err(io)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_KEY_FILE {
        return Err(CliError::refused(
            "keys_invalid",
            format!(
                "not a rotoken key file: {} is larger than {MAX_KEY_FILE} bytes",
                path.display()
            ),
        ));
    }
    Keyring::from_bytes(&bytes).map_err(key_error)
}

/// `keys generate`.
fn keys_generate(path: &Path, force: bool) -> Result<(), CliError> {
    let keys = Keyring::generate().map_err(key_error)?;
    keys.save(path, force).map_err(key_error)?;
    output::print_json(&KeysJson::of(path, &keys))
}

/// `keys rotate`.
fn keys_rotate(path: &Path) -> Result<(), CliError> {
    let mut keys = load_keys(path)?;
    // `Keyring::rotate` numbers the new key one past the highest id and does
    // not check for overflow: refuse here rather than panic (or, in a release
    // build, wrap to id 0 and replace a key in use).
    if keys.key_ids().iter().any(|(id, _)| *id == u32::MAX) {
        return Err(CliError::refused(
            "keys_exhausted",
            format!(
                "the key file {} already holds key id {}; no higher id is left",
                path.display(),
                u32::MAX
            ),
        ));
    }
    keys.rotate().map_err(key_error)?;
    keys.save(path, true).map_err(key_error)?;
    output::print_json(&KeysJson::of(path, &keys))
}

/// Loads the keys and opens the engine. Only `issue` creates a missing
/// database; the other commands refuse, so a mistyped `--db` does not
/// quietly create an empty file and report every token unknown.
pub(crate) fn open(g: &Global, create: bool, compare_policy: bool) -> Result<Engine, CliError> {
    let keys = load_keys(&g.keys)?;
    let store = if create { g.store() } else { existing_store(g)? };
    // The policy flags set a new database's policy; every later opener
    // runs by the stored one (see `rotoken policy`). Background gc is left
    // to `rotoken gc` and the server.
    let options = Options::default().with_policy(policy(g)).with_gc_every(None);
    let engine = store.open(keys, options)?;
    if compare_policy {
        crate::policy::check_flags(g, &engine)?;
    }
    Ok(engine)
}

/// The store of `--db` / `--store`, refused with `db_missing` when it is a
/// file that does not exist.
pub(crate) fn existing_store(g: &Global) -> Result<rotoken_postgres::StoreLocation, CliError> {
    let store = g.store();
    if !store.exists() {
        return Err(CliError::refused(
            "db_missing",
            format!(
                "no database at {store}; `rotoken issue` creates one (or point --db / --store / ROTOKEN_STORE at the existing one)"
            ),
        ));
    }
    Ok(store)
}

/// The token named by a TOKEN argument: the argument itself, or standard
/// input when it is `-` (with the trailing newline removed). Input that is
/// not UTF-8 is passed on lossily converted: the core refuses it as a
/// malformed token, like any other garbage.
fn read_token(arg: OsString) -> Result<Zeroizing<String>, CliError> {
    if arg != "-" {
        return Ok(Zeroizing::new(arg.to_string_lossy().into_owned()));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    std::io::stdin()
        .lock()
        .take(MAX_STDIN)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            CliError::refused(
                "stdin_unreadable",
                format!("could not read the token from standard input: {e}"),
            )
        })?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_owned()))
}
