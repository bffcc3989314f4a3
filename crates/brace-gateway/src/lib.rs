//! brace's whole stack behind an OpenAI-compatible HTTP API.
//!
//! This is the library behind `cargo run --release --example gateway`: a YAML
//! [`GatewayConfig`] becomes a [`Gateway`] — for each request, degrade → failover →
//! per-provider circuit breaker → retry → timeout → provider client — served by an axum
//! [`router`](app::router) that speaks `POST /v1/chat/completions` (JSON and SSE), the seed's
//! `POST /v1/completions`, `GET /v1/models`, `GET /v1/health`, `GET /v1/circuits`,
//! `POST /v1/degradation/level` and `GET /metrics`, and the operator's endpoints: circuits set
//! by hand (`POST /v1/circuits/{name}`), failover drills ([`chaos`], `/v1/chaos`), the
//! configuration in force (`GET /v1/config`, replaced without a restart by [`reload`]) and a
//! live status page ([`status`], `GET /status`).
//!
//! # Example
//!
//! ```
//! use brace_gateway::{Gateway, GatewayConfig};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let gateway = Gateway::build(GatewayConfig::demo()).unwrap();
//! let app = brace_gateway::app::router(gateway);
//! let response = app
//!     .oneshot(
//!         http::Request::post("/v1/chat/completions")
//!             .header("content-type", "application/json")
//!             .body(axum::body::Body::from(
//!                 r#"{"model":"demo","messages":[{"role":"user","content":"Hello"}]}"#,
//!             ))
//!             .unwrap(),
//!     )
//!     .await
//!     .unwrap();
//! assert_eq!(response.status(), 200);
//! assert!(response.headers().contains_key("x-brace-provider"));
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod app;
pub mod chaos;
pub mod config;
pub mod demo;
pub mod error;
mod locate;
pub mod metrics;
mod ops;
pub mod reload;
mod request_id;
pub mod sse;
pub mod stack;
pub mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

pub use self::config::GatewayConfig;
pub use self::error::{ApiError, gateway_status};
pub use self::stack::Gateway;

/// Serves `gateway` on `listener` until `shutdown` resolves, then stops accepting and lets
/// in-flight requests (streams included) finish within the configured grace period.
///
/// Each connection speaks HTTP/1.1, or HTTP/2 when it opens with the HTTP/2 preface (prior
/// knowledge). Idle keep-alive connections are closed as soon as `shutdown` resolves.
///
/// # Errors
///
/// None at present: as in axum's own accept loop, a failed `accept` is logged and retried
/// (after a second, for errors such as running out of file descriptors). The `Result` is
/// kept so that a fatal listener error can be reported without an API change.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = gateway.config().server.shutdown_grace;
    let app = app::router(gateway.clone()).layer(
        tower::ServiceBuilder::new()
            .layer(tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer::new([
                http::header::AUTHORIZATION,
            ]))
            .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
                request_id::FastRequestId,
            ))
            .layer(
                tower_http::trace::TraceLayer::new_for_http().make_span_with(
                    |request: &http::Request<axum::body::Body>| {
                        let id = request
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
                    },
                ),
            )
            .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id()),
    );
    // Histogram samples pile up in the recorder until they are folded into buckets.
    let upkeep = {
        let metrics = gateway.metrics.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(metrics::UPKEEP_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                metrics.run_upkeep();
            }
        })
    };
    let _stop_upkeep = AbortOnDrop(upkeep);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Each connection task holds a receiver; `closed()` resolves when the last one is gone.
    let (all_closed_tx, all_closed_rx) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _remote)) => stream,
                Err(err) => {
                    accept_error(&err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tokio::spawn(serve_connection(
            stream,
            app.clone(),
            stop_rx.clone(),
            all_closed_rx.clone(),
        ));
    }
    gateway.begin_shutdown();
    let _ = stop_tx.send(true);
    drop(listener);
    drop(all_closed_rx);
    // Every connection finishes what it has in flight, within the grace period.
    if tokio::time::timeout(grace, all_closed_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "shutdown grace period over; dropping remaining connections"
        );
    }
    Ok(())
}

