//! brace's benchmarks, run by hand (never by `cargo test` or CI).
//!
//! - `benches/full_stack.rs` (criterion): the whole stack in-process — degrade → failover
//!   (3 providers) → circuit breaker → retry → timeout over an instant simulated provider —
//!   against the bare provider and a plain `tower::retry` + `tower::timeout` stack.
//! - `src/bin/simserver.rs`: instant simulated providers served over HTTP on `127.0.0.1`,
//!   each printing its address, steerable through `POST /_sim/behavior`.
//! - `src/bin/loadgen.rs`: a loopback load generator with HDR histograms, closed-loop (N
//!   workers) or open-loop at a fixed rate, paced by a thread of its own with
//!   high-resolution sleeps (latency measured from each request's intended send time, so
//!   there is no coordinated omission, and also from its actual send, with the send lag
//!   between the two), printing one JSON object.
//! - `bench/load.sh` (at the repository root): starts the simulated providers, the gateway
//!   and LiteLLM's proxy, and runs the load and chaos benches; `BENCHMARKS.md` has the
//!   results.
//!
//! This library holds what the binaries share: latency summaries ([`Timings`] keeps the three
//! views of an open-loop run: latency from the intended send time, service latency from the
//! actual send, and the generator's send lag), the open loop's schedule ([`intended_time`])
//! and `/proc` sampling.
//!
//! ```
//! let mut histogram = brace_bench::latency_histogram();
//! for micros in [100, 200, 300, 400, 1_000] {
//!     histogram.record(micros).unwrap();
//! }
//! let summary = brace_bench::summarize(&histogram);
//! assert_eq!(summary["count"], 5);
//! assert_eq!(summary["max_us"], 1_000);
//! ```

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::time::Instant;

/// The longest latency a histogram holds: 60 s, in microseconds (longer values saturate).
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// A histogram of latencies in microseconds, from 1 µs to [`MAX_LATENCY_US`], with three
/// significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .expect("the bounds are valid: 1 <= low, high >= 2 * low, 3 significant digits")
}

/// Records `micros` (clamped into the histogram's range).
pub fn record(histogram: &mut Histogram<u64>, micros: u64) {
    histogram.saturating_record(micros.clamp(1, MAX_LATENCY_US));
}

/// `count`, `mean_us`, `p50_us`, `p90_us`, `p99_us`, `p999_us` and `max_us` of a
/// histogram (all 0 when it is empty).
pub fn summarize(histogram: &Histogram<u64>) -> Value {
    if histogram.is_empty() {
        return json!({"count": 0, "mean_us": 0, "p50_us": 0, "p90_us": 0, "p99_us": 0,
                      "p999_us": 0, "max_us": 0});
    }
    json!({
        "count": histogram.len(),
        "mean_us": histogram.mean().round() as u64,
        "p50_us": histogram.value_at_quantile(0.50),
        "p90_us": histogram.value_at_quantile(0.90),
        "p99_us": histogram.value_at_quantile(0.99),
        "p999_us": histogram.value_at_quantile(0.999),
        "max_us": histogram.max(),
    })
}

/// Microseconds from `from` to `to` (0 if `to` is not after `from`; saturating).
pub fn micros_between(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_micros()).unwrap_or(u64::MAX)
}

/// When request `index` (from 0) of an open loop at `rate` requests per second starting at
/// `start` is meant to be sent: `start + index / rate`, computed from `index` directly so
/// rounding does not accumulate over a run. A rate that is not a positive finite number, or
/// a time past what a `Duration` holds, gives `None`.
///
/// ```
/// use std::time::Duration;
/// let start = tokio::time::Instant::now();
/// let t = brace_bench::intended_time(start, 1000.0, 1500);
/// assert_eq!(t, Some(start + Duration::from_millis(1500)));
/// ```
pub fn intended_time(start: Instant, rate: f64, index: u64) -> Option<Instant> {
    if !(rate.is_finite() && rate > 0.0) {
        return None;
    }
    let offset = Duration::try_from_secs_f64(index as f64 / rate).ok()?;
    start.checked_add(offset)
}

