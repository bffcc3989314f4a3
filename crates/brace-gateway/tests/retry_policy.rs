//! The `fallback` section (brace-retry's `RetryConfig`) over `LlmClassifier`: the seed's
//! `on_error` list retries what it names and nothing else, each class section sets that
//! class's retries, and impossible retry counts are refused when the configuration loads.
//!
//! These live here because this crate depends on both brace-retry and brace-llm.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use brace_core::on_error::OnError;
use brace_core::{BoxError, Classify, FailureClass, RetriesExhausted};
use brace_gateway::{Gateway, GatewayConfig, app::router};
use brace_llm::{ChatResponse, LlmClassifier, LlmError, LlmErrorKind};
use brace_retry::RetryConfig;
use brace_sim::{Behavior, Failure};
use http::{Request, StatusCode};
use serde_json::json;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const SEED_FALLBACK: &str = "\
on_error: [429, 500, 502, 503, timeout]
max_retries: 2
backoff: exponential
budget: null
";

/// An error of `kind`, with `status` if given.
fn error(kind: LlmErrorKind, status: Option<u16>) -> LlmError {
    let err = LlmError::new(kind, "upstream said no");
    match status {
        Some(status) => err.with_status(status),
        None => err,
    }
}

/// Sends one request through `config`'s retry layer to a provider that always fails with
/// an error of `kind` (and `status`); returns the number of calls and the error.
async fn calls_for(
    config: &RetryConfig,
    kind: LlmErrorKind,
    status: Option<u16>,
) -> (usize, BoxError) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let provider = tower::service_fn(move |_: u32| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move { Err::<ChatResponse, LlmError>(error(kind, status)) }
    });
    let err = config
        .layer(LlmClassifier::new())
        .unwrap()
        .layer(provider)
        .oneshot(1)
        .await
        .unwrap_err();
    (calls.load(Ordering::SeqCst), err)
}

#[tokio::test(start_paused = true)]
async fn the_seed_list_with_llm_classifier_retries_what_it_names() {
    let config: RetryConfig = serde_saphyr::from_str(SEED_FALLBACK).unwrap();
    // Listed by status, or by class (`timeout`), and retryable for LlmClassifier.
    for (kind, status) in [
        (LlmErrorKind::RateLimited, Some(429)),
        (LlmErrorKind::Server, Some(500)),
        (LlmErrorKind::Server, Some(502)),
        (LlmErrorKind::Overloaded, Some(503)),
        // A malformed answer reads as a 502.
        (LlmErrorKind::MalformedResponse, None),
        (LlmErrorKind::Timeout, None),
        (LlmErrorKind::Timeout, Some(504)),
    ] {
        let (calls, err) = calls_for(&config, kind, status).await;
        assert_eq!(calls, 3, "{kind:?} {status:?}");
        let exhausted = err.downcast_ref::<RetriesExhausted>().unwrap();
        assert!(exhausted.last_error().is::<LlmError>(), "{kind:?}");
    }
    // Not named: Anthropic's 529 overload, a refused connection, a 501; and never what
    // LlmClassifier does not retry (an auth error), whatever the list says.
    for (kind, status) in [
        (LlmErrorKind::Overloaded, Some(529)),
        (LlmErrorKind::Connect, None),
        (LlmErrorKind::Server, Some(501)),
        (LlmErrorKind::Auth, Some(401)),
    ] {
        let (calls, err) = calls_for(&config, kind, status).await;
        assert_eq!(calls, 1, "{kind:?} {status:?}");
        assert_eq!(err.downcast_ref::<LlmError>().unwrap().kind(), kind);
    }
}

#[test]
fn a_failure_the_list_does_not_retry_still_fails_over() {
    let config: RetryConfig = serde_saphyr::from_str(SEED_FALLBACK).unwrap();
    let classifier = OnError::new(config.on_error.iter().copied(), LlmClassifier::new());
    let refused: BoxError = Box::new(LlmError::new(LlmErrorKind::Connect, "refused"));
    let outcome = Classify::<ChatResponse, _>::classify(&classifier, Err(&refused));
    assert_eq!(outcome.class(), FailureClass::Connect);
    assert!(outcome.is_failure() && outcome.should_failover() && !outcome.is_retryable());
}

