//! The simulated provider over HTTP on 127.0.0.1, read with a raw reqwest client: each wire
//! format, each fault, and the control endpoint.

use std::time::Duration;

use brace_llm::{ChatChunk, ChatCompletion, LlmError, LlmErrorKind, StreamAccumulator};
use brace_sim::{
    ALL_KINDS, Behavior, Failure, Reply, SimConfig, SimHandle, SimServer, StreamFault, WireFormat,
};
use futures::StreamExt;
use serde_json::{Value, json};

const GEMINI_MODEL: &str = "gemini-2.0-flash";

fn client(timeout: Option<Duration>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder();
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder.build().unwrap()
}

async fn server(behavior: Behavior) -> SimServer {
    SimServer::start(SimHandle::new(
        SimConfig::new("sim-http").with_behavior(behavior),
    ))
    .await
    .unwrap()
}

async fn post(
    client: &reqwest::Client,
    server: &SimServer,
    format: WireFormat,
    stream: bool,
) -> Result<reqwest::Response, reqwest::Error> {
    let base = server.base_url();
    let (url, body) = match format {
        WireFormat::OpenAi => (
            format!("{base}/v1/chat/completions"),
            json!({"model": "gpt-4o", "stream": stream,
                   "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "hello sim"}]}),
        ),
        WireFormat::Anthropic => (
            format!("{base}/v1/messages"),
            json!({"model": "claude-sonnet-4", "max_tokens": 1024, "stream": stream,
                   "messages": [{"role": "user", "content": "hello sim"}]}),
        ),
        WireFormat::Gemini => {
            let method = if stream {
                "streamGenerateContent?alt=sse"
            } else {
                "generateContent"
            };
            (
                format!("{base}/v1beta/models/{GEMINI_MODEL}:{method}"),
                json!({"contents": [{"role": "user", "parts": [{"text": "hello sim"}]}]}),
            )
        }
    };
    client.post(url).json(&body).send().await
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    event: Option<String>,
    data: String,
}

/// Reads an SSE body to its end: the events, and the error that ended it, if any.
async fn read_sse(response: reqwest::Response) -> (Vec<Sse>, Option<reqwest::Error>) {
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let mut error = None;
    while let Some(next) = body.next().await {
        match next {
            Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Err(err) => {
                error = Some(err);
                break;
            }
        }
    }
    (parse_sse(&text), error)
}

fn parse_sse(text: &str) -> Vec<Sse> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = Some(name.to_owned());
                } else if let Some(line) = line.strip_prefix("data: ") {
                    data.push_str(line);
                }
            }
            Sse { event, data }
        })
        .collect()
}

/// Reads `expected` SSE events (failing after a generous bound if they do not come), then
/// checks whether anything more arrives within `quiet` (real time, loopback-short).
async fn read_then_quiet(
    response: reqwest::Response,
    expected: usize,
    quiet: Duration,
) -> (Vec<Sse>, bool) {
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while parse_sse(&text).len() < expected || !text.ends_with("\n\n") {
        let next = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("the expected events did not come");
        text.push_str(&String::from_utf8_lossy(&next.unwrap().unwrap()));
    }
    let more = tokio::time::timeout(quiet, body.next()).await.is_ok();
    (parse_sse(&text), more)
}

fn error_of(status: reqwest::StatusCode, headers: &http::HeaderMap, body: &[u8]) -> LlmError {
    LlmError::from_response(status, headers, body)
}

// ===== answers in each format =====

#[tokio::test]
async fn openai_answer_is_a_chat_completion() {
    let server = server(Behavior::succeed()).await;
    let response = post(&client(None), &server, WireFormat::OpenAi, false)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let completion: ChatCompletion = response.json().await.unwrap();
    assert_eq!(completion.text(), "simulated answer to: hello sim");
    assert_eq!(completion.model, "gpt-4o");
    assert_eq!(completion.usage.unwrap().completion_tokens, 5);
}

