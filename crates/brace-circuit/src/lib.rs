//! A circuit breaker for [tower] services: when a service keeps failing, stop sending it
//! calls, fail them at once, and probe for recovery — with resilience4j's semantics and no
//! global lock: a closed breaker admits a call with one atomic load and records it in a
//! lock-free count window (a time window holds its own lock for a few nanoseconds).
//!
//! [`CircuitBreakerLayer`] wraps any `Service<Req>`. Each outcome is judged by a classifier
//! ([`brace_core::Classify`]): success, failure, or ignored. The breaker records successes
//! and failures (and which calls were slow) in a sliding window — the last N calls or the
//! last N seconds — and opens when, with at least `minimum_calls` recorded, the failure rate
//! or the slow-call rate reaches its threshold. An open breaker fails calls at once with
//! [`CircuitOpen`], which names the breaker and says how long until it may admit calls
//! again. After the wait (which may grow on each re-open) it turns half-open and admits a
//! few trial calls; their rates close it or open it again.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use brace_circuit::{CircuitBreakerLayer, CircuitOpen, CircuitState};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), brace_core::BoxError> {
//! let layer = CircuitBreakerLayer::builder("flaky")
//!     .consecutive_failures(3)
//!     .wait_in_open(Duration::from_secs(30))
//!     .build()?;
//! let handle = layer.handle();
//! let mut service = ServiceBuilder::new()
//!     .layer(layer)
//!     .service_fn(|_: ()| async { Err::<(), _>(std::io::Error::other("down")) });
//!
//! for _ in 0..3 {
//!     let err = service.ready().await?.call(()).await.unwrap_err();
//!     assert!(err.is::<std::io::Error>());
//! }
//! assert_eq!(handle.state(), CircuitState::Open);
//!
//! let err = service.ready().await?.call(()).await.unwrap_err();
//! let open = err.downcast_ref::<CircuitOpen>().unwrap();
//! assert_eq!(open.name(), "flaky");
//! assert!(open.retry_after().unwrap() <= Duration::from_secs(30));
//! # Ok(())
//! # }
//! ```
//!
//! # What counts
//!
//! The default classifier, [`DefaultClassifier`](brace_core::DefaultClassifier), counts every
//! `Err` as a failure (except another breaker's [`CircuitOpen`], which is ignored). For
//! `http::Response`s use [`StatusClassifier`](brace_core::StatusClassifier), set with the
//! builder's [`classifier`](CircuitBreakerBuilder::classifier): 5xx (and 429, unless told
//! otherwise) count as failures and other 4xx are ignored. brace-llm provides a classifier
//! for LLM outcomes; brace-core's `GrpcClassifier` reads gRPC status codes.
//!
//! # States
//!
//! Besides closed, open and half-open, a [`CircuitHandle`] can force the breaker open, disable
//! it (admit and record nothing) or put it in metrics-only state (admit and record, never
//! open). Every transition emits a [`StateTransition`] to a callback
//! ([`CircuitBreakerBuilder::on_transition`]) and to subscribers ([`CircuitHandle::subscribe`]); a
//! [`CircuitRegistry`] lists breakers by name.
//!
//! # Sharing a breaker between replicas
//!
//! Two small hooks let a store (such as brace-redis) share a breaker's transitions between
//! replicas of a service without this crate doing any I/O: subscribers see every
//! transition with its open wait ([`StateTransition::wait`]) and can send it elsewhere;
//! [`CircuitHandle::apply_remote`] applies a state learned from elsewhere (marked
//! [`StateTransition::is_remote`], so it is not sent back); and a [`HalfOpenGate`] decides
//! whether an open breaker whose wait is over may move to half-open — one replica holding
//! a probe lease, the others staying open until its trial's outcome arrives.
//!
//! # Details
//!
//! - A half-open trial call whose future is dropped gives its permit back and records
//!   nothing.
//! - A call admitted while closed that finishes after the breaker opened is recorded, but
//!   neither re-trips the breaker nor extends its wait.
//! - A transition to the current state emits nothing; closed never moves straight to
//!   half-open.
//! - Clones of the service, and every service the layer builds, share one breaker.
//! - Timing calls to find slow ones reads the clock twice per call, the largest part of a
//!   closed breaker's cost where the clock is slow; [`CircuitBreakerBuilder::track_slow_calls`] turns it
//!   off.
//!
//! [tower]: https://docs.rs/tower
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod config;
mod error;
mod event;
pub mod future;
mod gate;
mod handle;
mod layer;
mod registry;
mod service;
mod state;
mod window;

pub use self::config::{
    CircuitBreakerBuilder, CircuitBreakerConfig, SlidingWindow, SlidingWindowKind, WaitInterval,
};
pub use self::error::{CircuitConfigError, CircuitOpen};
pub use self::event::StateTransition;
pub use self::gate::HalfOpenGate;
pub use self::handle::{CircuitHandle, CircuitMetrics};
pub use self::layer::CircuitBreakerLayer;
pub use self::registry::CircuitRegistry;
pub use self::service::CircuitBreaker;
pub use self::state::{Admission, CircuitState};
