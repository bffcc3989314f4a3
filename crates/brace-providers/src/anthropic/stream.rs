//! [`AnthropicDecoder`]: Anthropic's streaming events turned into OpenAI-style chunks.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use super::translate::{AnthropicUsage, error_event, finish_reason};
use crate::provider::unix_now;
use crate::sse::{DecodeError, Flow, SseDecoder, SseEvent};
use brace_llm::error::{LlmError, LlmErrorKind};
use brace_llm::response::StreamChunk;
use brace_llm::types::{
    ChatChunk, ChunkChoice, Delta, Extra, FinishReason, FunctionCallDelta, Role, ToolCallDelta,
    Usage,
};

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u32,
        content_block: StartBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    ContentBlockStop {},
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<AnthropicUsage>,
    },
    MessageStop {},
    Ping {},
    Error {},
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// Turns Anthropic stream events into OpenAI-style [`ChatChunk`]s, one event at a time.
///
/// `message_start` gives the role chunk; text and `input_json_delta` deltas give content
/// and tool-call chunks (tool calls numbered in the order they start); `message_delta`
/// gives the finish-reason chunk; `message_stop` ends the stream, with a usage-only chunk
/// if the caller asked for usage; `ping`, `content_block_stop`, thinking deltas and unknown
/// events give nothing; an `error` event is an error.
///
/// ```
/// use brace_providers::anthropic::AnthropicDecoder;
///
/// let mut decoder = AnthropicDecoder::new(false);
/// let events = [
///     r#"{"type":"message_start","message":{"id":"msg_1","model":"claude-sonnet-4-5","usage":{"input_tokens":5,"output_tokens":1}}}"#,
///     r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
///     r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
///     r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}"#,
///     r#"{"type":"message_stop"}"#,
/// ];
/// let chunks: Vec<_> = events
///     .iter()
///     .filter_map(|event| decoder.on_event(event).unwrap())
///     .collect();
/// assert_eq!(chunks[1].choices[0].delta.content.as_deref(), Some("Hi"));
/// assert_eq!(chunks[2].finish_reason().map(|r| r.as_str()), Some("stop"));
/// assert!(decoder.finish().is_ok());
/// ```
#[derive(Debug, Default)]
pub struct AnthropicDecoder {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    usage: AnthropicUsage,
    /// Content block index -> tool call index.
    tools: HashMap<u32, u32>,
    /// Blocks of kinds brace does not turn into chunks (thinking, server tool use, …).
    skipped_blocks: Vec<u32>,
    started: bool,
    finished: bool,
    stopped: bool,
}

impl AnthropicDecoder {
    /// A state for a new stream; `include_usage` adds a usage chunk at the end.
    pub fn new(include_usage: bool) -> Self {
        Self {
            include_usage,
            created: unix_now(),
            ..Self::default()
        }
    }

    /// The message id, once `message_start` has been seen.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The model that answers, once `message_start` has been seen.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The usage reported so far.
    pub fn usage(&self) -> Usage {
        self.usage.to_usage()
    }

    /// `true` once `message_stop` has been seen.
    pub fn is_done(&self) -> bool {
        self.stopped
    }

