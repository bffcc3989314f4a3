//! [`RetryLayer`] and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use brace_core::{DefaultClassifier, FailureClass};
use parking_lot::Mutex;
use tower_layer::Layer;

use crate::backoff::Backoff;
use crate::budget::RetryBudget;
use crate::event::{GiveUpEvent, Hook, OnGiveUp, OnRetry, RetryEvent};
use crate::policy::{ClassPolicy, Policy, Rule};
use crate::service::Retry;

/// Applies [`Retry`] to a service.
///
/// Every service built from one layer (and every clone of them) shares one policy: the same
/// [`RetryBudget`], random number generator and hooks.
///
/// ```
/// use std::time::Duration;
/// use brace_retry::{Backoff, RetryLayer};
///
/// let layer = RetryLayer::builder()
///     .max_retries(3)
///     .backoff(Backoff::full_jitter(
///         Duration::from_millis(100),
///         2.0,
///         Duration::from_secs(5),
///     ))
///     .deadline(Duration::from_secs(30))
///     .on_retry(|event| eprintln!("retry after attempt {} in {:?}", event.attempt(), event.delay()))
///     .build();
/// # let _ = layer;
/// ```
pub struct RetryLayer<C = DefaultClassifier> {
    policy: Arc<Policy<C>>,
}

impl RetryLayer {
    /// A layer with the defaults of [`RetryLayer::builder`].
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder starting from the defaults: 2 retries, exponential backoff from 100ms
    /// doubling up to 10s, Retry-After honoured up to 30s, a [default budget](RetryBudget)
    /// (20% + 10/s), no timeouts, and [`DefaultClassifier`].
    pub fn builder() -> RetryLayerBuilder {
        RetryLayerBuilder::new()
    }
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> Clone for RetryLayer<C> {
    fn clone(&self) -> Self {
        Self {
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for RetryLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("policy", &self.policy)
            .finish()
    }
}

impl<S, C> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_policy(inner, Arc::clone(&self.policy))
    }
}

/// Builds a [`RetryLayer`]. See [`RetryLayer::builder`] for the defaults.
pub struct RetryLayerBuilder<C = DefaultClassifier> {
    name: Option<Arc<str>>,
    classifier: C,
    max_retries: u32,
    backoff: Backoff,
    classes: Vec<(FailureClass, ClassPolicy)>,
    max_retry_after: Duration,
    attempt_timeout: Option<Duration>,
    deadline: Option<Duration>,
    retry_attempt_timeouts: bool,
    budget: Option<Arc<RetryBudget>>,
    seed: Option<u64>,
    on_retry: Option<OnRetry>,
    on_give_up: Option<OnGiveUp>,
}

impl RetryLayerBuilder {
    /// The defaults (see [`RetryLayer::builder`]).
    pub fn new() -> Self {
        Self {
            name: None,
            classifier: DefaultClassifier,
            max_retries: 2,
            backoff: Backoff::default(),
            classes: Vec::new(),
            max_retry_after: Duration::from_secs(30),
            attempt_timeout: None,
            deadline: None,
            retry_attempt_timeouts: true,
            budget: Some(Arc::new(RetryBudget::default())),
            seed: None,
            on_retry: None,
            on_give_up: None,
        }
    }
}

impl Default for RetryLayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> RetryLayerBuilder<C> {
    /// How outcomes are judged — the one way to set the layer's classifier. The layer
    /// decides from the [`Outcome`](brace_core::Outcome) alone: it retries what
    /// [`is_retryable`](brace_core::Outcome::is_retryable) says, picks the
    /// [class policy](Self::class) by [`class`](brace_core::Outcome::class) and honours
    /// [`retry_after`](brace_core::Outcome::retry_after). The classifier sees the inner
    /// service's response and its error boxed (`Result<&S::Response, &BoxError>`), as every
    /// brace layer's classifier does.
    ///
    /// To retry only what a list names, wrap the classifier in
    /// [`brace_core::on_error::OnError`] (as [`RetryConfig::builder`](crate::RetryConfig::builder)
    /// does with its `on_error` list).
    pub fn classifier<C2>(self, classifier: C2) -> RetryLayerBuilder<C2> {
        RetryLayerBuilder {
            name: self.name,
            classifier,
            max_retries: self.max_retries,
            backoff: self.backoff,
            classes: self.classes,
            max_retry_after: self.max_retry_after,
            attempt_timeout: self.attempt_timeout,
            deadline: self.deadline,
            retry_attempt_timeouts: self.retry_attempt_timeouts,
            budget: self.budget,
            seed: self.seed,
            on_retry: self.on_retry,
            on_give_up: self.on_give_up,
        }
    }

