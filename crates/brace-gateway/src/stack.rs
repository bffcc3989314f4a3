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

use http::HeaderMap;
use serde_json::json;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

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

/// Counts the provider attempts one request makes; the handler puts it in the request's
/// extensions and every attempt adds one.
#[derive(Debug, Clone, Default)]
pub struct Attempts(pub(crate) Arc<AtomicU32>);

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

/// The gateway: the stack, and the handles the HTTP API reads and steers it through.
pub struct Gateway {
    /// The configuration it was built from.
    pub config: GatewayConfig,
    /// Metrics.
    pub metrics: Metrics,
    service: ChatService,
    circuits: CircuitRegistry,
    providers: ProviderRegistry,
    degrade: DegradeHandle,
    sims: HashMap<String, SimHandle>,
    admin: crate::admin::AdminAuth,
    keys: Option<Arc<crate::auth::ClientKeys>>,
    shutting_down: std::sync::atomic::AtomicBool,
    streams: StreamShutdown,
    store: Arc<dyn StateStore>,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("providers", &self.config.providers.len())
            .field("routes", &self.config.routes.len())
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
        let mut sims = HashMap::new();
        let mut stacks: HashMap<String, (ChatService, CircuitHandle)> = HashMap::new();
        let mut probes: HashMap<String, ProbeFn> = HashMap::new();

        for provider in &config.providers {
            let (client, probe) = client_for(provider, &mut sims)?;
            let stack = provider_stack(provider, client, &config, &circuits, &metrics, &store)?;
            stacks.insert(provider.name.clone(), stack);
            probes.insert(provider.name.clone(), probe);
        }

