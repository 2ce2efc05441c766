//! Reliability checklist row 14: every malformed request gets an RFC 6749
//! §5.2 error JSON with a 4xx status and `Cache-Control: no-store`, never a
//! 5xx or a panic, and no token text reaches the logs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::Request;

const CODES: &[&str] = &[
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "unsupported_token_type",
    "invalid_dpop_proof",
];

fn raw(method: &str, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Request<Bytes> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    b.body(Bytes::from(body)).unwrap()
}

const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

#[test]
fn the_issue_and_checklist_cases_get_the_right_4xx() {
    let f = fixture();
    let rt = f.issue("spa", "openid offline_access");
    let access = {
        let r = f.refresh_spa(&rt);
        json(&r)["access_token"].as_str().unwrap().to_owned()
    };
    let spa = "client_id=spa";
    let cases: Vec<(&str, Request<Bytes>, u16, &str)> = vec![
        (
            "no body, no type",
            raw("POST", "/oauth/token", None, vec![]),
            400,
            "invalid_request",
        ),
        (
            "no body",
            raw("POST", "/oauth/token", FORM, vec![]),
            400,
            "invalid_request",
        ),
        (
            "1 MB body",
            raw("POST", "/oauth/token", FORM, vec![b'a'; 1 << 20]),
            413,
            "invalid_request",
        ),
        (
            "JSON body",
            raw(
                "POST",
                "/oauth/token",
                Some("application/json"),
                br#"{"grant_type":"refresh_token"}"#.to_vec(),
            ),
            415,
            "invalid_request",
        ),
        (
            "JSON body sent as a form",
            raw(
                "POST",
                "/oauth/token",
                FORM,
                br#"{"grant_type":"refresh_token"}"#.to_vec(),
            ),
            400,
            "invalid_request",
        ),
        (
            "text/plain",
            raw(
                "POST",
                "/oauth/token",
                Some("text/plain"),
                b"grant_type=refresh_token".to_vec(),
            ),
            415,
            "invalid_request",
        ),
        ("GET", raw("GET", "/oauth/token", None, vec![]), 405, "invalid_request"),
        (
            "PUT",
            raw("PUT", "/oauth/token", FORM, b"a=b".to_vec()),
            405,
            "invalid_request",
        ),
        (
            "missing grant_type",
            post("/oauth/token", &format!("{spa}&refresh_token={rt}")),
            400,
            "invalid_request",
        ),
        (
            "empty grant_type",
            post("/oauth/token", &format!("grant_type=&{spa}&refresh_token={rt}")),
            400,
            "invalid_request",
        ),
        (
            "missing refresh_token",
            post("/oauth/token", &format!("grant_type=refresh_token&{spa}")),
            400,
            "invalid_request",
        ),
        (
            "duplicated grant_type",
            post(
                "/oauth/token",
                &format!("grant_type=refresh_token&grant_type=refresh_token&{spa}&refresh_token={rt}"),
            ),
            400,
            "invalid_request",
        ),
        (
            "duplicated refresh_token",
            post(
                "/oauth/token",
                &format!("grant_type=refresh_token&{spa}&refresh_token={rt}&refresh_token={rt}"),
            ),
            400,
            "invalid_request",
        ),
        (
            "duplicated client_id",
            post(
                "/oauth/token",
                &format!("grant_type=refresh_token&{spa}&{spa}&refresh_token={rt}"),
            ),
            400,
            "invalid_request",
        ),
        (
            "unknown grant type",
            post(
                "/oauth/token",
                &format!("grant_type=password&{spa}&username=a&password=b"),
            ),
            400,
            "unsupported_grant_type",
        ),
        (
            "authorization_code is the server's own",
            post("/oauth/token", &format!("grant_type=authorization_code&{spa}&code=x")),
            400,
            "unsupported_grant_type",
        ),
        (
            "non-UTF-8",
            raw(
                "POST",
                "/oauth/token",
                FORM,
                b"grant_type=refresh_token&refresh_token=\xff\xfe".to_vec(),
            ),
            400,
            "invalid_request",
        ),
        (
            "non-UTF-8 percent-encoded",
            post(
                "/oauth/token",
                "grant_type=refresh_token&client_id=spa&refresh_token=%C3%28",
            ),
            400,
            "invalid_request",
        ),
        (
            "bad percent-encoding",
            post(
                "/oauth/token",
                "grant_type=refresh_token&client_id=spa&refresh_token=%zz",
            ),
            400,
            "invalid_request",
        ),
        (
            "10 KB token",
            post(
                "/oauth/token",
                &format!(
                    "grant_type=refresh_token&{spa}&refresh_token=rt1_{}",
                    "A".repeat(10 * 1024)
                ),
            ),
            400,
            "invalid_grant",
        ),
        (
            "access token sent as a refresh token",
            post(
                "/oauth/token",
                &format!("grant_type=refresh_token&{spa}&refresh_token={access}"),
            ),
            400,
            "invalid_grant",
        ),
        (
            "garbage token",
            post(
                "/oauth/token",
                "grant_type=refresh_token&client_id=spa&refresh_token=hello",
            ),
            400,
            "invalid_grant",
        ),
        (
            "no client",
            post("/oauth/token", &format!("grant_type=refresh_token&refresh_token={rt}")),
            401,
            "invalid_client",
        ),
        (
            "10 KB client id",
            post(
                "/oauth/token",
                &format!(
                    "grant_type=refresh_token&client_id={}&refresh_token={rt}",
                    "c".repeat(10 * 1024)
                ),
            ),
            401,
            "invalid_client",
        ),
        (
            "garbage Basic credentials",
            {
                let mut r = post("/oauth/token", &format!("grant_type=refresh_token&refresh_token={rt}"));
                r.headers_mut().insert("authorization", "Basic %%%".parse().unwrap());
                r
            },
            401,
            "invalid_client",
        ),
        (
            "two Content-Type headers",
            {
                let mut r = post(
                    "/oauth/token",
                    &format!("grant_type=refresh_token&{spa}&refresh_token={rt}"),
                );
                r.headers_mut().append("content-type", "text/plain".parse().unwrap());
                r
            },
            400,
            "invalid_request",
        ),
        (
            "two DPoP headers",
            {
                let r = post(
                    "/oauth/token",
                    &format!("grant_type=refresh_token&{spa}&refresh_token={rt}"),
                );
                with_dpop(with_dpop(r, "a.b.c"), "a.b.c")
            },
            400,
            "invalid_dpop_proof",
        ),
        ("unknown path", post("/oauth/nothing", "a=b"), 404, "invalid_request"),
    ];
    let (_, logs) = capture_logs(|| {
        for (name, req, status, code) in cases {
            let r = f.server.handle(&req);
            assert_eq!(
                r.status().as_u16(),
                status,
                "{name}: {}",
                String::from_utf8_lossy(r.body())
            );
            assert_error(&r, status, code);
        }
    });
    let rt_body = &rt[4..];
    assert!(!logs.contains(rt_body), "a token reached the logs");
    assert!(!logs.contains(&access), "an access token reached the logs");
    // After all of that, the family is intact (the replay of `rt` above was
    // within the grace window, and wrong inputs never touch it).
    assert_eq!(f.server.metrics().reuse_detections(), 0);
}

