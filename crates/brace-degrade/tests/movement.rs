//! The current level: automatic drop and recovery, manual pin, concurrent callers.

mod support;

use std::time::Duration;

use brace_core::BoxError;
use brace_core::degrade::Origin;
use brace_degrade::{Cause, DegradeLayer, DegradeLayerBuilder, LevelChange};
use support::{Backend, Mode, Req, Resp};
use tokio::sync::broadcast::Receiver;
use tower::{Layer, Service, ServiceExt};

fn layer() -> DegradeLayer<Req> {
    builder().build().unwrap()
}

fn builder() -> DegradeLayerBuilder<Req> {
    DegradeLayer::builder().config(support::config())
}

async fn ask<S>(svc: &mut S, req: Req) -> Result<Resp, BoxError>
where
    S: Service<Req, Response = Resp, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

fn changes(rx: &mut Receiver<LevelChange>) -> Vec<(String, String, Cause)> {
    let mut out = Vec::new();
    while let Ok(change) = rx.try_recv() {
        out.push((
            change.from().name().to_string(),
            change.to().name().to_string(),
            change.cause(),
        ));
    }
    out
}

fn step(from: &str, to: &str, cause: Cause) -> (String, String, Cause) {
    (from.to_string(), to.to_string(), cause)
}

#[tokio::test(start_paused = true)]
async fn level_drops_after_threshold_failures_within_the_window() {
    let backend = Backend::new(Mode::FailingModel("big"));
    let layer = layer();
    let handle = layer.handle();
    let mut events = handle.subscribe();
    let mut svc = layer.layer(backend.service());

    for _ in 0..2 {
        assert_eq!(
            ask(&mut svc, Req::new("q")).await.unwrap().level(),
            "reduced"
        );
    }
    assert_eq!(
        handle.level().name(),
        "full",
        "two failures are under the threshold"
    );
    ask(&mut svc, Req::new("q")).await.unwrap();
    assert_eq!(handle.level().name(), "reduced");
    assert_eq!(
        changes(&mut events),
        [step("full", "reduced", Cause::Failures)]
    );

    // Now requests start at the reduced level: the backend sees no more "big" calls.
    let before = backend.calls();
    ask(&mut svc, Req::new("q")).await.unwrap();
    assert_eq!(backend.calls(), before + 1);
    assert_eq!(backend.seen().last().unwrap().model, "mid");
}

#[tokio::test(start_paused = true)]
async fn failures_spread_over_more_than_the_window_do_not_drop_the_level() {
    let backend = Backend::new(Mode::FailingModel("big"));
    let layer = layer();
    let mut svc = layer.clone().layer(backend.service());
    for _ in 0..5 {
        ask(&mut svc, Req::new("q")).await.unwrap();
        ask(&mut svc, Req::new("q")).await.unwrap();
        tokio::time::advance(Duration::from_secs(11)).await;
    }
    assert_eq!(layer.handle().level().name(), "full");
}

