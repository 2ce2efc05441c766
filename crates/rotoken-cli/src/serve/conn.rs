//! The accept loop of `rotoken serve`: HTTP/1.1 connections served by
//! hyper, with limits against clients that hold sockets without using them.
//!
//! - **Header read timeout**: a connection must deliver a complete request
//!   head within this time, counted from the moment it is accepted and, on a
//!   keep-alive connection, from the end of the previous response. A client
//!   that trickles its headers (slowloris) or never sends any is closed
//!   without an answer. This is hyper's `header_read_timeout`, driven by a
//!   Tokio timer.
//! - **Keep-alive idle limit**: a connection that has served a request and
//!   has none in progress is closed after this long. Because hyper's header
//!   timer also runs while a connection waits for its next request, the
//!   limit can be shorter than the header read timeout, never longer; off
//!   means one request per connection.
//! - **Connection cap**: at most this many connections at once. At the cap
//!   the loop stops accepting: new connections wait in the operating
//!   system's listen queue until one ends (they are neither accepted nor
//!   refused by us; beyond the kernel's backlog, connection attempts are
//!   dropped and clients retry).
//!
//! Shutdown: the loop stops accepting, every connection finishes the
//! request in progress and closes (idle ones at once), and [`serve`]
//! returns when the last connection has ended.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt as _;

/// Connection limits, resolved from the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Time allowed for a complete request head.
    pub(crate) header_read_timeout: Duration,
    /// How long an idle keep-alive connection is kept; `None`: keep-alive
    /// off. Never longer than `header_read_timeout` (see the module docs).
    pub(crate) keep_alive: Option<Duration>,
    /// Most connections served at once.
    pub(crate) max_connections: usize,
}

/// Pause after an accept error that is not about one connection (for
/// example too many open files), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `shutdown` resolves, then waits for the
/// connections in progress to finish. Each request carries the peer's
/// address as `ConnectInfo<SocketAddr>`, as `axum::serve` with
/// `into_make_service_with_connect_info` did.
pub(crate) async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.clamp(1, Semaphore::MAX_PERMITS)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    let mut at_cap = false;
    loop {
        if slots.available_permits() == 0 && !at_cap {
            tracing::warn!(
                max_connections = limits.max_connections,
                "connection limit reached: new connections wait until one ends"
            );
        }
        at_cap = slots.available_permits() == 0;
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                // The semaphore is never closed.
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(connection(stream, peer, app.clone(), limits, stop_rx.clone(), permit));
            }
            // The peer gave up before we accepted: nothing to do.
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    drop(listener);
    stop_tx.send_replace(true);
    // Each connection holds a receiver: wait for the last one to end.
    drop(stop_rx);
    stop_tx.closed().await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
    )
}

/// Requests in progress and served on one connection.
#[derive(Debug, Default, Clone, Copy)]
struct Activity {
    in_flight: usize,
    served: u64,
}

/// Counts a request as in progress until dropped (the response produced,
/// or the request abandoned).
struct InFlight(watch::Sender<Activity>);

impl InFlight {
    fn start(activity: &watch::Sender<Activity>) -> Self {
        activity.send_modify(|a| a.in_flight = a.in_flight.saturating_add(1));
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|a| {
            a.in_flight = a.in_flight.saturating_sub(1);
            a.served = a.served.wrapping_add(1);
        });
    }
}

/// Serves one connection; the permit frees its slot when it ends.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let (activity_tx, mut activity) = watch::channel(Activity::default());
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let in_flight = InFlight::start(&activity_tx);
        let app = app.clone();
        async move {
            let response: Result<Response, Infallible> = app.oneshot(request).await;
            drop(in_flight);
            response
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(limits.keep_alive.is_some());
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    // hyper's header timer already closes a connection idle for the header
    // read timeout; a shorter keep-alive limit needs a watch of its own.
    let idle_limit = limits.keep_alive.filter(|k| *k < limits.header_read_timeout);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                match result {
                    Err(e) if e.is_timeout() => {
                        tracing::debug!(%peer, "connection closed: no complete request head within the header read timeout");
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
                    Ok(()) => {}
                }
                break;
            }
            _ = stop.wait_for(|stopped| *stopped), if !closing => {
                // Finishes the request in progress, closes an idle connection now.
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = idle_for(&mut activity, idle_limit), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Resolves once the connection has served a request and then has had
/// none in progress for `limit`; never if `limit` is `None`.
async fn idle_for(activity: &mut watch::Receiver<Activity>, limit: Option<Duration>) {
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    loop {
        let idle = activity
            .wait_for(|a| a.in_flight == 0 && a.served > 0)
            .await
            .map(|a| a.served);
        let Ok(served) = idle else {
            // The connection (and its service) is gone.
            return std::future::pending().await;
        };
        let busy = activity.wait_for(|a| a.in_flight > 0 || a.served != served);
        if tokio::time::timeout(limit, busy).await.is_err() {
            return;
        }
    }
}
