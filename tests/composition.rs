//! The layers stacked in either order over simulated providers, through the `brace` facade.

use std::time::Duration;

use brace::circuit::{CircuitBreakerLayer, CircuitState};
use brace::llm::{ChatRequest, LlmClassifier, LlmError, LlmErrorKind, Message};
use brace::retry::{Backoff, RetryLayer};
use brace::sim::{Behavior, SimConfig, SimProvider};
use brace::{BoxError, CircuitOpen, RetriesExhausted};
use tower::{Service, ServiceBuilder, ServiceExt};

fn request() -> ChatRequest {
    ChatRequest::new("m", vec![Message::user("hi")])
}

fn failing(name: &str) -> SimProvider {
    SimProvider::new(SimConfig::new(name).with_behavior(Behavior::fail(LlmErrorKind::Overloaded)))
}

fn retry() -> RetryLayer<LlmClassifier> {
    RetryLayer::builder()
        .classifier(LlmClassifier::new())
        .max_retries(2)
        .backoff(Backoff::constant(Duration::from_millis(100)))
        .no_budget()
        .build()
}

fn breaker(name: &str) -> CircuitBreakerLayer<LlmClassifier> {
    CircuitBreakerLayer::builder(name)
        .consecutive_failures(3)
        .wait_in_open(Duration::from_secs(30))
        .build()
        .unwrap()
        .with_classifier(LlmClassifier::new())
}

#[tokio::test(start_paused = true)]
async fn retry_over_breaker_stops_retrying_once_the_circuit_opens() {
    let sim = failing("p");
    let breaker = breaker("p");
    let handle = breaker.handle();
    let mut service = ServiceBuilder::new()
        .layer(retry())
        .layer(breaker)
        .service(sim.clone());

    // Three attempts fail and open the circuit; the retry layer gives up.
    let err = service
        .ready()
        .await
        .unwrap()
        .call(request())
        .await
        .unwrap_err();
    let exhausted = err
        .downcast_ref::<RetriesExhausted>()
        .expect("retries exhausted");
    assert_eq!(exhausted.attempts(), 3);
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(sim.handle().calls(), 3);

    // Now the breaker refuses at once, and the refusal is not retried against it.
    let err: BoxError = service
        .ready()
        .await
        .unwrap()
        .call(request())
        .await
        .unwrap_err();
    assert!(err.is::<CircuitOpen>(), "{err}");
    assert_eq!(sim.handle().calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn breaker_over_retry_counts_one_failure_per_exhausted_call() {
    let sim = failing("p");
    let breaker = breaker("p");
    let handle = breaker.handle();
    let mut service = ServiceBuilder::new()
        .layer(breaker)
        .layer(retry())
        .service(sim.clone());

    for call in 1..=3 {
        let err = service
            .ready()
            .await
            .unwrap()
            .call(request())
            .await
            .unwrap_err();
        assert!(err.is::<RetriesExhausted>(), "{err}");
        assert_eq!(sim.handle().calls(), call * 3);
    }
    assert_eq!(handle.state(), CircuitState::Open);
    let err = service
        .ready()
        .await
        .unwrap()
        .call(request())
        .await
        .unwrap_err();
    assert!(err.is::<CircuitOpen>());
    assert_eq!(sim.handle().calls(), 9);

    // The last provider error is still reachable inside the retry error.
    let sim = failing("q");
    let err = ServiceBuilder::new()
        .layer(retry())
        .service(sim)
        .oneshot(request())
        .await
        .unwrap_err();
    let last = err
        .downcast_ref::<RetriesExhausted>()
        .unwrap()
        .last_error()
        .downcast_ref::<LlmError>()
        .unwrap();
    assert_eq!(last.kind(), LlmErrorKind::Overloaded);
}

#[tokio::test(start_paused = true)]
async fn retry_waits_for_the_providers_retry_after() {
    let sim = SimProvider::new(SimConfig::new("p").with_behavior(Behavior::sequence(
        [Behavior::rate_limited(Duration::from_secs(4))],
        Behavior::succeed(),
    )));
    let start = tokio::time::Instant::now();
    let response = ServiceBuilder::new()
        .layer(retry())
        .service(sim.clone())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(4));
    assert_eq!(&*response.meta.provider, "p");
    assert_eq!(sim.handle().calls(), 2);
}
