//! FailoverService over simulated providers, with paused time.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use brace_circuit::{CircuitBreaker, CircuitBreakerLayer, CircuitState};
use brace_core::{AllProvidersFailed, BoxError, CircuitOpen, ProviderFailure};
use brace_failover::{
    FailoverBuildError, FailoverService, HedgeConfig, PreferredProvider, Provider,
    ProviderRegistry, Selection,
};
use support::{Sim, Status, Step, TestClassifier, new_log};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// A simulated provider behind its circuit breaker.
type Guarded = CircuitBreaker<Sim, TestClassifier>;

type Failover<P = brace_failover::NoPreference> =
    FailoverService<Guarded, TestClassifier, brace_core::commit::Immediate, P>;

/// The breaker each provider gets: open after `failures` failures in a row, for `wait`.
#[derive(Clone, Copy)]
struct Breaker {
    failures: u32,
    wait: Duration,
}

fn breaker(failures: u32, wait: Duration) -> Breaker {
    Breaker { failures, wait }
}

/// Puts `provider` behind a breaker made from `spec`, attached as its circuit.
fn guarded(provider: Provider<Sim>, spec: Breaker) -> Provider<Guarded> {
    let layer = CircuitBreakerLayer::builder(provider.name())
        .consecutive_failures(spec.failures)
        .wait_in_open(spec.wait)
        .classifier(TestClassifier)
        .build()
        .unwrap();
    let handle = layer.handle();
    provider.map_service(|sim| layer.layer(sim)).circuit(handle)
}

fn build(providers: Vec<Provider<Sim>>, spec: Breaker) -> Failover {
    FailoverService::builder()
        .providers(providers.into_iter().map(|p| guarded(p, spec)))
        .classifier(TestClassifier)
        .build()
        .unwrap()
}

async fn send<S: Service<String, Error = BoxError>>(svc: &mut S) -> Result<S::Response, BoxError> {
    svc.ready().await?.call("hello".to_owned()).await
}

