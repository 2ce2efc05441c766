//! Upgrades, PostgreSQL: every fixture dump of an earlier release
//! (`crates/rotoken-conformance/fixtures/*/postgres.sql`), loaded into a
//! fresh throwaway database, opens in this release, and every token in it
//! answers as it did; a newer schema is refused with nothing written. The
//! redb half and the scenario are in rotoken-conformance.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../rotoken-conformance/tests/fixture/mod.rs"]
mod fixture;

use std::path::Path;

use fixture::{fixture_clock, fixture_dirs, fixture_keys, options, read_fixture};
use rotoken::{Engine, OpenError};
use rotoken_postgres::testing::{self, TestDb};
use rotoken_postgres::{PgOptions, PostgresStore, SCHEMA_VERSION};

/// The flags the fixture dumps are written with: no roles of the machine
/// that wrote them.
const DUMP_FLAGS: &[&str] = &["--format=plain", "--no-owner", "--no-privileges"];

/// A fresh database holding the fixture's dump, or `None` without PostgreSQL.
fn loaded(dir: &Path) -> Option<TestDb> {
    let db = testing::database()?;
    db.run_sql_script(&std::fs::read(dir.join("postgres.sql")).unwrap())
        .unwrap();
    Some(db)
}

/// A dump without pg_dump's per-run random `\restrict` keys.
fn comparable(dump: &[u8]) -> Vec<&[u8]> {
    dump.split(|b| *b == b'\n')
        .filter(|l| !l.starts_with(b"\\restrict") && !l.starts_with(b"\\unrestrict"))
        .collect()
}

#[test]
fn every_token_of_every_earlier_release_keeps_its_meaning() {
    for dir in fixture_dirs() {
        let Some(db) = loaded(&dir) else { return };
        let fixture = read_fixture(&dir.join("postgres.json"));
        let store = PostgresStore::connect_with(db.config().clone(), PgOptions::default()).unwrap();
        let engine = Engine::with_store(store, fixture_keys(&dir), options(&fixture_clock(&fixture))).unwrap();
        fixture::verify_upgraded(&engine, &fixture, SCHEMA_VERSION);
    }
}

#[test]
fn a_fixture_with_a_newer_schema_is_refused_and_not_written() {
    for dir in fixture_dirs() {
        let Some(db) = loaded(&dir) else { return };
        let newer = SCHEMA_VERSION + 1;
        db.sql()
            .unwrap()
            .execute(&format!("INSERT INTO rotoken_migrations (version) VALUES ({newer})"))
            .unwrap();
        let before = db.pg_dump().unwrap();
        let err = db.store().unwrap_err();
        assert!(
            matches!(err, OpenError::UnsupportedSchema { found, supported }
                if found == newer && supported == SCHEMA_VERSION),
            "{err}"
        );
        assert_eq!(err.code().as_str(), "unsupported_schema");
        assert!(
            comparable(&db.pg_dump().unwrap()) == comparable(&before),
            "{}: opening a newer schema changed the database",
            dir.display()
        );
    }
}

/// Writes this release's PostgreSQL fixture into `fixtures/$ROTOKEN_FIXTURE`
/// (see fixtures/README.md), then checks it loaded into another database.
#[test]
#[ignore = "writes a new fixture: ROTOKEN_FIXTURE=<name> cargo test -p rotoken-postgres --test upgrade -- --ignored"]
fn write_postgres_fixture() {
    let db = testing::database().expect("PostgreSQL is needed to write the fixture");
    let dir = fixture::new_fixture_dir(&["postgres.sql", "postgres.json"]);
    let keys = dir.join("rotoken.keys");
    if !keys.exists() {
        std::fs::write(&keys, fixture::KEY_FILE).unwrap();
    }
    let fixture = fixture::scenario("postgres", SCHEMA_VERSION, &|keys, options| {
        Engine::with_store(db.store().unwrap(), keys, options).unwrap()
    });
    std::fs::write(dir.join("postgres.sql"), db.pg_dump_with(DUMP_FLAGS).unwrap()).unwrap();
    fixture::write_fixture(&dir.join("postgres.json"), &fixture);
    let copy = loaded(&dir).unwrap();
    let engine = Engine::with_store(
        copy.store().unwrap(),
        fixture_keys(&dir),
        options(&fixture_clock(&fixture)),
    )
    .unwrap();
    fixture::verify(&engine, &fixture);
}
