//! `rotoken serve`: the OAuth endpoints of rotoken-http over HTTP, with an
//! embedded database, health and Prometheus metrics, an authenticated admin
//! API for sidecar use, structured logs and graceful shutdown.
//!
//! Public routes (`--bind`): `/oauth/token`, `/oauth/revoke`,
//! `/oauth/introspect`, `/oauth/jwks`,
//! `/.well-known/oauth-authorization-server`, `/healthz`. Admin routes
//! (`--admin-bind`, loopback by default): `/admin/...`
//! ([`rotoken_http::AdminApi`], mounted by `rotoken_axum::admin_router`),
//! `/metrics`, `/healthz`.
//!
//! When ready it prints one JSON line on standard output (`listening`,
//! `issuer`, the files in use); logs go to standard error and never hold a
//! token, a secret, or a request's query string. SIGHUP reads the
//! access-token signing keys again (after `rotoken keys rotate-signing`).

mod bind;
mod config;
mod conn;
mod deadline;
mod events;
mod signing;
mod wait;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use clap::Args;
use rotoken::{Keyring, Options};
use rotoken_http::{
    AdminApi, ClientRegistry, Config, FileClients, MemoryClients, OAuthServer, RegisteredClient, RegistryError,
    SigningKeys,
};
use serde::Serialize;

use crate::Global;
use crate::output::{self, CliError};
pub(crate) use config::LogFormat;
use deadline::Budget;

