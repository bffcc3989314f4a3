//! A budget for extra work — retries, hedges — as a ratio of recent requests plus a floor.
//!
//! Each request [deposits](Budget::deposit); each piece of extra work (a retry, a hedged
//! second request) [withdraws](Budget::withdraw). Over a sliding window the withdrawals
//! are limited to `ratio ×` the deposits plus `min_per_second × window`, so a failing
//! upstream sees at most about `(1 + ratio) ×` the offered load, plus the floor. The
//! accounting is that of Finagle's retry budget and tower's `TpsBudget`; a deposit costs
//! one atomic addition and reads the clock through [`crate::clock`] (shared with the layers
//! polled with it), where tower's takes a lock and reads the clock on its own.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use brace_core::budget::Budget;
//!
//! // One retry per two requests, no floor.
//! let budget = Budget::new(Duration::from_secs(10), 0.5, 0);
//! assert!(!budget.withdraw());
//! budget.deposit();
//! budget.deposit();
//! assert!(budget.withdraw());
//! assert!(!budget.withdraw());
//! ```

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use std::sync::{Mutex, PoisonError};

use tokio::time::Instant;

use crate::clock;
use crate::duration::nanos;

/// How many slots the window is cut into: a deposit is forgotten between 9/10 of the
/// window and the whole window after it was made.
const SLOTS: usize = 10;

/// A sliding-window budget: see the [module docs](self).
///
/// The budget counts in whole tokens: for a ratio of at most 1 one withdrawal costs
/// `⌊1 / ratio⌋` deposits, so a ratio such as `0.3` is rounded up to `1/3`. Ratios whose
/// inverse is whole (`0.1`, `0.2`, `0.25`, `0.5`, `1`) are exact.
pub struct Budget {
    /// Tokens deposited (less those withdrawn) in each past slot of the window.
    slots: [AtomicI64; SLOTS],
    /// Tokens of the current slot, moved into `slots` when the slot ends.
    current: AtomicI64,
    /// The current slot's number, counted in slot lengths from `base`.
    tick: AtomicU64,
    /// When the current slot ends, in nanoseconds from `base`: until then a deposit only
    /// compares the clock with it.
    slot_ends: AtomicU64,
    /// Held while the window moves on.
    rotation: Mutex<()>,
    base: Instant,
    slot: Duration,
    reserve: i64,
    deposit_amount: i64,
    withdraw_amount: i64,
    window: Duration,
    min_per_second: u32,
    ratio: f32,
}

