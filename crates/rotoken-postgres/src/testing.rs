//! A PostgreSQL database per test (feature `testing`).
//!
//! [`database`] gives each test its own database (`CREATE DATABASE` with a
//! unique name, dropped at the end), so tests run in parallel on one
//! server. The server is, in order:
//!
//! 1. `ROTOKEN_TEST_POSTGRES_URL`, when set (a `postgres://` URL or a
//!    `key=value` string of a role that may create databases);
//! 2. else a throwaway cluster started once per test process from the
//!    installed binaries (`$ROTOKEN_PG_BIN`, else the newest
//!    `/usr/lib/postgresql/*/bin`, else `initdb` on `PATH`): `initdb` into
//!    a temporary directory, listening only on a Unix socket in that
//!    directory (no TCP port). `initdb` and `postgres` refuse to run as
//!    root, so under root they run as the `postgres` system user
//!    (`runuser -u postgres`) with the directory given to it. A watchdog
//!    shell holds the cluster: when the test process exits (however it
//!    exits) the watchdog's stdin closes and it stops the cluster and
//!    removes the directory.
//!
//! When neither is available, [`database`] panics if `CI` is set and
//! otherwise prints `SKIPPED: ...` and returns `None`.

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::{PgOptions, PostgresStore};

/// Any failure of the harness.
pub type HarnessError = Box<dyn std::error::Error + Send + Sync>;

/// The environment variable naming an existing server to test against.
pub const URL_VAR: &str = "ROTOKEN_TEST_POSTGRES_URL";

/// One test's own database. Dropped: the database is dropped (its
/// connections terminated).
#[derive(Debug)]
pub struct TestDb {
    config: tokio_postgres::Config,
    admin: tokio_postgres::Config,
    name: String,
    bin: Option<PathBuf>,
}

/// A database of its own for the calling test, or `None` (after printing
/// `SKIPPED`) when no PostgreSQL is available outside CI.
///
/// # Panics
///
/// When no PostgreSQL is available and `CI` is set, or when creating the
/// database fails.
pub fn database() -> Option<TestDb> {
    let server = match server() {
        Ok(s) => s,
        Err(why) => {
            if std::env::var_os("CI").is_some() {
                panic!("PostgreSQL is required under CI: {why}");
            }
            // Straight to stderr: the test harness captures `eprintln!`.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: the PostgreSQL tests of this binary ({}); set {URL_VAR} or install PostgreSQL",
                    why.trim()
                );
            });
            return None;
        }
    };
    match TestDb::create(server) {
        Ok(db) => Some(db),
        Err(e) => panic!("could not create a test database: {e}"),
    }
}

/// Where databases are created: an admin connection and the binaries.
struct Server {
    admin: tokio_postgres::Config,
    bin: Option<PathBuf>,
}

fn server() -> Result<&'static Server, String> {
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let bin = bin_dir();
            match std::env::var(URL_VAR) {
                Ok(url) if !url.is_empty() => Ok(Server {
                    admin: url.parse().map_err(|e| format!("{URL_VAR}: {e}"))?,
                    bin,
                }),
                _ => {
                    let bin = bin.ok_or_else(|| "no PostgreSQL binaries (initdb) found".to_string())?;
                    let admin = start_cluster(&bin).map_err(|e| format!("throwaway cluster: {e}"))?;
                    Ok(Server { admin, bin: Some(bin) })
                }
            }
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The directory holding `initdb`, `postgres` and `pg_dump`.
fn bin_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("ROTOKEN_PG_BIN") {
        return Some(PathBuf::from(d));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|d| d.join("initdb").exists())
}

/// The watchdog of the throwaway cluster: its stdin stays open for as
/// long as the test process lives.
struct Watchdog {
    _stdin: ChildStdin,
    _child: Child,
}

/// Keeps the watchdog for the life of the process.
static WATCHDOG: Mutex<Option<Watchdog>> = Mutex::new(None);

/// The watchdog: starts the cluster, says `ready`, waits for its stdin to
/// close, stops the cluster and removes its directory. `$1` the directory,
/// `$2` the binaries, `$3..` the command prefix that runs as the owner.
const WATCHDOG_SCRIPT: &str = r#"
dir=$1; bin=$2; shift 2
"$@" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
  -o "-k $dir -c listen_addresses='' -c max_connections=300" start >/dev/null 2>&1 || { cat "$dir/log" >&2; exit 1; }
