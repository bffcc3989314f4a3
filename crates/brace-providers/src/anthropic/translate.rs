//! Pure translation between the OpenAI chat format and Anthropic's Messages API.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::provider::unix_now;
use brace_llm::error::{LlmError, LlmErrorKind};
use brace_llm::types::{
    ChatCompletion, ChatRequest, Choice, Content, ContentPart, Extra, FinishReason, FunctionCall,
    Message, Role, ToolCall, Usage,
};

/// Request fields with no OpenAI equivalent that are passed through to Anthropic as they
/// came (anything else unknown is dropped: Anthropic refuses fields it does not know).
const PASS_THROUGH: [&str; 4] = ["top_k", "thinking", "metadata", "service_tier"];

/// What the translation needs besides the request itself.
#[derive(Debug, Clone, Copy)]
pub struct RequestOptions<'a> {
    /// The Anthropic model to ask (after model mapping).
    pub model: &'a str,
    /// `max_tokens` when the request sets no output limit (Anthropic requires one).
    pub default_max_tokens: u32,
}

// ===== ChatRequest -> Messages request =====

#[derive(Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<System<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<ToolDefinition<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum System<'a> {
    Text(String),
    /// Text blocks, when one carries `cache_control` (prompt caching).
    Blocks(Vec<Block<'a>>),
}

#[derive(Serialize)]
struct Turn<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Block<'a> {
    Known(KnownBlock<'a>),
    /// A part brace does not model, sent as it came (an Anthropic `document` block, say).
    Raw(&'a Value),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum KnownBlock<'a> {
    Text {
        text: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
    Image {
        source: ImageSource<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: ToolResultContent<'a>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Serialize)]
#[serde(untagged)]
enum ToolResultContent<'a> {
    Text(&'a str),
    Blocks(Vec<Block<'a>>),
}

#[derive(Serialize)]
struct ToolDefinition<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: Cow<'a, Value>,
}

/// A `data:` URL split into its media type and base64 payload.
pub(crate) fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (header, data) = rest.split_once(',')?;
    let media_type = header.strip_suffix(";base64")?;
    Some((
        if media_type.is_empty() {
            "application/octet-stream"
        } else {
            media_type
        },
        data,
    ))
}

/// A tool call's arguments (JSON text) as a JSON value; empty text is `{}`.
pub(crate) fn parse_arguments(arguments: &str) -> Result<Value, LlmError> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_str(arguments).map_err(|err| {
        LlmError::new(
            LlmErrorKind::BadRequest,
            format!("tool call arguments are not JSON: {err}"),
        )
    })
}

fn bad_request(message: impl Into<String>) -> LlmError {
    LlmError::new(LlmErrorKind::BadRequest, message)
}

fn image_block(url: &str) -> Result<Block<'_>, LlmError> {
    let source = if url.starts_with("data:") {
        let (media_type, data) = parse_data_url(url)
            .ok_or_else(|| bad_request("an image `data:` URL must be base64-encoded"))?;
        ImageSource::Base64 { media_type, data }
    } else {
        ImageSource::Url { url }
    };
    Ok(Block::Known(KnownBlock::Image { source }))
}

fn content_blocks<'a>(content: &'a Content, out: &mut Vec<Block<'a>>) -> Result<(), LlmError> {
    match content {
        Content::Text(text) => {
            if !text.is_empty() {
                out.push(Block::Known(KnownBlock::Text {
                    text,
                    cache_control: None,
                }));
            }
        }
        Content::Parts(parts) => {
            for part in parts {
                match part {
                    ContentPart::Text { text, extra } => {
                        if !text.is_empty() {
                            out.push(Block::Known(KnownBlock::Text {
                                text,
                                cache_control: extra.get("cache_control"),
                            }));
                        }
                    }
                    ContentPart::ImageUrl { image_url, .. } => {
                        out.push(image_block(&image_url.url)?);
                    }
                    ContentPart::Other(value) => out.push(Block::Raw(value)),
                }
            }
        }
    }
    Ok(())
}

/// The system prompt: its texts joined, or text blocks if one asks for caching.
fn system_prompt(blocks: Vec<Block<'_>>) -> Option<System<'_>> {
    if blocks.is_empty() {
        return None;
    }
    let cached = blocks.iter().any(|block| {
        matches!(
            block,
            Block::Known(KnownBlock::Text {
                cache_control: Some(_),
                ..
            })
        )
    });
    let texts: Vec<&str> = blocks
        .iter()
        .filter_map(|block| match block {
            Block::Known(KnownBlock::Text { text, .. }) => Some(*text),
            _ => None,
        })
        .collect();
    if cached || texts.len() != blocks.len() {
        Some(System::Blocks(blocks))
    } else {
        Some(System::Text(texts.join("\n\n")))
    }
}

fn push_turn<'a>(turns: &mut Vec<Turn<'a>>, role: &'static str, blocks: Vec<Block<'a>>) {
    match turns.last_mut() {
        // Anthropic wants user and assistant turns to alternate: consecutive messages of
        // one role (tool results, then the user's next words) become one turn.
        Some(last) if last.role == role => last.content.extend(blocks),
        _ => turns.push(Turn {
            role,
            content: blocks,
        }),
    }
}

fn tool_choice(choice: &Value, parallel: Option<bool>) -> Option<Value> {
    let mut out = match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => serde_json::json!({"type": "auto"}),
            "none" => serde_json::json!({"type": "none"}),
            "required" | "any" => serde_json::json!({"type": "any"}),
            _ => return None,
        },
        Value::Object(object) => {
            let name = object
                .get("function")
                .and_then(|function| function.get("name"))
                .or_else(|| object.get("name"))
                .and_then(Value::as_str)?;
            serde_json::json!({"type": "tool", "name": name})
        }
        _ => return None,
    };
    if parallel == Some(false)
        && let Some(object) = out.as_object_mut()
        && object.get("type").and_then(Value::as_str) != Some("none")
    {
        object.insert("disable_parallel_tool_use".into(), Value::Bool(true));
    }
    Some(out)
}

