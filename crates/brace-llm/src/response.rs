//! [`ChatResponse`]: a whole completion or a stream of chunks, and who served it.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;

use crate::error::LlmError;
use crate::types::{
    ChatChunk, ChatCompletion, Choice, ChunkChoice, Delta, Extra, FinishReason, FunctionCall,
    FunctionCallDelta, Message, Role, ToolCall, ToolCallDelta, Usage,
};

pub use crate::degrade::Degradation;
pub use brace_core::degrade::Origin;

/// Who served a response and how.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseMeta {
    /// The provider that answered (its configured name).
    pub provider: Arc<str>,
    /// The model that really answered.
    pub model: String,
    /// Which degradation level answered and what it changed, if a degrade layer handled the
    /// request.
    pub degradation: Option<Degradation>,
}

impl ResponseMeta {
    /// Where the answer came from: what the degradation layer recorded, and a live answer
    /// when no degradation layer handled the request.
    pub fn origin(&self) -> Origin {
        self.degradation
            .as_ref()
            .map_or(Origin::Live, |degradation| degradation.origin)
    }

    /// Metadata for an answer from `provider`'s `model`.
    pub fn new(provider: impl Into<Arc<str>>, model: impl Into<String>) -> Self {
        Self {
            provider: provider.into(),
            model: model.into(),
            degradation: None,
        }
    }
}

/// A streamed answer: chunks, or an error that ends the stream.
///
/// An `Err` item is how a stream says it broke: after an error no further item is
/// meaningful, and a stream that ends without a finish reason and without an error has been
/// cut (see [`StreamAccumulator::finish`]).
///
/// Its items are [`StreamChunk`]s: each chunk with the JSON it was read from, for as long as
/// nothing changes it. A stream can be made of plain [`ChatChunk`]s (they carry no JSON).
pub struct ChatStream {
    inner: Pin<Box<dyn Stream<Item = Result<StreamChunk, LlmError>> + Send>>,
}

impl ChatStream {
    /// Wraps any stream of chunks: [`StreamChunk`]s, or [`ChatChunk`]s.
    pub fn new<S, T>(stream: S) -> Self
    where
        S: Stream<Item = Result<T, LlmError>> + Send + 'static,
        T: Into<StreamChunk>,
    {
        Self {
            inner: Box::pin(IntoChunks { inner: stream }),
        }
    }

    /// A stream that yields the given items.
    pub fn from_items(items: Vec<Result<ChatChunk, LlmError>>) -> Self {
        Self::new(futures_util::stream::iter(items))
    }
}

pin_project_lite::pin_project! {
    /// A stream's items made [`StreamChunk`]s (for a stream of them already, nothing to do).
    struct IntoChunks<S> {
        #[pin]
        inner: S,
    }
}

