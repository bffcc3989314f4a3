//! The wire formats the simulated HTTP provider speaks: requests read, answers, stream
//! events and error bodies written as OpenAI, Anthropic and Gemini write them.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use super::behavior::{Failure, WireFormat};
use super::script::{ReplyPlan, default_message};
use super::service::{chunks, completion};
use brace_llm::error::LlmErrorKind;
use brace_llm::types::{ChatRequest, FinishReason, Message};

/// One server-sent event.
#[derive(Debug, Clone)]
pub(crate) struct WireEvent {
    /// The `event:` line (Anthropic), if any.
    pub(crate) name: Option<&'static str>,
    /// The `data:` line.
    pub(crate) data: String,
    /// `true` if it carries content (the first such event waits the first-token delay).
    pub(crate) content: bool,
}

impl WireEvent {
    fn new(name: Option<&'static str>, data: &Value, content: bool) -> Self {
        Self {
            name,
            data: data.to_string(),
            content,
        }
    }

    /// The event as SSE bytes.
    pub(crate) fn to_bytes(&self) -> Bytes {
        let mut out = String::with_capacity(self.data.len() + 32);
        if let Some(name) = self.name {
            let _ = writeln!(out, "event: {name}");
        }
        let _ = write!(out, "data: {}\n\n", self.data);
        Bytes::from(out)
    }
}

// ===== requests =====

/// Reads a request in `format` into a [`ChatRequest`]. `model` and `stream` come from the
/// URL for Gemini.
pub(crate) fn parse_request(
    format: WireFormat,
    body: &[u8],
    model: Option<&str>,
    stream: bool,
) -> Result<ChatRequest, String> {
    match format {
        WireFormat::OpenAi => serde_json::from_slice(body).map_err(|err| err.to_string()),
        WireFormat::Anthropic => {
            let value: Value = serde_json::from_slice(body).map_err(|err| err.to_string())?;
            let model = value
                .get("model")
                .and_then(Value::as_str)
                .ok_or("model: Field required")?;
            let mut messages = Vec::new();
            if let Some(system) = value.get("system") {
                messages.push(Message::system(anthropic_text(system)));
            }
            for message in value
                .get("messages")
                .and_then(Value::as_array)
                .ok_or("messages: Field required")?
            {
                let text = message
                    .get("content")
                    .map(anthropic_text)
                    .unwrap_or_default();
                messages.push(match message.get("role").and_then(Value::as_str) {
                    Some("assistant") => Message::assistant(text),
                    _ => Message::user(text),
                });
            }
            let mut request = ChatRequest::new(model, messages).with_stream(
                value
                    .get("stream")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            );
            request.max_tokens = value
                .get("max_tokens")
                .and_then(Value::as_u64)
                .map(|max| u32::try_from(max).unwrap_or(u32::MAX));
            Ok(request)
        }
        WireFormat::Gemini => {
            let value: Value = serde_json::from_slice(body).map_err(|err| err.to_string())?;
            let mut messages = Vec::new();
            if let Some(system) = value.get("systemInstruction") {
                messages.push(Message::system(gemini_text(system)));
            }
            for content in value
                .get("contents")
                .and_then(Value::as_array)
                .ok_or("contents: required field missing")?
            {
                let text = gemini_text(content);
                messages.push(match content.get("role").and_then(Value::as_str) {
                    Some("model") => Message::assistant(text),
                    _ => Message::user(text),
                });
            }
            let mut request =
                ChatRequest::new(model.unwrap_or("gemini"), messages).with_stream(stream);
            request.max_tokens = value
                .pointer("/generationConfig/maxOutputTokens")
                .and_then(Value::as_u64)
                .map(|max| u32::try_from(max).unwrap_or(u32::MAX));
            Ok(request)
        }
    }
}