echo ready
cat >/dev/null
"$@" "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1
rm -rf "$dir"
"#;

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn id_of(flag: &str) -> Result<u32, HarnessError> {
    let out = Command::new("id").args([flag, "postgres"]).output()?;
    if !out.status.success() {
        return Err("no `postgres` system user to run the cluster as".into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// Starts the throwaway cluster; returns the admin connection settings.
fn start_cluster(bin: &Path) -> Result<tokio_postgres::Config, HarnessError> {
    let (dir, prefix) = init_cluster(bin)?;
    let watchdog = spawn_watchdog(&dir, bin, &prefix)?;
    *WATCHDOG.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(watchdog);
    Ok(admin_config(&dir))
}

/// The admin connection of a cluster in `dir` (its Unix socket).
fn admin_config(dir: &Path) -> tokio_postgres::Config {
    let mut admin = tokio_postgres::Config::new();
    admin.host_path(dir).port(5432).user("postgres").dbname("postgres");
    admin
}

/// `initdb` into a new temporary directory; the directory and the command
/// prefix that runs programs as its owner.
fn init_cluster(bin: &Path) -> Result<(PathBuf, Vec<String>), HarnessError> {
    let dir = tempfile::Builder::new().prefix("rotoken-pg-").tempdir()?.keep();
    let prefix: Vec<String> = if is_root() {
        std::os::unix::fs::chown(&dir, Some(id_of("-u")?), Some(id_of("-g")?))?;
        ["runuser", "-u", "postgres", "--"].map(String::from).to_vec()
    } else {
        Vec::new()
    };
    let mut init = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin.join("initdb"));
            c
        }
        None => Command::new(bin.join("initdb")),
    };
    let init = init
        .stdin(Stdio::null())
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        .output()?;
    if !init.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&init.stderr)).into());
    }
    Ok((dir, prefix))
}

/// Starts the cluster in `dir` under a watchdog that stops it (and removes
/// the directory) when its stdin closes.
fn spawn_watchdog(dir: &Path, bin: &Path, prefix: &[String]) -> Result<Watchdog, HarnessError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("sh")
        .arg(dir)
        .arg(bin)
        .args(prefix)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdin = child.stdin.take().ok_or("watchdog without stdin")?;
    let stdout = child.stdout.take().ok_or("watchdog without stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "ready" {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(dir);
        return Err(format!("the cluster did not start: {err}").into());
    }
    Ok(Watchdog {
        _stdin: stdin,
        _child: child,
    })
}

/// A cluster of its own, created (`initdb`) but not started: a database
/// that is "not up yet", for tests of connecting with a wait. Dropped: the
/// cluster is stopped (if started) and its directory removed.
pub struct LateCluster {
    dir: PathBuf,
    bin: PathBuf,
    prefix: Vec<String>,
    watchdog: Mutex<Option<Watchdog>>,
}

impl std::fmt::Debug for LateCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LateCluster")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl LateCluster {
    /// A new cluster from the installed binaries, or `None` (after
    /// printing `SKIPPED`) when there are none outside CI.
    ///
    /// # Panics
    ///
    /// When there are no binaries and `CI` is set, or `initdb` fails.
    pub fn new() -> Option<Self> {
        let Some(bin) = bin_dir() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL binaries are required under CI"
            );
            let _ = writeln!(std::io::stderr(), "SKIPPED: no PostgreSQL binaries (initdb) found");
            return None;
        };
        match init_cluster(&bin) {
            Ok((dir, prefix)) => Some(Self {
                dir,
                bin,
                prefix,
                watchdog: Mutex::new(None),
            }),
            Err(e) => panic!("could not create a cluster: {e}"),
        }
    }

    /// The URL of its `postgres` database (a Unix socket in its directory).
    pub fn url(&self) -> String {
        format!(
            "postgresql:///postgres?host={}&port=5432&user=postgres",
            encode(&self.dir.to_string_lossy())
        )
    }

    /// Starts it (returns once it accepts connections).
    ///
    /// # Errors
    ///
    /// The cluster did not start.
    pub fn start(&self) -> Result<(), HarnessError> {
        let watchdog = spawn_watchdog(&self.dir, &self.bin, &self.prefix)?;
        *self.watchdog.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(watchdog);
        Ok(())
    }
}

