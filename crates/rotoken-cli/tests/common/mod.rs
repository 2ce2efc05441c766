//! Shared by the integration tests: `rotoken serve` and `rotoken events
//! --follow` as child processes, killed when dropped.

#![allow(dead_code)] // each test file uses some of it

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a test waits for an event to be printed. Generous: a loaded
/// machine is slow, and a passing test never waits this long.
const PATIENCE: Duration = Duration::from_secs(60);

/// How long a test waits for `rotoken serve` to print its ready line.
const STARTUP: Duration = Duration::from_secs(120);

/// A running `rotoken serve`, killed (SIGKILL) when dropped.
pub(crate) struct Served {
    pub(crate) child: Child,
    /// The ready line it printed: `listening`, `admin_listening`, `issuer`, ...
    pub(crate) ready: Value,
    /// Its standard error.
    pub(crate) log: PathBuf,
}

impl Served {
    /// Starts `command` (`rotoken serve` with its arguments, directory and
    /// environment), its standard error in `log`, and waits for the ready
    /// line; panics with the log if there is none.
    pub(crate) fn start(mut command: Command, log: &Path) -> Self {
        let stderr = std::fs::File::create(log).unwrap();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(STARTUP).unwrap_or_default();
        let mut served = Self {
            child,
            ready: Value::Null,
            log: log.to_owned(),
        };
        match serde_json::from_str(&line) {
            Ok(ready) => served.ready = ready,
            Err(_) => panic!("serve printed no ready line: {line:?}; log: {}", served.log()),
        }
        served
    }

    /// `rotoken serve` with `args`, in `dir`, its log in `dir/serve.log`.
    pub(crate) fn command(dir: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rotoken"));
        command.arg("serve").args(args).current_dir(dir);
        command
    }

    /// The address of the OAuth listener.
    pub(crate) fn listening(&self) -> &str {
        self.ready["listening"].as_str().unwrap()
    }

    /// The address of the admin listener.
    pub(crate) fn admin_listening(&self) -> &str {
        self.ready["admin_listening"].as_str().unwrap()
    }

    /// What it wrote to standard error so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `rotoken events --follow ...`.
pub(crate) struct Follower {
    child: Child,
    lines: Receiver<String>,
    /// Every event printed so far, in order.
    pub(crate) seen: Vec<Value>,
}

impl Follower {
    /// Starts `rotoken events --follow --interval-ms 50` and `args` in `dir`.
    pub(crate) fn spawn(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rotoken"))
            .args(["events", "--follow", "--interval-ms", "50"])
            .args(args)
            .current_dir(dir)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one is an event that `want` accepts; panics after
    /// [`PATIENCE`]. Returns that event.
    pub(crate) fn wait_for(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no such event within {PATIENCE:?}; seen: {:?}", self.seen));
            let event: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON line: {line:?}"));
            self.seen.push(event.clone());
            if want(&event) {
                return event;
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `seq` of each event, asserting they strictly increase (no repeats).
pub(crate) fn strictly_increasing(events: &[Value]) -> Vec<u64> {
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "not strictly increasing: {seqs:?}"
    );
    seqs
}

/// Runs `rotoken events` and `args` in `dir` to the end; the events it printed.
pub(crate) fn events(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_rotoken"))
        .arg("events")
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs `rotoken` with `args` in `dir`: whether it succeeded, and its JSON
/// answer (standard output, or standard error when it failed).
pub(crate) fn rotoken_json(dir: &Path, args: &[&str]) -> (bool, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_rotoken"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = if out.status.success() { &out.stdout } else { &out.stderr };
    let v = serde_json::from_slice(text).unwrap_or_else(|_| panic!("not JSON: {out:?}"));
    (out.status.success(), v)
}

/// POSTs `body` to `url` with a client that waits at most `patience`: the
/// status and the JSON answer (`Null` if it is not JSON), or the transport
/// error (a timeout, a refused connection).
pub(crate) fn post_within(
    url: &str,
    bearer: Option<&str>,
    content_type: &str,
    body: String,
    patience: Duration,
) -> Result<(u16, Value), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(patience))
        .build()
        .into();
    let mut req = http::Request::post(url).header("content-type", content_type);
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    let mut resp = agent.run(req.body(body).unwrap()).map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// A directory with a new key file and the public client `spa`: what the
/// servers of a test share.
pub(crate) fn server_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["keys", "generate"][..],
        &["clients", "add", "--id", "spa", "--public"],
    ] {
        let (ok, v) = rotoken_json(dir.path(), args);
        assert!(ok, "{v}");
    }
    dir
}
