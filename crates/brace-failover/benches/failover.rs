//! Failover overhead: the success path against the bare provider, and the cost of skipping
//! a first provider whose circuit is open.
//!
//! Run with: `cargo bench -p brace-failover --bench failover -- --warm-up-time 1 --measurement-time 2`

use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use brace_circuit::{CircuitBreaker, CircuitBreakerLayer};
use brace_core::BoxError;
use brace_failover::{FailoverConfig, FailoverService, Provider, Selection};
use criterion::{Criterion, criterion_group, criterion_main};
use tower::{Layer, Service};

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

/// A provider behind its breaker, which opens after one failure for a day.
type Guarded = CircuitBreaker<Instant>;

fn provider(name: &str, fail: bool) -> Provider<Guarded> {
    let layer = CircuitBreakerLayer::builder(name)
        .consecutive_failures(1)
        .wait_in_open(Duration::from_hours(24))
        .build()
        .unwrap();
    Provider::new(name, layer.layer(Instant { fail })).circuit(layer.handle())
}

/// A provider behind a breaker that never opens (disabled): every call reaches it.
fn unguarded(name: &str, fail: bool) -> Provider<Guarded> {
    let layer = CircuitBreakerLayer::builder(name).build().unwrap();
    layer.handle().disable();
    Provider::new(name, layer.layer(Instant { fail })).circuit(layer.handle())
}

fn failover(providers: Vec<Provider<Guarded>>, selection: Selection) -> FailoverService<Guarded> {
    with_latency(providers, selection, true)
}

fn with_latency(
    providers: Vec<Provider<Guarded>>,
    selection: Selection,
    track_latency: bool,
) -> FailoverService<Guarded> {
    FailoverService::builder()
        .providers(providers)
        .config(FailoverConfig {
            selection,
            track_latency,
            ..FailoverConfig::default()
        })
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
    let mut one = failover(vec![provider("a", false)], Selection::Ordered);
    group.bench_function("failover_1_provider", |b| {
        b.iter(|| call(&mut one, black_box(1)).unwrap());
    });
    let mut untimed = with_latency(vec![provider("a", false)], Selection::Ordered, false);
    group.bench_function("failover_1_provider_untimed", |b| {
        b.iter(|| call(&mut untimed, black_box(1)).unwrap());
    });
    let three = || {
        ["a", "b", "c"]
            .map(|name| provider(name, false))
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
    let mut healthy_only = failover(vec![provider("b", false)], Selection::Ordered);
    group.bench_function("healthy_provider_alone", |b| {
        b.iter(|| call(&mut healthy_only, black_box(1)).unwrap());
    });
    let mut skipping = failover(
        vec![provider("a", true), provider("b", false).priority(1)],
        Selection::Ordered,
    );
    // The first call fails on `a` and opens its circuit for a day.
    call(&mut skipping, 1).unwrap();
    assert!(!skipping.health()[0].healthy);
    group.bench_function("unhealthy_first_skipped", |b| {
        b.iter(|| call(&mut skipping, black_box(1)).unwrap());
    });
    let mut skipping_untimed = with_latency(
        vec![provider("a", true), provider("b", false).priority(1)],
        Selection::Ordered,
        false,
    );
    call(&mut skipping_untimed, 1).unwrap();
    group.bench_function("unhealthy_first_skipped_untimed", |b| {
        b.iter(|| call(&mut skipping_untimed, black_box(1)).unwrap());
    });
    // The breaker never opens here, so every call really goes to `a`, fails, and moves on:
    // the price of failing over without a circuit to skip it.
    let mut failing_over = failover(
        vec![unguarded("a", true), unguarded("b", false).priority(1)],
        Selection::Ordered,
    );
    group.bench_function("failing_first_called_then_failover", |b| {
        b.iter(|| call(&mut failing_over, black_box(1)).unwrap());
    });
    group.finish();
}

criterion_group!(benches, success_path, skip_unhealthy);
criterion_main!(benches);
