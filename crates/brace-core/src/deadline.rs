//! One deadline per request, seen by every layer below the one that set it.
//!
//! A request has one budget of time. [`DeadlineLayer`] sets it (for a gateway: the
//! request timeout; for a tonic service: the caller's `grpc-timeout`), and every layer under
//! it reads what is left with [`remaining`]: a retry layer does not start a backoff that
//! ends after the deadline, a failover service does not start another provider once it has
//! passed, a hedge is not sent that could not finish, and [`TimeoutLayer`] — the per-attempt
//! timeout — cuts an attempt at its own limit or at the deadline, whichever comes first.
//!
//! The deadline travels with the call, not with the request value: it is a task-local that
//! [`within`] (and the layers) set around each poll of the call's future. brace's layers are
//! generic over the request type (a `String`, an `http::Request`, a `ChatRequest`), so the
//! one place they all share is the future that runs the call. Inner deadlines only
//! tighten: a scope inside another gets the earlier of the two.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use brace_core::deadline::{self, DeadlineLayer};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let inner = service_fn(|_: ()| async {
//!     // Deep inside the stack, any layer can ask how long it has.
//!     Ok::<_, std::io::Error>(deadline::remaining())
//! });
//! let mut service = DeadlineLayer::new(Duration::from_secs(30)).layer(inner);
//! let left = service.ready().await.unwrap().call(()).await.unwrap();
//! assert_eq!(left, Some(Duration::from_secs(30)));
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::clock;
use crate::error::DeadlineExceeded;

tokio::task_local! {
    static DEADLINE: Scope;
}

/// What the call being polled knows of its deadline.
#[derive(Clone, Copy)]
struct Scope {
    /// The deadline: the earliest set above.
    at: Instant,
    /// The earliest time at which a layer above cuts the call with a clock of its own (a
    /// [`within`] sets a deadline and arms none).
    enforced: Option<Instant>,
}

fn scope() -> Option<Scope> {
    DEADLINE.try_with(|scope| *scope).ok()
}

/// The deadline of the call being polled, if a layer above set one.
pub fn current() -> Option<Instant> {
    scope().map(|scope| scope.at)
}

/// How much time the call being polled has left (zero once its deadline passed), if a
/// layer above set a deadline.
pub fn remaining() -> Option<Duration> {
    current().map(|at| at.saturating_duration_since(clock::now()))
}

/// `true` if the call being polled has a deadline and it falls before `at`: work that
/// would end at `at` cannot finish in time.
pub fn ends_before(at: Instant) -> bool {
    current().is_some_and(|deadline| deadline < at)
}

/// Runs `future` with the deadline `at` (or the current one, if that is earlier).
pub fn within<F: Future>(at: Instant, future: F) -> Within<F> {
    Within { inner: future, at }
}

pin_project! {
    /// A future run within a deadline: see [`within`].
    ///
    /// # Cancel safety
    ///
    /// As cancel safe as the future it wraps.
    #[derive(Debug)]
    pub struct Within<F> {
        #[pin]
        inner: F,
        at: Instant,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let scope = scope().map_or(
            Scope {
                at: *this.at,
                enforced: None,
            },
            |outer| Scope {
                at: outer.at.min(*this.at),
                ..outer
            },
        );
        let inner = this.inner;
        DEADLINE.sync_scope(scope, || inner.poll(cx))
    }
}

/// Runs `future` until `at`, failing it with tower's
/// [`Elapsed`](tower::timeout::error::Elapsed) when `at` passes — like
/// `tokio::time::timeout_at`, but with no clock of its own while a layer above
/// ([`DeadlineLayer`], [`TimeoutLayer`]) already cuts the call at `at` or earlier: one
/// clock per limit, not one per layer that states it. The deadline it reads is the one in
/// force at each poll, so a bound that the layers above do not cover gets its own sleep.
///
/// It does not set a deadline for `future` (see [`within`] for that).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use brace_core::deadline::{self, TimeoutLayer};
/// use tower::{Layer, Service, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let inner = service_fn(|_: ()| async {
///     // A bound of 60 s inside an attempt cut at 1 s: the attempt's clock is the one
///     // that fires.
///     let at = tokio::time::Instant::now() + Duration::from_secs(60);
///     let slow = tokio::time::sleep(Duration::from_hours(1));
///     Ok::<_, std::io::Error>(deadline::timeout_at(at, slow).await.is_err())
/// });
/// let mut attempt = TimeoutLayer::new(Duration::from_secs(1)).layer(inner);
/// let err = attempt.ready().await.unwrap().call(()).await.unwrap_err();
/// assert!(err.is::<tower::timeout::error::Elapsed>());
/// # }
/// ```
pub fn timeout_at<F: Future>(at: Instant, future: F) -> TimeoutAt<F> {
    TimeoutAt {
        inner: future,
        at,
        sleep: None,
    }
}

