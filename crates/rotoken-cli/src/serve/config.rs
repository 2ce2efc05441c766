//! `rotoken serve` settings: command-line flags, then `ROTOKEN_*`
//! environment variables, then the TOML config file, then defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;
use rotoken::{Durability, Policy};
use rotoken_http::{ClientEntry, IpNet, RegisteredClient, SecretHash};
use rotoken_postgres::StoreLocation;
use serde::Deserialize;

use super::ServeArgs;
use super::bind::BindAddr;
use super::conn::Limits;
use super::events::EventsTo;
use crate::output::CliError;
use crate::{DurabilityArg, Global};

/// The default listening address: loopback only, and the default issuer's host.
pub(crate) const DEFAULT_BIND: &str = "localhost:8080";
/// The default address of the admin API and `/metrics`: loopback only.
pub(crate) const DEFAULT_ADMIN_BIND: &str = "localhost:8081";
/// The config file read when `--config` is not given, if it exists.
pub(crate) const DEFAULT_CONFIG: &str = "./rotoken.toml";
/// The default access-token signing key file.
pub(crate) const DEFAULT_SIGNING_KEY: &str = "./rotoken.signing.key";
/// The global flags' defaults (a config file value applies when the flag is left at these).
const DEFAULT_DB: &str = "./rotoken.redb";
const DEFAULT_KEYS: &str = "./rotoken.keys";
/// The default time allowed for a complete request head, in seconds.
const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// The default `Retry-After` of a 503, in seconds.
const DEFAULT_RETRY_AFTER_SECS: u64 = 1;
/// How long `serve` waits for PostgreSQL at start by default, in seconds.
const DEFAULT_DB_WAIT_SECS: u64 = 30;
/// The default connection cap.
const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Largest config file read.
const MAX_CONFIG: u64 = 1024 * 1024;
const DAY: u64 = 86_400;

/// How logs are written (to standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The config file: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bind: Option<String>,
    admin_bind: Option<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    dpop_nonce: Option<bool>,
    access_token_audience: Option<String>,
    issuer: Option<String>,
    db: Option<PathBuf>,
    /// A redb file path or a `postgres://` URL; wins over `db`.
    store: Option<String>,
    keys: Option<PathBuf>,
    signing_key: Option<PathBuf>,
    clients_file: Option<PathBuf>,
    access_token_secs: Option<u64>,
    max_body_bytes: Option<usize>,
    request_timeout_secs: Option<u64>,
    /// `Retry-After` of a 503 `temporarily_unavailable`, in seconds.
    retry_after_secs: Option<u64>,
    /// How long `serve` waits for a PostgreSQL store at start, in seconds.
    db_wait_secs: Option<u64>,
    header_read_timeout_secs: Option<u64>,
    keep_alive_secs: Option<u64>,
    max_connections: Option<usize>,
    shutdown_timeout_secs: Option<u64>,
    log_format: Option<LogFormat>,
    gc_interval_secs: Option<u64>,
    cache_mb: Option<u64>,
    /// A file for the audit events as JSON lines, or `-` for standard output.
    events_to: Option<String>,
    events_poll_ms: Option<u64>,
    /// Where admin-API backups may be written.
    backup_dir: Option<PathBuf>,
    #[serde(default)]
    policy: PolicyConfig,
    #[serde(default)]
    admin: AdminConfig,
    #[serde(default, rename = "client")]
    clients: Vec<ClientEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyConfig {
    grace_secs: Option<u64>,
    idle_days: Option<u64>,
    absolute_days: Option<u64>,
    max_generations: Option<u32>,
    revoked_retention_secs: Option<u64>,
    event_retention_days: Option<u64>,
    durability: Option<DurabilityName>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum DurabilityName {
    Immediate,
    Relaxed,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminConfig {
    token_hash: Option<String>,
}

/// Everything `serve` needs, resolved.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) bind: BindAddr,
    /// The admin API and `/metrics`; `None`: off.
    pub(crate) admin_bind: Option<BindAddr>,
    /// Proxies whose forwarded-for headers are believed.
    pub(crate) trusted_proxies: Vec<IpNet>,
    /// RFC 9449 §8 server nonces.
    pub(crate) dpop_nonce: bool,
    /// The `aud` of access tokens; `None`: the issuer.
    pub(crate) access_token_audience: Option<String>,
    /// `None`: `http://` and the bound address.
    pub(crate) issuer: Option<String>,
    /// Where the families live: `--store` / `ROTOKEN_STORE`, else `store`
    /// in the file, else the database file (`--db`, `db`, the default).
    pub(crate) store: StoreLocation,
    pub(crate) keys: PathBuf,
    pub(crate) signing_key: PathBuf,
    pub(crate) clients_file: PathBuf,
    pub(crate) inline_clients: Vec<RegisteredClient>,
    pub(crate) access_token_lifetime: Duration,
    pub(crate) max_body_bytes: usize,
    pub(crate) request_timeout: Duration,
    /// The `Retry-After` of a 503 `temporarily_unavailable` answer.
    pub(crate) retry_after: Duration,
    /// How long to keep trying a PostgreSQL store that does not answer at
    /// start (connection failures only); zero: one attempt.
    pub(crate) db_wait: Duration,
    /// Header read timeout, keep-alive idle limit and connection cap.
    pub(crate) limits: Limits,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) policy: Policy,
    pub(crate) admin_token: Option<SecretHash>,
    pub(crate) log_format: LogFormat,
    /// Time between garbage collections; `None`: off.
    pub(crate) gc_interval: Option<Duration>,
    /// redb's page cache; `None`: redb's default.
    pub(crate) cache_bytes: Option<usize>,
    /// Where the audit events are written; `None`: nowhere.
    pub(crate) events_to: Option<EventsTo>,
    /// Time between looks for new events.
    pub(crate) events_poll: Duration,
    /// The config file read, if any.
    pub(crate) config_file: Option<PathBuf>,
    /// Where admin-API backups may be written; `None` (a PostgreSQL store
    /// without `backup_dir`): nowhere.
    pub(crate) backup_dir: Option<PathBuf>,
}

