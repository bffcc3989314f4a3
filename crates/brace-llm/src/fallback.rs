//! [`FallbackLayer`]: when the inner service fails with an error of a chosen kind, ask
//! another service instead.
//!
//! Failover moves a request on to the next provider for any failure a classifier says
//! another provider may fix. Some failures call for a *different* set of providers: a
//! content-policy refusal that the operator wants asked of a named, more permissive
//! deployment (LiteLLM's `content_policy_fallbacks`), or a prompt too long for the route's
//! models that a named long-context model may take. The layer catches the inner service's
//! error when it is (or wraps, at any depth) an [`LlmError`] of one of the chosen kinds, and
//! sends the same request to the fallback service — typically a failover service over the
//! named providers.
//!
//! If the fallback fails too, the caller gets the **original** error (the refusal, the
//! context-length error): that is the answer to the request, and the fallback's failure is
//! logged at WARN. Errors of other kinds and successful responses pass through untouched.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use brace_llm::fallback::FallbackLayer;
//! use brace_llm::{ChatRequest, LlmErrorKind, Message};
//! use brace_sim::{Behavior, SimProvider};
//! use tower::{Layer, ServiceExt};
//!
//! let strict = SimProvider::with_behavior("strict", Behavior::fail(LlmErrorKind::ContentFiltered));
//! let lenient = SimProvider::with_behavior("lenient", Behavior::text("here you go"));
//! let service = FallbackLayer::new(lenient)
//!     .on(LlmErrorKind::ContentFiltered)
//!     .layer(strict);
//! let request = ChatRequest::new("m", vec![Message::user("hi")]);
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(&*response.meta.provider, "lenient");
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use brace_core::BoxError;
use pin_project_lite::pin_project;
use tower::ServiceExt;
use tower::util::Oneshot;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{LlmError, LlmErrorKind};

/// The set of kinds a [`FallbackLayer`] acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Kinds(u32);

impl Kinds {
    fn bit(kind: LlmErrorKind) -> u32 {
        1 << LlmErrorKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_default()
    }

    fn insert(&mut self, kind: LlmErrorKind) {
        self.0 |= Self::bit(kind);
    }

    fn contains(self, kind: LlmErrorKind) -> bool {
        self.0 & Self::bit(kind) != 0
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn of(self, err: &BoxError) -> Option<LlmErrorKind> {
        let err = brace_core::error::find::<LlmError>(&**err)?;
        self.contains(err.kind()).then_some(err.kind())
    }
}

/// Sends the request to a fallback service when the inner service fails with an error of
/// one of the chosen kinds. See the [module docs](self).
///
/// # Clone
///
/// Cheap when the fallback service is: clones share nothing else.
#[derive(Clone)]
pub struct FallbackLayer<F> {
    fallback: F,
    kinds: Kinds,
}

impl<F> fmt::Debug for FallbackLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<_> = LlmErrorKind::ALL
            .iter()
            .filter(|kind| self.kinds.contains(**kind))
            .collect();
        f.debug_struct("FallbackLayer")
            .field("kinds", &kinds)
            .finish_non_exhaustive()
    }
}

impl<F> FallbackLayer<F> {
    /// Falls back on `fallback` for no kind yet: add kinds with [`on`](Self::on).
    pub fn new(fallback: F) -> Self {
        Self {
            fallback,
            kinds: Kinds::default(),
        }
    }

    /// Also falls back on errors of `kind`.
    #[must_use]
    pub fn on(mut self, kind: LlmErrorKind) -> Self {
        self.kinds.insert(kind);
        self
    }

    /// `true` if errors of `kind` go to the fallback.
    pub fn falls_back_on(&self, kind: LlmErrorKind) -> bool {
        self.kinds.contains(kind)
    }
}

impl<S, F: Clone> Layer<S> for FallbackLayer<F> {
    type Service = Fallback<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback {
            inner,
            alternative: self.fallback.clone(),
            kinds: self.kinds,
        }
    }
}

/// The service made by [`FallbackLayer`].
///
/// # Clone
///
/// Clones the inner and the fallback service.
#[derive(Clone)]
pub struct Fallback<S, F> {
    inner: S,
    alternative: F,
    kinds: Kinds,
}

impl<S: fmt::Debug, F> fmt::Debug for Fallback<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .field("kinds", &self.kinds)
            .finish_non_exhaustive()
    }
}

impl<S, F> Fallback<S, F> {
    brace_core::define_inner_service_accessors!();
}

impl<S, F, Req> Service<Req> for Fallback<S, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    F: Service<Req, Response = S::Response> + Clone,
    F::Error: Into<BoxError>,
    Req: Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, F, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        // The request is kept only when there is something to fall back on.
        let spare = (!self.kinds.is_empty()).then(|| (request.clone(), self.alternative.clone()));
        ResponseFuture {
            state: State::Inner {
                future: self.inner.call(request),
                spare,
                kinds: self.kinds,
            },
        }
    }
}