impl Drop for LateCluster {
    fn drop(&mut self) {
        let watchdog = self
            .watchdog
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match watchdog {
            Some(Watchdog { _stdin, mut _child }) => {
                drop(_stdin);
                let _ = _child.wait();
            }
            None => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }
}

/// A connection of the harness's own, on a runtime of its own.
pub struct Sql {
    // `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    client: tokio_postgres::Client,
}

impl std::fmt::Debug for Sql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sql").finish_non_exhaustive()
    }
}

impl Sql {
    /// Connects with `config`.
    ///
    /// # Errors
    ///
    /// The connection failed.
    pub fn connect(config: &tokio_postgres::Config) -> Result<Self, HarnessError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let client = runtime.block_on(async {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            Ok::<_, tokio_postgres::Error>(client)
        })?;
        Ok(Self {
            runtime: Some(runtime),
            client,
        })
    }

    /// Runs `sql` (one or more statements, no parameters).
    ///
    /// # Errors
    ///
    /// The statement failed.
    pub fn execute(&self, sql: &str) -> Result<(), HarnessError> {
        Ok(self.block_on(self.client.batch_execute(sql))?)
    }

    /// The first column of the first row of `sql`, as an `i64`.
    ///
    /// # Errors
    ///
    /// The query failed or returned no row.
    pub fn query_i64(&self, sql: &str) -> Result<i64, HarnessError> {
        let row = self.block_on(self.client.query_one(sql, &[]))?;
        Ok(row.try_get(0)?)
    }

    /// The client, to run anything else on [`Sql::block_on`].
    pub fn client(&self) -> &tokio_postgres::Client {
        &self.client
    }

    /// Runs `f` on this connection's runtime.
    ///
    /// # Panics
    ///
    /// Inside another runtime (as tokio's `block_on` does).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.runtime {
            Some(rt) => rt.block_on(f),
            None => unreachable!("the runtime is taken only by drop"),
        }
    }
}

