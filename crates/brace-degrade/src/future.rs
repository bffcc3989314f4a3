//! [`ResponseFuture`]: one request's way down the ladder.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use std::time::Duration;

use brace_core::clock;
use brace_core::degrade::{Degradable, Degradation, DegradeResponse, Origin, Reshape};
use brace_core::exclude::{Excluded, Exclusions};
use brace_core::{
    AllProvidersFailed, BoxError, CircuitOpen, Classify, DeadlineExceeded, FailureClass,
};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use crate::cache::{CacheKey, TierFuture};
use crate::config::Admit;
use crate::error::NoLevelAnswered;
use crate::layer::{CachedOf, CoreOf};
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
        state: State<brace_core::exclude::Within<S::Future>, CachedOf<R>>,
        svc: S,
        svc_ready: bool,
        svc_broken: bool,
        request: R,
        key: KeyState,
        level: usize,
        live_left: u32,
        reshaped: R::Reshaped,
        // What the previous live pass changed in the request: a later pass that would send
        // the same request is skipped.
        previous: Option<R::Reshaped>,
        start: Start,
        // The last live level's failure, returned if no lower level answers. Boxed: only a
        // failing request fills it, and inline it would grow every request's future.
        last: Option<Box<Result<R::Response, BoxError>>>,
        // Failing passes' trails, added together, each entry labelled with its level.
        trail: Option<Box<AllProvidersFailed>>,
        // Who the current pass leaves out: providers whose failure its reshape cannot change.
        exclusions: Exclusions,
        // Whether the last failure (of one service, not a failover trail) may pass with a
        // reshaped request.
        last_reshapable: bool,
        // Fires shortly before the call's deadline when a cached or static answer could
        // still be given; then the live call is dropped for it.
        cutoff: Option<Pin<Box<Sleep>>>,
        cut: bool,
        core: Arc<CoreOf<R, C>>,
    }
}

