//! When a [`ChatResponse`] commits to the provider that sent it, as
//! [`brace_core::commit::Commit`] policies for generic layers such as a failover service.
//!
//! A whole completion commits at once. A stream commits when its policy says:
//!
//! - [`FirstContent`] (the default): at its first content or tool-call delta (or a chunk
//!   carrying a finish reason). The caller sees text as soon as the provider sends it.
//! - [`AfterTokens`]: once `N` content deltas arrived (or the finish reason, for a shorter
//!   answer). A hold-back: the first `N` tokens wait in the policy's buffer, and a break
//!   before them is an ordinary failure that the layer above can fail over and restart
//!   cleanly — nothing of the broken attempt reached the caller.
//! - [`Complete`]: once the whole stream arrived and ended after its finish reason. Every
//!   break is then an ordinary failure; the caller sees the first token when the last one
//!   arrived.
//!
//! [`CommitPolicy`] is the three as one value (what a configuration file chooses).
//!
//! Chunks read before the commit point are held back: role-only and empty chunks, and for a
//! hold-back the first tokens. An error or the end of the stream before that point resolves
//! to `Err`, so that the layer can move on to another provider. After the commit, the held
//! chunks are replayed in front of the rest of the stream and any later error reaches the
//! caller inside it.
//!
//! Tokens are counted as content (or tool-call) deltas: OpenAI-style APIs stream about one
//! token per delta; providers that stream several tokens per delta commit later than `N`
//! real tokens, never earlier.
//!
//! The cost of a hold-back is time to first token: the caller's first token waits for the
//! provider's `N`-th (see the README and BENCHMARKS.md for measured numbers).
//!
//! [`StreamGuardLayer`](crate::guard::StreamGuardLayer) commits at the first content delta
//! inside a provider's own stack, with time limits; these policies are for a layer that takes
//! a commit policy and has no limits of its own.
//!
//! ```
//! use brace_core::commit::{Commit, Commitment};
//! use brace_llm::commit::FirstContent;
//! use brace_llm::{ChatChunk, ChatResponse, ChatStream, Delta, LlmError, LlmErrorKind};
//!
//! # tokio_test::block_on(async {
//! // A stream that breaks before its first token: the failover layer sees an Err.
//! let role_only = ChatChunk::new("c1", "gpt-4o", Delta::default());
//! let broken = ChatStream::from_items(vec![
//!     Ok(role_only),
//!     Err(LlmError::new(LlmErrorKind::StreamInterrupted, "connection reset")),
//! ]);
//! let err = FirstContent
//!     .commit(ChatResponse::stream("openai", "gpt-4o", broken))
//!     .await
//!     .unwrap_err();
//! assert_eq!(err.kind(), LlmErrorKind::StreamInterrupted);
//! assert_eq!(err.provider(), Some("openai"));
//! # });
//! ```
//!
//! A hold-back of three tokens turns a break after two into the call's error:
//!
//! ```
//! use brace_core::commit::Commit;
//! use brace_llm::commit::AfterTokens;
//! use brace_llm::{ChatChunk, ChatResponse, ChatStream, Delta, LlmError, LlmErrorKind};
//!
//! # tokio_test::block_on(async {
//! let word = |text: &str| Ok(ChatChunk::new("c1", "m", Delta::text(text)));
//! let broken = ChatStream::from_items(vec![
//!     word("one "),
//!     word("two "),
//!     Err(LlmError::new(LlmErrorKind::StreamInterrupted, "connection reset")),
//! ]);
//! let err = AfterTokens::new(3)
//!     .commit(ChatResponse::stream("openai", "m", broken))
//!     .await
//!     .unwrap_err();
//! assert_eq!(err.kind(), LlmErrorKind::StreamInterrupted);
//! # });
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use brace_core::commit::{Commit, Commitment};
use futures_core::Stream;
use futures_util::StreamExt;

