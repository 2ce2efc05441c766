//! Fuzz target `http`: the HTTP adapter's request handling
//! (`rotoken_http::OAuthServer::handle`) on arbitrary requests.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use rotoken::{Engine, ManualClock, Scope};
use rotoken_http::{
    Config, IssueRequest, JwtMinter, MemoryClients, OAuthServer, RegisteredClient, Route, SecretHash, SigningKey,
};

use crate::backend::SharedMemory;
use crate::fixture::{self, T0};

const ISSUER: &str = "https://as.example";
/// The confidential client's secret.
pub const WEB_SECRET: &str = "web-secret-0123456789";
const RS_SECRET: &str = "rs-secret-0123456789";

/// Placeholders a request body or header may hold, replaced by live values.
pub const PLACEHOLDERS: [(&str, &str); 4] = [
    ("$R", "the public client's current refresh token"),
    ("$P", "its predecessor (a grace retry, or reuse)"),
    ("$W", "the confidential client's refresh token"),
    ("$X", "a token of a revoked family"),
];

const METHODS: [&str; 8] = ["POST", "GET", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "post"];
const PATHS: [&str; 12] = [
    "/oauth/token",
    "/oauth/revoke",
    "/oauth/introspect",
    "/.well-known/oauth-authorization-server",
    "/oauth/jwks",
    "/",
    "/oauth/token/",
    "/oauth/token?grant_type=refresh_token",
    "//oauth/token",
    "/OAUTH/TOKEN",
    "/oauth/%74oken",
    "https://as.example/oauth/token",
];
const CONTENT_TYPES: [Option<&str>; 9] = [
    None,
    Some("application/x-www-form-urlencoded"),
    Some("application/x-www-form-urlencoded; charset=UTF-8"),
    Some("APPLICATION/X-WWW-FORM-URLENCODED"),
    Some("application/json"),
    Some("multipart/form-data; boundary=x"),
    Some("text/plain"),
    Some("application/x-www-form-urlencoded, text/plain"),
    Some(""),
];

/// The parts of the server made once per process (hashing client secrets
/// and building keys is slow): the client registry and the token minter.
struct Shared {
    clients: Arc<MemoryClients>,
    minter: Arc<JwtMinter>,
    clock: ManualClock,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let clock = ManualClock::at_unix_millis(T0);
        let clients = MemoryClients::new()
            .with(RegisteredClient::public("spa"))
            .with(RegisteredClient::confidential(
                "web",
                SecretHash::new(WEB_SECRET.as_bytes()).expect("secret"),
            ))
            .with(
                RegisteredClient::confidential("rs", SecretHash::new(RS_SECRET.as_bytes()).expect("secret"))
                    .with_introspection(),
            )
            .with(RegisteredClient::public("no-refresh").without_refresh());
        let minter = JwtMinter::new(
            SigningKey::ed25519_from_seed([42; 32]),
            ISSUER,
            Duration::from_secs(300),
        )
        .with_clock(Arc::new(clock.clone()));
        Shared {
            clients: Arc::new(clients),
            minter: Arc::new(minter),
            clock,
        }
    })
}

/// A fresh server over a fresh in-memory engine, with live tokens.
struct Fixture {
    server: OAuthServer,
    engine: Arc<Engine>,
    /// Values of [`PLACEHOLDERS`], in order.
    values: [String; 4],
}

fn fixture() -> Fixture {
    let s = shared();
    let engine = Arc::new(
        Engine::open_with_backend(SharedMemory::new(), fixture::keyring(), fixture::options(&s.clock)).expect("engine"),
    );
    // The endpoints read the engine's clock.
    let server = OAuthServer::new(
        Arc::clone(&engine),
        s.clients.clone(),
        s.minter.clone(),
        Config::new(ISSUER),
    );
    let scope = Scope::parse("openid profile offline_access").expect("scope");
    let issue = |client: &str| {
        server
            .issue(&IssueRequest::new("alice", client, scope.clone()))
            .expect("issue")
            .refresh_token
            .expect("offline_access")
    };
    let first = issue("spa");
    let current = engine
        .rotate(&first, &rotoken::RotateRequest::new("spa"))
        .expect("rotate")
        .refresh_token
        .expose()
        .to_owned();
    let web = issue("web");
    let revoked = issue("spa");
    engine.revoke(rotoken::RevokeTarget::Token(&revoked)).expect("revoke");
    Fixture {
        server,
        engine,
        values: [current, first, web, revoked],
    }
}

