//! A loopback load generator for OpenAI-compatible chat endpoints, with HDR histograms.
//!
//! - `--mode closed --concurrency N`: N workers, each sending its next request as soon as
//!   the previous one is answered; latency is measured from each send.
//! - `--mode open --rate R`: requests are scheduled at fixed times (`start + i / R`) whatever
//!   the answers do, and latency is measured from each request's *intended* send time, so a
//!   stall shows up in the percentiles instead of silently lowering the rate (no coordinated
//!   omission). `--max-in-flight` bounds the requests outstanding; a request that would go
//!   over it is counted as `dropped`.
//!
//! Open-loop pacing: tokio's timer has millisecond granularity, so `sleep_until` would send
//! each request 0–1 ms late and the requests in bursts at each millisecond tick. Instead a
//! dedicated pacing thread (from tokio's blocking pool) sleeps with `std::thread::sleep`
//! (high-resolution timers: tens of microseconds late) until each intended time and then
//! hands the request to the runtime's workers; it never spins. Each request's actual send
//! time is taken when a worker starts it, so the output has, besides `latency` (from the
//! intended time), `service_latency` (from the actual send) and `send_lag` (actual −
//! intended, with `over_1ms`, the number of requests more than 1 ms late): a reader can see
//! whether the generator kept to its schedule. In the closed loop the two latencies are the
//! same and `send_lag` is `null`.
//!
//! Every run is bounded by `--duration` (and `--max-requests`), each request by `--timeout`.
//! With `--watch-pid` the CPU time and resident memory of another process (the gateway under
//! test) are sampled; with several pids (`--watch-pid 10,11`: nginx's master and worker) their
//! sum. The result is one JSON object on stdout.
//!
//! `loadgen --url http://127.0.0.1:8080/v1/chat/completions --mode open --rate 2000 --duration 10`

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brace_bench::{Timings, intended_time, procfs, summarize};
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};
use tokio::time::Instant;

/// Closed- or open-loop load against a chat completions endpoint on loopback.
#[derive(Debug, Parser)]
#[command(about, args_override_self = true)]
struct Args {
    /// The endpoint, e.g. `http://127.0.0.1:8080/v1/chat/completions` (loopback only).
    #[arg(long)]
    url: String,
    /// Closed loop (N workers) or open loop (fixed rate).
    #[arg(long, value_enum, default_value_t = Mode::Closed)]
    mode: Mode,
    /// Closed loop: the number of workers.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Open loop: requests per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Open loop: the most requests outstanding at once; more are counted as dropped.
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring (not recorded).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Stop after this many requests (warm-up included).
    #[arg(long, default_value_t = 10_000_000)]
    max_requests: u64,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Ask for a streamed answer (`"stream": true`) and read the stream to its end.
    #[arg(long)]
    stream: bool,
    /// The `model` field of the requests.
    #[arg(long, default_value = "sim-model")]
    model: String,
    /// Extra request headers, `Name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Processes whose CPU time and resident memory to sample during the measured load
    /// (comma-separated or repeated: nginx's master and worker are summed as one server).
    #[arg(long = "watch-pid", value_delimiter = ',')]
    watch_pids: Vec<u32>,
    /// A label copied into the output.
    #[arg(long, default_value = "")]
    label: String,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Closed,
    Open,
}

/// What the measured requests did.
#[derive(Debug)]
struct Tally {
    timings: Timings,
    ok: u64,
    errors: BTreeMap<String, u64>,
    attempts_sum: u64,
    attempts_seen: u64,
    attempts_max: u64,
}

impl Tally {
    fn new() -> Self {
        Self {
            timings: Timings::new(),
            ok: 0,
            errors: BTreeMap::new(),
            attempts_sum: 0,
            attempts_seen: 0,
            attempts_max: 0,
        }
    }
}

/// One request's result.
#[derive(Debug)]
struct Answer {
    error: Option<String>,
    attempts: Option<u64>,
}

