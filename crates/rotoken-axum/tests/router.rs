//! The router answers every route at its path, with the same answers as
//! rotoken-http, and passes the peer address on for throttling.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt as _;
use rotoken::{Engine, Keyring, Options, Scope};
use rotoken_http::{
    Config, IssueRequest, JwtMinter, MemoryClients, OAuthServer, RegisteredClient, SecretHash, SigningKey,
};
use tower::ServiceExt as _;

const SECRET: &str = "web-secret-0123456789";

fn setup(dir: &std::path::Path) -> Arc<OAuthServer> {
    let engine = Arc::new(Engine::open(dir.join("t.redb"), Keyring::generate().unwrap(), Options::default()).unwrap());
    let clients = MemoryClients::new()
        .with(RegisteredClient::public("spa"))
        .with(RegisteredClient::confidential(
            "web",
            SecretHash::new(SECRET.as_bytes()).unwrap(),
        ));
    let minter = JwtMinter::new(
        SigningKey::generate_ed25519().unwrap(),
        "http://localhost",
        Duration::from_secs(60),
    );
    let mut config = Config::new("http://localhost");
    config.auth_max_failures = 2;
    Arc::new(OAuthServer::new(engine, Arc::new(clients), Arc::new(minter), config))
}

async fn send(app: &axum::Router, req: http::Request<Body>) -> (u16, http::HeaderMap, serde_json::Value) {
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

fn form(path: &str, body: String) -> http::Request<Body> {
    http::Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap()
}

/// The public client `spa` refreshing `rt`.
fn refresh_spa(rt: &str) -> http::Request<Body> {
    form(
        "/oauth/token",
        format!("grant_type=refresh_token&client_id=spa&refresh_token={rt}"),
    )
}

#[tokio::test]
async fn every_route_answers_at_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let server = setup(dir.path());
    let app = rotoken_axum::router(server.clone());
    let rt = server
        .issue(&IssueRequest::new(
            "alice",
            "spa",
            Scope::parse("offline_access").unwrap(),
        ))
        .unwrap()
        .refresh_token
        .unwrap();

    let (status, headers, v) = send(&app, refresh_spa(&rt)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["cache-control"], "no-store");
    let rt2 = v["refresh_token"].as_str().unwrap().to_owned();

    let get = |p: &str| http::Request::get(p).body(Body::empty()).unwrap();
    let (status, _, v) = send(&app, get("/.well-known/oauth-authorization-server")).await;
    assert_eq!(status, 200);
    assert_eq!(v["token_endpoint"], "http://localhost/oauth/token");
    let (status, _, v) = send(&app, get("/oauth/jwks")).await;
    assert_eq!(status, 200);
    assert_eq!(v["keys"][0]["kty"], "OKP");
    // A GET on the token endpoint: the §5.2 JSON with 405, not axum's default.
    let (status, headers, v) = send(&app, get("/oauth/token")).await;
    assert_eq!((status, v["error"].as_str()), (405, Some("invalid_request")));
    assert_eq!(headers["allow"], "POST");

    let (status, _, _) = send(&app, form("/oauth/revoke", format!("client_id=spa&token={rt2}"))).await;
    assert_eq!(status, 200);
    let (status, _, v) = send(
        &app,
        form(
            "/oauth/introspect",
            format!("client_id=web&client_secret={SECRET}&token={rt2}"),
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v, serde_json::json!({"active": false}));
}

#[tokio::test]
async fn throttling_is_per_peer_address() {
    let dir = tempfile::tempdir().unwrap();
    let app = rotoken_axum::router(setup(dir.path()));
    let from = |ip: [u8; 4], secret: &str| {
        let mut r = form(
            "/oauth/introspect",
            format!("client_id=web&client_secret={secret}&token=x"),
        );
        r.extensions_mut().insert(ConnectInfo(SocketAddr::from((ip, 40000))));
        r
    };
    for _ in 0..2 {
        assert_eq!(send(&app, from([10, 0, 0, 1], "wrong-secret-000000")).await.0, 401);
    }
    assert_eq!(send(&app, from([10, 0, 0, 1], "wrong-secret-000000")).await.0, 429);
    assert_eq!(
        send(&app, from([10, 0, 0, 2], "wrong-secret-000000")).await.0,
        401,
        "another peer has its own budget"
    );
    assert_eq!(
        send(&app, from([10, 0, 0, 1], SECRET)).await.0,
        200,
        "the right secret is never refused"
    );
}

#[tokio::test]
async fn health_and_metrics_routes_mount_in_a_linked_router() {
    let dir = tempfile::tempdir().unwrap();
    let oauth = setup(dir.path());
    let app = rotoken_axum::router(oauth.clone())
        .merge(rotoken_axum::health_router(oauth.clone()))
        .merge(rotoken_axum::metrics_router(oauth.clone()));
    let get = |path: &str| http::Request::get(path).body(Body::empty()).unwrap();
    let (status, _, v) = send(&app, get("/healthz")).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")));

    // A rotation made through the router, and one made by the server's own
    // code outside it (recorded with Metrics::record_rotate), both count.
    let issued = oauth
        .issue(&IssueRequest::new(
            "alice",
            "spa",
            Scope::parse("offline_access").unwrap(),
        ))
        .unwrap();
    let rt = issued.refresh_token.unwrap();
    let (status, _, _) = send(&app, refresh_spa(&rt)).await;
    assert_eq!(status, 200);
    let own = oauth.engine().rotate(&rt, &rotoken::RotateRequest::new("spa"));
    oauth.metrics().record_rotate(own.as_ref());
    assert!(own.unwrap().retried, "within the grace window");

    let r = app.clone().oneshot(get("/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    for line in [
        "rotoken_rotations_total 1",
        "rotoken_grace_retries_total 1",
        "rotoken_families 1",
        "rotoken_families_issued_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in:\n{text}");
    }
}

/// Your own state: the routers merge into a `Router<YourState>` before
/// `with_state` (they used to be `Router<()>` only, so this was E0277).
#[tokio::test]
async fn the_routers_merge_into_a_router_with_state() {
    #[derive(Clone)]
    struct AppState {
        greeting: &'static str,
    }
    let dir = tempfile::tempdir().unwrap();
    let oauth = setup(dir.path());
    let app: axum::Router = axum::Router::<AppState>::new()
        .route(
            "/hello",
            axum::routing::get(|axum::extract::State(s): axum::extract::State<AppState>| async move { s.greeting }),
        )
        .merge(rotoken_axum::router(oauth.clone()))
        .merge(rotoken_axum::health_router(oauth.clone()))
        .with_state(AppState { greeting: "hi" });
    let get = |path: &str| http::Request::get(path).body(Body::empty()).unwrap();
    let r = app.clone().oneshot(get("/hello")).await.unwrap();
    assert_eq!(&r.into_body().collect().await.unwrap().to_bytes()[..], b"hi");
    let (status, _, v) = send(&app, get("/.well-known/oauth-authorization-server")).await;
    assert_eq!(status, 200);
    assert_eq!(v["issuer"], "http://localhost");
    let (status, _, _) = send(&app, get("/healthz")).await;
    assert_eq!(status, 200);
}
