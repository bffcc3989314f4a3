//! Behaviour of `Retry` under paused time: attempt counts, delays, Retry-After, budget,
//! deadlines, timeouts and hooks.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use brace_core::deadline::{self, DeadlineLayer};
use brace_core::on_error::{ErrorMatch, OnError};
use brace_core::{
    BoxError, CircuitOpen, Classify, DefaultClassifier, FailureClass, Outcome, StatusClassifier,
};
use brace_retry::{
    Backoff, DeadlineExceeded, GiveUpReason, RetriesExhausted, RetryBudget, RetryConfig, RetryLayer,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);

type Response = http::Response<()>;

#[derive(Clone)]
enum Step {
    Status(u16, Option<String>),
    Fail(fn() -> BoxError),
    Hang,
}

fn ok() -> Step {
    Step::Status(200, None)
}

fn boom() -> Step {
    Step::Fail(|| "boom".into())
}

/// An upstream following a plan of steps (the last one repeats), recording when it is called.
#[derive(Clone)]
struct Upstream {
    plan: Arc<Mutex<VecDeque<Step>>>,
    calls: Arc<Mutex<Vec<Instant>>>,
}

impl Upstream {
    fn new(plan: impl IntoIterator<Item = Step>) -> Self {
        Self {
            plan: Arc::new(Mutex::new(plan.into_iter().collect())),
            calls: Arc::default(),
        }
    }

    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// The time between consecutive calls.
    fn gaps(&self) -> Vec<Duration> {
        let calls = self.calls.lock().unwrap();
        calls.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

impl Service<u32> for Upstream {
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u32) -> Self::Future {
        self.calls.lock().unwrap().push(Instant::now());
        let step = {
            let mut plan = self.plan.lock().unwrap();
            if plan.len() > 1 {
                plan.pop_front().unwrap()
            } else {
                plan.front().cloned().expect("a plan has at least one step")
            }
        };
        Box::pin(async move {
            match step {
                Step::Status(code, retry_after) => {
                    let mut response = http::Response::builder().status(code);
                    if let Some(value) = retry_after {
                        response = response.header("retry-after", value);
                    }
                    Ok(response.body(()).unwrap())
                }
                Step::Fail(make) => Err(make()),
                Step::Hang => std::future::pending().await,
            }
        })
    }
}

fn exhausted(err: &BoxError) -> &RetriesExhausted {
    err.downcast_ref::<RetriesExhausted>()
        .unwrap_or_else(|| panic!("expected RetriesExhausted, got {err}"))
}

// ===== backoff kinds =====

#[tokio::test(start_paused = true)]
async fn constant_backoff_retries_at_exact_intervals_then_gives_up() {
    let upstream = Upstream::new([boom()]);
    let layer = RetryLayer::builder()
        .max_retries(3)
        .backoff(Backoff::constant(MS * 200))
        .no_budget()
        .build();
    let start = Instant::now();
    let err = layer.layer(upstream.clone()).oneshot(1).await.unwrap_err();

    assert_eq!(upstream.calls(), 4);
    assert_eq!(upstream.gaps(), [MS * 200, MS * 200, MS * 200]);
    assert_eq!(start.elapsed(), MS * 600);
    let exhausted = exhausted(&err);
    assert_eq!(exhausted.attempts(), 4);
    assert_eq!(exhausted.reason(), GiveUpReason::MaxRetries);
    assert_eq!(exhausted.last_error().to_string(), "boom");
}

#[tokio::test(start_paused = true)]
async fn exponential_backoff_grows_by_factor_up_to_the_cap() {
    let upstream = Upstream::new([boom(), boom(), boom(), boom(), ok()]);
    let layer = RetryLayer::builder()
        .max_retries(4)
        .backoff(Backoff::exponential(MS * 100, 2.0, MS * 300))
        .no_budget()
        .build();
    let response = layer.layer(upstream.clone()).oneshot(1).await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(upstream.gaps(), [MS * 100, MS * 200, MS * 300, MS * 300]);
}

#[tokio::test(start_paused = true)]
async fn full_jitter_waits_are_the_seeded_draws_within_bounds() {
    let backoff = Backoff::full_jitter(MS * 100, 2.0, MS * 1000);
    let upstream = Upstream::new([boom()]);
    let layer = RetryLayer::builder()
        .max_retries(6)
        .backoff(backoff)
        .seed(11)
        .no_budget()
        .build();
    layer.layer(upstream.clone()).oneshot(1).await.unwrap_err();

    let mut rng = fastrand::Rng::with_seed(11);
    // tokio's timer wakes on whole milliseconds, rounding up.
    let expected: Vec<_> = (1..=6)
        .map(|retry| backoff.delay(retry, Duration::ZERO, &mut rng))
        .map(|delay| MS * u32::try_from(delay.as_nanos().div_ceil(1_000_000)).unwrap())
        .collect();
    let gaps = upstream.gaps();
    assert_eq!(gaps, expected);
    for (i, gap) in gaps.iter().enumerate() {
        assert!(*gap <= (MS * 100 * 2u32.pow(i as u32)).min(MS * 1000));
    }
}

#[tokio::test(start_paused = true)]
async fn decorrelated_jitter_is_reproducible_with_a_seed_and_within_bounds() {
    let backoff = Backoff::decorrelated_jitter(MS * 50, MS * 2000);
    let run = |seed| async move {
        let upstream = Upstream::new([boom()]);
        let layer = RetryLayer::builder()
            .max_retries(8)
            .backoff(backoff)
            .seed(seed)
            .no_budget()
            .build();
        layer.layer(upstream.clone()).oneshot(1).await.unwrap_err();
        upstream.gaps()
    };
    let first = run(5).await;
    assert_eq!(first, run(5).await);
    assert_ne!(first, run(6).await);

    let mut previous = MS * 50;
    for gap in first {
        assert!(
            gap >= MS * 50 && gap <= (previous * 3).min(MS * 2000),
            "{gap:?}"
        );
        previous = gap;
    }
}

// ===== Retry-After =====

#[tokio::test(start_paused = true)]
async fn retry_after_seconds_is_waited_instead_of_a_shorter_backoff() {
    let upstream = Upstream::new([Step::Status(429, Some("3".into())), ok()]);
    let layer = RetryLayer::builder()
        .classifier(StatusClassifier::new())
        .backoff(Backoff::constant(MS * 100))
        .no_budget()
        .build();
    let response = layer.layer(upstream.clone()).oneshot(1).await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(upstream.gaps(), [Duration::from_secs(3)]);
}

#[tokio::test(start_paused = true)]
async fn a_longer_backoff_wins_over_a_short_retry_after() {
    let upstream = Upstream::new([Step::Status(503, Some("1".into())), ok()]);
    let layer = RetryLayer::builder()
        .classifier(StatusClassifier::new())
        .backoff(Backoff::constant(Duration::from_secs(2)))
        .no_budget()
        .build();
    layer.layer(upstream.clone()).oneshot(1).await.unwrap();

    assert_eq!(upstream.gaps(), [Duration::from_secs(2)]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_http_date_is_respected() {
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(10));
    let upstream = Upstream::new([Step::Status(503, Some(at)), ok()]);
    let layer = RetryLayer::builder()
        .classifier(StatusClassifier::new())
        .backoff(Backoff::constant(MS * 100))
        .no_budget()
        .build();
    layer.layer(upstream.clone()).oneshot(1).await.unwrap();

    // An HTTP date has whole seconds: the wait is the remaining 9–10s.
    let gap = upstream.gaps()[0];
    assert!(
        gap > Duration::from_secs(9) && gap <= Duration::from_secs(10),
        "{gap:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_at_the_cap_is_waited() {
    let upstream = Upstream::new([Step::Status(429, Some("30".into())), ok()]);
    let layer = RetryLayer::builder()
        .classifier(StatusClassifier::new())
        .max_retry_after(Duration::from_secs(30))
        .no_budget()
        .build();
    layer.layer(upstream.clone()).oneshot(1).await.unwrap();

    assert_eq!(upstream.gaps(), [Duration::from_secs(30)]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_past_the_cap_gives_up_at_once() {
    // A response: returned as is, and the give-up hook says why.
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&reasons);
    let upstream = Upstream::new([Step::Status(429, Some("120".into())), ok()]);
    let layer = RetryLayer::builder()
        .classifier(StatusClassifier::new())
        .max_retry_after(Duration::from_secs(30))
        .on_give_up(move |event| {
            seen.lock()
                .unwrap()
                .push((event.attempts(), event.reason()));
        })
        .build();
    let start = Instant::now();
    let response = layer.layer(upstream.clone()).oneshot(1).await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(upstream.calls(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(
        *reasons.lock().unwrap(),
        [(1, GiveUpReason::RetryAfterTooLong(Duration::from_mins(2)))]
    );

    // An error: RetriesExhausted with the reason and the error.
    let upstream = Upstream::new([boom()]);
    let hinted = |result: Result<&Response, &BoxError>| match result {
        Ok(_) => Outcome::success(),
        Err(_) => Outcome::transient().with_retry_after(Some(Duration::from_mins(10))),
    };
    let err = RetryLayer::builder()
        .classifier(hinted)
        .build()
        .layer(upstream.clone())
        .oneshot(1)
        .await
        .unwrap_err();
    assert_eq!(upstream.calls(), 1);
    assert_eq!(
        exhausted(&err).reason(),
        GiveUpReason::RetryAfterTooLong(Duration::from_mins(10))
    );
    assert_eq!(exhausted(&err).attempts(), 1);
}

// ===== what is not retried =====

#[derive(Debug)]
struct BadRequest;

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bad request")
    }
}

impl std::error::Error for BadRequest {}

#[tokio::test(start_paused = true)]
async fn non_retryable_error_is_returned_as_is_after_one_attempt() {
    let upstream = Upstream::new([Step::Fail(|| Box::new(BadRequest)), ok()]);
    let classifier = |result: Result<&Response, &BoxError>| match result {
        Err(err) if err.is::<BadRequest>() => Outcome::ignored(),
        Err(_) => Outcome::transient(),
        Ok(_) => Outcome::success(),
    };
    let err = RetryLayer::builder()
        .classifier(classifier)
        .build()
        .layer(upstream.clone())
        .oneshot(1)
        .await
        .unwrap_err();

    assert_eq!(upstream.calls(), 1);
    assert!(err.is::<BadRequest>(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn non_retryable_http_status_is_returned_after_one_attempt() {
    let upstream = Upstream::new([Step::Status(400, None), ok()]);
    let response = RetryLayer::builder()
        .classifier(StatusClassifier::new())
        .build()
        .layer(upstream.clone())
        .oneshot(1)
        .await
        .unwrap();

    assert_eq!(response.status(), 400);
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn circuit_open_is_not_retried_by_default() {
    let upstream = Upstream::new([
        Step::Fail(|| Box::new(CircuitOpen::new("openai", Some(MS * 10)))),
        ok(),
    ]);
    let err = RetryLayer::new()
        .layer(upstream.clone())
        .oneshot(1)
        .await
        .unwrap_err();

    assert_eq!(upstream.calls(), 1);
    assert!(err.is::<CircuitOpen>());
}

#[tokio::test(start_paused = true)]
async fn retryable_response_is_returned_when_retries_run_out() {
    let upstream = Upstream::new([Step::Status(503, None)]);
    let response = RetryLayer::builder()
        .classifier(StatusClassifier::new())
        .max_retries(2)
        .no_budget()
        .build()
        .layer(upstream.clone())
        .oneshot(1)
        .await
        .unwrap();

    assert_eq!(response.status(), 503);
    assert_eq!(upstream.calls(), 3);
}

// ===== on_error list =====

#[tokio::test(start_paused = true)]
async fn seed_on_error_list_retries_timeouts_but_not_unlisted_errors() {
    let config: RetryConfig = serde_saphyr::from_str(
        "max_retries: 2\nbackoff: exponential\non_error: [429, 500, 502, 503, timeout]\n",
    )
    .unwrap();

    let timeouts = Upstream::new([
        Step::Fail(|| Box::new(tower::timeout::error::Elapsed::new())),
        ok(),
    ]);
    let response = config
        .layer(DefaultClassifier)
        .unwrap()
        .layer(timeouts.clone())
        .oneshot(1)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(timeouts.calls(), 2);

    let refused = Upstream::new([
        Step::Fail(|| Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))),
        ok(),
    ]);
    let err = config
        .layer(DefaultClassifier)
        .unwrap()
        .layer(refused.clone())
        .oneshot(1)
        .await
        .unwrap_err();
    assert_eq!(refused.calls(), 1);
    assert!(err.is::<std::io::Error>());
}

#[tokio::test(start_paused = true)]
async fn http_on_error_list_retries_listed_statuses_only() {
    let list = [ErrorMatch::Status(503)];
    let run = |code: u16| async move {
        let upstream = Upstream::new([Step::Status(code, None), ok()]);
        RetryLayer::builder()
            .classifier(OnError::new(list, StatusClassifier::new()))
            .build()
            .layer(upstream.clone())
            .oneshot(1)
            .await
            .unwrap();
        upstream.calls()
    };
    assert_eq!(run(503).await, 2);
    assert_eq!(run(502).await, 1);
}

// ===== budget =====

/// Offers `calls` requests, one every 10ms, to an upstream that always fails.
async fn offer_to_failing_upstream(layer: RetryLayer, calls: u32) -> (usize, usize) {
    let upstream = Upstream::new([boom()]);
    let mut service = layer.layer(upstream.clone());
    let mut budget_give_ups = 0;
    for i in 0..calls {
        let err = service.ready().await.unwrap().call(i).await.unwrap_err();
        if exhausted(&err).reason() == GiveUpReason::BudgetExhausted {
            budget_give_ups += 1;
        }
        tokio::time::advance(MS * 10).await;
    }
    (upstream.calls(), budget_give_ups)
}

#[tokio::test(start_paused = true)]
async fn budget_caps_amplification_under_total_failure() {
    let n = 1000;
    let layer = RetryLayer::builder()
        .max_retries(3)
        .backoff(Backoff::none())
        .budget(RetryBudget::with_window(Duration::from_secs(10), 0.2, 1))
        .build();
    let start = Instant::now();
    let (upstream_calls, budget_give_ups) = offer_to_failing_upstream(layer, n).await;
    let elapsed = start.elapsed().as_secs_f64();

    let amplification = upstream_calls as f64 / f64::from(n);
    eprintln!("{upstream_calls} upstream calls for {n} offered: {amplification:.3}×");
    // (1 + ratio) per offered call, plus the floor of 1/s over the run and one window.
    let bound = 1.2 + (elapsed + 10.0) / f64::from(n);
    assert!(
        amplification <= bound,
        "amplification {amplification} > {bound}"
    );
    assert!(amplification > 1.15, "budget not spent: {amplification}");
    assert!(budget_give_ups > 0);

    // Without a budget the same traffic is amplified 4×.
    let unbounded = RetryLayer::builder()
        .max_retries(3)
        .backoff(Backoff::none())
        .no_budget()
        .build();
    let (upstream_calls, _) = offer_to_failing_upstream(unbounded, n).await;
    assert_eq!(upstream_calls, 4 * n as usize);
}

// ===== deadline and attempt timeout =====

#[tokio::test(start_paused = true)]
async fn deadline_stops_before_a_wait_that_would_cross_it() {
    let upstream = Upstream::new([boom()]);
    let layer = RetryLayer::builder()
        .max_retries(10)
        .backoff(Backoff::constant(MS * 400))
        .deadline(Duration::from_secs(1))
        .no_budget()
        .build();
    let start = Instant::now();
    let err = layer.layer(upstream.clone()).oneshot(1).await.unwrap_err();

    // Attempts at 0, 400ms and 800ms; a wait until 1200ms would cross the deadline.
    assert_eq!(upstream.calls(), 3);
    assert_eq!(start.elapsed(), MS * 800);
    assert_eq!(exhausted(&err).reason(), GiveUpReason::Deadline);
    assert_eq!(exhausted(&err).attempts(), 3);
}

#[tokio::test(start_paused = true)]
async fn deadline_cuts_an_attempt_in_flight() {
    let upstream = Upstream::new([boom(), Step::Hang]);
    let layer = RetryLayer::builder()
        .backoff(Backoff::constant(MS * 100))
        .deadline(Duration::from_secs(2))
        .no_budget()
        .build();
    let start = Instant::now();
    let err = layer.layer(upstream.clone()).oneshot(1).await.unwrap_err();

    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(upstream.calls(), 2);
    let exceeded = err.downcast_ref::<DeadlineExceeded>().unwrap();
    assert_eq!(exceeded.after(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_retries_a_hung_attempt() {
    let upstream = Upstream::new([Step::Hang, ok()]);
    let layer = RetryLayer::builder()
        .backoff(Backoff::constant(MS * 100))
        .attempt_timeout(MS * 500)
        .no_budget()
        .build();
    let start = Instant::now();
    let response = layer.layer(upstream.clone()).oneshot(1).await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(start.elapsed(), MS * 600);
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn attempt_timeouts_until_exhausted_report_elapsed() {
    let upstream = Upstream::new([Step::Hang]);
    let layer = RetryLayer::builder()
        .max_retries(1)
        .backoff(Backoff::none())
        .attempt_timeout(MS * 300)
        .no_budget()
        .build();
    let start = Instant::now();
    let err = layer.layer(upstream.clone()).oneshot(1).await.unwrap_err();

    assert_eq!(start.elapsed(), MS * 600);
    let exhausted = exhausted(&err);
    assert_eq!(exhausted.attempts(), 2);
    assert!(
        exhausted
            .last_error()
            .is::<tower::timeout::error::Elapsed>()
    );
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_is_not_retried_when_told_so() {
    let upstream = Upstream::new([Step::Hang, ok()]);
    let layer = RetryLayer::builder()
        .attempt_timeout(MS * 300)
        .retry_attempt_timeouts(false)
        .build();
    let err = layer.layer(upstream.clone()).oneshot(1).await.unwrap_err();

    assert_eq!(upstream.calls(), 1);
    assert!(err.is::<tower::timeout::error::Elapsed>());
}

// ===== readiness, hooks, request copies =====

#[tokio::test(start_paused = true)]
async fn polls_the_inner_service_ready_before_each_retry() {
    let layer = RetryLayer::builder()
        .backoff(Backoff::none())
        .deadline(Duration::from_secs(5))
        .no_budget()
        .build();
    let (mut service, mut handle) = tower_test::mock::spawn_layer::<u32, u32, _>(layer);
    handle.allow(1);
    tokio_test::assert_ready_ok!(service.poll_ready());
    let mut response = tokio_test::task::spawn(service.call(7));

    let (request, send) = handle.next_request().await.unwrap();
    assert_eq!(request, 7);
    send.send_error("boom");
    // No capacity: the retry waits for readiness instead of calling.
    tokio_test::assert_pending!(response.poll());
    tokio_test::assert_pending!(handle.poll_request());

    handle.allow(1);
    tokio_test::assert_pending!(response.poll());
    let (request, send) = handle.next_request().await.unwrap();
    assert_eq!(request, 7);
    send.send_response(42);
    assert_eq!(response.await.unwrap(), 42);
}

#[tokio::test(start_paused = true)]
async fn deadline_bounds_a_wait_for_readiness() {
    let layer = RetryLayer::builder()
        .backoff(Backoff::none())
        .deadline(Duration::from_secs(5))
        .no_budget()
        .build();
    let (mut service, mut handle) = tower_test::mock::spawn_layer::<u32, u32, _>(layer);
    handle.allow(1);
    tokio_test::assert_ready_ok!(service.poll_ready());
    let start = Instant::now();
    let response = tokio::spawn(service.call(7));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("boom");

    let err = response.await.unwrap().unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn hooks_report_each_retry_with_attempt_delay_and_cause() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let upstream = Upstream::new([boom(), Step::Status(503, None), ok()]);
    let layer = RetryLayer::builder()
        .classifier(StatusClassifier::new())
        .backoff(Backoff::exponential(MS * 100, 2.0, Duration::from_secs(1)))
        .on_retry(move |event| {
            seen.lock().unwrap().push((
                event.attempt(),
                event.delay(),
                event.error().map(ToString::to_string),
                event.outcome().is_retryable(),
            ));
        })
        .build();
    layer.layer(upstream).oneshot(1).await.unwrap();

    assert_eq!(
        *events.lock().unwrap(),
        [
            (1, MS * 100, Some("boom".to_owned()), true),
            (2, MS * 200, None, true),
        ]
    );
}

#[derive(Debug)]
struct Counted(Arc<AtomicUsize>);

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(&self.0))
    }
}

#[tokio::test(start_paused = true)]
async fn requests_are_copied_only_while_a_retry_is_possible() {
    let count = |max_retries| async move {
        let clones = Arc::new(AtomicUsize::new(0));
        let failing = tower::service_fn(|_: Counted| async { Err::<(), BoxError>("boom".into()) });
        let _ = RetryLayer::builder()
            .max_retries(max_retries)
            .backoff(Backoff::none())
            .no_budget()
            .build()
            .layer(failing)
            .oneshot(Counted(Arc::clone(&clones)))
            .await;
        clones.load(Ordering::SeqCst)
    };
    assert_eq!(count(0).await, 0);
    // One copy kept beside the first attempt, one beside the second; the last attempt
    // takes the kept copy.
    assert_eq!(count(2).await, 2);
}

#[test]
fn status_classifier_fits_the_layer_over_http_responses() {
    // A compile-time check that the shared classifiers plug in.
    fn assert_classifier<C: Classify<Response, BoxError>>(_: &C) {}
    assert_classifier(&StatusClassifier::new());
    assert_classifier(&OnError::new(
        [ErrorMatch::Class(FailureClass::Timeout)],
        StatusClassifier::new(),
    ));
}

#[tokio::test(start_paused = true)]
async fn an_enormous_backoff_waits_without_panicking() {
    let upstream = Upstream::new([boom(), ok()]);
    let layer = RetryLayer::builder()
        .backoff(Backoff::constant(Duration::MAX))
        .no_budget()
        .build();
    let mut service = layer.layer(upstream.clone());
    let mut response = tokio_test::task::spawn(service.ready().await.unwrap().call(1));
    tokio_test::assert_pending!(response.poll());
    tokio::time::advance(Duration::from_hours(24)).await;
    tokio_test::assert_pending!(response.poll());
    assert_eq!(upstream.calls(), 1);
}

// ===== on_error: brace-core's OnError over the stack's classifier =====

#[tokio::test(start_paused = true)]
async fn a_listed_class_is_retried_and_an_unlisted_one_is_returned_but_still_fails_over() {
    let config: RetryConfig =
        serde_saphyr::from_str("on_error: [rate_limited, timeout]\nbase_delay: 10ms").unwrap();
    let run = |code: u16| {
        let config = config.clone();
        async move {
            let upstream = Upstream::new([Step::Status(code, None), ok()]);
            let response = config
                .layer(StatusClassifier::new())
                .unwrap()
                .layer(upstream.clone())
                .oneshot(1)
                .await
                .unwrap();
            (response.status().as_u16(), upstream.calls())
        }
    };
    // 429 is rate_limited, 504 a timeout: listed.
    assert_eq!(run(429).await, (200, 2));
    assert_eq!(run(504).await, (200, 2));
    // 503 (overloaded) and 500 (server) are not: the failure comes back after one call...
    assert_eq!(run(503).await, (503, 1));
    assert_eq!(run(500).await, (500, 1));
    // ...and the same classifier still tells a failover above to move on.
    let on_error = OnError::new(config.on_error.clone(), StatusClassifier::new());
    let unavailable = http::Response::builder().status(503).body(()).unwrap();
    let outcome = Classify::<_, BoxError>::classify(&on_error, Ok(&unavailable));
    assert!(outcome.is_failure() && outcome.should_failover() && !outcome.is_retryable());
}

#[tokio::test(start_paused = true)]
async fn naming_a_class_does_not_retry_what_the_classifier_will_not() {
    // StatusClassifier does not retry a 501; `server` names its class, but only narrows.
    let config: RetryConfig = serde_saphyr::from_str("on_error: [server, 501]").unwrap();
    let upstream = Upstream::new([Step::Status(501, None), ok()]);
    let response = config
        .layer(StatusClassifier::new())
        .unwrap()
        .layer(upstream.clone())
        .oneshot(1)
        .await
        .unwrap();
    assert_eq!((response.status().as_u16(), upstream.calls()), (501, 1));
}

// ===== retry policy per failure class =====

fn rate_limits_four_times_two_seconds_apart() -> RetryLayer<StatusClassifier> {
    RetryLayer::builder()
        .classifier(StatusClassifier::new())
        .max_retries(1)
        .backoff(Backoff::constant(MS * 100))
        .class(
            FailureClass::RateLimited,
            brace_retry::ClassPolicy::new()
                .max_retries(4)
                .backoff(Backoff::constant(Duration::from_secs(2))),
        )
        .no_budget()
        .build()
}

#[tokio::test(start_paused = true)]
async fn a_class_policy_sets_that_class_retry_count_and_backoff() {
    let upstream = Upstream::new([Step::Status(429, None)]);
    let response = rate_limits_four_times_two_seconds_apart()
        .layer(upstream.clone())
        .oneshot(1)
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(upstream.gaps(), [Duration::from_secs(2); 4]);

    // Other classes keep the layer's own settings.
    let upstream = Upstream::new([Step::Status(503, None)]);
    rate_limits_four_times_two_seconds_apart()
        .layer(upstream.clone())
        .oneshot(1)
        .await
        .unwrap();
    assert_eq!(upstream.gaps(), [MS * 100]);
}

#[tokio::test(start_paused = true)]
async fn a_class_maximum_counts_every_retry_the_call_made() {
    let layer = RetryLayer::builder()
        .classifier(StatusClassifier::new())
        .max_retries(2)
        .backoff(Backoff::none())
        .class(
            FailureClass::RateLimited,
            brace_retry::ClassPolicy::new().max_retries(3),
        )
        .no_budget()
        .build();
    let give_ups = Arc::new(Mutex::new(Vec::new()));

    // Two overloaded answers use the default's two retries; the 429 after them may still
    // have a third (rate limits allow 3), the next 429 may not.
    let upstream = Upstream::new([
        Step::Status(503, None),
        Step::Status(503, None),
        Step::Status(429, None),
        Step::Status(429, None),
        ok(),
    ]);
    let response = layer.layer(upstream.clone()).oneshot(1).await.unwrap();
    assert_eq!((response.status().as_u16(), upstream.calls()), (429, 4));

    // The other way round: after two 429s, a 503 finds the default's two retries spent.
    let seen = Arc::clone(&give_ups);
    let upstream = Upstream::new([
        Step::Status(429, None),
        Step::Status(429, None),
        Step::Status(503, None),
        ok(),
    ]);
    let layer = RetryLayer::builder()
        .classifier(StatusClassifier::new())
        .max_retries(2)
        .backoff(Backoff::none())
        .class(
            FailureClass::RateLimited,
            brace_retry::ClassPolicy::new().max_retries(3),
        )
        .no_budget()
        .on_give_up(move |event| {
            seen.lock()
                .unwrap()
                .push((event.attempts(), event.reason(), event.outcome().class()));
        })
        .build();
    let response = layer.layer(upstream.clone()).oneshot(1).await.unwrap();
    assert_eq!((response.status().as_u16(), upstream.calls()), (503, 3));
    assert_eq!(
        *give_ups.lock().unwrap(),
        [(3, GiveUpReason::MaxRetries, FailureClass::Overloaded)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_class_policy_leaves_out_what_the_layer_sets() {
    // Only the count is the class's: the backoff is the layer's, set after the class.
    let upstream = Upstream::new([Step::Status(429, None)]);
    RetryLayer::builder()
        .classifier(StatusClassifier::new())
        .class(
            FailureClass::RateLimited,
            brace_retry::ClassPolicy::new().max_retries(3),
        )
        .backoff(Backoff::constant(MS * 250))
        .no_budget()
        .build()
        .layer(upstream.clone())
        .oneshot(1)
        .await
        .unwrap();
    assert_eq!(upstream.gaps(), [MS * 250; 3]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_waited_when_longer_than_the_class_backoff() {
    let upstream = Upstream::new([
        Step::Status(429, Some("5".into())),
        Step::Status(429, Some("1".into())),
        ok(),
    ]);
    rate_limits_four_times_two_seconds_apart()
        .layer(upstream.clone())
        .oneshot(1)
        .await
        .unwrap();
    // The server's 5s over the class's 2s; then the class's 2s over the server's 1s.
    assert_eq!(
        upstream.gaps(),
        [Duration::from_secs(5), Duration::from_secs(2)]
    );
}

#[tokio::test(start_paused = true)]
async fn attempt_timeouts_follow_the_timeout_class_policy() {
    let upstream = Upstream::new([Step::Hang]);
    let err = RetryLayer::builder()
        .max_retries(5)
        .backoff(Backoff::constant(Duration::from_secs(1)))
        .class(
            FailureClass::Timeout,
            brace_retry::ClassPolicy::new()
                .max_retries(1)
                .backoff(Backoff::constant(MS * 50)),
        )
        .attempt_timeout(MS * 300)
        .no_budget()
        .build()
        .layer(upstream.clone())
        .oneshot(1)
        .await
        .unwrap_err();
    assert_eq!(upstream.calls(), 2);
    assert_eq!(upstream.gaps(), [MS * 350]);
    let exhausted = exhausted(&err);
    assert_eq!(exhausted.attempts(), 2);
    assert!(
        exhausted
            .last_error()
            .is::<tower::timeout::error::Elapsed>()
    );
}

#[tokio::test(start_paused = true)]
async fn the_request_is_kept_while_any_class_may_still_retry() {
    let clones = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    // No retries by default, two for rate limits: the request is still copied for them.
    let limited = tower::service_fn(move |_: Counted| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let code = if n < 2 { 429 } else { 200 };
            Ok::<_, BoxError>(http::Response::builder().status(code).body(()).unwrap())
        }
    });
    let response = RetryLayer::builder()
        .classifier(StatusClassifier::new())
        .max_retries(0)
        .class(
            FailureClass::RateLimited,
            brace_retry::ClassPolicy::new().max_retries(2),
        )
        .backoff(Backoff::none())
        .no_budget()
        .build()
        .layer(limited)
        .oneshot(Counted(Arc::clone(&clones)))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(clones.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn config_class_sections_reach_the_layer() {
    let config: RetryConfig = serde_saphyr::from_str(
        "\
max_retries: 1
base_delay: 100ms
on_error: [429, 503, timeout]
rate_limited: { max_retries: 3, base_delay: 1s, backoff: exponential, factor: 2 }
budget: null
",
    )
    .unwrap();
    let upstream = Upstream::new([Step::Status(429, None)]);
    config
        .layer(StatusClassifier::new())
        .unwrap()
        .layer(upstream.clone())
        .oneshot(1)
        .await
        .unwrap();
    assert_eq!(
        upstream.gaps(),
        [
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(4)
        ]
    );

    let upstream = Upstream::new([Step::Status(503, None)]);
    config
        .layer(StatusClassifier::new())
        .unwrap()
        .layer(upstream.clone())
        .oneshot(1)
        .await
        .unwrap();
    assert_eq!(upstream.gaps(), [MS * 100]);
}

// ===== the call's one deadline (brace_core::deadline) =====

#[tokio::test(start_paused = true)]
async fn a_backoff_that_would_cross_the_deadline_above_gives_up_at_once() {
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&reasons);
    let upstream = Upstream::new([boom(), ok()]);
    // No deadline of its own: the one set above is what it keeps to.
    let retry = RetryLayer::builder()
        .backoff(Backoff::constant(Duration::from_secs(2)))
        .no_budget()
        .on_give_up(move |event| seen.lock().unwrap().push(event.reason()))
        .build();
    let service = DeadlineLayer::new(Duration::from_secs(1)).layer(retry.layer(upstream.clone()));
    let start = Instant::now();
    let err = service.oneshot(1).await.unwrap_err();

    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(upstream.calls(), 1);
    assert_eq!(exhausted(&err).reason(), GiveUpReason::Deadline);
    assert_eq!(exhausted(&err).attempts(), 1);
    assert_eq!(*reasons.lock().unwrap(), [GiveUpReason::Deadline]);
}

#[tokio::test(start_paused = true)]
async fn backoffs_stop_at_the_deadline_above_as_at_their_own() {
    let upstream = Upstream::new([boom()]);
    let retry = RetryLayer::builder()
        .max_retries(10)
        .backoff(Backoff::constant(MS * 400))
        .deadline(Duration::from_secs(30))
        .no_budget()
        .build();
    let service = DeadlineLayer::new(Duration::from_secs(1)).layer(retry.layer(upstream.clone()));
    let start = Instant::now();
    let err = service.oneshot(1).await.unwrap_err();

    // Attempts at 0, 400ms and 800ms; a wait until 1200ms would cross the 1s above.
    assert_eq!(upstream.calls(), 3);
    assert_eq!(start.elapsed(), MS * 800);
    assert_eq!(exhausted(&err).reason(), GiveUpReason::Deadline);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_that_would_cross_the_deadline_gives_up_at_once() {
    let upstream = Upstream::new([Step::Status(429, Some("5".into())), ok()]);
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&reasons);
    let retry = RetryLayer::builder()
        .classifier(StatusClassifier::new())
        .backoff(Backoff::constant(MS * 10))
        .on_give_up(move |event| seen.lock().unwrap().push(event.reason()))
        .no_budget()
        .build();
    let service = DeadlineLayer::new(Duration::from_secs(3)).layer(retry.layer(upstream.clone()));
    let response = service.oneshot(1).await.unwrap();

    assert_eq!(response.status(), 429);
    assert_eq!(upstream.calls(), 1);
    assert_eq!(*reasons.lock().unwrap(), [GiveUpReason::Deadline]);
}

/// An upstream answering with the deadline it sees, after `wait`.
fn reports_remaining(
    wait: Duration,
    seen: &Arc<Mutex<Vec<Option<Duration>>>>,
) -> impl Service<u32, Response = (), Error = BoxError, Future: Send> + Clone {
    let seen = Arc::clone(seen);
    tower::service_fn(move |_: u32| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().unwrap().push(deadline::remaining());
            tokio::time::sleep(wait).await;
            Err::<(), BoxError>("boom".into())
        }
    })
}

#[tokio::test(start_paused = true)]
async fn the_inner_service_sees_the_tightened_deadline() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let retry = |builder: brace_retry::RetryLayerBuilder| {
        builder
            .max_retries(1)
            .backoff(Backoff::constant(MS * 500))
            .no_budget()
            .build()
    };
    let run = |outer: Duration, retry: RetryLayer| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().unwrap().clear();
            let inner = reports_remaining(Duration::ZERO, &seen);
            let _ = DeadlineLayer::new(outer)
                .layer(retry.layer(inner))
                .oneshot(1)
                .await;
            seen.lock().unwrap().clone()
        }
    };
    let secs = |s: u64| Some(Duration::from_secs(s));

    // Its own 4s under 10s above: 4s, then 3.5s after the first wait.
    let own = retry(RetryLayer::builder().deadline(Duration::from_secs(4)));
    assert_eq!(
        run(Duration::from_secs(10), own.clone()).await,
        [secs(4), Some(MS * 3500)]
    );
    // 2s above is earlier than its own 4s.
    assert_eq!(
        run(Duration::from_secs(2), own).await,
        [secs(2), Some(MS * 1500)]
    );
    // An attempt timeout of 1s is each attempt's deadline.
    let attempt = retry(RetryLayer::builder().attempt_timeout(Duration::from_secs(1)));
    assert_eq!(
        run(Duration::from_secs(10), attempt).await,
        [secs(1), secs(1)]
    );
    // No bounds of its own: the deadline above passes through.
    let plain = retry(RetryLayer::builder());
    assert_eq!(
        run(Duration::from_secs(3), plain.clone()).await,
        [secs(3), Some(MS * 2500)]
    );
    // And none at all without one above.
    let inner = reports_remaining(Duration::ZERO, &seen);
    seen.lock().unwrap().clear();
    let _ = plain.layer(inner).oneshot(1).await;
    assert_eq!(*seen.lock().unwrap(), [None, None]);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_timeout_is_cut_at_the_deadline_above_and_not_retried() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let inner = reports_remaining(Duration::MAX, &seen);
    let retry = RetryLayer::builder()
        .max_retries(3)
        .backoff(Backoff::none())
        .attempt_timeout(Duration::from_secs(10))
        .no_budget()
        .build();
    let start = Instant::now();
    // A scope without a timer of its own: the retry layer's attempt timer is what cuts.
    let err = deadline::within(
        start + Duration::from_secs(3),
        retry.layer(inner).oneshot(1),
    )
    .await
    .unwrap_err();

    assert_eq!(start.elapsed(), Duration::from_secs(3));
    let exceeded = err
        .downcast_ref::<DeadlineExceeded>()
        .unwrap_or_else(|| panic!("expected DeadlineExceeded, got {err}"));
    assert_eq!(exceeded.after(), Duration::from_secs(3));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// Answers from a shared script and counts how often it was cloned.
struct CountedClones {
    clones: Arc<AtomicUsize>,
    failures_left: Arc<AtomicUsize>,
}

impl Clone for CountedClones {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Self {
            clones: self.clones.clone(),
            failures_left: self.failures_left.clone(),
        }
    }
}

impl Service<u32> for CountedClones {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u32) -> Self::Future {
        let failed = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        std::future::ready(if failed {
            Err("transient".into())
        } else {
            Ok(request)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn calls_clone_the_inner_service_once_and_retries_reuse_their_instances() {
    let clones = Arc::new(AtomicUsize::new(0));
    let failures_left = Arc::new(AtomicUsize::new(0));
    let mut service = RetryLayer::builder()
        .classifier(|result: Result<&u32, &BoxError>| match result {
            Ok(_) => Outcome::success(),
            Err(_) => Outcome::transient(),
        })
        .max_retries(1)
        .backoff(Backoff::none())
        .no_budget()
        .build()
        .layer(CountedClones {
            clones: clones.clone(),
            failures_left: failures_left.clone(),
        });
    for n in 0..20 {
        assert_eq!(service.ready().await.unwrap().call(n).await.unwrap(), n);
    }
    // tower's retry (and this layer before) cloned the inner service for every call: 20.
    assert_eq!(clones.load(Ordering::SeqCst), 1, "only the retry template");
    for n in 0..20 {
        failures_left.store(1, Ordering::SeqCst);
        assert_eq!(service.ready().await.unwrap().call(n).await.unwrap(), n);
    }
    // Twenty retries, one after another: one instance, cloned once and given back each time.
    assert_eq!(clones.load(Ordering::SeqCst), 2);
}
