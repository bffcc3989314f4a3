//! Prometheus metrics and log set-up.
//!
//! The gateway records through the [`metrics`] facade and renders `/metrics` itself from a
//! process-wide Prometheus recorder (installed once; several gateways in one process share
//! it, which is what tests do).

use std::collections::HashMap as StdHashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use parking_lot::{MappedRwLockReadGuard, RwLock, RwLockReadGuard};

use brace_llm::{LlmError, Usage};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// `brace_attempts_per_request` counts attempts, not seconds: one bucket per small count,
/// then Fibonacci steps.
const ATTEMPT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0];

fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .ok()?
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("brace_attempts_per_request".into()),
                    ATTEMPT_BUCKETS,
                )
                .ok()?;
            // Another recorder may already be installed by the embedding application; then
            // `/metrics` renders nothing and the application's recorder gets the data.
            builder.install_recorder().ok()
        })
        .as_ref()
}

/// The gateway's metrics.
///
/// Recording goes through handles registered once per label set and kept here: the
/// `metrics` macros build a key (allocating its labels) and look it up in the registry on
/// every call, which cost more than the whole resilience stack per request.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    // One shared allocation: a clone (each provider stack holds several) is one
    // reference-count update.
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    handles: Handles,
    tally: crate::status::Tally,
}

/// Registered counters and histograms, by metric name and label values.
#[derive(Debug, Default)]
struct Handles {
    counters: Memo<Counter>,
    histograms: Memo<Histogram>,
    /// `brace_requests_total` by endpoint and status (a number, kept apart so that looking
    /// it up needs no string).
    requests: RwLock<HashMap<(&'static str, u16), Counter>>,
    /// The metrics without labels every request records, kept once made (each made on first
    /// use, as the named lookups make them).
    attempts_per_request: OnceLock<Histogram>,
    retried: OnceLock<Counter>,
    cache_hits: OnceLock<Counter>,
    cache_misses: OnceLock<Counter>,
}

/// Handles by metric name and up to two label values, found without allocating once
/// created.
struct Memo<T> {
    map: RwLock<HashMap<&'static str, ByLabels<T>>>,
}

/// The memo's maps. Their keys are metric names and label values the gateway chooses
/// (provider and level names from its configuration, fixed outcome names), never input
/// from a request, so a fast non-keyed hash is safe here; SipHash cost more per request
/// than the rest of the lookup.
type HashMap<K, V> = StdHashMap<K, V, BuildHasherDefault<Fnv>>;

/// The same fast map for other per-request lookups keyed by configured names (the status
/// page's per-provider totals).
pub(crate) type FastMap<K, V> = HashMap<K, V>;

/// FNV-1a, 64-bit.
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Handles by the first label value, then the second.
type ByLabels<T> = HashMap<Box<str>, HashMap<Box<str>, T>>;

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Self {
            map: RwLock::default(),
        }
    }
}

impl<T> fmt::Debug for Memo<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memo")
            .field("metrics", &self.map.read().len())
            .finish()
    }
}

impl<T: Clone> Memo<T> {
    /// The handle of `metric` with label values `a` and `b` (`""` when unused), registered
    /// by `register` the first time. Once registered it is lent under the read lock, not
    /// cloned: a clone and its drop are two reference-count updates per metric per request,
    /// on counts every thread shares.
    fn get(
        &self,
        metric: &'static str,
        a: &str,
        b: &str,
        register: impl FnOnce() -> T,
    ) -> Handle<'_, T> {
        lend(
            &self.map,
            |map| {
                map.get(metric)
                    .and_then(|by_a| by_a.get(a))
                    .and_then(|by_b| by_b.get(b))
            },
            |map| {
                map.entry(metric)
                    .or_default()
                    .entry(a.into())
                    .or_default()
                    .entry(b.into())
                    .or_insert_with(register)
            },
        )
    }
}

