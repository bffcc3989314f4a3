//! Configuration: the [`CircuitBreakerBuilder`] and the serde-deserializable [`CircuitBreakerConfig`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use brace_core::DefaultClassifier;

use crate::error::CircuitConfigError;
use crate::event::StateTransition;
use crate::layer::CircuitBreakerLayer;
use crate::window::MAX_COUNT_WINDOW;

/// Which calls the failure and slow-call rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The last N recorded calls.
    Count(u32),
    /// The calls recorded in the last N seconds (one bucket per second; at most a day).
    Time(u32),
}

/// How long the circuit stays open, as a function of how many times it has opened in a row
/// (1 for the first open after closed).
#[derive(Clone)]
pub enum WaitInterval {
    /// Always the same wait.
    Fixed(Duration),
    /// `initial * multiplier^(attempt - 1)`, capped at `max`.
    Exponential {
        /// The wait after the first open.
        initial: Duration,
        /// The growth factor per re-open (at least 1).
        multiplier: f64,
        /// The longest wait.
        max: Duration,
    },
    /// Any function of the attempt number.
    Custom(Arc<dyn Fn(u32) -> Duration + Send + Sync>),
}

impl WaitInterval {
    /// The wait after the `attempt`-th consecutive open (1-based).
    pub fn wait(&self, attempt: u32) -> Duration {
        match self {
            Self::Fixed(wait) => *wait,
            Self::Exponential {
                initial,
                multiplier,
                max,
            } => {
                let exponent = attempt.saturating_sub(1).min(1024).cast_signed();
                let secs = initial.as_secs_f64() * multiplier.powi(exponent);
                Duration::try_from_secs_f64(secs).map_or(*max, |wait| wait.min(*max))
            }
            Self::Custom(f) => f(attempt),
        }
    }
}

impl fmt::Debug for WaitInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(wait) => f.debug_tuple("Fixed").field(wait).finish(),
            Self::Exponential {
                initial,
                multiplier,
                max,
            } => f
                .debug_struct("Exponential")
                .field("initial", initial)
                .field("multiplier", multiplier)
                .field("max", max)
                .finish(),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

pub(crate) type Callback = Arc<dyn Fn(&StateTransition) + Send + Sync>;

/// The validated settings a breaker runs with.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) sliding_window: SlidingWindow,
    pub(crate) minimum_calls: u32,
    pub(crate) failure_rate_threshold: f32,
    pub(crate) slow_call_rate_threshold: f32,
    pub(crate) slow_call_duration: Duration,
    pub(crate) track_slow_calls: bool,
    pub(crate) wait_in_open: WaitInterval,
    pub(crate) automatic_transition: bool,
    pub(crate) permitted_calls_in_half_open: u32,
    pub(crate) max_wait_in_half_open: Option<Duration>,
    /// Open after this many failures in a row, whatever the window's rates.
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) on_transition: Option<Callback>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("sliding_window", &self.sliding_window)
            .field("minimum_calls", &self.minimum_calls)
            .field("failure_rate_threshold", &self.failure_rate_threshold)
            .field("slow_call_rate_threshold", &self.slow_call_rate_threshold)
            .field("slow_call_duration", &self.slow_call_duration)
            .field("track_slow_calls", &self.track_slow_calls)
            .field("wait_in_open", &self.wait_in_open)
            .field("automatic_transition", &self.automatic_transition)
            .field(
                "permitted_calls_in_half_open",
                &self.permitted_calls_in_half_open,
            )
            .field("max_wait_in_half_open", &self.max_wait_in_half_open)
            .field("consecutive_failures", &self.consecutive_failures)
            .field("on_transition", &self.on_transition.as_ref().map(|_| ".."))
            .finish()
    }
}

