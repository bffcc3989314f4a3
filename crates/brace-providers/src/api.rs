//! [`ProviderApi`]: what one provider's HTTP API is — endpoints, authentication, how a
//! [`ChatRequest`] is encoded and how answers are decoded — as pure functions, without I/O.
//!
//! [`ProviderClient`](crate::ProviderClient) does the rest once for every API: it sends what
//! the API encodes on a [`Transport`](crate::Transport) (timeouts, secrets, statistics),
//! reads a whole answer or a stream of server-sent events, and answers the
//! [`ChatRequest`] with a [`ChatResponse`](brace_llm::ChatResponse).

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode};

use crate::provider::{ClientConfig, ClientConfigError};
use crate::sse::SseDecoder;
use brace_llm::error::{LlmError, LlmErrorKind};
use brace_llm::response::CompletionBody;
use brace_llm::types::{ChatCompletion, ChatRequest};

/// One provider's HTTP API: the pure half of a provider client.
///
/// An implementation is made once per client from its configuration (the key is read
/// then); every method after that is a function of its arguments. brace implements it for
/// OpenAI's chat completions, Azure OpenAI and OpenAI-compatible servers
/// ([`OpenAiWire`](crate::openai::OpenAiWire)), Anthropic's Messages API
/// ([`AnthropicWire`](crate::anthropic::AnthropicWire)) and Google's Gemini API
/// ([`GeminiWire`](crate::gemini::GeminiWire)); implement it for another API and
/// [`ProviderClient`](crate::ProviderClient) makes it a tower service.
///
/// Its `Debug` output must show no key.
pub trait ProviderApi: std::fmt::Debug + Send + Sync + Sized + 'static {
    /// What the API is made from.
    type Config;

    /// The per-stream state that turns the API's server-sent events into chunks.
    type Decoder: SseDecoder;

    /// Checks `config` and prepares the endpoints and the headers every request carries.
    ///
    /// # Errors
    ///
    /// A [`ClientConfigError`] if the configuration cannot work (a bad URL, a missing key,
    /// an invalid header), saying why without any secret.
    fn from_config(config: Self::Config) -> Result<Self, ClientConfigError>;

    /// The client configuration inside `config` (name, timeouts, HTTP options), which the
    /// client's [`Transport`](crate::Transport) is made from.
    fn client_config(config: &Self::Config) -> &ClientConfig;

    /// The client configuration the API was made from.
    fn config(&self) -> &ClientConfig;

    /// The headers every request carries (authentication, content type, the configured
    /// extra headers), values that hold a secret marked sensitive. The client adds `Accept`.
    fn headers(&self) -> &HeaderMap;

    /// `request` encoded for this API: the URL, the body, and the provider model asked.
    ///
    /// # Errors
    ///
    /// A [`LlmErrorKind::BadRequest`] error if the request cannot be expressed in this API.
    fn encode(&self, request: &ChatRequest) -> Result<Encoded, LlmError>;

    /// A whole (non-streamed) answer's body read into a completion; `model` is the provider
    /// model asked, for an answer that does not name its own.
    ///
    /// # Errors
    ///
    /// [`LlmErrorKind::MalformedResponse`] naming what is wrong, or the error the body holds
    /// if it is an error object.
    fn decode(&self, body: &[u8], model: &str) -> Result<ChatCompletion, LlmError>;

    /// A whole answer's body read into the completion a response carries — what
    /// [`ProviderClient`](crate::ProviderClient) calls.
    ///
    /// The default reads it with [`decode`](Self::decode) and keeps no JSON. An API whose
    /// answers are OpenAI's chat-completion JSON keeps the body with the completion
    /// ([`CompletionBody::from_json`]), so that a caller speaking OpenAI's format is given
    /// it as it came rather than written out again.
    ///
    /// # Errors
    ///
    /// As [`decode`](Self::decode).
    fn decode_body(&self, body: Bytes, model: &str) -> Result<CompletionBody, LlmError> {
        self.decode(&body, model).map(CompletionBody::new)
    }

    /// The state that reads a streamed answer to a request for `model`; `include_usage`:
    /// the caller asked for a usage chunk at the end.
    fn decoder(&self, model: &str, include_usage: bool) -> Self::Decoder;

    /// An error answer (a non-2xx status) read into an [`LlmError`].
    ///
    /// The default is [`LlmError::from_response`], which reads OpenAI's, Anthropic's and
    /// Gemini's error bodies and the `Retry-After` and rate-limit headers.
    fn decode_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> LlmError {
        LlmError::from_response(status, headers, body)
    }

    /// The URL of the active health probe: a cheap `GET` that checks reachability and the
    /// key without generating tokens.
    ///
    /// # Errors
    ///
    /// A [`LlmErrorKind::BadRequest`] error if the configuration leaves no valid probe (for
    /// example a default model that is not a valid model name).
    fn probe_url(&self) -> Result<reqwest::Url, LlmError>;

    /// The HTTP request a client sends for `request` — the one
    /// [`ProviderClient`](crate::ProviderClient) sends, in `http`'s form, to inspect or test.
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode).
    fn chat_request(&self, request: &ChatRequest) -> Result<Request<Bytes>, LlmError> {
        let encoded = self.encode(request)?;
        let headers = request_headers(self.headers(), request.is_stream());
        http_request(Method::POST, &encoded.url, headers, encoded.body)
    }

    /// The HTTP request of the active health probe (see [`probe_url`](Self::probe_url)).
    ///
    /// # Errors
    ///
    /// As [`probe_url`](Self::probe_url).
    fn probe_request(&self) -> Result<Request<Bytes>, LlmError> {
        let url = self.probe_url()?;
        http_request(
            Method::GET,
            &url,
            probe_headers(self.headers()),
            Bytes::new(),
        )
    }
}

/// A [`ChatRequest`] encoded by a [`ProviderApi`].
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Where to `POST` it (made from URLs parsed when the API was made, never printed in
    /// errors).
    pub url: reqwest::Url,
    /// The body.
    pub body: Bytes,
    /// The provider model asked (the requested model as the configuration resolves it).
    pub model: String,
}

/// The headers of a chat request: the API's, and `Accept` for a stream or a whole answer.
pub(crate) fn request_headers(api: &HeaderMap, stream: bool) -> HeaderMap {
    let mut headers = api.clone();
    headers.insert(
        ACCEPT,
        HeaderValue::from_static(if stream {
            "text/event-stream"
        } else {
            "application/json"
        }),
    );
    headers
}

/// The headers of a probe: the API's without a content type (it has no body), asking for
/// JSON.
pub(crate) fn probe_headers(api: &HeaderMap) -> HeaderMap {
    let mut headers = api.clone();
    headers.remove(CONTENT_TYPE);
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    headers
}

fn http_request(
    method: Method,
    url: &reqwest::Url,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Request<Bytes>, LlmError> {
    let mut request = Request::builder()
        .method(method)
        .uri(url.as_str())
        .body(body)
        .map_err(|_| LlmError::new(LlmErrorKind::BadRequest, "invalid request URL"))?;
    *request.headers_mut() = headers;
    Ok(request)
}
