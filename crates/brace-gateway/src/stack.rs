//! Building the stack from the configuration: for each request, degrade → route →
//! failover → per-provider circuit breaker → retry → timeout → stream guard → provider
//! client.

use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::HeaderMap;
use serde_json::json;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

use brace_circuit::CircuitHandle;
use brace_circuit::{CircuitRegistry, CircuitState};
use brace_core::BoxError;
use brace_degrade::{DegradeHandle, DegradeLayer};
use brace_failover::{
    FailoverService, PreferredProvider, Provider, ProviderHealth, ProviderRegistry, RateLimiter,
    StateStore,
};
use brace_llm::continuation::ContinuationTarget;
use brace_llm::guard::StreamGuardLayer;
use brace_llm::{ChatRequest, ChatResponse, LlmClassifier, LlmError, LlmErrorKind, ModelName};
use brace_providers::ClientConfig;
use brace_sim::{SimConfig, SimHandle, SimProvider};

use crate::config::{GatewayConfig, ProviderConfig, ProviderKind, RouteConfig, RouteTarget};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::policy::RouteCommit;
use crate::sse::StreamShutdown;

/// One service of the stack: what every layer is boxed into.
pub type ChatService = BoxCloneSyncService<ChatRequest, ChatResponse, BoxError>;

/// Counts the provider attempts one request makes: [`Gateway::call`] sets it for the call
/// (a task-local, like the deadline) and every attempt adds one.
///
/// Not a request extension: the request is copied by every layer that may send it again
/// (degradation, failover, retry), and an extension makes each copy allocate a map.
#[derive(Debug, Clone, Default)]
pub(crate) struct Attempts(Arc<AtomicU32>);

tokio::task_local! {
    static ATTEMPTS: Attempts;
}

impl Attempts {
    /// Counts one attempt of the request being polled, if it is counted.
    fn count_one() {
        let _ = ATTEMPTS.try_with(|attempts| attempts.0.fetch_add(1, Ordering::Relaxed));
    }

    /// How many attempts the request being polled has made so far, if it is counted.
    pub(crate) fn so_far() -> Option<u32> {
        ATTEMPTS
            .try_with(|attempts| attempts.0.load(Ordering::Relaxed))
            .ok()
    }
}

/// The stack could not be built from the configuration.
#[derive(Debug)]
pub struct GatewayBuildError(String);

impl fmt::Display for GatewayBuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for GatewayBuildError {}

impl GatewayBuildError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

fn build_error(context: impl fmt::Display, err: impl fmt::Display) -> GatewayBuildError {
    GatewayBuildError(format!("{context}: {err}"))
}

/// The gateway: the stack in force, and the handles the HTTP API reads and steers it through.
///
/// The stack is swapped whole when the configuration is reloaded
/// ([`reload`](Self::reload)): a request runs to its end on the stack it started on, and
/// what belongs to a provider whose settings did not change — its client, circuit breaker,
/// latency and counters — carries over, as do the degradation level and the response cache
/// while the `degradation` and `cache` sections stay the same.
pub struct Gateway {
    /// Metrics.
    pub metrics: Metrics,
    pub(crate) live: ArcSwap<Live>,
    circuits: CircuitRegistry,
    providers: ProviderRegistry,
    pub(crate) chaos: crate::chaos::Switches,
    pub(crate) status: crate::status::Board,
    pub(crate) reloads: crate::reload::Reloads,
    admin: crate::admin::AdminAuth,
    keys: Option<Arc<crate::auth::ClientKeys>>,
    shutting_down: std::sync::atomic::AtomicBool,
    streams: StreamShutdown,
    store: Arc<dyn StateStore>,
    _sampler: Option<crate::status::Sampler>,
}

/// One configuration's stack: what a reload replaces.
pub(crate) struct Live {
    pub(crate) config: Arc<GatewayConfig>,
    /// The configuration's hash (see [`crate::reload::config_hash`]).
    pub(crate) hash: String,
    /// 0 for the first stack, one more for each reload.
    pub(crate) generation: u64,
    pub(crate) loaded_at: Instant,
    service: ChatService,
    pub(crate) degrade: DegradeLayer<ChatRequest, LlmClassifier>,
    degrade_config: crate::config::DegradeConfig,
    pub(crate) built: HashMap<String, Built>,
}

/// One provider's stack and what it was built from.
#[derive(Clone)]
pub(crate) struct Built {
    /// The settings its stack depends on (its priority and weight, which only steer
    /// selection, left out).
    identity: (
        ProviderConfig,
        brace_circuit::CircuitBreakerConfig,
        brace_retry::RetryConfig,
    ),
    stack: ChatService,
    pub(crate) circuit: CircuitHandle,
    probe: ProbeFn,
    sim: Option<SimHandle>,
}

/// What a stack is built with and keeps across rebuilds.
pub(crate) struct Parts<'a> {
    pub(crate) metrics: &'a Metrics,
    pub(crate) circuits: &'a CircuitRegistry,
    pub(crate) providers: &'a ProviderRegistry,
    pub(crate) chaos: &'a crate::chaos::Switches,
    pub(crate) store: &'a Arc<dyn StateStore>,
}

