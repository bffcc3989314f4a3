//! One truth per provider: failover services built from one registry share each provider's
//! circuit, counters and active check; exclusions and the deadline set above are honoured.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use brace_circuit::{CircuitBreakerLayer, CircuitState};
use brace_core::exclude::{self, Excluded, Exclusions};
use brace_core::{AllProvidersFailed, BoxError, CircuitOpen, FailureClass};
use brace_failover::{FailoverService, Provider, ProviderRegistry};
use support::{Sim, Status, Step, TestClassifier, new_log};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

fn layer(name: &str) -> brace_circuit::CircuitBreakerLayer<TestClassifier> {
    CircuitBreakerLayer::builder(name)
        .consecutive_failures(1)
        .wait_in_open(Duration::from_secs(30))
        .classifier(TestClassifier)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn two_services_from_one_registry_share_each_providers_circuit_and_counters() {
    let log = new_log();
    let a = Sim::new("a", &log, |_| Step::fail(Status::new(503)));
    let b = Sim::new("b", &log, |_| Step::ok());
    let registry = ProviderRegistry::new();
    let (a_breaker, b_breaker) = (layer("a"), layer("b"));
    // Two routes over the same two providers (the second in the other order).
    let route = |first_a: bool| {
        let pa = Provider::new("a", a_breaker.layer(a.clone())).circuit(a_breaker.handle());
        let pb = Provider::new("b", b_breaker.layer(b.clone())).circuit(b_breaker.handle());
        let (pa, pb) = if first_a {
            (pa.priority(0), pb.priority(1))
        } else {
            (pa.priority(1), pb.priority(0))
        };
        FailoverService::builder()
            .registry(registry.clone())
            .classifier(TestClassifier)
            .provider(pa)
            .provider(pb)
            .build()
            .unwrap()
    };
    let one = route(true);
    let two = route(false);

    // Route one opens a's circuit...
    assert_eq!(one.clone().oneshot(()).await.unwrap(), "b");
    assert_eq!(a.calls(), 1);
    // ...and route two, whose own order would have tried a after b fails, sees it open.
    b.set_script(|_| Step::fail(Status::new(500)));
    let err = two.clone().oneshot(()).await.unwrap_err();
    let all = err.downcast_ref::<AllProvidersFailed>().unwrap();
    let skipped: Vec<_> = all.skipped().map(|f| f.name.to_string()).collect();
    assert_eq!(skipped, ["a"]);
    assert!(all.skipped().all(|f| f.error.is::<CircuitOpen>()));
    assert_eq!(a.calls(), 1, "no second call to a through the other route");

    // Both routes report the same counters: the registry's.
    let health = registry.health();
    assert_eq!(health.len(), 2);
    assert_eq!(
        (health[1].calls, health[1].successes, health[1].failures),
        (2, 1, 1)
    );
    // Only the priority differs: each route gives b its own.
    let (b_one, b_two) = (one.health()[1].clone(), two.health()[1].clone());
    assert_eq!((b_one.priority, b_two.priority), (Some(1), Some(0)));
    assert_eq!(b_one, {
        let mut b = b_two;
        b.priority = Some(1);
        b
    });
    assert_eq!(health[0].circuit, Some(CircuitState::Open));
}

#[tokio::test]
async fn a_provider_cannot_have_two_breakers_in_one_registry() {
    let log = new_log();
    let registry = ProviderRegistry::new();
    let sim = Sim::new("a", &log, |_| Step::ok());
    let (first, second) = (layer("a"), layer("a"));
    FailoverService::builder()
        .registry(registry.clone())
        .provider(Provider::new("a", first.layer(sim.clone())).circuit(first.handle()))
        .build()
        .unwrap();
    let err = FailoverService::builder()
        .registry(registry)
        .provider(Provider::new("a", second.layer(sim)).circuit(second.handle()))
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("already has another circuit breaker"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn one_active_check_per_provider_however_many_services_share_it() {
    let log = new_log();
    let probes = Arc::new(AtomicUsize::new(0));
    let probe = {
        let probes = probes.clone();
        move |_: Arc<str>| {
            probes.fetch_add(1, Ordering::SeqCst);
            async { Ok::<(), BoxError>(()) }
        }
    };
    let registry = ProviderRegistry::new();
    let services: Vec<_> = (0..3)
        .map(|_| {
            FailoverService::builder()
                .registry(registry.clone())
                .provider(Provider::new("a", Sim::new("a", &log, |_| Step::ok())))
                .probe(Duration::from_secs(1), probe.clone())
                .build()
                .unwrap()
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        probes.load(Ordering::SeqCst),
        3,
        "one check a second, not three"
    );
    drop(services);
    // The check belongs to the provider's record, which the registry keeps.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(probes.load(Ordering::SeqCst), 4);
    drop(registry);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(probes.load(Ordering::SeqCst), 4, "stops with the record");
}

#[tokio::test(start_paused = true)]
async fn excluded_providers_are_skipped_and_named_with_why() {
    let log = new_log();
    let a = Sim::new("a", &log, |_| Step::ok());
    let b = Sim::new("b", &log, |_| Step::fail(Status::new(503)));
    let svc = FailoverService::builder()
        .classifier(TestClassifier)
        .provider(Provider::new("a", a.clone()))
        .provider(Provider::new("b", b.clone()).priority(1))
        .build()
        .unwrap();
    let exclusions = Exclusions::new([("a", Excluded::new("reduced", FailureClass::RateLimited))]);
    let err = exclude::within(exclusions, svc.clone().oneshot(()))
        .await
        .unwrap_err();
    assert_eq!(a.calls(), 0);
    assert_eq!(b.calls(), 1);
    let all = err.downcast_ref::<AllProvidersFailed>().unwrap();
    let skipped = all.skipped().next().unwrap();
    assert_eq!(&*skipped.name, "a");
    let why = skipped.error.downcast_ref::<Excluded>().unwrap();
    assert_eq!(
        (why.pass(), why.class()),
        ("reduced", FailureClass::RateLimited)
    );
    // Outside the scope nothing is excluded.
    assert_eq!(svc.oneshot(()).await.unwrap(), "a");
}

#[tokio::test(start_paused = true)]
async fn no_provider_is_started_after_the_deadline() {
    let log = new_log();
    let a = Sim::new("a", &log, |_| {
        Step::fail(Status::new(503)).after(Duration::from_secs(2))
    });
    let b = Sim::new("b", &log, |_| Step::ok());
    let svc = FailoverService::builder()
        .classifier(TestClassifier)
        .provider(Provider::new("a", a))
        .provider(Provider::new("b", b.clone()).priority(1))
        .build()
        .unwrap();
    // a fails at 2 s, after the 1 s deadline: b is not started.
    let started = Instant::now();
    let err =
        brace_core::deadline::within(started + Duration::from_secs(1), svc.clone().oneshot(()))
            .await
            .unwrap_err();
    assert_eq!(b.calls(), 0);
    let all = err.downcast_ref::<AllProvidersFailed>().unwrap();
    let skipped = all.skipped().next().unwrap();
    assert!(skipped.error.is::<brace_core::DeadlineExceeded>(), "{err}");
    // With time left, b answers.
    let answer =
        brace_core::deadline::within(Instant::now() + Duration::from_secs(5), svc.oneshot(()))
            .await
            .unwrap();
    assert_eq!(answer, "b");
}

#[tokio::test(start_paused = true)]
async fn no_hedge_is_sent_that_would_start_after_the_deadline() {
    let log = new_log();
    let slow = Sim::new("slow", &log, |_| Step::ok().after(Duration::from_secs(3)));
    let fast = Sim::new("fast", &log, |_| Step::ok());
    let svc = FailoverService::builder()
        .provider(Provider::new("slow", slow))
        .provider(Provider::new("fast", fast.clone()).priority(1))
        .hedge(brace_failover::HedgeConfig::after(Duration::from_secs(2)))
        .build()
        .unwrap();
    let answer = brace_core::deadline::within(
        Instant::now() + Duration::from_secs(1),
        svc.clone().oneshot(()),
    )
    .await
    .unwrap();
    assert_eq!(
        answer, "slow",
        "the deadline here is not enforced by failover itself"
    );
    assert_eq!(
        fast.calls(),
        0,
        "a hedge at 2 s would start after the 1 s deadline"
    );
    assert_eq!(
        svc.oneshot(()).await.unwrap(),
        "fast",
        "without a deadline it hedges"
    );
}

#[tokio::test(start_paused = true)]
async fn a_providers_active_check_can_be_stopped() {
    let registry = ProviderRegistry::new();
    let entry = registry.entry("a");
    let probes = Arc::new(AtomicUsize::new(0));
    let probe = {
        let probes = probes.clone();
        move |_name: Arc<str>| {
            probes.fetch_add(1, Ordering::SeqCst);
            async { Ok::<(), BoxError>(()) }
        }
    };
    registry.probe(Duration::from_secs(1), &probe).unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let before = probes.load(Ordering::SeqCst);
    assert!(before >= 3, "probed {before} times in 3.5 s");
    assert!(entry.is_probed());

    entry.stop_probe();
    tokio::task::yield_now().await;
    assert!(!entry.is_probed());
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(probes.load(Ordering::SeqCst), before);
}

/// A store that records which circuits it was handed.
#[derive(Debug, Default)]
struct Recording(parking_lot::Mutex<Vec<String>>);

impl brace_failover::StateStore for Recording {
    fn kind(&self) -> &'static str {
        "recording"
    }

    fn share_circuit(&self, provider: &str, circuit: &brace_circuit::CircuitHandle) {
        assert_eq!(provider, circuit.name());
        self.0.lock().push(provider.to_owned());
    }
}

#[tokio::test(start_paused = true)]
async fn a_registry_with_a_store_hands_it_each_providers_circuit_once() {
    let log = new_log();
    let a = Sim::new("a", &log, |_| Step::ok());
    let store = Arc::new(Recording::default());
    let registry = ProviderRegistry::new().with_store(store.clone());
    assert_eq!(registry.store().kind(), "recording");
    let breaker = layer("a");
    for _ in 0..2 {
        FailoverService::builder()
            .registry(registry.clone())
            .classifier(TestClassifier)
            .provider(Provider::new("a", breaker.layer(a.clone())).circuit(breaker.handle()))
            .build()
            .unwrap();
    }
    assert_eq!(*store.0.lock(), ["a"]);
    assert_eq!(ProviderRegistry::new().store().kind(), "memory");
}
