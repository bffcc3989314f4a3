//! Hedging: when to send a second request, and the budget that bounds how often.

use std::fmt;
use std::time::Duration;

use brace_core::budget::Budget;
use parking_lot::Mutex;

use crate::config::HedgeConfig;

/// Recent latencies, to hedge after a percentile of them.
const SAMPLES: usize = 256;
/// The percentile is recomputed after this many new samples, not on every request.
const RECOMPUTE_EVERY: u32 = 16;

pub(crate) struct Hedging {
    config: HedgeConfig,
    budget: Budget,
    latencies: Mutex<Latencies>,
}

struct Latencies {
    ring: Vec<Duration>,
    next: usize,
    since_recompute: u32,
    threshold: Option<Duration>,
}

impl Hedging {
    pub(crate) fn new(config: HedgeConfig) -> Self {
        // Out-of-range values are clamped by the budget.
        let budget = Budget::new(
            config.budget_ttl,
            config.budget_ratio,
            config.budget_min_per_sec,
        );
        Self {
            config,
            budget,
            latencies: Mutex::new(Latencies {
                ring: Vec::with_capacity(SAMPLES),
                next: 0,
                since_recompute: 0,
                threshold: None,
            }),
        }
    }

    /// Counts a request towards the budget.
    pub(crate) fn deposit(&self) {
        self.budget.deposit();
    }

    /// Takes a hedge from the budget, if there is one left.
    pub(crate) fn withdraw(&self) -> bool {
        self.budget.withdraw()
    }

    /// How long to wait before hedging, or `None` to not hedge (not enough samples yet).
    pub(crate) fn delay(&self) -> Option<Duration> {
        if let Some(delay) = self.config.delay {
            return Some(delay);
        }
        self.latencies.lock().threshold
    }

    /// Records the latency of a successful call.
    pub(crate) fn record(&self, latency: Duration) {
        if self.config.delay.is_some() {
            return;
        }
        let mut latencies = self.latencies.lock();
        let latencies = &mut *latencies;
        if latencies.ring.len() < SAMPLES {
            latencies.ring.push(latency);
        } else {
            latencies.ring[latencies.next] = latency;
        }
        latencies.next = (latencies.next + 1) % SAMPLES;
        latencies.since_recompute += 1;
        let enough = latencies.ring.len() >= self.config.min_samples.max(1) as usize;
        if enough && (latencies.threshold.is_none() || latencies.since_recompute >= RECOMPUTE_EVERY)
        {
            latencies.since_recompute = 0;
            let mut sorted = latencies.ring.clone();
            sorted.sort_unstable();
            let rank = (self.config.percentile.clamp(0.0, 1.0) * (sorted.len() - 1) as f64).round();
            latencies.threshold = sorted.get(rank as usize).copied();
        }
    }
}

impl fmt::Debug for Hedging {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedging")
            .field("config", &self.config)
            .field("threshold", &self.latencies.lock().threshold)
            .finish_non_exhaustive()
    }
}
