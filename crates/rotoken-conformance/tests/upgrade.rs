//! Upgrades, redb: every fixture database of an earlier release
//! (`fixtures/*/tokens.redb`) opens in this one, and every token in it
//! answers as it did; a newer schema is refused with nothing written.
//! The PostgreSQL half is `crates/rotoken-postgres/tests/upgrade.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fixture;

use std::path::Path;

use fixture::{fixture_clock, fixture_dirs, fixture_keys, options, read_fixture};
use rotoken::{Engine, OpenError, RedbStore, SCHEMA_VERSION};

/// A copy of a fixture's database in a temporary directory.
fn copy_of(fixture: &Path) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.redb");
    std::fs::copy(fixture.join("tokens.redb"), &path).unwrap();
    (dir, path)
}

#[test]
fn every_token_of_every_earlier_release_keeps_its_meaning() {
    for dir in fixture_dirs() {
        let fixture = read_fixture(&dir.join("redb.json"));
        let (_tmp, path) = copy_of(&dir);
        let engine = Engine::open(&path, fixture_keys(&dir), options(&fixture_clock(&fixture))).unwrap();
        fixture::verify_upgraded(&engine, &fixture, SCHEMA_VERSION);
    }
}

#[test]
fn a_fixture_with_a_newer_schema_is_refused_and_not_written() {
    for dir in fixture_dirs() {
        let (_tmp, path) = copy_of(&dir);
        {
            const META: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("meta");
            let db = redb::Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema_version", (SCHEMA_VERSION + 1).to_be_bytes().as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let err = RedbStore::open(&path, None).unwrap_err();
        assert!(
            matches!(err, OpenError::UnsupportedSchema { found, supported }
                if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
            "{err}"
        );
        assert_eq!(err.code().as_str(), "unsupported_schema");
        let err = Engine::open(&path, fixture_keys(&dir), rotoken::Options::default()).unwrap_err();
        assert!(matches!(err, OpenError::UnsupportedSchema { .. }), "{err}");
        assert!(
            std::fs::read(&path).unwrap() == before,
            "{}: a newer schema was written to",
            dir.display()
        );
    }
}

/// Writes this release's redb fixture into `fixtures/$ROTOKEN_FIXTURE`
/// (see fixtures/README.md), then checks a copy of it.
#[test]
#[ignore = "writes a new fixture: ROTOKEN_FIXTURE=<name> cargo test -p rotoken-conformance --test upgrade -- --ignored"]
fn write_redb_fixture() {
    let dir = fixture::new_fixture_dir(&["tokens.redb", "redb.json"]);
    let keys = dir.join("rotoken.keys");
    if !keys.exists() {
        std::fs::write(&keys, fixture::KEY_FILE).unwrap();
    }
    let path = dir.join("tokens.redb");
    let fixture = fixture::scenario("redb", SCHEMA_VERSION, &|keys, options| {
        Engine::open(&path, keys, options).unwrap()
    });
    fixture::write_fixture(&dir.join("redb.json"), &fixture);
    let (_tmp, copy) = copy_of(&dir);
    let engine = Engine::open(&copy, fixture_keys(&dir), options(&fixture_clock(&fixture))).unwrap();
    fixture::verify(&engine, &fixture);
}