fn anthropic_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|block| block.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn gemini_text(content: &Value) -> String {
    content
        .get("parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|part| part.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("")
}

// ===== answers =====

fn anthropic_stop_reason(reason: &FinishReason) -> &str {
    match reason {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls | FinishReason::FunctionCall => "tool_use",
        FinishReason::ContentFilter => "refusal",
        FinishReason::Other(other) => other,
    }
}

fn gemini_finish_reason(reason: &FinishReason) -> &str {
    match reason {
        FinishReason::Length => "MAX_TOKENS",
        FinishReason::ContentFilter => "SAFETY",
        FinishReason::Other(other) => other,
        FinishReason::Stop | FinishReason::ToolCalls | FinishReason::FunctionCall => "STOP",
    }
}

fn gemini_usage(plan: &ReplyPlan) -> Value {
    json!({
        "promptTokenCount": plan.usage.prompt_tokens,
        "candidatesTokenCount": plan.usage.completion_tokens,
        "totalTokenCount": plan.usage.total_tokens,
    })
}

/// Anthropic's content block: the whole answer, or the empty block a stream starts with.
fn anthropic_block(plan: &ReplyPlan, whole: bool) -> Value {
    match &plan.tool_call {
        Some((id, name)) => {
            let input = if whole {
                serde_json::from_str(&plan.text()).unwrap_or_else(|_| json!({}))
            } else {
                json!({})
            };
            json!({"type": "tool_use", "id": id.replace("call_", "toolu_"), "name": name, "input": input})
        }
        None => json!({"type": "text", "text": if whole { plan.text() } else { String::new() }}),
    }
}

/// Gemini's part: `text`, or a whole function call.
fn gemini_part(plan: &ReplyPlan, text: &str) -> Value {
    match &plan.tool_call {
        Some((_, name)) => json!({"functionCall": {
            "name": name,
            "args": serde_json::from_str::<Value>(text).unwrap_or_else(|_| json!({})),
        }}),
        None => json!({"text": text}),
    }
}

/// The whole JSON answer of a plan in `format`.
pub(crate) fn json_body(format: WireFormat, plan: &ReplyPlan) -> String {
    match format {
        WireFormat::OpenAi => serde_json::to_string(&completion(plan)).unwrap_or_default(),
        WireFormat::Anthropic => json!({
            "id": format!("msg_sim_{}", plan.call),
            "type": "message",
            "role": "assistant",
            "model": plan.model,
            "content": [anthropic_block(plan, true)],
            "stop_reason": anthropic_stop_reason(&plan.finish_reason),
            "stop_sequence": null,
            "usage": {
                "input_tokens": plan.usage.prompt_tokens,
                "output_tokens": plan.usage.completion_tokens,
            },
        })
        .to_string(),
        WireFormat::Gemini => json!({
            "candidates": [{
                "content": {"parts": [gemini_part(plan, &plan.text())], "role": "model"},
                "finishReason": gemini_finish_reason(&plan.finish_reason),
                "index": 0,
            }],
            "usageMetadata": gemini_usage(plan),
            "modelVersion": plan.model,
            "responseId": plan.id,
        })
        .to_string(),
    }
}

/// The stream events of a plan in `format`, before timing and faults.
pub(crate) fn stream_events(format: WireFormat, plan: &ReplyPlan) -> Vec<WireEvent> {
    match format {
        WireFormat::OpenAi => chunks(plan)
            .iter()
            .map(|chunk| WireEvent {
                name: None,
                data: serde_json::to_string(chunk).unwrap_or_default(),
                content: chunk.has_content(),
            })
            .collect(),
        WireFormat::Anthropic => {
            let mut events = vec![
                WireEvent::new(
                    Some("message_start"),
                    &json!({"type": "message_start", "message": {
                        "id": format!("msg_sim_{}", plan.call),
                        "type": "message",
                        "role": "assistant",
                        "model": plan.model,
                        "content": [],
                        "stop_reason": null,
                        "stop_sequence": null,
                        "usage": {"input_tokens": plan.usage.prompt_tokens, "output_tokens": 1},
                    }}),
                    false,
                ),
                WireEvent::new(
                    Some("content_block_start"),
                    &json!({"type": "content_block_start", "index": 0,
                            "content_block": anthropic_block(plan, false)}),
                    plan.tool_call.is_some(),
                ),
                WireEvent::new(Some("ping"), &json!({"type": "ping"}), false),
            ];
            events.extend(plan.pieces.iter().map(|piece| {
                let delta = if plan.tool_call.is_some() {
                    json!({"type": "input_json_delta", "partial_json": piece})
                } else {
                    json!({"type": "text_delta", "text": piece})
                };
                WireEvent::new(
                    Some("content_block_delta"),
                    &json!({"type": "content_block_delta", "index": 0, "delta": delta}),
                    !piece.is_empty(),
                )
            }));
            events.push(WireEvent::new(
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": 0}),
                false,
            ));
            events.push(WireEvent::new(
                Some("message_delta"),
                &json!({"type": "message_delta",
                        "delta": {"stop_reason": anthropic_stop_reason(&plan.finish_reason),
                                  "stop_sequence": null},
                        "usage": {"output_tokens": plan.usage.completion_tokens}}),
                false,
            ));
            events.push(WireEvent::new(
                Some("message_stop"),
                &json!({"type": "message_stop"}),
                false,
            ));
            events
        }
        WireFormat::Gemini => {
            // Gemini sends a function call whole, in one event.
            let whole;
            let pieces: &[String] = if plan.tool_call.is_some() {
                whole = [plan.text()];
                &whole
            } else {
                &plan.pieces
            };
            let last = pieces.len().saturating_sub(1);
            let pieces: Vec<&str> = if pieces.is_empty() {
                vec![""]
            } else {
                pieces.iter().map(String::as_str).collect()
            };
            pieces
                .into_iter()
                .enumerate()
                .map(|(index, piece)| {
                    let mut candidate = json!({
                        "content": {"parts": [gemini_part(plan, piece)], "role": "model"},
                        "index": 0,
                    });
                    if index == last {
                        candidate["finishReason"] =
                            gemini_finish_reason(&plan.finish_reason).into();
                    }
                    WireEvent::new(
                        None,
                        &json!({
                            "candidates": [candidate],
                            "usageMetadata": gemini_usage(plan),
                            "modelVersion": plan.model,
                            "responseId": plan.id,
                        }),
                        !piece.is_empty() || plan.tool_call.is_some(),
                    )
                })
                .collect()
        }
    }
}

/// An event that is not valid JSON, shaped like the format's own.
pub(crate) fn malformed_event(format: WireFormat) -> Bytes {
    Bytes::from_static(match format {
        WireFormat::OpenAi => b"data: {\"id\":\"chatcmpl-sim-broken\",\"choices\":[{\"delta\":\n\n",
        WireFormat::Anthropic => {
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\n\n"
        }
        WireFormat::Gemini => b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\n\n",
    })
}

/// The in-band error event of a stream in `format`.
pub(crate) fn error_event(format: WireFormat, failure: &Failure) -> Bytes {
    let body = error_value(format, failure);
    let name = (format == WireFormat::Anthropic).then_some("error");
    WireEvent::new(name, &body, false).to_bytes()
}

// ===== errors =====

/// The error body `format`'s provider sends for `failure`.
pub(crate) fn error_body(format: WireFormat, failure: &Failure) -> String {
    error_value(format, failure).to_string()
}

#[allow(clippy::too_many_lines)]
fn error_value(format: WireFormat, failure: &Failure) -> Value {
    use LlmErrorKind as K;
    let kind = failure.kind;
    let status = failure.status_for(format).unwrap_or(500);
    let message = failure
        .message
        .clone()
        .unwrap_or_else(|| match (format, kind) {
            (WireFormat::Anthropic, K::ContentFiltered) => {
                "Output blocked by content_filter policy (simulated)".to_owned()
            }
            (WireFormat::Gemini, K::Auth) => {
                "API key not valid. Please pass a valid API key.".to_owned()
            }
            (WireFormat::Gemini, K::ContextLengthExceeded) => {
                "The input token count exceeds the maximum number of tokens allowed (simulated)"
                    .to_owned()
            }
            _ => default_message(kind).to_owned(),
        });
    match format {
        WireFormat::OpenAi => {
            let (kind_name, code): (&str, Value) = match kind {
                K::RateLimited => ("requests", "rate_limit_exceeded".into()),
                K::QuotaExhausted => ("insufficient_quota", "insufficient_quota".into()),
                K::Auth => ("invalid_request_error", "invalid_api_key".into()),
                K::ContextLengthExceeded => {
                    ("invalid_request_error", "context_length_exceeded".into())
                }
                K::ContentFiltered => ("invalid_request_error", "content_filter".into()),
                K::ModelNotFound => ("invalid_request_error", "model_not_found".into()),
                K::BadRequest | K::Cancelled => ("invalid_request_error", Value::Null),
                _ => ("server_error", Value::Null),
            };
            json!({"error": {"message": message, "type": kind_name, "param": null, "code": code}})
        }
        WireFormat::Anthropic => {
            let kind_name = match kind {
                K::RateLimited => "rate_limit_error",
                K::QuotaExhausted => "billing_error",
                K::Overloaded => "overloaded_error",
                K::Auth => "authentication_error",
                K::ModelNotFound => "not_found_error",
                K::Timeout => "timeout_error",
                K::BadRequest | K::ContextLengthExceeded | K::ContentFiltered | K::Cancelled => {
                    "invalid_request_error"
                }
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind_name, "message": message}})
        }
        WireFormat::Gemini => {
            let status_name = match kind {
                K::RateLimited | K::QuotaExhausted => "RESOURCE_EXHAUSTED",
                K::Overloaded => "UNAVAILABLE",
                K::Timeout => "DEADLINE_EXCEEDED",
                K::ModelNotFound => "NOT_FOUND",
                K::Cancelled => "CANCELLED",
                K::Auth | K::BadRequest | K::ContextLengthExceeded | K::ContentFiltered => {
                    "INVALID_ARGUMENT"
                }
                _ => "INTERNAL",
            };
            let mut details = Vec::new();
            if kind == K::Auth {
                details.push(json!({
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                }));
            }
            if let Some(delay) = failure.retry_after {
                details.push(json!({
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": gemini_delay(delay),
                }));
            }
            let mut error = json!({"code": status, "message": message, "status": status_name});
            if !details.is_empty() {
                error["details"] = Value::Array(details);
            }
            json!({"error": error})
        }
    }
}

