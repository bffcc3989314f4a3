//! The shared vocabulary of [brace]: the error type every layer speaks, the [`Classify`] trait
//! that judges how a call went, and the few errors that cross layer boundaries.
//!
//! brace's layers (circuit breaker, retry, degrade, failover) are generic tower middleware.
//! None of them knows what an LLM is: each asks a classifier what an outcome means —
//! should it count against a circuit, is it worth retrying, should another provider be
//! tried, did the server say when to come back — and acts on the [`Outcome`].
//!
//! # Example
//!
//! ```
//! use brace_core::{Classify, Outcome, StatusClassifier};
//! use http::{Response, StatusCode};
//!
//! let classifier = StatusClassifier::new();
//! let response = Response::builder()
//!     .status(StatusCode::TOO_MANY_REQUESTS)
//!     .header("retry-after", "7")
//!     .body(())
//!     .unwrap();
//!
//! let outcome = Classify::<_, std::io::Error>::classify(&classifier, Ok(&response));
//! assert!(outcome.is_failure());
//! assert!(outcome.is_retryable());
//! assert_eq!(outcome.retry_after(), Some(std::time::Duration::from_secs(7)));
//! ```
//!
//! [brace]: https://docs.rs/brace
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod macros;

pub mod budget;
pub mod classify;
pub mod clock;
pub mod commit;
pub mod deadline;
pub mod degrade;
pub mod duration;
pub mod error;
pub mod exclude;
pub mod grpc;
pub mod instances;
pub mod on_error;
pub mod retry_after;

pub use self::classify::{
    Classify, DefaultClassifier, ErrorsAsFailures, FailureClass, Outcome, StatusClassifier, Verdict,
};
pub use self::error::{
    AllProvidersFailed, CircuitOpen, DeadlineExceeded, GiveUpReason, ProviderFailure,
    RetriesExhausted,
};
pub use self::grpc::{GrpcClassifier, GrpcHttpClassifier};

/// An error that can be sent across threads: what every brace layer that creates errors
/// of its own returns, as tower's middleware does.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
