//! Streamed answers from the OpenAI client: parsed as they arrive, and never a clean end
//! for a truncated answer.

mod openai_fixture;

use std::sync::Arc;
use std::time::Duration;

use brace_llm::{ChatChunk, ChatResponse, ChatStream, LlmError, LlmErrorKind, ResponseBody};
use brace_providers::openai::OpenAiClient;
use brace_providers::sse::MalformedEvents;
use futures::StreamExt;
use openai_fixture::{
    COMPLETION, Server, Step, chunk, done_event, finish_event, guard, http, last_chunk, request,
    role_event, sse_chunked_head, sse_head, text_event,
};
use tokio::sync::Notify;
use tower::ServiceExt;

fn into_stream(response: ChatResponse) -> ChatStream {
    match response.body {
        ResponseBody::Stream(stream) => stream,
        ResponseBody::Complete(_) => panic!("expected a stream"),
    }
}

/// Reads a stream to its end: the chunks, and the error that ended it (if any). Also checks
/// that nothing follows an error.
async fn drain(mut stream: ChatStream) -> (Vec<ChatChunk>, Option<LlmError>) {
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

async fn stream_from(server: &Server) -> ChatStream {
    into_stream(guard(server.client().oneshot(request(true))).await.unwrap())
}

fn steps(parts: Vec<Vec<u8>>) -> Vec<Step> {
    parts.into_iter().map(Step::Write).collect()
}

#[tokio::test]
async fn chunks_arrive_before_the_last_is_sent() {
    let gate = Arc::new(Notify::new());
    let server = Server::always(vec![
        Step::Write(sse_head()),
        Step::Write(role_event()),
        Step::Write(text_event("Hel")),
        Step::Wait(gate.clone()),
        Step::Write(text_event("lo")),
        Step::Write(finish_event()),
        Step::Write(done_event()),
    ])
    .await;
    let response = guard(server.client().oneshot(request(true))).await.unwrap();
    assert_eq!(&*response.meta.provider, "openai-test");
    assert_eq!(response.meta.model, "gpt-4o-2024-08-06");
    let mut stream = into_stream(response);
    let first = guard(stream.next()).await.unwrap().unwrap();
    assert_eq!(
        first.choices[0].delta.role,
        Some(brace_llm::Role::Assistant)
    );
    let second = guard(stream.next()).await.unwrap().unwrap();
    assert_eq!(second.choices[0].delta.content.as_deref(), Some("Hel"));
    // The server is still holding back the rest of the answer.
    gate.notify_one();
    let (rest, error) = drain(stream).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text(&rest), "lo");
    assert_eq!(
        rest.last()
            .unwrap()
            .finish_reason()
            .map(brace_llm::FinishReason::as_str),
        Some("stop")
    );
    let seen = server.seen();
    assert_eq!(
        seen[0].header("accept").as_deref(),
        Some("text/event-stream")
    );
    let body: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body["stream"], true);
}

#[tokio::test]
async fn stream_broken_mid_way_ends_with_an_error_not_a_clean_end() {
    let server = Server::always(steps(vec![
        sse_chunked_head(),
        chunk(&role_event()),
        chunk(&text_event("partial ")),
        // The connection closes without the chunked body's end.
    ]))
    .await;
    let (chunks, error) = drain(stream_from(&server).await).await;
    assert_eq!(text(&chunks), "partial ");
    let error = error.expect("a broken stream must end with an error");
    assert_eq!(error.kind(), LlmErrorKind::StreamInterrupted, "{error}");
    assert_eq!(error.provider(), Some("openai-test"));
}

#[tokio::test]
async fn stream_closed_without_done_or_finish_reason_is_interrupted() {
    let server = Server::always(steps(vec![
        sse_head(),
        role_event(),
        text_event("half an ans"),
    ]))
    .await;
    let client = server.client();
    let stream = into_stream(guard(client.clone().oneshot(request(true))).await.unwrap());
    let (chunks, error) = drain(stream).await;
    assert_eq!(text(&chunks), "half an ans");
    assert_eq!(error.unwrap().kind(), LlmErrorKind::StreamInterrupted);
    assert_eq!(client.stats().streams_interrupted(), 1);
}

#[tokio::test]
async fn clean_chunked_end_without_done_or_finish_reason_is_interrupted() {
    let server = Server::always(steps(vec![
        sse_chunked_head(),
        chunk(&role_event()),
        chunk(&text_event("cut")),
        last_chunk(),
    ]))
    .await;
    let (_, error) = drain(stream_from(&server).await).await;
    assert_eq!(error.unwrap().kind(), LlmErrorKind::StreamInterrupted);
}

#[tokio::test]
async fn missing_done_after_a_finish_reason_is_complete() {
    let server = Server::always(steps(vec![
        sse_head(),
        role_event(),
        text_event("whole"),
        finish_event(),
    ]))
    .await;
    let response = guard(server.client().oneshot(request(true))).await.unwrap();
    let completion = guard(response.into_completion()).await.unwrap();
    assert_eq!(completion.text(), "whole");
}

#[tokio::test]
async fn last_event_without_a_blank_line_is_still_read() {
    let mut last = finish_event();
    last.truncate(last.len() - 2);
    let server = Server::always(steps(vec![sse_head(), role_event(), text_event("x"), last])).await;
    let (chunks, error) = drain(stream_from(&server).await).await;
    assert!(error.is_none(), "{error:?}");
    assert!(chunks.last().unwrap().finish_reason().is_some());
}

