//! The response future of [`FailoverService`](crate::FailoverService).

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use brace_circuit::Admission;
use brace_core::clock;
use brace_core::commit::{Commit, Commitment};
use brace_core::exclude::Exclusions;
use brace_core::{AllProvidersFailed, BoxError, CircuitOpen, Classify, ProviderFailure};
use fastrand::Rng;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::error::NotReady;
use crate::registry::ProviderEntry;
use crate::select::{self, Tried, bit};
use crate::service::Shared;

pin_project! {
    /// Response future of [`FailoverService`](crate::FailoverService): tries providers one
    /// after another (or two at once while hedging) until one answers.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops every call in flight; nothing is recorded for them.
    pub struct ResponseFuture<S, Req, C, K>
    where
        S: Service<Req>,
        K: Commit<S::Response>,
    {
        shared: Arc<Shared<S, C, K>>,
        request: Req,
        preferred: Option<usize>,
        rng: Rng,
        tried: Tried,
        // Read at the first pick: providers a layer above left out of this call.
        exclusions: Option<Exclusions>,
        hedged: bool,
        failures: Vec<ProviderFailure>,
        // The last response failed over from (e.g. a 503 `Response`), returned if no other
        // provider answers. Boxed: it is rare, and a response inline would grow the future.
        fallback: Option<Box<S::Response>>,
        // Boxed so that the future stays small on the success path, where it is not used
        // (as tower's rate limit boxes its `Sleep`).
        hedge_timer: Option<Pin<Box<Sleep>>>,
        #[pin]
        primary: Attempt<S, Req, S::Future, K::Future>,
        // The hedge's slot, boxed for the same reason: only a hedged request fills it, and
        // an attempt inline would double the future's size (and every move of it).
        secondary: Option<Pin<Box<Attempt<S, Req, S::Future, K::Future>>>>,
    }
}

pin_project! {
    /// One provider's share of a request: made ready, called, then committed.
    #[project = AttemptProj]
    enum Attempt<S, Req, F, CF> {
        Idle,
        Ready {
            index: usize,
            started: Option<Instant>,
            // Taken out when called, to be given back to the provider's instances.
            service: Option<S>,
            request: Option<Req>,
            // Armed the first time the provider is not ready, when a ready timeout is set.
            deadline: Option<Pin<Box<Sleep>>>,
        },
        Calling {
            index: usize,
            started: Option<Instant>,
            #[pin]
            future: F,
        },
        Committing {
            index: usize,
            started: Option<Instant>,
            #[pin]
            future: CF,
        },
    }
}

/// How an attempt ended.
struct Done<T> {
    index: usize,
    started: Option<Instant>,
    result: Result<T, BoxError>,
}

impl<S, Req, C, K> ResponseFuture<S, Req, C, K>
where
    S: Service<Req>,
    K: Commit<S::Response>,
{
    pub(crate) fn new(
        shared: Arc<Shared<S, C, K>>,
        request: Req,
        preferred: Option<usize>,
        rng: Rng,
    ) -> Self {
        Self {
            shared,
            request,
            preferred,
            rng,
            tried: 0,
            exclusions: None,
            hedged: false,
            failures: Vec::new(),
            fallback: None,
            hedge_timer: None,
            primary: Attempt::Idle,
            secondary: None,
        }
    }
}

