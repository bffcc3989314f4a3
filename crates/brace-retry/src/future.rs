//! The [`ResponseFuture`] of [`Retry`](crate::Retry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use brace_core::clock;
use brace_core::deadline::{self, Within};
use brace_core::{
    BoxError, Classify, DeadlineExceeded, FailureClass, GiveUpReason, Outcome, RetriesExhausted,
};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower::timeout::error::Elapsed;
use tower_service::Service;

use crate::event::{GiveUpEvent, RetryEvent};
use crate::policy::Policy;
use crate::service::Shared;

pin_project! {
    /// The response future of [`Retry`](crate::Retry): sends the request, and again after a
    /// wait for as long as the policy allows.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the attempt in flight (if any) and any wait; nothing is
    /// left running. A retry already withdrawn from the budget is not refunded.
    pub struct ResponseFuture<S, Req, C>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        // One timer, reset for each use: the attempt's time limit, the backoff wait, or the
        // deadline while waiting for readiness. Boxed, and only once needed, so that the
        // success path without timeouts carries (and moves) a small future.
        timer: Option<Pin<Box<Sleep>>>,
        // The instance a retry is sent on, taken from the shared ones when one is due.
        service: Option<S>,
        // The copy to send next; `None` once no further attempt can be made.
        request: Option<Req>,
        shared: Arc<Shared<S, C>>,
        attempts: u32,
        previous_delay: Duration,
        // The layer's own deadline, if it has one.
        deadline: Option<Instant>,
        // When the call started, if the layer has time bounds of its own (to say how long
        // it ran when a deadline set above cuts it).
        started: Option<Instant>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // An attempt is in flight.
        Called {
            #[pin]
            future: AttemptFuture<F>,
        },
        // Waiting out the backoff on `timer`.
        Waiting,
        // Polling the service ready for the next attempt.
        Readying,
    }
}

pin_project! {
    /// One attempt: polled as is when the layer has no time bounds of its own (the inner
    /// layers then see the deadline set above, if any), or within the attempt's own limit
    /// (which tightens the one above, see [`brace_core::deadline::within`]).
    #[project = AttemptProj]
    enum AttemptFuture<F> {
        Plain {
            #[pin]
            future: F,
        },
        Bounded {
            #[pin]
            future: Within<F>,
        },
    }
}

impl<F: Future> Future for AttemptFuture<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project() {
            AttemptProj::Plain { future } => future.poll(cx),
            AttemptProj::Bounded { future } => future.poll(cx),
        }
    }
}

/// The attempt `future`, bounded by `limit` if the layer set one.
#[inline]
fn attempt<F: Future>(future: F, limit: Option<Instant>) -> AttemptFuture<F> {
    match limit {
        Some(at) => AttemptFuture::Bounded {
            future: deadline::within(at, future),
        },
        None => AttemptFuture::Plain { future },
    }
}

/// What an attempt came to.
enum Attempt<T, E> {
    Done(Result<T, E>),
    TimedOut,
}

impl<S, Req, C> ResponseFuture<S, Req, C>
where
    S: Service<Req>,
    Req: Clone,
{
    /// Sends the first attempt on `service`, which must be ready.
    #[inline]
    pub(crate) fn new(service: &mut S, request: Req, shared: Arc<Shared<S, C>>) -> Self {
        let policy = &shared.policy;
        if let Some(budget) = &policy.budget {
            budget.deposit();
        }
        let (started, deadline, limit) = if policy.is_timed() {
            first_limits(policy.attempt_timeout, policy.deadline)
        } else {
            (None, None, None)
        };
        let (request, future) = if policy.max_retries_any == 0 {
            (None, service.call(request))
        } else {
            (Some(request.clone()), service.call(request))
        };
        Self {
            state: State::Called {
                future: attempt(future, limit),
            },
            timer: limit.map(|at| Box::pin(sleep_until(at))),
            service: None,
            request,
            shared,
            attempts: 1,
            previous_delay: Duration::ZERO,
            deadline,
            started,
        }
    }
}

/// When a call starting now started, its own deadline and its first attempt's limit.
#[cold]
#[inline(never)]
fn first_limits(
    attempt_timeout: Option<Duration>,
    deadline: Option<Duration>,
) -> (Option<Instant>, Option<Instant>, Option<Instant>) {
    let now = clock::now();
    let deadline = deadline.and_then(|deadline| now.checked_add(deadline));
    (
        Some(now),
        deadline,
        attempt_limit(now, attempt_timeout, deadline),
    )
}

/// When the attempt starting at `now` must end: its own limit or the deadline.
fn attempt_limit(
    now: Instant,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
) -> Option<Instant> {
    let own = timeout.and_then(|timeout| now.checked_add(timeout));
    match (own, deadline) {
        (Some(own), Some(deadline)) => Some(own.min(deadline)),
        (own, deadline) => own.or(deadline),
    }
}

