//! PostgreSQL errors as [`StoreError`]s.

use rotoken::StoreError;
use tokio_postgres::error::SqlState;

/// A PostgreSQL error as the engine sees it: a serialization failure or a
/// deadlock is [`StoreError::Conflict`] (the engine runs the batch again),
/// everything else [`StoreError::Storage`].
pub(crate) fn from_pg(e: tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED => {
            StoreError::Conflict(e.to_string())
        }
        _ => StoreError::storage(e),
    }
}

/// A failure of this crate's own making (a lost connection, a timeout), as
/// a [`StoreError::Storage`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgStoreError {
    /// No pooled connection could be had (the server is down or every
    /// connection is busy past the wait timeout).
    #[error("no PostgreSQL connection: {0}")]
    Pool(String),
    /// An operation did not finish within the store's operation timeout;
    /// its connection was closed, so its transaction rolled back.
    #[error("PostgreSQL did not answer within {0:?}")]
    TimedOut(std::time::Duration),
    /// The transaction's connection was lost by an earlier failure.
    #[error("the transaction's connection is gone after an earlier failure")]
    ConnectionGone,
    /// A statement of this transaction failed earlier; it cannot commit.
    #[error("an earlier statement of this transaction failed")]
    Aborted,
    /// The store's runtime stopped.
    #[error("the PostgreSQL store's runtime stopped")]
    RuntimeGone,
    /// A value read back does not fit the type the engine expects.
    #[error("unexpected value in {0}")]
    BadValue(&'static str),
}

impl From<PgStoreError> for StoreError {
    fn from(e: PgStoreError) -> Self {
        StoreError::storage(e)
    }
}

/// Damaged stored data in `table`.
pub(crate) fn corrupt(table: &'static str, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_errors_are_storage_errors() {
        let e: StoreError = PgStoreError::RuntimeGone.into();
        assert_eq!(e.code(), rotoken::Code::StorageError);
        assert!(matches!(e, StoreError::Storage(_)));
    }
}
