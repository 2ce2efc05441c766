//! `POST /admin/families` names the DPoP key thumbprint a family is bound
//! to `confirmation`, as the core (`Grant::confirmation`), `IssueRequest`
//! and `rotoken issue --confirmation` do; `dpop_jkt`, its former name, is
//! still accepted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::Request;
use rotoken_http::{AdminApi, SecretHash};

const ADMIN_TOKEN: &str = "admin-token-0123456789";

fn issue(api: &AdminApi, body: String) -> serde_json::Value {
    let request = Request::post("/admin/families")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/json")
        .body(Bytes::from(body))
        .unwrap();
    let r = api.handle(&request);
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    json(&r)
}

#[test]
fn the_admin_api_binds_a_family_by_confirmation_and_by_its_former_name() {
    let f = fixture();
    let api = AdminApi::new(
        Arc::clone(&f.server),
        Some(SecretHash::new(ADMIN_TOKEN.as_bytes()).unwrap()),
    );
    let jkt = DpopKey::es256(1).jkt();
    for field in ["confirmation", "dpop_jkt"] {
        let v = issue(
            &api,
            format!(r#"{{"subject":"alice","client_id":"spa","scope":"offline_access","{field}":"{jkt}"}}"#),
        );
        assert_eq!(v["token_type"], "DPoP", "{field}: {v}");
        // The family is bound: a refresh without a proof is refused.
        let r = f.refresh_spa(v["refresh_token"].as_str().unwrap());
        assert_eq!(r.status(), 400, "{field}");
    }
    let unbound = issue(
        &api,
        r#"{"subject":"alice","client_id":"spa","scope":"offline_access"}"#.to_owned(),
    );
    assert_eq!(unbound["token_type"], "Bearer");
}
