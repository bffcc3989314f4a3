//! [`RetryConfig`]: the retry layer as written in a configuration file.

use std::time::Duration;

use brace_core::FailureClass;
use brace_core::on_error::{ErrorMatch, OnError};
use serde::{Deserialize, Serialize};

use crate::backoff::{Backoff, BackoffKind};
use crate::budget::RetryBudget;
use crate::error::RetryConfigError;
use crate::layer::{RetryLayer, RetryLayerBuilder};
use crate::policy::ClassPolicy;

/// The retry layer's settings, as read from a configuration file. Every field is optional.
///
/// The configuration says *what* is retried and *how*; the classifier the caller passes to
/// [`layer`](Self::layer) or [`builder`](Self::builder) says what each outcome *is* (its
/// status, its [`FailureClass`], whether it is worth retrying at all). `on_error` narrows
/// that classifier with an [`OnError`] list; the class sections (`rate_limited`,
/// `overloaded`, `timeout`, `connect`, `server`) give a class its own retry count and
/// backoff, as [`ClassPolicy`] does.
///
/// ```
/// use brace_core::StatusClassifier;
/// use brace_retry::RetryConfig;
///
/// // The seed configuration's retry section, as is.
/// let config: RetryConfig = serde_json::from_str(r#"{
///     "max_retries": 2,
///     "backoff": "exponential",
///     "on_error": [429, 500, 502, 503, "timeout"]
/// }"#).unwrap();
/// let layer = config.layer(StatusClassifier::new()).unwrap();
/// # let _ = layer;
/// ```
///
/// The same in YAML, with every field:
///
/// ```yaml
/// max_retries: 2              # at most 20
/// backoff: full_jitter        # constant | exponential | full_jitter | decorrelated_jitter
/// base_delay: 100ms
/// factor: 2
/// max_delay: 10s
/// max_retry_after: 30s
/// attempt_timeout: 20s
/// deadline: 60s
/// on_error: [429, 500, 502, 503, timeout, connect]
/// budget: { ratio: 0.2, min_per_second: 10, window: 10s }   # or `budget: null` for none
/// # Per class: any of max_retries, backoff, base_delay, factor, max_delay; the rest is
/// # taken from above.
/// rate_limited: { max_retries: 4, backoff: exponential, base_delay: 2s, factor: 2, max_delay: 30s }
/// timeout: { max_retries: 1, base_delay: 100ms }
/// overloaded: { max_retries: 3, base_delay: 1s }
/// server: { backoff: full_jitter }
/// connect: { max_retries: 1 }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retries after the first attempt, 0–20 (default 2).
    pub max_retries: u32,
    /// The backoff shape (default `exponential`).
    pub backoff: BackoffKind,
    /// The first delay, or the constant one (default 100ms).
    #[serde(with = "brace_core::duration")]
    pub base_delay: Duration,
    /// Growth per retry of exponential backoffs, at least 1 (default 2).
    pub factor: f64,
    /// The cap on any backoff delay (default 10s).
    #[serde(with = "brace_core::duration")]
    pub max_delay: Duration,
    /// The longest server Retry-After honoured; a longer one makes the layer give up at once
    /// (default 30s).
    #[serde(with = "brace_core::duration")]
    pub max_retry_after: Duration,
    /// A time limit per attempt (default none). A deadline set above the layer cuts an
    /// attempt earlier.
    #[serde(with = "brace_core::duration::option")]
    pub attempt_timeout: Option<Duration>,
    /// A time limit for the whole call, waits included, which the layers below also see
    /// (default none). A deadline set above the layer that ends earlier wins.
    #[serde(with = "brace_core::duration::option")]
    pub deadline: Option<Duration>,
    /// What is retried: status codes and the classes `rate_limited`, `overloaded`,
    /// `timeout`, `connect`, `server` (default every class:
    /// `[rate_limited, overloaded, timeout, connect, server]`). Only what the classifier
    /// finds retryable is retried; a failure the list does not name still fails over. A
    /// per-attempt timeout is retried only if the list names `timeout`.
    pub on_error: Vec<ErrorMatch>,
    /// The retry budget; `null` for none (default 20% + 10/s over 10s).
    pub budget: Option<BudgetConfig>,
    /// How rate limits (HTTP 429) are retried, if not as above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limited: Option<ClassRetryConfig>,
    /// How "overloaded" failures (HTTP 503, 529) are retried, if not as above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overloaded: Option<ClassRetryConfig>,
    /// How timeouts (HTTP 408, 504, an attempt timeout) are retried, if not as above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<ClassRetryConfig>,
    /// How connection failures are retried, if not as above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<ClassRetryConfig>,
    /// How other server failures (5xx) are retried, if not as above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ClassRetryConfig>,
}

