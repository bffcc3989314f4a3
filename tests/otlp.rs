//! Trace export over OTLP, checked by real receivers on 127.0.0.1 that decode what the
//! exporter sends with `opentelemetry-proto`: an OTLP/HTTP endpoint (axum) for the gateway's
//! spans, and an OTLP/gRPC one (tonic's generated service behind axum) for the gRPC export.
//!
//! One test sets the process's global subscriber (this binary's only such test).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value as AnyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use parking_lot::Mutex;
use prost::Message;
use serde_json::json;

use brace_gateway::telemetry::{OtlpProtocol, OtlpSettings, TelemetryConfig};
use brace_gateway::{Gateway, GatewayConfig};

/// Spans received, and the service names of their resources.
#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<Vec<String>>>,
}

impl Received {
    fn take(&self, export: ExportTraceServiceRequest) {
        for resource in export.resource_spans {
            if let Some(resource) = &resource.resource {
                for attribute in &resource.attributes {
                    if attribute.key == "service.name"
                        && let Some(AnyValue::StringValue(name)) = value(attribute)
                    {
                        self.services.lock().push(name.clone());
                    }
                }
            }
            for scope in resource.scope_spans {
                self.spans.lock().extend(scope.spans);
            }
        }
    }
}

fn value(attribute: &KeyValue) -> Option<&AnyValue> {
    attribute.value.as_ref()?.value.as_ref()
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body.
async fn http_receiver() -> (String, Received) {
    async fn traces(
        State(received): State<Received>,
        body: Bytes,
    ) -> impl axum::response::IntoResponse {
        let export = ExportTraceServiceRequest::decode(body).expect("a protobuf export request");
        received.take(export);
        (
            [("content-type", "application/x-protobuf")],
            ExportTraceServiceResponse::default().encode_to_vec(),
        )
    }
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(traces))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

/// An OTLP/gRPC receiver: tonic's generated `TraceService`, served over HTTP/2 by axum.
async fn grpc_receiver() -> (String, Received) {
    struct Collector(Received);

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            self.0.take(request.into_inner());
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }
    let received = Received::default();
    let service = TraceServiceServer::new(Collector(received.clone()));
    let app = axum::Router::new().route_service(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        service,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

/// An OpenAI-compatible upstream that fails every call (`fail`) or answers, and keeps the
/// `traceparent` of each request it gets.
async fn upstream(fail: bool) -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |headers: HeaderMap, body: axum::Json<serde_json::Value>| {
            let log = log.clone();
            async move {
                log.lock().push(
                    headers
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                );
                if fail {
                    return (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        axum::Json(json!({"error": {"message": "upstream broke", "type": "server_error"}})),
                    );
                }
                (
                    axum::http::StatusCode::OK,
                    axum::Json(json!({
                        "id": "chatcmpl-42",
                        "object": "chat.completion",
                        "created": 1,
                        "model": body["model"],
                        "choices": [{
                            "index": 0,
                            "message": {"role": "assistant", "content": "Hello from B"},
                            "finish_reason": "stop",
                        }],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
                    })),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1"), seen)
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(value)
}

fn str_attr<'a>(span: &'a Span, key: &str) -> &'a str {
    match attr(span, key) {
        Some(AnyValue::StringValue(value)) => value,
        other => panic!("`{key}` of `{}` is not a string: {other:?}", span.name),
    }
}

fn int_attr(span: &Span, key: &str) -> i64 {
    match attr(span, key) {
        Some(AnyValue::IntValue(value)) => *value,
        other => panic!("`{key}` of `{}` is not an integer: {other:?}", span.name),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_and_failed_over_request_exports_its_span_tree_with_the_callers_trace() {
    let (collector, received) = http_receiver().await;
    let (primary, primary_saw) = upstream(true).await;
    let (secondary, secondary_saw) = upstream(false).await;
    let telemetry = TelemetryConfig {
        otlp_endpoint: Some(collector),
        protocol: Some(OtlpProtocol::HttpProtobuf),
        service_name: Some("brace-otlp-test".into()),
        sample_ratio: Some(0.0),
    };
    let guard = brace_gateway::telemetry::init(false, true, &telemetry).unwrap();
    assert!(guard.is_exporting());

    let yaml = format!(
        r"
providers:
  - name: primary
    kind: openai-compatible
    model: model-a
    priority: 1
    base_url: {primary}
    timeout: 5s
  - name: secondary
    kind: openai-compatible
    model: model-b
    priority: 2
    base_url: {secondary}
    timeout: 5s
fallback:
  on_error: [500]
  max_retries: 1
  base_delay: 1ms
  max_delay: 2ms
circuit_breaker:
  failure_threshold: 100
degradation:
  auto:
    enabled: false
"
    );
    let gateway = Gateway::build(GatewayConfig::from_yaml(&yaml).unwrap()).unwrap();
    let (listener, addr) = brace_gateway::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(brace_gateway::serve(gateway, listener, async {
        let _ = stopped.await;
    }));

    let response = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&json!({"model": "demo", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-brace-provider"], "secondary");
    assert_eq!(response.headers()["x-brace-attempts"], "3");
    let _ = response.bytes().await.unwrap();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    guard.flush().await.unwrap();

    let spans = received.spans.lock().clone();
    assert!(
        received
            .services
            .lock()
            .iter()
            .all(|name| name == "brace-otlp-test"),
        "{:?}",
        received.services.lock()
    );
    // The caller sampled its trace: every span is in it, although the ratio is 0.
    assert!(!spans.is_empty());
    for span in &spans {
        assert_eq!(hex(&span.trace_id), TRACE_ID, "span `{}`", span.name);
    }
    let request = spans
        .iter()
        .find(|span| span.name == "POST /v1/chat/completions")
        .expect("the request span");
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(hex(&request.parent_span_id), CALLER_SPAN);
    assert_eq!(str_attr(request, "gen_ai.operation.name"), "chat");
    assert_eq!(str_attr(request, "gen_ai.request.model"), "demo");
    assert_eq!(str_attr(request, "gen_ai.response.model"), "model-b");
    assert_eq!(str_attr(request, "brace.provider"), "secondary");
    assert_eq!(int_attr(request, "brace.attempts"), 3);
    assert_eq!(int_attr(request, "http.response.status_code"), 200);
    assert_eq!(int_attr(request, "gen_ai.usage.input_tokens"), 7);
    assert_eq!(int_attr(request, "gen_ai.usage.output_tokens"), 3);
    assert_eq!(str_attr(request, "brace.degradation.level"), "full");
    assert_eq!(
        attr(request, "brace.cache.hit"),
        Some(&AnyValue::BoolValue(false))
    );

    // One child per upstream attempt, in order: the primary, its retry, the secondary.
    let mut attempts: Vec<&Span> = spans
        .iter()
        .filter(|span| span.parent_span_id == request.span_id)
        .collect();
    attempts.sort_by_key(|span| int_attr(span, "brace.attempt"));
    let names: Vec<_> = attempts.iter().map(|span| span.name.as_str()).collect();
    assert_eq!(names, ["chat model-a", "chat model-a", "chat model-b"]);
    let expected = [
        (1, "primary", "model-a", "server_error"),
        (2, "primary", "model-a", "server_error"),
        (3, "secondary", "model-b", "ok"),
    ];
    for (span, (number, provider, model, outcome)) in attempts.iter().zip(expected) {
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(int_attr(span, "brace.attempt"), number);
        assert_eq!(str_attr(span, "brace.provider"), provider);
        assert_eq!(str_attr(span, "gen_ai.system"), "openai");
        assert_eq!(str_attr(span, "gen_ai.operation.name"), "chat");
        assert_eq!(str_attr(span, "gen_ai.request.model"), model);
        assert_eq!(str_attr(span, "brace.outcome"), outcome);
        assert_eq!(str_attr(span, "brace.circuit.state"), "closed");
        assert_eq!(str_attr(span, "server.address"), "127.0.0.1");
        assert!(int_attr(span, "server.port") > 0);
    }
    let served = attempts[2];
    assert_eq!(str_attr(served, "gen_ai.response.model"), "model-b");
    assert_eq!(str_attr(served, "gen_ai.response.id"), "chatcmpl-42");
    assert_eq!(int_attr(served, "gen_ai.usage.input_tokens"), 7);
    assert_eq!(int_attr(served, "gen_ai.usage.output_tokens"), 3);
    assert_eq!(str_attr(attempts[0], "error.type"), "server_error");

    // The retry and the failover are events of the request span.
    let events: Vec<(&str, Option<&AnyValue>)> = request
        .events
        .iter()
        .map(|event| {
            let provider = event
                .attributes
                .iter()
                .find(|a| a.key == "provider" || a.key == "name")
                .and_then(value);
            (event.name.as_str(), provider)
        })
        .collect();
    let primary_name = AnyValue::StringValue("primary".into());
    let secondary_name = AnyValue::StringValue("secondary".into());
    for expected in [
        ("retry", Some(&primary_name)),
        ("retries exhausted", Some(&primary_name)),
        ("provider failed", Some(&primary_name)),
        ("failover", Some(&secondary_name)),
    ] {
        assert!(events.contains(&expected), "{expected:?} in {events:?}");
    }
    let retry = request
        .events
        .iter()
        .find(|event| event.name == "retry")
        .unwrap();
    let delay = retry
        .attributes
        .iter()
        .find(|a| a.key == "delay_ms")
        .and_then(value);
    assert!(
        matches!(delay, Some(AnyValue::IntValue(1..=2))),
        "{delay:?}"
    );

    // Each upstream request carried its attempt's span as the parent.
    let sent: Vec<Option<String>> = primary_saw
        .lock()
        .iter()
        .chain(secondary_saw.lock().iter())
        .cloned()
        .collect();
    let expected: Vec<Option<String>> = attempts
        .iter()
        .map(|span| Some(format!("00-{TRACE_ID}-{}-01", hex(&span.span_id))))
        .collect();
    assert_eq!(sent, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_grpc() {
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};

    let (collector, received) = grpc_receiver().await;
    let settings = OtlpSettings {
        endpoint: collector,
        protocol: OtlpProtocol::Grpc,
        service_name: "brace-grpc-test".into(),
        sample_ratio: 1.0,
    };
    let provider = brace_gateway::telemetry::tracer_provider(&settings).unwrap();
    let mut span = provider.tracer("grpc-test").start("grpc probe");
    span.set_attribute(opentelemetry::KeyValue::new("brace.attempt", 1_i64));
    span.end();
    let flushed = provider.clone();
    tokio::task::spawn_blocking(move || flushed.force_flush())
        .await
        .unwrap()
        .unwrap();
    let spans = received.spans.lock().clone();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0].name, "grpc probe");
    assert_eq!(int_attr(&spans[0], "brace.attempt"), 1);
    assert_eq!(*received.services.lock(), ["brace-grpc-test"]);
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || provider.shutdown()),
    )
    .await;
}
