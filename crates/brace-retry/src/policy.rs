//! The retry policy of one failure class, and the settings and shared state behind every
//! service built from one layer.

use std::fmt;
use std::time::Duration;

use brace_core::FailureClass;
use parking_lot::Mutex;
use std::sync::Arc;

use crate::backoff::Backoff;
use crate::budget::RetryBudget;
use crate::event::{OnGiveUp, OnRetry};

/// How failures of one [`FailureClass`] are retried: their own retry count and backoff,
/// given to [`RetryLayerBuilder::class`](crate::RetryLayerBuilder::class).
///
/// A setting left out is the layer's own
/// ([`max_retries`](crate::RetryLayerBuilder::max_retries),
/// [`backoff`](crate::RetryLayerBuilder::backoff)).
///
/// After a retryable failure the outcome's [class](brace_core::Outcome::class) picks the
/// policy: another attempt is made while the retries made so far for this call (of any
/// class) are fewer than the class's `max_retries`, and the wait before it is the class's
/// backoff for that retry's number — or the server's `Retry-After` when that is longer.
///
/// ```
/// use std::time::Duration;
/// use brace_core::FailureClass;
/// use brace_retry::{Backoff, ClassPolicy, RetryLayer};
///
/// let layer = RetryLayer::builder()
///     .max_retries(2)
///     // Rate limits: more attempts, a longer wait (Retry-After, when longer, still wins).
///     .class(
///         FailureClass::RateLimited,
///         ClassPolicy::new()
///             .max_retries(4)
///             .backoff(Backoff::exponential(Duration::from_secs(2), 2.0, Duration::from_secs(30))),
///     )
///     // Timeouts: one retry, soon.
///     .class(
///         FailureClass::Timeout,
///         ClassPolicy::new().max_retries(1).backoff(Backoff::constant(Duration::from_millis(100))),
///     )
///     .build();
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ClassPolicy {
    max_retries: Option<u32>,
    backoff: Option<Backoff>,
}

impl ClassPolicy {
    /// A policy that takes every setting from the layer.
    pub const fn new() -> Self {
        Self {
            max_retries: None,
            backoff: None,
        }
    }

    /// Retries allowed for a call whose last failure is of this class, counting every retry
    /// the call has made (so a call that already retried twice for another reason has two
    /// fewer left).
    #[must_use]
    pub const fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = Some(max_retries);
        self
    }

    /// The wait before a retry after a failure of this class.
    #[must_use]
    pub const fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// The retry count set, if any.
    pub const fn get_max_retries(&self) -> Option<u32> {
        self.max_retries
    }

    /// The backoff set, if any.
    pub const fn get_backoff(&self) -> Option<Backoff> {
        self.backoff
    }

    /// This policy with the unset settings taken from `default`.
    pub(crate) fn resolve(self, default: Rule) -> Rule {
        Rule {
            max_retries: self.max_retries.unwrap_or(default.max_retries),
            backoff: self.backoff.unwrap_or(default.backoff),
        }
    }
}

/// A policy with every setting known: the layer's, or a class's over it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rule {
    pub(crate) max_retries: u32,
    pub(crate) backoff: Backoff,
}

/// Shared by a [`RetryLayer`](crate::RetryLayer), the services it builds and their futures.
pub(crate) struct Policy<C> {
    /// What the layer's events call it (`name` in each log line), if named.
    pub(crate) name: Option<Arc<str>>,
    pub(crate) classifier: C,
    /// For failures of a class without a rule of its own.
    pub(crate) default: Rule,
    pub(crate) classes: Box<[(FailureClass, Rule)]>,
    /// The largest `max_retries` of any rule: a request copy is kept while a retry of some
    /// class may still be allowed.
    pub(crate) max_retries_any: u32,
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
    /// The rule for failures of `class`.
    pub(crate) fn rule(&self, class: FailureClass) -> &Rule {
        self.classes
            .iter()
            .find(|(of, _)| *of == class)
            .map_or(&self.default, |(_, rule)| rule)
    }

    /// `true` if the call has its own time bounds (a deadline or an attempt timeout).
    pub(crate) fn is_timed(&self) -> bool {
        self.deadline.is_some() || self.attempt_timeout.is_some()
    }

    /// The delay `backoff` gives before retry number `retry`.
    pub(crate) fn backoff_delay(
        &self,
        backoff: &Backoff,
        retry: u32,
        previous: Duration,
    ) -> Duration {
        if backoff.is_jittered() {
            backoff.delay(retry, previous, &mut self.rng.lock())
        } else {
            backoff.delay(retry, previous, &mut fastrand::Rng::with_seed(0))
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for Policy<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("classifier", &self.classifier)
            .field("max_retries", &self.default.max_retries)
            .field("backoff", &self.default.backoff)
            .field("classes", &self.classes)
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