/// What a rebuild kept and what it started afresh, by provider name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Providers whose state (circuit, latency, counters, client) carried over.
    pub kept: Vec<String>,
    /// Providers whose settings changed: their state starts afresh.
    pub changed: Vec<String>,
    /// New providers.
    pub added: Vec<String>,
    /// Providers no longer configured.
    pub removed: Vec<String>,
    /// Whether the degradation level and the response cache carried over (the `degradation`
    /// and `cache` sections are unchanged).
    pub degradation_kept: bool,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let live = self.live.load();
        f.debug_struct("Gateway")
            .field("providers", &live.config.providers.len())
            .field("routes", &live.config.routes.len())
            .field("generation", &live.generation)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds the whole stack.
    ///
    /// # Errors
    ///
    /// A [`GatewayBuildError`] naming the part of the configuration that cannot be used.
    pub fn build(config: GatewayConfig) -> Result<Arc<Self>, GatewayBuildError> {
        Self::build_with_env(config, |var| std::env::var(var).ok())
    }

    /// Builds the whole stack, reading the admin token's and the client keys' variables
    /// through `env` instead of the process environment (for tests and embedding
    /// applications).
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn build_with_env(
        config: GatewayConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Arc<Self>, GatewayBuildError> {
        let metrics = Metrics::new();
        let circuits = CircuitRegistry::new();
        // In memory, or in Redis shared with the other replicas (see `state`).
        let store = crate::state::store_for(config.state.as_ref(), &env)?;
        // One record per provider, shared by every route and the default route: its
        // breaker, latency, counters and active check; its circuit shared through the store.
        let providers = ProviderRegistry::with_error_kind(llm_error_kind).with_store(store.clone());
        let chaos = crate::chaos::Switches::default();
        let admin = crate::admin::AdminAuth::from_config(config.admin.as_ref(), &env)
            .map_err(GatewayBuildError)?;
        let keys = config
            .auth
            .as_ref()
            .map(|auth| crate::auth::ClientKeys::from_config(auth, &env).map(Arc::new))
            .transpose()
            .map_err(GatewayBuildError)?;
        let parts = Parts {
            metrics: &metrics,
            circuits: &circuits,
            providers: &providers,
            chaos: &chaos,
            store: &store,
        };
        let (live, _) = assemble(&parts, config, None)?;
        let level_changes = live.degrade.handle().subscribe();
        for warning in live.config.warnings() {
            tracing::warn!("{warning}");
        }
        crate::chaos::start_configured(&chaos, &live.config, None);

        Ok(Arc::new_cyclic(|weak| Self {
            metrics,
            live: ArcSwap::from_pointee(live),
            circuits,
            providers,
            chaos,
            status: crate::status::Board::default(),
            reloads: crate::reload::Reloads::default(),
            admin,
            keys,
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            streams: StreamShutdown::new(),
            store,
            _sampler: crate::status::Sampler::spawn(weak.clone(), level_changes),
        }))
    }

    /// Builds the stack of `config` over this gateway's state (see [`Gateway`]) and puts it
    /// in force; requests already running finish on the stack they started on. Used by
    /// [`reload`](Self::reload), which checks and counts first.
    pub(crate) fn rebuild(&self, config: GatewayConfig) -> Result<Rebuilt, GatewayBuildError> {
        let previous = self.live.load_full();
        let parts = Parts {
            metrics: &self.metrics,
            circuits: &self.circuits,
            providers: &self.providers,
            chaos: &self.chaos,
            store: &self.store,
        };
        let (live, rebuilt) = assemble(&parts, config, Some(&previous))?;
        crate::chaos::start_configured(&self.chaos, &live.config, Some(&previous.config));
        self.live.store(Arc::new(live));
        Ok(rebuilt)
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<GatewayConfig> {
        self.live.load().config.clone()
    }

    /// The switch that ends every open stream (see [`StreamShutdown`]): what
    /// [`serve`](crate::serve) pulls when the shutdown grace runs out.
    pub fn streams(&self) -> &StreamShutdown {
        &self.streams
    }

    /// Where provider state lives: in memory, or a Redis shared with other replicas (the
    /// `state` section).
    pub fn state_store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// Sends a request through the whole stack, with the global deadline.
    ///
    /// # Errors
    ///
    /// The stack's failure, mapped to an HTTP answer.
    pub async fn call(&self, request: ChatRequest) -> Result<(ChatResponse, u32), ApiError> {
        let attempts = Attempts::default();
        crate::telemetry::record_request(&request);
        let start = Instant::now();
        // The request runs on the stack in force now, to its end, whatever a reload does.
        let (service, deadline, max_retry_after) = {
            let live = self.live.load();
            (
                live.service.clone(),
                live.config.server.request_timeout,
                live.config.server.max_retry_after,
            )
        };
        // One deadline for the whole request: every layer below reads what is left of it
        // (retry backoffs, failover, hedges, each attempt's timeout), and the degradation
        // layer answers from cache or the static level just before it, when it can.
        let call = ATTEMPTS.scope(
            attempts.clone(),
            brace_core::deadline::within(start + deadline, service.oneshot(request)),
        );
        let result = tokio::time::timeout(deadline, call).await;
        let count = attempts.0.load(Ordering::Relaxed);
        self.metrics.attempts(count);
        match result {
            Ok(Ok(response)) => {
                let level = response
                    .meta
                    .degradation
                    .as_ref()
                    .map_or("full", |d| &*d.level);
                self.metrics.served(
                    &response.meta.provider,
                    level,
                    response.meta.origin() == brace_llm::Origin::Cache,
                );
                self.metrics.request("chat", 200, start.elapsed());
                crate::telemetry::record_answer(&response, count);
                Ok((response, count))
            }
            Ok(Err(err)) => {
                let api = ApiError::from_stack_error(&err).clamp_retry_after(max_retry_after);
                tracing::warn!(error = %api.message(), status = api.status().as_u16(), attempts = count, "request failed");
                self.metrics
                    .request("chat", api.status().as_u16(), start.elapsed());
                crate::telemetry::record_failure(api.status(), count);
                Err(api)
            }
            Err(_) => {
                let err: BoxError = Box::new(brace_core::DeadlineExceeded::new(deadline));
                self.metrics.request("chat", 504, start.elapsed());
                crate::telemetry::record_failure(http::StatusCode::GATEWAY_TIMEOUT, count);
                Err(ApiError::from_stack_error(&err))
            }
        }
    }

    /// Marks the gateway as shutting down: `/readyz` answers 503 from now on, so a load
    /// balancer stops sending it traffic while in-flight requests finish.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Whether the gateway should get traffic: not while it shuts down, nor while no
    /// provider can be tried (every circuit refusing calls).
    ///
    /// # Errors
    ///
    /// Why it is not ready.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err("shutting down");
        }
        let any = self
            .providers
            .entries()
            .iter()
            .any(|entry| entry.admission().admits());
        if any {
            Ok(())
        } else {
            Err("no provider can be tried: every circuit is open")
        }
    }

    /// The model named when a request does not name one: the model of the first provider
    /// by priority that has one.
    pub fn default_model(&self) -> String {
        self.config()
            .providers
            .iter()
            .filter(|p| p.model.is_some())
            .min_by_key(|p| p.priority)
            .and_then(|p| p.model.clone())
            .unwrap_or_else(|| "default".to_owned())
    }

    /// The provider registry: one record per provider, shared by every route.
    pub fn providers(&self) -> &ProviderRegistry {
        &self.providers
    }

    /// A provider's price per million tokens, if configured.
    pub fn price_of(&self, provider: &str) -> Option<crate::config::Price> {
        self.live
            .load()
            .config
            .providers
            .iter()
            .find(|p| p.name == provider)
            .and_then(|p| p.price)
    }

    /// `true` if a provider has this name.
    pub fn has_provider(&self, name: &str) -> bool {
        self.live
            .load()
            .config
            .providers
            .iter()
            .any(|p| p.name == name)
    }

    /// Asks failover to try `provider` first for this request.
    pub fn prefer(&self, request: &mut ChatRequest, provider: String) {
        request.extensions.insert(PreferredProvider::new(provider));
    }

    /// Model ids for `GET /v1/models`: every route pattern without a wildcard and every
    /// provider's model, with who serves it.
    pub fn model_names(&self) -> Vec<(String, String)> {
        let config = self.config();
        let mut names: Vec<(String, String)> = Vec::new();
        for route in &config.routes {
            if !route.pattern.contains('*') {
                names.push((route.pattern.clone(), "brace".to_owned()));
            }
        }
        for provider in &config.providers {
            let Some(model) = &provider.model else {
                continue;
            };
            if !names.iter().any(|(id, _)| id == model) {
                names.push((model.clone(), provider.name.clone()));
            }
        }
        names
    }

    /// A simulated provider's handle, by name (to script it in demos and tests).
    pub fn sim(&self, name: &str) -> Option<SimHandle> {
        self.live.load().built.get(name)?.sim.clone()
    }

    /// The circuit breakers.
    pub fn circuits(&self) -> &CircuitRegistry {
        &self.circuits
    }

    /// The degradation handle (of the stack in force: a reload that changes the
    /// `degradation` or `cache` section starts a new one).
    pub fn degradation(&self) -> DegradeHandle {
        self.live.load().degrade.handle()
    }

    /// Every provider's health, from the registry (all routes' traffic), with its
    /// configured model and priority.
    pub fn health(&self) -> Vec<ProviderHealth> {
        self.config()
            .providers
            .iter()
            .filter_map(|provider| {
                let mut health = self.providers.get(&provider.name)?.health();
                health.model = provider.model.as_deref().map(Into::into);
                health.priority = Some(provider.priority);
                Some(health)
            })
            .collect()
    }

    /// A provider's circuit state, by name.
    pub fn circuit_state(&self, provider: &str) -> Option<CircuitState> {
        self.circuits.get(provider).map(|handle| handle.state())
    }

    /// `GET /v1/health`.
    pub fn health_json(&self) -> serde_json::Value {
        let health = self.health();
        let providers: Vec<_> = health
            .iter()
            .map(|p| {
                json!({
                    "name": &*p.name,
                    "model": p.model.as_deref(),
                    "is_healthy": p.healthy,
                    "retry_in_s": p.unhealthy_for.map(|wait| wait.as_secs_f64()),
                    "consecutive_failures": p.consecutive_failures,
                    "last_failure": p.last_failure_ago.map(|ago| format!("{}s ago", ago.as_secs())),
                    "latency_ewma_ms": p.latency_ewma.map(|l| l.as_secs_f64() * 1000.0),
                    "calls": p.calls,
                    "successes": p.successes,
                    "failures": p.failures,
                    "circuit": p.circuit.map(CircuitState::as_str),
                })
            })
            .collect();
        let healthy = providers.iter().filter(|p| p["is_healthy"] == true).count();
        let status = overall_status(healthy, providers.len());
        let level = self.degradation().level();
        json!({
            "status": status,
            "degradation": level.name(),
            "providers": providers,
            "state_store": { "kind": self.store.kind(), "up": self.store.is_up() },
        })
    }

    /// `GET /v1/circuits`.
    pub fn circuits_json(&self) -> serde_json::Value {
        let health = self.health();
        let mut map = serde_json::Map::new();
        for handle in self.circuits.handles() {
            let metrics = handle.metrics();
            let state = handle.state();
            let last_failure = health
                .iter()
                .find(|h| *h.name == *handle.name())
                .and_then(|h| h.last_failure_ago)
                .map(|ago| format!("{}s ago", ago.as_secs()));
            let mut entry = serde_json::to_value(&metrics).unwrap_or_else(|_| json!({}));
            if let Some(object) = entry.as_object_mut() {
                object.insert("state".into(), json!(state.as_str()));
                object.insert("failure_count".into(), json!(metrics.failed_calls));
                object.insert("last_failure".into(), json!(last_failure));
            }
            map.insert(handle.name().to_owned(), entry);
        }
        serde_json::Value::Object(map)
    }

    /// Sets the gauges that mirror state rather than count events: each circuit's state and
    /// the degradation level (called before `/metrics` renders).
    pub fn refresh_gauges(&self) {
        for handle in self.circuits.handles() {
            self.metrics
                .circuit_state(handle.name(), circuit_gauge(handle.state()));
        }
        self.metrics
            .degradation_level(self.degradation().level().index());
        self.chaos.export();
        self.metrics
            .state_store_up(self.store.kind(), self.store.is_up());
    }

    /// The degradation state, for `GET`/`POST /v1/degradation/level`.
    pub fn degradation_json(&self) -> serde_json::Value {
        let degrade = self.degradation();
        let level = degrade.level();
        json!({
            "level": level.name(),
            "index": level.index(),
            "pinned": degrade.is_pinned(),
            "levels": degrade.ladder().levels().iter().map(brace_degrade::Level::name).collect::<Vec<_>>(),
        })
    }

    /// Pins the degradation level (`auto` releases the pin).
    ///
    /// # Errors
    ///
    /// A 400 `Invalid level: X` for an unknown level.
    pub fn set_level(&self, level: &str) -> Result<(), ApiError> {
        let degrade = self.degradation();
        if level == "auto" {
            degrade.release();
            return Ok(());
        }
        degrade
            .pin(level)
            .map(|_| ())
            .map_err(|_| ApiError::bad_request(format!("Invalid level: {level}")))
    }

    /// Lets a request to a mutating admin endpoint through, or says why not (see
    /// [`admin`](crate::admin)); `listening` is the address the request came in on (default:
    /// the configured `listen`).
    ///
    /// # Errors
    ///
    /// 401 when a token is configured and missing or wrong; 403 when none is configured and
    /// the gateway does not listen on a loopback address.
    pub fn authorize_admin(
        &self,
        headers: &HeaderMap,
        listening: Option<std::net::SocketAddr>,
    ) -> Result<(), ApiError> {
        self.admin
            .authorize(headers, listening.unwrap_or(self.config().listen))
    }

    /// The client keys, when the configuration has an `auth` section.
    pub fn client_keys(&self) -> Option<&Arc<crate::auth::ClientKeys>> {
        self.keys.as_ref()
    }
}