impl Drop for Sql {
    fn drop(&mut self) {
        // Safe in any context (tests may drop it inside a runtime).
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl TestDb {
    fn create(server: &Server) -> Result<Self, HarnessError> {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "rotoken_test_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        Sql::connect(&server.admin)?.execute(&format!("CREATE DATABASE {name}"))?;
        let mut config = server.admin.clone();
        config.dbname(&name);
        Ok(Self {
            config,
            admin: server.admin.clone(),
            name,
            bin: server.bin.clone(),
        })
    }

    /// The database's connection settings.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database as a `postgresql://` URL (what `--store`, `ROTOKEN_STORE`
    /// and the C ABI take). A password, if any, is in the URL.
    pub fn url(&self) -> String {
        use tokio_postgres::config::Host;
        let c = &self.config;
        let mut query = Vec::new();
        let mut authority = String::new();
        if let Some(user) = c.get_user() {
            authority.push_str(&encode(user));
            if let Some(pw) = c.get_password() {
                authority.push(':');
                authority.push_str(&encode(&String::from_utf8_lossy(pw)));
            }
            authority.push('@');
        }
        for host in c.get_hosts() {
            match host {
                Host::Tcp(h) => query.push(format!("host={}", encode(h))),
                Host::Unix(p) => query.push(format!("host={}", encode(&p.to_string_lossy()))),
            }
        }
        if let Some(port) = c.get_ports().first() {
            query.push(format!("port={port}"));
        }
        format!(
            "postgresql://{authority}/{}?{}",
            encode(c.get_dbname().unwrap_or(&self.name)),
            query.join("&")
        )
    }

    /// A store on this database.
    ///
    /// # Errors
    ///
    /// As [`PostgresStore::connect_with`].
    pub fn store(&self) -> Result<PostgresStore, rotoken::OpenError> {
        self.store_with(PgOptions::default())
    }

    /// A store on this database with `options`.
    ///
    /// # Errors
    ///
    /// As [`PostgresStore::connect_with`].
    pub fn store_with(&self, options: PgOptions) -> Result<PostgresStore, rotoken::OpenError> {
        PostgresStore::connect_with(self.config.clone(), options)
    }

    /// A plain connection to this database (for looking at tables).
    ///
    /// # Errors
    ///
    /// The connection failed.
    pub fn sql(&self) -> Result<Sql, HarnessError> {
        Sql::connect(&self.config)
    }

    /// A plain connection to the server's admin database (to alter or
    /// drop this one).
    ///
    /// # Errors
    ///
    /// The connection failed.
    pub fn admin_sql(&self) -> Result<Sql, HarnessError> {
        Sql::connect(&self.admin)
    }

    /// `VACUUM FULL` of the database, then the bytes of every table whose
    /// name is `LIKE pattern` (schema `public`): heap, TOAST and indexes,
    /// main forks only (the free-space and visibility maps appear when
    /// autovacuum gets round to a table, so they would make the figure
    /// depend on timing).
    ///
    /// # Errors
    ///
    /// The connection or a statement failed.
    pub fn compacted_bytes(&self, pattern: &str) -> Result<u64, HarnessError> {
        let sql = self.sql()?;
        sql.execute("VACUUM FULL")?;
        let rows = sql.block_on(sql.client().query(
            "WITH t AS (
                 SELECT c.oid, c.reltoastrelid FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname LIKE $1
             ), rels AS (
                 SELECT oid FROM t
                 UNION SELECT reltoastrelid FROM t WHERE reltoastrelid <> 0
                 UNION SELECT indexrelid FROM pg_index
                       WHERE indrelid IN (SELECT oid FROM t UNION SELECT reltoastrelid FROM t)
             )
             SELECT coalesce(sum(pg_relation_size(oid)), 0)::int8 FROM rels",
            &[&pattern],
        ))?;
        let bytes: i64 = rows.first().ok_or("no result")?.try_get(0)?;
        Ok(u64::try_from(bytes)?)
    }

    /// `pg_dump` of the whole database (schema and data, plain SQL).
    ///
    /// # Errors
    ///
    /// No `pg_dump` found, or it failed.
    pub fn pg_dump(&self) -> Result<Vec<u8>, HarnessError> {
        self.pg_dump_with(&[])
    }

    /// `pg_dump` with more arguments (`--no-owner`, say).
    ///
    /// # Errors
    ///
    /// No `pg_dump` found, or it failed.
    pub fn pg_dump_with(&self, args: &[&str]) -> Result<Vec<u8>, HarnessError> {
        let out = self
            .client_program("pg_dump")
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(format!("pg_dump failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(out.stdout)
    }

    /// Runs a plain SQL script (a `pg_dump --format=plain` dump, say) with
    /// `psql`, stopping at the first error.
    ///
    /// # Errors
    ///
    /// No `psql` found, or the script failed.
    pub fn run_sql_script(&self, script: &[u8]) -> Result<(), HarnessError> {
        let mut child = self
            .client_program("psql")
            .args(["--quiet", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().ok_or("psql without stdin")?;
        let script = script.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&script));
        let out = child.wait_with_output()?;
        writer.join().map_err(|_| "writing to psql panicked")??;
        if !out.status.success() {
            return Err(format!("psql failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(())
    }

    /// A PostgreSQL client program (`pg_dump`, `psql`) of the harness's
    /// binaries, connecting to this database.
    fn client_program(&self, name: &str) -> Command {
        let program = match &self.bin {
            Some(b) => b.join(name),
            None => PathBuf::from(name),
        };
        let mut cmd = Command::new(program);
        for host in self.config.get_hosts() {
            match host {
                tokio_postgres::config::Host::Tcp(h) => cmd.arg("-h").arg(h),
                tokio_postgres::config::Host::Unix(p) => cmd.arg("-h").arg(p),
            };
        }
        if let Some(port) = self.config.get_ports().first() {
            cmd.arg("-p").arg(port.to_string());
        }
        if let Some(user) = self.config.get_user() {
            cmd.arg("-U").arg(user);
        }
        if let Some(pw) = self.config.get_password() {
            cmd.env("PGPASSWORD", String::from_utf8_lossy(pw).into_owned());
        }
        cmd.arg("-d").arg(&self.name);
        cmd
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(sql) = Sql::connect(&self.admin) {
            let _ = sql.execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
