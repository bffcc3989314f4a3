//! [`AnthropicClient`]: a tower service over Anthropic's Messages API.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Method, Request};
use tower_service::Service;

use super::stream::StreamState;
use super::translate::{RequestOptions, decode_response, encode_request};
use crate::provider::{
    ConfigError, HttpResponse, ProbeFuture, ProviderConfig, ProviderStats, ResponseFuture,
    Transport, endpoint, prepared_request,
};
use crate::sse::{self, DecodeError, Flow, SseDecoder, SseEvent};
use brace_llm::error::{LlmError, LlmErrorKind};
use brace_llm::response::{ChatResponse, ChatStream};
use brace_llm::types::{ChatChunk, ChatRequest};

/// Anthropic's API base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The environment variable the default configuration reads the key from.
pub const API_KEY_ENV: &str = "ANTHROPIC_API_KEY";
/// The `anthropic-version` header sent by default.
pub const DEFAULT_VERSION: &str = "2023-06-01";
/// `max_tokens` for requests that set no output limit (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// A client for Anthropic's Messages API (`POST {base}/v1/messages`), as a
/// `tower::Service<ChatRequest, Response = ChatResponse, Error = LlmError>`.
///
/// Requests in the OpenAI chat format are translated to Anthropic's (see
/// [`encode_request`]); answers, whole or streamed, come back as OpenAI-style completions
/// and chunks. Every failure is an [`LlmError`] naming the provider: error responses are
/// read by [`LlmError::from_response`] (`overloaded_error` 529 is
/// [`LlmErrorKind::Overloaded`], `rate_limit_error` 429 is [`LlmErrorKind::RateLimited`]
/// with its `retry-after`), an `error` event in a stream ends the stream with its error.
///
/// The model sent is [`ProviderConfig::resolve_model`] of the requested one. The key goes in
/// `x-api-key`, marked sensitive; neither `Debug` nor any error shows it.
///
/// # Example
///
/// ```
/// use brace_providers::anthropic::AnthropicClient;
/// use brace_providers::provider::{ApiKey, ProviderConfig};
///
/// let config = AnthropicClient::default_config()
///     .with_api_key(ApiKey::new("sk-ant-api03-secret"))
///     .with_default_model("claude-sonnet-4-5");
/// let client = AnthropicClient::new(config).unwrap().with_default_max_tokens(1024);
/// assert!(!format!("{client:?}").contains("secret"));
/// ```
///
/// # Clone
///
/// Clones share the configuration, the connection pool and the statistics.
#[derive(Clone)]
pub struct AnthropicClient {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    config: ProviderConfig,
    transport: Transport,
    messages_url: String,
    /// The endpoints, parsed once (a request clones one). Never printed.
    messages: reqwest::Url,
    models: reqwest::Url,
    headers: HeaderMap,
    default_max_tokens: u32,
}

impl fmt::Debug for AnthropicClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicClient")
            .field("config", &self.inner.config)
            .field("default_max_tokens", &self.inner.default_max_tokens)
            .finish_non_exhaustive()
    }
}

impl AnthropicClient {
    /// The default configuration: provider `anthropic`, [`DEFAULT_BASE_URL`], the key from
    /// [`API_KEY_ENV`].
    pub fn default_config() -> ProviderConfig {
        ProviderConfig::new("anthropic", DEFAULT_BASE_URL).with_api_key_env(API_KEY_ENV)
    }

    /// A client from its configuration, on the shared connection pool.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if the base URL is not an http(s) URL, the key's environment
    /// variable is unset, or a header is invalid.
    pub fn new(config: ProviderConfig) -> Result<Self, ConfigError> {
        let transport = Transport::new(&config)?;
        Self::with_transport(config, transport)
    }

