//! The script's state: [`SimHandle`] (change the behaviour, read the counts) and the
//! resolution of a [`Behavior`] into what one call does.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::behavior::{Behavior, Failure, Reply, SimConfig, StreamFault};
use brace_llm::error::{LlmError, LlmErrorKind};
use brace_llm::types::{ChatRequest, FinishReason, Role, Usage};

/// Call counts of a simulated provider.
///
/// Each call is counted once, under the label of what it did: `success`, the error kind's
/// name for a failure (`rate_limited`, `overloaded`, `server_error`, …), `hang`, `drop`,
/// `malformed`, `truncated`, or for a streamed answer with a fault `stream_break`,
/// `stream_stall`, `stream_malformed`, `stream_error` (`missing_done` counts as `success`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// All calls.
    pub calls: u64,
    /// Calls by outcome label.
    pub outcomes: BTreeMap<String, u64>,
    /// Calls received over HTTP by a [`SimServer`](super::SimServer), by the request's HTTP
    /// version (`HTTP/1.1`, `HTTP/2.0`): how the client reached it. Empty for calls made
    /// in-process.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub http_versions: BTreeMap<String, u64>,
}

impl SimStats {
    /// The calls counted under `label`.
    pub fn count(&self, label: &str) -> u64 {
        self.outcomes.get(label).copied().unwrap_or(0)
    }

    /// The calls that succeeded (`success`).
    pub fn successes(&self) -> u64 {
        self.count("success")
    }

    /// The calls that did anything but succeed.
    pub fn failures(&self) -> u64 {
        self.calls - self.successes()
    }
}

/// A cloneable handle on a simulated provider's script: change what it does at run time and
/// read its call counts. Every [`SimProvider`](super::SimProvider) clone and a
/// [`SimServer`](super::SimServer) built from the same handle share it.
///
/// # Clone
///
/// Clones share the same script, generator and counts.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
}

struct Shared {
    name: Arc<str>,
    model: Option<String>,
    state: Mutex<State>,
}

struct State {
    behavior: Arc<Behavior>,
    seed: u64,
    rng: fastrand::Rng,
    positions: HashMap<Vec<u32>, usize>,
    stats: SimStats,
    recent: VecDeque<ChatRequest>,
}

/// How many recent requests a [`SimHandle`] keeps.
const RECENT: usize = 32;

impl fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("SimHandle")
            .field("name", &self.shared.name)
            .field("model", &self.shared.model)
            .field("seed", &state.seed)
            .field("behavior", &state.behavior)
            .field("calls", &state.stats.calls)
            .finish()
    }
}

impl From<SimConfig> for SimHandle {
    fn from(config: SimConfig) -> Self {
        Self::new(config)
    }
}