impl<S, T> Stream for IntoChunks<S>
where
    S: Stream<Item = Result<T, LlmError>>,
    T: Into<StreamChunk>,
{
    type Item = Result<StreamChunk, LlmError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.project()
            .inner
            .poll_next(cx)
            .map(|item| item.map(|item| item.map(Into::into)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatStream").finish_non_exhaustive()
    }
}

impl Stream for ChatStream {
    type Item = Result<StreamChunk, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// A chunk as a stream carries it: the [`ChatChunk`], and the JSON it was read from for as
/// long as nothing has changed it — what [`CompletionBody`] is to a whole completion.
///
/// A provider that streams in OpenAI's format sends each chunk as the very JSON a caller of
/// an OpenAI-compatible API expects; [`json`](Self::json) gives it back as it came, so a
/// gateway forwards an unchanged chunk without writing it out again. The kept JSON goes the
/// moment the chunk is borrowed mutably ([`DerefMut`]), so what is sent is always what the
/// chunk holds.
///
/// It dereferences to the [`ChatChunk`].
///
/// ```
/// use brace_llm::response::StreamChunk;
///
/// let json = r#"{"id":"c-1","object":"chat.completion.chunk","created":1,"model":"m",
///     "choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#;
/// let mut chunk = StreamChunk::from_json(json.into()).unwrap();
/// assert_eq!(chunk.choices[0].delta.content.as_deref(), Some("hi"));
/// // Unchanged: the JSON as it came.
/// assert_eq!(chunk.json().unwrap(), json.as_bytes());
///
/// // Changed: no JSON kept; it is written out from the chunk.
/// chunk.model = "other".to_owned();
/// assert!(chunk.json().is_none());
/// ```
#[derive(Clone)]
pub struct StreamChunk {
    chunk: ChatChunk,
    json: Option<Bytes>,
}

impl StreamChunk {
    /// A chunk with no JSON kept.
    pub fn new(chunk: ChatChunk) -> Self {
        Self { chunk, json: None }
    }

    /// Reads a chunk from OpenAI's JSON ([`json_from_bytes`](crate::types::json_from_bytes))
    /// and keeps the JSON.
    ///
    /// # Errors
    ///
    /// `serde_json`'s error, if `json` is not a chat completion chunk.
    pub fn from_json(json: Bytes) -> serde_json::Result<Self> {
        let chunk = crate::types::json_from_bytes(&json)?;
        Ok(Self {
            chunk,
            json: Some(json),
        })
    }

    /// The JSON the chunk was read from, if it came as JSON and has not been changed since.
    pub fn json(&self) -> Option<&Bytes> {
        self.json.as_ref()
    }

    /// The chunk.
    pub fn into_inner(self) -> ChatChunk {
        self.chunk
    }
}

impl From<ChatChunk> for StreamChunk {
    fn from(chunk: ChatChunk) -> Self {
        Self::new(chunk)
    }
}

impl From<StreamChunk> for ChatChunk {
    fn from(chunk: StreamChunk) -> Self {
        chunk.chunk
    }
}

impl Deref for StreamChunk {
    type Target = ChatChunk;

    fn deref(&self) -> &ChatChunk {
        &self.chunk
    }
}

impl DerefMut for StreamChunk {
    /// The chunk, to change: the JSON it was read from is no longer its JSON, and is let go.
    fn deref_mut(&mut self) -> &mut ChatChunk {
        self.json = None;
        &mut self.chunk
    }
}

impl PartialEq for StreamChunk {
    /// Compares the chunks (not whether JSON is kept).
    fn eq(&self, other: &Self) -> bool {
        self.chunk == other.chunk
    }
}

impl fmt::Debug for StreamChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamChunk")
            .field("chunk", &self.chunk)
            .field("json_bytes", &self.json.as_ref().map(Bytes::len))
            .finish()
    }
}

/// The body of a response: a whole completion or a stream.
#[derive(Debug)]
pub enum ResponseBody {
    /// A whole completion.
    Complete(CompletionBody),
    /// A stream of chunks.
    Stream(ChatStream),
}

/// A whole completion as a response carries it: the [`ChatCompletion`], and the JSON it was
/// read from for as long as nothing has changed it.
///
/// A provider that answers in OpenAI's format sends the very JSON a caller of an
/// OpenAI-compatible API expects; [`to_json`](Self::to_json) gives those bytes back as they
/// came instead of writing the completion out again (a gateway forwards a whole answer
/// without encoding it, as a proxy would). The kept JSON goes the moment the completion is
/// borrowed mutably ([`DerefMut`]), so what is written is always what the completion
/// holds.
///
/// It dereferences to the [`ChatCompletion`].
///
/// ```
/// use brace_llm::response::CompletionBody;
///
/// let json = r#"{"id":"c-1","object":"chat.completion","created":1,"model":"m",
///     "choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
/// let mut body = CompletionBody::from_json(json.into()).unwrap();
/// assert_eq!(body.text(), "hi");
/// // Unchanged: the JSON as it came.
/// assert_eq!(body.to_json().unwrap(), json.as_bytes());
///
/// // Changed: written out from the completion.
/// body.model = "other".to_owned();
/// assert!(body.json().is_none());
/// let written: serde_json::Value = serde_json::from_slice(&body.to_json().unwrap()).unwrap();
/// assert_eq!(written["model"], "other");
/// ```
#[derive(Clone)]
pub struct CompletionBody(
    // Boxed, the JSON with it: every layer passes the response up by value, and inline they
    // would make each of those moves copy several times the bytes.
    Box<Kept>,
);

#[derive(Clone)]
struct Kept {
    completion: ChatCompletion,
    json: Option<Bytes>,
}