impl<S, Req, C, K> Future for ResponseFuture<S, Req, C, K>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    Req: Clone,
    C: Classify<S::Response, BoxError>,
    K: Commit<S::Response>,
    K::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every layer polled in here reads one clock reading (see `brace_core::clock`).
        let _clock = clock::scope();
        let mut this = self.project();
        let shared = &**this.shared;
        loop {
            let hedge_idle = this.secondary.as_ref().is_none_or(|hedge| hedge.is_idle());
            if this.primary.is_idle() && hedge_idle {
                let first = *this.tried == 0;
                if first {
                    *this.exclusions = brace_core::exclude::current().filter(|e| !e.is_empty());
                }
                let now = shared.timed.then(clock::now);
                let picked = if first || !deadline_passed() {
                    pick(
                        shared,
                        this.tried,
                        *this.preferred,
                        this.rng,
                        this.exclusions.as_ref(),
                    )
                } else {
                    None
                };
                let Some(index) = picked else {
                    *this.hedge_timer = None;
                    return Poll::Ready(match this.fallback.take() {
                        Some(response) => Ok(*response),
                        None => {
                            skip_rest(shared, *this.tried, this.exclusions.as_ref(), this.failures);
                            log_all_failed(this.failures);
                            Err(Box::new(AllProvidersFailed::new(mem::take(this.failures))))
                        }
                    });
                };
                if !first {
                    log_failover(shared.entries[index].name(), *this.tried);
                }
                this.primary
                    .set(Attempt::start(shared, this.request, index, now));
                if first
                    && let Some(hedging) = &shared.hedging
                    && let Some(delay) = hedging.delay()
                    && let Some(at) = now.unwrap_or_else(clock::now).checked_add(delay)
                    && !brace_core::deadline::ends_before(at)
                {
                    *this.hedge_timer = Some(Box::pin(tokio::time::sleep_until(at)));
                }
            }

            let mut settled = false;
            for second in [false, true] {
                let attempt = if second {
                    match this.secondary.as_mut() {
                        Some(hedge) => hedge.as_mut(),
                        None => continue,
                    }
                } else {
                    this.primary.as_mut()
                };
                if attempt.is_idle() {
                    continue;
                }
                if let Poll::Ready(done) = attempt.poll_attempt(cx, shared) {
                    settled = true;
                    if let Some(output) = settle(shared, done, this.failures, this.fallback) {
                        this.primary.set(Attempt::Idle);
                        *this.secondary = None;
                        *this.hedge_timer = None;
                        return Poll::Ready(output);
                    }
                }
            }
            if settled {
                continue;
            }

            if let Some(timer) = this.hedge_timer.as_mut()
                && timer.as_mut().poll(cx).is_ready()
            {
                *this.hedge_timer = None;
                let now = Some(clock::now());
                let hedge_idle = this.secondary.as_ref().is_none_or(|hedge| hedge.is_idle());
                if !*this.hedged && !this.primary.is_idle() && hedge_idle && !deadline_passed() {
                    *this.hedged = true;
                    if let Some(hedging) = &shared.hedging
                        && has_candidate(shared, *this.tried, this.exclusions.as_ref())
                        && hedging.withdraw()
                        && let Some(index) = pick(
                            shared,
                            this.tried,
                            *this.preferred,
                            this.rng,
                            this.exclusions.as_ref(),
                        )
                    {
                        log_hedge(shared.entries[index].name(), hedging.delay());
                        let attempt = Attempt::start(shared, this.request, index, now);
                        match this.secondary.as_mut() {
                            Some(hedge) => hedge.as_mut().set(attempt),
                            None => *this.secondary = Some(Box::pin(attempt)),
                        }
                        continue;
                    }
                }
            }
            return Poll::Pending;
        }
    }
}

/// `true` once the call's deadline (if a layer above set one) has passed: no new provider
/// is started then.
fn deadline_passed() -> bool {
    brace_core::deadline::remaining().is_some_and(|left| left.is_zero())
}

/// Whether provider `index` may be tried now: not excluded from this call, and its circuit
/// admits a call (or would admit a half-open trial).
fn eligible(entries: &[ProviderEntry], exclusions: Option<&Exclusions>, index: usize) -> bool {
    let entry = &entries[index];
    exclusions.is_none_or(|exclusions| exclusions.get(entry.name()).is_none())
        && entry.admission().admits()
}

/// Chooses the next provider and marks it tried.
fn pick<S, C, K>(
    shared: &Shared<S, C, K>,
    tried: &mut Tried,
    preferred: Option<usize>,
    rng: &mut Rng,
    exclusions: Option<&Exclusions>,
) -> Option<usize> {
    let index = select::next(shared.roster(), *tried, preferred, rng, &|i| {
        eligible(&shared.entries, exclusions, i)
    })?;
    *tried |= bit(index);
    Some(index)
}

/// Whether a provider that may be tried is left: one untried and eligible (what makes
/// [`pick`] find one, whatever the selection).
fn has_candidate<S, C, K>(
    shared: &Shared<S, C, K>,
    tried: Tried,
    exclusions: Option<&Exclusions>,
) -> bool {
    (0..shared.entries.len())
        .any(|i| tried & bit(i) == 0 && eligible(&shared.entries, exclusions, i))
}

