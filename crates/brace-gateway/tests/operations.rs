//! The operator's endpoints: circuits set by hand (`POST /v1/circuits/{name}`), the status
//! JSON and page.

use std::sync::Arc;

use axum::body::Body;
use brace_gateway::{Gateway, GatewayConfig};
use brace_llm::LlmErrorKind;
use brace_sim::Behavior;
use http::{Request, StatusCode};
use serde_json::{Value, json};

mod support;

use support::{chat, get, post, send};

const TWO_SIMS: &str = r"
providers:
  - name: primary
    kind: simulated
    model: m-primary
    priority: 1
    price: {input: 2.0, output: 8.0}
  - name: secondary
    kind: simulated
    model: m-secondary
    priority: 2
fallback:
  max_retries: 0
health:
  consecutive_failures: 3
  recovery_time: 1h
degradation:
  auto:
    enabled: false
";

fn set_state(name: &str, state: &str) -> Request<Body> {
    post(
        &format!("/v1/circuits/{name}"),
        json!({ "state": state }).to_string(),
    )
}

/// Who answers a chat request now.
async fn answered_by(gateway: &Arc<Gateway>) -> String {
    let reply = send(gateway, chat("anything", false)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.headers["x-brace-provider"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn circuit(gateway: &Arc<Gateway>, name: &str) -> Value {
    send(gateway, get("/v1/circuits")).await.json()[name].clone()
}

fn gauge(metrics: &str, provider: &str) -> Option<f64> {
    let prefix = format!("brace_circuit_state{{provider=\"{provider}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn a_circuit_forced_open_by_hand_is_skipped_until_set_back_to_auto() {
    let gateway =
        Gateway::build(GatewayConfig::from_yaml(&TWO_SIMS.replace("primary", "forced")).unwrap())
            .unwrap();
    // (Metrics are process-wide: the provider has a name no other test uses.)
    assert_eq!(answered_by(&gateway).await, "forced");

    let reply = send(&gateway, set_state("forced", "forced_open")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["circuit"]["state"], "forced_open");
    assert_eq!(circuit(&gateway, "forced").await["state"], "forced_open");
    for _ in 0..5 {
        assert_eq!(answered_by(&gateway).await, "secondary");
    }
    let metrics = send(&gateway, get("/metrics")).await.body;
    assert_eq!(gauge(&metrics, "forced"), Some(3.0), "{metrics}");
    assert!(
        metrics
            .contains("brace_circuit_overrides_total{provider=\"forced\",state=\"forced_open\"} 1"),
        "{metrics}"
    );

    let reply = send(&gateway, set_state("forced", "auto")).await;
    assert_eq!(reply.json()["circuit"]["state"], "closed");
    assert_eq!(answered_by(&gateway).await, "forced");
    // Back under the state machine: failures open it again.
    gateway
        .sim("forced")
        .unwrap()
        .set_behavior(Behavior::fail(LlmErrorKind::Server));
    for _ in 0..3 {
        assert_eq!(answered_by(&gateway).await, "secondary");
    }
    assert_eq!(circuit(&gateway, "forced").await["state"], "open");

    // Closed by hand, with an empty window.
    let reply = send(&gateway, set_state("forced", "closed")).await;
    assert_eq!(reply.json()["circuit"]["state"], "closed");
    assert_eq!(reply.json()["circuit"]["buffered_calls"], 0);
}

#[tokio::test]
async fn disabled_and_metrics_only_circuits_never_open() {
    let gateway =
        Gateway::build(GatewayConfig::from_yaml(&TWO_SIMS.replace("primary", "muted")).unwrap())
            .unwrap();
    gateway
        .sim("muted")
        .unwrap()
        .set_behavior(Behavior::fail(LlmErrorKind::Server));

    let reply = send(&gateway, set_state("muted", "metrics_only")).await;
    assert_eq!(reply.json()["circuit"]["state"], "metrics_only");
    for _ in 0..6 {
        assert_eq!(answered_by(&gateway).await, "secondary");
    }
    let recorded = circuit(&gateway, "muted").await;
    assert_eq!(recorded["state"], "metrics_only");
    assert_eq!(recorded["failed_calls"], 6, "{recorded}");

    let reply = send(&gateway, set_state("muted", "disabled")).await;
    assert_eq!(reply.json()["circuit"]["state"], "disabled");
    for _ in 0..6 {
        assert_eq!(answered_by(&gateway).await, "secondary");
    }
    assert_eq!(circuit(&gateway, "muted").await["state"], "disabled");
    let metrics = send(&gateway, get("/metrics")).await.body;
    assert_eq!(gauge(&metrics, "muted"), Some(4.0), "{metrics}");
}

#[tokio::test]
async fn circuit_requests_are_checked() {
    let gateway = Gateway::build(GatewayConfig::from_yaml(TWO_SIMS).unwrap()).unwrap();
    let reply = send(&gateway, set_state("nobody", "forced_open")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(
        reply.body.contains("primary, secondary"),
        "the known circuits are listed: {}",
        reply.body
    );
    let reply = send(&gateway, set_state("primary", "half_open")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("forced_open"), "{}", reply.body);
    let empty = Request::post("/v1/circuits/primary")
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(send(&gateway, empty).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(circuit(&gateway, "primary").await["state"], "closed");
}

#[tokio::test]
async fn circuits_need_the_admin_token_when_configured() {
    let config = GatewayConfig::from_yaml(&format!(
        "{TWO_SIMS}admin:\n  token_env: BRACE_ADMIN_TOKEN\n"
    ))
    .unwrap();
    let gateway = Gateway::build_with_env(config, |var| {
        (var == "BRACE_ADMIN_TOKEN").then(|| "circuit-token".to_owned())
    })
    .unwrap();
    let reply = send(&gateway, set_state("primary", "forced_open")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(circuit(&gateway, "primary").await["state"], "closed");
    assert_eq!(
        send(&gateway, get("/v1/config")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut authorized = set_state("primary", "forced_open");
    authorized
        .headers_mut()
        .insert("authorization", "Bearer circuit-token".parse().unwrap());
    assert_eq!(send(&gateway, authorized).await.status, StatusCode::OK);
    assert_eq!(circuit(&gateway, "primary").await["state"], "forced_open");
}

#[tokio::test]
async fn the_status_json_shows_providers_level_cache_and_traffic() {
    let gateway = Gateway::build(GatewayConfig::from_yaml(TWO_SIMS).unwrap()).unwrap();
    for _ in 0..4 {
        answered_by(&gateway).await;
    }
    send(&gateway, set_state("secondary", "forced_open")).await;
    gateway.degradation().pin("reduced").unwrap();
    let status = send(&gateway, get("/v1/status")).await.json();
    assert_eq!(status["status"], "degraded", "{status}");
    assert_eq!(status["level"]["name"], "reduced");
    assert_eq!(status["level"]["pinned"], true);
    assert_eq!(status["requests"]["total"], 4);
    assert_eq!(status["cache"]["misses"], 4);
    let primary = &status["providers"][0];
    assert_eq!(primary["name"], "primary");
    assert_eq!(primary["circuit"], "closed");
    assert_eq!(primary["attempts"], 4);
    assert!(primary["cost_usd"].as_f64().unwrap() > 0.0, "{primary}");
    assert!(primary["latency_ms"].is_number());
    let secondary = &status["providers"][1];
    assert_eq!(secondary["circuit"], "forced_open");
    assert_eq!(secondary["healthy"], false);
    assert_eq!(status["config"]["hash"].as_str().unwrap().len(), 16);
    assert_eq!(status["series"]["interval_s"], 2.0);
    assert!(status["series"]["points"].is_array());

    let page = send(&gateway, get("/status")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.body.contains("/v1/status") && page.body.contains("<svg"));
}

#[tokio::test(start_paused = true)]
async fn the_status_history_samples_traffic_and_level_changes() {
    let gateway = Gateway::build(GatewayConfig::from_yaml(TWO_SIMS).unwrap()).unwrap();
    // Let the sampler take its first sample and listen to the level.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for _ in 0..3 {
        for _ in 0..10 {
            answered_by(&gateway).await;
        }
        tokio::time::sleep(brace_gateway::status::SAMPLE_INTERVAL).await;
    }
    gateway.degradation().set("minimal").unwrap();
    tokio::time::sleep(brace_gateway::status::SAMPLE_INTERVAL).await;
    let status = gateway.status_json();
    let points = status["series"]["points"].as_array().unwrap();
    assert!(points.len() >= 3, "{points:?}");
    // Ten requests in each two-second sample: 5 per second.
    assert!(
        points.iter().any(|p| p[1] == 5.0),
        "request rates: {points:?}"
    );
    assert_eq!(points.last().unwrap()[3], 2, "the level is sampled");
    assert_eq!(points.last().unwrap()[0], 0.0, "the last point is now");
    let history = &status["level"]["history"][0];
    assert_eq!(history["from"], "full");
    assert_eq!(history["to"], "minimal");
    assert_eq!(history["cause"], "manual");
}
