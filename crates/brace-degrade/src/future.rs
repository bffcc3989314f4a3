//! [`ResponseFuture`]: one request's way down the ladder.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use brace_core::degrade::{Degradable, Degradation, DegradeResponse, Origin, Reshaped};
use brace_core::{BoxError, Classify};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::cache::{CacheKey, TierFuture};
use crate::config::Admit;
use crate::error::NoLevelAnswered;
use crate::layer::{CachedOf, Core};
use crate::level::LevelKind;
use crate::state::Start;

pin_project! {
    /// The response future of [`Degrade`](crate::Degrade).
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the inner call in flight; a recovery probe in flight is released
    /// so that another request can probe.
    pub struct ResponseFuture<S, R, C>
    where
        S: Service<R>,
        R: Degradable,
    {
        #[pin]
        state: State<S::Future, CachedOf<R>>,
        svc: S,
        svc_ready: bool,
        svc_broken: bool,
        request: R,
        key: KeyState,
        level: usize,
        live_left: u32,
        reshaped: Reshaped,
        start: Start,
        // The last live level's failure, returned if no lower level answers. Boxed: only a
        // failing request fills it, and inline it would grow every request's future.
        last: Option<Box<Result<R::Response, BoxError>>>,
        core: Arc<Core<CachedOf<R>, C>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, V> {
        Route,
        Ready,
        Call { #[pin] future: F },
        // A local miss at a cached level, asking the second tier.
        Tier { future: TierFuture<V> },
    }
}

impl<S, R, C> fmt::Debug for ResponseFuture<S, R, C>
where
    S: Service<R>,
    R: Degradable,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("level", &self.level)
            .field("live_left", &self.live_left)
            .finish_non_exhaustive()
    }
}

impl<S, R, C> ResponseFuture<S, R, C>
where
    S: Service<R>,
    R: Degradable,
{
    pub(crate) fn new(
        svc: S,
        svc_ready: bool,
        request: R,
        start: Start,
        core: Arc<Core<CachedOf<R>, C>>,
    ) -> Self {
        Self {
            state: State::Route,
            svc,
            svc_ready,
            svc_broken: false,
            request,
            key: KeyState::Unknown,
            level: start.level,
            live_left: core.fallback_attempts.saturating_add(1),
            reshaped: Reshaped::nothing(),
            start,
            last: None,
            core,
        }
    }
}

/// The request's cache key, computed once and only when needed.
#[derive(Debug, Clone, Copy)]
enum KeyState {
    Unknown,
    Known(CacheKey),
    Unavailable,
}

fn key_of<R: Degradable>(key: &mut KeyState, request: &R) -> Option<CacheKey> {
    match *key {
        KeyState::Known(known) => Some(known),
        KeyState::Unavailable => None,
        KeyState::Unknown => {
            let computed = CacheKey::of(request);
            *key = computed.map_or(KeyState::Unavailable, KeyState::Known);
            computed
        }
    }
}