    fn chunk(&self, delta: Delta, finish_reason: Option<FinishReason>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
                extra: Extra::new(),
            }],
            usage: None,
            extra: Extra::new(),
        }
    }

    /// Handles one event's `data`: the chunk it gives, if any.
    ///
    /// # Errors
    ///
    /// The provider's error for an `error` event (`overloaded_error` is
    /// [`LlmErrorKind::Overloaded`], `rate_limit_error` [`LlmErrorKind::RateLimited`], …); a
    /// [`LlmErrorKind::MalformedResponse`] error for data that is not an event or a delta
    /// for a block that never started.
    pub fn on_event(&mut self, data: &str) -> Result<Option<ChatChunk>, LlmError> {
        let event: Event = serde_json::from_str(data).map_err(|err| {
            LlmError::new(
                LlmErrorKind::MalformedResponse,
                format!("not an Anthropic stream event: {err}"),
            )
        })?;
        match event {
            Event::MessageStart { message } => {
                self.id = message.id;
                self.model = message.model;
                if let Some(usage) = &message.usage {
                    self.usage.merge(usage);
                }
                self.started = true;
                Ok(Some(self.chunk(
                    Delta {
                        role: Some(Role::Assistant),
                        content: Some(String::new()),
                        ..Delta::default()
                    },
                    None,
                )))
            }
            Event::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                StartBlock::Text { text } if !text.is_empty() => {
                    Ok(Some(self.chunk(Delta::text(text), None)))
                }
                StartBlock::ToolUse { id, name } => {
                    let call = self.tools.len() as u32;
                    self.tools.insert(index, call);
                    Ok(Some(self.chunk(
                        Delta {
                            tool_calls: Some(vec![ToolCallDelta {
                                index: call,
                                id: Some(id),
                                kind: Some("function".to_owned()),
                                function: Some(FunctionCallDelta {
                                    name: Some(name),
                                    arguments: Some(String::new()),
                                }),
                            }]),
                            ..Delta::default()
                        },
                        None,
                    )))
                }
                StartBlock::Other => {
                    self.skipped_blocks.push(index);
                    Ok(None)
                }
                StartBlock::Text { .. } => Ok(None),
            },
            Event::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => Ok(Some(self.chunk(Delta::text(text), None))),
                BlockDelta::InputJsonDelta { partial_json } => {
                    let Some(&call) = self.tools.get(&index) else {
                        // A server tool's input (web search, …) is not the caller's.
                        if self.skipped_blocks.contains(&index) {
                            return Ok(None);
                        }
                        return Err(LlmError::new(
                            LlmErrorKind::MalformedResponse,
                            format!(
                                "input_json_delta for content block {index}, which is not a tool_use block"
                            ),
                        ));
                    };
                    Ok(Some(self.chunk(
                        Delta {
                            tool_calls: Some(vec![ToolCallDelta {
                                index: call,
                                id: None,
                                kind: None,
                                function: Some(FunctionCallDelta {
                                    name: None,
                                    arguments: Some(partial_json),
                                }),
                            }]),
                            ..Delta::default()
                        },
                        None,
                    )))
                }
                BlockDelta::Other => Ok(None),
            },
            Event::MessageDelta { delta, usage } => {
                if let Some(usage) = &usage {
                    self.usage.merge(usage);
                }
                match delta.stop_reason {
                    Some(reason) => {
                        self.finished = true;
                        Ok(Some(
                            self.chunk(Delta::default(), Some(finish_reason(&reason))),
                        ))
                    }
                    None => Ok(None),
                }
            }
            Event::MessageStop {} => {
                self.stopped = true;
                if self.include_usage {
                    let mut chunk = self.chunk(Delta::default(), None);
                    chunk.choices.clear();
                    chunk.usage = Some(self.usage.to_usage());
                    Ok(Some(chunk))
                } else {
                    Ok(None)
                }
            }
            Event::Error {} => {
                let value: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                Err(error_event(&value))
            }
            Event::ContentBlockStop {} | Event::Ping {} | Event::Unknown => Ok(None),
        }
    }

    /// Called when the byte stream ends.
    ///
    /// # Errors
    ///
    /// A [`LlmErrorKind::StreamInterrupted`] error if neither a stop reason nor
    /// `message_stop` was seen: the answer was cut.
    pub fn finish(&self) -> Result<(), LlmError> {
        if self.stopped || self.finished {
            Ok(())
        } else {
            Err(LlmError::new(
                LlmErrorKind::StreamInterrupted,
                if self.started {
                    "Anthropic stream ended before `message_stop`"
                } else {
                    "Anthropic stream ended before `message_start`"
                },
            ))
        }
    }
}

impl SseDecoder for AnthropicDecoder {
    fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<StreamChunk>,
    ) -> Result<Flow, DecodeError> {
        match self.on_event(&event.data) {
            Ok(Some(chunk)) => out.push(chunk.into()),
            Ok(None) => {}
            Err(err) if err.kind() == LlmErrorKind::MalformedResponse => {
                return Err(DecodeError::Malformed(err.message().to_owned()));
            }
            Err(err) => return Err(DecodeError::Fatal(err)),
        }
        Ok(if self.is_done() {
            Flow::Done
        } else {
            Flow::Continue
        })
    }

    fn finish(
        &mut self,
        _saw_finish_reason: bool,
        _out: &mut Vec<StreamChunk>,
    ) -> Result<(), LlmError> {
        AnthropicDecoder::finish(self)
    }
}
