//! Degradation for chat requests: how a [`ChatRequest`] is reshaped at a level, hashed into a
//! cache key and answered statically, and how a [`ChatResponse`] records the level that
//! answered it, is teed into a cache and replayed from it.
//!
//! These implement [`brace_core::degrade`]'s traits, so a generic degradation layer
//! (`brace_degrade::DegradeLayer<ChatRequest>`) can run over any chat service. What a level
//! does to a chat request is this crate's business: [`Shape`] (a level's model,
//! `max_tokens` cap and allowed [`Features`]), [`Reshaped`] (what changed), and the gateway's
//! default levels ([`Shape::standard_levels`]: `max_tokens` 1024 at `reduced`, 256 at
//! `minimal`).
//!
//! # Reshaping
//!
//! [`Shape`] at a level, applied by [`Degradable::reshape`]:
//!
//! - `model`: replaces the requested model.
//! - `max_tokens`: the output limit becomes the smaller of the caller's and the cap, on
//!   whichever of `max_tokens` / `max_completion_tokens` the caller set (`max_tokens` when
//!   neither).
//! - `allow.tools = false`: removes `tools`, `tool_choice`, `parallel_tool_calls` (and the
//!   deprecated `functions` / `function_call`). Earlier tool calls and results in the
//!   conversation stay.
//! - `allow.stream = false`: removes `stream` and `stream_options` (the answer is whole).
//! - `allow.images = false`: removes image parts from every message.
//! - `allow.response_format = false`: removes `response_format`.
//!
//! What was removed or capped is recorded in the response's
//! [`ResponseMeta::degradation`](crate::ResponseMeta::degradation).
//!
//! # Cache key
//!
//! [`Degradable::write_cache_key`] writes the request as compact JSON with every object's
//! keys in sorted order, leaving out `user`, `stream` and `stream_options` (who asked and how
//! the answer is delivered do not change it) and the non-wire `extensions`. Field order and
//! whitespace of the caller's JSON therefore do not change the key; model, messages,
//! sampling parameters, tools and unknown fields do.
//!
//! # Determinism
//!
//! [`Degradable::is_deterministic`] is `true` for `temperature: 0` with at most one choice
//! (`n` absent or 1): without an explicit temperature 0, providers sample (OpenAI's default
//! is 1), and caching one sample would hand every later caller the same draw.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use brace_core::degrade::{Degradable, DegradeResponse, Reshape};
use futures_core::Stream;
use pin_project_lite::pin_project;

use crate::error::LlmError;
use crate::response::{
    ChatResponse, ChatStream, CompletionBody, ResponseBody, ResponseMeta, StreamAccumulator,
    StreamChunk,
};
#[cfg(test)]
use crate::types::ChatChunk;
use crate::types::{ChatCompletion, ChatRequest, Content, FinishReason, Message};

// ===== what a level does to a chat request =====

/// Request features a level may allow or remove.
///
/// In configuration every field defaults to allowed: `{ tools: false }` removes tools only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Features {
    /// Tool (function) definitions and tool choice.
    pub tools: bool,
    /// A streamed response.
    pub stream: bool,
    /// Image (vision) inputs.
    pub images: bool,
    /// A requested response format (JSON mode, a JSON schema).
    pub response_format: bool,
}

impl Default for Features {
    fn default() -> Self {
        Self::ALL
    }
}

impl Features {
    /// Every feature.
    pub const ALL: Features = Features {
        tools: true,
        stream: true,
        images: true,
        response_format: true,
    };

    /// No feature.
    pub const NONE: Features = Features {
        tools: false,
        stream: false,
        images: false,
        response_format: false,
    };

    /// `true` if no feature is set.
    pub const fn is_empty(&self) -> bool {
        !(self.tools || self.stream || self.images || self.response_format)
    }

    /// The names of the features that are set, in a fixed order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        [
            (self.tools, "tools"),
            (self.stream, "stream"),
            (self.images, "images"),
            (self.response_format, "response_format"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
    }
}

