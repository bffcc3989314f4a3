//! The live status page (`GET /status`) and the JSON it polls (`GET /v1/status`).
//!
//! The page is one self-contained HTML file — inline CSS and a small script, no external
//! asset, no framework, no build step — embedded in the binary. Every two seconds it reads
//! `/v1/status` and shows, for each provider, its circuit state, health, latency, requests
//! and errors per second and cost; the degradation level with its recent changes; the cache
//! hit rate; the drills running; and a chart of the request and error rates over the last
//! five minutes (the errors clients got, and the failed provider calls that retries and
//! failover hid from them).
//!
//! The history behind the chart is kept in the gateway, in a ring buffer of
//! [`HISTORY_LEN`] samples taken every [`SAMPLE_INTERVAL`] by a background task (started
//! when the gateway is built inside a tokio runtime; it ends with the gateway).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde_json::json;
use tokio::time::Instant;

use crate::stack::Gateway;

/// How often the status history takes a sample.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(2);

/// How many samples the history keeps (five minutes at [`SAMPLE_INTERVAL`]).
pub const HISTORY_LEN: usize = 150;

/// How many level changes the history keeps.
const LEVEL_CHANGES: usize = 50;

/// Samples over which the providers' current rates are averaged (10 s).
const RATE_WINDOW: usize = 5;

/// The status page.
pub(crate) const PAGE: &str = include_str!("status.html");

// ===== counting =====

/// Running totals the status page turns into rates; kept by [`Metrics`](crate::metrics::Metrics)
/// as it records.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    requests: AtomicU64,
    errors: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    // Looked up on every provider call: the metrics' fast-hashed map, and the totals
    // updated under the read guard (no `Arc` to clone).
    // Shared with each provider's kept handles (`ProviderMetrics`); never removed.
    providers: RwLock<crate::metrics::FastMap<String, Arc<ProviderTally>>>,
}

/// One provider's running totals.
#[derive(Debug, Default)]
pub(crate) struct ProviderTally {
    attempts: AtomicU64,
    errors: AtomicU64,
    cost_microdollars: AtomicU64,
}

impl ProviderTally {
    pub(crate) fn attempt(&self, ok: bool) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn cost(&self, microdollars: u64) {
        self.cost_microdollars
            .fetch_add(microdollars, Ordering::Relaxed);
    }

    /// Attempts, failed attempts and cost in micro-dollars so far.
    #[cfg(test)]
    pub(crate) fn totals(&self) -> (u64, u64, u64) {
        (
            self.attempts.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.cost_microdollars.load(Ordering::Relaxed),
        )
    }
}

impl Tally {
    /// A request finished with `status`: 5xx and 429 count as errors.
    pub(crate) fn request(&self, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 || status == 429 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn cache(&self, hit: bool) {
        let counter = if hit {
            &self.cache_hits
        } else {
            &self.cache_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `name`'s totals, created on first use, to keep.
    pub(crate) fn provider(&self, name: &str) -> Arc<ProviderTally> {
        if let Some(tally) = self.providers.read().get(name) {
            return tally.clone();
        }
        self.providers
            .write()
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    fn snapshot(&self, at: Instant, level: usize) -> Snapshot {
        Snapshot {
            at,
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            level,
            providers: self
                .providers
                .read()
                .iter()
                .map(|(name, tally)| {
                    (
                        name.clone(),
                        (
                            tally.attempts.load(Ordering::Relaxed),
                            tally.errors.load(Ordering::Relaxed),
                        ),
                    )
                })
                .collect(),
        }
    }
}

// ===== history =====

/// Running totals at one moment.
#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    requests: u64,
    errors: u64,
    level: usize,
    providers: HashMap<String, (u64, u64)>,
}

impl Snapshot {
    /// Failed provider calls, all providers together (retried or failed over, or not).
    fn provider_errors(&self) -> u64 {
        self.providers.values().map(|(_, errors)| errors).sum()
    }
}

/// A change of the degradation level.
#[derive(Debug, Clone)]
struct LevelMark {
    at: Instant,
    from: String,
    to: String,
    cause: String,
}

/// The gateway's status history.
#[derive(Debug)]
pub(crate) struct Board {
    started: Instant,
    history: Mutex<History>,
}

#[derive(Debug, Default)]
struct History {
    snapshots: VecDeque<Snapshot>,
    levels: VecDeque<LevelMark>,
}

impl Default for Board {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            history: Mutex::default(),
        }
    }
}

impl Board {
    /// Takes a sample of `gateway`'s totals.
    fn sample(&self, gateway: &Gateway) {
        let level = gateway.degradation().level().index();
        let snapshot = gateway.metrics.tally().snapshot(Instant::now(), level);
        let mut history = self.history.lock();
        if history.snapshots.len() >= HISTORY_LEN {
            history.snapshots.pop_front();
        }
        history.snapshots.push_back(snapshot);
    }