fn build<'a>(
    request: &'a ChatRequest,
    options: RequestOptions<'a>,
) -> Result<MessagesRequest<'a>, LlmError> {
    let params = request.options();
    let mut system: Vec<Block<'_>> = Vec::new();
    let mut turns: Vec<Turn<'_>> = Vec::with_capacity(request.messages.len());
    for message in request.messages.iter() {
        match message.role {
            Role::System | Role::Developer => {
                if let Some(content) = &message.content {
                    content_blocks(content, &mut system)?;
                }
            }
            Role::User => {
                let mut blocks = Vec::new();
                if let Some(content) = &message.content {
                    content_blocks(content, &mut blocks)?;
                }
                push_turn(&mut turns, "user", blocks);
            }
            Role::Assistant => {
                let mut blocks = Vec::new();
                if let Some(content) = &message.content {
                    content_blocks(content, &mut blocks)?;
                }
                for call in message.tool_calls.iter().flatten() {
                    blocks.push(Block::Known(KnownBlock::ToolUse {
                        id: &call.id,
                        name: &call.function.name,
                        input: parse_arguments(&call.function.arguments)?,
                    }));
                }
                push_turn(&mut turns, "assistant", blocks);
            }
            Role::Tool | Role::Function => {
                let tool_use_id = message
                    .tool_call_id
                    .as_deref()
                    .or(message.name.as_deref())
                    .ok_or_else(|| bad_request("a tool message needs `tool_call_id`"))?;
                let content = match &message.content {
                    None => ToolResultContent::Text(""),
                    Some(Content::Text(text)) => ToolResultContent::Text(text),
                    Some(content) => {
                        let mut blocks = Vec::new();
                        content_blocks(content, &mut blocks)?;
                        ToolResultContent::Blocks(blocks)
                    }
                };
                push_turn(
                    &mut turns,
                    "user",
                    vec![Block::Known(KnownBlock::ToolResult {
                        tool_use_id,
                        content,
                    })],
                );
            }
        }
    }

    let tools = request
        .tools
        .as_ref()
        .filter(|tools| !tools.is_empty())
        .map(|tools| {
            tools
                .iter()
                .map(|tool| ToolDefinition {
                    name: &tool.function.name,
                    description: tool.function.description.as_deref(),
                    input_schema: tool.function.parameters.as_ref().map_or_else(
                        || Cow::Owned(serde_json::json!({"type": "object", "properties": {}})),
                        Cow::Borrowed,
                    ),
                })
                .collect()
        });
    let parallel = params
        .extra
        .get("parallel_tool_calls")
        .and_then(Value::as_bool);
    let tool_choice = tools
        .as_ref()
        .and(params.tool_choice.as_ref())
        .and_then(|choice| tool_choice(choice, parallel))
        .or_else(|| {
            (tools.is_some() && parallel == Some(false))
                .then(|| serde_json::json!({"type": "auto", "disable_parallel_tool_use": true}))
        });

    let mut extra = Map::new();
    for key in PASS_THROUGH {
        if let Some(value) = params.extra.get(key) {
            extra.insert(key.to_owned(), value.clone());
        }
    }
    if let Some(user) = &params.user
        && !extra.contains_key("metadata")
    {
        extra.insert("metadata".into(), serde_json::json!({"user_id": user}));
    }
    // OpenAI's `metadata` is free-form; Anthropic's only knows `user_id`.
    if let Some(Value::Object(metadata)) = extra.get_mut("metadata") {
        metadata.retain(|key, _| key == "user_id");
        if metadata.is_empty() {
            extra.remove("metadata");
        }
    }

    Ok(MessagesRequest {
        model: options.model,
        max_tokens: request.output_limit().unwrap_or(options.default_max_tokens),
        messages: turns,
        system: system_prompt(system),
        stop_sequences: params.stop.as_ref().map(|stop| match stop {
            brace_llm::types::Stop::One(one) => vec![one.as_str()],
            brace_llm::types::Stop::Many(many) => many.iter().map(String::as_str).collect(),
        }),
        // Anthropic's range is 0..=1, OpenAI's 0..=2.
        temperature: request.temperature.map(|t| t.clamp(0.0, 1.0)),
        top_p: params.top_p,
        tools,
        tool_choice,
        stream: request.is_stream(),
        extra,
    })
}

