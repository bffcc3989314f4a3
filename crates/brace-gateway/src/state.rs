//! Where provider state lives (the `state` section) and what the gateway shares through it
//! when replicas run behind a load balancer: circuit transitions (through the provider
//! registry), the pinned degradation level, the response cache's second tier, and the
//! providers' rate limits (a layer at the top of each provider's stack).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use brace_core::BoxError;
use brace_degrade::{CacheKey, CacheTier, DegradeHandle, TierFuture};
use brace_failover::{Acquired, MemoryStore, QuotaPermit, RateLimiter, StateStore};
use brace_llm::degrade::CachedChat;
use brace_llm::{ChatRequest, ChatResponse};
use tower::load_shed::error::Overloaded;
use tower::{Layer, Service};

use crate::config::StateConfig;
use crate::metrics::Metrics;
use crate::stack::GatewayBuildError;

/// The store the `state` section names: Redis when it names one, memory otherwise.
pub(crate) fn store_for(
    config: Option<&StateConfig>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn StateStore>, GatewayBuildError> {
    let Some(config) = config else {
        return Ok(Arc::new(MemoryStore));
    };
    let url = match (&config.redis_url, &config.redis_url_env) {
        (Some(url), _) => url.clone(),
        (None, Some(var)) => env(var)
            .filter(|url| !url.trim().is_empty())
            .ok_or_else(|| {
                GatewayBuildError::new(format!(
                    "state.redis_url_env: the environment variable {var} is not set"
                ))
            })?,
        (None, None) => unreachable!("the config checks that one is set"),
    };
    let redis = brace_redis::RedisConfig::new(url)
        .key_prefix(config.key_prefix.clone())
        .timeout(config.timeout)
        .probe_lease(config.probe_lease);
    let store = brace_redis::RedisStore::connect(redis)
        .map_err(|err| GatewayBuildError::new(format!("state: {err}")))?;
    Ok(Arc::new(store))
}

/// Shares the pinned level: pins and releases made here go to the store, the others'
/// are applied here (only the pin: the automatic level stays this replica's own).
pub(crate) fn share_pin(store: &Arc<dyn StateStore>, degrade: &DegradeHandle) {
    if !store.is_shared() {
        return;
    }
    let handle = degrade.clone();
    store.on_remote_pin(Arc::new(move |level: Option<&str>| {
        if let Err(err) = handle.apply_remote_pin(level) {
            tracing::warn!(error = %err, "a level pinned on another replica is not on this replica's ladder");
        }
    }));
    let mut pins = degrade.subscribe_pins();
    // Weak: the store holds the handle (in the callback above); the task must not keep the
    // store alive in return, or neither would ever be dropped.
    let store = Arc::downgrade(store);
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            loop {
                match pins.recv().await {
                    Ok(change) if !change.is_remote() => {
                        let Some(store) = store.upgrade() else {
                            return;
                        };
                        store.publish_pin(change.level().map(brace_degrade::LevelRef::name));
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}

/// The response cache's second tier in the store: chat answers as JSON.
pub(crate) struct StoreTier {
    store: Arc<dyn StateStore>,
}

impl StoreTier {
    pub(crate) fn new(store: Arc<dyn StateStore>) -> Self {
        Self { store }
    }
}

impl CacheTier<CachedChat> for StoreTier {
    fn get(&self, key: &CacheKey) -> TierFuture<CachedChat> {
        let found = self.store.cache_get(key.as_bytes());
        Box::pin(async move {
            let bytes = found.await?;
            brace_providers::provider::json_from_bytes(&bytes).ok()
        })
    }

    fn put(&self, key: &CacheKey, value: &CachedChat, ttl: Duration) {
        if let Ok(bytes) = serde_json::to_vec(value) {
            self.store.cache_put(key.as_bytes(), bytes, ttl);
        }
    }
}

// ===== rate limits =====

/// A provider's rate limits at the top of its stack: a call that would exceed the quota
/// fails at once with `tower::load_shed::error::Overloaded` — the error a full bulkhead
/// gives — which failover moves on from without counting it against the provider's circuit
/// or health (a local limit says nothing about the provider).
#[derive(Clone)]
pub(crate) struct RateLimitLayer {
    limiter: RateLimiter,
    metrics: Metrics,
}

impl RateLimitLayer {
    pub(crate) fn new(limiter: RateLimiter, metrics: Metrics) -> Self {
        Self { limiter, metrics }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`RateLimitLayer`] makes.
#[derive(Clone)]
pub(crate) struct RateLimited<S> {
    inner: S,
    layer: RateLimitLayer,
}

/// What a call is expected to cost in tokens before it is made, as OpenAI counts it for
/// its own limits: the prompt (about four characters a token) plus the most it may
/// generate.
fn estimate_tokens(request: &ChatRequest) -> u64 {
    let prompt: usize = request
        .messages
        .iter()
        .map(|message| message.text().len())
        .sum();
    let completion = request.max_tokens.unwrap_or(0);
    (prompt as u64).div_ceil(4) + u64::from(completion)
}

fn settle(permit: QuotaPermit, response: &ChatResponse) {
    match response.completion().and_then(|c| c.usage.as_ref()) {
        Some(usage) => permit.settle(usage.total_tokens),
        // A stream's usage is not known here: it stays at its estimate.
        None => drop(permit),
    }
}

impl<S> Service<ChatRequest> for RateLimited<S>
where
    S: Service<ChatRequest, Response = ChatResponse, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = ChatResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<ChatResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        let refused = |layer: &RateLimitLayer, err: &brace_failover::QuotaExceeded| {
            tracing::debug!(error = %err, "rate limit: moving on to the next provider");
            layer
                .metrics
                .rate_limited(layer.limiter.provider(), err.kind().as_str());
            let err: BoxError = Box::new(Overloaded::new());
            err
        };
        match self.layer.limiter.try_acquire(estimate_tokens(&request)) {
            Acquired::Granted(permit) => {
                let call = self.inner.call(request);
                Box::pin(async move {
                    let response = call.await?;
                    settle(permit, &response);
                    Ok(response)
                })
            }
            Acquired::Refused(err) => {
                let err = refused(&self.layer, &err);
                Box::pin(std::future::ready(Err(err)))
            }
            Acquired::Wait(reserve) => {
                // The inner service was made ready for this call: take it, leave a clone.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let layer = self.layer.clone();
                Box::pin(async move {
                    let permit = match reserve.await {
                        Ok(permit) => permit,
                        Err(err) => return Err(refused(&layer, &err)),
                    };
                    let response = inner.call(request).await?;
                    settle(permit, &response);
                    Ok(response)
                })
            }
        }
    }
}
