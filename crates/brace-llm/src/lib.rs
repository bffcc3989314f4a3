//! What brace knows about LLMs, without an HTTP stack.
//!
//! - [`ChatRequest`], [`Message`], [`Tool`], [`ChatCompletion`], [`ChatChunk`], [`Usage`]: the
//!   OpenAI chat-completions wire format, with unknown fields kept so nothing is lost in
//!   transit.
//! - [`ChatResponse`]: a whole completion or a [`ChatStream`] of chunks, with who served it
//!   ([`ResponseMeta`]: provider, model, origin, degradation level).
//! - [`LlmError`]: a provider failure, its [`LlmErrorKind`], status, message and retry-after,
//!   read from OpenAI, Anthropic and Gemini error bodies by [`LlmError::from_response`].
//! - [`LlmClassifier`]: what each kind of failure means to brace's layers (count against a
//!   circuit, retry, fail over), as a [`brace_core::Classify`].
//!
//! - [`commit`], [`guard::StreamGuardLayer`] and [`continuation::ContinuationLayer`]: a
//!   streamed answer's commit point (at its first token, or after a hold-back), its time
//!   limits, and its continuation on another provider after a break (with an assistant
//!   prefill, or a verified restart).
//! - [`fallback::FallbackLayer`]: on an error of a chosen kind (a content-policy refusal, a
//!   prompt too long), ask another service — named providers — instead.
//! - [`degrade`]: [`ChatRequest`] and [`ChatResponse`] as the degradation layer's request and
//!   response.
//!
//! brace-llm depends on no brace layer, and no layer depends on it: the layers are generic
//! and take an [`LlmClassifier`] (or any other classifier). The provider clients over HTTP
//! are in `brace-providers`, the simulated provider in `brace-sim`; both build on these
//! types.
//!
//! # Example
//!
//! ```
//! use brace_core::Classify;
//! use brace_llm::{ChatRequest, ChatResponse, LlmClassifier, LlmError};
//! use http::{HeaderMap, HeaderValue, StatusCode};
//!
//! // A real OpenAI request, with a field brace does not model.
//! let request: ChatRequest = serde_json::from_str(
//!     r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}],"logprobs":true}"#,
//! )
//! .unwrap();
//! assert_eq!(serde_json::to_value(&request).unwrap()["logprobs"], true);
//!
//! // A rate-limit answer, and what it means for the layers.
//! let mut headers = HeaderMap::new();
//! headers.insert("retry-after", HeaderValue::from_static("20"));
//! let body = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
//! let err = LlmError::from_response(StatusCode::TOO_MANY_REQUESTS, &headers, body);
//! let outcome = Classify::<ChatResponse, _>::classify(&LlmClassifier::new(), Err(&err));
//! assert!(outcome.is_failure() && outcome.is_retryable() && outcome.should_failover());
//! assert_eq!(outcome.retry_after(), Some(std::time::Duration::from_secs(20)));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod classify;
pub mod commit;
pub mod continuation;
pub mod degrade;
pub mod error;
mod extra;
pub mod fallback;
pub mod guard;
pub mod response;
pub mod types;

pub use self::classify::LlmClassifier;
pub use self::error::{LlmError, LlmErrorKind};
pub use self::response::{
    ChatResponse, ChatStream, CompletionBody, Degradation, Origin, ResponseBody, ResponseMeta,
    StreamAccumulator, StreamChunk,
};
pub use self::types::{
    ChatChunk, ChatCompletion, ChatOptions, ChatRequest, Choice, ChunkChoice, Content, ContentPart,
    Delta, FinishReason, FunctionCall, FunctionCallDelta, FunctionDefinition, ImageUrl, Message,
    ModelName, Role, Stop, StreamOptions, Tool, ToolCall, ToolCallDelta, Usage,
};
