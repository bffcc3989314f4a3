//! What the gateway's logs say about one request: every event carries the request's span
//! (its `request_id`, the model asked for and, once answered, who answered), retries name the
//! provider, and a request every provider failed is logged once with its status.

use std::sync::Arc;

use brace_gateway::{Gateway, GatewayConfig};
use brace_llm::{ChatRequest, LlmErrorKind, Message};
use brace_sim::Behavior;
use brace_testing::Capture;
use serde_json::Value;
use tracing::Instrument;

const TWO_SIMS: &str = r"
providers:
  - name: primary
    kind: simulated
    model: big-model
    priority: 1
  - name: secondary
    kind: simulated
    model: medium-model
    priority: 2
fallback:
  max_retries: 1
  base_delay: 1ms
  max_delay: 2ms
circuit_breaker:
  failure_threshold: 100
degradation:
  # One pass through the providers: no second try at a lower level.
  fallback_attempts: 0
  auto:
    enabled: false
";

fn gateway() -> Arc<Gateway> {
    Gateway::build(GatewayConfig::from_yaml(TWO_SIMS).unwrap()).unwrap()
}

/// The request span of an HTTP request with id `id`, as the server makes it.
fn request_span(id: &str) -> tracing::Span {
    brace_gateway::telemetry::request_span(
        &http::Request::post("/v1/chat/completions")
            .header("x-request-id", id)
            .body(())
            .unwrap(),
    )
}

fn chat() -> ChatRequest {
    ChatRequest::new("demo", vec![Message::user("Hello")])
}

/// The request span's fields, as the event recorded them.
fn fields_of(event: &Value) -> &Value {
    &event["span"]
}

#[tokio::test(start_paused = true)]
async fn a_retried_and_failed_over_request_logs_each_step_inside_its_request_span() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.subscriber());
    let gateway = gateway();
    gateway
        .sim("primary")
        .unwrap()
        .set_behavior(Behavior::fail(LlmErrorKind::Server));

    let span = request_span("req-7");
    let (response, attempts) = gateway.call(chat()).instrument(span.clone()).await.unwrap();
    assert_eq!(&*response.meta.provider, "secondary");
    assert_eq!(attempts, 3);
    span.in_scope(|| tracing::info!("answered"));

    let steps: Vec<(String, String, String)> = capture
        .events()
        .iter()
        .filter(|event| event["level"] != "DEBUG")
        .map(|event| {
            assert_eq!(fields_of(event)["request_id"], "req-7", "{event}");
            assert_eq!(fields_of(event)["gen_ai.request.model"], "demo", "{event}");
            let fields = &event["fields"];
            let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
            (
                text(&event["level"]),
                text(&fields["message"]),
                text(
                    fields
                        .get("name")
                        .or(fields.get("provider"))
                        .unwrap_or(&Value::Null),
                ),
            )
        })
        .collect();
    let step = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        steps,
        [
            step("WARN", "retry", "primary"),
            step("WARN", "retries exhausted", "primary"),
            step("WARN", "provider failed", "primary"),
            step("INFO", "failover", "secondary"),
            step("INFO", "answered", ""),
        ]
    );
    let retry = &capture.named("retry")[0]["fields"];
    assert_eq!(retry["attempt"], 1);
    assert!(
        retry["reason"].as_str().unwrap().contains("server"),
        "{retry}"
    );
    // Once answered, the request span says who answered and how.
    let answered = &capture.named("answered")[0];
    assert_eq!(fields_of(answered)["brace.provider"], "secondary");
    assert_eq!(fields_of(answered)["gen_ai.response.model"], "medium-model");
    assert_eq!(fields_of(answered)["brace.attempts"], 3);
    assert_eq!(fields_of(answered)["brace.degradation.level"], "full");
    assert_eq!(fields_of(answered)["brace.cache.hit"], false);
}

