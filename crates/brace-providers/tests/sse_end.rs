//! How a [`ChunkStream`] ends after the provider's end marker: the body is read to its end
//! (so its connection can be reused), but never waited for without a bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use brace_llm::LlmError;
use brace_providers::openai::OpenAiDecoder;
use brace_providers::sse::{ChunkStream, SseEvent};
use futures::{Stream, StreamExt, stream};

const CHUNK: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}"#;

/// `events`, then (if `then_end`) the end of the body, noting in the flag when that end is
/// read; otherwise a body that never ends.
fn body(
    events: Vec<SseEvent>,
    then_end: bool,
) -> (
    impl Stream<Item = Result<SseEvent, LlmError>>,
    Arc<AtomicBool>,
) {
    let ended = Arc::new(AtomicBool::new(false));
    let flag = ended.clone();
    let tail = stream::once(async move {
        if then_end {
            flag.store(true, Ordering::SeqCst);
        } else {
            std::future::pending::<()>().await;
        }
    })
    .filter_map(|()| async { None });
    (stream::iter(events.into_iter().map(Ok)).chain(tail), ended)
}

#[tokio::test(start_paused = true)]
async fn the_body_is_read_to_its_end_after_the_end_marker() {
    let (events, body_ended) = body(
        vec![
            SseEvent::data(CHUNK),
            SseEvent::data("[DONE]"),
            SseEvent::data(CHUNK),
        ],
        true,
    );
    let mut chunks = Box::pin(ChunkStream::new(events, OpenAiDecoder::new()));

    let first = chunks.next().await.unwrap().unwrap();
    assert!(first.finish_reason().is_some());
    assert!(
        chunks.next().await.is_none(),
        "what follows [DONE] is dropped"
    );
    assert!(body_ended.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_body_left_open_after_the_end_marker_ends_the_stream_within_the_bound() {
    let (events, _) = body(vec![SseEvent::data(CHUNK), SseEvent::data("[DONE]")], false);
    let mut chunks = Box::pin(ChunkStream::new(events, OpenAiDecoder::new()));

    assert!(chunks.next().await.unwrap().is_ok());
    let end = tokio::time::timeout(Duration::from_secs(1), chunks.next())
        .await
        .expect("the stream ends although the body stays open");
    assert!(end.is_none());
}