fn invalid(message: impl Into<String>) -> CliError {
    CliError::refused("config_invalid", message)
}

/// Resolves the settings; `env` reads an environment variable.
pub(crate) fn resolve(g: &Global, a: &ServeArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, CliError> {
    // A variable set to nothing counts as unset.
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let (file, config_file) = match &a.config {
        Some(p) => (read_config(p)?, Some(p.clone())),
        None if Path::new(DEFAULT_CONFIG).is_file() => {
            (read_config(Path::new(DEFAULT_CONFIG))?, Some(DEFAULT_CONFIG.into()))
        }
        None => (FileConfig::default(), None),
    };
    let env_num = |name: &str| -> Result<Option<u64>, CliError> {
        env(name)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| invalid(format!("{name} must be a whole number, not {v:?}")))
            })
            .transpose()
    };

    let mut policy = Policy::default();
    let p = &file.policy;
    let grace = g.grace_secs.or(env_num("ROTOKEN_GRACE_SECS")?).or(p.grace_secs);
    if let Some(s) = grace {
        policy.grace = Duration::from_secs(s);
    }
    let idle = g
        .idle_days
        .map(u64::from)
        .or(env_num("ROTOKEN_IDLE_DAYS")?)
        .or(p.idle_days);
    if let Some(d) = idle {
        policy.idle_lifetime = days(d, "idle_days")?;
    }
    let absolute = g
        .absolute_days
        .map(u64::from)
        .or(env_num("ROTOKEN_ABSOLUTE_DAYS")?)
        .or(p.absolute_days);
    if let Some(d) = absolute {
        policy.absolute_lifetime = days(d, "absolute_days")?;
    }
    let max_generations = env_num("ROTOKEN_MAX_GENERATIONS")?
        .map(|n| u32::try_from(n).map_err(|_| invalid("ROTOKEN_MAX_GENERATIONS is too large")))
        .transpose()?
        .or(p.max_generations);
    if let Some(n) = max_generations {
        if n < 2 {
            return Err(invalid("max_generations must be at least 2"));
        }
        policy.max_generations = n;
    }
    let retention = g
        .revoked_retention_secs
        .or(env_num("ROTOKEN_REVOKED_RETENTION_SECS")?)
        .or(p.revoked_retention_secs);
    if let Some(s) = retention {
        policy.revoked_retention = Duration::from_secs(s);
    }
    let event_retention = g
        .event_retention_days
        .map(u64::from)
        .or(env_num("ROTOKEN_EVENT_RETENTION_DAYS")?)
        .or(p.event_retention_days);
    if let Some(d) = event_retention {
        policy.event_retention = days(d, "event_retention_days")?;
    }
    let durability = match (g.durability, env("ROTOKEN_DURABILITY"), p.durability) {
        (Some(DurabilityArg::Immediate), _, _) => Durability::Immediate,
        (Some(DurabilityArg::Relaxed), _, _) => Durability::Relaxed,
        (None, Some(v), _) => match v.trim() {
            "immediate" => Durability::Immediate,
            "relaxed" | "none" => Durability::Relaxed,
            _ => {
                return Err(invalid(format!(
                    "ROTOKEN_DURABILITY must be immediate or relaxed, not {v:?}"
                )));
            }
        },
        (None, None, Some(DurabilityName::Relaxed)) => Durability::Relaxed,
        (None, None, _) => Durability::Immediate,
    };
    policy.durability = durability;

    let admin_token = match (env("ROTOKEN_ADMIN_TOKEN"), &file.admin.token_hash) {
        (Some(t), _) => Some(SecretHash::new(t.as_bytes()).map_err(|e| {
            invalid(format!(
                "ROTOKEN_ADMIN_TOKEN: {e} (an admin token is a secret like any other)"
            ))
        })?),
        (None, Some(h)) => Some(
            h.parse::<SecretHash>()
                .map_err(|e| invalid(format!("admin.token_hash: {e}")))?,
        ),
        (None, None) => None,
    };
    let inline_clients = file
        .clients
        .iter()
        .map(|c| c.to_client().map_err(|e| invalid(format!("config [[client]]: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;

    let pick_path = |flag: &Path, default: &str, from_file: &Option<PathBuf>| -> PathBuf {
        match from_file {
            Some(f) if flag == Path::new(default) => f.clone(),
            _ => flag.to_path_buf(),
        }
    };
    let bind: BindAddr = a
        .bind
        .clone()
        .or(file.bind.clone())
        .unwrap_or_else(|| DEFAULT_BIND.to_owned())
        .parse()
        .map_err(|e| invalid(format!("bind: {e}")))?;
    let admin_bind = match a.admin_bind.clone().or(file.admin_bind.clone()) {
        Some(v) if v.trim().eq_ignore_ascii_case("off") => None,
        v => Some(
            v.unwrap_or_else(|| DEFAULT_ADMIN_BIND.to_owned())
                .parse::<BindAddr>()
                .map_err(|e| invalid(format!("admin_bind: {e}")))?,
        ),
    };
    let proxies = match &a.trusted_proxies {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        None => file.trusted_proxies.clone(),
    };
    let trusted_proxies = proxies
        .iter()
        .map(|p| {
            p.parse::<IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    invalid(format!(
                        "trusted_proxies: {p:?} is not an address or a network (10.0.0.0/8)"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let max_body_bytes = a.max_body_bytes.or(file.max_body_bytes).unwrap_or(16 * 1024);
    if !(1024..=1024 * 1024).contains(&max_body_bytes) {
        return Err(invalid("max_body_bytes must be between 1024 and 1048576"));
    }
    let access = a.access_token_secs.or(file.access_token_secs).unwrap_or(300);
    if !(1..=86_400).contains(&access) {
        return Err(invalid("access_token_secs must be between 1 and 86400"));
    }
    let limits = limits(a, &file)?;
    let gc_interval = match a.gc_interval_secs.or(file.gc_interval_secs).unwrap_or(60) {
        0 => None,
        secs @ 1..=86_400 => Some(Duration::from_secs(secs)),
        _ => return Err(invalid("gc_interval_secs must be between 0 (off) and 86400")),
    };
    let cache_bytes = match a.cache_mb.or(file.cache_mb) {
        None => None,
        Some(mb @ 1..=1_048_576) => Some(usize::try_from(mb << 20).map_err(|_| invalid("cache_mb is too large"))?),
        Some(_) => return Err(invalid("cache_mb must be between 1 and 1048576")),
    };
    let events_poll = match a.events_poll_ms.or(file.events_poll_ms).unwrap_or(1_000) {
        ms @ 10..=3_600_000 => Duration::from_millis(ms),
        _ => return Err(invalid("events_poll_ms must be between 10 and 3600000")),
    };
    let events_to = match a.events_to.clone().or(file.events_to.clone()) {
        Some(t) if t.trim().is_empty() => return Err(invalid("events_to must be a file path or -")),
        t => t.as_deref().map(EventsTo::parse),
    };
    let issuer = a.issuer.clone().or(file.issuer);
    if let Some(i) = &issuer {
        let ok = (i.starts_with("https://") || i.starts_with("http://")) && !i.contains(['?', '#']);
        if !ok {
            return Err(invalid(format!(
                "issuer must be an http(s) URL without query or fragment, not {i:?}"
            )));
        }
    }
    let retry_after = a
        .retry_after_secs
        .or(file.retry_after_secs)
        .unwrap_or(DEFAULT_RETRY_AFTER_SECS);
    if !(1..=3600).contains(&retry_after) {
        return Err(invalid("retry_after_secs must be between 1 and 3600"));
    }
    let db_wait = a.db_wait_secs.or(file.db_wait_secs).unwrap_or(DEFAULT_DB_WAIT_SECS);
    if db_wait > 3600 {
        return Err(invalid("db_wait_secs must be at most 3600"));
    }
    let store = match (&g.store, &file.store) {
        (Some(s), _) | (None, Some(s)) => StoreLocation::parse(s),
        (None, None) => StoreLocation::File(pick_path(&g.db, DEFAULT_DB, &file.db)),
    };
    let backup_dir = match (a.backup_dir.clone().or(file.backup_dir), &store) {
        (Some(dir), _) => Some(dir),
        // Beside the database: the same file system and permissions.
        (None, StoreLocation::File(db)) => std::path::absolute(db)
            .ok()
            .and_then(|db| db.parent().map(Path::to_path_buf)),
        (None, _) => None,
    };
    Ok(Settings {
        bind,
        admin_bind,
        trusted_proxies,
        dpop_nonce: a.dpop_nonce || file.dpop_nonce.unwrap_or(false),
        access_token_audience: a.access_token_audience.clone().or(file.access_token_audience.clone()),
        issuer,
        store,
        keys: pick_path(&g.keys, DEFAULT_KEYS, &file.keys),
        signing_key: a
            .signing_key
            .clone()
            .or(file.signing_key)
            .unwrap_or_else(|| DEFAULT_SIGNING_KEY.into()),
        clients_file: a
            .clients
            .clone()
            .or(file.clients_file)
            .unwrap_or_else(|| crate::clients::DEFAULT_CLIENTS_FILE.into()),
        inline_clients,
        access_token_lifetime: Duration::from_secs(access),
        max_body_bytes,
        request_timeout: Duration::from_secs(
            a.request_timeout_secs
                .or(file.request_timeout_secs)
                .unwrap_or(10)
                .max(1),
        ),
        retry_after: Duration::from_secs(retry_after),
        db_wait: Duration::from_secs(db_wait),
        limits,
        shutdown_timeout: Duration::from_secs(file.shutdown_timeout_secs.unwrap_or(30)),
        policy,
        admin_token,
        log_format: a.log_format.or(file.log_format).unwrap_or_default(),
        gc_interval,
        cache_bytes,
        events_to,
        events_poll,
        config_file,
        backup_dir,
    })
}

/// The connection limits: flag (or its variable), then file, then default.
fn limits(a: &ServeArgs, file: &FileConfig) -> Result<Limits, CliError> {
    let header = a
        .header_read_timeout_secs
        .or(file.header_read_timeout_secs)
        .unwrap_or(DEFAULT_HEADER_READ_TIMEOUT_SECS);
    if !(1..=3600).contains(&header) {
        return Err(invalid("header_read_timeout_secs must be between 1 and 3600"));
    }
    // Unset: as long as the header read timeout, which bounds it anyway.
    let keep_alive = a.keep_alive_secs.or(file.keep_alive_secs).unwrap_or(header);
    if keep_alive > header {
        return Err(invalid(format!(
            "keep_alive_secs ({keep_alive}) cannot exceed header_read_timeout_secs ({header}): \
             the header read timeout also runs while a connection waits for its next request"
        )));
    }
    let max_connections = a
        .max_connections
        .or(file.max_connections)
        .unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if !(1..=1_000_000).contains(&max_connections) {
        return Err(invalid("max_connections must be between 1 and 1000000"));
    }
    Ok(Limits {
        header_read_timeout: Duration::from_secs(header),
        keep_alive: (keep_alive > 0).then(|| Duration::from_secs(keep_alive)),
        max_connections,
    })
}

fn days(d: u64, name: &str) -> Result<Duration, CliError> {
    if d == 0 {
        return Err(invalid(format!("{name} must be at least 1")));
    }
    d.checked_mul(DAY)
        .map(Duration::from_secs)
        .ok_or_else(|| invalid(format!("{name} is too large")))
}

fn read_config(path: &Path) -> Result<FileConfig, CliError> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG + 1).read_to_string(&mut text))
        .map_err(|e| CliError::refused("config_io", format!("config file {}: {e}", path.display())))?;
    if text.len() as u64 > MAX_CONFIG {
        return Err(invalid(format!(
            "config file {} is larger than {MAX_CONFIG} bytes",
            path.display()
        )));
    }
    toml::from_str(&text).map_err(|e| invalid(format!("config file {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use clap::Parser as _;

    use super::*;
    use crate::{Cli, Command};

    fn parse(args: &[&str]) -> (Global, ServeArgs) {
        let cli = Cli::try_parse_from(std::iter::once("rotoken").chain(args.iter().copied())).unwrap();
        match cli.command {
            Command::Serve(a) => (cli.global, *a),
            _ => unreachable!(),
        }
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_are_loopback_and_the_core_policy() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        let (g, a) = parse(&["serve", "--config", missing.to_str().unwrap()]);
        assert!(
            resolve(&g, &a, &env(&[])).is_err(),
            "an explicit config file must exist"
        );
        let (g, a) = parse(&["serve"]);
        let s = resolve(&g, &a, &env(&[])).unwrap();
        assert_eq!(s.bind.to_string(), DEFAULT_BIND);
        assert!(s.bind.is_loopback());
        assert_eq!(s.admin_bind.map(|b| b.to_string()).as_deref(), Some(DEFAULT_ADMIN_BIND));
        assert!(s.trusted_proxies.is_empty());
        assert!(!s.dpop_nonce);
        assert_eq!(s.policy, Policy::default());
        assert_eq!(s.access_token_lifetime, Duration::from_secs(300));
        assert!(s.admin_token.is_none());
    }

    #[test]
    fn flags_beat_environment_beat_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("rotoken.toml");
        let hash = SecretHash::new(b"admin-token-0123456789").unwrap();
        std::fs::write(
            &cfg,
            format!(
                "bind = \"127.0.0.1:9000\"\nadmin_bind = \"off\"\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.1\"]\ndpop_nonce = true\ndb = \"/tmp/x.redb\"\naccess_token_secs = 600\n\
                 [policy]\ngrace_secs = 5\nidle_days = 7\ndurability = \"relaxed\"\n\
                 [admin]\ntoken_hash = \"{hash}\"\n[[client]]\nid = \"spa\"\n"
            ),
        )
        .unwrap();
        let c = cfg.to_str().unwrap();
        let (g, a) = parse(&["serve", "--config", c]);
        let s = resolve(&g, &a, &env(&[])).unwrap();
        assert_eq!(s.bind.port, 9000);
        assert!(s.admin_bind.is_none());
        assert_eq!(s.trusted_proxies.len(), 2);
        assert!(s.dpop_nonce);
        assert_eq!(s.store, StoreLocation::File("/tmp/x.redb".into()));
        assert_eq!(s.policy.grace, Duration::from_secs(5));
        assert_eq!(s.policy.idle_lifetime, Duration::from_secs(7 * DAY));
        assert_eq!(s.policy.durability, Durability::Relaxed);
        assert_eq!(s.access_token_lifetime, Duration::from_secs(600));
        assert!(s.admin_token.unwrap().verify(b"admin-token-0123456789"));
        assert_eq!(s.inline_clients.len(), 1);

        let e = env(&[
            ("ROTOKEN_GRACE_SECS", "10"),
            ("ROTOKEN_DURABILITY", "immediate"),
            ("ROTOKEN_ADMIN_TOKEN", "from-env-0123456789"),
        ]);
        let s = resolve(&g, &a, &e).unwrap();
        assert_eq!(s.policy.grace, Duration::from_secs(10));
        assert_eq!(s.policy.durability, Durability::Immediate);
        assert!(s.admin_token.unwrap().verify(b"from-env-0123456789"));

        let (g, a) = parse(&[
            "--grace-secs",
            "20",
            "--db",
            "/tmp/y.redb",
            "serve",
            "--config",
            c,
            "--bind",
            "127.0.0.1:7000",
        ]);
        let s = resolve(&g, &a, &e).unwrap();
        assert_eq!(s.policy.grace, Duration::from_secs(20));
        assert_eq!(s.store, StoreLocation::File("/tmp/y.redb".into()));
        assert_eq!(s.bind.port, 7000);
    }

    #[test]
    fn a_store_url_in_the_file_or_on_the_command_line_wins_over_db() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("rotoken.toml");
        std::fs::write(&cfg, "db = \"/tmp/x.redb\"\nstore = \"postgres://rt@db/rotoken\"\n").unwrap();
        let c = cfg.to_str().unwrap();
        let (g, a) = parse(&["serve", "--config", c]);
        let s = resolve(&g, &a, &env(&[])).unwrap();
        assert_eq!(s.store, StoreLocation::Postgres("postgres://rt@db/rotoken".into()));
        assert_eq!(s.backup_dir, None, "no directory beside a PostgreSQL store");
        let (g, a) = parse(&["--store", "/tmp/z.redb", "serve", "--config", c]);
        let s = resolve(&g, &a, &env(&[])).unwrap();
        assert_eq!(s.store, StoreLocation::File("/tmp/z.redb".into()));
        assert_eq!(s.backup_dir, Some("/tmp".into()), "beside the database file");
        let (g, a) = parse(&[
            "--store",
            "/tmp/z.redb",
            "serve",
            "--config",
            c,
            "--backup-dir",
            "/srv/b",
        ]);
        let s = resolve(&g, &a, &env(&[])).unwrap();
        assert_eq!(s.backup_dir, Some("/srv/b".into()));
    }

    #[test]
    fn events_destination_poll_and_retention_resolve_flag_then_env_then_file() {
        let (g, a) = parse(&["serve"]);
        let s = resolve(&g, &a, &env(&[])).unwrap();
        assert_eq!(s.events_to, None, "off by default");
        assert_eq!(s.events_poll, Duration::from_secs(1));
        assert_eq!(s.policy.event_retention, Policy::default().event_retention);

        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            "events_to = \"/var/log/rotoken/events.jsonl\"\nevents_poll_ms = 250\n[policy]\nevent_retention_days = 90\n",
        )
        .unwrap();
        let c = cfg.to_str().unwrap();
        let (g, a) = parse(&["serve", "--config", c]);
        let s = resolve(&g, &a, &env(&[])).unwrap();
        assert_eq!(
            s.events_to,
            Some(EventsTo::File("/var/log/rotoken/events.jsonl".into()))
        );
        assert_eq!(s.events_poll, Duration::from_millis(250));
        assert_eq!(s.policy.event_retention, Duration::from_secs(90 * DAY));
        let s = resolve(&g, &a, &env(&[("ROTOKEN_EVENT_RETENTION_DAYS", "7")])).unwrap();
        assert_eq!(s.policy.event_retention, Duration::from_secs(7 * DAY));
        let (g, a) = parse(&[
            "--event-retention-days",
            "2",
            "serve",
            "--config",
            c,
            "--events-to",
            "-",
        ]);
        let s = resolve(&g, &a, &env(&[("ROTOKEN_EVENT_RETENTION_DAYS", "7")])).unwrap();
        assert_eq!(s.events_to, Some(EventsTo::Stdout));
        assert_eq!(s.policy.event_retention, Duration::from_secs(2 * DAY));
        for text in [
            "events_poll_ms = 0",
            "events_to = \" \"",
            "[policy]\nevent_retention_days = 0",
        ] {
            std::fs::write(&cfg, text).unwrap();
            let (g, a) = parse(&["serve", "--config", c]);
            let e = resolve(&g, &a, &env(&[])).unwrap_err();
            assert_eq!(e.code, "config_invalid", "{text}: {e:?}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_config_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        for text in [
            "surprise = 1",
            "[policy]\ndurability = \"sometimes\"",
            "[policy]\nidle_days = 0",
            "access_token_secs = 0",
            "issuer = \"ftp://x\"",
            "bind = \"nope\"",
            "trusted_proxies = [\"10.0.0.0/33\"]",
            "[admin]\ntoken_hash = \"plain\"",
            "[[client]]\nid = \"\"",
            "not toml [",
        ] {
            std::fs::write(&cfg, text).unwrap();
            let (g, a) = parse(&["serve", "--config", cfg.to_str().unwrap()]);
            let e = resolve(&g, &a, &env(&[])).unwrap_err();
            assert_eq!(e.code, "config_invalid", "{text}: {e:?}");
        }
        let (g, a) = parse(&["serve"]);
        assert!(resolve(&g, &a, &env(&[("ROTOKEN_GRACE_SECS", "soon")])).is_err());
        assert!(resolve(&g, &a, &env(&[("ROTOKEN_ADMIN_TOKEN", "short")])).is_err());
        let s = resolve(
            &g,
            &a,
            &env(&[("ROTOKEN_ADMIN_TOKEN", ""), ("ROTOKEN_GRACE_SECS", " ")]),
        )
        .unwrap();
        assert!(s.admin_token.is_none(), "empty means unset");
    }

    #[test]
    fn connection_limits_default_and_resolve_flag_then_file() {
        let (g, a) = parse(&["serve"]);
        let s = resolve(&g, &a, &env(&[])).unwrap();
        assert_eq!(
            s.limits,
            Limits {
                header_read_timeout: Duration::from_secs(10),
                keep_alive: Some(Duration::from_secs(10)),
                max_connections: 1024,
            }
        );
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            "header_read_timeout_secs = 20\nkeep_alive_secs = 0\nmax_connections = 64\n",
        )
        .unwrap();
        let c = cfg.to_str().unwrap();
        let (g, a) = parse(&["serve", "--config", c]);
        let s = resolve(&g, &a, &env(&[])).unwrap();
        assert_eq!(s.limits.header_read_timeout, Duration::from_secs(20));
        assert_eq!(s.limits.keep_alive, None, "0 turns keep-alive off");
        assert_eq!(s.limits.max_connections, 64);
        let (g, a) = parse(&[
            "serve",
            "--config",
            c,
            "--keep-alive-secs",
            "5",
            "--max-connections",
            "8",
        ]);
        let s = resolve(&g, &a, &env(&[])).unwrap();
        assert_eq!(s.limits.keep_alive, Some(Duration::from_secs(5)));
        assert_eq!(s.limits.max_connections, 8);
        let (g, a) = parse(&["serve", "--header-read-timeout-secs", "3"]);
        let s = resolve(&g, &a, &env(&[])).unwrap();
        assert_eq!(
            s.limits.keep_alive,
            Some(Duration::from_secs(3)),
            "unset: the header timeout"
        );
        for text in [
            "header_read_timeout_secs = 0",
            "header_read_timeout_secs = 3601",
            "keep_alive_secs = 11",
            "header_read_timeout_secs = 5\nkeep_alive_secs = 6",
            "max_connections = 0",
            "max_connections = 1000001",
        ] {
            std::fs::write(&cfg, text).unwrap();
            let (g, a) = parse(&["serve", "--config", c]);
            let e = resolve(&g, &a, &env(&[])).unwrap_err();
            assert_eq!(e.code, "config_invalid", "{text}: {e:?}");
        }
    }
}