/// `brace_circuit_state`: 0 closed, 1 half-open, 2 open, 3 forced open, 4 disabled, 5
/// metrics only.
fn circuit_gauge(state: CircuitState) -> f64 {
    match state {
        CircuitState::Closed => 0.0,
        CircuitState::HalfOpen => 1.0,
        CircuitState::Open => 2.0,
        CircuitState::ForcedOpen => 3.0,
        CircuitState::Disabled => 4.0,
        CircuitState::MetricsOnly => 5.0,
    }
}

// ===== assembling a stack =====

/// Builds the stack of `config`. With `previous` (a reload), a provider whose settings are
/// unchanged keeps its stack — client, circuit breaker, and through the breaker its record
/// in the registry (latency, counters) — and the degradation layer (level and cache) is kept
/// while its sections are unchanged; a changed or removed provider's record is dropped from
/// the registry so that it starts afresh. Nothing shared is touched until everything that
/// can fail has been built.
pub(crate) fn assemble(
    parts: &Parts<'_>,
    config: GatewayConfig,
    previous: Option<&Live>,
) -> Result<(Live, Rebuilt), GatewayBuildError> {
    let mut rebuilt = Rebuilt::default();
    let mut built: HashMap<String, Built> = HashMap::new();
    for provider in &config.providers {
        let breaker = config
            .circuit_breaker_for(provider)
            .map_err(|err| build_error(format!("provider `{}`", provider.name), err))?;
        let fallback = config
            .fallback_for(provider)
            .map_err(|err| build_error(format!("provider `{}`", provider.name), err))?;
        let mut settings = provider.clone();
        settings.priority = 0;
        settings.weight = 1;
        let identity = (settings, breaker, fallback);
        let kept = previous
            .and_then(|live| live.built.get(&provider.name))
            .filter(|old| old.identity == identity);
        if let Some(old) = kept {
            rebuilt.kept.push(provider.name.clone());
            built.insert(provider.name.clone(), old.clone());
            continue;
        }
        if previous.is_some_and(|live| live.built.contains_key(&provider.name)) {
            rebuilt.changed.push(provider.name.clone());
        } else if previous.is_some() {
            rebuilt.added.push(provider.name.clone());
        }
        let mut sims = HashMap::new();
        let (client, probe) = client_for(provider, &mut sims)?;
        let (stack, circuit) = provider_stack(provider, client, &identity.1, &identity.2, parts)?;
        built.insert(
            provider.name.clone(),
            Built {
                identity,
                stack,
                circuit,
                probe,
                sim: sims.remove(&provider.name),
            },
        );
    }
    if let Some(previous) = previous {
        rebuilt.removed = previous
            .built
            .keys()
            .filter(|name| !built.contains_key(*name))
            .cloned()
            .collect();
        rebuilt.removed.sort();
    }

    // Every failover is built once against a scratch registry: what could fail, fails
    // before the shared registry is changed.
    let stacks: HashMap<String, (ChatService, CircuitHandle)> = built
        .iter()
        .map(|(name, b)| (name.clone(), (b.stack.clone(), b.circuit.clone())))
        .collect();
    routes_for(&config, &stacks, &ProviderRegistry::new(), parts.metrics)?;

    // Commit: changed and removed providers start afresh; every breaker is listed.
    for name in rebuilt.changed.iter().chain(&rebuilt.removed) {
        parts.providers.remove(name);
        parts.circuits.remove(name);
        if rebuilt.removed.contains(name) {
            parts.chaos.stop(name);
        }
    }
    for b in built.values() {
        parts.circuits.register(b.circuit.clone());
    }
    let router = routes_for(&config, &stacks, parts.providers, parts.metrics)?;

    // One active check per provider, however many routes use it.
    match config.health.probe_interval {
        Some(interval) => {
            let probes: Arc<HashMap<String, ProbeFn>> = Arc::new(
                built
                    .iter()
                    .map(|(name, b)| (name.clone(), b.probe.clone()))
                    .collect(),
            );
            parts
                .providers
                .probe(interval, &move |name: Arc<str>| {
                    let probe = probes.get(&*name).cloned();
                    async move {
                        match probe {
                            Some(probe) => probe().await.map_err(BoxError::from),
                            None => Ok(()),
                        }
                    }
                })
                .map_err(|err| build_error("health.probe_interval", err))?;
        }
        None => {
            for entry in parts.providers.entries() {
                entry.stop_probe();
            }
        }
    }

    let mut degrade_config = config.degradation.clone();
    if let Some(cache) = &config.cache {
        degrade_config.cache = cache.clone();
    }
    let kept_degrade = previous
        .filter(|live| live.degrade_config == degrade_config)
        .map(|live| live.degrade.clone());
    rebuilt.degradation_kept = kept_degrade.is_some();
    let degrade = match kept_degrade {
        Some(layer) => layer,
        None => {
            let mut builder = DegradeLayer::<ChatRequest>::builder()
                .config(degrade_config.clone())
                .classifier(LlmClassifier::new());
            if parts.store.is_shared() {
                builder =
                    builder.cache_tier(Arc::new(crate::state::StoreTier::new(parts.store.clone())));
            }
            let layer = builder
                .build()
                .map_err(|err| build_error("degradation", err))?;
            crate::state::share_pin(parts.store, &layer.handle());
            layer
        }
    };
    let service =
        BoxCloneSyncService::new(ServiceBuilder::new().layer(degrade.clone()).service(router));
    let config = Arc::new(config);
    Ok((
        Live {
            hash: crate::reload::config_hash(&config),
            config,
            generation: previous.map_or(0, |live| live.generation + 1),
            loaded_at: Instant::now(),
            service,
            degrade,
            degrade_config,
            built,
        },
        rebuilt,
    ))
}