        // The default route: every provider by priority, each asked for its own model.
        let everyone: Vec<_> = config
            .providers
            .iter()
            .map(|provider| {
                let target = crate::config::RouteTarget {
                    name: provider.name.clone(),
                    model: None,
                    passthrough: false,
                };
                (provider, target)
            })
            .collect();
        let (default_failover, _) = failover_for(
            &everyone,
            &stacks,
            &config,
            &providers,
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
                let (failover, continuation) = failover_for(
                    &targets, &stacks, &config, &providers, true, classifier, commit,
                )?;
                Ok((BoxCloneSyncService::new(failover), continuation))
            };
            let service = crate::policy::route_service(route, &build, &metrics)?;
            routes.push((route.clone(), service));
        }
        let router = Router {
            routes: Arc::new(routes),
            default: BoxCloneSyncService::new(default_failover),
        };
        // One active check per provider, however many routes use it.
        if let Some(interval) = config.health.probe_interval {
            let probes = Arc::new(probes);
            providers
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

        let mut degrade_config = config.degradation.clone();
        if let Some(cache) = &config.cache {
            degrade_config.cache = cache.clone();
        }
        let mut degrade_builder = DegradeLayer::<ChatRequest>::builder()
            .config(degrade_config)
            .classifier(LlmClassifier::new());
        if store.is_shared() {
            degrade_builder =
                degrade_builder.cache_tier(Arc::new(crate::state::StoreTier::new(store.clone())));
        }
        let degrade_layer = degrade_builder
            .build()
            .map_err(|err| build_error("degradation", err))?;
        let degrade = degrade_layer.handle();
        crate::state::share_pin(&store, &degrade);
        let service =
            BoxCloneSyncService::new(ServiceBuilder::new().layer(degrade_layer).service(router));

        let admin = crate::admin::AdminAuth::from_config(config.admin.as_ref(), &env)
            .map_err(GatewayBuildError)?;
        let keys = config
            .auth
            .as_ref()
            .map(|auth| crate::auth::ClientKeys::from_config(auth, &env).map(Arc::new))
            .transpose()
            .map_err(GatewayBuildError)?;

        Ok(Arc::new(Self {
            config,
            metrics,
            service,
            circuits,
            providers,
            degrade,
            sims,
            admin,
            keys,
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            streams: StreamShutdown::new(),
            store,
        }))
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
    pub async fn call(&self, mut request: ChatRequest) -> Result<(ChatResponse, u32), ApiError> {
        let attempts = Attempts::default();
        request.extensions.insert(attempts.clone());
        crate::telemetry::record_request(&request);
        let start = Instant::now();
        let deadline = self.config.server.request_timeout;
        // One deadline for the whole request: every layer below reads what is left of it
        // (retry backoffs, failover, hedges, each attempt's timeout), and the degradation
        // layer answers from cache or the static level just before it, when it can.
        let call =
            brace_core::deadline::within(start + deadline, self.service.clone().oneshot(request));
        let result = tokio::time::timeout(deadline, call).await;
        let count = attempts.0.load(Ordering::Relaxed);
        self.metrics.attempts(count);
        match result {
            Ok(Ok(response)) => {
                let level = response
                    .meta
                    .degradation
                    .as_ref()
                    .map_or("full", |d| &*d.level)
                    .to_owned();
                self.metrics.served(
                    &response.meta.provider,
                    &level,
                    response.meta.origin() == brace_llm::Origin::Cache,
                );
                self.metrics.request("chat", 200, start.elapsed());
                crate::telemetry::record_answer(&response, count);
                Ok((response, count))
            }
            Ok(Err(err)) => {
                let api = ApiError::from_stack_error(&err)
                    .clamp_retry_after(self.config.server.max_retry_after);
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

    /// The model named when a request does not name one.
    pub fn default_model(&self) -> &str {
        self.config
            .providers
            .iter()
            .min_by_key(|p| p.priority)
            .map_or("default", |p| p.model.as_str())
    }

    /// The provider registry: one record per provider, shared by every route.
    pub fn providers(&self) -> &ProviderRegistry {
        &self.providers
    }

    /// A provider's price per million tokens, if configured.
    pub fn price_of(&self, provider: &str) -> Option<crate::config::Price> {
        self.config
            .providers
            .iter()
            .find(|p| p.name == provider)
            .and_then(|p| p.price)
    }

    /// `true` if a provider has this name.
    pub fn has_provider(&self, name: &str) -> bool {
        self.config.providers.iter().any(|p| p.name == name)
    }

    /// Asks failover to try `provider` first for this request.
    pub fn prefer(&self, request: &mut ChatRequest, provider: String) {
        request.extensions.insert(PreferredProvider::new(provider));
    }

    /// Model ids for `GET /v1/models`: every route pattern without a wildcard and every
    /// provider's model, with who serves it.
    pub fn model_names(&self) -> Vec<(String, String)> {
        let mut names: Vec<(String, String)> = Vec::new();
        for route in &self.config.routes {
            if !route.pattern.contains('*') {
                names.push((route.pattern.clone(), "brace".to_owned()));
            }
        }
        for provider in &self.config.providers {
            if !names.iter().any(|(id, _)| *id == provider.model) {
                names.push((provider.model.clone(), provider.name.clone()));
            }
        }
        names
    }

    /// The simulated providers' handles, by name (to script them in demos and tests).
    pub fn sim(&self, name: &str) -> Option<&SimHandle> {
        self.sims.get(name)
    }

    /// The circuit breakers.
    pub fn circuits(&self) -> &CircuitRegistry {
        &self.circuits
    }

    /// The degradation handle.
    pub fn degradation(&self) -> &DegradeHandle {
        &self.degrade
    }

    /// Every provider's health, from the registry (all routes' traffic), with its
    /// configured model and priority.
    pub fn health(&self) -> Vec<ProviderHealth> {
        self.config
            .providers
            .iter()
            .filter_map(|provider| {
                let mut health = self.providers.get(&provider.name)?.health();
                health.model = Some(provider.model.as_str().into());
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
        let status = if healthy == providers.len() {
            "healthy"
        } else if healthy > 0 {
            "degraded"
        } else {
            "unavailable"
        };
        let level = self.degrade.level();
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
        self.metrics.degradation_level(self.degrade.level().index());
        self.metrics
            .state_store_up(self.store.kind(), self.store.is_up());
    }

    /// The degradation state, for `GET`/`POST /v1/degradation/level`.
    pub fn degradation_json(&self) -> serde_json::Value {
        let level = self.degrade.level();
        json!({
            "level": level.name(),
            "index": level.index(),
            "pinned": self.degrade.is_pinned(),
            "levels": self.degrade.ladder().levels().iter().map(brace_degrade::Level::name).collect::<Vec<_>>(),
        })
    }

    /// Pins the degradation level (`auto` releases the pin).
    ///
    /// # Errors
    ///
    /// A 400 `Invalid level: X` for an unknown level.
    pub fn set_level(&self, level: &str) -> Result<(), ApiError> {
        if level == "auto" {
            self.degrade.release();
            return Ok(());
        }
        self.degrade
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
            .authorize(headers, listening.unwrap_or(self.config.listen))
    }

    /// The client keys, when the configuration has an `auth` section.
    pub fn client_keys(&self) -> Option<&Arc<crate::auth::ClientKeys>> {
        self.keys.as_ref()
    }
}

fn circuit_gauge(state: CircuitState) -> f64 {
    match state {
        CircuitState::Closed => 0.0,
        CircuitState::HalfOpen => 1.0,
        CircuitState::Open | CircuitState::ForcedOpen => 2.0,
        _ => 3.0,
    }
}

// ===== provider clients =====

type LlmService = BoxCloneSyncService<ChatRequest, ChatResponse, LlmError>;
type ProbeFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), LlmError>> + Send>> + Send + Sync>;

fn client_for(
    provider: &ProviderConfig,
    sims: &mut HashMap<String, SimHandle>,
) -> Result<(LlmService, ProbeFn), GatewayBuildError> {
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
    macro_rules! boxed {
        ($client:expr) => {{
            let client = $client;
            let for_probe = client.clone();
            let probe: ProbeFn = Arc::new(move || for_probe.probe());
            Ok((BoxCloneSyncService::new(client), probe))
        }};
    }
    let result: Result<(LlmService, ProbeFn), brace_providers::ClientConfigError> =
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
                Ok((BoxCloneSyncService::new(sim), probe))
            }
            ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::Simulated => {
                let api = if provider.kind() == ProviderKind::Openai {
                    brace_providers::openai::OpenAiApi::default()
                } else {
                    brace_providers::openai::OpenAiApi::Compatible
                };
                keyed(provider, || {
                    boxed!(brace_providers::openai::OpenAiClient::new(
                        brace_providers::openai::OpenAiConfig::new(client_config(), api)
                    )?)
                })
            }
            ProviderKind::Azure => keyed(provider, || {
                let api = brace_providers::openai::OpenAiApi::Azure {
                    api_version: provider.api_version.clone().unwrap_or_else(|| {
                        brace_providers::openai::DEFAULT_AZURE_API_VERSION.to_owned()
                    }),
                };
                boxed!(brace_providers::openai::OpenAiClient::new(
                    brace_providers::openai::OpenAiConfig::new(client_config(), api)
                )?)
            }),
            ProviderKind::Anthropic => keyed(provider, || {
                boxed!(brace_providers::anthropic::AnthropicClient::new(
                    client_config()
                )?)
            }),
            ProviderKind::Gemini => keyed(provider, || {
                boxed!(brace_providers::gemini::GeminiClient::new(client_config())?)
            }),
        };
    result.map_err(|err| build_error(format!("provider `{name}`"), err))
}

/// Builds a keyed client; when its key is not in the environment the gateway still starts,
/// and every call to that provider fails with a clear authentication error (so the others
/// answer instead).
fn keyed(
    provider: &ProviderConfig,
    build: impl FnOnce() -> Result<(LlmService, ProbeFn), brace_providers::ClientConfigError>,
) -> Result<(LlmService, ProbeFn), brace_providers::ClientConfigError> {
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
        return Ok((BoxCloneSyncService::new(fail), probe));
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
    client: LlmService,
    config: &GatewayConfig,
    circuits: &CircuitRegistry,
    metrics: &Metrics,
    store: &Arc<dyn StateStore>,
) -> Result<(ChatService, CircuitHandle), GatewayBuildError> {
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

    let retry = config
        .fallback_for(provider)
        .map_err(|err| build_error(context(), err))?
        .builder(LlmClassifier::new())
        .map_err(|err| build_error(format!("{}: fallback", context()), err))?
        .name(provider.name.as_str())
        .build();

    let breaker_config = config
        .circuit_breaker_for(provider)
        .map_err(|err| build_error(context(), err))?;
    // Built and listed in the registry (`GET /v1/circuits`) at once.
    let breaker = breaker_config
        .to_builder(provider.name.as_str())
        .and_then(|builder| circuits.layer(builder.classifier(LlmClassifier::new())))
        .map_err(|err| build_error(format!("{}: circuit_breaker", context()), err))?;
    let handle = breaker.handle();

    let instrument = Instrument {
        provider: provider.name.as_str().into(),
        metrics: metrics.clone(),
        price: provider.price,
    };
    // The bulkhead is outermost: a call it sheds reaches neither the breaker nor an attempt.
    // Attempts are counted outside the timeout and the stream guard, so that an attempt
    // they cut is counted with its outcome.
    let bulkhead = provider.max_in_flight.map(|limit| {
        crate::limits::BulkheadLayer::new(provider.name.as_str(), limit, metrics.clone())
    });
    let accounting = crate::accounting::StreamAccountingLayer::new(
        provider.name.as_str().into(),
        metrics.clone(),
        provider.price,
    );
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
        .layer(tower::layer::layer_fn(move |inner| {
            instrument.clone().wrap(inner)
        }))
        // One span per attempt, its outcome timeouts included.
        .layer(attempt_span)
        // Each attempt's timeout, cut short by the request's deadline when that comes first.
        .layer(brace_core::deadline::TimeoutLayer::new(provider.timeout))
        // Each provider's own tokens, cost and how its stream ended.
        .layer(accounting)
        .layer(guard)
        .service(client);
    Ok((BoxCloneSyncService::new(stack), handle))
}

// ===== failover =====

/// Picks the preferred provider out of a request's extensions.
type PreferenceFn = fn(&ChatRequest) -> Option<&str>;

/// The failover service of one route.
type Failover = FailoverService<ChatService, LlmClassifier, RouteCommit, PreferenceFn>;

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
        let model = if target.passthrough {
            None
        } else {
            Some(
                target
                    .model
                    .clone()
                    .unwrap_or_else(|| provider.model.clone()),
            )
        };
        let per_level: Arc<HashMap<String, ModelName>> = Arc::new(
            provider
                .models
                .iter()
                .map(|(level, model)| (level.clone(), ModelName::from(model.as_str())))
                .collect(),
        );
        let service = match (model.clone(), per_level.is_empty()) {
            (Some(model), true) => {
                let model = ModelName::from(model);
                BoxCloneSyncService::new(stack.map_request(move |mut request: ChatRequest| {
                    request.model = model.clone();
                    request
                }))
            }
            (None, true) => stack,
            // A model of its own for a degradation level wins over the level's and the
            // route's.
            (model, false) => {
                let model = model.map(ModelName::from);
                BoxCloneSyncService::new(stack.map_request(move |mut request: ChatRequest| {
                    let at_level = request
                        .extensions
                        .get::<brace_llm::degrade::DegradationLevel>()
                        .and_then(|level| per_level.get(&*level.0));
                    if let Some(model) = at_level.or(model.as_ref()) {
                        request.model = model.clone();
                    }
                    request
                }))
            }
        };
        continuation_targets.push(
            ContinuationTarget::new(provider.name.as_str(), service.clone())
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
    type Future = Pin<Box<dyn Future<Output = Result<ChatResponse, BoxError>> + Send>>;

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
        Box::pin(service.oneshot(request))
    }
}

// ===== per-attempt instrumentation =====

#[derive(Clone)]
struct Instrument {
    provider: Arc<str>,
    metrics: Metrics,
    price: Option<crate::config::Price>,
}

impl Instrument {
    fn wrap<S>(self, inner: S) -> Instrumented<S> {
        Instrumented { inner, meta: self }
    }
}

/// Counts and times every attempt, with its outcome: `ok`, an error kind (`timeout` for one
/// the timeout layer or the stream guard cut), or `cancelled` for one dropped before it
/// ended (a hedge that lost, a caller gone, the global deadline).
#[derive(Clone)]
struct Instrumented<S> {
    inner: S,
    meta: Instrument,
}

impl<S> Service<ChatRequest> for Instrumented<S>
where
    S: Service<ChatRequest, Response = ChatResponse>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = ChatResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<ChatResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        if let Some(attempts) = request.extensions.get::<Attempts>() {
            attempts.0.fetch_add(1, Ordering::Relaxed);
        }
        let mut attempt = AttemptRecord {
            meta: Some(self.meta.clone()),
            start: Instant::now(),
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await.map_err(Into::into);
            attempt.finish(&result);
            result
        })
    }
}

/// Records one attempt when it ends, or as `cancelled` if it is dropped first.
struct AttemptRecord {
    meta: Option<Instrument>,
    start: Instant,
}

impl AttemptRecord {
    fn finish(&mut self, result: &Result<ChatResponse, BoxError>) {
        let Some(meta) = self.meta.take() else {
            return;
        };
        let outcome = match result {
            Ok(_) => "ok",
            Err(err) => attempt_outcome(&**err),
        };
        meta.metrics
            .attempt(&meta.provider, outcome, self.start.elapsed());
        if let Ok(response) = result
            && let Some(usage) = response.completion().and_then(|c| c.usage.as_ref())
        {
            meta.metrics.tokens(&meta.provider, usage, meta.price);
        }
    }
}

impl Drop for AttemptRecord {
    fn drop(&mut self) {
        if let Some(meta) = self.meta.take() {
            meta.metrics.attempt(
                &meta.provider,
                LlmErrorKind::Cancelled.as_str(),
                self.start.elapsed(),
            );
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
