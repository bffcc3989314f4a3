//! Overhead of `Retry` on the success path (no retry happens), against the bare service and
//! tower's own `Retry` with a trivial policy.
//!
//! Run with: `cargo bench -p brace-retry --bench retry -- --warm-up-time 1 --measurement-time 2`

use std::future::{Ready, ready};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use brace_core::BoxError;
use brace_retry::{Backoff, RetryLayer};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use futures::executor::block_on;
use tokio::time::Instant;
use tower::retry::budget::TpsBudget;
use tower::{Layer, Service, ServiceExt};

/// A trivial tower policy: retry errors, never responses, without waiting.
#[derive(Clone)]
struct RetryErrors;

impl tower::retry::Policy<u64, u64, BoxError> for RetryErrors {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut u64, result: &mut Result<u64, BoxError>) -> Option<Self::Future> {
        result.is_err().then(|| ready(()))
    }

    fn clone_request(&mut self, request: &u64) -> Option<u64> {
        Some(*request)
    }
}

/// The same with a `TpsBudget` (20% + 10/s) that every request deposits into, as brace's
/// default budget does: the like-for-like baseline for `brace_retry_default`.
#[derive(Clone)]
struct RetryErrorsWithBudget(Arc<TpsBudget>);

impl tower::retry::Policy<u64, u64, BoxError> for RetryErrorsWithBudget {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut u64, result: &mut Result<u64, BoxError>) -> Option<Self::Future> {
        use tower::retry::budget::Budget;
        (result.is_err() && self.0.withdraw()).then(|| ready(()))
    }

    fn clone_request(&mut self, request: &u64) -> Option<u64> {
        use tower::retry::budget::Budget;
        self.0.deposit();
        Some(*request)
    }
}

fn echo()
-> impl Service<u64, Response = u64, Error = BoxError, Future = Ready<Result<u64, BoxError>>> + Clone
{
    tower::service_fn(|request: u64| ready(Ok::<u64, BoxError>(request)))
}

/// One call through `service`, as its own (not inlined) function so that every variant
/// pays the same call boundary.
#[inline(never)]
async fn one_call<S: Service<u64, Response = u64>>(service: &mut S)
where
    S::Error: std::fmt::Debug,
{
    let response = service.ready().await.unwrap().call(black_box(7)).await;
    black_box(response.unwrap());
}

/// Times `iters` sequential calls inside one executor run.
fn bench<S>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, mut service: S)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    one_call(&mut service).await;
                }
                start.elapsed()
            })
        });
    });
}

fn success_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("retry_success_path");

    bench(&mut group, "bare_service", echo());
    bench(
        &mut group,
        "tower_retry",
        tower::retry::RetryLayer::new(RetryErrors).layer(echo()),
    );
    bench(
        &mut group,
        "tower_retry_tps_budget",
        tower::retry::RetryLayer::new(RetryErrorsWithBudget(Arc::new(TpsBudget::default())))
            .layer(echo()),
    );
    bench(
        &mut group,
        "brace_retry_no_budget",
        RetryLayer::builder()
            .backoff(Backoff::none())
            .no_budget()
            .build()
            .layer(echo()),
    );
    bench(
        &mut group,
        "brace_retry_default",
        RetryLayer::new().layer(echo()),
    );
    bench(
        &mut group,
        "brace_retry_timeout_deadline",
        RetryLayer::builder()
            .attempt_timeout(Duration::from_secs(5))
            .deadline(Duration::from_secs(30))
            .build()
            .layer(echo()),
    );
    group.finish();
}

criterion_group!(benches, success_path);
criterion_main!(benches);