pin_project! {
    /// A future bounded by an instant: see [`timeout_at`].
    ///
    /// # Cancel safety
    ///
    /// As cancel safe as the future it wraps.
    pub struct TimeoutAt<F> {
        #[pin]
        inner: F,
        at: Instant,
        // Armed only while no layer above cuts the call by `at`.
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<F> fmt::Debug for TimeoutAt<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutAt")
            .field("at", &self.at)
            .field("armed", &self.sleep.is_some())
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for TimeoutAt<F> {
    type Output = Result<F::Output, tower::timeout::error::Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.inner.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        let at = *this.at;
        if scope()
            .and_then(|scope| scope.enforced)
            .is_some_and(|enforced| enforced <= at)
        {
            // Cut by a clock above, no later than this bound's.
            *this.sleep = None;
            return Poll::Pending;
        }
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Err(tower::timeout::error::Elapsed::new()))
    }
}

// ===== DeadlineLayer =====

/// Gives every call a deadline `timeout` after it starts (or keeps an earlier one set
/// above), fails it with [`DeadlineExceeded`] when the deadline passes, and lets every layer
/// below read it with [`remaining`].
///
/// A [`DeadlineExceeded`] is final: classifiers do not retry it.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    timeout: Duration,
}

impl DeadlineLayer {
    /// A deadline `timeout` after each call starts.
    pub const fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            timeout: self.timeout,
            kind: Kind::Deadline,
        }
    }
}

/// A per-attempt timeout that honours the call's deadline: each call is cut after `timeout`
/// with tower's [`Elapsed`](tower::timeout::error::Elapsed) (a transient failure, worth a
/// retry), or at the deadline set above, if that comes first, with [`DeadlineExceeded`]
/// (final). The attempt's inner layers see the earlier of the two as their deadline.
///
/// Use it where `tower::timeout::TimeoutLayer` would go under a retry layer.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// Cuts each call after `timeout`, or at the deadline if earlier.
    pub const fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            timeout: self.timeout,
            kind: Kind::Attempt,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The whole call's deadline: [`DeadlineExceeded`] when it passes.
    Deadline,
    /// One attempt's timeout: `Elapsed`, unless the deadline above cut it first.
    Attempt,
}

/// The service of [`DeadlineLayer`] and [`TimeoutLayer`].
///
/// # Clone
///
/// Clones call clones of the inner service with the same timeout.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    timeout: Duration,
    kind: Kind,
}

impl<S> Deadline<S> {
    /// The timeout each call gets.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    crate::define_inner_service_accessors!();
}

impl<S, Req> Service<Req> for Deadline<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let started = clock::now();
        ResponseFuture {
            inner: self.inner.call(request),
            own: started.checked_add(self.timeout),
            started,
            kind: self.kind,
            sleep: None,
        }
    }
}

