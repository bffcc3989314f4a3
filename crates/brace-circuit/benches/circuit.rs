//! Overhead of a closed circuit breaker around a no-op service, against the bare service and
//! against `tower::limit::ConcurrencyLimit`, on one thread and on several threads sharing one
//! breaker.
//!
//! Run with: `cargo bench -p brace-circuit --bench circuit -- --warm-up-time 1 --measurement-time 2`
#![allow(missing_docs)]

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use brace_circuit::{CircuitBreakerLayer, SlidingWindow};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tower::limit::ConcurrencyLimit;
use tower::{Layer, Service};

/// A service that answers at once.
#[derive(Debug, Clone, Copy)]
struct Noop;

impl Service<u64> for Noop {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        ready(Ok(request))
    }
}

/// One call: poll ready, call, poll the future to completion (it is always ready).
#[inline]
fn one_call<S>(service: &mut S, request: u64) -> bool
where
    S: Service<u64, Response = u64>,
{
    let mut cx = Context::from_waker(Waker::noop());
    if !matches!(service.poll_ready(&mut cx), Poll::Ready(Ok(()))) {
        return false;
    }
    let future = pin!(service.call(request));
    matches!(future.poll(&mut cx), Poll::Ready(Ok(_)))
}

fn count_breaker() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder("bench").build().unwrap()
}

fn untimed_breaker() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder("bench")
        .track_slow_calls(false)
        .build()
        .unwrap()
}

fn time_breaker() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder("bench")
        .sliding_window(SlidingWindow::Time(60))
        .track_slow_calls(false)
        .build()
        .unwrap()
}

/// Every contender, built fresh so that multi-thread runs share one breaker or semaphore.
fn contenders() -> Vec<(&'static str, Contender)> {
    vec![
        ("bare", Contender::Bare(Noop)),
        (
            "concurrency_limit",
            Contender::Limit(ConcurrencyLimit::new(Noop, 1024)),
        ),
        (
            "breaker_default",
            Contender::Breaker(count_breaker().layer(Noop)),
        ),
        (
            "breaker_untimed",
            Contender::Breaker(untimed_breaker().layer(Noop)),
        ),
        (
            "breaker_time_window_untimed",
            Contender::Breaker(time_breaker().layer(Noop)),
        ),
    ]
}

#[derive(Clone)]
enum Contender {
    Bare(Noop),
    Limit(ConcurrencyLimit<Noop>),
    Breaker(brace_circuit::CircuitBreaker<Noop>),
}

impl Contender {
    fn run(&mut self, iters: u64) {
        match self {
            Self::Bare(s) => run(s, iters),
            Self::Limit(s) => run(s, iters),
            Self::Breaker(s) => run(s, iters),
        }
    }
}

fn run<S: Service<u64, Response = u64>>(service: &mut S, iters: u64) {
    for i in 0..iters {
        assert!(black_box(one_call(service, black_box(i))));
    }
}

fn single_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("closed_breaker/1_thread");
    for (name, mut service) in contenders() {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                service.run(iters);
                start.elapsed()
            });
        });
    }
    // What one clock read costs here: a default breaker reads it twice per call (to time
    // slow calls), an untimed count-window breaker never, an untimed time-window one once.
    group.bench_function("clock_read", |b| b.iter(|| black_box(Instant::now())));
    group.finish();
}

/// `threads` threads share one service (one breaker, one semaphore); the time reported is
/// wall time per call across all threads, so a flat line means throughput scales.
fn shared(c: &mut Criterion) {
    let mut group = c.benchmark_group("closed_breaker/shared");
    for threads in [2u64, 4] {
        for (name, service) in contenders() {
            group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &threads| {
                b.iter_custom(|iters| {
                    let per_thread = iters.div_ceil(threads);
                    let start = Instant::now();
                    std::thread::scope(|scope| {
                        for _ in 0..threads {
                            let mut service = service.clone();
                            scope.spawn(move || service.run(per_thread));
                        }
                    });
                    let elapsed = start.elapsed();
                    // Report per call of all threads together.
                    Duration::from_secs_f64(
                        elapsed.as_secs_f64() * iters as f64 / (per_thread * threads) as f64,
                    )
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, single_thread, shared);
criterion_main!(benches);
