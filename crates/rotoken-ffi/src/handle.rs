//! Handles: opaque, reference-counted, safe to close while in use.
//!
//! A `rotoken_handle *` is never dereferenced. Its value is a number drawn
//! from a counter that never repeats in the life of the process, and a
//! registry maps live numbers to an `Arc<Store>`. Every call looks its handle
//! up, clones the `Arc` (so the store outlives the call), and holds a read
//! lock on the engine while it runs. `rotoken_close` removes the number from
//! the registry (later calls get [`Status::Closed`]), then takes the write
//! lock, which waits for calls in flight to finish, and drops the engine,
//! releasing the database file. So:
//!
//! - closing while other threads use the handle is safe: they finish, or get
//!   `ROTOKEN_STATUS_CLOSED`;
//! - a closed, double-closed or made-up handle is an error, never a crash,
//!   and never reaches another store, because numbers are not reused.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use rotoken::Engine;

use crate::status::{FfiError, Status};

/// An open store, as seen by the C caller: `rotoken_handle *`.
///
/// Opaque: the pointer's value identifies the store and is never dereferenced.
pub struct Handle {
    _private: [u8; 0],
}

/// What a handle refers to.
pub(crate) struct Store {
    /// `None` once closed.
    engine: RwLock<Option<Engine>>,
}

struct Registry {
    /// The next number to hand out; numbers are never reused.
    next: usize,
    live: BTreeMap<usize, Arc<Store>>,
}

/// Handle values start high and step by 16, so they look nothing like small
/// integers or NULL, and a handle off by a few bytes is simply unknown.
const FIRST: usize = 0x0010_0000;
const STEP: usize = 16;

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next: FIRST,
    live: BTreeMap::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    // Every critical section is a map insert, lookup or removal: a panic
    // cannot leave the map half-changed.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

fn closed() -> FfiError {
    FfiError::new(
        Status::Closed,
        "the handle is closed (or was never returned by rotoken_open)",
    )
}

/// Registers an engine and returns its new handle.
pub(crate) fn register(engine: Engine) -> Result<*mut Handle, FfiError> {
    let mut reg = registry();
    let id = reg.next;
    let Some(next) = id.checked_add(STEP) else {
        return Err(FfiError::new(
            Status::Internal,
            "no handle numbers are left in this process",
        ));
    };
    reg.next = next;
    reg.live.insert(
        id,
        Arc::new(Store {
            engine: RwLock::new(Some(engine)),
        }),
    );
    Ok(std::ptr::without_provenance_mut(id))
}

/// Runs `f` with the engine of `handle`, holding it open until `f` returns.
pub(crate) fn with_engine<T>(
    handle: *mut Handle,
    f: impl FnOnce(&Engine) -> Result<T, FfiError>,
) -> Result<T, FfiError> {
    if handle.is_null() {
        return Err(FfiError::new(Status::NullPointer, "handle is NULL"));
    }
    let store = registry().live.get(&handle.addr()).cloned().ok_or_else(closed)?;
    let guard = store.engine.read().unwrap_or_else(PoisonError::into_inner);
    let engine = guard.as_ref().ok_or_else(closed)?;
    f(engine)
}

/// Closes `handle`: later calls get [`Status::Closed`]; returns once calls
/// in flight have finished and the database file is released.
pub(crate) fn close(handle: *mut Handle) -> Result<(), FfiError> {
    if handle.is_null() {
        return Err(FfiError::new(Status::NullPointer, "handle is NULL"));
    }
    let store = registry().live.remove(&handle.addr()).ok_or_else(closed)?;
    let engine = store.engine.write().unwrap_or_else(PoisonError::into_inner).take();
    // Dropped outside the lock: this stops group commit and closes the file.
    drop(engine);
    Ok(())
}

/// Number of open handles (for tests).
#[cfg(test)]
pub(crate) fn open_count() -> usize {
    registry().live.len()
}
