//! rotoken's PostgreSQL store and the peers' one-row-per-token design
//! (`postgres_peer`), each set up in a [`Scratch`] schema of its own on the
//! same server, ready for the workload driver; and their bytes per family.
//! Shared by `rotoken bench --store postgres://...` and the
//! `postgres_compare` binary.

use std::sync::atomic::AtomicU64;

use rotoken::{Durability, Engine, GroupCommit, Keyring, RefreshToken};
use rotoken_postgres::tokio_postgres::Config;
use rotoken_postgres::{PgOptions, PostgresStore};

use crate::postgres_peer::{PeerDesign, PeerRotator, PeerToken};
use crate::postgres_scratch::Scratch;
use crate::workload::{self, BoxError, CLIENT, EngineRotator, Rotator, SCOPE, Stop, Workload};

/// Callers that issue the families before a run.
const POPULATE_CALLERS: usize = 16;

/// Peer families issued per transaction before a run.
const PEER_ISSUE_BATCH: usize = 1_000;

/// An engine over rotoken's PostgreSQL store in a schema of its own.
#[derive(Debug)]
pub struct RotokenOnPostgres {
    // Dropped before the schema it uses.
    engine: Engine,
    scratch: Scratch,
}

impl RotokenOnPostgres {
    /// A fresh schema on the server of `base`, `families` families issued
    /// there (relaxed durability, [`POPULATE_CALLERS`] callers, counted in
    /// `progress`), and an engine with `durability` and `group_commit`
    /// (the core's default if `None`) over it, with fresh keys. Returns the
    /// families' current tokens.
    ///
    /// # Errors
    ///
    /// A connection, schema or issue error.
    pub fn populate(
        base: &Config,
        families: usize,
        durability: Durability,
        group_commit: Option<GroupCommit>,
        progress: Option<&AtomicU64>,
    ) -> Result<(Self, Vec<RefreshToken>), BoxError> {
        let scratch = Scratch::create(base)?;
        let keys = Keyring::generate()?;
        let open = |durability, group_commit| -> Result<Engine, BoxError> {
            let store = PostgresStore::connect_with(scratch.config().clone(), PgOptions::default())?;
            Ok(Engine::with_store(
                store,
                keys.clone(),
                workload::engine_options(durability, group_commit),
            )?)
        };
        let tokens = {
            let engine = open(Durability::Relaxed, None)?;
            workload::issue_families(&engine, 0, families, POPULATE_CALLERS, progress)?
        };
        let engine = open(durability, group_commit)?;
        Ok((Self { engine, scratch }, tokens))
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The schema.
    pub fn scratch(&self) -> &Scratch {
        &self.scratch
    }
}

/// The peers' design in a schema of its own.
#[derive(Debug)]
pub struct PeerOnPostgres {
    // Dropped before the schema it uses.
    design: PeerDesign,
    scratch: Scratch,
}

impl PeerOnPostgres {
    /// A fresh schema on the server of `base` with `families` families of
    /// the peer design ([`workload::grant`]'s subjects, client [`CLIENT`],
    /// scope [`SCOPE`]) and `connections` connections (one per caller);
    /// `durable: false` is `synchronous_commit = off`. Returns their tokens.
    ///
    /// # Errors
    ///
    /// A connection, schema or insert error.
    pub fn populate(
        base: &Config,
        families: usize,
        connections: usize,
        durable: bool,
    ) -> Result<(Self, Vec<PeerToken>), BoxError> {
        let scratch = Scratch::create(base)?;
        let design = PeerDesign::open(scratch.config().clone(), connections, durable)?;
        let tokens = design.issue_many(families, PEER_ISSUE_BATCH, peer_grant)?;
        Ok((Self { design, scratch }, tokens))
    }

    /// The design as a workload rotator (client [`CLIENT`]).
    pub fn rotator(&self) -> PeerRotator<'_> {
        PeerRotator {
            design: &self.design,
            client_id: CLIENT,
        }
    }

    /// The schema.
    pub fn scratch(&self) -> &Scratch {
        &self.scratch
    }
}

/// The peer design's grant of family `i`: the subject of [`workload::grant`].
fn peer_grant(i: usize) -> (String, String, String) {
    let subject = workload::grant(i as u64).map(|g| g.subject).unwrap_or_default();
    (subject, CLIENT.to_owned(), SCOPE.to_owned())
}

/// What a design's families take in PostgreSQL after some rotations each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BytesPerFamily {
    /// Compacted bytes of the schema's tables, TOAST and indexes.
    pub total: u64,
    /// The same for the schema with its tables created and empty.
    pub empty: u64,
    /// `(total - empty) / families`.
    pub per_family: f64,
}

/// Which design to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgDesign {
    /// rotoken's PostgreSQL store: one row per family.
    Rotoken,
    /// The peers' design: one row per token.
    Peer,
}

impl PgDesign {
    /// `rotoken` or `postgres-peer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rotoken => "rotoken",
            Self::Peer => "postgres-peer",
        }
    }
}

/// `families` families of `design` in a fresh schema, each rotated
/// `rotations` times (relaxed durability: sizes do not depend on it), then
/// `VACUUM FULL` and [`Scratch::compacted_bytes`].
///
/// # Errors
///
/// A connection, schema, rotation or measuring error.
pub fn bytes_per_family(
    base: &Config,
    design: PgDesign,
    families: usize,
    rotations: u64,
) -> Result<BytesPerFamily, BoxError> {
    let measured = |scratch: &Scratch, empty: u64| -> Result<BytesPerFamily, BoxError> {
        let total = scratch.compacted_bytes()?;
        Ok(BytesPerFamily {
            total,
            empty,
            per_family: total.saturating_sub(empty) as f64 / families.max(1) as f64,
        })
    };
    match design {
        PgDesign::Rotoken => {
            let (on, mut tokens) = RotokenOnPostgres::populate(base, 0, Durability::Relaxed, None, None)?;
            let empty = on.scratch.compacted_bytes()?;
            tokens.extend(workload::issue_families(
                &on.engine,
                0,
                families,
                POPULATE_CALLERS,
                None,
            )?);
            rotate_each(&EngineRotator::new(&on.engine), &mut tokens, rotations)?;
            let RotokenOnPostgres { engine, scratch } = on;
            drop(engine);
            measured(&scratch, empty)
        }
        PgDesign::Peer => {
            let (on, _) = PeerOnPostgres::populate(base, 0, POPULATE_CALLERS, false)?;
            let empty = on.scratch.compacted_bytes()?;
            let mut tokens = on.design.issue_many(families, PEER_ISSUE_BATCH, peer_grant)?;
            rotate_each(&on.rotator(), &mut tokens, rotations)?;
            let PeerOnPostgres { design, scratch } = on;
            drop(design);
            measured(&scratch, empty)
        }
    }
}

/// Rotates every token exactly `rotations` times: up to
/// [`POPULATE_CALLERS`] callers, as many as divide the tokens into equal
/// shares, each cycling its share.
fn rotate_each<R: Rotator>(r: &R, tokens: &mut [R::Token], rotations: u64) -> Result<(), BoxError> {
    if rotations == 0 || tokens.is_empty() {
        return Ok(());
    }
    let callers = (1..=POPULATE_CALLERS.min(tokens.len()))
        .rev()
        .find(|c| tokens.len().is_multiple_of(*c))
        .unwrap_or(1);
    let w = Workload {
        concurrency: callers,
        batch: 1,
        stop: Stop::Rotations(tokens.len() as u64 * rotations),
    };
    workload::run(r, tokens, &w, None)?;
    Ok(())
}
