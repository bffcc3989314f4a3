//! The state-store seam: where the provider state that replicas of an application may share
//! lives — circuit transitions, the pinned degradation level, a second response-cache tier
//! and the providers' rate-limit budgets.
//!
//! One process needs none of it: [`MemoryStore`], the default, keeps everything in the
//! process (each breaker is its own truth, the cache is the in-process one, quotas are
//! counted locally). Replicas behind a load balancer give every process the same shared
//! store (brace-redis implements one over Redis) and agree on those four things.
//!
//! # The rules every store keeps
//!
//! - **The hot path never waits on the store.** A breaker's admission reads the local
//!   breaker, kept fresh by the store in the background; writes are sent, not awaited. The
//!   only awaited reads are a cache lookup after a local miss at a cached level and a rate
//!   limit's refill when its local allowance is empty, both bounded by the store's own short
//!   timeout.
//! - **Fail open.** A store that is down or slow answers at once from local state
//!   ([`StoreUnavailable`] for awaited reads, dropped writes) and says so through
//!   [`is_up`](StateStore::is_up); no request fails because of the store.
//! - **Shared transitions, local counts.** Failure counts stay per replica; transitions are
//!   shared (see [`share_circuit`](StateStore::share_circuit)).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use brace_circuit::CircuitHandle;

/// The future of a store read: boxed, `'static`, `Send`.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Applies a pinned level learned from another replica: `Some(level)` pins it, `None`
/// releases the pin.
pub type ApplyPin = Arc<dyn Fn(Option<&str>) + Send + Sync>;

/// Where replicas share provider state. See the [module docs](self) for the rules.
///
/// Every method has a default that keeps state local, so a store implements only what it
/// shares.
pub trait StateStore: fmt::Debug + Send + Sync + 'static {
    /// A short name for logs and metrics (`memory`, `redis`).
    fn kind(&self) -> &'static str;

    /// `true` if other processes see this store's state. [`MemoryStore`] is not shared.
    fn is_shared(&self) -> bool {
        false
    }

    /// `true` while the store answers. A store that is down serves nothing and every
    /// replica runs on local state until it is back.
    fn is_up(&self) -> bool {
        true
    }

    // ===== circuits =====

    /// Shares the circuit of `provider`: sends its local transitions to the other
    /// replicas (an open with its remaining wait; closed; forced states) and applies
    /// theirs with [`CircuitHandle::apply_remote`]; may install a
    /// [`HalfOpenGate`](brace_circuit::HalfOpenGate) so that one replica at a time trials
    /// a recovering provider. Called once per provider by
    /// [`ProviderEntry::attach_circuit`](crate::ProviderEntry::attach_circuit) on a
    /// registry built [`with_store`](crate::ProviderRegistry::with_store).
    fn share_circuit(&self, provider: &str, circuit: &CircuitHandle) {
        let _ = (provider, circuit);
    }

    // ===== the pinned level =====

    /// Tells the other replicas that the degradation level was pinned (`Some`) or
    /// released (`None`) here.
    fn publish_pin(&self, level: Option<&str>) {
        let _ = level;
    }

    /// Registers how to apply a pin or release learned from another replica (and, after
    /// the store (re)connects, the pin it holds).
    fn on_remote_pin(&self, apply: ApplyPin) {
        let _ = apply;
    }

    // ===== the response cache's second tier =====

    /// The entry stored under `key` by any replica, if there is one and the store answers
    /// in time.
    fn cache_get(&self, key: &[u8; 32]) -> StoreFuture<Option<Vec<u8>>> {
        let _ = key;
        Box::pin(std::future::ready(None))
    }

    /// Stores `value` under `key` for `ttl`, in the background.
    fn cache_put(&self, key: &[u8; 32], value: Vec<u8>, ttl: Duration) {
        let _ = (key, value, ttl);
    }

    // ===== rate limits =====

    /// Reserves up to `want` units of the quota named `key` (at most `limit` units in any
    /// `window`), atomically across replicas: resolves to how many were granted (0 when
    /// the window is full).
    ///
    /// # Errors
    ///
    /// [`StoreUnavailable`] when the store is not shared, down or too slow: the caller
    /// counts locally instead.
    fn reserve(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
        want: u64,
    ) -> StoreFuture<Result<u64, StoreUnavailable>> {
        let _ = (key, limit, window, want);
        Box::pin(std::future::ready(Err(StoreUnavailable::new(
            "the store is not shared",
        ))))
    }

    /// Counts `amount` units of the quota named `key` used without a reservation (tokens
    /// beyond an estimate), in the background.
    fn charge(&self, key: &str, window: Duration, amount: u64) {
        let _ = (key, window, amount);
    }
}

/// The default store: nothing is shared, everything is the process's own.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryStore;

impl StateStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }
}

/// A shared store could not answer (it is down, too slow, or not shared at all).
#[derive(Debug, Clone)]
pub struct StoreUnavailable {
    reason: Arc<str>,
}

impl StoreUnavailable {
    /// An error saying why.
    pub fn new(reason: impl Into<Arc<str>>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for StoreUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "state store unavailable: {}", self.reason)
    }
}

impl std::error::Error for StoreUnavailable {}