pin_project! {
    /// The response future of [`Deadline`].
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the inner call.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // `None` when the timeout is too long for the clock: no bound of its own.
        own: Option<Instant>,
        started: Instant,
        kind: Kind,
        // The sleep to the effective deadline, armed at the first poll (the deadline above
        // is only readable while the call is polled).
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("own", &self.own)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every layer polled in here reads one clock reading (see `brace_core::clock`).
        let _clock = clock::scope();
        let this = self.project();
        let outer = current();
        let at = match (*this.own, outer) {
            (Some(own), Some(outer)) => Some(own.min(outer)),
            (own, outer) => own.or(outer),
        };
        let inner = this.inner;
        // Whatever is pending below is cut at `at` by this future's own sleep.
        let polled = match at {
            Some(at) => DEADLINE.sync_scope(
                Scope {
                    at,
                    enforced: Some(at),
                },
                || inner.poll(cx),
            ),
            None => inner.poll(cx),
        };
        if let Poll::Ready(result) = polled {
            return Poll::Ready(result.map_err(Into::into));
        }
        let Some(at) = at else {
            return Poll::Pending;
        };
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if sleep.deadline() != at {
            sleep.as_mut().reset(at);
        }
        ready!(sleep.as_mut().poll(cx));
        let cut_by_outer = outer.is_some_and(|outer| this.own.is_none_or(|own| outer < own));
        let err: BoxError = if *this.kind == Kind::Attempt && !cut_by_outer {
            Box::new(tower::timeout::error::Elapsed::new())
        } else {
            Box::new(DeadlineExceeded::new(
                at.saturating_duration_since(*this.started),
            ))
        };
        Poll::Ready(Err(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{ServiceExt, service_fn};

    fn sleeper(
        wait: Duration,
    ) -> impl Service<(), Response = Option<Duration>, Error = Infallible, Future: Send> + Clone
    {
        service_fn(move |()| async move {
            let left = remaining();
            tokio::time::sleep(wait).await;
            Ok(left)
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_fails_a_call_that_outlives_it() {
        let service = DeadlineLayer::new(Duration::from_secs(2)).layer(sleeper(Duration::MAX));
        let started = Instant::now();
        let err = service.oneshot(()).await.unwrap_err();
        assert!(err.is::<DeadlineExceeded>());
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_timeout_is_elapsed_and_the_deadline_above_is_final() {
        // The attempt's own 1 s comes first: a retryable Elapsed.
        let attempt = TimeoutLayer::new(Duration::from_secs(1)).layer(sleeper(Duration::MAX));
        let err = within(Instant::now() + Duration::from_secs(5), attempt.oneshot(()))
            .await
            .unwrap_err();
        assert!(err.is::<tower::timeout::error::Elapsed>());

        // The deadline above comes first: the attempt is cut there, and it is final.
        let attempt = TimeoutLayer::new(Duration::from_secs(10)).layer(sleeper(Duration::MAX));
        let started = Instant::now();
        let err = within(started + Duration::from_secs(3), attempt.oneshot(()))
            .await
            .unwrap_err();
        assert!(err.is::<DeadlineExceeded>());
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn inner_layers_see_the_earlier_deadline() {
        let attempt = TimeoutLayer::new(Duration::from_secs(10)).layer(sleeper(Duration::ZERO));
        let outer = DeadlineLayer::new(Duration::from_secs(4)).layer(attempt);
        assert_eq!(
            outer.oneshot(()).await.unwrap(),
            Some(Duration::from_secs(4))
        );

        let attempt = TimeoutLayer::new(Duration::from_secs(1)).layer(sleeper(Duration::ZERO));
        let outer = DeadlineLayer::new(Duration::from_secs(4)).layer(attempt);
        assert_eq!(
            outer.oneshot(()).await.unwrap(),
            Some(Duration::from_secs(1))
        );
    }

    /// A service whose call is bounded by `timeout_at`, `bound` after it starts: `Ok(true)`
    /// when that bound fired.
    fn bounded(
        bound: Duration,
    ) -> impl Service<(), Response = bool, Error = Infallible, Future: Send> + Clone {
        service_fn(move |()| async move {
            let at = Instant::now() + bound;
            let slow = tokio::time::sleep(Duration::from_hours(1));
            Ok(timeout_at(at, slow).await.is_err())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_bound_the_layer_above_covers_arms_no_clock_of_its_own() {
        // The same instant as the attempt's: with a clock of its own, it would fire in the
        // same tick and, polled first, answer `Ok(true)`; the attempt's clock cuts it.
        let attempt =
            TimeoutLayer::new(Duration::from_secs(1)).layer(bounded(Duration::from_secs(1)));
        let started = Instant::now();
        let err = attempt.oneshot(()).await.unwrap_err();
        assert!(err.is::<tower::timeout::error::Elapsed>());
        assert_eq!(started.elapsed(), Duration::from_secs(1));

        // Inside a deadline above, the same.
        let deadline =
            DeadlineLayer::new(Duration::from_secs(2)).layer(bounded(Duration::from_secs(5)));
        let err = deadline.oneshot(()).await.unwrap_err();
        assert!(err.is::<DeadlineExceeded>());
    }

    #[tokio::test(start_paused = true)]
    async fn a_bound_before_the_layers_above_fires_itself() {
        let attempt =
            TimeoutLayer::new(Duration::from_secs(1)).layer(bounded(Duration::from_millis(400)));
        let started = Instant::now();
        assert!(attempt.oneshot(()).await.unwrap());
        assert_eq!(started.elapsed(), Duration::from_millis(400));

        // Alone, it is `tokio::time::timeout_at`.
        let started = Instant::now();
        assert!(bounded(Duration::from_secs(2)).oneshot(()).await.unwrap());
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_set_with_within_arms_nothing_so_a_bound_keeps_its_clock() {
        // `within` states a deadline and cuts nothing: the bound inside it is the only clock.
        let started = Instant::now();
        let cut = within(
            started + Duration::from_secs(1),
            bounded(Duration::from_secs(2)).oneshot(()),
        )
        .await
        .unwrap();
        assert!(cut);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn no_deadline_outside_a_scope() {
        assert_eq!(remaining(), None);
        assert!(!ends_before(Instant::now() + Duration::from_secs(1)));
        let left = within(Instant::now() + Duration::from_secs(1), async {
            tokio::time::advance(Duration::from_millis(300)).await;
            (
                remaining(),
                ends_before(Instant::now() + Duration::from_secs(1)),
            )
        })
        .await;
        assert_eq!(left, (Some(Duration::from_millis(700)), true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_timeout_is_no_bound() {
        let service = DeadlineLayer::new(Duration::MAX).layer(sleeper(Duration::from_secs(1)));
        assert_eq!(service.oneshot(()).await.unwrap(), None);
    }
}