/// The timings of one run's measured requests, three ways.
///
/// - `latency`: from each request's *intended* send time to its answer. In an open loop this
///   is the number without coordinated omission: a stall (of the target or of the
///   generator) that delays later requests shows up in it.
/// - `service_latency`: from the moment the request was actually handed to the HTTP client
///   to its answer: what the target took, without the generator's own lateness.
/// - `send_lag`: actual send time minus intended send time, for every measured request
///   (answered or not): how well the generator kept to its schedule.
///
/// Latencies are recorded for successful answers only (as before); lags for all sends.
///
/// ```
/// use std::time::Duration;
/// let mut timings = brace_bench::Timings::new();
/// let intended = tokio::time::Instant::now();
/// let sent = intended + Duration::from_micros(40);
/// timings.record_send(intended, sent);
/// timings.record_answer(intended, sent, sent + Duration::from_micros(900));
/// assert_eq!(timings.latency.max(), 940);
/// assert_eq!(timings.service_latency.max(), 900);
/// assert_eq!(timings.send_lag.max(), 40);
/// ```
#[derive(Debug, Clone)]
pub struct Timings {
    /// From the intended send time to the answer, in microseconds.
    pub latency: Histogram<u64>,
    /// From the actual send time to the answer, in microseconds.
    pub service_latency: Histogram<u64>,
    /// Actual minus intended send time, in microseconds (0 when on time or early).
    pub send_lag: Histogram<u64>,
}

impl Default for Timings {
    fn default() -> Self {
        Self::new()
    }
}

impl Timings {
    /// Empty histograms (see [`latency_histogram`]).
    pub fn new() -> Self {
        Self {
            latency: latency_histogram(),
            service_latency: latency_histogram(),
            send_lag: latency_histogram(),
        }
    }

    /// Records the send lag of a request meant for `intended` and sent at `sent`. A lag
    /// under 1 µs (or a send before its time) is recorded as 0, not clamped up to 1 µs.
    pub fn record_send(&mut self, intended: Instant, sent: Instant) {
        self.send_lag
            .saturating_record(micros_between(intended, sent).min(MAX_LATENCY_US));
    }

    /// Records a successful answer at `answered` to a request meant for `intended` and sent
    /// at `sent`, in both latency histograms.
    pub fn record_answer(&mut self, intended: Instant, sent: Instant, answered: Instant) {
        record(&mut self.latency, micros_between(intended, answered));
        record(&mut self.service_latency, micros_between(sent, answered));
    }

    /// The send-lag summary: [`summarize`]'s fields plus `over_1ms`, the number of requests
    /// sent more than 1 ms after their intended time.
    pub fn send_lag_summary(&self) -> Value {
        let mut summary = summarize(&self.send_lag);
        let over = if self.send_lag.is_empty() {
            0
        } else {
            self.send_lag.count_between(1_001, MAX_LATENCY_US)
        };
        summary["over_1ms"] = json!(over);
        summary
    }
}

/// Reading a process's CPU time and memory from `/proc` (Linux).
pub mod procfs {
    /// User + system CPU time of process `pid`, in clock ticks (`/proc/PID/stat` fields 14
    /// and 15), or `None` if it cannot be read.
    pub fn cpu_ticks(pid: u32) -> Option<u64> {
        parse_stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// User + system ticks from the text of a `/proc/PID/stat` file.
    ///
    /// ```
    /// let stat = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
    /// assert_eq!(brace_bench::procfs::parse_stat_ticks(stat), Some(300));
    /// ```
    pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
        // The command name is in parentheses and may hold spaces and parentheses itself:
        // the fields after the last `)` start at field 3 (the state).
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace();
        let utime: u64 = fields.nth(11)?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some(utime + stime)
    }

    /// The resident set size of process `pid` in KiB (`VmRSS` in `/proc/PID/status`).
    pub fn rss_kib(pid: u32) -> Option<u64> {
        parse_vm_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
    }

