//! `GeminiClient` against a scripted server on 127.0.0.1: the request on the wire (key in
//! a header, never in the URL), whole and streamed answers, and every failure mapped to the
//! right `LlmErrorKind`.

#[path = "anthropic_support/mod.rs"]
mod support;

use std::time::Duration;

use brace_llm::{
    ChatChunk, ChatRequest, FinishReason, LlmError, LlmErrorKind, Message, ResponseBody,
};
use brace_providers::ProviderApi;
use brace_providers::gemini::GeminiClient;
use brace_providers::provider::{ApiKey, ClientConfig};
use futures::StreamExt;
use support::{End, Reply, Server, error_cases, fixture};
use tower::ServiceExt;

const KEY: &str = "AIzaSyD-SECRETSECRET0123456789";

fn config(server: &Server) -> ClientConfig {
    ClientConfig::new("gemini", server.base.clone())
        .with_api_key(ApiKey::new(KEY))
        .with_model("fast", "gemini-2.5-flash-lite")
        .with_timeout(Duration::from_secs(5))
        .with_stream_idle_timeout(Duration::from_secs(2))
}

fn client(server: &Server) -> GeminiClient {
    GeminiClient::new(config(server)).unwrap()
}

fn request() -> ChatRequest {
    ChatRequest::new(
        "gemini-2.5-flash",
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
async fn sends_generate_content_with_the_key_in_a_header() {
    let server = Server::start(vec![Reply::json(200, fixture("gemini/response_text.json"))]).await;
    let response = call(&server, request()).await.unwrap();
    assert_eq!(&*response.meta.provider, "gemini");
    assert_eq!(response.meta.model, "gemini-2.5-flash");
    assert_eq!(
        response.completion().unwrap().text(),
        "Cats are obligate carnivores: they need meat."
    );
    let seen = &server.requests()[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(
        seen.target,
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert!(!seen.target.contains("key="));
    assert_eq!(seen.header("x-goog-api-key"), Some(KEY));
    let body = seen.json();
    assert_eq!(body["systemInstruction"]["parts"][0]["text"], "Be brief.");
    assert_eq!(body["contents"][0]["parts"][0]["text"], "Hi");
}

#[tokio::test]
async fn maps_the_model_into_the_url() {
    let server = Server::start(vec![Reply::json(200, fixture("gemini/response_text.json"))]).await;
    let mut request = request();
    request.model = "fast".into();
    call(&server, request).await.unwrap();
    assert_eq!(
        server.requests()[0].target,
        "/v1beta/models/gemini-2.5-flash-lite:generateContent"
    );
}

#[tokio::test]
async fn a_model_name_that_is_not_one_is_refused_before_sending() {
    let server = Server::start(vec![Reply::Hang]).await;
    for model in ["../../v1/files", "gemini?x=1", ""] {
        let mut request = request();
        request.model = model.into();
        let err = call(&server, request).await.unwrap_err();
        assert_eq!(err.kind(), LlmErrorKind::BadRequest, "{model}");
    }
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn streams_from_stream_generate_content_with_alt_sse() {
    let server = Server::start(vec![Reply::sse(
        &fixture("gemini/stream_function_call.sse"),
        End::Clean,
    )])
    .await;
    let mut request = request().with_stream(true);
    request.options_mut().stream_options = Some(brace_llm::StreamOptions {
        include_usage: Some(true),
        extra: serde_json::Map::new(),
    });
    let response = call(&server, request).await.unwrap();
    assert!(response.is_stream());
    let completion = response.into_completion().await.unwrap();
    let choice = &completion.choices[0];
    assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(choice.message.tool_calls.as_ref().unwrap().len(), 2);
    assert_eq!(completion.usage.unwrap().total_tokens, 94);
    let seen = &server.requests()[0];
    assert_eq!(
        seen.target,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert!(seen.json().get("stream").is_none());
}

#[tokio::test]
async fn every_error_fixture_maps_to_its_kind_with_retry_after() {
    for case in error_cases("gemini") {
        let server = Server::start(vec![case.reply()]).await;
        let err = call(&server, request()).await.unwrap_err();
        assert_eq!(format!("{:?}", err.kind()), case.kind, "{}", case.name);
        assert_eq!(err.status(), Some(case.status), "{}", case.name);
        assert_eq!(err.provider(), Some("gemini"), "{}", case.name);
        assert_eq!(
            err.retry_after(),
            case.retry_after_ms.map(Duration::from_millis),
            "{}",
            case.name
        );
    }
}

#[tokio::test]
async fn other_statuses_map_by_status_and_code() {
    let cases = [
        (
            401,
            r#"{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}"#,
            LlmErrorKind::Auth,
        ),
        (
            408,
            r#"{"error":{"code":408,"message":"Request timeout","status":"DEADLINE_EXCEEDED"}}"#,
            LlmErrorKind::Timeout,
        ),
        (
            413,
            r#"{"error":{"code":413,"message":"Request payload size exceeds the limit: 20971520 bytes.","status":"INVALID_ARGUMENT"}}"#,
            LlmErrorKind::BadRequest,
        ),
        (
            502,
            "<html><title>Error 502 (Server Error)!!1</title></html>",
            LlmErrorKind::Server,
        ),
        (529, "overloaded", LlmErrorKind::Overloaded),
    ];
    for (status, body, kind) in cases {
        let server = Server::start(vec![Reply::json(status, body)]).await;
        let err = call(&server, request()).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{status}");
    }
}

#[tokio::test]
async fn resource_exhausted_with_retry_after_header_is_rate_limited() {
    let server = Server::start(vec![
        Reply::json(429, r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#)
            .with_header("retry-after", "9"),
    ])
    .await;
    let err = call(&server, request()).await.unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(9)));
}

#[tokio::test]
async fn a_blocked_prompt_is_content_filtered() {
    let server = Server::start(vec![Reply::json(
        200,
        fixture("gemini/response_blocked.json"),
    )])
    .await;
    let err = call(&server, request()).await.unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::ContentFiltered);
    assert_eq!(err.provider(), Some("gemini"));
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_answers_times_out() {
    let server = Server::start(vec![Reply::Hang]).await;
    let err = call(&server, request()).await.unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Timeout);
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_stalls_times_out() {
    let events = fixture("gemini/stream_text.sse");
    let cut = events.find("\r\n\r\n").unwrap() + 4;
    let server = Server::start(vec![Reply::sse(&events[..cut], End::Stall)]).await;
    let response = call(&server, request().with_stream(true)).await.unwrap();
    let items = collect(response).await;
    assert!(items[0].is_ok());
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
}

#[tokio::test]
async fn malformed_json_is_a_malformed_response() {
    for body in ["{\"candidates\":[", "<html></html>", "{}"] {
        let server = Server::start(vec![Reply::json(200, body)]).await;
        let err = call(&server, request()).await.unwrap_err();
        assert_eq!(err.kind(), LlmErrorKind::MalformedResponse, "{body}");
    }
}

#[tokio::test]
async fn a_stream_cut_mid_way_ends_with_an_interruption() {
    let events = fixture("gemini/stream_text.sse");
    let cut = events.find("\r\n\r\n").unwrap() + 4;
    let server = Server::start(vec![Reply::sse(&events[..cut], End::Cut)]).await;
    let response = call(&server, request().with_stream(true)).await.unwrap();
    let items = collect(response).await;
    assert!(items[0].is_ok());
    assert_eq!(
        items.last().unwrap().as_ref().unwrap_err().kind(),
        LlmErrorKind::StreamInterrupted
    );
}

#[tokio::test]
async fn a_stream_that_ends_without_a_finish_reason_is_interrupted() {
    let events = fixture("gemini/stream_text.sse");
    let cut = events.rfind("data:").unwrap();
    let server = Server::start(vec![Reply::sse(&events[..cut], End::Clean)]).await;
    let response = call(&server, request().with_stream(true)).await.unwrap();
    let items = collect(response).await;
    let err = items.last().unwrap().as_ref().unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::StreamInterrupted);
    assert_eq!(err.provider(), Some("gemini"));
}

#[tokio::test]
async fn an_error_object_in_a_stream_ends_it_rate_limited() {
    let server = Server::start(vec![Reply::sse(
        &fixture("gemini/stream_error.sse"),
        End::Clean,
    )])
    .await;
    let response = call(&server, request().with_stream(true)).await.unwrap();
    let items = collect(response).await;
    assert!(items[0].is_ok());
    let err = items.last().unwrap().as_ref().unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::RateLimited);
    assert_eq!(err.provider(), Some("gemini"));
}

#[tokio::test]
async fn probe_reads_the_default_model() {
    let not_found = error_cases("gemini")
        .into_iter()
        .find(|case| case.name == "error_404.json")
        .unwrap();
    let server = Server::start(vec![
        Reply::json(200, r#"{"name":"models/gemini-2.5-flash","version":"001","displayName":"Gemini 2.5 Flash"}"#),
        not_found.reply(),
    ])
    .await;
    let client = GeminiClient::new(config(&server).with_default_model("gemini-2.5-flash")).unwrap();
    client.probe().await.unwrap();
    let seen = &server.requests()[0];
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/v1beta/models/gemini-2.5-flash");
    assert_eq!(seen.header("x-goog-api-key"), Some(KEY));
    assert!(client.probe().await.is_err());
}

#[tokio::test]
async fn no_api_key_in_debug_display_urls_or_errors() {
    let echo = format!(
        r#"{{"error":{{"code":400,"message":"API key not valid: {KEY}","status":"INVALID_ARGUMENT","details":[{{"reason":"API_KEY_INVALID"}}]}}}}"#
    );
    let server = Server::start(vec![Reply::json(400, echo), Reply::Drop]).await;
    let client = client(&server);
    assert_no_key(&format!("{client:?}"));
    let http = client.api().chat_request(&request()).unwrap();
    assert_no_key(&format!("{http:?}"));
    assert_no_key(&http.uri().to_string());
    let first = client.clone().oneshot(request()).await.unwrap_err();
    assert_eq!(first.kind(), LlmErrorKind::Auth);
    let second = client.clone().oneshot(request()).await.unwrap_err();
    for err in [&first, &second] {
        assert_no_key(&format!("{err}"));
        assert_no_key(&format!("{err:?}"));
    }
    for seen in server.requests() {
        assert_no_key(&seen.target);
    }
}

#[tokio::test]
async fn a_stream_to_a_whole_request_is_read_whole() {
    let server = Server::start(vec![Reply::sse(
        &fixture("gemini/stream_text.sse"),
        End::Clean,
    )])
    .await;
    let response = call(&server, request()).await.unwrap();
    assert_eq!(
        response.completion().unwrap().text(),
        "The quick brown fox jumps over the lazy dog."
    );
}