impl Budget {
    /// `ratio` withdrawals per deposit plus `min_per_second`, over a sliding `window`.
    /// Out-of-range values are clamped rather than rejected: `window` to 1s–60s, `ratio` to
    /// 0–1000 (NaN is 0), `min_per_second` below `i32::MAX`.
    pub fn new(window: Duration, ratio: f32, min_per_second: u32) -> Self {
        let window = window.clamp(Duration::from_secs(1), Duration::from_mins(1));
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1000.0)
        };
        let min_per_second = min_per_second.min(i32::MAX as u32 - 1);
        // Whole tokens: a deposit is 1 (or 1000 for ratios above 1), a withdrawal as many
        // deposits as one retry is worth.
        let (deposit_amount, withdraw_amount) = if ratio == 0.0 {
            (0, 1)
        } else if ratio <= 1.0 {
            (1, (1.0 / ratio) as i64)
        } else {
            (1000, (1000.0 / ratio) as i64)
        };
        let reserve = i64::from(min_per_second)
            // At most 60: the window is clamped above.
            .saturating_mul(i64::try_from(window.as_secs()).unwrap_or(i64::MAX))
            .saturating_mul(withdraw_amount);
        Self {
            slots: std::array::from_fn(|_| AtomicI64::new(0)),
            current: AtomicI64::new(0),
            tick: AtomicU64::new(0),
            slot_ends: AtomicU64::new(nanos(window / SLOTS as u32)),
            rotation: Mutex::new(()),
            base: clock::now(),
            slot: window / SLOTS as u32,
            reserve,
            deposit_amount,
            withdraw_amount,
            window,
            min_per_second,
            ratio,
        }
    }

    /// Records a request.
    pub fn deposit(&self) {
        self.move_on();
        self.current
            .fetch_add(self.deposit_amount, Ordering::Relaxed);
    }

    /// Takes one piece of extra work from the budget; `false` if none is left.
    pub fn withdraw(&self) -> bool {
        self.move_on();
        if self.balance() < self.withdraw_amount {
            return false;
        }
        self.current
            .fetch_sub(self.withdraw_amount, Ordering::Relaxed);
        true
    }

    /// The tokens left: deposits in the window less withdrawals, plus the floor.
    fn balance(&self) -> i64 {
        self.slots
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .fold(self.current.load(Ordering::Relaxed), i64::saturating_add)
            .saturating_add(self.reserve)
    }

    /// Moves the window on to now: the current slot's tokens go into its place in the ring,
    /// and slots older than the window are cleared. Only a lock-free read when the slot has
    /// not changed.
    fn move_on(&self) {
        let now = nanos(clock::now().saturating_duration_since(self.base));
        if now < self.slot_ends.load(Ordering::Acquire) {
            return;
        }
        // Nothing is left half-done under this lock: a poisoned one is still sound.
        let _rotating = self.rotation.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = nanos(self.slot).max(1);
        let tick = now / slot;
        let last = self.tick.load(Ordering::Acquire);
        if tick <= last {
            return;
        }
        let ended = self.current.swap(0, Ordering::AcqRel);
        self.slots[(last % SLOTS as u64) as usize].store(ended, Ordering::Relaxed);
        // Slots the clock has passed since, up to a whole window's worth, start empty.
        for passed in (last + 1)..tick.min(last + SLOTS as u64 + 1) {
            self.slots[(passed % SLOTS as u64) as usize].store(0, Ordering::Relaxed);
        }
        self.tick.store(tick, Ordering::Release);
        self.slot_ends.store(
            tick.saturating_add(1).saturating_mul(slot),
            Ordering::Release,
        );
    }

    /// The ratio of withdrawals to deposits.
    pub fn ratio(&self) -> f32 {
        self.ratio
    }

    /// The withdrawals allowed per second whatever the traffic.
    pub fn min_per_second(&self) -> u32 {
        self.min_per_second
    }

    /// The sliding window deposits are remembered for.
    pub fn window(&self) -> Duration {
        self.window
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("ratio", &self.ratio)
            .field("min_per_second", &self.min_per_second)
            .field("window", &self.window)
            .field("balance", &self.balance())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_are_clamped_not_panicking() {
        let budget = Budget::new(Duration::ZERO, f32::NAN, u32::MAX);
        assert_eq!(budget.window(), Duration::from_secs(1));
        assert_eq!(budget.ratio(), 0.0);
        let budget = Budget::new(Duration::from_hours(1), 1e9, 0);
        assert_eq!(budget.window(), Duration::from_mins(1));
        assert_eq!(budget.ratio(), 1000.0);
        let budget = Budget::new(Duration::from_secs(10), -1.0, 0);
        assert_eq!(budget.ratio(), 0.0);
        assert!(!budget.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn withdrawals_follow_deposits_and_ratio() {
        let budget = Budget::new(Duration::from_secs(10), 0.5, 0);
        assert!(!budget.withdraw());
        for _ in 0..4 {
            budget.deposit();
        }
        assert!(budget.withdraw());
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_are_forgotten_once_the_window_has_passed() {
        // Inside the window (9 s of 10 later) three deposits pay for three retries.
        let budget = Budget::new(Duration::from_secs(10), 1.0, 0);
        for _ in 0..3 {
            budget.deposit();
        }
        tokio::time::advance(Duration::from_secs(9)).await;
        for _ in 0..3 {
            assert!(budget.withdraw());
        }
        assert!(!budget.withdraw());

        // Past their window only a later deposit counts.
        let budget = Budget::new(Duration::from_secs(10), 1.0, 0);
        for _ in 0..3 {
            budget.deposit();
        }
        tokio::time::advance(Duration::from_secs(9)).await;
        budget.deposit();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(budget.withdraw());
        assert!(!budget.withdraw(), "the first deposits outlived the window");
        // Long after everything: nothing left, and the ring starts over cleanly.
        tokio::time::advance(Duration::from_mins(10)).await;
        assert!(!budget.withdraw());
        budget.deposit();
        assert!(budget.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_allows_min_per_second_over_the_window_without_deposits() {
        let budget = Budget::new(Duration::from_secs(2), 0.5, 3);
        // 3 per second over 2 s: 6 retries with nothing deposited.
        for _ in 0..6 {
            assert!(budget.withdraw());
        }
        assert!(!budget.withdraw());
    }
}
