//! Translation and parsing cost of the Anthropic and Gemini clients, against OpenAI's own
//! format (no translation) as the baseline.
//!
//! - `per_call`: encode a 2 KiB conversation and decode a 1 KiB answer.
//! - `stream_events`: decode one text-delta event into a chunk.
//! - `sse_stream`: parse a whole 200-event stream body (SSE framing + decoding).
//!
//! Run with `cargo bench -p brace-providers --bench providers -- --warm-up-time 1 --measurement-time 2`.

use std::hint::black_box;

use brace_llm::{ChatChunk, ChatCompletion, ChatRequest, Message, Tool};
use brace_providers::anthropic::{self, RequestOptions};
use brace_providers::gemini;
use brace_providers::sse::SseParser;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

const SENTENCE: &str = "The quick brown fox jumps over the lazy dog while the cat watches. ";

fn text(bytes: usize) -> String {
    SENTENCE.repeat(bytes / SENTENCE.len() + 1)[..bytes].to_owned()
}

/// A conversation of about 2 KiB of text in 8 messages, with one tool.
fn conversation() -> ChatRequest {
    let mut messages = vec![Message::system(text(256))];
    for _ in 0..3 {
        messages.push(Message::user(text(300)));
        messages.push(Message::assistant(text(300)));
    }
    messages.push(Message::user(text(200)));
    ChatRequest::new("model", messages)
        .with_max_tokens(512)
        .with_temperature(0.7)
        .with_tools(vec![Tool::function(
            "get_weather",
            "Get the weather",
            json!({"type": "object", "properties": {"location": {"type": "string"}}}),
        )])
}

fn answers() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let answer = text(1024);
    let openai = serde_json::to_vec(&json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 500, "completion_tokens": 250, "total_tokens": 750}
    }))
    .unwrap();
    let anthropic = serde_json::to_vec(&json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": answer}], "stop_reason": "end_turn",
        "stop_sequence": null, "usage": {"input_tokens": 500, "output_tokens": 250}
    }))
    .unwrap();
    let gemini = serde_json::to_vec(&json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": answer}]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 500, "candidatesTokenCount": 250, "totalTokenCount": 750},
        "modelVersion": "gemini-2.5-flash", "responseId": "r1"
    }))
    .unwrap();
    (openai, anthropic, gemini)
}

fn per_call(c: &mut Criterion) {
    let request = conversation();
    let (openai, anthropic_answer, gemini_answer) = answers();
    let options = RequestOptions {
        model: "claude-sonnet-4-5",
        default_max_tokens: 1024,
    };
    let mut group = c.benchmark_group("per_call");
    group.throughput(Throughput::Elements(1));
    group.bench_function("openai_passthrough", |b| {
        b.iter(|| {
            let body = serde_json::to_vec(black_box(&request)).unwrap();
            let completion: ChatCompletion = serde_json::from_slice(black_box(&openai)).unwrap();
            (body, completion)
        });
    });
    group.bench_function("anthropic", |b| {
        b.iter(|| {
            let body = anthropic::encode_request(black_box(&request), options).unwrap();
            let completion = anthropic::decode_response(black_box(&anthropic_answer)).unwrap();
            (body, completion)
        });
    });
    group.bench_function("gemini", |b| {
        b.iter(|| {
            let body = gemini::encode_request(black_box(&request)).unwrap();
            let completion = gemini::decode_response(black_box(&gemini_answer), "m").unwrap();
            (body, completion)
        });
    });
    group.finish();
}

fn stream_events(c: &mut Criterion) {
    let openai = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":" brown fox"},"finish_reason":null}]}"#;
    let anthropic_event = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" brown fox"}}"#;
    let gemini_event = r#"{"candidates":[{"content":{"parts":[{"text":" brown fox"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8},"modelVersion":"gemini-2.5-flash","responseId":"r1"}"#;
    let mut anthropic_state = anthropic::AnthropicDecoder::new(false);
    anthropic_state
        .on_event(r#"{"type":"message_start","message":{"id":"msg_1","model":"claude","usage":{"input_tokens":1}}}"#)
        .unwrap();
    let mut gemini_state = gemini::GeminiDecoder::new("gemini-2.5-flash", false);

    let mut group = c.benchmark_group("stream_events");
    group.throughput(Throughput::Elements(1));
    group.bench_function("openai_passthrough", |b| {
        b.iter(|| serde_json::from_str::<ChatChunk>(black_box(openai)).unwrap());
    });
    group.bench_function("anthropic", |b| {
        b.iter(|| {
            anthropic_state
                .on_event(black_box(anthropic_event))
                .unwrap()
        });
    });
    group.bench_function("gemini", |b| {
        b.iter(|| gemini_state.on_event(black_box(gemini_event)).unwrap());
    });
    group.finish();
}

const EVENTS: u64 = 200;

fn sse_bodies() -> (String, String, String) {
    let mut openai = String::new();
    let mut anthropic_body = String::from(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":1}}}\n\n",
    );
    let mut gemini_body = String::new();
    for _ in 0..EVENTS {
        openai.push_str("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" brown fox\"},\"finish_reason\":null}]}\n\n");
        anthropic_body.push_str("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" brown fox\"}}\n\n");
        gemini_body.push_str("data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" brown fox\"}],\"role\":\"model\"},\"index\":0}],\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r1\"}\r\n\r\n");
    }
    (openai, anthropic_body, gemini_body)
}

fn sse_stream(c: &mut Criterion) {
    let (openai, anthropic_body, gemini_body) = sse_bodies();
    let mut group = c.benchmark_group("sse_stream");
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("openai_passthrough", |b| {
        b.iter(|| {
            let mut parser = SseParser::new();
            parser.push(black_box(openai.as_bytes()));
            let mut chunks = 0;
            while let Some(event) = parser.next_event().unwrap() {
                black_box(serde_json::from_str::<ChatChunk>(&event.data).unwrap());
                chunks += 1;
            }
            chunks
        });
    });
    group.bench_function("anthropic", |b| {
        b.iter(|| {
            let mut parser = SseParser::new();
            let mut state = anthropic::AnthropicDecoder::new(false);
            parser.push(black_box(anthropic_body.as_bytes()));
            let mut chunks = 0;
            while let Some(event) = parser.next_event().unwrap() {
                black_box(state.on_event(&event.data).unwrap());
                chunks += 1;
            }
            chunks
        });
    });
    group.bench_function("gemini", |b| {
        b.iter(|| {
            let mut parser = SseParser::new();
            let mut state = gemini::GeminiDecoder::new("gemini-2.5-flash", false);
            parser.push(black_box(gemini_body.as_bytes()));
            let mut chunks = 0;
            while let Some(event) = parser.next_event().unwrap() {
                black_box(state.on_event(&event.data).unwrap());
                chunks += 1;
            }
            chunks
        });
    });
    group.finish();
}

criterion_group!(benches, per_call, stream_events, sse_stream);
criterion_main!(benches);