#[derive(Debug, Clone)]
struct Target {
    client: reqwest::Client,
    url: String,
    body: Arc<str>,
    stream: bool,
    headers: reqwest::header::HeaderMap,
}

impl Target {
    async fn send(&self) -> Answer {
        let sent = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.body.to_string())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(err) => {
                return Answer {
                    error: Some(transport_error(&err)),
                    attempts: None,
                };
            }
        };
        let status = response.status();
        let attempts = response
            .headers()
            .get("x-brace-attempts")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = response.bytes().await;
        let error = match body {
            Err(err) => Some(transport_error(&err)),
            Ok(_) if !status.is_success() => Some(format!("status {}", status.as_u16())),
            Ok(body) if self.stream && !ends_with_done(&body) => {
                Some("stream without [DONE]".to_owned())
            }
            Ok(_) => None,
        };
        Answer { error, attempts }
    }
}

fn ends_with_done(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    text.trim_end().ends_with("[DONE]")
}

fn transport_error(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timeout".to_owned()
    } else if err.is_connect() {
        "connect".to_owned()
    } else if err.is_body() || err.is_decode() {
        "body".to_owned()
    } else {
        "transport".to_owned()
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Err(message) = check(&args) {
        eprintln!("error: {message}");
        return std::process::ExitCode::from(2);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(report) => {
            println!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn check(args: &Args) -> Result<(), String> {
    let url = reqwest::Url::parse(&args.url).map_err(|err| format!("--url: {err}"))?;
    let host = url.host_str().unwrap_or("");
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(format!("--url must be on loopback, not {url}"));
    }
    let positive = |value: f64, name: &str| {
        if value.is_finite() && value > 0.0 && value < 1e7 {
            Ok(())
        } else {
            Err(format!("{name} must be a positive number"))
        }
    };
    positive(args.duration, "--duration")?;
    positive(args.timeout, "--timeout")?;
    positive(args.rate, "--rate")?;
    if !(args.warmup.is_finite() && (0.0..1e7).contains(&args.warmup)) {
        return Err("--warmup must be zero or more seconds".into());
    }
    if args.concurrency == 0 || args.concurrency > 100_000 {
        return Err("--concurrency must be from 1 to 100000".into());
    }
    Ok(())
}

/// CPU and memory samples of the watched process.
#[derive(Debug, Default)]
struct Watch {
    ticks_start: Option<u64>,
    rss_start_kib: Option<u64>,
    rss_peak_kib: u64,
}

/// The summed CPU ticks of `pids` (`None` if one of them cannot be read).
fn cpu_ticks(pids: &[u32]) -> Option<u64> {
    (!pids.is_empty()).then_some(())?;
    pids.iter().map(|&pid| procfs::cpu_ticks(pid)).sum()
}

/// The summed resident memory of `pids` in KiB (`None` if one of them cannot be read).
fn rss_kib(pids: &[u32]) -> Option<u64> {
    (!pids.is_empty()).then_some(())?;
    pids.iter().map(|&pid| procfs::rss_kib(pid)).sum()
}

fn sample_rss(pids: &[u32], watch: &Mutex<Watch>) {
    if let Some(kib) = rss_kib(pids) {
        let mut watch = watch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        watch.rss_peak_kib = watch.rss_peak_kib.max(kib);
    }
}

async fn run(args: &Args) -> Result<Value, String> {
    let timeout = Duration::from_secs_f64(args.timeout);
    let mut headers = reqwest::header::HeaderMap::new();
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("--header `{header}`: expected `Name: value`"))?;
        let name = reqwest::header::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|err| format!("--header `{name}`: {err}"))?;
        let value = reqwest::header::HeaderValue::from_str(value.trim())
            .map_err(|err| format!("--header value: {err}"))?;
        headers.insert(name, value);
    }
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(usize::MAX)
        .http1_only()
        .no_proxy()
        .build()
        .map_err(|err| format!("cannot build the HTTP client: {err}"))?;
    let body = json!({
        "model": args.model,
        "stream": args.stream,
        "messages": [{"role": "user", "content": "Hello there"}],
    })
    .to_string();
    let target = Arc::new(Target {
        client,
        url: args.url.clone(),
        body: body.into(),
        stream: args.stream,
        headers,
    });

    let tally = Arc::new(Mutex::new(Tally::new()));
    let watch = Arc::new(Mutex::new(Watch::default()));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);

    // Samples the watched process: CPU ticks when measuring starts, RSS every 100 ms.
    let sampler = {
        let watch = watch.clone();
        let pids = args.watch_pids.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from).await;
            {
                let mut w = watch
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                w.ticks_start = cpu_ticks(&pids);
                w.rss_start_kib = rss_kib(&pids);
            }
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while Instant::now() < end {
                tick.tick().await;
                sample_rss(&pids, &watch);
            }
        })
    };

    let (sent, dropped) = match args.mode {
        Mode::Closed => closed_loop(args, &target, &tally, measure_from, end).await,
        Mode::Open => open_loop(args, &target, &tally, start, measure_from, end).await,
    };
    let finished = Instant::now();
    let ticks_end = cpu_ticks(&args.watch_pids);
    sample_rss(&args.watch_pids, &watch);
    sampler.abort();

    let measured = finished
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    let tally = tally
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let watch = watch
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let errors: u64 = tally.errors.values().sum();
    let answered = tally.ok + errors;
    let gateway = args.watch_pids.first().map(|&pid| {
        let cpu_seconds = match (watch.ticks_start, ticks_end) {
            (Some(a), Some(b)) => {
                Some(b.saturating_sub(a) as f64 / procfs::ticks_per_second() as f64)
            }
            _ => None,
        };
        json!({
            "pid": pid,
            "pids": args.watch_pids,
            "cpu_seconds": cpu_seconds,
            "cpu_percent_of_one_core": cpu_seconds.map(|s| 100.0 * s / measured.max(1e-9)),
            "rss_start_kib": watch.rss_start_kib,
            "rss_peak_kib": watch.rss_peak_kib,
        })
    });
    Ok(json!({
        "label": args.label,
        "url": args.url,
        "mode": match args.mode { Mode::Closed => "closed", Mode::Open => "open" },
        "stream": args.stream,
        "target_rate": (args.mode == Mode::Open).then_some(args.rate),
        "concurrency": (args.mode == Mode::Closed).then_some(args.concurrency),
        "measured_seconds": measured,
        "sent_total": sent,
        "dropped": dropped,
        "answered": answered,
        "ok": tally.ok,
        "errors": errors,
        "error_kinds": tally.errors,
        "success_rate": if answered == 0 { 0.0 } else { tally.ok as f64 / answered as f64 },
        "throughput_rps": tally.ok as f64 / measured.max(1e-9),
        "latency": summarize(&tally.timings.latency),
        "service_latency": summarize(&tally.timings.service_latency),
        "send_lag": (args.mode == Mode::Open).then(|| tally.timings.send_lag_summary()),
        "attempts": {
            "seen": tally.attempts_seen,
            "mean": if tally.attempts_seen == 0 { None } else {
                Some(tally.attempts_sum as f64 / tally.attempts_seen as f64)
            },
            "max": tally.attempts_max,
        },
        "watched": gateway,
    }))
}