/// The routes of `config` over the providers' `stacks`, and the default route (every
/// provider by priority, each asked for its own model).
fn routes_for(
    config: &GatewayConfig,
    stacks: &HashMap<String, (ChatService, CircuitHandle)>,
    registry: &ProviderRegistry,
    metrics: &Metrics,
) -> Result<Router, GatewayBuildError> {
    let everyone: Vec<_> = config
        .providers
        .iter()
        .map(|provider| (provider, RouteTarget::named(&provider.name)))
        .collect();
    let (default_failover, _) = failover_for(
        &everyone,
        stacks,
        config,
        registry,
        false,
        LlmClassifier::new(),
        RouteCommit::default(),
    )?;

    let mut routes = Vec::with_capacity(config.routes.len());
    for route in &config.routes {
        // A failover service over some of the providers, in the given order.
        let build = |targets: &[RouteTarget], classifier, commit| {
            let targets: Vec<_> = targets
                .iter()
                .map(|target| {
                    let provider = config
                        .providers
                        .iter()
                        .find(|p| p.name == target.name)
                        .expect("routes are checked against providers when the config is read");
                    (provider, target.clone())
                })
                .collect();
            let (failover, continuation) =
                failover_for(&targets, stacks, config, registry, true, classifier, commit)?;
            Ok((BoxCloneSyncService::new(failover), continuation))
        };
        let service = crate::policy::route_service(route, &build, metrics)?;
        routes.push((route.clone(), service));
    }
    Ok(Router {
        routes: Arc::new(routes),
        default: BoxCloneSyncService::new(default_failover),
    })
}