/// `rotoken serve ...`
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on, host:port; a name such as localhost resolves
    /// [default: localhost:8080, loopback only].
    #[arg(long, env = "ROTOKEN_BIND", value_name = "HOST:PORT")]
    pub(crate) bind: Option<String>,
    /// Address of the admin API and /metrics, or `off`
    /// [default: localhost:8081, loopback only].
    #[arg(long, env = "ROTOKEN_ADMIN_BIND", value_name = "HOST:PORT")]
    pub(crate) admin_bind: Option<String>,
    /// Reverse proxies (addresses or networks, comma-separated) whose
    /// Forwarded / X-Forwarded-For headers name the client address
    /// [default: none].
    #[arg(long, env = "ROTOKEN_TRUSTED_PROXIES", value_name = "LIST")]
    pub(crate) trusted_proxies: Option<String>,
    /// The `aud` of access tokens, for clients without their own
    /// (`clients add --audience`) [default: the issuer].
    #[arg(long, env = "ROTOKEN_ACCESS_TOKEN_AUDIENCE", value_name = "AUDIENCE")]
    pub(crate) access_token_audience: Option<String>,
    /// Require DPoP proofs to carry a server nonce (RFC 9449 §8).
    #[arg(long, env = "ROTOKEN_DPOP_NONCE")]
    pub(crate) dpop_nonce: bool,
    /// TOML config file [default: ./rotoken.toml if it exists].
    #[arg(long, env = "ROTOKEN_CONFIG", value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Issuer URL, the base of every endpoint URL and of DPoP `htu`
    /// [default: http://HOST:PORT of --bind, as written].
    #[arg(long, env = "ROTOKEN_ISSUER", value_name = "URL")]
    pub(crate) issuer: Option<String>,
    /// Clients file written by `rotoken clients add` [default: ./rotoken.clients.toml].
    #[arg(long, env = "ROTOKEN_CLIENTS", value_name = "PATH")]
    pub(crate) clients: Option<PathBuf>,
    /// Access-token signing key, created if missing [default: ./rotoken.signing.key].
    #[arg(long, env = "ROTOKEN_SIGNING_KEY", value_name = "PATH")]
    pub(crate) signing_key: Option<PathBuf>,
    /// Access-token lifetime in seconds [default: 300].
    #[arg(long, env = "ROTOKEN_ACCESS_TOKEN_SECS", value_name = "SECS")]
    pub(crate) access_token_secs: Option<u64>,
    /// Largest request body in bytes; larger ones get 413 [default: 16384].
    #[arg(long, env = "ROTOKEN_MAX_BODY_BYTES", value_name = "BYTES")]
    pub(crate) max_body_bytes: Option<usize>,
    /// How long a client waits for an answer, in seconds: the engine
    /// applies nothing of a request later than this (less a margin for the
    /// store's own bound) and answers 503 with Retry-After instead [default: 10].
    #[arg(long, env = "ROTOKEN_REQUEST_TIMEOUT_SECS", value_name = "SECS")]
    pub(crate) request_timeout_secs: Option<u64>,
    /// The Retry-After, in seconds, of a 503 temporarily_unavailable answer
    /// (store trouble, a passed deadline) [default: 1].
    #[arg(long, env = "ROTOKEN_RETRY_AFTER_SECS", value_name = "SECS")]
    pub(crate) retry_after_secs: Option<u64>,
    /// How long to keep trying a PostgreSQL store that cannot be reached at
    /// start, with back-off and a log line per attempt; 0 tries once [default: 30].
    #[arg(long, env = "ROTOKEN_DB_WAIT_SECS", value_name = "SECS")]
    pub(crate) db_wait_secs: Option<u64>,
    /// Time allowed for a complete request head, from the connection's start
    /// or the end of its previous response; slower clients are closed [default: 10].
    #[arg(long, env = "ROTOKEN_HEADER_READ_TIMEOUT_SECS", value_name = "SECS")]
    pub(crate) header_read_timeout_secs: Option<u64>,
    /// Idle keep-alive connections are closed after this long; 0 turns
    /// keep-alive off; at most the header read timeout [default: the header read timeout].
    #[arg(long, env = "ROTOKEN_KEEP_ALIVE_SECS", value_name = "SECS")]
    pub(crate) keep_alive_secs: Option<u64>,
    /// Most connections at once; further ones wait in the listen queue [default: 1024].
    #[arg(long, env = "ROTOKEN_MAX_CONNECTIONS", value_name = "N")]
    pub(crate) max_connections: Option<usize>,
    /// Log format on standard error [default: text].
    #[arg(long, env = "ROTOKEN_LOG_FORMAT", value_enum, value_name = "FORMAT")]
    pub(crate) log_format: Option<LogFormat>,
    /// Seconds between garbage collections (expired and revoked families past
    /// retention, old events), run in bounded steps; 0 turns it off [default: 60].
    #[arg(long, env = "ROTOKEN_GC_INTERVAL_SECS", value_name = "SECS")]
    pub(crate) gc_interval_secs: Option<u64>,
    /// redb's page cache in MiB [default: redb's, 1024].
    #[arg(long, env = "ROTOKEN_CACHE_MB", value_name = "MIB")]
    pub(crate) cache_mb: Option<u64>,
    /// Write the audit events (reuse detected, revoked, ...) as JSON lines to this file
    /// (appended, created with mode 0600, resumed after its last line) or to standard
    /// output (`-`), for a SIEM [default: off].
    #[arg(long, env = "ROTOKEN_EVENTS_TO", value_name = "FILE|-")]
    pub(crate) events_to: Option<String>,
    /// Milliseconds between looks for new events to write with --events-to [default: 1000].
    #[arg(long, env = "ROTOKEN_EVENTS_POLL_MS", value_name = "MS")]
    pub(crate) events_poll_ms: Option<u64>,
    /// The directory `POST /admin/backup` (and `rotoken backup --admin-url`)
    /// may write backups into, and no other [default: the database file's directory].
    #[arg(long, env = "ROTOKEN_BACKUP_DIR", value_name = "DIR")]
    pub(crate) backup_dir: Option<PathBuf>,
}

/// The line printed on standard output once the server is listening.
#[derive(Serialize)]
struct ReadyJson<'a> {
    listening: String,
    /// The admin API and `/metrics`; absent when off.
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_listening: Option<String>,
    issuer: &'a str,
    token_endpoint: String,
    db: String,
    keys: String,
    signing_key: String,
    clients_file: String,
    admin: bool,
    /// Where events go (`--events-to`); absent when off.
    #[serde(skip_serializing_if = "Option::is_none")]
    events_to: Option<String>,
}

