//! The conformance suite (crates/rotoken-conformance) against PostgreSQL:
//! every test in its own database of the test server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rotoken::store::Store;
use rotoken::{OpenError, Options};
use rotoken_conformance::{Backend, Database};
use rotoken_postgres::testing::{self, TestDb};
use rotoken_postgres::{PgOptions, PostgresStore};

/// Databases of the test server (see `rotoken_postgres::testing`).
struct PostgresBackend;

/// The backend, or `None` (SKIPPED, outside CI) without PostgreSQL.
fn postgres() -> Option<PostgresBackend> {
    testing::database().map(|_| PostgresBackend)
}

struct PgDatabase(TestDb);

impl Backend for PostgresBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn create(&self) -> Box<dyn Database> {
        Box::new(PgDatabase(
            testing::database().expect("PostgreSQL was there a moment ago"),
        ))
    }

    /// Each case is a fresh database (a `CREATE DATABASE`): fewer than
    /// redb's 256 keeps the suite near a minute and a half on two cores.
    fn model_cases(&self) -> u32 {
        32
    }
}

impl PgDatabase {
    fn admin(&self, sql: &str) {
        self.0.admin_sql().unwrap().execute(sql).unwrap();
    }

    /// Ends every other session of database `name` (closed engines'
    /// connections may still be closing) so it can be copied or dropped.
    fn disconnect(&self, name: &str) {
        self.admin(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ));
    }

    fn copy_name(&self, name: &str) -> String {
        let safe: String = name.chars().filter(char::is_ascii_alphanumeric).collect();
        format!("{}_{safe}", self.0.name())
    }
}

impl Database for PgDatabase {
    fn open_store(&self, _options: &Options) -> Result<Box<dyn Store>, OpenError> {
        Ok(Box::new(PostgresStore::connect_with(
            self.0.config().clone(),
            PgOptions::default(),
        )?))
    }

    fn at_rest(&self) -> Vec<u8> {
        self.0.pg_dump().unwrap()
    }

    fn footprint(&self) -> u64 {
        self.0.compacted_bytes("rotoken\\_%").unwrap()
    }

    fn backup(&self, name: &str) {
        let copy = self.copy_name(name);
        self.disconnect(self.0.name());
        self.admin(&format!("DROP DATABASE IF EXISTS {copy}"));
        self.admin(&format!("CREATE DATABASE {copy} TEMPLATE {}", self.0.name()));
    }

    fn restore(&self, name: &str) {
        let copy = self.copy_name(name);
        self.admin(&format!("DROP DATABASE {} WITH (FORCE)", self.0.name()));
        self.admin(&format!("CREATE DATABASE {} TEMPLATE {copy}", self.0.name()));
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Backups are named after the database; drop them with it.
        if let Ok(sql) = self.0.admin_sql() {
            let pattern = format!("{}\\_%", self.0.name());
            let _ = sql.execute(&format!(
                "DO $$ DECLARE d text; BEGIN
                   FOR d IN SELECT datname FROM pg_database WHERE datname LIKE '{pattern}' LOOP
                     EXECUTE format('DROP DATABASE %I WITH (FORCE)', d);
                   END LOOP; END $$"
            ));
        }
    }
}

rotoken_conformance::conformance_tests!(match postgres() {
    Some(b) => b,
    None => return,
});
