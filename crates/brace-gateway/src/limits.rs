//! Limits that shed work at once rather than queue it: the gateway's in-flight bound
//! (`server.max_in_flight`), each provider's bulkhead (`providers[].max_in_flight`), and the
//! request body's read timeout (`server.body_timeout`).
//!
//! Both in-flight bounds count a request until its answer has been sent — a stream until its
//! last event — not only until its first byte: a streamed answer holds its upstream call (and
//! its memory) as long as it runs. That is why they hold a semaphore permit in the response
//! body or stream rather than use `tower::limit::ConcurrencyLimit`, which releases its permit
//! when the response future resolves; like `tower::load_shed`, they report ready and refuse
//! in `call`, so nothing ever waits for a permit.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::Stream;
use http::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::load_shed::error::Overloaded;
use tower::{Layer, Service};

use brace_core::BoxError;
use brace_llm::{ChatRequest, ChatResponse, ChatStream, ResponseBody};

use crate::error::ApiError;
use crate::metrics::Metrics;

// ===== the gateway's in-flight bound =====

/// Bounds the requests in flight through the routes it wraps (the data plane); one beyond
/// the bound is answered at once with a 503 in OpenAI's shape and `Retry-After: 1`.
///
/// # Clone
///
/// Clones share the bound (one semaphore), so wrapping several routes bounds them together.
#[derive(Clone)]
pub struct InFlightLimitLayer {
    semaphore: Arc<Semaphore>,
    limit: usize,
    metrics: Metrics,
}

impl fmt::Debug for InFlightLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightLimitLayer")
            .field("limit", &self.limit)
            .field("available", &self.semaphore.available_permits())
            .finish_non_exhaustive()
    }
}

impl InFlightLimitLayer {
    /// At most `limit` requests in flight; sheds are counted in `metrics`.
    pub fn new(limit: usize, metrics: Metrics) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(limit.min(Semaphore::MAX_PERMITS))),
            limit,
            metrics,
        }
    }
}

impl<S> Layer<S> for InFlightLimitLayer {
    type Service = InFlightLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlightLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`InFlightLimitLayer`] makes.
///
/// # Clone
///
/// Clones share the bound.
#[derive(Clone)]
pub struct InFlightLimit<S> {
    inner: S,
    layer: InFlightLimitLayer,
}

impl<S> fmt::Debug for InFlightLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightLimit")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Request<Body>> for InFlightLimit<S>
where
    S: Service<Request<Body>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = InFlightFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match self.layer.semaphore.clone().try_acquire_owned() {
            Ok(permit) => InFlightFuture {
                state: InFlightState::Admitted {
                    future: self.inner.call(request),
                    permit: Some(permit),
                },
            },
            Err(_) => {
                tracing::warn!(
                    scope = "gateway",
                    limit = self.layer.limit,
                    "request shed: server.max_in_flight reached"
                );
                self.layer.metrics.shed("gateway");
                let response = ApiError::overloaded(format!(
                    "the gateway is at its limit of {} requests in flight \
                     (server.max_in_flight); retry shortly",
                    self.layer.limit
                ))
                .into_response();
                InFlightFuture {
                    state: InFlightState::Shed {
                        response: Some(response),
                    },
                }
            }
        }
    }
}

pin_project! {
    /// The future of [`InFlightLimit`]: the inner answer with the permit moved into its body,
    /// or the shed answer.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the permit.
    pub struct InFlightFuture<F> {
        #[pin]
        state: InFlightState<F>,
    }
}

pin_project! {
    #[project = InFlightProj]
    enum InFlightState<F> {
        Admitted {
            #[pin]
            future: F,
            permit: Option<OwnedSemaphorePermit>,
        },
        Shed {
            response: Option<Response>,
        },
    }
}

impl<F, E> Future for InFlightFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            InFlightProj::Admitted { future, permit } => {
                let response = ready!(future.poll(cx))?;
                let permit = permit.take().expect("polled after completion");
                Poll::Ready(Ok(
                    response.map(|body| Body::new(Holding::new(body, permit)))
                ))
            }
            InFlightProj::Shed { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
        }
    }
}

pin_project! {
    /// A body or stream that holds `guard` until it ends or is dropped.
    pub(crate) struct Holding<B, G> {
        #[pin]
        inner: B,
        guard: Option<G>,
    }
}

impl<B, G> Holding<B, G> {
    pub(crate) fn new(inner: B, guard: G) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B, G> HttpBody for Holding<B, G>
where
    B: HttpBody,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            this.guard.take();
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

impl<S, G> Stream for Holding<S, G>
where
    S: Stream,
{
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.project();
        let item = ready!(this.inner.poll_next(cx));
        if item.is_none() {
            this.guard.take();
        }
        Poll::Ready(item)
    }
}

// ===== a provider's bulkhead =====

/// A provider's bulkhead: at most `limit` calls in flight through every clone (and so
/// through every route that uses the provider), streams counted until they end. A call
/// beyond it fails at once with `tower::load_shed::error::Overloaded`, which brace's
/// classifiers treat as "try another provider" without counting it against the provider's
/// circuit: a full bulkhead says nothing about the provider's health.
///
/// # Clone
///
/// Clones share the bound.
#[derive(Clone)]
pub struct BulkheadLayer {
    semaphore: Arc<Semaphore>,
    provider: Arc<str>,
    metrics: Metrics,
}