/// Runs the server until SIGTERM or Ctrl-C.
///
/// # Errors
///
/// The [`CliError`] to print: a bad setting, unreadable keys, a locked
/// database, an address in use.
pub(crate) fn run(g: &Global, a: &ServeArgs) -> Result<(), CliError> {
    let settings = config::resolve(g, a, &|k| std::env::var(k).ok())?;
    init_logging(settings.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rotoken-serve")
        .build()
        .map_err(|e| CliError::storage("runtime_failed", format!("could not start the runtime: {e}")))?;
    runtime.block_on(serve(settings))
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("ROTOKEN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    // A subscriber set already (in tests) stays.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The clients of the config file first, then the clients file.
struct Clients {
    inline: MemoryClients,
    file: FileClients,
}

#[rotoken_http::async_trait]
impl ClientRegistry for Clients {
    async fn client(&self, id: &str) -> Result<Option<RegisteredClient>, RegistryError> {
        match self.inline.client(id).await? {
            Some(c) => Ok(Some(c)),
            None => self.file.client(id).await,
        }
    }
}

async fn serve(s: config::Settings) -> Result<(), CliError> {
    if let Some(c) = &s.config_file {
        tracing::info!(path = %c.display(), "config file read");
    }
    // Listen first: a port in use creates no keys and no database.
    let (listener, addr) = s.bind.listen().await?;
    let admin_listener = match &s.admin_bind {
        Some(b) => Some(b.listen().await?),
        None => None,
    };
    // Keys a first start generates are written only once the store has
    // accepted them: a server refused at start (wrong keyring, schema,
    // an unreachable database) leaves no file behind.
    let (keys, new_keys) = load_or_new_keys(&s.keys)?;
    let (signing, new_signing) = SigningKeys::load_or_new(&s.signing_key)
        .map_err(|e| CliError::refused("signing_key_invalid", e.to_string()))?;
    let keys_to_save = new_keys.then(|| keys.clone());
    for retired in &signing.previous {
        tracing::info!(kid = retired.key.kid(), retired_at = %retired.retired_at, "retired signing key still verifying");
    }
    // The engine's own background gc: without it a long-running server
    // would keep every revoked and expired family (and its pages) for ever,
    // and `rotoken gc` cannot open the database while serve holds it.
    let budget = Budget::new(s.request_timeout, &s.store);
    let options = Options {
        policy: s.policy.clone(),
        cache_size: s.cache_bytes,
        gc_every: s.gc_interval,
        // Operations without a request deadline of their own (gc, the
        // admin API's) are bound like a request's.
        deadline: budget.engine,
        ..Options::default()
    };
    let store = s.store.clone();
    let db_wait = s.db_wait;
    let engine = Arc::new(
        tokio::task::spawn_blocking(move || wait::open(&store, keys, options, db_wait))
            .await
            .map_err(|e| CliError::storage("runtime_failed", e.to_string()))??,
    );
    if !crate::policy::same_rules(&engine.policy(), &s.policy) {
        tracing::warn!(
            "the configured policy differs from the database's, which applies (every server runs by it); \
             change it with `rotoken policy set`, see `rotoken policy show`"
        );
    }
    tracing::info!(store = %s.store, kind = engine.store_name(), durability = ?s.policy.durability, "database open");
    if let Some(keys) = keys_to_save {
        save_new_keys(&keys, &s.keys)?;
    }
    if new_signing {
        signing
            .current
            .save(&s.signing_key)
            .map_err(|e| CliError::refused("signing_key_invalid", e.to_string()))?;
        tracing::warn!(
            path = %s.signing_key.display(),
            kid = signing.current.kid(),
            "generated an access-token signing key (EdDSA); keep it secret"
        );
    }
    if let Some(floor_ms) = engine.clock_floor_ignored() {
        tracing::warn!(
            floor_ms,
            "the store's clock floor is more than a minute ahead of this server's clock and was not adopted \
             (a server with its clock set wrong wrote it); fix that clock, then run `rotoken clock lower-floor`"
        );
    }
    let event_sink = match &s.events_to {
        Some(to) => {
            let sink = events::EventSink::open(to)?;
            tracing::info!(to = %to, after = sink.after(), "writing events");
            Some(sink)
        }
        None => None,
    };

    if let Some(schema) = engine.schema().filter(|schema| schema.upgraded()) {
        for m in &schema.applied {
            tracing::warn!(version = m.version, what = m.what, "schema migration applied on open");
        }
        tracing::warn!(
            from = schema.found,
            to = schema.current,
            "database schema upgraded on open; an older rotoken can no longer open it"
        );
    }
    let file = FileClients::open(&s.clients_file).map_err(|e| CliError::refused("clients_invalid", e.to_string()))?;
    let inline = s
        .inline_clients
        .iter()
        .cloned()
        .fold(MemoryClients::new(), MemoryClients::with);
    if file.is_empty() && s.inline_clients.is_empty() {
        tracing::warn!(
            clients_file = %s.clients_file.display(),
            "no clients registered yet; add one with `rotoken clients add --id web-app --public` (read within a second)"
        );
    }

    let issuer = s.issuer.clone().unwrap_or_else(|| s.bind.http_url(addr.port()));
    if !addr.ip().is_loopback() && issuer.starts_with("http://") {
        tracing::warn!(
            %addr,
            "listening beyond loopback with a plain http issuer: put TLS in front and set --issuer to its https URL"
        );
    }
    let minter = Arc::new(signing::ReloadingMinter::new(
        signing,
        s.signing_key.clone(),
        issuer.clone(),
        s.access_token_lifetime,
    ));
    tokio::spawn(signing::reload_on_sighup(minter.clone()));
    let mut config = Config::new(issuer.clone());
    config.max_body_bytes = s.max_body_bytes;
    config.trusted_proxies = s.trusted_proxies.clone();
    config.dpop_nonce = s.dpop_nonce;
    config.access_token_audience = s.access_token_audience.clone();
    config.backup_dir = s.backup_dir.clone();
    config.retry_after = s.retry_after;
    let oauth = Arc::new(OAuthServer::new(
        engine.clone(),
        Arc::new(Clients { inline, file }),
        minter,
        config,
    ));
    let app = public_app(oauth.clone(), &s, budget);
    let admin_app = admin_app(oauth.clone(), &s, budget);

    output::print_json(&ReadyJson {
        listening: addr.to_string(),
        admin_listening: admin_listener.as_ref().map(|(_, a)| a.to_string()),
        issuer: &issuer,
        token_endpoint: oauth.config().url(&oauth.config().token_path),
        db: s.store.to_string(),
        keys: s.keys.display().to_string(),
        signing_key: s.signing_key.display().to_string(),
        clients_file: s.clients_file.display().to_string(),
        admin: s.admin_token.is_some(),
        events_to: s.events_to.as_ref().map(ToString::to_string),
    })?;
    tracing::info!(
        %addr,
        admin = ?admin_listener.as_ref().map(|(_, a)| *a),
        %issuer,
        header_read_timeout_secs = s.limits.header_read_timeout.as_secs(),
        keep_alive_secs = s.limits.keep_alive.map_or(0, |k| k.as_secs()),
        max_connections = s.limits.max_connections,
        engine_deadline_ms = u64::try_from(budget.engine.as_millis()).unwrap_or(u64::MAX),
        answer_by_ms = u64::try_from(budget.outer.as_millis()).unwrap_or(u64::MAX),
        "listening"
    );

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let events = event_sink.map(|sink| {
        tokio::spawn(events::forward_events(
            engine.clone(),
            sink,
            s.events_poll,
            stop_rx.clone(),
        ))
    });
    let signal = async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing requests in flight");
        let _ = stop_tx.send(true);
    };
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stopped| *stopped).await;
    };
    let public = conn::serve(listener, app, s.limits, stopped(stop_rx.clone()));
    let admin_stop = stop_rx.clone();
    let admin = async {
        if let Some((l, _)) = admin_listener {
            conn::serve(l, admin_app, s.limits, stopped(admin_stop)).await;
        }
    };
    let servers = async {
        tokio::join!(signal_or_done(signal), public, admin);
    };
    let deadline = async {
        let _ = stop_rx.wait_for(|stopped| *stopped).await;
        tokio::time::sleep(s.shutdown_timeout).await;
    };
    let finished = tokio::select! {
        () = servers => true,
        () = deadline => false,
    };
    drop(oauth);
    if !finished {
        tracing::warn!(
            timeout_secs = s.shutdown_timeout.as_secs(),
            "requests still running at the shutdown deadline"
        );
    }
    // The events task writes what committed up to the end, then stops.
    if let Some(events) = events
        && tokio::time::timeout(s.shutdown_timeout, events).await.is_err()
    {
        tracing::warn!("events still being written at the shutdown deadline");
    }
    // The last reference closes the database (its drop commits nothing new).
    match Arc::try_unwrap(engine) {
        Ok(engine) => {
            tokio::task::spawn_blocking(move || drop(engine))
                .await
                .map_err(|e| CliError::storage("runtime_failed", e.to_string()))?;
            tracing::info!("database closed");
        }
        Err(_) => tracing::warn!("database still in use at exit; it recovers on the next open"),
    }
    Ok(())
}