use crate::error::{LlmError, LlmErrorKind};
use crate::response::StreamChunk;
use crate::response::{ChatResponse, ChatStream, ResponseBody, ResponseMeta};
#[cfg(test)]
use crate::types::ChatChunk;

/// Commits a [`ChatResponse`] at once when whole, and at its first content delta when
/// streamed. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstContent;

/// Commits a stream once `N` content deltas (tokens) arrived, or its finish reason for a
/// shorter answer: a hold-back of `N` tokens. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterTokens {
    tokens: usize,
}

impl AfterTokens {
    /// A hold-back of `tokens` tokens (at least one: `0` is taken as `1`, which is
    /// [`FirstContent`]).
    pub fn new(tokens: usize) -> Self {
        Self {
            tokens: tokens.max(1),
        }
    }

    /// How many tokens are held back.
    pub fn tokens(&self) -> usize {
        self.tokens
    }
}

/// Commits a stream only once it ended after its finish reason: the whole answer is held
/// back. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct Complete;

/// One of the commit policies, chosen at run time (from a configuration file).
///
/// Deserialized from `first_content` (the default), `{after_tokens: N}` (N at least 1) or
/// `complete`:
///
/// ```
/// use brace_llm::commit::CommitPolicy;
///
/// let policy: CommitPolicy = serde_json::from_str(r#"{"after_tokens": 64}"#).unwrap();
/// assert_eq!(policy, CommitPolicy::AfterTokens(64));
/// let policy: CommitPolicy = serde_json::from_str(r#""complete""#).unwrap();
/// assert_eq!(policy, CommitPolicy::Complete);
/// assert!(serde_json::from_str::<CommitPolicy>(r#"{"after_tokens": 0}"#).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RawPolicy", into = "RawPolicy")]
pub enum CommitPolicy {
    /// [`FirstContent`].
    #[default]
    FirstContent,
    /// [`AfterTokens`]: hold back this many tokens.
    AfterTokens(usize),
    /// [`Complete`]: hold back the whole answer.
    Complete,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawPolicy {
    FirstContent,
    AfterTokens(usize),
    Complete,
}

impl TryFrom<RawPolicy> for CommitPolicy {
    type Error = String;

    fn try_from(raw: RawPolicy) -> Result<Self, String> {
        Ok(match raw {
            RawPolicy::FirstContent => Self::FirstContent,
            RawPolicy::AfterTokens(0) => {
                return Err("after_tokens must be at least 1 (1 is first_content)".into());
            }
            RawPolicy::AfterTokens(tokens) => Self::AfterTokens(tokens),
            RawPolicy::Complete => Self::Complete,
        })
    }
}

impl From<CommitPolicy> for RawPolicy {
    fn from(policy: CommitPolicy) -> Self {
        match policy {
            CommitPolicy::FirstContent => Self::FirstContent,
            CommitPolicy::AfterTokens(tokens) => Self::AfterTokens(tokens),
            CommitPolicy::Complete => Self::Complete,
        }
    }
}

impl CommitPolicy {
    /// `true` if the policy holds back more than the first content delta.
    pub fn holds_back(&self) -> bool {
        match self {
            Self::FirstContent => false,
            Self::AfterTokens(tokens) => *tokens > 1,
            Self::Complete => true,
        }
    }

