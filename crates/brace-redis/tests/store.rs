//! The Redis store on its own: what it does without Redis (fail open), and with one (set
//! `BRACE_REDIS_URL`; `.ci/run` does) two stores standing for two replicas.

use std::sync::Arc;
use std::time::Duration;

use brace_circuit::{Admission, CircuitBreakerLayer, CircuitHandle, CircuitState};
use brace_failover::StateStore;
use brace_redis::{RedisConfig, RedisStore};

fn breaker(name: &str) -> CircuitHandle {
    CircuitBreakerLayer::builder(name)
        .consecutive_failures(1)
        .wait_in_open(Duration::from_millis(200))
        .build()
        .unwrap()
        .handle()
}

#[test]
fn a_bad_url_is_an_error_that_never_shows_the_password() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let err = RedisStore::connect(RedisConfig::new("nonsense://:pw-secret@h")).unwrap_err();
    assert!(!err.to_string().contains("pw-secret"), "{err}");
    assert!(err.to_string().contains("***"), "{err}");
}

#[test]
fn outside_a_runtime_it_says_it_needs_one() {
    let err = RedisStore::connect(RedisConfig::new("redis://127.0.0.1:1")).unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

#[tokio::test]
async fn without_redis_the_store_is_down_and_everything_is_local() {
    // Nothing listens on port 1.
    let store = RedisStore::connect(
        RedisConfig::new("redis://:pw@127.0.0.1:1").reconnect_delay(Duration::from_millis(10)),
    )
    .unwrap();
    assert!(!store.wait_up(Duration::from_millis(100)).await);
    assert!(!store.is_up());
    assert!(!format!("{store:?}").contains(":pw@"));
    assert!(
        store
            .reserve("k", 10, Duration::from_mins(1), 1)
            .await
            .is_err()
    );
    assert!(store.cache_get(&[0; 32]).await.is_none());
    // A circuit shared through a store that is down decides alone: no lease is needed.
    let circuit = breaker("alone");
    store.share_circuit("alone", &circuit);
    circuit.apply_remote(CircuitState::Open, Some(Duration::ZERO));
    assert!(matches!(circuit.admission(), Admission::Trial));
    assert!(circuit.try_half_open());
}

fn redis_url() -> Option<String> {
    let url = std::env::var("BRACE_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!(
            "skipped: BRACE_REDIS_URL is not set (.ci/run starts a redis-server and sets it)"
        );
    }
    url
}

async fn pair(url: &str) -> (RedisStore, RedisStore) {
    let prefix = format!("test:store:{:08x}:", fastrand::u32(..));
    let make = || RedisStore::connect(RedisConfig::new(url).key_prefix(prefix.clone())).unwrap();
    let (a, b) = (make(), make());
    assert!(a.wait_up(Duration::from_secs(10)).await && b.wait_up(Duration::from_secs(10)).await);
    assert_ne!(a.replica_id(), b.replica_id());
    (a, b)
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..2_000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{what}: not within 10 s");
}

#[tokio::test]
async fn two_replicas_share_quota_cache_pin_and_circuits() {
    let Some(url) = redis_url() else { return };
    let (a, b) = pair(&url).await;

    // Quota: reservations from both never exceed the limit.
    let window = Duration::from_secs(62);
    let mut granted = 0;
    for _ in 0..10 {
        granted += a.reserve("p:rpm", 7, window, 2).await.unwrap();
        granted += b.reserve("p:rpm", 7, window, 2).await.unwrap();
    }
    assert_eq!(granted, 7);
    b.charge("p:rpm", window, 5);

    // Cache: what one stores, the other reads.
    a.cache_put(&[7; 32], b"answer".to_vec(), Duration::from_mins(1));
    let mut found = None;
    for _ in 0..200 {
        found = b.cache_get(&[7; 32]).await;
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(found.as_deref(), Some(&b"answer"[..]));

    // Pin: published by one, applied by the other.
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let sink = seen.clone();
    b.on_remote_pin(Arc::new(move |level: Option<&str>| {
        sink.lock().push(level.map(str::to_owned));
    }));
    a.publish_pin(Some("cached"));
    eventually("B learns the pin", || {
        seen.lock().last() == Some(&Some("cached".to_owned()))
    })
    .await;

    // Circuits: forced states and closes travel both ways.
    let (ca, cb) = (breaker("p"), breaker("p"));
    a.share_circuit("p", &ca);
    b.share_circuit("p", &cb);
    let mut seen_by_b = cb.subscribe();
    let sent = tokio::time::Instant::now();
    ca.force_open();
    let event = tokio::time::timeout(Duration::from_secs(10), seen_by_b.recv())
        .await
        .expect("B learns A's forced open")
        .unwrap();
    assert!(event.is_remote());
    eprintln!("A's transition reached B's breaker in {:?}", sent.elapsed());
    assert_eq!(cb.state(), CircuitState::ForcedOpen);
    cb.force_closed();
    eventually("A is closed too", || ca.state() == CircuitState::Closed).await;

    // An open decided by calls is shared with its wait.
    let opened = CircuitBreakerLayer::builder("q")
        .consecutive_failures(1)
        .wait_in_open(Duration::from_millis(200))
        .build()
        .unwrap();
    let (qa, qb) = (opened.handle(), breaker("q"));
    a.share_circuit("q", &qa);
    b.share_circuit("q", &qb);
    let mut service = tower::Layer::layer(
        &opened,
        tower::service_fn(|(): ()| async { Err::<(), _>(std::io::Error::other("down")) }),
    );
    let _ = tower::ServiceExt::oneshot(&mut service, ()).await;
    assert_eq!(qa.state(), CircuitState::Open);
    eventually("B sees q open", || qb.state() == CircuitState::Open).await;
    // After the wait both ask to trial: exactly one gets the lease and goes half-open.
    eventually("one replica holds the lease and trials", || {
        let _ = (qa.admission(), qb.admission());
        qa.state() == CircuitState::HalfOpen || qb.state() == CircuitState::HalfOpen
    })
    .await;
    for _ in 0..20 {
        let _ = (qa.admission(), qb.admission());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let half_open = [&qa, &qb]
        .iter()
        .filter(|c| c.state() == CircuitState::HalfOpen)
        .count();
    assert_eq!(half_open, 1);
}