/// Waits for the shutdown signal (the servers end on their own after it).
async fn signal_or_done(signal: impl std::future::Future<Output = ()>) {
    signal.await;
}

/// Loads the keyring, or generates a development one if the file is missing.
fn load_or_new_keys(path: &std::path::Path) -> Result<(Keyring, bool), CliError> {
    if matches!(path.try_exists(), Ok(false)) {
        let keys =
            Keyring::generate().map_err(|e| CliError::storage("random_failed", format!("generating keys: {e}")))?;
        return Ok((keys, true));
    }
    Ok((crate::commands::load_keys(path)?, false))
}

/// Writes a key file generated at this start (never over another one: a
/// file that appeared meanwhile was made by another process, whose keys
/// this server does not hold).
fn save_new_keys(keys: &Keyring, path: &std::path::Path) -> Result<(), CliError> {
    keys.save(path, false)
        .map_err(|e| CliError::refused("keys_io", format!("could not write the new key file: {e}")))?;
    tracing::warn!(
        path = %path.display(),
        "generated a development key file; keep it secret and back it up: \
         every refresh token dies with it"
    );
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// The public listener: the OAuth endpoints, metadata, JWKS and `/healthz`.
fn public_app(oauth: Arc<OAuthServer>, s: &config::Settings, budget: Budget) -> Router {
    let router = rotoken_axum::router(oauth.clone()).merge(rotoken_axum::health_router(oauth));
    with_limits(router, s, budget)
}

/// The admin listener: the admin API, `/metrics` and `/healthz`.
fn admin_app(oauth: Arc<OAuthServer>, s: &config::Settings, budget: Budget) -> Router {
    let router = rotoken_axum::health_router(oauth.clone()).merge(rotoken_axum::metrics_router(oauth.clone()));
    let admin = Arc::new(AdminApi::new(oauth, s.admin_token.clone()));
    with_limits(rotoken_axum::admin_router(admin).merge(router), s, budget)
}

/// The 404 JSON fallback, request logs, the request's deadline and the
/// last-resort time limit (see [`Budget`]).
fn with_limits(router: Router, s: &config::Settings, budget: Budget) -> Router {
    let retry_after = s.retry_after.as_secs().max(1);
    router
        .fallback(|| async { json(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#.to_owned()) })
        .layer(axum::middleware::from_fn(log_request))
        .layer(axum::middleware::from_fn(move |request, next| {
            deadline::bounded(request, next, budget, retry_after)
        }))
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Logs method, route, status and latency; never the query string or a
/// path outside the routes (either could carry a token).
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(other)".to_owned(), |p| p.as_str().to_owned());
    let start = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    // Rejections are counted and summarized by rotoken-http; one line
    // each only at debug, so a flood of bad requests cannot flood the log.
    if status >= 500 {
        tracing::error!(%method, route, status, micros, "request");
    } else if status >= 400 {
        tracing::debug!(%method, route, status, micros, "request");
    } else {
        tracing::info!(%method, route, status, micros, "request");
    }
    response
}