// ===== provider clients =====

type LlmService = BoxCloneSyncService<ChatRequest, ChatResponse, LlmError>;

/// A provider's client as its stack calls it: a real one directly (its future is boxed
/// already, and a clone is a few reference counts), any other (simulated, failing) boxed.
#[derive(Clone)]
enum Client {
    OpenAi(brace_providers::openai::OpenAiClient),
    Anthropic(brace_providers::anthropic::AnthropicClient),
    Gemini(brace_providers::gemini::GeminiClient),
    Other(LlmService),
}

impl Service<ChatRequest> for Client {
    type Response = ChatResponse;
    type Error = LlmError;
    type Future = futures_util::future::Either<
        brace_providers::provider::ResponseFuture,
        <LlmService as Service<ChatRequest>>::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        match self {
            Self::OpenAi(client) => client.poll_ready(cx),
            Self::Anthropic(client) => client.poll_ready(cx),
            Self::Gemini(client) => client.poll_ready(cx),
            Self::Other(client) => client.poll_ready(cx),
        }
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        use futures_util::future::Either;
        match self {
            Self::OpenAi(client) => Either::Left(client.call(request)),
            Self::Anthropic(client) => Either::Left(client.call(request)),
            Self::Gemini(client) => Either::Left(client.call(request)),
            Self::Other(client) => Either::Right(client.call(request)),
        }
    }
}

type ProbeFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), LlmError>> + Send>> + Send + Sync>;

