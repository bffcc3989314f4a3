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
use support::{Req, Resp};
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
    // A provider that answers at once with a 1 KiB answer: the bare cost to compare with.
    let answer: std::sync::Arc<str> = "y".repeat(1024).into();
    let backend = move || {
        let answer = answer.clone();
        tower::service_fn(move |_: Req| {
            futures::future::ready(Ok::<_, brace_core::BoxError>(Resp::whole(&answer)))
        })
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();

    let mut group = c.benchmark_group("degrade_1KiB_prompt");
    let mut bare = backend();
    group.bench_function("bare_service", |b| {
        b.iter(|| black_box(call(&mut bare, black_box(req.clone()))));
    });

    let layer = DegradeLayer::<Req>::builder()
        .config(support::config())
        .build()
        .unwrap();
    let mut full = layer.clone().layer(backend());
    group.bench_function("full_level_with_cache_fill", |b| {
        b.iter(|| black_box(call(&mut full, black_box(req.clone()))));
    });

    let cached_layer = DegradeLayer::<Req>::builder()
        .config(support::config())
        .build()
        .unwrap();
    let mut cached = cached_layer.clone().layer(backend());
    call(&mut cached, req.clone());
    cached_layer.handle().pin("cached").unwrap();
    let hit = call(&mut cached, req.clone());
    assert_eq!(hit.origin(), brace_degrade::Origin::Cache);
    group.bench_function("cached_level_hit", |b| {
        b.iter(|| black_box(call(&mut cached, black_box(req.clone()))));
    });
    group.finish();

    // Where a hit's time goes.
    let mut parts = c.benchmark_group("degrade_parts");
    parts.bench_function("cache_key_1KiB", |b| {
        b.iter(|| black_box(brace_degrade::CacheKey::of(black_box(&req))));
    });
    let bytes = vec![b'x'; 1024];
    parts.bench_function("blake3_1KiB", |b| {
        b.iter(|| black_box(blake3::hash(black_box(&bytes))));
    });
    let cache = cached_layer.cache().unwrap();
    let key = brace_degrade::CacheKey::of(&req).unwrap();
    parts.bench_function("cache_get", |b| {
        b.iter(|| black_box(cache.get_with(black_box(&key), String::len)));
    });
    parts.bench_function("tokio_instant_now", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()));
    });
    parts.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