/// `delay` from now; a delay past what the clock can represent waits about a year instead.
fn after(delay: Duration) -> Instant {
    let now = clock::now();
    now.checked_add(delay)
        .or_else(|| now.checked_add(Duration::from_hours(24 * 365)))
        .unwrap_or(now)
}

fn arm(timer: &mut Option<Pin<Box<Sleep>>>, at: Instant) {
    match timer {
        Some(sleep) => sleep.as_mut().reset(at),
        None => *timer = Some(Box::pin(sleep_until(at))),
    }
}

/// Polls the timer, first moving it earlier to the deadline set above if that comes first
/// (the deadline above only tightens, so the timer never has to move later again).
fn fired(timer: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> bool {
    let Some(sleep) = timer.as_mut() else {
        return false;
    };
    if let Some(outer) = deadline::current()
        && outer < sleep.deadline()
    {
        sleep.as_mut().reset(outer);
    }
    sleep.as_mut().poll(cx).is_ready()
}

/// The call's deadline now: the layer's own or the one set above, whichever is earlier.
fn effective_deadline(own: Option<Instant>) -> Option<Instant> {
    match (own, deadline::current()) {
        (Some(own), Some(outer)) => Some(own.min(outer)),
        (own, outer) => own.or(outer),
    }
}

/// `true` if the call's deadline (its own or the one above) has passed.
fn deadline_passed(own: Option<Instant>) -> bool {
    effective_deadline(own).is_some_and(|at| clock::now() >= at)
}

/// The error for a call cut by a deadline: the layer's own one reports its length, one set
/// above how long this call ran.
fn deadline_exceeded<T, C>(
    policy: &Policy<C>,
    own: Option<Instant>,
    started: Option<Instant>,
) -> Poll<Result<T, BoxError>> {
    let now = clock::now();
    let after = match (policy.deadline, own) {
        (Some(after), Some(own)) if now >= own => after,
        _ => started.map_or(Duration::ZERO, |started| {
            now.saturating_duration_since(started)
        }),
    };
    Poll::Ready(Err(Box::new(DeadlineExceeded::new(after))))
}

impl<S, Req, C> Future for ResponseFuture<S, Req, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
    Req: Clone,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every layer polled in here reads one clock reading (see `brace_core::clock`).
        let _clock = clock::scope();
        let mut this = self.project();
        let shared: &Shared<S, C> = this.shared;
        let policy: &Policy<C> = &shared.policy;
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    let attempt = match future.poll(cx) {
                        Poll::Ready(result) => Attempt::Done(result),
                        Poll::Pending => {
                            if !policy.is_timed() || !fired(this.timer, cx) {
                                return Poll::Pending;
                            }
                            if deadline_passed(*this.deadline) {
                                return deadline_exceeded(policy, *this.deadline, *this.started);
                            }
                            Attempt::TimedOut
                        }
                    };
                    let (outcome, result) = match attempt {
                        Attempt::Done(result) => {
                            // Judged as every layer judges: the error boxed.
                            let result = result.map_err(Into::into);
                            (policy.classifier.classify(result.as_ref()), result)
                        }
                        Attempt::TimedOut => {
                            let outcome = if policy.retry_attempt_timeouts {
                                Outcome::transient()
                            } else {
                                Outcome::failure()
                            }
                            .with_class(FailureClass::Timeout);
                            (outcome, Err(Box::new(Elapsed::new()) as BoxError))
                        }
                    };
                    if !outcome.is_retryable() {
                        return Poll::Ready(result);
                    }
                    let delay = match decide(
                        policy,
                        *this.attempts,
                        this.previous_delay,
                        *this.deadline,
                        this.request.is_some(),
                        outcome,
                        result,
                    ) {
                        Ok(delay) => delay,
                        Err(output) => return Poll::Ready(output),
                    };
                    if delay.is_zero() {
                        this.state.set(State::Readying);
                        if let Some(deadline) = *this.deadline {
                            arm(this.timer, deadline);
                        }
                    } else {
                        this.state.set(State::Waiting);
                        arm(this.timer, after(delay));
                    }
                }
                StateProj::Waiting => {
                    if let Some(sleep) = this.timer.as_mut() {
                        ready!(sleep.as_mut().poll(cx));
                    }
                    this.state.set(State::Readying);
                    if let Some(deadline) = *this.deadline {
                        arm(this.timer, deadline);
                    }
                }
                StateProj::Readying => {
                    // Set at the first call whenever retries are allowed.
                    let Some(instances) = shared.instances.get() else {
                        return Poll::Ready(Err("retry without a service instance".into()));
                    };
                    let service = this.service.get_or_insert_with(|| instances.take());
                    match service.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(err)) => {
                            // A service that failed readiness is not kept.
                            *this.service = None;
                            return Poll::Ready(Err(err.into()));
                        }
                        Poll::Pending => {
                            if this.deadline.is_some() && fired(this.timer, cx) {
                                return deadline_exceeded(policy, *this.deadline, *this.started);
                            }
                            return Poll::Pending;
                        }
                    }
                    *this.attempts += 1;
                    // No class allows a retry after this attempt: it takes the kept copy.
                    let last_possible = *this.attempts > policy.max_retries_any;
                    let request = if last_possible {
                        this.request.take()
                    } else {
                        this.request.clone()
                    }
                    .expect("a retry is only scheduled while a request copy is kept");
                    let future = service.call(request);
                    if let Some(used) = this.service.take() {
                        instances.give_back(used);
                    }
                    let limit = if policy.is_timed() {
                        let limit =
                            attempt_limit(clock::now(), policy.attempt_timeout, *this.deadline);
                        match limit {
                            Some(at) => arm(this.timer, at),
                            // Limits too far for the clock: no bound, and no stale timer
                            // (the backoff's, already fired) to cut the attempt.
                            None => *this.timer = None,
                        }
                        limit
                    } else {
                        None
                    };
                    this.state.set(State::Called {
                        future: attempt(future, limit),
                    });
                }
            }
        }
    }
}

