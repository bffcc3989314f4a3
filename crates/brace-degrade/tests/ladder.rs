//! One request's way down the ladder: reshaping, fallback, cached and static answers.

mod support;

use std::time::Duration;

use brace_core::degrade::Origin;
use brace_core::{BoxError, Outcome};
use brace_degrade::{DegradeConfig, DegradeLayer, DegradeLayerBuilder, NoLevelAnswered};
use support::Features;
use support::{Backend, Mode, Req, Resp};
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

fn rich_request() -> Req {
    Req {
        max_tokens: Some(4000),
        tools: true,
        images: true,
        ..Req::new("describe this picture")
    }
}

#[tokio::test]
async fn full_level_passes_the_request_unchanged_and_says_so() {
    let backend = Backend::new(Mode::Healthy);
    let mut svc = layer().layer(backend.service());
    let resp = ask(&mut svc, rich_request()).await.unwrap();
    assert_eq!(resp.seen.as_ref(), Some(&rich_request()));
    let degradation = resp.degradation.unwrap();
    assert_eq!((&*degradation.level, degradation.index), ("full", 0));
    assert_eq!(degradation.origin, Origin::Live);
    assert!(!degradation.is_degraded());
}

#[tokio::test]
async fn reduced_level_overrides_model_caps_tokens_and_removes_images() {
    let backend = Backend::new(Mode::Healthy);
    let layer = layer();
    layer.handle().pin("reduced").unwrap();
    let mut svc = layer.layer(backend.service());
    let resp = ask(&mut svc, rich_request()).await.unwrap();
    let seen = resp.seen.clone().unwrap();
    assert_eq!(seen.model, "mid");
    assert_eq!(seen.max_tokens, Some(1024));
    assert!(!seen.images);
    assert!(seen.tools, "reduced keeps tools");
    let degradation = resp.degradation.unwrap();
    assert_eq!(&*degradation.level, "reduced");
    assert_eq!(
        degradation.reshaped.removed,
        Features {
            images: true,
            ..Features::NONE
        }
    );
    assert_eq!(degradation.reshaped.model.as_deref(), Some("mid"));
    assert_eq!(degradation.reshaped.max_tokens, Some(1024));
}

#[tokio::test]
async fn minimal_level_removes_tools_and_keeps_a_smaller_max_tokens() {
    let backend = Backend::new(Mode::Healthy);
    let layer = layer();
    layer.handle().pin("minimal").unwrap();
    let mut svc = layer.layer(backend.service());
    let req = Req {
        max_tokens: Some(100),
        ..rich_request()
    };
    let resp = ask(&mut svc, req).await.unwrap();
    let seen = resp.seen.clone().unwrap();
    assert_eq!(seen.model, "small");
    assert_eq!(seen.max_tokens, Some(100), "the caller's smaller cap wins");
    assert!(!seen.tools && !seen.images);
    let reshaped = resp.degradation.unwrap().reshaped;
    assert!(reshaped.removed.tools && reshaped.removed.images);
    assert_eq!(reshaped.max_tokens, None, "max_tokens was not lowered");
}

#[tokio::test]
async fn a_failure_is_retried_once_at_the_next_level_down() {
    let backend = Backend::new(Mode::FailingModel("big"));
    let mut svc = layer().layer(backend.service());
    let resp = ask(&mut svc, Req::new("hello")).await.unwrap();
    assert_eq!(resp.level(), "reduced");
    assert_eq!(resp.text().await.unwrap(), "answer to hello by mid");
    let models: Vec<_> = backend.seen().into_iter().map(|r| r.model).collect();
    assert_eq!(models, ["big", "mid"]);
}

#[tokio::test]
async fn static_level_answers_when_every_level_below_fails() {
    let backend = Backend::new(Mode::Failing);
    let mut svc = layer().layer(backend.service());
    let resp = ask(&mut svc, Req::new("hello")).await.unwrap();
    assert_eq!(resp.level(), "offline");
    assert_eq!(resp.origin(), Origin::Static);
    assert_eq!(
        resp.text().await.unwrap(),
        brace_degrade::DEFAULT_STATIC_MESSAGE
    );
    assert_eq!(backend.calls(), 2, "one attempt and one fallback attempt");
}

#[tokio::test]
async fn more_fallback_attempts_try_more_live_levels() {
    let backend = Backend::new(Mode::FailingModel("big"));
    let config = DegradeConfig {
        fallback_attempts: 2,
        ..support::config()
    };
    backend.set(Mode::Failing);
    let mut svc = DegradeLayer::<Req>::builder()
        .config(config.clone())
        .build()
        .unwrap()
        .layer(backend.service());
    let resp = ask(&mut svc, Req::new("hello")).await.unwrap();
    assert_eq!(resp.level(), "offline");
    let models: Vec<_> = backend.seen().into_iter().map(|r| r.model).collect();
    assert_eq!(models, ["big", "mid", "small"]);
}

#[tokio::test(start_paused = true)]
async fn offline_level_answers_without_waiting_for_the_inner_service() {
    let (mock, mut handle) = tower_test::mock::pair::<Req, Resp>();
    handle.allow(0);
    let layer = layer();
    layer.handle().pin("offline").unwrap();
    let mut svc = layer.layer(mock);
    // The inner service is never ready; the offline level answers anyway (a wait for it
    // would hit the timeout, since paused time jumps ahead when everything is idle).
    let resp = tokio::time::timeout(Duration::from_secs(1), ask(&mut svc, Req::new("hello")))
        .await
        .expect("answered without the inner service")
        .unwrap();
    assert_eq!(resp.origin(), Origin::Static);
}

