//! Failover across several tower services: try providers in order of priority, skip the
//! ones known to be down, remember why each failed, come back to a provider once it
//! recovers, and cut tail latency with hedging.
//!
//! [`FailoverService`] is generic: it works over any `Service<Req>` whose request can be
//! cloned. What counts as an error worth moving on for comes from a
//! [`brace_core::Classify`] implementation ([`Outcome::should_failover`]); when a streamed
//! response commits to its provider comes from a [`brace_core::commit::Commit`] policy.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use brace_core::{AllProvidersFailed, BoxError};
//! use brace_failover::{FailoverService, HealthConfig, Provider};
//! use tower::{Service, ServiceExt, service_fn, util::BoxCloneService};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let provider = |answer: Result<&'static str, &'static str>| {
//!     BoxCloneService::new(service_fn(move |_: String| async move {
//!         answer.map_err(BoxError::from)
//!     }))
//! };
//! let mut failover = FailoverService::builder()
//!     .provider(Provider::new("primary", provider(Err("503 service unavailable"))))
//!     .provider(Provider::new("secondary", provider(Ok("answer"))).priority(1))
//!     .health(HealthConfig {
//!         consecutive_failures: 1,
//!         recovery_time: Duration::from_secs(30),
//!         ..HealthConfig::default()
//!     })
//!     .build()?;
//!
//! // The primary fails, the secondary answers.
//! let answer = failover.ready().await?.call("hi".to_owned()).await?;
//! assert_eq!(answer, "answer");
//!
//! // The primary is now skipped for 30 seconds.
//! let health = failover.health();
//! assert!(!health[0].healthy);
//! assert_eq!(health[1].successes, 1);
//! # Ok(())
//! # }
//! ```
//!
//! When every provider fails, the error is an [`AllProvidersFailed`] that lists each
//! provider's error in the order they were tried; [`brace_core::classify_error`] judges it
//! (retryable only if every failure was, with the shortest Retry-After).
//!
//! # Pieces
//!
//! - [`Provider`]: a service plus its name, priority, weight, price and model.
//! - [`Selection`]: ordered, weighted random, least latency (EWMA), power of two choices or
//!   cheapest, among the healthy providers of the best priority.
//! - [`Preference`]: a per-request preferred provider (a [`PreferredProvider`] extension, a
//!   field, anything a `fn(&Req) -> Option<&str>` can read).
//! - [`HealthConfig`]: passive health from real outcomes (consecutive failures, failure
//!   rate over a window, latency EWMA); [`Builder::probe`] adds active checks.
//! - [`HedgeConfig`]: a second provider after a fixed delay or a latency percentile,
//!   bounded by a budget (tower's `TpsBudget`).
//! - [`FailoverService::health`]: a [`ProviderHealth`] snapshot per provider.
//!
//! # With brace-llm
//!
//! brace-failover knows nothing of LLMs. An LLM gateway builds it over its provider stacks
//! (boxed into one type with `BoxCloneService`) with `brace_llm::LlmClassifier` as the
//! classifier, `brace_llm::commit::FirstContent` as the commit policy (so a stream that
//! breaks before its first token fails over), a `fn(&ChatRequest) -> Option<&str>` reading
//! a [`PreferredProvider`] from the request's extensions, and an [`ErrorKindFn`] naming
//! `LlmError` kinds for the health snapshot.
//!
//! [`Outcome::should_failover`]: brace_core::Outcome::should_failover
//! [`AllProvidersFailed`]: brace_core::AllProvidersFailed
//! [`brace_core::classify_error`]: brace_core::classify::classify_error
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod config;
mod error;
mod future;
mod health;
mod hedge;
mod preference;
mod probe;
mod provider;
mod select;
mod service;

pub use self::config::{FailoverConfig, HealthConfig, HedgeConfig, Selection};
pub use self::error::{BuildError, NotReady};
pub use self::future::ResponseFuture;
pub use self::health::{ErrorKindFn, ProviderHealth, default_error_kind};
pub use self::preference::{FromExtensions, NoPreference, Preference, PreferredProvider};
pub use self::probe::Probe;
pub use self::provider::{Price, Provider};
pub use self::service::{Builder, FailoverService, MAX_PROVIDERS};
