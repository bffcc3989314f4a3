//! The whole stack in-process: degrade → failover (3 providers) → circuit breaker → retry →
//! timeout over an instant in-process [`SimProvider`], against the bare provider and against a
//! plain tower stack (`tower::retry` with a trivial policy + `tower::timeout`) in the same
//! group, so every result reads as a ratio to a baseline measured in the same run.
//!
//! Three groups:
//! - `full_stack_success`: every call succeeds at once.
//! - `full_stack_one_retry`: every request's first attempt fails (a retryable 503-like
//!   `Overloaded`) and its second succeeds; the baseline is the bare provider called twice.
//! - `full_stack_open_circuit`: the primary's breaker is forced open through its
//!   `CircuitHandle`; every request skips it and is answered by the secondary.
//!
//! Run with:
//! `CARGO_TARGET_DIR=/work/targets/bench cargo bench -p brace-bench --bench full_stack -- --warm-up-time 1 --measurement-time 2`
#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

use std::future::{Ready, ready};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use brace_circuit::{CircuitBreakerLayer, CircuitHandle};
use brace_core::BoxError;
use brace_degrade::{DegradeConfig, DegradeLayer};
use brace_failover::{FailoverService, Provider};
use brace_gateway::{Gateway, GatewayConfig};
use brace_llm::sim::{SimConfig, SimProvider};
use brace_llm::{ChatRequest, ChatResponse, LlmClassifier, LlmError, LlmErrorKind, Message};
use brace_retry::{Backoff, RetryLayer};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use futures_util::future::Either;
use tokio::runtime::Runtime;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

const TIMEOUT: Duration = Duration::from_secs(30);

fn request() -> ChatRequest {
    ChatRequest::new("sim-model", vec![Message::user("hi")])
}

/// The instant simulated provider, optionally failing every other call with a retryable
/// error before reaching it (so each request's first attempt fails and its retry succeeds).
#[derive(Clone)]
struct Backend {
    sim: SimProvider,
    fail_every_other: Option<Arc<AtomicU64>>,
}

impl Backend {
    fn ok(name: &str) -> Self {
        Self {
            sim: SimProvider::new(SimConfig::new(name)),
            fail_every_other: None,
        }
    }

    fn failing_first_attempts(name: &str) -> Self {
        Self {
            sim: SimProvider::new(SimConfig::new(name)),
            fail_every_other: Some(Arc::new(AtomicU64::new(0))),
        }
    }
}

impl Service<ChatRequest> for Backend {
    type Response = ChatResponse;
    type Error = LlmError;
    type Future = Either<Ready<Result<ChatResponse, LlmError>>, brace_llm::sim::ResponseFuture>;

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
struct RetryErrors;

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
fn tower_stack(
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
fn provider_stack(
    name: &str,
    backend: Backend,
    budget: bool,
) -> (
    impl Service<ChatRequest, Response = ChatResponse, Error = BoxError, Future: Send> + Clone + Send,
    CircuitHandle,
) {
    let breaker = CircuitBreakerLayer::builder(name)
        .build()
        .unwrap()
        .with_classifier(LlmClassifier::new());
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
fn brace_stack(
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
    let mut config = DegradeConfig::default();
    config.cache.enabled = cache;
    let degrade = DegradeLayer::<ChatRequest>::from_config(&config)
        .unwrap()
        .with_classifier(LlmClassifier::new());
    (degrade.layer(failover), handle)
}

/// The gateway's own stack built from YAML (routing, stream guard, per-attempt metrics, the
/// global deadline), called in-process through `Gateway::call`.
fn gateway() -> Arc<Gateway> {
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
async fn one_call<S>(service: &mut S)
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

fn bench<S>(group: &mut BenchmarkGroup<'_, WallTime>, rt: &Runtime, name: &str, mut service: S)
where
    S: Service<ChatRequest, Response = ChatResponse>,
    S::Error: std::fmt::Debug,
{
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    one_call(&mut service).await;
                }
                start.elapsed()
            })
        });
    });
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn success(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("full_stack_success");
    bench(
        &mut group,
        &rt,
        "bare_provider",
        SimProvider::new(SimConfig::new("bare")),
    );
    bench(
        &mut group,
        &rt,
        "tower_retry_timeout",
        tower_stack(Backend::ok("tower")),
    );
    bench(
        &mut group,
        &rt,
        "brace_full_stack",
        brace_stack(Backend::ok("primary"), true, false).0,
    );
    bench(
        &mut group,
        &rt,
        "brace_full_stack_with_cache_fill",
        brace_stack(Backend::ok("primary"), true, true).0,
    );
    let gateway = gateway();
    group.bench_function("gateway_in_process", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(gateway.call(black_box(request())).await.unwrap());
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

fn one_retry(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("full_stack_one_retry");
    let mut bare = SimProvider::new(SimConfig::new("bare"));
    group.bench_function("bare_provider_twice", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    one_call(&mut bare).await;
                    one_call(&mut bare).await;
                }
                start.elapsed()
            })
        });
    });
    bench(
        &mut group,
        &rt,
        "tower_retry_timeout",
        tower_stack(Backend::failing_first_attempts("tower")),
    );
    let primary = Backend::failing_first_attempts("primary");
    let counter = primary.fail_every_other.clone().unwrap();
    let (brace, _) = brace_stack(primary, false, false);
    bench(&mut group, &rt, "brace_full_stack", brace);
    group.finish();
    // Every request made exactly two attempts on the primary.
    assert!(counter.load(Ordering::Relaxed).is_multiple_of(2));
}

fn open_circuit(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("full_stack_open_circuit");
    bench(
        &mut group,
        &rt,
        "bare_provider",
        SimProvider::new(SimConfig::new("bare")),
    );
    bench(
        &mut group,
        &rt,
        "tower_retry_timeout",
        tower_stack(Backend::ok("tower")),
    );
    let primary = Backend::ok("primary");
    let primary_sim = primary.sim.handle().clone();
    let (brace, handle) = brace_stack(primary, true, false);
    handle.force_open();
    bench(&mut group, &rt, "brace_full_stack_primary_open", brace);
    group.finish();
    assert_eq!(
        primary_sim.stats().calls,
        0,
        "the open primary is never called"
    );
}

criterion_group!(benches, success, one_retry, open_circuit);
criterion_main!(benches);
