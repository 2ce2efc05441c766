//! The runtime the store owns, and how synchronous callers reach it.
//!
//! The [`rotoken::Store`] trait is synchronous: the engine's batch leader
//! is a plain thread, its async callers are served by a commit thread, and
//! synchronous callers may sit on a tokio `spawn_blocking` thread or even
//! (wrongly, but it must not panic) on a runtime worker. So no call here
//! uses `block_on`, which panics inside a runtime: every piece of work is
//! spawned onto the store's own runtime and the caller waits on a plain
//! channel. Every piece of work has a deadline; past it the work is
//! dropped (closing its connection, which rolls its transaction back).

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use rotoken::StoreError;

use crate::error::PgStoreError;

/// A small multi-threaded runtime owned by one store.
pub(crate) struct Bridge {
    runtime: Option<tokio::runtime::Runtime>,
    timeout: Duration,
}

impl Bridge {
    /// A runtime of `threads` workers; every [`Bridge::run`] gets `timeout`.
    pub(crate) fn new(threads: usize, timeout: Duration) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("rotoken-postgres")
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
            timeout,
        })
    }

    fn handle(&self) -> Result<&tokio::runtime::Runtime, StoreError> {
        self.runtime.as_ref().ok_or_else(|| PgStoreError::RuntimeGone.into())
    }

    /// Runs `work` on the store's runtime and waits for it on this thread
    /// (any thread: a plain one, a `spawn_blocking` one). Past the store's
    /// timeout the work is dropped and the caller gets a storage error.
    pub(crate) fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.run_for(self.timeout, work)
    }

    /// [`Bridge::run`] with a timeout of its own (the schema migration).
    pub(crate) fn run_for<T, F>(&self, timeout: Duration, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle()?.spawn(async move {
            let out = match tokio::time::timeout(timeout, work).await {
                Ok(r) => r,
                Err(_) => Err(PgStoreError::TimedOut(timeout).into()),
            };
            let _ = tx.send(out);
        });
        rx.recv().map_err(|_| StoreError::from(PgStoreError::RuntimeGone))?
    }

    /// Runs `work` on the store's runtime for as long as the runtime lives
    /// (the idle-connection reaper).
    pub(crate) fn spawn_background<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if let Ok(rt) = self.handle() {
            rt.spawn(work);
        }
    }

    /// Starts `work` on the store's runtime without waiting for it (the
    /// rollback of a dropped transaction).
    pub(crate) fn detach<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if let Ok(rt) = self.handle() {
            let timeout = self.timeout;
            rt.spawn(async move {
                let _ = tokio::time::timeout(timeout, work).await;
            });
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // `Runtime::drop` blocks and panics inside another runtime (a store
        // dropped by an async server); this does neither.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A boxed future of one statement's result.
pub(crate) type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, tokio_postgres::Error>> + Send + 'a>>;

/// Runs `statements` on one connection in one round trip: each is polled
/// once, in order, which queues its request on the connection (tokio-postgres
/// sends a request when its future is first polled), then all are awaited.
/// PostgreSQL runs them in this order; after a failed one, the rest of the
/// transaction fails too (and a `COMMIT` rolls back), so the caller must
/// look at every result.
pub(crate) async fn pipeline<T>(statements: Vec<Pending<'_, T>>) -> Vec<Result<T, tokio_postgres::Error>> {
    let mut polled = Vec::with_capacity(statements.len());
    for mut s in statements {
        let first = std::future::poll_fn(|cx| Poll::Ready(s.as_mut().poll(cx))).await;
        polled.push((s, first));
    }
    let mut out = Vec::with_capacity(polled.len());
    for (s, first) in polled {
        out.push(match first {
            Poll::Ready(r) => r,
            Poll::Pending => s.await,
        });
    }
    out
}
