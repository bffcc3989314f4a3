//! Gemini translation, both directions, on samples written from Google's public Gemini API
//! reference (`brace-llm/tests/fixtures/gemini/`).

use std::path::Path;

use brace_llm::{
    ChatChunk, ChatRequest, FinishReason, LlmErrorKind, Message, Role, StreamAccumulator, Tool,
};
use brace_providers::gemini::{self, GeminiDecoder};
use serde_json::{Value, json};

fn fixture(path: &str) -> String {
    // brace-llm's fixtures: see `fixtures()` in `anthropic_support`.
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../brace-llm/tests/fixtures/gemini")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|err| panic!("{}: {err}", full.display()))
}

/// The `data:` payloads of a server-sent-events text.
fn sse_data(text: &str) -> Vec<String> {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|event| {
            event
                .lines()
                .find_map(|line| line.strip_prefix("data:"))
                .map(|data| data.trim_start().to_owned())
        })
        .collect()
}

fn encode(request: &ChatRequest) -> Value {
    gemini::request_to_value(request).unwrap()
}

fn accumulate(chunks: &[ChatChunk]) -> StreamAccumulator {
    let mut accumulator = StreamAccumulator::new();
    for chunk in chunks {
        accumulator.push(chunk);
    }
    accumulator
}

#[test]
fn full_request_translates_to_the_generate_content_format() {
    let request: ChatRequest = serde_json::from_str(&fixture("chat_request.json")).unwrap();
    let expected: Value = serde_json::from_str(&fixture("generate_content_request.json")).unwrap();
    assert_eq!(encode(&request), expected);
    let bytes = gemini::encode_request(&request).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), expected);
}

#[test]
fn response_format_n_and_seed_go_in_generation_config() {
    let mut request = ChatRequest::new("gemini", vec![Message::user("List three colours")]);
    request.options_mut().n = Some(2);
    request.options_mut().seed = Some(7);
    request.options_mut().response_format = Some(json!({
        "type": "json_schema",
        "json_schema": {"name": "colours", "schema": {"type": "array", "items": {"type": "string"}}}
    }));
    let body = encode(&request);
    assert_eq!(
        body["generationConfig"],
        json!({
            "candidateCount": 2,
            "seed": 7,
            "responseMimeType": "application/json",
            "responseSchema": {"type": "array", "items": {"type": "string"}},
        })
    );
    request.options_mut().response_format = Some(json!({"type": "json_object"}));
    request.options_mut().n = None;
    request.options_mut().seed = None;
    assert_eq!(
        encode(&request)["generationConfig"],
        json!({"responseMimeType": "application/json"})
    );
}

#[test]
fn minimal_request_has_no_empty_sections() {
    let body = encode(&ChatRequest::new("gemini", vec![Message::user("Hi")]));
    assert_eq!(
        body,
        json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]})
    );
}

#[test]
fn tool_choice_becomes_function_calling_config() {
    let tools = vec![Tool::function("f", "does f", json!({"type": "object"}))];
    for (choice, expected) in [
        (json!("auto"), json!({"mode": "AUTO"})),
        (json!("none"), json!({"mode": "NONE"})),
        (json!("required"), json!({"mode": "ANY"})),
        (
            json!({"type": "function", "function": {"name": "f"}}),
            json!({"mode": "ANY", "allowedFunctionNames": ["f"]}),
        ),
    ] {
        let mut request =
            ChatRequest::new("gemini", vec![Message::user("Hi")]).with_tools(tools.clone());
        request.options_mut().tool_choice = Some(choice);
        assert_eq!(
            encode(&request)["toolConfig"]["functionCallingConfig"],
            expected
        );
    }
}

#[test]
fn tool_results_that_are_not_objects_are_wrapped() {
    let mut assistant = Message::assistant("");
    assistant.tool_calls = Some(vec![brace_llm::ToolCall {
        id: "call_0".into(),
        kind: "function".into(),
        function: brace_llm::FunctionCall {
            name: "lookup".into(),
            arguments: String::new(),
        },
    }]);
    let request = ChatRequest::new(
        "gemini",
        vec![
            Message::user("Go"),
            assistant,
            Message::tool("call_0", "plain text"),
        ],
    );
    let body = encode(&request);
    assert_eq!(
        body["contents"][1]["parts"],
        json!([{"functionCall": {"name": "lookup", "args": {}}}])
    );
    assert_eq!(
        body["contents"][2]["parts"],
        json!([{"functionResponse": {"name": "lookup", "response": {"content": "plain text"}}}])
    );
}

