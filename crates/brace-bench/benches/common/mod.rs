//! The stacks the benchmarks compare, shared by `full_stack` (criterion, wall time),
//! `interleaved` (paired wall time) and `instructions` (instruction counts under valgrind).
// Each bench uses a part of it.
#![allow(dead_code)]

pub mod callgrind;
pub mod stats;

use std::future::{Ready, ready};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use brace_circuit::{CircuitBreakerLayer, CircuitHandle};
use brace_core::BoxError;
use brace_degrade::{DegradeConfig, DegradeLayer, Ladder};
use brace_failover::{FailoverService, Provider};
use brace_gateway::{Gateway, GatewayConfig};
use brace_llm::degrade::Shape;
use brace_llm::{ChatRequest, ChatResponse, LlmClassifier, LlmError, LlmErrorKind, Message};
use brace_retry::{Backoff, RetryLayer};
use brace_sim::{SimConfig, SimProvider};
use futures_util::future::Either;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

pub const TIMEOUT: Duration = Duration::from_secs(30);

pub fn request() -> ChatRequest {
    ChatRequest::new("sim-model", vec![Message::user("hi")])
}

/// The instant simulated provider, optionally failing every other call with a retryable
/// error before reaching it (so each request's first attempt fails and its retry succeeds).
#[derive(Clone)]
pub struct Backend {
    pub sim: SimProvider,
    pub fail_every_other: Option<Arc<AtomicU64>>,
}

impl Backend {
    pub fn ok(name: &str) -> Self {
        Self {
            sim: SimProvider::new(SimConfig::new(name)),
            fail_every_other: None,
        }
    }

    pub fn failing_first_attempts(name: &str) -> Self {
        Self {
            sim: SimProvider::new(SimConfig::new(name)),
            fail_every_other: Some(Arc::new(AtomicU64::new(0))),
        }
    }
}

impl Service<ChatRequest> for Backend {
    type Response = ChatResponse;
    type Error = LlmError;
    type Future = Either<Ready<Result<ChatResponse, LlmError>>, brace_sim::ResponseFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        self.sim.poll_ready(cx)
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        if let Some(count) = &self.fail_every_other
            && count.fetch_add(1, Ordering::Relaxed).is_multiple_of(2)
        {
            return Either::Left(ready(Err(LlmError::new(
                LlmErrorKind::Overloaded,
                "first attempt fails (bench)",
            ))));
        }
        Either::Right(self.sim.call(request))
    }
}

/// A trivial tower retry policy: retry errors, without waiting or a budget.
#[derive(Clone)]
pub struct RetryErrors;

impl tower::retry::Policy<ChatRequest, ChatResponse, BoxError> for RetryErrors {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _: &mut ChatRequest,
        result: &mut Result<ChatResponse, BoxError>,
    ) -> Option<Self::Future> {
        result.is_err().then(|| ready(()))
    }

    fn clone_request(&mut self, request: &ChatRequest) -> Option<ChatRequest> {
        Some(request.clone())
    }
}

/// The plain tower baseline: `tower::retry` (trivial policy) over `tower::timeout`.
pub fn tower_stack(
    backend: Backend,
) -> impl Service<ChatRequest, Response = ChatResponse, Error = BoxError> {
    ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(RetryErrors))
        .layer(tower::timeout::TimeoutLayer::new(TIMEOUT))
        .service(backend)
}

/// One provider's brace stack: circuit breaker → retry (1 retry, no backoff) → timeout.
/// `budget` keeps brace-retry's default retry budget (off for the retry path, where every
/// request retries and a budget would rightly refuse half of them).
pub fn provider_stack(
    name: &str,
    backend: Backend,
    budget: bool,
) -> (
    impl Service<ChatRequest, Response = ChatResponse, Error = BoxError, Future: Send> + Clone + Send,
    CircuitHandle,
) {
    let breaker = CircuitBreakerLayer::builder(name)
        .classifier(LlmClassifier::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut retry = RetryLayer::builder()
        .classifier(LlmClassifier::new())
        .max_retries(1)
        .backoff(Backoff::none());
    if !budget {
        retry = retry.no_budget();
    }
    let stack = ServiceBuilder::new()
        .layer(breaker)
        .layer(retry.build())
        .layer(tower::timeout::TimeoutLayer::new(TIMEOUT))
        .service(backend);
    (stack, handle)
}

/// The whole brace stack over three providers; returns the primary's circuit handle.
pub fn brace_stack(
    primary: Backend,
    budget: bool,
    cache: bool,
) -> (
    impl Service<ChatRequest, Response = ChatResponse, Error = BoxError>,
    CircuitHandle,
) {
    let (first, handle) = provider_stack("primary", primary, budget);
    let (second, _) = provider_stack("secondary", Backend::ok("secondary"), budget);
    let (third, _) = provider_stack("tertiary", Backend::ok("tertiary"), budget);
    let failover = FailoverService::builder()
        .classifier(LlmClassifier::new())
        .provider(Provider::new("primary", first).priority(1))
        .provider(Provider::new("secondary", second).priority(2))
        .provider(Provider::new("tertiary", third).priority(3))
        .build()
        .unwrap();
    let mut config = DegradeConfig {
        levels: Some(
            Ladder::with_live_levels(Shape::standard_levels())
                .unwrap()
                .levels()
                .to_vec(),
        ),
        ..DegradeConfig::default()
    };
    config.cache.enabled = cache;
    let degrade = DegradeLayer::<ChatRequest>::builder()
        .config(config)
        .classifier(LlmClassifier::new())
        .build()
        .unwrap();
    (degrade.layer(failover), handle)
}

/// The gateway's own stack built from YAML (routing, stream guard, per-attempt metrics, the
/// global deadline), called in-process through `Gateway::call`.
pub fn gateway() -> Arc<Gateway> {
    let yaml = r"
providers:
  - { name: sim-primary, kind: simulated, model: sim-a, priority: 1 }
  - { name: sim-secondary, kind: simulated, model: sim-b, priority: 2 }
  - { name: sim-tertiary, kind: simulated, model: sim-c, priority: 3 }
fallback: { max_retries: 1 }
cache: { enabled: false }
";
    Gateway::build(GatewayConfig::from_yaml(yaml).unwrap()).unwrap()
}

/// One call through `service`, not inlined so every variant pays the same call boundary.
#[inline(never)]
pub async fn one_call<S>(service: &mut S)
where
    S: Service<ChatRequest, Response = ChatResponse>,
    S::Error: std::fmt::Debug,
{
    let response = service
        .ready()
        .await
        .unwrap()
        .call(black_box(request()))
        .await;
    black_box(response.unwrap());
}

/// `tower::timeout` alone over `backend`.
pub fn timeout_only(
    backend: Backend,
) -> impl Service<ChatRequest, Response = ChatResponse, Error = BoxError> {
    ServiceBuilder::new()
        .layer(tower::timeout::TimeoutLayer::new(TIMEOUT))
        .service(backend)
}

/// brace-retry (1 retry, no backoff, default budget) over `tower::timeout` over `backend`.
pub fn retry_timeout(
    backend: Backend,
) -> impl Service<ChatRequest, Response = ChatResponse, Error = BoxError> {
    ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .classifier(LlmClassifier::new())
                .max_retries(1)
                .backoff(Backoff::none())
                .build(),
        )
        .layer(tower::timeout::TimeoutLayer::new(TIMEOUT))
        .service(backend)
}