/// `20s`, `1.5s`: Gemini's `retryDelay`.
fn gemini_delay(delay: Duration) -> String {
    if delay.subsec_millis() == 0 {
        format!("{}s", delay.as_secs())
    } else {
        format!("{}.{:03}s", delay.as_secs(), delay.subsec_millis())
    }
}

/// The rate-limit headers `format`'s provider sends with `failure`.
pub(crate) fn error_headers(format: WireFormat, failure: &Failure) -> Vec<(&'static str, String)> {
    let mut headers = Vec::new();
    let Some(delay) = failure.retry_after else {
        return headers;
    };
    if format == WireFormat::Gemini {
        // Gemini says it in the body (`RetryInfo`).
        return headers;
    }
    headers.push(("retry-after", delay.as_secs_f64().ceil().to_string()));
    if format == WireFormat::OpenAi {
        headers.push(("retry-after-ms", delay.as_millis().to_string()));
    }
    headers
}

/// The models list (`GET /v1/models`).
pub(crate) fn models_body(model: &str) -> String {
    json!({"object": "list", "data": [
        {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "brace-sim"}
    ]})
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use brace_llm::types::Role;

    #[test]
    fn anthropic_requests_read_system_and_blocks() {
        let body = br#"{"model":"claude","max_tokens":5,"system":"be brief",
            "messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#;
        let request = parse_request(WireFormat::Anthropic, body, None, false).unwrap();
        assert_eq!(request.model, "claude");
        assert_eq!(request.max_tokens, Some(5));
        assert_eq!(request.messages[0].role, Role::System);
        assert_eq!(request.messages[1].text(), "hi");
    }

    #[test]
    fn gemini_requests_take_the_model_from_the_url() {
        let body = br#"{"contents":[{"role":"user","parts":[{"text":"hello"}]}]}"#;
        let request = parse_request(WireFormat::Gemini, body, Some("gemini-2.0"), true).unwrap();
        assert_eq!(request.model, "gemini-2.0");
        assert!(request.is_stream());
        assert_eq!(request.messages[0].text(), "hello");
    }

    #[test]
    fn requests_missing_fields_say_what_is_missing() {
        let err =
            parse_request(WireFormat::Anthropic, br#"{"model":"c"}"#, None, false).unwrap_err();
        assert!(err.contains("messages"), "{err}");
        let err = parse_request(WireFormat::Gemini, b"{}", Some("g"), false).unwrap_err();
        assert!(err.contains("contents"), "{err}");
    }
}
