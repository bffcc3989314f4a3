//! Checks run against `brace_sim::SimServer` speaking a provider's wire format, shared
//! by the Anthropic and Gemini sim tests.

use std::time::Duration;

use brace_llm::{
    ChatChunk, ChatRequest, ChatResponse, FinishReason, LlmError, LlmErrorKind, Message,
    ResponseBody,
};
use brace_sim::{
    ALL_KINDS, Behavior, Failure, Reply, SimConfig, SimHandle, SimServer, StreamFault,
    ToolCallReply,
};
use futures::StreamExt;
use tower::{Service, ServiceExt};

pub trait Client:
    Service<ChatRequest, Response = ChatResponse, Error = LlmError> + Clone + Send + 'static
{
}
impl<S> Client for S where
    S: Service<ChatRequest, Response = ChatResponse, Error = LlmError> + Clone + Send + 'static
{
}

pub async fn sim(behavior: Behavior) -> SimServer {
    SimServer::start(SimHandle::new(
        SimConfig::new("sim")
            .with_model("sim-model-1")
            .with_behavior(behavior),
    ))
    .await
    .unwrap()
}

fn request(stream: bool) -> ChatRequest {
    ChatRequest::new("sim-model-1", vec![Message::user("hello sim")]).with_stream(stream)
}

pub async fn call<C: Client>(client: &C, stream: bool) -> Result<ChatResponse, LlmError>
where
    C::Future: Send,
{
    client.clone().oneshot(request(stream)).await
}

pub async fn drain(response: ChatResponse) -> (Vec<ChatChunk>, Option<LlmError>) {
    let ResponseBody::Stream(mut stream) = response.body else {
        panic!("expected a stream");
    };
    let mut chunks = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => chunks.push(chunk.into()),
            Err(err) => {
                assert!(stream.next().await.is_none(), "an item after an error");
                return (chunks, Some(err));
            }
        }
    }
    (chunks, None)
}

/// Whole and streamed answers agree, and a tool call comes back as one.
pub async fn answers_whole_streamed_and_with_tools<C: Client>(server: &SimServer, client: &C)
where
    C::Future: Send,
{
    let whole = call(client, false).await.unwrap();
    let whole_text = whole.completion().unwrap().text();
    assert!(!whole_text.is_empty());
    let streamed = call(client, true)
        .await
        .unwrap()
        .into_completion()
        .await
        .unwrap();
    assert_eq!(streamed.text(), whole_text);
    assert_eq!(streamed.choices[0].finish_reason, Some(FinishReason::Stop));

    server.handle().set_behavior(Behavior::reply(
        Reply::new().with_tool_call(ToolCallReply::new("get_weather", r#"{"city":"Paris"}"#)),
    ));
    for stream in [false, true] {
        let completion = call(client, stream)
            .await
            .unwrap()
            .into_completion()
            .await
            .unwrap();
        let calls = completion.choices[0].message.tool_calls.clone().unwrap();
        assert_eq!(calls[0].function.name, "get_weather", "stream: {stream}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&calls[0].function.arguments).unwrap(),
            serde_json::json!({"city": "Paris"})
        );
        assert_eq!(
            completion.choices[0].finish_reason,
            Some(FinishReason::ToolCalls)
        );
    }
}

/// Every scripted failure kind comes back as that kind, whole or streamed;
/// `quota_reads_as_rate_limit` where the format cannot tell the two apart.
pub async fn every_failure_kind<C: Client>(
    server: &SimServer,
    client: &C,
    provider: &str,
    quota_reads_as_rate_limit: bool,
) where
    C::Future: Send,
{
    let mut failures = Vec::new();
    for kind in ALL_KINDS {
        server.handle().set_behavior(Behavior::fail(kind));
        // How a 499 from upstream reads is error.rs's call (cancelled, or a bad request).
        let expected = |got: LlmErrorKind| {
            got == kind
                || (kind == LlmErrorKind::Cancelled && got == LlmErrorKind::BadRequest)
                || (quota_reads_as_rate_limit
                    && kind == LlmErrorKind::QuotaExhausted
                    && got == LlmErrorKind::RateLimited)
        };
        for stream in [false, true] {
            let err = call(client, stream).await.unwrap_err();
            if !expected(err.kind()) {
                failures.push(format!("scripted {kind:?}, stream {stream}: {err}"));
            }
            assert_eq!(err.provider(), Some(provider));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    server
        .handle()
        .set_behavior(Behavior::rate_limited(Duration::from_secs(7)));
    let err = call(client, false).await.unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
}

/// Stream faults: a break, a stall, an invalid event (skipped), an in-band error.
pub async fn stream_faults<C: Client>(server: &SimServer, client: &C)
where
    C::Future: Send,
{
    let with_fault = |fault| Behavior::reply(Reply::new().with_chunks(6).with_fault(fault));

    server
        .handle()
        .set_behavior(with_fault(StreamFault::Break { after: 4 }));
    let (_, err) = drain(call(client, true).await.unwrap()).await;
    assert_eq!(err.unwrap().kind(), LlmErrorKind::StreamInterrupted);

    server
        .handle()
        .set_behavior(with_fault(StreamFault::Stall { after: 4 }));
    let (_, err) = drain(call(client, true).await.unwrap()).await;
    assert_eq!(err.unwrap().kind(), LlmErrorKind::Timeout);

    server
        .handle()
        .set_behavior(with_fault(StreamFault::Malformed { at: 4 }));
    let (chunks, err) = drain(call(client, true).await.unwrap()).await;
    assert!(err.is_none(), "{err:?}");
    assert!(chunks.iter().any(|chunk| chunk.finish_reason().is_some()));

    server.handle().set_behavior(with_fault(StreamFault::Error {
        after: 4,
        error: Failure::new(LlmErrorKind::Overloaded),
    }));
    let (_, err) = drain(call(client, true).await.unwrap()).await;
    assert_eq!(err.unwrap().kind(), LlmErrorKind::Overloaded);

    server.handle().set_behavior(Behavior::hang());
    assert_eq!(
        call(client, false).await.unwrap_err().kind(),
        LlmErrorKind::Timeout
    );
}
