//! Sending requests through the gateway's router without a socket, and reading the reply.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use axum::body::Body;
use brace_gateway::{Gateway, GatewayConfig, app::router};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// A reply, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    /// The body as JSON (panics, naming the body, if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("{err}: {}", self.body))
    }

    /// A header's value, or `""`.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Sends `request` through `gateway`'s router (`oneshot`, no socket).
pub async fn send(gateway: &Arc<Gateway>, request: Request<Body>) -> Reply {
    let response = router(gateway.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Serves `gateway` on a free loopback port until the returned sender is dropped.
pub async fn serve_on_loopback(
    gateway: Arc<Gateway>,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (listener, addr) = brace_gateway::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(brace_gateway::serve(gateway, listener, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// A JSON `POST` to `path`.
pub fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

/// A `GET` of `path`.
pub fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

/// A chat request for `model`.
pub fn chat(model: &str, stream: bool) -> Request<Body> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({
                "model": model,
                "stream": stream,
                "messages": [{"role": "user", "content": "Hello there"}],
            })
            .to_string(),
        ))
        .unwrap()
}

// ===== a misbehaving upstream =====

/// What the hostile upstream answers to model `odd-format`: a valid completion written as
/// no serializer would write it (spaces, fields out of order, a field brace does not know,
/// an escaped slash, an exponent).
pub const ODD_FORMAT_ANSWER: &str = r#"{ "model" : "m\/odd", "choices": [ {"finish_reason":"stop",
    "message": {"content":"caf\u00e9", "role":"assistant"}, "index":0} ],
  "id":"chatcmpl-odd", "created": 1700000000, "object":"chat.completion",
  "usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2},
  "x_vendor": {"kept": [1, 2.50, 1e3]} }
"#;

/// A stream in OpenAI's format written as no serializer would write it: spaces, fields out
/// of order, escapes, a field brace does not know, one chunk's JSON over two `data:` lines.
pub const ODD_FORMAT_STREAM: &str = "data: { \"choices\" : [ {\"delta\": {\"role\":\"assistant\", \
     \"content\":\"caf\\u00e9\"}, \"index\":0, \"finish_reason\":null} ],\n\
     data:   \"id\":\"chunk-odd\", \"object\":\"chat.completion.chunk\", \"created\": 1, \
     \"model\":\"m\\/odd\", \"obfuscation\":\"x1\" }\n\n\
     data: {\"id\":\"chunk-odd\",\"object\":\"chat.completion.chunk\",\"created\":1,\
     \"model\":\"m/odd\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\
     \"usage\" : {\"total_tokens\":2,\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n\
     data: [DONE]\n\n";

/// An OpenAI-compatible upstream on 127.0.0.1 that answers by the model asked for: a
/// 100 KB model name, an oddly written answer, the request's own body echoed, a stream cut
/// after one chunk, a server error, an absurd Retry-After, an error text with CR/LF in it.
pub async fn hostile_upstream() -> String {
    async fn answer(body: bytes::Bytes) -> axum::response::Response {
        use axum::response::IntoResponse;
        let request: Value = serde_json::from_slice(&body).unwrap_or_default();
        match request["model"].as_str().unwrap_or_default() {
            // The request body as it arrived, as the answer's text.
            model if model.starts_with("echo") => axum::Json(json!({
                "id": "chatcmpl-echo",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "finish_reason": "stop", "message": {
                    "role": "assistant", "content": String::from_utf8_lossy(&body)}}],
            }))
            .into_response(),
            "huge-model" => axum::Json(json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": format!("m\r\nx-injected: 1{}", "m".repeat(100 * 1024)),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }))
            .into_response(),
            "odd-format" => (
                [("content-type", "application/json")],
                ODD_FORMAT_ANSWER,
            )
                .into_response(),
            "odd-stream" => (
                [("content-type", "text/event-stream")],
                ODD_FORMAT_STREAM,
            )
                .into_response(),
            // A stream that ends after one chunk: no finish reason, no `[DONE]`.
            "cut-stream" => (
                [("content-type", "text/event-stream")],
                "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\
                 \"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\
                 \"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
            )
                .into_response(),
            "server-error" => (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": {"message": "upstream broke", "type": "server_error"}})),
            )
                .into_response(),
            "limited" => (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "99999999999")],
                axum::Json(json!({"error": {"message": "slow down", "type": "requests"}})),
            )
                .into_response(),
            _ => (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": {
                    "message": "boom\r\n2030-01-01T00:00:00.000000Z  INFO forged: all good\u{1b}[2J",
                    "type": "invalid_request_error"}})),
            )
                .into_response(),
        }
    }
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

pub async fn behind_hostile_upstream(server: &str) -> Arc<Gateway> {
    brace_providers::provider::install_crypto_provider();
    let base_url = hostile_upstream().await;
    let yaml = format!(
        "providers:\n  - name: upstream\n    kind: openai-compatible\n    model: m\n    \
         api_key_env: ''\n    base_url: {base_url}\n\
         routes:\n  - match: '*'\n    providers:\n      - name: upstream\n        passthrough: true\n\
         fallback:\n  max_retries: 0\n\
         degradation:\n  auto:\n    enabled: false\n\
         server:\n{server}"
    );
    Gateway::build(GatewayConfig::from_yaml(&yaml).unwrap()).unwrap()
}
