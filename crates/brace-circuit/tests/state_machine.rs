//! The scenarios of resilience4j's `CircuitBreakerStateMachineTest`, on paused tokio time.

mod common;

use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use brace_circuit::{
    CircuitBreakerBuilder, CircuitBreakerLayer, CircuitOpen, CircuitState, SlidingWindow,
    StateTransition,
};
use brace_core::BoxError;
use common::{Call, Harness, judged};
use tokio::sync::oneshot;
use tokio::time::{Instant, advance};
use tower::{Service, ServiceExt};

const SECOND: Duration = Duration::from_secs(1);

/// A count window of 5 calls, 3 of which are needed, 50 % failure threshold, 5 s in open
/// state and 2 trial calls.
fn builder() -> CircuitBreakerBuilder {
    CircuitBreakerLayer::builder("test")
        .sliding_window(SlidingWindow::Count(5))
        .minimum_calls(3)
        .failure_rate_threshold(50.0)
        .slow_call_duration(SECOND)
        .wait_in_open(5 * SECOND)
        .permitted_calls_in_half_open(2)
}

fn harness(builder: CircuitBreakerBuilder) -> Harness {
    Harness::new(&judged(builder))
}

fn open_error(result: Result<(), BoxError>) -> CircuitOpen {
    let err = result.expect_err("expected the call to be rejected");
    err.downcast_ref::<CircuitOpen>()
        .unwrap_or_else(|| panic!("expected CircuitOpen, got {err}"))
        .clone()
}

/// Records every transition the callback sees as `(from, to)`.
type Seen = Arc<Mutex<Vec<(CircuitState, CircuitState)>>>;

fn recording(builder: CircuitBreakerBuilder) -> (CircuitBreakerBuilder, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let builder = builder.on_transition(move |event: &StateTransition| {
        sink.lock().unwrap().push((event.from(), event.to()));
    });
    (builder, seen)
}

async fn trip(h: &mut Harness) {
    h.calls(3, || Call::Fail).await;
    assert_eq!(h.handle.state(), CircuitState::Open);
}

// ===== closed state, windows, thresholds =====

