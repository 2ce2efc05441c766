//! Revocation (RFC 7009), introspection (RFC 7662), metadata (RFC 8414)
//! and the JWK Set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use http::Request;

fn revoke(f: &Fixture, client: &str, secret: &str, token: &str) -> http::Response<bytes::Bytes> {
    f.server
        .handle(&basic(post("/oauth/revoke", &format!("token={token}")), client, secret))
}

fn introspect(f: &Fixture, client: &str, secret: &str, token: &str) -> serde_json::Value {
    let r = f.server.handle(&basic(
        post("/oauth/introspect", &format!("token={token}")),
        client,
        secret,
    ));
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    assert_eq!(r.headers()["cache-control"], "no-store");
    json(&r)
}

#[test]
fn revoking_any_token_of_a_family_revokes_the_family() {
    let f = fixture();
    let rt0 = f.issue("web", "offline_access");
    let body = format!("grant_type=refresh_token&refresh_token={rt0}");
    let rt1 = json(&f.server.handle(&basic(post("/oauth/token", &body), "web", WEB_SECRET)))["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Revoking with the retired token revokes the family, current token included.
    let r = revoke(&f, "web", WEB_SECRET, &rt0);
    assert_eq!(r.status(), 200);
    assert!(r.body().is_empty());
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(
        introspect(&f, "web", WEB_SECRET, &rt1),
        serde_json::json!({"active": false})
    );
    let body = format!("grant_type=refresh_token&refresh_token={rt1}");
    assert_error(
        &f.server.handle(&basic(post("/oauth/token", &body), "web", WEB_SECRET)),
        400,
        "invalid_grant",
    );
    assert_eq!(f.server.metrics().revocations(), 1);
    // Again, and unknown or garbage tokens: 200, as RFC 7009 §2.2 says.
    assert_eq!(revoke(&f, "web", WEB_SECRET, &rt1).status(), 200);
    assert_eq!(revoke(&f, "web", WEB_SECRET, "garbage").status(), 200);
    assert_eq!(revoke(&f, "web", WEB_SECRET, &"x".repeat(10_000)).status(), 200);
}

#[test]
fn revocation_needs_the_owning_client() {
    let f = fixture();
    let rt = f.issue("web", "offline_access");
    assert_error(
        &f.server.handle(&post("/oauth/revoke", &format!("token={rt}"))),
        401,
        "invalid_client",
    );
    assert_error(
        &revoke(&f, "web", "wrong-secret-0123456789", &rt),
        401,
        "invalid_client",
    );
    assert_error(&revoke(&f, "other", OTHER_SECRET, &rt), 400, "unauthorized_client");
    assert!(introspect(&f, "web", WEB_SECRET, &rt)["active"].as_bool().unwrap());
    // An old token of web's family, presented by another client, revokes
    // nothing either (row 15 of the reliability checklist).
    let old = f.issue("spa", "offline_access");
    let current = json(&f.refresh_spa(&old))["refresh_token"].as_str().unwrap().to_owned();
    assert_error(&revoke(&f, "other", OTHER_SECRET, &old), 400, "unauthorized_client");
    assert!(f.server.engine().introspect(&current).unwrap().active);
    // A public client revokes its own tokens with its id alone.
    let spa = f.issue("spa", "offline_access");
    let r = f.server.handle(&post(
        "/oauth/revoke",
        &format!("client_id=spa&token={spa}&token_type_hint=refresh_token"),
    ));
    assert_eq!(r.status(), 200);
    assert!(!f.server.engine().introspect(&spa).unwrap().active);
}

#[test]
fn access_tokens_cannot_be_revoked_but_can_be_introspected() {
    let f = fixture();
    let rt = f.issue("spa", "openid offline_access");
    let at = json(&f.refresh_spa(&rt))["access_token"].as_str().unwrap().to_owned();
    let r = f
        .server
        .handle(&post("/oauth/revoke", &format!("client_id=spa&token={at}")));
    assert_error(&r, 400, "unsupported_token_type");
    let v = introspect(&f, "rs", RS_SECRET, &at);
    assert_eq!(v["active"], true);
    assert_eq!(v["sub"], "alice");
    assert_eq!(v["client_id"], "spa");
    assert_eq!(v["token_type"], "Bearer");
}

#[test]
fn introspection_is_for_authenticated_callers_and_shows_rfc7662_fields() {
    let f = fixture();
    let key = DpopKey::ed25519(1);
    let rt = f.issue_bound("spa", "openid offline_access", Some(key.jkt()));
    // Public clients cannot authenticate; nobody is a 401.
    let r = f
        .server
        .handle(&post("/oauth/introspect", &format!("client_id=spa&token={rt}")));
    assert_error(&r, 401, "invalid_client");
    assert_error(
        &f.server.handle(&post("/oauth/introspect", &format!("token={rt}"))),
        401,
        "invalid_client",
    );
    // A resource server sees everything.
    let v = introspect(&f, "rs", RS_SECRET, &rt);
    assert_eq!(v["active"], true);
    assert_eq!(v["scope"], "offline_access openid");
    assert_eq!(v["client_id"], "spa");
    assert_eq!(v["sub"], "alice");
    assert_eq!(v["token_type"], "refresh_token");
    assert_eq!(v["iss"], ISSUER);
    assert_eq!(v["cnf"]["jkt"], key.jkt().as_str());
    assert_eq!(v["iat"], START_MS / 1000);
    assert!(v["exp"].as_i64().unwrap() > START_MS / 1000);
    // Another confidential client sees only its own tokens.
    assert_eq!(
        introspect(&f, "web", WEB_SECRET, &rt),
        serde_json::json!({"active": false})
    );
    let own = f.issue("web", "offline_access");
    assert_eq!(introspect(&f, "web", WEB_SECRET, &own)["active"], true);
    // Garbage is inactive, never an error.
    assert_eq!(
        introspect(&f, "rs", RS_SECRET, "garbage"),
        serde_json::json!({"active": false})
    );
}

#[test]
fn metadata_and_jwks_let_standard_clients_configure_themselves() {
    let f = fixture_with(|c| {
        c.authorization_endpoint = Some("https://as.example/authorize".into());
        c.extra_grant_types = vec!["authorization_code".into()];
    });
    let r = f.server.handle(
        &Request::get("/.well-known/oauth-authorization-server")
            .body(bytes::Bytes::new())
            .unwrap(),
    );
    assert_eq!(r.status(), 200);
    let m = json(&r);
    assert_eq!(m["issuer"], ISSUER);
    assert_eq!(m["token_endpoint"], TOKEN_URL);
    assert_eq!(m["revocation_endpoint"], "https://as.example/oauth/revoke");
    assert_eq!(m["introspection_endpoint"], "https://as.example/oauth/introspect");
    assert_eq!(m["jwks_uri"], "https://as.example/oauth/jwks");
    assert_eq!(m["authorization_endpoint"], "https://as.example/authorize");
    assert_eq!(
        m["grant_types_supported"],
        serde_json::json!(["refresh_token", "authorization_code"])
    );
    assert_eq!(
        m["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post", "none"])
    );
    assert_eq!(
        m["dpop_signing_alg_values_supported"],
        serde_json::json!(["ES256", "EdDSA"])
    );

    let r = f
        .server
        .handle(&Request::get("/oauth/jwks").body(bytes::Bytes::new()).unwrap());
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/jwk-set+json");
    let jwks = json(&r);
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["alg"], "EdDSA");
    assert!(key.get("d").is_none(), "never the private key");
    // The published key verifies a minted access token.
    let rt = f.issue("spa", "offline_access");
    let at = json(&f.refresh_spa(&rt))["access_token"].as_str().unwrap().to_owned();
    let header = jsonwebtoken::decode_header(&at).unwrap();
    assert_eq!(header.kid.as_deref(), key["kid"].as_str());
    let dk = jsonwebtoken::DecodingKey::from_ed_components(key["x"].as_str().unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.validate_exp = false;
    v.validate_aud = false;
    assert!(jsonwebtoken::decode::<serde_json::Value>(&at, &dk, &v).is_ok());
}