/// The handle `find` finds under `lock`'s read lock, lent; else the one `insert` puts in
/// (registering it the first time) under the write lock, copied.
fn lend<M, T: Clone>(
    lock: &RwLock<M>,
    find: impl FnOnce(&M) -> Option<&T>,
    insert: impl FnOnce(&mut M) -> &mut T,
) -> Handle<'_, T> {
    match RwLockReadGuard::try_map(lock.read(), find) {
        Ok(handle) => Handle::Lent(handle),
        Err(unlocked) => {
            // The read lock goes before the write lock is taken.
            drop(unlocked);
            Handle::Owned(insert(&mut lock.write()).clone())
        }
    }
}

/// A metric handle from a [`Memo`]: lent under its read lock (held until the end of the
/// statement that used it), or a copy the first time, when it was registered.
enum Handle<'a, T> {
    Lent(MappedRwLockReadGuard<'a, T>),
    Owned(T),
}

impl<T> std::ops::Deref for Handle<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        match self {
            Self::Lent(handle) => handle,
            Self::Owned(handle) => handle,
        }
    }
}

impl Metrics {
    /// Installs the Prometheus recorder (once per process) and returns the recorder facade.
    pub fn new() -> Self {
        let _ = handle();
        Self::default()
    }

    fn counter(
        &self,
        metric: &'static str,
        a: &str,
        b: &str,
        register: impl FnOnce() -> Counter,
    ) -> Handle<'_, Counter> {
        self.shared.handles.counters.get(metric, a, b, register)
    }

    fn histogram(
        &self,
        metric: &'static str,
        a: &str,
        register: impl FnOnce() -> Histogram,
    ) -> Handle<'_, Histogram> {
        self.shared.handles.histograms.get(metric, a, "", register)
    }

    /// The running totals behind the status page.
    pub(crate) fn tally(&self) -> &crate::status::Tally {
        &self.shared.tally
    }

    /// A request to `endpoint` finished with `status` after `elapsed`.
    pub fn request(&self, endpoint: &'static str, status: u16, elapsed: Duration) {
        self.shared.tally.request(status);
        lend(
            &self.shared.handles.requests,
            |requests| requests.get(&(endpoint, status)),
            |requests| {
                requests.entry((endpoint, status)).or_insert_with(|| {
                    metrics::counter!("brace_requests_total", "endpoint" => endpoint, "status" => status.to_string())
                })
            },
        )
        .increment(1);
        self.histogram(
            "brace_request_duration_seconds",
            endpoint,
            || metrics::histogram!("brace_request_duration_seconds", "endpoint" => endpoint),
        )
        .record(elapsed.as_secs_f64());
    }

    /// One attempt at `provider` finished with `outcome` (`ok` or an error kind). The
    /// gateway's own stacks record through each provider's kept handles
    /// (`ProviderMetrics`); this finds them by name on every call.
    pub fn attempt(&self, provider: &str, outcome: &'static str, elapsed: Duration) {
        self.provider(provider.into(), None)
            .attempt(outcome, elapsed);
    }

    fn attempts_counter(&self, provider: &str, outcome: &'static str) -> Handle<'_, Counter> {
        self.counter("brace_provider_attempts_total", provider, outcome, || {
            metrics::counter!("brace_provider_attempts_total", "provider" => provider.to_owned(), "outcome" => outcome)
        })
    }

    fn latency_histogram(&self, provider: &str) -> Handle<'_, Histogram> {
        self.histogram("brace_provider_latency_seconds", provider, || {
            metrics::histogram!("brace_provider_latency_seconds", "provider" => provider.to_owned())
        })
    }

    /// `provider`'s handles for what its attempts record, each looked up the first time it
    /// is used and kept (see [`ProviderMetrics`]).
    pub(crate) fn provider(
        &self,
        provider: Arc<str>,
        price: Option<crate::config::Price>,
    ) -> ProviderMetrics {
        ProviderMetrics(Arc::new(ProviderHandles {
            metrics: self.clone(),
            provider,
            price,
            ok: OnceLock::new(),
            latency: OnceLock::new(),
            tokens: [OnceLock::new(), OnceLock::new()],
            cost: OnceLock::new(),
            tally: OnceLock::new(),
        }))
    }

    /// A request needed `attempts` attempts in all; more than one means it was retried or
    /// failed over.
    pub fn attempts(&self, attempts: u32) {
        let handles = &self.shared.handles;
        handles
            .attempts_per_request
            .get_or_init(|| metrics::histogram!("brace_attempts_per_request"))
            .record(f64::from(attempts));
        if attempts > 1 {
            handles
                .retried
                .get_or_init(|| metrics::counter!("brace_requests_with_failover_or_retry_total"))
                .increment(1);
        }
    }

    /// A request was served by `provider` (from cache or not).
    pub fn served(&self, provider: &str, level: &str, cache_hit: bool) {
        self.counter("brace_served_total", provider, level, || {
            metrics::counter!("brace_served_total", "provider" => provider.to_owned(), "level" => level.to_owned())
        })
        .increment(1);
        self.shared.tally.cache(cache_hit);
        let handles = &self.shared.handles;
        let (kept, name) = if cache_hit {
            (&handles.cache_hits, "brace_cache_hits_total")
        } else {
            (&handles.cache_misses, "brace_cache_misses_total")
        };
        kept.get_or_init(|| metrics::counter!(name)).increment(1);
    }

    /// Tokens used at `provider`, and their cost if priced (per million tokens); as
    /// [`attempt`](Self::attempt), by name.
    pub fn tokens(&self, provider: &str, usage: &Usage, price: Option<crate::config::Price>) {
        self.provider(provider.into(), price).tokens(usage);
    }

    fn tokens_counter(&self, provider: &str, direction: &'static str) -> Handle<'_, Counter> {
        self.counter("brace_tokens_total", provider, direction, || {
            metrics::counter!("brace_tokens_total", "provider" => provider.to_owned(), "direction" => direction)
        })
    }

    fn cost_counter(&self, provider: &str) -> Handle<'_, Counter> {
        self.counter("brace_cost_microdollars_total", provider, "", || {
            metrics::counter!("brace_cost_microdollars_total", "provider" => provider.to_owned())
        })
    }

    /// Time to the first streamed token at `provider`.
    pub fn first_token(&self, provider: &str, elapsed: Duration) {
        self.histogram(
            "brace_ttft_seconds",
            provider,
            || metrics::histogram!("brace_ttft_seconds", "provider" => provider.to_owned()),
        )
        .record(elapsed.as_secs_f64());
    }

    /// A stream from `provider` ended, cleanly or with an error.
    pub fn stream_ended(&self, provider: &str, error: Option<&LlmError>) {
        self.stream_outcome(
            provider,
            error.map_or("complete", |err| err.kind().as_str()),
        );
    }

    /// A stream from `provider` ended with `outcome`: `complete`, the error kind that ended
    /// it, or `cancelled` when it was dropped before its end.
    pub fn stream_outcome(&self, provider: &str, outcome: &'static str) {
        self.counter("brace_streams_total", provider, outcome, || {
            metrics::counter!("brace_streams_total", "provider" => provider.to_owned(), "outcome" => outcome)
        })
        .increment(1);
    }

    /// A broken stream from `broken` was handed to `target` to continue, `how` (`prefill`
    /// or `verified_restart`); `started` says whether the continuation got going.
    pub fn continuation(&self, broken: &str, target: &str, how: &'static str, started: bool) {
        metrics::counter!(
            "brace_stream_continuations_total",
            "broken" => broken.to_owned(),
            "target" => target.to_owned(),
            "how" => how,
            "outcome" => if started { "started" } else { "failed" },
        )
        .increment(1);
    }

    /// A request was shed at a limit: `scope` is `gateway` (`server.max_in_flight`) or the
    /// provider whose bulkhead was full.
    pub fn shed(&self, scope: &str) {
        self.counter(
            "brace_shed_total",
            scope,
            "",
            || metrics::counter!("brace_shed_total", "scope" => scope.to_owned()),
        )
        .increment(1);
    }

    /// A request with client key `key` was answered with `status`.
    pub fn client_request(&self, key: &str, status: http::StatusCode) {
        let status = status.as_str();
        self.counter("brace_client_requests_total", key, status, || {
            metrics::counter!("brace_client_requests_total", "key" => key.to_owned(), "status" => status.to_owned())
        })
        .increment(1);
    }

    /// A data-plane request was refused for its key: `status` 401 (missing or unknown key)
    /// or 429 (over the key's rate).
    pub fn auth_refused(&self, status: http::StatusCode) {
        let status = status.as_str();
        self.counter(
            "brace_auth_refused_total",
            status,
            "",
            || metrics::counter!("brace_auth_refused_total", "status" => status.to_owned()),
        )
        .increment(1);
    }

    /// Sets the number of open client connections.
    pub fn open_connections(&self, open: usize) {
        metrics::gauge!("brace_connections_open").set(open as f64);
    }

    /// A client connection was refused because `server.max_connections` were open.
    pub fn connection_refused(&self) {
        self.counter("brace_connections_refused_total", "", "", || {
            metrics::counter!("brace_connections_refused_total")
        })
        .increment(1);
    }

    /// Sets a provider's circuit state gauge (0 closed, 1 half-open, 2 open, 3 other).
    pub fn circuit_state(&self, provider: &str, state: f64) {
        metrics::gauge!("brace_circuit_state", "provider" => provider.to_owned()).set(state);
    }

    /// Sets `brace_state_store_up` (1 while the state store answers; an in-memory store is
    /// always up).
    pub fn state_store_up(&self, kind: &'static str, up: bool) {
        metrics::gauge!("brace_state_store_up", "store" => kind).set(if up { 1.0 } else { 0.0 });
    }

    /// A call was refused by `provider`'s rate limit (`quota`: `requests_per_minute` or
    /// `tokens_per_minute`) and moved on.
    pub fn rate_limited(&self, provider: &str, quota: &'static str) {
        metrics::counter!("brace_rate_limited_total", "provider" => provider.to_owned(), "quota" => quota)
            .increment(1);
    }

    /// Sets the degradation level gauge (0 = full).
    pub fn degradation_level(&self, index: usize) {
        metrics::gauge!("brace_degradation_level").set(index as f64);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        handle().map_or_else(String::new, |handle| {
            handle.run_upkeep();
            handle.render()
        })
    }

    /// Folds the histogram samples recorded since the last call into their buckets.
    ///
    /// The recorder keeps every sample until then: without a scrape of `/metrics` or a call
    /// to this, memory grows with every request. [`serve`](crate::serve) calls it every
    /// [`UPKEEP_INTERVAL`].
    pub fn run_upkeep(&self) {
        if let Some(handle) = handle() {
            handle.run_upkeep();
        }
    }
}