/// Encodes `request` as the JSON body of an Anthropic Messages request.
///
/// System and developer messages are hoisted to `system` (their texts joined, or text
/// blocks if one carries `cache_control`, for prompt caching); tool results become
/// `tool_result` blocks in a user turn (consecutive ones merged); assistant tool calls
/// become `tool_use` blocks; images become `base64` (from `data:` URLs) or `url` sources;
/// `max_tokens` falls back on `options.default_max_tokens`; `temperature` is clamped to
/// Anthropic's 0–1; `n` is not supported (one answer is generated). Unknown request fields
/// are dropped except `top_k`, `thinking`, `metadata` and `service_tier`.
///
/// # Errors
///
/// A [`LlmErrorKind::BadRequest`] error if a tool call's arguments are not JSON, an image
/// `data:` URL is not base64, or a tool message has no `tool_call_id`.
///
/// ```
/// use brace_providers::anthropic::{RequestOptions, encode_request};
/// use brace_llm::{ChatRequest, Message};
///
/// let request = ChatRequest::new(
///     "claude",
///     vec![Message::system("Be brief."), Message::user("Hi")],
/// );
/// let options = RequestOptions { model: "claude-sonnet-4-5", default_max_tokens: 1024 };
/// let body: serde_json::Value =
///     serde_json::from_slice(&encode_request(&request, options).unwrap()).unwrap();
/// assert_eq!(body["system"], "Be brief.");
/// assert_eq!(body["max_tokens"], 1024);
/// assert_eq!(body["messages"][0]["content"][0]["text"], "Hi");
/// ```
pub fn encode_request(
    request: &ChatRequest,
    options: RequestOptions<'_>,
) -> Result<Vec<u8>, LlmError> {
    let body = build(request, options)?;
    serde_json::to_vec(&body).map_err(|err| bad_request(format!("cannot encode request: {err}")))
}

/// [`encode_request`] as a JSON value.
///
/// # Errors
///
/// As [`encode_request`].
pub fn request_to_value(
    request: &ChatRequest,
    options: RequestOptions<'_>,
) -> Result<Value, LlmError> {
    let body = build(request, options)?;
    serde_json::to_value(&body).map_err(|err| bad_request(format!("cannot encode request: {err}")))
}

// ===== Messages response -> ChatCompletion =====

