//! The gateway over real sockets on 127.0.0.1, in front of simulated providers served over
//! HTTP in three wire formats (Anthropic, Gemini, OpenAI-compatible).

use std::sync::Arc;
use std::time::Duration;

use brace::llm::LlmErrorKind;
use brace::sim::{Behavior, Reply, SimConfig, SimHandle, SimServer};
use brace_gateway::{Gateway, GatewayConfig};
use futures_util::StreamExt;
use serde_json::{Value, json};

struct Fixture {
    primary: SimServer,
    secondary: SimServer,
    local: SimServer,
    gateway: Arc<Gateway>,
    url: String,
    shutdown: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(extra: &str) -> Fixture {
    let primary = SimServer::start(SimHandle::new(SimConfig::new("primary")))
        .await
        .unwrap();
    let secondary = SimServer::start(SimHandle::new(SimConfig::new("secondary")))
        .await
        .unwrap();
    let local = SimServer::start(SimHandle::new(SimConfig::new("local")))
        .await
        .unwrap();
    let yaml = format!(
        r"
providers:
  - name: anthropic
    model: claude-sonnet-4-20250514
    priority: 1
    base_url: {a}
    api_key_env: ''
    timeout: 5s
  - name: gemini
    model: gemini-2.0-flash
    priority: 2
    base_url: {b}
    api_key_env: ''
    timeout: 5s
  - name: ollama
    kind: openai-compatible
    model: llama3
    priority: 3
    base_url: {c}/v1
    timeout: 5s
fallback:
  max_retries: 1
  base_delay: 1ms
  max_delay: 5ms
circuit_breaker:
  sliding_window_size: 10
  minimum_calls: 5
  failure_rate_threshold: 50
  wait_in_open: 60s
health:
  consecutive_failures: 1000
degradation:
  auto:
    enabled: false
{extra}
",
        a = primary.base_url(),
        b = secondary.base_url(),
        c = local.base_url(),
    );
    let gateway = Gateway::build(GatewayConfig::from_yaml(&yaml).unwrap()).unwrap();
    let (listener, addr) = brace_gateway::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(brace_gateway::serve(
        gateway.clone(),
        listener,
        async move {
            let _ = signal.await;
        },
    ));
    Fixture {
        primary,
        secondary,
        local,
        gateway,
        url: format!("http://{addr}"),
        shutdown,
        server,
    }
}

fn client() -> reqwest::Client {
    // The gateway reaches its plain-http providers without reqwest: nothing else installs it.
    brace::providers::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn hello(stream: bool) -> Value {
    json!({"model": "chat", "stream": stream, "messages": [{"role": "user", "content": "Hello there"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_in_each_wire_format_and_fails_over_when_the_primary_dies_mid_load() {
    let fixture = start("").await;
    let client = client();
    let url = format!("{}/v1/chat/completions", fixture.url);

    // Healthy: the Anthropic-format primary answers, translated back to OpenAI's format.
    let response = client.post(&url).json(&hello(false)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-brace-provider"], "anthropic");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Hello there")
    );

    // Load, and kill the primary through its control endpoint half-way.
    let mut tasks = tokio::task::JoinSet::new();
    let mut served_by = std::collections::HashMap::<String, usize>::new();
    let mut tally = |(status, provider, text): (reqwest::StatusCode, String, String)| {
        assert_eq!(status, 200, "{text}");
        *served_by.entry(provider).or_default() += 1;
    };
    for i in 0..60 {
        if i == 20 {
            let control = client
                .post(format!("{}/_sim/behavior", fixture.primary.base_url()))
                .json(&json!({"type": "fail", "kind": "overloaded"}))
                .send()
                .await
                .unwrap();
            assert!(control.status().is_success());
        }
        let client = client.clone();
        let url = url.clone();
        tasks.spawn(async move {
            let response = client
                .post(&url)
                .json(&hello(i % 3 == 0))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let provider = response.headers()["x-brace-provider"]
                .to_str()
                .unwrap()
                .to_owned();
            let text = response.text().await.unwrap();
            (status, provider, text)
        });
        if i % 10 == 9 {
            while let Some(result) = tasks.join_next().await {
                tally(result.unwrap());
            }
        }
    }
    while let Some(result) = tasks.join_next().await {
        tally(result.unwrap());
    }
    assert_eq!(served_by.values().sum::<usize>(), 60);
    assert!(served_by.contains_key("gemini"), "{served_by:?}");

    // The breaker opened: the dead primary gets no more calls.
    assert_eq!(
        fixture.gateway.circuit_state("anthropic").unwrap().as_str(),
        "open"
    );
    let calls = fixture.primary.handle().calls();
    for _ in 0..10 {
        let response = client.post(&url).json(&hello(false)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-brace-provider"], "gemini");
    }
    assert_eq!(fixture.primary.handle().calls(), calls);
    let circuits: Value = client
        .get(format!("{}/v1/circuits", fixture.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(circuits["anthropic"]["state"], "open");
    let _ = fixture.shutdown.send(());
    fixture.server.await.unwrap().unwrap();
    drop((fixture.secondary, fixture.local));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_sse_in_each_format() {
    let fixture = start("").await;
    let client = client();
    let url = format!("{}/v1/chat/completions", fixture.url);
    for (kill, expected) in [
        (vec![], "anthropic"),
        (vec![&fixture.primary], "gemini"),
        (vec![&fixture.primary, &fixture.secondary], "ollama"),
    ] {
        for server in kill {
            server
                .handle()
                .set_behavior(Behavior::fail(LlmErrorKind::Server));
        }
        let response = client.post(&url).json(&hello(true)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-brace-provider"], expected);
        let text = response.text().await.unwrap();
        let events: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        assert_eq!(*events.last().unwrap(), "[DONE]", "{expected}: {text}");
        let content: String = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str::<Value>(e).unwrap())
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert!(content.contains("Hello there"), "{expected}: {content}");
    }
    let _ = fixture.shutdown.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_an_in_flight_stream_finish() {
    let fixture = start("").await;
    fixture.primary.handle().set_behavior(Behavior::reply(
        Reply::new()
            .with_chunks(8)
            .with_chunk_delay(Duration::from_millis(40)),
    ));
    let client = client();
    let response = client
        .post(format!("{}/v1/chat/completions", fixture.url))
        .json(&hello(true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());

    // Shut down while the stream is in flight.
    let _ = fixture.shutdown.send(());
    let mut rest = Vec::from(&first[..]);
    while let Some(piece) = body.next().await {
        rest.extend_from_slice(&piece.unwrap());
    }
    let text = String::from_utf8(rest).unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    fixture.server.await.unwrap().unwrap();

    // And it no longer accepts connections.
    let refused = client
        .get(format!("{}/v1/health", fixture.url))
        .send()
        .await;
    assert!(refused.is_err());
}