#[tokio::test]
async fn error_event_inside_a_stream_ends_it_with_that_error() {
    let server = Server::always(steps(vec![
        sse_head(),
        role_event(),
        text_event("so far"),
        b"data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n".to_vec(),
        text_event("never seen"),
        done_event(),
    ]))
    .await;
    let (chunks, error) = drain(stream_from(&server).await).await;
    assert_eq!(text(&chunks), "so far");
    let error = error.unwrap();
    assert_eq!(error.kind(), LlmErrorKind::Server, "{error}");
    assert_eq!(error.provider(), Some("openai-test"));
    assert!(error.message().contains("while processing"));
}

#[tokio::test]
async fn named_error_event_with_a_rate_limit_code_is_rate_limited() {
    let server = Server::always(steps(vec![
        sse_head(),
        role_event(),
        b"event: error\ndata: {\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}\n\n".to_vec(),
    ]))
    .await;
    let (_, error) = drain(stream_from(&server).await).await;
    assert_eq!(error.unwrap().kind(), LlmErrorKind::RateLimited);
}

#[tokio::test]
async fn error_before_the_first_chunk_is_the_calls_error() {
    let server = Server::always(steps(vec![
        sse_head(),
        b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"overloaded_error\",\"code\":\"overloaded_error\"}}\n\n".to_vec(),
    ]))
    .await;
    let err = guard(server.client().oneshot(request(true)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Overloaded, "{err}");
}

#[tokio::test]
async fn malformed_event_in_the_middle_is_skipped_and_counted() {
    let script = steps(vec![
        sse_head(),
        b": OPENROUTER PROCESSING\n\n".to_vec(),
        role_event(),
        text_event("one "),
        b"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\n\n"
            .to_vec(),
        text_event("two"),
        finish_event(),
        done_event(),
    ]);
    let server = Server::always(script).await;
    let client = server.client();
    let stream = into_stream(guard(client.clone().oneshot(request(true))).await.unwrap());
    let (chunks, error) = drain(stream).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text(&chunks), "one two");
    assert_eq!(client.stats().malformed_events_skipped(), 1);

    // The same stream under the fail policy ends at the bad event.
    let config = server
        .config()
        .map_client(|p| p.with_malformed_events(MalformedEvents::Fail));
    let client = OpenAiClient::new(config).unwrap();
    let stream = into_stream(guard(client.oneshot(request(true))).await.unwrap());
    let (chunks, error) = drain(stream).await;
    assert_eq!(text(&chunks), "one ");
    assert_eq!(error.unwrap().kind(), LlmErrorKind::MalformedResponse);
}

#[tokio::test]
async fn stream_of_only_malformed_events_fails() {
    let server = Server::always(steps(vec![
        sse_head(),
        b"data: {oops\n\ndata: [1,2]\n\n".to_vec(),
    ]))
    .await;
    let err = guard(server.client().oneshot(request(true)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::StreamInterrupted, "{err}");
}

#[tokio::test]
async fn stalled_stream_hits_the_idle_timeout() {
    let server = Server::always(vec![
        Step::Write(sse_head()),
        Step::Write(role_event()),
        Step::Write(text_event("and then")),
        Step::Hang,
    ])
    .await;
    let (chunks, error) = drain(stream_from(&server).await).await;
    assert_eq!(text(&chunks), "and then");
    assert_eq!(error.unwrap().kind(), LlmErrorKind::Timeout);
}

#[tokio::test]
async fn stream_kept_alive_by_pings_still_hits_the_total_timeout() {
    let mut script = vec![Step::Write(sse_head()), Step::Write(role_event())];
    for _ in 0..40 {
        script.push(Step::Pause(Duration::from_millis(50)));
        script.push(Step::Write(b": ping\n\n".to_vec()));
    }
    let server = Server::always(script).await;
    let (_, error) = drain(stream_from(&server).await).await;
    let error = error.unwrap();
    assert_eq!(error.kind(), LlmErrorKind::Timeout);
    assert!(error.message().contains("not complete"), "{error}");
}

#[tokio::test]
async fn first_chunk_that_never_comes_times_out_the_call() {
    let server = Server::always(vec![Step::Write(sse_head()), Step::Hang]).await;
    let err = guard(server.client().oneshot(request(true)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Timeout);
}

#[tokio::test]
async fn json_answer_to_a_stream_request_is_replayed_as_a_stream() {
    let server = Server::always(vec![Step::Write(http(200, &[], COMPLETION))]).await;
    let response = guard(server.client().oneshot(request(true))).await.unwrap();
    assert_eq!(response.meta.model, "gpt-4o-2024-08-06");
    let completion = guard(response.into_completion()).await.unwrap();
    assert_eq!(completion.text(), "Hello! How can I assist you today?");
}

#[tokio::test]
async fn model_is_read_past_a_first_chunk_without_one() {
    // Azure sends its prompt-filter results first, with no model and no choices.
    let server = Server::always(steps(vec![
        sse_head(),
        b"data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}\n\n".to_vec(),
        role_event(),
        text_event("hi"),
        finish_event(),
        done_event(),
    ]))
    .await;
    let response = guard(server.client().oneshot(request(true))).await.unwrap();
    assert_eq!(response.meta.model, "gpt-4o-2024-08-06");
    let (chunks, error) = drain(into_stream(response)).await;
    assert!(error.is_none());
    assert_eq!(chunks.len(), 4);
    assert!(chunks[0].extra.contains_key("prompt_filter_results"));
}

#[tokio::test]
async fn crlf_events_split_across_reads_are_parsed() {
    let body = "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\u{e9}b\"}}]}\r\n\r\ndata: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\r\n\r\ndata: [DONE]\r\n\r\n";
    let mut script = vec![Step::Write(sse_head())];
    for piece in body.as_bytes().chunks(7) {
        script.push(Step::Write(piece.to_vec()));
    }
    let server = Server::always(script).await;
    let (chunks, error) = drain(stream_from(&server).await).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text(&chunks), "a\u{e9}b");
}
