//! [`GeminiClient`]: a tower service over Google's Gemini API.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Method, Request};
use tower_service::Service;

use super::stream::StreamState;
use super::translate::{decode_response, encode_request};
use crate::provider::{
    ConfigError, HttpResponse, ProbeFuture, ProviderConfig, ProviderStats, ResponseFuture,
    Transport, endpoint, prepared_request,
};
use crate::sse::{self, DecodeError, Flow, SseDecoder, SseEvent};
use brace_llm::error::{LlmError, LlmErrorKind};
use brace_llm::response::{ChatResponse, ChatStream, ResponseBody};
use brace_llm::types::{ChatChunk, ChatRequest};

/// Google's Gemini API base URL.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";
/// The environment variable the default configuration reads the key from.
pub const API_KEY_ENV: &str = "GEMINI_API_KEY";

/// A client for Google's Gemini API (`POST {base}/v1beta/models/{model}:generateContent`,
/// or `:streamGenerateContent?alt=sse` for streams), as a
/// `tower::Service<ChatRequest, Response = ChatResponse, Error = LlmError>`.
///
/// Requests in the OpenAI chat format are translated to Gemini's (see
/// [`encode_request`]); answers, whole or streamed, come back as OpenAI-style completions
/// and chunks. Every failure is an [`LlmError`] naming the provider: `RESOURCE_EXHAUSTED`
/// is [`LlmErrorKind::RateLimited`] (with the `RetryInfo` delay), `UNAVAILABLE`
/// [`LlmErrorKind::Overloaded`], a blocked prompt [`LlmErrorKind::ContentFiltered`].
///
/// The model in the URL is [`ProviderConfig::resolve_model`] of the requested one. The key
/// goes in the `x-goog-api-key` header, marked sensitive — never in the URL — and neither
/// `Debug` nor any error shows it.
///
/// # Example
///
/// ```
/// use brace_providers::gemini::GeminiClient;
/// use brace_providers::provider::ApiKey;
///
/// let config = GeminiClient::default_config()
///     .with_api_key(ApiKey::new("AIzaSyD-secret-key"))
///     .with_default_model("gemini-2.5-flash");
/// let client = GeminiClient::new(config).unwrap();
/// assert!(!format!("{client:?}").contains("secret"));
/// ```
///
/// # Clone
///
/// Clones share the configuration, the connection pool and the statistics.
#[derive(Clone)]
pub struct GeminiClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: ProviderConfig,
    transport: Transport,
    base: String,
    headers: HeaderMap,
    urls: Urls,
}

/// The endpoints, parsed once when the client is built (a request clones one: no parsing
/// per call). Never printed.
struct Urls {
    /// The base, for a model the configuration does not name.
    base: reqwest::Url,
    /// `generateContent` and `streamGenerateContent?alt=sse` of each model the
    /// configuration names (and that is a valid model name).
    models: HashMap<String, (reqwest::Url, reqwest::Url)>,
    /// The probe's URL; `None` if the default model is not a valid model name (the probe
    /// then fails with that error).
    probe: Option<reqwest::Url>,
}

impl Urls {
    fn new(config: &ProviderConfig) -> Result<Self, ConfigError> {
        let base = config.parsed_base_url()?;
        let models = config
            .models
            .values()
            .chain(config.default_model.as_ref())
            .filter_map(|model| {
                let path = model_path(model).ok()?;
                let urls = (
                    generate_url(&base, path, false),
                    generate_url(&base, path, true),
                );
                Some((model.clone(), urls))
            })
            .collect();
        let probe = match config.default_model.as_deref() {
            Some(model) => model_path(model)
                .ok()
                .map(|path| endpoint(&base, &format!("/v1beta/models/{path}"), None)),
            None => Some(endpoint(&base, "/v1beta/models", Some("pageSize=1"))),
        };
        Ok(Self {
            base,
            models,
            probe,
        })
    }

    /// The URL for `model` (as the configuration resolved it; `path` is its
    /// [`model_path`]).
    fn generate(&self, model: &str, path: &str, stream: bool) -> reqwest::Url {
        match self.models.get(model) {
            Some((whole, streamed)) => if stream { streamed } else { whole }.clone(),
            None => generate_url(&self.base, path, stream),
        }
    }
}

