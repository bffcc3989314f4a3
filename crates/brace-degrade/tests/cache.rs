//! The response cache: bounds, time to live, streams teed into it and replayed from it.

mod support;

use std::time::Duration;

use brace_core::BoxError;
use brace_core::degrade::Origin;
use brace_degrade::{CacheConfig, CacheKey, DegradeLayer, ResponseCache};
use futures::StreamExt;
use support::{Backend, Body, Mode, Req, Resp};
use tower::{Layer, Service, ServiceExt};

async fn ask<S>(svc: &mut S, req: Req) -> Result<Resp, BoxError>
where
    S: Service<Req, Response = Resp, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

fn key(i: usize) -> CacheKey {
    CacheKey::of(&Req::new(&format!("prompt {i}"))).unwrap()
}

#[test]
fn equal_canonical_forms_share_a_key_and_different_ones_do_not() {
    let a = Req {
        user: Some("alice".into()),
        stream: true,
        ..Req::new("hello")
    };
    let b = Req::new("hello");
    assert_eq!(CacheKey::of(&a), CacheKey::of(&b));
    assert_ne!(CacheKey::of(&a), CacheKey::of(&Req::new("hello!")));
}

#[test]
fn byte_bound_evicts_entries_beyond_max_bytes() {
    let cache = ResponseCache::<String>::new(&CacheConfig {
        max_entries: 1_000,
        max_bytes: 10_000,
        ..CacheConfig::default()
    });
    for i in 0..100 {
        cache.insert(key(i), "x".repeat(1_000), 1_000);
        cache.sync();
    }
    cache.sync();
    assert!(cache.weighted_size() <= 10_000, "{cache:?}");
    assert!(cache.entry_count() <= 10, "{cache:?}");
    assert!(cache.entry_count() > 0, "{cache:?}");
}

#[test]
fn entry_bound_holds_for_small_entries() {
    let cache = ResponseCache::<String>::new(&CacheConfig {
        max_entries: 4,
        max_bytes: 1 << 20,
        ..CacheConfig::default()
    });
    for i in 0..50 {
        cache.insert(key(i), "tiny".into(), 4);
        cache.sync();
    }
    assert!(cache.entry_count() <= 4, "{cache:?}");
    assert!(cache.entry_count() > 0, "{cache:?}");
}

#[test]
fn an_entry_larger_than_the_cache_is_not_stored() {
    let cache = ResponseCache::<String>::new(&CacheConfig {
        max_bytes: 100,
        max_entries: 10,
        ..CacheConfig::default()
    });
    cache.insert(key(0), "x".repeat(101), 101);
    cache.sync();
    assert!(!cache.contains(&key(0)));
    cache.insert(key(1), "x".repeat(10), 10);
    assert!(cache.contains(&key(1)));
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_the_ttl() {
    let cache = ResponseCache::<String>::new(&CacheConfig {
        ttl: Duration::from_mins(1),
        ..CacheConfig::default()
    });
    cache.insert(key(0), "answer".into(), 6);
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(
        cache.get_with(&key(0), Clone::clone).as_deref(),
        Some("answer")
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(cache.get_with(&key(0), Clone::clone).is_none());
}

#[tokio::test(start_paused = true)]
async fn an_expired_entry_makes_the_cached_level_fall_through() {
    let backend = Backend::new(Mode::Healthy);
    let layer = DegradeLayer::<Req>::builder()
        .config(support::config())
        .build()
        .unwrap();
    let mut svc = layer.clone().layer(backend.service());
    ask(&mut svc, Req::new("hello")).await.unwrap();
    layer.handle().pin("cached").unwrap();
    assert_eq!(
        ask(&mut svc, Req::new("hello")).await.unwrap().origin(),
        Origin::Cache
    );
    tokio::time::advance(Duration::from_secs(601)).await;
    assert_eq!(
        ask(&mut svc, Req::new("hello")).await.unwrap().origin(),
        Origin::Static
    );
}

#[tokio::test]
async fn a_stream_is_cached_once_complete_and_replayed_as_a_stream() {
    let backend = Backend::new(Mode::Streaming);
    let layer = DegradeLayer::<Req>::builder()
        .config(support::config())
        .build()
        .unwrap();
    let cache = layer.cache().unwrap().clone();
    let mut svc = layer.clone().layer(backend.service());
    let req = Req {
        stream: true,
        ..Req::new("hello")
    };
    let key = CacheKey::of(&req).unwrap();

    let resp = ask(&mut svc, req.clone()).await.unwrap();
    assert!(resp.is_stream());
    assert!(
        !cache.contains(&key),
        "not cached before the stream completes"
    );
    assert_eq!(resp.text().await.unwrap(), "answer in pieces");
    assert!(cache.contains(&key));

    layer.handle().pin("cached").unwrap();
    let replay = ask(&mut svc, req.clone()).await.unwrap();
    assert_eq!(replay.origin(), Origin::Cache);
    assert!(replay.is_stream());
    assert_eq!(replay.text().await.unwrap(), "answer in pieces");

    let whole = ask(
        &mut svc,
        Req {
            stream: false,
            ..req
        },
    )
    .await
    .unwrap();
    assert!(
        !whole.is_stream(),
        "a caller who asked for no stream gets a whole answer"
    );
    assert_eq!(whole.text().await.unwrap(), "answer in pieces");
    assert_eq!(backend.calls(), 1);
}

#[tokio::test]
async fn a_stream_dropped_early_is_not_cached() {
    let backend = Backend::new(Mode::Streaming);
    let layer = DegradeLayer::<Req>::builder()
        .config(support::config())
        .build()
        .unwrap();
    let cache = layer.cache().unwrap().clone();
    let mut svc = layer.layer(backend.service());
    let req = Req {
        stream: true,
        ..Req::new("hello")
    };
    let resp = ask(&mut svc, req.clone()).await.unwrap();
    let Body::Stream(mut stream) = resp.body else {
        panic!("expected a stream");
    };
    assert_eq!(stream.next().await.unwrap().unwrap(), "answer ");
    drop(stream);
    assert!(!cache.contains(&CacheKey::of(&req).unwrap()));
}

#[tokio::test]
async fn a_disabled_cache_stores_nothing_and_the_cached_level_misses() {
    let backend = Backend::new(Mode::Healthy);
    let config = brace_degrade::DegradeConfig {
        cache: CacheConfig {
            enabled: false,
            ..CacheConfig::default()
        },
        ..support::config()
    };
    let layer = DegradeLayer::<Req>::builder()
        .config(config.clone())
        .build()
        .unwrap();
    assert!(layer.cache().is_none());
    let mut svc = layer.clone().layer(backend.service());
    ask(&mut svc, Req::new("hello")).await.unwrap();
    layer.handle().pin("cached").unwrap();
    assert_eq!(
        ask(&mut svc, Req::new("hello")).await.unwrap().origin(),
        Origin::Static
    );
}
