//! [`SimProvider`]: the simulated provider as an in-process tower service.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::behavior::{Behavior, SimConfig};
use super::script::{Action, ReplyPlan, SimHandle, Step, timeline};
use brace_llm::error::{LlmError, LlmErrorKind};
use brace_llm::response::{ChatResponse, ChatStream};
use brace_llm::types::{
    ChatChunk, ChatCompletion, ChatRequest, ChunkChoice, Delta, Extra, FunctionCall,
    FunctionCallDelta, Role, ToolCall, ToolCallDelta,
};

/// A simulated LLM provider: a tower [`Service`] whose behaviour is scripted by a
/// [`Behavior`](super::Behavior) and can be changed at run time through its [`SimHandle`].
///
/// Waits use `tokio::time`, so under paused time (`#[tokio::test(start_paused = true)]`) a
/// delayed or slow provider costs no real time.
///
/// # Clone
///
/// Cheap: clones share the script, the generator and the counts.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use brace_sim::{Behavior, SimConfig, SimProvider};
/// use brace_llm::{ChatRequest, LlmErrorKind, Message};
/// use tower::ServiceExt;
///
/// let sim = SimProvider::new(SimConfig::new("sim-a").with_behavior(Behavior::sequence(
///     [Behavior::fail(LlmErrorKind::Overloaded)],
///     Behavior::succeed(),
/// )));
/// let request = ChatRequest::new("gpt-4o", vec![Message::user("hi")]);
///
/// let err = sim.clone().oneshot(request.clone()).await.unwrap_err();
/// assert_eq!(err.kind(), LlmErrorKind::Overloaded);
/// assert_eq!(err.provider(), Some("sim-a"));
///
/// let response = sim.clone().oneshot(request).await.unwrap();
/// assert_eq!(response.completion().unwrap().text(), "simulated answer to: hi");
/// assert_eq!(sim.handle().stats().calls, 2);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SimProvider {
    handle: SimHandle,
}

impl SimProvider {
    /// A simulated provider from `config`.
    pub fn new(config: SimConfig) -> Self {
        Self {
            handle: SimHandle::new(config),
        }
    }

    /// A simulated provider named `name` that does `behavior`.
    pub fn with_behavior(name: impl Into<String>, behavior: Behavior) -> Self {
        Self::new(SimConfig::new(name).with_behavior(behavior))
    }

    /// A simulated provider driven by an existing handle (shared with other providers or a
    /// [`SimServer`](super::SimServer)).
    pub fn from_handle(handle: SimHandle) -> Self {
        Self { handle }
    }

    /// The handle on its script.
    pub fn handle(&self) -> &SimHandle {
        &self.handle
    }

    /// The provider's name.
    pub fn name(&self) -> &Arc<str> {
        self.handle.name()
    }
}

impl Service<ChatRequest> for SimProvider {
    type Response = ChatResponse;
    type Error = LlmError;
    type Future = ResponseFuture;

    /// Always ready.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// Decides (and counts) what this call does at once; the returned future waits any
    /// scripted delay, then answers.
    ///
    /// # Panics
    ///
    /// With a scripted delay, outside a tokio runtime with the time driver.
    fn call(&mut self, request: ChatRequest) -> Self::Future {
        let plan = self.handle.next_plan(&request, None);
        let sleep = (plan.delay > Duration::ZERO).then(|| tokio::time::sleep(plan.delay));
        ResponseFuture {
            sleep,
            action: Some(plan.action),
            handle: self.handle.clone(),
        }
    }
}

pin_project! {
    /// The future of a [`SimProvider`] call.
    ///
    /// # Cancel safety
    ///
    /// Dropping it abandons the call; the call was already counted.
    pub struct ResponseFuture {
        #[pin]
        sleep: Option<Sleep>,
        action: Option<Action>,
        handle: SimHandle,
    }
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("action", &self.action)
            .finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<ChatResponse, LlmError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
            std::task::ready!(sleep.poll(cx));
            this.sleep.set(None);
        }
        if matches!(this.action, Some(Action::Hang)) {
            // Pending forever: the caller's timeout or cancellation ends the call.
            return Poll::Pending;
        }
        let Some(action) = this.action.take() else {
            return Poll::Ready(Err(LlmError::new(
                LlmErrorKind::Cancelled,
                "simulated response polled after completion",
            )
            .with_provider(Arc::clone(this.handle.name()))));
        };
        Poll::Ready(answer(this.handle, action))
    }
}

