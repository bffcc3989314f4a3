//! The example alerting rules and Grafana dashboard in `deploy/` read metrics the gateway
//! really exports: every `brace_*` name they use appears in `/metrics` once the features
//! behind it have run. (`promtool check rules` / `promtool test rules` check their syntax
//! and behaviour in CI.)

use std::collections::BTreeSet;
use std::path::PathBuf;

use brace_gateway::{Gateway, GatewayConfig};
use serde_json::json;

mod support;

use support::{get, post, send};

fn chat() -> http::Request<axum::body::Body> {
    support::chat("anything", false)
}

fn deploy(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|err| panic!("{}: {err}", file.display()))
}

/// Every `brace_*` metric name in `text`, histogram series folded into their metric.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("brace_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        // `brace_` inside a longer word (`x_brace_y`) is not a metric.
        let standalone = rest[..at]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        if standalone {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            names.insert(base.to_owned());
        }
        rest = &tail[end..];
    }
    names
}

const CONFIG: &str = r"
providers:
  - name: alert-primary
    kind: simulated
    model: m-primary
    priority: 1
    price: {input: 3.0, output: 15.0}
    simulate: {type: sequence, steps: [{type: fail, kind: server}]}
  - name: alert-secondary
    kind: simulated
    model: m-secondary
    priority: 2
    price: {input: 1.0, output: 4.0}
fallback:
  max_retries: 0
degradation:
  auto:
    enabled: false
cache:
  enabled: true
  admit: all
";

#[tokio::test]
async fn the_rules_and_the_dashboard_use_metrics_the_gateway_exports() {
    let rules = deploy("prometheus/brace-alerts.yml");
    let dashboard = deploy("grafana/brace-dashboard.json");
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("the dashboard is JSON");
    let mut wanted = metric_names(&rules);
    assert!(wanted.contains("brace_circuit_state"), "{wanted:?}");
    let in_dashboard = metric_names(&dashboard);
    assert!(in_dashboard.len() >= 10, "{in_dashboard:?}");
    wanted.extend(in_dashboard);

    // Run what each metric counts: a failover (the primary's first call fails), a cache hit,
    // a refused reload, a drill, a circuit set by hand.
    let gateway = Gateway::build(GatewayConfig::from_yaml(CONFIG).unwrap()).unwrap();
    for _ in 0..3 {
        send(&gateway, chat()).await;
    }
    gateway.degradation().pin("cached").unwrap();
    send(&gateway, chat()).await;
    gateway.degradation().release();
    let _ = gateway.reload_from_file(std::path::Path::new("/nonexistent/brace.yaml"));
    let drill = json!({"provider": "alert-secondary", "latency": "1ms", "duration": "1m"});
    send(&gateway, post("/v1/chaos", drill.to_string())).await;
    send(
        &gateway,
        post(
            "/v1/circuits/alert-secondary",
            r#"{"state": "metrics_only"}"#,
        ),
    )
    .await;
    let metrics = send(&gateway, get("/metrics")).await.body;
    assert!(!metrics.is_empty(), "this test binary owns the recorder");
    let exported: BTreeSet<String> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .map(str::to_owned)
        .collect();
    let missing: Vec<_> = wanted.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "used in deploy/ but not exported: {missing:?}\nexported: {exported:?}"
    );
}

#[test]
fn metric_names_are_read_from_expressions() {
    let names = metric_names(
        "sum(rate(brace_requests_total{x=\"y\"}[5m])) / histogram_quantile(0.9, \
         brace_request_duration_seconds_bucket) + x_brace_not_a_metric",
    );
    let names: Vec<_> = names.iter().map(String::as_str).collect();
    assert_eq!(
        names,
        ["brace_request_duration_seconds", "brace_requests_total"]
    );
}
