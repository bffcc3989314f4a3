//! Outbound rate limits per provider: at most so many requests and tokens per minute, the
//! provider's own RPM/TPM quota, counted by every replica together when the
//! [`StateStore`] is shared.
//!
//! # How it counts
//!
//! A quota is a sliding window of one minute counted in one-second buckets, strict: a
//! reservation is granted only if the buckets of the last 61 seconds (a bucket's whole
//! second, rounding towards more) leave room for it, so no 60-second span ever holds more
//! than the limit.
//!
//! - **In memory** ([`MemoryStore`](crate::MemoryStore), or a shared store that is down):
//!   each call takes its units from the process's own window. During a store outage every
//!   replica enforces the whole quota alone (N replicas may together send up to N times the
//!   quota until the store is back).
//! - **Shared**: the replicas reserve units from one window in the store, atomically, in
//!   batches — one second's worth of the quota (`limit / 60`, at least 1), or what a call
//!   needs if more — and each call takes its units from its replica's local allowance
//!   without waiting on the store. A replica asks for the next batch in the background when
//!   its allowance falls below half a batch; a call finds the allowance empty only when a
//!   burst outruns that, and then waits for one reservation (bounded by the store's
//!   timeout). Unused units of an allowance lapse after [`ALLOWANCE_TTL`], so a reserved
//!   unit is spent within that time or never; the store's window is counted over the
//!   minute plus that lifetime, which keeps the guarantee strict: the replicas together
//!   never send more than the quota in any minute.
//!
//!   What this costs in accuracy is the other way: units reserved and not spent (each
//!   replica holds at most a batch and a half at a time and lets what it does not use lapse)
//!   are lost to the minute they were counted in, so under light traffic replicas may refuse
//!   a little before the provider would, by at most about one batch per replica per
//!   [`ALLOWANCE_TTL`]. A full window is asked again at most once a second per replica.
//!
//! Tokens are known only after the answer: a call reserves an estimate (the caller's, e.g.
//! the prompt's length), and [`QuotaPermit::settle`] charges the difference when the real
//! usage is known (more is charged to the window, less goes back to the allowance).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use brace_core::clock;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::store::{StateStore, StoreFuture, StoreUnavailable};

/// How long units reserved from a shared store stay usable before they lapse.
pub const ALLOWANCE_TTL: Duration = Duration::from_secs(2);

/// The quota's window.
const WINDOW: Duration = Duration::from_mins(1);

/// After a shared window was found full, how long before asking again.
const FULL_BACKOFF: Duration = Duration::from_secs(1);

/// A provider's quota (`providers[].rate_limit` in a gateway configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per minute.
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    /// Tokens (prompt and completion) per minute.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
}

impl RateLimit {
    /// Checks that every limit set is at least 1 and that one is set.
    ///
    /// # Errors
    ///
    /// A message naming the bad value.
    pub fn validate(&self) -> Result<(), String> {
        if self.requests_per_minute.is_none() && self.tokens_per_minute.is_none() {
            return Err(
                "rate_limit needs requests_per_minute, tokens_per_minute or both".to_owned(),
            );
        }
        for (name, value) in [
            ("requests_per_minute", self.requests_per_minute),
            ("tokens_per_minute", self.tokens_per_minute),
        ] {
            if value == Some(0) {
                return Err(format!("rate_limit.{name} must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Which quota refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
}

impl QuotaKind {
    /// `requests_per_minute` or `tokens_per_minute`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests_per_minute",
            Self::Tokens => "tokens_per_minute",
        }
    }
}

/// A call would exceed a provider's quota: send it elsewhere.
#[derive(Debug, Clone)]
pub struct QuotaExceeded {
    provider: Arc<str>,
    kind: QuotaKind,
}

impl QuotaExceeded {
    /// The provider.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Which quota.
    pub fn kind(&self) -> QuotaKind {
        self.kind
    }
}

impl fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "provider `{}` is at its {} quota",
            self.provider,
            self.kind.as_str()
        )
    }
}

impl std::error::Error for QuotaExceeded {}

/// What [`RateLimiter::try_acquire`] answers.
pub enum Acquired {
    /// The call may go.
    Granted(QuotaPermit),
    /// The call would exceed the quota.
    Refused(QuotaExceeded),
    /// The local allowance is empty: this future reserves from the shared store (bounded
    /// by the store's timeout; if the store fails, the local window decides).
    Wait(StoreFuture<Result<QuotaPermit, QuotaExceeded>>),
}

