//! How long to wait between attempts: constant, exponential, and exponential with full or
//! decorrelated jitter.

use std::time::Duration;

use brace_core::duration::nanos;
use serde::{Deserialize, Serialize};

/// The shape of a [`Backoff`], as named in configuration (`backoff: exponential`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackoffKind {
    /// The same delay before every retry.
    Constant,
    /// `base × factor^(retry − 1)`, capped.
    #[default]
    Exponential,
    /// AWS "full jitter": a uniform random delay in `[0, min(cap, base × factor^(retry − 1))]`.
    FullJitter,
    /// AWS "decorrelated jitter": `min(cap, uniform(base, previous × 3))`, starting from
    /// `previous = base`.
    DecorrelatedJitter,
}

/// A backoff strategy: the delay before each retry.
///
/// Jittered strategies draw from the random number generator the layer hands them; seed it
/// with [`RetryLayerBuilder::seed`](crate::RetryLayerBuilder::seed) to make delays
/// reproducible in tests.
///
/// ```
/// use std::time::Duration;
/// use brace_retry::Backoff;
///
/// let backoff = Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(1));
/// let mut rng = fastrand::Rng::with_seed(7);
/// let delays: Vec<_> = (1..=5)
///     .map(|retry| backoff.delay(retry, Duration::ZERO, &mut rng).as_millis())
///     .collect();
/// assert_eq!(delays, [100, 200, 400, 800, 1000]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    kind: BackoffKind,
    base: Duration,
    factor: f64,
    max: Duration,
}

impl Default for Backoff {
    /// Exponential from 100ms, doubling, capped at 10s.
    fn default() -> Self {
        Self::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(10))
    }
}

impl Backoff {
    /// Build a backoff of any kind. A `factor` that is not a finite number of at least 1 is
    /// taken as 1; a `max` below `base` caps every delay at `max`.
    pub fn new(kind: BackoffKind, base: Duration, factor: f64, max: Duration) -> Self {
        let factor = if factor.is_finite() && factor >= 1.0 {
            factor
        } else {
            1.0
        };
        Self {
            kind,
            base,
            factor,
            max,
        }
    }

    /// No wait at all between attempts.
    pub fn none() -> Self {
        Self::constant(Duration::ZERO)
    }

    /// The same `delay` before every retry.
    pub fn constant(delay: Duration) -> Self {
        Self::new(BackoffKind::Constant, delay, 1.0, delay)
    }

    /// `base × factor^(retry − 1)`, never more than `max`.
    pub fn exponential(base: Duration, factor: f64, max: Duration) -> Self {
        Self::new(BackoffKind::Exponential, base, factor, max)
    }

    /// Full jitter: uniform in `[0, min(max, base × factor^(retry − 1))]`.
    pub fn full_jitter(base: Duration, factor: f64, max: Duration) -> Self {
        Self::new(BackoffKind::FullJitter, base, factor, max)
    }

    /// Decorrelated jitter: `min(max, uniform(base, previous × 3))`.
    pub fn decorrelated_jitter(base: Duration, max: Duration) -> Self {
        Self::new(BackoffKind::DecorrelatedJitter, base, 3.0, max)
    }

    /// The kind of backoff.
    pub fn kind(&self) -> BackoffKind {
        self.kind
    }

    /// The first (or constant) delay.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The growth factor of exponential kinds.
    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// The cap on any delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The delay before retry number `retry` (1 for the first retry), given the `previous`
    /// delay this backoff returned (`Duration::ZERO` before the first retry; only
    /// decorrelated jitter uses it).
    pub fn delay(&self, retry: u32, previous: Duration, rng: &mut fastrand::Rng) -> Duration {
        match self.kind {
            BackoffKind::Constant => self.base.min(self.max),
            BackoffKind::Exponential => self.exponential_at(retry),
            BackoffKind::FullJitter => uniform(rng, Duration::ZERO, self.exponential_at(retry)),
            BackoffKind::DecorrelatedJitter => {
                let previous = if previous.is_zero() {
                    self.base
                } else {
                    previous
                };
                let upper = previous.saturating_mul(3).max(self.base);
                uniform(rng, self.base, upper).min(self.max)
            }
        }
    }

    /// Whether [`delay`](Self::delay) draws random numbers.
    pub(crate) fn is_jittered(&self) -> bool {
        matches!(
            self.kind,
            BackoffKind::FullJitter | BackoffKind::DecorrelatedJitter
        )
    }