#[test]
fn a_tool_result_for_an_unknown_call_is_a_bad_request() {
    let request = ChatRequest::new("gemini", vec![Message::tool("call_x", "{}")]);
    let err = gemini::encode_request(&request).unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::BadRequest);
}

#[test]
fn text_response_skips_thoughts_and_maps_usage() {
    let completion =
        gemini::decode_response(fixture("response_text.json").as_bytes(), "gemini-x").unwrap();
    assert_eq!(completion.id, "mAitaLmkHPPlz7IPvtfUqQ4");
    assert_eq!(completion.model, "gemini-2.5-flash");
    assert_eq!(
        completion.text(),
        "Cats are obligate carnivores: they need meat."
    );
    assert_eq!(completion.choices[0].message.role, Role::Assistant);
    assert_eq!(
        completion.choices[0].finish_reason,
        Some(FinishReason::Stop)
    );
    let usage = completion.usage.unwrap();
    assert_eq!(usage.prompt_tokens, 9);
    // Thinking counts as completion, as OpenAI's reasoning tokens do.
    assert_eq!(usage.completion_tokens, 12 + 15);
    assert_eq!(
        usage.extra["completion_tokens_details"]["reasoning_tokens"],
        15
    );
}

#[test]
fn function_calls_become_tool_calls() {
    let completion =
        gemini::decode_response(fixture("response_function_call.json").as_bytes(), "m").unwrap();
    let choice = &completion.choices[0];
    assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
    assert!(choice.message.content.is_none());
    let calls = choice.message.tool_calls.as_ref().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].id, "call_0");
    assert_eq!(calls[1].id, "call_1");
    assert_eq!(calls[1].function.name, "get_weather");
    let arguments: Value = serde_json::from_str(&calls[1].function.arguments).unwrap();
    assert_eq!(
        arguments,
        json!({"location": "Tokyo, Japan", "unit": "celsius"})
    );
}

#[test]
fn function_calls_round_trip_to_the_next_request() {
    let completion =
        gemini::decode_response(fixture("response_function_call.json").as_bytes(), "m").unwrap();
    let original: Value = serde_json::from_str(&fixture("response_function_call.json")).unwrap();
    let assistant = completion.choices[0].message.clone();
    let request = ChatRequest::new(
        "gemini",
        vec![
            Message::user("Weather?"),
            assistant,
            Message::tool("call_0", r#"{"temperature": 18}"#),
            Message::tool("call_1", r#"{"temperature": 24}"#),
        ],
    );
    let body = encode(&request);
    assert_eq!(body["contents"][1], original["candidates"][0]["content"]);
    assert_eq!(
        body["contents"][2]["parts"],
        json!([
            {"functionResponse": {"name": "get_weather", "response": {"temperature": 18}}},
            {"functionResponse": {"name": "get_weather", "response": {"temperature": 24}}},
        ])
    );
}

#[test]
fn a_blocked_prompt_is_content_filtered() {
    let err =
        gemini::decode_response(fixture("response_blocked.json").as_bytes(), "m").unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::ContentFiltered);
    assert_eq!(err.code(), Some("SAFETY"));
}

#[test]
fn a_safety_stop_is_a_content_filter_finish() {
    let completion =
        gemini::decode_response(fixture("response_safety.json").as_bytes(), "m").unwrap();
    assert_eq!(
        completion.choices[0].finish_reason,
        Some(FinishReason::ContentFilter)
    );
}

#[test]
fn every_finish_reason_maps() {
    for (reason, calls, expected) in [
        ("STOP", false, FinishReason::Stop),
        ("STOP", true, FinishReason::ToolCalls),
        ("MAX_TOKENS", false, FinishReason::Length),
        ("SAFETY", false, FinishReason::ContentFilter),
        ("RECITATION", false, FinishReason::ContentFilter),
        ("BLOCKLIST", false, FinishReason::ContentFilter),
        ("PROHIBITED_CONTENT", false, FinishReason::ContentFilter),
        ("SPII", false, FinishReason::ContentFilter),
        (
            "MALFORMED_FUNCTION_CALL",
            false,
            FinishReason::Other("malformed_function_call".into()),
        ),
    ] {
        assert_eq!(gemini::finish_reason(reason, calls), expected, "{reason}");
    }
}

#[test]
fn malformed_and_error_bodies_are_errors_not_panics() {
    for body in [&b"{\"candidates\": 7}"[..], b"", b"[]", b"{}", b"null"] {
        let err = gemini::decode_response(body, "m").unwrap_err();
        assert_eq!(
            err.kind(),
            LlmErrorKind::MalformedResponse,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let err = gemini::decode_response(
        br#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#,
        "m",
    )
    .unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Overloaded);
}

#[test]
fn text_stream_accumulates_to_the_whole_answer() {
    let mut state = GeminiDecoder::new("gemini-2.5-flash", true);
    let chunks: Vec<ChatChunk> = sse_data(&fixture("stream_text.sse"))
        .iter()
        .map(|data| state.on_event(data).unwrap())
        .collect();
    assert_eq!(chunks[0].choices[0].delta.role, Some(Role::Assistant));
    assert!(chunks[1].choices[0].delta.role.is_none());
    assert!(
        chunks
            .iter()
            .all(|chunk| chunk.id == "Qj8taL7VE5rkz7IPpMfc0Qk")
    );
    let usage_chunk = state.finish().unwrap().unwrap();
    assert!(usage_chunk.choices.is_empty());
    let mut accumulator = accumulate(&chunks);
    accumulator.push(&usage_chunk);
    let completion = accumulator.finish().unwrap();
    assert_eq!(
        completion.text(),
        "The quick brown fox jumps over the lazy dog."
    );
    assert_eq!(
        completion.choices[0].finish_reason,
        Some(FinishReason::Stop)
    );
    let usage = completion.usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (8, 11));
}

#[test]
fn function_call_stream_gives_whole_tool_calls() {
    let mut state = GeminiDecoder::new("gemini-2.5-flash", false);
    let chunks: Vec<ChatChunk> = sse_data(&fixture("stream_function_call.sse"))
        .iter()
        .map(|data| state.on_event(data).unwrap())
        .collect();
    assert!(state.finish().unwrap().is_none());
    let completion = accumulate(&chunks).finish().unwrap();
    let choice = &completion.choices[0];
    assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(choice.message.text(), "Checking both cities.");
    let calls = choice.message.tool_calls.as_ref().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        (calls[0].id.as_str(), calls[1].id.as_str()),
        ("call_0", "call_1")
    );
    let arguments: Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
    assert_eq!(arguments, json!({"location": "Paris, France"}));
}