pin_project! {
    /// The future of a [`Fallback`] call: the inner call, then the fallback's if the inner
    /// one failed with a chosen kind.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the call in flight.
    pub struct ResponseFuture<Fut, F, Req>
    where
        F: Service<Req>,
    {
        #[pin]
        state: State<Fut, F, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<Fut, F, Req>
    where
        F: Service<Req>,
    {
        Inner {
            #[pin]
            future: Fut,
            spare: Option<(Req, F)>,
            kinds: Kinds,
        },
        Fallback {
            #[pin]
            future: Oneshot<F, Req>,
            original: Option<BoxError>,
        },
    }
}

impl<Fut, F: Service<Req>, Req> fmt::Debug for ResponseFuture<Fut, F, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Inner { .. } => "inner",
            State::Fallback { .. } => "fallback",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<Fut, E, F, Req, T> Future for ResponseFuture<Fut, F, Req>
where
    Fut: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    F: Service<Req, Response = T>,
    F::Error: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner {
                    future,
                    spare,
                    kinds,
                } => {
                    let err = match ready!(future.poll(cx)) {
                        Ok(response) => return Poll::Ready(Ok(response)),
                        Err(err) => err.into(),
                    };
                    let Some(kind) = kinds.of(&err) else {
                        return Poll::Ready(Err(err));
                    };
                    let Some((request, fallback)) = spare.take() else {
                        return Poll::Ready(Err(err));
                    };
                    tracing::info!(
                        kind = kind.as_str(),
                        error = %err,
                        "asking the fallback providers for this kind of failure"
                    );
                    this.state.set(State::Fallback {
                        future: fallback.oneshot(request),
                        original: Some(err),
                    });
                }
                StateProj::Fallback { future, original } => {
                    return Poll::Ready(match ready!(future.poll(cx)) {
                        Ok(response) => Ok(response),
                        Err(failure) => {
                            let failure: BoxError = failure.into();
                            tracing::warn!(
                                error = %failure,
                                "the fallback failed too; answering with the original error"
                            );
                            Err(original
                                .take()
                                .expect("the original error is kept until the fallback ends"))
                        }
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChatRequest, ChatResponse, Message};
    use tower::service_fn;

    fn request() -> ChatRequest {
        ChatRequest::new("m", vec![Message::user("hi")])
    }

    fn answer(provider: &'static str) -> ChatResponse {
        ChatResponse::complete(
            provider,
            crate::ChatCompletion::new("c", "m", "ok", crate::FinishReason::Stop),
        )
    }

    fn failing(
        kind: LlmErrorKind,
    ) -> impl Service<ChatRequest, Response = ChatResponse, Error = LlmError, Future: Send> + Clone
    {
        service_fn(move |_: ChatRequest| async move {
            Err::<ChatResponse, _>(LlmError::new(kind, "no").with_provider("inner"))
        })
    }

    #[tokio::test]
    async fn a_chosen_kind_goes_to_the_fallback() {
        let fallback = service_fn(|_: ChatRequest| async { Ok::<_, LlmError>(answer("other")) });
        let service = FallbackLayer::new(fallback)
            .on(LlmErrorKind::ContentFiltered)
            .layer(failing(LlmErrorKind::ContentFiltered));
        let response = service.oneshot(request()).await.unwrap();
        assert_eq!(&*response.meta.provider, "other");
    }

    #[tokio::test]
    async fn other_kinds_pass_through_and_the_fallback_is_not_called() {
        let called = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = called.clone();
        let fallback = service_fn(move |_: ChatRequest| {
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<_, LlmError>(answer("other")) }
        });
        let service = FallbackLayer::new(fallback)
            .on(LlmErrorKind::ContentFiltered)
            .layer(failing(LlmErrorKind::Server));
        let err = service.oneshot(request()).await.unwrap_err();
        assert_eq!(
            err.downcast_ref::<LlmError>().unwrap().kind(),
            LlmErrorKind::Server
        );
        assert!(!called.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_failing_fallback_answers_with_the_original_error() {
        let service = FallbackLayer::new(failing(LlmErrorKind::Overloaded))
            .on(LlmErrorKind::ContextLengthExceeded)
            .layer(failing(LlmErrorKind::ContextLengthExceeded));
        let err = service.oneshot(request()).await.unwrap_err();
        assert_eq!(
            err.downcast_ref::<LlmError>().unwrap().kind(),
            LlmErrorKind::ContextLengthExceeded
        );
    }

    #[tokio::test]
    async fn a_wrapped_error_is_found() {
        let wrapped = service_fn(|_: ChatRequest| async {
            let inner: BoxError = Box::new(LlmError::new(LlmErrorKind::ContentFiltered, "no"));
            Err::<ChatResponse, _>(BoxError::from(brace_core::RetriesExhausted::new(
                1,
                brace_core::error::GiveUpReason::MaxRetries,
                inner,
            )))
        });
        let fallback = service_fn(|_: ChatRequest| async { Ok::<_, LlmError>(answer("other")) });
        let service = FallbackLayer::new(fallback)
            .on(LlmErrorKind::ContentFiltered)
            .layer(wrapped);
        assert_eq!(
            &*service.oneshot(request()).await.unwrap().meta.provider,
            "other"
        );
    }
}
