//! [`ContinuationLayer`]: when a committed plain-text stream breaks, finish the answer on
//! another provider from the text already delivered, in the same client stream.
//!
//! Once a streamed answer has reached the caller, failover can no longer restart it: the
//! caller has text. Without this layer a break after the commit ends the stream with an `Err`
//! item (see [`StreamGuardLayer`](crate::guard::StreamGuardLayer)). With it, the break is
//! caught and the request is asked again of a *continuation target*, in one of two ways
//! ([`How`]):
//!
//! - **Prefill** ([`ContinuationTarget::accepts_prefill`]`(true)`): the text already
//!   delivered is appended to the request as a final assistant message, and the target
//!   continues it. If the target repeats the delivered text before going on (a provider that
//!   ignored the prefill and restarted), that repeated prefix is stripped (a genuine
//!   continuation that happens to begin with the whole delivered text is taken for such a
//!   repeat).
//! - **Verified restart** (every other target: it does not accept a prefill, or nobody said
//!   whether it does): the target gets the *original* request and its answer is read —
//!   nothing of it reaches the caller yet. If its text begins with exactly the text already
//!   delivered, that prefix is dropped and the rest is streamed on; if it diverges (or ends
//!   before reaching the delivered text), it is abandoned, and it is as if the target had
//!   failed. A deterministic fallback (the same model, temperature 0, a seed) usually
//!   passes; a different model usually does not, and the caller then gets the original
//!   break rather than an answer that contradicts its first half.
//!
//! Either way the target's answer is spliced into the stream:
//!
//! - its role-only and empty chunks are dropped (the caller already had a role chunk);
//! - its chunks keep the original stream's `id` and `created`, so the caller sees one
//!   answer; each chunk's `model` is the model that really produced it;
//! - it ends with the target's finish reason and, if asked for, a usage chunk that sums
//!   every segment that reached the caller (see [Usage](#usage));
//! - its final chunks (the one with the finish reason, and a usage chunk) carry
//!   [`CONTINUED_BY`] (`"x_brace_continued_by": "<target name>"`) and [`CONTINUED_HOW`]
//!   (`"x_brace_continued_how": "prefill"` or `"verified_restart"`) in their `extra`,
//!   because the response's [`ResponseMeta`](crate::ResponseMeta) was fixed when the
//!   stream began ([`continued_by`] and [`continued_how`] read them).
//!
//! Continuation is never attempted for a stream that carried tool-call deltas, for a request
//! with several choices (`n > 1`), before any text reached the caller (that is failover's
//! job), after the stream's finish reason, or for a break that another provider cannot fix
//! (a content filter, a bad request, a cancellation). The provider that broke and targets
//! already tried for this answer are skipped; [`ContinuationLayer::verified_restarts`]`(false)`
//! skips every target that does not accept a prefill.
//!
//! When a target fails before its first new content delta — it rejects the request, errors,
//! ends empty, answers with a tool call, diverges from the delivered text, or does not start
//! before the [deadline] — the next target is tried. When none is left, or [`max_attempts`]
//! were made, the caller gets the **original break** as the stream's `Err` item, never the
//! target's own failure (a refusal, a divergent text). A continuation that breaks after it
//! started is itself continued (with the text delivered so far) while attempts remain;
//! otherwise its break is the stream's error.
//!
//! # Usage
//!
//! The usage chunk of a continued stream (sent when the request asked for one) sums every
//! segment that reached the caller: the prompt tokens of each call, and the completion
//! tokens each segment delivered — for a verified restart, the tokens it generated minus
//! the repeated prefix it dropped. A segment that broke never reported its usage; its
//! prompt is estimated with [`Usage::estimate_prompt_tokens`] and its completion counted as
//! the content deltas it delivered. The usage also carries `"x_brace_segments"`: one entry
//! per segment with its provider, how it joined (`original`, `prefill`, `verified_restart`),
//! its prompt and completion tokens, and whether they are estimated.
//!
//! The layer is off unless added, and does nothing to whole (non-streamed) answers.
//! [`ContinuationLayer::on_attempt`] reports each attempt (for metrics). Each break,
//! continuation, restart and give-up is logged (WARN for a break and a failed attempt, INFO
//! for a continuation that started) with the provider, the delivered length and the
//! outcome.
//!
//! # Cancel safety
//!
//! Dropping the response stream drops the stream being read and any continuation call in
//! flight.
//!
//! [deadline]: ContinuationLayer::deadline
//! [`max_attempts`]: ContinuationLayer::max_attempts
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use brace_llm::continuation::{ContinuationLayer, ContinuationTarget, continued_by};
//! use brace_sim::{Behavior, Reply, SimProvider, StreamFault};
//! use brace_llm::{ChatRequest, Message, ResponseBody, StreamAccumulator};
//! use futures_util::StreamExt;
//! use tower::{Layer, ServiceExt};
//!
//! let text = "one two three four five six";
//! // The primary breaks after the role chunk and two words; the backup accepts a prefill.
//! let primary = SimProvider::with_behavior(
//!     "primary",
//!     Behavior::reply(Reply::new().with_text(text).with_fault(StreamFault::Break { after: 3 })),
//! );
//! let backup = SimProvider::with_behavior("backup", Behavior::reply(Reply::new().with_text(text)));
//!
//! let service = ContinuationLayer::new([ContinuationTarget::new("backup", backup).accepts_prefill(true)])
//!     .layer(primary);
//! let request = ChatRequest::new("m", vec![Message::user("count")]).with_stream(true);
//! let response = service.oneshot(request).await.unwrap();
//! let ResponseBody::Stream(mut stream) = response.body else { unreachable!() };
//!
//! let mut answer = StreamAccumulator::new();
//! let mut continued = None;
//! while let Some(chunk) = stream.next().await {
//!     let chunk = chunk.expect("the break was repaired");
//!     continued = continued.or(continued_by(&chunk).map(str::to_owned));
//!     answer.push(&chunk);
//! }
//! assert_eq!(answer.finish().unwrap().text(), text);
//! assert_eq!(continued.as_deref(), Some("backup"));
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use brace_core::BoxError;
use futures_util::StreamExt;
use pin_project_lite::pin_project;
use serde_json::json;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{LlmError, LlmErrorKind};
use crate::response::StreamChunk;
use crate::response::{ChatResponse, ChatStream, ResponseBody};
use crate::types::{ChatChunk, ChatRequest, Message, Usage};

