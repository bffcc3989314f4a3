//! A provider's service instances: an attempt reuses one that has made a call instead of
//! cloning the provider's stack again, and never one that failed readiness or still holds
//! what its readiness reserved.
#![allow(missing_docs)]

use std::future::Future;
use std::future::{Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use brace_failover::{FailoverService, Provider};
use tower::{Service, ServiceExt};

/// What a test sets on the provider and reads back from it, shared by all its instances.
#[derive(Debug, Default)]
struct Dials {
    clones: AtomicUsize,
    /// Instances that were dropped holding a reservation.
    leaked: AtomicUsize,
    fail_ready_once: AtomicBool,
    pending: AtomicBool,
}

/// Counts its clones; its readiness can be made to fail once, or to stay pending.
#[derive(Debug)]
struct Counted {
    dials: Arc<Dials>,
    /// Readiness reserved and not yet consumed by a call (as a permit would be).
    reserved: bool,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.dials.clones.fetch_add(1, Ordering::SeqCst);
        Self {
            dials: self.dials.clone(),
            reserved: false,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.reserved {
            self.dials.leaked.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Service<u32> for Counted {
    type Response = u32;
    type Error = std::io::Error;
    type Future = Ready<Result<u32, std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.dials.fail_ready_once.swap(false, Ordering::SeqCst) {
            return Poll::Ready(Err(std::io::Error::other("closed")));
        }
        if self.dials.pending.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        self.reserved = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u32) -> Self::Future {
        assert!(self.reserved, "called without readiness");
        self.reserved = false;
        ready(Ok(request * 2))
    }
}

/// A failover over one counted provider, and the provider's dials.
fn failover() -> (FailoverService<Counted>, Arc<Dials>) {
    let dials = Arc::new(Dials::default());
    let provider = Counted {
        dials: dials.clone(),
        reserved: false,
    };
    let service = FailoverService::builder()
        .provider(Provider::new("only", provider))
        .build()
        .expect("a failover service");
    (service, dials)
}

/// Polls `call` once, without a task to wake.
fn poll_once<F: Future>(call: Pin<&mut F>) -> Poll<F::Output> {
    call.poll(&mut Context::from_waker(Waker::noop()))
}

async fn ask(service: &mut FailoverService<Counted>, n: u32) -> u32 {
    service
        .ready()
        .await
        .expect("ready")
        .call(n)
        .await
        .expect("an answer")
}

#[tokio::test]
async fn sequential_attempts_reuse_one_instance() {
    let (mut service, dials) = failover();
    for n in 0..50 {
        assert_eq!(ask(&mut service, n).await, n * 2);
    }
    // Without reuse every attempt cloned the provider's service: 50 clones.
    assert_eq!(dials.clones.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_instance_that_failed_readiness_is_not_reused() {
    let (mut service, dials) = failover();
    assert_eq!(ask(&mut service, 1).await, 2);
    dials.fail_ready_once.store(true, Ordering::SeqCst);
    let failed = service.ready().await.expect("ready").call(2).await;
    assert!(failed.is_err(), "the only provider failed readiness");
    // The failed instance is gone: the next attempt clones a fresh one.
    assert_eq!(ask(&mut service, 3).await, 6);
    assert_eq!(dials.clones.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_attempt_dropped_before_its_call_gives_nothing_back() {
    let (mut service, dials) = failover();
    assert_eq!(ask(&mut service, 1).await, 2);
    // The kept instance is taken by an attempt that never gets ready, then dropped.
    dials.pending.store(true, Ordering::SeqCst);
    let mut waiting = Box::pin(service.ready().await.expect("ready").call(2));
    assert!(poll_once(waiting.as_mut()).is_pending());
    drop(waiting);
    dials.pending.store(false, Ordering::SeqCst);
    assert_eq!(ask(&mut service, 3).await, 6);
    assert_eq!(
        dials.clones.load(Ordering::SeqCst),
        2,
        "the dropped attempt's instance was not kept"
    );
    assert_eq!(dials.leaked.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn concurrent_attempts_each_get_their_own_instance_and_a_few_are_kept() {
    let (mut service, dials) = failover();
    // Twenty attempts waiting for readiness at once: each holds an instance of its own.
    dials.pending.store(true, Ordering::SeqCst);
    let mut waiting: Vec<_> = (0..20).map(|n| Box::pin(service.call(n))).collect();
    for call in &mut waiting {
        assert!(poll_once(call.as_mut()).is_pending());
    }
    assert_eq!(dials.clones.load(Ordering::SeqCst), 20);
    dials.pending.store(false, Ordering::SeqCst);
    for (n, call) in (0..).zip(&mut waiting) {
        let Poll::Ready(answer) = poll_once(call.as_mut()) else {
            panic!("attempt {n} is still waiting");
        };
        assert_eq!(answer.expect("an answer"), n * 2);
    }
    drop(waiting);
    // The twenty were given back, eight kept: the next eight sequential attempts clone
    // nothing, and none of the instances dropped held a reservation.
    for n in 0..8 {
        assert_eq!(ask(&mut service, n).await, n * 2);
    }
    assert_eq!(dials.clones.load(Ordering::SeqCst), 20);
    assert_eq!(dials.leaked.load(Ordering::SeqCst), 0);
}
