//! `AnthropicClient` against a scripted server on 127.0.0.1: the request on the wire, whole
//! and streamed answers, and every failure mapped to the right `LlmErrorKind`.

mod anthropic_support;

use std::time::Duration;

use anthropic_support::{End, Reply, Server, error_cases, fixture};
use brace_llm::{
    ChatChunk, ChatRequest, FinishReason, LlmError, LlmErrorKind, Message, ResponseBody,
};
use brace_providers::ProviderApi;
use brace_providers::anthropic::AnthropicClient;
use brace_providers::provider::{ApiKey, ClientConfig};
use futures::StreamExt;
use tower::{Service, ServiceExt};

const KEY: &str = "sk-ant-api03-SECRETSECRET0123456789";

fn config(server: &Server) -> ClientConfig {
    ClientConfig::new("anthropic", server.base.clone())
        .with_api_key(ApiKey::new(KEY))
        .with_model("fast", "claude-haiku-4-5")
        .with_timeout(Duration::from_secs(5))
        .with_stream_idle_timeout(Duration::from_secs(2))
}

fn client(server: &Server) -> AnthropicClient {
    AnthropicClient::new(config(server)).unwrap()
}

fn request() -> ChatRequest {
    ChatRequest::new(
        "claude-sonnet-4-5",
        vec![Message::system("Be brief."), Message::user("Hi")],
    )
}

async fn call(server: &Server, request: ChatRequest) -> Result<brace_llm::ChatResponse, LlmError> {
    client(server).oneshot(request).await
}

async fn collect(response: brace_llm::ChatResponse) -> Vec<Result<ChatChunk, LlmError>> {
    match response.body {
        ResponseBody::Stream(stream) => {
            stream.map(|item| item.map(ChatChunk::from)).collect().await
        }
        ResponseBody::Complete(_) => panic!("expected a stream"),
    }
}

fn assert_no_key(text: &str) {
    assert!(!text.contains("SECRETSECRET"), "key leaked: {text}");
}

#[tokio::test]
async fn sends_a_messages_request_with_headers_and_reads_the_answer() {
    let server = Server::start(vec![Reply::json(
        200,
        fixture("anthropic/response_text.json"),
    )])
    .await;
    let response = call(&server, request()).await.unwrap();
    assert_eq!(&*response.meta.provider, "anthropic");
    assert_eq!(response.meta.model, "claude-sonnet-4-5-20250929");
    let completion = response.completion().unwrap();
    assert_eq!(completion.text(), "Hi! My name is Claude. How can I help?");
    // Anthropic's JSON is not OpenAI's: nothing is kept to forward, the completion is
    // written out for an OpenAI-compatible caller.
    let ResponseBody::Complete(body) = &response.body else {
        panic!("expected a whole completion");
    };
    assert!(body.json().is_none());

    let seen = &server.requests()[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), Some(KEY));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert!(seen.header("authorization").is_none());
    let body = seen.json();
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(body["system"], "Be brief.");
    assert_eq!(body["max_tokens"], 4096);
}

#[tokio::test]
async fn maps_the_model_and_uses_the_configured_max_tokens() {
    let server = Server::start(vec![Reply::json(
        200,
        fixture("anthropic/response_text.json"),
    )])
    .await;
    let client = client(&server).with_default_max_tokens(300);
    let mut request = request();
    request.model = "fast".into();
    client.oneshot(request).await.unwrap();
    let body = server.requests()[0].json();
    assert_eq!(body["model"], "claude-haiku-4-5");
    assert_eq!(body["max_tokens"], 300);
}

#[tokio::test]
async fn streams_tool_calls_as_chunks() {
    let server = Server::start(vec![Reply::sse(
        &fixture("anthropic/stream_tool_use.sse"),
        End::Clean,
    )])
    .await;
    let response = call(&server, request().with_stream(true)).await.unwrap();
    assert!(response.is_stream());
    assert_eq!(response.meta.model, "claude-sonnet-4-5-20250929");
    let completion = response.into_completion().await.unwrap();
    let choice = &completion.choices[0];
    assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
    let calls = choice.message.tool_calls.as_ref().unwrap();
    assert_eq!(calls[0].function.name, "get_weather");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&calls[0].function.arguments).unwrap(),
        serde_json::json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
    let seen = &server.requests()[0];
    assert_eq!(seen.json()["stream"], true);
    assert_eq!(seen.header("accept"), Some("text/event-stream"));
}

