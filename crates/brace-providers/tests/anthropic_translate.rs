//! Anthropic Messages translation, both directions, on samples written from Anthropic's
//! public API reference (`brace-llm/tests/fixtures/anthropic/`).

use std::path::Path;

use brace_llm::{
    ChatChunk, ChatRequest, Content, ContentPart, FinishReason, LlmErrorKind, Message, Role,
    StreamAccumulator, Tool,
};
use brace_providers::anthropic::{self, AnthropicDecoder, RequestOptions};
use serde_json::{Value, json};

fn fixture(path: &str) -> String {
    // brace-llm's fixtures: see `fixtures()` in `anthropic_support`.
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../brace-llm/tests/fixtures/anthropic")
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

const OPTIONS: RequestOptions<'static> = RequestOptions {
    model: "claude-sonnet-4-5-20250929",
    default_max_tokens: 4096,
};

fn encode(request: &ChatRequest) -> Value {
    anthropic::request_to_value(request, OPTIONS).unwrap()
}

fn replay(events: &[String], include_usage: bool) -> (Vec<ChatChunk>, AnthropicDecoder) {
    let mut state = AnthropicDecoder::new(include_usage);
    let chunks = events
        .iter()
        .filter_map(|data| state.on_event(data).unwrap())
        .collect();
    (chunks, state)
}

#[test]
fn full_request_translates_to_the_messages_format() {
    let request: ChatRequest = serde_json::from_str(&fixture("chat_request.json")).unwrap();
    let expected: Value = serde_json::from_str(&fixture("messages_request.json")).unwrap();
    assert_eq!(encode(&request), expected);
    // The byte form is the same document.
    let bytes = anthropic::encode_request(&request, OPTIONS).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), expected);
}

#[test]
fn openai_only_fields_are_not_sent() {
    let request: ChatRequest = serde_json::from_str(&fixture("chat_request.json")).unwrap();
    let body = encode(&request);
    for field in [
        "logprobs",
        "presence_penalty",
        "parallel_tool_calls",
        "user",
        "stop",
        "n",
    ] {
        assert!(body.get(field).is_none(), "{field} leaked into {body}");
    }
}

#[test]
fn max_tokens_falls_back_on_the_configured_default() {
    let request = ChatRequest::new("claude", vec![Message::user("Hi")]);
    assert_eq!(encode(&request)["max_tokens"], 4096);
    let mut request = request.with_max_tokens(10);
    request.options_mut().max_completion_tokens = Some(20);
    assert_eq!(encode(&request)["max_tokens"], 20);
}

#[test]
fn consecutive_same_role_messages_merge_into_one_turn() {
    let request = ChatRequest::new(
        "claude",
        vec![
            Message::user("one"),
            Message::user("two"),
            Message::assistant("three"),
        ],
    );
    let body = encode(&request);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "three"}]},
        ])
    );
    assert!(body.get("system").is_none());
    assert!(body.get("stream").is_none());
}

#[test]
fn tool_choice_maps_each_openai_form() {
    let tools = vec![Tool::function("f", "does f", json!({"type": "object"}))];
    let cases = [
        (json!("auto"), json!({"type": "auto"})),
        (json!("none"), json!({"type": "none"})),
        (json!("required"), json!({"type": "any"})),
        (
            json!({"type": "function", "function": {"name": "f"}}),
            json!({"type": "tool", "name": "f"}),
        ),
    ];
    for (choice, expected) in cases {
        let mut request =
            ChatRequest::new("claude", vec![Message::user("Hi")]).with_tools(tools.clone());
        request.options_mut().tool_choice = Some(choice);
        assert_eq!(encode(&request)["tool_choice"], expected);
    }
    // Without tools, tool_choice means nothing and is not sent.
    let mut request = ChatRequest::new("claude", vec![Message::user("Hi")]);
    request.options_mut().tool_choice = Some(json!("auto"));
    assert!(encode(&request).get("tool_choice").is_none());
}

#[test]
fn temperature_is_clamped_to_anthropics_range() {
    let request = ChatRequest::new("claude", vec![Message::user("Hi")]).with_temperature(1.6);
    assert_eq!(encode(&request)["temperature"], 1.0);
}