#[tokio::test]
async fn openai_stream_is_chunks_then_usage_then_done() {
    let server = server(Behavior::reply(Reply::new().with_chunks(6))).await;
    let response = post(&client(None), &server, WireFormat::OpenAi, true)
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (events, error) = read_sse(response).await;
    assert!(error.is_none());
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let mut accumulator = StreamAccumulator::new();
    for event in &events[..events.len() - 1] {
        let chunk: ChatChunk = serde_json::from_str(&event.data).unwrap();
        accumulator.push(&chunk);
    }
    // role, 6 content chunks, finish, usage
    assert_eq!(accumulator.chunks(), 9);
    assert_eq!(accumulator.usage().unwrap().completion_tokens, 6);
    let completion = accumulator.finish().unwrap();
    assert_eq!(completion.text(), "simulated answer to: hello sim more1");
}

#[tokio::test]
async fn anthropic_answer_has_the_messages_shape() {
    let server = server(Behavior::succeed()).await;
    let response = post(&client(None), &server, WireFormat::Anthropic, false)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-sonnet-4");
    assert_eq!(body["content"][0]["type"], "text");
    assert_eq!(body["content"][0]["text"], "simulated answer to: hello sim");
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["output_tokens"], 5);
}

#[tokio::test]
async fn anthropic_stream_sends_the_messages_event_sequence() {
    let server = server(Behavior::reply(Reply::new().with_chunks(3))).await;
    let response = post(&client(None), &server, WireFormat::Anthropic, true)
        .await
        .unwrap();
    let (events, error) = read_sse(response).await;
    assert!(error.is_none());
    let names: Vec<&str> = events
        .iter()
        .map(|event| event.event.as_deref().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let mut text = String::new();
    for event in &events {
        let data: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(data["type"], event.event.as_deref().unwrap());
        if let Some(piece) = data.pointer("/delta/text").and_then(Value::as_str) {
            text.push_str(piece);
        }
    }
    assert_eq!(text, "simulated answer to: hello sim");
    let delta: Value = serde_json::from_str(&events[7].data).unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
}

#[tokio::test]
async fn gemini_answer_has_candidates_and_usage_metadata() {
    let server = server(Behavior::succeed()).await;
    let response = post(&client(None), &server, WireFormat::Gemini, false)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let candidate = &body["candidates"][0];
    assert_eq!(candidate["content"]["role"], "model");
    assert_eq!(
        candidate["content"]["parts"][0]["text"],
        "simulated answer to: hello sim"
    );
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(body["modelVersion"], GEMINI_MODEL);
    assert_eq!(body["usageMetadata"]["candidatesTokenCount"], 5);
}

#[tokio::test]
async fn gemini_stream_ends_with_a_finish_reason() {
    let server = server(Behavior::reply(Reply::new().with_chunks(4))).await;
    let response = post(&client(None), &server, WireFormat::Gemini, true)
        .await
        .unwrap();
    let (events, error) = read_sse(response).await;
    assert!(error.is_none());
    assert_eq!(events.len(), 4);
    let data: Vec<Value> = events
        .iter()
        .map(|event| serde_json::from_str(&event.data).unwrap())
        .collect();
    assert!(
        data[..3]
            .iter()
            .all(|d| d["candidates"][0]["finishReason"].is_null())
    );
    assert_eq!(data[3]["candidates"][0]["finishReason"], "STOP");
    let text: String = data
        .iter()
        .map(|d| {
            d["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(text, "simulated answer to: hello sim");
}

#[tokio::test]
async fn models_endpoint_lists_the_configured_model() {
    let server = SimServer::start(SimHandle::new(SimConfig::new("s").with_model("sim-large")))
        .await
        .unwrap();
    let body: Value = client(None)
        .get(format!("{}/v1/models", server.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"][0]["id"], "sim-large");
}

#[tokio::test]
async fn invalid_request_gets_the_providers_400() {
    let server = server(Behavior::succeed()).await;
    let response = client(None)
        .post(format!("{}/v1/chat/completions", server.base_url()))
        .body("{\"model\": 5}")
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap();
    let err = error_of(status, &headers, &body);
    assert_eq!(status, 400);
    assert_eq!(err.kind(), LlmErrorKind::BadRequest);
    assert!(err.message().contains("invalid type"), "{}", err.message());
    assert_eq!(server.handle().calls(), 0);
}

// ===== error statuses =====

#[tokio::test]
async fn error_statuses_carry_each_providers_body_and_read_back_as_their_kind() {
    let client = client(None);
    let server = server(Behavior::succeed()).await;
    for format in [
        WireFormat::OpenAi,
        WireFormat::Anthropic,
        WireFormat::Gemini,
    ] {
        for kind in ALL_KINDS {
            let failure = Failure::new(kind);
            let Some(status) = failure.status_for(format) else {
                continue; // not an HTTP status: tested as dropped/malformed below
            };
            // Not expressible as a provider's error body: a cancellation is the caller's,
            // and Anthropic (`billing_error`) and Gemini (`RESOURCE_EXHAUSTED`) do not tell
            // quota from rate limits the way brace's mapping reads them.
            if kind == LlmErrorKind::Cancelled
                || (kind == LlmErrorKind::QuotaExhausted && format != WireFormat::OpenAi)
            {
                continue;
            }
            server.handle().set_behavior(Behavior::failure(failure));
            let response = post(&client, &server, format, false).await.unwrap();
            assert_eq!(response.status().as_u16(), status, "{format:?} {kind:?}");
            let headers = response.headers().clone();
            let status = response.status();
            let body = response.bytes().await.unwrap();
            let err = error_of(status, &headers, &body);
            assert_eq!(
                err.kind(),
                kind,
                "{format:?}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}

#[tokio::test]
async fn anthropic_overload_is_529_with_its_error_body() {
    let server = server(Behavior::failure(
        Failure::new(LlmErrorKind::Overloaded).with_retry_after(Duration::from_secs(3)),
    ))
    .await;
    let response = post(&client(None), &server, WireFormat::Anthropic, false)
        .await
        .unwrap();
    assert_eq!(response.status(), 529);
    assert_eq!(response.headers()["retry-after"], "3");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
}

#[tokio::test]
async fn openai_rate_limit_sends_retry_after_in_seconds_and_milliseconds() {
    let server = server(Behavior::rate_limited(Duration::from_millis(1500))).await;
    let response = post(&client(None), &server, WireFormat::OpenAi, false)
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(response.headers()["retry-after-ms"], "1500");
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap();
    let err = error_of(reqwest::StatusCode::TOO_MANY_REQUESTS, &headers, &body);
    assert_eq!(err.kind(), LlmErrorKind::RateLimited);
    assert!(err.retry_after().is_some());
}

#[tokio::test]
async fn gemini_rate_limit_is_resource_exhausted_with_retry_info() {
    let server = server(Behavior::rate_limited(Duration::from_secs(20))).await;
    let response = post(&client(None), &server, WireFormat::Gemini, false)
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap();
    let value: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["error"]["code"], 429);
    assert_eq!(value["error"]["status"], "RESOURCE_EXHAUSTED");
    let err = error_of(reqwest::StatusCode::TOO_MANY_REQUESTS, &headers, &body);
    assert_eq!(err.kind(), LlmErrorKind::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(20)));
}

// ===== slow, hung, dropped, broken =====

#[tokio::test]
async fn hang_makes_the_client_time_out() {
    let server = server(Behavior::hang()).await;
    let err = post(
        &client(Some(Duration::from_millis(200))),
        &server,
        WireFormat::OpenAi,
        false,
    )
    .await
    .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(server.handle().stats().count("hang"), 1);
}

#[tokio::test]
async fn slow_answer_makes_a_short_client_timeout_expire() {
    let server = server(Behavior::delay(
        Duration::from_secs(30),
        Behavior::succeed(),
    ))
    .await;
    let err = post(
        &client(Some(Duration::from_millis(150))),
        &server,
        WireFormat::Anthropic,
        false,
    )
    .await
    .unwrap_err();
    assert!(err.is_timeout(), "{err}");
}

#[tokio::test]
async fn dropped_connection_cuts_the_body() {
    let server = server(Behavior::drop_connection(20)).await;
    let response = post(&client(None), &server, WireFormat::OpenAi, false)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let err = response.bytes().await.unwrap_err();
    assert!(err.is_body() || err.is_decode(), "{err}");
    assert_eq!(server.handle().stats().count("drop"), 1);
}

#[tokio::test]
async fn connection_dropped_before_the_response_gives_no_status() {
    for behavior in [
        Behavior::drop_connection(0),
        Behavior::fail(LlmErrorKind::Connect),
    ] {
        let server = server(behavior).await;
        let err = post(&client(None), &server, WireFormat::Gemini, false)
            .await
            .unwrap_err();
        assert!(err.status().is_none() && !err.is_timeout(), "{err}");
    }
}

#[tokio::test]
async fn truncated_and_malformed_json_fail_to_decode() {
    for behavior in [Behavior::truncated(), Behavior::malformed()] {
        for format in [
            WireFormat::OpenAi,
            WireFormat::Anthropic,
            WireFormat::Gemini,
        ] {
            let server = server(behavior.clone()).await;
            let response = post(&client(None), &server, format, false).await.unwrap();
            assert_eq!(response.status(), 200);
            let text = response.text().await.unwrap();
            assert!(!text.is_empty());
            assert!(
                serde_json::from_str::<Value>(&text).is_err(),
                "{behavior:?} {format:?}: {text}"
            );
        }
    }
    // A custom body: valid JSON of the wrong shape.
    let server = server(Behavior::Malformed {
        body: Some(r#"{"unexpected": true}"#.to_owned()),
    })
    .await;
    let response = post(&client(None), &server, WireFormat::OpenAi, false)
        .await
        .unwrap();
    assert!(response.json::<ChatCompletion>().await.is_err());
}

#[tokio::test]
async fn broken_stream_drops_the_connection_after_n_events_without_done() {
    for (format, after) in [
        (WireFormat::OpenAi, 3),
        (WireFormat::Anthropic, 5),
        (WireFormat::Gemini, 2),
    ] {
        let server = server(Behavior::reply(
            Reply::new()
                .with_chunks(8)
                .with_fault(StreamFault::Break { after }),
        ))
        .await;
        let response = post(&client(None), &server, format, true).await.unwrap();
        assert_eq!(response.status(), 200);
        let (events, error) = read_sse(response).await;
        assert_eq!(events.len(), after, "{format:?}");
        assert!(error.is_some(), "{format:?}: the stream ended cleanly");
        assert!(events.iter().all(|event| event.data != "[DONE]"));
    }
}

#[tokio::test]
async fn stalled_stream_sends_n_events_then_nothing() {
    let server = server(Behavior::reply(
        Reply::new()
            .with_chunks(8)
            .with_fault(StreamFault::Stall { after: 4 }),
    ))
    .await;
    let response = post(&client(None), &server, WireFormat::OpenAi, true)
        .await
        .unwrap();
    let (events, more) = read_then_quiet(response, 4, Duration::from_millis(150)).await;
    assert_eq!(events.len(), 4);
    assert!(!more, "a stalled stream sent more");
    assert_eq!(server.handle().stats().count("stream_stall"), 1);
}

#[tokio::test]
async fn first_token_delay_holds_content_after_the_headers() {
    let server = server(Behavior::reply(
        Reply::new().with_first_token_delay(Duration::from_secs(30)),
    ))
    .await;
    let response = post(&client(None), &server, WireFormat::OpenAi, true)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (events, more) = read_then_quiet(response, 1, Duration::from_millis(150)).await;
    assert!(!more, "content came before the first-token delay");
    assert_eq!(events.len(), 1);
    let chunk: ChatChunk = serde_json::from_str(&events[0].data).unwrap();
    assert!(!chunk.has_content());
}

#[tokio::test]
async fn missing_done_ends_cleanly_after_the_finish_reason() {
    let server = server(Behavior::reply(
        Reply::new().with_fault(StreamFault::MissingDone),
    ))
    .await;
    let response = post(&client(None), &server, WireFormat::OpenAi, true)
        .await
        .unwrap();
    let (events, error) = read_sse(response).await;
    assert!(error.is_none());
    assert!(events.iter().all(|event| event.data != "[DONE]"));
    let mut accumulator = StreamAccumulator::new();
    for event in &events {
        accumulator.push(&serde_json::from_str(&event.data).unwrap());
    }
    assert!(accumulator.is_finished());
}

#[tokio::test]
async fn malformed_event_sits_inside_an_otherwise_complete_stream() {
    let server = server(Behavior::reply(
        Reply::new()
            .with_chunks(12)
            .with_fault(StreamFault::Malformed { at: 10 }),
    ))
    .await;
    let response = post(&client(None), &server, WireFormat::OpenAi, true)
        .await
        .unwrap();
    let (events, error) = read_sse(response).await;
    assert!(error.is_none());
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let mut accumulator = StreamAccumulator::new();
    for (index, event) in events[..events.len() - 1].iter().enumerate() {
        let parsed = serde_json::from_str::<ChatChunk>(&event.data);
        assert_eq!(
            parsed.is_err(),
            index == 10,
            "event {index}: {}",
            event.data
        );
        if let Ok(chunk) = parsed {
            accumulator.push(&chunk);
        }
    }
    assert!(accumulator.finish().is_ok());
}

#[tokio::test]
async fn in_band_error_event_in_each_format() {
    for format in [
        WireFormat::OpenAi,
        WireFormat::Anthropic,
        WireFormat::Gemini,
    ] {
        let server = server(Behavior::reply(Reply::new().with_fault(
            StreamFault::Error {
                after: 1,
                error: Failure::new(LlmErrorKind::Overloaded),
            },
        )))
        .await;
        let response = post(&client(None), &server, format, true).await.unwrap();
        assert_eq!(response.status(), 200);
        let (events, error) = read_sse(response).await;
        assert!(error.is_none(), "{format:?}");
        assert_eq!(events.len(), 2, "{format:?}");
        let last = &events[1];
        let data: Value = serde_json::from_str(&last.data).unwrap();
        match format {
            WireFormat::OpenAi => assert_eq!(data["error"]["type"], "server_error"),
            WireFormat::Anthropic => {
                assert_eq!(last.event.as_deref(), Some("error"));
                assert_eq!(data["error"]["type"], "overloaded_error");
            }
            WireFormat::Gemini => assert_eq!(data["error"]["status"], "UNAVAILABLE"),
        }
        let status = Failure::new(LlmErrorKind::Overloaded)
            .status_for(format)
            .unwrap();
        let err = error_of(
            reqwest::StatusCode::from_u16(status).unwrap(),
            &http::HeaderMap::new(),
            last.data.as_bytes(),
        );
        assert_eq!(err.kind(), LlmErrorKind::Overloaded, "{format:?}");
    }
}

// ===== control =====

#[tokio::test]
async fn control_endpoint_changes_behaviour_at_run_time() {
    let server = server(Behavior::succeed()).await;
    let client = client(None);
    let base = server.base_url();
    let ok = post(&client, &server, WireFormat::OpenAi, false)
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    let set = client
        .post(format!("{base}/_sim/behavior"))
        .body(r#"{"type": "fail", "kind": "overloaded", "retry_after": "2s"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let failed = post(&client, &server, WireFormat::OpenAi, false)
        .await
        .unwrap();
    assert_eq!(failed.status(), 503);
    assert_eq!(failed.headers()["retry-after"], "2");

    let behavior: Value = client
        .get(format!("{base}/_sim/behavior"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(behavior["kind"], "overloaded");

    let stats: Value = client
        .get(format!("{base}/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats,
        json!({"calls": 2, "outcomes": {"success": 1, "overloaded": 1},
               "http_versions": {"HTTP/1.1": 2}})
    );

    let invalid = client
        .post(format!("{base}/_sim/behavior"))
        .body(r#"{"type": "fail", "kind": "exploded"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    assert!(invalid.text().await.unwrap().contains("exploded"));

    let reset = client
        .post(format!("{base}/_sim/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    assert_eq!(server.handle().calls(), 0);
}

#[tokio::test]
async fn provider_killed_mid_load_fails_every_later_request() {
    let server = server(Behavior::succeed()).await;
    let client = client(None);
    let batch = |count: usize| {
        let requests = (0..count).map(|_| post(&client, &server, WireFormat::OpenAi, false));
        futures::future::join_all(requests)
    };
    let before = batch(10).await;
    assert!(before.iter().all(|r| r.as_ref().unwrap().status() == 200));

    client
        .post(format!("{}/_sim/behavior", server.base_url()))
        .json(&Behavior::fail(LlmErrorKind::Server))
        .send()
        .await
        .unwrap();
    let after = batch(10).await;
    assert!(after.iter().all(|r| r.as_ref().unwrap().status() == 500));
    let stats = server.handle().stats();
    assert_eq!(stats.successes(), 10);
    assert_eq!(stats.count("server_error"), 10);
}

#[tokio::test]
async fn shutdown_ends_hanging_requests() {
    let server = server(Behavior::hang()).await;
    let handle = server.handle().clone();
    let client = client(Some(Duration::from_secs(5)));
    let url = format!("{}/v1/chat/completions", server.base_url());
    let request = tokio::spawn(async move {
        let response = client
            .post(url)
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await?;
        response.bytes().await
    });
    tokio::time::timeout(Duration::from_secs(10), async {
        while handle.calls() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the request did not reach the server");
    server.shutdown().await;
    let outcome = request.await.unwrap();
    let err = outcome.unwrap_err();
    assert!(
        !err.is_timeout(),
        "the request waited for its timeout: {err}"
    );
}

#[tokio::test]
async fn binding_a_non_loopback_address_is_refused() {
    let err = SimServer::bind(
        "0.0.0.0:0".parse().unwrap(),
        SimHandle::new(SimConfig::default()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn gemini_unknown_method_is_not_found() {
    let server = server(Behavior::succeed()).await;
    let response = client(None)
        .post(format!(
            "{}/v1beta/models/{GEMINI_MODEL}:countTokens",
            server.base_url()
        ))
        .json(&json!({"contents": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

// ===== tool calls, conditions =====

#[tokio::test]
async fn tool_calls_in_each_format() {
    use brace_sim::ToolCallReply;

    let server =
        server(Behavior::reply(Reply::new().with_chunks(3).with_tool_call(
            ToolCallReply::new("get_weather", r#"{"city":"Paris"}"#),
        )))
        .await;
    let client = client(None);

    let completion: ChatCompletion = post(&client, &server, WireFormat::OpenAi, false)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let calls = completion.choices[0].message.tool_calls.clone().unwrap();
    assert_eq!(calls[0].function.name, "get_weather");

    let (events, _) = read_sse(
        post(&client, &server, WireFormat::OpenAi, true)
            .await
            .unwrap(),
    )
    .await;
    let mut accumulator = StreamAccumulator::new();
    for event in &events[..events.len() - 1] {
        accumulator.push(&serde_json::from_str(&event.data).unwrap());
    }
    let streamed = accumulator.finish().unwrap();
    assert_eq!(
        streamed.choices[0].message.tool_calls.as_ref().unwrap()[0]
            .function
            .arguments,
        r#"{"city":"Paris"}"#
    );

    let anthropic: Value = post(&client, &server, WireFormat::Anthropic, false)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(anthropic["content"][0]["type"], "tool_use");
    assert_eq!(anthropic["content"][0]["input"], json!({"city": "Paris"}));
    assert_eq!(anthropic["stop_reason"], "tool_use");

    let (events, _) = read_sse(
        post(&client, &server, WireFormat::Anthropic, true)
            .await
            .unwrap(),
    )
    .await;
    let partial: String = events
        .iter()
        .filter_map(|event| {
            let data: Value = serde_json::from_str(&event.data).ok()?;
            data.pointer("/delta/partial_json")?
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(partial, r#"{"city":"Paris"}"#);

    let gemini: Value = post(&client, &server, WireFormat::Gemini, false)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        gemini["candidates"][0]["content"]["parts"][0]["functionCall"],
        json!({"name": "get_weather", "args": {"city": "Paris"}})
    );
}

#[tokio::test]
async fn conditional_behaviour_set_through_the_control_endpoint() {
    let server = server(Behavior::succeed()).await;
    let client = client(None);
    let set = client
        .post(format!("{}/_sim/behavior", server.base_url()))
        .body(r#"{"type": "when", "when": "stream", "then": {"type": "fail", "kind": "rate_limited", "retry_after": "1s"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let whole = post(&client, &server, WireFormat::OpenAi, false)
        .await
        .unwrap();
    assert_eq!(whole.status(), 200);
    let streamed = post(&client, &server, WireFormat::OpenAi, true)
        .await
        .unwrap();
    assert_eq!(streamed.status(), 429);
    assert_eq!(streamed.headers()["retry-after"], "1");
}

#[tokio::test]
async fn requests_in_each_format_are_recorded() {
    let server = server(Behavior::succeed()).await;
    let client = client(None);
    for format in [
        WireFormat::OpenAi,
        WireFormat::Anthropic,
        WireFormat::Gemini,
    ] {
        post(&client, &server, format, false).await.unwrap();
        let request = server.handle().last_request().unwrap();
        assert_eq!(request.messages.last().unwrap().text(), "hello sim");
    }
    let models: Vec<_> = server
        .handle()
        .requests()
        .into_iter()
        .map(|request| request.model)
        .collect();
    assert_eq!(models, ["gpt-4o", "claude-sonnet-4", GEMINI_MODEL]);
}