fn answer(handle: &SimHandle, action: Action) -> Result<ChatResponse, LlmError> {
    let name = Arc::clone(handle.name());
    let error = |kind: LlmErrorKind, message: &str| {
        Err(LlmError::new(kind, message).with_provider(Arc::clone(&name)))
    };
    match action {
        Action::Reply(plan) if plan.stream => Ok(ChatResponse::stream(
            Arc::clone(&name),
            plan.model.clone(),
            sim_stream(handle.clone(), &plan),
        )),
        Action::Reply(plan) => Ok(ChatResponse::complete(name, completion(&plan))),
        Action::Fail(failure) => Err(handle.error(&failure)),
        Action::Drop(0) => error(
            LlmErrorKind::Connect,
            "connection closed before the response (simulated)",
        ),
        Action::Drop(_) => error(
            LlmErrorKind::StreamInterrupted,
            "connection closed in the middle of the response (simulated)",
        ),
        Action::Malformed(_) => error(
            LlmErrorKind::MalformedResponse,
            "the response is not valid JSON (simulated)",
        ),
        Action::Truncated => error(
            LlmErrorKind::MalformedResponse,
            "the response JSON ends early (simulated)",
        ),
        Action::Hang => error(LlmErrorKind::Cancelled, "hang (unreachable)"),
    }
}

/// The whole completion of a plan.
pub(crate) fn completion(plan: &ReplyPlan) -> ChatCompletion {
    let mut completion = ChatCompletion::new(
        plan.id.clone(),
        plan.model.clone(),
        plan.text(),
        plan.finish_reason.clone(),
    );
    completion.created = plan.created;
    completion.usage = Some(plan.usage.clone());
    if let (Some((id, name)), Some(choice)) = (&plan.tool_call, completion.choices.first_mut()) {
        choice.message.content = None;
        choice.message.tool_calls = Some(vec![ToolCall {
            id: id.clone(),
            kind: "function".to_owned(),
            function: FunctionCall {
                name: name.clone(),
                arguments: plan.text(),
            },
        }]);
    }
    completion
}

/// The OpenAI chunks of a plan: a role chunk, one chunk per piece, a finish chunk, and a
/// usage chunk if the request asked for one.
pub(crate) fn chunks(plan: &ReplyPlan) -> Vec<ChatChunk> {
    let chunk = |delta: Delta| {
        let mut chunk = ChatChunk::new(plan.id.clone(), plan.model.clone(), delta);
        chunk.created = plan.created;
        chunk
    };
    let mut chunks = Vec::with_capacity(plan.pieces.len() + 3);
    chunks.push(chunk(Delta {
        role: Some(Role::Assistant),
        content: Some(String::new()),
        ..Delta::default()
    }));
    match &plan.tool_call {
        None => chunks.extend(plan.pieces.iter().map(|piece| chunk(Delta::text(piece)))),
        Some((id, name)) => {
            let call = |first: bool, arguments: &str| Delta {
                tool_calls: Some(vec![ToolCallDelta {
                    index: 0,
                    id: first.then(|| id.clone()),
                    kind: first.then(|| "function".to_owned()),
                    function: Some(FunctionCallDelta {
                        name: first.then(|| name.clone()),
                        arguments: Some(arguments.to_owned()),
                    }),
                }]),
                ..Delta::default()
            };
            chunks.push(chunk(call(true, "")));
            chunks.extend(plan.pieces.iter().map(|piece| chunk(call(false, piece))));
        }
    }
    let mut finish = chunk(Delta::default());
    if let Some(choice) = finish.choices.first_mut() {
        choice.finish_reason = Some(plan.finish_reason.clone());
    }
    chunks.push(finish);
    if plan.include_usage {
        let mut usage = chunk(Delta::default());
        usage.choices = Vec::<ChunkChoice>::new();
        usage.usage = Some(plan.usage.clone());
        usage.extra = Extra::new();
        chunks.push(usage);
    }
    chunks
}

fn sim_stream(handle: SimHandle, plan: &ReplyPlan) -> ChatStream {
    let steps: VecDeque<(Duration, Step<ChatChunk>)> =
        timeline(plan, chunks(plan), ChatChunk::has_content).into();
    let stream = futures_util::stream::unfold(
        (steps, handle, false),
        |(mut steps, handle, ended)| async move {
            if ended {
                return None;
            }
            let (wait, step) = steps.pop_front()?;
            if wait > Duration::ZERO {
                tokio::time::sleep(wait).await;
            }
            let name = Arc::clone(handle.name());
            let item = match step {
                Step::Event(chunk) => Ok(chunk),
                Step::Malformed => Err(LlmError::new(
                    LlmErrorKind::MalformedResponse,
                    "invalid stream event (simulated)",
                )
                .with_provider(name)),
                Step::Error(failure) => {
                    let err = handle.error(&failure);
                    return Some((Err(err), (steps, handle, true)));
                }
                Step::Break => {
                    let err = LlmError::new(
                        LlmErrorKind::StreamInterrupted,
                        "stream cut before its end (simulated)",
                    )
                    .with_provider(name);
                    return Some((Err(err), (steps, handle, true)));
                }
                Step::Stall => std::future::pending().await,
            };
            Some((item, (steps, handle, false)))
        },
    );
    ChatStream::new(stream)
}