    fn until(self) -> Until {
        match self {
            Self::FirstContent => Until::Tokens(1),
            Self::AfterTokens(tokens) => Until::Tokens(tokens.max(1)),
            Self::Complete => Until::End,
        }
    }
}

impl From<FirstContent> for CommitPolicy {
    fn from(_: FirstContent) -> Self {
        Self::FirstContent
    }
}

impl From<AfterTokens> for CommitPolicy {
    fn from(policy: AfterTokens) -> Self {
        Self::AfterTokens(policy.tokens)
    }
}

impl From<Complete> for CommitPolicy {
    fn from(_: Complete) -> Self {
        Self::Complete
    }
}

/// Where a stream commits.
#[derive(Debug, Clone, Copy)]
enum Until {
    /// Once this many content deltas arrived, or a finish reason.
    Tokens(usize),
    /// Once the stream ended after its finish reason.
    End,
}

fn commit_with(until: Until, response: ChatResponse) -> CommitFuture {
    let ChatResponse { meta, body } = response;
    let state = match body {
        ResponseBody::Stream(stream) => State::Waiting {
            meta,
            stream,
            held: VecDeque::new(),
            tokens: 0,
            finished: false,
        },
        body @ ResponseBody::Complete(_) => State::Committed(ChatResponse { meta, body }),
    };
    CommitFuture { state, until }
}

fn commit_now_with(
    until: Until,
    response: ChatResponse,
) -> Commitment<ChatResponse, LlmError, CommitFuture> {
    match response.body {
        ResponseBody::Complete(_) => Commitment::Now(Ok(response)),
        ResponseBody::Stream(_) => Commitment::Later(commit_with(until, response)),
    }
}

macro_rules! impl_commit {
    ($policy:ty, |$this:ident| $until:expr) => {
        impl Commit<ChatResponse> for $policy {
            type Error = LlmError;
            type Future = CommitFuture;

            fn commit(&self, response: ChatResponse) -> CommitFuture {
                let $this = self;
                commit_with($until, response)
            }

            fn commit_now(
                &self,
                response: ChatResponse,
            ) -> Commitment<ChatResponse, LlmError, CommitFuture> {
                let $this = self;
                commit_now_with($until, response)
            }
        }
    };
}

impl_commit!(FirstContent, |_this| Until::Tokens(1));
impl_commit!(AfterTokens, |this| Until::Tokens(this.tokens));
impl_commit!(Complete, |_this| Until::End);
impl_commit!(CommitPolicy, |this| this.until());

/// Resolves once a response commits: see the [module docs](self).
///
/// # Cancel safety
///
/// Dropping the future drops the response and the chunks held so far.
///
/// # Panics
///
/// When polled again after it resolved, as futures may.
pub struct CommitFuture {
    state: State,
    until: Until,
}

enum State {
    Committed(ChatResponse),
    Waiting {
        meta: ResponseMeta,
        stream: ChatStream,
        held: VecDeque<StreamChunk>,
        /// Content deltas held so far.
        tokens: usize,
        finished: bool,
    },
    Done,
}

impl Future for CommitFuture {
    type Output = Result<ChatResponse, LlmError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let until = self.until;
        let State::Waiting {
            meta,
            stream,
            held,
            tokens,
            finished,
        } = &mut self.state
        else {
            return match mem::replace(&mut self.state, State::Done) {
                State::Committed(response) => Poll::Ready(Ok(response)),
                _ => panic!("CommitFuture polled after completion"),
            };
        };
        let ended = loop {
            match ready!(Pin::new(&mut *stream).poll_next(cx)) {
                Some(Ok(chunk)) => {
                    *tokens += usize::from(chunk.has_content());
                    *finished |= chunk.finish_reason().is_some();
                    held.push_back(chunk);
                    let commits = match until {
                        Until::Tokens(needed) => *tokens >= needed || *finished,
                        Until::End => false,
                    };
                    if commits {
                        break false;
                    }
                }
                Some(Err(err)) => {
                    let err = if err.provider().is_some() {
                        err
                    } else {
                        err.with_provider(meta.provider.clone())
                    };
                    if *tokens > 0 {
                        tracing::warn!(
                            provider = %meta.provider,
                            held_tokens = *tokens,
                            error = %err,
                            outcome = "not_committed",
                            "stream broke during its hold-back; nothing reached the caller, \
                             the call fails (and may fail over)"
                        );
                    }
                    self.state = State::Done;
                    return Poll::Ready(Err(err));
                }
                None if *finished && matches!(until, Until::End) => break true,
                None => {
                    let message = if *tokens == 0 {
                        format!(
                            "stream ended before any content ({} chunk{} received)",
                            held.len(),
                            if held.len() == 1 { "" } else { "s" }
                        )
                    } else {
                        format!(
                            "stream ended without a finish reason after {tokens} token{} held \
                             back",
                            if *tokens == 1 { "" } else { "s" }
                        )
                    };
                    let err = LlmError::new(LlmErrorKind::StreamInterrupted, message)
                        .with_provider(meta.provider.clone());
                    self.state = State::Done;
                    return Poll::Ready(Err(err));
                }
            }
        };
        let State::Waiting {
            meta, stream, held, ..
        } = mem::replace(&mut self.state, State::Done)
        else {
            unreachable!("the state was Waiting above");
        };
        let held = futures_util::stream::iter(held.into_iter().map(Ok));
        let body = if ended {
            ChatStream::new(held)
        } else {
            ChatStream::new(held.chain(stream))
        };
        Poll::Ready(Ok(ChatResponse {
            meta,
            body: ResponseBody::Stream(body),
        }))
    }
}

