//! What a simulated provider does: [`Behavior`] and its parts, serde-(de)serializable so a
//! control endpoint or a YAML config can set it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use brace_llm::error::LlmErrorKind;
use brace_llm::types::{ChatRequest, Role};

/// What a simulated provider does with each call.
///
/// Serialized with a `type` tag, so JSON and YAML read naturally:
///
/// ```
/// use brace_sim::Behavior;
///
/// let behavior: Behavior = serde_json::from_str(
///     r#"{"type": "sequence",
///         "steps": [{"type": "fail", "kind": "rate_limited", "retry_after": "2s"}],
///         "then": {"type": "succeed", "text": "hello"}}"#,
/// )
/// .unwrap();
/// assert!(matches!(behavior, Behavior::Sequence { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Behavior {
    /// Answer (streamed if the request asks for a stream).
    Succeed(Reply),
    /// Fail with an error of the given kind.
    Fail(Failure),
    /// Wait, then do what `then` says.
    Delay {
        /// How long to wait before acting.
        #[serde(with = "brace_core::duration")]
        delay: Duration,
        /// What to do after the wait.
        then: Box<Behavior>,
    },
    /// Never answer: the call stays pending until the caller gives up (over HTTP: until the
    /// client times out or the server shuts down).
    Hang,
    /// With probability `probability` do `failure`, else `otherwise`. The draw comes from the
    /// provider's seeded generator, so a run is repeatable.
    Flaky {
        /// The chance of `failure`, from 0 to 1.
        probability: f64,
        /// What to do when the draw fails.
        failure: Box<Behavior>,
        /// What to do otherwise (by default, succeed).
        #[serde(default)]
        otherwise: Box<Behavior>,
    },
    /// The i-th call reaching this node does `steps[i]`; once the steps are used up, every
    /// call does `then` (by default, succeed).
    Sequence {
        /// The behaviours, in order.
        steps: Vec<Behavior>,
        /// What to do once the steps are used up.
        #[serde(default)]
        then: Box<Behavior>,
    },
    /// Do `then` if the request meets `when`, else `otherwise` (by default, succeed).
    When {
        /// The condition on the request.
        when: Condition,
        /// What to do if it holds.
        then: Box<Behavior>,
        /// What to do otherwise.
        #[serde(default)]
        otherwise: Box<Behavior>,
    },
    /// Over HTTP: the connection is dropped — before any response if `after_bytes` is 0
    /// (the client gets no status at all), else after `200`, the headers and `after_bytes`
    /// bytes of the answer (the body never ends properly). In process: a
    /// [`Connect`](LlmErrorKind::Connect) error if `after_bytes` is 0, else
    /// [`StreamInterrupted`](LlmErrorKind::StreamInterrupted).
    Drop {
        /// How many bytes of the real answer are sent before the connection is dropped.
        #[serde(default)]
        after_bytes: usize,
    },
    /// Over HTTP: `200` with a body that is not the expected JSON (`body`, or a broken JSON
    /// text by default). In process: a [`MalformedResponse`](LlmErrorKind::MalformedResponse)
    /// error.
    Malformed {
        /// The body to send.
        #[serde(default)]
        body: Option<String>,
    },
    /// Over HTTP: `200` with the real JSON answer cut in half (the connection closes
    /// cleanly). In process: a [`MalformedResponse`](LlmErrorKind::MalformedResponse) error.
    Truncated,
}

impl Default for Behavior {
    fn default() -> Self {
        Self::Succeed(Reply::default())
    }
}

impl Behavior {
    /// Succeed with the default reply.
    pub fn succeed() -> Self {
        Self::default()
    }

