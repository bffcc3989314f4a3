//! Wire-format round trips on real OpenAI samples, and error mapping on real provider error
//! bodies (fixtures written from the providers' public API references).

use std::path::Path;
use std::time::{Duration, SystemTime};

use brace_core::Classify;
use brace_llm::{
    ChatChunk, ChatCompletion, ChatRequest, ChatResponse, ChatStream, Content, ContentPart,
    FinishReason, LlmClassifier, LlmError, LlmErrorKind, Role, StreamAccumulator,
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::Value;

fn fixture(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|err| panic!("{}: {err}", full.display()))
}

/// JSON `null` and an absent field mean the same in the OpenAI API, as do `1` and `1.0`:
/// compare without nulls and with every number as a float.
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Number(number) => serde_json::json!(number.as_f64()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

fn assert_round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(json: &str) -> T {
    let original: Value = serde_json::from_str(json).unwrap();
    let typed: T = serde_json::from_str(json).unwrap();
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(without_nulls(back), without_nulls(original));
    typed
}

fn sse_events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(str::to_owned)
        .collect()
}

#[test]
fn full_request_round_trips_with_unknown_fields_kept() {
    let request: ChatRequest = assert_round_trip(&fixture("openai/request_full.json"));
    assert_eq!(request.model, "gpt-4o");
    assert_eq!(request.messages.len(), 5);
    assert_eq!(request.messages[0].role, Role::Developer);
    assert!(request.has_images());
    assert!(request.has_tools());
    assert!(request.is_stream());
    assert!(request.wants_stream_usage());
    assert_eq!(request.output_limit(), Some(600));
    assert_eq!(request.extra["logprobs"], true);
    assert_eq!(request.extra["reasoning_effort"], "medium");
    let Some(Content::Parts(parts)) = &request.messages[1].content else {
        panic!("expected parts");
    };
    assert!(matches!(parts[0], ContentPart::Text { .. }));
    assert!(matches!(parts[1], ContentPart::ImageUrl { .. }));
    assert!(matches!(parts[2], ContentPart::Other(_)));
    let calls = request.messages[2].tool_calls.as_ref().unwrap();
    assert_eq!(calls[0].function.name, "get_current_weather");
    assert_eq!(
        request.messages[3].tool_call_id.as_deref(),
        Some("call_abc123")
    );
    assert_eq!(request.validate(), Ok(()));
}

#[test]
fn completions_round_trip() {
    let completion: ChatCompletion = assert_round_trip(&fixture("openai/completion.json"));
    assert_eq!(
        completion.choices[0].finish_reason,
        Some(FinishReason::Stop)
    );
    assert_eq!(completion.usage.as_ref().unwrap().total_tokens, 1163);
    assert_eq!(completion.extra["system_fingerprint"], "fp_fc9f1d7035");
    assert!(completion.text().starts_with("The image shows"));

    let tools: ChatCompletion = assert_round_trip(&fixture("openai/completion_tool_calls.json"));
    assert_eq!(
        tools.choices[0].finish_reason,
        Some(FinishReason::ToolCalls)
    );
    let call = &tools.choices[0].message.tool_calls.as_ref().unwrap()[0];
    assert_eq!(call.id, "call_abc123");
}

#[test]
fn stream_chunks_round_trip_and_accumulate() {
    let mut accumulator = StreamAccumulator::new();
    for event in sse_events(&fixture("openai/stream.sse")) {
        let chunk: ChatChunk = assert_round_trip(&event);
        accumulator.push(&chunk);
    }
    assert!(accumulator.is_finished());
    assert_eq!(accumulator.text(), "Hello there!");
    let completion = accumulator.finish().unwrap();
    assert_eq!(completion.text(), "Hello there!");
    assert_eq!(completion.usage.unwrap().total_tokens, 12);
}