impl CompletionBody {
    /// A completion with no JSON kept: [`to_json`](Self::to_json) writes it out.
    pub fn new(completion: ChatCompletion) -> Self {
        Self(Box::new(Kept {
            completion,
            json: None,
        }))
    }

    /// Reads a completion from OpenAI's JSON
    /// ([`json_from_bytes`](crate::types::json_from_bytes)) and keeps the JSON.
    ///
    /// # Errors
    ///
    /// `serde_json`'s error, if `json` is not a chat completion.
    pub fn from_json(json: Bytes) -> serde_json::Result<Self> {
        let completion = crate::types::json_from_bytes(&json)?;
        Ok(Self(Box::new(Kept {
            completion,
            json: Some(json),
        })))
    }

    /// The JSON the completion was read from, if it came as JSON and has not been changed
    /// since.
    pub fn json(&self) -> Option<&Bytes> {
        self.0.json.as_ref()
    }

    /// The completion as OpenAI's JSON: the JSON it was read from while unchanged (no copy),
    /// else written out.
    ///
    /// # Errors
    ///
    /// `serde_json`'s error if the completion cannot be written (an extra field whose map
    /// has non-string keys cannot occur in a completion read from JSON).
    pub fn to_json(&self) -> serde_json::Result<Bytes> {
        if let Some(json) = &self.0.json {
            return Ok(json.clone());
        }
        let text: usize = self
            .0
            .completion
            .choices
            .iter()
            .map(|choice| match &choice.message.content {
                Some(crate::Content::Text(text)) => text.len(),
                _ => 256,
            })
            .sum();
        // One buffer sized for the completion: its text plus room for escapes, and the
        // fields around it.
        let mut out = Vec::with_capacity(384 + text + text / 8);
        serde_json::to_writer(&mut out, &self.0.completion)?;
        Ok(out.into())
    }

    /// The completion.
    pub fn into_inner(self) -> ChatCompletion {
        self.0.completion
    }
}

impl From<ChatCompletion> for CompletionBody {
    fn from(completion: ChatCompletion) -> Self {
        Self::new(completion)
    }
}

impl Deref for CompletionBody {
    type Target = ChatCompletion;

    fn deref(&self) -> &ChatCompletion {
        &self.0.completion
    }
}

impl DerefMut for CompletionBody {
    /// The completion, to change: the JSON it was read from is no longer its JSON, and is
    /// let go.
    fn deref_mut(&mut self) -> &mut ChatCompletion {
        self.0.json = None;
        &mut self.0.completion
    }
}

impl PartialEq for CompletionBody {
    /// Compares the completions (not whether JSON is kept).
    fn eq(&self, other: &Self) -> bool {
        self.0.completion == other.0.completion
    }
}

impl fmt::Debug for CompletionBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletionBody")
            .field("completion", &self.0.completion)
            .field("json_bytes", &self.0.json.as_ref().map(Bytes::len))
            .finish()
    }
}

/// What a provider service returns: the answer and who served it.
#[derive(Debug)]
pub struct ChatResponse {
    /// Who served it and how.
    pub meta: ResponseMeta,
    /// The answer.
    pub body: ResponseBody,
}

impl ChatResponse {
    /// A whole completion from `provider`; the model is taken from the completion.
    pub fn complete(provider: impl Into<Arc<str>>, completion: ChatCompletion) -> Self {
        Self {
            meta: ResponseMeta::new(provider, completion.model.clone()),
            body: ResponseBody::Complete(CompletionBody::new(completion)),
        }
    }

    /// A stream from `provider`'s `model`.
    pub fn stream(
        provider: impl Into<Arc<str>>,
        model: impl Into<String>,
        stream: ChatStream,
    ) -> Self {
        Self {
            meta: ResponseMeta::new(provider, model),
            body: ResponseBody::Stream(stream),
        }
    }

    /// `true` if the body is a stream.
    pub fn is_stream(&self) -> bool {
        matches!(self.body, ResponseBody::Stream(_))
    }

    /// The completion, if the body is whole.
    pub fn completion(&self) -> Option<&ChatCompletion> {
        match &self.body {
            ResponseBody::Complete(completion) => Some(completion),
            ResponseBody::Stream(_) => None,
        }
    }