    /// A name for the layer's events: the `name` field of its `retry` and `retries exhausted`
    /// [`tracing`] events (say, the provider the layer retries). Unnamed by default.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Retries after the first attempt (so at most `max_retries + 1` calls), for failures
    /// of a class without a [policy of its own](Self::class). 0 disables retrying (and the
    /// request is then never cloned, unless a class policy allows retries).
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// The delay between attempts, for failures of a class without a
    /// [policy of its own](Self::class).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Retries failures of `class` by `policy` rather than by the layer's own
    /// [`max_retries`](Self::max_retries) and [`backoff`](Self::backoff) (settings the
    /// policy leaves out are the layer's, whenever they are set). A later call for the same
    /// class replaces the policy.
    ///
    /// The [class](brace_core::Outcome::class) of each retryable failure picks the policy:
    /// the call is retried while the retries it made so far (of any class) are fewer than
    /// that policy's `max_retries`, after that policy's backoff for the retry's number, or
    /// the server's `Retry-After` when that is longer. See [`ClassPolicy`].
    pub fn class(mut self, class: FailureClass, policy: ClassPolicy) -> Self {
        match self.classes.iter_mut().find(|(of, _)| *of == class) {
            Some(entry) => entry.1 = policy,
            None => self.classes.push((class, policy)),
        }
        self
    }

    /// The longest server retry-after hint honoured. A failure asking for a longer wait is
    /// not retried: the layer gives up at once with
    /// [`GiveUpReason::RetryAfterTooLong`](brace_core::GiveUpReason::RetryAfterTooLong).
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// A time limit on each attempt, as
    /// [`brace_core::deadline::TimeoutLayer`] sets one: an attempt is cut at its own limit
    /// or at the call's deadline (this layer's or one set above it), whichever comes first,
    /// and the layers under this one see that earlier instant as their deadline. Cut at its
    /// own limit, it fails with tower's [`Elapsed`](tower::timeout::error::Elapsed), a
    /// failure of class [`Timeout`](FailureClass::Timeout) that is retried unless
    /// [`retry_attempt_timeouts(false)`](Self::retry_attempt_timeouts); cut at the
    /// deadline, the call fails with [`DeadlineExceeded`](brace_core::DeadlineExceeded).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Whether an attempt cut by [`attempt_timeout`](Self::attempt_timeout) is retried
    /// (default `true`; the classifier never sees these timeouts, as they are not errors of
    /// the inner service).
    pub fn retry_attempt_timeouts(mut self, yes: bool) -> Self {
        self.retry_attempt_timeouts = yes;
        self
    }

    /// An overall deadline for the whole call, waits included, counted from `call`, as
    /// [`brace_core::deadline::DeadlineLayer`] sets one: the layers under this one read it
    /// with [`brace_core::deadline::remaining`], and a deadline set above this layer that
    /// ends earlier wins. An attempt still running when it passes is dropped and the call
    /// fails with [`DeadlineExceeded`](brace_core::DeadlineExceeded).
    ///
    /// Without it the layer still honours a deadline set above it: whichever applies, no
    /// backoff wait (or `Retry-After`) that would end at or after the deadline is started —
    /// the layer gives up at once with
    /// [`GiveUpReason::Deadline`](brace_core::GiveUpReason::Deadline).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The retry budget. Pass an `Arc<RetryBudget>` to share one budget between layers.
    pub fn budget(mut self, budget: impl Into<Arc<RetryBudget>>) -> Self {
        self.budget = Some(budget.into());
        self
    }

    /// No retry budget: every retryable failure is retried up to `max_retries`. Not advised
    /// in front of a real upstream.
    pub fn no_budget(mut self) -> Self {
        self.budget = None;
        self
    }

    /// Seeds the random number generator used for jitter, for reproducible delays.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Called before each retry's wait, with the failed attempt's number, the wait and the
    /// cause. Keep it quick: it runs inside the response future's `poll`.
    pub fn on_retry<F>(mut self, hook: F) -> Self
    where
        F: Fn(&RetryEvent<'_>) + Send + Sync + 'static,
    {
        self.on_retry = Some(Hook(Arc::new(hook)));
        self
    }

    /// Called when the layer gives up on a retryable failure (why, after how many
    /// attempts). Not called for a failure the classifier said not to retry.
    pub fn on_give_up<F>(mut self, hook: F) -> Self
    where
        F: Fn(&GiveUpEvent<'_>) + Send + Sync + 'static,
    {
        self.on_give_up = Some(Hook(Arc::new(hook)));
        self
    }

    /// Builds the layer.
    pub fn build(self) -> RetryLayer<C> {
        let rng = self
            .seed
            .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        let default = Rule {
            max_retries: self.max_retries,
            backoff: self.backoff,
        };
        let classes: Box<[(FailureClass, Rule)]> = self
            .classes
            .into_iter()
            .map(|(class, policy)| (class, policy.resolve(default)))
            .collect();
        let max_retries_any = classes
            .iter()
            .map(|(_, rule)| rule.max_retries)
            .fold(default.max_retries, u32::max);
        RetryLayer {
            policy: Arc::new(Policy {
                name: self.name,
                classifier: self.classifier,
                default,
                classes,
                max_retries_any,
                max_retry_after: self.max_retry_after,
                attempt_timeout: self.attempt_timeout,
                deadline: self.deadline,
                retry_attempt_timeouts: self.retry_attempt_timeouts,
                budget: self.budget,
                rng: Mutex::new(rng),
                on_retry: self.on_retry,
                on_give_up: self.on_give_up,
            }),
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for RetryLayerBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayerBuilder")
            .field("name", &self.name)
            .field("classifier", &self.classifier)
            .field("max_retries", &self.max_retries)
            .field("backoff", &self.backoff)
            .field("classes", &self.classes)
            .field("max_retry_after", &self.max_retry_after)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("deadline", &self.deadline)
            .field("budget", &self.budget)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}