fn substitute(bytes: &[u8], values: &[String; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let mut i = 0;
    while i < bytes.len() {
        let hit = PLACEHOLDERS
            .iter()
            .zip(values)
            .find(|((p, _), _)| bytes[i..].starts_with(p.as_bytes()));
        match hit {
            Some(((p, _), v)) => {
                out.extend_from_slice(v.as_bytes());
                i += p.len();
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// The first line of `rest` (for a header value the fuzzer controls), and what follows.
fn line(rest: &[u8]) -> (&[u8], &[u8]) {
    match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[]),
    }
}

const ERROR_CODES: [&str; 8] = [
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "unsupported_token_type",
    "invalid_dpop_proof",
];

/// Sends one request built from `data` to a fresh server and checks the answer.
///
/// Layout: five selector bytes (method, path, content type, authorization,
/// extra headers), then the body. Some selectors take a header value from
/// the body's first line. `$R`, `$P`, `$W` and `$X` in the body or in a
/// header are replaced by live tokens ([`PLACEHOLDERS`]), so the fuzzer
/// reaches the refresh, grace, reuse and revocation paths.
///
/// Checked for every request (reliability checklist row 14): no panic;
/// never a 5xx; the OAuth endpoints always answer with
/// `Cache-Control: no-store`; every error is RFC 6749 §5.2 JSON with a
/// known `error` code and a description in the allowed characters; no
/// error ever echoes a token or a client secret; a successful refresh
/// returns a Bearer access token and a well-formed refresh token; and the
/// engine's integrity check passes afterwards.
///
/// # Panics
///
/// When a property fails.
pub fn http(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<5>() else {
        return;
    };
    let f = fixture();
    let rest = substitute(rest, &f.values);
    let mut b = Request::builder()
        .method(METHODS[usize::from(head[0]) % METHODS.len()])
        .uri(PATHS[usize::from(head[1]) % PATHS.len()]);
    if let Some(ct) = CONTENT_TYPES[usize::from(head[2]) % CONTENT_TYPES.len()] {
        b = b.header("content-type", ct);
    }
    let basic = |user: &str, pass: &str| format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")));
    let mut body: &[u8] = &rest;
    let auth: Option<Vec<u8>> = match head[3] % 8 {
        0 => None,
        1 => Some(basic("web", WEB_SECRET).into_bytes()),
        2 => Some(basic("web", "wrong-secret-0123456789").into_bytes()),
        3 => Some(basic("rs", RS_SECRET).into_bytes()),
        4 => Some(basic("spa", "").into_bytes()),
        5 => Some(b"Basic !!not base64!!".to_vec()),
        _ => {
            let (l, r) = line(body);
            body = r;
            Some(l.to_vec())
        }
    };
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    match head[4] % 6 {
        0 => {}
        1 => {
            let (l, r) = line(body);
            body = r;
            b = b.header("dpop", l);
        }
        2 => b = b.header("content-type", "application/x-www-form-urlencoded"),
        3 => b = b.header("content-length", "999999999"),
        4 => {
            let (l, r) = line(body);
            body = r;
            b = b.header("x-forwarded-for", l);
        }
        _ => b = b.header("dpop", "a").header("dpop", "b"),
    }
    let Ok(request) = b.body(Bytes::copy_from_slice(body)) else {
        return; // not a request http can represent (a bad header value)
    };
    let route = f.server.route(request.uri().path());
    let response = f.server.handle(&request);
    check_response(&f, route, &response);
    let report = f.engine.check().expect("check");
    assert!(
        report.is_ok(),
        "the engine is inconsistent after a request: {:?}",
        report.problems
    );
}

fn check_response(f: &Fixture, route: Option<Route>, response: &Response<Bytes>) {
    let status = response.status();
    assert!(!status.is_server_error(), "a {status} answer: {:?}", response.body());
    let oauth_endpoint = matches!(route, Some(Route::Token | Route::Revocation | Route::Introspection));
    if oauth_endpoint {
        assert_eq!(
            response.headers().get("cache-control").map(|v| v.as_bytes()),
            Some(&b"no-store"[..]),
            "an OAuth endpoint answered {status} without Cache-Control: no-store"
        );
    }
    let body = response.body();
    let text = String::from_utf8_lossy(body);
    if status.is_client_error() {
        let json: serde_json::Value =
            serde_json::from_slice(body).unwrap_or_else(|_| panic!("a {status} answer is not JSON: {text}"));
        let code = json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code: {text}"));
        assert!(ERROR_CODES.contains(&code), "unknown error code {code}");
        if let Some(d) = json.get("error_description") {
            let d = d
                .as_str()
                .unwrap_or_else(|| panic!("error_description is not a string: {text}"));
            assert!(
                d.bytes().all(|c| matches!(c, 0x20..=0x21 | 0x23..=0x5b | 0x5d..=0x7e)),
                "error_description outside RFC 6749 §5.2's characters: {d:?}"
            );
        }
        for secret in f.values.iter().map(String::as_str).chain([WEB_SECRET, RS_SECRET]) {
            assert!(!text.contains(secret), "an error answer echoes a token or secret");
        }
        if status == StatusCode::UNAUTHORIZED && code == "invalid_client" {
            assert!(response.headers().contains_key("www-authenticate") || !text.is_empty());
        }
    }
    if route == Some(Route::Token) && status == StatusCode::OK {
        let json: serde_json::Value = serde_json::from_slice(body).expect("token response JSON");
        assert_eq!(json["token_type"], "Bearer", "{text}");
        assert!(json["access_token"].is_string(), "{text}");
        let rt = json["refresh_token"].as_str().expect("a refresh token");
        assert!(
            rotoken::token::parse(rt.as_bytes()).is_ok(),
            "a malformed refresh token was handed out"
        );
        assert_ne!(rt, f.values[1], "the predecessor was handed out again");
        assert_ne!(rt, f.values[3], "a revoked family's token was handed out");
    }
}
