//! [`FailoverService`] and its [`FailoverBuilder`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use brace_core::commit::{Commit, Immediate};
use brace_core::instances::Instances;
use brace_core::{BoxError, Classify, DefaultClassifier};
use fastrand::Rng;
use tower_service::Service;

use crate::config::{FailoverConfig, HedgeConfig, Selection};
use crate::error::FailoverBuildError;
use crate::future::ResponseFuture;
use crate::hedge::Hedging;
use crate::preference::{NoPreference, Preference};
use crate::probe::Probe;
use crate::provider::{Provider, ProviderMeta};
use crate::registry::{ProviderEntry, ProviderHealth, ProviderRegistry};

/// The most providers one failover service takes.
pub const MAX_PROVIDERS: usize = 64;

/// Default interval of active health checks.
const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// Sends each request to one provider after another until one answers.
///
/// Providers are tried by priority (lower first); among the providers of equal priority
/// that may be tried the [`Selection`] decides. A request's [preferred provider](Preference)
/// goes first when it may be tried.
///
/// Whether a provider may be tried is its circuit breaker's call, and only its
/// ([`Provider::circuit`]): while the circuit refuses calls the provider is skipped without
/// a call; once its open wait is over the next request is the half-open trial. When every
/// circuit refuses, the request fails at once, without a call, with an
/// [`AllProvidersFailed`](brace_core::AllProvidersFailed) naming each provider with when it
/// may be tried again. A provider a layer above [excluded](brace_core::exclude) from this
/// call is skipped too, and a new provider is not started once the call's
/// [deadline](brace_core::deadline) has passed.
///
/// After each call the classifier `C` judges the result: an outcome that
/// [should fail over](brace_core::Outcome::should_failover) moves on to the next provider;
/// any other is returned at once (a bad request is not sent to every provider). When every
/// provider failed, the error is [`AllProvidersFailed`](brace_core::AllProvidersFailed)
/// with each tried provider's error in order; when the last answer was a response the
/// classifier failed over (e.g. an HTTP 503 `Response`), that response is returned.
///
/// The commit policy `K` says when a response is the provider's for good: for a stream,
/// at its first chunk, so that a stream that breaks before it still fails over.
///
/// # Readiness
///
/// `poll_ready` is always ready: the provider a request goes to is only known in `call`,
/// and waiting for every provider to be ready would let one stalled provider block them
/// all (the head-of-line blocking tower's `Steer` warns about). Each attempt drives the
/// readiness of the provider it calls, and only that one, on an instance of its own: one an
/// earlier attempt gave back after its call, else a clone of the provider's service (see
/// [`brace_core::instances`]: a provider's stack is not cloned per attempt). With a
/// [ready timeout](FailoverBuilder::ready_timeout) a provider that stays unready is charged a
/// [`NotReady`](crate::NotReady) error and the request moves on.
///
/// # Provider types
///
/// All providers share one service type `S`, so that the success path has no dynamic
/// dispatch. Providers with different stacks are boxed into one type with
/// `tower::util::BoxCloneService`. `S` need not be `Sync`: the response future is `Send`
/// when `S`, its future, the request, classifier and commit policy are.
///
/// # Clone
///
/// Clones share providers, their registry records and the hedge budget.
pub struct FailoverService<S, C = DefaultClassifier, K = Immediate, P = NoPreference> {
    shared: Arc<Shared<S, C, K>>,
    preference: P,
    rng: Rng,
}

/// What every clone of a service and every response future share.
pub(crate) struct Shared<S, C, K> {
    pub(crate) providers: Vec<ProviderMeta>,
    /// The providers' positions by priority, then position (what `select::next` walks).
    pub(crate) order: Vec<usize>,
    /// Each provider's service instances: an attempt takes one, calls it, and gives it back
    /// (see [`Instances`]). Their lock is only held to take or give back one, so `S` need
    /// only be `Send` (as `BoxCloneService` is) for the response future to be `Send`.
    pub(crate) services: Vec<Instances<S>>,
    /// Each provider's record in the registry, in the order of `providers`.
    pub(crate) entries: Vec<ProviderEntry>,
    pub(crate) registry: ProviderRegistry,
    pub(crate) selection: Selection,
    pub(crate) hedging: Option<Hedging>,
    pub(crate) ready_timeout: Option<Duration>,
    /// Whether calls are timed (for the latency EWMA, latency-based selection, hedging).
    pub(crate) timed: bool,
    pub(crate) classifier: C,
    pub(crate) commit: K,
}

impl<S, C, K> Shared<S, C, K> {
    /// What a pick reads: the providers, their order by priority, their records, the
    /// selection.
    pub(crate) fn roster(&self) -> crate::select::Roster<'_> {
        crate::select::Roster {
            providers: &self.providers,
            order: &self.order,
            entries: &self.entries,
            selection: self.selection,
        }
    }
}

type ProbeSpawner = Box<dyn FnOnce(&tokio::runtime::Handle, &[ProviderEntry], Duration) + Send>;

