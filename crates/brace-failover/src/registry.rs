//! The provider registry: one record per provider, shared by every failover service (every
//! route) and every endpoint that reports on providers.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use brace_circuit::{Admission, CircuitHandle, CircuitState};
use brace_core::clock;
use brace_core::{Outcome, Verdict};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::time::Instant;

use crate::probe::Probe;
use crate::store::{MemoryStore, StateStore};

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

/// The providers of one application, by name: for each, its circuit breaker (the one truth
/// about whether it is tried), its latency, its counters and its active health check.
///
/// Every [`FailoverService`](crate::FailoverService) built with
/// [`FailoverBuilder::registry`](crate::FailoverBuilder::registry) from the same registry shares these
/// records: a circuit opened through one route is open for every route, a latency measured
/// on one route steers selection on all, and the counters see all traffic. A failover
/// service built without one gets a registry of its own.
///
/// # Clone
///
/// Cheap: clones share the records.
///
/// # Example
///
/// ```
/// use brace_circuit::CircuitBreakerLayer;
/// use brace_failover::{FailoverService, Provider, ProviderRegistry};
/// use tower::service_fn;
///
/// let registry = ProviderRegistry::new();
/// let breaker = CircuitBreakerLayer::builder("primary").build()?;
/// let service = || tower::util::BoxCloneService::new(service_fn(|r: String| async move { Ok::<_, std::io::Error>(r) }));
/// // Two routes over the same provider and the same breaker: one record.
/// let a = FailoverService::builder()
///     .registry(registry.clone())
///     .provider(Provider::new("primary", service()).circuit(breaker.handle()))
///     .build()?;
/// let b = FailoverService::builder()
///     .registry(registry.clone())
///     .provider(Provider::new("primary", service()).circuit(breaker.handle()))
///     .build()?;
/// assert_eq!(registry.names(), ["primary"]);
/// # let _ = (a, b);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ProviderRegistry {
    records: Arc<RwLock<Vec<ProviderEntry>>>,
    error_kind: Option<ErrorKindFn>,
    store: Arc<dyn StateStore>,
}

impl Default for ProviderRegistry {
    fn default() -> Self {
        Self {
            records: Arc::default(),
            error_kind: None,
            store: Arc::new(MemoryStore),
        }
    }
}

impl ProviderRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry whose counters name errors with `error_kind`.
    pub fn with_error_kind(error_kind: ErrorKindFn) -> Self {
        Self {
            error_kind: Some(error_kind),
            ..Self::default()
        }
    }

    /// The same (empty) registry sharing its providers' circuits through `store`: every
    /// circuit attached from now on is handed to [`StateStore::share_circuit`]. Without
    /// it the registry keeps its state in memory ([`MemoryStore`]).
    ///
    /// # Panics
    ///
    /// If a provider is registered already (its circuit would not be shared).
    pub fn with_store(mut self, store: Arc<dyn StateStore>) -> Self {
        assert!(
            self.records.read().is_empty(),
            "ProviderRegistry::with_store must be called before providers are registered"
        );
        self.store = store;
        self
    }

    /// The state store (the in-memory one unless [`with_store`](Self::with_store) set
    /// another).
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// The record of the provider named `name`, created if it is new.
    pub fn entry(&self, name: &str) -> ProviderEntry {
        if let Some(entry) = self.get(name) {
            return entry;
        }
        let mut records = self.records.write();
        if let Some(entry) = records.iter().find(|entry| entry.name() == name) {
            return entry.clone();
        }
        let entry = ProviderEntry(Arc::new(Record::new(
            name.into(),
            self.error_kind.unwrap_or(default_error_kind),
            self.store.clone(),
        )));
        records.push(entry.clone());
        entry
    }

    /// The record of the provider named `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<ProviderEntry> {
        self.records
            .read()
            .iter()
            .find(|entry| entry.name() == name)
            .cloned()
    }

    /// Removes the record of the provider named `name` (when a reloaded configuration no
    /// longer has it, or changed it so much that its state should start afresh). Services
    /// built before keep the record they hold.
    pub fn remove(&self, name: &str) -> Option<ProviderEntry> {
        let mut records = self.records.write();
        let index = records.iter().position(|entry| entry.name() == name)?;
        Some(records.remove(index))
    }

    /// Every record, in the order the providers were first registered.
    pub fn entries(&self) -> Vec<ProviderEntry> {
        self.records.read().clone()
    }

    /// The providers' names, in the order they were first registered.
    pub fn names(&self) -> Vec<String> {
        self.records
            .read()
            .iter()
            .map(|entry| entry.name().to_owned())
            .collect()
    }

    /// Every provider's health, in the order they were first registered.
    pub fn health(&self) -> Vec<ProviderHealth> {
        self.records
            .read()
            .iter()
            .map(ProviderEntry::health)
            .collect()
    }

    /// Checks every registered provider every `interval` with `probe` (one task per
    /// provider, replacing any check running for it): a success moves an open circuit to
    /// half-open at once, so the next real call is its trial.
    ///
    /// # Errors
    ///
    /// Outside a tokio runtime.
    pub fn probe<P: Probe + Clone>(
        &self,
        interval: Duration,
        probe: &P,
    ) -> Result<(), crate::FailoverBuildError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| crate::FailoverBuildError::no_runtime())?;
        for entry in self.entries() {
            entry.start_probe(&runtime, interval, probe.clone());
        }
        Ok(())
    }
}

