//! The peers' design over PostgreSQL: the comparison baseline for the
//! PostgreSQL store (`postgres_compare`).
//!
//! One row per refresh token, as Ory Hydra, Supabase Auth v1 and Keycloak
//! keep them in PostgreSQL:
//!
//! ```sql
//! CREATE TABLE peer_tokens (
//!     id bigserial PRIMARY KEY,
//!     token_hash bytea NOT NULL UNIQUE,
//!     family_id bytea NOT NULL,     -- Hydra's request_id, Supabase's session_id
//!     parent_id bigint,             -- the token this one replaced
//!     revoked smallint NOT NULL,    -- 0 live, 1 used (rotated), 2 revoked
//!     created_at bigint NOT NULL,
//!     client_id text NOT NULL,
//!     subject text NOT NULL,
//!     scope text NOT NULL
//! );
//! CREATE INDEX ON peer_tokens (parent_id);
//! CREATE INDEX ON peer_tokens (family_id);
//! ```
//!
//! A rotation is one transaction on the caller's own connection, one
//! statement at a time as an ORM sends them: `BEGIN`; `SELECT ... WHERE
//! token_hash = $1 FOR UPDATE` (the row lock makes concurrent presenters
//! of one token wait, so exactly one rotates it); a live token is marked
//! used and a child row inserted; a used token is reuse and revokes every
//! row of the family; `COMMIT`. Tokens are 32 random bytes, stored as
//! their BLAKE3 hash. Durable means the server's `synchronous_commit = on`.

use std::time::{SystemTime, UNIX_EPOCH};

use rotoken_postgres::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rotoken_postgres::tokio_postgres::{self, NoTls};

use crate::workload::{BoxError, Rotator};

/// A refresh token of the peer design.
pub type PeerToken = crate::opaque_token::OpaqueToken;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS peer_tokens (
    id bigserial PRIMARY KEY,
    token_hash bytea NOT NULL UNIQUE,
    family_id bytea NOT NULL,
    parent_id bigint,
    revoked smallint NOT NULL,
    created_at bigint NOT NULL,
    client_id text NOT NULL,
    subject text NOT NULL,
    scope text NOT NULL
);
CREATE INDEX IF NOT EXISTS peer_tokens_parent ON peer_tokens (parent_id);
CREATE INDEX IF NOT EXISTS peer_tokens_family ON peer_tokens (family_id);
";

const INSERT: &str = "INSERT INTO peer_tokens
     (token_hash, family_id, parent_id, revoked, created_at, client_id, subject, scope)
     VALUES ($1, $2, $3, 0, $4, $5, $6, $7)";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The one-row-per-token design in one PostgreSQL database.
pub struct PeerDesign {
    pool: Pool,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for PeerDesign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerDesign").finish_non_exhaustive()
    }
}

impl Drop for PeerDesign {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl PeerDesign {
    /// Connects with up to `connections` connections (one per caller) and
    /// creates the table. `durable: false` sets `synchronous_commit = off`
    /// on every connection (for populating quickly; sizes do not depend on it).
    ///
    /// # Errors
    ///
    /// A connection or schema error.
    pub fn open(mut config: tokio_postgres::Config, connections: usize, durable: bool) -> Result<Self, BoxError> {
        if !durable {
            // Added to the options already there (a `search_path`, say).
            let options = match config.get_options() {
                Some(o) if !o.is_empty() => format!("{o} -c synchronous_commit=off"),
                _ => "-c synchronous_commit=off".to_owned(),
            };
            config.options(&options);
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(connections.max(1))
            .runtime(Runtime::Tokio1)
            .build()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let design = Self {
            pool,
            runtime: Some(runtime),
        };
        design.block_on(async {
            design.pool.get().await?.batch_execute(SCHEMA).await?;
            Ok(())
        })?;
        Ok(design)
    }

    fn block_on<T>(&self, f: impl Future<Output = Result<T, BoxError>>) -> Result<T, BoxError> {
        self.runtime.as_ref().ok_or("runtime gone")?.block_on(f)
    }

    /// Issues `count` families (their first tokens), `per_transaction` to a transaction.
    ///
    /// # Errors
    ///
    /// A database error.
    pub fn issue_many(
        &self,
        count: usize,
        per_transaction: usize,
        grant: impl Fn(usize) -> (String, String, String),
    ) -> Result<Vec<PeerToken>, BoxError> {
        self.block_on(async {
            let mut client = self.pool.get().await?;
            let mut out = Vec::with_capacity(count);
            while out.len() < count {
                let tx = client.transaction().await?;
                let insert = tx.prepare_cached(INSERT).await?;
                let end = count.min(out.len() + per_transaction.max(1));
                for i in out.len()..end {
                    let (subject, client_id, scope) = grant(i);
                    let token = PeerToken::random()?;
                    let family = PeerToken::random()?.hash()[..16].to_vec();
                    tx.execute(
                        &insert,
                        &[
                            &token.hash().to_vec(),
                            &family,
                            &None::<i64>,
                            &now_ms(),
                            &client_id,
                            &subject,
                            &scope,
                        ],
                    )
                    .await?;
                    out.push(token);
                }
                tx.commit().await?;
            }
            Ok(out)
        })
    }

    /// Rotates `token` presented by `client_id` in its own transaction; the
    /// successor, or an error for any refusal.
    ///
    /// # Errors
    ///
    /// A database error, or the token was refused (unknown, revoked, reused).
    pub fn rotate(&self, token: &PeerToken, client_id: &str) -> Result<PeerToken, BoxError> {
        self.block_on(async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            let select = tx
                .prepare_cached(
                    "SELECT id, family_id, revoked, client_id, subject, scope FROM peer_tokens
                     WHERE token_hash = $1 FOR UPDATE",
                )
                .await?;
            let Some(row) = tx.query_opt(&select, &[&token.hash().to_vec()]).await? else {
                return Err("unknown token".into());
            };
            let (id, family, revoked): (i64, Vec<u8>, i16) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let (client, subject, scope): (String, String, String) =
                (row.try_get(3)?, row.try_get(4)?, row.try_get(5)?);
            if client != client_id {
                return Err("client mismatch".into());
            }
            match revoked {
                0 => {}
                1 => {
                    let revoke = tx
                        .prepare_cached("UPDATE peer_tokens SET revoked = 2 WHERE family_id = $1 AND revoked <> 2")
                        .await?;
                    tx.execute(&revoke, &[&family]).await?;
                    tx.commit().await?;
                    return Err("reuse detected: family revoked".into());
                }
                _ => return Err("revoked".into()),
            }
            let used = tx
                .prepare_cached("UPDATE peer_tokens SET revoked = 1 WHERE id = $1")
                .await?;
            tx.execute(&used, &[&id]).await?;
            let child = PeerToken::random()?;
            let insert = tx.prepare_cached(INSERT).await?;
            tx.execute(
                &insert,
                &[
                    &child.hash().to_vec(),
                    &family,
                    &Some(id),
                    &now_ms(),
                    &client,
                    &subject,
                    &scope,
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(child)
        })
    }
}

/// The design as a workload [`Rotator`]: one transaction per token.
#[derive(Debug)]
pub struct PeerRotator<'a> {
    /// The database.
    pub design: &'a PeerDesign,
    /// The client presenting every token.
    pub client_id: &'a str,
}

impl Rotator for PeerRotator<'_> {
    type Token = PeerToken;

    fn rotate(&self, tokens: &mut [PeerToken]) -> Result<(), BoxError> {
        for t in tokens {
            *t = self.design.rotate(t, self.client_id)?;
        }
        Ok(())
    }
}