impl fmt::Debug for Acquired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Granted(permit) => f.debug_tuple("Granted").field(permit).finish(),
            Self::Refused(err) => f.debug_tuple("Refused").field(err).finish(),
            Self::Wait(_) => f.write_str("Wait(..)"),
        }
    }
}

/// One provider's rate limits.
///
/// # Clone
///
/// Cheap: clones share the counts.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use brace_failover::{Acquired, MemoryStore, RateLimit, RateLimiter};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let quota = RateLimit { requests_per_minute: Some(2), tokens_per_minute: None };
/// let limiter = RateLimiter::new("openai", quota, Arc::new(MemoryStore));
/// assert!(matches!(limiter.try_acquire(0), Acquired::Granted(_)));
/// assert!(matches!(limiter.try_acquire(0), Acquired::Granted(_)));
/// assert!(matches!(limiter.try_acquire(0), Acquired::Refused(_)));
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    provider: Arc<str>,
    store: Arc<dyn StateStore>,
    requests: Option<Dimension>,
    tokens: Option<Dimension>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("provider", &self.inner.provider)
            .field("store", &self.inner.store.kind())
            .field("requests", &self.inner.requests.as_ref().map(|d| d.limit))
            .field("tokens", &self.inner.tokens.as_ref().map(|d| d.limit))
            .finish()
    }
}

impl RateLimiter {
    /// The limits of `provider`, counted in `store` (shared by replicas when the store is).
    pub fn new(provider: &str, quota: RateLimit, store: Arc<dyn StateStore>) -> Self {
        let dimension = |kind: QuotaKind, limit: Option<u64>| {
            limit.map(|limit| Dimension::new(provider, kind, limit.max(1)))
        };
        Self {
            inner: Arc::new(Inner {
                provider: provider.into(),
                store,
                requests: dimension(QuotaKind::Requests, quota.requests_per_minute),
                tokens: dimension(QuotaKind::Tokens, quota.tokens_per_minute),
            }),
        }
    }

    /// The provider.
    pub fn provider(&self) -> &str {
        &self.inner.provider
    }

    /// Asks to send one call that is expected to use `tokens` tokens (an estimate, counted
    /// as at least 1; see [`QuotaPermit::settle`]). Answers at once from the local
    /// allowance or window, or — only when a shared allowance is empty — with a future that
    /// reserves more.
    pub fn try_acquire(&self, tokens: u64) -> Acquired {
        let tokens = tokens.max(1);
        let inner = &self.inner;
        if !(inner.store.is_shared() && inner.store.is_up()) {
            return match self.local(tokens) {
                Ok(permit) => Acquired::Granted(permit),
                Err(err) => Acquired::Refused(err),
            };
        }
        let now = clock::now();
        let mut taken = Taken::default();
        for (kind, units) in [(QuotaKind::Requests, 1), (QuotaKind::Tokens, tokens)] {
            let Some(dimension) = self.dimension(kind) else {
                continue;
            };
            match dimension.take_shared(units, now) {
                Take::Taken => taken.set(kind),
                Take::Full => {
                    self.put_back(taken, tokens);
                    return Acquired::Refused(self.exceeded(kind));
                }
                Take::Short => {
                    let this = self.clone();
                    return Acquired::Wait(Box::pin(async move {
                        this.reserve_then_take(tokens, taken).await
                    }));
                }
            }
        }
        self.prefetch(now);
        Acquired::Granted(self.permit(tokens, true))
    }

    /// The slow path: reserves from the shared store what the allowance lacks.
    async fn reserve_then_take(
        self,
        tokens: u64,
        mut taken: Taken,
    ) -> Result<QuotaPermit, QuotaExceeded> {
        for (kind, units) in [(QuotaKind::Requests, 1), (QuotaKind::Tokens, tokens)] {
            let Some(dimension) = self.dimension(kind) else {
                continue;
            };
            if taken.has(kind) {
                continue;
            }
            let mut outcome = dimension.take_shared(units, clock::now());
            if let Take::Short = outcome {
                if dimension.refill(&*self.inner.store, units).await.is_err() {
                    // The store failed: this call is counted locally.
                    self.put_back(taken, tokens);
                    return self.local(tokens);
                }
                outcome = dimension.take_shared(units, clock::now());
            }
            if let Take::Taken = outcome {
                taken.set(kind);
            } else {
                self.put_back(taken, tokens);
                return Err(self.exceeded(kind));
            }
        }
        self.prefetch(clock::now());
        Ok(self.permit(tokens, true))
    }