/// The `extra` field set on the final chunks of a continued stream: the name of the target
/// that finished the answer.
pub const CONTINUED_BY: &str = "x_brace_continued_by";

/// The `extra` field set on the final chunks of a continued stream: how the target that
/// finished the answer joined it ([`How::as_str`]: `prefill` or `verified_restart`).
pub const CONTINUED_HOW: &str = "x_brace_continued_how";

/// The field of a continued stream's usage that lists its segments (see the
/// [module docs](self#usage)).
pub const SEGMENTS: &str = "x_brace_segments";

/// The name of the continuation target that finished the answer, if `chunk` is a final
/// chunk of a continued stream (see [`CONTINUED_BY`]).
pub fn continued_by(chunk: &ChatChunk) -> Option<&str> {
    chunk.extra.get(CONTINUED_BY)?.as_str()
}

/// How the target that finished the answer joined it, if `chunk` is a final chunk of a
/// continued stream (see [`CONTINUED_HOW`]).
pub fn continued_how(chunk: &ChatChunk) -> Option<How> {
    match chunk.extra.get(CONTINUED_HOW)?.as_str()? {
        "prefill" => Some(How::Prefill),
        "verified_restart" => Some(How::VerifiedRestart),
        _ => None,
    }
}

/// The default [`ContinuationLayer::max_attempts`].
pub const DEFAULT_MAX_ATTEMPTS: usize = 2;

/// The default [`ContinuationLayer::deadline`].
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// How a continuation target takes over a broken answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum How {
    /// The delivered text is sent as an assistant prefill; the target continues it.
    Prefill,
    /// The original request is sent; the target's answer is used from the end of the
    /// delivered text on, if it begins with exactly that text.
    VerifiedRestart,
}

impl How {
    /// `prefill` or `verified_restart`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prefill => "prefill",
            Self::VerifiedRestart => "verified_restart",
        }
    }
}