/// How long before the call's deadline a live pass is given up for a cached or static
/// answer, so that answer still goes out in time.
pub(crate) const DEADLINE_RESERVE: Duration = Duration::from_millis(50);

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
        core: Arc<CoreOf<R, C>>,
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
            reshaped: R::Reshaped::nothing(),
            previous: None,
            start,
            last: None,
            trail: None,
            exclusions: Exclusions::default(),
            last_reshapable: false,
            cutoff: None,
            cut: false,
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
    C: Classify<R::Response, BoxError>,
{
    type Output = Result<R::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every layer polled in here reads one clock reading (see `brace_core::clock`).
        let _clock = clock::scope();
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Route => {
                    let ladder = &this.core.shared.ladder;
                    let Some(level) = ladder.get(*this.level) else {
                        return Poll::Ready(give_up(this.last, this.trail, *this.cut));
                    };
                    // Built only for an answer given here (a live level's is built
                    // when its call ends).
                    let index = *this.level;
                    let degradation = |origin| Degradation {
                        level: level.name_arc().clone(),
                        index,
                        origin,
                        reshaped: R::Reshaped::nothing(),
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
                            log_cache(level.name(), hit.is_some());
                            if let Some(mut response) = hit {
                                response.annotate(&degradation(Origin::Cache));
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
                            let failed = this.last.is_some() || this.trail.is_some() || *this.cut;
                            if !this.core.fallback_to_static
                                && *this.level != this.start.current
                                && failed
                            {
                                return Poll::Ready(give_up(this.last, this.trail, *this.cut));
                            }
                            log_static(level.name());
                            let mut response = this.request.static_response(message);
                            response.annotate(&degradation(Origin::Static));
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
                        .ladder
                        .get(*this.level)
                        .map(crate::level::Level::kind)
                    else {
                        // Only entered at a live level; move on rather than panic.
                        *this.level += 1;
                        this.state.set(State::Route);
                        continue;
                    };
                    let mut request = this.request.clone();
                    if *this.level > 0 {
                        request.set_level(this.core.shared.ladder.levels()[*this.level].name_arc());
                    }
                    let reshaped = request.reshape(shape);
                    // A later pass is worth its calls only if it sends a different request
                    // to someone whose failure that can change.
                    if let Some(previous) = &*this.previous {
                        let model_changed = reshaped.retargets(previous);
                        let level = this.core.shared.ladder.levels()[*this.level].name_arc();
                        let worth_it = reshaped != *previous
                            && match this.trail.as_deref() {
                                Some(trail) => {
                                    *this.exclusions = exclusions(
                                        trail,
                                        level,
                                        &this.core.classifier,
                                        model_changed,
                                    );
                                    !nobody_left(trail, this.exclusions)
                                }
                                None => model_changed || *this.last_reshapable,
                            };
                        if !worth_it {
                            *this.level += 1;
                            this.state.set(State::Route);
                            continue;
                        }
                    }
                    *this.svc_ready = false;
                    *this.live_left -= 1;
                    *this.reshaped = reshaped.clone();
                    *this.previous = Some(reshaped);
                    if this.cutoff.is_none() && has_fallback(this.core, &*this.request) {
                        *this.cutoff = cutoff();
                    }
                    let future = this.svc.call(request);
                    let future = brace_core::exclude::within(this.exclusions.clone(), future);
                    this.state.set(State::Call { future });
                }
                StateProj::Call { future } => {
                    let result = match future.poll(cx) {
                        // Judged as every layer judges: the error boxed.
                        Poll::Ready(result) => result.map_err(Into::into),
                        Poll::Pending => {
                            let Some(cutoff) = this.cutoff.as_mut() else {
                                return Poll::Pending;
                            };
                            ready!(cutoff.as_mut().poll(cx));
                            // The deadline is about to pass: drop the call for a cached or
                            // static answer (no more live levels), else a 504.
                            *this.cutoff = None;
                            *this.cut = true;
                            *this.live_left = 0;
                            *this.level += 1;
                            this.state.set(State::Route);
                            continue;
                        }
                    };
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
                        reshaped: std::mem::replace(this.reshaped, R::Reshaped::nothing()),
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
                        Err(err) if !failed => return Poll::Ready(Err(err)),
                        Err(err) => {
                            let level = &degradation.level;
                            match err.downcast::<AllProvidersFailed>() {
                                Ok(all) => {
                                    let all = all.in_pass(level);
                                    match this.trail {
                                        Some(trail) => trail.extend(all),
                                        None => *this.trail = Some(Box::new(all)),
                                    }
                                }
                                Err(err) => {
                                    *this.last_reshapable = outcome.reshaping_may_help();
                                    *this.last = Some(Box::new(Err(err)));
                                }
                            }
                        }
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
                            reshaped: R::Reshaped::nothing(),
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

/// Logs the cache decision at the cached level (out of line: the live path stays small).
#[cold]
#[inline(never)]
fn log_cache(level: &str, hit: bool) {
    if hit {
        tracing::debug!(level, "cache hit");
    } else {
        tracing::debug!(level, "cache miss");
    }
}

/// Logs an answer from the static level.
#[cold]
#[inline(never)]
fn log_static(level: &str) {
    tracing::info!(level, "static answer");
}

/// What the request ends with when no level answered: the trail of every failed pass (a
/// deadline cut first), else the last level's failure.
fn give_up<T>(
    last: &mut Option<Box<Result<T, BoxError>>>,
    trail: &mut Option<Box<AllProvidersFailed>>,
    cut: bool,
) -> Result<T, BoxError> {
    if cut {
        return Err(Box::new(DeadlineExceeded::new(Duration::ZERO)));
    }
    if let Some(trail) = trail.take() {
        return Err(trail);
    }
    match last.take() {
        Some(last) => *last,
        None => Err(NoLevelAnswered::new().into()),
    }
}

/// The providers the pass at `level` leaves out: each one's latest entry in the trail is an
/// open circuit, or — unless the pass asks for another model, which may fail otherwise — a
/// failure a reshaped request cannot change (a rate limit, a refused key), or it was left
/// out already.
fn exclusions<T, C: Classify<T, BoxError>>(
    trail: &AllProvidersFailed,
    level: &Arc<str>,
    classifier: &C,
    model_changed: bool,
) -> Exclusions {
    let mut latest: Vec<(&Arc<str>, &brace_core::ProviderFailure)> = Vec::new();
    for entry in trail.failures() {
        match latest.iter_mut().find(|(name, _)| **name == entry.name) {
            Some(slot) => slot.1 = entry,
            None => latest.push((&entry.name, entry)),
        }
    }
    Exclusions::new(latest.into_iter().filter_map(|(name, entry)| {
        if let Some(open) = entry.error.downcast_ref::<CircuitOpen>() {
            let class = open.cause().unwrap_or(FailureClass::Other);
            return Some((name.clone(), Excluded::new(level.clone(), class)));
        }
        if model_changed {
            return None;
        }
        if let Some(excluded) = entry.error.downcast_ref::<Excluded>() {
            return Some((name.clone(), Excluded::new(level.clone(), excluded.class())));
        }
        let outcome = classifier.classify(Err(&entry.error));
        (!outcome.reshaping_may_help())
            .then(|| (name.clone(), Excluded::new(level.clone(), outcome.class())))
    }))
}

/// `true` when the trail names providers and every one of them is excluded: a later pass
/// would call nobody.
fn nobody_left(trail: &AllProvidersFailed, exclusions: &Exclusions) -> bool {
    !trail.failures().is_empty()
        && trail
            .failures()
            .iter()
            .all(|entry| exclusions.get(&entry.name).is_some())
}

/// `true` if a cached or static answer could stand in for a live one cut by the deadline.
fn has_fallback<R: Degradable, C>(core: &CoreOf<R, C>, request: &R) -> bool {
    let ladder = core.shared.ladder.levels();
    let cached = core.cache.is_some()
        && match core.admit {
            Admit::Deterministic => request.is_deterministic(),
            Admit::All => true,
            Admit::None => false,
        }
        && ladder
            .iter()
            .any(|level| matches!(level.kind(), LevelKind::Cached));
    let fixed = core.fallback_to_static
        && ladder
            .iter()
            .any(|level| matches!(level.kind(), LevelKind::Static(_)));
    cached || fixed
}

/// A timer that fires [`DEADLINE_RESERVE`] before the call's deadline, if it has one and
/// there is that much time left.
fn cutoff() -> Option<Pin<Box<Sleep>>> {
    let deadline = brace_core::deadline::current()?;
    let at = deadline.checked_sub(DEADLINE_RESERVE)?;
    (at > clock::now()).then(|| Box::pin(tokio::time::sleep_until(at)))
}

/// Hands a successful live response to the cache, if the request may be cached.
fn fill<R, C>(
    response: R::Response,
    core: &CoreOf<R, C>,
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
