//! [`OpenAiClient`]: the tower service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::config::OpenAiConfig;
use super::wire::{OpenAiDecoder, OpenAiWire, parse_completion};
use crate::provider::{
    ConfigError, HttpResponse, ProbeFuture, ProviderStats, ResponseFuture, Transport,
};
use crate::sse;
use brace_llm::error::LlmError;
use brace_llm::response::{ChatResponse, ChatStream, ResponseBody, ResponseMeta};
use brace_llm::types::ChatRequest;

/// A client for OpenAI, Azure OpenAI or an OpenAI-compatible server, as a
/// `tower::Service<ChatRequest, Response = ChatResponse, Error = LlmError>`.
///
/// - The requested model is resolved by the configuration's mapping (for Azure, to the
///   deployment); the rest of the request, unknown fields included, is sent as it came.
/// - A non-streamed request answers [`ResponseBody::Complete`]. A streamed one answers
///   [`ResponseBody::Stream`] as soon as the first chunk has arrived, chunks parsed as they
///   arrive; a failure before the first chunk is the call's error. (A server that ignores
///   `stream` and answers JSON is replayed as a stream.)
/// - [`ResponseMeta`] names the provider and the model that really answered (read from the
///   answer, not the request).
/// - Every failure is an [`LlmError`] naming the provider; see
///   [`Transport::send`] and [`sse`](crate::sse) for timeouts and how streams end.
///
/// `poll_ready` is always ready: the connection pool does not apply backpressure (put a
/// `tower::limit::ConcurrencyLimit` in front to bound concurrency).
///
/// The future is a boxed [`ResponseFuture`]: one allocation per call is nothing next to a
/// network round trip, and it keeps the type nameable.
///
/// # Example
///
/// ```
/// use brace_providers::openai::{OpenAiClient, OpenAiConfig};
///
/// // A local Ollama; no key needed. Building a client does not connect.
/// let config = OpenAiConfig::compatible("ollama", "http://127.0.0.1:11434/v1")
///     .map_provider(|p| p.with_default_model("llama3.1:8b"));
/// let client = OpenAiClient::new(config).unwrap();
/// assert_eq!(client.name(), "ollama");
/// ```
///
/// # Clone
///
/// Clones share the configuration, the connection pool and the statistics.
#[derive(Clone)]
pub struct OpenAiClient {
    wire: Arc<OpenAiWire>,
    transport: Transport,
}

impl fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("wire", &self.wire)
            .field("transport", &self.transport)
            .finish()
    }
}

impl OpenAiClient {
    /// A client on the shared connection pool.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if the configuration is invalid (see [`OpenAiWire::new`]) or the
    /// HTTP client cannot be built.
    pub fn new(config: OpenAiConfig) -> Result<Self, ConfigError> {
        let transport = Transport::new(&config.provider)?;
        Self::with_transport(config, transport)
    }

    /// A client sending through `transport` (say, one over a reqwest client of your own).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if the configuration is invalid (see [`OpenAiWire::new`]).
    pub fn with_transport(config: OpenAiConfig, transport: Transport) -> Result<Self, ConfigError> {
        Ok(Self {
            wire: Arc::new(OpenAiWire::new(config)?),
            transport,
        })
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        self.wire.provider()
    }

    /// The request builder and answer reader.
    pub fn wire(&self) -> &OpenAiWire {
        &self.wire
    }

    /// Counters shared by this client and its clones (malformed stream events skipped,
    /// streams interrupted).
    pub fn stats(&self) -> &Arc<ProviderStats> {
        self.transport.stats()
    }

    /// An active health probe: `GET` the model list, `Ok(())` on any 2xx answer read in
    /// full. Cheap (no tokens), bounded by the configured timeouts. The future is
    /// `Send + 'static`, for a background health checker.
    ///
    /// # Errors
    ///
    /// The [`LlmError`] the call fails with (auth, overloaded, timeout, connect, …).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the probe.
    pub fn probe(&self) -> ProbeFuture {
        let send = self
            .transport
            .send_request(self.wire.prepared_probe_request());
        Box::pin(async move {
            send.await?.bytes().await?;
            Ok(())
        })
    }
}

impl Service<ChatRequest> for OpenAiClient {
    type Response = ChatResponse;
    type Error = LlmError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        let provider = self.wire.provider().clone();
        let http_request = match self.wire.prepared_chat_request(&request) {
            Ok(http_request) => http_request,
            Err(err) => return ResponseFuture::error(err.with_provider(provider)),
        };
        let model = self.wire.resolve_model(&request.model).to_owned();
        let stream = request.is_stream();
        let include_usage = request.wants_stream_usage();
        let send = self.transport.send_request(http_request);
        ResponseFuture::new(async move {
            let response = send.await?;
            if stream && response.is_event_stream() {
                let chunks = response.into_chunks(OpenAiDecoder::new());
                let (model, stream) = sse::start(chunks, &model).await?;
                return Ok(ChatResponse::stream(provider, model, stream));
            }
            let completion = read_completion(response).await?;
            let answered = if completion.model.is_empty() {
                model
            } else {
                completion.model.clone()
            };
            let body = if stream {
                ResponseBody::Stream(ChatStream::from_items(
                    completion
                        .to_chunks(include_usage)
                        .into_iter()
                        .map(Ok)
                        .collect(),
                ))
            } else {
                ResponseBody::Complete(completion)
            };
            Ok(ChatResponse {
                meta: ResponseMeta::new(provider, answered),
                body,
            })
        })
    }
}

async fn read_completion(response: HttpResponse) -> Result<brace_llm::ChatCompletion, LlmError> {
    let provider = response.provider().clone();
    let transport = response.transport().clone();
    let body = response.bytes().await?;
    parse_completion(&body).map_err(|err| transport.scrub(err.with_provider(provider)))
}