    /// Returns to the allowances what a failed acquisition had taken.
    fn put_back(&self, taken: Taken, tokens: u64) {
        if taken.requests
            && let Some(requests) = &self.inner.requests
        {
            requests.put_back(1);
        }
        if taken.tokens
            && let Some(dimension) = &self.inner.tokens
        {
            dimension.put_back(tokens);
        }
    }

    fn dimension(&self, kind: QuotaKind) -> Option<&Dimension> {
        match kind {
            QuotaKind::Requests => self.inner.requests.as_ref(),
            QuotaKind::Tokens => self.inner.tokens.as_ref(),
        }
    }

    /// Counts one call in the process's own windows.
    fn local(&self, tokens: u64) -> Result<QuotaPermit, QuotaExceeded> {
        let now = clock::now();
        if let Some(requests) = &self.inner.requests
            && !requests.take_local(1, now)
        {
            return Err(self.exceeded(QuotaKind::Requests));
        }
        if let Some(tokens_dim) = &self.inner.tokens
            && !tokens_dim.take_local(tokens, now)
        {
            if let Some(requests) = &self.inner.requests {
                requests.untake_local(1, now);
            }
            return Err(self.exceeded(QuotaKind::Tokens));
        }
        Ok(self.permit(tokens, false))
    }

    fn permit(&self, tokens: u64, shared: bool) -> QuotaPermit {
        QuotaPermit {
            limiter: self.clone(),
            estimate: tokens,
            shared,
        }
    }

    fn exceeded(&self, kind: QuotaKind) -> QuotaExceeded {
        QuotaExceeded {
            provider: self.inner.provider.clone(),
            kind,
        }
    }

    /// Asks for the next batch in the background where an allowance runs low.
    fn prefetch(&self, now: Instant) {
        for dimension in [&self.inner.requests, &self.inner.tokens]
            .into_iter()
            .flatten()
        {
            if dimension.wants_prefetch(now)
                && let Ok(runtime) = tokio::runtime::Handle::try_current()
            {
                let store = self.inner.store.clone();
                let this = self.clone();
                let kind = dimension.kind;
                runtime.spawn(async move {
                    if let Some(dimension) = this.dimension(kind) {
                        let _ = dimension.refill(&*store, 0).await;
                        dimension.prefetching.store(false, Ordering::Release);
                    }
                });
            }
        }
    }
}

/// What an acquisition has taken from the allowances so far.
#[derive(Debug, Default, Clone, Copy)]
struct Taken {
    requests: bool,
    tokens: bool,
}

impl Taken {
    fn set(&mut self, kind: QuotaKind) {
        match kind {
            QuotaKind::Requests => self.requests = true,
            QuotaKind::Tokens => self.tokens = true,
        }
    }

    fn has(self, kind: QuotaKind) -> bool {
        match kind {
            QuotaKind::Requests => self.requests,
            QuotaKind::Tokens => self.tokens,
        }
    }
}

/// A call the limiter let through.
#[derive(Debug)]
pub struct QuotaPermit {
    limiter: RateLimiter,
    estimate: u64,
    shared: bool,
}

impl QuotaPermit {
    /// Settles the tokens once the call's real usage is known: more than the estimate is
    /// taken from the allowance (units already counted in the shared window) and, beyond
    /// what it holds, charged to the window; less goes back to the allowance. A call whose
    /// usage is not known is left at its estimate (drop the permit).
    pub fn settle(self, used_tokens: u64) {
        let Some(tokens) = &self.limiter.inner.tokens else {
            return;
        };
        if used_tokens == self.estimate {
            return;
        }
        let now = clock::now();
        if used_tokens > self.estimate {
            let extra = used_tokens - self.estimate;
            if self.shared {
                let beyond = tokens.take_up_to(extra, now);
                if beyond > 0 {
                    self.limiter
                        .inner
                        .store
                        .charge(&tokens.key, WINDOW + ALLOWANCE_TTL, beyond);
                }
            } else {
                tokens.force_local(extra, now);
            }
        } else if used_tokens < self.estimate {
            let unused = self.estimate - used_tokens;
            if self.shared {
                tokens.put_back(unused);
            } else {
                tokens.untake_local(unused, now);
            }
        }
    }
}

// ===== one quota =====

enum Take {
    Taken,
    /// The shared window was found full less than a second ago.
    Full,
    /// The allowance does not hold enough.
    Short,
}

struct Dimension {
    kind: QuotaKind,
    key: String,
    limit: u64,
    batch: u64,
    local: Mutex<LocalWindow>,
    allowance: Mutex<Allowance>,
    prefetching: AtomicBool,
}

