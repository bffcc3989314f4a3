//! Configuration: selection, hedging, readiness.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a failover service picks among the healthy providers of equal priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// In the order the providers were added.
    #[default]
    Ordered,
    /// At random, in proportion to each provider's weight.
    Weighted,
    /// The one with the lowest latency EWMA (a provider with no samples yet goes first).
    LeastLatency,
    /// Two at random, then the one of them with the lower latency EWMA (as tower's
    /// `balance::p2c` does): spreads load while still avoiding slow providers.
    PowerOfTwoChoices,
    /// The one with the lowest price; providers without a price go last.
    Cheapest,
}

/// When to send a request to a second provider while the first has not answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HedgeConfig {
    /// Hedge after this fixed delay. When `None`, hedge after
    /// [`percentile`](Self::percentile) of recent latencies.
    #[serde(with = "brace_core::duration::option")]
    pub delay: Option<Duration>,
    /// Latency percentile (0–1) after which a request is hedged, used when `delay` is
    /// `None`.
    pub percentile: f64,
    /// Latency samples needed before the percentile is trusted; until then nothing is
    /// hedged.
    pub min_samples: u32,
    /// Hedges allowed as a fraction of requests (the hedge budget), e.g. `0.1` for 10 %.
    pub budget_ratio: f32,
    /// Hedges allowed per second regardless of the ratio, so quiet services can hedge too.
    pub budget_min_per_sec: u32,
    /// How long requests count towards the budget.
    #[serde(with = "brace_core::duration")]
    pub budget_ttl: Duration,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        Self {
            delay: None,
            percentile: 0.95,
            min_samples: 20,
            budget_ratio: 0.1,
            budget_min_per_sec: 1,
            budget_ttl: Duration::from_secs(10),
        }
    }
}

impl HedgeConfig {
    /// Hedges after a fixed delay, with the default budget.
    pub fn after(delay: Duration) -> Self {
        Self {
            delay: Some(delay),
            ..Self::default()
        }
    }

    /// Hedges after the given latency percentile (0–1), with the default budget.
    pub fn percentile(percentile: f64) -> Self {
        Self {
            delay: None,
            percentile,
            ..Self::default()
        }
    }
}

/// Everything about a failover service that is not its providers.
///
/// Whether a provider is tried is not configured here: its circuit breaker decides (see
/// [`Provider::circuit`](crate::Provider::circuit)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailoverConfig {
    /// How providers of equal priority are chosen.
    pub selection: Selection,
    /// Measure every call's latency, for the EWMA in
    /// [`health`](crate::FailoverService::health) (default on). Latency-based selection and
    /// percentile hedging measure it regardless; turning this off otherwise saves two clock
    /// reads per call.
    pub track_latency: bool,
    /// Hedging, off when `None`.
    pub hedge: Option<HedgeConfig>,
    /// Interval of active health checks, when a probe is set.
    #[serde(with = "brace_core::duration::option")]
    pub probe_interval: Option<Duration>,
    /// How long a provider may stay unready (its `poll_ready` pending, e.g. a full
    /// concurrency limit) before the request moves on to the next provider with a
    /// [`NotReady`](crate::NotReady) error. `None` waits as long as the provider's own stack
    /// does.
    #[serde(with = "brace_core::duration::option")]
    pub ready_timeout: Option<Duration>,
    /// Seed for the random choices (weighted selection, power of two choices), for
    /// reproducible runs. Random when `None`.
    pub seed: Option<u64>,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            selection: Selection::default(),
            track_latency: true,
            hedge: None,
            probe_interval: None,
            ready_timeout: None,
            seed: None,
        }
    }
}
