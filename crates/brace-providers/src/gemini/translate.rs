//! Pure translation between the OpenAI chat format and Gemini's `generateContent` API.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::anthropic::translate::{parse_arguments, parse_data_url};
use crate::provider::unix_now;
use brace_llm::error::{LlmError, LlmErrorKind};
use brace_llm::types::{
    ChatCompletion, ChatRequest, Choice, Content, ContentPart, Extra, FinishReason, FunctionCall,
    Message, Role, Stop, ToolCall, Usage,
};

/// Request fields with no OpenAI equivalent passed through to Gemini as they came.
const PASS_THROUGH: [&str; 2] = ["safetySettings", "cachedContent"];

// ===== ChatRequest -> generateContent request =====

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentRequest<'a> {
    contents: Vec<GeminiContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<GeminiContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<[ToolsEntry<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<Value>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    generation_config: GenerationConfig<'a>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Serialize)]
struct GeminiContent<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Part<'a> {
    Known(KnownPart<'a>),
    /// A part brace does not model, sent as it came.
    Raw(&'a Value),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum KnownPart<'a> {
    InlineData {
        #[serde(rename = "mimeType")]
        mime_type: &'a str,
        data: &'a str,
    },
    FileData {
        #[serde(rename = "mimeType", skip_serializing_if = "Option::is_none")]
        mime_type: Option<&'a str>,
        #[serde(rename = "fileUri")]
        file_uri: &'a str,
    },
    FunctionCall {
        name: &'a str,
        args: Value,
    },
    FunctionResponse {
        name: &'a str,
        response: Value,
    },
    #[serde(untagged)]
    Text {
        text: &'a str,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolsEntry<'a> {
    function_declarations: Vec<FunctionDeclaration<'a>>,
}

#[derive(Serialize)]
struct FunctionDeclaration<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a Value>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_schema: Option<&'a Value>,
}

impl GenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        self.max_output_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.top_k.is_none()
            && self.stop_sequences.is_none()
            && self.candidate_count.is_none()
            && self.seed.is_none()
            && self.presence_penalty.is_none()
            && self.frequency_penalty.is_none()
            && self.response_mime_type.is_none()
    }
}

fn bad_request(message: impl Into<String>) -> LlmError {
    LlmError::new(LlmErrorKind::BadRequest, message)
}

fn image_part(url: &str) -> Result<Part<'_>, LlmError> {
    if url.starts_with("data:") {
        let (mime_type, data) = parse_data_url(url)
            .ok_or_else(|| bad_request("an image `data:` URL must be base64-encoded"))?;
        Ok(Part::Known(KnownPart::InlineData { mime_type, data }))
    } else {
        Ok(Part::Known(KnownPart::FileData {
            mime_type: guess_mime_type(url),
            file_uri: url,
        }))
    }
}

/// Gemini wants a MIME type with `fileData`; guessed from the extension when it is plain.
fn guess_mime_type(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let extension = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match extension.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

fn content_parts<'a>(content: &'a Content, out: &mut Vec<Part<'a>>) -> Result<(), LlmError> {
    match content {
        Content::Text(text) => {
            if !text.is_empty() {
                out.push(Part::Known(KnownPart::Text { text }));
            }
        }
        Content::Parts(parts) => {
            for part in parts {
                match part {
                    ContentPart::Text { text, .. } => {
                        if !text.is_empty() {
                            out.push(Part::Known(KnownPart::Text { text }));
                        }
                    }
                    ContentPart::ImageUrl { image_url, .. } => {
                        out.push(image_part(&image_url.url)?);
                    }
                    ContentPart::Other(value) => out.push(Part::Raw(value)),
                }
            }
        }
    }
    Ok(())
}

fn push_content<'a>(
    contents: &mut Vec<GeminiContent<'a>>,
    role: &'static str,
    parts: Vec<Part<'a>>,
) {
    match contents.last_mut() {
        // Function responses answering one turn's calls go in one content, and Gemini
        // wants user and model turns to alternate.
        Some(last) if last.role == Some(role) => last.parts.extend(parts),
        _ => contents.push(GeminiContent {
            role: Some(role),
            parts,
        }),
    }
}

/// A tool's result as the object Gemini wants in `functionResponse.response`: the result
/// itself if it is a JSON object, else `{"content": result}`.
fn function_response(message: &Message) -> Value {
    let text = message.text();
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(object)) => Value::Object(object),
        Ok(other) => serde_json::json!({ "content": other }),
        Err(_) => serde_json::json!({ "content": text }),
    }
}