impl fmt::Display for How {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One continuation attempt, as reported to [`ContinuationLayer::on_attempt`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Attempt<'a> {
    /// The provider whose stream broke.
    pub broken: &'a str,
    /// The target asked to continue.
    pub target: &'a str,
    /// How the target was asked.
    pub how: How,
    /// How many bytes of text had reached the caller.
    pub delivered: usize,
    /// `true` if the target started (its continuation is being spliced); `false` if it
    /// failed before its first new content delta, diverged from the delivered text, or the
    /// deadline passed.
    pub started: bool,
}

/// Called after each continuation attempt.
pub type AttemptHook = Arc<dyn Fn(&Attempt<'_>) + Send + Sync>;

// ===== ContinuationTarget =====

/// A provider a broken stream may be continued on: its name, its service, and whether it
/// accepts an assistant prefill.
///
/// The service is usually the provider's own stack (with its
/// [`StreamGuardLayer`](crate::guard::StreamGuardLayer), so a continuation is bounded like
/// any stream), boxed as a `BoxCloneSyncService<ChatRequest, ChatResponse, BoxError>`.
#[derive(Clone)]
pub struct ContinuationTarget<T> {
    name: Arc<str>,
    service: T,
    accepts_prefill: bool,
}

impl<T> ContinuationTarget<T> {
    /// A target called `name` (as in [`ResponseMeta::provider`]), served by `service`. Until
    /// [`accepts_prefill`](Self::accepts_prefill) says it does, its prefill support is taken
    /// as unknown and it is asked for a verified restart.
    ///
    /// [`ResponseMeta::provider`]: crate::ResponseMeta::provider
    pub fn new(name: impl Into<Arc<str>>, service: T) -> Self {
        Self {
            name: name.into(),
            service,
            accepts_prefill: false,
        }
    }

    /// Declares whether the provider continues a conversation that ends with an assistant
    /// message (Anthropic's older models do; many current models and OpenAI-compatible
    /// servers do not). `true` makes it a [prefill](How::Prefill) target, `false` a
    /// [verified restart](How::VerifiedRestart) one.
    #[must_use]
    pub fn accepts_prefill(mut self, yes: bool) -> Self {
        self.accepts_prefill = yes;
        self
    }

    /// The target's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `true` if the target is declared to accept a prefill.
    pub fn is_prefill_accepted(&self) -> bool {
        self.accepts_prefill
    }

    /// How the target takes over a broken answer.
    pub fn how(&self) -> How {
        if self.accepts_prefill {
            How::Prefill
        } else {
            How::VerifiedRestart
        }
    }
}

impl<T> fmt::Debug for ContinuationTarget<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContinuationTarget")
            .field("name", &self.name)
            .field("accepts_prefill", &self.accepts_prefill)
            .finish_non_exhaustive()
    }
}

// ===== ContinuationLayer =====

/// Continues broken committed plain-text streams on another provider. See the
/// [module docs](self).
pub struct ContinuationLayer<T> {
    targets: Arc<[ContinuationTarget<T>]>,
    max_attempts: usize,
    deadline: Duration,
    restarts: bool,
    on_attempt: Option<AttemptHook>,
}

impl<T> Clone for ContinuationLayer<T> {
    fn clone(&self) -> Self {
        Self {
            targets: Arc::clone(&self.targets),
            max_attempts: self.max_attempts,
            deadline: self.deadline,
            restarts: self.restarts,
            on_attempt: self.on_attempt.clone(),
        }
    }
}

impl<T> fmt::Debug for ContinuationLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContinuationLayer")
            .field("targets", &self.targets)
            .field("max_attempts", &self.max_attempts)
            .field("deadline", &self.deadline)
            .field("verified_restarts", &self.restarts)
            .field("on_attempt", &self.on_attempt.is_some())
            .finish()
    }
}

