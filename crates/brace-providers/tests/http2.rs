//! Cleartext HTTP/2 with prior knowledge (h2c) between a provider client and the simulated
//! provider over real loopback sockets: the option decides the version the server sees, many
//! streams share a connection and complete, and the server still shuts down gracefully.

use std::time::Duration;

use brace_llm::{
    ChatRequest, ChatResponse, LlmError, LlmErrorKind, Message, ResponseBody, StreamAccumulator,
};
use brace_providers::openai::{OpenAiClient, OpenAiConfig};
use brace_sim::{Behavior, Reply, SimConfig, SimHandle, SimServer, StreamFault};
use futures::StreamExt;
use futures::future::join_all;
use tower::ServiceExt;

const HTTP1: &str = "HTTP/1.1";
const HTTP2: &str = "HTTP/2.0";

async fn sim(behavior: Behavior) -> SimServer {
    SimServer::start(SimHandle::new(
        SimConfig::new("sim-h2")
            .with_model("sim-model")
            .with_behavior(behavior),
    ))
    .await
    .unwrap()
}

fn client(server: &SimServer, http2_prior_knowledge: bool) -> OpenAiClient {
    let config = OpenAiConfig::compatible("sim-openai", format!("{}/v1", server.base_url()))
        .map_client(|p| {
            p.with_timeout(Duration::from_secs(30))
                .with_http2_prior_knowledge(http2_prior_knowledge)
        });
    OpenAiClient::new(config).unwrap()
}

fn request(stream: bool) -> ChatRequest {
    ChatRequest::new("gpt-4o", vec![Message::user("hello sim")]).with_stream(stream)
}

/// Bounds a wait (nothing here should come near it; it only turns a hang into a failure).
async fn guard<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("the client hung")
}

async fn call(client: &OpenAiClient, stream: bool) -> Result<ChatResponse, LlmError> {
    guard(client.clone().oneshot(request(stream))).await
}

fn versions(server: &SimServer) -> Vec<(String, u64)> {
    server.handle().stats().http_versions.into_iter().collect()
}

#[tokio::test]
async fn prior_knowledge_decides_the_http_version_the_server_sees() {
    // Both orders, with one connect timeout: the pool is keyed by the option too, so the
    // second provider never gets the first one's client.
    for h2_first in [true, false] {
        let h2 = sim(Behavior::default()).await;
        let h1 = sim(Behavior::default()).await;
        let (h2_client, h1_client) = if h2_first {
            let h2_client = client(&h2, true);
            (h2_client, client(&h1, false))
        } else {
            let h1_client = client(&h1, false);
            (client(&h2, true), h1_client)
        };
        call(&h2_client, false).await.unwrap();
        call(&h1_client, false).await.unwrap();
        assert_eq!(
            versions(&h2),
            [(HTTP2.to_owned(), 1)],
            "h2 first: {h2_first}"
        );
        assert_eq!(
            versions(&h1),
            [(HTTP1.to_owned(), 1)],
            "h2 first: {h2_first}"
        );
        h2.shutdown().await;
        h1.shutdown().await;
    }
}

#[tokio::test]
async fn fifty_concurrent_streams_over_h2c_all_complete() {
    const STREAMS: usize = 50;
    let server = sim(Behavior::reply(
        Reply::new()
            .with_text("one two three four five six")
            .with_chunks(6),
    ))
    .await;
    let client = client(&server, true);
    let completions = join_all((0..STREAMS).map(|_| {
        let client = client.clone();
        async move {
            let response = call(&client, true).await?;
            let ResponseBody::Stream(mut stream) = response.body else {
                panic!("expected a stream");
            };
            let mut accumulator = StreamAccumulator::new();
            while let Some(chunk) = guard(stream.next()).await {
                let chunk = chunk?;
                accumulator.push(&chunk);
            }
            accumulator.finish()
        }
    }))
    .await;
    for completion in completions {
        let completion = completion.unwrap();
        assert_eq!(
            completion.choices[0].message.text(),
            "one two three four five six"
        );
    }
    let stats = server.handle().stats();
    assert_eq!(stats.successes(), STREAMS as u64);
    assert_eq!(versions(&server), [(HTTP2.to_owned(), STREAMS as u64)]);
    server.shutdown().await;
}

#[tokio::test]
async fn more_streams_than_hypers_default_limit_are_open_at_once_over_h2c() {
    // hyper's servers allow 200 concurrent streams per HTTP/2 connection by default; the
    // simulated provider allows far more, so none of these waits for another to end. Each
    // stream sends its first event, then stalls until the server shuts down.
    const STREAMS: usize = 300;
    let server = sim(Behavior::reply(
        Reply::new()
            .with_chunks(4)
            .with_fault(StreamFault::Stall { after: 1 }),
    ))
    .await;
    let client = client(&server, true);
    let opened = join_all((0..STREAMS).map(|_| {
        let client = client.clone();
        async move {
            let response = call(&client, true).await?;
            let ResponseBody::Stream(mut stream) = response.body else {
                panic!("expected a stream");
            };
            let first = guard(stream.next()).await.expect("a first event")?;
            Ok::<_, LlmError>((first, stream))
        }
    }))
    .await;
    let mut streams = Vec::with_capacity(STREAMS);
    for opened in opened {
        let (first, stream) = opened.unwrap();
        assert!(!first.choices.is_empty(), "{first:?}");
        streams.push(stream);
    }
    assert_eq!(versions(&server), [(HTTP2.to_owned(), STREAMS as u64)]);
    // Shutdown ends the stalls: every stream then fails instead of waiting for more.
    guard(server.shutdown()).await;
    for mut stream in streams {
        assert!(matches!(guard(stream.next()).await, Some(Err(_))));
    }
}

#[tokio::test]
async fn shutdown_ends_hanging_h2c_requests_and_returns() {
    let server = sim(Behavior::hang()).await;
    let client = client(&server, true);
    let hanging = tokio::spawn({
        let client = client.clone();
        async move { call(&client, false).await }
    });
    // The request has reached the server once it is counted.
    guard(async {
        while server.handle().calls() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    guard(server.shutdown()).await;
    let err = guard(hanging).await.unwrap().unwrap_err();
    assert_ne!(
        err.kind(),
        LlmErrorKind::Timeout,
        "the request waited for its timeout: {err}"
    );
}
