//! Errors returned by [`Retry`](crate::Retry).
//!
//! The errors a retry layer gives back are brace's shared ones, re-exported here:
//! [`RetriesExhausted`] (with [`GiveUpReason`]) when retries ran out and
//! [`DeadlineExceeded`] when the overall deadline cut an attempt short. A per-attempt
//! timeout on the last attempt is tower's [`Elapsed`](tower::timeout::error::Elapsed),
//! wrapped in `RetriesExhausted`.

use std::fmt;

pub use brace_core::{DeadlineExceeded, GiveUpReason, RetriesExhausted};

/// A [`RetryConfig`](crate::RetryConfig) that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfigError {
    message: String,
}

impl RetryConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for RetryConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid retry config: {}", self.message)
    }
}

impl std::error::Error for RetryConfigError {}