    fn exponential_at(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.base.as_secs_f64() * self.factor.powi(exponent);
        Duration::try_from_secs_f64(secs)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// A uniform random duration in `[low, high]` (nanosecond resolution).
fn uniform(rng: &mut fastrand::Rng, low: Duration, high: Duration) -> Duration {
    let (low, high) = (nanos(low), nanos(high));
    if high <= low {
        return Duration::from_nanos(low);
    }
    Duration::from_nanos(rng.u64(low..=high))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn constant_and_exponential_are_exact() {
        let mut rng = fastrand::Rng::with_seed(1);
        let constant = Backoff::constant(MS * 250);
        for retry in 1..10 {
            assert_eq!(constant.delay(retry, Duration::ZERO, &mut rng), MS * 250);
        }
        let exp = Backoff::exponential(MS * 100, 3.0, MS * 2000);
        let delays: Vec<_> = (1..=5)
            .map(|r| exp.delay(r, Duration::ZERO, &mut rng))
            .collect();
        assert_eq!(delays, [MS * 100, MS * 300, MS * 900, MS * 2000, MS * 2000]);
    }

    #[test]
    fn exponential_saturates_at_the_cap_for_huge_retry_numbers() {
        let mut rng = fastrand::Rng::with_seed(1);
        let exp = Backoff::exponential(Duration::from_secs(1), 10.0, Duration::from_secs(30));
        assert_eq!(
            exp.delay(u32::MAX, Duration::ZERO, &mut rng),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn invalid_factor_is_taken_as_one() {
        for factor in [f64::NAN, f64::INFINITY, -2.0, 0.5] {
            assert_eq!(
                Backoff::exponential(MS, factor, MS * 10).factor(),
                1.0,
                "{factor}"
            );
        }
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_exponential_over_many_samples() {
        let mut rng = fastrand::Rng::with_seed(42);
        let backoff = Backoff::full_jitter(MS * 100, 2.0, MS * 1000);
        for retry in 1..=6 {
            let ceiling = (MS * 100 * 2u32.pow(retry - 1)).min(MS * 1000);
            let samples: Vec<_> = (0..2000)
                .map(|_| backoff.delay(retry, Duration::ZERO, &mut rng))
                .collect();
            assert!(samples.iter().all(|d| *d <= ceiling), "retry {retry}");
            // The draws spread over the range rather than sticking to one end.
            assert!(samples.iter().any(|d| *d < ceiling / 4), "retry {retry}");
            assert!(
                samples.iter().any(|d| *d > ceiling * 3 / 4),
                "retry {retry}"
            );
        }
    }

    #[test]
    fn decorrelated_jitter_stays_within_base_and_three_times_previous() {
        let mut rng = fastrand::Rng::with_seed(7);
        let backoff = Backoff::decorrelated_jitter(MS * 50, MS * 5000);
        for _ in 0..200 {
            let mut previous = Duration::ZERO;
            for retry in 1..=10 {
                let delay = backoff.delay(retry, previous, &mut rng);
                let upper = (if previous.is_zero() {
                    MS * 50
                } else {
                    previous
                } * 3)
                    .min(MS * 5000);
                assert!(delay >= MS * 50 && delay <= upper, "{delay:?} > {upper:?}");
                previous = delay;
            }
        }
    }

    #[test]
    fn same_seed_gives_same_delays() {
        let backoff = Backoff::decorrelated_jitter(MS * 10, MS * 10_000);
        let run = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut previous = Duration::ZERO;
            (1..=8)
                .map(|retry| {
                    previous = backoff.delay(retry, previous, &mut rng);
                    previous
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    proptest! {
        #[test]
        fn never_panics_and_never_exceeds_the_cap(
            kind in prop_oneof![
                Just(BackoffKind::Constant),
                Just(BackoffKind::Exponential),
                Just(BackoffKind::FullJitter),
                Just(BackoffKind::DecorrelatedJitter),
            ],
            base in any::<u64>(),
            max in any::<u64>(),
            factor in any::<f64>(),
            retry in any::<u32>(),
            previous in any::<u64>(),
            seed in any::<u64>(),
        ) {
            let max = Duration::from_nanos(max);
            let backoff = Backoff::new(kind, Duration::from_nanos(base), factor, max);
            let mut rng = fastrand::Rng::with_seed(seed);
            let delay = backoff.delay(retry, Duration::from_nanos(previous), &mut rng);
            prop_assert!(delay <= max || kind == BackoffKind::Constant && delay <= Duration::from_nanos(base));
        }
    }
}
