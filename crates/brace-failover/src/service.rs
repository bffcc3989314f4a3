//! [`FailoverService`] and its [`Builder`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use brace_core::commit::{Commit, Immediate};
use brace_core::{BoxError, Classify, DefaultClassifier};
use fastrand::Rng;
use parking_lot::Mutex;
use tower_service::Service;

use crate::config::{FailoverConfig, HealthConfig, HedgeConfig, Selection};
use crate::error::BuildError;
use crate::future::ResponseFuture;
use crate::health::{ErrorKindFn, HealthTable, ProviderHealth, default_error_kind};
use crate::hedge::Hedging;
use crate::preference::{NoPreference, Preference};
use crate::probe::{self, Probe};
use crate::provider::{Provider, ProviderMeta};

/// The most providers one failover service takes.
pub const MAX_PROVIDERS: usize = 64;

/// Default interval of active health checks.
const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// Sends each request to one provider after another until one answers.
///
/// Providers are tried by priority (lower first); among healthy providers of equal
/// priority the [`Selection`] decides. A request's [preferred provider](Preference) goes
/// first when healthy. A provider that failed too often is skipped for its recovery time
/// (or until an active probe succeeds); when every provider is unhealthy, the one closest
/// to recovering is tried anyway.
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
/// readiness of the provider it calls, and only that one; with a
/// [ready timeout](Builder::ready_timeout) a provider that stays unready is charged a
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
/// Clones share providers, health and hedge budget.
pub struct FailoverService<S, C = DefaultClassifier, K = Immediate, P = NoPreference> {
    shared: Arc<Shared<S, C, K>>,
    preference: P,
    rng: Rng,
}

/// What every clone of a service and every response future share.
pub(crate) struct Shared<S, C, K> {
    pub(crate) providers: Vec<ProviderMeta>,
    /// Each behind a lock that is only held to clone it, so that `S` need only be `Send`
    /// (as `BoxCloneService` is) for the response future to be `Send`.
    pub(crate) services: Vec<Mutex<S>>,
    pub(crate) health: Arc<HealthTable>,
    pub(crate) selection: Selection,
    pub(crate) hedging: Option<Hedging>,
    pub(crate) ready_timeout: Option<Duration>,
    /// Whether calls are timed (for the latency EWMA, latency-based selection, hedging).
    pub(crate) timed: bool,
    pub(crate) classifier: C,
    pub(crate) commit: K,
}

type ProbeSpawner =
    Box<dyn FnOnce(&tokio::runtime::Handle, &Arc<HealthTable>, Vec<Arc<str>>, Duration) + Send>;

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
/// # Ok(())
/// # }
/// ```
pub struct Builder<S, C = DefaultClassifier, K = Immediate, P = NoPreference> {
    providers: Vec<Provider<S>>,
    config: FailoverConfig,
    classifier: C,
    commit: K,
    preference: P,
    error_kind: ErrorKindFn,
    probe: Option<ProbeSpawner>,
}

// ===== impl FailoverService =====

impl<S> FailoverService<S> {
    /// Starts building a failover service.
    pub fn builder() -> Builder<S> {
        Builder {
            providers: Vec::new(),
            config: FailoverConfig::default(),
            classifier: DefaultClassifier,
            commit: Immediate,
            preference: NoPreference,
            error_kind: default_error_kind,
            probe: None,
        }
    }
}

