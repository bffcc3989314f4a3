//! Failover across several tower services: try providers in order of priority, skip the
//! ones whose circuit is open, remember why each failed or was skipped, come back to a
//! provider as soon as its circuit lets a trial through, and cut tail latency with hedging.
//!
//! [`FailoverService`] is generic: it works over any `Service<Req>` whose request can be
//! cloned. What counts as an error worth moving on for comes from a
//! [`brace_core::Classify`] implementation ([`Outcome::should_failover`]); when a streamed
//! response commits to its provider comes from a [`brace_core::commit::Commit`] policy.
//!
//! # One truth per provider
//!
//! Whether a provider is tried is decided by one thing: its circuit breaker
//! ([`Provider::circuit`]). Passive health is the breaker's rule (a failure rate over a
//! window, or N failures in a row); the breaker's open wait is the only time a provider is
//! held out, and an active check ([`FailoverBuilder::probe`]) may end it early. The breakers,
//! latencies, counters and checks live in a [`ProviderRegistry`] that every failover
//! service (every route of a gateway) built from it shares.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use brace_circuit::CircuitBreakerLayer;
//! use brace_core::{AllProvidersFailed, BoxError};
//! use brace_failover::{FailoverService, Provider};
//! use tower::{Layer, Service, ServiceExt, service_fn, util::BoxCloneService};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // The primary fails; its breaker opens after one failure and waits 30 s.
//! let breaker = CircuitBreakerLayer::builder("primary")
//!     .consecutive_failures(1)
//!     .wait_in_open(Duration::from_secs(30))
//!     .build()?;
//! let primary = BoxCloneService::new(breaker.layer(service_fn(|_: String| async {
//!     Err::<&str, BoxError>("503 service unavailable".into())
//! })));
//! let secondary = BoxCloneService::new(service_fn(|_: String| async { Ok::<_, BoxError>("answer") }));
//! let mut failover = FailoverService::builder()
//!     .provider(Provider::new("primary", primary).circuit(breaker.handle()))
//!     .provider(Provider::new("secondary", secondary).priority(1))
//!     .build()?;
//!
//! // The primary fails, the secondary answers.
//! assert_eq!(failover.ready().await?.call("hi".into()).await?, "answer");
//!
//! // Its circuit is open now: the primary is skipped without a call for 30 s.
//! let health = failover.health();
//! assert!(!health[0].healthy);
//! assert_eq!(health[0].unhealthy_for, Some(Duration::from_secs(30)));
//! assert_eq!(failover.ready().await?.call("hi".into()).await?, "answer");
//! assert_eq!(failover.health()[0].calls, 1);
//! # Ok(())
//! # }
//! ```
//!
//! When every provider fails or is skipped, the error is an [`AllProvidersFailed`]: the
//! trail of every provider, tried (with its error) or skipped (with why), in order;
//! [`brace_core::classify_error`] judges it (retryable only if every failure was, with the
//! shortest Retry-After).
//!
//! # Pieces
//!
//! - [`Provider`]: a service plus its name, priority, weight, cost, model and circuit.
//! - [`ProviderRegistry`]: one record per provider shared by every service built from it;
//!   [`ProviderHealth`] snapshots.
//! - [`Selection`]: ordered, weighted random, least latency (EWMA), power of two choices or
//!   cheapest, among the providers of the best priority that may be tried.
//! - [`Preference`]: a per-request preferred provider (a [`PreferredProvider`] extension, a
//!   field, anything a `fn(&Req) -> Option<&str>` can read).
//! - [`HedgeConfig`]: a second provider after a fixed delay or a latency percentile,
//!   bounded by a budget ([`brace_core::budget::Budget`]).
//! - Per call: providers a layer above [excluded](brace_core::exclude) are skipped, and no
//!   provider is started after the call's [deadline](brace_core::deadline).
//!
//! # With brace-llm
//!
//! brace-failover knows nothing of LLMs. An LLM gateway builds it over its provider stacks
//! (boxed into one type with `BoxCloneService`) with `brace_llm::LlmClassifier` as the
//! classifier, `brace_llm::commit::FirstContent` as the commit policy (so a stream that
//! breaks before its first token fails over), a `fn(&ChatRequest) -> Option<&str>` reading
//! a [`PreferredProvider`] from the request's extensions, and a registry whose
//! [`ErrorKindFn`] names `LlmError` kinds.
//!
//! [`Outcome::should_failover`]: brace_core::Outcome::should_failover
//! [`AllProvidersFailed`]: brace_core::AllProvidersFailed
//! [`brace_core::classify_error`]: brace_core::classify::classify_error
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod config;
mod error;
mod future;
mod hedge;
mod preference;
mod probe;
mod provider;
pub mod quota;
mod registry;
mod select;
mod service;
pub mod store;

pub use self::config::{FailoverConfig, HedgeConfig, Selection};
pub use self::error::{FailoverBuildError, NotReady};
pub use self::future::ResponseFuture;
pub use self::preference::{FromExtensions, NoPreference, Preference, PreferredProvider};
pub use self::probe::Probe;
pub use self::provider::Provider;
pub use self::quota::{Acquired, QuotaExceeded, QuotaKind, QuotaPermit, RateLimit, RateLimiter};
pub use self::registry::{
    ErrorKindFn, ProviderEntry, ProviderHealth, ProviderRegistry, default_error_kind,
};
pub use self::service::{FailoverBuilder, FailoverService, MAX_PROVIDERS};
pub use self::store::{MemoryStore, StateStore, StoreUnavailable};
