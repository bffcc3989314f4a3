//! The [`Retry`] service.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use brace_core::instances::Instances;
use brace_core::{BoxError, Classify, DefaultClassifier};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::layer::RetryLayer;
use crate::policy::Policy;

/// Retries failed calls to the inner service, as its [`RetryLayer`] says.
///
/// # Requests
///
/// The request type must be [`Clone`]: the layer keeps a copy of each request to send again
/// (as tower's `Policy::clone_request` does, but as a bound rather than at run time, so a
/// request type that cannot be retried is refused by the compiler instead of silently
/// sent once). A request that is expensive to clone is best wrapped in an `Arc`; a
/// streaming body cannot be retried and belongs below this layer. With `max_retries(0)`
/// no copy is made.
///
/// # Clone
///
/// The inner service must be [`Clone`]. The first attempt is sent on the instance
/// `poll_ready` made ready; a future that retries takes an instance of its own — one an
/// earlier retry gave back, else a clone of the service as it was after its first call —
/// polls it ready, sends the retry on it and gives it back (see
/// [`brace_core::instances`]). So the success path clones nothing, where tower's retry
/// clones the inner stack for every call. As with tower's, retries go to copies: state a
/// service keeps per instance, rather than shares between its clones, is not carried from
/// one to another. Use `tower::buffer::Buffer` to make any service cloneable. Clones of a
/// `Retry` share its policy (budget, random generator, hooks) and its kept instances.
///
/// # Errors
///
/// Errors are boxed ([`BoxError`]):
///
/// - a failure the classifier does not consider retryable is returned as it came (boxed),
///   on the first attempt or a later one;
/// - [`RetriesExhausted`](brace_core::RetriesExhausted) when the layer gives up on a
///   retryable error (its source is the last attempt's error);
/// - [`DeadlineExceeded`](brace_core::DeadlineExceeded) when the deadline (the layer's own
///   or one set above it, see [`brace_core::deadline`]) cuts an attempt or a wait for
///   readiness;
/// - the inner service's own error if it fails to become ready for a retry.
///
/// A *response* the classifier judged a retryable failure (an HTTP 503, say) is returned as
/// the response when the layer gives up; the [`on_give_up`](crate::RetryLayerBuilder::on_give_up)
/// hook says why.
pub struct Retry<S, C = DefaultClassifier> {
    inner: S,
    shared: Arc<Shared<S, C>>,
}

/// What a `Retry`, its clones and their futures share.
pub(crate) struct Shared<S, C> {
    pub(crate) policy: Arc<Policy<C>>,
    /// Instances for retries, from a clone of the inner service taken at the first call.
    pub(crate) instances: OnceLock<Instances<S>>,
}

impl<S> Retry<S> {
    /// Retries `inner` with the defaults of [`RetryLayer::new`].
    pub fn new(inner: S) -> Self {
        tower_layer::Layer::layer(&RetryLayer::new(), inner)
    }
}

impl<S, C> Retry<S, C> {
    pub(crate) fn from_policy(inner: S, policy: Arc<Policy<C>>) -> Self {
        Self {
            inner,
            shared: Arc::new(Shared {
                policy,
                instances: OnceLock::new(),
            }),
        }
    }

    brace_core::define_inner_service_accessors!();
}

impl<S: Clone, C> Clone for Retry<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for Retry<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", &self.shared.policy)
            .finish()
    }
}

impl<S, C, Req> Service<Req> for Retry<S, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
    Req: Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        // The instance made ready by `poll_ready` takes the first attempt and stays here;
        // retries are sent on instances of their own, cloned from this one as it is after
        // its first call (as tower's retry clones it after each call).
        let future = ResponseFuture::new(&mut self.inner, request, Arc::clone(&self.shared));
        if self.shared.policy.max_retries_any > 0 {
            let inner = &self.inner;
            self.shared
                .instances
                .get_or_init(|| Instances::new(inner.clone()));
        }
        future
    }
}
