//! # rotoken
//!
//! An embedded refresh-token store and rotation engine: refresh-token
//! families, rotation with an idempotent grace window, reuse detection and
//! revocation over an embedded [redb](https://docs.rs/redb) database.
//!
//! ```
//! use rotoken::{Engine, Grant, Keyring, Options, RotateError, RotateRequest, Scope};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let engine = Engine::open(dir.path().join("tokens.redb"), Keyring::generate()?, Options::default())?;
//!
//! // After an authorization-code exchange that granted `offline_access`:
//! let grant = Grant::new("alice", "web-app", Scope::parse("openid offline_access")?);
//! let first = engine.issue(&grant)?;
//!
//! // The client refreshes: the old token is retired, a new one issued.
//! let request = RotateRequest::new("web-app");
//! let second = engine.rotate(first.refresh_token.expose(), &request)?;
//! assert_eq!(second.generation, 1);
//! assert_eq!(second.grant.subject, "alice");
//!
//! // A second tab retries with the same token within the grace window:
//! // it gets the very same successor, not a fork.
//! let retry = engine.rotate(first.refresh_token.expose(), &request)?;
//! assert_eq!(retry.refresh_token, second.refresh_token);
//!
//! // Someone replays a retired token later: the whole family is revoked.
//! let third = engine.rotate(second.refresh_token.expose(), &request)?;
//! let replay = engine.rotate(first.refresh_token.expose(), &request);
//! assert!(matches!(replay, Err(RotateError::ReuseDetected { .. })));
//! assert!(matches!(engine.rotate(third.refresh_token.expose(), &request), Err(RotateError::Revoked(_))));
//! # Ok(())
//! # }
//! ```
//!
//! See `docs/design.md` for the data model and state table,
//! `docs/token-format.md` for the token layout, and `docs/threat-model.md`.

#![forbid(unsafe_code)]

pub mod backup;
mod batch;
mod check;
pub mod clock;
mod core;
mod engine;
mod error;
mod gc;
pub mod grant;
pub mod keys;
mod notify;
pub mod policy;
mod policy_store;
mod protocol;
pub mod record;
mod revoke_steps;
mod sealing;
mod stall;
pub mod state;
pub mod store;
pub mod token;
mod types;

pub use batch::GroupCommit;
pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::Engine;
pub use error::{Code, Error, IssueError, OpenError, RevokeError, RotateError, StoreError};
pub use grant::{Grant, InvalidInput, Scope};
pub use keys::{KeyError, Keyring, SealError};
pub use notify::{EventSink, Notice};
pub use policy::{Durability, Policy};
pub use policy_store::{MAX_CHANGED_BY_LEN, PolicyChange, PolicyError};
pub use record::{Event, EventKind, FamilyState, RevokeReason};
pub use state::ExpiryKind;
pub use store::{RedbStore, SCHEMA_VERSION, Store};
pub use token::{FamilyId, ParseError, RefreshToken, Token};
pub use types::{
    CheckReport, GcReport, Introspection, Issued, Options, Problem, RevokeTarget, RotateRequest, Rotated, Session,
    Stats,
};
