//! The example's authorization-code flow end to end, in-process: authorize,
//! exchange the code (PKCE), refresh through rotoken, and the
//! `offline_access` rule.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use base64::Engine as _;
use http_body_util::BodyExt as _;
use rotoken::{Engine, Keyring, Options};
use rotoken_example_authorization_server::{App, CLIENT_ID, REDIRECT_URI, router};
use rotoken_http::SigningKey;
use sha2::Digest as _;
use tower::ServiceExt as _;

const VERIFIER: &str = "verifier-0123456789-0123456789-0123456789";

async fn send(app: &axum::Router, req: http::Request<Body>) -> (u16, http::HeaderMap, serde_json::Value) {
    let r = app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

fn form(body: String) -> http::Request<Body> {
    http::Request::post("/oauth/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap()
}

async fn code_for(app: &axum::Router, scope: &str) -> String {
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(VERIFIER));
    let uri = format!(
        "/authorize?response_type=code&client_id={CLIENT_ID}&redirect_uri={REDIRECT_URI}&scope={scope}\
         &state=s%201&code_challenge_method=S256&code_challenge={challenge}"
    );
    let (status, headers, _) = send(app, http::Request::get(uri).body(Body::empty()).unwrap()).await;
    assert_eq!(status, 302);
    let location = headers["location"].to_str().unwrap();
    assert!(location.starts_with(REDIRECT_URI));
    assert!(location.ends_with("&state=s%201"));
    location
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned()
}

fn exchange(code: &str, verifier: &str) -> http::Request<Body> {
    form(format!(
        "grant_type=authorization_code&client_id={CLIENT_ID}&redirect_uri={REDIRECT_URI}&code_verifier={verifier}&code={code}"
    ))
}

#[tokio::test]
async fn the_code_exchange_issues_a_family_that_refreshes_through_rotoken() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(
        Engine::open(
            dir.path().join("as.redb"),
            Keyring::generate().unwrap(),
            Options::default(),
        )
        .unwrap(),
    );
    let app = Arc::new(App::new(
        engine.clone(),
        "http://127.0.0.1:9090",
        SigningKey::generate_ed25519().unwrap(),
    ));
    let router = router(app);

    let code = code_for(&router, "openid+offline_access").await;
    let (status, headers, v) = send(&router, exchange(&code, VERIFIER)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(headers["cache-control"], "no-store");
    let rt = v["refresh_token"].as_str().unwrap().to_owned();
    // The code is single-use.
    let (status, _, v) = send(&router, exchange(&code, VERIFIER)).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_grant")));

    let (status, _, v) = send(
        &router,
        form(format!(
            "grant_type=refresh_token&client_id={CLIENT_ID}&refresh_token={rt}"
        )),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_ne!(v["refresh_token"], rt.as_str());
    assert_eq!(engine.sessions("alice").unwrap().len(), 1);

    // Without offline_access: an access token, no refresh token, no family.
    let code = code_for(&router, "openid").await;
    let (status, _, v) = send(&router, exchange(&code, VERIFIER)).await;
    assert_eq!(status, 200);
    assert!(v["access_token"].is_string());
    assert!(v.get("refresh_token").is_none());
    assert_eq!(engine.sessions("alice").unwrap().len(), 1);

    // A wrong PKCE verifier burns the code.
    let code = code_for(&router, "openid+offline_access").await;
    let (status, _, v) = send(&router, exchange(&code, "wrong-verifier-0123456789-0123456789")).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_grant")));

    // The metadata advertises the server's own endpoint and grant.
    let (_, _, m) = send(
        &router,
        http::Request::get("/.well-known/oauth-authorization-server")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(m["authorization_endpoint"], "http://127.0.0.1:9090/authorize");
    assert_eq!(
        m["grant_types_supported"],
        serde_json::json!(["refresh_token", "authorization_code"])
    );
}