impl fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderRegistry")
            .field("records", &*self.records.read())
            .field("store", &self.store.kind())
            .finish_non_exhaustive()
    }
}

/// One provider's record in a [`ProviderRegistry`].
///
/// # Clone
///
/// Cheap: clones are the same record.
#[derive(Clone)]
pub struct ProviderEntry(pub(crate) Arc<Record>);

/// Latency EWMA "no sample yet".
const NO_SAMPLE: u64 = u64::MAX;

/// Weight of the newest sample in the latency EWMA.
const LATENCY_ALPHA: f64 = 0.2;

pub(crate) struct Record {
    name: Arc<str>,
    circuit: OnceLock<CircuitHandle>,
    /// Latency EWMA in nanoseconds, `NO_SAMPLE` before the first sample.
    latency_ns: AtomicU64,
    stats: Mutex<Stats>,
    error_kind: ErrorKindFn,
    probe_task: Mutex<Option<tokio::task::AbortHandle>>,
    store: Arc<dyn StateStore>,
}

#[derive(Debug, Default)]
struct Stats {
    consecutive_failures: u32,
    last_failure: Option<Instant>,
    calls: u64,
    successes: u64,
    failures: u64,
    ignored: u64,
    skipped: u64,
    errors_by_kind: BTreeMap<&'static str, u64>,
    probe_successes: u64,
    probe_failures: u64,
}

impl Record {
    fn new(name: Arc<str>, error_kind: ErrorKindFn, store: Arc<dyn StateStore>) -> Self {
        Self {
            name,
            circuit: OnceLock::new(),
            latency_ns: AtomicU64::new(NO_SAMPLE),
            stats: Mutex::new(Stats::default()),
            error_kind,
            probe_task: Mutex::new(None),
            store,
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Some(task) = self.probe_task.get_mut().take() {
            task.abort();
        }
    }
}

impl ProviderEntry {
    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub(crate) fn name_arc(&self) -> &Arc<str> {
        &self.0.name
    }

    /// The provider's circuit breaker, if one is attached.
    pub fn circuit(&self) -> Option<CircuitHandle> {
        self.0.circuit.get().cloned()
    }

    /// Attaches the provider's circuit breaker: from now on it decides whether the provider
    /// is tried. The first attach hands it to the registry's
    /// [state store](ProviderRegistry::with_store) to share with other replicas. Attaching
    /// the same breaker again is a no-op.
    ///
    /// # Errors
    ///
    /// Another breaker is already attached (two breakers for one provider would be two
    /// truths).
    pub fn attach_circuit(&self, circuit: &CircuitHandle) -> Result<(), crate::FailoverBuildError> {
        let mut first = false;
        let attached = self.0.circuit.get_or_init(|| {
            first = true;
            circuit.clone()
        });
        if first {
            self.0.store.share_circuit(&self.0.name, circuit);
        }
        if attached.same_breaker(circuit) {
            Ok(())
        } else {
            Err(crate::FailoverBuildError::second_circuit(self.name()))
        }
    }

    /// Whether a call to the provider would be admitted now (read from its breaker without
    /// taking a permit; always admitted without one).
    pub fn admission(&self) -> Admission {
        match self.0.circuit.get() {
            Some(circuit) => circuit.admission(),
            None => Admission::Admit,
        }
    }

    /// Latency EWMA in nanoseconds; 0 before the first sample, so new providers get tried.
    pub(crate) fn latency_ns(&self) -> u64 {
        match self.0.latency_ns.load(Ordering::Relaxed) {
            NO_SAMPLE => 0,
            ns => ns,
        }
    }