impl SimHandle {
    /// A script from `config`.
    pub fn new(config: SimConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                name: config.name.into(),
                model: config.model,
                state: Mutex::new(State {
                    behavior: Arc::new(config.behavior),
                    seed: config.seed,
                    rng: fastrand::Rng::with_seed(config.seed),
                    positions: HashMap::new(),
                    stats: SimStats::default(),
                    recent: VecDeque::with_capacity(RECENT),
                }),
            }),
        }
    }

    /// The provider's name.
    pub fn name(&self) -> &Arc<str> {
        &self.shared.name
    }

    /// The configured model, if any.
    pub fn model(&self) -> Option<&str> {
        self.shared.model.as_deref()
    }

    /// The current behaviour.
    pub fn behavior(&self) -> Behavior {
        Behavior::clone(&self.shared.state.lock().behavior)
    }

    /// Replaces the behaviour; calls made from now on follow it. Sequences start again from
    /// their first step; the generator and the counts go on.
    pub fn set_behavior(&self, behavior: Behavior) {
        let mut state = self.shared.state.lock();
        state.behavior = Arc::new(behavior);
        state.positions.clear();
    }

    /// The call counts so far.
    pub fn stats(&self) -> SimStats {
        self.shared.state.lock().stats.clone()
    }

    /// The number of calls so far.
    pub fn calls(&self) -> u64 {
        self.shared.state.lock().stats.calls
    }

    /// The most recent requests (up to 32), oldest first, as the provider received them (over
    /// HTTP: read from the wire format into a [`ChatRequest`]; Anthropic and Gemini requests
    /// keep only the model, the text of each message, `max_tokens` and `stream`).
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.shared.state.lock().recent.iter().cloned().collect()
    }

    /// The most recent request, if any.
    pub fn last_request(&self) -> Option<ChatRequest> {
        self.shared.state.lock().recent.back().cloned()
    }

    /// Starts over: counts to zero, sequences at their first step, the generator at its
    /// seed, no recent requests. The behaviour stays.
    pub fn reset(&self) {
        let mut state = self.shared.state.lock();
        state.stats = SimStats::default();
        state.recent.clear();
        state.positions.clear();
        state.rng = fastrand::Rng::with_seed(state.seed);
    }

    /// Re-seeds the generator (and starts the sequences over).
    pub fn reseed(&self, seed: u64) {
        let mut state = self.shared.state.lock();
        state.seed = seed;
        state.rng = fastrand::Rng::with_seed(seed);
        state.positions.clear();
    }

    /// Decides what the next call does, and counts it (under its HTTP version too, for a
    /// call received over HTTP).
    pub(crate) fn next_plan(&self, request: &ChatRequest, http: Option<http::Version>) -> Plan {
        let mut state = self.shared.state.lock();
        if let Some(version) = http {
            *state
                .stats
                .http_versions
                .entry(format!("{version:?}"))
                .or_insert(0) += 1;
        }
        let behavior = Arc::clone(&state.behavior);
        let mut delay = Duration::ZERO;
        let mut path = Vec::new();
        let action = resolve(&behavior, request, &mut path, &mut state, &mut delay);
        state.stats.calls += 1;
        let call = state.stats.calls;
        if state.recent.len() == RECENT {
            state.recent.pop_front();
        }
        state.recent.push_back(request.clone());
        *state
            .stats
            .outcomes
            .entry(action.label().to_owned())
            .or_insert(0) += 1;
        drop(state);
        let action = match action {
            Resolved::Reply(reply) => Action::Reply(Box::new(ReplyPlan::new(
                &reply,
                request,
                self.shared.model.as_deref(),
                call,
            ))),
            Resolved::Fail(failure) => Action::Fail(failure),
            Resolved::Hang => Action::Hang,
            Resolved::Drop(after_bytes) => Action::Drop(after_bytes),
            Resolved::Malformed(body) => Action::Malformed(body),
            Resolved::Truncated => Action::Truncated,
        };
        Plan { delay, action }
    }

    /// The error a scripted failure is in process.
    pub(crate) fn error(&self, failure: &Failure) -> LlmError {
        failure_error(failure, &self.shared.name)
    }
}

/// The [`LlmError`] a scripted failure is in process, from provider `name`.
pub(crate) fn failure_error(failure: &Failure, name: &Arc<str>) -> LlmError {
    let message = failure
        .message
        .clone()
        .unwrap_or_else(|| default_message(failure.kind).to_owned());
    let mut err = LlmError::new(failure.kind, message)
        .with_provider(Arc::clone(name))
        .with_retry_after(failure.retry_after);
    if let Some(status) = failure.status_for(super::WireFormat::OpenAi) {
        err = err.with_status(status);
    }
    err
}

/// A provider-like message for each kind.
pub(crate) fn default_message(kind: LlmErrorKind) -> &'static str {
    use LlmErrorKind as K;
    match kind {
        K::RateLimited => "Rate limit reached for requests (simulated)",
        K::QuotaExhausted => {
            "You exceeded your current quota, please check your plan and billing details."
        }
        K::Overloaded => "Overloaded",
        K::Timeout => "Deadline exceeded (simulated)",
        K::Connect => "connection refused (simulated)",
        K::Auth => "API key not valid (simulated)",
        K::BadRequest => "Invalid value for 'temperature' (simulated)",
        K::ContextLengthExceeded => {
            "This model's maximum context length is 8192 tokens; the prompt is too long: too many tokens (simulated)"
        }
        K::ContentFiltered => "The request was blocked by the safety system (simulated)",
        K::ModelNotFound => "The model does not exist (simulated)",
        K::MalformedResponse => "the response could not be parsed (simulated)",
        K::StreamInterrupted => "the stream was cut (simulated)",
        K::Cancelled => "the request was cancelled (simulated)",
        K::UnexpectedStatus => "moved (simulated)",
        _ => "The server had an error while processing your request (simulated)",
    }
}

enum Resolved {
    Reply(Reply),
    Fail(Failure),
    Hang,
    Drop(usize),
    Malformed(Option<String>),
    Truncated,
}