/// Aborts a background task when dropped (when `serve` returns or is dropped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a connection may take to send a request head (its first byte included) before
/// it is closed: hyper's own default for HTTP/1.
const REQUEST_HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The HTTP/2 connection preface a client speaking HTTP/2 without TLS starts with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one connection until it closes, or until `stop` turns `true` and the requests in
/// flight on it are answered.
///
/// HTTP/1.1 and HTTP/2 (prior knowledge) are both served. The first bytes are peeked, not
/// read: a connection that does not open with the HTTP/2 preface goes straight to the HTTP/1
/// server, whose read buffer then sees the request head whole. (Reading them through
/// hyper-util's version detection hands HTTP/1 a 24-byte prefix first, which makes its
/// 8 KiB read buffer grow to 16 KiB on every connection.)
/// Sends every write at once: without `TCP_NODELAY`, Nagle's algorithm holds a small write
/// (a streamed event, a response) while the previous one is unacknowledged — up to the
/// peer's delayed-ACK time, 40 ms on Linux — a stall between streamed tokens.
fn configure_socket(stream: &TcpStream) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(error = %err, "could not set TCP_NODELAY on a connection");
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
    closed: tokio::sync::watch::Receiver<()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;

    configure_socket(&stream);
    let mut preface = [0u8; H2_PREFACE.len()];
    let maybe_h2 = tokio::select! {
        peeked = tokio::time::timeout(REQUEST_HEAD_TIMEOUT, stream.peek(&mut preface)) => match peeked {
            Ok(Ok(n)) => n > 0 && H2_PREFACE.starts_with(&preface[..n]),
            // Let the HTTP/1 server meet the error (or the closed connection) itself.
            Ok(Err(_)) => false,
            // A connection that never sends a byte is not kept open forever.
            Err(_) => return,
        },
        _ = stop.wait_for(|stopped| *stopped) => return,
    };
    let mut builder = Builder::new(TokioExecutor::new());
    // The same bound on every request head that follows, idle keep-alive waits included.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(REQUEST_HEAD_TIMEOUT);
    if !maybe_h2 {
        builder = builder.http1_only();
    }
    let service = hyper_util::service::TowerToHyperService::new(app);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::trace!(error = %err, "connection ended with an error");
                }
                break;
            }
            _ = stop.wait_for(|stopped| *stopped), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
    drop(closed);
}

/// What axum's own accept loop does with an accept error: a connection that failed before
/// it was accepted is skipped; anything else (say, out of file descriptors) is logged and
/// accepting pauses for a second.
async fn accept_error(err: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "accept error");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
}

/// Binds `addr` (port 0 picks a free port) and returns the listener and its address.
///
/// # Errors
///
/// The bind error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_without_delay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (accepted, _) = accepted.unwrap();
        drop(client);
        assert!(!accepted.nodelay().unwrap(), "Nagle is on by default");
        configure_socket(&accepted);
        assert!(accepted.nodelay().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_nothing_is_closed_after_the_head_timeout() {
        use tokio::io::AsyncReadExt;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mut client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (accepted, _) = accepted.unwrap();
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let (_closed_tx, closed) = tokio::sync::watch::channel(());
        let served = tokio::spawn(serve_connection(
            accepted,
            axum::Router::new(),
            stop,
            closed,
        ));
        let started = tokio::time::Instant::now();
        // The connection is closed from the server's side: the client reads end-of-stream.
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(
            REQUEST_HEAD_TIMEOUT * 2,
            client.as_mut().unwrap().read(&mut buf),
        )
        .await
        .expect("closed within the bound");
        assert_eq!(read.unwrap(), 0);
        assert!(started.elapsed() >= REQUEST_HEAD_TIMEOUT);
        served.await.unwrap();
    }
}
