//! [`ProviderClient`]: one tower service for every [`ProviderApi`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::TryFutureExt;
use http::{HeaderMap, Method};
use tower_service::Service;

use crate::api::{ProviderApi, probe_headers, request_headers};
use crate::provider::{
    ClientConfig, ClientConfigError, HttpResponse, ProbeFuture, ProviderStats, ResponseFuture,
    Transport, prepared_request,
};
use crate::sse;
use brace_llm::error::LlmError;
use brace_llm::response::{ChatResponse, ChatStream, ResponseBody, ResponseMeta};
use brace_llm::types::ChatRequest;

/// A provider client: a [`ProviderApi`] over HTTP, as a
/// `tower::Service<ChatRequest, Response = ChatResponse, Error = LlmError>`.
///
/// The API encodes the request and decodes the answers; the client does what is the same
/// for every provider:
///
/// - it sends the request on its [`Transport`], which bounds every wait (see
///   [`ClientConfig::timeout`] and [`Transport::send`]) and reads an error answer with
///   [`ProviderApi::decode_error`];
/// - a streamed answer (`text/event-stream`) is read as server-sent events by the API's
///   [`decoder`](ProviderApi::decoder); the call answers [`ResponseBody::Stream`] once the
///   first chunk has arrived, so a failure before it is the call's error (see
///   [`sse`](crate::sse) for how a stream ends); a whole answer is read by
///   [`decode`](ProviderApi::decode);
/// - a server that ignores `stream` and answers whole is replayed as a stream, and a stream
///   to a request for a whole answer (a proxy that forces streaming) is read whole;
/// - [`ResponseMeta`] names the provider and the model that really answered (read from the
///   answer; the model asked when the answer names none);
/// - every failure is an [`LlmError`] naming the provider, with the key masked should the
///   provider echo it.
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
/// use brace_llm::{ChatRequest, Message};
/// use brace_providers::anthropic::AnthropicWire;
/// use brace_providers::{ApiKey, ClientConfig, ProviderApi, ProviderClient};
///
/// // `AnthropicClient` is this type. Building a client does not connect.
/// let config = ClientConfig::new("claude", "https://api.anthropic.com")
///     .with_api_key(ApiKey::new("sk-ant-0123456789"));
/// let client: ProviderClient<AnthropicWire> = ProviderClient::new(config).unwrap();
/// assert_eq!(client.name(), "claude");
///
/// // What a call would send, without sending it.
/// let request = ChatRequest::new("claude-sonnet-4-5", vec![Message::user("Hi")]);
/// let http = client.api().chat_request(&request).unwrap();
/// assert_eq!(http.uri(), "https://api.anthropic.com/v1/messages");
/// assert!(http.headers()["x-api-key"].is_sensitive());
/// ```
///
/// # Clone
///
/// Clones share the API, the connection pool and the statistics.
pub struct ProviderClient<A> {
    api: Arc<A>,
    // The API's headers with `Accept` for a whole answer and for a stream, made once: a
    // request clones one (a clone of the API's headers had room for nothing more, and
    // adding `Accept` grew and rehashed it on every request).
    headers: Arc<[HeaderMap; 2]>,
    transport: Transport,
}

impl<A> Clone for ProviderClient<A> {
    fn clone(&self) -> Self {
        Self {
            api: self.api.clone(),
            headers: self.headers.clone(),
            transport: self.transport.clone(),
        }
    }
}

impl<A: fmt::Debug> fmt::Debug for ProviderClient<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderClient")
            .field("api", &self.api)
            .field("transport", &self.transport)
            // `headers`: the API's, already in `api` (their secrets marked sensitive).
            .finish_non_exhaustive()
    }
}

impl<A: ProviderApi> ProviderClient<A> {
    /// A client on the shared connection pool for its configuration's
    /// [`client_options`](ClientConfig::client_options).
    ///
    /// # Errors
    ///
    /// A [`ClientConfigError`] if the configuration is invalid (see
    /// [`ProviderApi::from_config`]) or the HTTP client cannot be built.
    pub fn new(config: A::Config) -> Result<Self, ClientConfigError> {
        let transport = Transport::new(A::client_config(&config))?;
        Self::with_transport(config, transport)
    }

    /// A client sending through `transport` (say, one over a reqwest client of your own).
    ///
    /// # Errors
    ///
    /// A [`ClientConfigError`] if the configuration is invalid.
    pub fn with_transport(
        config: A::Config,
        transport: Transport,
    ) -> Result<Self, ClientConfigError> {
        Ok(Self::from_api(A::from_config(config)?, transport))
    }

    /// A client for an API already made, sending through `transport`.
    pub fn from_api(api: A, transport: Transport) -> Self {
        Self {
            headers: Self::headers_of(&api),
            api: Arc::new(api),
            transport,
        }
    }

    fn headers_of(api: &A) -> Arc<[HeaderMap; 2]> {
        Arc::new([
            request_headers(api.headers(), false),
            request_headers(api.headers(), true),
        ])
    }

    /// The provider's name, as errors and responses carry it.
    pub fn name(&self) -> &str {
        self.transport.provider()
    }