/// How a live degradation level reshapes a chat request: `ChatRequest`'s
/// [`Degradable::Shape`]. In a level's configuration its fields sit beside the level's
/// name: `{name: haiku, model: claude-haiku, max_tokens: 512, allow: {tools: false}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Shape {
    /// The model to use instead of the caller's, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<Arc<str>>,
    /// A cap on the response length: the request gets the smaller of the caller's
    /// `max_tokens` and this (this when the caller set none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The features the level allows; the others are removed from the request.
    #[serde(skip_serializing_if = "Features::is_all")]
    pub allow: Features,
}

impl Features {
    #[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes `&Self`
    fn is_all(&self) -> bool {
        *self == Self::ALL
    }
}

impl Shape {
    /// A shape that changes nothing.
    pub fn unchanged() -> Self {
        Self::default()
    }

    /// `true` if this shape changes nothing.
    pub fn is_unchanged(&self) -> bool {
        self.model.is_none() && self.max_tokens.is_none() && self.allow == Features::ALL
    }

    /// The `reduced` level of the gateway's default ladder: `max_tokens` capped at 1024, no
    /// images.
    pub fn reduced() -> Self {
        Self {
            model: None,
            max_tokens: Some(1024),
            allow: Features {
                images: false,
                ..Features::ALL
            },
        }
    }

    /// The `minimal` level of the gateway's default ladder: `max_tokens` capped at 256; no
    /// tools, images or response format.
    pub fn minimal() -> Self {
        Self {
            model: None,
            max_tokens: Some(256),
            allow: Features {
                tools: false,
                stream: true,
                images: false,
                response_format: false,
            },
        }
    }

    /// The live levels of the gateway's default ladder, top first: `full` (the request as
    /// sent), [`reduced`](Self::reduced), [`minimal`](Self::minimal). (The default ladder
    /// overrides no model, since model names depend on the provider: give `reduced` and
    /// `minimal` a `model` in your own ladder.) Below them the ladder has a `cached` and a
    /// static `offline` level.
    pub fn standard_levels() -> [(&'static str, Shape); 3] {
        [
            ("full", Self::unchanged()),
            ("reduced", Self::reduced()),
            ("minimal", Self::minimal()),
        ]
    }
}

/// What [`Degradable::reshape`] changed in a chat request: `ChatRequest`'s
/// [`Degradable::Reshaped`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reshaped {
    /// The features that the request used and that were removed.
    pub removed: Features,
    /// The model the request was switched to, if it was.
    pub model: Option<Arc<str>>,
    /// The `max_tokens` the request was capped to, if it was lowered or set.
    pub max_tokens: Option<u32>,
}

impl Default for Reshaped {
    fn default() -> Self {
        Self::nothing()
    }
}

impl Reshaped {
    /// Nothing changed.
    pub fn nothing() -> Self {
        Self {
            removed: Features::NONE,
            model: None,
            max_tokens: None,
        }
    }

    /// `true` if nothing changed.
    pub fn is_nothing(&self) -> bool {
        self.removed.is_empty() && self.model.is_none() && self.max_tokens.is_none()
    }

    /// What changed, by name: the removed features (`tools`, `stream`, `images`,
    /// `response_format`), then `model` and `max_tokens` if they were changed.
    pub fn changes(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.removed.names().chain(
            [
                (self.model.is_some(), "model"),
                (self.max_tokens.is_some(), "max_tokens"),
            ]
            .into_iter()
            .filter_map(|(changed, name)| changed.then_some(name)),
        )
    }
}

impl Reshape for Reshaped {
    fn nothing() -> Self {
        Reshaped::nothing()
    }

    fn is_nothing(&self) -> bool {
        Reshaped::is_nothing(self)
    }

    /// Another model may fail otherwise.
    fn retargets(&self, previous: &Self) -> bool {
        self.model != previous.model
    }
}

/// Which level answered a chat request and how (see [`brace_core::degrade::Degradation`]).
pub type Degradation = brace_core::degrade::Degradation<Reshaped>;

/// The provider name on static answers: no provider was asked.
pub const STATIC_PROVIDER: &str = "brace";

