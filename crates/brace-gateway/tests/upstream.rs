//! What comes back from upstream is bounded before it reaches a client or a log line; every
//! error is in OpenAI's shape; a provider's bulkhead fails over; every attempt is counted.

mod support;

use support::{ODD_FORMAT_ANSWER, behind_hostile_upstream, chat, send};

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use tower::ServiceExt;

use brace_gateway::{Gateway, GatewayConfig, app::router};

#[tokio::test]
async fn a_huge_model_name_from_upstream_is_cut_and_cleaned_before_it_becomes_a_header() {
    let gateway = behind_hostile_upstream("  max_retry_after: 1h\n").await;
    let reply = send(&gateway, chat("huge-model", false)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let header = reply.headers["x-brace-model"].to_str().unwrap();
    assert_eq!(header.len(), 256);
    assert!(header.starts_with("mx-injected: 1mmm"), "{header}");
    assert!(!reply.headers.contains_key("x-injected"));
    // The body says what the upstream said, JSON-escaped.
    assert!(reply.json()["model"].as_str().unwrap().len() > 100 * 1024);
}

#[tokio::test]
async fn an_openai_compatible_answer_reaches_the_client_as_the_provider_wrote_it() {
    // A whole answer in OpenAI's format is forwarded as it came, not read and written out
    // again: its spacing, field order, escapes and numbers are the provider's.
    let gateway = behind_hostile_upstream("  json_logs: false\n").await;
    let reply = send(&gateway, chat("odd-format", false)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body, ODD_FORMAT_ANSWER);
    assert_eq!(reply.header("content-type"), "application/json");
    // It was still read: the meta headers name the model it gave.
    assert_eq!(reply.header("x-brace-model"), "m/odd");
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        "caf\u{e9}"
    );

    // Asked as a stream, the same answer is re-encoded as chunks.
    let reply = send(&gateway, chat("odd-format", true)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(
        reply.body.contains("\"content\":\"caf\u{e9}\""),
        "{}",
        reply.body
    );
    assert!(reply.body.ends_with("data: [DONE]\n\n"), "{}", reply.body);
}

#[tokio::test]
async fn an_openai_compatible_stream_reaches_the_client_as_the_provider_wrote_it() {
    // Each chunk of a stream in OpenAI's format is forwarded as it came, not read and
    // written out again: its spacing, field order, escapes, unknown fields and its lines.
    let gateway = behind_hostile_upstream("  json_logs: false\n").await;
    let reply = send(&gateway, chat("odd-stream", true)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.header("content-type"), "text/event-stream");
    assert_eq!(reply.body, support::ODD_FORMAT_STREAM);
    // It was still read: the meta headers name the model it gave.
    assert_eq!(reply.header("x-brace-model"), "m/odd");
}

#[tokio::test]
async fn a_request_nothing_changes_reaches_the_provider_as_the_client_wrote_it() {
    // Sent as it came, not read and written out again: its spacing, field order, a field
    // brace does not know and an explicit null are the client's.
    let gateway = behind_hostile_upstream("  json_logs: false\n").await;
    let sent = "{ \"messages\" : [ {\"content\":\"caf\\u00e9\", \"role\":\"user\"} ],\n \
                \"temperature\": null, \"model\":\"echo-body\", \"x_vendor\": [1, 2.50] }";
    let reply = send(&gateway, support::post("/v1/chat/completions", sent)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["choices"][0]["message"]["content"], sent);

    // A request the gateway changes is written out with the change: here the route asks
    // the provider for another model.
    let base_url = support::hostile_upstream().await;
    let yaml = format!(
        "providers:\n  - name: upstream\n    kind: openai-compatible\n    model: m\n    \
         api_key_env: ''\n    base_url: {base_url}\n\
         routes:\n  - match: '*'\n    providers:\n      - name: upstream\n        model: echo-renamed\n\
         fallback:\n  max_retries: 0\n\
         degradation:\n  auto:\n    enabled: false\n"
    );
    let gateway = Gateway::build(GatewayConfig::from_yaml(&yaml).unwrap()).unwrap();
    let reply = send(&gateway, support::post("/v1/chat/completions", sent)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let upstream = reply.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let upstream: serde_json::Value = serde_json::from_str(&upstream).unwrap();
    assert_eq!(upstream["model"], "echo-renamed", "{upstream}");
    assert_eq!(upstream["x_vendor"][1], 2.5, "{upstream}");
    assert_eq!(
        upstream["messages"][0]["content"], "caf\u{e9}",
        "{upstream}"
    );
}

#[tokio::test]
async fn an_absurd_retry_after_from_upstream_is_clamped() {
    let gateway = behind_hostile_upstream("  max_retry_after: 1h\n").await;
    let reply = send(&gateway, chat("limited", false)).await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.body
    );
    assert_eq!(reply.headers["retry-after"], "3600");

    // With no setting, one day at most.
    let gateway = behind_hostile_upstream("  json_logs: false\n").await;
    let reply = send(&gateway, chat("limited", false)).await;
    assert_eq!(reply.headers["retry-after"], "86400");
}

// ===== errors in OpenAI's shape =====

fn sims(extra: &str) -> Arc<Gateway> {
    let yaml = format!(
        "providers:\n  - name: primary\n    kind: simulated\n    model: sim-model\n\
         degradation:\n  auto:\n    enabled: false\n{extra}"
    );
    Gateway::build(GatewayConfig::from_yaml(&yaml).unwrap()).unwrap()
}

#[tokio::test]
async fn method_not_allowed_is_405_in_openai_shape() {
    let gateway = sims("");
    let reply = send(
        &gateway,
        Request::get("/v1/chat/completions")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.headers["allow"], "POST");
    let error = &reply.json()["error"];
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(
        error["message"],
        "method GET is not allowed for /v1/chat/completions; the `Allow` header lists those \
         that are"
    );

    let reply = send(
        &gateway,
        Request::delete("/v1/health").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(reply.json()["error"]["message"].is_string());
}

#[tokio::test]
async fn framework_rejections_are_in_openai_shape() {
    let gateway = sims("");
    // A query that does not parse.
    let reply = send(
        &gateway,
        Request::post("/v1/degradation/level?level=a&level=b")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid query")
    );
    // A body that is not JSON for an endpoint that takes JSON, with the wrong type.
    let reply = send(
        &gateway,
        Request::post("/v1/chat/completions")
            .header("content-type", "text/plain")
            .body(Body::from("hello"))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
}

// ===== a provider's bulkhead =====

const BULKHEAD: &str = r"
providers:
  - name: narrow
    kind: simulated
    model: m
    priority: 1
    max_in_flight: 1
    simulate: {type: succeed, chunks: 3, chunk_delay: 1h}
  - name: wide
    kind: simulated
    model: m
    priority: 2
routes:
  - match: route-a
    providers: [{name: narrow}, {name: wide}]
  - match: route-b
    providers: [{name: narrow}, {name: wide}]
degradation:
  auto:
    enabled: false
";

#[tokio::test]
async fn a_full_bulkhead_fails_over_without_counting_against_the_provider_and_every_route_shares_it()
 {
    let gateway = Gateway::build(GatewayConfig::from_yaml(BULKHEAD).unwrap()).unwrap();
    // A stream through route A holds narrow's one place until it ends.
    let held = router(gateway.clone())
        .oneshot(chat("route-a", true))
        .await
        .unwrap();
    assert_eq!(held.status(), StatusCode::OK);
    assert_eq!(held.headers()["x-brace-provider"], "narrow");

    // Route B finds narrow full and goes to wide at once.
    for _ in 0..3 {
        let reply = send(&gateway, chat("route-b", false)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.headers["x-brace-provider"], "wide");
    }
    // Not a failure of narrow's: its circuit and health are untouched.
    let circuits = send(
        &gateway,
        Request::get("/v1/circuits").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(circuits.json()["narrow"]["failure_count"], 0);
    assert_eq!(circuits.json()["narrow"]["state"], "closed");
    let metrics = gateway.metrics.render();
    assert!(
        metrics.contains("brace_shed_total{scope=\"narrow\"} 3"),
        "{metrics}"
    );

    // When the stream is gone, its place is free again.
    drop(held);
    let reply = send(&gateway, chat("route-b", false)).await;
    assert_eq!(reply.headers["x-brace-provider"], "narrow");
}

#[tokio::test]
async fn with_every_bulkhead_full_the_answer_is_503_with_retry_after() {
    let yaml = r"
providers:
  - name: only
    kind: simulated
    model: m
    max_in_flight: 1
    simulate: {type: succeed, chunks: 3, chunk_delay: 1h}
degradation:
  auto:
    enabled: false
";
    let gateway = Gateway::build(GatewayConfig::from_yaml(yaml).unwrap()).unwrap();
    let held = router(gateway.clone())
        .oneshot(chat("m", true))
        .await
        .unwrap();
    assert_eq!(held.status(), StatusCode::OK);
    let reply = send(&gateway, chat("m", false)).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert_eq!(reply.headers["retry-after"], "1");
    assert!(reply.body.contains("overloaded"), "{}", reply.body);
    drop(held);
}

// ===== every attempt counted =====

fn series(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .and_then(|rest| rest.trim().parse().ok())
}

#[tokio::test(start_paused = true)]
async fn attempts_cut_by_the_timeout_or_the_first_token_guard_are_counted_with_their_outcome() {
    // Provider names are used by no other test: the recorder is process-wide.
    let yaml = r"
providers:
  - name: cut-by-timeout
    kind: simulated
    model: m
    priority: 1
    timeout: 2s
    simulate: {type: delay, delay: 1h, then: {type: succeed}}
  - name: cut-by-first-token
    kind: simulated
    model: m
    priority: 2
    first_token_timeout: 3s
    simulate: {type: succeed, first_token_delay: 1h}
  - name: answers
    kind: simulated
    model: m
    priority: 3
fallback:
  max_retries: 1
  base_delay: 1ms
  max_delay: 1ms
  on_error: [timeout]
degradation:
  auto:
    enabled: false
";
    let gateway = Gateway::build(GatewayConfig::from_yaml(yaml).unwrap()).unwrap();
    let reply = send(&gateway, chat("m", true)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.headers["x-brace-provider"], "answers");
    // Two attempts at each provider that timed out (one retry), one at the last.
    assert_eq!(reply.headers["x-brace-attempts"], "5");

    let metrics = gateway.metrics.render();
    if metrics.is_empty() {
        return;
    }
    for provider in ["cut-by-timeout", "cut-by-first-token"] {
        assert_eq!(
            series(
                &metrics,
                &format!(
                    "brace_provider_attempts_total{{provider=\"{provider}\",outcome=\"timeout\"}}"
                )
            ),
            Some(2.0),
            "{provider}: {metrics}"
        );
        assert_eq!(
            series(
                &metrics,
                &format!("brace_provider_latency_seconds_count{{provider=\"{provider}\"}}")
            ),
            Some(2.0),
            "{provider}: {metrics}"
        );
    }
    assert!(
        !metrics.contains("provider=\"cut-by-first-token\",outcome=\"ok\""),
        "{metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_attempt_cut_by_the_global_deadline_is_counted_as_a_timeout() {
    let yaml = r"
providers:
  - name: cut-by-deadline
    kind: simulated
    model: m
    timeout: 1h
    simulate: {type: hang}
degradation:
  auto:
    enabled: false
server:
  request_timeout: 5s
";
    let gateway = Gateway::build(GatewayConfig::from_yaml(yaml).unwrap()).unwrap();
    let reply = send(&gateway, chat("m", false)).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    let metrics = gateway.metrics.render();
    if metrics.is_empty() {
        return;
    }
    assert_eq!(
        series(
            &metrics,
            "brace_provider_attempts_total{provider=\"cut-by-deadline\",outcome=\"timeout\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_attempt_dropped_when_the_caller_goes_away_is_counted_as_cancelled() {
    let yaml = r"
providers:
  - name: dropped-by-caller
    kind: simulated
    model: m
    timeout: 1h
    simulate: {type: hang}
degradation:
  auto:
    enabled: false
";
    let gateway = Gateway::build(GatewayConfig::from_yaml(yaml).unwrap()).unwrap();
    let call = tokio::spawn({
        let gateway = gateway.clone();
        async move { send(&gateway, chat("m", false)).await.status }
    });
    // Until the provider has the call in hand.
    while gateway.sim("dropped-by-caller").unwrap().stats().calls == 0 {
        tokio::task::yield_now().await;
    }
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    let metrics = gateway.metrics.render();
    if metrics.is_empty() {
        return;
    }
    assert_eq!(
        series(
            &metrics,
            "brace_provider_attempts_total{provider=\"dropped-by-caller\",outcome=\"cancelled\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[test]
fn retry_after_never_exceeds_a_day_whatever_it_was_set_to() {
    let err = brace_gateway::ApiError::new(StatusCode::TOO_MANY_REQUESTS, "x")
        .with_retry_after(Some(Duration::MAX));
    assert_eq!(err.retry_after(), Some(Duration::from_hours(24)));
    use axum::response::IntoResponse;
    let response = err.into_response();
    assert_eq!(response.headers()["retry-after"], "86400");
}