    /// A client sending through `transport` (say, over a reqwest client of your own).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_transport(
        config: ProviderConfig,
        transport: Transport,
    ) -> Result<Self, ConfigError> {
        let base = config.checked_base_url()?;
        let parsed = config.parsed_base_url()?;
        let mut headers = config.header_map()?;
        if !headers.contains_key("anthropic-version") {
            headers.insert(
                "anthropic-version",
                HeaderValue::from_static(DEFAULT_VERSION),
            );
        }
        if let Some(key) = config.resolve_api_key()? {
            headers.insert("x-api-key", key.header_value("")?);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(Self {
            inner: Arc::new(Inner {
                messages_url: format!("{base}/v1/messages"),
                messages: endpoint(&parsed, "/v1/messages", None),
                models: endpoint(&parsed, "/v1/models", Some("limit=1")),
                config,
                transport,
                headers,
                default_max_tokens: DEFAULT_MAX_TOKENS,
            }),
        })
    }

    /// Sets the `max_tokens` sent when a request sets no output limit.
    #[must_use]
    pub fn with_default_max_tokens(mut self, max_tokens: u32) -> Self {
        Arc::make_mut(&mut self.inner).default_max_tokens = max_tokens.max(1);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &ProviderConfig {
        &self.inner.config
    }

    /// The provider's name, as errors and responses carry it.
    pub fn name(&self) -> &str {
        self.inner.transport.provider()
    }

    /// Counters of malformed events skipped and streams interrupted.
    pub fn stats(&self) -> &Arc<ProviderStats> {
        self.inner.transport.stats()
    }

    /// The HTTP request [`call`](Service::call) sends for `request`, and the model it asks.
    ///
    /// # Errors
    ///
    /// A [`LlmErrorKind::BadRequest`] error if the request cannot be translated.
    pub fn http_request(
        &self,
        request: &ChatRequest,
    ) -> Result<(Request<Bytes>, String), LlmError> {
        let (model, headers, body) = self.parts(request)?;
        let mut http = Request::builder()
            .method(Method::POST)
            .uri(&self.inner.messages_url)
            .body(body)
            .map_err(|_| LlmError::new(LlmErrorKind::BadRequest, "invalid request URL"))?;
        *http.headers_mut() = headers;
        Ok((http, model))
    }

    /// [`http_request`](Self::http_request) in reqwest's form, its URL the one parsed when
    /// the client was built (cloned, not parsed again).
    fn prepared_request(
        &self,
        request: &ChatRequest,
    ) -> Result<(reqwest::Request, String), LlmError> {
        let (model, headers, body) = self.parts(request)?;
        let url = self.inner.messages.clone();
        Ok((prepared_request(Method::POST, url, headers, body), model))
    }

    /// The model asked, the headers and the body of the request for `request`.
    fn parts(&self, request: &ChatRequest) -> Result<(String, HeaderMap, Bytes), LlmError> {
        let inner = &self.inner;
        let model = inner.config.resolve_model(&request.model).to_owned();
        let body = encode_request(
            request,
            RequestOptions {
                model: &model,
                default_max_tokens: inner.default_max_tokens,
            },
        )?;
        let accept = if request.is_stream() {
            "text/event-stream"
        } else {
            "application/json"
        };
        let mut headers = inner.headers.clone();
        headers.insert(ACCEPT, HeaderValue::from_static(accept));
        Ok((model, headers, Bytes::from(body)))
    }

    /// An active health probe: lists one model (`GET {base}/v1/models?limit=1`), which
    /// checks reachability and the key without generating tokens.
    ///
    /// # Errors
    ///
    /// The probe's failure as an [`LlmError`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the probe.
    pub fn probe(&self) -> ProbeFuture {
        let mut headers = self.inner.headers.clone();
        headers.remove(CONTENT_TYPE);
        let request = prepared_request(
            Method::GET,
            self.inner.models.clone(),
            headers,
            Bytes::new(),
        );
        let send = self.inner.transport.send_request(request);
        Box::pin(async move { send.await?.bytes().await.map(drop) })
    }
}

async fn respond(
    response: HttpResponse,
    model: String,
    include_usage: bool,
    inner: &Inner,
) -> Result<ChatResponse, LlmError> {
    let provider = response.provider().clone();
    if response.is_event_stream() {
        let chunks = response.into_chunks(StreamState::new(include_usage));
        let (model, stream) = sse::start(chunks, &model).await?;
        return Ok(ChatResponse::stream(provider, model, stream));
    }
    let status = response.status().as_u16();
    let body = response.bytes().await?;
    let completion = decode_response(&body).map_err(|err| {
        inner
            .transport
            .scrub(err.with_provider(provider.clone()).with_status(status))
    })?;
    Ok(ChatResponse::complete(provider, completion))
}

/// A whole answer to a streamed request (a server that ignored `stream`), replayed as
/// chunks.
fn as_stream(response: ChatResponse, include_usage: bool) -> ChatResponse {
    match response.body {
        brace_llm::response::ResponseBody::Complete(completion) => {
            let chunks = completion
                .to_chunks(include_usage)
                .into_iter()
                .map(Ok)
                .collect();
            ChatResponse {
                meta: response.meta,
                body: brace_llm::response::ResponseBody::Stream(ChatStream::from_items(chunks)),
            }
        }
        brace_llm::response::ResponseBody::Stream(_) => response,
    }
}

impl Service<ChatRequest> for AnthropicClient {
    type Response = ChatResponse;
    type Error = LlmError;
    type Future = ResponseFuture;

    /// Always ready: the connection pool queues requests itself, and every wait is bounded
    /// by the configured timeouts.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        let provider = self.inner.transport.provider().clone();
        let (http, model) = match self.prepared_request(&request) {
            Ok(built) => built,
            Err(err) => return ResponseFuture::error(err.with_provider(provider)),
        };
        let stream = request.is_stream();
        let include_usage = request.wants_stream_usage();
        let inner = self.inner.clone();
        ResponseFuture::new(async move {
            let response = inner.transport.send_request(http).await?;
            let response = respond(response, model, include_usage, &inner).await?;
            if stream {
                Ok(as_stream(response, include_usage))
            } else if response.is_stream() {
                // A stream to a whole request (a proxy that forces streaming): read it whole.
                let provider = response.meta.provider.clone();
                Ok(ChatResponse::complete(
                    provider,
                    response.into_completion().await?,
                ))
            } else {
                Ok(response)
            }
        })
    }
}

