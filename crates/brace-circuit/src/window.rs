//! Sliding windows of call outcomes: count-based (the last N calls) and time-based (the last N
//! seconds, one bucket per second).
//!
//! Recording a call is O(1) and allocates nothing. The count-based window is lock-free: one
//! atomic swap on the call's slot and one atomic add on a packed total. The time-based window
//! keeps a lock held for the few nanoseconds of an update (a stale bucket is cleared at most
//! once per second, so the work per call is bounded by the window length and O(1) amortized).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Totals over a window: how many calls it holds, how many failed, how many were slow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failed: u64,
    pub(crate) slow: u64,
}

impl Totals {
    /// Failure rate in percent, 0 when the window is empty.
    pub(crate) fn failure_rate(self) -> f32 {
        percent(self.failed, self.calls)
    }

    /// Slow-call rate in percent, 0 when the window is empty.
    pub(crate) fn slow_rate(self) -> f32 {
        percent(self.slow, self.calls)
    }
}

fn percent(part: u64, whole: u64) -> f32 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 100.0 / whole as f64) as f32
    }
}

/// One call's outcome as a window stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) failed: bool,
    pub(crate) slow: bool,
}

impl Sample {
    const RECORDED: u8 = 1;
    const FAILED: u8 = 2;
    const SLOW: u8 = 4;

    fn code(self) -> u8 {
        Self::RECORDED
            | if self.failed { Self::FAILED } else { 0 }
            | if self.slow { Self::SLOW } else { 0 }
    }
}

/// Keeps a hot atomic on its own cache lines, so that writes to one do not slow down reads
/// of another (128 bytes: adjacent-line prefetching pairs 64-byte lines).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// A sliding window of either kind.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per breaker; boxing would add an indirection per call
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    /// Records one call that finished `elapsed` after the breaker was created (a count
    /// window ignores `elapsed`). Returns the new totals, or `None` if they did not change
    /// (a count window replaced a call with one of the same kind).
    pub(crate) fn record(&self, sample: Sample, elapsed: Duration) -> Option<Totals> {
        match self {
            Self::Count(window) => window.record(sample),
            Self::Time(window) => Some(window.record(sample, elapsed)),
        }
    }

    /// The totals as of `elapsed` after the breaker was created.
    pub(crate) fn totals(&self, elapsed: Duration) -> Totals {
        match self {
            Self::Count(window) => window.totals(),
            Self::Time(window) => window.totals(elapsed),
        }
    }

    /// Forgets every recorded call.
    pub(crate) fn reset(&self) {
        match self {
            Self::Count(window) => window.reset(),
            Self::Time(window) => window.reset(),
        }
    }
}

// ===== CountWindow =====

/// Bits per packed field of [`CountWindow::totals`].
const FIELD_BITS: u32 = 21;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;
/// Every packed field starts at this bias so that a transiently negative field (a slot
/// overwritten before its previous writer added it) never borrows from its neighbour.
const BIAS: u64 = 1 << 20;
const ZERO: u64 = BIAS | (BIAS << FIELD_BITS) | (BIAS << (2 * FIELD_BITS));

/// The largest count-based window: counts must stay below [`BIAS`].
pub(crate) const MAX_COUNT_WINDOW: u32 = 1 << 19;

/// The last `size` calls, lock-free.
#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    cursor: Padded<AtomicU64>,
    /// calls | failed << 21 | slow << 42, each biased by [`BIAS`].
    totals: Padded<AtomicU64>,
}

impl CountWindow {
    /// A window of the last `size` calls; `size` is between 1 and [`MAX_COUNT_WINDOW`].
    pub(crate) fn new(size: u32) -> Self {
        let size = size.clamp(1, MAX_COUNT_WINDOW);
        Self {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            cursor: Padded(AtomicU64::new(0)),
            totals: Padded(AtomicU64::new(ZERO)),
        }
    }

    fn packed(code: u8) -> u64 {
        let bit = |flag: u8| u64::from(code & flag != 0);
        bit(Sample::RECORDED)
            | (bit(Sample::FAILED) << FIELD_BITS)
            | (bit(Sample::SLOW) << (2 * FIELD_BITS))
    }

    fn unpack(&self, packed: u64) -> Totals {
        let max = self.slots.len() as u64;
        let field = |shift: u32| {
            ((packed >> shift) & FIELD_MASK)
                .saturating_sub(BIAS)
                .min(max)
        };
        // A reading taken between a recorder's swap and its add (while a reset runs) can
        // count a failed or slow call whose call is no longer counted: never more of either
        // than calls, so a reading is always a window that could exist.
        let calls = field(0);
        Totals {
            calls,
            failed: field(FIELD_BITS).min(calls),
            slow: field(2 * FIELD_BITS).min(calls),
        }
    }

