//! [`RequestSpanLayer`]: each request's handler and response body run inside the span made
//! for it, and nothing else is done per request.
//!
//! tower-http's `TraceLayer` does this and more: it reads the clock when a request comes in,
//! when its answer is ready, when the body starts and twice for every frame of the body
//! (five readings for a whole answer in the gateway's profile), to hand latencies to callbacks that by default write debug lines, and
//! it clones the span into the body. The gateway needs the span (its logs carry the request's
//! fields, its traces are exported from it) and the one callback that writes at the default
//! level: an error line for a 5xx answer or a body that fails. This layer does those and
//! reads no clock.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::Span;

/// Runs each request inside the span `make_span` makes for it (see the [module docs](self)).
#[derive(Clone, Copy)]
pub(crate) struct RequestSpanLayer<M> {
    make_span: M,
}

impl<M> RequestSpanLayer<M> {
    pub(crate) fn new(make_span: M) -> Self {
        Self { make_span }
    }
}

impl<M> fmt::Debug for RequestSpanLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSpanLayer").finish_non_exhaustive()
    }
}

impl<S, M: Clone> Layer<S> for RequestSpanLayer<M> {
    type Service = RequestSpan<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestSpan {
            inner,
            make_span: self.make_span.clone(),
        }
    }
}

/// The service of [`RequestSpanLayer`].
#[derive(Clone, Copy)]
pub(crate) struct RequestSpan<S, M> {
    inner: S,
    make_span: M,
}

impl<S, M> fmt::Debug for RequestSpan<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSpan").finish_non_exhaustive()
    }
}

impl<S, M, B, R> Service<Request<B>> for RequestSpan<S, M>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: fmt::Display,
    M: Fn(&Request<B>) -> Span,
{
    type Response = Response<SpanBody<R>>;
    type Error = S::Error;
    type Future = SpanFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let span = (self.make_span)(&request);
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        SpanFuture { inner, span }
    }
}

pin_project! {
    /// The response future of [`RequestSpan`]: the handler polled inside the span, which
    /// then goes with the body.
    pub(crate) struct SpanFuture<F> {
        #[pin]
        inner: F,
        span: Span,
    }
}

impl<F, R, E> Future for SpanFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
    E: fmt::Display,
{
    type Output = Result<Response<SpanBody<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.span.enter();
            let result = ready!(this.inner.poll(cx));
            if let Err(err) = &result {
                tracing::error!(error = %err, "response failed");
            } else if let Ok(response) = &result
                && response.status().is_server_error()
            {
                tracing::error!(status = response.status().as_u16(), "response failed");
            }
            result
        };
        // The span goes with the body: it stays open while the answer streams.
        let span = std::mem::replace(this.span, Span::none());
        Poll::Ready(result.map(|response| response.map(|inner| SpanBody { inner, span })))
    }
}

pin_project! {
    /// A response body polled inside its request's span, which it keeps open until the
    /// body is dropped.
    pub(crate) struct SpanBody<B> {
        #[pin]
        inner: B,
        span: Span,
    }
}

impl<B> Body for SpanBody<B>
where
    B: Body,
    B::Error: fmt::Display,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let _entered = this.span.enter();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Err(err)) = &frame {
            tracing::error!(error = %err, "response body failed");
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