/// The fields of the deprecated function-calling API removed with tools.
const TOOL_EXTRA_FIELDS: [&str; 3] = ["parallel_tool_calls", "functions", "function_call"];

/// The degradation level a request is sent at, below the top of the ladder: put in the
/// request's extensions by [`Degradable::set_level`], so that a provider can ask for its own
/// model at that level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DegradationLevel(pub Arc<str>);

impl Degradable for ChatRequest {
    type Response = ChatResponse;
    type Shape = Shape;
    type Reshaped = Reshaped;

    fn set_level(&mut self, level: &Arc<str>) {
        self.extensions.insert(DegradationLevel(level.clone()));
    }

    fn reshape(&mut self, shape: &Shape) -> Reshaped {
        let mut reshaped = Reshaped::nothing();
        if let Some(model) = &shape.model
            && **model != *self.model
        {
            self.model = model.into();
            reshaped.model = Some(model.clone());
        }
        if let Some(cap) = shape.max_tokens {
            reshaped.max_tokens = cap_output(self, cap);
        }
        let allow = shape.allow;
        if !allow.tools {
            let mut had = self.tools.take().is_some_and(|tools| !tools.is_empty());
            let options = self.options();
            if options.tool_choice.is_some()
                || TOOL_EXTRA_FIELDS
                    .iter()
                    .any(|field| options.extra.contains_key(*field))
            {
                let options = self.options_mut();
                had |= options.tool_choice.take().is_some();
                for field in TOOL_EXTRA_FIELDS {
                    had |= options.extra.remove(field).is_some();
                }
            }
            reshaped.removed.tools = had;
        }
        if !allow.stream {
            reshaped.removed.stream = self.is_stream();
            self.stream = None;
            if self.options().stream_options.is_some() {
                self.options_mut().stream_options = None;
            }
        }
        if !allow.images && self.has_images() {
            self.messages = self.messages.iter().map(without_images).collect();
            reshaped.removed.images = true;
        }
        if !allow.response_format && self.options().response_format.is_some() {
            self.options_mut().response_format = None;
            reshaped.removed.response_format = true;
        }
        reshaped
    }

    fn write_cache_key(&self, out: &mut dyn io::Write) -> io::Result<()> {
        // The request as written on the wire, without the fields that do not change the
        // answer. Its fields are written in a fixed order and maps (serde_json's `Map`, a
        // BTreeMap) in key order, so the text is canonical.
        let mut view = self.wire();
        view.stream = None;
        view.stream_options = None;
        view.user = None;
        serde_json::to_writer(out, &view).map_err(io::Error::other)
    }

    fn is_deterministic(&self) -> bool {
        self.temperature == Some(0.0) && self.options().n.unwrap_or(1) <= 1
    }

    fn wants_stream(&self) -> bool {
        self.is_stream()
    }

    fn static_response(&self, message: &str) -> ChatResponse {
        let completion = static_completion(&self.model, message);
        if self.is_stream() {
            let chunks = completion.to_chunks(self.wants_stream_usage());
            let stream = ChatStream::from_items(chunks.into_iter().map(Ok).collect());
            ChatResponse::stream(STATIC_PROVIDER, completion.model, stream)
        } else {
            ChatResponse::complete(STATIC_PROVIDER, completion)
        }
    }
}

/// A complete, successful answer carrying `message`, as the static level returns it: one
/// assistant choice, finish reason `stop`, model `model`, no usage.
pub fn static_completion(model: &str, message: &str) -> ChatCompletion {
    ChatCompletion::new(
        format!("chatcmpl-static-{}", short_id(message)),
        model,
        message,
        FinishReason::Stop,
    )
}

/// A short, stable id for a static message (the same message gets the same id).
fn short_id(message: &str) -> String {
    // FNV-1a: enough to tell static messages apart in logs; not a security boundary.
    let hash = message
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}

