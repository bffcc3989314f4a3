//! The errors that cross layer boundaries.
//!
//! Each layer that refuses or gives up on a call returns one of these inside a
//! [`BoxError`], as tower's `Elapsed` is returned by its timeout. They live here, in the
//! shared vocabulary, so that any classifier can recognise them whatever order the layers
//! are stacked in; each layer crate re-exports its own.
//!
//! Test for them with `err.is::<CircuitOpen>()` or `err.downcast_ref::<RetriesExhausted>()`,
//! or with [`find`] to look through wrapping errors.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::BoxError;

/// Finds the first error of type `E` in `err`'s chain of sources, `err` included.
///
/// ```
/// use brace_core::error::{find, GiveUpReason, RetriesExhausted};
/// use brace_core::CircuitOpen;
///
/// let open = CircuitOpen::new("openai", None);
/// let err = RetriesExhausted::new(2, GiveUpReason::MaxRetries, Box::new(open));
/// assert_eq!(find::<CircuitOpen>(&err).unwrap().name(), "openai");
/// ```
pub fn find<'a, E: Error + 'static>(mut err: &'a (dyn Error + 'static)) -> Option<&'a E> {
    loop {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        err = err.source()?;
    }
}

// ===== CircuitOpen =====

/// A circuit breaker refused the call because its circuit is open.
#[derive(Debug, Clone)]
pub struct CircuitOpen {
    name: Arc<str>,
    retry_after: Option<Duration>,
}

impl CircuitOpen {
    /// A refusal by the breaker named `name`, which may admit calls again after
    /// `retry_after` (if it knows when).
    pub fn new(name: impl Into<Arc<str>>, retry_after: Option<Duration>) -> Self {
        Self {
            name: name.into(),
            retry_after,
        }
    }

    /// The name of the breaker that refused the call.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long until the breaker may admit a call again, if known (`None` while the
    /// breaker is forced open).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit `{}` open", self.name)?;
        if let Some(wait) = self.retry_after {
            write!(f, "; may retry in {}ms", wait.as_millis())?;
        }
        Ok(())
    }
}

impl Error for CircuitOpen {}

// ===== RetriesExhausted =====

/// Why a retry layer stopped retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// The maximum number of retries was reached.
    MaxRetries,
    /// The retry budget had no retries left.
    BudgetExhausted,
    /// The server asked to wait longer than the configured maximum.
    RetryAfterTooLong(Duration),
    /// The next attempt could not start before the overall deadline.
    Deadline,
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MaxRetries => f.write_str("maximum retries reached"),
            Self::BudgetExhausted => f.write_str("retry budget exhausted"),
            Self::RetryAfterTooLong(wait) => {
                write!(
                    f,
                    "server asked to wait {}ms, over the maximum",
                    wait.as_millis()
                )
            }
            Self::Deadline => f.write_str("no time left before the deadline"),
        }
    }
}

/// A retry layer gave up: it says how many attempts were made, why it stopped, and keeps the
/// last attempt's error (its [`source`](Error::source)).
#[derive(Debug)]
pub struct RetriesExhausted {
    attempts: u32,
    reason: GiveUpReason,
    last: BoxError,
}

impl RetriesExhausted {
    /// `attempts` calls were made (the first included) and the last failed with `last`.
    pub fn new(attempts: u32, reason: GiveUpReason, last: BoxError) -> Self {
        Self {
            attempts,
            reason,
            last,
        }
    }

    /// How many attempts were made, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Why retrying stopped.
    pub fn reason(&self) -> GiveUpReason {
        self.reason
    }

    /// The error of the last attempt.
    pub fn last_error(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.last
    }

    /// Takes the error of the last attempt.
    pub fn into_last_error(self) -> BoxError {
        self.last
    }
}

impl fmt::Display for RetriesExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up after {} attempt{} ({}): {}",
            self.attempts,
            if self.attempts == 1 { "" } else { "s" },
            self.reason,
            self.last
        )
    }
}

impl Error for RetriesExhausted {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.last)
    }
}

// ===== AllProvidersFailed =====

/// One provider's failure inside [`AllProvidersFailed`].
#[derive(Debug)]
pub struct ProviderFailure {
    /// The provider's name.
    pub name: Arc<str>,
    /// What went wrong there.
    pub error: BoxError,
}

impl ProviderFailure {
    /// The failure of the provider named `name`.
    pub fn new(name: impl Into<Arc<str>>, error: BoxError) -> Self {
        Self {
            name: name.into(),
            error,
        }
    }
}

/// Every provider a failover service tried failed; each one's error is kept, in the order
/// they were tried.
#[derive(Debug)]
pub struct AllProvidersFailed {
    failures: Vec<ProviderFailure>,
}

impl AllProvidersFailed {
    /// The failures, in the order the providers were tried.
    pub fn new(failures: Vec<ProviderFailure>) -> Self {
        Self { failures }
    }

    /// Each tried provider's failure, in order.
    pub fn failures(&self) -> &[ProviderFailure] {
        &self.failures
    }

    /// Takes the failures.
    pub fn into_failures(self) -> Vec<ProviderFailure> {
        self.failures
    }
}

impl fmt::Display for AllProvidersFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.failures.is_empty() {
            return f.write_str("all providers failed: no provider was available");
        }
        f.write_str("all providers failed: [")?;
        for (i, failure) in self.failures.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}: {}", failure.name, failure.error)?;
        }
        f.write_str("]")
    }
}

impl Error for AllProvidersFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.failures
            .last()
            .map(|failure| &*failure.error as &(dyn Error + 'static))
    }
}

// ===== DeadlineExceeded =====

/// The overall deadline for a call passed before it finished.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineExceeded {
    after: Duration,
}

impl DeadlineExceeded {
    /// The deadline of `after` passed.
    pub fn new(after: Duration) -> Self {
        Self { after }
    }

    /// The deadline that passed.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "deadline of {}ms exceeded", self.after.as_millis())
    }
}

impl Error for DeadlineExceeded {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_providers_failed_lists_each_in_order() {
        let err = AllProvidersFailed::new(vec![
            ProviderFailure::new("anthropic", "overloaded".into()),
            ProviderFailure::new("openai", Box::new(CircuitOpen::new("openai", None))),
        ]);
        assert_eq!(
            err.to_string(),
            "all providers failed: [anthropic: overloaded, openai: circuit `openai` open]"
        );
    }

    #[test]
    fn retries_exhausted_says_why_and_keeps_last_error() {
        let err = RetriesExhausted::new(3, GiveUpReason::BudgetExhausted, "503".into());
        assert_eq!(
            err.to_string(),
            "gave up after 3 attempts (retry budget exhausted): 503"
        );
        assert_eq!(err.source().unwrap().to_string(), "503");
        let boxed: BoxError = Box::new(err);
        let inner = boxed.downcast_ref::<RetriesExhausted>().unwrap();
        assert_eq!(inner.attempts(), 3);
    }
}
