//! DPoP (RFC 9449) at the token endpoint: a family bound to a key at issue
//! refreshes only with a valid proof made with that key (checklist row 16).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

fn refresh_with(f: &Fixture, rt: &str, proof: Option<&str>) -> http::Response<bytes::Bytes> {
    let req = post(
        "/oauth/token",
        &format!("grant_type=refresh_token&client_id=spa&refresh_token={rt}"),
    );
    let req = match proof {
        Some(p) => with_dpop(req, p),
        None => req,
    };
    f.server.handle(&req)
}

fn now(f: &Fixture) -> i64 {
    f.clock.unix_millis() / 1000
}

#[test]
fn a_bound_family_refreshes_only_with_a_proof_of_its_key() {
    for key in [DpopKey::es256(7), DpopKey::ed25519(7)] {
        let f = fixture();
        let rt = f.issue_bound("spa", "openid offline_access", Some(key.jkt()));
        // With the key: a DPoP-bound access token.
        let r = refresh_with(&f, &rt, Some(&key.proof("POST", TOKEN_URL, now(&f), "p1")));
        assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
        let v = json(&r);
        assert_eq!(v["token_type"], "DPoP");
        assert_eq!(
            claims(v["access_token"].as_str().unwrap())["cnf"]["jkt"],
            key.jkt().as_str()
        );
        let rt = v["refresh_token"].as_str().unwrap().to_owned();
        f.clock.advance(Duration::from_secs(31));

        // Another key, or none: rejected, and nothing changes.
        let other = DpopKey::ed25519(99);
        let r = refresh_with(&f, &rt, Some(&other.proof("POST", TOKEN_URL, now(&f), "p2")));
        assert_error(&r, 400, "invalid_grant");
        assert_error(&refresh_with(&f, &rt, None), 400, "invalid_grant");
        // A bare thumbprint in a header is not a proof.
        let mut req = post(
            "/oauth/token",
            &format!("grant_type=refresh_token&client_id=spa&refresh_token={rt}"),
        );
        req.headers_mut().insert("dpop", key.jkt().parse().unwrap());
        assert_error(&f.server.handle(&req), 400, "invalid_dpop_proof");

        // The family was not revoked: the holder of the key goes on.
        let r = refresh_with(&f, &rt, Some(&key.proof("POST", TOKEN_URL, now(&f), "p3")));
        assert_eq!(r.status(), 200);
        assert_eq!(f.server.metrics().reuse_detections(), 0);
    }
}

#[test]
fn proofs_are_checked_before_the_core_sees_the_thumbprint() {
    let f = fixture();
    let key = DpopKey::es256(3);
    let rt = f.issue_bound("spa", "offline_access", Some(key.jkt()));
    let t = now(&f);
    let bad = [
        key.proof("GET", TOKEN_URL, t, "a"),
        key.proof("POST", "https://as.example/oauth/revoke", t, "b"),
        key.proof("POST", "https://evil.example/oauth/token", t, "c"),
        key.proof("POST", TOKEN_URL, t - 120, "d"),
        key.proof("POST", TOKEN_URL, t + 60, "e"),
        "not-a-jwt".to_owned(),
    ];
    for proof in &bad {
        assert_error(&refresh_with(&f, &rt, Some(proof)), 400, "invalid_dpop_proof");
    }
    // A proof is good once: its replay is refused.
    let proof = key.proof("POST", TOKEN_URL, t, "once");
    assert_eq!(refresh_with(&f, &rt, Some(&proof)).status(), 200);
    assert_error(&refresh_with(&f, &rt, Some(&proof)), 400, "invalid_dpop_proof");
    // A fresh proof for the retry within the grace window works.
    let r = refresh_with(&f, &rt, Some(&key.proof("POST", TOKEN_URL, t, "twice")));
    assert_eq!(r.status(), 200);
}

#[test]
fn an_unbound_family_may_get_dpop_bound_access_tokens() {
    let f = fixture();
    let rt = f.issue("spa", "offline_access");
    let key = DpopKey::ed25519(5);
    let r = refresh_with(&f, &rt, Some(&key.proof("POST", TOKEN_URL, now(&f), "x")));
    assert_eq!(r.status(), 200);
    let v = json(&r);
    assert_eq!(v["token_type"], "DPoP");
    assert_eq!(
        claims(v["access_token"].as_str().unwrap())["cnf"]["jkt"],
        key.jkt().as_str()
    );
    // Without a proof it is a bearer token.
    let rt = v["refresh_token"].as_str().unwrap();
    assert_eq!(json(&refresh_with(&f, rt, None))["token_type"], "Bearer");
}

#[test]
fn the_issue_entry_point_binds_with_a_verified_proof() {
    let f = fixture();
    let key = DpopKey::es256(11);
    let url = "https://as.example/oauth/authorize/exchange";
    let req = with_dpop(post("/exchange", "code=x"), &key.proof("POST", url, now(&f), "ex"));
    let jkt = f.server.dpop_thumbprint(req.headers(), "POST", url).unwrap();
    assert_eq!(jkt, Some(key.jkt()));
    assert!(
        f.server
            .dpop_thumbprint(post("/x", "").headers(), "POST", url)
            .unwrap()
            .is_none()
    );
    let rt = f.issue_bound("spa", "offline_access", jkt);
    assert_eq!(f.server.engine().introspect(&rt).unwrap().cnf_jkt, Some(key.jkt()));
}