impl Resolved {
    fn label(&self) -> &'static str {
        match self {
            Self::Reply(reply) => match reply.fault {
                Some(StreamFault::Break { .. }) => "stream_break",
                Some(StreamFault::Stall { .. }) => "stream_stall",
                Some(StreamFault::Malformed { .. }) => "stream_malformed",
                Some(StreamFault::Error { .. }) => "stream_error",
                Some(StreamFault::MissingDone) | None => "success",
            },
            Self::Fail(failure) => failure.kind.as_str(),
            Self::Hang => "hang",
            Self::Drop(_) => "drop",
            Self::Malformed(_) => "malformed",
            Self::Truncated => "truncated",
        }
    }
}

/// Walks the behaviour tree to the leaf this call reaches. `path` names the node (child
/// indices from the root) so each `Sequence` node keeps its own position.
fn resolve(
    behavior: &Behavior,
    request: &ChatRequest,
    path: &mut Vec<u32>,
    state: &mut State,
    delay: &mut Duration,
) -> Resolved {
    match behavior {
        Behavior::Succeed(reply) => Resolved::Reply(reply.clone()),
        Behavior::Fail(failure) => Resolved::Fail(failure.clone()),
        Behavior::Hang => Resolved::Hang,
        Behavior::Drop { after_bytes } => Resolved::Drop(*after_bytes),
        Behavior::Malformed { body } => Resolved::Malformed(body.clone()),
        Behavior::Truncated => Resolved::Truncated,
        Behavior::Delay { delay: wait, then } => {
            *delay = delay.saturating_add(*wait);
            path.push(0);
            resolve(then, request, path, state, delay)
        }
        Behavior::Flaky {
            probability,
            failure,
            otherwise,
        } => {
            let draw = state.rng.f64();
            if draw < *probability {
                path.push(0);
                resolve(failure, request, path, state, delay)
            } else {
                path.push(1);
                resolve(otherwise, request, path, state, delay)
            }
        }
        Behavior::When {
            when,
            then,
            otherwise,
        } => {
            if when.matches(request) {
                path.push(0);
                resolve(then, request, path, state, delay)
            } else {
                path.push(1);
                resolve(otherwise, request, path, state, delay)
            }
        }
        Behavior::Sequence { steps, then } => {
            let position = state.positions.entry(path.clone()).or_insert(0);
            let at = *position;
            *position = position.saturating_add(1);
            match steps.get(at) {
                Some(step) => {
                    path.push(at as u32);
                    resolve(step, request, path, state, delay)
                }
                None => {
                    path.push(u32::MAX);
                    resolve(then, request, path, state, delay)
                }
            }
        }
    }
}

/// What one call does: wait `delay`, then `action`.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) delay: Duration,
    pub(crate) action: Action,
}

#[derive(Debug)]
pub(crate) enum Action {
    Reply(Box<ReplyPlan>),
    Fail(Failure),
    Hang,
    Drop(usize),
    Malformed(Option<String>),
    Truncated,
}

/// A successful answer worked out for one request, in no particular wire format.
#[derive(Debug, Clone)]
pub(crate) struct ReplyPlan {
    pub(crate) call: u64,
    pub(crate) id: String,
    pub(crate) model: String,
    pub(crate) created: u64,
    pub(crate) pieces: Vec<String>,
    pub(crate) finish_reason: FinishReason,
    pub(crate) usage: Usage,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) first_token_delay: Duration,
    pub(crate) chunk_delay: Duration,
    pub(crate) fault: Option<StreamFault>,
    /// The tool call's id and function name, if the answer is a tool call (the pieces are
    /// then its arguments).
    pub(crate) tool_call: Option<(String, String)>,
}

impl ReplyPlan {
    pub(crate) fn new(
        reply: &Reply,
        request: &ChatRequest,
        configured_model: Option<&str>,
        call: u64,
    ) -> Self {
        let (mut pieces, default_finish) = match &reply.tool_call {
            Some(call) => (
                split_chars(&call.arguments, reply.chunks),
                FinishReason::ToolCalls,
            ),
            None => {
                let text = reply.text.clone().unwrap_or_else(|| derived_text(request));
                let mut pieces = split_pieces(continuation(request, &text), reply.chunks);
                if let Some(at) = reply.diverge_after {
                    for (index, piece) in pieces.iter_mut().enumerate().skip(at) {
                        *piece = format!("sampled{call}w{index} ");
                    }
                }
                (pieces, FinishReason::Stop)
            }
        };
        let mut finish_reason = reply
            .finish_reason
            .as_deref()
            .map_or(default_finish, FinishReason::from);
        if let Some(limit) = request.output_limit()
            && reply.finish_reason.is_none()
            && pieces.len() > limit as usize
        {
            pieces.truncate(limit as usize);
            finish_reason = FinishReason::Length;
        }
        let prompt_chars: usize = request
            .messages
            .iter()
            .map(|message| message.text().len())
            .sum();
        let usage = Usage::new(prompt_chars.div_ceil(4).max(1) as u64, pieces.len() as u64);
        let model = reply
            .model
            .clone()
            .or_else(|| configured_model.map(str::to_owned))
            .unwrap_or_else(|| request.model.to_string());
        Self {
            call,
            id: format!("chatcmpl-sim-{call}"),
            model,
            created: 1_700_000_000 + call,
            pieces,
            finish_reason,
            usage,
            stream: request.is_stream(),
            include_usage: request.wants_stream_usage(),
            tool_call: reply
                .tool_call
                .as_ref()
                .map(|tool| (format!("call_sim_{call}"), tool.name.clone())),
            first_token_delay: reply.first_token_delay,
            chunk_delay: reply.chunk_delay,
            fault: reply.fault.clone(),
        }
    }

