//! One truth per provider, through the whole gateway: the breaker alone decides whether a
//! provider is tried, its state is shared by every route and endpoint, the error trail is
//! complete and decides the status, and the probes say what they should.
//!
//! Upstreams are independent simulated providers over HTTP on 127.0.0.1 (`SimServer`),
//! except where time matters: those tests run in-process simulated providers on paused
//! time.

mod support;

use support::{get, send};

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use brace_gateway::{Gateway, GatewayConfig};
use brace_llm::LlmErrorKind;
use brace_sim::{Behavior, Failure, SimConfig, SimHandle, SimServer};
use http::{Request, StatusCode};
use serde_json::json;

fn chat(model: &str) -> Request<Body> {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "Hello"}]});
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// A simulated provider over HTTP on 127.0.0.1.
async fn upstream(name: &str, behavior: Behavior) -> SimServer {
    SimServer::start(SimHandle::new(SimConfig::new(name).with_behavior(behavior)))
        .await
        .unwrap()
}

/// A provider entry reaching `server` over HTTP.
fn entry(name: &str, server: &SimServer, priority: u32, extra: &str) -> String {
    format!(
        "  - name: {name}\n    kind: openai-compatible\n    model: {name}-model\n    \
         base_url: {}/v1\n    api_key_env: ''\n    priority: {priority}\n{extra}",
        server.base_url()
    )
}

fn gateway(yaml: &str) -> Arc<Gateway> {
    Gateway::build(GatewayConfig::from_yaml(yaml).unwrap_or_else(|err| panic!("{err}\n{yaml}")))
        .unwrap()
}

/// No retries and no degradation passes, so each request is one call per provider.
const PLAIN: &str = "
fallback:
  max_retries: 0
degradation:
  fallback_attempts: 0
  auto:
    enabled: false
";

#[tokio::test]
async fn an_open_circuit_holds_for_every_route_and_every_endpoint_sees_it() {
    let a = upstream("a", Behavior::fail(LlmErrorKind::Server)).await;
    let b = upstream("b", Behavior::succeed()).await;
    let yaml = format!(
        "providers:\n{}{}circuit_breaker:\n  failure_threshold: 2\n  reset_timeout: 60s\n\
         routes:\n  - match: one\n    providers: [{{name: a}}, {{name: b}}]\n  \
         - match: two\n    providers: [{{name: a}}, {{name: b}}]\n{PLAIN}",
        entry("a", &a, 1, ""),
        entry("b", &b, 2, ""),
    );
    let gateway = gateway(&yaml);
    // Two failures through route `one` open a's circuit...
    for _ in 0..2 {
        let reply = send(&gateway, chat("one")).await;
        assert_eq!(reply.header("x-brace-provider"), "b", "{}", reply.body);
    }
    assert_eq!(a.handle().calls(), 2);
    // ...and route `two` and the default route skip a without calling it.
    for model in ["two", "two", "anything"] {
        let reply = send(&gateway, chat(model)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("x-brace-provider"), "b");
    }
    assert_eq!(
        a.handle().calls(),
        2,
        "no route calls a while its circuit is open"
    );

    // /v1/health and /v1/circuits read the one registry: route traffic shows.
    let health = send(&gateway, get("/v1/health")).await.json();
    let a_health = &health["providers"][0];
    assert_eq!(a_health["name"], "a");
    assert_eq!(a_health["calls"], 2);
    assert_eq!(a_health["failures"], 2);
    assert_eq!(a_health["circuit"], "open");
    assert_eq!(a_health["is_healthy"], false);
    let b_health = &health["providers"][1];
    assert_eq!(b_health["successes"], 5);
    assert_eq!(health["status"], "degraded");
    let circuits = send(&gateway, get("/v1/circuits")).await.json();
    assert_eq!(circuits["a"]["state"], "open");
    assert_eq!(circuits["b"]["state"], "closed");
}

#[tokio::test]
async fn every_provider_rate_limited_stays_429_on_later_requests() {
    let limited = || Behavior::rate_limited(Duration::from_secs(20));
    let a = upstream("a", limited()).await;
    let b = upstream("b", limited()).await;
    let yaml = format!(
        "providers:\n{}{}circuit_breaker:\n  failure_threshold: 1\n  reset_timeout: 60s\n{PLAIN}",
        entry("a", &a, 1, ""),
        entry("b", &b, 2, ""),
    );
    let gateway = gateway(&yaml);
    let first = send(&gateway, chat("m")).await;
    assert_eq!(
        first.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        first.body
    );
    assert_eq!(first.header("retry-after"), "20");
    // Both circuits are open now, opened by rate limits: the next request calls nobody and
    // is still a 429, with the shorter of the circuits' waits.
    let calls = (a.handle().calls(), b.handle().calls());
    let second = send(&gateway, chat("m")).await;
    assert_eq!((a.handle().calls(), b.handle().calls()), calls);
    assert_eq!(
        second.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        second.body
    );
    let wait: u64 = second.header("retry-after").parse().unwrap();
    assert!((59..=60).contains(&wait), "{wait}");
    let message = second.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("a @full (skipped): circuit `a` open (rate limited); may retry in"),
        "{message}"
    );
    assert!(message.contains("b @full (skipped)"), "{message}");
}