    /// Succeed with a given text.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Succeed(Reply::new().with_text(text))
    }

    /// Succeed with the given reply (and its stream settings).
    pub fn reply(reply: Reply) -> Self {
        Self::Succeed(reply)
    }

    /// Fail with an error of `kind` (the status and message that kind usually has).
    pub fn fail(kind: LlmErrorKind) -> Self {
        Self::Fail(Failure::new(kind))
    }

    /// Fail with the given failure.
    pub fn failure(failure: Failure) -> Self {
        Self::Fail(failure)
    }

    /// Rate-limited (429) with a retry-after delay.
    pub fn rate_limited(retry_after: Duration) -> Self {
        Self::Fail(Failure::new(LlmErrorKind::RateLimited).with_retry_after(retry_after))
    }

    /// Wait `delay`, then do `then`.
    pub fn delay(delay: Duration, then: Behavior) -> Self {
        Self::Delay {
            delay,
            then: Box::new(then),
        }
    }

    /// Never answer.
    pub fn hang() -> Self {
        Self::Hang
    }

    /// Do `failure` with probability `probability`, else succeed.
    pub fn flaky(probability: f64, failure: Behavior) -> Self {
        Self::Flaky {
            probability,
            failure: Box::new(failure),
            otherwise: Box::default(),
        }
    }

    /// Do each of `steps` once, in order, then `then` forever.
    pub fn sequence(steps: impl IntoIterator<Item = Behavior>, then: Behavior) -> Self {
        Self::Sequence {
            steps: steps.into_iter().collect(),
            then: Box::new(then),
        }
    }

    /// Do `then` for requests that meet `when`, else succeed.
    pub fn when(when: Condition, then: Behavior) -> Self {
        Self::When {
            when,
            then: Box::new(then),
            otherwise: Box::default(),
        }
    }

    /// Refuse a request that ends with an assistant prefill — a `400 bad request` with the
    /// message current models answer it with — and do `otherwise` with every other request.
    /// A provider that rejects prefill and, by default, answers the same request with the
    /// same text: the fallback a verified restart can continue on.
    ///
    /// ```
    /// use brace_sim::{Behavior, Condition};
    ///
    /// let behavior = Behavior::reject_prefill(Behavior::succeed());
    /// assert!(matches!(behavior, Behavior::When { when: Condition::Prefill, .. }));
    /// ```
    pub fn reject_prefill(otherwise: Behavior) -> Self {
        Self::When {
            when: Condition::Prefill,
            then: Box::new(Self::Fail(
                Failure::new(LlmErrorKind::BadRequest).with_message(PREFILL_REJECTED),
            )),
            otherwise: Box::new(otherwise),
        }
    }

    /// Drop the connection after `after_bytes` bytes of the answer.
    pub fn drop_connection(after_bytes: usize) -> Self {
        Self::Drop { after_bytes }
    }

    /// Answer `200` with a body that is not valid JSON.
    pub fn malformed() -> Self {
        Self::Malformed { body: None }
    }

    /// Answer `200` with the JSON cut in half.
    pub fn truncated() -> Self {
        Self::Truncated
    }
}

/// The message of [`Behavior::reject_prefill`]'s refusal.
pub const PREFILL_REJECTED: &str = "This model does not support assistant message prefill. \
     The conversation must end with a user message.";

/// A condition on the request, for [`Behavior::When`].
///
/// Serialized as a name (`"prefill"`, `"stream"`, `"tools"`, `"images"`) or `{"model":
/// "name"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The conversation ends with an assistant message (a prefill to continue).
    Prefill,
    /// The request asks for a stream.
    Stream,
    /// The request offers tools.
    Tools,
    /// A message carries an image.
    Images,
    /// The request asks for this model.
    Model(String),
}

impl Condition {
    /// `true` if `request` meets the condition.
    pub fn matches(&self, request: &ChatRequest) -> bool {
        match self {
            Self::Prefill => request
                .messages
                .last()
                .is_some_and(|message| message.role == Role::Assistant),
            Self::Stream => request.is_stream(),
            Self::Tools => request.has_tools(),
            Self::Images => request.has_images(),
            Self::Model(model) => request.model == *model,
        }
    }
}

/// A tool call the simulated model makes instead of answering with text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallReply {
    /// The function called.
    pub name: String,
    /// The arguments, a JSON text (streamed in [`Reply::chunks`] pieces).
    #[serde(default = "empty_object")]
    pub arguments: String,
}

fn empty_object() -> String {
    "{}".to_owned()
}

impl ToolCallReply {
    /// A call to `name` with `arguments` (JSON text).
    pub fn new(name: impl Into<String>, arguments: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            arguments: arguments.into(),
        }
    }
}

/// A successful answer, and how it is streamed when the request asks for a stream.
///
/// The answer is deterministic: the same request gets the same text (by default derived
/// from the request, padded to [`chunks`](Self::chunks) words), from this provider or any
/// other simulated one with the same reply — what a model at temperature 0 does, and what a
/// verified restart relies on. [`diverge_after`](Self::diverge_after) makes it sample
/// instead.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Reply {
    /// The answer's text; by default `simulated answer to: <the last user message>`. When
    /// the conversation ends with an assistant message that begins the answer (a prefill),
    /// only the rest of the answer is sent, so the two add up to the whole.
    pub text: Option<String>,
    /// From this piece on (counted from 0), the answer's pieces are replaced with words
    /// unique to the call: the text diverges from what the same request gets elsewhere (or
    /// on another call), as a model sampling at a temperature does.
    pub diverge_after: Option<usize>,
    /// Answer with this tool call (finish reason `tool_calls`) instead of text.
    pub tool_call: Option<ToolCallReply>,
    /// The model named in the answer; by default the provider's configured model, else the
    /// requested one.
    pub model: Option<String>,
    /// How many content chunks a stream carries (the text is split into that many pieces,
    /// padded with extra words if it has fewer); by default one chunk per word.
    pub chunks: Option<usize>,
    /// The finish reason (`stop` by default; `length` when `max_tokens` cut the answer).
    pub finish_reason: Option<String>,
    /// Streams: the wait between the headers (and the role chunk) and the first content
    /// chunk.
    #[serde(with = "brace_core::duration")]
    pub first_token_delay: Duration,
    /// Streams: the wait before each chunk after the first content chunk.
    #[serde(with = "brace_core::duration")]
    pub chunk_delay: Duration,
    /// Streams: a fault injected into the stream.
    pub fault: Option<StreamFault>,
}

