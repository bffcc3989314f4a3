//! Overhead of `Retry` on the success path (no retry happens), against the bare service and
//! tower's own `Retry` with a trivial policy.
//!
//! Run with: `cargo bench -p brace-retry --bench retry -- --warm-up-time 1 --measurement-time 2`

use std::future::{Ready, ready};
use std::hint::black_box;

use brace_core::BoxError;
use brace_retry::{Backoff, RetryLayer};
use criterion::{Criterion, criterion_group, criterion_main};
use futures::executor::block_on;
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

fn echo()
-> impl Service<u64, Response = u64, Error = BoxError, Future = Ready<Result<u64, BoxError>>> + Clone
{
    tower::service_fn(|request: u64| ready(Ok::<u64, BoxError>(request)))
}

async fn one_call<S: Service<u64, Response = u64>>(service: &mut S)
where
    S::Error: std::fmt::Debug,
{
    let response = service.ready().await.unwrap().call(black_box(7)).await;
    black_box(response.unwrap());
}

fn success_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("retry_success_path");

    let mut bare = echo();
    group.bench_function("bare_service", |b| b.iter(|| block_on(one_call(&mut bare))));

    let mut tower_retry = tower::retry::RetryLayer::new(RetryErrors).layer(echo());
    group.bench_function("tower_retry", |b| {
        b.iter(|| block_on(one_call(&mut tower_retry)));
    });

    let mut brace_no_budget = RetryLayer::builder()
        .backoff(Backoff::none())
        .no_budget()
        .build()
        .layer(echo());
    group.bench_function("brace_retry_no_budget", |b| {
        b.iter(|| block_on(one_call(&mut brace_no_budget)));
    });

    let mut brace_default = RetryLayer::new().layer(echo());
    group.bench_function("brace_retry_default", |b| {
        b.iter(|| block_on(one_call(&mut brace_default)));
    });

    let mut brace_timed = RetryLayer::builder()
        .attempt_timeout(std::time::Duration::from_secs(5))
        .deadline(std::time::Duration::from_secs(30))
        .build()
        .layer(echo());
    group.bench_function("brace_retry_timeout_deadline", |b| {
        b.iter(|| block_on(one_call(&mut brace_timed)));
    });

    group.finish();
}

criterion_group!(benches, success_path);
criterion_main!(benches);
