//! The retry budget: retries may be at most a ratio of recent first attempts, plus a small
//! floor per second, so that a failing upstream is never hit by a retry storm.

use std::fmt;
use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};

/// A retry budget shared by every service built from one [`RetryLayer`](crate::RetryLayer).
///
/// Each first attempt deposits into the budget; each retry withdraws. Over the sliding
/// `window`, retries are limited to `ratio ×` the first attempts seen plus
/// `min_per_second × window` — so a service that fails every call receives at most about
/// `(1 + ratio) ×` the offered load, plus the floor. This wraps tower's
/// [`TpsBudget`](tower::retry::budget::TpsBudget).
///
/// tower's budget counts in whole tokens: for a ratio of at most 1 one retry costs
/// `⌊1 / ratio⌋` deposits, so a ratio such as `0.3` is rounded up to `1/3`. Ratios whose
/// inverse is whole (`0.1`, `0.2`, `0.25`, `0.5`, `1`) are exact.
pub struct RetryBudget {
    inner: TpsBudget,
    window: Duration,
    min_per_second: u32,
    ratio: f32,
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
        let window = window.clamp(Duration::from_secs(1), Duration::from_mins(1));
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1000.0)
        };
        let min_per_second = min_per_second.min(i32::MAX as u32 - 1);
        Self {
            inner: TpsBudget::new(window, min_per_second, ratio),
            window,
            min_per_second,
            ratio,
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
        self.ratio
    }

    /// The retries allowed per second whatever the traffic.
    pub fn min_per_second(&self) -> u32 {
        self.min_per_second
    }

    /// The sliding window deposits are remembered for.
    pub fn window(&self) -> Duration {
        self.window
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
        f.debug_struct("RetryBudget")
            .field("ratio", &self.ratio)
            .field("min_per_second", &self.min_per_second)
            .field("window", &self.window)
            .field("balance", &self.inner)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_are_clamped_not_panicking() {
        let budget = RetryBudget::with_window(Duration::ZERO, f32::NAN, u32::MAX);
        assert_eq!(budget.window(), Duration::from_secs(1));
        assert_eq!(budget.ratio(), 0.0);
        let budget = RetryBudget::with_window(Duration::from_hours(1), 1e9, 0);
        assert_eq!(budget.window(), Duration::from_mins(1));
        assert_eq!(budget.ratio(), 1000.0);
        let budget = RetryBudget::new(-1.0, 0);
        assert_eq!(budget.ratio(), 0.0);
        assert!(!budget.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn withdrawals_follow_deposits_and_ratio() {
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
