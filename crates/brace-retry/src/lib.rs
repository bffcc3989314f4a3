//! Retries for tower services: retry what is worth retrying, when it is worth retrying, and
//! never turn an outage into a retry storm.
//!
//! [`RetryLayer`] wraps any `Service<Req>` whose requests can be cloned. After each attempt a
//! classifier ([`brace_core::Classify`]) judges the outcome, and the layer decides from that
//! [`Outcome`](brace_core::Outcome) alone: it retries only what
//! [`is_retryable`](brace_core::Outcome::is_retryable) allows, and:
//!
//! - waits between attempts by a [`Backoff`]: constant, exponential, or exponential with
//!   full or decorrelated jitter, capped — reproducible with a seeded generator;
//! - gives each [`FailureClass`](brace_core::FailureClass) its own retry count and backoff if
//!   told to ([`ClassPolicy`]): rate limits more attempts and longer waits, timeouts one
//!   quick retry;
//! - honours the server's hint ([`Outcome::retry_after`](brace_core::Outcome::retry_after),
//!   from `Retry-After` in seconds or as an HTTP date) up to a cap, and gives up at once
//!   past it rather than sleep for minutes;
//! - spends retries from a shared [`RetryBudget`] (the accounting of tower's `TpsBudget`, without its lock), so a fully failing
//!   upstream sees at most about `(1 + ratio) ×` the offered load;
//! - keeps to the call's one deadline ([`brace_core::deadline`]): the one set above it, or
//!   its own, which the layers below then see; no backoff wait starts that would end at or
//!   after it, and each attempt's timeout is cut short by it;
//! - reports each retry and each give-up to hooks, for tracing and metrics.
//!
//! When it gives up the error says so: a [`RetriesExhausted`] with the number of attempts,
//! the [`GiveUpReason`] and the last error (its `source`, reachable by downcast). A failure
//! the classifier does not retry — on the first attempt or later — is returned as it came.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use brace_core::BoxError;
//! use brace_retry::{Backoff, RetryLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! # tokio::time::pause();
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = Arc::clone(&calls);
//! // Fails twice, then answers.
//! let flaky = tower::service_fn(move |name: &'static str| {
//!     let n = counter.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         if n < 2 {
//!             Err::<String, BoxError>("connection reset".into())
//!         } else {
//!             Ok(format!("hello, {name}"))
//!         }
//!     }
//! });
//!
//! let service = ServiceBuilder::new()
//!     .layer(
//!         RetryLayer::builder()
//!             .max_retries(3)
//!             .backoff(Backoff::exponential(
//!                 Duration::from_millis(100),
//!                 2.0,
//!                 Duration::from_secs(2),
//!             ))
//!             .deadline(Duration::from_secs(10))
//!             .build(),
//!     )
//!     .service(flaky);
//!
//! assert_eq!(service.oneshot("brace").await?, "hello, brace");
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! # Ok(())
//! # }
//! ```
//!
//! # Retry policy per failure class
//!
//! ```
//! use std::time::Duration;
//! use brace_core::{FailureClass, StatusClassifier};
//! use brace_retry::{Backoff, ClassPolicy, RetryLayer};
//!
//! let layer = RetryLayer::builder()
//!     .classifier(StatusClassifier::new())
//!     .max_retries(2) // server errors and everything else: the defaults
//!     .class(
//!         FailureClass::RateLimited,
//!         ClassPolicy::new()
//!             .max_retries(4)
//!             .backoff(Backoff::exponential(Duration::from_secs(2), 2.0, Duration::from_secs(30))),
//!     )
//!     .class(
//!         FailureClass::Timeout,
//!         ClassPolicy::new().max_retries(1).backoff(Backoff::constant(Duration::from_millis(100))),
//!     )
//!     .build();
//! # let _ = layer;
//! ```
//!
//! The outcome's [class](brace_core::Outcome::class) picks the policy; a retry is allowed
//! while the retries the call made so far (of any class) are below that class's
//! `max_retries`; its wait is the class's backoff, or the server's `Retry-After` when that is
//! longer (a `Retry-After` above [`max_retry_after`](RetryLayerBuilder::max_retry_after)
//! makes the layer give up instead).
//!
//! # Configuration
//!
//! [`RetryConfig`] is the serde form (unknown fields are refused; durations as `250ms`,
//! `30s` or seconds; retry counts at most 20). The seed configuration's section
//! deserializes as is:
//!
//! ```yaml
//! max_retries: 2
//! backoff: exponential
//! on_error: [429, 500, 502, 503, timeout]
//! rate_limited: { max_retries: 4, base_delay: 2s, max_delay: 30s }   # optional, per class
//! ```
//!
//! The configuration brings no classifier of its own: [`RetryConfig::layer`] takes the one
//! the stack uses (`brace_llm::LlmClassifier`, brace-core's `StatusClassifier` over HTTP, …)
//! and narrows it with the `on_error` list, a [`brace_core::on_error::OnError`]: a failure
//! the list does not name is not retried, but still counts and fails over as the classifier
//! says.
//!
//! # Where to put it
//!
//! Retry resends the same request to the same service. Over a circuit breaker, a
//! [`CircuitOpen`](brace_core::CircuitOpen) is not retried by the default classifier (the
//! breaker would refuse again); failing over to another provider is the failover layer's
//! job. A request that cannot be cloned (a streaming body) cannot be retried: see
//! [`Retry`]'s docs.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod backoff;
mod budget;
mod config;
pub mod error;
mod event;
pub mod future;
mod layer;
mod policy;
mod service;

pub use self::backoff::{Backoff, BackoffKind};
pub use self::budget::RetryBudget;
pub use self::config::{BudgetConfig, ClassRetryConfig, RetryConfig};
pub use self::error::{DeadlineExceeded, GiveUpReason, RetriesExhausted, RetryConfigError};
pub use self::event::{GiveUpEvent, RetryEvent};
pub use self::layer::{RetryLayer, RetryLayerBuilder};
pub use self::policy::ClassPolicy;
pub use self::service::Retry;