#[tokio::test(start_paused = true)]
async fn each_attempt_runs_in_an_attempt_span_with_its_genai_attributes() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.subscriber_with_span_closes());
    let gateway = gateway();
    gateway
        .sim("primary")
        .unwrap()
        .set_behavior(Behavior::fail(LlmErrorKind::Server));
    gateway
        .call(chat())
        .instrument(request_span("req-8"))
        .await
        .unwrap();

    let attempts: Vec<Value> = capture
        .named("close")
        .into_iter()
        .filter(|event| event["span"]["name"] == "attempt")
        .collect();
    let seen: Vec<(i64, String, String, String)> = attempts
        .iter()
        .map(|event| {
            let span = &event["span"];
            assert_eq!(event["level"], "DEBUG");
            assert_eq!(span["gen_ai.operation.name"], "chat");
            assert_eq!(span["gen_ai.system"], "brace.simulated");
            assert_eq!(span["brace.circuit.state"], "closed");
            assert_eq!(span["brace.stream"], false);
            // Its parent is the request's span.
            assert_eq!(event["spans"][0]["request_id"], "req-8", "{event}");
            let text = |value: &Value| value.as_str().unwrap().to_owned();
            (
                span["brace.attempt"].as_i64().unwrap(),
                text(&span["brace.provider"]),
                text(&span["gen_ai.request.model"]),
                text(&span["brace.outcome"]),
            )
        })
        .collect();
    let attempt = |n: i64, provider: &str, model: &str, outcome: &str| {
        (n, provider.to_owned(), model.to_owned(), outcome.to_owned())
    };
    assert_eq!(
        seen,
        [
            attempt(1, "primary", "big-model", "server_error"),
            attempt(2, "primary", "big-model", "server_error"),
            attempt(3, "secondary", "medium-model", "ok"),
        ]
    );
    assert_eq!(attempts[2]["span"]["gen_ai.response.model"], "medium-model");
    assert!(
        attempts[2]["span"]["gen_ai.usage.output_tokens"]
            .as_i64()
            .unwrap()
            > 0
    );
    assert_eq!(attempts[0]["span"]["error.type"], "server_error");

    // The retry is decided between two attempts: it is logged in the request's span alone.
    let retry = &capture.named("retry")[0];
    let names: Vec<&str> = retry["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|span| span["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["request"]);
}

#[tokio::test(start_paused = true)]
async fn a_request_every_provider_failed_is_logged_once_with_its_status() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.subscriber());
    let gateway = gateway();
    for name in ["primary", "secondary"] {
        gateway
            .sim(name)
            .unwrap()
            .set_behavior(Behavior::fail(LlmErrorKind::Server));
    }
    let span = request_span("req-9");
    let err = gateway
        .call(chat())
        .instrument(span.clone())
        .await
        .unwrap_err();
    assert_eq!(err.status(), 503);

    let all = capture.named("all providers failed");
    assert_eq!(all.len(), 1, "{:#?}", capture.events());
    assert_eq!(all[0]["fields"]["called"], 2);
    let failed = capture.named("request failed");
    assert_eq!(failed.len(), 1, "{:?}", capture.events());
    assert_eq!(failed[0]["level"], "WARN");
    assert_eq!(failed[0]["fields"]["status"], 503);
    assert_eq!(failed[0]["fields"]["attempts"], 4);
    assert_eq!(fields_of(&failed[0])["request_id"], "req-9");
    span.in_scope(|| tracing::info!("answered"));
    let answered = &capture.named("answered")[0];
    assert_eq!(fields_of(answered)["http.response.status_code"], 503);
    assert_eq!(fields_of(answered)["error.type"], "503");
}

#[tokio::test(start_paused = true)]
async fn a_shed_request_is_logged_once_with_its_scope() {
    use brace_gateway::limits::{BulkheadLayer, InFlightLimitLayer};
    use brace_gateway::metrics::Metrics;
    use tower::{Layer, Service, ServiceExt};

    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.subscriber());

    // A provider's bulkhead of one: the second call while the first hangs is shed.
    let hang = tower::service_fn(|_: ChatRequest| {
        std::future::pending::<Result<brace_llm::ChatResponse, brace_core::BoxError>>()
    });
    let mut bulkhead = BulkheadLayer::new("narrow", 1, Metrics::new()).layer(hang);
    let _first = bulkhead.ready().await.unwrap().call(chat());
    bulkhead
        .ready()
        .await
        .unwrap()
        .call(chat())
        .await
        .unwrap_err();

    // The gateway's own bound of one request in flight.
    let hang = tower::service_fn(|_: http::Request<axum::body::Body>| {
        std::future::pending::<Result<axum::response::Response, std::convert::Infallible>>()
    });
    let mut gateway = InFlightLimitLayer::new(1, Metrics::new()).layer(hang);
    let _first = gateway
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(axum::body::Body::empty()));
    let shed = gateway
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(axum::body::Body::empty()))
        .await
        .unwrap();
    assert_eq!(shed.status(), 503);

    let events = capture.events();
    let shed: Vec<(String, String, String)> = events
        .iter()
        .filter(|event| {
            event["fields"]["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("request shed"))
        })
        .map(|event| {
            let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
            (
                text(&event["level"]),
                text(&event["fields"]["scope"]),
                text(&event["fields"]["provider"]),
            )
        })
        .collect();
    let row = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        shed,
        [
            row("WARN", "provider", "narrow"),
            row("WARN", "gateway", "")
        ],
        "{events:?}"
    );
}