/// Failover over three provider stacks, without the degrade layer on top.
pub fn failover_stack() -> impl Service<ChatRequest, Response = ChatResponse, Error = BoxError> {
    let provider = |name: &'static str| provider_stack(name, Backend::ok(name), true).0;
    FailoverService::builder()
        .classifier(LlmClassifier::new())
        .provider(Provider::new("primary", provider("primary")).priority(1))
        .provider(Provider::new("secondary", provider("secondary")).priority(2))
        .provider(Provider::new("tertiary", provider("tertiary")).priority(3))
        .build()
        .unwrap()
}

/// Runs `calls` calls through one stack and returns how long they took.
pub type Timed = Box<dyn FnMut(&tokio::runtime::Runtime, u64) -> Duration>;

fn timed<S>(mut service: S) -> Timed
where
    S: Service<ChatRequest, Response = ChatResponse> + 'static,
    S::Error: std::fmt::Debug,
{
    Box::new(move |rt, calls| {
        rt.block_on(async {
            let start = tokio::time::Instant::now();
            for _ in 0..calls {
                one_call(&mut service).await;
            }
            start.elapsed()
        })
    })
}

/// Every stack the `interleaved` and `instructions` benches compare, by name, with what it
/// is; the first is the baseline.
pub const STACKS: &[(&str, &str)] = &[
    ("bare", "bare simulated provider (baseline)"),
    ("tower", "tower retry + timeout"),
    ("timeout", "tower timeout"),
    ("retry", "brace retry → timeout"),
    ("breaker", "breaker → retry → timeout"),
    ("failover", "failover (3) → breaker → retry → timeout"),
    (
        "full",
        "degrade → failover (3) → breaker → retry → timeout (the full stack)",
    ),
    (
        "gateway",
        "the gateway's stack in-process (`Gateway::call`)",
    ),
    (
        "full_one_retry",
        "full stack, 1st attempt fails, retry answers (no budget)",
    ),
    (
        "full_primary_open",
        "full stack, primary's breaker open (secondary answers)",
    ),
];

/// Builds the stack called `name` in [`STACKS`] (inside a runtime context).
///
/// # Panics
///
/// On a name that is not in [`STACKS`].
pub fn build(name: &str) -> Timed {
    match name {
        "bare" => timed(Backend::ok("bare")),
        "tower" => timed(tower_stack(Backend::ok("tower"))),
        "timeout" => timed(timeout_only(Backend::ok("timeout"))),
        "retry" => timed(retry_timeout(Backend::ok("retry"))),
        "breaker" => timed(provider_stack("breaker", Backend::ok("breaker"), true).0),
        "failover" => timed(failover_stack()),
        "full" => timed(brace_stack(Backend::ok("primary"), true, false).0),
        "gateway" => {
            let gateway = gateway();
            Box::new(move |rt, calls| {
                rt.block_on(async {
                    let start = tokio::time::Instant::now();
                    for _ in 0..calls {
                        black_box(gateway.call(request()).await.expect("an answer"));
                    }
                    start.elapsed()
                })
            })
        }
        "full_one_retry" => {
            let primary = Backend::failing_first_attempts("primary");
            timed(brace_stack(primary, false, false).0)
        }
        "full_primary_open" => {
            let (stack, primary) = brace_stack(Backend::ok("primary"), true, false);
            primary.force_open();
            timed(stack)
        }
        other => panic!("unknown stack {other}"),
    }
}
