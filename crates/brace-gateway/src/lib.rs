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

mod accounting;
pub mod admin;
pub mod app;
pub mod auth;
pub mod banner;
mod bounded;
pub mod chaos;
pub mod config;
mod deferred;
pub mod demo;
pub mod error;
mod json_body;
pub mod limits;
mod locate;
mod log_filter;
pub mod metrics;
mod ops;
#[cfg(unix)]
pub mod per_core;
pub mod policy;
pub mod reload;
mod request_id;
pub mod server;
mod span;
pub mod sse;
pub mod stack;
mod state;
pub mod status;
pub mod telemetry;

pub use self::config::GatewayConfig;
pub use self::error::{ApiError, gateway_status};
pub use self::server::{bind, serve, shutdown_signal};
pub use self::stack::Gateway;
