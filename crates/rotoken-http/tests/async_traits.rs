//! The integrator traits are async: a client registry and an access-token
//! minter whose answers come from other tokio tasks (as from a database
//! driver's connection task or a KMS client) serve every route through the
//! tower service on a current-thread runtime, where a `block_on` on the
//! runtime's thread would wait for ever. The sync forms still answer with a
//! plain registry, and from a runtime's blocking thread with an async one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt as _, Full};
use rotoken::Scope;
use rotoken_http::{
    AccessToken, AccessTokenMinter, AccessTokenRequest, AdminApi, AdminService, ClientRegistry, IssueRequest,
    JwtMinter, MintError, OAuthService, RegisteredClient, RegistryError, SecretHash,
};
use serde_json::{Map, Value};
use tower::ServiceExt as _;

/// A registry behind a tokio lock whose answer another task sends back.
struct TaskRegistry {
    clients: tokio::sync::RwLock<HashMap<String, RegisteredClient>>,
    lookups: AtomicUsize,
}

impl TaskRegistry {
    fn new() -> Self {
        let clients = [
            RegisteredClient::public("spa"),
            RegisteredClient::confidential("rs", SecretHash::new(RS_SECRET.as_bytes()).unwrap()).with_introspection(),
        ];
        Self {
            clients: tokio::sync::RwLock::new(clients.into_iter().map(|c| (c.id.clone(), c)).collect()),
            lookups: AtomicUsize::new(0),
        }
    }
}

#[rotoken_http::async_trait]
impl ClientRegistry for TaskRegistry {
    async fn client(&self, id: &str) -> Result<Option<RegisteredClient>, RegistryError> {
        let found = self.clients.read().await.get(id).cloned();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            let _ = tx.send(found);
        });
        let answer = rx.await.map_err(|e| RegistryError::Other(Box::new(e)))?;
        self.lookups.fetch_add(1, Ordering::Relaxed);
        Ok(answer)
    }
}

/// A minter that waits for another task (a remote signer) before signing.
struct TaskMinter {
    inner: JwtMinter,
    minted: AtomicUsize,
}

#[rotoken_http::async_trait]
impl AccessTokenMinter for TaskMinter {
    async fn mint(&self, request: &AccessTokenRequest<'_>) -> Result<AccessToken, MintError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            let _ = tx.send(());
        });
        rx.await.map_err(|e| MintError::Other(Box::new(e)))?;
        self.minted.fetch_add(1, Ordering::Relaxed);
        self.inner.mint(request).await
    }

    fn jwks_at(&self, now: time::OffsetDateTime) -> Value {
        self.inner.jwks_at(now)
    }

    fn introspect_at(&self, token: &str, now: time::OffsetDateTime) -> Option<Map<String, Value>> {
        self.inner.introspect_at(token, now)
    }
}

struct Async {
    fixture: Fixture,
    registry: Arc<TaskRegistry>,
    minter: Arc<TaskMinter>,
}

fn async_fixture() -> Async {
    let fixture = fixture();
    let registry = Arc::new(TaskRegistry::new());
    let minter = Arc::new(TaskMinter {
        inner: default_minter(),
        minted: AtomicUsize::new(0),
    });
    let server = rotoken_http::OAuthServer::new(
        fixture.server.engine().clone(),
        registry.clone(),
        minter.clone(),
        fixture.server.config().clone(),
    );
    Async {
        fixture: Fixture {
            server: Arc::new(server),
            ..fixture
        },
        registry,
        minter,
    }
}

fn form(path: &str, body: String) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn refresh(client: &str, token: &str) -> Request<Full<Bytes>> {
    form(
        "/oauth/token",
        format!("grant_type=refresh_token&client_id={client}&refresh_token={token}"),
    )
}