    /// The whole text.
    pub(crate) fn text(&self) -> String {
        self.pieces.concat()
    }
}

/// `simulated answer to: <the last user message, shortened>`.
fn derived_text(request: &ChatRequest) -> String {
    let last = request
        .messages
        .iter()
        .rev()
        .find(|message| message.role == Role::User)
        .map(brace_llm::Message::text)
        .unwrap_or_default();
    let last = last.split_whitespace().collect::<Vec<_>>().join(" ");
    if last.is_empty() {
        return "simulated answer".to_owned();
    }
    let mut end = last.len().min(80);
    while !last.is_char_boundary(end) {
        end -= 1;
    }
    format!("simulated answer to: {}", &last[..end])
}

/// The part of `text` still to send: when the conversation ends with an assistant message
/// that `text` begins with (a prefill), the rest; else all of it.
fn continuation<'a>(request: &ChatRequest, text: &'a str) -> &'a str {
    let Some(last) = request.messages.last() else {
        return text;
    };
    if last.role != Role::Assistant {
        return text;
    }
    let prefill = last.text();
    if prefill.is_empty() {
        return text;
    }
    text.strip_prefix(prefill.as_str()).unwrap_or(text)
}

/// Splits `text` into `chunks` pieces of characters (one piece without `chunks`).
fn split_chars(text: &str, chunks: Option<usize>) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let chunks = chunks.unwrap_or(1).clamp(1, chars.len().max(1));
    let per = chars.len() / chunks;
    let rest = chars.len() % chunks;
    let mut pieces = Vec::with_capacity(chunks);
    let mut at = 0;
    for i in 0..chunks {
        let take = per + usize::from(i < rest);
        pieces.push(chars[at..at + take].iter().collect());
        at += take;
    }
    pieces
}

/// Splits `text` into `chunks` pieces (one per word by default), padding with extra words
/// when it has fewer. The pieces concatenate back to the text (plus any padding).
fn split_pieces(text: &str, chunks: Option<usize>) -> Vec<String> {
    let mut words: Vec<String> = text.split_inclusive(' ').map(str::to_owned).collect();
    let Some(chunks) = chunks else {
        return words;
    };
    let mut extra = 0;
    while words.len() < chunks {
        extra += 1;
        words.push(format!(" more{extra}"));
    }
    if chunks == 0 {
        return Vec::new();
    }
    let per = words.len() / chunks;
    let rest = words.len() % chunks;
    let mut pieces = Vec::with_capacity(chunks);
    let mut words = words.into_iter();
    for i in 0..chunks {
        let take = per + usize::from(i < rest);
        pieces.push(words.by_ref().take(take).collect::<String>());
    }
    pieces
}

/// One step of a streamed answer, in any wire format.
#[derive(Debug, Clone)]
pub(crate) enum Step<E> {
    /// A real event.
    Event(E),
    /// An in-band error event; the stream ends after it.
    Error(Failure),
    /// An invalid event; the stream goes on.
    Malformed,
    /// The stream breaks (connection dropped).
    Break,
    /// Nothing more, ever.
    Stall,
}

