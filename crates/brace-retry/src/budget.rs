//! The retry budget: retries may be at most a ratio of recent first attempts, plus a small
//! floor per second, so that a failing upstream is never hit by a retry storm.

use std::fmt;
use std::time::Duration;

use brace_core::budget::Budget;

/// A retry budget shared by every service built from one [`RetryLayer`](crate::RetryLayer).
///
/// Each first attempt deposits into the budget; each retry withdraws. Over the sliding
/// `window`, retries are limited to `ratio ×` the first attempts seen plus
/// `min_per_second × window` — so a service that fails every call receives at most about
/// `(1 + ratio) ×` the offered load, plus the floor. It is a [`brace_core::budget::Budget`]:
/// the accounting of Finagle's retry budget and tower's `TpsBudget`, where a deposit is one
/// atomic addition and reads no clock of its own.
///
/// The budget counts in whole tokens: for a ratio of at most 1 one retry costs
/// `⌊1 / ratio⌋` deposits, so a ratio such as `0.3` is rounded up to `1/3`. Ratios whose
/// inverse is whole (`0.1`, `0.2`, `0.25`, `0.5`, `1`) are exact.
pub struct RetryBudget {
    inner: Budget,
}

impl RetryBudget {
    /// A budget of `ratio` retries per first attempt plus `min_per_second`, over a 10s
    /// window.
    pub fn new(ratio: f32, min_per_second: u32) -> Self {
        Self::with_window(Duration::from_secs(10), ratio, min_per_second)
    }

    /// A budget over a sliding `window`. Out-of-range values are clamped rather than
    /// rejected: `window` to 1s–60s, `ratio` to 0–1000 (NaN is 0), `min_per_second` below
    /// `i32::MAX`.
    pub fn with_window(window: Duration, ratio: f32, min_per_second: u32) -> Self {
        Self {
            inner: Budget::new(window, ratio, min_per_second),
        }
    }

    /// Records a first attempt.
    pub fn deposit(&self) {
        self.inner.deposit();
    }

    /// Takes one retry from the budget; `false` if none is left.
    pub fn withdraw(&self) -> bool {
        self.inner.withdraw()
    }

    /// The ratio of retries to first attempts.
    pub fn ratio(&self) -> f32 {
        self.inner.ratio()
    }

    /// The retries allowed per second whatever the traffic.
    pub fn min_per_second(&self) -> u32 {
        self.inner.min_per_second()
    }

    /// The sliding window deposits are remembered for.
    pub fn window(&self) -> Duration {
        self.inner.window()
    }
}

impl Default for RetryBudget {
    /// 20% retries plus 10 per second over 10s, as tower's default.
    fn default() -> Self {
        Self::new(0.2, 10)
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RetryBudget").field(&self.inner).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_retry_costs_one_over_the_ratio_first_attempts() {
        let budget = RetryBudget::new(0.5, 0);
        assert!(!budget.withdraw());
        for _ in 0..4 {
            budget.deposit();
        }
        assert!(budget.withdraw());
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
    }
}
