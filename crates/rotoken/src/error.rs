//! Errors: one enum per operation, each converting into [`Error`].
//!
//! Every error has a stable snake_case [`code`](RotateError::code) that
//! adapters (HTTP, C ABI, CLI) pass on unchanged.

use crate::FamilyId;
use crate::grant::InvalidInput;
use crate::record::RevokeReason;
use crate::state::ExpiryKind;
use crate::token::ParseError;

/// A failure of the storage layer, shared by every operation.
///
/// Cloneable, because one failed group commit fails every operation in it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// redb reported an error (I/O, a full disk, a closed database...).
    #[error("storage: {0}")]
    Storage(#[source] std::sync::Arc<redb::Error>),
    /// A stored record failed its MAC, did not decode or did not open.
    #[error("corrupt data in {table}: {reason}")]
    Corrupt {
        /// The table holding it.
        table: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The OS random number generator failed.
    #[error("OS random number generator failed: {0}")]
    Random(getrandom::Error),
}

macro_rules! redb_into_store {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Storage(std::sync::Arc::new(e.into()))
            }
        }
    )*};
}
redb_into_store!(
    redb::Error,
    redb::DatabaseError,
    redb::CompactionError,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<getrandom::Error> for StoreError {
    fn from(e: getrandom::Error) -> Self {
        Self::Random(e)
    }
}

impl StoreError {
    /// A stable code: `storage_error`, `corrupt` or `random_failed`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Storage(_) => "storage_error",
            Self::Corrupt { .. } => "corrupt",
            Self::Random(_) => "random_failed",
        }
    }
}

/// Errors from [`crate::Engine::open`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process (or another handle in this one) has the database open.
    #[error("the database is open in another process; use one process per file (the `serve` sidecar for many workers)")]
    Locked,
    /// The file is a redb database but not a rotoken one.
    #[error("the file is not a rotoken database")]
    NotRotoken,
    /// The database was written with a schema this build does not know.
    #[error("database schema version {found} is not supported (this build reads {supported})")]
    UnsupportedSchema {
        /// The version in the file.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// The key file is not the one this database was created with.
    #[error("the keys do not match this database (wrong key file?)")]
    WrongKeys,
    /// The policy fails [`crate::Policy::validate`].
    #[error("invalid policy: {0}")]
    InvalidPolicy(String),
    /// A storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<redb::DatabaseError> for OpenError {
    fn from(e: redb::DatabaseError) -> Self {
        match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Self::Locked,
            e => Self::Store(e.into()),
        }
    }
}

impl OpenError {
    /// A stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Locked => "locked",
            Self::NotRotoken => "not_rotoken",
            Self::UnsupportedSchema { .. } => "unsupported_schema",
            Self::WrongKeys => "wrong_keys",
            Self::InvalidPolicy(_) => "invalid_policy",
            Self::Store(e) => e.code(),
        }
    }
}

/// Errors from [`crate::Engine::issue`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The grant was refused.
    #[error("invalid grant: {0}")]
    InvalidInput(#[from] InvalidInput),
    /// A storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IssueError {
    /// A stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidInput(_) => "invalid_input",
            Self::Store(e) => e.code(),
        }
    }
}

/// Errors from [`crate::Engine::rotate`], in the order the checks run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RotateError {
    /// The token is not well-formed (length, prefix, encoding, checksum).
    #[error("malformed token: {0}")]
    Malformed(#[from] ParseError),
    /// The token is well-formed but its authenticator does not verify
    /// (forged, or made with a key this server does not hold).
    #[error("invalid token")]
    InvalidToken,
    /// The token is authentic but its family is not in the store (removed by gc).
    #[error("unknown token family")]
    Unknown,
    /// The family is revoked.
    #[error("the token's family is revoked ({})", .0.as_str())]
    Revoked(RevokeReason),
    /// Another client presented the token. Nothing was changed.
    #[error("the token was issued to another client")]
    ClientMismatch,
    /// The confirmation key does not match the family's binding. Nothing was changed.
    #[error("the confirmation key does not match the token's binding")]
    ConfirmationMismatch,
    /// The family has expired.
    #[error("the token's family has expired ({kind:?})")]
    Expired {
        /// Absolute or idle.
        kind: ExpiryKind,
    },
    /// A retired token was presented: the family is now revoked and an event was recorded.
    #[error("refresh token reuse detected; the family {family} is revoked")]
    ReuseDetected {
        /// The revoked family.
        family: FamilyId,
    },
    /// An authentic token disagreed with the store (generation ahead, or a
    /// forked secret): the family is now revoked and an event was recorded.
    #[error("the token disagrees with the stored state; the family {family} is revoked")]
    Diverged {
        /// The revoked family.
        family: FamilyId,
    },
    /// The requested scope is wider than the grant.
    #[error("the requested scope exceeds the grant")]
    ScopeWidened,
    /// The family reached its generation limit; the user must sign in again.
    #[error("the family reached its generation limit")]
    TooManyGenerations,
    /// A request field was refused.
    #[error("invalid request: {0}")]
    InvalidInput(#[from] InvalidInput),
    /// A storage failure; nothing was handed out.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RotateError {
    /// A stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) | Self::InvalidToken => "invalid_token",
            Self::Unknown => "unknown_token",
            Self::Revoked(_) => "revoked",
            Self::ClientMismatch => "client_mismatch",
            Self::ConfirmationMismatch => "confirmation_mismatch",
            Self::Expired { .. } => "expired",
            Self::ReuseDetected { .. } => "reuse_detected",
            Self::Diverged { .. } => "diverged",
            Self::ScopeWidened => "scope_widened",
            Self::TooManyGenerations => "too_many_generations",
            Self::InvalidInput(_) => "invalid_input",
            Self::Store(e) => e.code(),
        }
    }
}

/// Errors from [`crate::Engine::revoke`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevokeError {
    /// The token is not well-formed.
    #[error("malformed token: {0}")]
    Malformed(#[from] ParseError),
    /// The token's authenticator does not verify.
    #[error("invalid token")]
    InvalidToken,
    /// A request field was refused.
    #[error("invalid request: {0}")]
    InvalidInput(#[from] InvalidInput),
    /// [`crate::RevokeTarget::TokenOfClient`]: the token's family belongs to
    /// another client; nothing was revoked.
    #[error("the token was issued to another client")]
    ClientMismatch,
    /// A storage failure; nothing was revoked.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RevokeError {
    /// A stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) | Self::InvalidToken => "invalid_token",
            Self::InvalidInput(_) => "invalid_input",
            Self::ClientMismatch => "client_mismatch",
            Self::Store(e) => e.code(),
        }
    }
}

/// Any rotoken error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From opening.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// From issuing.
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// From rotating.
    #[error(transparent)]
    Rotate(#[from] RotateError),
    /// From revoking.
    #[error(transparent)]
    Revoke(#[from] RevokeError),
    /// From the storage layer (introspect, sessions, gc, check, events).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// From loading or changing keys.
    #[error(transparent)]
    Keys(#[from] crate::KeyError),
    /// From validating input.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
}

impl Error {
    /// The stable code of the underlying error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Open(e) => e.code(),
            Self::Issue(e) => e.code(),
            Self::Rotate(e) => e.code(),
            Self::Revoke(e) => e.code(),
            Self::Store(e) => e.code(),
            Self::Keys(e) => e.code(),
            Self::InvalidInput(_) => "invalid_input",
        }
    }
}