impl<T> ContinuationLayer<T> {
    /// Continues on `targets`, tried in the given order, with at most
    /// [`DEFAULT_MAX_ATTEMPTS`] attempts per answer, a [`DEFAULT_DEADLINE`], and verified
    /// restarts on targets that do not accept a prefill.
    pub fn new(targets: impl IntoIterator<Item = ContinuationTarget<T>>) -> Self {
        Self {
            targets: targets.into_iter().collect(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            deadline: DEFAULT_DEADLINE,
            restarts: true,
            on_attempt: None,
        }
    }

    /// Calls `hook` after each continuation attempt (for metrics and logs: a failed attempt
    /// is an attempt, not a completion).
    #[must_use]
    pub fn on_attempt(mut self, hook: impl Fn(&Attempt<'_>) + Send + Sync + 'static) -> Self {
        self.on_attempt = Some(Arc::new(hook));
        self
    }

    /// The most continuation requests made for one answer, over all its breaks (`0` turns
    /// continuation off).
    #[must_use]
    pub fn max_attempts(mut self, attempts: usize) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The longest the caller waits, from a break, for a continuation to start (its first
    /// new content delta: for a verified restart, past the repeated text), over all the
    /// targets tried for that break. Past it the original break is the stream's error.
    /// Once started, a continuation is bounded by its own stack (its stream guard's idle and
    /// total limits).
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Whether targets that do not accept a prefill are asked for a verified restart (the
    /// default) or skipped.
    #[must_use]
    pub fn verified_restarts(mut self, yes: bool) -> Self {
        self.restarts = yes;
        self
    }

    /// The targets, in order.
    pub fn targets(&self) -> &[ContinuationTarget<T>] {
        &self.targets
    }

    fn is_active(&self) -> bool {
        self.max_attempts > 0 && self.targets.iter().any(|target| self.asks(target))
    }

    /// `true` if `target` may be asked at all.
    fn asks(&self, target: &ContinuationTarget<T>) -> bool {
        target.accepts_prefill || self.restarts
    }
}

impl<S, T> Layer<S> for ContinuationLayer<T> {
    type Service = Continuation<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        Continuation {
            inner,
            config: self.clone(),
        }
    }
}

// ===== Continuation =====

/// The service made by [`ContinuationLayer`].
pub struct Continuation<S, T> {
    inner: S,
    config: ContinuationLayer<T>,
}

impl<S: Clone, T> Clone for Continuation<S, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug, T> fmt::Debug for Continuation<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Continuation")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, T> Continuation<S, T> {
    /// Wraps `inner` with `config`.
    pub fn new(inner: S, config: ContinuationLayer<T>) -> Self {
        Self { inner, config }
    }

    brace_core::define_inner_service_accessors!();
}

impl<S, T> Service<ChatRequest> for Continuation<S, T>
where
    S: Service<ChatRequest, Response = ChatResponse>,
    T: Service<ChatRequest, Response = ChatResponse> + Clone + Send + Sync + 'static,
    T::Error: Into<BoxError>,
    T::Future: Send + 'static,
{
    type Response = ChatResponse;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, T>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        let splice = (request.is_stream()
            && request.options().n.unwrap_or(1) <= 1
            && self.config.is_active())
        .then(|| Splice {
            request: request.clone(),
            config: self.config.clone(),
        });
        ResponseFuture {
            inner: self.inner.call(request),
            splice,
        }
    }
}

/// What a stream needs to be continued: the request it answers and the targets.
struct Splice<T> {
    request: ChatRequest,
    config: ContinuationLayer<T>,
}

pin_project! {
    /// The future of a [`Continuation`] call: the inner call, whose stream (if any) is
    /// wrapped so that a break can be continued.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the inner call.
    pub struct ResponseFuture<F, T> {
        #[pin]
        inner: F,
        splice: Option<Splice<T>>,
    }
}

impl<F, T> fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("continuable", &self.splice.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, E, T> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<ChatResponse, E>>,
    T: Service<ChatRequest, Response = ChatResponse> + Clone + Send + Sync + 'static,
    T::Error: Into<BoxError>,
    T::Future: Send + 'static,
{
    type Output = Result<ChatResponse, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let Some(splice) = this.splice.take() else {
            return Poll::Ready(Ok(response));
        };
        let ChatResponse { meta, body } = response;
        let body = match body {
            ResponseBody::Stream(stream) => {
                let state = State::new(splice, Arc::clone(&meta.provider), stream);
                ResponseBody::Stream(ChatStream::new(state.into_stream()))
            }
            body @ ResponseBody::Complete(_) => body,
        };
        Poll::Ready(Ok(ChatResponse { meta, body }))
    }
}

// ===== the spliced stream =====

/// A continuation that has started: its stream, its name, how it joined, the chunks read
/// up to its first new content delta (prefix already stripped), and the content deltas of
/// the prefix it dropped.
struct Started {
    stream: ChatStream,
    name: Arc<str>,
    how: How,
    held: VecDeque<StreamChunk>,
    dropped_tokens: u64,
    prompt_estimate: u64,
}

/// One provider's part of the answer the caller got.
#[derive(Debug)]
struct Segment {
    provider: Arc<str>,
    /// `None` for the stream the response began with.
    how: Option<How>,
    /// Content deltas that reached the caller.
    delivered_tokens: u64,
    /// Content deltas the provider sent that were dropped (a verified restart's repeat).
    dropped_tokens: u64,
    /// The usage the provider reported, if it did.
    usage: Option<Usage>,
    /// The prompt estimate, for a segment that reports no usage.
    prompt_estimate: u64,
}

impl Segment {
    /// The segment's share of the answer's usage, and whether it is estimated.
    fn usage(&self) -> (Usage, bool) {
        match &self.usage {
            Some(usage) => (
                Usage::new(
                    usage.prompt_tokens,
                    usage.completion_tokens.saturating_sub(self.dropped_tokens),
                ),
                false,
            ),
            None => (
                Usage::new(self.prompt_estimate, self.delivered_tokens),
                true,
            ),
        }
    }
}

struct State<T> {
    splice: Splice<T>,
    /// The stream being read: the original, then each continuation.
    current: Option<ChatStream>,
    /// Chunks to hand out before reading `current` again.
    held: VecDeque<StreamChunk>,
    /// The text of choice 0 that reached the caller.
    delivered: String,
    /// The parts of the answer, the one being read last.
    segments: Vec<Segment>,
    /// The original stream's id and creation time, kept on continued chunks.
    id: Option<(String, u64)>,
    tool_calls: bool,
    several_choices: bool,
    finished: bool,
    /// Providers that served or were asked for this answer.
    tried: Vec<Arc<str>>,
    attempts: usize,
}

impl<T> State<T>
where
    T: Service<ChatRequest, Response = ChatResponse> + Clone + Send + Sync + 'static,
    T::Error: Into<BoxError>,
    T::Future: Send + 'static,
{
    fn new(splice: Splice<T>, provider: Arc<str>, stream: ChatStream) -> Self {
        let prompt_estimate = Usage::estimate_prompt_tokens(&splice.request);
        Self {
            splice,
            tried: vec![Arc::clone(&provider)],
            current: Some(stream),
            held: VecDeque::new(),
            delivered: String::new(),
            segments: vec![Segment {
                provider,
                how: None,
                delivered_tokens: 0,
                dropped_tokens: 0,
                usage: None,
                prompt_estimate,
            }],
            id: None,
            tool_calls: false,
            several_choices: false,
            finished: false,
            attempts: 0,
        }
    }

    fn into_stream(self) -> impl futures_core::Stream<Item = Result<StreamChunk, LlmError>> + Send {
        futures_util::stream::unfold(self, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        })
    }

