//! The small server driven through its Router (no sockets): login, refresh,
//! reuse detection, logout everywhere, a wrong password.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use rotoken::{Engine, Keyring, Options};
use rotoken_example_small_server::{HmacMinter, Server, Users, app, internal_app};
use serde_json::Value;
use tower::ServiceExt;

struct Harness {
    engine: Arc<Engine>,
    server: Arc<Server>,
    app: Router,
}

fn harness() -> Harness {
    let engine = Arc::new(Engine::in_memory(Keyring::generate().unwrap(), Options::default()).unwrap());
    let users = Users::new()
        .unwrap()
        .with("alice", "correct horse")
        .unwrap()
        .with("bob", "battery staple");
    let minter = HmacMinter::new([7; 32], Duration::from_secs(300));
    let server = Server::new(engine.clone(), "http://small.test", users.unwrap(), minter).unwrap();
    let app = app(server.clone());
    Harness { engine, server, app }
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn post_form(app: &Router, path: &str, body: String) -> (StatusCode, Value) {
    let request = Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    send(app, request.body(Body::from(body)).unwrap()).await
}

/// Logs in with a form body; the token response.
async fn login(app: &Router, username: &str, password: &str) -> (StatusCode, Value) {
    post_form(app, "/login", format!("username={username}&password={password}")).await
}

async fn refresh(app: &Router, refresh_token: &Value) -> (StatusCode, Value) {
    let rt = refresh_token.as_str().unwrap();
    post_form(
        app,
        "/oauth/token",
        format!("grant_type=refresh_token&client_id=web-app&refresh_token={rt}"),
    )
    .await
}

#[tokio::test]
async fn login_then_refresh_twice() {
    let h = harness();
    let json = r#"{"username": "alice", "password": "correct horse"}"#;
    let request = Request::post("/login").header(header::CONTENT_TYPE, "application/json");
    let (status, tokens) = send(&h.app, request.body(Body::from(json)).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let (status, second) = refresh(&h.app, &tokens["refresh_token"]).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let (status, third) = refresh(&h.app, &second["refresh_token"]).await;
    assert_eq!(status, StatusCode::OK, "{third}");
    assert_ne!(second["refresh_token"], third["refresh_token"]);
    assert_eq!(h.engine.sessions_async("alice").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_replayed_refresh_token_revokes_the_family_and_names_the_user() {
    let h = harness();
    let (_, first) = login(&h.app, "alice", "correct+horse").await;
    let (_, second) = refresh(&h.app, &first["refresh_token"]).await;
    let (_, third) = refresh(&h.app, &second["refresh_token"]).await;
    let (status, replay) = refresh(&h.app, &first["refresh_token"]).await;
    assert_eq!(
        (status, replay["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, _) = refresh(&h.app, &third["refresh_token"]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the whole family is revoked");
    h.engine.flush_events();
    assert_eq!(h.server.reused_subjects(), ["alice"]);
}

#[tokio::test]
async fn logout_everywhere_ends_every_session_of_the_user_only() {
    let h = harness();
    let (_, laptop) = login(&h.app, "alice", "correct+horse").await;
    let (_, phone) = login(&h.app, "alice", "correct+horse").await;
    let (_, bob) = login(&h.app, "bob", "battery+staple").await;
    let logout = |token: Option<&str>| {
        let request = Request::post("/logout-everywhere");
        let request = match token {
            Some(t) => request.header(header::AUTHORIZATION, format!("Bearer {t}")),
            None => request,
        };
        send(&h.app, request.body(Body::empty()).unwrap())
    };
    assert_eq!(logout(None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(logout(Some("bob.1.forged")).await.0, StatusCode::UNAUTHORIZED);
    let (status, answer) = logout(laptop["access_token"].as_str()).await;
    assert_eq!((status, answer["revoked"].as_u64()), (StatusCode::OK, Some(2)));
    assert_eq!(
        refresh(&h.app, &laptop["refresh_token"]).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        refresh(&h.app, &phone["refresh_token"]).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(refresh(&h.app, &bob["refresh_token"]).await.0, StatusCode::OK);
    let metrics = internal_app(&h.server).oneshot(Request::get("/metrics").body(Body::empty()).unwrap());
    let text = metrics.await.unwrap().into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&text).contains("rotoken_revocations_total 2"));
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_issues_nothing() {
    let h = harness();
    let (status, answer) = login(&h.app, "alice", "battery+staple").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_credentials"))
    );
    assert!(answer.get("refresh_token").is_none());
    let (status, _) = login(&h.app, "mallory", "correct+horse").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(h.engine.sessions_async("alice").await.unwrap().is_empty());
    assert!(h.engine.sessions_async("mallory").await.unwrap().is_empty());
}
