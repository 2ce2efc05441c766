//! Standards (issue 12, items 7-11): `aud` on access tokens (RFC 9068),
//! revocation reaching access tokens at introspection (RFC 7009 §2.1),
//! metadata that advertises only what is served (RFC 8414), refresh token
//! expiry in the token response, and a stable cause for reuse refusals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use http::Request;
use serde_json::{Value, json};

fn introspect(f: &Fixture, token: &str) -> Value {
    json(&f.server.handle(&basic(
        post("/oauth/introspect", &format!("token={token}")),
        "rs",
        RS_SECRET,
    )))
}

fn metadata(f: &Fixture) -> Value {
    json(
        &f.server.handle(
            &Request::get("/.well-known/oauth-authorization-server")
                .body(bytes::Bytes::new())
                .unwrap(),
        ),
    )
}

#[test]
fn access_tokens_carry_an_audience_server_wide_or_per_client() {
    let f = fixture();
    let rt = f.issue("spa", "offline_access");
    let at = json(&f.refresh_spa(&rt))["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&at)["aud"], ISSUER, "default: the issuer");
    // A verifier that insists on the audience accepts it.
    let jwks = json(
        &f.server
            .handle(&Request::get("/oauth/jwks").body(bytes::Bytes::new()).unwrap()),
    );
    let dk = jsonwebtoken::DecodingKey::from_ed_components(jwks["keys"][0]["x"].as_str().unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.validate_exp = false;
    v.set_audience(&[ISSUER]);
    assert!(jsonwebtoken::decode::<Value>(&at, &dk, &v).is_ok());

    let rt = f.issue("api-spa", "offline_access");
    let r = f.server.handle(&post(
        "/oauth/token",
        &format!("grant_type=refresh_token&client_id=api-spa&refresh_token={rt}"),
    ));
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    assert_eq!(claims(json(&r)["access_token"].as_str().unwrap())["aud"], API_AUDIENCE);

    let f = fixture_with(|c| c.access_token_audience = Some("https://rs.example".into()));
    let rt = f.issue("spa", "offline_access");
    let at = json(&f.refresh_spa(&rt))["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&at)["aud"], "https://rs.example");
}

#[test]
fn revoking_a_family_makes_its_access_tokens_inactive_at_introspection() {
    let f = fixture();
    let rt = f.issue("spa", "offline_access");
    let r = json(&f.refresh_spa(&rt));
    let at = r["access_token"].as_str().unwrap().to_owned();
    let rt = r["refresh_token"].as_str().unwrap().to_owned();
    let i = introspect(&f, &at);
    assert_eq!(i["active"], true, "{i}");
    assert!(claims(&at)["sid"].is_string(), "the access token names its family");
    let revoked = f
        .server
        .handle(&post("/oauth/revoke", &format!("client_id=spa&token={rt}")));
    assert_eq!(revoked.status(), 200);
    assert_eq!(introspect(&f, &at), json!({"active": false}));
    // An access token outside any family lives until it expires.
    let plain = f
        .server
        .issue(&rotoken_http::IssueRequest::new(
            "alice",
            "spa",
            rotoken::Scope::parse("openid").unwrap(),
        ))
        .unwrap();
    assert!(plain.refresh_token.is_none());
    assert_eq!(introspect(&f, &plain.access_token)["active"], true);
}

#[test]
fn metadata_advertises_only_what_is_served() {
    let f = fixture();
    let m = metadata(&f);
    assert!(m.get("response_types_supported").is_none(), "{m}");
    assert!(m.get("authorization_endpoint").is_none());
    assert_eq!(m["refresh_token_expires_in_supported"], true);
    let f = fixture_with(|c| c.authorization_endpoint = Some("https://as.example/authorize".into()));
    assert_eq!(metadata(&f)["response_types_supported"], json!(["code"]));
}

#[test]
fn the_token_response_says_when_the_refresh_token_expires() {
    let f = fixture();
    let first = f
        .server
        .issue(&rotoken_http::IssueRequest::new(
            "alice",
            "spa",
            rotoken::Scope::parse("offline_access").unwrap(),
        ))
        .unwrap();
    let idle = rotoken::Policy::default().idle_lifetime.as_secs();
    let absolute = rotoken::Policy::default().absolute_lifetime.as_secs();
    assert_eq!(first.refresh_token_expires_in, Some(idle));
    assert_eq!(first.authorization_expires_in, Some(absolute));
    f.clock.advance(Duration::from_secs(100));
    let r = json(&f.refresh_spa(first.refresh_token.as_deref().unwrap()));
    assert_eq!(r["refresh_token_expires_in"], idle, "{r}");
    // The authorization's end does not move with a rotation.
    assert_eq!(r["authorization_expires_in"], absolute - 100, "{r}");
}

#[test]
fn a_reuse_refusal_names_its_cause() {
    let f = fixture();
    let rt0 = f.issue("spa", "offline_access");
    assert_eq!(f.refresh_spa(&rt0).status(), 200);
    f.clock.advance(Duration::from_secs(31));
    let r = f.refresh_spa(&rt0);
    assert_error(&r, 400, "invalid_grant");
    let d = json(&r)["error_description"].as_str().unwrap().to_owned();
    assert!(d.starts_with("refresh_token_reused:"), "{d}");
    // Afterwards the family is simply revoked, with its own cause.
    let d = json(&f.refresh_spa(&rt0))["error_description"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(d.starts_with("session_revoked:"), "{d}");
}

#[test]
fn nothing_is_issued_for_an_unregistered_client() {
    let f = fixture();
    let r = f.server.issue(&rotoken_http::IssueRequest::new(
        "alice",
        "nobody",
        rotoken::Scope::parse("offline_access").unwrap(),
    ));
    assert!(matches!(r, Err(rotoken_http::IssueTokensError::UnknownClient)), "{r:?}");
    assert_eq!(f.server.engine().families_count().unwrap(), 0);
}