fn failures(err: &BoxError) -> Vec<(String, String)> {
    err.downcast_ref::<AllProvidersFailed>()
        .expect("all providers failed")
        .failures()
        .iter()
        .map(|f: &ProviderFailure| (f.name.to_string(), f.error.to_string()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn tries_providers_by_priority_and_moves_on_after_failures() {
    let log = new_log();
    let a = Sim::new("a", &log, |_| Step::fail(Status::new(503)));
    let b = Sim::new("b", &log, |_| Step::fail(Status::new(500)));
    let c = Sim::new("c", &log, |_| Step::ok());
    // Added out of order: priority decides.
    let mut svc = build(
        vec![
            Provider::new("c", c).priority(2),
            Provider::new("a", a).priority(0),
            Provider::new("b", b).priority(1),
        ],
        breaker(3, Duration::from_secs(30)),
    );
    assert_eq!(send(&mut svc).await.unwrap(), "c");
    assert_eq!(*log.lock(), ["a", "b", "c"]);
}

#[tokio::test(start_paused = true)]
async fn skips_a_provider_whose_circuit_is_open_until_its_wait_passes() {
    let log = new_log();
    let a = Sim::new("a", &log, |n| {
        if n == 0 {
            Step::fail(Status::new(503))
        } else {
            Step::ok()
        }
    });
    let b = Sim::new("b", &log, |_| Step::ok());
    let mut svc = build(
        vec![
            Provider::new("a", a.clone()),
            Provider::new("b", b.clone()).priority(1),
        ],
        breaker(1, Duration::from_secs(30)),
    );

    assert_eq!(send(&mut svc).await.unwrap(), "b");
    assert!(!svc.health()[0].healthy);
    assert_eq!(svc.health()[0].unhealthy_for, Some(Duration::from_secs(30)));

    // While its circuit is open it is not called at all.
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(send(&mut svc).await.unwrap(), "b");
    assert_eq!(a.calls(), 1);

    // After the open wait the next request is its half-open trial; a success closes it.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(send(&mut svc).await.unwrap(), "a");
    assert_eq!(a.calls(), 2);
    assert!(svc.health()[0].healthy);
    assert_eq!(svc.health()[0].circuit, Some(CircuitState::Closed));
    assert_eq!(*log.lock(), ["a", "b", "b", "a"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_opens_the_circuit_again_at_once() {
    let log = new_log();
    let a = Sim::new("a", &log, |_| Step::fail(Status::new(502)));
    let b = Sim::new("b", &log, |_| Step::ok());
    let mut svc = build(
        vec![
            Provider::new("a", a.clone()),
            Provider::new("b", b).priority(1),
        ],
        breaker(2, Duration::from_secs(10)),
    );
    send(&mut svc).await.unwrap();
    assert!(svc.health()[0].healthy, "one failure of two allowed");
    send(&mut svc).await.unwrap();
    assert!(!svc.health()[0].healthy);

    tokio::time::advance(Duration::from_secs(10)).await;
    send(&mut svc).await.unwrap();
    assert_eq!(a.calls(), 3, "tried once after recovery");
    assert!(
        !svc.health()[0].healthy,
        "a single trial failure trips it again"
    );
    send(&mut svc).await.unwrap();
    assert_eq!(a.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_failure_rate_over_the_breakers_window_takes_a_provider_out() {
    let log = new_log();
    // Every other call fails: never two in a row, but a 50 % failure rate.
    let a = Sim::new("a", &log, |n| {
        if n % 2 == 0 {
            Step::fail(Status::new(503))
        } else {
            Step::ok()
        }
    });
    let b = Sim::new("b", &log, |_| Step::ok());
    let layer = CircuitBreakerLayer::builder("a")
        .sliding_window(brace_circuit::SlidingWindow::Count(10))
        .minimum_calls(10)
        .failure_rate_threshold(50.0)
        .classifier(TestClassifier)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc: Failover = FailoverService::builder()
        .provider(Provider::new("a", layer.layer(a.clone())).circuit(handle))
        .provider(guarded(
            Provider::new("b", b).priority(1),
            breaker(5, Duration::from_secs(30)),
        ))
        .classifier(TestClassifier)
        .build()
        .unwrap();
    for _ in 0..9 {
        send(&mut svc).await.unwrap();
    }
    assert!(svc.health()[0].healthy, "fewer than minimum_calls");
    send(&mut svc).await.unwrap();
    assert_eq!(a.calls(), 10);
    assert!(!svc.health()[0].healthy, "5 of the last 10 failed");
    send(&mut svc).await.unwrap();
    assert_eq!(a.calls(), 10, "skipped while open");
}

#[tokio::test(start_paused = true)]
async fn weighted_selection_matches_weights_within_five_percent() {
    let log = new_log();
    let sims = [("a", 1u32), ("b", 1), ("c", 2)];
    let providers = sims
        .iter()
        .map(|&(name, weight)| {
            Provider::new(name, Sim::new(name, &log, |_| Step::ok())).weight(weight)
        })
        .collect::<Vec<_>>();
    let handles: Vec<Sim> = providers.iter().map(|p| p.get_ref().clone()).collect();
    let mut svc = FailoverService::builder()
        .providers(providers)
        .selection(Selection::Weighted)
        .seed(7)
        .build()
        .unwrap();
    let total = 10_000;
    for _ in 0..total {
        send(&mut svc).await.unwrap();
    }
    for (sim, &(name, weight)) in handles.iter().zip(&sims) {
        let expected = f64::from(total) * f64::from(weight) / 4.0;
        let got = sim.calls() as f64;
        assert!(
            (got - expected).abs() <= 0.05 * expected,
            "{name}: {got} calls, expected {expected}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn weight_zero_provider_only_serves_when_weighted_ones_fail() {
    let log = new_log();
    let a = Sim::new("a", &log, |_| Step::ok());
    let b = Sim::new("b", &log, |_| Step::ok());
    let mut svc = FailoverService::builder()
        .provider(Provider::new("a", a.clone()).weight(0))
        .provider(Provider::new("b", b.clone()).weight(1))
        .selection(Selection::Weighted)
        .seed(1)
        .build()
        .unwrap();
    for _ in 0..50 {
        send(&mut svc).await.unwrap();
    }
    assert_eq!((a.calls(), b.calls()), (0, 50));
}

#[tokio::test(start_paused = true)]
async fn least_latency_prefers_the_faster_provider() {
    let log = new_log();
    let slow = Sim::new("slow", &log, |_| {
        Step::ok().after(Duration::from_millis(300))
    });
    let fast = Sim::new("fast", &log, |_| {
        Step::ok().after(Duration::from_millis(20))
    });
    let mut svc = FailoverService::builder()
        .provider(Provider::new("slow", slow.clone()))
        .provider(Provider::new("fast", fast.clone()))
        .selection(Selection::LeastLatency)
        .build()
        .unwrap();
    // Untried providers count as fastest, so each is sampled once, then fast wins.
    for _ in 0..20 {
        send(&mut svc).await.unwrap();
    }
    assert_eq!((slow.calls(), fast.calls()), (1, 19));
    let health = svc.health();
    assert_eq!(health[0].latency_ewma, Some(Duration::from_millis(300)));
    assert_eq!(health[1].latency_ewma, Some(Duration::from_millis(20)));
}

#[tokio::test(start_paused = true)]
async fn power_of_two_choices_avoids_the_slow_provider() {
    let log = new_log();
    let slow = Sim::new("slow", &log, |_| {
        Step::ok().after(Duration::from_millis(500))
    });
    let fast: Vec<Sim> = ["f1", "f2"]
        .into_iter()
        .map(|name| Sim::new(name, &log, |_| Step::ok().after(Duration::from_millis(10))))
        .collect();
    let mut svc = FailoverService::builder()
        .provider(Provider::new("slow", slow.clone()))
        .provider(Provider::new("f1", fast[0].clone()))
        .provider(Provider::new("f2", fast[1].clone()))
        .selection(Selection::PowerOfTwoChoices)
        .seed(3)
        .build()
        .unwrap();
    for _ in 0..300 {
        send(&mut svc).await.unwrap();
    }
    // Once it has a latency sample, slow loses every comparison it is drawn into.
    assert_eq!(slow.calls(), 1);
    assert!(fast[0].calls() > 100 && fast[1].calls() > 100);
}

#[tokio::test(start_paused = true)]
async fn cheapest_selection_uses_cost_and_falls_back_by_cost() {
    let log = new_log();
    let pricey = Sim::new("pricey", &log, |_| Step::ok());
    let cheap = Sim::new("cheap", &log, |_| Step::fail(Status::new(503)));
    let unpriced = Sim::new("unpriced", &log, |_| Step::ok());
    let mut svc = FailoverService::builder()
        .provider(Provider::new("unpriced", unpriced))
        .provider(Provider::new("pricey", pricey).cost(40.0))
        .provider(Provider::new("cheap", cheap).cost(2.0))
        .selection(Selection::Cheapest)
        .classifier(TestClassifier)
        .build()
        .unwrap();
    assert_eq!(send(&mut svc).await.unwrap(), "pricey");
    assert_eq!(*log.lock(), ["cheap", "pricey"]);
}

#[tokio::test(start_paused = true)]
async fn preferred_provider_is_tried_first_while_its_circuit_admits() {
    #[derive(Clone)]
    struct Req {
        extensions: http::Extensions,
    }
    let log = new_log();
    let a = Sim::new("a", &log, |_| Step::ok());
    let b = Sim::new("b", &log, |n| {
        if n == 0 {
            Step::ok()
        } else {
            Step::fail(Status::new(503))
        }
    });
    let preference: fn(&Req) -> Option<&str> = |req| {
        req.extensions
            .get::<PreferredProvider>()
            .map(PreferredProvider::name)
    };
    let spec = breaker(1, Duration::from_mins(1));
    let svc = FailoverService::builder()
        .provider(guarded(Provider::new("a", a), spec))
        .provider(guarded(Provider::new("b", b).priority(5), spec))
        .classifier(TestClassifier)
        .preference(preference)
        .build()
        .unwrap();
    let mut svc = tower::service_fn(move |_: String| {
        let mut req = Req {
            extensions: http::Extensions::new(),
        };
        req.extensions.insert(PreferredProvider::new("b"));
        svc.clone().oneshot(req)
    });

    // b is preferred and answers.
    assert_eq!(send(&mut svc).await.unwrap(), "b");
    // b fails: failover continues in the normal order.
    assert_eq!(send(&mut svc).await.unwrap(), "a");
    // b's circuit is open now: the preference is ignored rather than waiting on it.
    assert_eq!(send(&mut svc).await.unwrap(), "a");
    assert_eq!(*log.lock(), ["b", "b", "a", "a"]);
}

#[tokio::test(start_paused = true)]
async fn preferred_provider_from_http_request_extensions() {
    let log = new_log();
    let a = Sim::new("a", &log, |_| Step::ok());
    let b = Sim::new("b", &log, |_| Step::ok());
    let inner = FailoverService::builder()
        .provider(Provider::new("a", a))
        .provider(Provider::new("b", b))
        .preference(brace_failover::FromExtensions)
        .build()
        .unwrap();
    let mut svc = inner;
    let request = |preferred: &str| -> http::Request<String> {
        http::Request::builder()
            .extension(PreferredProvider::new(preferred))
            .body(String::new())
            .unwrap()
    };
    assert_eq!(
        ServiceExt::<http::Request<String>>::ready(&mut svc)
            .await
            .unwrap()
            .call(request("b"))
            .await
            .unwrap(),
        "b"
    );
    assert_eq!(
        ServiceExt::<http::Request<String>>::ready(&mut svc)
            .await
            .unwrap()
            .call(request("a"))
            .await
            .unwrap(),
        "a"
    );
    // An unknown name is no preference at all.
    assert_eq!(
        ServiceExt::<http::Request<String>>::ready(&mut svc)
            .await
            .unwrap()
            .call(request("zz"))
            .await
            .unwrap(),
        "a"
    );
    assert_eq!(*log.lock(), ["b", "a", "a"]);
}

#[tokio::test(start_paused = true)]
async fn a_successful_probe_ends_the_open_wait_early() {
    let log = new_log();
    let a = Sim::new("a", &log, |_| Step::fail(Status::new(503)));
    let b = Sim::new("b", &log, |_| Step::ok());
    let a_up = Arc::new(AtomicBool::new(false));
    let probes = Arc::new(AtomicUsize::new(0));
    let probe = {
        let (a_up, probes) = (a_up.clone(), probes.clone());
        move |name: Arc<str>| {
            let up = &*name != "a" || a_up.load(Ordering::SeqCst);
            probes.fetch_add(1, Ordering::SeqCst);
            async move {
                if up {
                    Ok(())
                } else {
                    Err(BoxError::from("probe failed"))
                }
            }
        }
    };
    let spec = breaker(1, Duration::from_hours(1));
    let mut svc: Failover = FailoverService::builder()
        .provider(guarded(Provider::new("a", a.clone()), spec))
        .provider(guarded(Provider::new("b", b).priority(1), spec))
        .classifier(TestClassifier)
        .probe(Duration::from_secs(5), probe)
        .build()
        .unwrap();
    assert_eq!(send(&mut svc).await.unwrap(), "b");
    assert!(!svc.health()[0].healthy);

    // A failing probe (at 5 s) changes nothing: the circuit's own wait decides.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    assert!(probes.load(Ordering::SeqCst) >= 2);
    assert!(!svc.health()[0].healthy);
    assert_eq!(svc.health()[0].probe_failures, 1);

    // The provider comes back; the next probe (at 10 s) moves its circuit to half-open long
    // before the hour is over, and the next request is its trial.
    a_up.store(true, Ordering::SeqCst);
    a.set_script(|_| Step::ok());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(svc.health()[0].circuit, Some(CircuitState::HalfOpen));
    assert!(svc.health()[0].healthy);
    assert_eq!(send(&mut svc).await.unwrap(), "a");
    assert_eq!(svc.health()[0].circuit, Some(CircuitState::Closed));
}

#[tokio::test(start_paused = true)]
async fn probe_task_stops_when_service_is_dropped() {
    let probes = Arc::new(AtomicUsize::new(0));
    let probe = {
        let probes = probes.clone();
        move |_: Arc<str>| {
            probes.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        }
    };
    let log = new_log();
    let svc = FailoverService::builder()
        .provider(Provider::new("a", Sim::new("a", &log, |_| Step::ok())))
        .probe(Duration::from_secs(1), probe)
        .build()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(probes.load(Ordering::SeqCst), 2);
    drop(svc);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(probes.load(Ordering::SeqCst), 2);
}

#[test]
fn probe_outside_a_runtime_is_a_build_error() {
    let log = new_log();
    let err: FailoverBuildError = FailoverService::builder()
        .provider(Provider::new("a", Sim::new("a", &log, |_| Step::ok())))
        .probe(Duration::from_secs(1), |_: Arc<str>| async { Ok(()) })
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "active health checks need a tokio runtime to run in"
    );
}

#[test]
fn duplicate_provider_names_are_a_build_error() {
    let log = new_log();
    let err = FailoverService::builder()
        .provider(Provider::new("a", Sim::new("a", &log, |_| Step::ok())))
        .provider(Provider::new("a", Sim::new("a", &log, |_| Step::ok())))
        .build()
        .unwrap_err();
    assert_eq!(err.to_string(), "two providers are named `a`");
}

#[tokio::test(start_paused = true)]
async fn all_failed_lists_every_provider_in_order() {
    let log = new_log();
    let mut svc = build(
        vec![
            Provider::new("a", Sim::new("a", &log, |_| Step::fail(Status::new(503)))),
            Provider::new("b", Sim::new("b", &log, |_| Step::fail(Status::new(500)))).priority(1),
            Provider::new("c", Sim::new("c", &log, |_| Step::fail(Status::new(502)))).priority(2),
        ],
        breaker(3, Duration::from_secs(30)),
    );
    let err = send(&mut svc).await.unwrap_err();
    assert_eq!(
        failures(&err),
        [
            ("a".to_owned(), "status 503".to_owned()),
            ("b".to_owned(), "status 500".to_owned()),
            ("c".to_owned(), "status 502".to_owned()),
        ]
    );
    assert_eq!(
        err.to_string(),
        "all providers failed: [a: status 503, b: status 500, c: status 502]"
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limited_everywhere_carries_the_shortest_retry_after() {
    let log = new_log();
    let mut svc = build(
        vec![
            Provider::new(
                "a",
                Sim::new("a", &log, |_| Step::fail(Status::rate_limited(20))),
            ),
            Provider::new(
                "b",
                Sim::new("b", &log, |_| Step::fail(Status::rate_limited(5))),
            ),
            Provider::new(
                "c",
                Sim::new("c", &log, |_| Step::fail(Status::rate_limited(9))),
            ),
        ],
        breaker(3, Duration::from_secs(30)),
    );
    let err = send(&mut svc).await.unwrap_err();
    assert_eq!(failures(&err).len(), 3);
    let outcome = brace_core::classify::classify_error_with(&*err, &support::judge_status)
        .expect("an AllProvidersFailed is always classified");
    assert!(outcome.is_failure() && outcome.is_retryable());
    assert_eq!(outcome.retry_after(), Some(Duration::from_secs(5)));
}

#[tokio::test(start_paused = true)]
async fn open_circuits_everywhere_carry_the_shortest_wait() {
    // Providers behind breakers: brace_core::classify_error alone reads CircuitOpen waits.
    #[derive(Clone)]
    struct Open(u64);
    impl Service<String> for Open {
        type Response = ();
        type Error = BoxError;
        type Future = std::future::Ready<Result<(), BoxError>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: String) -> Self::Future {
            std::future::ready(Err(Box::new(CircuitOpen::new(
                "breaker",
                Some(Duration::from_secs(self.0)),
            ))))
        }
    }
    let mut svc = FailoverService::builder()
        .provider(Provider::new("a", Open(30)))
        .provider(Provider::new("b", Open(4)))
        .build()
        .unwrap();
    let err = send(&mut svc).await.unwrap_err();
    let outcome = brace_core::classify::classify_error(&*err).unwrap();
    assert_eq!(outcome.retry_after(), Some(Duration::from_secs(4)));
    // Every circuit open is no fault of the caller: a layer above (a degradation ladder, an
    // outer failover) may still fall back.
    assert!(outcome.should_failover());
}

#[tokio::test(start_paused = true)]
async fn bad_request_is_returned_at_once_without_failover() {
    let log = new_log();
    let mut svc = build(
        vec![
            Provider::new("a", Sim::new("a", &log, |_| Step::fail(Status::new(400)))),
            Provider::new("b", Sim::new("b", &log, |_| Step::ok())).priority(1),
        ],
        breaker(1, Duration::from_secs(30)),
    );
    let err = send(&mut svc).await.unwrap_err();
    assert_eq!(err.downcast_ref::<Status>(), Some(&Status::new(400)));
    assert_eq!(*log.lock(), ["a"]);
    // The caller's mistake does not count against the provider.
    let health = &svc.health()[0];
    assert!(health.healthy);
    assert_eq!((health.ignored, health.failures), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn when_every_circuit_is_open_the_request_fails_at_once_naming_each() {
    let log = new_log();
    let a = Sim::new("a", &log, |_| Step::fail(Status::new(503)));
    let b = Sim::new("b", &log, |n| {
        if n == 0 {
            Step::ok()
        } else {
            Step::fail(Status::new(503))
        }
    });
    let mut svc = build(
        vec![Provider::new("a", a.clone()), Provider::new("b", b.clone())],
        breaker(1, Duration::from_mins(1)),
    );
    // a fails and opens; 10 s later b fails and opens: b's wait ends 10 s after a's.
    send(&mut svc).await.unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    let err = send(&mut svc).await.unwrap_err();
    let all = err.downcast_ref::<AllProvidersFailed>().unwrap();
    assert_eq!(
        (all.tried().count(), all.skipped().count()),
        (1, 1),
        "b tried, a skipped: {err}"
    );
    assert_eq!(*log.lock(), ["a", "b", "b"]);
    let calls = log.lock().len();

    // Nothing is called: the error names both, skipped, each with its remaining wait.
    let err = send(&mut svc).await.unwrap_err();
    assert_eq!(log.lock().len(), calls);
    let all = err.downcast_ref::<AllProvidersFailed>().unwrap();
    assert!(all.none_tried());
    let waits: Vec<_> = all
        .skipped()
        .map(|f| {
            let open = f.error.downcast_ref::<CircuitOpen>().unwrap();
            (f.name.to_string(), open.retry_after())
        })
        .collect();
    assert_eq!(
        waits,
        [
            ("a".to_owned(), Some(Duration::from_secs(50))),
            ("b".to_owned(), Some(Duration::from_mins(1))),
        ]
    );
    assert!(
        err.to_string()
            .starts_with("no provider could be tried: [a (skipped): circuit `a` open")
    );

    // Once a's wait is over, it is the half-open trial.
    tokio::time::advance(Duration::from_secs(50)).await;
    let err = send(&mut svc).await.unwrap_err();
    let all = err.downcast_ref::<AllProvidersFailed>().unwrap();
    assert_eq!(all.tried().count(), 1);
    assert_eq!(a.calls(), 2);
    assert_eq!(svc.health()[1].skipped, 2);
}

#[tokio::test(start_paused = true)]
async fn no_providers_fails_with_empty_all_providers_failed() {
    let mut svc: Failover = build(Vec::new(), breaker(3, Duration::from_secs(30)));
    let err = send(&mut svc).await.unwrap_err();
    assert!(failures(&err).is_empty());
    assert_eq!(
        err.to_string(),
        "all providers failed: no provider was available"
    );
}

#[tokio::test(start_paused = true)]
async fn never_polls_a_provider_ready_while_its_circuit_is_open() {
    let (a, mut a_handle) = tower_test::mock::pair::<String, &'static str>();
    let (b, mut b_handle) = tower_test::mock::pair::<String, &'static str>();
    let breaker_of = |name: &str| {
        CircuitBreakerLayer::builder(name)
            .consecutive_failures(1)
            .wait_in_open(Duration::from_mins(1))
            .build()
            .unwrap()
    };
    let (a_breaker, b_breaker) = (breaker_of("a"), breaker_of("b"));
    let mut svc = FailoverService::builder()
        .provider(Provider::new("a", a_breaker.layer(a)).circuit(a_breaker.handle()))
        .provider(
            Provider::new("b", b_breaker.layer(b))
                .priority(1)
                .circuit(b_breaker.handle()),
        )
        .build()
        .unwrap();

    a_handle.allow(1);
    b_handle.allow(1);
    let first = tokio::spawn(svc.ready().await.unwrap().call("one".to_owned()));
    let (_, reply) = a_handle.next_request().await.unwrap();
    reply.send_error("connection refused");
    let (_, reply) = b_handle.next_request().await.unwrap();
    reply.send_response("b");
    assert_eq!(first.await.unwrap().unwrap(), "b");

    // a would now never become ready; calls go straight to b without waiting on it.
    a_handle.allow(0);
    b_handle.allow(1);
    let second = tokio::spawn(svc.ready().await.unwrap().call("two".to_owned()));
    let (req, reply) = b_handle.next_request().await.unwrap();
    assert_eq!(req, "two");
    reply.send_response("b");
    assert_eq!(second.await.unwrap().unwrap(), "b");
    assert!(
        tokio_test::task::spawn(a_handle.next_request())
            .poll()
            .is_pending()
    );
}

#[tokio::test(start_paused = true)]
async fn poll_ready_is_ready_even_when_no_provider_is() {
    let (a, mut a_handle) = tower_test::mock::pair::<String, &'static str>();
    a_handle.allow(0);
    let mut svc = FailoverService::builder()
        .provider(Provider::new("a", a))
        .build()
        .unwrap();
    let mut ready = tokio_test::task::spawn(svc.ready());
    assert!(ready.poll().is_ready());
}

#[tokio::test(start_paused = true)]
async fn hedge_after_fixed_delay_answers_from_second_provider_and_drops_loser() {
    let log = new_log();
    let slow = Sim::new("slow", &log, |_| Step::ok().after(Duration::from_secs(2)));
    let fast = Sim::new("fast", &log, |_| {
        Step::ok().after(Duration::from_millis(30))
    });
    let mut svc = FailoverService::builder()
        .provider(Provider::new("slow", slow.clone()))
        .provider(Provider::new("fast", fast.clone()).priority(1))
        .hedge(HedgeConfig::after(Duration::from_millis(100)))
        .build()
        .unwrap();
    let start = Instant::now();
    assert_eq!(send(&mut svc).await.unwrap(), "fast");
    assert_eq!(start.elapsed(), Duration::from_millis(130));
    // The slow call was dropped as soon as the hedge won, and nothing was recorded for it.
    assert_eq!(slow.cancelled.load(Ordering::SeqCst), 1);
    assert_eq!(svc.health()[0].calls, 0);
    assert_eq!(svc.health()[1].successes, 1);
}

#[tokio::test(start_paused = true)]
async fn hedge_loser_is_dropped_when_primary_wins() {
    let log = new_log();
    let primary = Sim::new("primary", &log, |_| {
        Step::ok().after(Duration::from_millis(150))
    });
    let hedge = Sim::new("hedge", &log, |_| Step::ok().after(Duration::from_secs(1)));
    let mut svc = FailoverService::builder()
        .provider(Provider::new("primary", primary.clone()))
        .provider(Provider::new("hedge", hedge.clone()).priority(1))
        .hedge(HedgeConfig::after(Duration::from_millis(100)))
        .build()
        .unwrap();
    let start = Instant::now();
    assert_eq!(send(&mut svc).await.unwrap(), "primary");
    assert_eq!(start.elapsed(), Duration::from_millis(150));
    assert_eq!(hedge.calls(), 1);
    assert_eq!(hedge.cancelled.load(Ordering::SeqCst), 1);
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort_unstable();
    latencies[(latencies.len() * 99).div_ceil(100) - 1]
}

async fn tail_latencies(hedge: Option<HedgeConfig>) -> (Vec<Duration>, usize) {
    let log = new_log();
    // One call in ten is stuck for 2 s; the rest take 10 ms.
    let primary = Sim::new("primary", &log, |n| {
        let delay = if n % 10 == 9 { 2000 } else { 10 };
        Step::ok().after(Duration::from_millis(delay))
    });
    let backup = Sim::new("backup", &log, |_| {
        Step::ok().after(Duration::from_millis(20))
    });
    let mut builder = FailoverService::builder()
        .provider(Provider::new("primary", primary))
        .provider(Provider::new("backup", backup.clone()).priority(1));
    if let Some(hedge) = hedge {
        builder = builder.hedge(hedge);
    }
    let mut svc = builder.build().unwrap();
    let mut latencies = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        send(&mut svc).await.unwrap();
        latencies.push(start.elapsed());
        tokio::time::advance(Duration::from_millis(50)).await;
    }
    (latencies, backup.calls())
}

#[tokio::test(start_paused = true)]
async fn hedging_by_percentile_cuts_p99_when_one_provider_is_slow() {
    let (plain, plain_backup_calls) = tail_latencies(None).await;
    assert_eq!(p99(plain), Duration::from_secs(2));
    assert_eq!(plain_backup_calls, 0);

    let hedge = HedgeConfig {
        percentile: 0.5,
        min_samples: 10,
        budget_ratio: 0.2,
        ..HedgeConfig::default()
    };
    let (hedged, backup_calls) = tail_latencies(Some(hedge)).await;
    let tail = p99(hedged.clone());
    assert!(
        tail < Duration::from_millis(100),
        "p99 with hedging: {tail:?}"
    );
    // Only the slow calls (after the first samples) were hedged.
    assert!(backup_calls <= 20 + 1, "{backup_calls} hedges");
    // Before enough samples were collected nothing was hedged: the first slow call waits.
    assert_eq!(hedged[9], Duration::from_secs(2));
}

/// A provider that answers after `slow`, and another behind it, hedged to after 10 ms with
/// a budget of `per_sec` hedges a second (none earned from traffic); the other is returned
/// to count its calls.
fn slow_then_hedged(slow: Duration, per_sec: u32) -> (FailoverService<Sim>, Sim) {
    let log = new_log();
    let first = Sim::new("slow", &log, move |_| Step::ok().after(slow));
    let other = Sim::new("other", &log, |_| Step::ok());
    let svc = FailoverService::builder()
        .provider(Provider::new("slow", first))
        .provider(Provider::new("other", other.clone()).priority(1))
        .hedge(HedgeConfig {
            budget_ratio: 0.0,
            budget_min_per_sec: per_sec,
            budget_ttl: Duration::from_secs(1),
            ..HedgeConfig::after(Duration::from_millis(10))
        })
        .build()
        .unwrap();
    (svc, other)
}

#[tokio::test(start_paused = true)]
async fn empty_hedge_budget_sends_no_hedges() {
    let (mut svc, other) = slow_then_hedged(Duration::from_secs(1), 0);
    for _ in 0..5 {
        assert_eq!(send(&mut svc).await.unwrap(), "slow");
    }
    assert_eq!(other.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_with_nowhere_to_go_spends_none_of_the_budget() {
    // A budget of one hedge for the second.
    let (mut svc, other) = slow_then_hedged(Duration::from_millis(200), 1);
    // A layer above leaves "other" out of the first request: its hedge has nowhere to go.
    let left_out = brace_core::exclude::Exclusions::new([(
        "other",
        brace_core::exclude::Excluded::new("test", brace_core::FailureClass::RateLimited),
    )]);
    let call = ServiceExt::<String>::ready(&mut svc)
        .await
        .unwrap()
        .call("hello".to_owned());
    let first = brace_core::exclude::within(left_out, call).await;
    assert_eq!(first.unwrap(), "slow");
    assert_eq!(other.calls(), 0);
    // The budget's hedge was not spent on it: the next slow request is hedged.
    assert_eq!(send(&mut svc).await.unwrap(), "other");
    assert_eq!(other.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn health_snapshot_counts_calls_errors_and_latency() {
    let log = new_log();
    let a = Sim::new("a", &log, |n| match n {
        0 => Step::fail(Status::new(503)).after(Duration::from_millis(40)),
        1 => Step::fail(Status::new(400)),
        _ => Step::ok().after(Duration::from_millis(40)),
    });
    let b = Sim::new("b", &log, |_| Step::ok());
    let registry = ProviderRegistry::with_error_kind(|err| match err.downcast_ref::<Status>() {
        Some(status) if status.code == 400 => "bad_request",
        Some(_) => "server",
        None => "other",
    });
    let mut svc = FailoverService::builder()
        .registry(registry)
        .provider(Provider::new("a", a).model("model-a"))
        .provider(Provider::new("b", b).priority(1))
        .classifier(TestClassifier)
        .build()
        .unwrap();
    send(&mut svc).await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    send(&mut svc).await.unwrap_err();
    send(&mut svc).await.unwrap();

    let health = &svc.health()[0];
    assert_eq!(&*health.name, "a");
    assert_eq!(health.model.as_deref(), Some("model-a"));
    assert!(health.healthy);
    assert_eq!(
        (
            health.calls,
            health.successes,
            health.failures,
            health.ignored
        ),
        (3, 1, 1, 1)
    );
    assert_eq!(health.consecutive_failures, 0);
    assert_eq!(health.latency_ewma, Some(Duration::from_millis(40)));
    assert_eq!(health.last_failure_ago, Some(Duration::from_millis(1040)));
    assert_eq!(
        health.errors_by_kind.iter().collect::<Vec<_>>(),
        [(&"bad_request", &1), (&"server", &1)]
    );
}

#[tokio::test(start_paused = true)]
async fn untimed_service_keeps_no_latency_but_still_tracks_health() {
    let log = new_log();
    let a = Sim::new("a", &log, |_| Step::fail(Status::new(503)));
    let b = Sim::new("b", &log, |_| Step::ok().after(Duration::from_millis(5)));
    let spec = breaker(1, Duration::from_secs(30));
    let mut svc: Failover = FailoverService::builder()
        .provider(guarded(Provider::new("a", a), spec))
        .provider(guarded(Provider::new("b", b).priority(1), spec))
        .classifier(TestClassifier)
        .config(brace_failover::FailoverConfig {
            track_latency: false,
            ..Default::default()
        })
        .build()
        .unwrap();
    send(&mut svc).await.unwrap();
    send(&mut svc).await.unwrap();
    let health = svc.health();
    assert!(!health[0].healthy);
    assert_eq!(health[0].calls, 1);
    assert_eq!(health[1].latency_ewma, None);
    tokio::time::advance(Duration::from_secs(30)).await;
    send(&mut svc).await.unwrap();
    assert_eq!(svc.health()[0].calls, 2, "tried again after the open wait");
}

#[tokio::test(start_paused = true)]
async fn extreme_configuration_values_do_not_panic() {
    let log = new_log();
    let a = Sim::new("a", &log, |_| Step::fail(Status::new(503)));
    let b = Sim::new("b", &log, |_| Step::ok());
    let spec = breaker(1, Duration::MAX);
    let mut svc: Failover = FailoverService::builder()
        .provider(guarded(Provider::new("a", a), spec))
        .provider(guarded(Provider::new("b", b).priority(1), spec))
        .classifier(TestClassifier)
        .hedge(HedgeConfig {
            delay: Some(Duration::MAX),
            percentile: f64::NAN,
            min_samples: 0,
            budget_ratio: f32::NAN,
            budget_min_per_sec: u32::MAX,
            budget_ttl: Duration::MAX,
        })
        .probe(Duration::MAX, |_: Arc<str>| async { Ok(()) })
        .build()
        .unwrap();
    assert_eq!(send(&mut svc).await.unwrap(), "b");
    assert_eq!(send(&mut svc).await.unwrap(), "b");
    assert!(!svc.health()[0].healthy);
}

#[tokio::test(start_paused = true)]
async fn provider_that_stays_unready_is_left_after_the_ready_timeout() {
    let (a, mut a_handle) = tower_test::mock::pair::<String, &'static str>();
    let (b, mut b_handle) = tower_test::mock::pair::<String, &'static str>();
    a_handle.allow(0);
    b_handle.allow(1);
    let svc = FailoverService::builder()
        .provider(Provider::new("a", a))
        .provider(Provider::new("b", b).priority(1))
        .ready_timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    let start = Instant::now();
    let call = tokio::spawn(svc.clone().oneshot("hi".to_owned()));
    let (_, reply) = b_handle.next_request().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    reply.send_response("b");
    assert_eq!(call.await.unwrap().unwrap(), "b");
    let health = &svc.health()[0];
    assert_eq!((health.failures, health.consecutive_failures), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn unready_provider_everywhere_reports_not_ready() {
    let (a, mut a_handle) = tower_test::mock::pair::<String, &'static str>();
    a_handle.allow(0);
    let svc = FailoverService::builder()
        .provider(Provider::new("a", a))
        .ready_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let err = svc.oneshot("hi".to_owned()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "all providers failed: [a: provider not ready after 1000ms]"
    );
    let all = err.downcast_ref::<AllProvidersFailed>().unwrap();
    assert!(all.failures()[0].error.is::<brace_failover::NotReady>());
}
