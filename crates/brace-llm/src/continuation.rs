//! [`ContinuationLayer`]: when a committed plain-text stream breaks, finish the answer on
//! another provider from the text already delivered, in the same client stream.
//!
//! Once a streamed answer has reached the caller, failover can no longer restart it: the
//! caller has text. Without this layer a break after the commit ends the stream with an `Err`
//! item (see [`StreamGuardLayer`](crate::guard::StreamGuardLayer)). With it, the break is
//! caught and the request is asked again of a *continuation target* — a provider declared to
//! accept an assistant prefill — with the text already delivered appended as a final
//! assistant message. The target's answer is spliced into the stream:
//!
//! - its role-only and empty chunks are dropped (the caller already had a role chunk);
//! - if it repeats the delivered text before going on (a provider that ignored the prefill
//!   and restarted), that repeated prefix is stripped (a genuine continuation that happens
//!   to begin with the whole delivered text is taken for such a repeat);
//! - its chunks keep the original stream's `id` and `created`, so the caller sees one
//!   answer; each chunk's `model` is the model that really produced it;
//! - it ends with the target's finish reason and, if asked for, the target's usage;
//! - its final chunks (the one with the finish reason, and a usage chunk) carry
//!   [`CONTINUED_BY`] (`"x_brace_continued_by": "<target name>"`) in their `extra`, because
//!   the response's [`ResponseMeta`](crate::ResponseMeta) was fixed when the stream began
//!   ([`continued_by`] reads it).
//!
//! Continuation is never attempted for a stream that carried tool-call deltas, for a request
//! with several choices (`n > 1`), before any text reached the caller (that is failover's
//! job), after the stream's finish reason, or for a break that another provider cannot fix
//! (a content filter, a bad request, a cancellation). Targets that do not accept a prefill,
//! the provider that broke and targets already tried for this answer are skipped.
//!
//! When a target fails before its first content delta — it rejects the prefill, errors,
//! ends empty, answers with a tool call, or does not start before the [deadline] — the next
//! target is tried. When none is left, or [`max_attempts`] were made, the caller gets the
//! **original break** as the stream's `Err` item, never the continuation's own failure. A
//! continuation that breaks after it started is itself continued (with the text delivered so
//! far) while attempts remain; otherwise its break is the stream's error.
//!
//! The layer is off unless added, and does nothing to whole (non-streamed) answers.
//! [`ContinuationLayer::on_attempt`] reports each attempt (for metrics).
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
use tokio::time::Instant;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{LlmError, LlmErrorKind};
use crate::response::{ChatResponse, ChatStream, ResponseBody};
use crate::types::{ChatChunk, ChatRequest, Message};

/// The `extra` field set on the final chunks of a continued stream: the name of the target
/// that finished the answer.
pub const CONTINUED_BY: &str = "x_brace_continued_by";

/// The name of the continuation target that finished the answer, if `chunk` is a final
/// chunk of a continued stream (see [`CONTINUED_BY`]).
pub fn continued_by(chunk: &ChatChunk) -> Option<&str> {
    chunk.extra.get(CONTINUED_BY)?.as_str()
}

/// The default [`ContinuationLayer::max_attempts`].
pub const DEFAULT_MAX_ATTEMPTS: usize = 2;

/// The default [`ContinuationLayer::deadline`].
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// One continuation attempt, as reported to [`ContinuationLayer::on_attempt`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Attempt<'a> {
    /// The provider whose stream broke.
    pub broken: &'a str,
    /// The target asked to continue.
    pub target: &'a str,
    /// How many bytes of text had reached the caller.
    pub delivered: usize,
    /// `true` if the target started (its continuation is being spliced); `false` if it
    /// failed before its first content delta or the deadline passed.
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
    /// A target called `name` (as in [`ResponseMeta::provider`]), served by `service`. It
    /// does not accept a prefill until [`accepts_prefill`](Self::accepts_prefill) says so,
    /// and is never asked until then.
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
    /// message (Anthropic does; many OpenAI-compatible servers do not).
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
    on_attempt: Option<AttemptHook>,
}