    /// Records one call; `None` if the totals did not change (the call replaced one of the
    /// same kind, as in a healthy steady state), which costs no write to shared totals.
    pub(crate) fn record(&self, sample: Sample) -> Option<Totals> {
        let index = self.cursor.fetch_add(1, Ordering::Relaxed) % self.slots.len() as u64;
        let code = sample.code();
        let old = self.slots[index as usize].swap(code, Ordering::Relaxed);
        if old == code {
            return None;
        }
        let delta = Self::packed(code).wrapping_sub(Self::packed(old));
        let totals = self
            .totals
            .fetch_add(delta, Ordering::AcqRel)
            .wrapping_add(delta);
        Some(self.unpack(totals))
    }

    pub(crate) fn totals(&self) -> Totals {
        self.unpack(self.totals.load(Ordering::Acquire))
    }

    /// Empties the window. Each slot is taken out the way a call replaces it (swap, then
    /// subtract what it held), so a call recorded concurrently is either fully in the
    /// emptied window or fully out of it: the totals never drift from the slots.
    pub(crate) fn reset(&self) {
        let mut removed = 0u64;
        for slot in &*self.slots {
            removed = removed.wrapping_add(Self::packed(slot.swap(0, Ordering::Relaxed)));
        }
        self.cursor.store(0, Ordering::Relaxed);
        self.totals.fetch_sub(removed, Ordering::AcqRel);
    }
}

// ===== TimeWindow =====

/// The calls of the last `seconds` seconds, one bucket per second.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    inner: Mutex<TimeBuckets>,
}

#[derive(Debug)]
struct TimeBuckets {
    buckets: Box<[Totals]>,
    totals: Totals,
    /// The second (since the breaker was created) of the newest bucket.
    head: u64,
}

impl TimeWindow {
    /// A window of the last `seconds` seconds (at least one).
    pub(crate) fn new(seconds: u32) -> Self {
        let seconds = seconds.max(1);
        Self {
            inner: Mutex::new(TimeBuckets {
                buckets: vec![Totals::default(); seconds as usize].into_boxed_slice(),
                totals: Totals::default(),
                head: 0,
            }),
        }
    }

    pub(crate) fn record(&self, sample: Sample, elapsed: Duration) -> Totals {
        let mut inner = self.inner.lock();
        let bucket = inner.advance(elapsed.as_secs());
        let add = Totals {
            calls: 1,
            failed: u64::from(sample.failed),
            slow: u64::from(sample.slow),
        };
        let bucket = &mut inner.buckets[bucket];
        bucket.calls += add.calls;
        bucket.failed += add.failed;
        bucket.slow += add.slow;
        inner.totals.calls += add.calls;
        inner.totals.failed += add.failed;
        inner.totals.slow += add.slow;
        inner.totals
    }

    pub(crate) fn totals(&self, elapsed: Duration) -> Totals {
        let mut inner = self.inner.lock();
        inner.advance(elapsed.as_secs());
        inner.totals
    }

    pub(crate) fn reset(&self) {
        let mut inner = self.inner.lock();
        inner.buckets.fill(Totals::default());
        inner.totals = Totals::default();
    }
}