/// Caps the output limit at `cap`; returns the new limit if it changed.
fn cap_output(request: &mut ChatRequest, cap: u32) -> Option<u32> {
    let before = request.output_limit();
    let lower = |limit: &mut Option<u32>| {
        if let Some(limit) = limit {
            *limit = (*limit).min(cap);
        }
    };
    lower(&mut request.max_tokens);
    // Only a limit the cap lowers is written: writing copies options shared with other clones.
    if request
        .options()
        .max_completion_tokens
        .is_some_and(|limit| limit > cap)
    {
        lower(&mut request.options_mut().max_completion_tokens);
    }
    if request.output_limit().is_none() {
        request.max_tokens = Some(cap);
    }
    let after = request.output_limit();
    (after != before).then_some(cap.min(before.unwrap_or(cap)))
}

fn without_images(message: &Message) -> Message {
    match &message.content {
        Some(Content::Parts(parts)) if message.has_images() => Message {
            content: Some(Content::Parts(
                parts
                    .iter()
                    .filter(|part| !part.is_image())
                    .cloned()
                    .collect(),
            )),
            ..message.clone()
        },
        _ => message.clone(),
    }
}

// ===== ChatResponse =====

/// What the response cache keeps for a chat answer: the whole completion and who served it.
/// It serializes (as JSON) for a cache tier outside the process.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CachedChat {
    /// The provider that answered.
    pub provider: Arc<str>,
    /// The model that answered.
    pub model: String,
    /// The whole answer (a stream collected).
    pub completion: ChatCompletion,
}

impl CachedChat {
    /// Approximately how many bytes the entry takes: its strings plus a fixed overhead per
    /// choice, enough for a byte bound without serializing it.
    pub fn approximate_size(&self) -> usize {
        let completion = &self.completion;
        let choices: usize = completion
            .choices
            .iter()
            .map(|choice| {
                let message = &choice.message;
                let content = match &message.content {
                    Some(Content::Text(text)) => text.len(),
                    Some(Content::Parts(parts)) => parts.len() * 64 + message.text().len(),
                    None => 0,
                };
                let calls: usize = message
                    .tool_calls
                    .iter()
                    .flatten()
                    .map(|call| {
                        call.id.len()
                            + call.function.name.len()
                            + call.function.arguments.len()
                            + 64
                    })
                    .sum();
                128 + content + calls
            })
            .sum();
        256 + self.provider.len() + self.model.len() + completion.id.len() + choices
    }
}

impl DegradeResponse<Reshaped> for ChatResponse {
    type Cached = CachedChat;

    fn annotate(&mut self, degradation: &Degradation) {
        self.meta.degradation = Some(degradation.clone());
    }

    fn tee<F>(self, fill: F) -> Self
    where
        F: FnOnce(CachedChat) + Send + 'static,
    {
        let ChatResponse { meta, body } = self;
        let body = match body {
            ResponseBody::Complete(completion) => {
                fill(CachedChat {
                    provider: meta.provider.clone(),
                    model: meta.model.clone(),
                    completion: ChatCompletion::clone(&completion),
                });
                ResponseBody::Complete(completion)
            }
            ResponseBody::Stream(stream) => ResponseBody::Stream(ChatStream::new(Tee {
                inner: stream,
                accumulator: StreamAccumulator::new(),
                fill: Some(fill),
                provider: meta.provider.clone(),
                model: meta.model.clone(),
            })),
        };
        ChatResponse { meta, body }
    }

    fn from_cached(cached: &CachedChat, stream: bool) -> Self {
        let meta = ResponseMeta::new(cached.provider.clone(), cached.model.clone());
        let body = if stream {
            let chunks = cached.completion.to_chunks(false);
            ResponseBody::Stream(ChatStream::from_items(chunks.into_iter().map(Ok).collect()))
        } else {
            ResponseBody::Complete(CompletionBody::new(cached.completion.clone()))
        };
        ChatResponse { meta, body }
    }

    fn cached_size(cached: &CachedChat) -> usize {
        cached.approximate_size()
    }
}

