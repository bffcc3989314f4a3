//! Failover drills: a provider broken on purpose, for a bounded time, through the admin API
//! or the configuration — the traffic fails over, the drill ends by itself, the provider
//! serves again.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use brace_gateway::{Gateway, GatewayConfig};
use http::{Request, StatusCode};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::time::Instant;

mod support;

use support::{get, post, send};

const TWO_SIMS: &str = r"
providers:
  - name: primary
    kind: simulated
    model: m-primary
    priority: 1
    timeout: 500ms
  - name: secondary
    kind: simulated
    model: m-secondary
    priority: 2
fallback:
  max_retries: 0
health:
  consecutive_failures: 3
  recovery_time: 1s
degradation:
  auto:
    enabled: false
";

fn chat() -> Request<Body> {
    support::chat("anything", false)
}

fn post_json(path: &str, body: &Value) -> Request<Body> {
    post(path, body.to_string())
}

/// One answer of the steady load: when it was sent, its status, who answered, and the
/// drill header.
#[derive(Debug, Clone)]
struct Answer {
    sent: Duration,
    status: StatusCode,
    provider: String,
    chaos: Option<String>,
}

#[tokio::test(start_paused = true)]
async fn a_drill_on_the_primary_fails_over_ends_by_itself_and_the_primary_serves_again() {
    let gateway =
        Gateway::build(GatewayConfig::from_yaml(&TWO_SIMS.replace("primary", "drilled")).unwrap())
            .unwrap();
    // (Metrics are process-wide: the provider has a name no other test uses.)
    let start = Instant::now();
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let load = {
        let (gateway, answers) = (gateway.clone(), answers.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            while start.elapsed() < Duration::from_secs(6) {
                tick.tick().await;
                let (gateway, answers) = (gateway.clone(), answers.clone());
                tokio::spawn(async move {
                    let sent = start.elapsed();
                    let reply = send(&gateway, chat()).await;
                    answers.lock().push(Answer {
                        sent,
                        status: reply.status,
                        provider: reply.header("x-brace-provider").to_owned(),
                        chaos: reply
                            .headers
                            .get("x-brace-chaos")
                            .map(|v| v.to_str().unwrap().to_owned()),
                    });
                });
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = send(
        &gateway,
        post_json(
            "/v1/chaos",
            &json!({"provider": "drilled", "error_rate": 1.0, "duration": "2s"}),
        ),
    )
    .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let drill_start = start.elapsed();
    assert_eq!(started.json()["drill"]["provider"], "drilled");
    assert_eq!(started.json()["drill"]["ends_in_s"], 2.0);

    // While it runs it shows in the drill list, the status and the metrics.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let drills = send(&gateway, get("/v1/chaos")).await;
    assert_eq!(drills.json()["drills"][0]["fault"], "error");
    let status = send(&gateway, get("/v1/status")).await;
    let primary = &status.json()["providers"][0];
    assert_eq!(primary["name"], "drilled");
    assert_eq!(primary["drill"]["status"], 503);
    let metrics = send(&gateway, get("/metrics")).await;
    assert!(
        metrics
            .body
            .contains("brace_chaos_active{provider=\"drilled\"} 1"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("brace_chaos_injected_total{provider=\"drilled\",fault=\"error\"}"),
        "{}",
        metrics.body
    );

    load.await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let drill_end = drill_start + Duration::from_secs(2);
    let answers = answers.lock().clone();
    assert!(answers.len() >= 250, "{} requests", answers.len());
    let failed: Vec<_> = answers
        .iter()
        .filter(|a| a.status != StatusCode::OK)
        .collect();
    assert!(failed.is_empty(), "failed: {failed:?}");
    let during: Vec<_> = answers
        .iter()
        .filter(|a| a.sent > drill_start && a.sent < drill_end)
        .collect();
    assert!(during.len() > 80);
    for answer in &during {
        assert_eq!(answer.provider, "secondary", "{answer:?}");
        assert_eq!(
            answer.chaos.as_deref(),
            Some("drilled=error:503@100%"),
            "{answer:?}"
        );
    }
    for answer in answers.iter().filter(|a| a.sent < drill_start) {
        assert_eq!(answer.provider, "drilled", "{answer:?}");
        assert_eq!(answer.chaos, None);
    }
    // Ended by itself: no header, no drill; and once the primary's circuit has let a trial
    // through, the primary answers everything again.
    let after: Vec<_> = answers.iter().filter(|a| a.sent > drill_end).collect();
    assert!(after.iter().all(|a| a.chaos.is_none()));
    let back = after
        .iter()
        .position(|a| a.provider == "drilled")
        .expect("the primary serves again");
    assert!(after[back..].iter().all(|a| a.provider == "drilled"));
    let drills = send(&gateway, get("/v1/chaos")).await;
    assert_eq!(drills.json()["drills"], json!([]));
    let injected = gateway.config_json();
    assert_eq!(injected["reloads"]["applied"], 0, "no reload was needed");
}

#[tokio::test(start_paused = true)]
async fn a_drill_in_the_configuration_starts_with_the_gateway() {
    let yaml =
        format!("{TWO_SIMS}chaos:\n  - provider: primary\n    stall: true\n    duration: 3s\n");
    let gateway = Gateway::build(GatewayConfig::from_yaml(&yaml).unwrap()).unwrap();
    // The primary's calls stall until its 500 ms timeout; the secondary answers.
    let started = Instant::now();
    let reply = send(&gateway, chat()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-brace-provider"), "secondary");
    assert_eq!(reply.header("x-brace-chaos"), "primary=stall@100%");
    assert_eq!(started.elapsed(), Duration::from_millis(500));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let reply = send(&gateway, chat()).await;
    assert_eq!(reply.header("x-brace-provider"), "primary");
    assert!(reply.headers.get("x-brace-chaos").is_none());
}

#[tokio::test(start_paused = true)]
async fn latency_drills_slow_a_provider_down_at_a_rate() {
    let gateway = Gateway::build(GatewayConfig::from_yaml(TWO_SIMS).unwrap()).unwrap();
    let reply = send(
        &gateway,
        post_json(
            "/v1/chaos",
            &json!({"provider": "secondary", "latency": "300ms", "rate": 1.0, "duration": "1m"}),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let mut request = chat();
    *request.uri_mut() = "/v1/completions".parse().unwrap();
    *request.body_mut() = Body::from(
        json!({"messages": [{"role": "user", "content": "hi"}], "preferred_provider": "secondary"})
            .to_string(),
    );
    let started = Instant::now();
    let reply = send(&gateway, request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["provider"], "secondary");
    assert_eq!(started.elapsed(), Duration::from_millis(300));

    // Ended early by hand.
    let stopped = send(
        &gateway,
        Request::delete("/v1/chaos/secondary")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(stopped.json()["stopped"], true);
    assert_eq!(gateway.status_json()["drills"], json!([]));
}

#[tokio::test]
async fn drill_requests_are_checked() {
    let gateway = Gateway::build(GatewayConfig::from_yaml(TWO_SIMS).unwrap()).unwrap();
    let reply = send(
        &gateway,
        post_json(
            "/v1/chaos",
            &json!({"provider": "nobody", "error_rate": 1.0, "duration": "1s"}),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.body.contains("nobody"), "{}", reply.body);
    for (body, says) in [
        (
            json!({"provider": "primary", "duration": "1s"}),
            "exactly one fault",
        ),
        (
            json!({"provider": "primary", "stall": true, "duration": "2d"}),
            "at most 24h",
        ),
        (
            json!({"provider": "primary", "error_rate": 2, "duration": "1s"}),
            "fraction",
        ),
        (
            json!({"provider": "primary", "errors": 1, "duration": "1s"}),
            "unknown field",
        ),
    ] {
        let reply = send(&gateway, post_json("/v1/chaos", &body)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(reply.body.contains(says), "{}", reply.body);
    }
    assert_eq!(gateway.status_json()["drills"], json!([]));
}

#[tokio::test]
async fn drills_need_the_admin_token_when_configured() {
    let config = GatewayConfig::from_yaml(&format!(
        "{TWO_SIMS}admin:\n  token_env: BRACE_ADMIN_TOKEN\n"
    ))
    .unwrap();
    let gateway = Gateway::build_with_env(config, |var| {
        (var == "BRACE_ADMIN_TOKEN").then(|| "drill-token".to_owned())
    })
    .unwrap();
    let drill = json!({"provider": "primary", "error_rate": 1.0, "duration": "1s"});
    let reply = send(&gateway, post_json("/v1/chaos", &drill)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = send(
        &gateway,
        Request::delete("/v1/chaos/primary")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(gateway.status_json()["drills"], json!([]));
    let mut authorized = post_json("/v1/chaos", &drill);
    authorized
        .headers_mut()
        .insert("authorization", "Bearer drill-token".parse().unwrap());
    assert_eq!(send(&gateway, authorized).await.status, StatusCode::OK);
}