impl fmt::Debug for BulkheadLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadLayer")
            .field("provider", &self.provider)
            .field("available", &self.semaphore.available_permits())
            .finish_non_exhaustive()
    }
}

impl BulkheadLayer {
    /// At most `limit` calls in flight to `provider`; sheds are counted in `metrics`.
    pub fn new(provider: impl Into<Arc<str>>, limit: usize, metrics: Metrics) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(limit.min(Semaphore::MAX_PERMITS))),
            provider: provider.into(),
            metrics,
        }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`BulkheadLayer`] makes.
///
/// # Clone
///
/// Clones share the bound.
#[derive(Clone)]
pub struct Bulkhead<S> {
    inner: S,
    layer: BulkheadLayer,
}

impl<S> fmt::Debug for Bulkhead<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

impl<S> Service<ChatRequest> for Bulkhead<S>
where
    S: Service<ChatRequest, Response = ChatResponse>,
    S::Error: Into<BoxError>,
{
    type Response = ChatResponse;
    type Error = BoxError;
    type Future = BulkheadFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        match self.layer.semaphore.clone().try_acquire_owned() {
            Ok(permit) => BulkheadFuture {
                state: BulkheadState::Calling {
                    future: self.inner.call(request),
                    permit: Some(permit),
                },
            },
            Err(_) => {
                tracing::warn!(
                    scope = "provider",
                    provider = &*self.layer.provider,
                    "request shed: the provider's max_in_flight reached"
                );
                self.layer.metrics.shed(&self.layer.provider);
                BulkheadFuture {
                    state: BulkheadState::Shed,
                }
            }
        }
    }
}

pin_project! {
    /// The future of [`Bulkhead`].
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the call and its permit.
    pub struct BulkheadFuture<F> {
        #[pin]
        state: BulkheadState<F>,
    }
}

pin_project! {
    #[project = BulkheadProj]
    enum BulkheadState<F> {
        Calling {
            #[pin]
            future: F,
            permit: Option<OwnedSemaphorePermit>,
        },
        Shed,
    }
}

impl<F, E> Future for BulkheadFuture<F>
where
    F: Future<Output = Result<ChatResponse, E>>,
    E: Into<BoxError>,
{
    type Output = Result<ChatResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            BulkheadProj::Calling { future, permit } => {
                let mut response = ready!(future.poll(cx)).map_err(Into::into)?;
                let permit = permit.take().expect("polled after completion");
                if let ResponseBody::Stream(_) = &response.body {
                    let ResponseBody::Stream(stream) = std::mem::replace(
                        &mut response.body,
                        ResponseBody::Stream(ChatStream::from_items(Vec::new())),
                    ) else {
                        unreachable!("the body was just seen to be a stream")
                    };
                    response.body =
                        ResponseBody::Stream(ChatStream::new(Holding::new(stream, permit)));
                }
                Poll::Ready(Ok(response))
            }
            BulkheadProj::Shed => Poll::Ready(Err(Box::new(Overloaded::new()))),
        }
    }
}

// ===== the request body's read timeout =====

/// A request body did not arrive in time: no data for `body_timeout`, or not whole within
/// the request's deadline.
#[derive(Debug)]
pub struct BodyTimedOut {
    after: Duration,
    whole: bool,
}

impl BodyTimedOut {
    /// How long the gateway waited.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.whole {
            write!(
                f,
                "request body not received in full within {:?}",
                self.after
            )
        } else {
            write!(f, "request body stalled: no data for {:?}", self.after)
        }
    }
}

impl std::error::Error for BodyTimedOut {}

pin_project! {
    /// A request body with a read timeout between frames (`idle`) and for the whole body
    /// (`total`), both counted from the first read.
    pub struct TimedBody<B> {
        #[pin]
        inner: B,
        idle: Duration,
        total: Duration,
        // Set at the first read.
        deadline: Option<Instant>,
        // Armed while a read is pending.
        #[pin]
        sleep: Option<Sleep>,
        armed: bool,
    }
}

impl<B> TimedBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, idle: Duration, total: Duration) -> Self {
        Self {
            inner,
            idle,
            total,
            deadline: None,
            sleep: None,
            armed: false,
        }
    }
}

impl<B> HttpBody for TimedBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.as_mut().poll_frame(cx) {
            *this.armed = false;
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let now = Instant::now();
        let deadline = *this.deadline.get_or_insert(now + *this.total);
        if !*this.armed {
            let at = (now + *this.idle).min(deadline);
            match this.sleep.as_mut().as_pin_mut() {
                Some(sleep) => sleep.reset(at),
                None => this.sleep.set(Some(tokio::time::sleep_until(at))),
            }
            *this.armed = true;
        }
        let sleep = this.sleep.as_pin_mut().expect("armed above");
        ready!(sleep.poll(cx));
        let whole = Instant::now() >= deadline;
        let after = if whole { *this.total } else { *this.idle };
        Poll::Ready(Some(Err(Box::new(BodyTimedOut { after, whole }))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps every request's body in a [`TimedBody`].
pub(crate) fn time_request_body(
    idle: Duration,
    total: Duration,
) -> impl Fn(Request<Body>) -> Request<Body> + Clone {
    move |request: Request<Body>| request.map(|body| Body::new(TimedBody::new(body, idle, total)))
}