    /// Turns the response into a whole completion, reading a stream to its end.
    ///
    /// # Errors
    ///
    /// The stream's error if it broke, or a [`LlmErrorKind::StreamInterrupted`] error if it
    /// ended without a finish reason (a truncated answer is never returned as complete).
    ///
    /// [`LlmErrorKind::StreamInterrupted`]: crate::LlmErrorKind::StreamInterrupted
    pub async fn into_completion(self) -> Result<ChatCompletion, LlmError> {
        match self.body {
            ResponseBody::Complete(completion) => Ok(completion.into_inner()),
            ResponseBody::Stream(mut stream) => {
                let mut accumulator = StreamAccumulator::new();
                while let Some(chunk) =
                    std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await
                {
                    let chunk = chunk?;
                    accumulator.push(&chunk);
                }
                accumulator
                    .finish()
                    .map_err(|err| err.with_provider(self.meta.provider.clone()))
            }
        }
    }
}

// ===== StreamAccumulator =====

/// Builds a [`ChatCompletion`] from the chunks of a stream, as they pass.
///
/// Used to answer a non-streamed request from a streamed provider, to cache a streamed
/// answer once it is complete, and to know what text has reached a caller when a stream
/// breaks.
#[derive(Debug, Default, Clone)]
pub struct StreamAccumulator {
    id: String,
    model: String,
    created: u64,
    choices: Vec<ChoiceState>,
    usage: Option<Usage>,
    extra: Extra,
    chunks: usize,
}

#[derive(Debug, Default, Clone)]
struct ChoiceState {
    role: Option<Role>,
    content: String,
    has_content: bool,
    tool_calls: Vec<ToolCallState>,
    finish_reason: Option<FinishReason>,
    extra: Extra,
}

#[derive(Debug, Default, Clone)]
struct ToolCallState {
    id: String,
    kind: Option<String>,
    name: String,
    arguments: String,
}

impl StreamAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one chunk.
    pub fn push(&mut self, chunk: &ChatChunk) {
        self.chunks += 1;
        if self.id.is_empty() {
            self.id.clone_from(&chunk.id);
            self.created = chunk.created;
            self.extra.clone_from(&chunk.extra);
        }
        if !chunk.model.is_empty() {
            self.model.clone_from(&chunk.model);
        }
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.clone());
        }
        for choice in &chunk.choices {
            let index = choice.index as usize;
            if self.choices.len() <= index {
                self.choices.resize_with(index + 1, ChoiceState::default);
            }
            let state = &mut self.choices[index];
            if let Some(role) = choice.delta.role {
                state.role = Some(role);
            }
            if let Some(text) = &choice.delta.content {
                state.content.push_str(text);
                state.has_content = true;
            }
            for call in choice.delta.tool_calls.iter().flatten() {
                let at = call.index as usize;
                if state.tool_calls.len() <= at {
                    state.tool_calls.resize_with(at + 1, ToolCallState::default);
                }
                let tool = &mut state.tool_calls[at];
                if let Some(id) = &call.id {
                    tool.id.clone_from(id);
                }
                if let Some(kind) = &call.kind {
                    tool.kind = Some(kind.clone());
                }
                if let Some(function) = &call.function {
                    if let Some(name) = &function.name {
                        tool.name.push_str(name);
                    }
                    if let Some(arguments) = &function.arguments {
                        tool.arguments.push_str(arguments);
                    }
                }
            }
            if choice.finish_reason.is_some() {
                state.finish_reason.clone_from(&choice.finish_reason);
            }
        }
    }

    /// How many chunks were added.
    pub fn chunks(&self) -> usize {
        self.chunks
    }

    /// The text of the first choice so far.
    pub fn text(&self) -> &str {
        self.choices.first().map_or("", |choice| &choice.content)
    }

    /// `true` once any choice has a finish reason.
    pub fn is_finished(&self) -> bool {
        !self.choices.is_empty()
            && self
                .choices
                .iter()
                .all(|choice| choice.finish_reason.is_some())
    }

    /// `true` if any tool-call fragment has been seen.
    pub fn has_tool_calls(&self) -> bool {
        self.choices
            .iter()
            .any(|choice| !choice.tool_calls.is_empty())
    }

    /// The usage reported by the stream, if any.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// The completion the chunks add up to, whatever state the stream is in.
    pub fn snapshot(&self) -> ChatCompletion {
        ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: self
                .choices
                .iter()
                .enumerate()
                .map(|(index, state)| Choice {
                    index: index as u32,
                    message: Message {
                        role: state.role.unwrap_or(Role::Assistant),
                        content: (state.has_content || state.tool_calls.is_empty())
                            .then(|| crate::types::Content::Text(state.content.clone())),
                        name: None,
                        tool_calls: (!state.tool_calls.is_empty()).then(|| {
                            state
                                .tool_calls
                                .iter()
                                .map(|call| ToolCall {
                                    id: call.id.clone(),
                                    kind: call.kind.clone().unwrap_or_else(|| "function".into()),
                                    function: FunctionCall {
                                        name: call.name.clone(),
                                        arguments: call.arguments.clone(),
                                    },
                                })
                                .collect()
                        }),
                        tool_call_id: None,
                        extra: Extra::new(),
                    },
                    finish_reason: state.finish_reason.clone(),
                    extra: state.extra.clone(),
                })
                .collect(),
            usage: self.usage.clone(),
            extra: self.extra.clone(),
        }
    }

    /// The whole completion, if the stream finished.
    ///
    /// # Errors
    ///
    /// A [`LlmErrorKind::StreamInterrupted`](crate::LlmErrorKind::StreamInterrupted) error if
    /// no choice got a finish reason: the answer is truncated.
    pub fn finish(self) -> Result<ChatCompletion, LlmError> {
        if self.is_finished() {
            Ok(self.snapshot())
        } else {
            Err(LlmError::new(
                crate::LlmErrorKind::StreamInterrupted,
                format!(
                    "stream ended after {} chunk{} without a finish reason",
                    self.chunks,
                    if self.chunks == 1 { "" } else { "s" }
                ),
            ))
        }
    }
}