/// How often [`serve`](crate::serve) runs [`Metrics::run_upkeep`].
pub const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Sets up logs on stdout: `RUST_LOG` or `info` (`error` for the demo), as text or
/// JSON lines. Text logs are coloured only when stdout is a terminal and `NO_COLOR` is not
/// set. ([`telemetry::init`](crate::telemetry::init) does the same, and exports traces when
/// configured.)
pub fn init_tracing(json: bool, quiet: bool) {
    let _ = tracing::subscriber::set_global_default(subscriber(
        json,
        quiet,
        ansi_stdout(),
        std::io::stdout,
    ));
}

/// `true` when text logs on stdout may be coloured: stdout is a terminal and `NO_COLOR` is
/// not set.
pub fn ansi_stdout() -> bool {
    use std::io::IsTerminal;

    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// The subscriber [`init_tracing`] installs, writing to `writer` (for tests and embedding
/// applications that capture logs).
pub fn subscriber<W>(
    json: bool,
    quiet: bool,
    ansi: bool,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;

    tracing_subscriber::registry()
        .with(log_filter(quiet))
        .with(log_layer(json, ansi, writer))
}

/// Which logs are written: the directives in `RUST_LOG`, else `info`; `error` when `quiet`
/// (the demo, whose live view shows what the warnings would say: every retry and failover
/// is a warning). See [`LogFilter`].
pub fn log_filter(quiet: bool) -> LogFilter {
    let default = if quiet {
        "error"
    } else {
        "info,tower_http=info"
    };
    match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => LogFilter::new(&directives),
        _ => LogFilter::new(default),
    }
}

