//! The stream guard: commit point, time-to-first-token, idle and total limits (paused time).

use std::time::Duration;

use brace_llm::guard::StreamGuardLayer;
use brace_llm::{
    ChatChunk, ChatCompletion, ChatRequest, ChatResponse, ChatStream, Delta, FinishReason,
    LlmError, LlmErrorKind, Message, Role,
};
use futures::StreamExt;
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};

enum Step {
    Wait(Duration),
    Chunk(ChatChunk),
    Fail(LlmErrorKind),
    Hang,
}

fn role() -> Step {
    Step::Chunk(ChatChunk::new(
        "c",
        "m",
        Delta {
            role: Some(Role::Assistant),
            content: Some(String::new()),
            ..Delta::default()
        },
    ))
}

fn text(text: &str) -> Step {
    Step::Chunk(ChatChunk::new("c", "m", Delta::text(text)))
}

fn finish() -> Step {
    let mut chunk = ChatChunk::new("c", "m", Delta::default());
    chunk.choices[0].finish_reason = Some(FinishReason::Stop);
    Step::Chunk(chunk)
}

fn scripted(steps: Vec<Step>) -> ChatStream {
    ChatStream::new(futures::stream::unfold(
        steps.into_iter(),
        |mut steps| async move {
            loop {
                match steps.next()? {
                    Step::Wait(delay) => tokio::time::sleep(delay).await,
                    Step::Chunk(chunk) => return Some((Ok(chunk), steps)),
                    Step::Fail(kind) => return Some((Err(LlmError::new(kind, "injected")), steps)),
                    Step::Hang => std::future::pending::<()>().await,
                }
            }
        },
    ))
}

async fn call(layer: &StreamGuardLayer, steps: Vec<Step>) -> Result<ChatResponse, LlmError> {
    let mut steps = Some(steps);
    let service = service_fn(move |_request: ChatRequest| {
        let stream = scripted(steps.take().expect("one call"));
        async move { Ok::<_, LlmError>(ChatResponse::stream("sim", "m", stream)) }
    });
    layer
        .layer(service)
        .oneshot(ChatRequest::new("m", vec![Message::user("hi")]).with_stream(true))
        .await
}

async fn collect(response: ChatResponse) -> Vec<Result<ChatChunk, LlmError>> {
    let brace_llm::ResponseBody::Stream(stream) = response.body else {
        panic!("expected a stream");
    };
    stream.map(|item| item.map(ChatChunk::from)).collect().await
}

#[tokio::test(start_paused = true)]
async fn call_resolves_at_the_first_content_delta_with_held_chunks_replayed() {
    let start = Instant::now();
    let response = call(
        &StreamGuardLayer::new(),
        vec![
            role(),
            Step::Wait(Duration::from_millis(300)),
            text("Hello"),
            finish(),
        ],
    )
    .await
    .unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    let items = collect(response).await;
    assert_eq!(items.len(), 3);
    assert!(!items[0].as_ref().unwrap().has_content(), "role chunk kept");
    assert!(items.iter().all(Result::is_ok));
}

#[tokio::test(start_paused = true)]
async fn error_before_commit_is_an_ordinary_call_error() {
    let err = call(
        &StreamGuardLayer::new(),
        vec![role(), Step::Fail(LlmErrorKind::Overloaded)],
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Overloaded);
    assert_eq!(err.provider(), Some("sim"));
}

#[tokio::test(start_paused = true)]
async fn empty_stream_is_an_error_not_an_empty_answer() {
    let err = call(&StreamGuardLayer::new(), vec![role()])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::StreamInterrupted);
}

#[tokio::test(start_paused = true)]
async fn slow_first_token_times_out_at_the_limit() {
    let layer = StreamGuardLayer::new().first_token_timeout(Duration::from_secs(2));
    let start = Instant::now();
    let err = call(
        &layer,
        vec![role(), Step::Wait(Duration::from_secs(5)), text("late")],
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Timeout);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn first_token_hook_sees_the_time_to_first_token() {
    let seen = std::sync::Arc::new(parking_lot::Mutex::new(None));
    let record = seen.clone();
    let layer = StreamGuardLayer::new().on_first_token(move |provider, ttft| {
        *record.lock() = Some((provider.to_owned(), ttft));
    });
    call(
        &layer,
        vec![Step::Wait(Duration::from_millis(750)), text("x"), finish()],
    )
    .await
    .unwrap();
    assert_eq!(
        *seen.lock(),
        Some(("sim".to_owned(), Duration::from_millis(750)))
    );
}

#[tokio::test(start_paused = true)]
async fn stall_after_commit_ends_with_an_error_item_at_the_idle_limit() {
    let layer = StreamGuardLayer::new().idle_timeout(Duration::from_secs(3));
    let response = call(&layer, vec![text("Hel"), text("lo"), Step::Hang])
        .await
        .unwrap();
    let start = Instant::now();
    let items = collect(response).await;
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(items.len(), 3);
    let err = items[2].as_ref().unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::StreamInterrupted);
    assert!(err.to_string().contains("stalled"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn total_deadline_cuts_a_slow_but_steady_stream() {
    let layer = StreamGuardLayer::new()
        .idle_timeout(Duration::from_secs(2))
        .total_timeout(Duration::from_secs(5));
    let mut steps = vec![text("a")];
    for _ in 0..10 {
        steps.push(Step::Wait(Duration::from_secs(1)));
        steps.push(text("b"));
    }
    let start = Instant::now();
    let items = collect(call(&layer, steps).await.unwrap()).await;
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    let err = items.last().unwrap().as_ref().unwrap_err();
    assert!(err.to_string().contains("total deadline"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn clean_end_without_finish_reason_is_reported_as_a_cut() {
    let items = collect(
        call(&StreamGuardLayer::new(), vec![text("partial")])
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(items.len(), 2);
    assert_eq!(
        items[1].as_ref().unwrap_err().kind(),
        LlmErrorKind::StreamInterrupted
    );
}

#[tokio::test(start_paused = true)]
async fn finish_without_done_sentinel_is_complete_at_once() {
    let items = collect(
        call(&StreamGuardLayer::new(), vec![text("whole"), finish()])
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(Result::is_ok));
}

#[tokio::test(start_paused = true)]
async fn whole_completions_pass_through_untouched() {
    let layer = StreamGuardLayer::new().first_token_timeout(Duration::from_secs(1));
    let service = service_fn(|_request: ChatRequest| async {
        Ok::<_, LlmError>(ChatResponse::complete(
            "sim",
            ChatCompletion::new("id", "m", "whole answer", FinishReason::Stop),
        ))
    });
    let response = layer
        .layer(service)
        .oneshot(ChatRequest::new("m", vec![Message::user("hi")]))
        .await
        .unwrap();
    assert_eq!(response.completion().unwrap().text(), "whole answer");
}