/// `{base}/v1beta/models/{model}:generateContent`, or `:streamGenerateContent?alt=sse`.
fn generate_url(base: &reqwest::Url, model: &str, stream: bool) -> reqwest::Url {
    if stream {
        let path = format!("/v1beta/models/{model}:streamGenerateContent");
        endpoint(base, &path, Some("alt=sse"))
    } else {
        endpoint(
            base,
            &format!("/v1beta/models/{model}:generateContent"),
            None,
        )
    }
}

impl fmt::Debug for GeminiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeminiClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The model's name as it goes in the URL: `models/` dropped, and only characters a
/// model name has (so a request cannot reach another path).
fn model_path(model: &str) -> Result<&str, LlmError> {
    let model = model.strip_prefix("models/").unwrap_or(model);
    if model.is_empty()
        || !model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(LlmError::new(
            LlmErrorKind::BadRequest,
            format!("`{model}` is not a valid Gemini model name"),
        ));
    }
    Ok(model)
}

impl GeminiClient {
    /// The default configuration: provider `gemini`, [`DEFAULT_BASE_URL`], the key from
    /// [`API_KEY_ENV`].
    pub fn default_config() -> ProviderConfig {
        ProviderConfig::new("gemini", DEFAULT_BASE_URL).with_api_key_env(API_KEY_ENV)
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

    /// A client sending through `transport`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_transport(
        config: ProviderConfig,
        transport: Transport,
    ) -> Result<Self, ConfigError> {
        let base = config.checked_base_url()?;
        let mut headers = config.header_map()?;
        if let Some(key) = config.resolve_api_key()? {
            headers.insert("x-goog-api-key", key.header_value("")?);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let urls = Urls::new(&config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                transport,
                base,
                headers,
                urls,
            }),
        })
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
    /// A [`LlmErrorKind::BadRequest`] error if the request cannot be translated or the
    /// model name is not one.
    pub fn http_request(
        &self,
        request: &ChatRequest,
    ) -> Result<(Request<Bytes>, String), LlmError> {
        let inner = &self.inner;
        let model = model_path(inner.config.resolve_model(&request.model))?.to_owned();
        let body = encode_request(request)?;
        let (url, accept) = if request.is_stream() {
            (
                format!(
                    "{}/v1beta/models/{model}:streamGenerateContent?alt=sse",
                    inner.base
                ),
                "text/event-stream",
            )
        } else {
            (
                format!("{}/v1beta/models/{model}:generateContent", inner.base),
                "application/json",
            )
        };
        let mut http = Request::builder()
            .method(Method::POST)
            .uri(url)
            .body(Bytes::from(body))
            .map_err(|_| LlmError::new(LlmErrorKind::BadRequest, "invalid request URL"))?;
        *http.headers_mut() = inner.headers.clone();
        http.headers_mut()
            .insert(ACCEPT, HeaderValue::from_static(accept));
        Ok((http, model))
    }

    /// [`http_request`](Self::http_request) in reqwest's form, its URL one parsed when the
    /// client was built (cloned, not parsed again).
    fn prepared_request(
        &self,
        request: &ChatRequest,
    ) -> Result<(reqwest::Request, String), LlmError> {
        let inner = &self.inner;
        let resolved = inner.config.resolve_model(&request.model);
        let model = model_path(resolved)?.to_owned();
        let body = encode_request(request)?;
        let stream = request.is_stream();
        let url = inner.urls.generate(resolved, &model, stream);
        let accept = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let mut headers = inner.headers.clone();
        headers.insert(ACCEPT, HeaderValue::from_static(accept));
        let http = prepared_request(Method::POST, url, headers, Bytes::from(body));
        Ok((http, model))
    }

    /// An active health probe: reads the default model's description
    /// (`GET {base}/v1beta/models/{model}`), which checks reachability, the key and the
    /// model without generating tokens. With no default model it lists one model.
    ///
    /// # Errors
    ///
    /// The probe's failure as an [`LlmError`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the probe.
    pub fn probe(&self) -> ProbeFuture {
        let inner = &self.inner;
        let url = match (&inner.urls.probe, inner.config.default_model.as_deref()) {
            (Some(url), _) => url.clone(),
            (None, model) => {
                let err = match model_path(model.unwrap_or_default()) {
                    Err(err) => err,
                    Ok(_) => LlmError::new(LlmErrorKind::BadRequest, "invalid probe URL"),
                };
                return Box::pin(std::future::ready(Err(err)));
            }
        };
        let mut headers = inner.headers.clone();
        headers.remove(CONTENT_TYPE);
        let request = prepared_request(Method::GET, url, headers, Bytes::new());
        let send = inner.transport.send_request(request);
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
        let chunks = response.into_chunks(StreamState::new(model.clone(), include_usage));
        let (model, stream) = sse::start(chunks, &model).await?;
        return Ok(ChatResponse::stream(provider, model, stream));
    }
    let status = response.status().as_u16();
    let body = response.bytes().await?;
    let completion = decode_response(&body, &model).map_err(|err| {
        inner
            .transport
            .scrub(err.with_provider(provider.clone()).with_status(status))
    })?;
    Ok(ChatResponse::complete(provider, completion))
}