    /// `VmRSS` in KiB from the text of a `/proc/PID/status` file.
    ///
    /// ```
    /// let status = "Name:\tgateway\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\n";
    /// assert_eq!(brace_bench::procfs::parse_vm_rss(status), Some(12345));
    /// ```
    pub fn parse_vm_rss(status: &str) -> Option<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
    }

    /// Clock ticks per second (`getconf CLK_TCK`; 100, Linux's usual value, if that fails).
    pub fn ticks_per_second() -> u64 {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_quantiles_follow_the_recorded_latencies() {
        let mut histogram = latency_histogram();
        for micros in 1..=1000 {
            record(&mut histogram, micros);
        }
        let summary = summarize(&histogram);
        assert_eq!(summary["count"], 1000);
        assert_eq!(summary["p50_us"], 500);
        assert_eq!(summary["p99_us"], 990);
        assert_eq!(summary["max_us"], 1000);
    }

    #[test]
    fn latencies_out_of_range_are_clamped_not_dropped() {
        let mut histogram = latency_histogram();
        record(&mut histogram, 0);
        record(&mut histogram, u64::MAX);
        assert_eq!(histogram.len(), 2);
        assert!(histogram.max() >= MAX_LATENCY_US);
    }

    #[test]
    fn service_latency_excludes_the_send_lag_and_latency_includes_it() {
        let mut timings = Timings::new();
        let intended = Instant::now();
        for (lag, service) in [(0, 500), (100, 700), (1_200, 600)] {
            let sent = intended + Duration::from_micros(lag);
            timings.record_send(intended, sent);
            timings.record_answer(intended, sent, sent + Duration::from_micros(service));
        }
        let latency = summarize(&timings.latency);
        let service = summarize(&timings.service_latency);
        assert_eq!(service["max_us"], 700);
        assert_eq!(latency["max_us"], 1_800);
        assert_eq!(latency["p50_us"], 800);
        assert_eq!(service["p50_us"], 600);
        let lag = timings.send_lag_summary();
        assert_eq!(lag["count"], 3);
        assert_eq!(lag["max_us"], 1_200);
        assert_eq!(lag["over_1ms"], 1);
    }

    #[test]
    fn an_on_time_send_is_recorded_as_zero_lag() {
        let mut timings = Timings::new();
        let intended = Instant::now();
        timings.record_send(intended, intended);
        timings.record_send(intended + Duration::from_micros(50), intended);
        assert_eq!(timings.send_lag.len(), 2);
        assert_eq!(timings.send_lag.max(), 0);
        assert_eq!(timings.send_lag_summary()["over_1ms"], 0);
    }

    #[test]
    fn an_empty_send_lag_summary_is_all_zero() {
        let lag = Timings::new().send_lag_summary();
        assert_eq!(lag["count"], 0);
        assert_eq!(lag["p99_us"], 0);
        assert_eq!(lag["over_1ms"], 0);
    }

    #[test]
    fn intended_times_do_not_drift_over_a_long_run() {
        let start = Instant::now();
        // 1/3000 s is not a whole number of nanoseconds: adding it up would drift.
        let last = intended_time(start, 3000.0, 3_000_000).unwrap();
        assert_eq!(last.duration_since(start), Duration::from_secs(1000));
        assert_eq!(intended_time(start, 3000.0, 0), Some(start));
    }

    #[test]
    fn intended_time_rejects_rates_that_are_not_positive() {
        let start = Instant::now();
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(intended_time(start, rate, 1), None);
        }
        assert_eq!(intended_time(start, 1e-300, u64::MAX), None);
    }

    #[test]
    fn stat_lines_without_enough_fields_give_none() {
        assert_eq!(procfs::parse_stat_ticks("1 (x) S 1 2"), None);
        assert_eq!(procfs::parse_stat_ticks("no parenthesis"), None);
        assert_eq!(procfs::parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        assert!(procfs::rss_kib(pid).is_some_and(|kib| kib > 0));
        assert!(procfs::cpu_ticks(pid).is_some());
    }
}
