//! The OpenAI client against the simulated provider over HTTP (`brace_sim::SimServer`),
//! in every fault mode the simulator has: each yields the right `LlmError` kind, nothing
//! panics, nothing hangs past its timeout.

use std::time::Duration;

use brace_llm::{
    ChatChunk, ChatRequest, ChatResponse, LlmError, LlmErrorKind, Message, ResponseBody,
};
use brace_providers::openai::{OpenAiClient, OpenAiConfig};
use brace_sim::{
    ALL_KINDS, Behavior, Failure, Reply, SimConfig, SimHandle, SimServer, StreamFault,
};
use futures::StreamExt;
use tower::ServiceExt;

async fn sim(behavior: Behavior) -> (SimServer, OpenAiClient) {
    let server = SimServer::start(SimHandle::new(
        SimConfig::new("sim")
            .with_model("sim-model-1")
            .with_behavior(behavior),
    ))
    .await
    .unwrap();
    let config = OpenAiConfig::compatible("sim-openai", format!("{}/v1", server.base_url()))
        .map_client(|p| {
            p.with_timeout(Duration::from_millis(500))
                .with_stream_idle_timeout(Duration::from_millis(250))
                .with_connect_timeout(Duration::from_millis(250))
        });
    (server, OpenAiClient::new(config).unwrap())
}

fn request(stream: bool) -> ChatRequest {
    ChatRequest::new("gpt-4o", vec![Message::user("hello sim")]).with_stream(stream)
}

async fn guard<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("the client hung past every timeout")
}

async fn call(client: &OpenAiClient, stream: bool) -> Result<ChatResponse, LlmError> {
    guard(client.clone().oneshot(request(stream))).await
}

async fn drain(response: ChatResponse) -> (Vec<ChatChunk>, Option<LlmError>) {
    let ResponseBody::Stream(mut stream) = response.body else {
        panic!("expected a stream");
    };
    let mut chunks = Vec::new();
    while let Some(item) = guard(stream.next()).await {
        match item {
            Ok(chunk) => chunks.push(chunk.into()),
            Err(err) => {
                assert!(
                    guard(stream.next()).await.is_none(),
                    "an item after an error"
                );
                return (chunks, Some(err));
            }
        }
    }
    (chunks, None)
}

fn text(chunks: &[ChatChunk]) -> String {
    chunks
        .iter()
        .flat_map(|chunk| &chunk.choices)
        .filter_map(|choice| choice.delta.content.as_deref())
        .collect()
}

#[tokio::test]
async fn whole_and_streamed_answers_match_and_name_the_model() {
    let (_server, client) = sim(Behavior::reply(
        Reply::new().with_text("one two three four").with_chunks(4),
    ))
    .await;
    let whole = call(&client, false).await.unwrap();
    assert_eq!(&*whole.meta.provider, "sim-openai");
    assert_eq!(whole.meta.model, "sim-model-1");
    assert_eq!(whole.completion().unwrap().text(), "one two three four");

    let streamed = call(&client, true).await.unwrap();
    assert_eq!(streamed.meta.model, "sim-model-1");
    let (chunks, error) = drain(streamed).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text(&chunks), "one two three four");
    assert!(
        chunks.len() >= 5,
        "the answer came in pieces: {}",
        chunks.len()
    );
}

#[tokio::test]
async fn every_scripted_failure_kind_comes_back_as_that_kind() {
    let (server, client) = sim(Behavior::succeed()).await;
    for kind in ALL_KINDS {
        server.handle().set_behavior(Behavior::fail(kind));
        // How a 499 from an upstream reads is error.rs's call (cancelled, or a bad request).
        let expected = |got: LlmErrorKind| {
            got == kind || (kind == LlmErrorKind::Cancelled && got == LlmErrorKind::BadRequest)
        };
        let err = call(&client, false).await.unwrap_err();
        assert!(expected(err.kind()), "scripted {kind:?}: {err}");
        assert_eq!(err.provider(), Some("sim-openai"));
        // The same failure for a streamed request fails the call itself.
        let err = call(&client, true).await.unwrap_err();
        assert!(expected(err.kind()), "scripted {kind:?}, streamed: {err}");
    }
}

