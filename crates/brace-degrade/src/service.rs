//! [`Degrade`]: the service.

use std::fmt;
use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use brace_core::degrade::Degradable;
use brace_core::{BoxError, Classify};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::handle::DegradeHandle;
use crate::layer::{CoreOf, DegradeLayer};

/// Answers each request at the current degradation level, falling down the ladder when a
/// level fails, and moves the current level by itself. Made by [`DegradeLayer`].
///
/// A request starts at the current level (or, for the one recovery probe in flight, the
/// nearest live level above it). A live level calls the inner service with the request
/// reshaped; if the classifier says the level failed (a failure, or an error that should
/// fail over), the request goes one level down: live levels while fallback attempts last
/// (one by default), cached levels (a hit answers, a miss goes on down) and static levels
/// (always answer) in any case. An error the classifier ignores and that should not fail
/// over (a bad request) is returned as is. Every response says which level answered and how
/// ([`DegradeResponse::annotate`](brace_core::degrade::DegradeResponse::annotate)).
///
/// # Clone
///
/// Clones share the level state and cache; readiness is not cloned.
pub struct Degrade<S, R: Degradable, C> {
    inner: S,
    core: Arc<CoreOf<R, C>>,
    ready: bool,
}

impl<S: Clone, R: Degradable, C> Clone for Degrade<S, R, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            core: self.core.clone(),
            ready: false,
        }
    }
}

impl<S: fmt::Debug, R: Degradable, C: fmt::Debug> fmt::Debug for Degrade<S, R, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Degrade")
            .field("inner", &self.inner)
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl<S, R: Degradable, C> Degrade<S, R, C> {
    /// Wraps `inner` with the configuration and shared state of `layer`.
    pub fn new(inner: S, layer: &DegradeLayer<R, C>) -> Self {
        tower_layer::Layer::layer(layer, inner)
    }

    pub(crate) fn from_core(inner: S, core: Arc<CoreOf<R, C>>) -> Self {
        Self {
            inner,
            core,
            ready: false,
        }
    }

    /// A handle to read and set the current level.
    pub fn handle(&self) -> DegradeHandle {
        DegradeHandle::new(self.core.shared.clone())
    }

    brace_core::define_inner_service_accessors!();
}

impl<S, R, C> Service<R> for Degrade<S, R, C>
where
    R: Degradable + Clone,
    S: Service<R, Response = R::Response> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<R::Response, BoxError>,
{
    type Response = R::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, R, C>;

    /// Ready when the inner service is, if the current level calls it; at once otherwise
    /// (a cached or static level answers without it).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.ready {
            return Poll::Ready(Ok(()));
        }
        let shared = &self.core.shared;
        let live = shared
            .ladder
            .get(shared.current())
            .is_some_and(crate::level::Level::is_live);
        if !live {
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.ready = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: R) -> Self::Future {
        let start = self.core.shared.start();
        let clone = self.inner.clone();
        let svc = mem::replace(&mut self.inner, clone);
        let ready = mem::take(&mut self.ready);
        ResponseFuture::new(svc, ready, request, start, self.core.clone())
    }
}
