//! The errors a circuit breaker returns.

use std::fmt;

pub use brace_core::CircuitOpen;

/// A circuit breaker's settings are out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitConfigError {
    message: String,
}

impl CircuitConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for CircuitConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid circuit breaker config: {}", self.message)
    }
}

impl std::error::Error for CircuitConfigError {}