/// Times the events of a stream and injects the fault. `is_content` tells which events
/// carry content (the first of them waits `first_token_delay`; the first event, if it
/// carries none, goes out at once; the others wait `chunk_delay`).
pub(crate) fn timeline<E>(
    plan: &ReplyPlan,
    events: Vec<E>,
    is_content: impl Fn(&E) -> bool,
) -> Vec<(Duration, Step<E>)> {
    let mut seen_content = false;
    let mut timed: Vec<(Duration, Step<E>)> = events
        .into_iter()
        .enumerate()
        .map(|(index, event)| {
            let wait = if !seen_content && is_content(&event) {
                seen_content = true;
                plan.first_token_delay
            } else if index == 0 {
                Duration::ZERO
            } else {
                plan.chunk_delay
            };
            (wait, Step::Event(event))
        })
        .collect();
    match &plan.fault {
        None | Some(StreamFault::MissingDone) => {}
        Some(StreamFault::Break { after }) => {
            timed.truncate(*after);
            timed.push((plan.chunk_delay, Step::Break));
        }
        Some(StreamFault::Stall { after }) => {
            timed.truncate(*after);
            timed.push((plan.chunk_delay, Step::Stall));
        }
        Some(StreamFault::Error { after, error }) => {
            timed.truncate(*after);
            timed.push((plan.chunk_delay, Step::Error(error.clone())));
        }
        Some(StreamFault::Malformed { at }) => {
            let at = (*at).min(timed.len());
            timed.insert(at, (plan.chunk_delay, Step::Malformed));
        }
    }
    timed
}

/// `true` if a stream with this plan ends on its own (so a `[DONE]` may follow).
pub(crate) fn ends_cleanly(plan: &ReplyPlan) -> bool {
    matches!(
        plan.fault,
        None | Some(StreamFault::Malformed { .. } | StreamFault::MissingDone)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_concatenate_to_the_text() {
        let text = "one two three four five";
        assert_eq!(split_pieces(text, None).concat(), text);
        let three = split_pieces(text, Some(3));
        assert_eq!(three.len(), 3);
        assert_eq!(three.concat(), text);
    }

    #[test]
    fn pieces_are_padded_to_the_asked_count() {
        let pieces = split_pieces("hi", Some(4));
        assert_eq!(pieces.len(), 4);
        assert!(pieces.iter().all(|piece| !piece.is_empty()));
        assert!(split_pieces("hi", Some(0)).is_empty());
    }

    #[test]
    fn derived_text_quotes_the_last_user_message() {
        let request = ChatRequest::new(
            "m",
            vec![
                brace_llm::Message::user("first"),
                brace_llm::Message::assistant("x"),
                brace_llm::Message::user("what   is\nbrace?"),
            ],
        );
        assert_eq!(
            derived_text(&request),
            "simulated answer to: what is brace?"
        );
    }

    #[test]
    fn prefill_gets_the_rest_of_the_answer() {
        let request = ChatRequest::new(
            "m",
            vec![
                brace_llm::Message::user("hello"),
                brace_llm::Message::assistant("simulated answer"),
            ],
        );
        let plan = ReplyPlan::new(&Reply::default(), &request, None, 1);
        assert_eq!(plan.text(), " to: hello");
    }

    #[test]
    fn tool_call_arguments_split_into_pieces() {
        let pieces = split_chars(r#"{"city":"Paris"}"#, Some(4));
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces.concat(), r#"{"city":"Paris"}"#);
        assert_eq!(split_chars("", Some(3)), [""]);
    }

    #[test]
    fn the_same_request_gets_the_same_text_unless_the_reply_diverges() {
        let request = ChatRequest::new("m", vec![brace_llm::Message::user("count")]);
        let reply = Reply::new().with_chunks(50);
        let first = ReplyPlan::new(&reply, &request, None, 1).text();
        assert_eq!(
            ReplyPlan::new(&reply, &request, Some("other"), 7).text(),
            first
        );
        let sampled = ReplyPlan::new(&reply.clone().with_divergence_after(10), &request, None, 2);
        assert_eq!(sampled.pieces.len(), 50);
        let common: String = sampled.pieces[..10].concat();
        assert!(first.starts_with(&common));
        assert!(!first.starts_with(&sampled.text()));
        assert_ne!(
            ReplyPlan::new(&reply.with_divergence_after(10), &request, None, 3).text(),
            sampled.text(),
            "another call samples another text"
        );
    }

    #[test]
    fn max_tokens_cuts_the_answer_with_length() {
        let request =
            ChatRequest::new("m", vec![brace_llm::Message::user("a b c d e")]).with_max_tokens(2);
        let plan = ReplyPlan::new(&Reply::default(), &request, None, 1);
        assert_eq!(plan.pieces.len(), 2);
        assert_eq!(plan.finish_reason, FinishReason::Length);
        assert_eq!(plan.usage.completion_tokens, 2);
    }
}