fn tool_config(choice: &Value) -> Option<Value> {
    let config = match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => serde_json::json!({"mode": "AUTO"}),
            "none" => serde_json::json!({"mode": "NONE"}),
            "required" | "any" => serde_json::json!({"mode": "ANY"}),
            _ => return None,
        },
        Value::Object(object) => {
            let name = object
                .get("function")
                .and_then(|function| function.get("name"))
                .and_then(Value::as_str)?;
            serde_json::json!({"mode": "ANY", "allowedFunctionNames": [name]})
        }
        _ => return None,
    };
    Some(serde_json::json!({ "functionCallingConfig": config }))
}

fn build(request: &ChatRequest) -> Result<GenerateContentRequest<'_>, LlmError> {
    let options = request.options();
    let mut system: Vec<Part<'_>> = Vec::new();
    let mut contents: Vec<GeminiContent<'_>> = Vec::with_capacity(request.messages.len());
    // Gemini answers a function call by name; OpenAI by call id.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for message in request.messages.iter() {
        match message.role {
            Role::System | Role::Developer => {
                if let Some(content) = &message.content {
                    content_parts(content, &mut system)?;
                }
            }
            Role::User => {
                let mut parts = Vec::new();
                if let Some(content) = &message.content {
                    content_parts(content, &mut parts)?;
                }
                push_content(&mut contents, "user", parts);
            }
            Role::Assistant => {
                let mut parts = Vec::new();
                if let Some(content) = &message.content {
                    content_parts(content, &mut parts)?;
                }
                for call in message.tool_calls.iter().flatten() {
                    call_names.insert(&call.id, &call.function.name);
                    parts.push(Part::Known(KnownPart::FunctionCall {
                        name: &call.function.name,
                        args: parse_arguments(&call.function.arguments)?,
                    }));
                }
                push_content(&mut contents, "model", parts);
            }
            Role::Tool | Role::Function => {
                let name = message
                    .tool_call_id
                    .as_deref()
                    .and_then(|id| call_names.get(id).copied())
                    .or(message.name.as_deref())
                    .ok_or_else(|| {
                        bad_request(
                            "a tool message must answer a tool call made earlier in the conversation",
                        )
                    })?;
                push_content(
                    &mut contents,
                    "user",
                    vec![Part::Known(KnownPart::FunctionResponse {
                        name,
                        response: function_response(message),
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
            [ToolsEntry {
                function_declarations: tools
                    .iter()
                    .map(|tool| FunctionDeclaration {
                        name: &tool.function.name,
                        description: tool.function.description.as_deref(),
                        parameters: tool.function.parameters.as_ref(),
                    })
                    .collect(),
            }]
        });
    let tool_config = tools
        .as_ref()
        .and(options.tool_choice.as_ref())
        .and_then(tool_config);

    let (response_mime_type, response_schema) = match &options.response_format {
        Some(format) => match format.get("type").and_then(Value::as_str) {
            Some("json_object") => (Some("application/json"), None),
            Some("json_schema") => (
                Some("application/json"),
                format
                    .get("json_schema")
                    .and_then(|schema| schema.get("schema")),
            ),
            _ => (None, None),
        },
        None => (None, None),
    };

    let mut extra = Map::new();
    for key in PASS_THROUGH {
        if let Some(value) = options.extra.get(key) {
            extra.insert(key.to_owned(), value.clone());
        }
    }

    Ok(GenerateContentRequest {
        contents,
        system_instruction: (!system.is_empty()).then_some(GeminiContent {
            role: None,
            parts: system,
        }),
        tools,
        tool_config,
        generation_config: GenerationConfig {
            max_output_tokens: request.output_limit(),
            temperature: request.temperature,
            top_p: options.top_p,
            top_k: options.extra.get("top_k"),
            stop_sequences: options.stop.as_ref().map(|stop| match stop {
                Stop::One(one) => vec![one.as_str()],
                Stop::Many(many) => many.iter().map(String::as_str).collect(),
            }),
            candidate_count: options.n,
            seed: options.seed,
            presence_penalty: options.extra.get("presence_penalty"),
            frequency_penalty: options.extra.get("frequency_penalty"),
            response_mime_type,
            response_schema,
        },
        extra,
    })
}

/// Encodes `request` as the JSON body of a Gemini `generateContent` (or
/// `streamGenerateContent`) request. The model goes in the URL, not the body.
///
/// Assistant messages get role `model`; system and developer messages become
/// `systemInstruction`; sampling settings, stop sequences, `n` and `response_format` go in
/// `generationConfig`; tools become `functionDeclarations` and `tool_choice` a
/// `toolConfig`; assistant tool calls become `functionCall` parts and tool messages
/// `functionResponse` parts (named after the call they answer); images become `inlineData`
/// (from `data:` URLs) or `fileData`. Unknown request fields are dropped except
/// `safetySettings` and `cachedContent`.
///
/// # Errors
///
/// A [`LlmErrorKind::BadRequest`] error if a tool call's arguments are not JSON, an image
/// `data:` URL is not base64, or a tool message answers no known call.
///
/// ```
/// use brace_providers::gemini::encode_request;
/// use brace_llm::{ChatRequest, Message};
///
/// let request = ChatRequest::new(
///     "gemini-2.5-flash",
///     vec![Message::system("Be brief."), Message::user("Hi"), Message::assistant("Hello!")],
/// )
/// .with_max_tokens(100);
/// let body: serde_json::Value = serde_json::from_slice(&encode_request(&request).unwrap()).unwrap();
/// assert_eq!(body["systemInstruction"]["parts"][0]["text"], "Be brief.");
/// assert_eq!(body["contents"][1]["role"], "model");
/// assert_eq!(body["generationConfig"]["maxOutputTokens"], 100);
/// ```
pub fn encode_request(request: &ChatRequest) -> Result<Vec<u8>, LlmError> {
    let body = build(request)?;
    serde_json::to_vec(&body).map_err(|err| bad_request(format!("cannot encode request: {err}")))
}

/// [`encode_request`] as a JSON value.
///
/// # Errors
///
/// As [`encode_request`].
pub fn request_to_value(request: &ChatRequest) -> Result<Value, LlmError> {
    let body = build(request)?;
    serde_json::to_value(&body).map_err(|err| bad_request(format!("cannot encode request: {err}")))
}

// ===== GenerateContentResponse -> ChatCompletion =====

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateContentResponse {
    #[serde(default)]
    pub(crate) candidates: Vec<Candidate>,
    #[serde(default)]
    pub(crate) prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    pub(crate) usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    pub(crate) model_version: Option<String>,
    #[serde(default)]
    pub(crate) response_id: Option<String>,
    /// Set when the body is an error object (a stream may send one with status 200).
    #[serde(default)]
    pub(crate) error: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Candidate {
    #[serde(default)]
    pub(crate) content: Option<CandidateContent>,
    #[serde(default)]
    pub(crate) finish_reason: Option<String>,
    #[serde(default)]
    pub(crate) index: Option<u32>,
}

#[derive(Deserialize, Default)]
pub(crate) struct CandidateContent {
    #[serde(default)]
    pub(crate) parts: Vec<ResponsePart>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResponsePart {
    #[serde(default)]
    pub(crate) text: Option<String>,
    #[serde(default)]
    pub(crate) thought: Option<bool>,
    #[serde(default)]
    pub(crate) function_call: Option<ResponseFunctionCall>,
}

#[derive(Deserialize)]
pub(crate) struct ResponseFunctionCall {
    #[serde(default)]
    pub(crate) id: Option<String>,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) args: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PromptFeedback {
    #[serde(default)]
    pub(crate) block_reason: Option<String>,
    #[serde(default)]
    pub(crate) block_reason_message: Option<String>,
}

#[allow(clippy::struct_field_names)] // Gemini's names.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UsageMetadata {
    #[serde(default)]
    pub(crate) prompt_token_count: u64,
    #[serde(default)]
    pub(crate) candidates_token_count: u64,
    #[serde(default)]
    pub(crate) thoughts_token_count: u64,
    #[serde(default)]
    pub(crate) cached_content_token_count: u64,
}

impl UsageMetadata {
    /// OpenAI usage: completion tokens include thinking, as OpenAI's include reasoning.
    pub(crate) fn to_usage(&self) -> Usage {
        let mut usage = Usage::new(
            self.prompt_token_count,
            self.candidates_token_count + self.thoughts_token_count,
        );
        if self.cached_content_token_count > 0 {
            usage.extra.insert(
                "prompt_tokens_details".into(),
                serde_json::json!({"cached_tokens": self.cached_content_token_count}),
            );
        }
        if self.thoughts_token_count > 0 {
            usage.extra.insert(
                "completion_tokens_details".into(),
                serde_json::json!({"reasoning_tokens": self.thoughts_token_count}),
            );
        }
        usage
    }
}

/// A Gemini `finishReason` as an OpenAI finish reason. `STOP` with function calls in the
/// candidate is `tool_calls` (Gemini says `STOP` either way).
pub fn finish_reason(reason: &str, has_calls: bool) -> FinishReason {
    match reason {
        "STOP" if has_calls => FinishReason::ToolCalls,
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_ascii_lowercase()),
    }
}

/// The error for a prompt Gemini blocked (`promptFeedback.blockReason`), if it did.
pub(crate) fn blocked(response: &GenerateContentResponse) -> Option<LlmError> {
    let feedback = response.prompt_feedback.as_ref()?;
    let reason = feedback.block_reason.as_deref()?;
    if !response.candidates.is_empty() {
        return None;
    }
    let message = feedback
        .block_reason_message
        .clone()
        .unwrap_or_else(|| format!("the prompt was blocked: {reason}"));
    Some(LlmError::new(LlmErrorKind::ContentFiltered, message).with_code(reason))
}

/// A candidate's text (thoughts left out) and function calls. Calls without an id get
/// `call_<n>`, numbered from `first_call`.
pub(crate) fn candidate_parts(
    content: Option<CandidateContent>,
    first_call: usize,
) -> (String, Vec<ToolCall>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in content.map(|content| content.parts).unwrap_or_default() {
        if let Some(more) = part.text
            && part.thought != Some(true)
        {
            text.push_str(&more);
        }
        if let Some(call) = part.function_call {
            calls.push(ToolCall {
                id: call
                    .id
                    .unwrap_or_else(|| format!("call_{}", first_call + calls.len())),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: call.name,
                    arguments: call
                        .args
                        .map_or_else(|| "{}".to_owned(), |args| args.to_string()),
                },
            });
        }
    }
    (text, calls)
}

/// Parses a response, turning an error object into its error.
pub(crate) fn parse(body: &[u8]) -> Result<GenerateContentResponse, LlmError> {
    let response: GenerateContentResponse =
        crate::provider::json_from_bytes(body).map_err(|err| {
            if let Ok(value) = serde_json::from_slice::<Value>(body)
                && let Some(error) = error_object(&value)
            {
                return error;
            }
            LlmError::new(
                LlmErrorKind::MalformedResponse,
                format!("not a Gemini GenerateContentResponse: {err}"),
            )
        })?;
    if let Some(error) = &response.error {
        let wrapped = serde_json::json!({ "error": error });
        if let Some(err) = error_object(&wrapped) {
            return Err(err);
        }
    }
    Ok(response)
}

/// The error in a Gemini error object that came with a success status (in a stream), if
/// `value` is one; the status is taken from `error.code`.
pub(crate) fn error_object(value: &Value) -> Option<LlmError> {
    let error = value.get("error")?;
    let status = error
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|code| u16::try_from(code).ok())
        .and_then(|code| http::StatusCode::from_u16(code).ok())
        .filter(|status| !status.is_success())
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(value).unwrap_or_default();
    Some(LlmError::from_response(
        status,
        &http::HeaderMap::new(),
        &body,
    ))
}

/// Decodes a Gemini `GenerateContentResponse` body into a [`ChatCompletion`].
///
/// Candidates become choices (thought parts left out; `functionCall` parts become tool
/// calls, ids `call_<n>` when Gemini gives none); `finishReason` is mapped by
/// [`finish_reason`]; `usageMetadata` becomes usage; the model is `modelVersion`, or
/// `model` if Gemini does not say. Unknown fields are ignored.
///
/// # Errors
///
/// A [`LlmErrorKind::ContentFiltered`] error if the prompt was blocked
/// (`promptFeedback.blockReason` and no candidates); a
/// [`LlmErrorKind::MalformedResponse`] error if the body is not a response or has no
/// candidates; the provider's error if the body is a Gemini error object.
pub fn decode_response(body: &[u8], model: &str) -> Result<ChatCompletion, LlmError> {
    let response = parse(body)?;
    if let Some(err) = blocked(&response) {
        return Err(err);
    }
    if response.candidates.is_empty() {
        return Err(LlmError::new(
            LlmErrorKind::MalformedResponse,
            "Gemini answered with no candidates",
        ));
    }
    let mut choices = Vec::with_capacity(response.candidates.len());
    for (position, candidate) in response.candidates.into_iter().enumerate() {
        let (text, calls) = candidate_parts(candidate.content, 0);
        let finish = candidate
            .finish_reason
            .as_deref()
            .map(|reason| finish_reason(reason, !calls.is_empty()));
        choices.push(Choice {
            index: candidate.index.unwrap_or(position as u32),
            message: Message {
                role: Role::Assistant,
                content: (!text.is_empty() || calls.is_empty()).then_some(Content::Text(text)),
                name: None,
                tool_calls: (!calls.is_empty()).then_some(calls),
                tool_call_id: None,
                extra: Extra::new(),
            },
            finish_reason: finish,
            extra: Extra::new(),
        });
    }
    let created = unix_now();
    Ok(ChatCompletion {
        id: response
            .response_id
            .unwrap_or_else(|| format!("gemini-{created}")),
        object: "chat.completion".to_owned(),
        created,
        model: response.model_version.unwrap_or_else(|| model.to_owned()),
        choices,
        usage: response
            .usage_metadata
            .as_ref()
            .map(UsageMetadata::to_usage),
        extra: Extra::new(),
    })
}