#[test]
fn an_error_object_in_a_stream_is_rate_limited() {
    let events = sse_data(&fixture("stream_error.sse"));
    let mut state = GeminiDecoder::new("m", false);
    assert!(state.on_event(&events[0]).is_ok());
    let err = state.on_event(&events[1]).unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::RateLimited);
    assert_eq!(err.code(), Some("RESOURCE_EXHAUSTED"));
}

#[test]
fn a_blocked_prompt_in_a_stream_is_content_filtered() {
    let data = serde_json::to_string(
        &serde_json::from_str::<Value>(&fixture("response_blocked.json")).unwrap(),
    )
    .unwrap();
    let err = GeminiDecoder::new("m", false).on_event(&data).unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::ContentFiltered);
}

#[test]
fn a_stream_without_a_finish_reason_is_interrupted() {
    let events = sse_data(&fixture("stream_text.sse"));
    let mut state = GeminiDecoder::new("m", false);
    for data in &events[..2] {
        state.on_event(data).unwrap();
    }
    assert_eq!(
        state.finish().unwrap_err().kind(),
        LlmErrorKind::StreamInterrupted
    );
    assert_eq!(
        GeminiDecoder::new("m", false).finish().unwrap_err().kind(),
        LlmErrorKind::StreamInterrupted
    );
    assert_eq!(
        GeminiDecoder::new("m", false)
            .on_event("{oops")
            .unwrap_err()
            .kind(),
        LlmErrorKind::MalformedResponse
    );
}

proptest::proptest! {
    #[test]
    fn no_input_makes_decoding_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
        let _ = gemini::decode_response(&body, "m");
        let _ = GeminiDecoder::new("m", true).on_event(&String::from_utf8_lossy(&body));
    }

    #[test]
    fn truncated_samples_never_panic(cut in 0usize..2000) {
        for sample in [fixture("response_text.json"), fixture("response_function_call.json"), fixture("stream_function_call.sse")] {
            let end = sample.floor_char_boundary(cut.min(sample.len()));
            let _ = gemini::decode_response(&sample.as_bytes()[..end], "m");
            let mut state = GeminiDecoder::new("m", true);
            for data in sse_data(&sample[..end]) {
                let _ = state.on_event(&data);
            }
            let _ = state.finish();
        }
    }
}