    fn level_changed(&self, change: &brace_degrade::LevelChange) {
        let mut history = self.history.lock();
        if history.levels.len() >= LEVEL_CHANGES {
            history.levels.pop_front();
        }
        history.levels.push_back(LevelMark {
            at: Instant::now(),
            from: change.from().name().to_owned(),
            to: change.to().name().to_owned(),
            cause: serde_json::to_value(change.cause())
                .ok()
                .and_then(|cause| cause.as_str().map(str::to_owned))
                .unwrap_or_default(),
        });
    }
}

/// Rate per second of `later - earlier` over `elapsed`.
fn rate(later: u64, earlier: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        later.saturating_sub(earlier) as f64 / secs
    }
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

// ===== the sampler =====

/// The background task that samples the gateway; it ends when the gateway is dropped (or
/// this is).
#[derive(Debug)]
pub(crate) struct Sampler(tokio::task::JoinHandle<()>);

impl Drop for Sampler {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Sampler {
    /// Starts sampling, if there is a runtime to run on; `changes` are the level changes of
    /// the first stack (subscribed before the gateway serves, so that none is missed).
    pub(crate) fn spawn(
        gateway: Weak<Gateway>,
        changes: tokio::sync::broadcast::Receiver<brace_degrade::LevelChange>,
    ) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        Some(Self(runtime.spawn(sample(gateway, changes))))
    }
}

async fn sample(
    weak: Weak<Gateway>,
    first: tokio::sync::broadcast::Receiver<brace_degrade::LevelChange>,
) {
    let mut every = tokio::time::interval(SAMPLE_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut generation = Some(0);
    let mut changes = Some(first);
    loop {
        let change = async {
            match changes.as_mut() {
                Some(receiver) => receiver.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = every.tick() => {
                let Some(gateway) = weak.upgrade() else { return };
                gateway.status.sample(&gateway);
                // A reload may have started a new degradation layer: listen to the one in
                // force.
                let current = gateway.live.load().generation;
                if generation != Some(current) {
                    generation = Some(current);
                    changes = Some(gateway.degradation().subscribe());
                }
            }
            change = change => {
                let Some(gateway) = weak.upgrade() else { return };
                match change {
                    Ok(change) => gateway.status.level_changed(&change),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => changes = None,
                }
            }
        }
    }
}

// ===== the JSON =====

impl Gateway {
    /// `GET /v1/status`: everything the status page shows, in one compact document.
    pub fn status_json(&self) -> serde_json::Value {
        let now = Instant::now();
        let live = self.live.load_full();
        let degrade = live.degrade.handle();
        let level = degrade.level();
        let tally = self.metrics.tally();
        let current = tally.snapshot(now, level.index());
        let history = self.status.history.lock();

        // Rates over the last few samples, up to now.
        let base = history
            .snapshots
            .iter()
            .rev()
            .nth(RATE_WINDOW - 1)
            .or_else(|| history.snapshots.front());
        let since = |snapshot: Option<&Snapshot>| {
            snapshot.map_or(Duration::ZERO, |s| now.saturating_duration_since(s.at))
        };
        let window = since(base);
        let provider_rate = |name: &str| {
            let (attempts, errors) = current.providers.get(name).copied().unwrap_or_default();
            let (then_attempts, then_errors) = base
                .and_then(|b| b.providers.get(name).copied())
                .unwrap_or_default();
            (
                rate(attempts, then_attempts, window),
                rate(errors, then_errors, window),
            )
        };

        let health = self.health();
        let drills = self.chaos.running();
        let providers: Vec<_> = live
            .config
            .providers
            .iter()
            .map(|provider| {
                let h = health.iter().find(|h| *h.name == *provider.name);
                let (rps, eps) = provider_rate(&provider.name);
                let totals = current.providers.get(&provider.name).copied().unwrap_or_default();
                let cost = tally
                    .providers
                    .read()
                    .get(&provider.name)
                    .map_or(0, |t| t.cost_microdollars.load(Ordering::Relaxed));
                let drill = drills
                    .iter()
                    .find(|(switch, _)| switch.name() == provider.name)
                    .map(|(switch, drill)| crate::chaos::drill_json(switch, drill));
                json!({
                    "name": provider.name,
                    "model": provider.model,
                    "priority": provider.priority,
                    "circuit": self.circuit_state(&provider.name).map(brace_circuit::CircuitState::as_str),
                    "healthy": h.is_some_and(|h| h.healthy),
                    "retry_in_s": h.and_then(|h| h.unhealthy_for).map(|d| round(d.as_secs_f64(), 1)),
                    "latency_ms": h.and_then(|h| h.latency_ewma).map(|l| round(l.as_secs_f64() * 1000.0, 1)),
                    "rps": round(rps, 2),
                    "eps": round(eps, 2),
                    "attempts": totals.0,
                    "errors": totals.1,
                    "cost_usd": cost as f64 / 1_000_000.0,
                    "drill": drill,
                })
            })
            .collect();
        let healthy = providers.iter().filter(|p| p["healthy"] == true).count();
        let status = crate::stack::overall_status(healthy, providers.len());

        // The chart: rates between consecutive samples, the last one up to now.
        let mut points: Vec<&Snapshot> = history.snapshots.iter().collect();
        points.push(&current);
        let series: Vec<_> = points
            .windows(2)
            .map(|pair| {
                let elapsed = pair[1].at.saturating_duration_since(pair[0].at);
                json!([
                    round(now.saturating_duration_since(pair[1].at).as_secs_f64(), 1),
                    round(rate(pair[1].requests, pair[0].requests, elapsed), 2),
                    round(rate(pair[1].errors, pair[0].errors, elapsed), 2),
                    pair[1].level,
                    round(
                        rate(
                            pair[1].provider_errors(),
                            pair[0].provider_errors(),
                            elapsed
                        ),
                        2,
                    ),
                ])
            })
            .collect();
        let (hits, misses) = (
            tally.cache_hits.load(Ordering::Relaxed),
            tally.cache_misses.load(Ordering::Relaxed),
        );
        let levels: Vec<_> = history
            .levels
            .iter()
            .rev()
            .map(|mark| {
                json!({
                    "s_ago": round(now.saturating_duration_since(mark.at).as_secs_f64(), 1),
                    "from": mark.from,
                    "to": mark.to,
                    "cause": mark.cause,
                })
            })
            .collect();
        let window_rates = (
            rate(current.requests, base.map_or(0, |b| b.requests), window),
            rate(current.errors, base.map_or(0, |b| b.errors), window),
        );
        json!({
            "uptime_s": round(now.saturating_duration_since(self.status.started).as_secs_f64(), 1),
            "status": status,
            "config": {"hash": live.hash, "generation": live.generation},
            "level": {
                "name": level.name(),
                "index": level.index(),
                "pinned": degrade.is_pinned(),
                "levels": degrade.ladder().levels().iter().map(brace_degrade::Level::name).collect::<Vec<_>>(),
                "history": levels,
            },
            "requests": {
                "total": current.requests,
                "errors": current.errors,
                "rps": round(window_rates.0, 2),
                "eps": round(window_rates.1, 2),
            },
            "cache": {
                "hits": hits,
                "misses": misses,
                "hit_rate": (hits + misses > 0).then(|| round(hits as f64 / (hits + misses) as f64, 4)),
            },
            "providers": providers,
            "drills": drills.iter().map(|(switch, drill)| crate::chaos::drill_json(switch, drill)).collect::<Vec<_>>(),
            "series": {
                "interval_s": SAMPLE_INTERVAL.as_secs_f64(),
                "columns": ["s_ago", "rps", "eps", "level", "provider_eps"],
                "points": series,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second_and_never_negative() {
        assert!((rate(30, 10, Duration::from_secs(4)) - 5.0).abs() < f64::EPSILON);
        assert!(rate(5, 10, Duration::from_secs(1)).abs() < f64::EPSILON);
        assert!(rate(5, 0, Duration::ZERO).abs() < f64::EPSILON);
    }

    #[test]
    fn the_page_is_self_contained() {
        for external in ["src=\"http", "href=\"http", "@import", "<link", "cdn."] {
            assert!(!PAGE.contains(external), "the page loads {external}");
        }
        assert!(PAGE.contains("/v1/status"));
    }
}