// ===== StreamState as an SseDecoder =====

impl SseDecoder for StreamState {
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<Flow, DecodeError> {
        match self.on_event(&event.data) {
            Ok(Some(chunk)) => out.push(chunk),
            Ok(None) => {}
            Err(err) if err.kind() == LlmErrorKind::MalformedResponse => {
                return Err(DecodeError::Malformed(err.message().to_owned()));
            }
            Err(err) => return Err(DecodeError::Fatal(err)),
        }
        Ok(if self.is_done() {
            Flow::Done
        } else {
            Flow::Continue
        })
    }

    fn finish(
        &mut self,
        _saw_finish_reason: bool,
        _out: &mut Vec<ChatChunk>,
    ) -> Result<(), LlmError> {
        StreamState::finish(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ApiKey;
    use brace_llm::types::Message;

    #[test]
    fn prepared_requests_match_built_ones() {
        let config = ProviderConfig::new("anthropic", "http://127.0.0.1:9/")
            .with_api_key(ApiKey::new("sk-ant-KEY123456"))
            .with_default_model("claude-sonnet-4-5");
        let client = AnthropicClient::new(config).unwrap();
        for stream in [false, true] {
            let request = ChatRequest::new("any", vec![Message::user("Hi")]).with_stream(stream);
            let (built, model) = client.http_request(&request).unwrap();
            let (prepared, prepared_model) = client.prepared_request(&request).unwrap();
            assert_eq!(prepared.url().as_str(), built.uri().to_string());
            assert_eq!(prepared.url().as_str(), "http://127.0.0.1:9/v1/messages");
            assert_eq!(prepared.method(), built.method());
            assert_eq!(prepared.headers(), built.headers());
            let body = prepared.body().and_then(reqwest::Body::as_bytes).unwrap();
            assert_eq!(body, built.body().as_ref());
            assert_eq!(prepared_model, model);
        }
        assert_eq!(
            client.inner.models.as_str(),
            "http://127.0.0.1:9/v1/models?limit=1"
        );
    }
}
