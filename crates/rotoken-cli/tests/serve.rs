//! `rotoken serve` on a loopback port, driven by a real OAuth client library
//! that nobody here wrote (the `oauth2` crate over `ureq`), by two tabs at
//! once, and by raw malformed HTTP; then shut down with SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{AuthType, ClientId, ClientSecret, RefreshToken, RequestTokenError, TokenResponse as _, TokenUrl};
use serde_json::{Value, json};

mod common;

use common::Served;

const ADMIN: &str = "admin-token-for-tests-0123456789";
const WEB_SECRET: &str = "web-secret-for-tests-0123456789";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rotoken")
}

/// Runs `rotoken` in `dir` with `stdin` and returns its stdout as JSON.
fn rotoken(dir: &Path, args: &[&str], stdin: &str) -> Value {
    let mut child = Command::new(bin())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = if out.status.success() { &out.stdout } else { &out.stderr };
    serde_json::from_slice(text).unwrap_or_else(|_| panic!("not JSON: {out:?}"))
}

/// A running `rotoken serve`.
struct Server {
    served: Served,
    addr: String,
    /// The admin listener (`--admin-bind`).
    admin_addr: String,
    dir: tempfile::TempDir,
}

impl Server {
    /// Registers the clients, then starts the server on a free loopback port.
    fn start() -> Self {
        Self::start_with(true)
    }

    fn start_with(admin: bool) -> Self {
        Self::start_with_env(admin, &[])
    }

    /// Like [`Server::start_with`], with extra environment variables.
    fn start_with_env(admin: bool, vars: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::register_clients(dir.path());
        Self::start_in(dir, admin, vars)
    }

    /// Registers the public client `spa` and the confidential client `web` in `dir`.
    fn register_clients(dir: &Path) {
        assert_eq!(
            rotoken(dir, &["clients", "add", "--id", "spa", "--public"], "")["type"],
            "public"
        );
        let added = rotoken(
            dir,
            &["clients", "add", "--id", "web", "--secret-stdin"],
            &format!("{WEB_SECRET}\n"),
        );
        assert_eq!(added["type"], "confidential");
    }

