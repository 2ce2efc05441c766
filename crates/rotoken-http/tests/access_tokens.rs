//! Access tokens an integrator controls: extra claims from the grant's
//! metadata, reserved claims refused, several published keys across a
//! signing-key rotation, and one clock for the endpoints and the minter.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{ISSUER, START_MS, assert_error, basic, claims, default_minter, fixture_with_minter, json, post};
use rotoken::Scope;
use rotoken_http::{
    AccessTokenMinter, AccessTokenRequest, IssueRequest, JwtMinter, MintError, RESERVED_CLAIMS, RetiredKey, SigningKey,
    SigningKeys,
};
use serde_json::{Map, Value};
use time::OffsetDateTime;

fn jwks(f: &common::Fixture) -> Vec<String> {
    let r = f
        .server
        .handle(&http::Request::get("/oauth/jwks").body(bytes::Bytes::new()).unwrap());
    json(&r)["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn introspect(f: &common::Fixture, token: &str) -> Value {
    let r = f.server.handle(&basic(
        post("/oauth/introspect", &format!("token={token}")),
        "rs",
        common::RS_SECRET,
    ));
    json(&r)
}

#[test]
fn a_claims_hook_adds_claims_from_the_grant_metadata_at_issue_and_at_every_refresh() {
    let minter = default_minter().with_claims(|request| {
        let mut extra: Map<String, Value> = serde_json::from_slice(request.metadata)?;
        extra.insert("tenant".into(), "acme".into());
        Ok(extra)
    });
    let f = fixture_with_minter(minter, |_| {});
    let mut issue = IssueRequest::new("alice", "spa", Scope::parse("openid offline_access").unwrap());
    issue.metadata = br#"{"acr":"urn:mfa","amr":["pwd","otp"]}"#.to_vec();
    let first = f.server.issue(&issue).unwrap();
    let c = claims(&first.access_token);
    assert_eq!(
        (c["acr"].as_str(), c["tenant"].as_str()),
        (Some("urn:mfa"), Some("acme"))
    );
    assert_eq!(c["sub"], "alice");

    let refreshed = json(&f.refresh_spa(first.refresh_token.as_deref().unwrap()));
    let access = refreshed["access_token"].as_str().unwrap();
    assert_eq!(claims(access)["amr"][1], "otp");
    // Introspection hands the extra claims back.
    let i = introspect(&f, access);
    assert_eq!(
        (i["active"].as_bool(), i["acr"].as_str()),
        (Some(true), Some("urn:mfa"))
    );
}

#[test]
fn a_hook_cannot_override_a_reserved_claim() {
    let scope = Scope::parse("openid").unwrap();
    for name in RESERVED_CLAIMS {
        let minter = default_minter().with_claims(move |_| {
            let mut m = Map::new();
            m.insert(name.into(), "forged".into());
            Ok(m)
        });
        let err = minter
            .sign(&AccessTokenRequest::new("alice", "web", &scope))
            .unwrap_err();
        assert!(
            matches!(&err, MintError::ReservedClaim(c) if c == name),
            "{name}: {err}"
        );
    }
    // Through the endpoint it is a server error, never a token with a forged claim.
    let forging = default_minter().with_claims(|_| {
        let mut m = Map::new();
        m.insert("sub".into(), "admin".into());
        Ok(m)
    });
    let f = fixture_with_minter(forging, |_| {});
    let issued = f.server.issue(&IssueRequest::new(
        "alice",
        "spa",
        Scope::parse("offline_access").unwrap(),
    ));
    assert!(matches!(
        issued,
        Err(rotoken_http::IssueTokensError::Mint(MintError::ReservedClaim(_)))
    ));
}

#[test]
fn a_failing_hook_fails_the_refresh_with_a_server_error() {
    let f = fixture_with_minter(
        default_minter().with_claims(|request| Ok(serde_json::from_slice(request.metadata)?)),
        |_| {},
    );
    let mut issue = IssueRequest::new("alice", "spa", Scope::parse("offline_access").unwrap());
    issue.metadata = b"{}".to_vec();
    let rt = f.server.issue(&issue).unwrap().refresh_token.unwrap();
    assert_eq!(f.refresh_spa(&rt).status(), 200);
    // Metadata the hook cannot read: the mint fails, the error is the hook's.
    let mut bad = IssueRequest::new("bob", "spa", Scope::parse("offline_access").unwrap());
    bad.metadata = b"not json".to_vec();
    let err = f.server.issue(&bad).unwrap_err();
    assert!(
        matches!(&err, rotoken_http::IssueTokensError::Mint(MintError::Other(e)) if e.is::<serde_json::Error>()),
        "{err}"
    );
}

#[test]
fn after_a_key_rotation_old_tokens_verify_until_they_expire_and_both_keys_are_published() {
    let old_key = SigningKey::ed25519_from_seed([42; 32]);
    let new_key = SigningKey::ed25519_from_seed([43; 32]);
    let lifetime = Duration::from_secs(300);
    // A token minted before the rotation, by the old minter, at START.
    let before = fixture_with_minter(default_minter(), |_| {});
    let rt = before.issue("spa", "openid offline_access");
    let old_access = json(&before.refresh_spa(&rt))["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(jwks(&before), [old_key.kid()]);

    // The server restarts with the rotated keys (retired at START).
    let retired_at = OffsetDateTime::from_unix_timestamp(START_MS / 1000).unwrap();
    let mut keys = SigningKeys::new(new_key.clone());
    keys.previous.push(RetiredKey::new(old_key.clone(), retired_at));
    let after = fixture_with_minter(JwtMinter::from_keys(keys, ISSUER, lifetime), |_| {});
    assert_eq!(jwks(&after), [new_key.kid(), old_key.kid()]);
    let minted = after
        .server
        .issue(&IssueRequest::new("alice", "web", Scope::parse("openid").unwrap()))
        .unwrap();
    let header = jsonwebtoken::decode_header(&minted.access_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(new_key.kid()), "new tokens use the new key");
    // The old token still verifies by its kid (its family lives in the other
    // fixture's database, so only the minter's own check is asked here).
    let minter = JwtMinter::from_keys(
        {
            let mut k = SigningKeys::new(new_key.clone());
            k.previous.push(RetiredKey::new(old_key.clone(), retired_at));
            k
        },
        ISSUER,
        lifetime,
    );
    assert!(
        minter
            .introspect_at(&old_access, retired_at + Duration::from_secs(299))
            .is_some()
    );
    assert!(
        minter.introspect_at(&old_access, retired_at + lifetime).is_none(),
        "expired"
    );

    // Once every token of the old key has expired, it is no longer published.
    after.clock.advance(lifetime);
    assert_eq!(jwks(&after), [new_key.kid()]);
}

#[test]
fn the_server_clock_drives_the_minter_so_a_manual_clock_is_wired_in_two_places_not_three() {
    // default_minter() has no clock of its own (it would be the system's).
    let f = fixture_with_minter(default_minter(), |_| {});
    let rt = f.issue("spa", "openid offline_access");
    let access = json(&f.refresh_spa(&rt))["access_token"].as_str().unwrap().to_owned();
    let c = claims(&access);
    assert_eq!(
        c["iat"].as_i64(),
        Some(START_MS / 1000),
        "minted at the manual clock's time"
    );
    assert!(introspect(&f, &access)["active"].as_bool().unwrap());
    f.clock.advance(Duration::from_secs(300));
    assert_eq!(introspect(&f, &access)["active"], false, "expired on the manual clock");
    // A refused refresh still answers on the same clock.
    assert_error(&f.refresh_spa("rt1_garbage"), 400, "invalid_grant");
}