/// Records one answer if its request was meant to be sent at or after `measure_from`;
/// `intended` is when it was meant to be sent, `sent_at` when it actually was (the same in
/// the closed loop).
fn account(
    tally: &Mutex<Tally>,
    answer: &Answer,
    intended: Instant,
    sent_at: Instant,
    measure_from: Instant,
) {
    if intended < measure_from {
        return;
    }
    let answered = Instant::now();
    let mut tally = tally
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tally.timings.record_send(intended, sent_at);
    if let Some(attempts) = answer.attempts {
        tally.attempts_seen += 1;
        tally.attempts_sum += attempts;
        tally.attempts_max = tally.attempts_max.max(attempts);
    }
    match &answer.error {
        None => {
            tally.ok += 1;
            tally.timings.record_answer(intended, sent_at, answered);
        }
        Some(kind) => *tally.errors.entry(kind.clone()).or_default() += 1,
    }
}

/// N workers, each sending its next request when the previous one is answered, until `end`.
async fn closed_loop(
    args: &Args,
    target: &Arc<Target>,
    tally: &Arc<Mutex<Tally>>,
    measure_from: Instant,
    end: Instant,
) -> (u64, u64) {
    let budget = Arc::new(std::sync::atomic::AtomicU64::new(args.max_requests));
    let mut workers = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        let target = target.clone();
        let tally = tally.clone();
        let budget = budget.clone();
        workers.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < end
                && budget
                    .fetch_update(
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                        |left| left.checked_sub(1),
                    )
                    .is_ok()
            {
                let sent_at = Instant::now();
                let answer = target.send().await;
                account(&tally, &answer, sent_at, sent_at, measure_from);
                sent += 1;
            }
            sent
        }));
    }
    let mut sent = 0;
    for worker in workers {
        sent += worker.await.unwrap_or(0);
    }
    (sent, 0)
}