#[tokio::test]
async fn a_whole_answer_to_a_streamed_request_is_replayed_as_a_stream() {
    let server = Server::start(vec![Reply::json(
        200,
        fixture("anthropic/response_text.json"),
    )])
    .await;
    let response = call(&server, request().with_stream(true)).await.unwrap();
    assert!(response.is_stream());
    let completion = response.into_completion().await.unwrap();
    assert_eq!(completion.text(), "Hi! My name is Claude. How can I help?");
}

#[tokio::test]
async fn every_error_fixture_maps_to_its_kind_with_retry_after() {
    for case in error_cases("anthropic") {
        let server = Server::start(vec![case.reply()]).await;
        let err = call(&server, request()).await.unwrap_err();
        assert_eq!(format!("{:?}", err.kind()), case.kind, "{}", case.name);
        assert_eq!(err.status(), Some(case.status), "{}", case.name);
        assert_eq!(err.provider(), Some("anthropic"), "{}", case.name);
        assert_eq!(
            err.retry_after(),
            case.retry_after_ms.map(Duration::from_millis),
            "{}",
            case.name
        );
    }
}

#[tokio::test]
async fn gateway_errors_map_by_status() {
    let cases = [
        (
            408,
            r#"{"type":"error","error":{"type":"timeout_error","message":"Request timed out"}}"#,
            LlmErrorKind::Timeout,
        ),
        (
            502,
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
            LlmErrorKind::Server,
        ),
        (
            503,
            r#"{"type":"error","error":{"type":"api_error","message":"Service unavailable"}}"#,
            LlmErrorKind::Overloaded,
        ),
        (
            504,
            r#"{"type":"error","error":{"type":"timeout_error","message":"Stream timeout"}}"#,
            LlmErrorKind::Timeout,
        ),
        (
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            LlmErrorKind::Overloaded,
        ),
    ];
    for (status, body, kind) in cases {
        let server = Server::start(vec![Reply::json(status, body)]).await;
        let err = call(&server, request()).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{status}");
    }
}

#[tokio::test]
async fn rate_limit_carries_retry_after() {
    let server = Server::start(vec![
        Reply::json(429, r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#)
            .with_header("retry-after", "17"),
    ])
    .await;
    let err = call(&server, request()).await.unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(17)));
    assert_eq!(err.code(), Some("rate_limit_error"));
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_answers_times_out() {
    let server = Server::start(vec![Reply::Hang]).await;
    let err = call(&server, request()).await.unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Timeout);
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_stalls_times_out() {
    let events = fixture("anthropic/stream_text.sse");
    let server = Server::start(vec![Reply::sse(&events[..events.len() / 2], End::Stall)]).await;
    let response = call(&server, request().with_stream(true)).await.unwrap();
    let items = collect(response).await;
    assert!(items.iter().any(Result::is_ok));
    assert_eq!(
        items.last().unwrap().as_ref().unwrap_err().kind(),
        LlmErrorKind::Timeout
    );
}

#[tokio::test]
async fn a_dropped_connection_is_a_connect_error() {
    let server = Server::start(vec![Reply::Drop]).await;
    let err = call(&server, request()).await.unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Connect);
    assert_eq!(err.provider(), Some("anthropic"));
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client =
        AnthropicClient::new(ClientConfig::new("anthropic", base).with_api_key(ApiKey::new(KEY)))
            .unwrap();
    let err = client.oneshot(request()).await.unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Connect);
}

#[tokio::test]
async fn malformed_json_is_a_malformed_response() {
    for body in ["{\"id\":\"msg_1\",\"content\":[", "<html>oops</html>", ""] {
        let server = Server::start(vec![Reply::json(200, body)]).await;
        let err = call(&server, request()).await.unwrap_err();
        assert_eq!(err.kind(), LlmErrorKind::MalformedResponse, "{body}");
        assert_eq!(err.provider(), Some("anthropic"));
    }
}

#[tokio::test]
async fn a_stream_cut_mid_way_ends_with_an_error() {
    let events = fixture("anthropic/stream_text.sse");
    let server = Server::start(vec![Reply::sse(&events[..events.len() / 2], End::Cut)]).await;
    let response = call(&server, request().with_stream(true)).await.unwrap();
    let items = collect(response).await;
    assert!(items[0].is_ok());
    let err = items.last().unwrap().as_ref().unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::StreamInterrupted, "{err}");
}

