//! `POST /admin/backup` writes only into the configured backup directory:
//! without one it is off, and a path elsewhere is refused before anything
//! is written (an admin token is not a way to write files anywhere).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::Request;
use rotoken_http::{AdminApi, SecretHash};

const ADMIN_TOKEN: &str = "admin-token-0123456789";

fn backup(api: &AdminApi, path: &Path) -> (u16, serde_json::Value) {
    let request = Request::post("/admin/backup")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/json")
        .body(Bytes::from(serde_json::json!({ "path": path }).to_string()))
        .unwrap();
    let r = api.handle(&request);
    (r.status().as_u16(), json(&r))
}

fn api(f: &Fixture) -> AdminApi {
    AdminApi::new(
        Arc::clone(&f.server),
        Some(SecretHash::new(ADMIN_TOKEN.as_bytes()).unwrap()),
    )
}

#[test]
fn without_a_backup_directory_admin_backups_are_off() {
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    let (status, v) = backup(&api(&f), &out.path().join("b.redb"));
    assert_eq!((status, v["error"].as_str()), (403, Some("backup_disabled")), "{v}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

#[test]
fn a_path_outside_the_backup_directory_is_refused_and_nothing_is_written() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("backups");
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let f = fixture_with(|c| c.backup_dir = Some(dir.clone()));
    let api = api(&f);
    for path in [
        elsewhere.join("b.redb"),
        dir.join("..").join("elsewhere").join("b.redb"),
        Path::new("b.redb").to_path_buf(),
        dir.clone(),
    ] {
        let (status, v) = backup(&api, &path);
        assert_eq!(
            (status, v["error"].as_str()),
            (400, Some("backup_path_refused")),
            "{path:?}: {v}"
        );
    }
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}