#[tokio::test(start_paused = true)]
async fn the_rate_limited_section_gives_rate_limits_their_own_retries_and_waits() {
    let config: RetryConfig = serde_saphyr::from_str(
        "\
max_retries: 1
base_delay: 100ms
budget: null
rate_limited: { max_retries: 4, base_delay: 2s, backoff: exponential, factor: 2, max_delay: 30s }
timeout: { max_retries: 0 }
",
    )
    .unwrap();
    let start = Instant::now();
    let (calls, _) = calls_for(&config, LlmErrorKind::RateLimited, Some(429)).await;
    assert_eq!(calls, 5);
    assert_eq!(start.elapsed(), Duration::from_secs(2 + 4 + 8 + 16));

    assert_eq!(calls_for(&config, LlmErrorKind::Timeout, None).await.0, 1);
    assert_eq!(
        calls_for(&config, LlmErrorKind::Server, Some(500)).await.0,
        2
    );
}

const ONE_SIM: &str = "
providers:
  - name: only
    kind: simulated
    model: m
fallback:
  max_retries: 0
  base_delay: 1ms
  max_delay: 2ms
  rate_limited: { max_retries: 3 }
degradation:
  fallback_attempts: 0
  auto:
    enabled: false
";

#[tokio::test(start_paused = true)]
async fn the_gateway_builds_its_retry_layer_from_the_class_sections() {
    let gateway = Gateway::build(GatewayConfig::from_yaml(ONE_SIM).unwrap()).unwrap();
    let sim = gateway.sim("only").unwrap();
    let ask = || {
        Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(Body::from(
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
            ))
            .unwrap()
    };

    sim.set_behavior(Behavior::failure(Failure::new(LlmErrorKind::RateLimited)));
    let response = router(gateway.clone()).oneshot(ask()).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(sim.calls(), 4);

    // Server errors keep the top level's `max_retries: 0`.
    sim.set_behavior(Behavior::fail(LlmErrorKind::Server));
    let response = router(gateway.clone()).oneshot(ask()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sim.calls(), 5);
}

#[test]
fn fallback_retry_counts_and_class_sections_are_checked_when_the_config_loads() {
    let load = |fallback: &str| {
        GatewayConfig::from_yaml(&format!(
            "providers:\n  - name: only\n    kind: simulated\n    model: m\nfallback:\n{fallback}"
        ))
    };
    let message = load("  max_retries: 4294967295\n  base_delay: 0ms\n")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("fallback") && message.contains("max_retries must be at most 20"),
        "{message}"
    );
    let message = load("  rate_limited: { max_retries: 50 }\n")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("rate_limited.max_retries must be at most 20"),
        "{message}"
    );
    let message = load("  timeout: { retries: 1 }\n").unwrap_err().to_string();
    assert!(message.contains("retries"), "{message}");
    let message = load("  overloaded: { base_delay: 1m }\n")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("overloaded.base_delay (60s) must not exceed max_delay (10s)"),
        "{message}"
    );

    let config = load(
        "  rate_limited: {max_retries: 4, base_delay: 2s, backoff: exponential, factor: 2, max_delay: 30s}\n  timeout: {max_retries: 1, base_delay: 100ms}\n",
    )
    .unwrap();
    assert_eq!(
        config
            .fallback
            .class_policy(FailureClass::RateLimited)
            .and_then(|policy| policy.get_max_retries()),
        Some(4)
    );
}

#[test]
fn a_provider_may_override_a_class_section_and_inherits_the_rest() {
    let config = GatewayConfig::from_yaml(
        "\
providers:
  - name: strict
    kind: simulated
    model: m
    fallback:
      max_retries: 1
      rate_limited: { max_retries: 2 }
  - name: plain
    kind: simulated
    model: m
fallback:
  max_retries: 3
  rate_limited: { max_retries: 6, base_delay: 1s }
  timeout: { max_retries: 0 }
",
    )
    .unwrap();
    let retries = |name: &str, class| {
        let provider = config.providers.iter().find(|p| p.name == name).unwrap();
        let fallback = config.fallback_for(provider).unwrap();
        fallback
            .class_policy(class)
            .map_or(fallback.max_retries, |policy| {
                policy.get_max_retries().unwrap()
            })
    };
    assert_eq!(retries("plain", FailureClass::RateLimited), 6);
    assert_eq!(retries("plain", FailureClass::Server), 3);
    // The provider's section replaces the global one for that class...
    assert_eq!(retries("strict", FailureClass::RateLimited), 2);
    // ...keeps the global sections it does not name, and its own top level applies.
    assert_eq!(retries("strict", FailureClass::Timeout), 0);
    assert_eq!(retries("strict", FailureClass::Server), 1);

    let message = GatewayConfig::from_yaml(
        "providers:\n  - name: p\n    kind: simulated\n    model: m\n    fallback:\n      server: { max_retries: 99 }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("provider `p`")
            && message.contains("server.max_retries must be at most 20"),
        "{message}"
    );
}
