//! A load and soak generator for `rotoken serve`.
//!
//! A generic HTTP load tool (oha, wrk) cannot drive a refresh endpoint with
//! rotation: every successful refresh retires the token it was sent and
//! returns a new one, so the next request must carry the new one. Here each
//! connection (one thread, one keep-alive HTTP/1.1 connection) owns one
//! family and follows its current token:
//!
//! * setup: one family per connection through the admin API
//!   (`POST /admin/families`);
//! * the loop, until the duration ends: refresh the current token at
//!   `POST /oauth/token` (its latency goes into an HDR histogram), and with
//!   the configured probabilities instead
//!   - **replay** a token two generations old (reuse: the server must answer
//!     `invalid_grant` and revoke the family, so the current token must then
//!     be refused too; the connection gets a new family),
//!   - **revoke** the current token at `POST /oauth/revoke` (200, then a
//!     refresh with it must be refused; a new family),
//!   - **retry** the immediate predecessor within the grace window (the
//!     server must answer 200 with the *current* token, not a new one);
//! * at the end every connection refreshes its current token once more: one
//!   that is refused is a **lost rotation**.
//!
//! Anything else (a 5xx, a refused refresh of a live token, an accepted
//! replay, a transport error) is an error, with the first few reasons kept
//! as samples. No token, secret or response body ever reaches the report.
//!
//! With a server process id, the server's resident memory (`VmRSS`) is
//! sampled every second, and the CPU time of the server and of this process
//! over the run is reported, so the cost of the generator itself is visible.
//!
//! [`run`] does it all and returns a [`Report`]; the `rotoken-load` binary
//! is a command line over it.
//!
//! ```no_run
//! // `rotoken clients add --id load --public`, then
//! // `ROTOKEN_ADMIN_TOKEN=... rotoken serve` on 127.0.0.1:8080.
//! let mut config = rotoken_load::Config::new("http://127.0.0.1:8080", "the-admin-token", "load");
//! config.admin_url = Some("http://127.0.0.1:8081".into());
//! config.connections = 8;
//! config.duration = std::time::Duration::from_secs(10);
//! config.replay_share = 0.02;
//! config.revoke_share = 0.01;
//! let report = rotoken_load::run(&config)?;
//! println!("{report}");
//! assert!(report.is_clean(), "5xx, unexpected answers or lost rotations");
//! # Ok::<(), rotoken_load::LoadError>(())
//! ```

#![forbid(unsafe_code)]

mod procfs;
mod report;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

pub use report::{Cpu, Report, Rss};
use worker::{Stats, Urls, Worker};

/// Largest latency the histograms record (longer ones are clamped), in µs.
const MAX_LATENCY_US: u64 = 120_000_000;

/// How the generated refreshes authenticate at the token endpoint.
#[derive(Clone)]
pub struct ClientCredentials {
    /// The `client_id`.
    pub id: String,
    /// The client secret of a confidential client (sent as `client_secret`
    /// in the body); `None` for a public client.
    pub secret: Option<String>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// What to run, against which server.
#[derive(Clone)]
pub struct Config {
    /// Base URL of the running `rotoken serve`, `http://host:port` (plain
    /// HTTP only: this tool is for loopback runs).
    pub base_url: String,
    /// Base URL of the server's admin listener (`/admin/families`,
    /// `/metrics`): `rotoken serve --admin-bind`. `None`: the base URL.
    pub admin_url: Option<String>,
    /// More servers sharing the first one's store (a PostgreSQL store):
    /// `(base URL, admin URL)`. Connection `i` talks to server
    /// `i % (1 + more_servers.len())`, the first being `base_url`; the
    /// rotation counters of all of them are summed.
    pub more_servers: Vec<(String, String)>,
    /// The admin bearer token (`ROTOKEN_ADMIN_TOKEN` of the server).
    pub admin_token: String,
    /// The client the families are issued to and that refreshes.
    pub client: ClientCredentials,
    /// Scope of the issued families; must hold `offline_access`.
    pub scope: String,
    /// Subjects are `<prefix>-<connection>`.
    pub subject_prefix: String,
    /// Concurrent connections (threads), each with its own family.
    pub connections: usize,
    /// How long the measured loop runs (unless `steps` is set).
    pub duration: Duration,
    /// Steps each connection takes, instead of running for `duration`: a
    /// run bounded by work, whose counts do not depend on the machine's
    /// speed (with a fixed `seed`, the same choices every run).
    pub steps: Option<u64>,
    /// The RSS sample at or after this point of the run is the
    /// "after warm-up" figure.
    pub warmup: Duration,
    /// Probability, per step, of replaying a token two generations old.
    pub replay_share: f64,
    /// Probability, per step, of revoking the current token.
    pub revoke_share: f64,
    /// Probability, per step, of retrying the immediate predecessor.
    pub retry_share: f64,
    /// The server's grace window; retries are only sent while the
    /// predecessor was retired less than half of it ago.
    pub grace: Duration,
    /// The server's process id, to sample its memory and CPU time.
    pub server_pid: Option<u32>,
    /// Time limit for one request.
    pub request_timeout: Duration,
    /// Seed of the per-connection choices.
    pub seed: u64,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("base_url", &self.base_url)
            .field("admin_url", &self.admin_url)
            .field("more_servers", &self.more_servers)
            .field("admin_token", &"<hidden>")
            .field("client", &self.client)
            .field("scope", &self.scope)
            .field("connections", &self.connections)
            .field("duration", &self.duration)
            .field("steps", &self.steps)
            .field("replay_share", &self.replay_share)
            .field("revoke_share", &self.revoke_share)
            .field("retry_share", &self.retry_share)
            .field("server_pid", &self.server_pid)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// A plain refresh load: 64 connections for 30 s, no replays,
    /// revocations or retries, a public client.
    pub fn new(base_url: impl Into<String>, admin_token: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            admin_url: None,
            more_servers: Vec::new(),
            admin_token: admin_token.into(),
            client: ClientCredentials {
                id: client_id.into(),
                secret: None,
            },
            scope: "openid offline_access".to_owned(),
            subject_prefix: "load".to_owned(),
            connections: 64,
            duration: Duration::from_secs(30),
            steps: None,
            warmup: Duration::from_secs(5),
            replay_share: 0.0,
            revoke_share: 0.0,
            retry_share: 0.0,
            grace: Duration::from_secs(30),
            server_pid: None,
            request_timeout: Duration::from_secs(30),
            seed: 0,
        }
    }