#[tokio::test]
async fn every_provider_failing_is_503_naming_each_within_the_call_bound() {
    let servers = [
        upstream("a", Behavior::fail(LlmErrorKind::Server)).await,
        upstream("b", Behavior::fail(LlmErrorKind::Server)).await,
        upstream("c", Behavior::fail(LlmErrorKind::Server)).await,
    ];
    // One retry, and the default ladder with one fallback pass: a server error is not
    // changed by a smaller request, so the lower level calls nobody.
    let yaml = format!(
        "providers:\n{}{}{}fallback:\n  max_retries: 1\n  base_delay: 1ms\n",
        entry("a", &servers[0], 1, ""),
        entry("b", &servers[1], 2, ""),
        entry("c", &servers[2], 3, ""),
    );
    let gateway = gateway(&yaml);
    let reply = send(&gateway, chat("m")).await;
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
    for name in ["a", "b", "c"] {
        assert!(
            message.contains(&format!("{name} @full: gave up after 2 attempts")),
            "{message}"
        );
    }
    let calls: u64 = servers.iter().map(|s| s.handle().calls()).sum();
    assert_eq!(calls, 6, "(1 + max_retries) calls per provider, no more");
}

#[tokio::test]
async fn a_redirect_fails_over_and_counts_against_the_provider() {
    let moved = upstream(
        "moved",
        Behavior::failure(Failure::new(LlmErrorKind::UnexpectedStatus)),
    )
    .await;
    let good = upstream("good", Behavior::succeed()).await;
    let yaml = format!(
        "providers:\n{}{}{PLAIN}",
        entry("moved", &moved, 1, ""),
        entry("good", &good, 2, ""),
    );
    let gateway = gateway(&yaml);
    let reply = send(&gateway, chat("m")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.header("x-brace-provider"), "good");
    let health = send(&gateway, get("/v1/health")).await.json();
    assert_eq!(health["providers"][0]["failures"], 1);

    // With nobody else, the caller learns what happened: a 503 that says why.
    let alone = gateway_alone(&moved);
    let reply = send(&alone, chat("m")).await;
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
    assert!(
        message.contains("moved @full: unexpected status (302): redirect not followed"),
        "{message}"
    );
    assert!(message.contains("base_url"), "{message}");
}

fn gateway_alone(server: &SimServer) -> Arc<Gateway> {
    gateway(&format!(
        "providers:\n{}{PLAIN}",
        entry("moved", server, 1, "")
    ))
}

#[tokio::test]
async fn a_per_provider_breaker_override_opens_that_providers_circuit_alone() {
    let a = upstream("a", Behavior::fail(LlmErrorKind::Server)).await;
    let b = upstream("b", Behavior::fail(LlmErrorKind::Server)).await;
    let c = upstream("c", Behavior::succeed()).await;
    let yaml = format!(
        "providers:\n{}{}{}circuit_breaker:\n  failure_threshold: 5\n{PLAIN}",
        entry("a", &a, 1, "    circuit_breaker: {failure_threshold: 1}\n"),
        entry("b", &b, 2, ""),
        entry("c", &c, 3, ""),
    );
    let gateway = gateway(&yaml);
    for _ in 0..3 {
        assert_eq!(
            send(&gateway, chat("m")).await.header("x-brace-provider"),
            "c"
        );
    }
    let circuits = send(&gateway, get("/v1/circuits")).await.json();
    assert_eq!(circuits["a"]["state"], "open", "one failure opens a");
    assert_eq!(circuits["b"]["state"], "closed", "b keeps the global five");
    assert_eq!((a.handle().calls(), b.handle().calls()), (1, 3));
}