/// How one class of failure is retried in a [`RetryConfig`] (its `rate_limited`,
/// `overloaded`, `timeout`, `connect` and `server` sections). A field left out is the
/// section's own value above it. See [`ClassPolicy`] for what the settings mean.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassRetryConfig {
    /// Retries allowed, 0–20, counting every retry of the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// The backoff shape.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffKind>,
    /// The first delay, or the constant one.
    #[serde(
        with = "brace_core::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub base_delay: Option<Duration>,
    /// Growth per retry of exponential backoffs, at least 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// The cap on any backoff delay.
    #[serde(
        with = "brace_core::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_delay: Option<Duration>,
}

/// The retry budget in a [`RetryConfig`]. See [`RetryBudget`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// Retries allowed per first attempt, 0–1000 (default 0.2).
    pub ratio: f32,
    /// Retries allowed per second whatever the traffic (default 10).
    pub min_per_second: u32,
    /// How long first attempts are remembered, 1s–60s (default 10s).
    #[serde(with = "brace_core::duration")]
    pub window: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 2,
            backoff: BackoffKind::Exponential,
            base_delay: Duration::from_millis(100),
            factor: 2.0,
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(30),
            attempt_timeout: None,
            deadline: None,
            on_error: Self::CLASSES
                .iter()
                .map(|class| ErrorMatch::Class(*class))
                .collect(),
            budget: Some(BudgetConfig::default()),
            rate_limited: None,
            overloaded: None,
            timeout: None,
            connect: None,
            server: None,
        }
    }
}

/// A backoff written out in full, for checking.
struct BackoffValues {
    max_retries: u32,
    kind: BackoffKind,
    base_delay: Duration,
    factor: f64,
    max_delay: Duration,
}

impl BackoffValues {
    fn check(&self, prefix: &str) -> Result<(), RetryConfigError> {
        if self.max_retries > RetryConfig::MAX_RETRIES {
            return Err(RetryConfigError::new(format!(
                "{prefix}max_retries must be at most {}, not {}",
                RetryConfig::MAX_RETRIES,
                self.max_retries
            )));
        }
        if !self.factor.is_finite() || self.factor < 1.0 {
            return Err(RetryConfigError::new(format!(
                "{prefix}factor must be a number of at least 1, not {}",
                self.factor
            )));
        }
        if self.base_delay > self.max_delay {
            return Err(RetryConfigError::new(format!(
                "{prefix}base_delay ({:?}) must not exceed max_delay ({:?})",
                self.base_delay, self.max_delay
            )));
        }
        Ok(())
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.kind, self.base_delay, self.factor, self.max_delay)
    }
}

impl RetryConfig {
    /// The most retries a configuration may ask for, top level or per class: more would
    /// turn one request into a burst of calls at the upstream.
    pub const MAX_RETRIES: u32 = 20;

    /// The classes that may have a section of their own, in the order they are checked.
    pub const CLASSES: [FailureClass; 5] = [
        FailureClass::RateLimited,
        FailureClass::Overloaded,
        FailureClass::Timeout,
        FailureClass::Connect,
        FailureClass::Server,
    ];

    /// The section of `class`, if it has one.
    pub fn class(&self, class: FailureClass) -> Option<&ClassRetryConfig> {
        match class {
            FailureClass::RateLimited => self.rate_limited.as_ref(),
            FailureClass::Overloaded => self.overloaded.as_ref(),
            FailureClass::Timeout => self.timeout.as_ref(),
            FailureClass::Connect => self.connect.as_ref(),
            FailureClass::Server => self.server.as_ref(),
            _ => None,
        }
    }

    fn values(&self) -> BackoffValues {
        BackoffValues {
            max_retries: self.max_retries,
            kind: self.backoff,
            base_delay: self.base_delay,
            factor: self.factor,
            max_delay: self.max_delay,
        }
    }

