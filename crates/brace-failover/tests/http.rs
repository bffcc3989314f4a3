//! FailoverService over `http` services judged by status code, and its configuration.

use std::convert::Infallible;
use std::time::Duration;

use brace_core::{BoxError, StatusClassifier};
use brace_failover::{
    FailoverConfig, FailoverService, MAX_PROVIDERS, Provider, ProviderHealth, Selection,
};
use http::{Request, Response, StatusCode};
use tower::util::BoxCloneService;
use tower::{ServiceExt, service_fn};

type Upstream = BoxCloneService<Request<String>, Response<String>, Infallible>;

fn upstream(status: StatusCode) -> Upstream {
    BoxCloneService::new(service_fn(move |_: Request<String>| async move {
        Ok(Response::builder()
            .status(status)
            .body(status.as_str().to_owned())
            .unwrap())
    }))
}

async fn send(
    svc: FailoverService<Upstream, StatusClassifier>,
) -> Result<Response<String>, BoxError> {
    svc.oneshot(Request::new(String::new())).await
}

fn failover(statuses: &[StatusCode]) -> FailoverService<Upstream, StatusClassifier> {
    FailoverService::builder()
        .providers(
            statuses
                .iter()
                .enumerate()
                .map(|(i, &status)| Provider::new(format!("p{i}"), upstream(status))),
        )
        .classifier(StatusClassifier::new())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn server_error_response_moves_on_to_the_next_provider() {
    let svc = failover(&[StatusCode::SERVICE_UNAVAILABLE, StatusCode::OK]);
    let response = send(svc.clone()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(svc.health()[0].failures, 1);
}

#[tokio::test(start_paused = true)]
async fn client_error_response_is_returned_without_failover() {
    let svc = failover(&[StatusCode::UNPROCESSABLE_ENTITY, StatusCode::OK]);
    let response = send(svc.clone()).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(svc.health()[1].calls, 0);
}

#[tokio::test(start_paused = true)]
async fn when_every_response_fails_the_last_one_is_returned() {
    let svc = failover(&[StatusCode::BAD_GATEWAY, StatusCode::TOO_MANY_REQUESTS]);
    let response = send(svc).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[test]
fn more_than_max_providers_is_a_build_error() {
    let providers =
        (0..=MAX_PROVIDERS).map(|i| Provider::new(format!("p{i}"), upstream(StatusCode::OK)));
    let err = FailoverService::builder()
        .providers(providers)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "65 providers given, a failover service takes at most 64"
    );
}

#[test]
fn config_reads_humane_durations_and_defaults_the_rest() {
    let config: FailoverConfig = serde_json::from_str(
        r#"{
            "selection": "least_latency",
            "track_latency": false,
            "hedge": { "delay": "150ms", "budget_ratio": 0.05 },
            "probe_interval": "10s"
        }"#,
    )
    .unwrap();
    assert_eq!(config.selection, Selection::LeastLatency);
    assert!(!config.track_latency);
    assert_eq!(config.ready_timeout, None);
    // Health is the circuit breaker's business: a `health` section here is a mistake.
    assert!(serde_json::from_str::<FailoverConfig>(r#"{"health": {}}"#).is_err());
    let hedge = config.hedge.unwrap();
    assert_eq!(hedge.delay, Some(Duration::from_millis(150)));
    assert_eq!(hedge.budget_ratio, 0.05);
    assert_eq!(config.probe_interval, Some(Duration::from_secs(10)));
}

#[tokio::test(start_paused = true)]
async fn health_snapshot_serializes_for_a_health_endpoint() {
    let svc = failover(&[StatusCode::SERVICE_UNAVAILABLE, StatusCode::OK]);
    send(svc.clone()).await.unwrap();
    let health: Vec<ProviderHealth> = svc.health();
    let json = serde_json::to_value(&health).unwrap();
    assert_eq!(json[0]["name"], "p0");
    assert_eq!(json[0]["healthy"], true);
    assert_eq!(json[0]["consecutive_failures"], 1);
    assert_eq!(json[0]["errors_by_kind"], serde_json::json!({}));
    assert_eq!(json[1]["successes"], 1);
}

#[tokio::test(start_paused = true)]
async fn boxed_providers_give_a_send_future_that_can_be_spawned() {
    fn assert_send<T: Send + 'static>(_: &T) {}
    // BoxCloneService is Send but not Sync.
    let svc = failover(&[StatusCode::SERVICE_UNAVAILABLE, StatusCode::OK]);
    let future = svc.oneshot(Request::new(String::new()));
    assert_send(&future);
    let response = tokio::spawn(future).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
