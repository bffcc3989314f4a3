//! What the layer logs through `tracing`: each retry once (a warning with the layer's name,
//! the failed attempt, the wait and why), and giving up once.

use std::time::Duration;

use brace_core::BoxError;
use brace_retry::{Backoff, RetryLayer};
use brace_testing::Capture;
use tower::{Layer, ServiceExt};

const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn each_retry_and_the_give_up_are_logged_once() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.subscriber());
    let layer = RetryLayer::builder()
        .name("primary")
        .max_retries(2)
        .backoff(Backoff::constant(MS * 50))
        .no_budget()
        .build();
    let service = layer.layer(tower::service_fn(|_: u32| async {
        Err::<(), BoxError>("upstream broke".into())
    }));
    service.oneshot(1).await.unwrap_err();

    let retries = capture.named("retry");
    assert_eq!(retries.len(), 2, "{retries:?}");
    for (event, attempt) in retries.iter().zip([1, 2]) {
        assert_eq!(event["level"], "WARN");
        assert_eq!(event["target"], "brace_retry::future");
        let fields = &event["fields"];
        assert_eq!(fields["name"], "primary");
        assert_eq!(fields["attempt"], attempt);
        assert_eq!(fields["delay_ms"], 50);
        assert_eq!(fields["reason"], "upstream broke");
    }
    let gave_up = capture.named("retries exhausted");
    assert_eq!(gave_up.len(), 1, "{gave_up:?}");
    assert_eq!(gave_up[0]["level"], "WARN");
    let fields = &gave_up[0]["fields"];
    assert_eq!(fields["name"], "primary");
    assert_eq!(fields["attempts"], 3);
    assert_eq!(fields["give_up"], "maximum retries reached");
    assert_eq!(fields["reason"], "upstream broke");
    assert_eq!(capture.events().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_server_hint_is_logged_with_the_retry() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.subscriber());
    let layer = RetryLayer::builder()
        .classifier(|result: Result<&u16, &BoxError>| match result {
            Ok(429) => brace_core::Outcome::transient().with_retry_after(Some(MS * 300)),
            Ok(_) => brace_core::Outcome::success(),
            Err(_) => brace_core::Outcome::failure(),
        })
        .max_retries(1)
        .backoff(Backoff::constant(MS * 10))
        .no_budget()
        .build();
    let mut answers = vec![200_u16, 429];
    let service = layer.layer(tower::service_fn(move |_: u32| {
        let status = answers.pop().unwrap_or(200);
        async move { Ok::<u16, BoxError>(status) }
    }));
    assert_eq!(service.oneshot(1).await.unwrap(), 200);

    let retries = capture.named("retry");
    assert_eq!(retries.len(), 1, "{retries:?}");
    let fields = &retries[0]["fields"];
    // Unnamed layers log no name.
    assert!(fields.get("name").is_none(), "{fields}");
    assert_eq!(fields["attempt"], 1);
    assert_eq!(fields["delay_ms"], 300);
    assert_eq!(fields["retry_after_ms"], 300);
    assert_eq!(fields["reason"], "response judged a failure (other)");
    assert!(capture.named("retries exhausted").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_first_success_logs_nothing() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.subscriber());
    let service = RetryLayer::builder()
        .name("primary")
        .build()
        .layer(tower::service_fn(|_: u32| async { Ok::<_, BoxError>(()) }));
    service.oneshot(1).await.unwrap();
    assert!(capture.events().is_empty(), "{:?}", capture.events());
}
