//! A schema of its own for one benchmark run in a PostgreSQL database.
//!
//! `rotoken bench --store postgres://...` is pointed at a database that
//! may hold other things (even a real store), so a run never touches a
//! table it did not make: it creates a schema with a unique name
//! (`rotoken_bench_...`), connects with `search_path` set to it (rotoken's
//! store and the peer design name their tables unqualified, so they land
//! there), and drops the schema with everything in it at the end. `VACUUM
//! FULL` runs on the schema's own tables only.

use rotoken_postgres::testing::Sql;
use rotoken_postgres::tokio_postgres::Config;

use crate::workload::BoxError;

/// A schema made for one run; dropped (`DROP SCHEMA ... CASCADE`) with
/// this value. Drop everything connected through [`Scratch::config`] first.
#[derive(Debug)]
pub struct Scratch {
    sql: Sql,
    config: Config,
    schema: String,
}

impl Scratch {
    /// Creates a fresh schema in the database `base` names.
    ///
    /// # Errors
    ///
    /// The connection failed, or the role may not create a schema there.
    pub fn create(base: &Config) -> Result<Self, BoxError> {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| format!("random: {e}"))?;
        let schema = format!("rotoken_bench_{:016x}", u64::from_be_bytes(id));
        let sql = Sql::connect(base)?;
        sql.execute(&format!("CREATE SCHEMA {schema}; SET search_path = {schema}"))?;
        let mut config = base.clone();
        let search_path = format!("-c search_path={schema}");
        let options = match base.get_options() {
            Some(o) if !o.is_empty() => format!("{o} {search_path}"),
            _ => search_path,
        };
        config.options(&options);
        Ok(Self { sql, config, schema })
    }

    /// Connection settings whose unqualified tables are in this schema.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.schema
    }

    /// A server setting as `SHOW` prints it (`synchronous_commit`: `on`).
    ///
    /// # Errors
    ///
    /// An unknown setting, or the connection failed.
    pub fn setting(&self, name: &str) -> Result<String, BoxError> {
        let row = self
            .sql
            .block_on(self.sql.client().query_one(&format!("SHOW {name}"), &[]))?;
        Ok(row.try_get(0)?)
    }

    /// `VACUUM FULL` of the schema's tables, then the bytes of their main
    /// forks, their TOAST tables and every index of either. The free-space
    /// and visibility maps are left out: autovacuum makes them when it
    /// gets round to a table, so they would make the figure depend on timing.
    ///
    /// # Errors
    ///
    /// A statement failed.
    pub fn compacted_bytes(&self) -> Result<u64, BoxError> {
        let tables = self.sql.block_on(self.sql.client().query(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = $1",
            &[&self.schema],
        ))?;
        let names = tables
            .iter()
            .map(|r| r.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, _>>()?;
        if !names.is_empty() {
            self.sql.execute(&format!("VACUUM FULL {}", names.join(", ")))?;
        }
        let row = self.sql.block_on(self.sql.client().query_one(
            "WITH own AS (
                 SELECT c.oid AS rel, c.reltoastrelid AS toast FROM pg_class c
                 WHERE c.relnamespace = $1::text::regnamespace AND c.relkind = 'r'
             ), every_rel AS (
                 SELECT rel FROM own
                 UNION SELECT toast FROM own WHERE toast <> 0
                 UNION SELECT i.indexrelid FROM pg_index i, own
                       WHERE i.indrelid = own.rel OR i.indrelid = own.toast
             )
             SELECT coalesce(sum(pg_relation_size(rel)), 0)::int8 FROM every_rel",
            &[&self.schema],
        ))?;
        let bytes: i64 = row.try_get(0)?;
        Ok(u64::try_from(bytes)?)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = self
            .sql
            .execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
        {
            eprintln!("could not drop the benchmark schema {}: {e}", self.schema);
        }
    }
}
