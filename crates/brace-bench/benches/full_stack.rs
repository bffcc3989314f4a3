//! The whole stack in-process: degrade → failover (3 providers) → circuit breaker → retry →
//! timeout over an instant in-process [`SimProvider`], against the bare provider and against a
//! plain tower stack (`tower::retry` with a trivial policy + `tower::timeout`) in the same
//! group, so every result reads as a ratio to a baseline measured in the same run.
//!
//! Four groups:
//! - `full_stack_success`: every call succeeds at once.
//! - `full_stack_one_retry`: every request's first attempt fails (a retryable 503-like
//!   `Overloaded`) and its second succeeds; the baseline is the bare provider called twice.
//! - `full_stack_open_circuit`: the primary's breaker is forced open through its
//!   `CircuitHandle`; every request skips it and is answered by the secondary.
//! - `full_stack_layers`: the success path built up one layer at a time (timeout, retry,
//!   breaker, failover, degrade), so each layer's cost is the step from the row before.
//!
//! The stacks are built in `common/mod.rs`, shared with the `instructions` bench (the same
//! stacks, counted in instructions under valgrind instead of timed).
//!
//! Run with:
//! `CARGO_TARGET_DIR=/work/targets/bench cargo bench -p brace-bench --bench full_stack -- --warm-up-time 1 --measurement-time 2`
#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

mod common;

use std::hint::black_box;
use std::sync::atomic::Ordering;

use brace_llm::{ChatRequest, ChatResponse};
use brace_sim::{SimConfig, SimProvider};
use common::{
    Backend, brace_stack, failover_stack, gateway, one_call, provider_stack, request,
    retry_timeout, timeout_only, tower_stack,
};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tokio::time::Instant;
use tower::Service;

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

/// The success path built up one layer at a time, so each layer's cost is the difference
/// between two neighbouring rows measured in the same group.
fn layers(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("full_stack_layers");
    bench(&mut group, &rt, "0_bare_provider", Backend::ok("bare"));
    bench(&mut group, &rt, "1_timeout", timeout_only(Backend::ok("t")));
    bench(
        &mut group,
        &rt,
        "2_retry_timeout",
        retry_timeout(Backend::ok("r")),
    );
    let (breaker, _) = provider_stack("breaker", Backend::ok("breaker"), true);
    bench(&mut group, &rt, "3_breaker_retry_timeout", breaker);
    bench(
        &mut group,
        &rt,
        "4_failover_breaker_retry_timeout",
        failover_stack(),
    );
    let (full, _) = brace_stack(Backend::ok("primary"), true, false);
    bench(
        &mut group,
        &rt,
        "5_degrade_failover_breaker_retry_timeout",
        full,
    );
    group.finish();
}

criterion_group!(benches, success, one_retry, open_circuit, layers);
criterion_main!(benches);
