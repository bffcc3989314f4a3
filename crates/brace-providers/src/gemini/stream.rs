//! [`GeminiDecoder`]: Gemini's streamed `GenerateContentResponse`s turned into OpenAI-style
//! chunks.

use super::translate::{UsageMetadata, blocked, candidate_parts, finish_reason};
use crate::provider::unix_now;
use crate::sse::{DecodeError, Flow, SseDecoder, SseEvent};
use brace_llm::error::{LlmError, LlmErrorKind};
use brace_llm::response::StreamChunk;
use brace_llm::types::{
    ChatChunk, ChunkChoice, Delta, Extra, FunctionCallDelta, Role, ToolCallDelta,
};

/// Turns the events of `streamGenerateContent?alt=sse` (each a whole
/// `GenerateContentResponse` holding the next piece of each candidate) into OpenAI-style
/// [`ChatChunk`]s.
///
/// The first chunk of each candidate carries the role; text parts become content deltas,
/// `functionCall` parts (which Gemini sends whole) tool-call deltas; a `finishReason` ends
/// the candidate. Gemini sends no end-of-stream event: [`finish`](Self::finish) says
/// whether every candidate finished, and gives the usage chunk if the caller asked for it.
///
/// ```
/// use brace_providers::gemini::GeminiDecoder;
///
/// let mut state = GeminiDecoder::new("gemini-2.5-flash", false);
/// let first = state
///     .on_event(r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]},"index":0}]}"#)
///     .unwrap();
/// assert_eq!(first.choices[0].delta.content.as_deref(), Some("Hel"));
/// let last = state
///     .on_event(r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"lo"}]},"finishReason":"STOP","index":0}]}"#)
///     .unwrap();
/// assert_eq!(last.finish_reason().map(|r| r.as_str()), Some("stop"));
/// assert!(state.finish().unwrap().is_none());
/// ```
#[derive(Debug)]
pub struct GeminiDecoder {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    usage: Option<UsageMetadata>,
    candidates: Vec<CandidateState>,
    events: usize,
}

#[derive(Debug, Default, Clone)]
struct CandidateState {
    started: bool,
    calls: u32,
    finished: bool,
}

impl GeminiDecoder {
    /// A state for a new stream from `model`; `include_usage` adds a usage chunk at the end.
    pub fn new(model: impl Into<String>, include_usage: bool) -> Self {
        let created = unix_now();
        Self {
            id: format!("gemini-{created}"),
            model: model.into(),
            created,
            include_usage,
            usage: None,
            candidates: Vec::new(),
            events: 0,
        }
    }

    /// The id chunks carry (Gemini's `responseId` once seen).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The model that answers (Gemini's `modelVersion` once seen).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Handles one event's `data`: the chunk it gives.
    ///
    /// # Errors
    ///
    /// A [`LlmErrorKind::ContentFiltered`] error if the prompt was blocked; the provider's
    /// error for an error object in the stream (`RESOURCE_EXHAUSTED` is
    /// [`LlmErrorKind::RateLimited`], …); a [`LlmErrorKind::MalformedResponse`] error for
    /// data that is not a response.
    pub fn on_event(&mut self, data: &str) -> Result<ChatChunk, LlmError> {
        let response = super::translate::parse(data.as_bytes())?;
        if let Some(err) = blocked(&response) {
            return Err(err);
        }
        self.events += 1;
        if let Some(id) = response.response_id {
            self.id = id;
        }
        if let Some(model) = response.model_version {
            self.model = model;
        }
        if response.usage_metadata.is_some() {
            self.usage = response.usage_metadata;
        }
        let mut choices = Vec::with_capacity(response.candidates.len());
        for (position, candidate) in response.candidates.into_iter().enumerate() {
            let index = candidate.index.unwrap_or(position as u32);
            let slot = index as usize;
            if self.candidates.len() <= slot {
                self.candidates
                    .resize_with(slot + 1, CandidateState::default);
            }
            let state = &mut self.candidates[slot];
            let (text, calls) = candidate_parts(candidate.content, state.calls as usize);
            let role = (!state.started).then_some(Role::Assistant);
            state.started = true;
            let tool_calls = (!calls.is_empty()).then(|| {
                calls
                    .into_iter()
                    .map(|call| {
                        let delta = ToolCallDelta {
                            index: state.calls,
                            id: Some(call.id),
                            kind: Some(call.kind),
                            function: Some(FunctionCallDelta {
                                name: Some(call.function.name),
                                arguments: Some(call.function.arguments),
                            }),
                        };
                        state.calls += 1;
                        delta
                    })
                    .collect()
            });
            let finish = candidate.finish_reason.as_deref().map(|reason| {
                state.finished = true;
                finish_reason(reason, state.calls > 0)
            });
            choices.push(ChunkChoice {
                index,
                delta: Delta {
                    role,
                    content: (!text.is_empty() || role.is_some()).then_some(text),
                    tool_calls,
                    extra: Extra::new(),
                },
                finish_reason: finish,
                extra: Extra::new(),
            });
        }
        Ok(ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: None,
            extra: Extra::new(),
        })
    }

    /// Called when the byte stream ends: the usage chunk, if the caller asked for usage and
    /// Gemini reported it.
    ///
    /// # Errors
    ///
    /// A [`LlmErrorKind::StreamInterrupted`] error if a candidate never got a finish
    /// reason (or none ever came): the answer was cut.
    pub fn finish(&self) -> Result<Option<ChatChunk>, LlmError> {
        let unfinished = self.candidates.is_empty()
            || self.candidates.iter().any(|candidate| !candidate.finished);
        if unfinished {
            return Err(LlmError::new(
                LlmErrorKind::StreamInterrupted,
                format!(
                    "Gemini stream ended after {} event{} without a finish reason",
                    self.events,
                    if self.events == 1 { "" } else { "s" }
                ),
            ));
        }
        Ok(self
            .usage
            .as_ref()
            .filter(|_| self.include_usage)
            .map(|usage| ChatChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk".to_owned(),
                created: self.created,
                model: self.model.clone(),
                choices: Vec::new(),
                usage: Some(usage.to_usage()),
                extra: Extra::new(),
            }))
    }
}

impl SseDecoder for GeminiDecoder {
    fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<StreamChunk>,
    ) -> Result<Flow, DecodeError> {
        match self.on_event(&event.data) {
            Ok(chunk) => out.push(chunk.into()),
            Err(err) if err.kind() == LlmErrorKind::MalformedResponse => {
                return Err(DecodeError::Malformed(err.message().to_owned()));
            }
            Err(err) => return Err(DecodeError::Fatal(err)),
        }
        Ok(Flow::Continue)
    }

    fn finish(
        &mut self,
        _saw_finish_reason: bool,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), LlmError> {
        out.extend(
            GeminiDecoder::finish(self)?
                .into_iter()
                .map(StreamChunk::from),
        );
        Ok(())
    }
}
