//! The token endpoint: RFC 6749 §6 refreshes, §5.1 answers, §5.2 errors,
//! client authentication and its throttling, the grace window and reuse
//! detection seen through HTTP, and the issue entry point.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use rotoken::Scope;
use rotoken_http::IssueRequest;

#[test]
fn a_refresh_answers_rfc6749_5_1_json_with_a_signed_jwt() {
    let f = fixture();
    let rt = f.issue("spa", "openid offline_access");
    let r = f.refresh_spa(&rt);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["content-type"], "application/json");
    let v = json(&r);
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 300);
    assert!(v.get("scope").is_none(), "the scope is the one requested: omitted");
    let new_rt = v["refresh_token"].as_str().unwrap();
    assert_ne!(new_rt, rt);
    assert!(new_rt.starts_with("rt1_"));
    let at = v["access_token"].as_str().unwrap();
    let c = claims(at);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["client_id"], "spa");
    assert_eq!(c["scope"], "offline_access openid");
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["iat"], START_MS / 1000);
    assert_eq!(c["exp"], START_MS / 1000 + 300);
    assert!(c["jti"].is_string());
    assert!(c.get("cnf").is_none());
    // The refresh token rotates on.
    assert_eq!(f.refresh_spa(new_rt).status(), 200);
    assert_eq!(f.server.metrics().rotations(), 2);
}

#[test]
fn confidential_clients_authenticate_with_basic_or_post() {
    let f = fixture();
    let rt = f.issue("web", "offline_access");
    let body = format!("grant_type=refresh_token&refresh_token={rt}");
    let r = f.server.handle(&basic(post("/oauth/token", &body), "web", WEB_SECRET));
    assert_eq!(r.status(), 200);
    let rt = json(&r)["refresh_token"].as_str().unwrap().to_owned();
    let body = format!("grant_type=refresh_token&refresh_token={rt}&client_id=web&client_secret={WEB_SECRET}");
    let r = f.server.handle(&post("/oauth/token", &body));
    assert_eq!(r.status(), 200);
    let rt = json(&r)["refresh_token"].as_str().unwrap().to_owned();

    let body = format!("grant_type=refresh_token&refresh_token={rt}");
    // Wrong secret, no secret, unknown client, a secret for a public client.
    assert_error(
        &f.server
            .handle(&basic(post("/oauth/token", &body), "web", "wrong-secret-0123456789")),
        401,
        "invalid_client",
    );
    let r = f.server.handle(&post("/oauth/token", &format!("{body}&client_id=web")));
    assert_error(&r, 401, "invalid_client");
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    assert_error(&f.server.handle(&post("/oauth/token", &body)), 401, "invalid_client");
    assert_error(
        &f.server
            .handle(&basic(post("/oauth/token", &body), "nobody", WEB_SECRET)),
        401,
        "invalid_client",
    );
    assert_error(
        &f.server
            .handle(&basic(post("/oauth/token", &body), "spa", "spa-has-no-secret-at-all")),
        401,
        "invalid_client",
    );
    // Two methods at once (RFC 6749 §2.3), and Basic naming another client_id.
    let both = basic(
        post("/oauth/token", &format!("{body}&client_secret={WEB_SECRET}")),
        "web",
        WEB_SECRET,
    );
    assert_error(&f.server.handle(&both), 400, "invalid_request");
    let mismatch = basic(
        post("/oauth/token", &format!("{body}&client_id=spa")),
        "web",
        WEB_SECRET,
    );
    assert_error(&f.server.handle(&mismatch), 401, "invalid_client");
    // None of these touched the family.
    let r = f.server.handle(&basic(post("/oauth/token", &body), "web", WEB_SECRET));
    assert_eq!(r.status(), 200);
}

