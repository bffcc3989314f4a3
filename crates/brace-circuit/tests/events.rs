//! What a breaker logs through `tracing`: each state change once (a warning when it opens,
//! information otherwise) with the breaker's name, both states and the cause; a refused call
//! at debug level.

mod common;

use std::time::Duration;

use brace_circuit::{CircuitBreakerLayer, CircuitState, SlidingWindow};
use brace_testing::Capture;
use common::{Call, Harness, judged};

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn each_transition_is_logged_once_with_its_cause() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.subscriber());
    let mut h = Harness::new(&judged(
        CircuitBreakerLayer::builder("primary")
            .sliding_window(SlidingWindow::Count(5))
            .minimum_calls(3)
            .failure_rate_threshold(50.0)
            .wait_in_open(5 * SECOND)
            .permitted_calls_in_half_open(1),
    ));
    h.calls(3, || Call::Fail).await;
    assert_eq!(h.handle.state(), CircuitState::Open);
    h.call(Call::Ok).await.unwrap_err();
    tokio::time::sleep(5 * SECOND).await;
    h.call(Call::Ok).await.unwrap();
    assert_eq!(h.handle.state(), CircuitState::Closed);
    h.handle.force_open();

    let transitions: Vec<_> = capture
        .named("circuit state changed")
        .into_iter()
        .map(|event| {
            let fields = &event["fields"];
            assert_eq!(fields["name"], "primary");
            (
                event["level"].as_str().unwrap().to_owned(),
                fields["from"].as_str().unwrap().to_owned(),
                fields["to"].as_str().unwrap().to_owned(),
                fields["cause"].as_str().unwrap().to_owned(),
                fields["wait_ms"].as_i64(),
            )
        })
        .collect();
    let expected = [
        ("WARN", "closed", "open", "server", Some(5_000)),
        ("INFO", "open", "half_open", "wait over", None),
        ("INFO", "half_open", "closed", "trial calls succeeded", None),
        ("WARN", "closed", "forced_open", "forced", None),
    ];
    let expected: Vec<_> = expected
        .into_iter()
        .map(|(level, from, to, cause, wait)| {
            (
                level.to_owned(),
                from.to_owned(),
                to.to_owned(),
                cause.to_owned(),
                wait,
            )
        })
        .collect();
    assert_eq!(transitions, expected);

    let refused = capture.named("call not permitted");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["level"], "DEBUG");
    assert_eq!(refused[0]["fields"]["name"], "primary");
    assert_eq!(refused[0]["fields"]["state"], "open");
    assert_eq!(refused[0]["fields"]["retry_after_ms"], 5_000);
}

#[tokio::test(start_paused = true)]
async fn calls_through_a_closed_breaker_log_nothing() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.subscriber());
    let mut h = Harness::new(&judged(CircuitBreakerLayer::builder("quiet")));
    h.calls(10, || Call::Ok).await;
    h.call(Call::Fail).await.unwrap_err();
    assert!(capture.events().is_empty(), "{:?}", capture.events());
}