impl Default for Settings {
    /// resilience4j's defaults.
    fn default() -> Self {
        Self {
            sliding_window: SlidingWindow::Count(100),
            minimum_calls: 100,
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: Duration::from_mins(1),
            track_slow_calls: true,
            wait_in_open: WaitInterval::Fixed(Duration::from_mins(1)),
            automatic_transition: false,
            permitted_calls_in_half_open: 10,
            max_wait_in_half_open: None,
            consecutive_failures: None,
            on_transition: None,
        }
    }
}

/// The longest time-based window, in seconds (a day).
pub(crate) const MAX_TIME_WINDOW: u32 = 86_400;

/// The largest number of trial calls in half-open state.
pub(crate) const MAX_HALF_OPEN_PERMITS: u32 = u16::MAX as u32;

impl Settings {
    fn validate(&self) -> Result<(), CircuitConfigError> {
        let rate = |name: &str, value: f32| {
            if value > 0.0 && value <= 100.0 {
                Ok(())
            } else {
                Err(CircuitConfigError::new(format!(
                    "{name} must be a percentage in (0, 100], got {value}"
                )))
            }
        };
        rate("failure_rate_threshold", self.failure_rate_threshold)?;
        rate("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        match self.sliding_window {
            SlidingWindow::Count(size) if size == 0 || size > MAX_COUNT_WINDOW => {
                return Err(CircuitConfigError::new(format!(
                    "sliding_window_size must be between 1 and {MAX_COUNT_WINDOW} calls, got {size}"
                )));
            }
            SlidingWindow::Time(seconds) if seconds == 0 || seconds > MAX_TIME_WINDOW => {
                return Err(CircuitConfigError::new(format!(
                    "sliding_window_size must be between 1 and {MAX_TIME_WINDOW} seconds, got {seconds}"
                )));
            }
            _ => {}
        }
        if self.minimum_calls == 0 {
            return Err(CircuitConfigError::new("minimum_calls must be at least 1"));
        }
        if self.consecutive_failures == Some(0) {
            return Err(CircuitConfigError::new(
                "consecutive_failures (failure_threshold) must be at least 1",
            ));
        }
        if self.permitted_calls_in_half_open == 0
            || self.permitted_calls_in_half_open > MAX_HALF_OPEN_PERMITS
        {
            return Err(CircuitConfigError::new(format!(
                "permitted_calls_in_half_open must be between 1 and {MAX_HALF_OPEN_PERMITS}, got {}",
                self.permitted_calls_in_half_open
            )));
        }
        if let WaitInterval::Exponential { multiplier, .. } = self.wait_in_open
            && !(multiplier.is_finite() && multiplier >= 1.0)
        {
            return Err(CircuitConfigError::new(format!(
                "wait_multiplier must be a finite number of at least 1, got {multiplier}"
            )));
        }
        Ok(())
    }

    /// The number of calls below which rates are not evaluated.
    pub(crate) fn effective_minimum_calls(&self) -> u64 {
        match self.sliding_window {
            SlidingWindow::Count(size) => u64::from(self.minimum_calls.min(size)),
            SlidingWindow::Time(_) => u64::from(self.minimum_calls),
        }
    }
}

// ===== CircuitBreakerBuilder =====

/// Builds a [`CircuitBreakerLayer`]. Start with [`CircuitBreakerLayer::builder`].
///
/// Defaults are resilience4j's: a count window of 100 calls, `minimum_calls` 100, a 50 %
/// failure-rate threshold, a 100 % slow-call-rate threshold with calls slower than 60 s slow,
/// 60 s in open state, 10 trial calls in half-open state, no automatic transition and no
/// limit on the time in half-open state.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use brace_circuit::{CircuitBreakerLayer, SlidingWindow};
///
/// let layer = CircuitBreakerLayer::builder("openai")
///     .sliding_window(SlidingWindow::Time(30))
///     .minimum_calls(20)
///     .failure_rate_threshold(50.0)
///     .slow_call_duration(Duration::from_secs(20))
///     .slow_call_rate_threshold(80.0)
///     .exponential_wait(Duration::from_secs(10), 2.0, Duration::from_secs(300))
///     .permitted_calls_in_half_open(3)
///     .build()?;
/// assert_eq!(layer.handle().name(), "openai");
/// # Ok::<(), brace_circuit::CircuitConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreakerBuilder<C = DefaultClassifier> {
    name: Arc<str>,
    settings: Settings,
    /// Whether `permitted_calls_in_half_open` was set (so `consecutive_failures` keeps it).
    half_open_set: bool,
    classifier: C,
}