#[test]
fn unknown_content_parts_pass_through_and_cache_control_is_kept() {
    let document = json!({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}});
    let mut text = ContentPart::text("cached");
    if let ContentPart::Text { extra, .. } = &mut text {
        extra.insert("cache_control".into(), json!({"type": "ephemeral"}));
    }
    let message = Message {
        content: Some(Content::Parts(vec![
            text,
            ContentPart::Other(document.clone()),
        ])),
        ..Message::user("")
    };
    let body = encode(&ChatRequest::new("claude", vec![message]));
    assert_eq!(
        body["messages"][0]["content"],
        json!([{"type": "text", "text": "cached", "cache_control": {"type": "ephemeral"}}, document])
    );
}

#[test]
fn a_cached_system_prompt_stays_in_blocks() {
    let mut cached = ContentPart::text("Long shared instructions.");
    if let ContentPart::Text { extra, .. } = &mut cached {
        extra.insert("cache_control".into(), json!({"type": "ephemeral"}));
    }
    let system = Message {
        content: Some(Content::Parts(vec![cached])),
        ..Message::system("")
    };
    let request = ChatRequest::new(
        "claude",
        vec![system, Message::system("Be brief."), Message::user("Hi")],
    );
    assert_eq!(
        encode(&request)["system"],
        json!([
            {"type": "text", "text": "Long shared instructions.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be brief."},
        ])
    );
}

#[test]
fn bad_tool_arguments_and_non_base64_data_urls_are_bad_requests() {
    let mut assistant = Message::assistant("");
    assistant.tool_calls = Some(vec![brace_llm::ToolCall {
        id: "t".into(),
        kind: "function".into(),
        function: brace_llm::FunctionCall {
            name: "f".into(),
            arguments: "{not json".into(),
        },
    }]);
    let err =
        anthropic::encode_request(&ChatRequest::new("c", vec![assistant]), OPTIONS).unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::BadRequest);

    let image = Message {
        content: Some(Content::Parts(vec![ContentPart::image_url(
            "data:image/png,rawbytes",
        )])),
        ..Message::user("")
    };
    let err = anthropic::encode_request(&ChatRequest::new("c", vec![image]), OPTIONS).unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::BadRequest);

    let tool = Message {
        tool_call_id: None,
        ..Message::tool("x", "result")
    };
    let err = anthropic::encode_request(&ChatRequest::new("c", vec![tool]), OPTIONS).unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::BadRequest);
}

#[test]
fn text_response_joins_text_blocks_skips_thinking_and_maps_usage() {
    let completion = anthropic::decode_response(fixture("response_text.json").as_bytes()).unwrap();
    assert_eq!(completion.id, "msg_013Zva2CMHLNnXjNJJKqJ2EF");
    assert_eq!(completion.model, "claude-sonnet-4-5-20250929");
    assert_eq!(completion.text(), "Hi! My name is Claude. How can I help?");
    let choice = &completion.choices[0];
    assert_eq!(choice.message.role, Role::Assistant);
    assert_eq!(choice.finish_reason, Some(FinishReason::Stop));
    assert!(choice.message.tool_calls.is_none());
    let usage = completion.usage.unwrap();
    // Cache reads count as prompt tokens, as OpenAI's cached tokens do.
    assert_eq!(usage.prompt_tokens, 2095 + 1024);
    assert_eq!(usage.completion_tokens, 503);
    assert_eq!(usage.total_tokens, 2095 + 1024 + 503);
    assert_eq!(usage.extra["prompt_tokens_details"]["cached_tokens"], 1024);
}

#[test]
fn tool_use_response_becomes_tool_calls_with_json_arguments() {
    let completion =
        anthropic::decode_response(fixture("response_tool_use.json").as_bytes()).unwrap();
    let choice = &completion.choices[0];
    assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(
        choice.message.text(),
        "I'll check the current weather in San Francisco for you."
    );
    let calls = choice.message.tool_calls.as_ref().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].id, "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(calls[0].kind, "function");
    assert_eq!(calls[0].function.name, "get_weather");
    let arguments: Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
    assert_eq!(
        arguments,
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
}

