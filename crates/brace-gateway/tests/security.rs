//! Who may do what: the admin endpoints fail closed, and the data plane takes only listed
//! client keys, each within its rate.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use brace_gateway::server::ListenAddr;
use brace_gateway::{Gateway, GatewayConfig, app::router};

const ONE_SIM: &str = "providers:\n  - name: primary\n    kind: simulated\n    model: sim-model\n\
                       degradation:\n  auto:\n    enabled: false\n";

fn build(yaml: &str, env: &[(&str, &str)]) -> Arc<Gateway> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Gateway::build_with_env(GatewayConfig::from_yaml(yaml).unwrap(), move |var| {
        env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone())
    })
    .unwrap()
}

async fn send(
    gateway: &Arc<Gateway>,
    request: Request<Body>,
) -> (StatusCode, http::HeaderMap, Value) {
    let response = router(gateway.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, headers, json)
}

fn pin_level(authorization: Option<&str>) -> Request<Body> {
    let mut request = Request::post("/v1/degradation/level?level=reduced");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.body(Body::empty()).unwrap()
}

fn chat(authorization: Option<&str>) -> Request<Body> {
    let mut request =
        Request::post("/v1/chat/completions").header("content-type", "application/json");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request
        .body(Body::from(
            json!({"model": "sim-model", "messages": [{"role": "user", "content": "Hi"}]})
                .to_string(),
        ))
        .unwrap()
}

// ===== admin =====

