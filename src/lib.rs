//! brace keeps an LLM-backed application answering when its model providers fail.
//!
//! This facade re-exports brace's crates, each behind a feature of the same name:
//!
//! | feature | crate | what it gives |
//! |---|---|---|
//! | — | brace-core, at the top level | [`BoxError`], the [`Classify`] trait and [`Outcome`], the shared errors ([`CircuitOpen`], [`RetriesExhausted`], …) |
//! | `circuit` (default) | [`circuit`] | `CircuitBreakerLayer` |
//! | `retry` (default) | [`retry`] | `RetryLayer` |
//! | `degrade` (default) | [`degrade`] | `DegradeLayer` |
//! | `failover` (default) | [`failover`] | `FailoverService` |
//! | `llm` (default) | [`llm`] | chat types, `LlmError` and `LlmClassifier`, the stream guard and continuation layers |
//! | `providers` (default) | [`providers`] | the OpenAI, Azure, Anthropic, Gemini and OpenAI-compatible clients over reqwest |
//! | `sim` (default) | [`sim`] | the simulated provider, in-process and over HTTP |
//! | `redis` | `redis` (brace-redis) | the Redis state store: replicas share circuits, the pinned level, a cache tier and rate limits |
//!
//! The generic layers (`circuit`, `retry`, `degrade`, `failover`) know nothing of LLMs;
//! `llm`, `providers` and `sim` are what brace knows about them.
//!
//! # Example
//!
//! ```
//! use brace::{Classify, DefaultClassifier, Outcome};
//!
//! let outcome = DefaultClassifier.classify(Ok::<_, &brace::BoxError>(&()));
//! assert_eq!(outcome, Outcome::success());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod builder;
mod layers;

pub use self::builder::ServiceBuilderExt;
pub use self::layers::Layers;

// The README's Rust blocks are doc tests: what it shows compiles and runs.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}

// brace-core's items at the top level (a module named `core` would shadow `::core`). An
// explicit re-export below (`degrade`) takes precedence over brace-core's module of the
// same name, whose items brace-degrade re-exports.
#[doc(inline)]
pub use brace_core::*;

#[cfg(feature = "circuit")]
#[doc(inline)]
pub use brace_circuit as circuit;

#[cfg(feature = "retry")]
#[doc(inline)]
pub use brace_retry as retry;

#[cfg(feature = "degrade")]
#[doc(inline)]
pub use brace_degrade as degrade;

#[cfg(feature = "failover")]
#[doc(inline)]
pub use brace_failover as failover;

#[cfg(feature = "llm")]
#[doc(inline)]
pub use brace_llm as llm;

#[cfg(feature = "providers")]
#[doc(inline)]
pub use brace_providers as providers;

#[cfg(feature = "sim")]
#[doc(inline)]
pub use brace_sim as sim;

#[cfg(feature = "redis")]
#[doc(inline)]
pub use brace_redis as redis;