#[test]
fn failed_client_authentication_is_throttled() {
    let f = fixture_with(|c| {
        c.auth_max_failures = 3;
        c.auth_failure_window = Duration::from_secs(60);
    });
    let rt = f.issue("web", "offline_access");
    let body = format!("grant_type=refresh_token&refresh_token={rt}");
    let wrong = || basic(post("/oauth/token", &body), "web", "wrong-secret-0123456789");
    for _ in 0..3 {
        assert_error(&f.server.handle(&wrong()), 401, "invalid_client");
    }
    // Past the budget the guesser is told to slow down: one failure comes
    // back every window / max_failures.
    let r = f.server.handle(&wrong());
    assert_error(&r, 429, "invalid_client");
    assert_eq!(r.headers()["retry-after"], "20");
    // The right secret is never refused for failures it did not make.
    let r = f.server.handle(&basic(post("/oauth/token", &body), "web", WEB_SECRET));
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    let rt = json(&r)["refresh_token"].as_str().unwrap().to_owned();
    let body = format!("grant_type=refresh_token&refresh_token={rt}");
    // Another client is not affected.
    let spa = f.issue("spa", "offline_access");
    assert_eq!(f.refresh_spa(&spa).status(), 200);
    // Once a failure has come back, a wrong secret is answered 401 again.
    f.clock.advance(Duration::from_secs(20));
    let r = f
        .server
        .handle(&basic(post("/oauth/token", &body), "web", "wrong-secret-0123456789"));
    assert_error(&r, 401, "invalid_client");
    assert!(
        f.server
            .metrics()
            .render()
            .contains("rotoken_client_auth_throttled_total 1\n")
    );
}

#[test]
fn a_token_of_client_a_presented_by_client_b_is_invalid_grant_and_revokes_nothing() {
    let f = fixture();
    let rt = f.issue("spa", "offline_access");
    let body = format!("grant_type=refresh_token&refresh_token={rt}");
    let r = f.server.handle(&basic(post("/oauth/token", &body), "web", WEB_SECRET));
    assert_error(&r, 400, "invalid_grant");
    let r = f
        .server
        .handle(&post("/oauth/token", &format!("{body}&client_id=no-refresh")));
    assert_error(&r, 400, "unauthorized_client");
    // The owner still refreshes: the family is not revoked.
    assert_eq!(f.refresh_spa(&rt).status(), 200);
    assert_eq!(f.server.metrics().reuse_detections(), 0);
}

#[test]
fn scope_may_narrow_but_not_widen() {
    let f = fixture();
    let rt = f.issue("spa", "openid profile offline_access");
    let r = f.server.handle(&post(
        "/oauth/token",
        &format!("grant_type=refresh_token&client_id=spa&refresh_token={rt}&scope=openid"),
    ));
    assert_eq!(r.status(), 200);
    let v = json(&r);
    assert!(v.get("scope").is_none(), "granted as requested");
    assert_eq!(claims(v["access_token"].as_str().unwrap())["scope"], "openid");
    let rt = v["refresh_token"].as_str().unwrap();
    let widen = format!("grant_type=refresh_token&client_id=spa&refresh_token={rt}&scope=openid+admin");
    assert_error(&f.server.handle(&post("/oauth/token", &widen)), 400, "invalid_scope");
    let bad = format!("grant_type=refresh_token&client_id=spa&refresh_token={rt}&scope=%22quoted%22");
    assert_error(&f.server.handle(&post("/oauth/token", &bad)), 400, "invalid_scope");
    // The family is intact and still grants its whole scope.
    let r = f.refresh_spa(rt);
    assert_eq!(
        claims(json(&r)["access_token"].as_str().unwrap())["scope"],
        "offline_access openid profile"
    );
}

#[test]
fn a_replay_after_the_grace_window_revokes_the_family() {
    let f = fixture();
    let rt0 = f.issue("spa", "offline_access");
    let rt1 = json(&f.refresh_spa(&rt0))["refresh_token"].as_str().unwrap().to_owned();
    f.clock.advance(Duration::from_secs(31));
    let (r, logs) = capture_logs(|| f.refresh_spa(&rt0));
    assert_error(&r, 400, "invalid_grant");
    assert!(logs.contains("reuse detected"), "{logs}");
    assert!(
        !logs.contains(&rt0[4..]) && !logs.contains(&rt1[4..]),
        "no token in logs: {logs}"
    );
    assert_error(&f.refresh_spa(&rt1), 400, "invalid_grant");
    assert_eq!(f.server.metrics().reuse_detections(), 1);
}

