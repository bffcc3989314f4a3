//! Properties that hold whatever the providers answer.

mod support;

use std::time::Duration;

use brace_circuit::CircuitBreakerLayer;
use brace_core::{AllProvidersFailed, BoxError};
use brace_failover::{FailoverService, Provider, Selection};
use proptest::prelude::*;
use support::{Sim, Status, Step, TestClassifier, new_log};
use tower::Layer;
use tower::ServiceExt;

const NAMES: [&str; 5] = ["p0", "p1", "p2", "p3", "p4"];

fn step() -> impl Strategy<Value = Result<(), u16>> {
    prop_oneof![
        4 => Just(Ok(())),
        2 => Just(Err(503)),
        1 => Just(Err(429)),
        1 => Just(Err(400)),
    ]
}

fn selection() -> impl Strategy<Value = Selection> {
    prop_oneof![
        Just(Selection::Ordered),
        Just(Selection::Weighted),
        Just(Selection::LeastLatency),
        Just(Selection::PowerOfTwoChoices),
        Just(Selection::Cheapest),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn each_request_tries_each_provider_at_most_once_and_reports_what_happened(
        scripts in prop::collection::vec(
            (prop::collection::vec(step(), 1..6), 0u32..3, 0u32..4),
            1..=5,
        ),
        selection in selection(),
        seed in any::<u64>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let log = new_log();
            let providers: Vec<Provider<_>> = scripts
                .iter()
                .enumerate()
                .map(|(i, (steps, priority, weight))| {
                    let steps = steps.clone();
                    let sim = Sim::new(NAMES[i], &log, move |n| match steps[n % steps.len()] {
                        Ok(()) => Step::ok().after(Duration::from_millis(10)),
                        Err(code) => Step::fail(Status::new(code)),
                    });
                    let breaker = CircuitBreakerLayer::builder(NAMES[i])
                        .consecutive_failures(2)
                        .wait_in_open(Duration::from_secs(5))
                        .classifier(TestClassifier)
                        .build()
                        .unwrap();
                    Provider::new(NAMES[i], breaker.layer(sim))
                        .priority(*priority)
                        .weight(*weight)
                        .cost(f64::from(*weight) + 1.0)
                        .circuit(breaker.handle())
                })
                .collect();
            let count = providers.len();
            let svc = FailoverService::builder()
                .providers(providers)
                .classifier(TestClassifier)
                .selection(selection)
                .seed(seed)
                .build()
                .unwrap();
            for _ in 0..20 {
                log.lock().clear();
                let result: Result<&str, BoxError> = svc.clone().oneshot("q".to_owned()).await;
                let called = log.lock().clone();
                let mut unique = called.clone();
                unique.sort_unstable();
                unique.dedup();
                assert_eq!(unique.len(), called.len(), "a provider was called twice: {called:?}");
                match result {
                    Ok(name) => assert_eq!(Some(&name), called.last()),
                    Err(err) => {
                        if let Some(all) = err.downcast_ref::<AllProvidersFailed>() {
                            // The providers called, in order, are the trail's tried ones...
                            let tried: Vec<&str> = all.tried().map(|f| &*f.name).collect();
                            assert_eq!(tried, called);
                            // ...and the trail names every provider once, tried or skipped
                            // (a skipped one with its open circuit).
                            assert_eq!(all.failures().len(), count, "{err}");
                            for skipped in all.skipped() {
                                assert!(skipped.error.is::<brace_core::CircuitOpen>(), "{err}");
                            }
                        } else {
                            let status = err.downcast_ref::<Status>().expect("a provider error");
                            assert_eq!(status.code, 400, "only a bad request stops failover");
                        }
                    }
                }
                tokio::time::advance(Duration::from_secs(1)).await;
            }
        });
    }
}
