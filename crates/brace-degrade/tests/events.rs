//! What the degrade layer logs through `tracing`: each level change once (a warning when
//! failures drop it, information when it recovers or is set by hand) with both levels and
//! the cause; the cache decision at the cached level (debug); an answer from the static
//! level (information).

mod support;

use brace_core::BoxError;
use brace_degrade::DegradeLayer;
use brace_testing::Capture;
use support::{Backend, Mode, Req, Resp};
use tower::{Layer, Service, ServiceExt};

fn layer() -> DegradeLayer<Req> {
    DegradeLayer::builder()
        .config(support::config())
        .build()
        .unwrap()
}

async fn ask<S>(svc: &mut S, req: Req) -> Result<Resp, BoxError>
where
    S: Service<Req, Response = Resp, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

/// `(level, from, to, cause)` of each level change logged.
fn changes(capture: &Capture) -> Vec<(String, String, String, String)> {
    capture
        .named("degradation level changed")
        .iter()
        .map(|event| {
            let text = |value: &serde_json::Value| value.as_str().unwrap().to_owned();
            let fields = &event["fields"];
            (
                text(&event["level"]),
                text(&fields["from"]),
                text(&fields["to"]),
                text(&fields["cause"]),
            )
        })
        .collect()
}

fn change(level: &str, from: &str, to: &str, cause: &str) -> (String, String, String, String) {
    (level.into(), from.into(), to.into(), cause.into())
}

#[tokio::test(start_paused = true)]
async fn a_drop_on_failures_warns_and_a_recovery_informs() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.subscriber());
    let backend = Backend::new(Mode::FailingModel("big"));
    let layer = layer();
    let mut svc = layer.clone().layer(backend.service());
    for _ in 0..3 {
        ask(&mut svc, Req::new("q")).await.unwrap();
    }
    assert_eq!(layer.handle().level().name(), "reduced");
    backend.set(Mode::Healthy);
    // Five successes at the reduced level, then the probe one level up recovers.
    for _ in 0..6 {
        ask(&mut svc, Req::new("q")).await.unwrap();
    }
    assert_eq!(layer.handle().level().name(), "full");

    assert_eq!(
        changes(&capture),
        [
            change("WARN", "full", "reduced", "failures"),
            change("INFO", "reduced", "full", "recovered"),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn cache_decisions_and_static_answers_are_logged() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.subscriber());
    let backend = Backend::new(Mode::Healthy);
    let layer = layer();
    let mut svc = layer.clone().layer(backend.service());
    ask(&mut svc, Req::new("hello")).await.unwrap();
    // Answers at the top level say nothing.
    assert!(capture.events().is_empty(), "{:?}", capture.events());

    layer.handle().pin("cached").unwrap();
    ask(&mut svc, Req::new("hello")).await.unwrap();
    ask(&mut svc, Req::new("never asked")).await.unwrap();

    assert_eq!(
        changes(&capture),
        [change("INFO", "full", "cached", "manual")]
    );
    let decisions: Vec<(String, String, String)> = capture
        .events()
        .iter()
        .filter(|event| event["fields"]["message"] != "degradation level changed")
        .map(|event| {
            let text = |value: &serde_json::Value| value.as_str().unwrap().to_owned();
            (
                text(&event["level"]),
                text(&event["fields"]["message"]),
                text(&event["fields"]["level"]),
            )
        })
        .collect();
    let row = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        decisions,
        [
            row("DEBUG", "cache hit", "cached"),
            row("DEBUG", "cache miss", "cached"),
            row("INFO", "static answer", "offline"),
        ]
    );
}
