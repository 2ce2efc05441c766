//! Abuse (issue 12, items 1-3; checklist rows 21 and 22): requests without
//! valid credentials cannot fill the DPoP replay cache, lock out a
//! client's owner, or erase a penalty.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use rotoken_http::PeerAddr;

fn now(f: &Fixture) -> i64 {
    f.clock.unix_millis() / 1000
}

fn from(mut req: http::Request<bytes::Bytes>, peer: [u8; 4]) -> http::Request<bytes::Bytes> {
    req.extensions_mut().insert(PeerAddr(IpAddr::from(peer)));
    req
}

fn refresh(client: &str, rt: &str) -> http::Request<bytes::Bytes> {
    post(
        "/oauth/token",
        &format!("grant_type=refresh_token&client_id={client}&refresh_token={rt}"),
    )
}

fn description(r: &http::Response<bytes::Bytes>) -> String {
    json(r)["error_description"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn proofs_sent_with_garbage_refresh_tokens_are_not_remembered() {
    let f = fixture_with(|c| c.dpop_replay_capacity = 50);
    let honest = DpopKey::es256(7);
    let rt = f.issue_bound("spa", "offline_access", Some(honest.jkt()));
    let t = now(&f);
    for i in 0..500u32 {
        let attacker = DpopKey::ed25519((i % 200) as u8);
        let req = with_dpop(
            refresh("spa", "garbage"),
            &attacker.proof("POST", TOKEN_URL, t, &format!("flood-{i}")),
        );
        assert_error(&f.server.handle(&req), 400, "invalid_grant");
    }
    let r = f.server.handle(&with_dpop(
        refresh("spa", &rt),
        &honest.proof("POST", TOKEN_URL, t, "honest"),
    ));
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
}

#[test]
fn a_full_replay_cache_never_refuses_a_valid_proof() {
    let f = fixture_with(|c| c.dpop_replay_capacity = 16);
    // The attacker holds a real token of their own (a signed-in user).
    let own = f.issue("spa", "offline_access");
    let t = now(&f);
    for i in 0..200u32 {
        let k = DpopKey::ed25519((i % 250) as u8 + 1);
        let req = with_dpop(refresh("spa", &own), &k.proof("POST", TOKEN_URL, t, &format!("a{i}")));
        let _ = f.server.handle(&req);
    }
    let honest = DpopKey::es256(9);
    let rt = f.issue_bound("spa", "offline_access", Some(honest.jkt()));
    for i in 0..3 {
        let r = f.server.handle(&with_dpop(
            refresh("spa", &rt),
            &honest.proof("POST", TOKEN_URL, t, &format!("h{i}")),
        ));
        assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    }
}

#[test]
fn one_keys_proofs_do_not_crowd_out_anothers() {
    let f = fixture_with(|c| c.dpop_replay_capacity = 64);
    let honest = DpopKey::es256(3);
    let rt = f.issue_bound("spa", "offline_access", Some(honest.jkt()));
    let t = now(&f);
    let proof = honest.proof("POST", TOKEN_URL, t, "honest-once");
    assert_eq!(f.server.handle(&with_dpop(refresh("spa", &rt), &proof)).status(), 200);
    // One key floods with a real token of its own.
    let own = f.issue("spa", "offline_access");
    let attacker = DpopKey::ed25519(77);
    for i in 0..1_000u32 {
        let req = with_dpop(
            refresh("spa", &own),
            &attacker.proof("POST", TOKEN_URL, t, &format!("x{i}")),
        );
        let _ = f.server.handle(&req);
    }
    // A new honest proof is accepted, and the first one is still
    // remembered: its replay is refused as a replay.
    let r = f.server.handle(&with_dpop(
        refresh("spa", &rt),
        &honest.proof("POST", TOKEN_URL, t, "honest-twice"),
    ));
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    let r = f.server.handle(&with_dpop(refresh("spa", &rt), &proof));
    assert_error(&r, 400, "invalid_dpop_proof");
    assert!(description(&r).contains("already used"), "{}", description(&r));
}

#[test]
fn server_nonces_are_off_by_default_and_required_when_on() {
    let f = fixture();
    let key = DpopKey::es256(4);
    let rt = f.issue_bound("spa", "offline_access", Some(key.jkt()));
    let r = f.server.handle(&with_dpop(
        refresh("spa", &rt),
        &key.proof("POST", TOKEN_URL, now(&f), "n0"),
    ));
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("dpop-nonce").is_none());

    let f = fixture_with(|c| {
        c.dpop_nonce = true;
        c.dpop_nonce_lifetime = Duration::from_secs(60);
    });
    let rt = f.issue_bound("spa", "offline_access", Some(key.jkt()));
    // RFC 9449 §8: no nonce, so the server answers use_dpop_nonce with one.
    let r = f.server.handle(&with_dpop(
        refresh("spa", &rt),
        &key.proof("POST", TOKEN_URL, now(&f), "n1"),
    ));
    assert_error(&r, 400, "use_dpop_nonce");
    let nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let proof = key.proof_with_nonce("POST", TOKEN_URL, now(&f), "n2", &nonce);
    let r = f.server.handle(&with_dpop(refresh("spa", &rt), &proof));
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    assert!(r.headers().get("dpop-nonce").is_some());
    let rt = json(&r)["refresh_token"].as_str().unwrap().to_owned();
    // A wrong nonce, or one two lifetimes old, gets a fresh nonce instead.
    let bad = key.proof_with_nonce("POST", TOKEN_URL, now(&f), "n3", "not-a-nonce");
    assert_error(
        &f.server.handle(&with_dpop(refresh("spa", &rt), &bad)),
        400,
        "use_dpop_nonce",
    );
    f.clock.advance(Duration::from_secs(121));
    let old = key.proof_with_nonce("POST", TOKEN_URL, now(&f), "n4", &nonce);
    let r = f.server.handle(&with_dpop(refresh("spa", &rt), &old));
    assert_error(&r, 400, "use_dpop_nonce");
    assert_ne!(r.headers()["dpop-nonce"].to_str().unwrap(), nonce, "nonces rotate");
    // The metadata does not change; a refused nonce did not revoke the family.
    let fresh = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let r = f.server.handle(&with_dpop(
        refresh("spa", &rt),
        &key.proof_with_nonce("POST", TOKEN_URL, now(&f), "n5", &fresh),
    ));
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
}

#[test]
fn wrong_secrets_from_one_address_never_lock_out_the_right_one() {
    let f = fixture();
    let rt = f.issue("web", "offline_access");
    let body = format!("grant_type=refresh_token&refresh_token={rt}");
    let peer = [192, 0, 2, 1];
    for _ in 0..30 {
        let r = f.server.handle(&from(
            basic(post("/oauth/token", &body), "web", "wrong-secret-0123456789"),
            peer,
        ));
        assert!(matches!(r.status().as_u16(), 401 | 429), "{}", r.status());
    }
    // The guesser is slowed: past the budget, failures answer 429 with Retry-After.
    let r = f.server.handle(&from(
        basic(post("/oauth/token", &body), "web", "wrong-secret-0123456789"),
        peer,
    ));
    assert_error(&r, 429, "invalid_client");
    assert!(r.headers().contains_key("retry-after"));
    // The owner, behind the same address, is answered.
    let r = f
        .server
        .handle(&from(basic(post("/oauth/token", &body), "web", WEB_SECRET), peer));
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
}

#[test]
fn bogus_secrets_sent_with_a_public_clients_id_never_lock_it_out() {
    let f = fixture();
    let rt = f.issue("spa", "offline_access");
    let peer = [192, 0, 2, 2];
    for i in 0..30 {
        let body = format!("grant_type=refresh_token&client_id=spa&client_secret=bogus-{i}&refresh_token={rt}");
        let r = f.server.handle(&from(post("/oauth/token", &body), peer));
        assert!(matches!(r.status().as_u16(), 401 | 429), "{}", r.status());
    }
    let r = f.server.handle(&from(refresh("spa", &rt), peer));
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
}

#[test]
fn a_flood_of_junk_client_ids_cannot_erase_a_penalty() {
    let f = fixture();
    let rt = f.issue("web", "offline_access");
    let body = format!("grant_type=refresh_token&refresh_token={rt}");
    let peer = [192, 0, 2, 3];
    let wrong = || {
        from(
            basic(post("/oauth/token", &body), "web", "wrong-secret-0123456789"),
            peer,
        )
    };
    for _ in 0..10 {
        let _ = f.server.handle(&wrong());
    }
    assert_error(&f.server.handle(&wrong()), 429, "invalid_client");
    for i in 0..20_000 {
        if i % 10 == 0 {
            f.clock.advance(Duration::from_millis(1));
        }
        let junk = format!("grant_type=refresh_token&client_id=junk-{i}&refresh_token=x");
        let _ = f.server.handle(&from(post("/oauth/token", &junk), peer));
    }
    assert_error(&f.server.handle(&wrong()), 429, "invalid_client");
}

#[test]
fn forwarded_addresses_count_only_from_trusted_proxies() {
    let f = fixture_with(|c| c.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()]);
    let rt = f.issue("web", "offline_access");
    let body = format!("grant_type=refresh_token&refresh_token={rt}");
    let wrong = |peer: [u8; 4], forwarded: &str| {
        let mut r = from(
            basic(post("/oauth/token", &body), "web", "wrong-secret-0123456789"),
            peer,
        );
        if !forwarded.is_empty() {
            r.headers_mut().insert("x-forwarded-for", forwarded.parse().unwrap());
        }
        f.server.handle(&r).status().as_u16()
    };
    // Behind the trusted proxy, one guessing user is slowed...
    for _ in 0..10 {
        assert_eq!(wrong([10, 0, 0, 1], "203.0.113.5"), 401);
    }
    assert_eq!(wrong([10, 0, 0, 1], "203.0.113.5"), 429);
    // ...another user behind the same proxy is not.
    assert_eq!(wrong([10, 0, 0, 1], "198.51.100.7, 10.0.0.2"), 401);
    // The same header from an untrusted peer is ignored: the peer is the key.
    for _ in 0..10 {
        assert_eq!(wrong([192, 0, 2, 9], "203.0.113.77"), 401);
    }
    assert_eq!(wrong([192, 0, 2, 9], "198.51.100.99"), 429);
    // RFC 7239 Forwarded is read too.
    let mut r = from(
        basic(post("/oauth/token", &body), "web", "wrong-secret-0123456789"),
        [10, 0, 0, 1],
    );
    r.headers_mut()
        .insert("forwarded", "for=203.0.113.5;proto=https".parse().unwrap());
    assert_eq!(f.server.handle(&r).status(), 429);
}

#[test]
fn a_flood_of_rejections_logs_a_summary_not_a_line_each() {
    let f = fixture();
    let (_, logs) = capture_logs(|| {
        for i in 0..1_000 {
            let body = format!("grant_type=refresh_token&client_id=junk-{i}&refresh_token=garbage");
            let _ = f.server.handle(&post("/oauth/token", &body));
            let _ = f.server.handle(&refresh("spa", "garbage"));
        }
        f.clock.advance(Duration::from_secs(11));
        let _ = f.server.handle(&refresh("spa", "garbage"));
    });
    let above_debug: Vec<&str> = logs
        .lines()
        .filter(|l| !l.contains("DEBUG") && !l.contains("TRACE"))
        .collect();
    assert_eq!(above_debug.len(), 2, "{above_debug:#?}");
    assert!(above_debug.iter().all(|l| l.contains("requests rejected")));
    let plain: String = above_debug[1]
        .replace("\u{1b}[0m", "")
        .replace("\u{1b}[2m", "")
        .replace("\u{1b}[3m", "");
    assert!(plain.contains("rejected=2000"), "{plain}");
    assert!(
        plain.contains("invalid_client=999") && plain.contains("invalid_grant=1001"),
        "{plain}"
    );
}