    fn validate(&self) -> Result<(), LoadError> {
        let invalid = |m: &str| Err(LoadError::InvalidConfig(m.to_owned()));
        let bases = std::iter::once(&self.base_url).chain(self.more_servers.iter().map(|(b, _)| b));
        if bases.into_iter().any(|b| !b.starts_with("http://")) {
            return invalid("the base URL must start with http:// (plain HTTP, for loopback runs)");
        }
        if self.connections == 0 || self.connections > 4096 {
            return invalid("connections must be between 1 and 4096");
        }
        if self.duration.is_zero() {
            return invalid("the duration must be positive");
        }
        let shares = [self.replay_share, self.revoke_share, self.retry_share];
        if shares.iter().any(|s| !(0.0..=1.0).contains(s)) || shares.iter().sum::<f64>() > 1.0 {
            return invalid("each share must be in [0, 1] and together at most 1");
        }
        if self.client.id.is_empty() || self.admin_token.is_empty() {
            return invalid("a client id and an admin token are required");
        }
        if !self.scope.split(' ').any(|s| s == "offline_access") {
            return invalid("the scope must hold offline_access, or no refresh token is issued");
        }
        Ok(())
    }
}

/// Why a run could not be made (a run that was made, however badly it went,
/// gives a [`Report`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A connection could not get its first family.
    #[error("setup failed: {0}")]
    Setup(String),
    /// The server's process could not be read in /proc.
    #[error("cannot sample the server process: {0}")]
    Process(String),
    /// A worker thread could not be started or panicked.
    #[error("worker failure: {0}")]
    Worker(String),
}

/// The resident set size of process `pid`, in KiB (Linux /proc), for a
/// caller that compares memory at points of its own choosing (after a given
/// amount of work rather than at given times).
///
/// # Errors
///
/// [`LoadError::Process`] when /proc/PID/status cannot be read.
pub fn rss_kib(pid: u32) -> Result<u64, LoadError> {
    procfs::rss_kib(pid).map_err(LoadError::Process)
}

