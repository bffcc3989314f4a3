//! Outbound rate limits: the in-memory window, and batched reservations from a shared store
//! (a test double counting what every limiter reserved).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use brace_failover::store::StoreFuture;
use brace_failover::{
    Acquired, MemoryStore, QuotaKind, RateLimit, RateLimiter, StateStore, StoreUnavailable,
};
use tokio::time::advance;

fn rpm(limit: u64) -> RateLimit {
    RateLimit {
        requests_per_minute: Some(limit),
        tokens_per_minute: None,
    }
}

async fn acquire(
    limiter: &RateLimiter,
    tokens: u64,
) -> Result<brace_failover::QuotaPermit, QuotaKind> {
    match limiter.try_acquire(tokens) {
        Acquired::Granted(permit) => Ok(permit),
        Acquired::Refused(err) => Err(err.kind()),
        Acquired::Wait(future) => future.await.map_err(|err| err.kind()),
    }
}

#[tokio::test(start_paused = true)]
async fn memory_window_refuses_past_the_limit_until_a_minute_has_passed() {
    let limiter = RateLimiter::new("p", rpm(3), Arc::new(MemoryStore));
    for _ in 0..3 {
        assert!(matches!(limiter.try_acquire(0), Acquired::Granted(_)));
    }
    advance(Duration::from_secs(30)).await;
    match limiter.try_acquire(0) {
        Acquired::Refused(err) => {
            assert_eq!(err.kind(), QuotaKind::Requests);
            assert_eq!(
                err.to_string(),
                "provider `p` is at its requests_per_minute quota"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // 60 s after the first three, their second is still in the (strict) window.
    advance(Duration::from_secs(30)).await;
    assert!(matches!(limiter.try_acquire(0), Acquired::Refused(_)));
    advance(Duration::from_secs(1)).await;
    assert!(matches!(limiter.try_acquire(0), Acquired::Granted(_)));
}

#[tokio::test(start_paused = true)]
async fn tokens_are_reserved_by_estimate_and_settled_by_usage() {
    let quota = RateLimit {
        requests_per_minute: None,
        tokens_per_minute: Some(100),
    };
    let limiter = RateLimiter::new("p", quota, Arc::new(MemoryStore));
    let first = acquire(&limiter, 60).await.unwrap();
    assert_eq!(acquire(&limiter, 60).await.unwrap_err(), QuotaKind::Tokens);
    // The first call used 10: 50 go back, and 60 fit again.
    first.settle(10);
    let second = acquire(&limiter, 60).await.unwrap();
    // It used 90 (30 more than estimated): the window is now over-full.
    second.settle(90);
    assert_eq!(acquire(&limiter, 1).await.unwrap_err(), QuotaKind::Tokens);
}

#[test]
fn quotas_must_name_a_positive_limit() {
    assert!(RateLimit::default().validate().is_err());
    assert!(rpm(0).validate().is_err());
    assert!(rpm(1).validate().is_ok());
}

/// A shared store whose one window is a plain counter: it grants what fits under the limit.
#[derive(Debug, Default)]
struct CountingStore {
    used: AtomicU64,
    reservations: AtomicU64,
    charged: AtomicU64,
    down: AtomicBool,
}

impl StateStore for CountingStore {
    fn kind(&self) -> &'static str {
        "counting"
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn reserve(
        &self,
        _key: &str,
        limit: u64,
        window: Duration,
        want: u64,
    ) -> StoreFuture<Result<u64, StoreUnavailable>> {
        assert_eq!(
            window,
            Duration::from_secs(62),
            "the minute plus the allowance's life"
        );
        if self.down.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(StoreUnavailable::new("down"))));
        }
        self.reservations.fetch_add(1, Ordering::SeqCst);
        let used = self.used.load(Ordering::SeqCst);
        let granted = want.min(limit.saturating_sub(used));
        self.used.fetch_add(granted, Ordering::SeqCst);
        Box::pin(std::future::ready(Ok(granted)))
    }

    fn charge(&self, _key: &str, _window: Duration, amount: u64) {
        self.charged.fetch_add(amount, Ordering::SeqCst);
        self.used.fetch_add(amount, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn shared_quota_is_reserved_in_batches_and_never_exceeded_by_all_replicas_together() {
    let store = Arc::new(CountingStore::default());
    // 600 per minute: batches of 10.
    let replicas: Vec<_> = (0..3)
        .map(|_| RateLimiter::new("p", rpm(600), store.clone()))
        .collect();
    // The first call of a replica waits for its first batch; the next ones do not.
    assert!(matches!(replicas[0].try_acquire(0), Acquired::Wait(_)));
    let mut granted = 0;
    let mut waited = 0;
    for round in 0..400 {
        let limiter = &replicas[round % 3];
        match limiter.try_acquire(0) {
            Acquired::Granted(_) => granted += 1,
            Acquired::Refused(_) => {}
            Acquired::Wait(future) => {
                waited += 1;
                if future.await.is_ok() {
                    granted += 1;
                }
            }
        }
        // Let background refills run.
        tokio::task::yield_now().await;
    }
    assert_eq!(granted, 400);
    assert!(
        store.reservations.load(Ordering::SeqCst) < 400 / 5,
        "reserved in batches: {} reservations",
        store.reservations.load(Ordering::SeqCst)
    );
    assert!(waited < 400 / 5, "{waited} calls waited");

    // Past the limit, every replica refuses, and all of them together sent at most 600.
    let mut more = 0;
    for round in 0..600 {
        if acquire(&replicas[round % 3], 0).await.is_ok() {
            more += 1;
        }
        tokio::task::yield_now().await;
    }
    assert!(granted + more <= 600, "{} granted", granted + more);
    assert!(store.used.load(Ordering::SeqCst) <= 600);
    assert!(acquire(&replicas[1], 0).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_shared_store_that_fails_leaves_the_count_to_the_local_window() {
    let store = Arc::new(CountingStore::default());
    store.down.store(true, Ordering::SeqCst);
    let limiter = RateLimiter::new("p", rpm(2), store.clone());
    assert!(acquire(&limiter, 0).await.is_ok());
    assert!(acquire(&limiter, 0).await.is_ok());
    assert_eq!(acquire(&limiter, 0).await.unwrap_err(), QuotaKind::Requests);
    assert_eq!(store.reservations.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn unused_allowance_lapses() {
    let store = Arc::new(CountingStore::default());
    // 120 per minute: batches of 2.
    let limiter = RateLimiter::new("p", rpm(120), store.clone());
    assert!(acquire(&limiter, 0).await.is_ok());
    tokio::task::yield_now().await;
    let before = store.reservations.load(Ordering::SeqCst);
    assert!(matches!(limiter.try_acquire(0), Acquired::Granted(_)));
    // The background refill runs now, before the clock moves.
    tokio::task::yield_now().await;
    advance(brace_failover::quota::ALLOWANCE_TTL).await;
    tokio::task::yield_now().await;
    // Whatever was left has lapsed: the next call reserves again.
    assert!(matches!(limiter.try_acquire(0), Acquired::Wait(_)));
    assert!(store.reservations.load(Ordering::SeqCst) >= before);
}

#[tokio::test(start_paused = true)]
async fn tokens_beyond_the_estimate_come_from_the_allowance_before_the_store() {
    let store = Arc::new(CountingStore::default());
    // 6000 tokens per minute: batches of 100.
    let quota = RateLimit {
        requests_per_minute: None,
        tokens_per_minute: Some(6_000),
    };
    let limiter = RateLimiter::new("p", quota, store.clone());
    let first = acquire(&limiter, 10).await.unwrap();
    // 40 more than estimated: the allowance (90 left) covers it, nothing goes to the store.
    first.settle(50);
    assert_eq!(store.charged.load(Ordering::SeqCst), 0);
    // 500 more: the allowance covers 50, the store is charged the rest.
    let second = acquire(&limiter, 10).await.unwrap();
    second.settle(510);
    assert!(store.charged.load(Ordering::SeqCst) >= 400, "{store:?}");
}