async fn send(svc: &OAuthService, request: Request<Full<Bytes>>) -> (u16, Value) {
    let r = svc.clone().oneshot(request).await.unwrap();
    let status = r.status().as_u16();
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "current_thread")]
async fn an_async_registry_and_minter_serve_every_route_on_a_current_thread_runtime() {
    let a = async_fixture();
    let server = &a.fixture.server;
    let issued = server
        .issue_async(&IssueRequest::new(
            "alice",
            "spa",
            Scope::parse("openid offline_access").unwrap(),
        ))
        .await
        .unwrap();
    let first = issued.refresh_token.unwrap();
    let svc = OAuthService::new(server.clone());

    let (status, v) = send(&svc, refresh("spa", &first)).await;
    assert_eq!(status, 200, "{v}");
    let second = v["refresh_token"].as_str().unwrap().to_owned();
    let access = v["access_token"].as_str().unwrap().to_owned();

    let introspect =
        |token: &str| basic(post("/oauth/introspect", &format!("token={token}")), "rs", RS_SECRET).map(Full::new);
    let (status, v) = send(&svc, introspect(&second)).await;
    assert_eq!((status, v["active"].as_bool()), (200, Some(true)), "{v}");
    let (status, v) = send(&svc, introspect(&access)).await;
    assert_eq!((status, v["sub"].as_str()), (200, Some("alice")), "{v}");

    let (status, _) = send(&svc, form("/oauth/revoke", format!("client_id=spa&token={second}"))).await;
    assert_eq!(status, 200);
    let (status, v) = send(&svc, introspect(&second)).await;
    assert_eq!((status, v["active"].as_bool()), (200, Some(false)), "{v}");

    // An unknown client is refused after the registry's (async) answer.
    let (status, v) = send(&svc, refresh("nobody", &second)).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_client")));

    // issue (1) + refresh (1) + introspect (3) + revoke (1) + unknown (1)
    assert_eq!(a.registry.lookups.load(Ordering::Relaxed), 7);
    // issue + refresh
    assert_eq!(a.minter.minted.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn the_admin_service_issues_through_an_async_registry_and_minter() {
    let a = async_fixture();
    let admin_token = "admin-token-0123456789";
    let api = AdminApi::new(
        a.fixture.server.clone(),
        Some(SecretHash::new(admin_token.as_bytes()).unwrap()),
    );
    let svc = AdminService::new(Arc::new(api));
    let request = Request::post("/admin/families")
        .header("authorization", format!("Bearer {admin_token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"subject":"alice","client_id":"spa","scope":"offline_access"}"#,
        )))
        .unwrap();
    let r = svc.clone().oneshot(request).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(v["refresh_token"].is_string(), "{v}");
    assert_eq!(a.registry.lookups.load(Ordering::Relaxed), 1);
    assert_eq!(a.minter.minted.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn the_sync_forms_answer_from_a_runtime_blocking_thread_with_an_async_registry() {
    let a = async_fixture();
    let server = a.fixture.server.clone();
    let status = tokio::task::spawn_blocking(move || {
        let issued = server
            .issue(&IssueRequest::new(
                "alice",
                "spa",
                Scope::parse("offline_access").unwrap(),
            ))
            .unwrap();
        let token = issued.refresh_token.unwrap();
        server
            .handle(&post(
                "/oauth/token",
                &format!("grant_type=refresh_token&client_id=spa&refresh_token={token}"),
            ))
            .status()
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(a.registry.lookups.load(Ordering::Relaxed), 2);
}

#[test]
fn the_sync_handle_answers_with_a_plain_registry_outside_any_runtime() {
    let f = fixture();
    let token = f.issue("spa", "offline_access");
    let r = f.refresh_spa(&token);
    assert_eq!(r.status(), 200);
    let next = json(&r)["refresh_token"].as_str().unwrap().to_owned();
    let r = f.server.handle(&basic(
        post("/oauth/introspect", &format!("token={next}")),
        "rs",
        RS_SECRET,
    ));
    assert_eq!(json(&r)["active"], true);
    let r = f
        .server
        .handle(&post("/oauth/revoke", &format!("client_id=spa&token={next}")));
    assert_eq!(r.status(), 200);
    assert_eq!(f.refresh_spa(&next).status(), 400);
}