#[derive(Debug)]
struct Allowance {
    units: u64,
    expires: Instant,
    full_until: Option<Instant>,
}

impl Dimension {
    fn new(provider: &str, kind: QuotaKind, limit: u64) -> Self {
        let now = clock::now();
        Self {
            kind,
            key: format!("{provider}:{}", kind.as_str()),
            limit,
            batch: (limit / 60).max(1),
            local: Mutex::new(LocalWindow::new(now)),
            allowance: Mutex::new(Allowance {
                units: 0,
                expires: now,
                full_until: None,
            }),
            prefetching: AtomicBool::new(false),
        }
    }

    fn take_shared(&self, units: u64, now: Instant) -> Take {
        let mut allowance = self.allowance.lock();
        if now >= allowance.expires {
            allowance.units = 0;
        }
        if allowance.units >= units {
            allowance.units -= units;
            return Take::Taken;
        }
        match allowance.full_until {
            Some(until) if now < until => Take::Full,
            _ => Take::Short,
        }
    }

    /// Takes up to `units` from the allowance; returns how many it did not hold.
    fn take_up_to(&self, units: u64, now: Instant) -> u64 {
        let mut allowance = self.allowance.lock();
        if now >= allowance.expires {
            allowance.units = 0;
        }
        let taken = units.min(allowance.units);
        allowance.units -= taken;
        units - taken
    }

    fn put_back(&self, units: u64) {
        let mut allowance = self.allowance.lock();
        if clock::now() < allowance.expires {
            allowance.units = allowance.units.saturating_add(units);
        }
    }

    /// Reads the clock once per call at most: on some machines reading it costs more than
    /// the rest of the check.
    fn wants_prefetch(&self, now: Instant) -> bool {
        let allowance = self.allowance.lock();
        let low = allowance.units.saturating_mul(2) < self.batch;
        let full = allowance.full_until.is_some_and(|until| now < until);
        drop(allowance);
        low && !full
            && self
                .prefetching
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Reserves a batch (or `need`, if more) from the shared store into the allowance.
    async fn refill(&self, store: &dyn StateStore, need: u64) -> Result<(), StoreUnavailable> {
        let want = self.batch.max(need).min(self.limit);
        let granted = store
            .reserve(&self.key, self.limit, WINDOW + ALLOWANCE_TTL, want)
            .await?;
        let now = clock::now();
        let mut allowance = self.allowance.lock();
        if now >= allowance.expires {
            allowance.units = 0;
        }
        allowance.units = allowance.units.saturating_add(granted);
        allowance.expires = now + ALLOWANCE_TTL;
        allowance.full_until = (granted < want).then(|| now + FULL_BACKOFF);
        Ok(())
    }

    fn take_local(&self, units: u64, now: Instant) -> bool {
        self.local.lock().take(units, self.limit, now)
    }

    fn untake_local(&self, units: u64, now: Instant) {
        self.local.lock().untake(units, now);
    }

    fn force_local(&self, units: u64, now: Instant) {
        self.local.lock().add(units, now);
    }
}

/// One minute in one-second buckets.
#[derive(Debug)]
struct LocalWindow {
    base: Instant,
    /// `(second, count)`, the second since `base`; 61 buckets cover the current second and
    /// the 60 before it.
    buckets: [(u64, u64); 61],
}

impl LocalWindow {
    fn new(base: Instant) -> Self {
        Self {
            base,
            buckets: [(u64::MAX, 0); 61],
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.base).as_secs()
    }

    fn used(&self, second: u64) -> u64 {
        self.buckets
            .iter()
            .filter(|(s, _)| *s != u64::MAX && *s + 60 >= second && *s <= second)
            .map(|(_, count)| count)
            .sum()
    }

    fn slot(&mut self, second: u64) -> &mut (u64, u64) {
        let slot = &mut self.buckets[(second % 61) as usize];
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot
    }

    fn take(&mut self, units: u64, limit: u64, now: Instant) -> bool {
        let second = self.second(now);
        if self.used(second).saturating_add(units) > limit {
            return false;
        }
        self.slot(second).1 += units;
        true
    }

    fn add(&mut self, units: u64, now: Instant) {
        let second = self.second(now);
        let slot = self.slot(second);
        slot.1 = slot.1.saturating_add(units);
    }

    fn untake(&mut self, units: u64, now: Instant) {
        let second = self.second(now);
        let slot = self.slot(second);
        slot.1 = slot.1.saturating_sub(units);
    }
}