#[tokio::test(start_paused = true)]
async fn level_recovers_after_a_run_of_successes_and_a_probe() {
    let backend = Backend::new(Mode::Healthy);
    let layer = layer();
    let handle = layer.handle();
    handle.set("reduced").unwrap();
    let mut events = handle.subscribe();
    let mut svc = layer.layer(backend.service());

    for _ in 0..5 {
        assert_eq!(
            ask(&mut svc, Req::new("q")).await.unwrap().level(),
            "reduced"
        );
    }
    assert_eq!(handle.level().name(), "reduced");
    // The sixth request is the probe, sent one level up.
    let resp = ask(&mut svc, Req::new("q")).await.unwrap();
    assert_eq!(resp.level(), "full");
    assert_eq!(handle.level().name(), "full");
    assert_eq!(
        changes(&mut events),
        [step("reduced", "full", Cause::Recovered)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_keeps_the_level_and_still_answers() {
    let backend = Backend::new(Mode::FailingModel("big"));
    let layer = layer();
    let handle = layer.handle();
    handle.set("reduced").unwrap();
    let mut svc = layer.layer(backend.service());
    for _ in 0..5 {
        ask(&mut svc, Req::new("q")).await.unwrap();
    }
    let probe = ask(&mut svc, Req::new("q")).await.unwrap();
    assert_eq!(
        probe.level(),
        "reduced",
        "the failed probe fell back a level"
    );
    assert_eq!(handle.level().name(), "reduced");
    let models: Vec<_> = backend.seen().into_iter().map(|r| r.model).collect();
    assert_eq!(models[5..], ["big", "mid"]);
    // The run of successes starts again: the next request is no probe.
    ask(&mut svc, Req::new("q")).await.unwrap();
    assert_eq!(backend.seen().last().unwrap().model, "mid");
}

#[tokio::test(start_paused = true)]
async fn auto_degrades_down_the_ladder_and_climbs_back_one_level_at_a_time() {
    let backend = Backend::new(Mode::Failing);
    let layer = layer();
    let handle = layer.handle();
    let mut events = handle.subscribe();
    let mut svc = layer.layer(backend.service());

    for _ in 0..20 {
        let resp = ask(&mut svc, Req::new("q")).await.unwrap();
        assert_eq!(resp.origin(), Origin::Static);
    }
    assert_eq!(handle.level().name(), "cached");
    assert_eq!(
        changes(&mut events),
        [
            step("full", "reduced", Cause::Failures),
            step("reduced", "minimal", Cause::Failures),
            step("minimal", "cached", Cause::Failures),
        ]
    );

    // At the cached level nothing reaches the backend until a probe is due.
    backend.set(Mode::Healthy);
    let calls = backend.calls();
    ask(&mut svc, Req::new("q")).await.unwrap();
    assert_eq!(backend.calls(), calls);

    tokio::time::advance(Duration::from_secs(31)).await;
    let resp = ask(&mut svc, Req::new("q")).await.unwrap();
    assert_eq!(
        resp.level(),
        "minimal",
        "the probe went to the live level above"
    );
    assert_eq!(handle.level().name(), "minimal");

    for _ in 0..20 {
        ask(&mut svc, Req::new("q")).await.unwrap();
    }
    assert_eq!(handle.level().name(), "full");
    assert_eq!(
        changes(&mut events),
        [
            step("cached", "minimal", Cause::Recovered),
            step("minimal", "reduced", Cause::Recovered),
            step("reduced", "full", Cause::Recovered),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_pinned_level_holds_against_failures_and_recovery() {
    let backend = Backend::new(Mode::Failing);
    let layer = layer();
    let handle = layer.handle();
    handle.pin("minimal").unwrap();
    let mut events = handle.subscribe();
    let mut svc = layer.layer(backend.service());

    for _ in 0..10 {
        ask(&mut svc, Req::new("q")).await.unwrap();
    }
    assert_eq!(handle.level().name(), "minimal");

    backend.set(Mode::Healthy);
    for _ in 0..10 {
        ask(&mut svc, Req::new("q")).await.unwrap();
        tokio::time::advance(Duration::from_secs(31)).await;
    }
    assert_eq!(handle.level().name(), "minimal");
    assert!(handle.is_pinned());
    assert!(changes(&mut events).is_empty());
    assert!(backend.seen().iter().all(|r| r.model == "small"));

    handle.release();
    for _ in 0..6 {
        ask(&mut svc, Req::new("q")).await.unwrap();
    }
    assert_eq!(handle.level().name(), "reduced");
}

#[tokio::test(start_paused = true)]
async fn the_callers_own_errors_do_not_count_toward_recovery() {
    let backend = Backend::new(Mode::Failing);
    let classify = |result: Result<&Resp, &BoxError>| match result {
        Ok(_) => brace_core::Outcome::success(),
        Err(_) => brace_core::Outcome::ignored(),
    };
    let layer = builder().classifier(classify).build().unwrap();
    let handle = layer.handle();
    handle.set("reduced").unwrap();
    let mut svc = layer.layer(backend.service());
    for _ in 0..12 {
        assert!(ask(&mut svc, Req::new("q")).await.is_err());
    }
    assert_eq!(handle.level().name(), "reduced");
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_lets_the_next_request_probe() {
    let (mock, mut inner) = tower_test::mock::pair::<Req, Resp>();
    let layer = layer();
    let handle = layer.handle();
    handle.set("reduced").unwrap();
    let mut svc = layer.layer(mock);
    tokio::time::advance(Duration::from_secs(31)).await;

    let probe = svc.ready().await.unwrap().call(Req::new("q"));
    let mut probe = tokio_test::task::spawn(probe);
    assert!(probe.poll().is_pending());
    let (req, _send) = inner.next_request().await.unwrap();
    assert_eq!(req.model, "big");
    drop(probe);

    let next = svc.ready().await.unwrap().call(Req::new("q"));
    let next = tokio::spawn(next);
    let (req, send) = inner.next_request().await.unwrap();
    assert_eq!(req.model, "big", "the next request is the probe");
    send.send_response(Resp::whole("ok"));
    assert_eq!(next.await.unwrap().unwrap().level(), "full");
    assert_eq!(handle.level().name(), "full");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_during_level_changes_all_get_an_answer() {
    let backend = Backend::new(Mode::FailingModel("big"));
    let layer = layer();
    let handle = layer.handle();
    let svc = layer.layer(backend.service());

    let mover = tokio::spawn(async move {
        let names = ["full", "offline", "reduced", "cached", "minimal"];
        for i in 0..200 {
            handle.set(names[i % names.len()]).unwrap();
            tokio::task::yield_now().await;
        }
    });
    let callers: Vec<_> = (0..200)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(Req::new(&format!("q{}", i % 7))).await })
        })
        .collect();
    for caller in callers {
        let resp = caller.await.unwrap().expect("every caller is answered");
        assert!(resp.degradation.is_some());
    }
    mover.await.unwrap();
}

#[tokio::test]
async fn manual_changes_are_reported_and_serialize_for_an_admin_endpoint() {
    let layer = layer();
    let handle = layer.handle();
    let mut events = handle.subscribe();
    assert_eq!(handle.pin("cached").unwrap().index(), 3);
    handle.pin("cached").unwrap();
    let change = events.try_recv().unwrap();
    assert!(events.try_recv().is_err(), "no event when the level stays");
    assert!(change.is_drop());
    assert_eq!(
        serde_json::to_value(&change).unwrap(),
        serde_json::json!({
            "from": { "index": 0, "name": "full" },
            "to": { "index": 3, "name": "cached" },
            "cause": "manual"
        })
    );
    assert!(handle.set("nowhere").is_err());
    handle.release();
    assert!(!handle.is_pinned());
    assert_eq!(handle.level().name(), "cached");
}
