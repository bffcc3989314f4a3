//! [`StreamGuardLayer`]: the commit point of a streamed answer, and the limits that keep a
//! stream from holding a caller forever.
//!
//! A streamed response is not committed to a provider until its first content or tool-call
//! delta arrives. The guard's future resolves only then: role-only and empty chunks are held
//! back, and anything that fails before — an in-band error event, a broken connection, a
//! stream that ends empty, no token within the time-to-first-token limit — is an ordinary
//! `Err` from `call`, which retry and failover handle exactly as for a non-streamed call.
//!
//! After the commit, the stream is watched: silence longer than the idle limit, or the total
//! deadline passing, ends it with an `Err` item, never a clean end that would make a
//! truncated answer look complete.
//!
//! ```
//! use std::time::Duration;
//! use brace_llm::guard::StreamGuardLayer;
//!
//! let layer = StreamGuardLayer::new()
//!     .first_token_timeout(Duration::from_secs(5))
//!     .idle_timeout(Duration::from_secs(10))
//!     .total_timeout(Duration::from_secs(120));
//! # let _ = layer;
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use brace_core::commit::{Commit, Commitment};

use crate::commit::FirstContent;
use crate::error::{LlmError, LlmErrorKind};
use crate::response::StreamChunk;
use crate::response::{ChatResponse, ChatStream, ResponseBody};
use crate::types::ChatRequest;

/// Called with the provider's name and the time to its first token.
pub type FirstTokenHook = Arc<dyn Fn(&str, Duration) + Send + Sync>;

/// Guards streamed responses: commit at the first content delta, time-to-first-token, idle
/// and total limits. See the [module docs](self).
#[derive(Clone, Default)]
pub struct StreamGuardLayer {
    first_token_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    total_timeout: Option<Duration>,
    on_first_token: Option<FirstTokenHook>,
}

impl fmt::Debug for StreamGuardLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamGuardLayer")
            .field("first_token_timeout", &self.first_token_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("total_timeout", &self.total_timeout)
            .finish_non_exhaustive()
    }
}

impl StreamGuardLayer {
    /// A guard with no time limits: it still holds a stream back until it commits.
    pub fn new() -> Self {
        Self::default()
    }

    /// The longest wait from the call to the first content delta.
    #[must_use]
    pub fn first_token_timeout(mut self, limit: Duration) -> Self {
        self.first_token_timeout = Some(limit);
        self
    }

    /// The longest silence between two chunks of a committed stream.
    #[must_use]
    pub fn idle_timeout(mut self, limit: Duration) -> Self {
        self.idle_timeout = Some(limit);
        self
    }

    /// The longest a whole streamed answer may take, from the call to its last chunk.
    ///
    /// Until the commit point, a deadline or attempt timeout above
    /// ([`brace_core::deadline`]) that cuts the call no later stands in for this limit's
    /// clock (see [`timeout_at`](brace_core::deadline::timeout_at)): under an attempt
    /// timeout of the same length, a call that runs out of time before it commits fails with
    /// the error of the clock that cut it, not the guard's "no token" error.
    #[must_use]
    pub fn total_timeout(mut self, limit: Duration) -> Self {
        self.total_timeout = Some(limit);
        self
    }

    /// Calls `hook` with the provider and the time to first token of every committed stream.
    #[must_use]
    pub fn on_first_token(mut self, hook: impl Fn(&str, Duration) + Send + Sync + 'static) -> Self {
        self.on_first_token = Some(Arc::new(hook));
        self
    }
}

impl<S> Layer<S> for StreamGuardLayer {
    type Service = StreamGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StreamGuard {
            inner,
            config: self.clone(),
        }
    }
}

/// The service made by [`StreamGuardLayer`].
#[derive(Clone, Debug)]
pub struct StreamGuard<S> {
    inner: S,
    config: StreamGuardLayer,
}

impl<S> StreamGuard<S> {
    brace_core::define_inner_service_accessors!();
}

