//! What replicas share through a store: the cache's second tier (an answer stored by one
//! serves another at the cached level) and the pinned level.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brace_core::BoxError;
use brace_core::degrade::Origin;
use brace_degrade::{CacheKey, CacheTier, DegradeLayer, TierFuture};
use support::{Backend, Mode, Req, Resp};
use tower::{Layer, Service, ServiceExt};

async fn ask<S>(svc: &mut S, req: Req) -> Result<Resp, BoxError>
where
    S: Service<Req, Response = Resp, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

/// A tier in a map, as a shared store would hold it.
#[derive(Default)]
struct MapTier {
    entries: Mutex<HashMap<CacheKey, (String, Duration)>>,
    gets: Mutex<u32>,
}

impl CacheTier<String> for MapTier {
    fn get(&self, key: &CacheKey) -> TierFuture<String> {
        *self.gets.lock().unwrap() += 1;
        let found = self
            .entries
            .lock()
            .unwrap()
            .get(key)
            .map(|(v, _)| v.clone());
        Box::pin(std::future::ready(found))
    }

    fn put(&self, key: &CacheKey, value: &String, ttl: Duration) {
        self.entries
            .lock()
            .unwrap()
            .insert(*key, (value.clone(), ttl));
    }
}

#[tokio::test]
async fn an_answer_stored_by_one_replica_serves_another_at_the_cached_level() {
    let tier = Arc::new(MapTier::default());
    let replica = || {
        DegradeLayer::<Req>::builder()
            .config(support::config())
            .cache_tier(tier.clone())
            .build()
            .unwrap()
    };
    let (a, b) = (replica(), replica());
    let backend = Backend::new(Mode::Healthy);
    let mut svc_a = a.layer(backend.service());
    let mut svc_b = b.layer(backend.service());

    // A answers live: the answer goes to A's cache and to the tier, for the cache's TTL.
    let live = ask(&mut svc_a, Req::new("hello")).await.unwrap();
    assert_eq!(live.origin(), Origin::Live);
    let key = CacheKey::of(&Req::new("hello")).unwrap();
    assert_eq!(
        tier.entries.lock().unwrap().get(&key).map(|(_, ttl)| *ttl),
        Some(Duration::from_mins(10))
    );

    // B, pinned to the cached level, has nothing locally: the tier answers, and B keeps it.
    b.handle().pin("cached").unwrap();
    assert!(!b.cache().unwrap().contains(&key));
    let served = ask(&mut svc_b, Req::new("hello")).await.unwrap();
    assert_eq!(served.origin(), Origin::Cache);
    assert_eq!(served.level(), "cached");
    assert!(b.cache().unwrap().contains(&key));
    assert_eq!(*tier.gets.lock().unwrap(), 1);
    // The next hit is local.
    ask(&mut svc_b, Req::new("hello")).await.unwrap();
    assert_eq!(*tier.gets.lock().unwrap(), 1);

    // Nothing in either tier: the cached level falls through to the static one.
    let missed = ask(&mut svc_b, Req::new("other")).await.unwrap();
    assert_eq!(missed.origin(), Origin::Static);
}

#[tokio::test]
async fn answers_the_cache_does_not_admit_go_to_neither_tier() {
    let tier = Arc::new(MapTier::default());
    let layer = DegradeLayer::<Req>::builder()
        .config(support::config())
        .cache_tier(tier.clone())
        .build()
        .unwrap();
    let mut svc = layer.layer(Backend::new(Mode::Healthy).service());
    let sampled = Req {
        deterministic: false,
        ..Req::new("hello")
    };
    ask(&mut svc, sampled).await.unwrap();
    assert!(tier.entries.lock().unwrap().is_empty());
}

#[tokio::test]
async fn pins_are_announced_and_remote_pins_are_applied_without_echo() {
    let layer = DegradeLayer::<Req>::builder()
        .config(support::config())
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut pins = handle.subscribe_pins();

    handle.pin("cached").unwrap();
    let change = pins.try_recv().unwrap();
    assert_eq!(
        change.level().map(brace_degrade::LevelRef::name),
        Some("cached")
    );
    assert!(!change.is_remote());
    handle.release();
    assert_eq!(pins.try_recv().unwrap().level(), None);

    handle.apply_remote_pin(Some("minimal")).unwrap();
    assert!(handle.is_pinned());
    assert_eq!(handle.level().name(), "minimal");
    let change = pins.try_recv().unwrap();
    assert!(change.is_remote());
    // The same pin again changes nothing and says nothing.
    handle.apply_remote_pin(Some("minimal")).unwrap();
    assert!(pins.try_recv().is_err());

    handle.apply_remote_pin(None).unwrap();
    assert!(!handle.is_pinned());
    assert!(pins.try_recv().unwrap().is_remote());
    assert!(handle.apply_remote_pin(Some("nope")).is_err());
}
