//! The settings and shared state behind every service built from one layer.

use std::fmt;
use std::time::Duration;

use parking_lot::Mutex;
use std::sync::Arc;

use crate::backoff::Backoff;
use crate::budget::RetryBudget;
use crate::event::{OnGiveUp, OnRetry};

/// Shared by a [`RetryLayer`](crate::RetryLayer), the services it builds and their futures.
pub(crate) struct Policy<C> {
    /// What the layer's events call it (`name` in each log line), if named.
    pub(crate) name: Option<Arc<str>>,
    pub(crate) classifier: C,
    pub(crate) max_retries: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_retry_after: Duration,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) deadline: Option<Duration>,
    pub(crate) retry_attempt_timeouts: bool,
    pub(crate) budget: Option<Arc<RetryBudget>>,
    pub(crate) rng: Mutex<fastrand::Rng>,
    pub(crate) on_retry: Option<OnRetry>,
    pub(crate) on_give_up: Option<OnGiveUp>,
}

impl<C> Policy<C> {
    /// The backoff delay before retry number `retry`.
    pub(crate) fn backoff_delay(&self, retry: u32, previous: Duration) -> Duration {
        if self.backoff.is_jittered() {
            self.backoff.delay(retry, previous, &mut self.rng.lock())
        } else {
            self.backoff
                .delay(retry, previous, &mut fastrand::Rng::with_seed(0))
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for Policy<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("classifier", &self.classifier)
            .field("max_retries", &self.max_retries)
            .field("backoff", &self.backoff)
            .field("max_retry_after", &self.max_retry_after)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("deadline", &self.deadline)
            .field("retry_attempt_timeouts", &self.retry_attempt_timeouts)
            .field("budget", &self.budget)
            .field("on_retry", &self.on_retry.is_some())
            .field("on_give_up", &self.on_give_up.is_some())
            .finish_non_exhaustive()
    }
}