impl<T> Clone for ContinuationLayer<T> {
    fn clone(&self) -> Self {
        Self {
            targets: Arc::clone(&self.targets),
            max_attempts: self.max_attempts,
            deadline: self.deadline,
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
            .field("on_attempt", &self.on_attempt.is_some())
            .finish()
    }
}

impl<T> ContinuationLayer<T> {
    /// Continues on `targets`, tried in the given order, with at most
    /// [`DEFAULT_MAX_ATTEMPTS`] attempts per answer and a [`DEFAULT_DEADLINE`].
    pub fn new(targets: impl IntoIterator<Item = ContinuationTarget<T>>) -> Self {
        Self {
            targets: targets.into_iter().collect(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            deadline: DEFAULT_DEADLINE,
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
    /// content delta), over all the targets tried for that break. Past it the original
    /// break is the stream's error. Once started, a continuation is bounded by its own
    /// stack (its stream guard's idle and total limits).
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The targets, in order.
    pub fn targets(&self) -> &[ContinuationTarget<T>] {
        &self.targets
    }

    fn is_active(&self) -> bool {
        self.max_attempts > 0 && self.targets.iter().any(|target| target.accepts_prefill)
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

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
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

/// A continuation that has started: its stream, its name, and the chunks read up to its
/// first content delta (prefix already stripped).
struct Started {
    stream: ChatStream,
    name: Arc<str>,
    held: VecDeque<ChatChunk>,
}

struct State<T> {
    splice: Splice<T>,
    /// The provider the response was first served by.
    provider: Arc<str>,
    /// The stream being read: the original, then each continuation.
    current: Option<ChatStream>,
    /// The continuation target serving `current`, if it is a continuation.
    continued_by: Option<Arc<str>>,
    /// Chunks to hand out before reading `current` again.
    held: VecDeque<ChatChunk>,
    /// The text of choice 0 that reached the caller.
    delivered: String,
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
        Self {
            splice,
            tried: vec![Arc::clone(&provider)],
            provider,
            current: Some(stream),
            continued_by: None,
            held: VecDeque::new(),
            delivered: String::new(),
            id: None,
            tool_calls: false,
            several_choices: false,
            finished: false,
            attempts: 0,
        }
    }

    fn into_stream(self) -> impl futures_core::Stream<Item = Result<ChatChunk, LlmError>> + Send {
        futures_util::stream::unfold(self, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        })
    }

    async fn next(&mut self) -> Option<Result<ChatChunk, LlmError>> {
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
                return Some(Err(err));
            }
            match self.start_continuation(&err).await {
                Some(started) => {
                    tracing::info!(
                        provider = %self.serving(),
                        continued_by = %started.name,
                        delivered_chars = self.delivered.len(),
                        error = %err,
                        "stream broke after commit; continued on another provider"
                    );
                    self.current = Some(started.stream);
                    self.continued_by = Some(started.name);
                    self.held = started.held;
                }
                None => return Some(Err(err)),
            }
        }
    }

    /// The provider serving the current stream.
    fn serving(&self) -> Arc<str> {
        Arc::clone(self.continued_by.as_ref().unwrap_or(&self.provider))
    }

    /// Notes what `chunk` tells the caller, and rewrites a continued chunk as part of the
    /// original answer.
    fn deliver(&mut self, mut chunk: ChatChunk) -> ChatChunk {
        match &self.id {
            None => self.id = Some((chunk.id.clone(), chunk.created)),
            Some((id, created)) => {
                if self.continued_by.is_some() {
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
        if let Some(name) = &self.continued_by
            && (chunk.finish_reason().is_some() || chunk.usage.is_some())
        {
            chunk
                .extra
                .insert(CONTINUED_BY.to_owned(), serde_json::Value::from(&**name));
        }
        chunk
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
        let broke = err.provider().map(Arc::<str>::from);
        for target in targets.iter() {
            if self.attempts >= self.splice.config.max_attempts {
                break;
            }
            if !target.accepts_prefill
                || self.tried.contains(&target.name)
                || broke.as_deref() == Some(&*target.name)
            {
                continue;
            }
            self.attempts += 1;
            self.tried.push(Arc::clone(&target.name));
            let mut messages = self.splice.request.messages.to_vec();
            messages.push(Message::assistant(self.delivered.clone()));
            let mut request = self.splice.request.clone();
            request.messages = messages.into();
            let call = start(
                target.service.clone(),
                request,
                Arc::clone(&target.name),
                &self.delivered,
            );
            let outcome = tokio::time::timeout_at(deadline, call).await;
            if let Some(hook) = &self.splice.config.on_attempt {
                hook(&Attempt {
                    broken: broke.as_deref().unwrap_or(&self.serving()),
                    target: &target.name,
                    delivered: self.delivered.len(),
                    started: matches!(outcome, Ok(Ok(_))),
                });
            }
            match outcome {
                Ok(Ok(started)) => return Some(started),
                Ok(Err(failure)) => tracing::debug!(
                    target = %target.name,
                    error = %failure,
                    "continuation target failed before it started"
                ),
                Err(_) => {
                    tracing::debug!(target = %target.name, "continuation deadline passed");
                    break;
                }
            }
        }
        None
    }
}

/// Calls a continuation target and reads its stream up to its first content delta (or
/// finish reason), stripping a repeat of `delivered` from the start of its text.
async fn start<T>(
    service: T,
    request: ChatRequest,
    name: Arc<str>,
    delivered: &str,
) -> Result<Started, BoxError>
where
    T: Service<ChatRequest, Response = ChatResponse>,
    T::Error: Into<BoxError>,
{
    let include_usage = request.wants_stream_usage();
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
    let mut held: VecDeque<ChatChunk> = VecDeque::new();
    let mut text = String::new();
    loop {
        let chunk = match stream.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(err)) => return Err(err.into()),
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
        held.push_back(chunk);
        // While the text could still be a repeat of what was delivered, keep reading.
        if !finished && text.len() < delivered.len() && delivered.starts_with(&text) {
            continue;
        }
        if text.starts_with(delivered) {
            strip_prefix(&mut held, delivered.len());
        }
        return Ok(Started { stream, name, held });
    }
}

/// Removes the first `len` bytes of content from `chunks`, dropping chunks left empty.
fn strip_prefix(chunks: &mut VecDeque<ChatChunk>, mut len: usize) {
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
