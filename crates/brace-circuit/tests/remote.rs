//! The hooks a shared state store uses: transitions that say their wait and whether they
//! were applied from elsewhere, `apply_remote`, and the half-open gate.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use brace_circuit::{Admission, CircuitBreakerLayer, CircuitOpen, CircuitState};
use common::{Call, Harness, judged};
use tokio::time::advance;

const SECOND: Duration = Duration::from_secs(1);

fn harness() -> Harness {
    Harness::new(&judged(
        CircuitBreakerLayer::builder("remote")
            .consecutive_failures(2)
            .wait_in_open(10 * SECOND)
            .permitted_calls_in_half_open(1),
    ))
}

#[tokio::test(start_paused = true)]
async fn local_open_says_its_wait_and_is_not_remote() {
    let mut h = harness();
    let mut events = h.handle.subscribe();
    h.calls(2, || Call::Fail).await;
    let event = events.try_recv().unwrap();
    assert_eq!(event.to(), CircuitState::Open);
    assert_eq!(event.wait(), Some(10 * SECOND));
    assert!(!event.is_remote());
}

#[tokio::test(start_paused = true)]
async fn remote_open_refuses_calls_for_the_remote_wait_then_lets_a_trial_through() {
    let mut h = harness();
    let mut events = h.handle.subscribe();
    assert!(h.handle.apply_remote(CircuitState::Open, Some(3 * SECOND)));
    let event = events.try_recv().unwrap();
    assert_eq!(
        (event.from(), event.to()),
        (CircuitState::Closed, CircuitState::Open)
    );
    assert!(event.is_remote());
    assert_eq!(event.wait(), Some(3 * SECOND));

    let err = h.call(Call::Ok).await.unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().unwrap();
    assert_eq!(open.retry_after(), Some(3 * SECOND));
    assert_eq!(h.inner_calls(), 0);

    advance(3 * SECOND).await;
    h.call(Call::Ok).await.unwrap();
    assert_eq!(h.inner_calls(), 1);
    // One permitted trial succeeded: closed.
    assert_eq!(h.handle.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn remote_open_on_an_open_breaker_takes_the_new_wait_without_an_event() {
    let mut h = harness();
    h.calls(2, || Call::Fail).await;
    let mut events = h.handle.subscribe();
    advance(8 * SECOND).await;
    assert!(h.handle.apply_remote(CircuitState::Open, Some(5 * SECOND)));
    assert!(events.try_recv().is_err());
    match h.handle.admission() {
        Admission::Reject(open) => assert_eq!(open.retry_after(), Some(5 * SECOND)),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn remote_closed_and_forced_states_apply_and_half_open_never_does() {
    let mut h = harness();
    h.calls(2, || Call::Fail).await;
    assert!(!h.handle.apply_remote(CircuitState::HalfOpen, None));
    assert_eq!(h.handle.state(), CircuitState::Open);

    let mut events = h.handle.subscribe();
    assert!(h.handle.apply_remote(CircuitState::Closed, None));
    assert_eq!(h.handle.state(), CircuitState::Closed);
    assert!(events.try_recv().unwrap().is_remote());
    h.call(Call::Ok).await.unwrap();

    assert!(h.handle.apply_remote(CircuitState::ForcedOpen, None));
    assert_eq!(h.handle.state(), CircuitState::ForcedOpen);
    assert!(!h.handle.apply_remote(CircuitState::ForcedOpen, None));
    assert!(h.handle.apply_remote(CircuitState::Disabled, None));
    assert_eq!(h.handle.state(), CircuitState::Disabled);
}

#[tokio::test(start_paused = true)]
async fn a_gate_keeps_an_open_breaker_open_past_its_wait_until_it_allows() {
    let mut h = harness();
    let allow = Arc::new(AtomicBool::new(false));
    let asked = Arc::new(AtomicUsize::new(0));
    {
        let allow = allow.clone();
        let asked = asked.clone();
        let gate = move |name: &str| {
            assert_eq!(name, "remote");
            asked.fetch_add(1, Ordering::SeqCst);
            allow.load(Ordering::SeqCst)
        };
        assert!(h.handle.set_half_open_gate(Arc::new(gate)));
    }
    assert!(!h.handle.set_half_open_gate(Arc::new(|_: &str| true)));

    h.calls(2, || Call::Fail).await;
    // During the wait the gate is not asked.
    assert!(h.call(Call::Ok).await.is_err());
    assert_eq!(asked.load(Ordering::SeqCst), 0);

    advance(10 * SECOND).await;
    // The wait is over, the gate says no: still refused, with no retry-after, and failover
    // would skip it.
    assert!(matches!(h.handle.admission(), Admission::Reject(_)));
    let err = h.call(Call::Ok).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<CircuitOpen>().unwrap().retry_after(),
        None
    );
    assert!(!h.handle.try_half_open());
    assert_eq!(h.handle.state(), CircuitState::Open);
    assert_eq!(h.inner_calls(), 2);

    allow.store(true, Ordering::SeqCst);
    assert!(matches!(h.handle.admission(), Admission::Trial));
    assert!(h.handle.try_half_open());
    assert_eq!(h.handle.state(), CircuitState::HalfOpen);
    h.call(Call::Ok).await.unwrap();
    assert_eq!(h.handle.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_gate_holds_the_automatic_transition_too() {
    let layer = CircuitBreakerLayer::builder("auto")
        .consecutive_failures(1)
        .wait_in_open(SECOND)
        .automatic_transition(true);
    let mut h = Harness::new(&judged(layer));
    h.handle.set_half_open_gate(Arc::new(|_: &str| false));
    h.calls(1, || Call::Fail).await;
    advance(2 * SECOND).await;
    tokio::task::yield_now().await;
    assert_eq!(h.handle.state(), CircuitState::Open);
}