    fn segment(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a stream always has its first segment")
    }

    fn continued(&self) -> bool {
        self.segments.len() > 1
    }

    async fn next(&mut self) -> Option<Result<StreamChunk, LlmError>> {
        loop {
            if let Some(chunk) = self.held.pop_front() {
                return Some(Ok(self.deliver(chunk)));
            }
            let stream = self.current.as_mut()?;
            let err = match stream.next().await {
                Some(Ok(chunk)) => return Some(Ok(self.deliver(chunk))),
                Some(Err(err)) => err,
                None if self.finished => {
                    self.current = None;
                    return None;
                }
                // A clean end without a finish reason is a cut, not a complete answer.
                None => LlmError::new(
                    LlmErrorKind::StreamInterrupted,
                    "stream ended without a finish reason",
                )
                .with_provider(self.serving()),
            };
            self.current = None;
            if !self.can_continue(&err) {
                if !self.delivered.is_empty() {
                    tracing::warn!(
                        provider = %self.serving(),
                        delivered_bytes = self.delivered.len(),
                        delivered_tokens = self.segment().delivered_tokens,
                        error = %err,
                        outcome = "surfaced",
                        "stream broke after commit; the break reaches the caller"
                    );
                }
                return Some(Err(err));
            }
            // The break itself is the stream guard's warning (`stream broke`); asking is a
            // step, and its outcome is logged below.
            tracing::debug!(
                provider = %self.serving(),
                delivered_bytes = self.delivered.len(),
                delivered_tokens = self.segment().delivered_tokens,
                error = %err,
                "stream broke after commit; asking a continuation target"
            );
            match self.start_continuation(&err).await {
                Some(started) => {
                    tracing::info!(
                        provider = %self.serving(),
                        continued_by = %started.name,
                        how = started.how.as_str(),
                        delivered_bytes = self.delivered.len(),
                        dropped_tokens = started.dropped_tokens,
                        outcome = "continued",
                        "stream continued on another provider"
                    );
                    self.current = Some(started.stream);
                    self.held = started.held;
                    self.segments.push(Segment {
                        provider: started.name,
                        how: Some(started.how),
                        delivered_tokens: 0,
                        dropped_tokens: started.dropped_tokens,
                        usage: None,
                        prompt_estimate: started.prompt_estimate,
                    });
                }
                None => {
                    tracing::warn!(
                        provider = %err.provider().unwrap_or("unknown"),
                        delivered_bytes = self.delivered.len(),
                        attempts = self.attempts,
                        error = %err,
                        outcome = "surfaced",
                        "no continuation started; the original break reaches the caller"
                    );
                    return Some(Err(err));
                }
            }
        }
    }