impl<S, R, C> Future for ResponseFuture<S, R, C>
where
    R: Degradable + Clone,
    S: Service<R, Response = R::Response>,
    S::Error: Into<BoxError>,
    C: Classify<R::Response, S::Error>,
{
    type Output = Result<R::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Route => {
                    let ladder = &this.core.shared.ladder;
                    let Some(level) = ladder.get(*this.level) else {
                        return Poll::Ready(match this.last.take() {
                            Some(last) => *last,
                            None => Err(NoLevelAnswered::new().into()),
                        });
                    };
                    let mut degradation = Degradation {
                        level: level.name_arc().clone(),
                        index: *this.level,
                        origin: Origin::Cache,
                        reshaped: Reshaped::nothing(),
                    };
                    match level.kind() {
                        LevelKind::Live(_) => {
                            if *this.live_left == 0 || *this.svc_broken {
                                *this.level += 1;
                            } else {
                                this.state.set(State::Ready);
                            }
                        }
                        LevelKind::Cached => {
                            let hit = this.core.cache.as_ref().and_then(|cache| {
                                let key = key_of(this.key, &*this.request)?;
                                let stream = this.request.wants_stream();
                                cache.get_with(&key, |cached| {
                                    R::Response::from_cached(cached, stream)
                                })
                            });
                            if let Some(mut response) = hit {
                                response.annotate(&degradation);
                                return Poll::Ready(Ok(response));
                            }
                            if let Some(tier) = &this.core.tier
                                && let Some(key) = key_of(this.key, &*this.request)
                            {
                                let future = tier.get(&key);
                                this.state.set(State::Tier { future });
                                continue;
                            }
                            *this.level += 1;
                        }
                        LevelKind::Static(message) => {
                            if !this.core.fallback_to_static
                                && *this.level != this.start.current
                                && let Some(last) = this.last.take()
                            {
                                return Poll::Ready(*last);
                            }
                            let mut response = this.request.static_response(message);
                            degradation.origin = Origin::Static;
                            response.annotate(&degradation);
                            return Poll::Ready(Ok(response));
                        }
                    }
                }
                StateProj::Ready => {
                    if !*this.svc_ready
                        && let Err(err) = ready!(this.svc.poll_ready(cx))
                    {
                        // A service that failed readiness is unusable: no more live levels.
                        this.core.shared.record(*this.level, this.start, false);
                        *this.svc_broken = true;
                        *this.last = Some(Box::new(Err(err.into())));
                        *this.level += 1;
                        this.state.set(State::Route);
                        continue;
                    }
                    let Some(LevelKind::Live(shape)) = this
                        .core
                        .shared
                        .ladder
                        .get(*this.level)
                        .map(crate::level::Level::kind)
                    else {
                        // Only entered at a live level; move on rather than panic.
                        *this.level += 1;
                        this.state.set(State::Route);
                        continue;
                    };
                    *this.svc_ready = false;
                    *this.live_left -= 1;
                    let mut request = this.request.clone();
                    *this.reshaped = request.reshape(shape);
                    let future = this.svc.call(request);
                    this.state.set(State::Call { future });
                }
                StateProj::Call { future } => {
                    let result = ready!(future.poll(cx));
                    let outcome = this.core.classifier.classify(result.as_ref());
                    let failed = outcome.is_failure() || outcome.should_failover();
                    // The caller's own mistakes (ignored, not failing over) say nothing
                    // about the level's health either way.
                    if failed || outcome.is_success() {
                        this.core.shared.record(*this.level, this.start, !failed);
                    }
                    let degradation = Degradation {
                        level: this.core.shared.ladder.levels()[*this.level]
                            .name_arc()
                            .clone(),
                        index: *this.level,
                        origin: Origin::Live,
                        reshaped: std::mem::take(this.reshaped),
                    };
                    match result {
                        Ok(mut response) => {
                            response.annotate(&degradation);
                            if !failed {
                                return Poll::Ready(Ok(fill(
                                    response,
                                    this.core,
                                    this.key,
                                    &*this.request,
                                )));
                            }
                            *this.last = Some(Box::new(Ok(response)));
                        }
                        Err(err) if !failed => return Poll::Ready(Err(err.into())),
                        Err(err) => *this.last = Some(Box::new(Err(err.into()))),
                    }
                    *this.level += 1;
                    this.state.set(State::Route);
                }
                StateProj::Tier { future } => {
                    let found = ready!(future.as_mut().poll(cx));
                    if let (Some(cached), Some(cache), KeyState::Known(key)) =
                        (found, &this.core.cache, *this.key)
                    {
                        let mut response =
                            R::Response::from_cached(&cached, this.request.wants_stream());
                        let size = R::Response::cached_size(&cached);
                        cache.insert(key, cached, size);
                        response.annotate(&Degradation {
                            level: this.core.shared.ladder.levels()[*this.level]
                                .name_arc()
                                .clone(),
                            index: *this.level,
                            origin: Origin::Cache,
                            reshaped: Reshaped::nothing(),
                        });
                        return Poll::Ready(Ok(response));
                    }
                    *this.level += 1;
                    this.state.set(State::Route);
                }
            }
        }
    }
}

/// Hands a successful live response to the cache, if the request may be cached.
fn fill<R, C>(
    response: R::Response,
    core: &Core<CachedOf<R>, C>,
    key: &mut KeyState,
    request: &R,
) -> R::Response
where
    R: Degradable,
{
    let Some(cache) = &core.cache else {
        return response;
    };
    let admitted = match core.admit {
        Admit::Deterministic => request.is_deterministic(),
        Admit::All => true,
        Admit::None => false,
    };
    if !admitted {
        return response;
    }
    let Some(key) = key_of(key, request) else {
        return response;
    };
    let cache = cache.clone();
    let tier = core.tier.clone();
    response.tee(move |cached| {
        let size = R::Response::cached_size(&cached);
        if !cache.admits_size(size) {
            return;
        }
        if let Some(tier) = tier {
            tier.put(&key, &cached, cache.ttl());
        }
        cache.insert(key, cached, size);
    })
}