#[tokio::test]
async fn rate_limits_carry_the_retry_after() {
    let (_server, client) = sim(Behavior::rate_limited(Duration::from_secs(7))).await;
    let err = call(&client, false).await.unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn hang_and_slow_answers_time_out() {
    let (server, client) = sim(Behavior::hang()).await;
    assert_eq!(
        call(&client, false).await.unwrap_err().kind(),
        LlmErrorKind::Timeout
    );
    assert_eq!(
        call(&client, true).await.unwrap_err().kind(),
        LlmErrorKind::Timeout
    );
    server
        .handle()
        .set_behavior(Behavior::delay(Duration::from_secs(5), Behavior::succeed()));
    assert_eq!(
        call(&client, false).await.unwrap_err().kind(),
        LlmErrorKind::Timeout
    );
}

#[tokio::test]
async fn dropped_connections_are_connect_or_interrupted() {
    let (server, client) = sim(Behavior::drop_connection(0)).await;
    assert_eq!(
        call(&client, false).await.unwrap_err().kind(),
        LlmErrorKind::Connect
    );
    server.handle().set_behavior(Behavior::drop_connection(30));
    assert_eq!(
        call(&client, false).await.unwrap_err().kind(),
        LlmErrorKind::StreamInterrupted
    );
}

#[tokio::test]
async fn malformed_and_truncated_bodies_are_malformed_responses() {
    let (server, client) = sim(Behavior::malformed()).await;
    assert_eq!(
        call(&client, false).await.unwrap_err().kind(),
        LlmErrorKind::MalformedResponse
    );
    server.handle().set_behavior(Behavior::truncated());
    let err = call(&client, false).await.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            LlmErrorKind::MalformedResponse | LlmErrorKind::StreamInterrupted
        ),
        "{err}"
    );
}

fn streaming(fault: StreamFault) -> Behavior {
    Behavior::reply(
        Reply::new()
            .with_text("alpha beta gamma delta")
            .with_chunks(4)
            .with_fault(fault),
    )
}

#[tokio::test]
async fn stream_broken_mid_way_ends_with_an_error() {
    let (_server, client) = sim(streaming(StreamFault::Break { after: 3 })).await;
    let (chunks, error) = drain(call(&client, true).await.unwrap()).await;
    assert_eq!(chunks.len(), 3);
    assert_eq!(error.unwrap().kind(), LlmErrorKind::StreamInterrupted);
}

#[tokio::test]
async fn stalled_stream_times_out() {
    let (_server, client) = sim(streaming(StreamFault::Stall { after: 2 })).await;
    let (chunks, error) = drain(call(&client, true).await.unwrap()).await;
    assert_eq!(chunks.len(), 2);
    assert_eq!(error.unwrap().kind(), LlmErrorKind::Timeout);
}

#[tokio::test]
async fn malformed_event_mid_stream_is_skipped_and_counted() {
    let (_server, client) = sim(streaming(StreamFault::Malformed { at: 2 })).await;
    let (chunks, error) = drain(call(&client, true).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text(&chunks), "alpha beta gamma delta");
    assert_eq!(client.stats().malformed_events_skipped(), 1);
}

#[tokio::test]
async fn error_event_mid_stream_ends_it_with_that_kind() {
    let (server, client) = sim(streaming(StreamFault::Error {
        after: 2,
        error: Failure::new(LlmErrorKind::Overloaded),
    }))
    .await;
    let (chunks, error) = drain(call(&client, true).await.unwrap()).await;
    assert_eq!(chunks.len(), 2);
    assert_eq!(error.unwrap().kind(), LlmErrorKind::Overloaded);

    // Before the first chunk, the error is the call's.
    server.handle().set_behavior(streaming(StreamFault::Error {
        after: 0,
        error: Failure::new(LlmErrorKind::RateLimited),
    }));
    let err = call(&client, true).await.unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::RateLimited);
}

#[tokio::test]
async fn missing_done_after_a_finish_reason_is_complete() {
    let (_server, client) = sim(streaming(StreamFault::MissingDone)).await;
    let completion = guard(call(&client, true).await.unwrap().into_completion())
        .await
        .unwrap();
    assert_eq!(completion.text(), "alpha beta gamma delta");
}

#[tokio::test]
async fn provider_killed_at_run_time_fails_then_recovers() {
    let (server, client) = sim(Behavior::succeed()).await;
    assert!(call(&client, false).await.is_ok());
    server
        .handle()
        .set_behavior(Behavior::fail(LlmErrorKind::Overloaded));
    let calls = (0..8).map(|_| call(&client, false));
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(|r| {
        r.as_ref()
            .is_err_and(|e| e.kind() == LlmErrorKind::Overloaded)
    }));
    server.handle().set_behavior(Behavior::succeed());
    assert!(call(&client, false).await.is_ok());
    assert!(guard(client.probe()).await.is_ok());
}