    /// The provider serving the current stream.
    fn serving(&self) -> Arc<str> {
        Arc::clone(
            &self
                .segments
                .last()
                .expect("a stream always has its first segment")
                .provider,
        )
    }

    /// Notes what `chunk` tells the caller, and rewrites a continued chunk as part of the
    /// original answer.
    fn deliver(&mut self, mut chunk: StreamChunk) -> StreamChunk {
        let continued = self.continued();
        match &self.id {
            None => self.id = Some((chunk.id.clone(), chunk.created)),
            Some((id, created)) => {
                if continued {
                    chunk.id.clone_from(id);
                    chunk.created = *created;
                }
            }
        }
        for choice in &chunk.choices {
            if choice.index != 0 {
                self.several_choices = true;
            }
            if choice
                .delta
                .tool_calls
                .as_ref()
                .is_some_and(|calls| !calls.is_empty())
            {
                self.tool_calls = true;
            }
            if choice.index == 0
                && let Some(text) = &choice.delta.content
            {
                self.delivered.push_str(text);
            }
            if choice.finish_reason.is_some() {
                self.finished = true;
            }
        }
        let segment = self.segment();
        segment.delivered_tokens += u64::from(chunk.has_content());
        if let Some(usage) = &chunk.usage {
            segment.usage = Some(usage.clone());
        }
        if continued {
            if chunk.usage.is_some() {
                chunk.usage = Some(self.summed_usage());
            }
            let segment = self.segment();
            if chunk.finish_reason().is_some() || chunk.usage.is_some() {
                let (name, how) = (Arc::clone(&segment.provider), segment.how);
                chunk
                    .extra
                    .insert(CONTINUED_BY.to_owned(), serde_json::Value::from(&*name));
                if let Some(how) = how {
                    chunk.extra.insert(
                        CONTINUED_HOW.to_owned(),
                        serde_json::Value::from(how.as_str()),
                    );
                }
            }
        }
        chunk
    }

    /// The usage of the whole answer: every segment's share, and the list of segments.
    fn summed_usage(&self) -> Usage {
        let mut total = Usage::new(0, 0);
        let mut segments = Vec::with_capacity(self.segments.len());
        for segment in &self.segments {
            let (usage, estimated) = segment.usage();
            total.add(&usage);
            segments.push(json!({
                "provider": &*segment.provider,
                "how": segment.how.map_or("original", How::as_str),
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "estimated": estimated,
            }));
        }
        total
            .extra
            .insert(SEGMENTS.to_owned(), serde_json::Value::Array(segments));
        total
    }