#[tokio::test(start_paused = true)]
async fn closed_breaker_passes_calls_and_records_their_outcomes() {
    let mut h = harness(builder());
    h.call(Call::Ok).await.unwrap();
    let err = h.call(Call::Fail).await.unwrap_err();
    assert!(err.is::<common::TestError>());
    let metrics = h.handle.metrics();
    assert_eq!(metrics.state, CircuitState::Closed);
    assert_eq!(metrics.buffered_calls, 2);
    assert_eq!(metrics.failed_calls, 1);
    assert_eq!(metrics.failure_rate, None, "below minimum_calls");
    assert_eq!(h.inner_calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn does_not_open_before_minimum_calls_are_recorded() {
    let mut h = harness(builder().minimum_calls(4));
    h.calls(3, || Call::Fail).await;
    assert_eq!(h.handle.state(), CircuitState::Closed);
    h.call(Call::Fail).await.unwrap_err();
    assert_eq!(h.handle.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn opens_when_failure_rate_reaches_threshold() {
    let mut h = harness(builder().minimum_calls(4));
    h.calls(2, || Call::Ok).await;
    h.call(Call::Fail).await.unwrap_err();
    assert_eq!(h.handle.state(), CircuitState::Closed);
    h.call(Call::Fail).await.unwrap_err();
    let metrics = h.handle.metrics();
    assert_eq!(metrics.state, CircuitState::Open);
    assert_eq!(metrics.failure_rate, Some(50.0));
    assert_eq!(metrics.buffered_calls, 4);
}

#[tokio::test(start_paused = true)]
async fn stays_closed_below_failure_rate_threshold() {
    let mut h = harness(builder());
    for _ in 0..10 {
        h.calls(3, || Call::Ok).await;
        h.call(Call::Fail).await.unwrap_err();
        h.call(Call::Ok).await.unwrap();
    }
    let metrics = h.handle.metrics();
    assert_eq!(metrics.state, CircuitState::Closed);
    assert!(metrics.failure_rate.unwrap() < 50.0);
}

#[tokio::test(start_paused = true)]
async fn count_window_forgets_calls_older_than_its_size() {
    let mut h = harness(builder().minimum_calls(5).failure_rate_threshold(60.0));
    h.calls(2, || Call::Fail).await;
    h.calls(5, || Call::Ok).await;
    h.calls(2, || Call::Fail).await;
    // Only the last five calls count: 2 failures of 5 is 40 %.
    let metrics = h.handle.metrics();
    assert_eq!((metrics.buffered_calls, metrics.failed_calls), (5, 2));
    assert_eq!(metrics.state, CircuitState::Closed);
    h.call(Call::Fail).await.unwrap_err();
    assert_eq!(h.handle.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn minimum_calls_is_capped_at_the_count_window_size() {
    let mut h = harness(
        builder()
            .sliding_window(SlidingWindow::Count(3))
            .minimum_calls(100),
    );
    h.calls(3, || Call::Fail).await;
    assert_eq!(h.handle.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn time_window_opens_on_failures_within_the_window() {
    let mut h = harness(builder().sliding_window(SlidingWindow::Time(10)));
    for _ in 0..2 {
        h.call(Call::Fail).await.unwrap_err();
        advance(3 * SECOND).await;
    }
    assert_eq!(h.handle.state(), CircuitState::Closed);
    h.call(Call::Fail).await.unwrap_err();
    assert_eq!(h.handle.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_failures_older_than_the_window() {
    let mut h = harness(builder().sliding_window(SlidingWindow::Time(10)));
    h.calls(2, || Call::Fail).await;
    advance(11 * SECOND).await;
    assert_eq!(h.handle.metrics().buffered_calls, 0);
    h.call(Call::Fail).await.unwrap_err();
    let metrics = h.handle.metrics();
    assert_eq!(metrics.state, CircuitState::Closed);
    assert_eq!(metrics.buffered_calls, 1);
    h.calls(2, || Call::Fail).await;
    assert_eq!(h.handle.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn time_window_needs_minimum_calls_however_long_the_window() {
    let mut h = harness(
        builder()
            .sliding_window(SlidingWindow::Time(2))
            .minimum_calls(10),
    );
    // Never more than two calls in any two-second window.
    for _ in 0..20 {
        h.call(Call::Fail).await.unwrap_err();
        advance(SECOND).await;
    }
    assert_eq!(h.handle.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn opens_when_slow_call_rate_reaches_threshold() {
    let mut h = harness(builder().slow_call_rate_threshold(50.0));
    h.call(Call::Ok).await.unwrap();
    h.call(Call::Slow(2 * SECOND)).await.unwrap();
    assert_eq!(h.handle.state(), CircuitState::Closed);
    h.call(Call::Slow(2 * SECOND)).await.unwrap();
    let metrics = h.handle.metrics();
    assert_eq!(metrics.state, CircuitState::Open);
    assert_eq!((metrics.slow_calls, metrics.failed_calls), (2, 0));
    assert!(metrics.slow_call_rate.unwrap() >= 50.0);
}

#[tokio::test(start_paused = true)]
async fn a_call_exactly_at_the_slow_duration_is_not_slow() {
    let mut h = harness(builder().slow_call_rate_threshold(50.0));
    h.calls(3, || Call::Slow(SECOND)).await;
    let metrics = h.handle.metrics();
    assert_eq!(metrics.slow_calls, 0);
    assert_eq!(metrics.state, CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn slow_failures_count_as_both_slow_and_failed() {
    let mut h = harness(builder().failure_rate_threshold(100.0));
    h.call(Call::Ok).await.unwrap();
    h.call(Call::SlowFail(2 * SECOND)).await.unwrap_err();
    let metrics = h.handle.metrics();
    assert_eq!((metrics.slow_calls, metrics.failed_calls), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn ignored_errors_are_neither_successes_nor_failures() {
    let mut h = harness(builder());
    h.calls(10, || Call::BadRequest).await;
    let metrics = h.handle.metrics();
    assert_eq!(metrics.buffered_calls, 0);
    assert_eq!(metrics.state, CircuitState::Closed);
    // Ignored errors do not dilute the failure rate either.
    h.call(Call::Ok).await.unwrap();
    h.calls(2, || Call::Fail).await;
    assert_eq!(h.handle.state(), CircuitState::Open);
    assert_eq!(h.inner_calls(), 13);
}

// ===== open state =====

#[tokio::test(start_paused = true)]
async fn open_breaker_fails_fast_naming_itself_and_the_remaining_wait() {
    let mut h = harness(builder());
    trip(&mut h).await;
    advance(2 * SECOND).await;
    let open = open_error(h.call(Call::Ok).await);
    assert_eq!(open.name(), "test");
    assert_eq!(open.retry_after(), Some(3 * SECOND));
    assert_eq!(h.inner_calls(), 3, "the inner service was not called");
    let metrics = h.handle.metrics();
    assert_eq!(metrics.not_permitted_calls, 1);
    assert_eq!(metrics.remaining_wait, Some(3 * SECOND));
    // The window that tripped the breaker is kept while open.
    assert_eq!(metrics.failure_rate, Some(100.0));
}

#[tokio::test(start_paused = true)]
async fn poll_ready_stays_ready_while_open() {
    let mut h = harness(builder());
    trip(&mut h).await;
    let mut service = h.service.clone();
    let mut task = tokio_test::task::spawn(std::future::poll_fn(|cx| service.poll_ready(cx)));
    assert!(matches!(task.poll(), Poll::Ready(Ok(()))));
}

#[tokio::test(start_paused = true)]
async fn moves_to_half_open_on_the_first_call_after_the_wait() {
    let mut h = harness(builder());
    trip(&mut h).await;
    advance(5 * SECOND).await;
    assert_eq!(
        h.handle.state(),
        CircuitState::Open,
        "no timer without automatic transition"
    );
    h.call(Call::Ok).await.unwrap();
    let metrics = h.handle.metrics();
    assert_eq!(metrics.state, CircuitState::HalfOpen);
    assert_eq!(metrics.buffered_calls, 1);
}

#[tokio::test(start_paused = true)]
async fn automatic_transition_moves_to_half_open_without_a_call() {
    let mut h = harness(builder().automatic_transition(true));
    let mut events = h.handle.subscribe();
    trip(&mut h).await;
    let opened = events.recv().await.unwrap();
    assert_eq!(opened.to(), CircuitState::Open);
    // Paused time jumps to the timer.
    let half_open = events.recv().await.unwrap();
    assert_eq!(
        (half_open.from(), half_open.to()),
        (CircuitState::Open, CircuitState::HalfOpen)
    );
    assert_eq!(half_open.at() - opened.at(), 5 * SECOND);
    assert_eq!(h.inner_calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn wait_in_open_grows_on_each_reopen_up_to_its_cap() {
    let mut h = harness(builder().exponential_wait(2 * SECOND, 3.0, 10 * SECOND));
    trip(&mut h).await;
    let mut waits = Vec::new();
    for _ in 0..4 {
        let wait = h.handle.metrics().remaining_wait.unwrap();
        waits.push(wait);
        advance(wait).await;
        // Both trials fail: re-open.
        h.calls(2, || Call::Fail).await;
        assert_eq!(h.handle.state(), CircuitState::Open);
    }
    assert_eq!(waits, [2 * SECOND, 6 * SECOND, 10 * SECOND, 10 * SECOND]);
    assert_eq!(h.handle.metrics().consecutive_opens, 5);
}

#[tokio::test(start_paused = true)]
async fn wait_growth_starts_over_after_the_breaker_closes() {
    let mut h = harness(builder().exponential_wait(2 * SECOND, 3.0, 10 * SECOND));
    trip(&mut h).await;
    advance(2 * SECOND).await;
    h.calls(2, || Call::Fail).await;
    advance(6 * SECOND).await;
    h.calls(2, || Call::Ok).await;
    assert_eq!(h.handle.state(), CircuitState::Closed);
    trip(&mut h).await;
    assert_eq!(h.handle.metrics().remaining_wait, Some(2 * SECOND));
}

#[tokio::test(start_paused = true)]
async fn late_result_after_open_is_recorded_without_retripping_or_extending_the_wait() {
    let (builder, seen) = recording(builder());
    let mut h = harness(builder);
    let (late_tx, late_rx) = oneshot::channel();
    let mut late_service = h.service.clone();
    let late_call = late_service
        .ready()
        .await
        .unwrap()
        .call(Call::Wait(late_rx));
    trip(&mut h).await;
    advance(3 * SECOND).await;
    late_tx.send(false).unwrap();
    late_call.await.unwrap_err();
    let metrics = h.handle.metrics();
    assert_eq!(metrics.state, CircuitState::Open);
    assert_eq!((metrics.buffered_calls, metrics.failed_calls), (4, 4));
    assert_eq!(
        metrics.remaining_wait,
        Some(2 * SECOND),
        "the wait is not extended"
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "no second open");
}

#[tokio::test(start_paused = true)]
async fn late_result_after_half_open_is_not_counted_as_a_trial() {
    let mut h = harness(builder());
    let (late_tx, late_rx) = oneshot::channel();
    let mut late_service = h.service.clone();
    let late_call = late_service
        .ready()
        .await
        .unwrap()
        .call(Call::Wait(late_rx));
    trip(&mut h).await;
    advance(5 * SECOND).await;
    h.call(Call::Ok).await.unwrap();
    late_tx.send(false).unwrap();
    late_call.await.unwrap_err();
    let metrics = h.handle.metrics();
    assert_eq!(metrics.state, CircuitState::HalfOpen);
    assert_eq!((metrics.buffered_calls, metrics.failed_calls), (1, 0));
    h.call(Call::Ok).await.unwrap();
    assert_eq!(h.handle.state(), CircuitState::Closed);
}

// ===== half-open state =====

async fn half_open(h: &mut Harness) {
    trip(h).await;
    advance(5 * SECOND).await;
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_only_the_permitted_trial_calls() {
    let mut h = harness(builder());
    half_open(&mut h).await;
    let mut senders = Vec::new();
    let mut trials = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = oneshot::channel();
        senders.push(tx);
        let mut service = h.service.clone();
        trials.push(tokio::spawn(async move {
            service.ready().await?.call(Call::Wait(rx)).await
        }));
    }
    tokio::task::yield_now().await;
    assert_eq!(h.handle.metrics().half_open_permits_left, Some(0));
    let open = open_error(h.call(Call::Ok).await);
    assert_eq!(open.retry_after(), None);
    assert_eq!(h.inner_calls(), 5);
    assert_eq!(h.handle.metrics().not_permitted_calls, 1);
    for tx in senders {
        tx.send(true).unwrap();
    }
    for trial in trials {
        trial.await.unwrap().unwrap();
    }
    assert_eq!(h.handle.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn half_open_closes_when_trial_calls_succeed() {
    let (builder, seen) = recording(builder());
    let mut h = harness(builder);
    half_open(&mut h).await;
    h.call(Call::Ok).await.unwrap();
    assert_eq!(h.handle.state(), CircuitState::HalfOpen);
    h.call(Call::Ok).await.unwrap();
    let metrics = h.handle.metrics();
    assert_eq!(metrics.state, CircuitState::Closed);
    assert_eq!(metrics.buffered_calls, 0, "closing starts a fresh window");
    assert_eq!(metrics.not_permitted_calls, 0);
    use CircuitState::*;
    assert_eq!(
        *seen.lock().unwrap(),
        [(Closed, Open), (Open, HalfOpen), (HalfOpen, Closed)]
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_reopens_when_trial_calls_fail() {
    let mut h = harness(builder());
    half_open(&mut h).await;
    h.call(Call::Ok).await.unwrap();
    h.call(Call::Fail).await.unwrap_err();
    let metrics = h.handle.metrics();
    assert_eq!(metrics.state, CircuitState::Open);
    assert_eq!(metrics.remaining_wait, Some(5 * SECOND));
}

#[tokio::test(start_paused = true)]
async fn half_open_reopens_when_trial_calls_are_slow() {
    let mut h = harness(builder().slow_call_rate_threshold(50.0));
    half_open(&mut h).await;
    h.call(Call::Ok).await.unwrap();
    h.call(Call::Slow(2 * SECOND)).await.unwrap();
    assert_eq!(h.handle.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn dropped_trial_call_returns_its_permit_and_records_nothing() {
    let mut h = harness(builder());
    half_open(&mut h).await;
    let (_tx, rx) = oneshot::channel();
    let mut service = h.service.clone();
    let trial = service.ready().await.unwrap().call(Call::Wait(rx));
    assert_eq!(h.handle.metrics().half_open_permits_left, Some(1));
    drop(trial);
    let metrics = h.handle.metrics();
    assert_eq!(metrics.half_open_permits_left, Some(2));
    assert_eq!(metrics.buffered_calls, 0);
    h.calls(2, || Call::Ok).await;
    assert_eq!(h.handle.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn ignored_trial_call_returns_its_permit() {
    let mut h = harness(builder());
    half_open(&mut h).await;
    h.calls(5, || Call::BadRequest).await;
    let metrics = h.handle.metrics();
    assert_eq!(metrics.state, CircuitState::HalfOpen);
    assert_eq!(metrics.half_open_permits_left, Some(2));
    h.calls(2, || Call::Fail).await;
    assert_eq!(h.handle.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn max_wait_in_half_open_reopens_when_trials_do_not_finish() {
    let mut h = harness(builder().max_wait_in_half_open(3 * SECOND));
    let mut events = h.handle.subscribe();
    half_open(&mut h).await;
    let (_tx, rx) = oneshot::channel();
    let mut service = h.service.clone();
    let stuck = tokio::spawn(async move { service.ready().await?.call(Call::Wait(rx)).await });
    let start = Instant::now();
    let mut last = events.recv().await.unwrap();
    while last.to() != CircuitState::Open || last.from() != CircuitState::HalfOpen {
        last = events.recv().await.unwrap();
    }
    assert_eq!(last.at() - start, 3 * SECOND);
    stuck.abort();
}

#[tokio::test(start_paused = true)]
async fn half_open_without_max_wait_waits_for_its_trials() {
    let mut h = harness(builder());
    half_open(&mut h).await;
    let (tx, rx) = oneshot::channel();
    let mut service = h.service.clone();
    let trial = tokio::spawn(async move { service.ready().await?.call(Call::Wait(rx)).await });
    tokio::task::yield_now().await;
    advance(3600 * SECOND).await;
    assert_eq!(h.handle.state(), CircuitState::HalfOpen);
    tx.send(true).unwrap();
    trial.await.unwrap().unwrap();
}

// ===== forced states, reset, events =====

#[tokio::test(start_paused = true)]
async fn forced_open_rejects_every_call_without_a_retry_time() {
    let mut h = harness(builder());
    h.handle.force_open();
    advance(3600 * SECOND).await;
    let open = open_error(h.call(Call::Ok).await);
    assert_eq!(open.retry_after(), None);
    assert_eq!(h.inner_calls(), 0);
    assert_eq!(h.handle.state(), CircuitState::ForcedOpen);
}

#[tokio::test(start_paused = true)]
async fn disabled_breaker_passes_every_call_and_records_nothing() {
    let mut h = harness(builder());
    h.handle.disable();
    h.calls(10, || Call::Fail).await;
    let metrics = h.handle.metrics();
    assert_eq!(metrics.state, CircuitState::Disabled);
    assert_eq!(metrics.buffered_calls, 0);
    assert_eq!(h.inner_calls(), 10);
}

#[tokio::test(start_paused = true)]
async fn metrics_only_breaker_records_but_never_opens() {
    let mut h = harness(builder());
    h.handle.metrics_only();
    h.calls(10, || Call::Fail).await;
    let metrics = h.handle.metrics();
    assert_eq!(metrics.state, CircuitState::MetricsOnly);
    assert_eq!((metrics.buffered_calls, metrics.failed_calls), (5, 5));
    assert_eq!(metrics.failure_rate, Some(100.0));
    assert_eq!(h.inner_calls(), 10);
}

#[tokio::test(start_paused = true)]
async fn force_closed_closes_an_open_breaker_with_a_fresh_window() {
    let mut h = harness(builder());
    trip(&mut h).await;
    h.handle.force_closed();
    let metrics = h.handle.metrics();
    assert_eq!(metrics.state, CircuitState::Closed);
    assert_eq!(metrics.buffered_calls, 0);
    h.call(Call::Ok).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn reset_closes_and_forgets_calls_rejections_and_wait_growth() {
    let mut h = harness(builder().exponential_wait(2 * SECOND, 2.0, 60 * SECOND));
    trip(&mut h).await;
    let _ = h.call(Call::Ok).await;
    h.handle.reset();
    let metrics = h.handle.metrics();
    assert_eq!(metrics.state, CircuitState::Closed);
    assert_eq!(
        (
            metrics.buffered_calls,
            metrics.not_permitted_calls,
            metrics.consecutive_opens
        ),
        (0, 0, 0)
    );
    trip(&mut h).await;
    assert_eq!(h.handle.metrics().remaining_wait, Some(2 * SECOND));
}

#[tokio::test(start_paused = true)]
async fn reset_forgets_calls_in_flight_from_before_it() {
    let h = harness(builder());
    let (tx, rx) = oneshot::channel();
    let mut service = h.service.clone();
    let in_flight = service.ready().await.unwrap().call(Call::Wait(rx));
    h.handle.reset();
    tx.send(false).unwrap();
    in_flight.await.unwrap_err();
    assert_eq!(h.handle.metrics().buffered_calls, 0);
}

#[tokio::test(start_paused = true)]
async fn transition_to_the_current_state_emits_no_event() {
    let (builder, seen) = recording(builder());
    let h = harness(builder);
    h.handle.force_closed();
    h.handle.reset();
    h.handle.force_open();
    h.handle.force_open();
    h.handle.disable();
    h.handle.disable();
    h.handle.metrics_only();
    h.handle.metrics_only();
    h.handle.reset();
    h.handle.reset();
    use CircuitState::*;
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (Closed, ForcedOpen),
            (ForcedOpen, Disabled),
            (Disabled, MetricsOnly),
            (MetricsOnly, Closed)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn callback_and_subscribers_see_every_transition_in_order_and_closed_never_goes_to_half_open()
{
    let (builder, seen) = recording(builder());
    let mut h = harness(builder);
    let mut events = h.handle.subscribe();
    for round in 0..3 {
        trip(&mut h).await;
        advance(5 * SECOND).await;
        if round == 1 {
            h.calls(2, || Call::Fail).await;
            advance(5 * SECOND).await;
        }
        h.calls(2, || Call::Ok).await;
        assert_eq!(h.handle.state(), CircuitState::Closed);
    }
    let seen = seen.lock().unwrap().clone();
    let mut received = Vec::new();
    while let Ok(event) = events.try_recv() {
        assert_eq!(event.name(), "test");
        received.push((event.from(), event.to()));
    }
    assert_eq!(seen, received);
    assert_eq!(seen.len(), 11);
    use CircuitState::*;
    assert!(!seen.contains(&(Closed, HalfOpen)));
    assert!(seen.windows(2).all(|pair| pair[0].1 == pair[1].0));
}

#[tokio::test(start_paused = true)]
async fn event_display_names_the_breaker_and_both_states() {
    let h = harness(builder());
    let mut events = h.handle.subscribe();
    h.handle.force_open();
    let event = events.recv().await.unwrap();
    assert_eq!(
        event.to_string(),
        "circuit `test` went from closed to forced_open"
    );
}

// ===== the service =====

#[tokio::test(start_paused = true)]
async fn clones_of_the_service_share_one_breaker() {
    let layer = judged(builder());
    let mut a = Harness::new(&layer);
    let mut b = Harness::new(&layer);
    a.calls(2, || Call::Fail).await;
    b.call(Call::Fail).await.unwrap_err();
    assert!(a.handle.same_breaker(&b.handle));
    assert_eq!(a.handle.state(), CircuitState::Open);
    let mut clone = a.service.clone();
    open_error(clone.ready().await.unwrap().call(Call::Ok).await);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_mode_opens_on_the_nth_failure_in_a_row_and_probes_once() {
    let mut h = harness(
        CircuitBreakerLayer::builder("seed")
            .consecutive_failures(5)
            .wait_in_open(60 * SECOND),
    );
    for _ in 0..3 {
        h.calls(4, || Call::Fail).await;
        h.call(Call::Ok).await.unwrap();
    }
    assert_eq!(h.handle.state(), CircuitState::Closed);
    h.calls(5, || Call::Fail).await;
    assert_eq!(h.handle.state(), CircuitState::Open);
    advance(60 * SECOND).await;
    h.call(Call::Ok).await.unwrap();
    assert_eq!(
        h.handle.state(),
        CircuitState::Closed,
        "one trial call decides"
    );
}

// ===== admission without a call, early half-open, what opened it =====

#[tokio::test(start_paused = true)]
async fn admission_is_read_without_taking_a_permit_or_counting() {
    use brace_circuit::Admission;

    let mut h = harness(builder());
    assert!(matches!(h.handle.admission(), Admission::Admit));
    trip(&mut h).await;
    let Admission::Reject(open) = h.handle.admission() else {
        panic!("an open breaker refuses");
    };
    assert_eq!(open.retry_after(), Some(5 * SECOND));
    assert_eq!(
        h.handle.metrics().not_permitted_calls,
        0,
        "a peek is not a call"
    );

    advance(5 * SECOND).await;
    assert!(matches!(h.handle.admission(), Admission::Trial));
    // Still open until a call (or the timer) moves it: the peek changed nothing.
    assert_eq!(h.handle.state(), CircuitState::Open);
    h.call(Call::Ok).await.unwrap();
    assert_eq!(h.handle.state(), CircuitState::HalfOpen);
    // One of two trial permits is left.
    assert!(matches!(h.handle.admission(), Admission::Trial));
    let (_tx, rx) = oneshot::channel();
    let mut pending = h.service.clone();
    let held = tokio::spawn(async move { pending.ready().await?.call(Call::Wait(rx)).await });
    tokio::task::yield_now().await;
    assert!(
        matches!(h.handle.admission(), Admission::Reject(_)),
        "no permit left while the last trial is in flight"
    );
    held.abort();

    h.handle.force_open();
    let Admission::Reject(forced) = h.handle.admission() else {
        panic!("forced open refuses");
    };
    assert_eq!(forced.retry_after(), None);
    assert_eq!(
        forced.cause(),
        None,
        "forced open was not caused by failures"
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_says_what_opened_it() {
    let mut h = harness(builder());
    h.calls(3, || Call::RateLimited).await;
    assert_eq!(h.handle.state(), CircuitState::Open);
    let open = open_error(h.call(Call::Ok).await);
    assert_eq!(open.cause(), Some(brace_core::FailureClass::RateLimited));
    assert!(open.to_string().contains("rate limited"), "{open}");

    let mut h = harness(builder());
    trip(&mut h).await;
    let open = open_error(h.call(Call::Ok).await);
    assert_eq!(open.cause(), Some(brace_core::FailureClass::Server));
}

#[tokio::test(start_paused = true)]
async fn a_successful_probe_moves_an_open_circuit_to_half_open_early() {
    let mut h = harness(builder());
    trip(&mut h).await;
    advance(SECOND).await;
    assert!(h.handle.try_half_open());
    assert_eq!(h.handle.state(), CircuitState::HalfOpen);
    h.calls(2, || Call::Ok).await;
    assert_eq!(h.handle.state(), CircuitState::Closed);
    // Only an open breaker moves: closed and forced states are left alone.
    assert!(!h.handle.try_half_open());
    h.handle.force_open();
    assert!(!h.handle.try_half_open());
    assert_eq!(h.handle.state(), CircuitState::ForcedOpen);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_and_the_failure_rate_work_side_by_side() {
    // A window of 10 calls (5 needed) at 50 %, plus 3 failures in a row.
    let layer = || {
        CircuitBreakerLayer::builder("both")
            .sliding_window(SlidingWindow::Count(10))
            .minimum_calls(5)
            .failure_rate_threshold(50.0)
            .consecutive_failures(3)
    };
    // Three in a row open it before the window has its minimum.
    let mut h = harness(layer());
    h.calls(3, || Call::Fail).await;
    assert_eq!(h.handle.state(), CircuitState::Open);

    // Alternating failures never make three in a row, but reach the 50 % rate.
    let mut h = harness(layer());
    for _ in 0..2 {
        h.call(Call::Fail).await.unwrap_err();
        h.call(Call::Ok).await.unwrap();
    }
    assert_eq!(h.handle.state(), CircuitState::Closed);
    h.call(Call::Fail).await.unwrap_err();
    assert_eq!(h.handle.state(), CircuitState::Open, "3 of 5 failed");

    // A success ends the run: two, a success, two more stay closed (window below min).
    let mut h = harness(
        CircuitBreakerLayer::builder("run")
            .minimum_calls(100)
            .consecutive_failures(3),
    );
    h.calls(2, || Call::Fail).await;
    h.call(Call::Ok).await.unwrap();
    h.calls(2, || Call::Fail).await;
    assert_eq!(h.handle.state(), CircuitState::Closed);
    h.call(Call::Fail).await.unwrap_err();
    assert_eq!(h.handle.state(), CircuitState::Open);
}
