//! What the stream guard and the continuation layer log through `tracing`: a stream's
//! commit (debug, with the time to its first token), a break after the commit (a warning,
//! once, with the provider and why), and a continuation on another provider (information).

use std::time::Duration;

use brace_llm::continuation::{ContinuationLayer, ContinuationTarget};
use brace_llm::guard::StreamGuardLayer;
use brace_llm::{
    ChatChunk, ChatRequest, ChatResponse, ChatStream, Delta, FinishReason, LlmError, LlmErrorKind,
    Message, ResponseBody,
};
use brace_sim::{Behavior, Reply, SimProvider, StreamFault};
use brace_testing::Capture;
use futures::StreamExt;
use tower::{Layer, ServiceExt, service_fn};

enum Step {
    Wait(Duration),
    Chunk(ChatChunk),
    Fail(LlmErrorKind),
    Hang,
}

fn text(text: &str) -> Step {
    Step::Chunk(ChatChunk::new("c", "m", Delta::text(text)))
}

fn finish() -> Step {
    let mut chunk = ChatChunk::new("c", "m", Delta::default());
    chunk.choices[0].finish_reason = Some(FinishReason::Stop);
    Step::Chunk(chunk)
}

/// Streams `steps` from a provider called `sim` through `layer`, to the end.
async fn stream(layer: &StreamGuardLayer, steps: Vec<Step>) -> Vec<Result<ChatChunk, LlmError>> {
    let mut steps = Some(steps);
    let service = service_fn(move |_request: ChatRequest| {
        let steps = steps.take().expect("one call");
        let stream = ChatStream::new(futures::stream::unfold(
            steps.into_iter(),
            |mut steps| async move {
                loop {
                    match steps.next()? {
                        Step::Wait(delay) => tokio::time::sleep(delay).await,
                        Step::Chunk(chunk) => return Some((Ok(chunk), steps)),
                        Step::Fail(kind) => {
                            return Some((Err(LlmError::new(kind, "injected")), steps));
                        }
                        Step::Hang => std::future::pending::<()>().await,
                    }
                }
            },
        ));
        async move { Ok::<_, LlmError>(ChatResponse::stream("sim", "m", stream)) }
    });
    let response = layer
        .layer(service)
        .oneshot(ChatRequest::new("m", vec![Message::user("hi")]).with_stream(true))
        .await
        .unwrap();
    let ResponseBody::Stream(stream) = response.body else {
        panic!("expected a stream");
    };
    stream.map(|item| item.map(ChatChunk::from)).collect().await
}

#[tokio::test(start_paused = true)]
async fn a_commit_is_logged_with_the_time_to_first_token_and_a_clean_end_says_nothing_more() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.subscriber());
    let items = stream(
        &StreamGuardLayer::new(),
        vec![
            Step::Wait(Duration::from_millis(120)),
            text("Hello"),
            finish(),
        ],
    )
    .await;
    assert!(items.iter().all(Result::is_ok));

    let events = capture.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["level"], "DEBUG");
    assert_eq!(events[0]["fields"]["message"], "stream committed");
    assert_eq!(events[0]["fields"]["provider"], "sim");
    assert_eq!(events[0]["fields"]["first_token_ms"], 120);
}

#[tokio::test(start_paused = true)]
async fn each_kind_of_break_after_the_commit_is_logged_once() {
    let idle = StreamGuardLayer::new().idle_timeout(Duration::from_secs(1));
    for (steps, kind, reason) in [
        (
            vec![text("Hel"), Step::Fail(LlmErrorKind::Server)],
            "server_error",
            "injected",
        ),
        (
            vec![text("Hel"), Step::Hang],
            "stream_interrupted",
            "stream stalled: no chunk for 1000ms",
        ),
        (
            vec![text("Hel")],
            "stream_interrupted",
            "stream ended without a finish reason",
        ),
    ] {
        let capture = Capture::default();
        let _default = tracing::subscriber::set_default(capture.subscriber());
        let items = stream(&idle, steps).await;
        assert!(items.last().unwrap().is_err());

        let broke = capture.named("stream broke");
        assert_eq!(broke.len(), 1, "{reason}: {broke:?}");
        let fields = &broke[0]["fields"];
        assert_eq!(broke[0]["level"], "WARN");
        assert_eq!(fields["provider"], "sim");
        assert_eq!(fields["kind"], kind, "{reason}");
        assert!(
            fields["reason"].as_str().unwrap().contains(reason),
            "{fields}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_continuation_is_logged_with_both_providers() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.subscriber());
    let text = "one two three four five six";
    let primary = SimProvider::with_behavior(
        "primary",
        Behavior::reply(
            Reply::new()
                .with_text(text)
                .with_fault(StreamFault::Break { after: 3 }),
        ),
    );
    let backup =
        SimProvider::with_behavior("backup", Behavior::reply(Reply::new().with_text(text)));
    let service =
        ContinuationLayer::new([ContinuationTarget::new("backup", backup).accepts_prefill(true)])
            .layer(StreamGuardLayer::new().layer(primary));
    let request = ChatRequest::new("m", vec![Message::user("count")]).with_stream(true);
    let response = service.oneshot(request).await.unwrap();
    let ResponseBody::Stream(stream) = response.body else {
        panic!("expected a stream");
    };
    let items: Vec<_> = stream.map(|item| item.map(ChatChunk::from)).collect().await;
    assert!(items.iter().all(Result::is_ok));

    // The break is logged once, by the primary's guard; the continuation is the move to the
    // backup.
    let broke = capture.named("stream broke");
    assert_eq!(broke.len(), 1, "{broke:?}");
    assert_eq!(broke[0]["level"], "WARN");
    assert_eq!(broke[0]["fields"]["provider"], "primary");
    let warnings = capture
        .events()
        .into_iter()
        .filter(|event| event["level"] == "WARN")
        .count();
    assert_eq!(warnings, 1, "{:?}", capture.events());
    let continued = capture.named("stream continued on another provider");
    assert_eq!(continued.len(), 1, "{:?}", capture.events());
    assert_eq!(continued[0]["level"], "INFO");
    assert_eq!(continued[0]["fields"]["provider"], "primary");
    assert_eq!(continued[0]["fields"]["continued_by"], "backup");
    assert_eq!(continued[0]["fields"]["how"], "prefill");
}
