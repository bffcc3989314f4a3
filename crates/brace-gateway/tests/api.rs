//! The gateway's HTTP API through `router(..).oneshot(..)`: every endpoint and error.

mod support;

use support::{post, send};

use std::sync::Arc;

use axum::body::Body;
use brace_gateway::{Gateway, GatewayConfig};
use brace_llm::LlmErrorKind;
use brace_sim::{Behavior, Failure};
use http::{Request, StatusCode};
use serde_json::{Value, json};

const THREE_SIMS: &str = r"
providers:
  - name: primary
    kind: simulated
    model: big-model
    priority: 1
  - name: secondary
    kind: simulated
    model: medium-model
    priority: 2
  - name: local
    kind: simulated
    model: small-model
    priority: 3
fallback:
  max_retries: 1
  base_delay: 1ms
  max_delay: 2ms
  max_retry_after: 1s
circuit_breaker:
  sliding_window_size: 10
  minimum_calls: 4
  failure_rate_threshold: 50
  wait_in_open: 60s
health:
  consecutive_failures: 100
degradation:
  auto:
    enabled: false
";

fn gateway(yaml: &str) -> Arc<Gateway> {
    Gateway::build(GatewayConfig::from_yaml(yaml).unwrap()).unwrap()
}

fn chat(body: &Value) -> Request<Body> {
    post("/v1/chat/completions", body.to_string())
}

fn hello() -> Value {
    json!({"model": "any", "messages": [{"role": "user", "content": "Hello"}]})
}

#[tokio::test]
async fn chat_completion_says_who_answered() {
    let gateway = gateway(THREE_SIMS);
    let reply = send(&gateway, chat(&hello())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.header("x-brace-provider"), "primary");
    assert_eq!(reply.header("x-brace-model"), "big-model");
    assert_eq!(reply.header("x-brace-attempts"), "1");
    assert_eq!(reply.header("x-brace-degradation"), "full");
    assert_eq!(reply.header("x-brace-cache"), "miss");
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "big-model");
    assert!(
        !body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn malformed_requests_are_400_with_a_message_that_says_what_is_wrong() {
    let gateway = gateway(THREE_SIMS);
    let cases: Vec<(Request<Body>, &str)> = vec![
        (post("/v1/chat/completions", "{not json"), "not valid JSON"),
        (
            post("/v1/chat/completions", r#"{"model":"m"}"#),
            "missing field `messages`",
        ),
        (
            chat(&json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]})),
            "unknown variant `wizard`",
        ),
        (
            chat(
                &json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 7}),
            ),
            "temperature",
        ),
        (
            chat(&json!({"model": "m", "messages": []})),
            "at least one message",
        ),
        (
            Request::post("/v1/chat/completions")
                .body(Body::from(hello().to_string()))
                .unwrap(),
            "Content-Type",
        ),
    ];
    for (request, needle) in cases {
        let reply = send(&gateway, request).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
        let body = reply.json();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{message:?} should mention {needle:?}"
        );
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
}

#[tokio::test]
async fn oversized_body_is_413_and_unknown_path_404() {
    let gateway = gateway(&format!("{THREE_SIMS}\nserver:\n  body_limit: 1024\n"));
    let big = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let reply = send(&gateway, chat(&big)).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.body
    );
    assert!(reply.json()["error"]["message"].is_string());

    let reply = send(
        &gateway,
        Request::get("/v2/nothing").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.json()["error"]["message"].is_string());
}

#[tokio::test]
async fn failing_primary_fails_over_and_counts_attempts() {
    let gateway = gateway(THREE_SIMS);
    gateway
        .sim("primary")
        .unwrap()
        .set_behavior(Behavior::fail(LlmErrorKind::Server));
    let reply = send(&gateway, chat(&hello())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.header("x-brace-provider"), "secondary");
    assert_eq!(reply.header("x-brace-model"), "medium-model");
    // One attempt and one retry at the primary, then the secondary.
    assert_eq!(reply.header("x-brace-attempts"), "3");
}

#[tokio::test]
async fn a_bad_request_from_a_provider_is_not_failed_over() {
    let gateway = gateway(THREE_SIMS);
    gateway
        .sim("primary")
        .unwrap()
        .set_behavior(Behavior::fail(LlmErrorKind::BadRequest));
    let reply = send(&gateway, chat(&hello())).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_eq!(gateway.sim("secondary").unwrap().calls(), 0);
}

