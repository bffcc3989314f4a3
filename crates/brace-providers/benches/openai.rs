//! The OpenAI client's CPU cost per call, without the network.
//!
//! - `openai_call`: building the HTTP request for a 2 KiB conversation and reading a 1 KiB
//!   answer, against the baseline of plain serde_json doing the same (de)serialization.
//! - `openai_sse`: streamed chunks per second — the SSE parser alone, the parser and
//!   OpenAI decoder, and the whole `ChunkStream` over in-memory bytes — against the
//!   baseline of deserializing the same chunks from ready-split JSON.
//!
//! Run with: `cargo bench -p brace-providers --bench openai -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use brace_llm::{ChatChunk, ChatCompletion, ChatRequest, LlmError, Message};
use brace_providers::ProviderApi;
use brace_providers::openai::{OpenAiConfig, OpenAiDecoder, OpenAiWire, parse_completion};
use brace_providers::provider::ApiKey;
use brace_providers::sse::{ChunkStream, SseDecoder, SseEvents, SseParser};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;

fn conversation() -> ChatRequest {
    let sentence = "Could you explain how the circuit breaker decides to open? ";
    let messages = vec![
        Message::system("You are a helpful assistant that answers concisely and precisely."),
        Message::user(sentence.repeat(5)),
        Message::assistant(sentence.repeat(6)),
        Message::user(sentence.repeat(5)),
        Message::assistant(sentence.repeat(6)),
        Message::user(sentence.repeat(6)),
    ];
    let request = ChatRequest::new("gpt-4o", messages)
        .with_max_tokens(512)
        .with_temperature(0.3);
    let size = serde_json::to_vec(&request).unwrap().len();
    assert!((1800..2400).contains(&size), "conversation is {size} bytes");
    request
}

fn answer() -> Vec<u8> {
    let text = "The breaker counts failures in a sliding window. ".repeat(20);
    let body = format!(
        r#"{{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion","created":1741569952,"model":"gpt-4o-2024-08-06","choices":[{{"index":0,"message":{{"role":"assistant","content":{},"refusal":null,"annotations":[]}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":419,"completion_tokens":200,"total_tokens":619,"prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}},"service_tier":"default","system_fingerprint":"fp_fc9f1d7035"}}"#,
        serde_json::to_string(&text).unwrap()
    );
    assert!((1000..1700).contains(&body.len()));
    body.into_bytes()
}

fn call(c: &mut Criterion) {
    let wire = OpenAiWire::new(
        OpenAiConfig::openai(ApiKey::new("sk-bench-0123456789"))
            .with_organization("org-bench")
            .map_client(|p| p.with_model("gpt-4o", "gpt-4o-2024-08-06")),
    )
    .unwrap();
    let request = conversation();
    let body = answer();
    let mut group = c.benchmark_group("openai_call");
    group.bench_function("baseline_serde_json", |b| {
        b.iter(|| {
            let out = serde_json::to_vec(black_box(&request)).unwrap();
            let completion: ChatCompletion = serde_json::from_slice(black_box(&body)).unwrap();
            black_box((out, completion));
        });
    });
    group.bench_function("translate_and_parse", |b| {
        b.iter(|| {
            let http = wire.chat_request(black_box(&request)).unwrap();
            let completion = parse_completion(black_box(&body)).unwrap();
            black_box((http, completion));
        });
    });
    group.bench_function("translate_only", |b| {
        b.iter(|| black_box(wire.chat_request(black_box(&request)).unwrap()));
    });
    group.bench_function("parse_only", |b| {
        b.iter(|| black_box(parse_completion(black_box(&body)).unwrap()));
    });
    group.finish();
}

const CHUNKS: usize = 256;

/// A realistic stream: a role chunk, text chunks of a few tokens, a finish chunk, [DONE].
fn stream_body() -> (Vec<u8>, Vec<String>) {
    let chunk = |delta: &str, finish: &str| {
        format!(
            r#"{{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]}}"#
        )
    };
    let mut events = vec![chunk(r#"{"role":"assistant","content":""}"#, "null")];
    for i in 0..CHUNKS - 2 {
        events.push(chunk(&format!(r#"{{"content":" token{i}"}}"#), "null"));
    }
    events.push(chunk("{}", "\"stop\""));
    let mut body = Vec::new();
    for event in &events {
        body.extend_from_slice(b"data: ");
        body.extend_from_slice(event.as_bytes());
        body.extend_from_slice(b"\n\n");
    }
    body.extend_from_slice(b"data: [DONE]\n\n");
    (body, events)
}

fn sse(c: &mut Criterion) {
    let (body, events) = stream_body();
    // As a network would deliver it: pieces that split events anywhere.
    let pieces: Vec<Bytes> = body.chunks(1400).map(Bytes::copy_from_slice).collect();
    let mut group = c.benchmark_group("openai_sse");
    group.throughput(Throughput::Elements(CHUNKS as u64));
    group.bench_function("baseline_serde_json_chunks", |b| {
        b.iter(|| {
            for event in &events {
                black_box(serde_json::from_str::<ChatChunk>(black_box(event)).unwrap());
            }
        });
    });
    group.bench_function("sse_parser_only", |b| {
        b.iter(|| {
            let mut parser = SseParser::new();
            let mut count = 0;
            for piece in &pieces {
                parser.push(piece);
                while let Some(event) = parser.next_event().unwrap() {
                    count += 1;
                    black_box(event);
                }
            }
            while parser.finish().unwrap().is_some() {
                count += 1;
            }
            assert_eq!(count, CHUNKS + 1);
        });
    });
    group.bench_function("parser_and_decoder", |b| {
        b.iter(|| {
            let mut parser = SseParser::new();
            let mut decoder = OpenAiDecoder::new();
            let mut out = Vec::with_capacity(4);
            let mut count = 0;
            for piece in &pieces {
                parser.push(piece);
                while let Some(event) = parser.next_event().unwrap() {
                    let _ = decoder.decode(&event, &mut out);
                    count += out.len();
                    black_box(out.drain(..).count());
                }
            }
            assert_eq!(count, CHUNKS);
        });
    });
    group.bench_function("chunk_stream", |b| {
        b.iter(|| {
            let bytes = futures::stream::iter(pieces.iter().cloned().map(Ok::<_, LlmError>));
            let stream = ChunkStream::new(SseEvents::new(bytes), OpenAiDecoder::new());
            let count = futures::executor::block_on(stream.map(|item| item.unwrap()).count());
            assert_eq!(count, CHUNKS);
        });
    });
    group.finish();
}

criterion_group!(benches, call, sse);
criterion_main!(benches);
