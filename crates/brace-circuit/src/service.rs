//! [`CircuitBreaker`].

use std::task::{Context, Poll};

use brace_core::{BoxError, Classify, DefaultClassifier};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::handle::CircuitHandle;

/// A circuit breaker around a service.
///
/// Each call asks the breaker for admission: a closed breaker admits it and records its
/// outcome as the classifier judges it; an open one fails it at once with
/// [`CircuitOpen`](crate::CircuitOpen) without calling the inner service.
///
/// `poll_ready` only asks the inner service: an open circuit does not make the service
/// unready (that would stall callers that wait for readiness), it fails fast in `call`.
///
/// # Errors
///
/// The inner service's errors, boxed, and [`CircuitOpen`](crate::CircuitOpen) when the
/// breaker refuses the call. Its [`retry_after`](crate::CircuitOpen::retry_after) is the
/// rest of the wait in open state; it is `None` when the breaker is forced open or when a
/// half-open breaker has no trial permits left (the trials in flight decide when).
///
/// # Cost
///
/// Admitting a call in closed state is one atomic load; recording it is an atomic
/// increment, a swap of the call's slot in the window and, only when the slot held a call of
/// another kind, one atomic add to the window's totals. The future holds a reference to the
/// breaker (one reference-count increment). Timing slow calls reads the clock twice per
/// call; turn it off with [`track_slow_calls(false)`](crate::CircuitBreakerBuilder::track_slow_calls)
/// where the clock is slow.
///
/// # Clone
///
/// Clones share the breaker (and clone the inner service and the classifier).
#[derive(Debug, Clone)]
pub struct CircuitBreaker<S, C = DefaultClassifier> {
    inner: S,
    handle: CircuitHandle,
    classifier: C,
}

impl<S> CircuitBreaker<S> {
    /// Wraps `inner` in the breaker behind `handle`, with the [`DefaultClassifier`].
    pub fn new(inner: S, handle: CircuitHandle) -> Self {
        Self::with_classifier(inner, handle, DefaultClassifier)
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// Wraps `inner` in the breaker behind `handle`, judging outcomes with `classifier`.
    pub fn with_classifier(inner: S, handle: CircuitHandle, classifier: C) -> Self {
        Self {
            inner,
            handle,
            classifier,
        }
    }

    /// The breaker's handle.
    pub fn handle(&self) -> &CircuitHandle {
        &self.handle
    }

    brace_core::define_inner_service_accessors!();
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self.handle.shared.acquire() {
            Ok(permit) => {
                ResponseFuture::called(self.inner.call(request), permit, self.classifier.clone())
            }
            Err(open) => ResponseFuture::rejected(open, self.classifier.clone()),
        }
    }
}
