//! [`ResponseFuture`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use brace_core::clock;
use brace_core::{BoxError, CircuitOpen, Classify};
use pin_project_lite::pin_project;

use crate::state::Permit;

pin_project! {
    /// The future of a [`CircuitBreaker`](crate::CircuitBreaker) call.
    ///
    /// # Cancel safety
    ///
    /// Dropping it before it completes records nothing; a half-open trial call gives its
    /// permit back, so another trial may take its place.
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F>,
        permit: Option<Permit>,
        classifier: C,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Called { #[pin] future: F },
        Rejected { error: CircuitOpen },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, permit: Option<Permit>, classifier: C) -> Self {
        Self {
            kind: Kind::Called { future },
            permit,
            classifier,
        }
    }

    pub(crate) fn rejected(error: CircuitOpen, classifier: C) -> Self {
        Self {
            kind: Kind::Rejected { error },
            permit: None,
            classifier,
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every layer polled in here reads one clock reading (see `brace_core::clock`).
        let _clock = clock::scope();
        let this = self.project();
        match this.kind.project() {
            KindProj::Called { future } => {
                // Judged as every layer judges: the error boxed, as the layer returns it.
                let result = ready!(future.poll(cx)).map_err(Into::into);
                if let Some(permit) = this.permit.take() {
                    permit.complete(&this.classifier.classify(result.as_ref()));
                }
                Poll::Ready(result)
            }
            KindProj::Rejected { error } => Poll::Ready(Err(Box::new(error.clone()))),
        }
    }
}