fn client_for(
    provider: &ProviderConfig,
    sims: &mut HashMap<String, SimHandle>,
) -> Result<(Client, ProbeFn), GatewayBuildError> {
    let name = provider.name.as_str();
    let client_config = || {
        let mut config = ClientConfig::new(
            name,
            provider
                .base_url
                .clone()
                .unwrap_or_else(|| default_base_url(provider.kind()).to_owned()),
        )
        // No default model: every request names its model (the provider's or the route's).
        .with_timeout(provider.timeout)
        .with_http2_prior_knowledge(provider.http2_prior_knowledge)
        .with_http_client(provider.http_client);
        if let Some(idle) = provider.stream_idle_timeout {
            config = config.with_stream_idle_timeout(idle);
        }
        if let Some(var) = provider.key_env() {
            config = config.with_api_key_env(var);
        }
        if let Some(hook) = crate::telemetry::upstream_hook() {
            config = config.with_request_hook(hook);
        }
        config
    };
    macro_rules! client {
        ($variant:ident, $client:expr) => {{
            let client = $client;
            let for_probe = client.clone();
            let probe: ProbeFn = Arc::new(move || for_probe.probe());
            Ok((Client::$variant(client), probe))
        }};
    }
    let result: Result<(Client, ProbeFn), brace_providers::ClientConfigError> =
        match provider.kind() {
            ProviderKind::Simulated if provider.base_url.is_none() => {
                // It answers as the model it is asked for: the provider's, or the route's.
                let sim = SimProvider::new(SimConfig {
                    name: provider.name.clone(),
                    model: None,
                    seed: provider.seed,
                    behavior: provider.simulate.clone().unwrap_or_default(),
                });
                sims.insert(provider.name.clone(), sim.handle().clone());
                let probe: ProbeFn = Arc::new(|| Box::pin(async { Ok(()) }));
                Ok((Client::Other(BoxCloneSyncService::new(sim)), probe))
            }
            ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::Simulated => {
                let api = if provider.kind() == ProviderKind::Openai {
                    brace_providers::openai::OpenAiApi::default()
                } else {
                    brace_providers::openai::OpenAiApi::Compatible
                };
                keyed(provider, || {
                    client!(
                        OpenAi,
                        brace_providers::openai::OpenAiClient::new(
                            brace_providers::openai::OpenAiConfig::new(client_config(), api)
                        )?
                    )
                })
            }
            ProviderKind::Azure => keyed(provider, || {
                let api = brace_providers::openai::OpenAiApi::Azure {
                    api_version: provider.api_version.clone().unwrap_or_else(|| {
                        brace_providers::openai::DEFAULT_AZURE_API_VERSION.to_owned()
                    }),
                };
                client!(
                    OpenAi,
                    brace_providers::openai::OpenAiClient::new(
                        brace_providers::openai::OpenAiConfig::new(client_config(), api)
                    )?
                )
            }),
            ProviderKind::Anthropic => keyed(provider, || {
                client!(
                    Anthropic,
                    brace_providers::anthropic::AnthropicClient::new(client_config())?
                )
            }),
            ProviderKind::Gemini => keyed(provider, || {
                client!(
                    Gemini,
                    brace_providers::gemini::GeminiClient::new(client_config())?
                )
            }),
        };
    result.map_err(|err| build_error(format!("provider `{name}`"), err))
}

/// Builds a keyed client; when its key is not in the environment the gateway still starts,
/// and every call to that provider fails with a clear authentication error (so the others
/// answer instead).
fn keyed(
    provider: &ProviderConfig,
    build: impl FnOnce() -> Result<(Client, ProbeFn), brace_providers::ClientConfigError>,
) -> Result<(Client, ProbeFn), brace_providers::ClientConfigError> {
    if let Some(var) = provider.key_env()
        && std::env::var(var).map_or(true, |key| key.trim().is_empty())
    {
        tracing::warn!(provider = %provider.name, env = var, "API key not set: calls to this provider will fail");
        let message = format!("no API key: the environment variable {var} is not set");
        let name: Arc<str> = provider.name.as_str().into();
        let fail = {
            let name = name.clone();
            let message = message.clone();
            tower::service_fn(move |_request: ChatRequest| {
                let err =
                    LlmError::new(LlmErrorKind::Auth, message.clone()).with_provider(name.clone());
                async move { Err::<ChatResponse, _>(err) }
            })
        };
        let probe: ProbeFn = Arc::new(move || {
            let err =
                LlmError::new(LlmErrorKind::Auth, message.clone()).with_provider(name.clone());
            Box::pin(async move { Err(err) })
        });
        return Ok((Client::Other(BoxCloneSyncService::new(fail)), probe));
    }
    build()
}

fn default_base_url(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => brace_providers::openai::DEFAULT_BASE_URL,
        ProviderKind::Anthropic => brace_providers::anthropic::DEFAULT_BASE_URL,
        ProviderKind::Gemini => brace_providers::gemini::DEFAULT_BASE_URL,
        ProviderKind::Azure | ProviderKind::OpenaiCompatible | ProviderKind::Simulated => "",
    }
}

// ===== one provider's stack =====

