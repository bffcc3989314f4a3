//! brace's benchmarks, run by hand (never by `cargo test` or CI).
//!
//! - `benches/full_stack.rs` (criterion): the whole stack in-process — degrade → failover
//!   (3 providers) → circuit breaker → retry → timeout over an instant simulated provider —
//!   against the bare provider and a plain `tower::retry` + `tower::timeout` stack.
//! - `src/bin/simserver.rs`: instant simulated providers served over HTTP on `127.0.0.1`,
//!   each printing its address, steerable through `POST /_sim/behavior`.
//! - `src/bin/loadgen.rs`: a loopback load generator with HDR histograms, closed-loop (N
//!   workers) or open-loop at a fixed rate (latency measured from each request's intended
//!   send time, so there is no coordinated omission), printing one JSON object.
//! - `bench/load.sh` (at the repository root): starts the simulated providers, the gateway
//!   and LiteLLM's proxy, and runs the load and chaos benches; `BENCHMARKS.md` has the
//!   results.
//!
//! This library holds what the binaries share: latency summaries and `/proc` sampling.
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

use hdrhistogram::Histogram;
use serde_json::{Value, json};

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