/// Names every provider the request did not try in its trail, with why: excluded from this
/// call, its circuit refusing calls (with when it may be tried again), or the deadline.
fn skip_rest<S, C, K>(
    shared: &Shared<S, C, K>,
    tried: Tried,
    exclusions: Option<&Exclusions>,
    failures: &mut Vec<ProviderFailure>,
) {
    for (index, entry) in shared.entries.iter().enumerate() {
        if tried & bit(index) != 0 {
            continue;
        }
        let reason: BoxError =
            if let Some(excluded) = exclusions.as_ref().and_then(|e| e.get(entry.name())) {
                Box::new(excluded.clone())
            } else if let Admission::Reject(open) = entry.admission() {
                Box::new(open)
            } else if deadline_passed() {
                Box::new(brace_core::DeadlineExceeded::new(Duration::ZERO))
            } else {
                // Became eligible after the last pick (a wait ended meanwhile): say so.
                Box::new(NotTried)
            };
        entry.record_skip();
        failures.push(ProviderFailure::skipped(entry.name_arc().clone(), reason));
    }
}

/// Logs a provider's failure that makes the request move on (out of line: the success
/// path stays small).
#[cold]
#[inline(never)]
fn log_failed(provider: &str, reason: &dyn fmt::Display) {
    tracing::warn!(provider, reason = %reason, "provider failed");
}

/// Logs a provider whose own breaker refused the call.
#[cold]
#[inline(never)]
fn log_skipped(provider: &str, reason: &(dyn Error + Send + Sync)) {
    tracing::debug!(provider, reason = %reason, "provider skipped");
}

/// Logs a move to the next provider (out of line: the first pick stays small).
#[cold]
#[inline(never)]
fn log_failover(provider: &str, tried: Tried) {
    tracing::info!(
        provider,
        tried = i64::from(tried.count_ones() - 1),
        "failover"
    );
}

/// Logs a hedge started on `provider` after `after`.
#[cold]
#[inline(never)]
fn log_hedge(provider: &str, after: Option<Duration>) {
    tracing::info!(
        provider,
        after_ms = after.map(|delay| i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
        "hedge"
    );
}

/// Logs a request every provider failed or refused, once, with how many were called and
/// how many were skipped.
fn log_all_failed(failures: &[ProviderFailure]) {
    tracing::warn!(
        called = failures.iter().filter(|f| !f.is_skipped()).count(),
        skipped = failures.iter().filter(|f| f.is_skipped()).count(),
        "all providers failed"
    );
}

/// A provider left untried although nothing refused it (its circuit's wait ended while the
/// request was failing over).
#[derive(Debug)]
struct NotTried;

impl fmt::Display for NotTried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not tried: it became available after the request had moved on")
    }
}

impl Error for NotTried {}