fn provider_stack(
    provider: &ProviderConfig,
    client: Client,
    breaker_config: &brace_circuit::CircuitBreakerConfig,
    retry_config: &brace_retry::RetryConfig,
    parts: &Parts<'_>,
) -> Result<(ChatService, CircuitHandle), GatewayBuildError> {
    let (metrics, store) = (parts.metrics, parts.store);
    let context = || format!("provider `{}`", provider.name);

    let mut guard = StreamGuardLayer::new().total_timeout(provider.timeout);
    if let Some(limit) = provider.first_token_timeout {
        guard = guard.first_token_timeout(limit);
    }
    if let Some(limit) = provider.stream_idle_timeout {
        guard = guard.idle_timeout(limit);
    }
    let ttft_metrics = metrics.clone();
    guard =
        guard.on_first_token(move |provider, elapsed| ttft_metrics.first_token(provider, elapsed));

    let retry = retry_config
        .builder(LlmClassifier::new())
        .map_err(|err| build_error(format!("{}: fallback", context()), err))?
        .name(provider.name.as_str())
        .build();

    // Listed in the registry (`GET /v1/circuits`) when the whole stack is committed.
    let breaker = breaker_config
        .to_builder(provider.name.as_str())
        .and_then(|builder| builder.classifier(LlmClassifier::new()).build())
        .map_err(|err| build_error(format!("{}: circuit_breaker", context()), err))?;
    let handle = breaker.handle();

    // Drills inject their faults where real ones come from: everything above meets them.
    let chaos = {
        let name: Arc<str> = provider.name.as_str().into();
        crate::chaos::ChaosLayer::new(parts.chaos.switch(&provider.name), move |status: u16| {
            let status =
                http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE);
            LlmError::from_response(status, &HeaderMap::new(), b"chaos drill: injected fault")
                .with_provider(name.clone())
        })
    };

    let provider_metrics = metrics.provider(provider.name.as_str().into(), provider.price);
    // The bulkhead is outermost: a call it sheds reaches neither the breaker nor an attempt.
    // Attempts are counted outside the timeout and the stream guard, so that an attempt
    // they cut is counted with its outcome.
    let bulkhead = provider.max_in_flight.map(|limit| {
        crate::limits::BulkheadLayer::new(provider.name.as_str(), limit, metrics.clone())
    });
    let accounting = crate::accounting::StreamAccountingLayer::new(provider_metrics.clone());
    // The rate limit comes next (a shed call spends no quota): a call it refuses reaches
    // neither the breaker nor an attempt, and failover moves on (the bulkhead's error).
    let rate_limit = provider.rate_limit.map(|quota| {
        crate::state::RateLimitLayer::new(
            RateLimiter::new(&provider.name, quota, store.clone()),
            metrics.clone(),
        )
    });
    let base_url = provider
        .base_url
        .as_deref()
        .or(Some(default_base_url(provider.kind())).filter(|url| !url.is_empty()));
    let attempt_span = crate::telemetry::AttemptSpanLayer::new(provider, base_url, handle.clone());
    let stack = ServiceBuilder::new()
        .option_layer(bulkhead)
        .option_layer(rate_limit)
        .layer(breaker)
        .layer(retry)
        .layer(tower::layer::layer_fn(move |inner| Instrumented {
            inner,
            metrics: provider_metrics.clone(),
        }))
        // One span per attempt, its outcome timeouts included.
        .layer(attempt_span)
        // Each attempt's timeout, cut short by the request's deadline when that comes first.
        .layer(brace_core::deadline::TimeoutLayer::new(provider.timeout))
        // Each provider's own tokens, cost and how its stream ended.
        .layer(accounting)
        .layer(guard)
        .service(chaos.layer(client));
    Ok((BoxCloneSyncService::new(stack), handle))
}

// ===== failover =====

/// Picks the preferred provider out of a request's extensions.
type PreferenceFn = fn(&ChatRequest) -> Option<&str>;

/// The failover service of one route.
type Failover = FailoverService<TargetStack, LlmClassifier, RouteCommit, PreferenceFn>;

/// One provider's stack as a route asks it: with the route's model for it (none: the
/// requested model as is), or the provider's own model for the request's degradation level,
/// which wins over the route's.
#[derive(Clone)]
struct TargetStack {
    stack: ChatService,
    model: Option<ModelName>,
    per_level: Option<Arc<HashMap<String, ModelName>>>,
}

impl Service<ChatRequest> for TargetStack {
    type Response = ChatResponse;
    type Error = BoxError;
    type Future = <ChatService as Service<ChatRequest>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.stack.poll_ready(cx)
    }

    fn call(&mut self, mut request: ChatRequest) -> Self::Future {
        let at_level = self.per_level.as_ref().and_then(|per_level| {
            request
                .extensions
                .get::<brace_llm::degrade::DegradationLevel>()
                .and_then(|level| per_level.get(&*level.0))
        });
        if let Some(model) = at_level.or(self.model.as_ref()) {
            request.model = model.clone();
        }
        self.stack.call(request)
    }
}

fn preferred(request: &ChatRequest) -> Option<&str> {
    request
        .extensions
        .get::<PreferredProvider>()
        .map(PreferredProvider::name)
}