/// Builds a [`FailoverService`].
///
/// # Example
///
/// ```
/// use brace_failover::{FailoverService, Provider, Selection};
/// use tower::{Service, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), brace_core::BoxError> {
/// let down = service_fn(|_: &'static str| async { Err::<&str, _>("connection refused") });
/// let up = service_fn(|req: &'static str| async move { Ok::<_, &str>(req) });
/// let mut failover = FailoverService::builder()
///     .provider(Provider::new("primary", tower::util::BoxCloneService::new(down)))
///     .provider(Provider::new("backup", tower::util::BoxCloneService::new(up)).priority(1))
///     .selection(Selection::Weighted)
///     .build()?;
///
/// assert_eq!(failover.ready().await?.call("hello").await?, "hello");
/// assert_eq!(failover.health()[0].consecutive_failures, 1);
/// assert_eq!(failover.health()[1].successes, 1);
/// # Ok(())
/// # }
/// ```
pub struct FailoverBuilder<S, C = DefaultClassifier, K = Immediate, P = NoPreference> {
    providers: Vec<Provider<S>>,
    config: FailoverConfig,
    classifier: C,
    commit: K,
    preference: P,
    registry: Option<ProviderRegistry>,
    probe: Option<ProbeSpawner>,
}

// ===== impl FailoverService =====

impl<S> FailoverService<S> {
    /// Starts building a failover service.
    pub fn builder() -> FailoverBuilder<S> {
        FailoverBuilder {
            providers: Vec::new(),
            config: FailoverConfig::default(),
            classifier: DefaultClassifier,
            commit: Immediate,
            preference: NoPreference,
            registry: None,
            probe: None,
        }
    }
}

impl<S, C, K, P> FailoverService<S, C, K, P> {
    /// A snapshot of every provider's health, in the order they were added, with the model
    /// and priority this service gives it. The counters are the registry's: they count
    /// every service's traffic to the provider.
    pub fn health(&self) -> Vec<ProviderHealth> {
        let shared = &*self.shared;
        shared
            .providers
            .iter()
            .zip(&shared.entries)
            .map(|(meta, entry)| {
                let mut health = entry.health();
                health.model.clone_from(&meta.model);
                health.priority = Some(meta.priority);
                health
            })
            .collect()
    }

    /// The registry whose records this service shares.
    pub fn registry(&self) -> &ProviderRegistry {
        &self.shared.registry
    }

    /// The providers' names, in the order they were added.
    pub fn provider_names(&self) -> impl Iterator<Item = &str> {
        self.shared.providers.iter().map(|meta| &*meta.name)
    }

    /// The index of the provider named `name`.
    fn index_of(&self, name: &str) -> Option<usize> {
        self.shared
            .providers
            .iter()
            .position(|meta| &*meta.name == name)
    }
}

impl<S, Req, C, K, P> Service<Req> for FailoverService<S, C, K, P>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    Req: Clone,
    C: Classify<S::Response, BoxError>,
    K: Commit<S::Response>,
    K::Error: Into<BoxError>,
    P: Preference<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C, K>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let preferred = self
            .preference
            .preferred(&request)
            .and_then(|name| self.index_of(name));
        if let Some(hedging) = &self.shared.hedging {
            hedging.deposit();
        }
        let rng = Rng::with_seed(self.rng.u64(..));
        ResponseFuture::new(self.shared.clone(), request, preferred, rng)
    }
}

impl<S, C, K, P: Clone> Clone for FailoverService<S, C, K, P> {
    fn clone(&self) -> Self {
        let mut rng = self.rng.clone();
        Self {
            shared: self.shared.clone(),
            preference: self.preference.clone(),
            rng: rng.fork(),
        }
    }
}

impl<S, C, K, P> fmt::Debug for FailoverService<S, C, K, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailoverService")
            .field("providers", &self.shared.providers)
            .field("selection", &self.shared.selection)
            .field("hedging", &self.shared.hedging)
            .finish_non_exhaustive()
    }
}

// ===== impl FailoverBuilder =====

impl<S, C, K, P> FailoverBuilder<S, C, K, P> {
    /// Adds a provider. Providers of equal priority keep the order they were added in.
    #[must_use]
    pub fn provider(mut self, provider: Provider<S>) -> Self {
        self.providers.push(provider);
        self
    }

    /// Adds several providers.
    #[must_use]
    pub fn providers(mut self, providers: impl IntoIterator<Item = Provider<S>>) -> Self {
        self.providers.extend(providers);
        self
    }