#[test]
fn a_get_says_which_method_is_allowed() {
    let f = fixture();
    let r = f.server.handle(&raw("GET", "/oauth/token", None, vec![]));
    assert_eq!(r.headers()["allow"], "POST");
    let r = f
        .server
        .handle(&raw("POST", "/.well-known/oauth-authorization-server", None, vec![]));
    assert_error(&r, 405, "invalid_request");
    assert_eq!(r.headers()["allow"], "GET");
}

#[test]
fn every_form_endpoint_refuses_bad_input_the_same_way() {
    let f = fixture();
    for path in ["/oauth/token", "/oauth/revoke", "/oauth/introspect"] {
        assert_error(
            &f.server.handle(&raw("GET", path, None, vec![])),
            405,
            "invalid_request",
        );
        assert_error(
            &f.server.handle(&raw("POST", path, FORM, vec![0; 1 << 20])),
            413,
            "invalid_request",
        );
        assert_error(
            &f.server
                .handle(&raw("POST", path, Some("application/json"), b"{}".to_vec())),
            415,
            "invalid_request",
        );
        assert_error(&f.server.handle(&post(path, "token=%zz")), 400, "invalid_request");
        assert_error(&f.server.handle(&post(path, "token=a&token=b")), 400, "invalid_request");
        assert_error(
            &f.server.handle(&raw("POST", path, FORM, b"x=\xff".to_vec())),
            400,
            "invalid_request",
        );
    }
    // Authenticated but missing the token parameter.
    for path in ["/oauth/revoke", "/oauth/introspect"] {
        assert_error(
            &f.server.handle(&basic(post(path, ""), "web", WEB_SECRET)),
            400,
            "invalid_request",
        );
    }
}

#[test]
fn random_bodies_never_get_a_5xx() {
    let f = fixture();
    let rt = f.issue("spa", "offline_access");
    // A small deterministic generator: no extra dependency, reproducible.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet: &[u8] = b"=&%+abcdefghijklmnopqrstuvwxyz_0123456789\xff\x00 grant_type refresh_token client_id";
    for i in 0..2_000 {
        let len = (next() % 300) as usize;
        let mut body: Vec<u8> = (0..len).map(|_| alphabet[(next() as usize) % alphabet.len()]).collect();
        if i % 3 == 0 {
            body.extend_from_slice(format!("&grant_type=refresh_token&client_id=spa&refresh_token={rt}").as_bytes());
        }
        for path in ["/oauth/token", "/oauth/revoke", "/oauth/introspect"] {
            let r = f.server.handle(&raw("POST", path, FORM, body.clone()));
            assert!(r.status().as_u16() < 500, "{path} {:?}: {}", body, r.status());
            if r.status() != 200 {
                let v = json(&r);
                assert!(CODES.contains(&v["error"].as_str().unwrap_or("")), "{v}");
            }
        }
    }
}