impl<S> Service<ChatRequest> for StreamGuard<S>
where
    S: Service<ChatRequest, Response = ChatResponse, Error = LlmError>,
    S::Future: Send + 'static,
{
    type Response = ChatResponse;
    type Error = LlmError;
    type Future = Pin<Box<dyn Future<Output = Result<ChatResponse, LlmError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        let config = self.config.clone();
        let start = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let total_deadline = config.total_timeout.map(|limit| start + limit);
            let commit_deadline = earliest(
                config.first_token_timeout.map(|limit| start + limit),
                total_deadline,
            );
            // The commit point is `FirstContent`'s: the first content or tool-call delta.
            let committed = async move {
                match FirstContent.commit_now(call.await?) {
                    Commitment::Now(result) => result,
                    Commitment::Later(waiting) => waiting.await,
                }
            };
            // No clock of its own where a layer above (an attempt's timeout) already cuts
            // the call by then: one clock per limit.
            let response = match commit_deadline {
                Some(deadline) => brace_core::deadline::timeout_at(deadline, committed)
                    .await
                    .map_err(|_| {
                        first_token_elapsed(config.first_token_timeout.or(config.total_timeout))
                    })??,
                None => committed.await?,
            };
            let ChatResponse { meta, body } = response;
            let ResponseBody::Stream(stream) = body else {
                return Ok(ChatResponse { meta, body });
            };
            let first_token = start.elapsed();
            tracing::debug!(
                provider = &*meta.provider,
                first_token_ms = i64::try_from(first_token.as_millis()).unwrap_or(i64::MAX),
                "stream committed"
            );
            if let Some(hook) = &config.on_first_token {
                hook(&meta.provider, first_token);
            }
            let guarded = Guarded {
                stream: Some(stream),
                idle: config.idle_timeout,
                total_deadline,
                provider: meta.provider.clone(),
                finished: false,
            };
            Ok(ChatResponse {
                meta,
                body: ResponseBody::Stream(ChatStream::new(guarded.into_stream())),
            })
        })
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn first_token_elapsed(limit: Option<Duration>) -> LlmError {
    LlmError::new(
        LlmErrorKind::Timeout,
        format!(
            "no token within {}ms",
            limit.map_or(0, |limit| limit.as_millis())
        ),
    )
}

/// Logs a committed stream that broke, once: the caller has part of an answer.
fn log_break(err: &LlmError) {
    tracing::warn!(
        provider = err.provider(),
        kind = err.kind().as_str(),
        reason = %err,
        "stream broke"
    );
}

struct Guarded {
    stream: Option<ChatStream>,
    idle: Option<Duration>,
    total_deadline: Option<Instant>,
    provider: Arc<str>,
    finished: bool,
}

impl Guarded {
    fn into_stream(self) -> impl futures_core::Stream<Item = Result<StreamChunk, LlmError>> + Send {
        futures_util::stream::unfold(self, |mut state| async move {
            let mut stream = state.stream.take()?;
            let idle_deadline = state.idle.map(|idle| Instant::now() + idle);
            let deadline = earliest(idle_deadline, state.total_deadline);
            let next = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        let total = state.total_deadline.is_some_and(|d| d <= Instant::now());
                        let message = if total {
                            "stream exceeded its total deadline".to_owned()
                        } else {
                            format!(
                                "stream stalled: no chunk for {}ms",
                                state.idle.map_or(0, |idle| idle.as_millis())
                            )
                        };
                        let err = LlmError::new(LlmErrorKind::StreamInterrupted, message)
                            .with_provider(state.provider.clone());
                        log_break(&err);
                        return Some((Err(err), state));
                    }
                },
                None => stream.next().await,
            };
            match next {
                Some(Ok(chunk)) => {
                    state.finished |= chunk.finish_reason().is_some();
                    state.stream = Some(stream);
                    Some((Ok(chunk), state))
                }
                Some(Err(err)) => {
                    let err = if err.provider().is_some() {
                        err
                    } else {
                        err.with_provider(state.provider.clone())
                    };
                    log_break(&err);
                    Some((Err(err), state))
                }
                // A clean end without a finish reason is a cut, not a complete answer.
                None if !state.finished => {
                    let err = LlmError::new(
                        LlmErrorKind::StreamInterrupted,
                        "stream ended without a finish reason",
                    )
                    .with_provider(state.provider.clone());
                    log_break(&err);
                    Some((Err(err), state))
                }
                None => None,
            }
        })
    }
}