#[tokio::test]
async fn a_stream_that_ends_before_message_stop_is_interrupted() {
    let events = fixture("anthropic/stream_text.sse");
    let cut = events.find("event: content_block_stop").unwrap();
    let server = Server::start(vec![Reply::sse(&events[..cut], End::Clean)]).await;
    let response = call(&server, request().with_stream(true)).await.unwrap();
    let items = collect(response).await;
    let err = items.last().unwrap().as_ref().unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::StreamInterrupted);
    assert_eq!(err.provider(), Some("anthropic"));
}

#[tokio::test]
async fn an_error_event_in_a_stream_ends_it_with_overloaded() {
    let server = Server::start(vec![Reply::sse(
        &fixture("anthropic/stream_error.sse"),
        End::Clean,
    )])
    .await;
    let response = call(&server, request().with_stream(true)).await.unwrap();
    let items = collect(response).await;
    let text: String = items
        .iter()
        .filter_map(|item| item.as_ref().ok())
        .filter_map(|chunk| chunk.choices.first()?.delta.content.clone())
        .collect();
    assert_eq!(text, "Hello");
    let err = items.last().unwrap().as_ref().unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Overloaded);
    assert_eq!(err.provider(), Some("anthropic"));
}

#[tokio::test]
async fn an_error_event_before_any_content_fails_the_call() {
    let body = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let server = Server::start(vec![Reply::sse(body, End::Clean)]).await;
    let err = call(&server, request().with_stream(true))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Overloaded);
}

#[tokio::test]
async fn probe_lists_a_model_and_reports_failures() {
    let server = Server::start(vec![
        Reply::json(200, r#"{"data":[{"type":"model","id":"claude-sonnet-4-5"}],"has_more":true}"#),
        Reply::json(401, r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#),
    ])
    .await;
    let client = client(&server);
    client.probe().await.unwrap();
    let err = client.probe().await.unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Auth);
    let seen = &server.requests()[0];
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/v1/models?limit=1");
    assert_eq!(seen.header("x-api-key"), Some(KEY));
}

#[tokio::test]
async fn untranslatable_requests_fail_before_sending() {
    let server = Server::start(vec![Reply::Hang]).await;
    let mut client = client(&server);
    let mut assistant = Message::assistant("");
    assistant.tool_calls = Some(vec![brace_llm::ToolCall {
        id: "t".into(),
        kind: "function".into(),
        function: brace_llm::FunctionCall {
            name: "f".into(),
            arguments: "{".into(),
        },
    }]);
    let err = client
        .ready()
        .await
        .unwrap()
        .call(ChatRequest::new("c", vec![assistant]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::BadRequest);
    assert_eq!(err.provider(), Some("anthropic"));
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn no_api_key_in_debug_display_or_errors() {
    // A server that echoes the key back in its error message, as some proxies do.
    let echo = format!(
        r#"{{"type":"error","error":{{"type":"authentication_error","message":"invalid x-api-key: {KEY}"}}}}"#
    );
    let server = Server::start(vec![Reply::json(401, echo), Reply::Drop, Reply::Hang]).await;
    let client = client(&server);
    assert_no_key(&format!("{client:?}"));
    assert_no_key(&format!("{:?}", client.config()));
    let http = client.api().chat_request(&request()).unwrap();
    assert_no_key(&format!("{http:?}"));
    let mut errors = Vec::new();
    errors.push(client.clone().oneshot(request()).await.unwrap_err());
    errors.push(client.clone().oneshot(request()).await.unwrap_err());
    for err in &errors {
        assert_no_key(&format!("{err}"));
        assert_no_key(&format!("{err:?}"));
        assert_no_key(err.message());
    }
    assert_eq!(errors[0].kind(), LlmErrorKind::Auth);
}

#[tokio::test]
async fn a_missing_key_variable_is_a_config_error() {
    let config = ClientConfig::new("anthropic", "http://127.0.0.1:9")
        .with_api_key_env("BRACE_TEST_ANTHROPIC_KEY_THAT_IS_NOT_SET");
    let err = AnthropicClient::new(config).unwrap_err();
    assert!(
        err.to_string()
            .contains("BRACE_TEST_ANTHROPIC_KEY_THAT_IS_NOT_SET")
    );
    let err = AnthropicClient::new(ClientConfig::new("anthropic", "ftp://x")).unwrap_err();
    assert!(err.to_string().contains("http"));
}

#[tokio::test]
async fn a_stream_to_a_whole_request_is_read_whole() {
    let server = Server::start(vec![Reply::sse(
        &fixture("anthropic/stream_text.sse"),
        End::Clean,
    )])
    .await;
    let response = call(&server, request()).await.unwrap();
    assert_eq!(
        response.completion().unwrap().text(),
        "Hello! How can I help today?"
    );
}