/// Requests at fixed intended times `start + i / rate` until `end`, paced by a dedicated
/// thread (see the crate docs); each latency is measured from its intended time and from its
/// actual send. Waits for the outstanding requests (each bounded by the timeout).
async fn open_loop(
    args: &Args,
    target: &Arc<Target>,
    tally: &Arc<Mutex<Tally>>,
    start: Instant,
    measure_from: Instant,
    end: Instant,
) -> (u64, u64) {
    let pacer = Pacer {
        runtime: tokio::runtime::Handle::current(),
        target: target.clone(),
        tally: tally.clone(),
        limit: Arc::new(tokio::sync::Semaphore::new(args.max_in_flight.max(1))),
        rate: args.rate,
        max_requests: args.max_requests,
        start,
        measure_from,
        end,
    };
    let Ok((sent, dropped, mut tasks)) = tokio::task::spawn_blocking(move || pacer.run()).await
    else {
        return (0, 0);
    };
    let drain = Duration::from_secs_f64(args.timeout) + Duration::from_secs(1);
    let _ = tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    (sent, dropped)
}

/// The open loop's pacing thread: what it needs to start requests on the runtime.
#[derive(Debug)]
struct Pacer {
    runtime: tokio::runtime::Handle,
    target: Arc<Target>,
    tally: Arc<Mutex<Tally>>,
    limit: Arc<tokio::sync::Semaphore>,
    rate: f64,
    max_requests: u64,
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

impl Pacer {
    /// Runs on a thread of its own (it blocks): sleeps until each intended time, then spawns
    /// the request on the runtime. A request whose time has already come (the thread woke
    /// late, or the rate is above what one wake-up per request allows) goes out at once.
    /// Returns the requests sent and dropped and the set of request tasks.
    fn run(self) -> (u64, u64, tokio::task::JoinSet<()>) {
        let mut tasks = tokio::task::JoinSet::new();
        let mut sent = 0u64;
        let mut dropped = 0u64;
        for index in 0..self.max_requests {
            let Some(intended) = intended_time(self.start, self.rate, index) else {
                break;
            };
            if intended >= self.end {
                break;
            }
            // `std::thread::sleep` uses the kernel's high-resolution timers (nanosleep): it
            // wakes tens of microseconds late, where tokio's timer wheel rounds up to the
            // next millisecond.
            let wait = intended.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            let Ok(permit) = self.limit.clone().try_acquire_owned() else {
                if intended >= self.measure_from {
                    dropped += 1;
                }
                continue;
            };
            let target = self.target.clone();
            let tally = self.tally.clone();
            let measure_from = self.measure_from;
            sent += 1;
            tasks.spawn_on(
                async move {
                    let sent_at = Instant::now();
                    let answer = target.send().await;
                    account(&tally, &answer, intended, sent_at, measure_from);
                    drop(permit);
                },
                &self.runtime,
            );
            // Reap finished tasks so the set stays small.
            while tasks.try_join_next().is_some() {}
        }
        (sent, dropped, tasks)
    }
}
