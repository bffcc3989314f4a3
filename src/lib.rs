//! brace keeps an LLM-backed application answering when its model providers fail.
//!
//! This facade re-exports brace's crates, each behind a feature of the same name (all on by
//! default):
//!
//! | feature | crate | what it gives |
//! |---|---|---|
//! | — | [`core`] | `BoxError`, the `Classify` trait and `Outcome`, the shared errors |
//! | `circuit` | [`circuit`] | `CircuitBreakerLayer` |
//! | `retry` | [`retry`] | `RetryLayer` |
//! | `degrade` | [`degrade`] | `DegradeLayer` |
//! | `failover` | [`failover`] | `FailoverService` |
//! | `llm` | [`llm`] | chat types, `LlmError`, provider clients, the simulated provider |
//!
//! # Example
//!
//! ```
//! use brace::core::{Classify, DefaultClassifier, Outcome};
//!
//! let outcome = DefaultClassifier.classify(Ok::<_, &brace::core::BoxError>(&()));
//! assert_eq!(outcome, Outcome::success());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

#[doc(inline)]
pub use brace_core as core;

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