#[tokio::test]
async fn without_an_admin_section_a_loopback_gateway_lets_admin_calls_through() {
    let gateway = build(ONE_SIM, &[]);
    let (status, _, body) = send(&gateway, pin_level(None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["level"], "reduced");
}

#[tokio::test]
async fn without_an_admin_section_a_gateway_on_another_address_answers_403_saying_how_to_enable() {
    // Configured to listen on every interface (never bound here).
    let gateway = build(&format!("listen: 0.0.0.0:8080\n{ONE_SIM}"), &[]);
    let (status, _, body) = send(&gateway, pin_level(None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "admin_disabled");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("0.0.0.0:8080") && message.contains("token_env"),
        "{message}"
    );
    assert_eq!(gateway.degradation().level().name(), "full");

    // What `serve` tells the router wins over the configuration: a loopback listener...
    let mut request = pin_level(None);
    request
        .extensions_mut()
        .insert(ListenAddr("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(send(&gateway, request).await.0, StatusCode::OK);
    // ...or, for a gateway configured on loopback, a public one.
    let gateway = build(ONE_SIM, &[]);
    let mut request = pin_level(None);
    request
        .extensions_mut()
        .insert(ListenAddr("192.0.2.7:8080".parse().unwrap()));
    assert_eq!(send(&gateway, request).await.0, StatusCode::FORBIDDEN);
    // Reading is not gated.
    let (status, _, _) = send(
        &gateway,
        Request::get("/v1/degradation/level")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn with_an_admin_section_the_token_is_needed_even_on_loopback() {
    let gateway = build(
        &format!("{ONE_SIM}admin:\n  token_env: ADMIN_TOKEN\n"),
        &[("ADMIN_TOKEN", "s3cret-admin")],
    );
    for (given, expected) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("Bearer wrong"), StatusCode::UNAUTHORIZED),
        (
            Some("Bearer s3cret-admin-and-more"),
            StatusCode::UNAUTHORIZED,
        ),
        (Some("Bearer s3cret-admin"), StatusCode::OK),
    ] {
        let (status, _, body) = send(&gateway, pin_level(given)).await;
        assert_eq!(status, expected, "{given:?}: {body}");
        assert!(!body.to_string().contains("s3cret-admin"));
    }
}

#[test]
fn an_unset_admin_token_variable_refuses_to_start() {
    let config = GatewayConfig::from_yaml(&format!(
        "{ONE_SIM}admin:\n  token_env: UNSET_ADMIN_TOKEN\n"
    ))
    .unwrap();
    let err = Gateway::build_with_env(config, |_| None).unwrap_err();
    assert!(err.to_string().contains("UNSET_ADMIN_TOKEN"), "{err}");
}

#[tokio::test]
async fn over_a_real_loopback_socket_admin_calls_without_a_section_go_through() {
    brace_providers::provider::install_crypto_provider();
    let gateway = build(&format!("listen: 0.0.0.0:8080\n{ONE_SIM}"), &[]);
    // Configured for every interface, but served on 127.0.0.1: the real listener counts.
    let (addr, _stop) = support::serve_on_loopback(gateway.clone()).await;
    // The degradation level, and the operator's endpoints.
    let client = reqwest::Client::new();
    for request in [
        client.post(format!("http://{addr}/v1/degradation/level?level=minimal")),
        client.get(format!("http://{addr}/v1/config")),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{}", response.url());
    }
    assert_eq!(gateway.degradation().level().name(), "minimal");
}

// ===== client keys =====

const KEYS: &str = "auth:\n  keys_env: CLIENT_KEYS\n";

#[tokio::test]
async fn the_data_plane_needs_a_listed_key_and_says_so_in_openai_shape() {
    let gateway = build(
        &format!("{ONE_SIM}{KEYS}"),
        &[("CLIENT_KEYS", "alice sk-alice-1, sk-anonymous-2")],
    );
    let (status, _, body) = send(&gateway, chat(None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing API key")
    );

    let (status, _, body) = send(&gateway, chat(Some("Bearer sk-alice-"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["message"], "invalid API key");
    assert!(!body.to_string().contains("sk-alice"));

    for key in ["sk-alice-1", "sk-anonymous-2"] {
        let (status, headers, body) = send(&gateway, chat(Some(&format!("Bearer {key}")))).await;
        assert_eq!(status, StatusCode::OK, "{key}: {body}");
        assert_eq!(headers["x-brace-provider"], "primary");
    }
    // The models list is data plane too; health and metrics are not.
    let models = Request::get("/v1/models").body(Body::empty()).unwrap();
    assert_eq!(send(&gateway, models).await.0, StatusCode::UNAUTHORIZED);
    let health = Request::get("/v1/health").body(Body::empty()).unwrap();
    assert_eq!(send(&gateway, health).await.0, StatusCode::OK);

    // Metrics name keys by id, never by the key.
    let metrics = gateway.metrics.render();
    assert!(
        metrics.contains("brace_client_requests_total{key=\"alice\",status=\"200\"}"),
        "{metrics}"
    );
    let anonymous = metrics
        .lines()
        .find(|line| line.starts_with("brace_client_requests_total{key=\"key-"))
        .expect("the unnamed key by its hash");
    assert!(!anonymous.contains("anonymous"), "{anonymous}");
    assert!(!metrics.contains("sk-alice-1"));
    assert!(metrics.contains("brace_auth_refused_total{status=\"401\"}"));
}

#[tokio::test(start_paused = true)]
async fn a_key_over_its_rate_gets_429_with_retry_after_and_others_are_not_affected() {
    let gateway = build(
        &format!("{ONE_SIM}{KEYS}  rate_per_minute: 2\n"),
        &[("CLIENT_KEYS", "alice sk-a,bob sk-b")],
    );
    for _ in 0..2 {
        assert_eq!(
            send(&gateway, chat(Some("Bearer sk-a"))).await.0,
            StatusCode::OK
        );
    }
    let (status, headers, body) = send(&gateway, chat(Some("Bearer sk-a"))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Two a minute: the next one in 30 s.
    assert_eq!(headers["retry-after"], "30");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"].as_str().unwrap().contains("alice"));

    assert_eq!(
        send(&gateway, chat(Some("Bearer sk-b"))).await.0,
        StatusCode::OK
    );
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(
        send(&gateway, chat(Some("Bearer sk-a"))).await.0,
        StatusCode::OK
    );
}

fn keys_file(name: &str, content: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("brace-keys-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keys");
    std::fs::write(&path, content).unwrap();
    path
}

#[tokio::test(start_paused = true)]
async fn the_keys_file_is_read_again_when_it_changes() {
    let path = keys_file("change", "old sk-old\n");
    let gateway = build(
        &format!(
            "{ONE_SIM}auth:\n  keys_file: {}\n  reload_interval: 10s\n",
            path.display()
        ),
        &[],
    );
    let keys = gateway.client_keys().unwrap().clone();
    let mut reloaded = keys.subscribe();
    reloaded.mark_unchanged();
    tokio::spawn(keys.clone().watch());
    assert_eq!(
        send(&gateway, chat(Some("Bearer sk-old"))).await.0,
        StatusCode::OK
    );

    std::fs::write(&path, "# rotated\nnew sk-new\n").unwrap();
    tokio::time::timeout(Duration::from_mins(1), reloaded.changed())
        .await
        .expect("reloaded within the interval")
        .unwrap();
    assert_eq!(
        send(&gateway, chat(Some("Bearer sk-new"))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&gateway, chat(Some("Bearer sk-old"))).await.0,
        StatusCode::UNAUTHORIZED
    );

    // A file that became empty keeps the keys in force.
    std::fs::write(&path, "\n").unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(
        send(&gateway, chat(Some("Bearer sk-new"))).await.0,
        StatusCode::OK
    );
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

#[cfg(unix)]
#[tokio::test]
async fn the_keys_file_is_read_again_on_sighup() {
    // A handler is in place before the signal is sent (the default action would end the
    // test process).
    let _hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).unwrap();
    let path = keys_file("sighup", "sk-before\n");
    let gateway = build(
        &format!(
            "{ONE_SIM}auth:\n  keys_file: {}\n  reload_interval: 1h\n",
            path.display()
        ),
        &[],
    );
    let keys = gateway.client_keys().unwrap().clone();
    let mut reloaded = keys.subscribe();
    reloaded.mark_unchanged();
    tokio::spawn(keys.clone().watch());
    // Let the watcher start (and register for SIGHUP) before the signal.
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    std::fs::write(&path, "sk-after\n").unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(30), reloaded.changed())
        .await
        .expect("reloaded on SIGHUP")
        .unwrap();
    assert_eq!(
        send(&gateway, chat(Some("Bearer sk-after"))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&gateway, chat(Some("Bearer sk-before"))).await.0,
        StatusCode::UNAUTHORIZED
    );
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

#[tokio::test]
async fn client_keys_over_a_real_socket_none_wrong_and_listed() {
    brace_providers::provider::install_crypto_provider();
    let gateway = build(&format!("{ONE_SIM}{KEYS}"), &[("CLIENT_KEYS", "sk-listed")]);
    let (addr, _stop) = support::serve_on_loopback(gateway).await;
    let client = reqwest::Client::new();
    let body = json!({"model": "sim-model", "messages": [{"role": "user", "content": "Hi"}]});
    for (key, expected) in [
        (None, 401),
        (Some("sk-wrong"), 401),
        (Some("sk-listed"), 200),
    ] {
        let mut request = client
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), expected, "{key:?}");
        let json: Value = response.json().await.unwrap();
        if expected == 401 {
            assert_eq!(json["error"]["type"], "authentication_error");
        } else {
            assert_eq!(json["object"], "chat.completion");
        }
    }
}