#[tokio::test]
async fn all_failed_is_503_listing_every_provider() {
    let gateway = gateway(THREE_SIMS);
    for name in ["primary", "secondary", "local"] {
        gateway
            .sim(name)
            .unwrap()
            .set_behavior(Behavior::fail(LlmErrorKind::Server));
    }
    let reply = send(&gateway, chat(&hello())).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    for name in ["primary", "secondary", "local"] {
        assert!(message.contains(name), "{message}");
    }
}

#[tokio::test]
async fn rate_limited_everywhere_is_429_with_the_shortest_retry_after() {
    let gateway = gateway(THREE_SIMS);
    for (name, secs) in [("primary", 40), ("secondary", 7), ("local", 90)] {
        gateway.sim(name).unwrap().set_behavior(Behavior::failure(
            Failure::new(LlmErrorKind::RateLimited)
                .with_retry_after(std::time::Duration::from_secs(secs)),
        ));
    }
    let reply = send(&gateway, chat(&hello())).await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.body
    );
    assert_eq!(reply.header("retry-after"), "7");
    assert_eq!(reply.json()["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn when_everything_fails_the_static_level_answers_once_the_ladder_is_down_there() {
    let gateway = gateway(THREE_SIMS);
    for name in ["primary", "secondary", "local"] {
        gateway
            .sim(name)
            .unwrap()
            .set_behavior(Behavior::fail(LlmErrorKind::Server));
    }
    // Without `fallback_to_static`, a failing request gets its real error...
    let reply = send(&gateway, chat(&hello())).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    // ...and once the ladder is down at the static level, it answers every request.
    gateway.degradation().pin("offline").unwrap();
    let reply = send(&gateway, chat(&hello())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.header("x-brace-degradation"), "offline");
    assert_eq!(reply.header("x-brace-static"), "true");
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        "Service temporarily limited"
    );
}

#[tokio::test]
async fn circuit_opening_is_visible_in_circuits_endpoint() {
    let gateway = gateway(THREE_SIMS);
    gateway
        .sim("primary")
        .unwrap()
        .set_behavior(Behavior::fail(LlmErrorKind::Overloaded));
    for _ in 0..4 {
        let reply = send(&gateway, chat(&hello())).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let circuits = send(
        &gateway,
        Request::get("/v1/circuits").body(Body::empty()).unwrap(),
    )
    .await;
    let body = circuits.json();
    assert_eq!(body["primary"]["state"], "open", "{body}");
    assert_eq!(body["secondary"]["state"], "closed");
    assert!(body["primary"]["failure_count"].as_u64().unwrap() >= 4);

    let calls_before = gateway.sim("primary").unwrap().calls();
    let reply = send(&gateway, chat(&hello())).await;
    assert_eq!(reply.header("x-brace-provider"), "secondary");
    assert_eq!(
        gateway.sim("primary").unwrap().calls(),
        calls_before,
        "an open circuit is skipped"
    );

    let health = send(
        &gateway,
        Request::get("/v1/health").body(Body::empty()).unwrap(),
    )
    .await
    .json();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["providers"][0]["name"], "primary");
    assert_eq!(health["providers"][0]["is_healthy"], false);
    assert!(
        health["providers"][0]["consecutive_failures"]
            .as_u64()
            .is_some()
    );
}

