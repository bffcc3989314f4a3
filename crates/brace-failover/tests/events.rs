//! What failover logs through `tracing`: each provider that failed (a warning with the
//! provider and why), each move to the next provider (information), each hedge, and a
//! request every provider failed (a warning, once).

mod support;

use std::time::Duration;

use brace_core::BoxError;
use brace_failover::{FailoverService, HedgeConfig, Provider};
use brace_testing::Capture;
use support::{Sim, Status, Step, TestClassifier, new_log};
use tower::{Service, ServiceExt};

async fn send<S: Service<String, Error = BoxError>>(svc: &mut S) -> Result<S::Response, BoxError> {
    svc.ready().await?.call("hello".to_owned()).await
}

/// `(level, message, provider, reason)` of each event.
fn summary(capture: &Capture) -> Vec<(String, String, String, String)> {
    capture
        .events()
        .iter()
        .map(|event| {
            let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
            let fields = &event["fields"];
            (
                text(&event["level"]),
                text(&fields["message"]),
                text(&fields["provider"]),
                text(&fields["reason"]),
            )
        })
        .collect()
}

fn row(
    level: &str,
    message: &str,
    provider: &str,
    reason: &str,
) -> (String, String, String, String) {
    (level.into(), message.into(), provider.into(), reason.into())
}

#[tokio::test(start_paused = true)]
async fn each_failure_and_each_failover_are_logged_once() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.subscriber());
    let log = new_log();
    let mut svc = FailoverService::builder()
        .provider(Provider::new(
            "a",
            Sim::new("a", &log, |_| Step::fail(Status::new(503))),
        ))
        .provider(
            Provider::new("b", Sim::new("b", &log, |_| Step::fail(Status::new(500)))).priority(1),
        )
        .provider(Provider::new("c", Sim::new("c", &log, |_| Step::ok())).priority(2))
        .classifier(TestClassifier)
        .build()
        .unwrap();
    assert_eq!(send(&mut svc).await.unwrap(), "c");

    assert_eq!(
        summary(&capture),
        [
            row("WARN", "provider failed", "a", "status 503"),
            row("INFO", "failover", "b", ""),
            row("WARN", "provider failed", "b", "status 500"),
            row("INFO", "failover", "c", ""),
        ]
    );
    let tried: Vec<_> = capture
        .named("failover")
        .iter()
        .map(|event| event["fields"]["tried"].as_i64().unwrap())
        .collect();
    assert_eq!(tried, [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_request_every_provider_failed_is_logged_once() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.subscriber());
    let log = new_log();
    let mut svc = FailoverService::builder()
        .provider(Provider::new(
            "a",
            Sim::new("a", &log, |_| Step::fail(Status::new(503))),
        ))
        .provider(
            Provider::new("b", Sim::new("b", &log, |_| Step::fail(Status::new(502)))).priority(1),
        )
        .classifier(TestClassifier)
        .build()
        .unwrap();
    send(&mut svc).await.unwrap_err();

    let all = capture.named("all providers failed");
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["level"], "WARN");
    assert_eq!(all[0]["fields"]["called"], 2);
    assert_eq!(all[0]["fields"]["skipped"], 0);
    assert_eq!(capture.named("provider failed").len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_is_logged_with_its_provider_and_delay() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.subscriber());
    let log = new_log();
    let mut svc = FailoverService::builder()
        .provider(Provider::new(
            "slow",
            Sim::new("slow", &log, |_| Step::ok().after(Duration::from_secs(2))),
        ))
        .provider(
            Provider::new(
                "fast",
                Sim::new("fast", &log, |_| {
                    Step::ok().after(Duration::from_millis(30))
                }),
            )
            .priority(1),
        )
        .hedge(HedgeConfig::after(Duration::from_millis(100)))
        .build()
        .unwrap();
    assert_eq!(send(&mut svc).await.unwrap(), "fast");

    let hedges = capture.named("hedge");
    assert_eq!(hedges.len(), 1, "{hedges:?}");
    assert_eq!(hedges[0]["level"], "INFO");
    assert_eq!(hedges[0]["fields"]["provider"], "fast");
    assert_eq!(hedges[0]["fields"]["after_ms"], 100);
    // The hedge is not a failover, and the loser did not fail.
    assert_eq!(capture.events().len(), 1, "{:?}", capture.events());
}