/// Records how an attempt went and decides: `Some` ends the request, `None` moves on.
fn settle<S, C, K, T>(
    shared: &Shared<S, C, K>,
    done: Done<T>,
    failures: &mut Vec<ProviderFailure>,
    fallback: &mut Option<Box<T>>,
) -> Option<Result<T, BoxError>>
where
    C: Classify<T, BoxError>,
{
    let Done {
        index,
        started,
        result,
    } = done;
    let entry = &shared.entries[index];
    // The provider's own breaker refused the call (another request took the last half-open
    // trial meanwhile): a skip, not a call.
    if let Err(err) = &result
        && err.is::<CircuitOpen>()
    {
        log_skipped(entry.name(), &**err);
        entry.record_skip();
        if let Err(err) = result {
            failures.push(ProviderFailure::skipped(entry.name_arc().clone(), err));
        }
        return None;
    }
    let latency = started.map(|started| clock::now().saturating_duration_since(started));
    let outcome = shared.classifier.classify(result.as_ref());
    let error = result
        .as_ref()
        .err()
        .map(|err| &**err as &(dyn Error + 'static));
    entry.record(&outcome, latency, error);
    if outcome.is_success()
        && let Some(hedging) = &shared.hedging
        && let Some(latency) = latency
    {
        hedging.record(latency);
    }
    match result {
        Ok(response) if outcome.should_failover() => {
            log_failed(
                entry.name(),
                &format_args!("response judged a failure ({})", outcome.class()),
            );
            *fallback = Some(Box::new(response));
            None
        }
        Err(err) if outcome.should_failover() => {
            log_failed(entry.name(), &err);
            failures.push(ProviderFailure::new(
                shared.providers[index].name.clone(),
                err,
            ));
            None
        }
        result => Some(result),
    }
}

// ===== impl Attempt =====

impl<S, Req, F, CF> Attempt<S, Req, F, CF> {
    fn is_idle(&self) -> bool {
        matches!(self, Attempt::Idle)
    }

    fn start<C, K>(
        shared: &Shared<S, C, K>,
        request: &Req,
        index: usize,
        now: Option<Instant>,
    ) -> Self
    where
        S: Clone,
        Req: Clone,
    {
        Attempt::Ready {
            index,
            started: now,
            service: Some(shared.services[index].take()),
            request: Some(request.clone()),
            deadline: None,
        }
    }

    /// Drives the attempt: readiness of this provider only, the call, then the commit.
    fn poll_attempt<C, K, T>(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        shared: &Shared<S, C, K>,
    ) -> Poll<Done<T>>
    where
        S: Service<Req, Response = T, Future = F> + Clone,
        S::Error: Into<BoxError>,
        F: Future<Output = Result<T, S::Error>>,
        K: Commit<T, Future = CF>,
        K::Error: Into<BoxError>,
        CF: Future<Output = Result<T, K::Error>>,
    {
        loop {
            let (index, started, result) = match self.as_mut().project() {
                AttemptProj::Idle => return Poll::Pending,
                AttemptProj::Ready {
                    index,
                    started,
                    service,
                    request,
                    deadline,
                } => {
                    let (index, started) = (*index, *started);
                    // Both are there until the call (which leaves this state at once).
                    let Some(ready) = service.as_mut().filter(|_| request.is_some()) else {
                        self.set(Attempt::Idle);
                        return Poll::Ready(Done {
                            index,
                            started,
                            result: Err("a failover attempt was polled after its call".into()),
                        });
                    };
                    match ready.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            let (Some(request), Some(mut called)) =
                                (request.take(), service.take())
                            else {
                                continue;
                            };
                            let future = called.call(request);
                            shared.services[index].give_back(called);
                            self.set(Attempt::Calling {
                                index,
                                started,
                                future,
                            });
                            continue;
                        }
                        Poll::Ready(Err(err)) => (index, started, Err(err.into())),
                        Poll::Pending => {
                            let Some(timeout) = shared.ready_timeout else {
                                return Poll::Pending;
                            };
                            if deadline.is_none() {
                                let at = clock::now().checked_add(timeout);
                                *deadline = at.map(|at| Box::pin(tokio::time::sleep_until(at)));
                            }
                            let expired = deadline
                                .as_mut()
                                .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
                            if !expired {
                                return Poll::Pending;
                            }
                            let err: BoxError = Box::new(NotReady::new(timeout));
                            (index, started, Err(err))
                        }
                    }
                }
                AttemptProj::Calling {
                    index,
                    started,
                    future,
                } => {
                    let (index, started) = (*index, *started);
                    match ready!(future.poll(cx)) {
                        Ok(response) => match shared.commit.commit_now(response) {
                            Commitment::Now(result) => (index, started, result.map_err(Into::into)),
                            Commitment::Later(future) => {
                                self.set(Attempt::Committing {
                                    index,
                                    started,
                                    future,
                                });
                                continue;
                            }
                        },
                        Err(err) => (index, started, Err(err.into())),
                    }
                }
                AttemptProj::Committing {
                    index,
                    started,
                    future,
                } => {
                    let (index, started) = (*index, *started);
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    (index, started, result)
                }
            };
            self.set(Attempt::Idle);
            return Poll::Ready(Done {
                index,
                started,
                result,
            });
        }
    }
}

impl<S, Req, C, K> fmt::Debug for ResponseFuture<S, Req, C, K>
where
    S: Service<Req>,
    K: Commit<S::Response>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("tried", &format_args!("{:#b}", self.tried))
            .field("failures", &self.failures)
            .field("hedged", &self.hedged)
            .finish_non_exhaustive()
    }
}