#[tokio::test]
async fn degradation_level_is_set_by_query_or_json_and_shows_in_responses() {
    let gateway = gateway(THREE_SIMS);
    let reply = send(
        &gateway,
        post("/v1/degradation/level?level=reduced", Body::empty()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["level"], "reduced");
    let reply = send(&gateway, chat(&hello())).await;
    assert_eq!(reply.header("x-brace-degradation"), "reduced");
    assert_eq!(reply.header("x-brace-removed"), "max_tokens");

    let reply = send(
        &gateway,
        post(
            "/v1/degradation/level",
            json!({"level": "minimal"}).to_string(),
        ),
    )
    .await;
    assert_eq!(reply.json()["level"], "minimal");

    let reply = send(
        &gateway,
        post("/v1/degradation/level?level=turbo", Body::empty()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"]["message"], "Invalid level: turbo");
}

#[tokio::test]
async fn admin_endpoints_need_the_token_when_configured() {
    let config = GatewayConfig::from_yaml(&format!(
        "{THREE_SIMS}\nadmin:\n  token_env: BRACE_ADMIN_TOKEN\n"
    ))
    .unwrap();
    let gateway = Gateway::build_with_env(config, |var| {
        (var == "BRACE_ADMIN_TOKEN").then(|| "s3cret-admin".to_owned())
    })
    .unwrap();
    let reply = send(
        &gateway,
        post("/v1/degradation/level?level=reduced", Body::empty()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(!reply.body.contains("s3cret-admin"));
    let wrong = Request::post("/v1/degradation/level?level=reduced")
        .header("authorization", "Bearer nope")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&gateway, wrong).await.status, StatusCode::UNAUTHORIZED);
    let right = Request::post("/v1/degradation/level?level=reduced")
        .header("authorization", "Bearer s3cret-admin")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&gateway, right).await.status, StatusCode::OK);
}

#[tokio::test]
async fn seed_completions_api_answers_with_content_provider_and_model() {
    let gateway = gateway(THREE_SIMS);
    let reply = send(
        &gateway,
        post(
            "/v1/completions",
            json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 50, "preferred_provider": "local"})
                .to_string(),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["provider"], "local");
    assert_eq!(body["model"], "small-model");
    assert!(!body["content"].as_str().unwrap().is_empty());

    let reply = send(
        &gateway,
        post(
            "/v1/completions/circuit",
            json!({"messages": [{"role": "user", "content": "Hi"}]}).to_string(),
        ),
    )
    .await;
    assert_eq!(reply.json()["circuit_state"], "closed");

    let reply = send(
        &gateway,
        post(
            "/v1/completions",
            json!({"messages": [{"role": "user", "content": "Hi"}], "preferred_provider": "nobody"}).to_string(),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("nobody"));
}

#[tokio::test]
async fn models_and_metrics_endpoints() {
    let gateway = gateway(THREE_SIMS);
    let models = send(
        &gateway,
        Request::get("/v1/models").body(Body::empty()).unwrap(),
    )
    .await
    .json();
    assert_eq!(models["object"], "list");
    let ids: Vec<_> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["big-model", "medium-model", "small-model"]);

    send(&gateway, chat(&hello())).await;
    let metrics = send(
        &gateway,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(metrics.status, StatusCode::OK);
    for name in [
        "brace_circuit_state",
        "brace_degradation_level",
        "brace_requests_total",
        "brace_provider_attempts_total",
        "brace_provider_latency_seconds",
    ] {
        assert!(metrics.body.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn streaming_ends_with_done() {
    let gateway = gateway(THREE_SIMS);
    let mut body = hello();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let reply = send(&gateway, chat(&body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(
        reply
            .header("content-type")
            .starts_with("text/event-stream")
    );
    let events: Vec<&str> = reply
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["delta"]["content"].is_string())
    );
    assert!(
        chunks.iter().any(|c| c["usage"]["total_tokens"].is_u64()),
        "usage chunk"
    );
}

#[tokio::test]
async fn a_stream_broken_after_commit_ends_with_an_error_event_and_no_done() {
    let gateway = gateway(THREE_SIMS);
    gateway
        .sim("primary")
        .unwrap()
        .set_behavior(Behavior::reply(
            brace_sim::Reply::new()
                .with_chunks(6)
                .with_fault(brace_sim::StreamFault::Break { after: 3 }),
        ));
    let mut body = hello();
    body["stream"] = json!(true);
    let reply = send(&gateway, chat(&body)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let events: Vec<&str> = reply
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert!(!events.contains(&"[DONE]"), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{last}");
}

#[tokio::test]
async fn a_stream_that_fails_before_its_first_token_fails_over() {
    let gateway = gateway(THREE_SIMS);
    gateway
        .sim("primary")
        .unwrap()
        .set_behavior(Behavior::reply(brace_sim::Reply::new().with_fault(
            brace_sim::StreamFault::Error {
                after: 1,
                error: Failure::new(LlmErrorKind::Overloaded),
            },
        )));
    let mut body = hello();
    body["stream"] = json!(true);
    let reply = send(&gateway, chat(&body)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-brace-provider"), "secondary");
    assert!(reply.body.contains("data: [DONE]"));
}

#[tokio::test]
async fn deterministic_answers_are_cached_and_served_at_the_cached_level() {
    let gateway = gateway(THREE_SIMS);
    let body = json!({"model": "any", "temperature": 0, "messages": [{"role": "user", "content": "cache me"}]});
    let first = send(&gateway, chat(&body)).await;
    assert_eq!(first.header("x-brace-cache"), "miss");
    gateway.degradation().pin("cached").unwrap();
    let second = send(&gateway, chat(&body)).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.header("x-brace-cache"), "hit");
    assert_eq!(second.header("x-brace-degradation"), "cached");
    assert_eq!(
        second.json()["choices"][0]["message"]["content"],
        first.json()["choices"][0]["message"]["content"]
    );
}

const ROUTED: &str = r"
providers:
  - name: primary
    kind: simulated
    model: big-model
  - name: backup
    kind: simulated
    model: backup-model
    accepts_prefill: true
routes:
  - match: fast-*
    providers:
      - name: backup
        model: backup-fast
  - match: exact-name
    providers:
      - name: primary
        passthrough: true
  - match: resilient
    continuation: true
    providers:
      - name: primary
      - name: backup
fallback:
  max_retries: 0
degradation:
  auto:
    enabled: false
";

#[tokio::test]
async fn routes_pick_providers_and_models_by_the_requested_model() {
    let gateway = gateway(ROUTED);
    let ask = |model: &str| {
        chat(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
    };

    let reply = send(&gateway, ask("fast-chat")).await;
    assert_eq!(reply.header("x-brace-provider"), "backup");
    assert_eq!(reply.header("x-brace-model"), "backup-fast");

    let reply = send(&gateway, ask("exact-name")).await;
    assert_eq!(reply.header("x-brace-provider"), "primary");
    assert_eq!(
        gateway
            .sim("primary")
            .unwrap()
            .last_request()
            .unwrap()
            .model,
        "exact-name"
    );

    // No route matches: every provider by priority, each asked for its own model.
    let reply = send(&gateway, ask("something-else")).await;
    assert_eq!(reply.header("x-brace-provider"), "primary");
    assert_eq!(reply.header("x-brace-model"), "big-model");
}

#[tokio::test]
async fn a_route_with_continuation_splices_a_broken_stream_into_one_whole_answer() {
    let gateway = gateway(ROUTED);
    gateway
        .sim("primary")
        .unwrap()
        .set_behavior(Behavior::reply(
            brace_sim::Reply::new()
                .with_text("one two three four five six seven eight")
                .with_fault(brace_sim::StreamFault::Break { after: 4 }),
        ));
    gateway.sim("backup").unwrap().set_behavior(Behavior::reply(
        brace_sim::Reply::new().with_text("one two three four five six seven eight"),
    ));
    let body = json!({"model": "resilient", "stream": true, "messages": [{"role": "user", "content": "count"}]});
    let reply = send(&gateway, chat(&body)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let events: Vec<&str> = reply
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(*events.last().unwrap(), "[DONE]", "{events:?}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text.split_whitespace().collect::<Vec<_>>().join(" "),
        "one two three four five six seven eight"
    );
    assert!(
        chunks.iter().any(|c| c["x_brace_continued_by"] == "backup"),
        "{chunks:?}"
    );

    // Without continuation the same break is an error event, never a clean end.
    let body = json!({"model": "other", "stream": true, "messages": [{"role": "user", "content": "count"}]});
    let reply = send(&gateway, chat(&body)).await;
    assert!(!reply.body.contains("[DONE]"));
    assert!(reply.body.contains("stream_interrupted"));
}

#[tokio::test]
async fn a_request_past_the_global_deadline_is_504() {
    let gateway = gateway(&format!(
        "{THREE_SIMS}\nserver:\n  request_timeout: 150ms\n"
    ));
    for name in ["primary", "secondary", "local"] {
        gateway.sim(name).unwrap().set_behavior(Behavior::hang());
    }
    let reply = send(&gateway, chat(&hello())).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["error"]["code"], "deadline_exceeded");
    assert_eq!(body["error"]["type"], "timeout_error");
}