#[test]
fn tool_call_stream_accumulates_arguments() {
    let mut accumulator = StreamAccumulator::new();
    let events = sse_events(&fixture("openai/stream_tool_calls.sse"));
    let first: ChatChunk = serde_json::from_str(&events[0]).unwrap();
    assert!(first.has_content(), "a tool-call delta commits the stream");
    for event in &events {
        let chunk: ChatChunk = assert_round_trip(event);
        accumulator.push(&chunk);
    }
    let completion = accumulator.finish().unwrap();
    let call = &completion.choices[0].message.tool_calls.as_ref().unwrap()[0];
    assert_eq!(call.id, "call_DdmO9pD3xa9XTPNJ32zg2hcA");
    assert_eq!(call.function.arguments, "{\"location\": \"Boston\"}");
    assert_eq!(
        completion.choices[0].finish_reason,
        Some(FinishReason::ToolCalls)
    );
}

#[test]
fn role_only_and_empty_chunks_do_not_commit() {
    let events = sse_events(&fixture("openai/stream.sse"));
    let role_only: ChatChunk = serde_json::from_str(&events[0]).unwrap();
    let content: ChatChunk = serde_json::from_str(&events[1]).unwrap();
    let finish: ChatChunk = serde_json::from_str(&events[3]).unwrap();
    assert!(!role_only.has_content());
    assert!(content.has_content());
    assert!(!finish.has_content());
}

#[test]
fn truncated_stream_is_an_error_not_a_short_answer() {
    let mut accumulator = StreamAccumulator::new();
    for event in sse_events(&fixture("openai/stream.sse")).iter().take(2) {
        accumulator.push(&serde_json::from_str(event).unwrap());
    }
    let err = accumulator.finish().unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::StreamInterrupted);
}

#[tokio::test]
async fn cached_completion_replays_as_an_equivalent_stream() {
    let completion: ChatCompletion =
        serde_json::from_str(&fixture("openai/completion.json")).unwrap();
    let chunks = completion.to_chunks(true);
    assert!(chunks.iter().any(ChatChunk::has_content));
    let stream = ChatStream::from_items(chunks.into_iter().map(Ok).collect());
    let replayed = ChatResponse::stream("cache", "gpt-4o", stream)
        .into_completion()
        .await
        .unwrap();
    assert_eq!(replayed.text(), completion.text());
    assert_eq!(replayed.usage, completion.usage);
    assert_eq!(replayed.choices[0].finish_reason, Some(FinishReason::Stop));
}

#[test]
fn every_provider_error_fixture_maps_to_its_kind() {
    let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
    let mut checked = 0;
    for provider in ["openai", "anthropic", "gemini"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(provider);
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.starts_with("error_") {
                continue;
            }
            let case: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let err = error_from_case(&case, now);
            let expected = case["expect"]["kind"].as_str().unwrap();
            assert_eq!(
                format!("{:?}", err.kind()),
                expected,
                "{provider}/{name}: {err}"
            );
            let retry_after = case["expect"]["retry_after_ms"]
                .as_u64()
                .map(Duration::from_millis);
            assert_eq!(err.retry_after(), retry_after, "{provider}/{name}");
            assert_eq!(err.status(), Some(case["status"].as_u64().unwrap() as u16));
            assert!(!err.message().is_empty(), "{provider}/{name}");
            checked += 1;
        }
    }
    assert_eq!(checked, 29);
}

fn error_from_case(case: &Value, now: SystemTime) -> LlmError {
    let status = StatusCode::from_u16(case["status"].as_u64().unwrap() as u16).unwrap();
    let mut headers = HeaderMap::new();
    for (name, value) in case["headers"].as_object().unwrap() {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value.as_str().unwrap()).unwrap(),
        );
    }
    let body = serde_json::to_vec(&case["body"]).unwrap();
    LlmError::from_response_at(status, &headers, &body, now).with_provider("p")
}