impl<S, C, K, P> FailoverService<S, C, K, P> {
    /// A snapshot of every provider's health, in the order they were added (for a
    /// gateway's `GET /v1/health`).
    pub fn health(&self) -> Vec<ProviderHealth> {
        let shared = &*self.shared;
        shared
            .providers
            .iter()
            .enumerate()
            .map(|(i, meta)| {
                shared
                    .health
                    .snapshot(i, &meta.name, meta.model.as_ref(), meta.priority)
            })
            .collect()
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

// ===== impl Builder =====

impl<S, C, K, P> Builder<S, C, K, P> {
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

    /// Sets passive health tracking.
    #[must_use]
    pub fn health(mut self, health: HealthConfig) -> Self {
        self.config.health = health;
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

    /// Sets how errors are named in [`ProviderHealth::errors_by_kind`].
    #[must_use]
    pub fn error_kind(mut self, error_kind: ErrorKindFn) -> Self {
        self.error_kind = error_kind;
        self
    }

    /// Sets the classifier that decides which results move on to the next provider.
    pub fn classifier<C2>(self, classifier: C2) -> Builder<S, C2, K, P> {
        Builder {
            providers: self.providers,
            config: self.config,
            classifier,
            commit: self.commit,
            preference: self.preference,
            error_kind: self.error_kind,
            probe: self.probe,
        }
    }

    /// Sets when a response commits to its provider (see [`brace_core::commit`]).
    pub fn commit<K2>(self, commit: K2) -> Builder<S, C, K2, P> {
        Builder {
            providers: self.providers,
            config: self.config,
            classifier: self.classifier,
            commit,
            preference: self.preference,
            error_kind: self.error_kind,
            probe: self.probe,
        }
    }

    /// Sets how a request names its preferred provider.
    pub fn preference<P2>(self, preference: P2) -> Builder<S, C, K, P2> {
        Builder {
            providers: self.providers,
            config: self.config,
            classifier: self.classifier,
            commit: self.commit,
            preference,
            error_kind: self.error_kind,
            probe: self.probe,
        }
    }

    /// Turns on active health checks: every `interval`, `probe` checks each provider (in a
    /// task that stops when the service and its futures are dropped).
    #[must_use]
    pub fn probe<Pr: Probe>(mut self, interval: Duration, probe: Pr) -> Self {
        self.config.probe_interval = Some(interval);
        self.probe = Some(Box::new(move |runtime, table, names, interval| {
            probe::spawn(runtime, table, names, interval, probe);
        }));
        self
    }

    /// Builds the service.
    ///
    /// # Errors
    ///
    /// More than [`MAX_PROVIDERS`] providers, two providers with one name, or active health
    /// checks outside a tokio runtime.
    pub fn build(self) -> Result<FailoverService<S, C, K, P>, BuildError> {
        if self.providers.len() > MAX_PROVIDERS {
            return Err(BuildError::too_many_providers(self.providers.len()));
        }
        for (i, provider) in self.providers.iter().enumerate() {
            if self.providers[..i]
                .iter()
                .any(|other| other.meta.name == provider.meta.name)
            {
                return Err(BuildError::duplicate_name(&provider.meta.name));
            }
        }
        let runtime = match self.probe {
            Some(_) => {
                Some(tokio::runtime::Handle::try_current().map_err(|_| BuildError::no_runtime())?)
            }
            None => None,
        };
        let health = Arc::new(HealthTable::new(
            self.providers.len(),
            self.config.health.clone(),
            self.error_kind,
        ));
        let (providers, services): (Vec<_>, Vec<_>) = self
            .providers
            .into_iter()
            .map(|provider| (provider.meta, provider.service))
            .unzip();
        if let (Some(spawn), Some(runtime)) = (self.probe, runtime) {
            let names = providers.iter().map(|meta| meta.name.clone()).collect();
            let interval = self.config.probe_interval.unwrap_or(DEFAULT_PROBE_INTERVAL);
            spawn(&runtime, &health, names, interval);
        }
        let rng = self.config.seed.map_or_else(Rng::new, Rng::with_seed);
        let timed = self.config.health.track_latency
            || self.config.hedge.is_some()
            || matches!(
                self.config.selection,
                Selection::LeastLatency | Selection::PowerOfTwoChoices
            );
        Ok(FailoverService {
            shared: Arc::new(Shared {
                providers,
                services: services.into_iter().map(Mutex::new).collect(),
                health,
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

impl<S, C, K, P> fmt::Debug for Builder<S, C, K, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("providers", &self.providers)
            .field("config", &self.config)
            .field("probe", &self.probe.is_some())
            .finish_non_exhaustive()
    }
}
