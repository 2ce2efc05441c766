//! Errors: one enum per operation, each converting into [`Error`].
//!
//! Every error has a stable snake_case [`code`](RotateError::code) that
//! adapters (HTTP, C ABI, CLI) pass on unchanged.

use crate::FamilyId;
use crate::grant::InvalidInput;
use crate::record::RevokeReason;
use crate::state::ExpiryKind;
use crate::token::ParseError;

/// Every error's stable code: what [`RotateError::code`] and the other
/// `code()` methods return, and what every adapter maps from (HTTP status
/// and OAuth error, C status, CLI exit code). [`Code::as_str`] is the
/// snake_case name adapters print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// Another process has the database open.
    Locked,
    /// Not a rotoken database.
    NotRotoken,
    /// A schema this build does not know.
    UnsupportedSchema,
    /// The keys do not match the database.
    WrongKeys,
    /// The policy is not valid.
    InvalidPolicy,
    /// A request field (subject, client id, scope, ...) was refused.
    InvalidInput,
    /// The token is malformed or its authenticator does not verify.
    InvalidToken,
    /// The token's family is not stored (removed by gc).
    UnknownToken,
    /// The family is revoked.
    Revoked,
    /// Another client presented the token.
    ClientMismatch,
    /// The confirmation key does not match.
    ConfirmationMismatch,
    /// The family has expired.
    Expired,
    /// A retired token was presented; the family was revoked.
    ReuseDetected,
    /// The token disagreed with the store; the family was revoked.
    Diverged,
    /// The requested scope is wider than the grant.
    ScopeWidened,
    /// The family reached its generation limit.
    TooManyGenerations,
    /// The storage layer failed (I/O, a lost connection, conflicts past the retry limit).
    StorageError,
    /// Stored data is damaged.
    Corrupt,
    /// The OS random number generator failed.
    RandomFailed,
    /// The engine is shutting down or its commit thread could not run.
    Unavailable,
    /// A key file could not be read or written.
    KeysIo,
    /// A key file is malformed.
    KeysInvalid,
    /// A key id is not in the keyring.
    UnknownKey,
    /// The active key cannot be retired.
    RetireActive,
    /// No key id is left.
    KeysExhausted,
    /// Another transaction held the family's lock past the store's lock
    /// wait; nothing of this operation was written. Retry the same request.
    Busy,
    /// The operation's deadline passed, or its caller went away, before it
    /// was applied; nothing was written. Retry the same request.
    DeadlinePassed,
    /// The store failed after the commit was sent and could not be asked
    /// what happened. Retry the same token: the engine settles the outcome
    /// and answers a retry with the successor if the rotation committed.
    OutcomeUnknown,
    /// The immediate predecessor was presented to an engine whose clock is
    /// behind the rotation that retired it (by more than a minute): neither
    /// answered nor revoked. Retry (another server, or once clocks agree).
    ClockBehind,
}

impl Code {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Locked => "locked",
            Self::NotRotoken => "not_rotoken",
            Self::UnsupportedSchema => "unsupported_schema",
            Self::WrongKeys => "wrong_keys",
            Self::InvalidPolicy => "invalid_policy",
            Self::InvalidInput => "invalid_input",
            Self::InvalidToken => "invalid_token",
            Self::UnknownToken => "unknown_token",
            Self::Revoked => "revoked",
            Self::ClientMismatch => "client_mismatch",
            Self::ConfirmationMismatch => "confirmation_mismatch",
            Self::Expired => "expired",
            Self::ReuseDetected => "reuse_detected",
            Self::Diverged => "diverged",
            Self::ScopeWidened => "scope_widened",
            Self::TooManyGenerations => "too_many_generations",
            Self::StorageError => "storage_error",
            Self::Corrupt => "corrupt",
            Self::RandomFailed => "random_failed",
            Self::Unavailable => "unavailable",
            Self::KeysIo => "keys_io",
            Self::KeysInvalid => "keys_invalid",
            Self::UnknownKey => "unknown_key",
            Self::RetireActive => "retire_active",
            Self::KeysExhausted => "keys_exhausted",
            Self::Busy => "busy",
            Self::DeadlinePassed => "deadline_passed",
            Self::OutcomeUnknown => "outcome_unknown",
            Self::ClockBehind => "clock_behind",
        }
    }

    /// True for a refusal caused by what the caller sent (a bad, foreign,
    /// retired, revoked or expired token, a bad request): the client's
    /// fault, not the server's. False for storage, key and setup failures.
    pub fn is_client_error(self) -> bool {
        matches!(
            self,
            Self::InvalidInput
                | Self::InvalidToken
                | Self::UnknownToken
                | Self::Revoked
                | Self::ClientMismatch
                | Self::ConfirmationMismatch
                | Self::Expired
                | Self::ReuseDetected
                | Self::Diverged
                | Self::ScopeWidened
                | Self::TooManyGenerations
        )
    }

    /// True for a failure that says nothing about the request: the store
    /// was unreachable, busy or slow, the engine was shutting down, or the
    /// operation's deadline passed. Nothing was decided against the caller;
    /// the same request (the same token) may be sent again, and an adapter
    /// answers it as "temporarily unavailable, retry" (HTTP 503 with
    /// `Retry-After`), never as a refusal.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::StorageError
                | Self::Unavailable
                | Self::Busy
                | Self::DeadlinePassed
                | Self::OutcomeUnknown
                | Self::ClockBehind
        )
    }

    /// True if the call that returned this code revoked a family
    /// (reuse detected, or a token that disagreed with the store).
    pub fn revoked_a_family(self) -> bool {
        matches!(self, Self::ReuseDetected | Self::Diverged)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A failure of the storage layer, shared by every operation.
///
/// Cloneable, because one failed group commit fails every operation in it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store reported an error (I/O, a full disk, a lost connection, a
    /// closed database...). The source is the store's own error type.
    #[error("storage: {0}")]
    Storage(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),
    /// The transaction lost to a concurrent one (a serialization failure or
    /// a deadlock) and changed nothing. The engine runs the batch again;
    /// callers see it only past [`crate::store::MAX_CONFLICT_RETRIES`].
    #[error("storage conflict (retried too often): {0}")]
    Conflict(String),
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
    /// The engine could not run the operation at all (it is shutting down,
    /// or its commit thread could not start); nothing was written.
    #[error("the engine is unavailable: {0}")]
    Unavailable(&'static str),
    /// Another transaction held a family's lock past the store's lock wait
    /// (a stuck session, a long transaction): the operations on that family
    /// were not applied; the rest of their batch was.
    #[error("the family is locked by another transaction: {0}")]
    Busy(String),
    /// The operation's deadline passed, or its caller went away (or the
    /// process was stalled while it waited), before it was applied:
    /// nothing of it was written.
    #[error("the operation's deadline passed before it was applied; nothing was written")]
    DeadlinePassed,
    /// The store failed after the commit was sent (a connection lost
    /// during `COMMIT`): the transaction may or may not have committed. A
    /// store returns it from [`crate::store::WriteTxn::commit`]; the engine
    /// then finds out what happened before it answers, and callers see it
    /// only when the store could not be asked.
    #[error("the commit's outcome is unknown (retry the same token): {0}")]
    OutcomeUnknown(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),
}

impl From<getrandom::Error> for StoreError {
    fn from(e: getrandom::Error) -> Self {
        Self::Random(e)
    }
}

impl StoreError {
    /// A storage failure with the store's own error as its source.
    pub fn storage(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Storage(std::sync::Arc::new(e))
    }

    /// The stable code: `storage_error`, `corrupt`, `random_failed` or `unavailable`.
    pub fn code(&self) -> Code {
        match self {
            Self::Storage(_) | Self::Conflict(_) => Code::StorageError,
            Self::Corrupt { .. } => Code::Corrupt,
            Self::Random(_) => Code::RandomFailed,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Busy(_) => Code::Busy,
            Self::DeadlinePassed => Code::DeadlinePassed,
            Self::OutcomeUnknown(_) => Code::OutcomeUnknown,
        }
    }

    /// A commit whose outcome is unknown, with the store's own error as its source.
    pub fn outcome_unknown(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::OutcomeUnknown(std::sync::Arc::new(e))
    }

    /// True if the same request may simply be sent again ([`Code::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        self.code().is_retryable()
    }
}