#[tokio::test]
async fn cached_level_answers_from_cache_and_marks_it() {
    let backend = Backend::new(Mode::Healthy);
    let layer = layer();
    let mut svc = layer.clone().layer(backend.service());
    let first = ask(&mut svc, Req::new("hello")).await.unwrap();
    assert_eq!(first.origin(), Origin::Live);

    layer.handle().pin("cached").unwrap();
    backend.set(Mode::Failing);
    let resp = ask(&mut svc, Req::new("hello")).await.unwrap();
    assert_eq!(resp.level(), "cached");
    assert_eq!(resp.origin(), Origin::Cache);
    assert_eq!(resp.text().await.unwrap(), "answer to hello by big");
    assert_eq!(backend.calls(), 1);
}

#[tokio::test]
async fn a_cache_miss_falls_to_the_next_level() {
    let backend = Backend::new(Mode::Healthy);
    let layer = layer();
    layer.handle().pin("cached").unwrap();
    let mut svc = layer.layer(backend.service());
    let resp = ask(&mut svc, Req::new("never asked")).await.unwrap();
    assert_eq!(resp.level(), "offline");
    assert_eq!(backend.calls(), 0);
}

#[tokio::test]
async fn a_request_that_fails_at_the_top_is_answered_from_cache() {
    let backend = Backend::new(Mode::Healthy);
    let config = DegradeConfig {
        fallback_attempts: 0,
        ..support::config()
    };
    let mut svc = DegradeLayer::<Req>::builder()
        .config(config.clone())
        .build()
        .unwrap()
        .layer(backend.service());
    ask(&mut svc, Req::new("hello")).await.unwrap();
    backend.set(Mode::Failing);
    let resp = ask(&mut svc, Req::new("hello")).await.unwrap();
    assert_eq!(resp.origin(), Origin::Cache);
}

#[tokio::test]
async fn sampled_requests_are_not_cached_by_default() {
    let backend = Backend::new(Mode::Healthy);
    let layer = layer();
    let mut svc = layer.clone().layer(backend.service());
    let sampled = Req {
        deterministic: false,
        ..Req::new("write a poem")
    };
    ask(&mut svc, sampled.clone()).await.unwrap();
    let cache = layer.cache().unwrap();
    let key = brace_degrade::CacheKey::of(&sampled).unwrap();
    assert!(!cache.contains(&key));

    let all = DegradeConfig {
        cache: brace_degrade::CacheConfig {
            admit: brace_degrade::Admit::All,
            ..Default::default()
        },
        ..support::config()
    };
    let layer = DegradeLayer::<Req>::builder()
        .config(all.clone())
        .build()
        .unwrap();
    let mut svc = layer.clone().layer(backend.service());
    ask(&mut svc, sampled).await.unwrap();
    assert!(layer.cache().unwrap().contains(&key));
}

#[tokio::test]
async fn an_error_that_is_the_callers_is_returned_without_falling_back() {
    let backend = Backend::new(Mode::Failing);
    let classify = |result: Result<&Resp, &BoxError>| match result {
        Ok(_) => Outcome::success(),
        Err(_) => Outcome::ignored(),
    };
    let layer = builder().classifier(classify).build().unwrap();
    let mut svc = layer.layer(backend.service());
    let err = ask(&mut svc, Req::new("hello")).await.unwrap_err();
    assert!(err.is::<support::BackendDown>());
    assert_eq!(backend.calls(), 1);
}

#[tokio::test]
async fn a_ladder_without_a_static_level_returns_the_last_error() {
    use brace_degrade::{Ladder, Level};
    use support::Shape;
    let backend = Backend::new(Mode::Failing);
    let ladder = Ladder::new(vec![
        Level::live("full", Shape::unchanged()),
        Level::cached("cached"),
    ])
    .unwrap();
    let layer = DegradeLayer::<Req>::new(ladder);
    let mut svc = layer.clone().layer(backend.service());
    let err = ask(&mut svc, Req::new("hello")).await.unwrap_err();
    assert!(err.is::<support::BackendDown>());

    layer.handle().pin("cached").unwrap();
    let err = ask(&mut svc, Req::new("hello")).await.unwrap_err();
    assert!(err.is::<NoLevelAnswered>());
}

#[tokio::test]
async fn without_fallback_to_static_a_failing_request_gets_its_real_error() {
    let backend = Backend::new(Mode::Failing);
    let config = DegradeConfig {
        fallback_to_static: false,
        ..support::config()
    };
    let layer = DegradeLayer::<Req>::builder()
        .config(config.clone())
        .build()
        .unwrap();
    let mut svc = layer.clone().layer(backend.service());
    let err = ask(&mut svc, Req::new("hello")).await.unwrap_err();
    assert!(err.is::<support::BackendDown>(), "{err}");
    assert_eq!(backend.calls(), 2, "the fallback level is still tried");

    // Once the static level is the current one, it answers.
    layer.handle().pin("offline").unwrap();
    let resp = ask(&mut svc, Req::new("hello")).await.unwrap();
    assert_eq!(resp.origin(), Origin::Static);
    assert_eq!(backend.calls(), 2);
}