/// Runs the load described by `config` and reports what happened.
///
/// # Errors
///
/// [`LoadError`] when the configuration is invalid, the server process
/// cannot be read, or a connection cannot create its first family; errors
/// during the run are counted in the report instead.
pub fn run(config: &Config) -> Result<Report, LoadError> {
    config.validate()?;
    if let Some(pid) = config.server_pid {
        procfs::rss_kib(pid).map_err(LoadError::Process)?;
    }
    let servers: Vec<Urls> = std::iter::once(Urls::new(
        &config.base_url,
        config.admin_url.as_deref().unwrap_or(&config.base_url),
    ))
    .chain(config.more_servers.iter().map(|(base, admin)| Urls::new(base, admin)))
    .collect();
    let rotations_before = total_rotations(&servers, config.request_timeout);

    // Latency in microseconds, 3 significant digits.
    let empty = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .map_err(|e| LoadError::Worker(format!("cannot make a histogram: {e:?}")))?;
    let n = config.connections;
    let sampler_done = AtomicBool::new(false);
    let gate = Gate::default();
    let setup_error: Mutex<Option<String>> = Mutex::new(None);

    let outcome = std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(n);
        for id in 0..n {
            let urls = &servers[id % servers.len()];
            let (gate, setup_error, empty) = (&gate, &setup_error, empty.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("load-{id}"))
                .stack_size(256 * 1024)
                .spawn_scoped(scope, move || {
                    let mut w = Worker::new(id, config, urls, empty);
                    if let Err(reason) = w.setup() {
                        lock(setup_error).get_or_insert(reason);
                    }
                    let deadline = gate.arrive_and_wait();
                    w.run(deadline, config.steps);
                    w.final_check();
                    w.into_stats()
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    lock(setup_error).get_or_insert(format!("cannot start connection thread {id}: {e}"));
                    break;
                }
            }
        }
        gate.wait_ready(handles.len());
        let failed = lock(&setup_error).is_some();
        let start = Instant::now();
        let sampler = config.server_pid.filter(|_| !failed).map(|pid| {
            let done = &sampler_done;
            scope.spawn(move || procfs::Sampler::run(pid, start, done))
        });
        let client_cpu_start = procfs::cpu_secs(None);
        let server_cpu_start = config.server_pid.and_then(|pid| procfs::cpu_secs(Some(pid)));
        gate.open(if failed { start } else { start + config.duration });
        let mut stats = Vec::with_capacity(n);
        for h in handles {
            stats.push(
                h.join()
                    .map_err(|_| LoadError::Worker("a connection thread panicked".to_owned()))?,
            );
        }
        let elapsed = stats
            .iter()
            .filter_map(|s| s.loop_end)
            .max()
            .map_or_else(|| start.elapsed(), |end| end.saturating_duration_since(start));
        let cpu = Cpu {
            client_secs: procfs::cpu_secs(None).zip(client_cpu_start).map(|(b, a)| b - a),
            server_secs: config
                .server_pid
                .and_then(|pid| procfs::cpu_secs(Some(pid)))
                .zip(server_cpu_start)
                .map(|(b, a)| b - a),
        };
        sampler_done.store(true, Ordering::SeqCst);
        let samples = sampler.and_then(|s| s.join().ok()).unwrap_or_default();
        Ok::<_, LoadError>((elapsed, cpu, samples, stats))
    });
    let (elapsed, cpu, samples, stats) = outcome?;
    if let Some(reason) = lock(&setup_error).take() {
        return Err(LoadError::Setup(reason));
    }
    let rotations_after = total_rotations(&servers, config.request_timeout);
    let server_rotations = rotations_after.zip(rotations_before).map(|(b, a)| b.saturating_sub(a));
    let total = merge(stats, empty)?;
    Ok(report::build(config, elapsed, total, &samples, cpu, server_rotations))
}

/// The rotations every server counted (`None` if any did not answer).
fn total_rotations(servers: &[Urls], timeout: Duration) -> Option<u64> {
    servers
        .iter()
        .map(|u| worker::server_rotations(u, timeout))
        .sum::<Option<u64>>()
}

/// Locks a mutex, whether or not a panicking thread poisoned it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Holds every connection until all have made their first family, then
/// lets them run until one common deadline.
#[derive(Default)]
struct Gate {
    state: Mutex<(usize, Option<Instant>)>,
    changed: Condvar,
}

impl Gate {
    /// A connection is ready; blocks until the run's deadline is known.
    fn arrive_and_wait(&self) -> Instant {
        let mut s = lock(&self.state);
        s.0 += 1;
        self.changed.notify_all();
        loop {
            if let Some(deadline) = s.1 {
                return deadline;
            }
            s = self.changed.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Blocks until `n` connections are ready.
    fn wait_ready(&self, n: usize) {
        let mut s = lock(&self.state);
        while s.0 < n {
            s = self.changed.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Starts the run.
    fn open(&self, deadline: Instant) {
        lock(&self.state).1 = Some(deadline);
        self.changed.notify_all();
    }
}

/// Adds every connection's counters and histograms together.
fn merge(all: Vec<Stats>, empty: Histogram<u64>) -> Result<Stats, LoadError> {
    let mut total = Stats::new(empty);
    for s in all {
        total.absorb(s).map_err(LoadError::Worker)?;
    }
    Ok(total)
}
