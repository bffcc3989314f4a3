//! Events the layer reports to its hooks, for tracing and metrics.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use brace_core::{GiveUpReason, Outcome};

/// An attempt failed and the request will be sent again after [`delay`](Self::delay).
#[derive(Debug, Clone, Copy)]
pub struct RetryEvent<'a> {
    pub(crate) attempt: u32,
    pub(crate) delay: Duration,
    pub(crate) outcome: Outcome,
    pub(crate) error: Option<&'a (dyn Error + Send + Sync + 'static)>,
}

impl<'a> RetryEvent<'a> {
    /// The number of the attempt that failed (1 for the first call).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How long the layer waits before the next attempt (backoff or server hint).
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// How the classifier judged the failed attempt.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The failed attempt's error, or `None` if it returned a response judged a failure
    /// (such as an HTTP 503).
    pub fn error(&self) -> Option<&'a (dyn Error + Send + Sync + 'static)> {
        self.error
    }
}

/// The layer stopped retrying a request that was still failing in a retryable way.
#[derive(Debug, Clone, Copy)]
pub struct GiveUpEvent<'a> {
    pub(crate) attempts: u32,
    pub(crate) reason: GiveUpReason,
    pub(crate) outcome: Outcome,
    pub(crate) error: Option<&'a (dyn Error + Send + Sync + 'static)>,
}

impl<'a> GiveUpEvent<'a> {
    /// How many attempts were made, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Why retrying stopped.
    pub fn reason(&self) -> GiveUpReason {
        self.reason
    }

    /// How the classifier judged the last attempt.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The last attempt's error, or `None` if it returned a response judged a failure (the
    /// response itself is returned to the caller).
    pub fn error(&self) -> Option<&'a (dyn Error + Send + Sync + 'static)> {
        self.error
    }
}

/// A hook called with each event.
pub(crate) struct Hook<E: ?Sized>(pub(crate) Arc<E>);

impl<E: ?Sized> Clone for Hook<E> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<E: ?Sized> fmt::Debug for Hook<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hook")
    }
}

pub(crate) type OnRetry = Hook<dyn Fn(&RetryEvent<'_>) + Send + Sync>;
pub(crate) type OnGiveUp = Hook<dyn Fn(&GiveUpEvent<'_>) + Send + Sync>;
