//! A pooled connection that never goes back to the pool inside a transaction.

use deadpool_postgres::Object;

/// A connection from the pool. While `in_txn` is set (from the moment a
/// `BEGIN` is sent until its `COMMIT` or `ROLLBACK` is answered), dropping
/// it closes the connection instead of returning it to the pool, so no
/// later user ever inherits a half-done transaction (a timeout or a panic
/// dropped it mid-way): the server rolls the transaction back.
pub(crate) struct Conn {
    object: Option<Object>,
    pub(crate) in_txn: bool,
}

impl Conn {
    pub(crate) fn new(object: Object) -> Self {
        Self {
            object: Some(object),
            in_txn: false,
        }
    }

    /// The client (always present until drop).
    pub(crate) fn client(&self) -> &deadpool_postgres::ClientWrapper {
        match &self.object {
            Some(o) => o,
            None => unreachable!("a Conn is emptied only by drop"),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(object) = self.object.take()
            && self.in_txn
        {
            // Detached from the pool and dropped: the connection closes.
            drop(Object::take(object));
        }
    }
}