impl CircuitBreakerBuilder {
    pub(crate) fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            settings: Settings::default(),
            half_open_set: false,
            classifier: DefaultClassifier,
        }
    }
}

impl<C> CircuitBreakerBuilder<C> {
    /// How outcomes are judged ([`DefaultClassifier`] unless set): success, failure or
    /// ignored, from `Result<&Response, &BoxError>` as every brace layer asks (for example
    /// [`StatusClassifier`](brace_core::StatusClassifier) for `http::Response`s,
    /// `brace_llm::LlmClassifier` for LLM providers).
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerBuilder<C2> {
        CircuitBreakerBuilder {
            name: self.name,
            settings: self.settings,
            half_open_set: self.half_open_set,
            classifier,
        }
    }

    /// The window the rates are computed over.
    pub fn sliding_window(mut self, window: SlidingWindow) -> Self {
        self.settings.sliding_window = window;
        self
    }

    /// How many calls the window must hold before rates are evaluated (capped at the size of
    /// a count window).
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.settings.minimum_calls = calls;
        self
    }

    /// The failure rate, in percent, at or above which the circuit opens.
    pub fn failure_rate_threshold(mut self, percent: f32) -> Self {
        self.settings.failure_rate_threshold = percent;
        self
    }

    /// The slow-call rate, in percent, at or above which the circuit opens.
    pub fn slow_call_rate_threshold(mut self, percent: f32) -> Self {
        self.settings.slow_call_rate_threshold = percent;
        self
    }

    /// A call that takes longer than this is slow (whether it succeeds or fails).
    pub fn slow_call_duration(mut self, duration: Duration) -> Self {
        self.settings.slow_call_duration = duration;
        self
    }

    /// Whether calls are timed to find slow ones (the default). Turning it off saves reading
    /// the clock twice per call, which is most of a closed breaker's overhead; the slow-call
    /// rate is then always 0.
    pub fn track_slow_calls(mut self, yes: bool) -> Self {
        self.settings.track_slow_calls = yes;
        self
    }

    /// How long the circuit stays open before it lets trial calls through.
    pub fn wait_in_open(mut self, wait: Duration) -> Self {
        self.settings.wait_in_open = WaitInterval::Fixed(wait);
        self
    }

    /// A wait in open state that grows on each consecutive re-open:
    /// `initial * multiplier^(n - 1)` for the n-th, capped at `max`.
    pub fn exponential_wait(mut self, initial: Duration, multiplier: f64, max: Duration) -> Self {
        self.settings.wait_in_open = WaitInterval::Exponential {
            initial,
            multiplier,
            max,
        };
        self
    }

    /// Any wait-interval function.
    pub fn wait_interval(mut self, interval: WaitInterval) -> Self {
        self.settings.wait_in_open = interval;
        self
    }

    /// Whether the circuit moves from open to half-open by itself when the wait is over (a
    /// timer task on the current tokio runtime), rather than on the next call.
    pub fn automatic_transition(mut self, yes: bool) -> Self {
        self.settings.automatic_transition = yes;
        self
    }

    /// How many trial calls half-open state admits before it decides.
    pub fn permitted_calls_in_half_open(mut self, calls: u32) -> Self {
        self.half_open_set = true;
        self.settings.permitted_calls_in_half_open = calls;
        self
    }

    /// The longest the circuit stays half-open waiting for its trial calls before it opens
    /// again.
    pub fn max_wait_in_half_open(mut self, wait: Duration) -> Self {
        self.settings.max_wait_in_half_open = Some(wait);
        self
    }

    /// Also opens after `failures` failures in a row, whatever the window's rates say (the
    /// seed's `failure_threshold`, Envoy's `consecutive_5xx`): a provider that fails every
    /// call is taken out after `failures` calls, not after `minimum_calls`. A success resets
    /// the count. The two rules work side by side: a failure rate over the window catches a
    /// provider failing often, this catches one failing every time.
    ///
    /// Unless set otherwise, half-open state then admits a single trial call.
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.settings.consecutive_failures = Some(failures);
        if !self.half_open_set {
            self.settings.permitted_calls_in_half_open = 1;
        }
        self
    }

    /// Called on every state transition, synchronously and in order, while the breaker
    /// holds its transition lock: keep it quick (log, count, send).
    pub fn on_transition(mut self, f: impl Fn(&StateTransition) + Send + Sync + 'static) -> Self {
        self.settings.on_transition = Some(Arc::new(f));
        self
    }

    /// Builds the layer.
    ///
    /// # Errors
    ///
    /// [`CircuitConfigError`] when a setting is out of range: a rate outside (0, 100], an empty
    /// window, zero minimum calls or half-open permits, a wait multiplier below 1.
    pub fn build(self) -> Result<CircuitBreakerLayer<C>, CircuitConfigError> {
        self.settings.validate()?;
        Ok(CircuitBreakerLayer::from_settings(
            self.name,
            self.settings,
            self.classifier,
        ))
    }
}

