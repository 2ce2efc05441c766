//! What a client sees when the store fails or the request's deadline
//! passes (issue 18): every endpoint answers 503 with `Retry-After`,
//! `Cache-Control: no-store` and an RFC 6749 JSON body
//! `temporarily_unavailable`, never a bare 500 and never `invalid_grant`;
//! nothing was decided against the client, so the same token works after.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Fixture, RS_SECRET, basic, default_minter, fixture, fixture_over, json, post};
use http::{Request, Response};
use rotoken::store::{Commit, ReadTxn, SchemaStatus, Store, WriteTxn};
use rotoken::{Engine, Keyring, RedbStore, StoreError};
use rotoken_http::{AdminApi, Config, RequestDeadline, SecretHash};

const ADMIN_TOKEN: &str = "admin-token-0123456789-abcdef";

/// A redb store that fails every transaction while `down` is set: a disk
/// or a database that stopped answering.
struct Flaky {
    inner: RedbStore,
    down: Arc<AtomicBool>,
}

impl Flaky {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::storage(std::io::Error::other(
                "injected: the store is down",
            )));
        }
        Ok(())
    }
}

impl Store for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }
    fn begin_read(&self) -> Result<Box<dyn ReadTxn + '_>, StoreError> {
        self.check()?;
        self.inner.begin_read()
    }
    fn begin_write(&self, commit: Commit) -> Result<Box<dyn WriteTxn + '_>, StoreError> {
        self.check()?;
        self.inner.begin_write(commit)
    }
    fn schema(&self) -> Option<&SchemaStatus> {
        self.inner.schema()
    }
}

/// The usual fixture over a store that can be taken down.
fn flaky_fixture(tweak: impl FnOnce(&mut Config)) -> (Fixture, Arc<AtomicBool>) {
    let down = Arc::new(AtomicBool::new(false));
    let switch = Arc::clone(&down);
    let f = fixture_over(
        move |path, options| {
            let inner = RedbStore::open(path, None).unwrap();
            Engine::with_store(Flaky { inner, down: switch }, Keyring::generate().unwrap(), options).unwrap()
        },
        default_minter(),
        tweak,
    );
    (f, down)
}

/// 503, `Retry-After: secs`, no-store, JSON `temporarily_unavailable`.
fn assert_unavailable(r: &Response<Bytes>, secs: &str) {
    assert_eq!(r.status().as_u16(), 503, "body: {}", String::from_utf8_lossy(r.body()));
    assert_eq!(r.headers()["retry-after"], secs);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["content-type"], "application/json");
    let v = json(r);
    assert_eq!(v["error"], "temporarily_unavailable", "{v}");
    assert!(v["error_description"].is_string(), "{v}");
}

fn refresh_request(token: &str) -> Request<Bytes> {
    post(
        "/oauth/token",
        &format!("grant_type=refresh_token&client_id=spa&refresh_token={token}"),
    )
}

#[test]
fn a_failing_store_is_503_with_retry_after_on_every_endpoint_and_the_token_still_works() {
    let (f, down) = flaky_fixture(|_| {});
    let token = f.issue("spa", "openid offline_access");
    let admin = AdminApi::new(
        Arc::clone(&f.server),
        Some(SecretHash::new(ADMIN_TOKEN.as_bytes()).unwrap()),
    );
    down.store(true, Ordering::SeqCst);

    assert_unavailable(&f.refresh_spa(&token), "1");
    let revoke = post("/oauth/revoke", &format!("client_id=spa&token={token}"));
    assert_unavailable(&f.server.handle(&revoke), "1");
    let introspect = basic(post("/oauth/introspect", &format!("token={token}")), "rs", RS_SECRET);
    assert_unavailable(&f.server.handle(&introspect), "1");
    let mut admin_revoke = Request::post("/admin/revoke")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Bytes::from(r#"{"subject":"alice"}"#))
        .unwrap();
    assert_unavailable(&admin.handle(&admin_revoke), "1");
    *admin_revoke.uri_mut() = "/admin/sessions".parse().unwrap();
    assert_unavailable(&admin.handle(&admin_revoke), "1");

    let metrics = f.server.metrics().render();
    assert!(
        metrics.contains("rotoken_http_requests_total{endpoint=\"token\",outcome=\"temporarily_unavailable\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rotoken_temporarily_unavailable_total{cause=\"storage_error\"} 5\n"),
        "{metrics}"
    );

    // Nothing was decided against the client: the same token rotates.
    down.store(false, Ordering::SeqCst);
    let r = f.refresh_spa(&token);
    assert_eq!(r.status(), 200, "{}", json(&r));
    let next = json(&r)["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(f.refresh_spa(&next).status(), 200);
}

#[test]
fn retry_after_is_configurable() {
    let (f, down) = flaky_fixture(|c| c.retry_after = Duration::from_secs(7));
    let token = f.issue("spa", "openid offline_access");
    down.store(true, Ordering::SeqCst);
    assert_unavailable(&f.refresh_spa(&token), "7");
}

#[test]
fn a_corrupt_store_stays_a_500_server_error() {
    let e = rotoken_http::OAuthError::from(StoreError::Corrupt {
        table: "families",
        reason: "bad MAC".into(),
    });
    let r = e.into_response();
    assert_eq!(r.status(), 500);
    assert!(!r.headers().contains_key("retry-after"));
    assert_eq!(json(&r)["error"], "server_error");
}

/// A request whose deadline passed before the engine applied it is a 503
/// and applies nothing: after the grace window the same token still
/// rotates (had it been applied, presenting it again would be reuse).
#[test]
fn a_passed_deadline_is_503_and_nothing_was_applied() {
    let f = fixture();
    let token = f.issue("spa", "openid offline_access");
    let mut request = refresh_request(&token);
    let past = Instant::now()
        .checked_sub(Duration::from_millis(1))
        .unwrap_or_else(Instant::now);
    request.extensions_mut().insert(RequestDeadline(past));
    let r = f.server.handle(&request);
    assert_unavailable(&r, "1");
    assert!(
        json(&r)["error_description"]
            .as_str()
            .unwrap()
            .starts_with("deadline_passed:"),
        "{}",
        json(&r)
    );

    f.clock
        .advance(rotoken::Policy::default().grace + Duration::from_secs(1));
    let r = f.refresh_spa(&token);
    assert_eq!(r.status(), 200, "{}", json(&r));
    assert_eq!(f.server.metrics().reuse_detections(), 0);
}

/// Revocation and introspection honour the request's deadline too: a
/// request whose deadline passed before the store was asked is a 503.
#[test]
fn revoke_and_introspect_refuse_a_passed_deadline_with_503() {
    let f = fixture();
    let token = f.issue("spa", "openid offline_access");
    let past = Instant::now()
        .checked_sub(Duration::from_millis(1))
        .unwrap_or_else(Instant::now);
    let mut revoke = post("/oauth/revoke", &format!("client_id=spa&token={token}"));
    revoke.extensions_mut().insert(RequestDeadline(past));
    assert_unavailable(&f.server.handle(&revoke), "1");
    let mut introspect = basic(post("/oauth/introspect", &format!("token={token}")), "rs", RS_SECRET);
    introspect.extensions_mut().insert(RequestDeadline(past));
    assert_unavailable(&f.server.handle(&introspect), "1");
    // The revocation was not applied.
    assert_eq!(f.refresh_spa(&token).status(), 200);
}