    fn class_values(&self, class: &ClassRetryConfig) -> BackoffValues {
        BackoffValues {
            max_retries: class.max_retries.unwrap_or(self.max_retries),
            kind: class.backoff.unwrap_or(self.backoff),
            base_delay: class.base_delay.unwrap_or(self.base_delay),
            factor: class.factor.unwrap_or(self.factor),
            max_delay: class.max_delay.unwrap_or(self.max_delay),
        }
    }

    /// Checks every value is usable.
    ///
    /// # Errors
    ///
    /// A [`RetryConfigError`] naming the first bad field: a `max_retries` above
    /// [`MAX_RETRIES`](Self::MAX_RETRIES), a `factor` below 1 or not finite, a `base_delay`
    /// above `max_delay` (each at the top level or in a class section, with the values it
    /// takes from above), a zero `attempt_timeout` or `deadline`, or a budget `ratio`
    /// outside 0–1000, `window` outside 1s–60s or `min_per_second` of 2³¹ or more.
    pub fn validate(&self) -> Result<(), RetryConfigError> {
        self.values().check("")?;
        for class in Self::CLASSES {
            if let Some(section) = self.class(class) {
                self.class_values(section).check(&format!("{class}."))?;
            }
        }
        if self.attempt_timeout == Some(Duration::ZERO) {
            return Err(RetryConfigError::new(
                "attempt_timeout must be more than zero",
            ));
        }
        if self.deadline == Some(Duration::ZERO) {
            return Err(RetryConfigError::new("deadline must be more than zero"));
        }
        if let Some(budget) = &self.budget {
            if !(0.0..=1000.0).contains(&budget.ratio) {
                return Err(RetryConfigError::new(format!(
                    "budget.ratio must be between 0 and 1000, not {}",
                    budget.ratio
                )));
            }
            if !(Duration::from_secs(1)..=Duration::from_mins(1)).contains(&budget.window) {
                return Err(RetryConfigError::new(
                    "budget.window must be between 1s and 60s",
                ));
            }
            if budget.min_per_second >= i32::MAX as u32 {
                return Err(RetryConfigError::new("budget.min_per_second is too large"));
            }
        }
        Ok(())
    }

    /// The backoff of the top level (for classes without a section of their own).
    pub fn backoff(&self) -> Backoff {
        self.values().backoff()
    }

    /// The policy of `class`, with what its section leaves out taken from the top level;
    /// `None` if it has no section.
    pub fn class_policy(&self, class: FailureClass) -> Option<ClassPolicy> {
        let values = self.class_values(self.class(class)?);
        Some(
            ClassPolicy::new()
                .max_retries(values.max_retries)
                .backoff(values.backoff()),
        )
    }

    /// `true` if the `on_error` list retries an attempt cut by `attempt_timeout` (a failure
    /// of class `timeout` without a status).
    pub fn retries_attempt_timeouts(&self) -> bool {
        let timed_out = brace_core::Outcome::transient().with_class(FailureClass::Timeout);
        self.on_error.iter().any(|entry| entry.matches(&timed_out))
    }

    /// The layer these settings describe, judging outcomes with `classifier` narrowed by
    /// the `on_error` list.
    ///
    /// # Errors
    ///
    /// As [`validate`](Self::validate).
    pub fn layer<C>(&self, classifier: C) -> Result<RetryLayer<OnError<C>>, RetryConfigError> {
        Ok(self.builder(classifier)?.build())
    }

