//! The response cache: bounded by entries and bytes, with a time to live.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use brace_core::clock;
use brace_core::degrade::Degradable;
use tokio::time::Instant;

use crate::config::CacheConfig;

/// A cache key: the blake3 hash of a request's canonical form
/// ([`Degradable::write_cache_key`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The key of `request`, or `None` if its canonical form could not be written.
    pub fn of<R: Degradable + ?Sized>(request: &R) -> Option<Self> {
        let mut hasher = blake3::Hasher::new();
        request.write_cache_key(&mut hasher).ok()?;
        Some(Self(*hasher.finalize().as_bytes()))
    }

    /// The hash's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CacheKey(")?;
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…)")
    }
}

struct Entry<V> {
    value: V,
    weight: u32,
    expires: Instant,
}

/// A bounded, concurrent cache of complete responses (moka underneath).
///
/// Bounds: at most `max_bytes` of responses (each weighed by
/// [`DegradeResponse::cached_size`](brace_core::degrade::DegradeResponse::cached_size)), and
/// at most `max_entries` entries — every entry weighs at least `max_bytes / max_entries`, so
/// both bounds hold with one weigher. An entry expires `ttl` after it was stored, measured on
/// tokio's clock (so paused-time tests see it expire); moka also drops it on its own clock.
/// When full, moka's TinyLFU policy decides between a new entry and old ones, so a
/// one-off response may be refused rather than evict a popular one.
///
/// # Clone
///
/// Clones share the same entries.
pub struct ResponseCache<V> {
    inner: moka::sync::Cache<CacheKey, Arc<Entry<V>>>,
    ttl: Duration,
    max_bytes: u64,
    floor: u64,
}

impl<V> Clone for ResponseCache<V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            ttl: self.ttl,
            max_bytes: self.max_bytes,
            floor: self.floor,
        }
    }
}

impl<V> fmt::Debug for ResponseCache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCache")
            .field("entries", &self.inner.entry_count())
            .field("bytes", &self.inner.weighted_size())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<V: Send + Sync + 'static> ResponseCache<V> {
    /// A cache with the bounds in `config` (its `admit` rule is not looked at).
    pub fn new(config: &CacheConfig) -> Self {
        let max_bytes = config.max_bytes.max(1);
        let floor = (max_bytes / config.max_entries.max(1)).max(1);
        let ttl = config.ttl.max(Duration::from_millis(1));
        let inner = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &CacheKey, entry: &Arc<Entry<V>>| entry.weight)
            .time_to_live(ttl)
            .build();
        Self {
            inner,
            ttl,
            max_bytes,
            floor,
        }
    }

    /// How long an entry is served after it was stored.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// `true` if a value of `size` bytes may be stored (it is not heavier than the whole
    /// cache).
    pub fn admits_size(&self, size: usize) -> bool {
        (size as u64).max(self.floor) <= self.max_bytes
    }

    /// Stores `value`, which weighs `size` bytes, under `key`. A value heavier than the
    /// whole cache is not stored.
    pub fn insert(&self, key: CacheKey, value: V, size: usize) {
        let size = (size as u64).max(self.floor);
        if size > self.max_bytes {
            return;
        }
        let entry = Entry {
            value,
            weight: u32::try_from(size).unwrap_or(u32::MAX),
            expires: clock::now() + self.ttl,
        };
        self.inner.insert(key, Arc::new(entry));
    }

    /// The value stored under `key`, unless it has expired, passed to `f`.
    pub fn get_with<T>(&self, key: &CacheKey, f: impl FnOnce(&V) -> T) -> Option<T> {
        let entry = self.inner.get(key)?;
        if clock::now() >= entry.expires {
            self.inner.invalidate(key);
            return None;
        }
        Some(f(&entry.value))
    }

    /// `true` if a live entry is stored under `key`.
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.get_with(key, |_| ()).is_some()
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.inner.invalidate_all();
    }

    /// The number of entries (approximate until [`sync`](Self::sync) has run).
    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }

    /// The weight of all entries in bytes, each counted at least `max_bytes / max_entries`
    /// (approximate until [`sync`](Self::sync) has run).
    pub fn weighted_size(&self) -> u64 {
        self.inner.weighted_size()
    }

    /// Runs the cache's pending maintenance (evictions, counts) now.
    pub fn sync(&self) {
        self.inner.run_pending_tasks();
    }
}

/// What a [`CacheTier`] lookup returns.
pub type TierFuture<V> = Pin<Box<dyn Future<Output = Option<V>> + Send + 'static>>;

/// A second cache tier behind the in-process [`ResponseCache`] — typically one shared by
/// several replicas (brace-redis keeps one in Redis), so that an answer stored by one serves
/// the others.
///
/// The layer uses it with the same key, the same admission rule and the same time to live
/// as the in-process cache: every response stored locally is also handed to
/// [`put`](Self::put) (a value heavier than the whole local cache goes to neither), and a
/// cached level that misses locally asks [`get`](Self::get) before falling to the next
/// level; a hit is stored locally too.
///
/// A tier never fails a request: `get` bounds its own wait and answers `None` when it has
/// nothing in time (or is down), and `put` works in the background.
pub trait CacheTier<V>: Send + Sync + 'static {
    /// The value stored under `key`, if the tier has one and answers in time.
    fn get(&self, key: &CacheKey) -> TierFuture<V>;

    /// Stores `value` under `key` for `ttl`, without waiting.
    fn put(&self, key: &CacheKey, value: &V, ttl: Duration);
}