fn failover_for(
    targets: &[(&ProviderConfig, crate::config::RouteTarget)],
    stacks: &HashMap<String, (ChatService, CircuitHandle)>,
    config: &GatewayConfig,
    registry: &ProviderRegistry,
    route_order: bool,
    classifier: LlmClassifier,
    commit: RouteCommit,
) -> Result<(Failover, Vec<ContinuationTarget<ChatService>>), GatewayBuildError> {
    let mut continuation_targets = Vec::with_capacity(targets.len());
    let mut builder = FailoverService::builder()
        .registry(registry.clone())
        .classifier(classifier)
        .commit(commit)
        .preference(preferred as PreferenceFn)
        .selection(config.selection);
    for (index, (provider, target)) in targets.iter().enumerate() {
        let (stack, circuit) = stacks[&provider.name].clone();
        // No model (passthrough, or a provider without one): the requested model as is.
        let model = if target.passthrough {
            None
        } else {
            target.model.clone().or_else(|| provider.model.clone())
        };
        let per_level: Arc<HashMap<String, ModelName>> = Arc::new(
            provider
                .models
                .iter()
                .map(|(level, model)| (level.clone(), ModelName::from(model.as_str())))
                .collect(),
        );
        let per_level = (!per_level.is_empty()).then_some(per_level);
        let service = TargetStack {
            stack,
            model: model.clone().map(ModelName::from),
            per_level,
        };
        continuation_targets.push(
            ContinuationTarget::new(
                provider.name.as_str(),
                BoxCloneSyncService::new(service.clone()),
            )
            .accepts_prefill(provider.accepts_prefill),
        );
        let priority = if route_order {
            index as u32
        } else {
            provider.priority
        };
        let mut entry = Provider::new(provider.name.as_str(), service)
            .priority(priority)
            .weight(provider.weight)
            .circuit(circuit);
        if let Some(model) = model {
            entry = entry.model(model);
        }
        if let Some(price) = provider.price {
            entry = entry.cost(price.input + price.output);
        }
        builder = builder.provider(entry);
    }
    if let Some(hedge) = &config.hedging {
        builder = builder.hedge(hedge.clone());
    }
    let failover = builder
        .build()
        .map_err(|err| build_error("failover", err))?;
    Ok((failover, continuation_targets))
}

/// Names `LlmError` kinds (and brace's own errors) for the per-kind counters.
fn llm_error_kind(err: &(dyn Error + 'static)) -> &'static str {
    match brace_core::error::find::<LlmError>(err) {
        Some(err) => err.kind().as_str(),
        None => brace_failover::default_error_kind(err),
    }
}

// ===== routing =====

#[derive(Clone)]
struct Router {
    routes: Arc<Vec<(RouteConfig, ChatService)>>,
    default: ChatService,
}

impl Service<ChatRequest> for Router {
    type Response = ChatResponse;
    type Error = BoxError;
    type Future = tower::util::Oneshot<ChatService, ChatRequest>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is driven per route in `call` (the route is not known yet).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        let service = self
            .routes
            .iter()
            .find(|(route, _)| route.matches(&request.model))
            .map_or_else(|| self.default.clone(), |(_, service)| service.clone());
        service.oneshot(request)
    }
}

// ===== per-attempt instrumentation =====

/// Counts and times every attempt, with its outcome: `ok`, an error kind (`timeout` for one
/// the timeout layer or the stream guard cut), or `cancelled` for one dropped before it
/// ended (a hedge that lost, a caller gone, the global deadline).
#[derive(Clone)]
struct Instrumented<S> {
    inner: S,
    // Shared: the stack is cloned for every attempt, and each attempt keeps a copy.
    metrics: crate::metrics::ProviderMetrics,
}

impl<S> Service<ChatRequest> for Instrumented<S>
where
    S: Service<ChatRequest, Response = ChatResponse>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = ChatResponse;
    type Error = BoxError;
    type Future = InstrumentedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        Attempts::count_one();
        let attempt = AttemptRecord {
            metrics: Some(self.metrics.clone()),
            start: brace_core::clock::now(),
        };
        InstrumentedFuture {
            call: self.inner.call(request),
            attempt,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of one [`Instrumented`] attempt: the attempt is recorded when it ends, or
    /// as `cancelled` when the future is dropped first (`AttemptRecord`'s `Drop`).
    struct InstrumentedFuture<F> {
        #[pin]
        call: F,
        attempt: AttemptRecord,
    }
}

impl<F, E> Future for InstrumentedFuture<F>
where
    F: Future<Output = Result<ChatResponse, E>>,
    E: Into<BoxError>,
{
    type Output = Result<ChatResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.call.poll(cx)).map_err(Into::into);
        this.attempt.finish(&result);
        Poll::Ready(result)
    }
}

/// Records one attempt when it ends, or as `cancelled` if it is dropped first.
struct AttemptRecord {
    metrics: Option<crate::metrics::ProviderMetrics>,
    start: Instant,
}

impl AttemptRecord {
    fn elapsed(&self) -> std::time::Duration {
        brace_core::clock::now().saturating_duration_since(self.start)
    }

    fn finish(&mut self, result: &Result<ChatResponse, BoxError>) {
        let Some(metrics) = self.metrics.take() else {
            return;
        };
        let outcome = match result {
            Ok(_) => "ok",
            Err(err) => attempt_outcome(&**err),
        };
        metrics.attempt(outcome, self.elapsed());
        if let Ok(response) = result
            && let Some(usage) = response.completion().and_then(|c| c.usage.as_ref())
        {
            metrics.tokens(usage);
        }
    }
}

impl Drop for AttemptRecord {
    fn drop(&mut self) {
        if let Some(metrics) = self.metrics.take() {
            metrics.attempt(LlmErrorKind::Cancelled.as_str(), self.elapsed());
        }
    }
}

fn attempt_outcome(err: &(dyn Error + 'static)) -> &'static str {
    if let Some(err) = brace_core::error::find::<LlmError>(err) {
        err.kind().as_str()
    } else if err.is::<tower::timeout::error::Elapsed>() || err.is::<brace_core::DeadlineExceeded>()
    {
        LlmErrorKind::Timeout.as_str()
    } else {
        "error"
    }
}

/// The gateway's status from how many of its providers are healthy, as `/v1/health` and the
/// status page report it: `healthy` (all), `degraded` (some) or `unavailable` (none).
pub(crate) fn overall_status(healthy: usize, providers: usize) -> &'static str {
    if healthy == providers {
        "healthy"
    } else if healthy > 0 {
        "degraded"
    } else {
        "unavailable"
    }
}