// ===== ChatCompletion -> chunks =====

impl ChatCompletion {
    /// The chunks a provider would have streamed for this completion: a role chunk, one
    /// content (and tool-call) chunk and a finish chunk per choice, then a usage chunk if
    /// `include_usage` and the completion has usage. Used to replay a cached answer as a
    /// stream.
    pub fn to_chunks(&self, include_usage: bool) -> Vec<ChatChunk> {
        let chunk = |choices: Vec<ChunkChoice>, usage: Option<Usage>| ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            extra: Extra::new(),
        };
        let choice = |index: u32, delta: Delta, finish_reason: Option<FinishReason>| ChunkChoice {
            index,
            delta,
            finish_reason,
            extra: Extra::new(),
        };
        let mut chunks = Vec::with_capacity(self.choices.len() * 3 + 1);
        for c in &self.choices {
            chunks.push(chunk(
                vec![choice(
                    c.index,
                    Delta {
                        role: Some(c.message.role),
                        content: Some(String::new()),
                        ..Delta::default()
                    },
                    None,
                )],
                None,
            ));
            let text = c.message.text();
            let tool_calls = c.message.tool_calls.as_ref().map(|calls| {
                calls
                    .iter()
                    .enumerate()
                    .map(|(i, call)| ToolCallDelta {
                        index: i as u32,
                        id: Some(call.id.clone()),
                        kind: Some(call.kind.clone()),
                        function: Some(FunctionCallDelta {
                            name: Some(call.function.name.clone()),
                            arguments: Some(call.function.arguments.clone()),
                        }),
                    })
                    .collect()
            });
            if !text.is_empty() || tool_calls.is_some() {
                chunks.push(chunk(
                    vec![choice(
                        c.index,
                        Delta {
                            content: (!text.is_empty()).then_some(text),
                            tool_calls,
                            ..Delta::default()
                        },
                        None,
                    )],
                    None,
                ));
            }
            chunks.push(chunk(
                vec![choice(
                    c.index,
                    Delta::default(),
                    Some(c.finish_reason.clone().unwrap_or(FinishReason::Stop)),
                )],
                None,
            ));
        }
        if include_usage && let Some(usage) = &self.usage {
            chunks.push(chunk(Vec::new(), Some(usage.clone())));
        }
        chunks
    }
}