impl fmt::Debug for CommitFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Committed(_) => "committed",
            State::Waiting { .. } => "waiting",
            State::Done => "done",
        };
        f.debug_struct("CommitFuture")
            .field("state", &state)
            .field("until", &self.until)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ChatCompletion, Delta, Role};

    fn role_only() -> ChatChunk {
        ChatChunk::new(
            "c1",
            "m",
            Delta {
                role: Some(Role::Assistant),
                ..Delta::default()
            },
        )
    }

    fn text(text: &str) -> ChatChunk {
        ChatChunk::new("c1", "m", Delta::text(text))
    }

    fn reset() -> LlmError {
        LlmError::new(LlmErrorKind::StreamInterrupted, "connection reset")
    }

    fn streamed(items: Vec<Result<ChatChunk, LlmError>>) -> ChatResponse {
        ChatResponse::stream("p", "m", ChatStream::from_items(items))
    }

    async fn items(response: ChatResponse) -> Vec<Result<ChatChunk, LlmErrorKind>> {
        let ResponseBody::Stream(stream) = response.body else {
            panic!("expected a stream");
        };
        stream
            .map(|item| item.map(ChatChunk::from).map_err(|err| err.kind()))
            .collect()
            .await
    }

    #[tokio::test]
    async fn error_before_first_content_is_the_calls_error() {
        let err = FirstContent
            .commit(streamed(vec![Ok(role_only()), Ok(text("")), Err(reset())]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), LlmErrorKind::StreamInterrupted);
        assert_eq!(err.provider(), Some("p"));
    }

    #[tokio::test]
    async fn stream_ending_without_content_is_an_error() {
        let err = FirstContent
            .commit(streamed(vec![Ok(role_only())]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), LlmErrorKind::StreamInterrupted);
    }

    #[tokio::test]
    async fn commits_at_first_content_and_replays_held_chunks() {
        let response = FirstContent
            .commit(streamed(vec![
                Ok(role_only()),
                Ok(text("Hel")),
                Ok(text("lo")),
                Err(reset()),
            ]))
            .await
            .unwrap();
        assert_eq!(&*response.meta.provider, "p");
        assert_eq!(
            items(response).await,
            [
                Ok(role_only()),
                Ok(text("Hel")),
                Ok(text("lo")),
                Err(LlmErrorKind::StreamInterrupted),
            ]
        );
    }

    #[tokio::test]
    async fn whole_completion_commits_at_once() {
        let completion: ChatCompletion = serde_json::from_str(
            r#"{"id":"x","object":"chat.completion","created":0,"model":"m","choices":[]}"#,
        )
        .unwrap();
        let response = FirstContent
            .commit(ChatResponse::complete("p", completion))
            .await
            .unwrap();
        assert!(!response.is_stream());
    }

    #[test]
    fn commit_now_decides_a_whole_completion_and_leaves_a_stream_waiting() {
        let completion: ChatCompletion = serde_json::from_str(
            r#"{"id":"x","object":"chat.completion","created":0,"model":"m","choices":[]}"#,
        )
        .unwrap();
        match FirstContent.commit_now(ChatResponse::complete("p", completion)) {
            Commitment::Now(Ok(response)) => assert!(!response.is_stream()),
            other => panic!("a whole completion commits at once, got {other:?}"),
        }
        assert!(matches!(
            FirstContent.commit_now(streamed(vec![Ok(role_only())])),
            Commitment::Later(_)
        ));
    }

    fn words(n: usize) -> Vec<Result<ChatChunk, LlmError>> {
        let mut items = vec![Ok(role_only())];
        items.extend((0..n).map(|i| Ok(text(&format!("w{i} ")))));
        items
    }

    #[tokio::test]
    async fn a_break_before_the_hold_back_is_the_calls_error() {
        let mut items = words(40);
        items.push(Err(reset()));
        let err = AfterTokens::new(64)
            .commit(streamed(items))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), LlmErrorKind::StreamInterrupted);
        assert_eq!(err.provider(), Some("p"));
    }

    #[tokio::test]
    async fn the_hold_back_commits_at_n_tokens_and_replays_them() {
        let mut items = words(70);
        items.push(Err(reset()));
        let response = CommitPolicy::AfterTokens(64)
            .commit(streamed(items))
            .await
            .unwrap();
        let items = self::items(response).await;
        assert_eq!(items.len(), 72, "role chunk, 70 words, the break");
        assert_eq!(items[1], Ok(text("w0 ")));
        assert_eq!(items[71], Err(LlmErrorKind::StreamInterrupted));
    }

    #[tokio::test]
    async fn a_short_answer_commits_at_its_finish_reason() {
        let mut finish = ChatChunk::new("c1", "m", Delta::default());
        finish.choices[0].finish_reason = Some(crate::types::FinishReason::Stop);
        let mut items = words(3);
        items.push(Ok(finish));
        let response = AfterTokens::new(64).commit(streamed(items)).await.unwrap();
        assert_eq!(self::items(response).await.len(), 5);
    }

    #[tokio::test]
    async fn complete_waits_for_the_end_and_fails_on_a_break_after_the_finish_reason() {
        let mut finish = ChatChunk::new("c1", "m", Delta::default());
        finish.choices[0].finish_reason = Some(crate::types::FinishReason::Stop);
        let mut whole = words(3);
        whole.push(Ok(finish.clone()));
        let response = Complete.commit(streamed(whole)).await.unwrap();
        assert_eq!(self::items(response).await.len(), 5);

        let mut broken = words(3);
        broken.push(Ok(finish));
        broken.push(Err(reset()));
        let err = Complete.commit(streamed(broken)).await.unwrap_err();
        assert_eq!(err.kind(), LlmErrorKind::StreamInterrupted);

        let err = Complete.commit(streamed(words(3))).await.unwrap_err();
        assert_eq!(err.kind(), LlmErrorKind::StreamInterrupted);
        assert!(err.to_string().contains("3 tokens held back"), "{err}");
    }

    #[test]
    fn policies_read_from_configuration() {
        for (text, policy) in [
            (r#""first_content""#, CommitPolicy::FirstContent),
            (r#"{"after_tokens": 64}"#, CommitPolicy::AfterTokens(64)),
            (r#""complete""#, CommitPolicy::Complete),
        ] {
            assert_eq!(serde_json::from_str::<CommitPolicy>(text).unwrap(), policy);
            assert_eq!(
                serde_json::from_str::<CommitPolicy>(&serde_json::to_string(&policy).unwrap())
                    .unwrap(),
                policy
            );
        }
        assert!(serde_json::from_str::<CommitPolicy>(r#""later""#).is_err());
        assert!(!CommitPolicy::FirstContent.holds_back());
        assert!(CommitPolicy::AfterTokens(2).holds_back());
    }
}