    fn can_continue(&self, err: &LlmError) -> bool {
        let kind = err.kind();
        !self.finished
            && !self.tool_calls
            && !self.several_choices
            && !self.delivered.is_empty()
            && kind.should_failover()
            && kind != LlmErrorKind::ContentFiltered
            && self.attempts < self.splice.config.max_attempts
    }

    /// Asks the targets in order, within the deadline, until one starts.
    async fn start_continuation(&mut self, err: &LlmError) -> Option<Started> {
        let deadline = Instant::now() + self.splice.config.deadline;
        let targets = Arc::clone(&self.splice.config.targets);
        let broke = err
            .provider()
            .map_or_else(|| self.serving(), Arc::<str>::from);
        for target in targets.iter() {
            if self.attempts >= self.splice.config.max_attempts {
                break;
            }
            if !self.splice.config.asks(target)
                || self.tried.contains(&target.name)
                || *broke == *target.name
            {
                continue;
            }
            self.attempts += 1;
            self.tried.push(Arc::clone(&target.name));
            let how = target.how();
            let request = match how {
                How::Prefill => {
                    let mut messages = self.splice.request.messages.to_vec();
                    messages.push(Message::assistant(self.delivered.clone()));
                    let mut request = self.splice.request.clone();
                    request.messages = messages.into();
                    request
                }
                How::VerifiedRestart => self.splice.request.clone(),
            };
            let call = start(
                target.service.clone(),
                request,
                Arc::clone(&target.name),
                how,
                &self.delivered,
            );
            let outcome = tokio::time::timeout_at(deadline, call).await;
            if let Some(hook) = &self.splice.config.on_attempt {
                hook(&Attempt {
                    broken: &broke,
                    target: &target.name,
                    how,
                    delivered: self.delivered.len(),
                    started: matches!(outcome, Ok(Ok(_))),
                });
            }
            match outcome {
                Ok(Ok(started)) => return Some(started),
                Ok(Err(failure)) => tracing::warn!(
                    provider = %broke,
                    target = %target.name,
                    how = how.as_str(),
                    delivered_bytes = self.delivered.len(),
                    error = %failure,
                    outcome = if failure.is::<Diverged>() { "diverged" } else { "failed" },
                    "continuation attempt did not start"
                ),
                Err(_) => {
                    tracing::warn!(
                        provider = %broke,
                        target = %target.name,
                        how = how.as_str(),
                        delivered_bytes = self.delivered.len(),
                        outcome = "deadline",
                        "continuation deadline passed"
                    );
                    break;
                }
            }
        }
        None
    }
}

/// A verified restart whose text is not the delivered text followed by more.
#[derive(Debug)]
struct Diverged {
    /// The byte offset of the first difference (or where the restart ended).
    at: usize,
    ended: bool,
}

impl fmt::Display for Diverged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ended {
            write!(
                f,
                "the restarted answer ended after {} bytes, before the delivered text",
                self.at
            )
        } else {
            write!(
                f,
                "the restarted answer diverges from the delivered text at byte {}",
                self.at
            )
        }
    }
}

impl std::error::Error for Diverged {}

/// The byte offset where `a` and `b` first differ (on a character boundary of both).
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or_else(|| a.len().min(b.len()), |((at, _), _)| at)
}