    /// The latency EWMA of completed calls (to commit, for streams), if there was one.
    pub fn latency(&self) -> Option<Duration> {
        match self.0.latency_ns.load(Ordering::Relaxed) {
            NO_SAMPLE => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Records a completed call.
    pub(crate) fn record(
        &self,
        outcome: &Outcome,
        latency: Option<Duration>,
        error: Option<&(dyn Error + 'static)>,
    ) {
        {
            let mut stats = self.0.stats.lock();
            stats.calls += 1;
            if let Some(err) = error {
                *stats
                    .errors_by_kind
                    .entry((self.0.error_kind)(err))
                    .or_insert(0) += 1;
            }
            match outcome.verdict() {
                Verdict::Ignored => {
                    stats.ignored += 1;
                    return;
                }
                Verdict::Success => {
                    stats.successes += 1;
                    stats.consecutive_failures = 0;
                }
                Verdict::Failure => {
                    stats.failures += 1;
                    stats.consecutive_failures = stats.consecutive_failures.saturating_add(1);
                    stats.last_failure = Some(clock::now());
                }
            }
        }
        let Some(latency) = latency else {
            return;
        };
        let sample = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX - 1);
        let ewma = match self.0.latency_ns.load(Ordering::Relaxed) {
            NO_SAMPLE => sample,
            old => (LATENCY_ALPHA * sample as f64 + (1.0 - LATENCY_ALPHA) * old as f64) as u64,
        };
        self.0
            .latency_ns
            .store(ewma.min(u64::MAX - 1), Ordering::Relaxed);
    }

    /// Counts a failed request that named the provider skipped.
    pub(crate) fn record_skip(&self) {
        self.0.stats.lock().skipped += 1;
    }

    /// Records an active health check: a success moves an open circuit to half-open early.
    pub(crate) fn record_probe(&self, ok: bool) {
        {
            let mut stats = self.0.stats.lock();
            if ok {
                stats.probe_successes += 1;
            } else {
                stats.probe_failures += 1;
            }
        }
        if ok && let Some(circuit) = self.circuit() {
            circuit.try_half_open();
        }
    }

    /// Starts checking the provider every `interval` with `probe`, replacing any check
    /// running for it. The task ends when the record is dropped.
    pub(crate) fn start_probe<P: Probe>(
        &self,
        runtime: &tokio::runtime::Handle,
        interval: Duration,
        probe: P,
    ) {
        let task = crate::probe::spawn(runtime, Arc::downgrade(&self.0), interval, probe);
        if let Some(old) = self.0.probe_task.lock().replace(task) {
            old.abort();
        }
    }

    /// Stops the provider's active check, if one runs (when a reloaded configuration no
    /// longer asks for probes).
    pub fn stop_probe(&self) {
        if let Some(task) = self.0.probe_task.lock().take() {
            task.abort();
        }
    }

    /// `true` while an active check runs for the provider.
    pub fn is_probed(&self) -> bool {
        self.0
            .probe_task
            .lock()
            .as_ref()
            .is_some_and(|task| !task.is_finished())
    }

    /// A snapshot of the provider's health.
    pub fn health(&self) -> ProviderHealth {
        let circuit = self.circuit();
        let admission = self.admission();
        let stats = self.0.stats.lock();
        let now = clock::now();
        ProviderHealth {
            name: self.0.name.clone(),
            model: None,
            priority: None,
            healthy: admission.admits(),
            circuit: circuit.as_ref().map(CircuitHandle::state),
            unhealthy_for: match &admission {
                Admission::Reject(open) => open.retry_after(),
                _ => None,
            },
            consecutive_failures: stats.consecutive_failures,
            last_failure_ago: stats
                .last_failure
                .map(|at| now.saturating_duration_since(at)),
            latency_ewma: self.latency(),
            calls: stats.calls,
            successes: stats.successes,
            failures: stats.failures,
            ignored: stats.ignored,
            skipped: stats.skipped,
            errors_by_kind: stats.errors_by_kind.clone(),
            probe_successes: stats.probe_successes,
            probe_failures: stats.probe_failures,
        }
    }

    /// `true` if both are the same record.
    pub fn same_record(&self, other: &ProviderEntry) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for ProviderEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderEntry")
            .field("name", &self.0.name)
            .field("circuit", &self.circuit().map(|c| c.state()))
            .finish_non_exhaustive()
    }
}

/// One provider's health, as [`ProviderRegistry::health`] and
/// [`FailoverService::health`](crate::FailoverService::health) report it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ProviderHealth {
    /// The provider's name.
    pub name: Arc<str>,
    /// The model it serves, if a failover service set one.
    pub model: Option<Arc<str>>,
    /// Its priority in the failover service that reported it.
    pub priority: Option<u32>,
    /// `false` while its circuit refuses calls: the one rule for whether it is tried.
    pub healthy: bool,
    /// Its circuit's state, if it has a breaker.
    pub circuit: Option<CircuitState>,
    /// How much longer its circuit refuses calls, when it does and knows.
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
    /// Completed calls (cancelled hedges and refused calls are not counted).
    pub calls: u64,
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that failed against the provider.
    pub failures: u64,
    /// Calls that failed through no fault of the provider (e.g. a bad request).
    pub ignored: u64,
    /// Failed requests whose trail named it skipped (its circuit open, excluded from a
    /// pass). A request another provider answered does not count.
    pub skipped: u64,
    /// Errors by kind (see [`ErrorKindFn`]).
    pub errors_by_kind: BTreeMap<&'static str, u64>,
    /// Active probes that succeeded.
    pub probe_successes: u64,
    /// Active probes that failed.
    pub probe_failures: u64,
}