    /// Replaces the whole configuration (selection, health, hedging, probe interval, seed).
    #[must_use]
    pub fn config(mut self, config: FailoverConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets how providers of equal priority are chosen.
    #[must_use]
    pub fn selection(mut self, selection: Selection) -> Self {
        self.config.selection = selection;
        self
    }

    /// Shares the providers' records with every other service built from `registry`
    /// (circuits, latency, counters, active checks): one truth per provider across routes.
    /// Without it the service gets a registry of its own.
    #[must_use]
    pub fn registry(mut self, registry: ProviderRegistry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Turns hedging on.
    #[must_use]
    pub fn hedge(mut self, hedge: HedgeConfig) -> Self {
        self.config.hedge = Some(hedge);
        self
    }

    /// Moves a request on when its provider stays unready this long (see
    /// [`FailoverConfig::ready_timeout`]).
    #[must_use]
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.config.ready_timeout = Some(timeout);
        self
    }

    /// Seeds the random choices, for reproducible runs.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// Sets the classifier that decides which results move on to the next provider.
    pub fn classifier<C2>(self, classifier: C2) -> FailoverBuilder<S, C2, K, P> {
        FailoverBuilder {
            providers: self.providers,
            config: self.config,
            classifier,
            commit: self.commit,
            preference: self.preference,
            registry: self.registry,
            probe: self.probe,
        }
    }

    /// Sets when a response commits to its provider (see [`brace_core::commit`]).
    pub fn commit<K2>(self, commit: K2) -> FailoverBuilder<S, C, K2, P> {
        FailoverBuilder {
            providers: self.providers,
            config: self.config,
            classifier: self.classifier,
            commit,
            preference: self.preference,
            registry: self.registry,
            probe: self.probe,
        }
    }

    /// Sets how a request names its preferred provider.
    pub fn preference<P2>(self, preference: P2) -> FailoverBuilder<S, C, K, P2> {
        FailoverBuilder {
            providers: self.providers,
            config: self.config,
            classifier: self.classifier,
            commit: self.commit,
            preference,
            registry: self.registry,
            probe: self.probe,
        }
    }

    /// Turns on active health checks: every `interval`, `probe` checks each provider, in one
    /// task per provider of the registry (a later service over the same provider replaces
    /// the check rather than adding one); the task stops when the provider's record is
    /// dropped. A success moves an open circuit to half-open at once.
    #[must_use]
    pub fn probe<Pr: Probe + Clone>(mut self, interval: Duration, probe: Pr) -> Self {
        self.config.probe_interval = Some(interval);
        self.probe = Some(Box::new(move |runtime, entries, interval| {
            for entry in entries {
                entry.start_probe(runtime, interval, probe.clone());
            }
        }));
        self
    }

    /// Builds the service.
    ///
    /// # Errors
    ///
    /// More than [`MAX_PROVIDERS`] providers, two providers with one name, a provider whose
    /// registry record already has another circuit breaker, or active health checks outside
    /// a tokio runtime.
    pub fn build(self) -> Result<FailoverService<S, C, K, P>, FailoverBuildError> {
        if self.providers.len() > MAX_PROVIDERS {
            return Err(FailoverBuildError::too_many_providers(self.providers.len()));
        }
        for (i, provider) in self.providers.iter().enumerate() {
            if self.providers[..i]
                .iter()
                .any(|other| other.meta.name == provider.meta.name)
            {
                return Err(FailoverBuildError::duplicate_name(&provider.meta.name));
            }
        }
        let runtime = match self.probe {
            Some(_) => Some(
                tokio::runtime::Handle::try_current()
                    .map_err(|_| FailoverBuildError::no_runtime())?,
            ),
            None => None,
        };
        let registry = self.registry.unwrap_or_default();
        let mut entries = Vec::with_capacity(self.providers.len());
        for provider in &self.providers {
            let entry = registry.entry(&provider.meta.name);
            if let Some(circuit) = &provider.circuit {
                entry.attach_circuit(circuit)?;
            }
            entries.push(entry);
        }
        let (providers, services): (Vec<_>, Vec<_>) = self
            .providers
            .into_iter()
            .map(|provider| (provider.meta, provider.service))
            .unzip();
        if let (Some(spawn), Some(runtime)) = (self.probe, runtime) {
            let interval = self.config.probe_interval.unwrap_or(DEFAULT_PROBE_INTERVAL);
            spawn(&runtime, &entries, interval);
        }
        let rng = self.config.seed.map_or_else(Rng::new, Rng::with_seed);
        let timed = self.config.track_latency
            || self.config.hedge.is_some()
            || matches!(
                self.config.selection,
                Selection::LeastLatency | Selection::PowerOfTwoChoices
            );
        Ok(FailoverService {
            shared: Arc::new(Shared {
                order: crate::select::by_priority(&providers),
                providers,
                services: services.into_iter().map(Instances::new).collect(),
                entries,
                registry,
                selection: self.config.selection,
                hedging: self.config.hedge.map(Hedging::new),
                timed,
                ready_timeout: self.config.ready_timeout,
                classifier: self.classifier,
                commit: self.commit,
            }),
            preference: self.preference,
            rng,
        })
    }
}

impl<S, C, K, P> fmt::Debug for FailoverBuilder<S, C, K, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailoverBuilder")
            .field("providers", &self.providers)
            .field("config", &self.config)
            .field("probe", &self.probe.is_some())
            .finish_non_exhaustive()
    }
}