impl Reply {
    /// The default reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers with `text`.
    #[must_use]
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Diverges from the deterministic text from piece `at` on (see
    /// [`diverge_after`](Self::diverge_after)).
    #[must_use]
    pub fn with_divergence_after(mut self, at: usize) -> Self {
        self.diverge_after = Some(at);
        self
    }

    /// Answers with a tool call instead of text.
    #[must_use]
    pub fn with_tool_call(mut self, tool_call: ToolCallReply) -> Self {
        self.tool_call = Some(tool_call);
        self
    }

    /// Names `model` in the answer.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Streams `chunks` content chunks.
    #[must_use]
    pub fn with_chunks(mut self, chunks: usize) -> Self {
        self.chunks = Some(chunks);
        self
    }

    /// Ends with `finish_reason` (`stop`, `length`, …).
    #[must_use]
    pub fn with_finish_reason(mut self, finish_reason: impl Into<String>) -> Self {
        self.finish_reason = Some(finish_reason.into());
        self
    }

    /// Waits `delay` before the first content chunk.
    #[must_use]
    pub fn with_first_token_delay(mut self, delay: Duration) -> Self {
        self.first_token_delay = delay;
        self
    }

    /// Waits `delay` before each later chunk.
    #[must_use]
    pub fn with_chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }

    /// Injects `fault` into the stream.
    #[must_use]
    pub fn with_fault(mut self, fault: StreamFault) -> Self {
        self.fault = Some(fault);
        self
    }
}

/// A fault injected into a streamed answer.
///
/// Positions count the events of the stream as the wire format has them: for OpenAI the
/// role chunk is event 0, then the content chunks, the finish chunk and the usage chunk; for
/// Anthropic `message_start`, `content_block_start`, `ping`, the deltas, `content_block_stop`,
/// `message_delta`, `message_stop`; for Gemini one event per content chunk. In process the
/// OpenAI positions apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamFault {
    /// `after` events are sent, then the stream breaks: over HTTP the connection is dropped
    /// (no `[DONE]`); in process an `Err` item of kind
    /// [`StreamInterrupted`](LlmErrorKind::StreamInterrupted) ends the stream.
    Break {
        /// Events sent before the break.
        after: usize,
    },
    /// `after` events are sent, then nothing more, ever (the connection stays open).
    Stall {
        /// Events sent before the stall.
        after: usize,
    },
    /// An invalid event is inserted before event `at`; the rest of the stream follows
    /// unchanged. In process it is an `Err` item of kind
    /// [`MalformedResponse`](LlmErrorKind::MalformedResponse), and the stream goes on if
    /// polled again.
    Malformed {
        /// Where the invalid event goes.
        at: usize,
    },
    /// `after` events are sent (1 by default: the OpenAI role chunk, before any content),
    /// then an in-band error event in the provider's format (in process: an `Err` item), and
    /// the stream ends.
    Error {
        /// Events sent before the error.
        #[serde(default = "one")]
        after: usize,
        /// The error.
        error: Failure,
    },
    /// OpenAI: the stream ends cleanly after its finish (and usage) chunk without the
    /// `data: [DONE]` sentinel. Other formats and in process: no change.
    MissingDone,
}

fn one() -> usize {
    1
}

