//! [`FirstContent`]: when a [`ChatResponse`] commits to the provider that sent it, as a
//! [`brace_core::commit::Commit`] policy for generic layers such as a failover service.
//!
//! A whole completion commits at once. A stream commits at its first content or tool-call
//! delta (or a chunk carrying a finish reason): role-only and empty chunks are held back,
//! and an error or the end of the stream before that point resolves to `Err`, so that the
//! layer can move on to another provider. After the commit, the held chunks are replayed
//! in front of the rest of the stream and any later error reaches the caller inside it.
//!
//! [`StreamGuardLayer`](crate::guard::StreamGuardLayer) commits at the same point inside a
//! provider's own stack, with time limits; `FirstContent` is for a layer that takes a
//! commit policy and has no limits of its own.
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
use crate::response::{ChatResponse, ChatStream, ResponseBody, ResponseMeta};
use crate::types::ChatChunk;

/// Commits a [`ChatResponse`] at once when whole, and at its first content delta when
/// streamed. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstContent;

impl Commit<ChatResponse> for FirstContent {
    type Error = LlmError;
    type Future = CommitFuture;

    fn commit(&self, response: ChatResponse) -> CommitFuture {
        let ChatResponse { meta, body } = response;
        let state = match body {
            ResponseBody::Stream(stream) => State::Waiting {
                meta,
                stream,
                held: VecDeque::new(),
            },
            body @ ResponseBody::Complete(_) => State::Committed(ChatResponse { meta, body }),
        };
        CommitFuture { state }
    }

    fn commit_now(
        &self,
        response: ChatResponse,
    ) -> Commitment<ChatResponse, LlmError, CommitFuture> {
        match response.body {
            ResponseBody::Complete(_) => Commitment::Now(Ok(response)),
            ResponseBody::Stream(_) => Commitment::Later(self.commit(response)),
        }
    }
}

/// Resolves once a response commits: see [`FirstContent`].
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
}

enum State {
    Committed(ChatResponse),
    Waiting {
        meta: ResponseMeta,
        stream: ChatStream,
        held: VecDeque<ChatChunk>,
    },
    Done,
}

impl Future for CommitFuture {
    type Output = Result<ChatResponse, LlmError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let State::Waiting { meta, stream, held } = &mut self.state else {
            return match mem::replace(&mut self.state, State::Done) {
                State::Committed(response) => Poll::Ready(Ok(response)),
                _ => panic!("CommitFuture polled after completion"),
            };
        };
        loop {
            match ready!(Pin::new(&mut *stream).poll_next(cx)) {
                Some(Ok(chunk)) => {
                    let commits = chunk.has_content() || chunk.finish_reason().is_some();
                    held.push_back(chunk);
                    if commits {
                        break;
                    }
                }
                Some(Err(err)) => {
                    let err = if err.provider().is_some() {
                        err
                    } else {
                        err.with_provider(meta.provider.clone())
                    };
                    self.state = State::Done;
                    return Poll::Ready(Err(err));
                }
                None => {
                    let err = LlmError::new(
                        LlmErrorKind::StreamInterrupted,
                        format!(
                            "stream ended before any content ({} chunk{} received)",
                            held.len(),
                            if held.len() == 1 { "" } else { "s" }
                        ),
                    )
                    .with_provider(meta.provider.clone());
                    self.state = State::Done;
                    return Poll::Ready(Err(err));
                }
            }
        }
        let State::Waiting { meta, stream, held } = mem::replace(&mut self.state, State::Done)
        else {
            unreachable!("the state was Waiting above");
        };
        let replay = futures_util::stream::iter(held.into_iter().map(Ok)).chain(stream);
        Poll::Ready(Ok(ChatResponse {
            meta,
            body: ResponseBody::Stream(ChatStream::new(replay)),
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
            .map(|item| item.map_err(|err| err.kind()))
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
}