#[test]
fn two_tabs_presenting_one_token_at_the_same_moment_both_get_the_same_successor() {
    let f = fixture();
    let mut rt = f.issue("spa", "openid offline_access");
    for _round in 0..20 {
        let barrier = Arc::new(Barrier::new(2));
        let tabs: Vec<_> = (0..2)
            .map(|_| {
                let (server, barrier) = (f.server.clone(), barrier.clone());
                let req = post(
                    "/oauth/token",
                    &format!("grant_type=refresh_token&client_id=spa&refresh_token={rt}"),
                );
                std::thread::spawn(move || {
                    barrier.wait();
                    server.handle(&req)
                })
            })
            .collect();
        let answers: Vec<_> = tabs.into_iter().map(|h| h.join().unwrap()).collect();
        for a in &answers {
            assert_eq!(a.status(), 200, "{}", String::from_utf8_lossy(a.body()));
        }
        let (a, b) = (json(&answers[0]), json(&answers[1]));
        assert_eq!(a["refresh_token"], b["refresh_token"], "the same successor, not a fork");
        let next = a["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(next, rt);
        // A tab arriving a moment later, within the grace window, gets it too.
        f.clock.advance(Duration::from_secs(1));
        assert_eq!(json(&f.refresh_spa(&rt))["refresh_token"], next.as_str());
        // The family stays healthy: its successor is live and rotates on.
        assert!(f.server.engine().introspect(&next).unwrap().active);
        f.clock.advance(Duration::from_secs(31));
        rt = next;
    }
    assert_eq!(f.server.metrics().reuse_detections(), 0);
    assert_eq!(f.server.metrics().rotations(), 20);
    assert_eq!(f.server.metrics().grace_retries(), 40);
}

#[test]
fn offline_access_decides_whether_a_refresh_token_is_issued() {
    let f = fixture();
    let without = f
        .server
        .issue(&IssueRequest::new("alice", "spa", Scope::parse("openid").unwrap()))
        .unwrap();
    assert!(without.refresh_token.is_none());
    assert_eq!(without.token_type, "Bearer");
    assert_eq!(claims(&without.access_token)["scope"], "openid");
    let with = f
        .server
        .issue(&IssueRequest::new(
            "alice",
            "spa",
            Scope::parse("openid offline_access").unwrap(),
        ))
        .unwrap();
    let rt = with.refresh_token.clone().unwrap();
    assert!(!format!("{with:?}").contains(&rt), "Debug hides tokens");
    assert_eq!(f.refresh_spa(&rt).status(), 200);
    let sessions = f.server.engine().sessions("alice").unwrap();
    assert_eq!(sessions.len(), 1, "only the offline_access grant made a family");
    // The issue call names the family (for the server's own records), and
    // never sends it to the client.
    assert_eq!(without.family, None);
    assert_eq!(with.family, Some(sessions[0].family));
    let body = String::from_utf8(with.clone().into_response().into_body().to_vec()).unwrap();
    assert!(!body.contains(&sessions[0].family.to_string()), "{body}");
    let bad = f
        .server
        .issue(&IssueRequest::new("", "spa", Scope::parse("offline_access").unwrap()));
    assert_eq!(bad.unwrap_err().code(), "invalid_input");
}

#[tokio::test]
async fn issue_async_issues_like_issue() {
    let f = fixture();
    let issued = f
        .server
        .issue_async(&IssueRequest::new(
            "carol",
            "spa",
            Scope::parse("openid offline_access").unwrap(),
        ))
        .await
        .unwrap();
    let family = issued.family.expect("a family");
    assert_eq!(
        f.server.engine().sessions_async("carol").await.unwrap()[0].family,
        family
    );
    assert_eq!(f.refresh_spa(&issued.refresh_token.unwrap()).status(), 200);
}