#[tokio::test]
async fn the_probes_answer_with_the_right_status() {
    let a = upstream("a", Behavior::succeed()).await;
    let yaml = format!(
        "providers:\n{}circuit_breaker:\n  failure_threshold: 1\n  reset_timeout: 60s\n{PLAIN}",
        entry("a", &a, 1, "")
    );
    let gateway = gateway(&yaml);
    assert_eq!(send(&gateway, get("/livez")).await.status, StatusCode::OK);
    assert_eq!(send(&gateway, get("/readyz")).await.status, StatusCode::OK);
    assert_eq!(
        send(&gateway, get("/v1/health")).await.status,
        StatusCode::OK
    );

    // The only provider's circuit opens: not ready, health unavailable, still live.
    a.handle()
        .set_behavior(Behavior::fail(LlmErrorKind::Server));
    send(&gateway, chat("m")).await;
    let ready = send(&gateway, get("/readyz")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        ready.body.contains("every circuit is open"),
        "{}",
        ready.body
    );
    let health = send(&gateway, get("/v1/health")).await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.json()["status"], "unavailable");
    assert_eq!(send(&gateway, get("/livez")).await.status, StatusCode::OK);

    // Shutting down is not ready either, whatever the circuits say.
    let other = gateway_alone(&a);
    other.begin_shutdown();
    let ready = send(&other, get("/readyz")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.body.contains("shutting down"), "{}", ready.body);
}

// ===== on paused time: in-process simulated providers =====

const SEED_TIMING: &str = "
providers:
  - name: primary
    kind: simulated
    model: big
    priority: 1
  - name: secondary
    kind: simulated
    model: small
    priority: 2
fallback:
  max_retries: 0
circuit_breaker:
  failure_threshold: 3
  reset_timeout: 3s
degradation:
  fallback_attempts: 0
  auto:
    enabled: false
";

#[tokio::test(start_paused = true)]
async fn the_breakers_reset_timeout_is_the_only_recovery_time() {
    let gateway = gateway(SEED_TIMING);
    let primary = gateway.sim("primary").unwrap().clone();
    primary.set_behavior(Behavior::fail(LlmErrorKind::Server));
    for _ in 0..3 {
        assert_eq!(
            send(&gateway, chat("m")).await.header("x-brace-provider"),
            "secondary"
        );
    }
    assert_eq!(gateway.circuit_state("primary").unwrap().as_str(), "open");

    // Healed, but held out for the breaker's 3 s and not a moment longer (no second,
    // 30 s health timer).
    primary.set_behavior(Behavior::succeed());
    tokio::time::advance(Duration::from_millis(2999)).await;
    assert_eq!(
        send(&gateway, chat("m")).await.header("x-brace-provider"),
        "secondary"
    );
    assert_eq!(primary.calls(), 3);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        send(&gateway, chat("m")).await.header("x-brace-provider"),
        "primary"
    );
    assert_eq!(gateway.circuit_state("primary").unwrap().as_str(), "closed");
}

#[tokio::test(start_paused = true)]
async fn the_health_section_is_the_breakers_rule_by_other_names() {
    let yaml = SEED_TIMING.replace(
        "circuit_breaker:\n  failure_threshold: 3\n  reset_timeout: 3s\n",
        "health:\n  consecutive_failures: 2\n  recovery_time: 5s\n",
    );
    let gateway = gateway(&yaml);
    let primary = gateway.sim("primary").unwrap().clone();
    primary.set_behavior(Behavior::fail(LlmErrorKind::Server));
    send(&gateway, chat("m")).await;
    assert_eq!(gateway.circuit_state("primary").unwrap().as_str(), "closed");
    send(&gateway, chat("m")).await;
    assert_eq!(gateway.circuit_state("primary").unwrap().as_str(), "open");
    primary.set_behavior(Behavior::succeed());
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        send(&gateway, chat("m")).await.header("x-brace-provider"),
        "primary"
    );
}

#[test]
fn a_health_setting_that_contradicts_the_breaker_is_rejected_with_both_names() {
    let yaml = SEED_TIMING.replace(
        "degradation:",
        "health:\n  recovery_time: 30s\ndegradation:",
    );
    let err = GatewayConfig::from_yaml(&yaml).unwrap_err().to_string();
    assert!(
        err.contains("health.recovery_time") && err.contains("reset_timeout"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_provider_names_its_own_model_for_a_degradation_level() {
    let yaml = "
providers:
  - name: primary
    kind: simulated
    model: big
    models: {reduced: big-mini}
  - name: secondary
    kind: simulated
    model: other
    priority: 2
degradation:
  start: reduced
  auto:
    enabled: false
";
    let gateway = gateway(yaml);
    let reply = send(&gateway, chat("m")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.header("x-brace-degradation"), "reduced");
    assert_eq!(reply.header("x-brace-model"), "big-mini");
    assert_eq!(
        gateway
            .sim("primary")
            .unwrap()
            .last_request()
            .unwrap()
            .model
            .as_ref(),
        "big-mini"
    );

    let err = GatewayConfig::from_yaml(&yaml.replace("reduced: big-mini", "tiny: x"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown degradation level `tiny`"), "{err}");
}