pub use crate::log_filter::LogFilter;

/// The log lines, as text (coloured if `ansi`) or JSON, written to `writer`.
pub fn log_layer<S, W>(
    json: bool,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    use crate::deferred::Deferred;

    let format = tracing_subscriber::fmt::layer().with_writer(writer);
    // Span fields are formatted when a line inside the span is written, not as each is
    // recorded: most requests write none (see `deferred`).
    if json {
        Box::new(Deferred::new(format.json()))
    } else {
        // Fields of text logs are escaped: an upstream's error text must not start a line
        // of its own (JSON logs are escaped by JSON itself).
        Box::new(Deferred::new(
            format
                .with_ansi(ansi)
                .fmt_fields(crate::bounded::EscapedFields),
        ))
    }
}

/// The tokens of `usage` by direction, as `brace_tokens_total` labels them.
fn directions(usage: &Usage) -> [(&'static str, u64); 2] {
    [
        ("input", usage.prompt_tokens),
        ("output", usage.completion_tokens),
    ]
}

/// The cost of `usage` at `price` (per million tokens), in micro-dollars: counters are
/// integers.
fn microdollars(usage: &Usage, price: crate::config::Price) -> u64 {
    let cost = (usage.prompt_tokens as f64 * price.input
        + usage.completion_tokens as f64 * price.output)
        / 1_000_000.0;
    (cost * 1_000_000.0).round() as u64
}

/// One provider's metric handles, kept once looked up: what each attempt at it records —
/// its outcome, latency, tokens and cost, and the status page's totals — without finding
/// each handle by name (a read lock and three map lookups per metric) on every attempt.
/// [`Metrics::attempt`] and [`Metrics::tokens`] record through a set made for the call.
#[derive(Clone, Debug)]
pub(crate) struct ProviderMetrics(Arc<ProviderHandles>);

#[derive(Debug)]
struct ProviderHandles {
    metrics: Metrics,
    provider: Arc<str>,
    price: Option<crate::config::Price>,
    // Each made on first use, as the name-based calls do: a series appears when it is
    // first recorded, not when the provider is configured.
    ok: OnceLock<Counter>,
    latency: OnceLock<Histogram>,
    tokens: [OnceLock<Counter>; 2],
    cost: OnceLock<Counter>,
    tally: OnceLock<Arc<crate::status::ProviderTally>>,
}

impl ProviderHandles {
    /// The provider's totals on the status page, looked up on first use.
    fn tally(&self) -> &crate::status::ProviderTally {
        self.tally
            .get_or_init(|| self.metrics.shared.tally.provider(&self.provider))
    }
}

impl ProviderMetrics {
    /// The provider's name.
    pub(crate) fn provider(&self) -> &Arc<str> {
        &self.0.provider
    }

    /// The metrics these handles record into.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// One attempt finished with `outcome` (`ok` or an error kind) after `elapsed`.
    pub(crate) fn attempt(&self, outcome: &'static str, elapsed: Duration) {
        let handles = &*self.0;
        let ok = outcome == "ok";
        handles.tally().attempt(ok);
        if ok {
            handles
                .ok
                .get_or_init(|| {
                    Counter::clone(&handles.metrics.attempts_counter(&handles.provider, outcome))
                })
                .increment(1);
        } else {
            handles
                .metrics
                .attempts_counter(&handles.provider, outcome)
                .increment(1);
        }
        handles
            .latency
            .get_or_init(|| Histogram::clone(&handles.metrics.latency_histogram(&handles.provider)))
            .record(elapsed.as_secs_f64());
    }

    /// Tokens used, and their cost if the provider is priced.
    pub(crate) fn tokens(&self, usage: &Usage) {
        let handles = &*self.0;
        for ((direction, tokens), counter) in directions(usage).into_iter().zip(&handles.tokens) {
            counter
                .get_or_init(|| {
                    Counter::clone(&handles.metrics.tokens_counter(&handles.provider, direction))
                })
                .increment(tokens);
        }
        if let Some(price) = handles.price {
            let cost = microdollars(usage, price);
            handles.tally().cost(cost);
            handles
                .cost
                .get_or_init(|| Counter::clone(&handles.metrics.cost_counter(&handles.provider)))
                .increment(cost);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series `line_start` (`name{labels}`) in the rendered exposition.
    fn value(rendered: &str, line_start: &str) -> Option<f64> {
        rendered
            .lines()
            .find_map(|line| line.strip_prefix(line_start))
            .and_then(|rest| rest.trim().parse().ok())
    }

    #[test]
    fn a_providers_kept_handles_record_what_the_named_calls_record() {
        // The recorder is process-wide: these provider names are used by no other test.
        let metrics = Metrics::new();
        let price = crate::config::Price {
            input: 2.0,
            output: 10.0,
        };
        let kept = metrics.provider("kept-a".into(), Some(price));
        let usage = Usage {
            prompt_tokens: 1_000,
            completion_tokens: 500,
            ..Usage::default()
        };
        // The same things, once through the kept handles and once by name.
        kept.attempt("ok", Duration::from_millis(3));
        kept.attempt("ok", Duration::from_millis(3));
        kept.attempt("server_error", Duration::from_millis(3));
        kept.tokens(&usage);
        metrics.attempt("kept-a", "ok", Duration::from_millis(3));
        metrics.attempt("kept-a", "timeout", Duration::from_millis(3));
        metrics.tokens("kept-a", &usage, Some(price));
        // Another provider's kept handles are its own.
        metrics
            .provider("kept-b".into(), None)
            .attempt("ok", Duration::from_millis(3));

        // The status page's totals: 5 attempts, 2 failed, 2 × (2 000 + 5 000) micro-dollars.
        assert_eq!(metrics.tally().provider("kept-a").totals(), (5, 2, 14_000));
        assert_eq!(metrics.tally().provider("kept-b").totals(), (1, 0, 0));

        let rendered = metrics.render();
        // This test binary installs no other recorder: the gateway's is the process's.
        assert!(
            !rendered.is_empty(),
            "the gateway's recorder is not installed"
        );
        for (series, expected) in [
            (
                "brace_provider_attempts_total{provider=\"kept-a\",outcome=\"ok\"}",
                3.0,
            ),
            (
                "brace_provider_attempts_total{provider=\"kept-a\",outcome=\"server_error\"}",
                1.0,
            ),
            (
                "brace_provider_attempts_total{provider=\"kept-a\",outcome=\"timeout\"}",
                1.0,
            ),
            (
                "brace_provider_attempts_total{provider=\"kept-b\",outcome=\"ok\"}",
                1.0,
            ),
            (
                "brace_provider_latency_seconds_count{provider=\"kept-a\"}",
                5.0,
            ),
            (
                "brace_tokens_total{provider=\"kept-a\",direction=\"input\"}",
                2_000.0,
            ),
            (
                "brace_tokens_total{provider=\"kept-a\",direction=\"output\"}",
                1_000.0,
            ),
            (
                "brace_cost_microdollars_total{provider=\"kept-a\"}",
                14_000.0,
            ),
        ] {
            assert_eq!(
                value(&rendered, series),
                Some(expected),
                "{series} in:\n{rendered}"
            );
        }
        // Nothing priced, nothing spent: no cost series for the provider without a price.
        assert_eq!(
            value(
                &rendered,
                "brace_cost_microdollars_total{provider=\"kept-b\"}"
            ),
            None
        );
    }

    #[test]
    fn the_kept_unlabelled_counters_count() {
        let metrics = Metrics::new();
        let before = metrics.render();
        metrics.served("kept-c", "full", true);
        metrics.served("kept-c", "full", false);
        metrics.served("kept-c", "full", false);
        for attempts in [1, 2, 3] {
            metrics.attempts(attempts);
        }
        let after = metrics.render();
        // This test binary installs no other recorder: the gateway's is the process's.
        assert!(!after.is_empty(), "the gateway's recorder is not installed");
        // Unlabelled, so other tests of this process may add to them too: at least these.
        for (series, added) in [
            ("brace_cache_hits_total", 1.0),
            ("brace_cache_misses_total", 2.0),
            ("brace_requests_with_failover_or_retry_total", 2.0),
            ("brace_attempts_per_request_count", 3.0),
        ] {
            let was = value(&before, series).unwrap_or(0.0);
            let now = value(&after, series).unwrap_or(0.0);
            assert!(now - was >= added, "{series}: {was} -> {now} in:\n{after}");
        }
    }

    #[test]
    fn registered_handles_keep_each_label_set_apart() {
        // The recorder is process-wide: these provider names are used by no other test.
        let metrics = Metrics::new();
        let other = metrics.clone();
        for _ in 0..3 {
            metrics.attempt("memo-a", "ok", Duration::from_millis(1));
        }
        metrics.attempt("memo-a", "server_error", Duration::from_millis(1));
        other.attempt("memo-b", "ok", Duration::from_millis(1));
        metrics.request("memo", 200, Duration::from_millis(1));
        metrics.request("memo", 200, Duration::from_millis(1));
        metrics.request("memo", 503, Duration::from_millis(1));
        metrics.served("memo-a", "full", false);
        metrics.served("memo-a", "reduced", false);
        metrics.served("memo-a", "reduced", false);
        let usage = Usage {
            prompt_tokens: 7,
            completion_tokens: 5,
            ..Usage::default()
        };
        metrics.tokens("memo-a", &usage, None);
        metrics.tokens("memo-a", &usage, None);

        // The histogram has no labels: other tests of this process may record into it too,
        // so what is checked is what these calls add.
        let per_request = "brace_attempts_per_request_bucket";
        let buckets = ["1", "2", "3", "5", "21", "+Inf"];
        let before = metrics.render();
        for attempts in [1, 1, 3, 4, 30] {
            metrics.attempts(attempts);
        }

        let rendered = metrics.render();
        // This test binary installs no other recorder: the gateway's is the process's.
        assert!(
            !rendered.is_empty(),
            "the gateway's recorder is not installed"
        );
        // Attempts are counted in count buckets (cumulative), not the latency buckets.
        for (le, added) in buckets.into_iter().zip([2.0, 2.0, 3.0, 4.0, 4.0, 5.0]) {
            let series = format!("{per_request}{{le=\"{le}\"}}");
            let was = value(&before, &series).unwrap_or(0.0);
            assert_eq!(
                value(&rendered, &series).map(|now| now - was),
                Some(added),
                "le={le} in:\n{rendered}"
            );
        }
        assert_eq!(
            value(&rendered, &format!("{per_request}{{le=\"0.005\"}}")),
            None
        );
        let attempts = "brace_provider_attempts_total";
        for (series, expected) in [
            (
                format!("{attempts}{{provider=\"memo-a\",outcome=\"ok\"}}"),
                3.0,
            ),
            (
                format!("{attempts}{{provider=\"memo-a\",outcome=\"server_error\"}}"),
                1.0,
            ),
            (
                format!("{attempts}{{provider=\"memo-b\",outcome=\"ok\"}}"),
                1.0,
            ),
            (
                "brace_requests_total{endpoint=\"memo\",status=\"200\"}".to_owned(),
                2.0,
            ),
            (
                "brace_requests_total{endpoint=\"memo\",status=\"503\"}".to_owned(),
                1.0,
            ),
            (
                "brace_served_total{provider=\"memo-a\",level=\"full\"}".to_owned(),
                1.0,
            ),
            (
                "brace_served_total{provider=\"memo-a\",level=\"reduced\"}".to_owned(),
                2.0,
            ),
            (
                "brace_tokens_total{provider=\"memo-a\",direction=\"input\"}".to_owned(),
                14.0,
            ),
            (
                "brace_tokens_total{provider=\"memo-a\",direction=\"output\"}".to_owned(),
                10.0,
            ),
        ] {
            assert_eq!(
                value(&rendered, &series),
                Some(expected),
                "{series} in:\n{rendered}"
            );
        }
    }
}