impl TimeBuckets {
    /// Moves the window forward to `now` (in seconds), clearing the buckets that fell out of
    /// it, and returns the index of `now`'s bucket. A `now` older than the newest bucket (a
    /// call that started in an earlier second) is counted in the newest bucket.
    fn advance(&mut self, now: u64) -> usize {
        let len = self.buckets.len() as u64;
        if now > self.head {
            let stale = (now - self.head).min(len);
            for second in (now + 1 - stale)..=now {
                let bucket = &mut self.buckets[(second % len) as usize];
                self.totals.calls -= bucket.calls;
                self.totals.failed -= bucket.failed;
                self.totals.slow -= bucket.slow;
                *bucket = Totals::default();
            }
            self.head = now;
        }
        (self.head % len) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Sample = Sample {
        failed: false,
        slow: false,
    };
    const FAIL: Sample = Sample {
        failed: true,
        slow: false,
    };
    const SLOW: Sample = Sample {
        failed: false,
        slow: true,
    };

    #[test]
    fn count_window_keeps_only_the_last_n_calls() {
        let window = CountWindow::new(3);
        window.record(FAIL);
        window.record(FAIL);
        window.record(SLOW);
        assert_eq!(
            window.totals(),
            Totals {
                calls: 3,
                failed: 2,
                slow: 1
            }
        );
        window.record(OK);
        let totals = window.record(OK).unwrap();
        assert_eq!(
            totals,
            Totals {
                calls: 3,
                failed: 0,
                slow: 1
            }
        );
        window.reset();
        assert_eq!(window.totals(), Totals::default());
        assert_eq!(window.record(FAIL).unwrap().failed, 1);
        // The same kind of call replacing itself changes nothing.
        let window = CountWindow::new(1);
        assert!(window.record(OK).is_some());
        assert_eq!(window.record(OK), None);
    }

    #[test]
    fn a_reset_racing_a_record_never_reads_more_failures_than_calls() {
        // The interleaving, step by step: a slot holds a failed call; a recorder swaps a
        // good call into it; a reset then empties the window (taking the good call out);
        // the recorder's add (good minus failed) has not happened yet.
        let window = CountWindow::new(4);
        window.record(FAIL);
        window.slots[0].swap(OK.code(), Ordering::Relaxed);
        window.reset();
        let between = window.totals();
        assert!(between.failed <= between.calls, "{between:?}");
        assert!(between.slow <= between.calls, "{between:?}");
        // The recorder's add lands: the window is exact again.
        let delta = CountWindow::packed(OK.code()).wrapping_sub(CountWindow::packed(FAIL.code()));
        window.totals.fetch_add(delta, Ordering::AcqRel);
        assert_eq!(window.totals(), Totals::default());
    }

    #[test]
    fn largest_count_window_does_not_overflow_its_packed_fields() {
        let window = CountWindow::new(MAX_COUNT_WINDOW);
        for _ in 0..MAX_COUNT_WINDOW + 10 {
            window.record(Sample {
                failed: true,
                slow: true,
            });
        }
        let max = u64::from(MAX_COUNT_WINDOW);
        assert_eq!(
            window.totals(),
            Totals {
                calls: max,
                failed: max,
                slow: max
            }
        );
    }

    #[test]
    fn time_window_drops_buckets_older_than_the_window() {
        let window = TimeWindow::new(3);
        let at = Duration::from_secs;
        window.record(FAIL, at(10));
        window.record(FAIL, at(11));
        window.record(OK, at(12));
        assert_eq!(window.totals(at(12)).calls, 3);
        assert_eq!(window.totals(at(13)).failed, 1);
        assert_eq!(window.totals(at(14)).calls, 1);
        assert_eq!(window.totals(at(100)), Totals::default());
        // A late call from an earlier second lands in the newest bucket.
        assert_eq!(window.record(SLOW, at(50)).slow, 1);
        window.reset();
        assert_eq!(window.totals(at(100)), Totals::default());
        window.record(FAIL, at(101));
        assert_eq!(window.totals(at(103)).failed, 1);
        assert_eq!(window.totals(at(104)).failed, 0);
    }

    #[test]
    fn rates_are_zero_for_an_empty_window() {
        assert_eq!(Totals::default().failure_rate(), 0.0);
        let totals = Totals {
            calls: 4,
            failed: 1,
            slow: 2,
        };
        assert_eq!(totals.failure_rate(), 25.0);
        assert_eq!(totals.slow_rate(), 50.0);
    }

    proptest::proptest! {
        #[test]
        fn count_window_matches_a_model_of_the_last_n_calls(
            size in 1u32..20,
            calls in proptest::collection::vec((0u8..3, proptest::bool::ANY), 0..200),
            reset_at in proptest::option::of(0usize..200),
        ) {
            let window = CountWindow::new(size);
            let mut model: Vec<Sample> = Vec::new();
            for (i, (kind, slow)) in calls.into_iter().enumerate() {
                if reset_at == Some(i) {
                    window.reset();
                    model.clear();
                }
                let sample = Sample { failed: kind == 0, slow };
                window.record(sample);
                model.push(sample);
                let last = &model[model.len().saturating_sub(size as usize)..];
                let expected = Totals {
                    calls: last.len() as u64,
                    failed: last.iter().filter(|s| s.failed).count() as u64,
                    slow: last.iter().filter(|s| s.slow).count() as u64,
                };
                proptest::prop_assert_eq!(window.totals(), expected);
            }
        }

        #[test]
        fn time_window_matches_a_model_of_the_last_n_seconds(
            seconds in 1u32..10,
            calls in proptest::collection::vec((0u64..4, proptest::bool::ANY), 0..100),
        ) {
            let window = TimeWindow::new(seconds);
            let mut now = 0;
            let mut model: Vec<(u64, bool)> = Vec::new();
            for (step, failed) in calls {
                now += step;
                window.record(Sample { failed, slow: false }, Duration::from_secs(now));
                model.push((now, failed));
                let recent: Vec<_> = model
                    .iter()
                    .filter(|(at, _)| at + u64::from(seconds) > now)
                    .collect();
                let totals = window.totals(Duration::from_secs(now));
                proptest::prop_assert_eq!(totals.calls, recent.len() as u64);
                proptest::prop_assert_eq!(
                    totals.failed,
                    recent.iter().filter(|(_, failed)| *failed).count() as u64
                );
            }
        }
    }
}
