//! Overhead of the degradation layer: the full level (cache fill included) against the bare
//! service, and an answer from the cached level, for a 1 KiB prompt.
//!
//! Run with: `cargo bench -p brace-degrade --bench degrade -- --warm-up-time 1 --measurement-time 2`
#![allow(missing_docs, unreachable_pub)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;

use brace_degrade::DegradeLayer;
use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use support::{Backend, Mode, Req};
use tower::{Layer, Service};

fn call<S: Service<Req>>(svc: &mut S, req: Req) -> S::Response
where
    S::Error: std::fmt::Debug,
{
    let ready = std::future::poll_fn(|cx| svc.poll_ready(cx));
    ready.now_or_never().expect("ready").expect("no error");
    svc.call(req)
        .now_or_never()
        .expect("answers at once")
        .expect("no error")
}

fn bench(c: &mut Criterion) {
    let prompt = "x".repeat(1024);
    let req = Req::new(&prompt);
    let backend = Backend::new(Mode::Healthy);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();

    let mut group = c.benchmark_group("degrade_1KiB_prompt");
    let mut bare = backend.service();
    group.bench_function("bare_service", |b| {
        b.iter(|| black_box(call(&mut bare, black_box(req.clone()))));
    });

    let layer = DegradeLayer::<Req>::from_config(&support::config()).unwrap();
    let mut full = layer.clone().layer(backend.service());
    group.bench_function("full_level_with_cache_fill", |b| {
        b.iter(|| black_box(call(&mut full, black_box(req.clone()))));
    });

    let cached_layer = DegradeLayer::<Req>::from_config(&support::config()).unwrap();
    let mut cached = cached_layer.clone().layer(backend.service());
    call(&mut cached, req.clone());
    cached_layer.handle().pin("cached").unwrap();
    let hit = call(&mut cached, req.clone());
    assert_eq!(hit.origin(), brace_degrade::Origin::Cache);
    group.bench_function("cached_level_hit", |b| {
        b.iter(|| black_box(call(&mut cached, black_box(req.clone()))));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