#[derive(Deserialize)]
struct MessagesResponse {
    id: String,
    #[serde(default)]
    model: String,
    content: Vec<ResponseBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    stop_sequence: Option<String>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ResponseBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

/// Anthropic's usage block.
#[allow(clippy::struct_field_names)] // Anthropic's names.
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct AnthropicUsage {
    #[serde(default)]
    pub(crate) input_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) output_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) cache_read_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Folds a later report in: the fields it has replace ours.
    pub(crate) fn merge(&mut self, later: &Self) {
        let take = |ours: &mut Option<u64>, theirs: Option<u64>| {
            if theirs.is_some() {
                *ours = theirs;
            }
        };
        take(&mut self.input_tokens, later.input_tokens);
        take(&mut self.output_tokens, later.output_tokens);
        take(
            &mut self.cache_creation_input_tokens,
            later.cache_creation_input_tokens,
        );
        take(
            &mut self.cache_read_input_tokens,
            later.cache_read_input_tokens,
        );
    }

    /// OpenAI usage: prompt tokens count cached and cache-written input too, as OpenAI's do;
    /// the cached part is in `prompt_tokens_details.cached_tokens`.
    pub(crate) fn to_usage(&self) -> Usage {
        let cache_read = self.cache_read_input_tokens.unwrap_or(0);
        let prompt = self.input_tokens.unwrap_or(0)
            + self.cache_creation_input_tokens.unwrap_or(0)
            + cache_read;
        let mut usage = Usage::new(prompt, self.output_tokens.unwrap_or(0));
        if cache_read > 0 {
            usage.extra.insert(
                "prompt_tokens_details".into(),
                serde_json::json!({"cached_tokens": cache_read}),
            );
        }
        usage
    }
}

/// An Anthropic `stop_reason` as an OpenAI finish reason.
pub fn finish_reason(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Decodes an Anthropic Messages response body into a [`ChatCompletion`].
///
/// Text blocks are joined into the message content, `tool_use` blocks become tool calls
/// (arguments as JSON text), other blocks (`thinking`, …) and unknown fields are ignored;
/// `stop_reason` is mapped by [`finish_reason`]; usage input (cache reads and writes
/// included) and output tokens become prompt and completion tokens.
///
/// # Errors
///
/// A [`LlmErrorKind::MalformedResponse`] error if the body is not a Messages response; the
/// provider's error if the body is an Anthropic error object.
pub fn decode_response(body: &[u8]) -> Result<ChatCompletion, LlmError> {
    let response: MessagesResponse = match crate::provider::json_from_bytes(body) {
        Ok(response) => response,
        Err(err) => return Err(malformed_or_error(body, &err)),
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in response.content {
        match block {
            ResponseBlock::Text { text: more } => text.push_str(&more),
            ResponseBlock::ToolUse { id, name, input } => calls.push(ToolCall {
                id,
                kind: "function".to_owned(),
                function: FunctionCall {
                    name,
                    arguments: if input.is_null() {
                        "{}".to_owned()
                    } else {
                        input.to_string()
                    },
                },
            }),
            ResponseBlock::Other => {}
        }
    }
    let mut extra = Extra::new();
    if let Some(sequence) = response.stop_sequence {
        extra.insert("stop_sequence".into(), Value::String(sequence));
    }
    Ok(ChatCompletion {
        id: response.id,
        object: "chat.completion".to_owned(),
        created: unix_now(),
        model: response.model,
        choices: vec![Choice {
            index: 0,
            message: Message {
                role: Role::Assistant,
                content: (!text.is_empty() || calls.is_empty()).then_some(Content::Text(text)),
                name: None,
                tool_calls: (!calls.is_empty()).then_some(calls),
                tool_call_id: None,
                extra: Extra::new(),
            },
            finish_reason: response.stop_reason.as_deref().map(finish_reason),
            extra,
        }],
        usage: response.usage.as_ref().map(AnthropicUsage::to_usage),
        extra: Extra::new(),
    })
}

/// A body that is not a Messages response: the error it carries if it is an Anthropic
/// error object, else a malformed-response error.
fn malformed_or_error(body: &[u8], err: &serde_json::Error) -> LlmError {
    if let Ok(value) = serde_json::from_slice::<Value>(body)
        && value.get("type").and_then(Value::as_str) == Some("error")
    {
        return error_event(&value);
    }
    LlmError::new(
        LlmErrorKind::MalformedResponse,
        format!("not an Anthropic Messages response: {err}"),
    )
}

/// The HTTP status Anthropic answers with for an error type.
pub fn error_status(error_type: &str) -> http::StatusCode {
    let code = match error_type {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    };
    http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR)
}

/// An Anthropic error object that came without its HTTP status (an `error` event in a
/// stream): the status is inferred from the error type.
pub(crate) fn error_event(value: &Value) -> LlmError {
    let error_type = value
        .get("error")
        .and_then(|error| error.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("api_error");
    let body = serde_json::to_vec(value).unwrap_or_default();
    LlmError::from_response(error_status(error_type), &http::HeaderMap::new(), &body)
}