#[test]
fn refusal_is_a_content_filter_finish() {
    let completion =
        anthropic::decode_response(fixture("response_refusal.json").as_bytes()).unwrap();
    assert_eq!(
        completion.choices[0].finish_reason,
        Some(FinishReason::ContentFilter)
    );
    assert_eq!(completion.text(), "");
}

#[test]
fn every_stop_reason_maps() {
    for (reason, expected) in [
        ("end_turn", FinishReason::Stop),
        ("stop_sequence", FinishReason::Stop),
        ("max_tokens", FinishReason::Length),
        ("tool_use", FinishReason::ToolCalls),
        ("refusal", FinishReason::ContentFilter),
        ("pause_turn", FinishReason::Other("pause_turn".into())),
    ] {
        assert_eq!(anthropic::finish_reason(reason), expected, "{reason}");
    }
}

#[test]
fn malformed_and_error_bodies_are_errors_not_panics() {
    let err = anthropic::decode_response(b"{\"id\": 7").unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::MalformedResponse);
    let err = anthropic::decode_response(b"[1,2,3]").unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::MalformedResponse);
    let err = anthropic::decode_response(
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    )
    .unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Overloaded);
}

#[test]
fn response_round_trips_through_the_openai_format() {
    // Anthropic answer -> ChatCompletion -> the next request sends the same tool call back.
    let completion =
        anthropic::decode_response(fixture("response_tool_use.json").as_bytes()).unwrap();
    let assistant = completion.choices[0].message.clone();
    let request = ChatRequest::new(
        "claude",
        vec![
            Message::user("Weather in SF?"),
            assistant,
            Message::tool("toolu_01A09q90qw90lq917835lq9", "15 degrees"),
        ],
    );
    let body = encode(&request);
    let original: Value = serde_json::from_str(&fixture("response_tool_use.json")).unwrap();
    assert_eq!(body["messages"][1]["content"], original["content"]);
    assert_eq!(
        body["messages"][2]["content"],
        json!([{"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"}])
    );
}

#[test]
fn text_stream_becomes_role_content_and_finish_chunks() {
    let (chunks, state) = replay(&sse_data(&fixture("stream_text.sse")), false);
    assert_eq!(chunks[0].choices[0].delta.role, Some(Role::Assistant));
    assert!(
        chunks
            .iter()
            .all(|chunk| chunk.id == "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY")
    );
    assert!(chunks.iter().all(|chunk| chunk.model == "claude-opus-4-6"));
    let mut accumulator = StreamAccumulator::new();
    for chunk in &chunks {
        accumulator.push(chunk);
    }
    assert!(state.finish().is_ok());
    assert!(state.is_done());
    let completion = accumulator.finish().unwrap();
    assert_eq!(completion.text(), "Hello! How can I help today?");
    assert_eq!(
        completion.choices[0].finish_reason,
        Some(FinishReason::Stop)
    );
    assert!(completion.usage.is_none(), "usage was not asked for");
    assert_eq!(state.usage().prompt_tokens, 25);
    assert_eq!(state.usage().completion_tokens, 15);
}

#[test]
fn usage_chunk_comes_last_when_asked_for() {
    let (chunks, _) = replay(&sse_data(&fixture("stream_text.sse")), true);
    let last = chunks.last().unwrap();
    assert!(last.choices.is_empty());
    let usage = last.usage.as_ref().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (25, 15));
}

#[test]
fn tool_use_stream_assembles_tool_calls_and_skips_thinking() {
    let (chunks, state) = replay(&sse_data(&fixture("stream_tool_use.sse")), false);
    assert!(state.finish().is_ok());
    let mut accumulator = StreamAccumulator::new();
    for chunk in &chunks {
        accumulator.push(chunk);
    }
    let completion = accumulator.finish().unwrap();
    let choice = &completion.choices[0];
    assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(
        choice.message.text(),
        "Okay, let's check the weather for San Francisco, CA:"
    );
    let calls = choice.message.tool_calls.as_ref().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].id, "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(calls[0].function.name, "get_weather");
    let arguments: Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
    assert_eq!(
        arguments,
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
    // The tool call is numbered 0 although it is content block 2.
    let first_call = chunks
        .iter()
        .find_map(|chunk| chunk.choices[0].delta.tool_calls.as_ref())
        .unwrap();
    assert_eq!(first_call[0].index, 0);
}

