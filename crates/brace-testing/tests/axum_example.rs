//! The `axum_compose` example, driven through its router: `cargo test --workspace` does not
//! run an example's own unit tests, so this test includes the example's file (its unit test
//! runs here too) and checks how its route answers when providers fail.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use brace::llm::LlmErrorKind;
use brace::sim::{Behavior, SimConfig, SimProvider};
use http_body_util::BodyExt;
use tower::ServiceExt;

#[path = "../../../examples/axum_compose.rs"]
#[allow(dead_code)] // the example's `main` is not called here
mod example;

fn sim(name: &str, behavior: Behavior) -> SimProvider {
    SimProvider::new(SimConfig::new(name).with_behavior(behavior))
}

fn ask(body: &'static str) -> Request<Body> {
    Request::post("/ask")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap()
}

async fn json(response: axum::response::Response) -> serde_json::Value {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_failing_primary_is_answered_by_the_fallback() {
    let primary = sim("primary", Behavior::fail(LlmErrorKind::Overloaded));
    let fallback = sim("fallback", Behavior::text("from the fallback"));
    let app = example::router(example::stack(primary.clone(), fallback.clone()));

    let response = app.oneshot(ask(r#"{"question":"hi"}"#)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let json = json(response).await;
    assert_eq!(json["answer"], "from the fallback");
    assert_eq!(json["provider"], "fallback");
    assert_eq!(json["model"], "sim-small");
    assert_eq!(primary.handle().calls(), 2, "one call and one retry");
    assert_eq!(fallback.handle().calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn every_provider_down_is_a_503() {
    let app = example::router(example::stack(
        sim("primary", Behavior::fail(LlmErrorKind::Overloaded)),
        sim("fallback", Behavior::fail(LlmErrorKind::Server)),
    ));
    let response = app.oneshot(ask(r#"{"question":"hi"}"#)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().get(header::RETRY_AFTER).is_none());
    let json = json(response).await;
    assert!(
        json["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{json}"
    );
}

#[tokio::test(start_paused = true)]
async fn every_provider_rate_limited_is_a_429_with_the_shortest_retry_after() {
    let app = example::router(example::stack(
        sim("primary", Behavior::rate_limited(Duration::from_secs(20))),
        sim("fallback", Behavior::rate_limited(Duration::from_secs(7))),
    ));
    let response = app.oneshot(ask(r#"{"question":"hi"}"#)).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[header::RETRY_AFTER], "7");
}

#[tokio::test]
async fn a_body_without_a_question_is_refused_before_any_provider_is_called() {
    let primary = sim("primary", Behavior::succeed());
    let fallback = sim("fallback", Behavior::succeed());
    let app = example::router(example::stack(primary.clone(), fallback.clone()));
    let response = app.oneshot(ask(r#"{"query":"hi"}"#)).await.unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());
    assert_eq!(primary.handle().calls() + fallback.handle().calls(), 0);
}