// ===== CircuitBreakerConfig =====

/// The kind of sliding window in a [`CircuitBreakerConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlidingWindowKind {
    /// The last `sliding_window_size` calls.
    #[default]
    Count,
    /// The last `sliding_window_size` seconds.
    Time,
}

/// A circuit breaker's configuration as a file holds it (every field optional).
///
/// Durations are humantime text (`500ms`, `30s`, `5m`) or a number of seconds. The seed
/// configuration's `failure_threshold: 5` and `reset_timeout: 60` are accepted: the first is
/// the consecutive-failures rule ([`CircuitBreakerBuilder::consecutive_failures`]), which works beside the
/// window's failure rate, the second is another name for `wait_in_open`.
///
/// # Example
///
/// ```
/// use brace_circuit::{CircuitBreakerConfig, CircuitBreakerLayer};
///
/// let config: CircuitBreakerConfig = serde_json::from_str(r#"{
///     "sliding_window": "time",
///     "sliding_window_size": 60,
///     "minimum_calls": 10,
///     "failure_rate_threshold": 50,
///     "slow_call_duration": "20s",
///     "wait_in_open": "30s",
///     "wait_multiplier": 2,
///     "max_wait_in_open": "10m",
///     "permitted_calls_in_half_open": 2
/// }"#)?;
/// let layer = config.to_builder("openai")?.build()?;
///
/// let seed: CircuitBreakerConfig =
///     serde_json::from_str(r#"{"failure_threshold": 5, "reset_timeout": 60}"#)?;
/// let layer = seed.to_builder("anthropic")?.classifier(brace_core::StatusClassifier::new()).build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// `count` (default) or `time`.
    pub sliding_window: SlidingWindowKind,
    /// Calls (count window) or seconds (time window, at most a day); 100 by default.
    pub sliding_window_size: Option<u32>,
    /// Calls needed before rates are evaluated (default 100).
    pub minimum_calls: Option<u32>,
    /// Failure rate in percent that opens the circuit (default 50).
    pub failure_rate_threshold: Option<f32>,
    /// Slow-call rate in percent that opens the circuit (default 100).
    pub slow_call_rate_threshold: Option<f32>,
    /// A call slower than this is slow (default 60 s).
    #[serde(with = "brace_core::duration::option")]
    pub slow_call_duration: Option<Duration>,
    /// Time calls to find slow ones (default true).
    pub track_slow_calls: Option<bool>,
    /// Time in open state (default 60 s); also accepted as `reset_timeout`.
    #[serde(with = "brace_core::duration::option", alias = "reset_timeout")]
    pub wait_in_open: Option<Duration>,
    /// Growth of the wait on each consecutive re-open (none by default).
    pub wait_multiplier: Option<f64>,
    /// Cap on the grown wait (default: ten times `wait_in_open`); only with
    /// `wait_multiplier`.
    #[serde(with = "brace_core::duration::option")]
    pub max_wait_in_open: Option<Duration>,
    /// Move to half-open by itself when the wait is over (default false: on the next call).
    pub automatic_transition: Option<bool>,
    /// Trial calls in half-open state (default 10).
    pub permitted_calls_in_half_open: Option<u32>,
    /// Longest time in half-open state before opening again (default: no limit).
    #[serde(with = "brace_core::duration::option")]
    pub max_wait_in_half_open: Option<Duration>,
    /// Open after this many failures in a row, beside the window's rates (the seed's
    /// `failure_threshold`; also accepted as `consecutive_failures`).
    #[serde(alias = "consecutive_failures")]
    pub failure_threshold: Option<u32>,
}