/// A scripted failure: a kind, and optionally the status, retry-after and message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The kind, by its snake_case name (`rate_limited`, `overloaded`, `server_error`, …).
    #[serde(with = "kind_serde")]
    pub kind: LlmErrorKind,
    /// The HTTP status; by default the one the kind usually comes with (see
    /// [`Failure::status_for`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The delay the provider asks for (`Retry-After`, `retry-after-ms`, or Gemini's
    /// `RetryInfo`).
    #[serde(
        default,
        with = "brace_core::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_after: Option<Duration>,
    /// The provider's message; by default one that reads like the provider's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: LlmErrorKind) -> Self {
        Self {
            kind,
            status: None,
            retry_after: None,
            message: None,
        }
    }

    /// Answers with `status` instead of the kind's usual one.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Asks the caller to wait `retry_after`.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// Uses `message` as the provider's message.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// The status this failure is answered with in `format`: the configured one, else the
    /// kind's usual one. `None` for the kinds that are not an HTTP status
    /// ([`Connect`](LlmErrorKind::Connect): a dropped connection,
    /// [`MalformedResponse`](LlmErrorKind::MalformedResponse): a `200` with a broken body,
    /// [`StreamInterrupted`](LlmErrorKind::StreamInterrupted): a body cut short).
    pub fn status_for(&self, format: WireFormat) -> Option<u16> {
        use LlmErrorKind as K;
        if self.status.is_some() {
            return self.status;
        }
        Some(match self.kind {
            K::RateLimited | K::QuotaExhausted => 429,
            K::Overloaded if format == WireFormat::Anthropic => 529,
            K::Overloaded => 503,
            K::Timeout => 504,
            K::Auth if format == WireFormat::Gemini => 400,
            K::Auth => 401,
            K::BadRequest | K::ContextLengthExceeded | K::ContentFiltered => 400,
            K::ModelNotFound => 404,
            K::Cancelled => 499,
            K::UnexpectedStatus => 302,
            K::Connect | K::MalformedResponse | K::StreamInterrupted => return None,
            _ => 500,
        })
    }
}

/// The wire formats the simulated HTTP provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireFormat {
    /// OpenAI chat completions (`POST /v1/chat/completions`).
    OpenAi,
    /// Anthropic Messages (`POST /v1/messages`).
    Anthropic,
    /// Google Gemini (`POST /v1beta/models/{model}:generateContent`).
    Gemini,
}

/// Every [`LlmErrorKind`], in declaration order.
pub const ALL_KINDS: [LlmErrorKind; 15] = LlmErrorKind::ALL;

/// Reads an [`LlmErrorKind`] from its [`as_str`](LlmErrorKind::as_str) name (`rate_limited`,
/// `server_error`, …) or the short forms `server`, `connect`, `auth`.
pub fn parse_kind(name: &str) -> Option<LlmErrorKind> {
    let name = name.trim();
    ALL_KINDS
        .into_iter()
        .find(|kind| kind.as_str() == name)
        .or(match name {
            "server" => Some(LlmErrorKind::Server),
            "connect" => Some(LlmErrorKind::Connect),
            "auth" => Some(LlmErrorKind::Auth),
            _ => None,
        })
}

mod kind_serde {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use brace_llm::error::LlmErrorKind;

    #[allow(clippy::trivially_copy_pass_by_ref)]
    pub(super) fn serialize<S: Serializer>(
        kind: &LlmErrorKind,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(kind.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<LlmErrorKind, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        super::parse_kind(&name).ok_or_else(|| {
            let known: Vec<&str> = super::ALL_KINDS.iter().map(|kind| kind.as_str()).collect();
            D::Error::custom(format!(
                "unknown error kind `{name}`, expected one of: {}",
                known.join(", ")
            ))
        })
    }
}

/// A simulated provider's configuration: its name, default model, seed and behaviour.
///
/// ```
/// use brace_sim::{Behavior, SimConfig};
///
/// let config: SimConfig = serde_json::from_str(
///     r#"{"name": "sim-a", "model": "sim-large", "seed": 7,
///         "behavior": {"type": "flaky", "probability": 0.2,
///                      "failure": {"type": "fail", "kind": "overloaded"}}}"#,
/// )
/// .unwrap();
/// assert_eq!(config.name, "sim-a");
/// assert!(matches!(config.behavior, Behavior::Flaky { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// The provider's name (in [`ResponseMeta`](brace_llm::ResponseMeta) and errors).
    #[serde(default = "default_name")]
    pub name: String,
    /// The model named in answers when the [`Reply`] does not name one; by default the
    /// requested model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The seed of the generator behind [`Behavior::Flaky`].
    #[serde(default)]
    pub seed: u64,
    /// What the provider does.
    #[serde(default)]
    pub behavior: Behavior,
}

fn default_name() -> String {
    "sim".to_owned()
}

impl Default for SimConfig {
    fn default() -> Self {
        Self::new(default_name())
    }
}

impl SimConfig {
    /// A provider named `name` that always succeeds, with seed 0.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            model: None,
            seed: 0,
            behavior: Behavior::default(),
        }
    }

    /// Names `model` in answers.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Seeds the generator.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the behaviour.
    #[must_use]
    pub fn with_behavior(mut self, behavior: Behavior) -> Self {
        self.behavior = behavior;
        self
    }
}