    /// Starts the server in `dir` (its files kept from an earlier run).
    fn start_in(dir: tempfile::TempDir, admin: bool, vars: &[(&str, &str)]) -> Self {
        let mut command = Served::command(dir.path(), &["--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"]);
        command.env("ROTOKEN_LOG", "debug").envs(vars.iter().copied());
        if admin {
            command.env("ROTOKEN_ADMIN_TOKEN", ADMIN);
        } else {
            command.env_remove("ROTOKEN_ADMIN_TOKEN");
        }
        let served = Served::start(command, &dir.path().join("serve.log"));
        let addr = served.listening().to_owned();
        assert!(addr.starts_with("127.0.0.1:"));
        let issuer = vars
            .iter()
            .find(|(k, _)| *k == "ROTOKEN_ISSUER")
            .map(|(_, v)| (*v).to_owned());
        assert_eq!(
            served.ready["issuer"],
            issuer.unwrap_or_else(|| format!("http://{addr}"))
        );
        let admin_addr = served.admin_listening().to_owned();
        assert!(admin_addr.starts_with("127.0.0.1:"));
        assert_ne!(admin_addr, addr);
        Self {
            served,
            addr,
            admin_addr,
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A URL on the admin listener.
    fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    fn log(&self) -> String {
        self.served.log()
    }

    /// Issues a family through the admin API.
    fn issue(&self, client: &str, scope: &str) -> String {
        let (status, v) = post_json(
            &self.admin_url("/admin/families"),
            Some(ADMIN),
            &json!({"subject": "alice", "client_id": client, "scope": scope}),
        );
        assert_eq!(status, 200, "{v}");
        v["refresh_token"].as_str().unwrap().to_owned()
    }

    /// SIGTERM, and the exit status.
    fn terminate(mut self) -> (std::process::ExitStatus, String, tempfile::TempDir) {
        let pid = self.served.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.served.child.try_wait().unwrap() {
                let log = self.log();
                return (status, log, self.dir);
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

#[test]
fn serve_collects_garbage_while_running() {
    let server = Server::start_with_env(
        true,
        &[
            ("ROTOKEN_GC_INTERVAL_SECS", "1"),
            ("ROTOKEN_REVOKED_RETENTION_SECS", "0"),
        ],
    );
    let keep = server.issue("spa", "openid offline_access");
    for _ in 0..5 {
        let (status, _) = post_json(
            &server.admin_url("/admin/families"),
            Some(ADMIN),
            &json!({"subject": "bob", "client_id": "spa", "scope": "offline_access"}),
        );
        assert_eq!(status, 200);
    }
    let (status, v) = post_json(
        &server.admin_url("/admin/revoke"),
        Some(ADMIN),
        &json!({"subject": "bob"}),
    );
    assert_eq!((status, v["revoked"].as_u64()), (200, Some(5)));
    // Revoked with no retention: gone at the next collection (once a
    // second; the deadline only guards against a hang). The engine's gc
    // logs nothing, so the sessions list says when they are gone.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, v) = post_json(
            &server.admin_url("/admin/sessions"),
            Some(ADMIN),
            &json!({"subject": "bob"}),
        );
        assert_eq!(status, 200, "{v}");
        if v["sessions"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(Instant::now() < deadline, "no gc within 120 s: {v}; {}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _) = post_form(
        &server.url("/oauth/token"),
        &format!("grant_type=refresh_token&client_id=spa&refresh_token={keep}"),
    );
    assert_eq!(status, 200, "the live family is untouched");
    let (status, log, dir) = server.terminate();
    assert!(status.success());
    assert!(log.contains("database closed"), "{log}");
    let check = rotoken(dir.path(), &["check"], "");
    assert_eq!(
        (check["ok"].as_bool(), check["families"].as_u64()),
        (Some(true), Some(1))
    );
}

#[test]
fn bad_admin_tokens_slow_the_guesser_but_never_lock_out_the_right_token() {
    let server = Server::start_with(true);
    let url = server.admin_url("/admin/sessions");
    let body = json!({"subject": "alice"});
    // Ten failures spend this address's budget (one comes back every 6 s):
    // then bad tokens get 429 with Retry-After...
    let mut statuses = Vec::new();
    for _ in 0..15 {
        statuses.push(post_json(&url, Some("wrong-admin-token-000000"), &body).0);
    }
    assert!(statuses.iter().all(|s| matches!(s, 401 | 429)), "{statuses:?}");
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses.contains(&429), "the guesser is slowed: {statuses:?}");
    let req = http::Request::post(&url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer wrong-admin-token-000000")
        .body(body.to_string())
        .unwrap();
    let resp = agent().run(req).unwrap();
    if resp.status().as_u16() == 429 {
        let wait: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=6).contains(&wait), "{wait}");
    }
    // ...and the right token, from the same address, is answered.
    assert_eq!(post_json(&url, Some(ADMIN), &body).0, 200);
    // The OAuth endpoints are not affected.
    let (status, v, _) = raw(&server.addr, &head("GET", "/healthz", None, 0), b"");
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")));
    let (status, log, _dir) = server.terminate();
    assert!(status.success());
    assert!(log.contains("bad admin token past the failure budget"));
    assert!(!log.contains(ADMIN));
}

#[test]
fn the_admin_api_and_metrics_are_not_on_the_public_port() {
    let server = Server::start_with(true);
    for path in ["/admin/sessions", "/admin/families", "/admin/revoke"] {
        let (status, _) = post_json(&server.url(path), Some(ADMIN), &json!({"subject": "alice"}));
        assert_eq!(status, 404, "{path} on the public port");
    }
    let (status, _, _) = raw(&server.addr, &head("GET", "/metrics", None, 0), b"");
    assert_eq!(status, 404);
    let (status, _, _) = raw(&server.admin_addr, &head("GET", "/metrics", None, 0), b"");
    assert_eq!(status, 200);
    // The public port serves the OAuth endpoints, metadata and health.
    for path in ["/healthz", "/.well-known/oauth-authorization-server", "/oauth/jwks"] {
        let (status, _, _) = raw(&server.addr, &head("GET", path, None, 0), b"");
        assert_eq!(status, 200, "{path}");
    }
    let (status, _, _) = server.terminate();
    assert!(status.success());
}

/// The `kid`s of the JWK Set at `addr`.
fn jwks_kids(addr: &str) -> Vec<String> {
    let (status, v, _) = raw(addr, &head("GET", "/oauth/jwks", None, 0), b"");
    assert_eq!(status, 200);
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_rotated_signing_key_keeps_old_access_tokens_verifying_after_a_restart() {
    // The issuer (the tokens' `iss`) stays the same across the restart.
    let issuer = [("ROTOKEN_ISSUER", "https://as.test")];
    let server = Server::start_with_env(true, &issuer);
    let (status, issued) = post_json(
        &server.admin_url("/admin/families"),
        Some(ADMIN),
        &json!({"subject": "alice", "client_id": "web", "scope": "openid offline_access"}),
    );
    assert_eq!(status, 200, "{issued}");
    let old_access = issued["access_token"].as_str().unwrap().to_owned();
    let old_kids = jwks_kids(&server.addr);
    assert_eq!(old_kids.len(), 1);
    let (status, _, dir) = server.terminate();
    assert!(status.success());

    let rotated = rotoken(dir.path(), &["keys", "rotate-signing"], "");
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    assert_eq!(rotated["previous"][0]["kid"], old_kids[0].as_str(), "{rotated}");
    assert!(!rotated.to_string().contains("\"key\""), "no key material printed");

    let server = Server::start_in(dir, true, &issuer);
    assert_eq!(jwks_kids(&server.addr), [new_kid.clone(), old_kids[0].clone()]);
    // The access token signed before the rotation still introspects active.
    let (status, v) = post_form(
        &server.url("/oauth/introspect"),
        &format!("client_id=web&client_secret={WEB_SECRET}&token={old_access}"),
    );
    assert_eq!((status, v["active"].as_bool()), (200, Some(true)), "{v}");
    // New tokens are signed with the new key.
    let (status, refreshed) = post_form(
        &server.url("/oauth/token"),
        &format!(
            "grant_type=refresh_token&client_id=web&client_secret={WEB_SECRET}&refresh_token={}",
            issued["refresh_token"].as_str().unwrap()
        ),
    );
    assert_eq!(status, 200, "{refreshed}");
    let header = refreshed["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], new_kid.as_str());
    let (status, _, _) = server.terminate();
    assert!(status.success());
}

#[test]
fn sighup_loads_a_rotated_signing_key_without_a_restart() {
    let server = Server::start();
    let old_kids = jwks_kids(&server.addr);
    let rotated = rotoken(server.dir.path(), &["keys", "rotate-signing"], "");
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    assert_eq!(jwks_kids(&server.addr), old_kids, "nothing changes before the signal");
    let pid = server.served.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    // The reload runs when the signal arrives: wait for it (not for a time).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.log().contains("signing keys reloaded") {
        assert!(Instant::now() < deadline, "no reload logged: {}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(jwks_kids(&server.addr), [new_kid, old_kids[0].clone()]);
    // A bad key file on the next SIGHUP keeps the keys in use.
    std::fs::write(server.dir.path().join("rotoken.signing.key"), "garbage").unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    while !server.log().contains("signing keys not reloaded") {
        assert!(Instant::now() < deadline, "no failed reload logged: {}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(jwks_kids(&server.addr).len(), 2);
    let (status, _, _) = server.terminate();
    assert!(status.success());
}

fn post_json(url: &str, bearer: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = http::Request::post(url).header("content-type", "application/json");
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let mut resp = agent().run(req.body(body.to_string()).unwrap()).unwrap();
    let status = resp.status().as_u16();
    let v = serde_json::from_slice(&resp.body_mut().read_to_vec().unwrap()).unwrap_or(Value::Null);
    (status, v)
}

fn post_form(url: &str, body: &str) -> (u16, Value) {
    let req = http::Request::post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .unwrap();
    let mut resp = agent().run(req).unwrap();
    let status = resp.status().as_u16();
    (
        status,
        serde_json::from_slice(&resp.body_mut().read_to_vec().unwrap()).unwrap_or(Value::Null),
    )
}

/// The `oauth2` crate's synchronous HTTP client, over `ureq` (plain HTTP, no TLS).
fn oauth2_http(request: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, ureq::Error> {
    let response = agent().run(request)?;
    let (parts, mut body) = response.into_parts();
    Ok(http::Response::from_parts(parts, body.read_to_vec()?))
}

#[test]
fn the_oauth2_crate_refreshes_100_times_then_a_replay_kills_the_family() {
    let server = Server::start();
    let first = server.issue("web", "openid offline_access");
    let client = BasicClient::new(ClientId::new("web".into()))
        .set_client_secret(ClientSecret::new(WEB_SECRET.into()))
        .set_auth_type(AuthType::BasicAuth)
        .set_token_uri(TokenUrl::new(server.url("/oauth/token")).unwrap());

    let mut current = RefreshToken::new(first.clone());
    let mut seen = std::collections::HashSet::new();
    for i in 0..100 {
        let response = client
            .exchange_refresh_token(&current)
            .request(&oauth2_http)
            .unwrap_or_else(|e| panic!("refresh {i} failed: {e:?}"));
        assert_eq!(*response.token_type(), oauth2::basic::BasicTokenType::Bearer);
        assert_eq!(response.expires_in(), Some(Duration::from_secs(300)));
        assert!(response.access_token().secret().starts_with("ey"), "a JWT");
        let next = response.refresh_token().expect("a new refresh token").clone();
        assert!(seen.insert(next.secret().clone()), "every refresh token is new");
        current = next;
    }

    // Replay the first token (far older than the grace window allows).
    let replay = client
        .exchange_refresh_token(&RefreshToken::new(first))
        .request(&oauth2_http);
    match replay {
        Err(RequestTokenError::ServerResponse(e)) => assert_eq!(*e.error(), BasicErrorResponseType::InvalidGrant),
        other => panic!("expected invalid_grant, got {other:?}"),
    }
    // The current token is dead too.
    match client.exchange_refresh_token(&current).request(&oauth2_http) {
        Err(RequestTokenError::ServerResponse(e)) => assert_eq!(*e.error(), BasicErrorResponseType::InvalidGrant),
        other => panic!("expected invalid_grant, got {other:?}"),
    }

    let metrics = agent()
        .get(server.admin_url("/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(metrics.contains("rotoken_rotations_total 100\n"), "{metrics}");
    assert!(metrics.contains("rotoken_reuse_detections_total 1\n"), "{metrics}");
    // The engine's own counters: the issue, 100 rotations and the replay's
    // revocation at least went through its batches.
    let operations: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rotoken_engine_operations_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no engine counters: {metrics}"));
    assert!(operations >= 102, "{metrics}");
    // Counted by the engine where it happens: the replay's reuse, and the
    // refusal of the current token of the revoked family.
    assert!(metrics.contains("rotoken_engine_reuse_detected_total 1\n"), "{metrics}");
    assert!(metrics.contains("rotoken_engine_refused_total 1\n"), "{metrics}");
    assert!(metrics.contains("rotoken_engine_revoked_total 1\n"), "{metrics}");

    let (status, log, dir) = server.terminate();
    assert!(status.success(), "{status:?}: {log}");
    assert!(log.contains("reuse detected"), "{log}");
    assert!(log.contains("database closed"), "{log}");
    for token in &seen {
        assert!(!log.contains(&token[4..]), "a refresh token reached the log");
    }
    assert!(
        !log.contains(WEB_SECRET) && !log.contains(ADMIN),
        "a secret reached the log"
    );
    // The database closed cleanly and passes its integrity check.
    let check = rotoken(dir.path(), &["check"], "");
    assert_eq!(check["ok"], true, "{check}");
}

#[test]
fn two_tabs_with_one_token_at_the_same_moment_get_the_same_successor() {
    let server = Server::start();
    let mut token = server.issue("spa", "openid offline_access");
    for _ in 0..5 {
        let barrier = Arc::new(Barrier::new(2));
        let tabs: Vec<_> = (0..2)
            .map(|_| {
                let (url, barrier) = (server.url("/oauth/token"), barrier.clone());
                let body = format!("grant_type=refresh_token&client_id=spa&refresh_token={token}");
                std::thread::spawn(move || {
                    barrier.wait();
                    post_form(&url, &body)
                })
            })
            .collect();
        let answers: Vec<(u16, Value)> = tabs.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(answers[0].0, 200, "{:?}", answers[0].1);
        assert_eq!(answers[1].0, 200, "{:?}", answers[1].1);
        assert_eq!(answers[0].1["refresh_token"], answers[1].1["refresh_token"]);
        token = answers[0].1["refresh_token"].as_str().unwrap().to_owned();
    }
    // The family is healthy: its latest token works and it has one session.
    let (status, v) = post_form(
        &server.url("/oauth/token"),
        &format!("grant_type=refresh_token&client_id=spa&refresh_token={token}"),
    );
    assert_eq!(status, 200, "{v}");
    let (status, v) = post_json(
        &server.admin_url("/admin/sessions"),
        Some(ADMIN),
        &json!({"subject": "alice"}),
    );
    assert_eq!(status, 200);
    assert_eq!(v["sessions"][0]["active"], true);
    assert_eq!(v["sessions"][0]["generation"], 6);
}

/// A malformed request: name, method, (content type, body), expected status and error code.
type Case<'a> = (&'a str, &'a str, (Option<&'a str>, Vec<u8>), u16, &'a str);

/// Sends raw bytes and returns the status and the JSON body.
fn raw(addr: &str, head: &str, body: &[u8]) -> (u16, Value, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(head.as_bytes());
    for chunk in body.chunks(64 * 1024) {
        if s.write_all(chunk).is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null), text)
}

fn head(method: &str, path: &str, content_type: Option<&str>, len: usize) -> String {
    let ct = content_type
        .map(|c| format!("Content-Type: {c}\r\n"))
        .unwrap_or_default();
    format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{ct}Content-Length: {len}\r\n\r\n")
}

#[test]
fn malformed_http_gets_rfc6749_errors_never_a_5xx() {
    let server = Server::start();
    let token = server.issue("spa", "openid offline_access");
    let (_, v) = post_form(
        &server.url("/oauth/token"),
        &format!("grant_type=refresh_token&client_id=spa&refresh_token={token}"),
    );
    let access = v["access_token"].as_str().unwrap().to_owned();
    let current = v["refresh_token"].as_str().unwrap().to_owned();
    let form = Some("application/x-www-form-urlencoded");
    let with = |body: &str| (form, body.as_bytes().to_vec());
    let cases: Vec<Case<'_>> = vec![
        ("no body", "POST", (None, vec![]), 400, "invalid_request"),
        ("1 MB body", "POST", (form, vec![b'a'; 1 << 20]), 413, "invalid_request"),
        (
            "JSON body",
            "POST",
            (Some("application/json"), br#"{"grant_type":"refresh_token"}"#.to_vec()),
            415,
            "invalid_request",
        ),
        ("GET", "GET", (None, vec![]), 405, "invalid_request"),
        (
            "missing refresh_token",
            "POST",
            with("grant_type=refresh_token&client_id=spa"),
            400,
            "invalid_request",
        ),
        (
            "duplicated grant_type",
            "POST",
            with("grant_type=refresh_token&grant_type=password&client_id=spa"),
            400,
            "invalid_request",
        ),
        (
            "unknown grant type",
            "POST",
            with("grant_type=password&client_id=spa"),
            400,
            "unsupported_grant_type",
        ),
        (
            "non-UTF-8",
            "POST",
            (
                form,
                b"grant_type=refresh_token&client_id=spa&refresh_token=\xc3\x28".to_vec(),
            ),
            400,
            "invalid_request",
        ),
        (
            "bad percent-encoding",
            "POST",
            with("grant_type=refresh_token&client_id=spa&refresh_token=%g0"),
            400,
            "invalid_request",
        ),
        (
            "10 KB token",
            "POST",
            (
                form,
                format!(
                    "grant_type=refresh_token&client_id=spa&refresh_token={}",
                    "x".repeat(10_240)
                )
                .into_bytes(),
            ),
            400,
            "invalid_grant",
        ),
        (
            "access token as refresh token",
            "POST",
            (
                form,
                format!("grant_type=refresh_token&client_id=spa&refresh_token={access}").into_bytes(),
            ),
            400,
            "invalid_grant",
        ),
        (
            "token of client spa presented by web",
            "POST",
            (
                form,
                format!("grant_type=refresh_token&client_id=web&client_secret={WEB_SECRET}&refresh_token={current}")
                    .into_bytes(),
            ),
            400,
            "invalid_grant",
        ),
    ];
    for (name, method, (ct, body), status, code) in cases {
        let (got, v, text) = raw(&server.addr, &head(method, "/oauth/token", ct, body.len()), &body);
        assert_eq!(got, status, "{name}: {text}");
        assert_eq!(v["error"], code, "{name}: {text}");
        assert!(
            text.to_ascii_lowercase().contains("cache-control: no-store"),
            "{name}: {text}"
        );
    }
    // The family survived all of it, including client B presenting A's token.
    let (status, _) = post_form(
        &server.url("/oauth/token"),
        &format!("grant_type=refresh_token&client_id=spa&refresh_token={current}"),
    );
    assert_eq!(status, 200);
    // The admin API wants its token.
    let (status, v) = post_json(
        &server.admin_url("/admin/sessions"),
        Some("wrong-admin-token-000000"),
        &json!({"subject": "alice"}),
    );
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_token")));
    let (status, _) = post_json(&server.admin_url("/admin/revoke"), None, &json!({"subject": "alice"}));
    assert_eq!(status, 401);
    let (status, v) = post_json(
        &server.admin_url("/admin/revoke"),
        Some(ADMIN),
        &json!({"subject": "alice"}),
    );
    assert_eq!((status, v["revoked"].as_u64()), (200, Some(1)));
    let (status, v, _) = raw(&server.addr, &head("GET", "/healthz", None, 0), b"");
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")));
    let (status, _, _) = raw(
        &server.addr,
        &head("GET", "/nowhere?refresh_token=rt1_secret", None, 0),
        b"",
    );
    assert_eq!(status, 404);
    let (status, log, _dir) = server.terminate();
    assert!(status.success());
    assert!(!log.contains(&token[4..]) && !log.contains(&current[4..]) && !log.contains(&access));
    assert!(!log.contains("rt1_secret"), "query strings are not logged");
}

#[test]
fn clients_are_added_listed_and_removed_without_their_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(
        rotoken(d, &["clients", "add", "--id", "spa", "--public"], "")["type"],
        "public"
    );
    let e = rotoken(d, &["clients", "add", "--id", "spa", "--public"], "");
    assert_eq!(e["error"], "client_exists");
    let e = rotoken(d, &["clients", "add", "--id", "web", "--secret-stdin"], "short\n");
    assert_eq!(e["error"], "secret_invalid");
    let added = rotoken(
        d,
        &["clients", "add", "--id", "api", "--generate-secret", "--introspect"],
        "",
    );
    let secret = added["client_secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 40, "{added}");
    let file = std::fs::read_to_string(d.join("rotoken.clients.toml")).unwrap();
    assert!(!file.contains(&secret), "only a hash is stored");
    let list = rotoken(d, &["clients", "list"], "");
    assert_eq!(list["clients"].as_array().unwrap().len(), 2);
    assert_eq!(list["clients"][1]["type"], "confidential");
    assert!(!list.to_string().contains("blake3"), "no hashes printed");
    assert_eq!(rotoken(d, &["clients", "remove", "--id", "spa"], "")["removed"], true);
    assert_eq!(
        rotoken(d, &["clients", "remove", "--id", "spa"], "")["error"],
        "client_unknown"
    );
    // Without a kind, clap refuses (usage error).
    let out = Command::new(bin())
        .args(["clients", "add", "--id", "x"])
        .current_dir(d)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_admin_api_issues_revokes_and_lists_and_is_off_without_a_token() {
    let server = Server::start();
    let admin = |path: &str, body: Value| post_json(&server.admin_url(path), Some(ADMIN), &body);
    // Without offline_access: an access token only, and no family.
    let (status, v) = admin(
        "/admin/families",
        json!({"subject": "bob", "client_id": "spa", "scope": "openid"}),
    );
    assert_eq!(status, 200, "{v}");
    assert!(v["access_token"].is_string() && v.get("refresh_token").is_none());
    let (_, v) = admin("/admin/sessions", json!({"subject": "bob"}));
    assert_eq!(v["sessions"].as_array().unwrap().len(), 0);
    let (status, v) = admin(
        "/admin/families",
        json!({"subject": "", "client_id": "spa", "scope": "offline_access"}),
    );
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_input")));
    let (status, _) = admin("/admin/families", json!({"subject": "bob", "unknown": 1}));
    assert_eq!(status, 400);
    // Revoke one family by id; the other stays.
    let first = server.issue("spa", "offline_access");
    let _second = server.issue("spa", "offline_access");
    let (_, v) = admin("/admin/sessions", json!({"subject": "alice"}));
    let family = v["sessions"][0]["family_id"].as_str().unwrap().to_owned();
    let (_, v) = admin("/admin/revoke", json!({"family_id": family}));
    assert_eq!(v["revoked"], 1);
    let (_, v) = admin("/admin/revoke", json!({"subject": "alice", "client_id": "spa"}));
    assert_eq!(v["error"], "invalid_request", "exactly one target");
    let (_, v) = admin("/admin/sessions", json!({"subject": "alice"}));
    let active: Vec<bool> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["active"].as_bool().unwrap())
        .collect();
    assert_eq!(active.iter().filter(|a| **a).count(), 1);
    let _ = first;
    drop(server);

    let server = Server::start_with(false);
    let (status, v) = post_json(
        &server.admin_url("/admin/sessions"),
        Some(ADMIN),
        &json!({"subject": "alice"}),
    );
    assert_eq!((status, v["error"].as_str()), (404, Some("admin_disabled")));
}

/// Reads from `s` until the peer closes the connection (or the read times
/// out); returns what was read and whether the peer closed it.
fn read_until_closed(s: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

/// Reads one response with a `Content-Length` from a kept-alive connection.
fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap();
            if body.len() >= len {
                return text;
            }
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the response was complete: {text}");
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn a_stalled_request_head_is_closed_after_the_header_timeout_while_others_are_served() {
    let server = Server::start_with_env(true, &[("ROTOKEN_HEADER_READ_TIMEOUT_SECS", "1")]);
    let start = Instant::now();
    // Half a request line, then nothing; and a connection that sends nothing at all.
    let mut stalled = TcpStream::connect(&server.addr).unwrap();
    stalled.write_all(b"POST /oauth/token HTT").unwrap();
    let mut silent = TcpStream::connect(&server.addr).unwrap();
    for s in [&stalled, &silent] {
        // A hang guard only.
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    }
    let peers = [stalled.local_addr().unwrap(), silent.local_addr().unwrap()];
    // Meanwhile a normal request on another connection is answered.
    let (status, v, _) = raw(&server.addr, &head("GET", "/healthz", None, 0), b"");
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")));

    for s in [&mut stalled, &mut silent] {
        let (bytes, closed) = read_until_closed(s);
        let elapsed = start.elapsed();
        assert!(closed, "the server did not close a stalled connection");
        assert!(bytes.is_empty(), "a timed-out head gets no answer: {bytes:?}");
        // Not before the timeout (counted from the accept, after `start`);
        // how much later depends on the machine's load, so the server's log
        // says which limit closed it (below), not the clock.
        assert!(elapsed >= Duration::from_millis(900), "closed too early: {elapsed:?}");
    }
    // Still serving, and the refresh path works.
    let token = server.issue("spa", "offline_access");
    let (status, _) = post_form(
        &server.url("/oauth/token"),
        &format!("grant_type=refresh_token&client_id=spa&refresh_token={token}"),
    );
    assert_eq!(status, 200);
    let (status, log, _dir) = server.terminate();
    assert!(status.success(), "{status:?}: {log}");
    for peer in peers {
        assert!(
            closed_by_header_timeout(&log, peer),
            "{peer} was not closed by the header timeout: {log}"
        );
    }
    assert!(log.contains("database closed"), "{log}");
}

/// Whether the server logged that it closed the connection from `peer`
/// because no complete request head arrived in time.
fn closed_by_header_timeout(log: &str, peer: std::net::SocketAddr) -> bool {
    log.lines()
        .any(|l| l.contains("no complete request head within the header read timeout") && l.contains(&peer.to_string()))
}

#[test]
fn idle_keep_alive_connections_are_closed_and_the_connection_cap_queues_the_rest() {
    let server = Server::start_with_env(
        true,
        &[
            ("ROTOKEN_HEADER_READ_TIMEOUT_SECS", "4"),
            ("ROTOKEN_KEEP_ALIVE_SECS", "1"),
            ("ROTOKEN_MAX_CONNECTIONS", "2"),
        ],
    );
    // Keep-alive: two requests on one connection, then it idles and is
    // closed after the keep-alive limit, well before the header timeout.
    let mut kept = TcpStream::connect(&server.addr).unwrap();
    // A hang guard only.
    kept.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut last_request = Instant::now();
    for _ in 0..2 {
        last_request = Instant::now();
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let response = read_response(&mut kept);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            !response.to_ascii_lowercase().contains("connection: close"),
            "{response}"
        );
    }
    let (bytes, closed) = read_until_closed(&mut kept);
    let idle = last_request.elapsed();
    assert!(closed && bytes.is_empty(), "{bytes:?}");
    // Not before the keep-alive limit (counted from the last response, sent
    // after `last_request`). Which limit closed it is read from the log at
    // the end (the header timeout logs the peer), not from the clock.
    assert!(
        idle >= Duration::from_millis(900),
        "an idle connection was closed after {idle:?}, before the 1 s keep-alive limit"
    );
    let kept_peer = kept.local_addr().unwrap();

    // The cap: two silent connections take both slots; a third connection
    // waits (unaccepted: the listen queue is first in, first out, so the
    // silent ones are accepted first however the threads are scheduled)
    // until the 4 s header timeout frees one, then is served.
    let start = Instant::now();
    let silent: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&server.addr).unwrap()).collect();
    let (status, v, _) = raw(&server.addr, &head("GET", "/healthz", None, 0), b"");
    let waited = start.elapsed();
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")));
    assert!(
        waited >= Duration::from_millis(3500),
        "a connection beyond the cap was served after {waited:?}, before a slot was free"
    );
    drop(silent);

    // Graceful shutdown with a connection stalled mid-head: the server still
    // stops (the header timeout ends that connection) and closes the database.
    let mut stalled = TcpStream::connect(&server.addr).unwrap();
    stalled.write_all(b"GET /hea").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (status, log, dir) = server.terminate();
    assert!(status.success(), "{status:?}: {log}");
    assert!(log.contains("database closed"), "{log}");
    assert!(log.contains("connection limit reached"), "{log}");
    assert!(
        !closed_by_header_timeout(&log, kept_peer),
        "the idle connection was closed by the 4 s header timeout, not the keep-alive limit: {log}"
    );
    let check = rotoken(dir.path(), &["check"], "");
    assert_eq!(check["ok"], true, "{check}");
}

#[test]
fn connection_limits_out_of_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("ROTOKEN_HEADER_READ_TIMEOUT_SECS", "0"),
        ("ROTOKEN_MAX_CONNECTIONS", "0"),
        ("ROTOKEN_KEEP_ALIVE_SECS", "11"),
    ] {
        let out = Command::new(bin())
            .args(["serve", "--bind", "127.0.0.1:0", "--admin-bind", "off"])
            .current_dir(dir.path())
            .env(var, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{var}={value} was accepted");
        let last = String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned();
        let e: Value = serde_json::from_str(&last).unwrap_or_else(|_| panic!("{var}: {last}"));
        assert_eq!(e["error"], "config_invalid", "{var}: {e}");
    }
}

#[test]
fn a_failed_bind_creates_no_keys_and_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    for args in [
        vec![
            "serve".to_owned(),
            "--bind".into(),
            format!("127.0.0.1:{port}"),
            "--admin-bind".into(),
            "off".into(),
        ],
        vec![
            "serve".to_owned(),
            "--bind".into(),
            "127.0.0.1:0".into(),
            "--admin-bind".into(),
            format!("127.0.0.1:{port}"),
        ],
    ] {
        let out = Command::new(bin())
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let last = String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned();
        let e: Value = serde_json::from_str(&last).unwrap_or_else(|_| panic!("{last}"));
        assert_eq!(e["error"], "bind_failed", "{e}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "files created before the bind: {left:?}");
    }
}

#[test]
fn localhost_binds_and_names_the_issuer_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(
        Served::command(dir.path(), &["--bind", "localhost:0", "--admin-bind", "off"]),
        &dir.path().join("serve.log"),
    );
    let ready = served.ready.clone();
    drop(served);
    let port = ready["listening"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(ready["issuer"], format!("http://localhost:{port}"));
    assert!(ready.get("admin_listening").is_none());
    // The database file is private (issue 12, item 5).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("rotoken.redb"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

/// Events for a SIEM (issue 13 item 7): `serve --events-to` appends every
/// event to a file of mode 0600 as JSON lines, and a restart resumes after
/// the last line written: no event twice, none skipped.
#[test]
fn serve_writes_a_replay_to_its_private_events_file_and_resumes_after_a_restart() {
    let vars = [
        ("ROTOKEN_EVENTS_TO", "events.jsonl"),
        ("ROTOKEN_EVENTS_POLL_MS", "50"),
        ("ROTOKEN_GRACE_SECS", "0"),
    ];
    let server = Server::start_with_env(true, &vars);
    let file = server.dir.path().join("events.jsonl");
    let refresh = |server: &Server, token: &str| {
        post_form(
            &server.url("/oauth/token"),
            &format!("grant_type=refresh_token&client_id=spa&refresh_token={token}"),
        )
    };
    let first = server.issue("spa", "openid offline_access");
    let (status, v) = refresh(&server, &first);
    assert_eq!(status, 200, "{v}");
    // The replay: the retired token again, outside the (zero) grace window.
    let (status, v) = refresh(&server, &first);
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
    let events = wait_for_lines(&file, 1);
    assert_eq!(events[0]["kind"], "reuse_detected", "{events:?}");
    assert_eq!(
        (events[0]["presented"].as_u64(), events[0]["current"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(events[0]["at"].as_str().unwrap().ends_with('Z'));
    assert!(
        !std::fs::read_to_string(&file).unwrap().contains(&first),
        "no token in the file"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    // Restart: the event already written is not written again; a new one follows it.
    let (status, _, dir) = server.terminate();
    assert!(status.success());
    let server = Server::start_in(dir, true, &vars);
    let second = server.issue("spa", "openid offline_access");
    let (status, v) = post_json(
        &server.admin_url("/admin/revoke"),
        Some(ADMIN),
        &json!({"token": second}),
    );
    assert_eq!((status, v["revoked"].as_u64()), (200, Some(1)), "{v}");
    let events = wait_for_lines(&file, 2);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        (events[1]["kind"].as_str(), events[1]["reason"].as_str()),
        (Some("revoked"), Some("token"))
    );
    common::strictly_increasing(&events);
}

/// Waits until `file` holds at least `n` lines; returns them as JSON.
fn wait_for_lines(file: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text.lines().count() >= n {
            // Let a late duplicate show itself before counting.
            std::thread::sleep(Duration::from_millis(300));
            let text = std::fs::read_to_string(file).unwrap();
            return text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} lines in {}: {text:?}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `rotoken events --follow --admin-url`: a redb file is locked by the
/// server, so a follower reads through the admin API; it prints events
/// committed after it started, and `--after SEQ` resumes without repeats.
#[test]
fn events_follow_a_running_server_and_resume_after_a_sequence_number() {
    let server = Server::start_with_env(true, &[("ROTOKEN_GRACE_SECS", "0")]);
    let admin_base = format!("http://{}", server.admin_addr);
    let d = server.dir.path();
    // The file is the server's: opening it directly is refused, with the way round.
    let out = Command::new(bin()).args(["events"]).current_dir(d).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("locked") && err.contains("--admin-url"), "{err}");

    let revoke = |body: Value| {
        let (status, v) = post_json(&server.admin_url("/admin/revoke"), Some(ADMIN), &body);
        assert_eq!((status, v["revoked"].as_u64()), (200, Some(1)), "{v}");
    };
    let before = server.issue("spa", "openid offline_access");
    revoke(json!({"token": before}));
    let mut follower = common::Follower::spawn(d, &["--admin-url", &admin_base], &[("ROTOKEN_ADMIN_TOKEN", ADMIN)]);
    let old = follower.wait_for(|e| e["kind"] == "revoked");
    // Committed after the follower started.
    let token = server.issue("spa", "openid offline_access");
    let url = server.url("/oauth/token");
    let body = format!("grant_type=refresh_token&client_id=spa&refresh_token={token}");
    assert_eq!(post_form(&url, &body).0, 200);
    assert_eq!(post_form(&url, &body).0, 400);
    let reuse = follower.wait_for(|e| e["kind"] == "reuse_detected");
    assert!(reuse["seq"].as_u64() > old["seq"].as_u64());
    drop(follower);

    // Resuming after the first event prints the rest, once each, and exits.
    let after = old["seq"].as_u64().unwrap().to_string();
    let rest = common::events(
        d,
        &["--admin-url", &admin_base, "--after", &after],
        &[("ROTOKEN_ADMIN_TOKEN", ADMIN)],
    );
    assert_eq!(rest, vec![reuse.clone()]);
    // A wrong admin token is refused, not retried for ever.
    let out = Command::new(bin())
        .args(["events", "--follow", "--admin-url", &admin_base])
        .env("ROTOKEN_ADMIN_TOKEN", "wrong-admin-token-0123456789")
        .current_dir(d)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin_refused"));

    // Once the server has stopped, the file itself gives the same events.
    let (status, _, dir) = server.terminate();
    assert!(status.success());
    let all = common::events(dir.path(), &[], &[]);
    assert_eq!(all, vec![old, reuse]);
}

#[test]
fn backup_through_the_admin_api_while_serving_is_a_consistent_private_snapshot() {
    let server = Server::start();
    let d = server.dir.path();
    let admin_base = format!("http://{}", server.admin_addr);
    let first = server.issue("spa", "openid offline_access");
    // The file is the server's: a direct backup is refused, with the way round.
    let out = Command::new(bin())
        .args(["backup", "direct.redb"])
        .current_dir(d)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("locked") && err.contains("--admin-url"), "{err}");

    // Rotations go on while the snapshot is taken.
    let url = server.url("/oauth/token");
    let rotating = std::thread::spawn(move || {
        let mut token = first;
        for _ in 0..50 {
            let (status, v) = post_form(
                &url,
                &format!("grant_type=refresh_token&client_id=spa&refresh_token={token}"),
            );
            assert_eq!(status, 200, "{v}");
            token = v["refresh_token"].as_str().unwrap().to_owned();
        }
        token
    });
    let backup = |name: &str| {
        Command::new(bin())
            .args(["backup", name, "--admin-url", &admin_base])
            .env("ROTOKEN_ADMIN_TOKEN", ADMIN)
            .current_dir(d)
            .output()
            .unwrap()
    };
    let out = backup("snapshot.redb");
    assert!(out.status.success(), "{out:?}");
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["families"], 1, "{answer}");
    let snapshot = d.join("snapshot.redb");
    assert_eq!(answer["backup"], snapshot.to_str().unwrap());
    let last = rotating.join().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&snapshot).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // Never over an existing file; only an absolute path; only with the admin token.
    let out = backup("snapshot.redb");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("backup_exists"));
    let (status, v) = post_json(
        &server.admin_url("/admin/backup"),
        Some(ADMIN),
        &json!({"path": "relative.redb"}),
    );
    assert_eq!(status, 400, "{v}");
    let other = d.join("other.redb");
    let (status, _) = post_json(&server.admin_url("/admin/backup"), None, &json!({"path": other}));
    assert_eq!(status, 401);
    assert!(!other.exists());
    // Only into the backup directory (by default the database's): an admin
    // token is not a way to write files anywhere the server may write.
    let elsewhere = tempfile::tempdir().unwrap();
    for path in [
        elsewhere.path().join("escape.redb"),
        d.join("..").join(elsewhere.path().file_name().unwrap()).join("up.redb"),
    ] {
        let (status, v) = post_json(&server.admin_url("/admin/backup"), Some(ADMIN), &json!({"path": path}));
        assert_eq!(
            (status, v["error"].as_str()),
            (400, Some("backup_path_refused")),
            "{path:?}: {v}"
        );
    }
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).unwrap().count(),
        0,
        "nothing written outside"
    );

    // Restoring over the file the server holds is refused, even with --force.
    let out = Command::new(bin())
        .args(["restore", "snapshot.redb", "--force"])
        .current_dir(d)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"locked\""), "{out:?}");
    // The snapshot is a database like any other, with the server's keys, and sound.
    let check = rotoken(d, &["--db", "snapshot.redb", "check"], "");
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["families"], 1, "{check}");
    let (status, _, dir) = server.terminate();
    assert!(status.success());
    // The backup took nothing from the server: its last token is live.
    let live = rotoken(dir.path(), &["introspect", "-"], &last);
    assert_eq!(live["active"], true, "{live}");
}