    /// The API: how requests are encoded and answers decoded.
    pub fn api(&self) -> &A {
        &self.api
    }

    /// Changes the API before the client is shared (a clone made earlier keeps the API it
    /// had).
    pub(crate) fn change_api(&mut self, change: impl FnOnce(&mut A))
    where
        A: Clone,
    {
        change(Arc::make_mut(&mut self.api));
        self.headers = Self::headers_of(&self.api);
    }

    /// The client configuration.
    pub fn config(&self) -> &ClientConfig {
        self.api.config()
    }

    /// Counters shared by this client and its clones (malformed stream events skipped,
    /// streams interrupted).
    pub fn stats(&self) -> &Arc<ProviderStats> {
        self.transport.stats()
    }

    /// An active health probe: `GET` the API's [`probe_url`](ProviderApi::probe_url),
    /// `Ok(())` on any 2xx answer read in full. Cheap (no tokens), bounded by the
    /// configured timeouts. The future is `Send + 'static`, for a background health
    /// checker.
    ///
    /// # Errors
    ///
    /// The [`LlmError`] the probe fails with (auth, overloaded, timeout, connect, …).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the probe.
    pub fn probe(&self) -> ProbeFuture {
        let url = match self.api.probe_url() {
            Ok(url) => url,
            Err(err) => return Box::pin(std::future::ready(Err(err))),
        };
        let headers = probe_headers(self.api.headers());
        let request = prepared_request(Method::GET, url, headers, bytes::Bytes::new());
        let send = self.transport.send_request_with(request, A::decode_error);
        Box::pin(async move { send.await?.bytes().await.map(drop) })
    }
}

impl<A: ProviderApi> Service<ChatRequest> for ProviderClient<A> {
    type Response = ChatResponse;
    type Error = LlmError;
    type Future = ResponseFuture;

    /// Always ready: the connection pool queues requests itself, and every wait is bounded
    /// by the configured timeouts.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        let encoded = match self.api.encode(&request) {
            Ok(encoded) => encoded,
            Err(err) => {
                return ResponseFuture::error(err.with_provider(self.transport.provider().clone()));
            }
        };
        let stream = request.is_stream();
        let include_usage = request.wants_stream_usage();
        let headers = self.headers[usize::from(stream)].clone();
        let http = prepared_request(Method::POST, encoded.url, headers, encoded.body);
        let send = self.transport.send_request_with(http, A::decode_error);
        let api = self.api.clone();
        let model = encoded.model;
        // One step after another, each future taking the place of the one before (an
        // async block would keep `send`, made outside it, beside `read` for the whole call:
        // twice the size, in every request's allocation).
        ResponseFuture::new(
            send.and_then(move |response| read(api, response, model, include_usage))
                .and_then(move |response| as_asked(response, stream, include_usage)),
        )
    }
}

/// The answer in the form the request asked for: a complete answer to a streamed request
/// is streamed from memory; a stream answering a request that did not ask for one is read
/// whole.
async fn as_asked(
    response: ChatResponse,
    stream: bool,
    include_usage: bool,
) -> Result<ChatResponse, LlmError> {
    match response.body {
        ResponseBody::Complete(completion) if stream => Ok(ChatResponse {
            meta: response.meta,
            body: ResponseBody::Stream(ChatStream::from_items(
                completion
                    .to_chunks(include_usage)
                    .into_iter()
                    .map(Ok)
                    .collect(),
            )),
        }),
        ResponseBody::Stream(chunks) if !stream => {
            let meta = response.meta;
            let whole = ChatResponse {
                meta: meta.clone(),
                body: ResponseBody::Stream(chunks),
            };
            let completion = whole.into_completion().await?;
            Ok(ChatResponse {
                meta: ResponseMeta::new(meta.provider, completion.model.clone()),
                body: ResponseBody::Complete(completion.into()),
            })
        }
        body => Ok(ChatResponse {
            meta: response.meta,
            body,
        }),
    }
}

/// Reads a successful answer as it came: a stream of chunks (once the first has arrived)
/// or a whole completion.
async fn read<A: ProviderApi>(
    api: Arc<A>,
    response: HttpResponse,
    model: String,
    include_usage: bool,
) -> Result<ChatResponse, LlmError> {
    let model = model.as_str();
    let provider = response.provider().clone();
    if response.is_event_stream() {
        let chunks = response.into_chunks(api.decoder(model, include_usage));
        let (model, stream) = sse::start(chunks, model).await?;
        return Ok(ChatResponse::stream(provider, model, stream));
    }
    let status = response.status().as_u16();
    let transport = response.transport().clone();
    let body = response.bytes().await?;
    let completion = api
        .decode_body(body, model)
        .map_err(|err| transport.scrub(err.with_provider(provider.clone()).with_status(status)))?;
    let answered = if completion.model.is_empty() {
        model.to_owned()
    } else {
        completion.model.clone()
    };
    Ok(ChatResponse {
        meta: ResponseMeta::new(provider, answered),
        body: ResponseBody::Complete(completion),
    })
}