impl Service<ChatRequest> for GeminiClient {
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
            match response.body {
                // A whole answer to a streamed request, replayed as chunks.
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
                // A stream to a whole request (a proxy that forces streaming): read it whole.
                ResponseBody::Stream(chunks) if !stream => {
                    let provider = response.meta.provider.clone();
                    let whole = ChatResponse {
                        meta: response.meta,
                        body: ResponseBody::Stream(chunks),
                    };
                    Ok(ChatResponse::complete(
                        provider,
                        whole.into_completion().await?,
                    ))
                }
                body => Ok(ChatResponse {
                    meta: response.meta,
                    body,
                }),
            }
        })
    }
}

// ===== StreamState as an SseDecoder =====

impl SseDecoder for StreamState {
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<Flow, DecodeError> {
        match self.on_event(&event.data) {
            Ok(chunk) => out.push(chunk),
            Err(err) if err.kind() == LlmErrorKind::MalformedResponse => {
                return Err(DecodeError::Malformed(err.message().to_owned()));
            }
            Err(err) => return Err(DecodeError::Fatal(err)),
        }
        Ok(Flow::Continue)
    }

    fn finish(
        &mut self,
        _saw_finish_reason: bool,
        out: &mut Vec<ChatChunk>,
    ) -> Result<(), LlmError> {
        out.extend(StreamState::finish(self)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ApiKey;
    use brace_llm::types::Message;

    fn client(config: ProviderConfig) -> GeminiClient {
        GeminiClient::new(config.with_api_key(ApiKey::new("AIza-KEY123456"))).unwrap()
    }

    #[test]
    fn prepared_requests_match_built_ones_for_named_and_unnamed_models() {
        let client = client(
            ProviderConfig::new("gemini", "http://127.0.0.1:9/base/")
                .with_model("fast", "models/gemini-2.5-flash"),
        );
        for (model, stream) in [
            ("fast", false),
            ("fast", true),
            ("gemini-x", false),
            ("gemini-x", true),
        ] {
            let request = ChatRequest::new(model, vec![Message::user("Hi")]).with_stream(stream);
            let (built, model) = client.http_request(&request).unwrap();
            let (prepared, prepared_model) = client.prepared_request(&request).unwrap();
            assert_eq!(prepared.url().as_str(), built.uri().to_string());
            assert_eq!(prepared.method(), built.method());
            assert_eq!(prepared.headers(), built.headers());
            let body = prepared.body().and_then(reqwest::Body::as_bytes).unwrap();
            assert_eq!(body, built.body().as_ref());
            assert_eq!(prepared_model, model);
        }
        let request = ChatRequest::new("fast", vec![]).with_stream(true);
        assert_eq!(
            client.prepared_request(&request).unwrap().0.url().as_str(),
            "http://127.0.0.1:9/base/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        let bad = ChatRequest::new("../other", vec![]);
        assert_eq!(
            client.prepared_request(&bad).unwrap_err().kind(),
            LlmErrorKind::BadRequest
        );
    }

    #[test]
    fn probe_urls_are_parsed_once_and_a_bad_default_model_is_kept_as_none() {
        let listing = client(ProviderConfig::new("gemini", "http://127.0.0.1:9"));
        assert_eq!(
            listing.inner.urls.probe.as_ref().map(reqwest::Url::as_str),
            Some("http://127.0.0.1:9/v1beta/models?pageSize=1")
        );
        let described = client(
            ProviderConfig::new("gemini", "http://127.0.0.1:9")
                .with_default_model("gemini-2.5-pro"),
        );
        assert_eq!(
            described
                .inner
                .urls
                .probe
                .as_ref()
                .map(reqwest::Url::as_str),
            Some("http://127.0.0.1:9/v1beta/models/gemini-2.5-pro")
        );
        let bad =
            client(ProviderConfig::new("gemini", "http://127.0.0.1:9").with_default_model("a/b"));
        assert!(bad.inner.urls.probe.is_none());
    }
}