/// Damaged stored data in `table`.
pub(crate) fn corrupt(table: &'static str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        table,
        reason: reason.to_string(),
    }
}

/// Errors from [`crate::Engine::open`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process (or another handle in this one) has the database open.
    #[error("the database is open in another process; use one process per file (the `serve` sidecar for many workers)")]
    Locked,
    /// The file or database holds data that rotoken did not write (a redb
    /// file without rotoken's tables, a PostgreSQL database with a foreign
    /// `rotoken_families` table).
    #[error("the database is not a rotoken database (it holds data rotoken did not write)")]
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

impl OpenError {
    /// The stable code.
    pub fn code(&self) -> Code {
        match self {
            Self::Locked => Code::Locked,
            Self::NotRotoken => Code::NotRotoken,
            Self::UnsupportedSchema { .. } => Code::UnsupportedSchema,
            Self::WrongKeys => Code::WrongKeys,
            Self::InvalidPolicy(_) => Code::InvalidPolicy,
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
    /// The stable code.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidInput(_) => Code::InvalidInput,
            Self::Store(e) => e.code(),
        }
    }
}

/// Errors from [`crate::Engine::rotate`], in the order the checks run
/// (the order is written once, in `protocol.rs`).
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
    /// A request field (client id, confirmation) was refused.
    #[error("invalid request: {0}")]
    InvalidInput(#[from] InvalidInput),
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
    /// The immediate predecessor was presented, but this engine's clock is
    /// behind the rotation that retired it by more than a minute: nothing
    /// was changed or handed out; retryable.
    #[error("this server's clock is behind the token's last rotation; retry")]
    ClockBehind,
    /// A storage failure; nothing was handed out.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RotateError {
    /// The stable code.
    pub fn code(&self) -> Code {
        match self {
            Self::Malformed(_) | Self::InvalidToken => Code::InvalidToken,
            Self::InvalidInput(_) => Code::InvalidInput,
            Self::Unknown => Code::UnknownToken,
            Self::Revoked(_) => Code::Revoked,
            Self::ClientMismatch => Code::ClientMismatch,
            Self::ConfirmationMismatch => Code::ConfirmationMismatch,
            Self::Expired { .. } => Code::Expired,
            Self::ReuseDetected { .. } => Code::ReuseDetected,
            Self::Diverged { .. } => Code::Diverged,
            Self::ScopeWidened => Code::ScopeWidened,
            Self::TooManyGenerations => Code::TooManyGenerations,
            Self::ClockBehind => Code::ClockBehind,
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
    /// The stable code.
    pub fn code(&self) -> Code {
        match self {
            Self::Malformed(_) | Self::InvalidToken => Code::InvalidToken,
            Self::InvalidInput(_) => Code::InvalidInput,
            Self::ClientMismatch => Code::ClientMismatch,
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
    pub fn code(&self) -> Code {
        match self {
            Self::Open(e) => e.code(),
            Self::Issue(e) => e.code(),
            Self::Rotate(e) => e.code(),
            Self::Revoke(e) => e.code(),
            Self::Store(e) => e.code(),
            Self::Keys(e) => e.code(),
            Self::InvalidInput(_) => Code::InvalidInput,
        }
    }
}
