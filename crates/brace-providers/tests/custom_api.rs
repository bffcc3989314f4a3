//! A provider API of the user's own, implemented as a `ProviderApi` and served by the same
//! generic `ProviderClient` as OpenAI, Anthropic and Gemini, against a scripted server on
//! 127.0.0.1: each hook (encode, decode, stream decoder, error decoder, probe) is the one
//! the client uses.

#[path = "anthropic_support/mod.rs"]
mod support;

use std::time::Duration;

use brace_llm::{
    ChatChunk, ChatCompletion, ChatRequest, Delta, FinishReason, LlmError, LlmErrorKind, Message,
    ResponseBody, Role, StreamChunk,
};
use brace_providers::sse::{DecodeError, Flow, SseDecoder, SseEvent};
use brace_providers::{
    ApiKey, ClientConfig, ClientConfigError, Encoded, ProviderApi, ProviderClient, Url,
};
use futures::StreamExt;
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use support::{End, Reply, Server};
use tower::ServiceExt;

/// "Echo": `POST {base}/generate` with `{"model", "prompt"}` and an `x-token` header;
/// answers `{"text"}`, or a stream of `data: {"delta"}` events ending with
/// `data: {"done": true}`; errors are `{"problem", "busy"}`.
#[derive(Debug)]
struct Echo {
    client: ClientConfig,
    headers: HeaderMap,
    generate: Url,
    health: Url,
}

/// The stream of one answer: each `delta` a chunk, `done` the end marker.
#[derive(Debug)]
struct EchoDecoder {
    model: String,
}

impl SseDecoder for EchoDecoder {
    fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<StreamChunk>,
    ) -> Result<Flow, DecodeError> {
        let value: Value = serde_json::from_str(&event.data)
            .map_err(|err| DecodeError::Malformed(err.to_string()))?;
        if value["done"] == true {
            let mut last = ChatChunk::new("echo", &self.model, Delta::default());
            last.choices[0].finish_reason = Some(FinishReason::Stop);
            out.push(last.into());
            return Ok(Flow::Done);
        }
        let text = value["delta"]
            .as_str()
            .ok_or_else(|| DecodeError::Malformed("no delta".to_owned()))?;
        out.push(ChatChunk::new("echo", &self.model, Delta::text(text)).into());
        Ok(Flow::Continue)
    }
}

impl ProviderApi for Echo {
    type Config = ClientConfig;
    type Decoder = EchoDecoder;

    fn from_config(config: ClientConfig) -> Result<Self, ClientConfigError> {
        let base = config.checked_base_url()?;
        let url = |path: &str| {
            Url::parse(&format!("{base}/{path}")).map_err(|_| ClientConfigError::new("not a URL"))
        };
        let key = config
            .resolve_api_key()?
            .ok_or_else(|| ClientConfigError::new("echo needs a key"))?;
        let mut headers = config.header_map()?;
        headers.insert("x-token", key.header_value("")?);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(Self {
            generate: url("generate")?,
            health: url("health")?,
            client: config,
            headers,
        })
    }

    fn client_config(config: &ClientConfig) -> &ClientConfig {
        config
    }

    fn config(&self) -> &ClientConfig {
        &self.client
    }

    fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    fn encode(&self, request: &ChatRequest) -> Result<Encoded, LlmError> {
        let model = self.client.resolve_model(&request.model).to_owned();
        let prompt = request
            .messages
            .last()
            .map(Message::text)
            .unwrap_or_default();
        let body = json!({"model": model, "prompt": prompt, "stream": request.is_stream()});
        Ok(Encoded {
            url: self.generate.clone(),
            body: body.to_string().into(),
            model,
        })
    }

    fn decode(&self, body: &[u8], model: &str) -> Result<ChatCompletion, LlmError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|err| LlmError::new(LlmErrorKind::MalformedResponse, err.to_string()))?;
        let text = value["text"]
            .as_str()
            .ok_or_else(|| LlmError::new(LlmErrorKind::MalformedResponse, "no text"))?;
        // An answer that names no model: the client fills in the one asked.
        let _ = model;
        Ok(ChatCompletion::new("echo", "", text, FinishReason::Stop))
    }

    fn decoder(&self, model: &str, _include_usage: bool) -> EchoDecoder {
        EchoDecoder {
            model: model.to_owned(),
        }
    }

    fn decode_error(status: StatusCode, _headers: &HeaderMap, body: &[u8]) -> LlmError {
        let value: Value = serde_json::from_slice(body).unwrap_or_default();
        let kind = if value["busy"] == true {
            LlmErrorKind::Overloaded
        } else {
            LlmErrorKind::Server
        };
        LlmError::new(
            kind,
            value["problem"].as_str().unwrap_or("no problem given"),
        )
        .with_status(status.as_u16())
    }

    fn probe_url(&self) -> Result<Url, LlmError> {
        Ok(self.health.clone())
    }
}

type EchoClient = ProviderClient<Echo>;

fn client(server: &Server) -> EchoClient {
    let config = ClientConfig::new("echo", format!("{}/api/", server.base))
        .with_api_key(ApiKey::new("echo-token-123456"))
        .with_model("fast", "echo-1")
        .with_timeout(Duration::from_secs(5));
    EchoClient::new(config).unwrap()
}