/// Calls a continuation target and reads its stream up to its first new content delta (or
/// finish reason). A prefill continuation that repeats `delivered` has the repeat stripped;
/// a verified restart must repeat `delivered` exactly, and that repeat is dropped.
async fn start<T>(
    service: T,
    request: ChatRequest,
    name: Arc<str>,
    how: How,
    delivered: &str,
) -> Result<Started, BoxError>
where
    T: Service<ChatRequest, Response = ChatResponse>,
    T::Error: Into<BoxError>,
{
    let include_usage = request.wants_stream_usage();
    let prompt_estimate = Usage::estimate_prompt_tokens(&request);
    let response = service.oneshot(request).await.map_err(Into::into)?;
    let mut stream = match response.body {
        ResponseBody::Stream(stream) => stream,
        ResponseBody::Complete(completion) => ChatStream::from_items(
            completion
                .to_chunks(include_usage)
                .into_iter()
                .map(Ok)
                .collect(),
        ),
    };
    let mut held: VecDeque<StreamChunk> = VecDeque::new();
    let mut text = String::new();
    let mut content_chunks: Vec<usize> = Vec::new();
    loop {
        let chunk = match stream.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(err)) => return Err(err.into()),
            None if how == How::VerifiedRestart && text.len() < delivered.len() => {
                return Err(Diverged {
                    at: text.len(),
                    ended: true,
                }
                .into());
            }
            None => return Err("the continuation ended before it started".into()),
        };
        if chunk.choices.iter().any(|choice| {
            choice
                .delta
                .tool_calls
                .as_ref()
                .is_some_and(|calls| !calls.is_empty())
        }) {
            return Err("the continuation answered with a tool call".into());
        }
        let finished = chunk.finish_reason().is_some();
        if !chunk.has_content() && !finished && chunk.usage.is_none() {
            continue; // role-only or empty: the caller already had a role chunk
        }
        for choice in &chunk.choices {
            if let Some(content) = &choice.delta.content {
                text.push_str(content);
            }
        }
        if chunk.has_content() {
            content_chunks.push(text.len());
        }
        held.push_back(chunk);
        // While the text could still be a repeat of what was delivered, keep reading.
        let could_repeat = text.len() < delivered.len() && delivered.starts_with(&text);
        if !finished && could_repeat {
            continue;
        }
        let repeats = text.starts_with(delivered);
        if how == How::VerifiedRestart && !repeats {
            return Err(Diverged {
                at: common_prefix(&text, delivered),
                ended: finished && could_repeat,
            }
            .into());
        }
        let mut dropped_tokens = 0;
        if repeats {
            strip_prefix(&mut held, delivered.len());
            // Deltas whose text lay entirely inside the repeat were dropped.
            dropped_tokens = content_chunks
                .iter()
                .filter(|end| **end <= delivered.len())
                .count() as u64;
        }
        return Ok(Started {
            stream,
            name,
            how,
            held,
            dropped_tokens,
            prompt_estimate,
        });
    }
}

/// Removes the first `len` bytes of content from `chunks`, dropping chunks left empty.
fn strip_prefix(chunks: &mut VecDeque<StreamChunk>, mut len: usize) {
    'chunks: for chunk in chunks.iter_mut() {
        for choice in &mut chunk.choices {
            if len == 0 {
                break 'chunks;
            }
            if let Some(content) = &mut choice.delta.content {
                if len >= content.len() {
                    len -= content.len();
                    content.clear();
                } else {
                    *content = content.get(len..).unwrap_or_default().to_owned();
                    len = 0;
                }
            }
        }
    }
    chunks.retain(|chunk| {
        chunk.has_content() || chunk.finish_reason().is_some() || chunk.usage.is_some()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefix_stops_at_the_first_difference_on_a_char_boundary() {
        assert_eq!(common_prefix("one two", "one too"), 5);
        assert_eq!(common_prefix("one", "one two"), 3);
        assert_eq!(common_prefix("héllo", "hëllo"), 1);
        assert_eq!(common_prefix("", "x"), 0);
    }

    #[test]
    fn a_segment_without_usage_is_estimated_and_a_restart_pays_only_what_it_delivered() {
        let broken = Segment {
            provider: "p".into(),
            how: None,
            delivered_tokens: 40,
            dropped_tokens: 0,
            usage: None,
            prompt_estimate: 12,
        };
        assert_eq!(broken.usage(), (Usage::new(12, 40), true));
        let restart = Segment {
            provider: "b".into(),
            how: Some(How::VerifiedRestart),
            delivered_tokens: 60,
            dropped_tokens: 40,
            usage: Some(Usage::new(12, 100)),
            prompt_estimate: 12,
        };
        assert_eq!(restart.usage(), (Usage::new(12, 60), false));
    }
}
