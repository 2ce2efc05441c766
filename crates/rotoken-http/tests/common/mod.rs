//! Shared fixtures: an engine on a temporary file with a manual clock, a
//! few clients, request builders and a client-side DPoP key.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{Request, Response};
use rotoken::{Engine, Keyring, ManualClock, Options, Scope};
use rotoken_http::{
    AccessTokenMinter, Config, IssueRequest, JwtMinter, MemoryClients, OAuthServer, RegisteredClient, SecretHash,
    SigningKey, jwk_thumbprint,
};
use serde_json::Value;

mod dpop_key;
#[allow(unused_imports)] // not every test signs DPoP proofs
pub use dpop_key::DpopKey;

pub const ISSUER: &str = "https://as.example";
pub const TOKEN_URL: &str = "https://as.example/oauth/token";
pub const WEB_SECRET: &str = "web-secret-0123456789";
pub const RS_SECRET: &str = "rs-secret-0123456789";
pub const OTHER_SECRET: &str = "other-secret-0123456789";
/// The audience of the `api-spa` client's access tokens.
pub const API_AUDIENCE: &str = "https://api.example";
/// 2023-11-14T22:13:20Z
pub const START_MS: i64 = 1_700_000_000_000;

pub struct Fixture {
    pub server: Arc<OAuthServer>,
    pub clock: ManualClock,
    pub dir: tempfile::TempDir,
}

pub fn fixture() -> Fixture {
    fixture_with(|_| {})
}

pub fn fixture_with(tweak: impl FnOnce(&mut Config)) -> Fixture {
    fixture_with_minter(default_minter(), tweak)
}

/// The fixtures' minter: no clock of its own, the server passes its time.
pub fn default_minter() -> JwtMinter {
    JwtMinter::new(
        SigningKey::ed25519_from_seed([42; 32]),
        ISSUER,
        Duration::from_secs(300),
    )
}

/// The fixture with another minter. The manual clock is wired in two
/// places, the engine's options and the server's config; the minter takes
/// the server's time from each request.
pub fn fixture_with_minter(minter: impl AccessTokenMinter + 'static, tweak: impl FnOnce(&mut Config)) -> Fixture {
    fixture_over(
        |path, options| Engine::open(path, Keyring::generate().unwrap(), options).unwrap(),
        minter,
        tweak,
    )
}

/// The fixture over an engine of the caller's making (a store that fails
/// on demand, say): `open` gets the database path and the options with the
/// fixture's manual clock.
pub fn fixture_over(
    open: impl FnOnce(&std::path::Path, Options) -> Engine,
    minter: impl AccessTokenMinter + 'static,
    tweak: impl FnOnce(&mut Config),
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at_unix_millis(START_MS);
    let options = Options {
        clock: Arc::new(clock.clone()),
        ..Options::default()
    };
    let engine = Arc::new(open(&dir.path().join("t.redb"), options));
    let clients = MemoryClients::new()
        .with(RegisteredClient::public("spa"))
        .with(RegisteredClient::confidential(
            "web",
            SecretHash::new(WEB_SECRET.as_bytes()).unwrap(),
        ))
        .with(RegisteredClient::confidential(
            "other",
            SecretHash::new(OTHER_SECRET.as_bytes()).unwrap(),
        ))
        .with(RegisteredClient::confidential("rs", SecretHash::new(RS_SECRET.as_bytes()).unwrap()).with_introspection())
        .with(RegisteredClient::public("no-refresh").without_refresh())
        .with(RegisteredClient::public("api-spa").with_audience(API_AUDIENCE));
    let mut config = Config::new(ISSUER);
    tweak(&mut config);
    let server = Arc::new(OAuthServer::new(engine, Arc::new(clients), Arc::new(minter), config));
    Fixture { server, clock, dir }
}

impl Fixture {
    /// Issues a family for `client` with `scope` and returns its refresh token.
    pub fn issue(&self, client: &str, scope: &str) -> String {
        self.issue_bound(client, scope, None)
    }

    pub fn issue_bound(&self, client: &str, scope: &str, jkt: Option<String>) -> String {
        let mut req = IssueRequest::new("alice", client, Scope::parse(scope).unwrap());
        req.confirmation = jkt;
        self.server.issue(&req).unwrap().refresh_token.unwrap()
    }

    /// Refreshes as the public client `spa`.
    pub fn refresh_spa(&self, token: &str) -> Response<Bytes> {
        self.server.handle(&post(
            "/oauth/token",
            &format!("grant_type=refresh_token&client_id=spa&refresh_token={token}"),
        ))
    }
}

/// A form POST.
pub fn post(path: &str, body: &str) -> Request<Bytes> {
    Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Bytes::from(body.to_owned()))
        .unwrap()
}

/// Adds `Authorization: Basic`.
pub fn basic(mut req: Request<Bytes>, id: &str, secret: &str) -> Request<Bytes> {
    let v = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
    req.headers_mut().insert("authorization", v.parse().unwrap());
    req
}

/// Adds a `DPoP` header.
pub fn with_dpop(mut req: Request<Bytes>, proof: &str) -> Request<Bytes> {
    req.headers_mut().append("dpop", proof.parse().unwrap());
    req
}

pub fn json(r: &Response<Bytes>) -> Value {
    serde_json::from_slice(r.body()).unwrap_or(Value::Null)
}

/// Asserts an RFC 6749 §5.2 error answer and returns its code.
pub fn assert_error(r: &Response<Bytes>, status: u16, code: &str) {
    assert_eq!(
        r.status().as_u16(),
        status,
        "body: {}",
        String::from_utf8_lossy(r.body())
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["content-type"], "application/json");
    let v = json(r);
    assert_eq!(v["error"], code, "body: {v}");
    assert!(v["error_description"].is_string());
}

/// The claims of a JWT, unverified.
pub fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Captures everything logged on this thread while `f` runs.
pub fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    (out, text)
}
