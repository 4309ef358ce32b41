//! The one HTTP server loop every listener uses (the user-service API and admin port, the
//! relay's and the email-service's admin ports): axum's `serve` sets no timeout and accepts
//! without bound, so a client that opens sockets and sends headers slowly (or nothing) would
//! hold them forever. [`serve`] drives each connection with hyper-util's `auto::Builder` (HTTP/1
//! and h2c) under three [`HttpLimits`]:
//!
//! - `HTTP_HEADER_READ_TIMEOUT`: an HTTP/1 request's headers must arrive within this long after
//!   the server starts waiting for them, however slowly they trickle in (hyper's timer). hyper
//!   starts that wait as soon as a keep-alive connection is idle, so it also bounds the pause
//!   between two requests on one connection.
//! - `HTTP_IDLE_TIMEOUT`: a connection with no request in progress for this long is closed,
//!   whatever the protocol: a socket that never sends a byte (hyper-util would wait for the
//!   protocol preface forever), an idle h2 connection, an idle keep-alive.
//! - `HTTP_MAX_CONNECTIONS`: connections open at once; past it the server stops accepting
//!   (new clients wait in the kernel backlog) until one closes.
//!
//! Shutdown stops accepting, asks every connection to finish its in-flight requests and close
//! (hyper's graceful shutdown), and returns once they have. Handlers see the peer address as
//! axum's `ConnectInfo<SocketAddr>`, as with `into_make_service_with_connect_info`.
//!
//! What the APIs share besides the loop: [`error`], the JSON error shape; [`metrics`], request
//! metrics with bounded labels; [`body`], the bounded read of a request body.

use std::{future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt as _;

use crate::settings::{SettingsError, ensure};

pub mod body;
pub mod error;
pub mod metrics;

/// Time and connection bounds of one listener (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// `HTTP_HEADER_READ_TIMEOUT`.
    pub header_read_timeout: Duration,
    /// `HTTP_IDLE_TIMEOUT`.
    pub idle_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`.
    pub max_connections: usize,
}

impl HttpLimits {
    /// Default `HTTP_HEADER_READ_TIMEOUT`.
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default `HTTP_IDLE_TIMEOUT`.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// Default `HTTP_MAX_CONNECTIONS`: below the common 1,024 open-file limit, with room for the
    /// database pool, the broker and the log.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 900;

    /// Checks the values, naming the variable of a bad one.
    ///
    /// # Errors
    /// A zero timeout or connection cap, or a timeout above an hour.
    pub fn validate(&self) -> Result<(), SettingsError> {
        const MAX: Duration = Duration::from_secs(3600);
        for (name, value) in [
            ("HTTP_HEADER_READ_TIMEOUT", self.header_read_timeout),
            ("HTTP_IDLE_TIMEOUT", self.idle_timeout),
        ] {
            ensure(!value.is_zero() && value <= MAX, || {
                format!(
                    "{name} must be between 1ms and 1h, got {}",
                    humantime::format_duration(value)
                )
            })?;
        }
        ensure(self.max_connections > 0, || {
            "HTTP_MAX_CONNECTIONS must be at least 1, got 0".into()
        })
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` completes, then lets in-flight
/// requests finish and returns.
///
/// # Errors
/// Never today (accept errors are logged and retried, like axum's `serve`); the `Result` keeps
/// the call sites' shape.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        // Take a slot before accepting: at the cap the listener stops accepting.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    handle_accept_error(&error).await;
                    continue;
                }
            },
        };
        // As axum's `serve` does.
        tracing::trace!(%peer, "connection accepted");
        let (builder, router, stop) = (builder.clone(), router.clone(), stop.clone());
        connections.spawn(async move {
            serve_connection(&builder, stream, peer, router, limits.idle_timeout, stop).await;
            drop(slot);
        });
    }
    drop(listener);
    stop.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Drives one connection until it ends, is idle for `idle_timeout`, or `stop`.
async fn serve_connection(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    idle_timeout: Duration,
    stop: CancellationToken,
) {
    // Responses are written whole; don't let Nagle hold back the last segment.
    let _ = stream.set_nodelay(true);
    let (in_flight, watch_in_flight) = watch::channel(0_usize);
    let in_flight = Arc::new(in_flight);
    // What `into_make_service_with_connect_info` does: the peer address as an extension.
    let router = tower::Layer::layer(&axum::Extension(ConnectInfo(peer)), router);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        in_flight.send_modify(|n| *n += 1);
        let in_flight = InFlight(in_flight.clone());
        let response = router.clone().oneshot(request);
        async move {
            let response = response.await;
            drop(in_flight);
            response
        }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    // Timeouts, resets and malformed requests: the client's problem, not ours.
                    tracing::debug!(%peer, error = %error, "HTTP connection ended with an error");
                }
                return;
            }
            () = stop.cancelled(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = idle_for(watch_in_flight.clone(), idle_timeout), if !closing => {
                tracing::debug!(%peer, "closing an idle HTTP connection");
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Decrements the connection's in-flight count when the request's response future ends (or
/// is dropped: the client went away).
struct InFlight(Arc<watch::Sender<usize>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Completes once no request has been in progress for `timeout`.
async fn idle_for(mut in_flight: watch::Receiver<usize>, timeout: Duration) {
    loop {
        if *in_flight.borrow_and_update() == 0 {
            tokio::select! {
                () = tokio::time::sleep(timeout) => return,
                changed = in_flight.changed() => if changed.is_err() { return },
            }
        } else if in_flight.changed().await.is_err() {
            return;
        }
    }
}

/// Like axum's `serve`: a reset before accept is ignored; anything else (out of file
/// descriptors) is logged and retried after a second, when connections may have closed.
async fn handle_accept_error(error: &io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept failed; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn handlers_see_the_peer_address_and_shutdown_returns() {
        use axum::routing::get;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            router,
            HttpLimits::default(),
            stop.clone().cancelled_owned(),
        ));
        let mut client = TcpStream::connect(addr).await.unwrap();
        let me = client.local_addr().unwrap();
        client
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        client.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with(&me.to_string()), "{response}");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }

    #[test]
    fn limits_name_the_bad_variable() {
        let zero_header = HttpLimits {
            header_read_timeout: Duration::ZERO,
            ..HttpLimits::default()
        };
        let zero_connections = HttpLimits {
            max_connections: 0,
            ..HttpLimits::default()
        };
        let long_idle = HttpLimits {
            idle_timeout: Duration::from_secs(7200),
            ..HttpLimits::default()
        };
        for (limits, name) in [
            (zero_header, "HTTP_HEADER_READ_TIMEOUT"),
            (zero_connections, "HTTP_MAX_CONNECTIONS"),
            (long_idle, "HTTP_IDLE_TIMEOUT"),
        ] {
            let error = limits.validate().unwrap_err().to_string();
            assert!(error.contains(name), "{error}");
        }
        assert!(HttpLimits::default().validate().is_ok());
    }
}
