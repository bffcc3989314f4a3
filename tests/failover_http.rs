//! Failover across three simulated HTTP providers behind brace-llm's real clients, each
//! wrapped in its own breaker and retry (issue: failover integration over loopback).

use std::time::Duration;

use brace::BoxError;
use brace::circuit::{CircuitBreakerLayer, CircuitState};
use brace::failover::{FailoverService, Provider};
use brace::llm::{ChatRequest, ChatResponse, LlmClassifier, LlmErrorKind, Message};
use brace::providers::anthropic::AnthropicClient;
use brace::providers::gemini::GeminiClient;
use brace::providers::openai::{OpenAiClient, OpenAiConfig};
use brace::providers::provider::ClientConfig;
use brace::retry::{Backoff, RetryLayer};
use brace::sim::{Behavior, SimConfig, SimHandle, SimServer};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

type Stack = BoxCloneSyncService<ChatRequest, ChatResponse, BoxError>;

fn protect<S>(name: &str, client: S) -> (Stack, brace::circuit::CircuitHandle)
where
    S: Service<ChatRequest, Response = ChatResponse, Error = brace::llm::LlmError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let breaker = CircuitBreakerLayer::builder(name)
        .minimum_calls(4)
        .sliding_window(brace::circuit::SlidingWindow::Count(8))
        .failure_rate_threshold(50.0)
        .wait_in_open(Duration::from_mins(1))
        .classifier(LlmClassifier::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let retry = RetryLayer::builder()
        .classifier(LlmClassifier::new())
        .max_retries(1)
        .backoff(Backoff::constant(Duration::from_millis(2)))
        .build();
    let stack = ServiceBuilder::new()
        .layer(breaker)
        .layer(retry)
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)))
        .service(client);
    (BoxCloneSyncService::new(stack), handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_mid_load_loses_no_request_and_its_circuit_stops_calls() {
    let servers = [
        SimServer::start(SimHandle::new(SimConfig::new("anthropic")))
            .await
            .unwrap(),
        SimServer::start(SimHandle::new(SimConfig::new("gemini")))
            .await
            .unwrap(),
        SimServer::start(SimHandle::new(SimConfig::new("local")))
            .await
            .unwrap(),
    ];
    let config = |name: &str, base: String| {
        ClientConfig::new(name, base)
            .with_default_model("m")
            .with_timeout(Duration::from_secs(5))
    };
    let (anthropic, anthropic_circuit) = protect(
        "anthropic",
        AnthropicClient::new(config("anthropic", servers[0].base_url())).unwrap(),
    );
    let (gemini, gemini_circuit) = protect(
        "gemini",
        GeminiClient::new(config("gemini", servers[1].base_url())).unwrap(),
    );
    let (local, local_circuit) = protect(
        "local",
        OpenAiClient::new(OpenAiConfig::new(
            config("local", format!("{}/v1", servers[2].base_url())),
            brace::providers::openai::OpenAiApi::Compatible,
        ))
        .unwrap(),
    );
    let failover = FailoverService::builder()
        .classifier(LlmClassifier::new())
        .provider(
            Provider::new("anthropic", anthropic)
                .priority(0)
                .circuit(anthropic_circuit.clone()),
        )
        .provider(
            Provider::new("gemini", gemini)
                .priority(1)
                .circuit(gemini_circuit),
        )
        .provider(
            Provider::new("local", local)
                .priority(2)
                .circuit(local_circuit),
        )
        .build()
        .unwrap();

    // Who answered, before and after the primary dies.
    let mut served = std::collections::HashMap::<(bool, String), usize>::new();
    for i in 0..80 {
        if i == 25 {
            servers[0]
                .handle()
                .set_behavior(Behavior::fail(LlmErrorKind::Overloaded));
        }
        let request = ChatRequest::new("m", vec![Message::user(format!("question {i}"))])
            .with_stream(i % 4 == 0);
        let response =
            tokio::time::timeout(Duration::from_secs(10), failover.clone().oneshot(request))
                .await
                .expect("no request hangs")
                .expect("every request is answered by some provider");
        let provider = response.meta.provider.to_string();
        let completion = response.into_completion().await.expect("complete answer");
        assert!(completion.text().contains(&format!("question {i}")));
        *served.entry((i >= 25, provider)).or_default() += 1;
    }
    let count = |after: bool, provider: &str| {
        served
            .get(&(after, provider.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(
        count(false, "anthropic"),
        25,
        "the healthy primary answers: {served:?}"
    );
    assert_eq!(
        count(true, "anthropic"),
        0,
        "a dead primary answers nothing: {served:?}"
    );
    assert_eq!(
        count(true, "gemini"),
        55,
        "the next priority takes over: {served:?}"
    );
    assert_eq!(anthropic_circuit.state(), CircuitState::Open);
    let calls = servers[0].handle().calls();
    for _ in 0..10 {
        failover
            .clone()
            .oneshot(ChatRequest::new("m", vec![Message::user("x")]))
            .await
            .unwrap();
    }
    assert_eq!(
        servers[0].handle().calls(),
        calls,
        "no calls to an open circuit"
    );
    let health = failover.health();
    assert!(health[1].successes > 0);
}
