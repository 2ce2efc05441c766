//! The tower service: body limits enforced while reading, blocking engine
//! calls off the async threads, routing by path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt as _, Full};
use rotoken_http::{OAuthService, Route};
use tower::ServiceExt as _;

async fn body_json(r: http::Response<Full<Bytes>>) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn the_service_refreshes_and_refuses_oversized_bodies() {
    let f = fixture();
    let rt = f.issue("spa", "offline_access");
    let svc = OAuthService::new(f.server.clone());
    let req = Request::post("/oauth/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(format!(
            "grant_type=refresh_token&client_id=spa&refresh_token={rt}"
        ))))
        .unwrap();
    let (status, v) = body_json(svc.clone().oneshot(req).await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(v["refresh_token"].is_string());

    // Declared too large: refused before reading.
    let req = Request::post("/oauth/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", "1048576")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    let (status, v) = body_json(svc.clone().oneshot(req).await.unwrap()).await;
    assert_eq!((status, v["error"].as_str()), (413, Some("invalid_request")));

    // Streamed without a length: cut off at the limit.
    let req = Request::post("/oauth/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Chunks(64))
        .unwrap();
    let (status, _) = body_json(
        OAuthService::route(f.server.clone(), Route::Token)
            .oneshot(req)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413);

    let req = Request::get("/.well-known/oauth-authorization-server")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, v) = body_json(svc.clone().oneshot(req).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(v["issuer"], ISSUER);
    let req = Request::get("/elsewhere").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(body_json(svc.oneshot(req).await.unwrap()).await.0, 404);
}

/// A body of `n` 16 KiB chunks with no declared length.
struct Chunks(usize);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if self.0 == 0 {
            return std::task::Poll::Ready(None);
        }
        self.0 -= 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![b'a'; 16 * 1024])))))
    }
}