fn request(stream: bool) -> ChatRequest {
    ChatRequest::new("fast", vec![Message::user("hello")]).with_stream(stream)
}

#[tokio::test]
async fn a_whole_answer_is_encoded_and_decoded_by_the_api() {
    let server = Server::start(vec![Reply::json(200, r#"{"text":"hello back"}"#)]).await;
    let response = client(&server).oneshot(request(false)).await.unwrap();
    assert_eq!(&*response.meta.provider, "echo");
    assert_eq!(
        response.meta.model, "echo-1",
        "the model asked, as the answer names none"
    );
    let ResponseBody::Complete(completion) = response.body else {
        panic!("expected a whole answer");
    };
    assert_eq!(completion.text(), "hello back");
    let seen = &server.requests()[0];
    assert_eq!(
        (seen.method.as_str(), seen.target.as_str()),
        ("POST", "/api/generate")
    );
    assert_eq!(seen.header("x-token"), Some("echo-token-123456"));
    assert_eq!(seen.header("accept"), Some("application/json"));
    assert_eq!(
        seen.json(),
        json!({"model": "echo-1", "prompt": "hello", "stream": false})
    );
}

#[tokio::test]
async fn a_stream_is_read_by_the_api_decoder_and_ends_at_its_marker() {
    let events =
        "data: {\"delta\":\"hel\"}\n\ndata: {\"delta\":\"lo\"}\n\ndata: {\"done\":true}\n\n";
    let server = Server::start(vec![Reply::sse(events, End::Clean)]).await;
    let response = client(&server).oneshot(request(true)).await.unwrap();
    assert_eq!(response.meta.model, "echo-1");
    let ResponseBody::Stream(stream) = response.body else {
        panic!("expected a stream");
    };
    let chunks: Vec<ChatChunk> = stream.map(|item| item.unwrap().into()).collect().await;
    let text: String = chunks
        .iter()
        .filter_map(|chunk| chunk.choices[0].delta.content.clone())
        .collect();
    assert_eq!(text, "hello");
    assert_eq!(
        chunks.last().unwrap().finish_reason(),
        Some(&FinishReason::Stop)
    );
    assert_eq!(
        server.requests()[0].header("accept"),
        Some("text/event-stream")
    );
}

#[tokio::test]
async fn a_stream_to_a_whole_request_is_read_whole_and_a_whole_answer_to_a_stream_replayed() {
    let events =
        "data: {\"delta\":\"all \"}\n\ndata: {\"delta\":\"of it\"}\n\ndata: {\"done\":true}\n\n";
    let server = Server::start(vec![Reply::sse(events, End::Clean)]).await;
    let whole = client(&server).oneshot(request(false)).await.unwrap();
    let ResponseBody::Complete(completion) = whole.body else {
        panic!("expected the stream read whole");
    };
    assert_eq!(completion.text(), "all of it");

    let server = Server::start(vec![Reply::json(200, r#"{"text":"at once"}"#)]).await;
    let streamed = client(&server).oneshot(request(true)).await.unwrap();
    let ResponseBody::Stream(stream) = streamed.body else {
        panic!("expected the whole answer replayed as a stream");
    };
    let chunks: Vec<ChatChunk> = stream.map(|item| item.unwrap().into()).collect().await;
    assert_eq!(chunks[0].choices[0].delta.role, Some(Role::Assistant));
    assert!(chunks.iter().any(|chunk| chunk.finish_reason().is_some()));
}

#[tokio::test]
async fn error_answers_are_read_by_the_api_error_decoder() {
    let server = Server::start(vec![Reply::json(
        503,
        r#"{"problem":"too many people","busy":true}"#,
    )])
    .await;
    let err = client(&server).oneshot(request(false)).await.unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Overloaded);
    assert_eq!(err.message(), "too many people");
    assert_eq!(err.status(), Some(503));
    assert_eq!(err.provider(), Some("echo"));
}

#[tokio::test]
async fn the_probe_gets_the_api_probe_url_and_reads_errors_the_same_way() {
    let server = Server::start(vec![
        Reply::json(200, "{}"),
        Reply::json(503, r#"{"problem":"down for a nap","busy":true}"#),
    ])
    .await;
    let client = client(&server);
    client.probe().await.unwrap();
    let seen = &server.requests()[0];
    assert_eq!(
        (seen.method.as_str(), seen.target.as_str()),
        ("GET", "/api/health")
    );
    assert_eq!(seen.header("x-token"), Some("echo-token-123456"));
    assert_eq!(seen.header("content-type"), None, "a probe has no body");
    let err = client.probe().await.unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Overloaded);
    assert_eq!(err.message(), "down for a nap");
}

#[test]
fn the_pure_request_is_the_one_the_client_sends() {
    let config = ClientConfig::new("echo", "http://127.0.0.1:9/api/")
        .with_api_key(ApiKey::new("echo-token-123456"));
    let echo = Echo::from_config(config).unwrap();
    let http = echo.chat_request(&request(true)).unwrap();
    assert_eq!(http.uri(), "http://127.0.0.1:9/api/generate");
    assert_eq!(http.headers()["accept"], "text/event-stream");
    assert!(http.headers()["x-token"].is_sensitive());
    let probe = echo.probe_request().unwrap();
    assert_eq!(probe.uri(), "http://127.0.0.1:9/api/health");
    assert!(probe.headers().get("content-type").is_none());
}