impl CircuitBreakerConfig {
    /// A builder holding these settings, for the rest (the classifier, a transition
    /// callback): `config.to_builder(name)?.classifier(c).build()?`.
    ///
    /// # Errors
    ///
    /// [`CircuitConfigError`] when `failure_threshold` is combined with window settings.
    pub fn to_builder(
        &self,
        name: impl Into<Arc<str>>,
    ) -> Result<CircuitBreakerBuilder, CircuitConfigError> {
        let mut builder = CircuitBreakerBuilder::new(name);
        if let Some(failures) = self.failure_threshold {
            builder = builder.consecutive_failures(failures);
        }
        if let Some(size) = self.sliding_window_size {
            builder = builder.sliding_window(match self.sliding_window {
                SlidingWindowKind::Count => SlidingWindow::Count(size),
                SlidingWindowKind::Time => SlidingWindow::Time(size),
            });
        } else if self.sliding_window == SlidingWindowKind::Time {
            builder = builder.sliding_window(SlidingWindow::Time(100));
        }
        if let Some(calls) = self.minimum_calls {
            builder = builder.minimum_calls(calls);
        }
        if let Some(rate) = self.failure_rate_threshold {
            builder = builder.failure_rate_threshold(rate);
        }
        if let Some(rate) = self.slow_call_rate_threshold {
            builder = builder.slow_call_rate_threshold(rate);
        }
        if let Some(duration) = self.slow_call_duration {
            builder = builder.slow_call_duration(duration);
        }
        if let Some(yes) = self.track_slow_calls {
            builder = builder.track_slow_calls(yes);
        }
        if self.max_wait_in_open.is_some() && self.wait_multiplier.is_none() {
            return Err(CircuitConfigError::new(
                "max_wait_in_open caps a growing wait: it needs wait_multiplier",
            ));
        }
        let wait = self.wait_in_open.unwrap_or(Duration::from_mins(1));
        builder = match self.wait_multiplier {
            Some(multiplier) => builder.exponential_wait(
                wait,
                multiplier,
                self.max_wait_in_open
                    .unwrap_or_else(|| wait.saturating_mul(10)),
            ),
            None => builder.wait_in_open(wait),
        };
        if let Some(yes) = self.automatic_transition {
            builder = builder.automatic_transition(yes);
        }
        if let Some(calls) = self.permitted_calls_in_half_open {
            builder = builder.permitted_calls_in_half_open(calls);
        }
        if let Some(wait) = self.max_wait_in_half_open {
            builder = builder.max_wait_in_half_open(wait);
        }
        Ok(builder)
    }
}