/// After a retryable failure: `Ok(delay)` to retry after `delay`, or `Err` with what the
/// caller gets.
#[cold]
#[inline(never)]
fn decide<C, T>(
    policy: &Policy<C>,
    attempts: u32,
    previous_delay: &mut Duration,
    deadline: Option<Instant>,
    can_retry: bool,
    outcome: Outcome,
    result: Result<T, BoxError>,
) -> Result<Duration, Result<T, BoxError>> {
    let rule = policy.rule(outcome.class());
    // `attempts - 1` retries were made so far: one more is allowed while that is below the
    // class's maximum.
    if !can_retry || attempts > rule.max_retries {
        return Err(give_up(
            policy,
            attempts,
            GiveUpReason::MaxRetries,
            outcome,
            result,
        ));
    }
    let hint = outcome.retry_after();
    if let Some(hint) = hint
        && hint > policy.max_retry_after
    {
        return Err(give_up(
            policy,
            attempts,
            GiveUpReason::RetryAfterTooLong(hint),
            outcome,
            result,
        ));
    }
    let backoff = policy.backoff_delay(&rule.backoff, attempts, *previous_delay);
    let delay = hint.map_or(backoff, |hint| hint.max(backoff));
    // Read at each decision: a deadline set above may be earlier than the layer's own.
    if let Some(deadline) = effective_deadline(deadline)
        && clock::now()
            .checked_add(delay)
            .is_none_or(|end| end >= deadline)
    {
        return Err(give_up(
            policy,
            attempts,
            GiveUpReason::Deadline,
            outcome,
            result,
        ));
    }
    if let Some(budget) = &policy.budget
        && !budget.withdraw()
    {
        return Err(give_up(
            policy,
            attempts,
            GiveUpReason::BudgetExhausted,
            outcome,
            result,
        ));
    }
    *previous_delay = backoff;
    tracing::warn!(
        name = policy.name.as_deref(),
        attempt = i64::from(attempts),
        delay_ms = duration_ms(delay),
        retry_after_ms = hint.map(duration_ms),
        reason = %Reason(result.as_ref().err(), outcome),
        "retry"
    );
    if let Some(hook) = &policy.on_retry {
        (hook.0)(&RetryEvent {
            attempt: attempts,
            delay,
            outcome,
            error: result.as_ref().err().map(|err| &**err),
        });
    }
    Ok(delay)
}

fn give_up<C, T>(
    policy: &Policy<C>,
    attempts: u32,
    reason: GiveUpReason,
    outcome: Outcome,
    result: Result<T, BoxError>,
) -> Result<T, BoxError> {
    tracing::warn!(
        name = policy.name.as_deref(),
        attempts = i64::from(attempts),
        give_up = %reason,
        reason = %Reason(result.as_ref().err(), outcome),
        "retries exhausted"
    );
    if let Some(hook) = &policy.on_give_up {
        (hook.0)(&GiveUpEvent {
            attempts,
            reason,
            outcome,
            error: result.as_ref().err().map(|err| &**err),
        });
    }
    result.map_err(|last| Box::new(RetriesExhausted::new(attempts, reason, last)) as BoxError)
}

/// Milliseconds, for event fields (signed: OpenTelemetry attributes have no unsigned
/// integers).
fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Why an attempt failed, for event fields: its error, or the class of a response judged a
/// failure. Formatted only if a subscriber records the event.
struct Reason<'a>(Option<&'a BoxError>, Outcome);

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(err) => fmt::Display::fmt(err, f),
            None => write!(f, "response judged a failure ({})", self.1.class()),
        }
    }
}

impl<S, Req, C> fmt::Debug for ResponseFuture<S, Req, C>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Called { .. } => "called",
            State::Waiting => "waiting",
            State::Readying => "readying",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("attempts", &self.attempts)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