pin_project! {
    /// Passes a stream's chunks on and folds them into one completion as they pass (the
    /// chunks are not kept); hands the completion to `fill` when the stream ends finished.
    struct Tee<F> {
        inner: ChatStream,
        accumulator: StreamAccumulator,
        fill: Option<F>,
        provider: Arc<str>,
        model: String,
    }
}

impl<F> Stream for Tee<F>
where
    F: FnOnce(CachedChat),
{
    type Item = Result<StreamChunk, LlmError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let item = match Pin::new(this.inner).poll_next(cx) {
            Poll::Ready(item) => item,
            Poll::Pending => return Poll::Pending,
        };
        match &item {
            Some(Ok(chunk)) if this.fill.is_some() => this.accumulator.push(chunk),
            Some(Ok(_)) => {}
            Some(Err(_)) => *this.fill = None,
            None => {
                if let Some(fill) = this.fill.take() {
                    let accumulator = std::mem::take(this.accumulator);
                    // A stream cut before its finish reason is not a whole answer.
                    if let Ok(completion) = accumulator.finish() {
                        let model = if completion.model.is_empty() {
                            this.model.clone()
                        } else {
                            completion.model.clone()
                        };
                        fill(CachedChat {
                            provider: this.provider.clone(),
                            model,
                            completion,
                        });
                    }
                }
            }
        }
        Poll::Ready(item)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use brace_core::degrade::Origin;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::types::{ContentPart, Delta, Tool};

    /// The canonical bytes the layer hashes into the key: equal bytes, equal keys.
    fn key(request: &ChatRequest) -> Vec<u8> {
        let mut out = Vec::new();
        request.write_cache_key(&mut out).unwrap();
        out
    }

    fn canonical(request: &ChatRequest) -> String {
        let mut out = Vec::new();
        request.write_cache_key(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn parse(value: &Value) -> ChatRequest {
        serde_json::from_value(value.clone()).unwrap()
    }

    /// A request as an agent framework would send it: system prompt, an image, tools, JSON
    /// output, streaming with usage, and a field brace does not model.
    fn agent_request() -> ChatRequest {
        parse(&json!({
            "model": "claude-opus-4",
            "messages": [
                { "role": "system", "content": "You are a careful assistant." },
                { "role": "user", "content": [
                    { "type": "text", "text": "What is in this picture?" },
                    { "type": "image_url", "image_url": { "url": "data:image/png;base64,AAAA", "detail": "low" } }
                ] }
            ],
            "max_tokens": 4000,
            "temperature": 0,
            "stream": true,
            "stream_options": { "include_usage": true },
            "tools": [ { "type": "function", "function": {
                "name": "lookup", "description": "Look something up",
                "parameters": { "type": "object", "properties": { "q": { "type": "string" } } }
            } } ],
            "tool_choice": "auto",
            "parallel_tool_calls": false,
            "response_format": { "type": "json_object" },
            "user": "user-1234",
            "metadata": { "trace": "abc" }
        }))
    }

    fn reduced() -> Shape {
        Shape {
            model: Some("claude-sonnet-4".into()),
            max_tokens: Some(1024),
            allow: Features {
                images: false,
                ..Features::ALL
            },
        }
    }

    fn minimal() -> Shape {
        Shape {
            model: Some("claude-haiku-4".into()),
            max_tokens: Some(256),
            allow: Features {
                tools: false,
                stream: true,
                images: false,
                response_format: false,
            },
        }
    }

    #[test]
    fn full_level_changes_nothing() {
        let mut request = agent_request();
        let reshaped = request.reshape(&Shape::unchanged());
        assert!(reshaped.is_nothing());
        assert_eq!(request, agent_request());
    }

    #[test]
    fn reduced_level_switches_model_caps_tokens_and_drops_images() {
        let mut request = agent_request();
        let reshaped = request.reshape(&reduced());
        assert_eq!(request.model, "claude-sonnet-4");
        assert_eq!(request.max_tokens, Some(1024));
        assert!(!request.has_images());
        assert_eq!(request.messages[1].text(), "What is in this picture?");
        assert!(
            request.has_tools()
                && request.is_stream()
                && request.options().response_format.is_some()
        );
        assert_eq!(reshaped.model.as_deref(), Some("claude-sonnet-4"));
        assert_eq!(reshaped.max_tokens, Some(1024));
        assert_eq!(reshaped.removed.names().collect::<Vec<_>>(), ["images"]);
        // The caller's conversation is untouched: reshaping works on a copy.
        assert!(agent_request().has_images());
    }

    #[test]
    fn minimal_level_drops_tools_and_response_format_and_keeps_a_smaller_cap() {
        let mut request = agent_request();
        request.max_tokens = Some(100);
        let reshaped = request.reshape(&minimal());
        assert_eq!(request.model, "claude-haiku-4");
        assert_eq!(request.max_tokens, Some(100));
        assert_eq!(reshaped.max_tokens, None);
        assert!(request.tools.is_none());
        let options = request.options();
        assert!(options.tool_choice.is_none());
        assert!(!options.extra.contains_key("parallel_tool_calls"));
        assert!(options.extra.contains_key("metadata"));
        assert!(options.response_format.is_none());
        assert!(request.is_stream(), "minimal still streams");
        assert_eq!(
            reshaped.removed.names().collect::<Vec<_>>(),
            ["tools", "images", "response_format"]
        );
    }

    #[test]
    fn a_level_without_streaming_removes_stream_and_its_options() {
        let mut request = agent_request();
        let reshaped = request.reshape(&Shape {
            allow: Features {
                stream: false,
                ..Features::ALL
            },
            ..Shape::unchanged()
        });
        assert!(!request.is_stream() && request.options().stream_options.is_none());
        assert_eq!(reshaped.removed.names().collect::<Vec<_>>(), ["stream"]);
    }

    #[test]
    fn features_the_request_did_not_use_are_not_reported_removed() {
        let mut request = ChatRequest::new("gpt-4o", vec![Message::user("hi")]);
        let reshaped = request.reshape(&minimal());
        assert!(reshaped.removed.is_empty());
        assert_eq!(request.max_tokens, Some(256), "no limit becomes the cap");
        assert_eq!(reshaped.max_tokens, Some(256));
    }

    #[test]
    fn the_cap_applies_to_max_completion_tokens_too() {
        let mut request = ChatRequest::new("o3", vec![Message::user("hi")]);
        request.options_mut().max_completion_tokens = Some(5000);
        request.reshape(&minimal());
        assert_eq!(request.options().max_completion_tokens, Some(256));
        assert_eq!(request.max_tokens, None);
    }

    #[test]
    fn cache_key_leaves_out_user_and_stream_only() {
        let text = canonical(&agent_request());
        assert!(!text.contains("user-1234") && !text.contains("include_usage"));
        assert!(!text.contains("\"stream\""));
        assert!(text.contains("claude-opus-4") && text.contains("\"trace\""));
    }

    #[test]
    fn deterministic_means_temperature_zero_and_one_choice() {
        let base = ChatRequest::new("gpt-4o", vec![Message::user("hi")]);
        assert!(
            !base.is_deterministic(),
            "no temperature: the provider samples"
        );
        let zero = base.clone().with_temperature(0.0);
        assert!(zero.is_deterministic());
        let mut three = zero.clone();
        three.options_mut().n = Some(3);
        assert!(!three.is_deterministic());
        assert!(!base.with_temperature(0.7).is_deterministic());
    }

    #[test]
    fn static_answers_are_whole_or_streamed_as_asked() {
        let request = ChatRequest::new("gpt-4o", vec![Message::user("hi")]);
        let whole = request.static_response("Service temporarily limited");
        let completion = whole.completion().unwrap();
        assert_eq!(completion.text(), "Service temporarily limited");
        assert_eq!(
            completion.choices[0].finish_reason,
            Some(FinishReason::Stop)
        );
        assert_eq!(&*whole.meta.provider, STATIC_PROVIDER);

        let streamed = request.with_stream(true).static_response("Back soon");
        assert!(streamed.is_stream());
        let completion = futures::executor::block_on(streamed.into_completion()).unwrap();
        assert_eq!(completion.text(), "Back soon");
    }

    #[test]
    fn annotate_records_level_origin_and_what_was_removed() {
        let mut request = agent_request();
        let reshaped = request.reshape(&minimal());
        let mut response = request.static_response("x");
        response.annotate(&Degradation {
            level: "minimal".into(),
            index: 2,
            origin: Origin::Live,
            reshaped,
        });
        assert_eq!(response.meta.origin(), Origin::Live);
        let degradation = response.meta.degradation.unwrap();
        assert_eq!(&*degradation.level, "minimal");
        assert_eq!(
            degradation.reshaped.changes().collect::<Vec<_>>(),
            ["tools", "images", "response_format", "model", "max_tokens"]
        );
    }

    fn chunks(text: &[&str], finish: bool) -> Vec<Result<ChatChunk, LlmError>> {
        let mut out: Vec<_> = text
            .iter()
            .map(|piece| Ok(ChatChunk::new("chatcmpl-1", "gpt-4o", Delta::text(*piece))))
            .collect();
        if finish {
            let mut last = ChatChunk::new("chatcmpl-1", "gpt-4o", Delta::default());
            last.choices[0].finish_reason = Some(FinishReason::Stop);
            out.push(Ok(last));
        }
        out
    }

    fn teed(
        items: Vec<Result<ChatChunk, LlmError>>,
    ) -> (ChatResponse, Arc<Mutex<Vec<CachedChat>>>) {
        let filled = Arc::new(Mutex::new(Vec::new()));
        let sink = filled.clone();
        let response = ChatResponse::stream("openai", "gpt-4o", ChatStream::from_items(items))
            .tee(move |cached| sink.lock().unwrap().push(cached));
        (response, filled)
    }

    #[test]
    fn a_teed_stream_passes_chunks_and_fills_once_finished() {
        let (response, filled) = teed(chunks(&["Hel", "lo"], true));
        let ResponseBody::Stream(mut stream) = response.body else {
            panic!("still a stream");
        };
        let mut seen = 0;
        futures::executor::block_on(async {
            while let Some(item) =
                std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await
            {
                item.unwrap();
                seen += 1;
                if seen < 3 {
                    assert!(filled.lock().unwrap().is_empty(), "not before the end");
                }
            }
        });
        assert_eq!(seen, 3);
        let filled = filled.lock().unwrap();
        assert_eq!(filled.len(), 1);
        assert_eq!(filled[0].completion.text(), "Hello");
        assert_eq!(&*filled[0].provider, "openai");

        // Replayed as a stream, it adds up to the same answer.
        let replay = ChatResponse::from_cached(&filled[0], true);
        assert!(replay.is_stream());
        let completion = futures::executor::block_on(replay.into_completion()).unwrap();
        assert_eq!(completion.text(), "Hello");
        let whole = ChatResponse::from_cached(&filled[0], false);
        assert_eq!(whole.completion().unwrap().text(), "Hello");
    }

    #[test]
    fn a_cut_or_broken_stream_is_not_cached() {
        for items in [chunks(&["Hel", "lo"], false), {
            let mut items = chunks(&["Hel"], false);
            items.push(Err(LlmError::new(crate::LlmErrorKind::Server, "boom")));
            items.extend(chunks(&["lo"], true));
            items
        }] {
            let (response, filled) = teed(items);
            let _ = futures::executor::block_on(response.into_completion());
            assert!(filled.lock().unwrap().is_empty());
        }
    }

    #[test]
    fn a_whole_answer_is_cached_at_once() {
        let completion = ChatCompletion::new("c1", "gpt-4o", "Hi", FinishReason::Stop);
        let filled = Arc::new(Mutex::new(Vec::new()));
        let sink = filled.clone();
        let response = ChatResponse::complete("openai", completion.clone())
            .tee(move |cached| sink.lock().unwrap().push(cached));
        assert_eq!(response.completion(), Some(&completion));
        assert_eq!(filled.lock().unwrap()[0].completion, completion);
        assert!(CachedChat::approximate_size(&filled.lock().unwrap()[0]) >= 2);
    }

    // ===== cache key properties =====

    /// Writes `value` as JSON text with each object's keys in an order given by `seed`.
    fn shuffled_json(value: &Value, seed: u64, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                let n = entries.len();
                for i in 0..n {
                    let j = (seed
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(i as u64)
                        % n as u64) as usize;
                    entries.swap(i, j);
                }
                out.push_str("{ ");
                for (i, (key, value)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(" ,\n ");
                    }
                    out.push_str(&serde_json::to_string(key).unwrap());
                    out.push_str(" :  ");
                    shuffled_json(value, seed.rotate_left(7) ^ i as u64, out);
                }
                out.push_str(" }");
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    shuffled_json(item, seed.rotate_left(3) ^ i as u64, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    fn request_json(messages: &[(bool, String)], model: &str, temperature: f64) -> Value {
        let messages: Vec<Value> = messages
            .iter()
            .map(|(user, text)| json!({ "role": if *user { "user" } else { "assistant" }, "content": text }))
            .collect();
        json!({
            "model": model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": 512,
            "tools": [ { "type": "function", "function": {
                "name": "f", "parameters": { "type": "object", "required": ["a"],
                "properties": { "a": { "type": "string" }, "b": { "type": "integer" } } }
            } } ],
            "response_format": { "type": "json_schema", "json_schema": { "name": "x", "strict": true } },
            "logit_bias": { "50256": -100, "13": 5 }
        })
    }

    fn message() -> impl Strategy<Value = (bool, String)> {
        (any::<bool>(), "[a-zA-Z0-9 .,!?{}\":\\\\é😀]{0,40}")
    }

    proptest! {
        #[test]
        fn key_ignores_key_order_whitespace_stream_and_user(
            messages in prop::collection::vec(message(), 1..6),
            seed in any::<u64>(),
            stream in any::<bool>(),
            user in prop::option::of("[a-z0-9-]{1,12}"),
        ) {
            let value = request_json(&messages, "gpt-4o", 0.0);
            let plain: ChatRequest = parse(&value);
            let mut text = String::new();
            shuffled_json(&value, seed, &mut text);
            let mut reordered: ChatRequest = serde_json::from_str(&text).unwrap();
            reordered.stream = Some(stream);
            reordered.options_mut().stream_options = stream.then(Default::default);
            reordered.options_mut().user = user;
            prop_assert_eq!(key(&plain), key(&reordered));
        }

        #[test]
        fn key_changes_with_a_message_or_the_model(
            messages in prop::collection::vec(message(), 1..6),
            which in any::<prop::sample::Index>(),
            extra in "[a-z]{1,8}",
        ) {
            let plain: ChatRequest = parse(&request_json(&messages, "gpt-4o", 0.0));
            let mut changed = messages.clone();
            let at = which.index(changed.len());
            changed[at].1.push_str(&extra);
            prop_assert_ne!(key(&plain), key(&parse(&request_json(&changed, "gpt-4o", 0.0))));
            prop_assert_ne!(key(&plain), key(&parse(&request_json(&messages, "gpt-4o-mini", 0.0))));
            prop_assert_ne!(key(&plain), key(&parse(&request_json(&messages, "gpt-4o", 0.5))));
        }
    }

    #[test]
    fn key_tells_image_and_text_parts_apart() {
        let text_only = ChatRequest::new(
            "gpt-4o",
            vec![Message {
                content: Some(Content::Parts(vec![ContentPart::text("look")])),
                ..Message::user("")
            }],
        );
        let with_image = ChatRequest::new(
            "gpt-4o",
            vec![Message {
                content: Some(Content::Parts(vec![
                    ContentPart::text("look"),
                    ContentPart::image_url("https://example.com/cat.png"),
                ])),
                ..Message::user("")
            }],
        );
        assert_ne!(key(&text_only), key(&with_image));
        let tools =
            text_only
                .clone()
                .with_tools(vec![Tool::function("f", "d", json!({"type": "object"}))]);
        assert_ne!(key(&text_only), key(&tools));
    }
}
