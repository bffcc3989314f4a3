//! [`RetryConfig`]: the retry layer as written in a configuration file.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::{Backoff, BackoffKind};
use crate::budget::RetryBudget;
use crate::error::ConfigError;
use crate::layer::{RetryLayer, RetryLayerBuilder};
use crate::on_error::{ErrorClass, OnError};

/// The retry layer's settings, as read from a configuration file. Every field is optional.
///
/// ```
/// use brace_retry::RetryConfig;
///
/// // The seed configuration's retry section, as is.
/// let config: RetryConfig = serde_json::from_str(r#"{
///     "max_retries": 2,
///     "backoff": "exponential",
///     "on_error": [429, 500, 502, 503, "timeout"]
/// }"#).unwrap();
/// let layer = config.layer().unwrap();
/// # let _ = layer;
/// ```
///
/// The same in YAML, with every field:
///
/// ```yaml
/// max_retries: 2
/// backoff: full_jitter        # constant | exponential | full_jitter | decorrelated_jitter
/// base_delay: 100ms
/// factor: 2
/// max_delay: 10s
/// max_retry_after: 30s
/// attempt_timeout: 20s
/// deadline: 60s
/// on_error: [429, 500, 502, 503, timeout, connect]
/// budget: { ratio: 0.2, min_per_second: 10, window: 10s }   # or `budget: null` for none
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retries after the first attempt (default 2).
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
    /// A time limit per attempt (default none).
    #[serde(with = "brace_core::duration::option")]
    pub attempt_timeout: Option<Duration>,
    /// A time limit for the whole call, waits included (default none).
    #[serde(with = "brace_core::duration::option")]
    pub deadline: Option<Duration>,
    /// What is retried: status codes and `timeout`, `connect`, `overloaded` (default
    /// `[408, 429, 500, 502, 503, 504, timeout, connect, overloaded]`). A per-attempt
    /// timeout is retried only if the list has `timeout`.
    pub on_error: Vec<ErrorClass>,
    /// The retry budget; `null` for none (default 20% + 10/s over 10s).
    pub budget: Option<BudgetConfig>,
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
            on_error: vec![
                ErrorClass::Status(408),
                ErrorClass::Status(429),
                ErrorClass::Status(500),
                ErrorClass::Status(502),
                ErrorClass::Status(503),
                ErrorClass::Status(504),
                ErrorClass::Timeout,
                ErrorClass::Connect,
                ErrorClass::Overloaded,
            ],
            budget: Some(BudgetConfig::default()),
        }
    }
}

impl RetryConfig {
    /// Checks every value is usable.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad field: a `factor` below 1 or not finite, a
    /// `base_delay` above `max_delay`, a zero `attempt_timeout` or `deadline`, or a budget
    /// `ratio` outside 0–1000, `window` outside 1s–60s or `min_per_second` of 2³¹ or more.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.factor.is_finite() || self.factor < 1.0 {
            return Err(ConfigError::new(format!(
                "factor must be a number of at least 1, not {}",
                self.factor
            )));
        }
        if self.base_delay > self.max_delay {
            return Err(ConfigError::new("base_delay must not exceed max_delay"));
        }
        if self.attempt_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::new("attempt_timeout must be more than zero"));
        }
        if self.deadline == Some(Duration::ZERO) {
            return Err(ConfigError::new("deadline must be more than zero"));
        }
        if let Some(budget) = &self.budget {
            if !(0.0..=1000.0).contains(&budget.ratio) {
                return Err(ConfigError::new(format!(
                    "budget.ratio must be between 0 and 1000, not {}",
                    budget.ratio
                )));
            }
            if !(Duration::from_secs(1)..=Duration::from_mins(1)).contains(&budget.window) {
                return Err(ConfigError::new("budget.window must be between 1s and 60s"));
            }
            if budget.min_per_second >= i32::MAX as u32 {
                return Err(ConfigError::new("budget.min_per_second is too large"));
            }
        }
        Ok(())
    }

    /// The backoff these settings describe.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff, self.base_delay, self.factor, self.max_delay)
    }

    /// The layer these settings describe, classifying with an [`OnError`] list over any
    /// response type (errors are described by
    /// [`DescribeErrors`](crate::on_error::DescribeErrors)).
    ///
    /// # Errors
    ///
    /// As [`validate`](Self::validate).
    pub fn layer(&self) -> Result<RetryLayer<OnError>, ConfigError> {
        Ok(self.builder()?.build())
    }

    /// A builder holding these settings, to add hooks, a seed, or another classifier —
    /// e.g. `.classifier(OnError::http(config.on_error.clone()))` over an HTTP client.
    ///
    /// # Errors
    ///
    /// As [`validate`](Self::validate).
    pub fn builder(&self) -> Result<RetryLayerBuilder<OnError>, ConfigError> {
        self.validate()?;
        let mut builder = RetryLayerBuilder::new()
            .classifier(OnError::new(self.on_error.iter().copied()))
            .max_retries(self.max_retries)
            .backoff(self.backoff())
            .max_retry_after(self.max_retry_after)
            .retry_attempt_timeouts(self.on_error.contains(&ErrorClass::Timeout));
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
                ErrorClass::Status(429),
                ErrorClass::Status(500),
                ErrorClass::Status(502),
                ErrorClass::Status(503),
                ErrorClass::Timeout
            ]
        );
        assert!(config.layer().is_ok());
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
on_error: [503, connect]
budget: { ratio: 0.5, min_per_second: 2, window: 30s }
";
        let config: RetryConfig = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(config.base_delay, Duration::from_millis(250));
        assert_eq!(config.max_delay, Duration::from_secs(20));
        assert_eq!(config.max_retry_after, Duration::from_mins(1));
        assert_eq!(config.attempt_timeout, Some(Duration::from_secs(5)));
        assert_eq!(config.deadline, Some(Duration::from_secs(90)));
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
    fn unknown_fields_and_bad_values_are_rejected() {
        assert!(serde_saphyr::from_str::<RetryConfig>("max_retrys: 2").is_err());
        assert!(serde_saphyr::from_str::<RetryConfig>("budget: { percent: 20 }").is_err());
        assert!(serde_saphyr::from_str::<RetryConfig>("backoff: linear").is_err());
        assert!(serde_saphyr::from_str::<RetryConfig>("on_error: [700]").is_err());
        assert!(serde_saphyr::from_str::<RetryConfig>("deadline: -1").is_err());

        let bad = |config: RetryConfig| config.layer().unwrap_err().to_string();
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
    fn default_config_round_trips_through_serde() {
        let config = RetryConfig::default();
        let text = serde_json::to_string(&config).unwrap();
        let back: RetryConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, config);
    }
}
