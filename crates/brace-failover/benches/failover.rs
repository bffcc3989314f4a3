//! Failover overhead: the success path against the bare provider, and the cost of skipping
//! an unhealthy first provider.
//!
//! Run with: `cargo bench -p brace-failover --bench failover -- --warm-up-time 1 --measurement-time 2`

use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use brace_core::BoxError;
use brace_failover::{FailoverService, HealthConfig, Provider, Selection};
use criterion::{Criterion, criterion_group, criterion_main};
use tower::Service;

/// A provider that answers at once (or fails at once).
#[derive(Clone)]
struct Instant {
    fail: bool,
}

impl Service<u64> for Instant {
    type Response = u64;
    type Error = BoxError;
    type Future = Ready<Result<u64, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        ready(if self.fail {
            Err("down".into())
        } else {
            Ok(req)
        })
    }
}

/// Polls a future that is ready at once.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("benchmark futures complete at once"),
    }
}

fn call<S: Service<u64>>(svc: &mut S, req: u64) -> Result<S::Response, S::Error> {
    now(std::future::poll_fn(|cx| svc.poll_ready(cx)))?;
    now(svc.call(req))
}

fn failover(providers: Vec<Provider<Instant>>, selection: Selection) -> FailoverService<Instant> {
    with_health(providers, selection, day_long_recovery(true))
}

fn day_long_recovery(track_latency: bool) -> HealthConfig {
    HealthConfig {
        consecutive_failures: 1,
        recovery_time: Duration::from_hours(24),
        track_latency,
        ..HealthConfig::default()
    }
}

fn with_health(
    providers: Vec<Provider<Instant>>,
    selection: Selection,
    health: HealthConfig,
) -> FailoverService<Instant> {
    FailoverService::builder()
        .providers(providers)
        .selection(selection)
        .health(health)
        .seed(1)
        .build()
        .unwrap()
}

fn success_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("success_path");
    let mut bare = Instant { fail: false };
    group.bench_function("bare_provider", |b| {
        b.iter(|| call(&mut bare, black_box(1)).unwrap());
    });
    let mut one = failover(
        vec![Provider::new("a", Instant { fail: false })],
        Selection::Ordered,
    );
    group.bench_function("failover_1_provider", |b| {
        b.iter(|| call(&mut one, black_box(1)).unwrap());
    });
    let mut untimed = with_health(
        vec![Provider::new("a", Instant { fail: false })],
        Selection::Ordered,
        day_long_recovery(false),
    );
    group.bench_function("failover_1_provider_untimed", |b| {
        b.iter(|| call(&mut untimed, black_box(1)).unwrap());
    });
    let three = || {
        ["a", "b", "c"]
            .map(|name| Provider::new(name, Instant { fail: false }))
            .into_iter()
            .collect::<Vec<_>>()
    };
    let mut ordered = failover(three(), Selection::Ordered);
    group.bench_function("failover_3_providers_ordered", |b| {
        b.iter(|| call(&mut ordered, black_box(1)).unwrap());
    });
    let mut weighted = failover(three(), Selection::Weighted);
    group.bench_function("failover_3_providers_weighted", |b| {
        b.iter(|| call(&mut weighted, black_box(1)).unwrap());
    });
    group.finish();
}

fn skip_unhealthy(c: &mut Criterion) {
    let mut group = c.benchmark_group("skip_unhealthy");
    let mut healthy_only = failover(
        vec![Provider::new("b", Instant { fail: false })],
        Selection::Ordered,
    );
    group.bench_function("healthy_provider_alone", |b| {
        b.iter(|| call(&mut healthy_only, black_box(1)).unwrap());
    });
    let mut skipping = failover(
        vec![
            Provider::new("a", Instant { fail: true }),
            Provider::new("b", Instant { fail: false }).priority(1),
        ],
        Selection::Ordered,
    );
    // The first call fails on `a` and marks it unhealthy for a day.
    call(&mut skipping, 1).unwrap();
    assert!(!skipping.health()[0].healthy);
    group.bench_function("unhealthy_first_skipped", |b| {
        b.iter(|| call(&mut skipping, black_box(1)).unwrap());
    });
    let mut skipping_untimed = with_health(
        vec![
            Provider::new("a", Instant { fail: true }),
            Provider::new("b", Instant { fail: false }).priority(1),
        ],
        Selection::Ordered,
        day_long_recovery(false),
    );
    call(&mut skipping_untimed, 1).unwrap();
    group.bench_function("unhealthy_first_skipped_untimed", |b| {
        b.iter(|| call(&mut skipping_untimed, black_box(1)).unwrap());
    });
    // Health tracking never trips here, so every call really goes to `a`, fails, and
    // moves on: the price of failing over without health tracking.
    let mut failing_over = with_health(
        vec![
            Provider::new("a", Instant { fail: true }),
            Provider::new("b", Instant { fail: false }).priority(1),
        ],
        Selection::Ordered,
        HealthConfig {
            consecutive_failures: 0,
            failure_rate: None,
            ..HealthConfig::default()
        },
    );
    group.bench_function("failing_first_called_then_failover", |b| {
        b.iter(|| call(&mut failing_over, black_box(1)).unwrap());
    });
    group.finish();
}

criterion_group!(benches, success_path, skip_unhealthy);
criterion_main!(benches);