#[test]
fn error_messages_never_carry_api_keys() {
    let case: Value = serde_json::from_str(&fixture("openai/error_401.json")).unwrap();
    let err = error_from_case(&case, SystemTime::now());
    for text in [
        err.to_string(),
        format!("{err:?}"),
        err.message().to_owned(),
    ] {
        assert!(
            !text.contains("abcdefghijklmnopqrstuvwxyz0123456789"),
            "{text}"
        );
    }
    assert!(err.to_string().contains("Incorrect API key provided"));
}

#[test]
fn classification_follows_the_kind_table() {
    let classifier = LlmClassifier::new();
    let outcome = |kind| {
        let err = LlmError::new(kind, "x");
        Classify::<ChatResponse, LlmError>::classify(&classifier, Err(&err))
    };
    for kind in [
        LlmErrorKind::RateLimited,
        LlmErrorKind::Overloaded,
        LlmErrorKind::Server,
        LlmErrorKind::Timeout,
        LlmErrorKind::Connect,
    ] {
        let o = outcome(kind);
        assert!(
            o.is_failure() && o.is_retryable() && o.should_failover(),
            "{kind:?}"
        );
    }
    for kind in [LlmErrorKind::Auth, LlmErrorKind::QuotaExhausted] {
        let o = outcome(kind);
        assert!(
            o.is_failure() && !o.is_retryable() && o.should_failover(),
            "{kind:?}"
        );
    }
    for kind in [
        LlmErrorKind::ContextLengthExceeded,
        LlmErrorKind::ContentFiltered,
        LlmErrorKind::ModelNotFound,
    ] {
        let o = outcome(kind);
        assert!(
            o.is_ignored() && !o.is_retryable() && o.should_failover(),
            "{kind:?}"
        );
    }
    for kind in [LlmErrorKind::BadRequest, LlmErrorKind::Cancelled] {
        let o = outcome(kind);
        assert!(
            o.is_ignored() && !o.is_retryable() && !o.should_failover(),
            "{kind:?}"
        );
    }

    let custom = LlmClassifier::new()
        .failover_on(LlmErrorKind::ContextLengthExceeded, false)
        .count_as_failure(LlmErrorKind::RateLimited, false);
    let err = LlmError::new(LlmErrorKind::ContextLengthExceeded, "x");
    assert!(!Classify::<(), LlmError>::classify(&custom, Err(&err)).should_failover());
    let err = LlmError::new(LlmErrorKind::RateLimited, "x");
    assert!(Classify::<(), LlmError>::classify(&custom, Err(&err)).is_ignored());
}

#[test]
fn gateway_status_maps_all_failed_to_429_or_503() {
    use brace_core::{AllProvidersFailed, CircuitOpen, ProviderFailure, RetriesExhausted};

    let limited = |secs| {
        Box::new(
            LlmError::new(LlmErrorKind::RateLimited, "slow down")
                .with_retry_after(Some(Duration::from_secs(secs))),
        )
    };
    let all_limited = AllProvidersFailed::new(vec![
        ProviderFailure::new("a", limited(30)),
        ProviderFailure::new(
            "b",
            Box::new(RetriesExhausted::new(
                3,
                brace_core::GiveUpReason::MaxRetries,
                limited(7),
            )),
        ),
    ]);
    assert_eq!(
        brace_llm::gateway_status(&all_limited),
        (StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(7)))
    );
    let classified = LlmClassifier::new().classify_dyn_error(&all_limited);
    assert_eq!(classified.retry_after(), Some(Duration::from_secs(7)));

    let mixed = AllProvidersFailed::new(vec![
        ProviderFailure::new("a", limited(30)),
        ProviderFailure::new("b", Box::new(CircuitOpen::new("b", None))),
        ProviderFailure::new("c", Box::new(LlmError::new(LlmErrorKind::Server, "boom"))),
    ]);
    assert_eq!(
        brace_llm::gateway_status(&mixed).0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}
