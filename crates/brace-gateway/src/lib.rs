//! brace's whole stack behind an OpenAI-compatible HTTP API.
//!
//! This is the library behind `cargo run --release --example gateway`: a YAML
//! [`GatewayConfig`] becomes a [`Gateway`] — for each request, degrade → failover →
//! per-provider circuit breaker → retry → timeout → provider client — served by an axum
//! [`router`](app::router) that speaks `POST /v1/chat/completions` (JSON and SSE), the seed's
//! `POST /v1/completions`, `GET /v1/models`, `GET /v1/health`, `GET /v1/circuits`,
//! `POST /v1/degradation/level` and `GET /metrics`.
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
pub mod config;
pub mod demo;
pub mod error;
pub mod metrics;
pub mod sse;
pub mod stack;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use self::config::GatewayConfig;
pub use self::error::ApiError;
pub use self::stack::Gateway;

/// Serves `gateway` on `listener` until `shutdown` resolves, then stops accepting and lets
/// in-flight requests (streams included) finish within the configured grace period.
///
/// # Errors
///
/// An I/O error from the listener.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = gateway.config.server.shutdown_grace;
    let app = app::router(gateway.clone()).layer(
        tower::ServiceBuilder::new()
            .layer(tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer::new([
                http::header::AUTHORIZATION,
            ]))
            .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
                tower_http::request_id::MakeRequestUuid,
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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut stop_rx2 = stop_rx.clone();
    tokio::select! {
        result = server.into_future() => result,
        () = async move {
            let _ = stop_rx2.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_secs = grace.as_secs(), "shutdown grace period over; dropping remaining connections");
            Ok(())
        }
    }
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