#[test]
fn error_event_in_a_stream_is_an_overloaded_error() {
    let events = sse_data(&fixture("stream_error.sse"));
    let mut state = AnthropicDecoder::new(false);
    let mut text = String::new();
    let mut error = None;
    for data in &events {
        match state.on_event(data) {
            Ok(Some(chunk)) => {
                text.push_str(chunk.choices[0].delta.content.as_deref().unwrap_or(""));
            }
            Ok(None) => {}
            Err(err) => error = Some(err),
        }
    }
    assert_eq!(text, "Hello");
    let err = error.unwrap();
    assert_eq!(err.kind(), LlmErrorKind::Overloaded);
    assert_eq!(err.code(), Some("overloaded_error"));
    assert_eq!(err.message(), "Overloaded");
}

#[test]
fn error_event_types_map_to_kinds() {
    for (kind, expected) in [
        ("overloaded_error", LlmErrorKind::Overloaded),
        ("rate_limit_error", LlmErrorKind::RateLimited),
        ("api_error", LlmErrorKind::Server),
        ("authentication_error", LlmErrorKind::Auth),
        ("invalid_request_error", LlmErrorKind::BadRequest),
        ("something_new", LlmErrorKind::Server),
    ] {
        let data = json!({"type": "error", "error": {"type": kind, "message": "m"}}).to_string();
        let err = AnthropicDecoder::new(false).on_event(&data).unwrap_err();
        assert_eq!(err.kind(), expected, "{kind}");
    }
}

#[test]
fn a_stream_cut_before_its_end_is_interrupted() {
    let events = sse_data(&fixture("stream_text.sse"));
    let (_, state) = replay(&events[..5], false);
    let err = state.finish().unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::StreamInterrupted);
    let err = AnthropicDecoder::new(false).finish().unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::StreamInterrupted);
}

#[test]
fn malformed_stream_events_are_errors() {
    let mut state = AnthropicDecoder::new(false);
    for data in [
        "not json",
        "{}",
        r#"{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{"}}"#,
    ] {
        assert_eq!(
            state.on_event(data).unwrap_err().kind(),
            LlmErrorKind::MalformedResponse,
            "{data}"
        );
    }
}

#[test]
fn server_tool_blocks_and_their_input_are_skipped() {
    let mut state = AnthropicDecoder::new(false);
    let events = [
        r#"{"type":"message_start","message":{"id":"msg_1","model":"claude","usage":{"input_tokens":3}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{}}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"query\": \"weather\"}"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"content_block_start","index":1,"content_block":{"type":"web_search_tool_result","tool_use_id":"srvtoolu_1","content":[]}}"#,
        r#"{"type":"content_block_stop","index":1}"#,
    ];
    let chunks: Vec<ChatChunk> = events
        .iter()
        .filter_map(|data| state.on_event(data).unwrap())
        .collect();
    assert_eq!(chunks.len(), 1, "only the role chunk");
    assert!(chunks.iter().all(|chunk| !chunk.has_content()));
}

proptest::proptest! {
    #[test]
    fn no_input_makes_decoding_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
        let _ = anthropic::decode_response(&body);
        let _ = AnthropicDecoder::new(true).on_event(&String::from_utf8_lossy(&body));
    }

    #[test]
    fn truncated_samples_never_panic(cut in 0usize..2000) {
        for sample in [fixture("response_text.json"), fixture("response_tool_use.json"), fixture("stream_tool_use.sse")] {
            let end = sample.floor_char_boundary(cut.min(sample.len()));
            let _ = anthropic::decode_response(&sample.as_bytes()[..end]);
            let mut state = AnthropicDecoder::new(true);
            for data in sse_data(&sample[..end]) {
                let _ = state.on_event(&data);
            }
            let _ = state.finish();
        }
    }
}
