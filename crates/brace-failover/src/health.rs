//! Passive health tracking and the snapshot [`FailoverService::health`] returns.
//!
//! [`FailoverService::health`]: crate::FailoverService::health

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use brace_core::{Outcome, Verdict};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use crate::config::HealthConfig;

/// Names the kind of an error, for the per-kind counters of [`ProviderHealth`].
///
/// The default, [`default_error_kind`], knows brace's own errors and tower's timeout; an LLM
/// gateway passes a function that also knows `LlmError` kinds.
pub type ErrorKindFn = fn(&(dyn Error + 'static)) -> &'static str;

/// Names brace's shared errors (`circuit_open`, `retries_exhausted`, `deadline_exceeded`,
/// `all_providers_failed`) and tower's `timeout`; anything else is `other`.
pub fn default_error_kind(err: &(dyn Error + 'static)) -> &'static str {
    if err.is::<brace_core::CircuitOpen>() {
        "circuit_open"
    } else if err.is::<brace_core::RetriesExhausted>() {
        "retries_exhausted"
    } else if err.is::<brace_core::DeadlineExceeded>() {
        "deadline_exceeded"
    } else if err.is::<brace_core::AllProvidersFailed>() {
        "all_providers_failed"
    } else if err.is::<tower::timeout::error::Elapsed>() {
        "timeout"
    } else {
        "other"
    }
}

/// One provider's health, as [`FailoverService::health`](crate::FailoverService::health)
/// reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderHealth {
    /// The provider's name.
    pub name: Arc<str>,
    /// The model it serves, if set.
    pub model: Option<Arc<str>>,
    /// Its priority (lower is tried first).
    pub priority: u32,
    /// `false` while the provider is skipped.
    pub healthy: bool,
    /// How much longer it is skipped, when unhealthy.
    #[serde(with = "brace_core::duration::option")]
    pub unhealthy_for: Option<Duration>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// How long ago the last failure was.
    #[serde(with = "brace_core::duration::option")]
    pub last_failure_ago: Option<Duration>,
    /// Latency EWMA of completed calls (to commit, for streams).
    #[serde(with = "brace_core::duration::option")]
    pub latency_ewma: Option<Duration>,
    /// Completed calls (cancelled hedges are not counted).
    pub calls: u64,
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that failed against the provider.
    pub failures: u64,
    /// Calls that failed through no fault of the provider (e.g. a bad request).
    pub ignored: u64,
    /// Errors by kind (see [`ErrorKindFn`]).
    pub errors_by_kind: BTreeMap<&'static str, u64>,
    /// Active probes that succeeded.
    pub probe_successes: u64,
    /// Active probes that failed.
    pub probe_failures: u64,
}

/// Health of every provider, shared by the service, its futures and the probe task.
#[derive(Debug)]
pub(crate) struct HealthTable {
    pub(crate) providers: Vec<Health>,
    config: HealthConfig,
    base: Instant,
    error_kind: ErrorKindFn,
    pub(crate) probe_task: Mutex<Option<tokio::task::AbortHandle>>,
}

const NO_SAMPLE: u64 = u64::MAX;

/// One provider's health. Selection reads the atomics; recording takes the lock.
#[derive(Debug)]
pub(crate) struct Health {
    /// Clock reading (see [`HealthTable::now`]) until which the provider is skipped; 0 when
    /// healthy.
    unhealthy_until: AtomicU64,
    /// Latency EWMA in nanoseconds, `NO_SAMPLE` before the first sample.
    latency_ns: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    window: u64,
    window_len: u32,
    last_failure: Option<Instant>,
    calls: u64,
    successes: u64,
    failures: u64,
    ignored: u64,
    errors_by_kind: BTreeMap<&'static str, u64>,
    probe_successes: u64,
    probe_failures: u64,
}

impl HealthTable {
    pub(crate) fn new(count: usize, config: HealthConfig, error_kind: ErrorKindFn) -> Self {
        Self {
            providers: (0..count)
                .map(|_| Health {
                    unhealthy_until: AtomicU64::new(0),
                    latency_ns: AtomicU64::new(NO_SAMPLE),
                    state: Mutex::new(State::default()),
                })
                .collect(),
            config,
            base: Instant::now(),
            error_kind,
            probe_task: Mutex::new(None),
        }
    }

    /// Nanoseconds from the table's creation to `at`, plus one so that 0 can mean
    /// "healthy".
    pub(crate) fn ticks(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// The clock reading at which a provider taken out at `now` comes back (saturating: a
    /// recovery time too large for the clock means "never, short of a probe").
    fn recovery_ends(&self, now: Instant) -> u64 {
        now.checked_add(self.config.recovery_time)
            .map_or(u64::MAX, |at| self.ticks(at))
    }

    /// When the provider's skip ends (0 when healthy): the least-bad provider has the
    /// smallest.
    pub(crate) fn unhealthy_until(&self, index: usize) -> u64 {
        self.providers[index]
            .unhealthy_until
            .load(Ordering::Acquire)
    }

    /// Latency EWMA in nanoseconds; 0 before the first sample, so new providers get tried.
    pub(crate) fn latency_ns(&self, index: usize) -> u64 {
        match self.providers[index].latency_ns.load(Ordering::Relaxed) {
            NO_SAMPLE => 0,
            ns => ns,
        }
    }

    /// Records a completed call.
    pub(crate) fn record(
        &self,
        index: usize,
        outcome: &Outcome,
        latency: Option<Duration>,
        error: Option<&(dyn Error + 'static)>,
    ) {
        let health = &self.providers[index];
        let mut state = health.state.lock();
        state.calls += 1;
        if let Some(err) = error {
            *state
                .errors_by_kind
                .entry((self.error_kind)(err))
                .or_insert(0) += 1;
        }
        match outcome.verdict() {
            Verdict::Ignored => {
                state.ignored += 1;
                return;
            }
            Verdict::Success => {
                state.successes += 1;
                state.consecutive_failures = 0;
                state.push_window(false, self.config.window);
                health.unhealthy_until.store(0, Ordering::Release);
            }
            Verdict::Failure => {
                let now = Instant::now();
                state.failures += 1;
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                state.last_failure = Some(now);
                state.push_window(true, self.config.window);
                if self.trips(&state) {
                    state.window = 0;
                    state.window_len = 0;
                    let until = self.recovery_ends(now);
                    health.unhealthy_until.store(until, Ordering::Release);
                }
            }
        }
        let Some(latency) = latency else {
            return;
        };
        let sample = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX - 1);
        let ewma = match health.latency_ns.load(Ordering::Relaxed) {
            NO_SAMPLE => sample,
            old => {
                let alpha = self.config.latency_alpha.clamp(0.0, 1.0);
                (alpha * sample as f64 + (1.0 - alpha) * old as f64) as u64
            }
        };
        health
            .latency_ns
            .store(ewma.min(u64::MAX - 1), Ordering::Relaxed);
    }

    fn trips(&self, state: &State) -> bool {
        let config = &self.config;
        if config.consecutive_failures > 0
            && state.consecutive_failures >= config.consecutive_failures
        {
            return true;
        }
        match config.failure_rate {
            Some(threshold) if state.window_len >= config.min_calls.max(1) => {
                let failures = state.window.count_ones();
                f64::from(failures) >= threshold * f64::from(state.window_len)
            }
            _ => false,
        }
    }

    /// Records an active probe: a success brings the provider back at once, a failure keeps
    /// an unhealthy provider out for another recovery time (a healthy one is left to real
    /// traffic to judge).
    pub(crate) fn record_probe(&self, index: usize, ok: bool) {
        let health = &self.providers[index];
        let mut state = health.state.lock();
        if ok {
            state.probe_successes += 1;
            state.consecutive_failures = 0;
            state.window = 0;
            state.window_len = 0;
            health.unhealthy_until.store(0, Ordering::Release);
        } else {
            state.probe_failures += 1;
            if health.unhealthy_until.load(Ordering::Acquire) != 0 {
                let until = self.recovery_ends(Instant::now());
                health.unhealthy_until.store(until, Ordering::Release);
            }
        }
    }

    pub(crate) fn snapshot(
        &self,
        index: usize,
        name: &Arc<str>,
        model: Option<&Arc<str>>,
        priority: u32,
    ) -> ProviderHealth {
        let health = &self.providers[index];
        let now = Instant::now();
        let now_ticks = self.ticks(now);
        let until = health.unhealthy_until.load(Ordering::Acquire);
        let state = health.state.lock();
        ProviderHealth {
            name: name.clone(),
            model: model.cloned(),
            priority,
            healthy: until <= now_ticks,
            unhealthy_for: (until > now_ticks).then(|| Duration::from_nanos(until - now_ticks)),
            consecutive_failures: state.consecutive_failures,
            last_failure_ago: state
                .last_failure
                .map(|at| now.saturating_duration_since(at)),
            latency_ewma: match health.latency_ns.load(Ordering::Relaxed) {
                NO_SAMPLE => None,
                ns => Some(Duration::from_nanos(ns)),
            },
            calls: state.calls,
            successes: state.successes,
            failures: state.failures,
            ignored: state.ignored,
            errors_by_kind: state.errors_by_kind.clone(),
            probe_successes: state.probe_successes,
            probe_failures: state.probe_failures,
        }
    }
}

impl Drop for HealthTable {
    fn drop(&mut self) {
        if let Some(task) = self.probe_task.get_mut().take() {
            task.abort();
        }
    }
}

impl State {
    fn push_window(&mut self, failed: bool, size: u32) {
        let size = size.clamp(1, 64);
        let mask = if size == 64 {
            u64::MAX
        } else {
            (1u64 << size) - 1
        };
        self.window = ((self.window << 1) | u64::from(failed)) & mask;
        self.window_len = (self.window_len + 1).min(size);
    }
}