    /// A builder holding these settings and `classifier` narrowed by the `on_error` list,
    /// to add hooks, a seed or a shared budget.
    ///
    /// # Errors
    ///
    /// As [`validate`](Self::validate).
    pub fn builder<C>(
        &self,
        classifier: C,
    ) -> Result<RetryLayerBuilder<OnError<C>>, RetryConfigError> {
        self.validate()?;
        let mut builder = RetryLayerBuilder::new()
            .classifier(OnError::new(self.on_error.iter().copied(), classifier))
            .max_retries(self.max_retries)
            .backoff(self.backoff())
            .max_retry_after(self.max_retry_after)
            .retry_attempt_timeouts(self.retries_attempt_timeouts());
        for class in Self::CLASSES {
            if let Some(policy) = self.class_policy(class) {
                builder = builder.class(class, policy);
            }
        }
        if let Some(timeout) = self.attempt_timeout {
            builder = builder.attempt_timeout(timeout);
        }
        if let Some(deadline) = self.deadline {
            builder = builder.deadline(deadline);
        }
        builder = match &self.budget {
            Some(budget) => builder.budget(RetryBudget::with_window(
                budget.window,
                budget.ratio,
                budget.min_per_second,
            )),
            None => builder.no_budget(),
        };
        Ok(builder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brace_core::DefaultClassifier;

    #[test]
    fn seed_retry_section_deserializes_as_is() {
        let yaml =
            "max_retries: 2\nbackoff: exponential\non_error: [429, 500, 502, 503, timeout]\n";
        let config: RetryConfig = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(config.max_retries, 2);
        assert_eq!(config.backoff, BackoffKind::Exponential);
        assert_eq!(
            config.on_error,
            [
                ErrorMatch::Status(429),
                ErrorMatch::Status(500),
                ErrorMatch::Status(502),
                ErrorMatch::Status(503),
                ErrorMatch::Class(FailureClass::Timeout)
            ]
        );
        assert!(config.retries_attempt_timeouts());
        assert!(config.layer(DefaultClassifier).is_ok());

        let no_timeout: RetryConfig = serde_saphyr::from_str("on_error: [429, 504]").unwrap();
        assert!(!no_timeout.retries_attempt_timeouts());
    }

    #[test]
    fn full_config_reads_durations_and_budget() {
        let yaml = "\
max_retries: 4
backoff: decorrelated_jitter
base_delay: 250ms
factor: 3
max_delay: 20
max_retry_after: 1m
attempt_timeout: 5s
deadline: 90s
on_error: [503, connect, rate_limited, server, overloaded]
budget: { ratio: 0.5, min_per_second: 2, window: 30s }
";
        let config: RetryConfig = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(config.base_delay, Duration::from_millis(250));
        assert_eq!(config.max_delay, Duration::from_secs(20));
        assert_eq!(config.max_retry_after, Duration::from_mins(1));
        assert_eq!(config.attempt_timeout, Some(Duration::from_secs(5)));
        assert_eq!(config.deadline, Some(Duration::from_secs(90)));
        assert_eq!(
            config.on_error[1..],
            [
                ErrorMatch::Class(FailureClass::Connect),
                ErrorMatch::Class(FailureClass::RateLimited),
                ErrorMatch::Class(FailureClass::Server),
                ErrorMatch::Class(FailureClass::Overloaded),
            ]
        );
        assert_eq!(
            config.budget,
            Some(BudgetConfig {
                ratio: 0.5,
                min_per_second: 2,
                window: Duration::from_secs(30)
            })
        );
        assert_eq!(config.backoff().kind(), BackoffKind::DecorrelatedJitter);

        let none: RetryConfig = serde_saphyr::from_str("budget: null").unwrap();
        assert_eq!(none.budget, None);
    }

    #[test]
    fn class_sections_take_what_they_leave_out_from_the_top_level() {
        let yaml = "\
max_retries: 2
backoff: exponential
base_delay: 100ms
factor: 2
max_delay: 10s
rate_limited: { max_retries: 4, base_delay: 2s, backoff: exponential, factor: 2, max_delay: 30s }
timeout: { max_retries: 1, base_delay: 50ms, backoff: constant }
server: {}
";
        let config: RetryConfig = serde_saphyr::from_str(yaml).unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.class_policy(FailureClass::RateLimited),
            Some(
                ClassPolicy::new()
                    .max_retries(4)
                    .backoff(Backoff::exponential(
                        Duration::from_secs(2),
                        2.0,
                        Duration::from_secs(30)
                    ))
            )
        );
        // Factor and max_delay from above.
        assert_eq!(
            config.class_policy(FailureClass::Timeout),
            Some(ClassPolicy::new().max_retries(1).backoff(Backoff::new(
                BackoffKind::Constant,
                Duration::from_millis(50),
                2.0,
                Duration::from_secs(10)
            )))
        );
        // An empty section is the top level's policy, written out.
        assert_eq!(
            config.class_policy(FailureClass::Server),
            Some(ClassPolicy::new().max_retries(2).backoff(config.backoff()))
        );
        assert_eq!(config.class_policy(FailureClass::Connect), None);
        assert_eq!(config.class_policy(FailureClass::Other), None);
        assert!(config.layer(DefaultClassifier).is_ok());

        // Round trip: the sections and only the fields they set.
        let text = serde_json::to_string(&config).unwrap();
        assert!(
            text.contains(
                r#""timeout":{"max_retries":1,"backoff":"constant","base_delay":"50ms"}"#
            ),
            "{text}"
        );
        assert!(!text.contains("overloaded\":"), "{text}");
        assert_eq!(serde_json::from_str::<RetryConfig>(&text).unwrap(), config);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_rejected() {
        assert!(serde_saphyr::from_str::<RetryConfig>("max_retrys: 2").is_err());
        assert!(serde_saphyr::from_str::<RetryConfig>("budget: { percent: 20 }").is_err());
        assert!(serde_saphyr::from_str::<RetryConfig>("backoff: linear").is_err());
        assert!(serde_saphyr::from_str::<RetryConfig>("on_error: [700]").is_err());
        assert!(serde_saphyr::from_str::<RetryConfig>("on_error: [other]").is_err());
        assert!(serde_saphyr::from_str::<RetryConfig>("deadline: -1").is_err());
        assert!(serde_saphyr::from_str::<RetryConfig>("other: { max_retries: 1 }").is_err());
        assert!(serde_saphyr::from_str::<RetryConfig>("rate_limited: { retries: 4 }").is_err());
        assert!(serde_saphyr::from_str::<RetryConfig>("timeout: { max_retries: -1 }").is_err());
        assert!(serde_saphyr::from_str::<RetryConfig>("connect: { backoff: linear }").is_err());

        let bad = |config: RetryConfig| config.layer(DefaultClassifier).unwrap_err().to_string();
        assert!(
            bad(RetryConfig {
                factor: 0.5,
                ..RetryConfig::default()
            })
            .contains("factor")
        );
        assert!(
            bad(RetryConfig {
                base_delay: Duration::from_secs(20),
                ..RetryConfig::default()
            })
            .contains("base_delay")
        );
        assert!(
            bad(RetryConfig {
                deadline: Some(Duration::ZERO),
                ..RetryConfig::default()
            })
            .contains("deadline")
        );
        assert!(
            bad(RetryConfig {
                budget: Some(BudgetConfig {
                    ratio: f32::NAN,
                    ..BudgetConfig::default()
                }),
                ..RetryConfig::default()
            })
            .contains("ratio")
        );
        assert!(
            bad(RetryConfig {
                budget: Some(BudgetConfig {
                    window: Duration::from_mins(2),
                    ..BudgetConfig::default()
                }),
                ..RetryConfig::default()
            })
            .contains("window")
        );
    }

    #[test]
    fn retry_counts_above_twenty_are_refused_everywhere() {
        let err = |yaml: &str| {
            serde_saphyr::from_str::<RetryConfig>(yaml)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
        };
        // Issue 18's case: 4294967295 retries without a wait.
        assert_eq!(
            err("max_retries: 4294967295\nbase_delay: 0ms"),
            "invalid retry config: max_retries must be at most 20, not 4294967295"
        );
        assert!(err("max_retries: 21").contains("max_retries must be at most 20"));
        assert_eq!(
            err("rate_limited: { max_retries: 100 }"),
            "invalid retry config: rate_limited.max_retries must be at most 20, not 100"
        );
        assert!(
            serde_saphyr::from_str::<RetryConfig>("max_retries: 20\ntimeout: {max_retries: 20}")
                .unwrap()
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn class_sections_are_validated_with_the_values_they_inherit() {
        let err = |yaml: &str| {
            serde_saphyr::from_str::<RetryConfig>(yaml)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
        };
        // 20s is above the inherited max_delay of 10s.
        assert_eq!(
            err("overloaded: { base_delay: 20s }"),
            "invalid retry config: overloaded.base_delay (20s) must not exceed max_delay (10s)"
        );
        assert!(err("server: { factor: 0.5 }").contains("server.factor must be"));
        // An inherited bad value is reported at the top level first.
        assert!(
            err("factor: 0.1\nconnect: { factor: 2 }").starts_with("invalid retry config: factor")
        );
        // Raising the cap in the section makes the section valid.
        assert!(
            serde_saphyr::from_str::<RetryConfig>(
                "rate_limited: { base_delay: 20s, max_delay: 60s }"
            )
            .unwrap()
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn default_config_round_trips_through_serde() {
        let config = RetryConfig::default();
        let text = serde_json::to_string(&config).unwrap();
        assert!(
            text.contains(
                r#""on_error":["rate_limited","overloaded","timeout","connect","server"]"#
            ),
            "{text}"
        );
        let back: RetryConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, config);
    }
}
