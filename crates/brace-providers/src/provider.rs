//! Shared HTTP plumbing for provider clients: secrets, configuration, one pooled reqwest
//! client, and the common path from a built request to an [`LlmError`] or a bounded body.
//!
//! A provider client (OpenAI, Anthropic, Gemini, …) is a
//! [`ProviderClient`](crate::ProviderClient) over two parts:
//!
//! 1. a [`ProviderApi`](crate::ProviderApi): pure functions that encode a
//!    [`ChatRequest`](brace_llm::ChatRequest) for the provider and read its answers back,
//!    with an [`SseDecoder`] for its stream events (testable without a socket);
//! 2. a [`Transport`] that sends the request on the shared pooled client, bounds every wait,
//!    and turns every non-2xx answer and transport failure into an [`LlmError`] naming the
//!    provider; a stream's body is read by [`HttpResponse::into_chunks`].
//!
//! # Timeouts
//!
//! Nothing waits without a bound:
//!
//! - [`ClientConfig::timeout`] bounds the whole call, from sending the request to the last
//!   byte of the body — streamed bodies included;
//! - [`ClientConfig::connect_timeout`] bounds opening a connection;
//! - [`ClientConfig::stream_idle_timeout`] bounds the gap between two pieces of a body
//!   (a stream that stalls fails with [`LlmErrorKind::Timeout`] even if the total timeout is
//!   far away);
//! - an error body is read for at most [`ERROR_BODY_TIMEOUT`] and [`MAX_ERROR_BODY`] bytes.
//!
//! # HTTP versions
//!
//! Over `https`, HTTP/2 is negotiated with the server (ALPN) and used when it offers it (the
//! public APIs of OpenAI, Anthropic and Gemini all do): every stream to that host is then
//! multiplexed over few connections. Over plain `http`, a client speaks HTTP/1.1 (one
//! connection per request in flight) unless the provider is configured with
//! [`ClientConfig::http2_prior_knowledge`], for upstreams known to speak cleartext HTTP/2
//! (h2c): an internal proxy, another gateway, brace-sim's `SimServer`.
//! See [`ClientOptions`] for the HTTP/2 settings.
//!
//! # Secrets
//!
//! An [`ApiKey`] prints as `ApiKey([redacted])`, has no `Display`, and header values built
//! from it are marked sensitive (so `http`'s own `Debug` hides them). Transport errors never
//! carry the URL (an Azure or Gemini URL may hold a key), and provider messages pass through
//! [`redact_secrets`](brace_llm::error::redact_secrets).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use brace_providers::provider::{ApiKey, ClientConfig};
//!
//! let config = ClientConfig::new("openai", "https://api.openai.com/v1")
//!     .with_api_key(ApiKey::new("sk-test-0123456789"))
//!     .with_default_model("gpt-4o-mini")
//!     .with_model("fast", "gpt-4o-mini")
//!     .with_model("gpt-4o", "gpt-4o")
//!     .with_timeout(Duration::from_secs(30));
//! assert_eq!(config.resolve_model("fast"), "gpt-4o-mini");
//! assert_eq!(config.resolve_model("gpt-4o"), "gpt-4o");
//! assert_eq!(config.resolve_model("claude-3-5-sonnet"), "gpt-4o-mini");
//! assert!(!format!("{config:?}").contains("0123456789"));
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use parking_lot::Mutex;
use pin_project_lite::pin_project;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, Sleep};

use crate::sse::{ChunkStream, MalformedEvents, SseDecoder, SseEvents};
use brace_llm::error::{LlmError, LlmErrorKind};
use brace_llm::response::ChatResponse;

/// The most bytes of an error body that are read (the rest is dropped).
pub const MAX_ERROR_BODY: usize = 64 * 1024;

/// The longest an error body is waited for (within the call's own timeout).
pub const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(5);

// ===== ApiKey =====

/// A provider API key.
///
/// Its `Debug` output is `ApiKey([redacted])`; it has no `Display`. The key is only reachable
/// through [`expose`](Self::expose), for building the header that carries it.
///
/// ```
/// use brace_providers::provider::ApiKey;
///
/// let key = ApiKey::new("sk-proj-abcdef123456");
/// assert_eq!(format!("{key:?}"), "ApiKey([redacted])");
/// assert_eq!(key.expose(), "sk-proj-abcdef123456");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    /// A key from its text (surrounding whitespace is trimmed).
    pub fn new(key: impl AsRef<str>) -> Self {
        Self(Arc::from(key.as_ref().trim()))
    }

    /// Reads the key from the environment variable `var`.
    ///
    /// # Errors
    ///
    /// A [`ClientConfigError`] naming the variable (never its value) if it is unset, empty or not
    /// Unicode.
    pub fn from_env(var: &str) -> Result<Self, ClientConfigError> {
        match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => Ok(Self::new(value)),
            Ok(_) => Err(ClientConfigError::new(format!(
                "environment variable `{var}` is empty"
            ))),
            Err(std::env::VarError::NotPresent) => Err(ClientConfigError::new(format!(
                "environment variable `{var}` is not set"
            ))),
            Err(std::env::VarError::NotUnicode(_)) => Err(ClientConfigError::new(format!(
                "environment variable `{var}` is not valid Unicode"
            ))),
        }
    }

    /// The key itself. Use it only to build the header or query parameter that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A header value holding `prefix` followed by the key, marked sensitive.
    ///
    /// # Errors
    ///
    /// A [`ClientConfigError`] if the key holds characters a header cannot carry (the message does
    /// not include the key).
    pub fn header_value(&self, prefix: &str) -> Result<HeaderValue, ClientConfigError> {
        let mut value =
            HeaderValue::try_from(format!("{prefix}{}", self.expose())).map_err(|_| {
                ClientConfigError::new("the API key holds characters a header cannot carry")
            })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

// ===== ClientConfigError =====

/// A provider could not be set up: a bad URL, a missing key, an invalid header.
///
/// Its message never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfigError {
    message: String,
}

impl ClientConfigError {
    /// An error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for ClientConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid provider configuration: {}", self.message)
    }
}

impl std::error::Error for ClientConfigError {}

// ===== ClientConfig =====

fn default_timeout() -> Duration {
    Duration::from_mins(2)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_stream_idle_timeout() -> Duration {
    Duration::from_mins(1)
}

fn default_max_response_bytes() -> usize {
    32 * 1024 * 1024
}

/// What every provider client is configured with.
///
/// Deserializes from YAML/JSON (durations as `30s`, `250ms` or seconds); the key itself is
/// never part of the file: name the environment variable in `api_key_env`.
///
/// ```
/// use brace_providers::provider::ClientConfig;
///
/// let config: ClientConfig = serde_json::from_str(r#"{
///     "name": "local-llama",
///     "base_url": "http://127.0.0.1:11434/v1",
///     "default_model": "llama3.1:8b",
///     "timeout": "30s",
///     "stream_idle_timeout": "10s"
/// }"#).unwrap();
/// assert_eq!(config.timeout, std::time::Duration::from_secs(30));
/// assert_eq!(config.resolve_model("gpt-4o"), "llama3.1:8b");
/// ```
#[derive(Clone, Deserialize)]
pub struct ClientConfig {
    /// The provider's name, as it appears in errors, metrics and [`ResponseMeta`].
    ///
    /// [`ResponseMeta`]: brace_llm::ResponseMeta
    pub name: Arc<str>,
    /// Where the API lives. For OpenAI and OpenAI-compatible servers this includes the
    /// version (`https://api.openai.com/v1`, `http://localhost:11434/v1`); for Azure it is
    /// the resource endpoint (`https://NAME.openai.azure.com`).
    pub base_url: String,
    /// The key, if set in code. Takes precedence over `api_key_env`.
    #[serde(skip)]
    pub api_key: Option<ApiKey>,
    /// The environment variable that holds the key (read when the client is built).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The model used for a requested model the mapping does not name (and for an empty
    /// one). `None`: such a model is sent as requested.
    #[serde(default)]
    pub default_model: Option<String>,
    /// Requested model → the provider's model (for Azure: the deployment name).
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    /// Bound on a whole call, from sending the request to the last byte of the body
    /// (streams included). Default 120 s.
    #[serde(default = "default_timeout", with = "brace_core::duration")]
    pub timeout: Duration,
    /// Bound on opening a connection. Default 10 s.
    #[serde(default = "default_connect_timeout", with = "brace_core::duration")]
    pub connect_timeout: Duration,
    /// Bound on the gap between two pieces of a response body. Default 60 s.
    #[serde(default = "default_stream_idle_timeout", with = "brace_core::duration")]
    pub stream_idle_timeout: Duration,
    /// Headers added to every request (values are treated as secrets in `Debug`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// What a malformed event in an otherwise valid stream does. Default: skipped and
    /// counted.
    #[serde(default)]
    pub malformed_events: MalformedEvents,
    /// The largest successful (non-streamed) body accepted. Default 32 MiB.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Speak HTTP/2 from the first byte, without negotiating it ("prior knowledge"). Over
    /// plain `http` this is cleartext HTTP/2 (h2c), for upstreams known to speak it (an
    /// internal proxy, another gateway, brace's simulated provider): the provider's calls
    /// are then multiplexed over one connection instead of taking one HTTP/1.1 connection
    /// each. A server that speaks only HTTP/1.1 fails every call (a connection error), so
    /// this is off by default. Over `https`, HTTP/2 is negotiated anyway; this only refuses
    /// HTTP/1.1. Providers with and without it get different pooled clients (see
    /// [`ClientOptions`]).
    #[serde(default)]
    pub http2_prior_knowledge: bool,
    /// Which HTTP client sends the calls: `auto` (default) uses brace's lean client on
    /// hyper-util for plain `http` base URLs when no proxy is configured in the
    /// environment, and reqwest for `https` (its TLS) and behind a proxy; `reqwest` and
    /// `lean` choose one (`lean` only reaches plain `http`). See [`HttpClient`].
    #[serde(default)]
    pub http_client: HttpClient,
    /// Called with the headers of every request the client sends, just before it goes out
    /// (see [`RequestHook`]). Not part of a configuration file.
    #[serde(skip)]
    pub request_hook: Option<RequestHook>,
}

/// A function that adds or changes headers of every request a provider client sends, just
/// before it goes out, on the task (and in the [`tracing`] span) that sends it.
///
/// The gateway uses one to propagate the trace context (a W3C `traceparent` header from the
/// current span), so that this crate needs no OpenTelemetry dependency. A hook must be
/// quick: it runs once per request, and for every attempt.
///
/// ```
/// use brace_providers::provider::{ClientConfig, RequestHook};
///
/// let config = ClientConfig::new("local", "http://localhost:11434/v1").with_request_hook(
///     RequestHook::new(|headers| {
///         headers.insert("x-team", http::HeaderValue::from_static("search"));
///     }),
/// );
/// # let _ = config;
/// ```
#[derive(Clone)]
pub struct RequestHook(Arc<dyn Fn(&mut HeaderMap) + Send + Sync>);

impl RequestHook {
    /// A hook calling `hook` with each request's headers.
    pub fn new(hook: impl Fn(&mut HeaderMap) + Send + Sync + 'static) -> Self {
        Self(Arc::new(hook))
    }

    /// Calls the hook on `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        (self.0)(headers);
    }
}

impl fmt::Debug for RequestHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestHook")
    }
}

/// Which HTTP client a provider's calls go through (see [`ClientConfig::http_client`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpClient {
    /// The lean client for plain `http` without a proxy in the environment, else reqwest.
    #[default]
    Auto,
    /// reqwest: TLS, proxies from the environment.
    Reqwest,
    /// [`LeanClient`](crate::lean::LeanClient), its own pool of connections (HTTP/1.1 read
    /// and written by the calling task): plain `http` only, no proxy.
    Lean,
}

/// The environment variables reqwest reads a proxy for plain `http` from.
const HTTP_PROXY_VARS: [&str; 4] = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"];

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("name", &self.name)
            .field("base_url", &redact_url(&self.base_url))
            .field("api_key", &self.api_key)
            .field("api_key_env", &self.api_key_env)
            .field("default_model", &self.default_model)
            .field("models", &self.models)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("stream_idle_timeout", &self.stream_idle_timeout)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("malformed_events", &self.malformed_events)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("http2_prior_knowledge", &self.http2_prior_knowledge)
            .field("http_client", &self.http_client)
            .field("request_hook", &self.request_hook.is_some())
            .finish()
    }
}

impl ClientConfig {
    /// A provider called `name` at `base_url`, with no key and the default timeouts.
    pub fn new(name: impl Into<Arc<str>>, base_url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            base_url: base_url.into(),
            api_key: None,
            api_key_env: None,
            default_model: None,
            models: BTreeMap::new(),
            timeout: default_timeout(),
            connect_timeout: default_connect_timeout(),
            stream_idle_timeout: default_stream_idle_timeout(),
            headers: BTreeMap::new(),
            malformed_events: MalformedEvents::default(),
            max_response_bytes: default_max_response_bytes(),
            http2_prior_knowledge: false,
            http_client: HttpClient::Auto,
            request_hook: None,
        }
    }

    /// Calls `hook` with the headers of every request the client sends (see
    /// [`RequestHook`]).
    #[must_use]
    pub fn with_request_hook(mut self, hook: RequestHook) -> Self {
        self.request_hook = Some(hook);
        self
    }

    /// Sets the key.
    #[must_use]
    pub fn with_api_key(mut self, key: ApiKey) -> Self {
        self.api_key = Some(key);
        self
    }

    /// Names the environment variable the key is read from when the client is built.
    #[must_use]
    pub fn with_api_key_env(mut self, var: impl Into<String>) -> Self {
        self.api_key_env = Some(var.into());
        self
    }

    /// Sets the model used for requested models the mapping does not name.
    #[must_use]
    pub fn with_default_model(mut self, model: impl Into<String>) -> Self {
        self.default_model = Some(model.into());
        self
    }

    /// Maps a requested model to the provider's model (for Azure: a deployment).
    #[must_use]
    pub fn with_model(mut self, requested: impl Into<String>, provider: impl Into<String>) -> Self {
        self.models.insert(requested.into(), provider.into());
        self
    }

    /// Sets the bound on a whole call.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the bound on opening a connection.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the bound on the gap between two pieces of a body.
    #[must_use]
    pub fn with_stream_idle_timeout(mut self, timeout: Duration) -> Self {
        self.stream_idle_timeout = timeout;
        self
    }

    /// Adds a header sent with every request.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sets what a malformed stream event does.
    #[must_use]
    pub fn with_malformed_events(mut self, policy: MalformedEvents) -> Self {
        self.malformed_events = policy;
        self
    }

    /// Speak HTTP/2 from the first byte (cleartext HTTP/2 over `http`): see
    /// [`http2_prior_knowledge`](Self::http2_prior_knowledge).
    #[must_use]
    pub fn with_http2_prior_knowledge(mut self, enabled: bool) -> Self {
        self.http2_prior_knowledge = enabled;
        self
    }

    /// Chooses the HTTP client (see [`http_client`](Self::http_client)).
    #[must_use]
    pub fn with_http_client(mut self, client: HttpClient) -> Self {
        self.http_client = client;
        self
    }

    /// `true` if this provider's calls go through the [lean client](crate::lean): chosen,
    /// or `auto` with a plain `http` base URL and no proxy variable in the environment.
    pub fn uses_lean_client(&self) -> bool {
        match self.http_client {
            HttpClient::Lean => true,
            HttpClient::Reqwest => false,
            HttpClient::Auto => {
                self.base_url.trim_start().starts_with("http://")
                    && HTTP_PROXY_VARS
                        .iter()
                        .all(|var| std::env::var_os(var).is_none_or(|value| value.is_empty()))
            }
        }
    }

    /// The options of the pooled client this provider's calls go through.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions::new(self.connect_timeout)
            .with_http2_prior_knowledge(self.http2_prior_knowledge)
    }

    /// The provider model for a requested one: the mapping's entry, else `default_model`,
    /// else the requested name unchanged. To let a name through while a default is set,
    /// map it to itself.
    pub fn resolve_model<'a>(&'a self, requested: &'a str) -> &'a str {
        if let Some(mapped) = self.models.get(requested) {
            return mapped;
        }
        match &self.default_model {
            Some(default) => default,
            None => requested,
        }
    }

    /// The key: `api_key` if set, else read from `api_key_env` if named, else `None`.
    ///
    /// # Errors
    ///
    /// A [`ClientConfigError`] if `api_key_env` names a variable that is unset or empty.
    pub fn resolve_api_key(&self) -> Result<Option<ApiKey>, ClientConfigError> {
        if let Some(key) = &self.api_key {
            return Ok(Some(key.clone()));
        }
        self.api_key_env
            .as_deref()
            .map(ApiKey::from_env)
            .transpose()
    }

    /// The extra headers as a [`HeaderMap`], every value marked sensitive.
    ///
    /// # Errors
    ///
    /// A [`ClientConfigError`] naming the header (not its value) if a name or value is invalid.
    pub fn header_map(&self) -> Result<HeaderMap, ClientConfigError> {
        let mut map = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let header = HeaderName::try_from(name.as_str())
                .map_err(|_| ClientConfigError::new(format!("invalid header name `{name}`")))?;
            let mut value = HeaderValue::try_from(value.as_str()).map_err(|_| {
                ClientConfigError::new(format!("invalid value for header `{name}`"))
            })?;
            value.set_sensitive(true);
            map.insert(header, value);
        }
        Ok(map)
    }

    /// The base URL without a trailing slash, checked to be an `http` or `https` URL.
    ///
    /// # Errors
    ///
    /// A [`ClientConfigError`] if it is not.
    pub fn checked_base_url(&self) -> Result<String, ClientConfigError> {
        let base = self.base_url.trim().trim_end_matches('/');
        let url = reqwest::Url::parse(base).map_err(|err| {
            ClientConfigError::new(format!(
                "base URL `{}` is not a valid URL: {err}",
                redact_url(base)
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ClientConfigError::new(format!(
                "base URL `{}` must use http or https",
                redact_url(base)
            )));
        }
        Ok(base.to_owned())
    }

    /// [`checked_base_url`](Self::checked_base_url), parsed: parse it once, when a client is
    /// built, and make each endpoint from it with [`endpoint`] (never printed: a URL is
    /// kept out of every `Debug`, `Display` and error).
    pub(crate) fn parsed_base_url(&self) -> Result<reqwest::Url, ClientConfigError> {
        let base = self.checked_base_url()?;
        reqwest::Url::parse(&base).map_err(|err| {
            ClientConfigError::new(format!(
                "base URL `{}` is not a valid URL: {err}",
                redact_url(&base)
            ))
        })
    }
}

/// `base` with `path` (which starts with `/`) appended to its path and `query` as its
/// query. Only the path and the query are parsed: the scheme and host are copied, not
/// processed again (no IDNA, no IP address formatting), so this is far cheaper than
/// parsing the whole URL.
pub(crate) fn endpoint(base: &reqwest::Url, path: &str, query: Option<&str>) -> reqwest::Url {
    let mut url = base.clone();
    let mut full = String::with_capacity(base.path().len() + path.len());
    full.push_str(base.path().trim_end_matches('/'));
    full.push_str(path);
    url.set_path(&full);
    url.set_query(query);
    url.set_fragment(None);
    url
}

/// A request to send with [`Transport::send_request_with`], from a URL parsed in advance
/// (cloned, not parsed again), the headers, and the body.
pub(crate) fn prepared_request(
    method: http::Method,
    url: reqwest::Url,
    headers: HeaderMap,
    body: Bytes,
) -> Prepared {
    Prepared {
        method,
        target: Target::Url(url),
        headers,
        body: Some(body),
        reqwest: None,
    }
}

/// A request ready for either HTTP client.
pub(crate) struct Prepared {
    method: http::Method,
    target: Target,
    headers: HeaderMap,
    /// `None` only for a reqwest request whose body is a stream (kept in `reqwest`).
    body: Option<Bytes>,
    /// A request that came in reqwest's form, sent as it is by reqwest.
    reqwest: Option<reqwest::Request>,
}

/// Where a [`Prepared`] request goes, in the form it came in.
enum Target {
    Url(reqwest::Url),
    Uri(http::Uri),
}

impl Prepared {
    /// The headers to send (a reqwest-form request's own).
    fn headers_mut(&mut self) -> &mut HeaderMap {
        match &mut self.reqwest {
            Some(request) => request.headers_mut(),
            None => &mut self.headers,
        }
    }

    fn from_reqwest(request: reqwest::Request) -> Self {
        Self {
            method: request.method().clone(),
            target: Target::Url(request.url().clone()),
            headers: HeaderMap::new(),
            body: None,
            reqwest: Some(request),
        }
    }

    fn from_http(request: http::Request<Bytes>) -> Self {
        let (parts, body) = request.into_parts();
        Self {
            method: parts.method,
            target: Target::Uri(parts.uri),
            headers: parts.headers,
            body: Some(body),
            reqwest: None,
        }
    }

    /// The request in reqwest's form (`None`: its URL cannot be one).
    fn into_reqwest(self) -> Option<reqwest::Request> {
        if let Some(request) = self.reqwest {
            return Some(request);
        }
        let url = match self.target {
            Target::Url(url) => url,
            Target::Uri(uri) => reqwest::Url::parse(&uri.to_string()).ok()?,
        };
        let mut request = reqwest::Request::new(self.method, url);
        *request.headers_mut() = self.headers;
        *request.body_mut() = self.body.map(Into::into);
        Some(request)
    }

    /// The request for the lean client (`None`: its URL is not an `http` URI, or its body
    /// is a stream).
    fn into_http(self, uris: &UriCache) -> Option<http::Request<http_body_util::Full<Bytes>>> {
        let (headers, body) = match self.reqwest {
            Some(request) => {
                let body = match request.body() {
                    Some(body) => Bytes::copy_from_slice(body.as_bytes()?),
                    None => Bytes::new(),
                };
                (request.headers().clone(), body)
            }
            None => (self.headers, self.body.unwrap_or_default()),
        };
        let uri = match self.target {
            Target::Uri(uri) => uri,
            Target::Url(url) => uris.get(&url)?,
        };
        let mut request = http::Request::new(http_body_util::Full::new(body));
        *request.method_mut() = self.method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Some(request)
    }
}

/// The URL with its query, fragment and any user info dropped, for messages.
fn redact_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or_default();
    let Some((scheme, rest)) = without_query.split_once("://") else {
        return without_query.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}{path}")
}

// ===== the shared reqwest client =====

/// Installs rustls' `ring` crypto provider as the process default (once; a provider already
/// installed by someone else is kept).
pub fn install_crypto_provider() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // Err means another provider is already installed: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// How long an idle pooled connection is kept open.
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// TCP keep-alive: probes after this long without traffic, then at this interval (three
/// tries), on every upstream connection.
pub(crate) const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// How often a ping is sent on an HTTP/2 connection that has streams open but has received
/// nothing for that long (see [`ClientOptions`]).
pub const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// How long a ping may go unanswered before its HTTP/2 connection is closed (see
/// [`ClientOptions`]).
pub const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// What a pooled client is built with: providers whose options are equal share one client
/// (and its connections) through [`shared_client_with`].
///
/// Every client built from options is the same apart from them: redirects are not followed
/// (an API answer is never a redirect, and following one could carry a key elsewhere), the
/// system proxy settings apply, `TCP_NODELAY` is set, idle connections are closed after 90 s.
///
/// # HTTP/2
///
/// Over `https`, HTTP/2 is used when the server offers it; with
/// [`http2_prior_knowledge`](Self::http2_prior_knowledge) it is spoken from the first byte,
/// over plain `http` too (h2c), and HTTP/1.1 is never used. Either way, many calls to one host
/// share one connection, which changes what a failure of that connection costs, so HTTP/2
/// connections carry a keep-alive ping:
///
/// - while a connection has streams open and has received nothing for
///   [`HTTP2_KEEP_ALIVE_INTERVAL`], it is pinged; an answer not back within
///   [`HTTP2_KEEP_ALIVE_TIMEOUT`] closes it, failing every stream on it at once (each an error
///   the caller can retry or fail over) and taking it out of the pool. A peer host that
///   vanished is already found by TCP keep-alive (reqwest's default: probes after 15 s of
///   silence, every 15 s, three tries); the ping also finds a peer whose kernel still
///   acknowledges but whose HTTP/2 server no longer answers (a wedged process). Without it,
///   each call on such a connection fails only at its own idle or total timeout, and the
///   pool keeps sending new calls to it: with HTTP/1.1 a dead connection holds one call,
///   with HTTP/2 it holds all of them.
/// - hyper only pings after a whole interval without receiving anything, so a stream that
///   is sending tokens causes no ping; a slow model that is silent for minutes before its
///   first token costs one small frame every 30 s. (The price while it is on: a lock and a
///   clock read per received frame, to note the time.)
/// - Idle connections are not pinged (some servers, gRPC's among them, close connections
///   that ping without streams open); the pool closes them after 90 s.
///
/// Flow control keeps hyper's defaults (5 MiB per connection, 2 MiB per stream, granted as
/// data is read, not allocated): LLM streams are a few bytes per token, far from any window,
/// so an adaptive (BDP-probing) window would only add pings.
///
/// The number of concurrent streams on one connection is the server's
/// `SETTINGS_MAX_CONCURRENT_STREAMS`: calls beyond it wait in the client for a stream to end,
/// so a server meant to carry many long streams over one connection must allow them
/// (brace-sim's `SimServer` allows 10 000).
///
/// ```
/// use std::time::Duration;
/// use brace_providers::provider::{ClientOptions, ClientConfig};
///
/// let config = ClientConfig::new("internal", "http://127.0.0.1:4000/v1")
///     .with_http2_prior_knowledge(true);
/// assert_eq!(
///     config.client_options(),
///     ClientOptions::new(Duration::from_secs(10)).with_http2_prior_knowledge(true),
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientOptions {
    connect_timeout: Duration,
    http2_prior_knowledge: bool,
}

impl ClientOptions {
    /// Options with `connect_timeout` as the bound on opening a connection, and HTTP/2 only
    /// where the server offers it over TLS.
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            http2_prior_knowledge: false,
        }
    }

    /// Speak HTTP/2 from the first byte: see [`ClientConfig::http2_prior_knowledge`].
    #[must_use]
    pub fn with_http2_prior_knowledge(mut self, enabled: bool) -> Self {
        self.http2_prior_knowledge = enabled;
        self
    }

    /// The bound on opening a connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// `true` if HTTP/2 is spoken from the first byte.
    pub fn http2_prior_knowledge(&self) -> bool {
        self.http2_prior_knowledge
    }
}

/// The process-wide pooled client for a connect timeout: [`shared_client_with`] with
/// [`ClientOptions::new`]`(connect_timeout)`.
///
/// # Errors
///
/// A [`ClientConfigError`] if the TLS set-up fails (for example, no usable root certificates).
pub fn shared_client(connect_timeout: Duration) -> Result<reqwest::Client, ClientConfigError> {
    shared_client_with(ClientOptions::new(connect_timeout))
}

/// The process-wide pooled client for `options`.
///
/// Every provider with the same options shares one client and its connection pool (HTTP/1.1
/// keep-alive, HTTP/2 where the server offers it or the options require it); providers with
/// other options (another connect timeout, HTTP/2 prior knowledge or not) get another.
///
/// # Errors
///
/// A [`ClientConfigError`] if the TLS set-up fails (for example, no usable root certificates).
pub fn shared_client_with(options: ClientOptions) -> Result<reqwest::Client, ClientConfigError> {
    static CLIENTS: OnceLock<Mutex<HashMap<ClientOptions, reqwest::Client>>> = OnceLock::new();
    let clients = CLIENTS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut clients = clients.lock();
    if let Some(client) = clients.get(&options) {
        return Ok(client.clone());
    }
    let client = build_client_with(options)?;
    clients.insert(options, client.clone());
    Ok(client)
}

/// The process-wide [lean client](crate::lean::LeanClient) for `options`: every provider
/// with the same options shares it (one connection pool per runtime).
pub fn shared_lean_client(options: ClientOptions) -> crate::lean::LeanClient {
    static CLIENTS: OnceLock<Mutex<HashMap<ClientOptions, crate::lean::LeanClient>>> =
        OnceLock::new();
    let clients = CLIENTS.get_or_init(|| Mutex::new(HashMap::new()));
    clients
        .lock()
        .entry(options)
        .or_insert_with(|| crate::lean::LeanClient::new(options))
        .clone()
}

/// A new pooled client configured as [`shared_client`]'s (use it to give a provider a pool
/// of its own): [`build_client_with`] with [`ClientOptions::new`]`(connect_timeout)`.
///
/// # Errors
///
/// A [`ClientConfigError`] if the TLS set-up fails.
pub fn build_client(connect_timeout: Duration) -> Result<reqwest::Client, ClientConfigError> {
    build_client_with(ClientOptions::new(connect_timeout))
}

/// A new pooled client for `options`, configured as [`shared_client_with`]'s (use it to give
/// a provider a pool of its own, then [`Transport::with_client`]).
///
/// # Errors
///
/// A [`ClientConfigError`] if the TLS set-up fails.
pub fn build_client_with(options: ClientOptions) -> Result<reqwest::Client, ClientConfigError> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .http2_keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
        .http2_keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT)
        .http2_keep_alive_while_idle(false);
    if options.http2_prior_knowledge {
        builder = builder.http2_prior_knowledge();
    }
    builder.build().map_err(|err| {
        ClientConfigError::new(format!(
            "could not build the HTTP client: {}",
            brace_llm::error::redact_secrets(&err.without_url().to_string())
        ))
    })
}

// ===== ProviderStats =====

/// Counters a provider client keeps across calls (shared by its clones).
#[derive(Debug, Default)]
pub struct ProviderStats {
    malformed_events_skipped: AtomicU64,
    streams_interrupted: AtomicU64,
}

impl ProviderStats {
    /// Malformed stream events skipped (under [`MalformedEvents::Skip`]).
    pub fn malformed_events_skipped(&self) -> u64 {
        self.malformed_events_skipped.load(Ordering::Relaxed)
    }

    /// Streams that ended in an error after they had started.
    pub fn streams_interrupted(&self) -> u64 {
        self.streams_interrupted.load(Ordering::Relaxed)
    }

    pub(crate) fn record_malformed_event(&self) {
        self.malformed_events_skipped
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_stream_interrupted(&self) {
        self.streams_interrupted.fetch_add(1, Ordering::Relaxed);
    }
}

// ===== Transport =====

/// Reads an error answer (status, headers, body) into an [`LlmError`].
pub(crate) type DecodeErrorFn = fn(StatusCode, &HeaderMap, &[u8]) -> LlmError;

/// Sends built requests for one provider on a pooled client, with every wait bounded and
/// every failure turned into an [`LlmError`] that names the provider.
///
/// Cheap to clone (shared state behind `Arc`).
#[derive(Clone)]
pub struct Transport {
    client: Backend,
    settings: Arc<Settings>,
}

/// The HTTP client a [`Transport`] sends on.
#[derive(Clone)]
enum Backend {
    Reqwest(reqwest::Client),
    Lean(crate::lean::LeanClient),
}

#[derive(Debug)]
struct Settings {
    provider: Arc<str>,
    timeout: Duration,
    stream_idle_timeout: Duration,
    max_response_bytes: usize,
    malformed_events: MalformedEvents,
    stats: Arc<ProviderStats>,
    secret: Option<ApiKey>,
    request_hook: Option<RequestHook>,
    uris: UriCache,
}

/// The `http::Uri`s of the URLs a transport sends to most — its chat endpoint, its health
/// probe's — each parsed from its `Url`'s text once: the lean client sends to an
/// `http::Uri`, and parsing one per request cost about 750 instructions and an allocation
/// (the release gateway's profile: `PathAndQuery::from_shared`, `Uri::from_shared`). Slots
/// are filled by the first URLs sent to and never emptied; any other URL is parsed each time.
#[derive(Default)]
struct UriCache([OnceLock<(Box<str>, Option<http::Uri>)>; 2]);

impl fmt::Debug for UriCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the URLs: a provider may take its key in the query (Gemini's `key=`).
        let kept = self.0.iter().filter(|slot| slot.get().is_some()).count();
        f.debug_struct("UriCache").field("kept", &kept).finish()
    }
}

impl UriCache {
    fn get(&self, url: &reqwest::Url) -> Option<http::Uri> {
        let text = url.as_str();
        for slot in &self.0 {
            let (kept, uri) = slot.get_or_init(|| (text.into(), http::Uri::try_from(text).ok()));
            if **kept == *text {
                return uri.clone();
            }
        }
        http::Uri::try_from(text).ok()
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("provider", &self.settings.provider)
            .field("timeout", &self.settings.timeout)
            .field("stream_idle_timeout", &self.settings.stream_idle_timeout)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// A transport for `config`'s provider on the process-wide pooled client for its
    /// [`client_options`](ClientConfig::client_options) (its connect timeout, HTTP/2 prior
    /// knowledge or not): the [lean client](crate::lean) when
    /// [`uses_lean_client`](ClientConfig::uses_lean_client), else [`shared_client_with`]'s
    /// reqwest client.
    ///
    /// # Errors
    ///
    /// A [`ClientConfigError`] if the client cannot be built.
    pub fn new(config: &ClientConfig) -> Result<Self, ClientConfigError> {
        if config.uses_lean_client() {
            return Ok(Self::with_lean_client(
                config,
                shared_lean_client(config.client_options()),
            ));
        }
        Ok(Self::with_client(
            config,
            shared_client_with(config.client_options())?,
        ))
    }

    /// A transport for `config`'s provider on a given [`LeanClient`](crate::lean::LeanClient)
    /// (the client's options apply, not `config`'s); it reaches plain `http` URLs only.
    pub fn with_lean_client(config: &ClientConfig, client: crate::lean::LeanClient) -> Self {
        Self::with_backend(config, Backend::Lean(client))
    }

    /// A transport for `config`'s provider on a given client (the client's connect timeout
    /// and HTTP versions apply, not `config`'s).
    ///
    /// The provider's key (if `config` has one) is remembered only to mask it in error
    /// messages, should a provider echo it back.
    pub fn with_client(config: &ClientConfig, client: reqwest::Client) -> Self {
        Self::with_backend(config, Backend::Reqwest(client))
    }

    fn with_backend(config: &ClientConfig, client: Backend) -> Self {
        Self {
            client,
            settings: Arc::new(Settings {
                provider: config.name.clone(),
                timeout: config.timeout,
                stream_idle_timeout: config.stream_idle_timeout,
                max_response_bytes: config.max_response_bytes,
                malformed_events: config.malformed_events,
                stats: Arc::new(ProviderStats::default()),
                secret: config.resolve_api_key().ok().flatten(),
                request_hook: config.request_hook.clone(),
                uris: UriCache::default(),
            }),
        }
    }

    /// The provider's name.
    pub fn provider(&self) -> &Arc<str> {
        &self.settings.provider
    }

    /// `true` if the transport sends on the [lean client](crate::lean), `false` on reqwest.
    pub fn is_lean(&self) -> bool {
        matches!(self.client, Backend::Lean(_))
    }

    /// The counters shared by this transport and its clones.
    pub fn stats(&self) -> &Arc<ProviderStats> {
        &self.settings.stats
    }

    /// Sends `request` and waits for the head of a successful answer, within the call's
    /// timeout (which keeps running for the body: see [`HttpResponse`]). The configuration's
    /// [`RequestHook`], if any, is called with the request's headers first (here, not when
    /// the future is polled).
    ///
    /// The returned future is `Send + 'static` (it owns a clone of the transport).
    ///
    /// The request's URL is parsed again on every call (reqwest wants a `Url`); the clients
    /// of this crate parse theirs once and use [`send_request`](Self::send_request).
    ///
    /// # Errors
    ///
    /// - a non-2xx answer: [`LlmError::from_response`] over its status, headers and body
    ///   (read up to [`MAX_ERROR_BODY`] bytes and for at most [`ERROR_BODY_TIMEOUT`]);
    /// - no answer head within the timeout: [`LlmErrorKind::Timeout`];
    /// - a transport failure: [`error_from_reqwest`] (connect, reset, …), without the
    ///   URL.
    ///
    /// Every error names the provider.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the request (its connection is closed, not reused).
    pub fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> impl Future<Output = Result<HttpResponse, LlmError>> + Send + 'static {
        self.send_request_with(Prepared::from_http(request), LlmError::from_response)
    }

    /// [`send`](Self::send) for a request already in reqwest's form (its URL parsed in
    /// advance, say once per client and cloned per request), with the same timeouts and
    /// errors.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the request (its connection is closed, not reused).
    pub fn send_request(
        &self,
        request: reqwest::Request,
    ) -> impl Future<Output = Result<HttpResponse, LlmError>> + Send + 'static {
        self.send_request_with(Prepared::from_reqwest(request), LlmError::from_response)
    }

    /// [`send_request`](Self::send_request) with `decode_error` reading an error answer
    /// (a [`ProviderApi`](crate::ProviderApi)'s
    /// [`decode_error`](crate::ProviderApi::decode_error)).
    pub(crate) fn send_request_with(
        &self,
        mut request: Prepared,
        decode_error: DecodeErrorFn,
    ) -> impl Future<Output = Result<HttpResponse, LlmError>> + Send + 'static {
        if let Some(hook) = &self.settings.request_hook {
            hook.apply(request.headers_mut());
        }
        let deadline = Instant::now() + self.settings.timeout;
        self.clone().send_until(request, deadline, decode_error)
    }

    async fn send_until(
        self,
        request: Prepared,
        deadline: Instant,
        decode_error: DecodeErrorFn,
    ) -> Result<HttpResponse, LlmError> {
        let provider = self.settings.provider.clone();
        let unsendable = || {
            LlmError::new(
                LlmErrorKind::BadRequest,
                "the request could not be turned into an HTTP request",
            )
            .with_provider(provider.clone())
        };
        let head = match &self.client {
            Backend::Reqwest(client) => {
                let request = request.into_reqwest().ok_or_else(unsendable)?;
                let call = client.execute(request);
                futures_util::future::Either::Left(async move {
                    let response: http::Response<reqwest::Body> =
                        call.await.map_err(|err| error_from_reqwest(&err))?.into();
                    let (parts, body) = response.into_parts();
                    Ok((parts, RawBody::Reqwest(body)))
                })
            }
            Backend::Lean(client) => {
                let request = request
                    .into_http(&self.settings.uris)
                    .ok_or_else(unsendable)?;
                let call = client.send(request);
                futures_util::future::Either::Right(async move {
                    let (parts, body) = call.await?.into_parts();
                    Ok::<_, LlmError>((parts, RawBody::Lean(body)))
                })
            }
        };
        // The call's timeout, with no timer of its own while a layer above (an attempt's
        // timeout, the gateway's) already cuts the call by then; so are the body's reads.
        let (parts, body) = match brace_core::deadline::timeout_at(deadline, head).await {
            Ok(Ok(head)) => head,
            Ok(Err(err)) => return Err(self.scrub(err.with_provider(provider))),
            Err(_) => return Err(self.timeout_error("no response")),
        };
        let status = parts.status;
        tracing::debug!(provider = %provider, status = status.as_u16(), "provider answered");
        if status.is_success() {
            return Ok(HttpResponse {
                status,
                headers: parts.headers,
                body,
                deadline,
                transport: self,
            });
        }
        let body_deadline = deadline.min(Instant::now() + ERROR_BODY_TIMEOUT);
        let body = read_capped(body, MAX_ERROR_BODY, body_deadline, &self.settings)
            .await
            .unwrap_or_else(|partial| partial);
        Err(self.scrub(decode_error(status, &parts.headers, &body).with_provider(provider)))
    }

    /// `err` with this provider's key masked in its message, should the provider have
    /// echoed it back. Every error the transport and its streams produce is already
    /// masked; use this on errors a client makes from a body itself.
    pub fn scrub(&self, err: LlmError) -> LlmError {
        scrub_secret(err, self.settings.secret.as_ref())
    }

    fn timeout_error(&self, what: &str) -> LlmError {
        LlmError::new(
            LlmErrorKind::Timeout,
            format!("{what} within {:?}", self.settings.timeout),
        )
        .with_provider(self.settings.provider.clone())
    }
}

/// Reads a body up to `cap` bytes, each piece bounded by the idle timeout and the whole by
/// `deadline`. `Err` carries what was read before a failure or the bound.
async fn read_capped(
    mut response: RawBody,
    cap: usize,
    deadline: Instant,
    settings: &Settings,
) -> Result<Bytes, Bytes> {
    let mut body = BytesMut::new();
    loop {
        let idle = Instant::now() + settings.stream_idle_timeout;
        match brace_core::deadline::timeout_at(deadline.min(idle), response.data()).await {
            Ok(Ok(Some(piece))) => {
                let room = cap.saturating_sub(body.len());
                body.extend_from_slice(&piece[..piece.len().min(room)]);
                if piece.len() >= room {
                    return Ok(body.freeze());
                }
            }
            Ok(Ok(None)) => return Ok(body.freeze()),
            Ok(Err(_)) | Err(_) => return Err(body.freeze()),
        }
    }
}

// ===== HttpResponse =====

/// The head of a successful (2xx) answer; the body is still to be read, within the call's
/// timeout.
pub struct HttpResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: RawBody,
    deadline: Instant,
    transport: Transport,
}

/// A response body from either HTTP client.
enum RawBody {
    Reqwest(reqwest::Body),
    Lean(crate::lean::LeanBody),
}

impl RawBody {
    /// The next piece of data (trailers are skipped), or the failure that cut the body
    /// ([`LlmErrorKind::StreamInterrupted`], or what reqwest calls a timeout).
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, LlmError>>> {
        use http_body::Body as _;
        loop {
            let frame = match self {
                Self::Reqwest(body) => match std::task::ready!(Pin::new(body).poll_frame(cx)) {
                    Some(Ok(frame)) => frame,
                    Some(Err(err)) => return Poll::Ready(Some(Err(body_error(&err)))),
                    None => return Poll::Ready(None),
                },
                Self::Lean(body) => match std::task::ready!(Pin::new(body).poll_frame(cx)) {
                    Some(Ok(frame)) => frame,
                    Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                    None => return Poll::Ready(None),
                },
            };
            if let Ok(data) = frame.into_data() {
                return Poll::Ready(Some(Ok(data)));
            }
        }
    }

    /// `true` when the body is known to hold nothing more: the length it announced has all
    /// arrived (a body without a length ends only when it says so).
    fn is_end_stream(&self) -> bool {
        use http_body::Body as _;
        match self {
            Self::Reqwest(body) => body.is_end_stream(),
            Self::Lean(body) => body.is_end_stream(),
        }
    }

    /// The next piece of data: [`poll_data`](Self::poll_data) as a future.
    fn data(&mut self) -> impl Future<Output = Result<Option<Bytes>, LlmError>> + '_ {
        std::future::poll_fn(|cx| self.poll_data(cx).map(Option::transpose))
    }
}

impl fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpResponse")
            .field("provider", &self.transport.settings.provider)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl HttpResponse {
    /// The status (always 2xx).
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// `true` if the body is server-sent events (`text/event-stream`).
    pub fn is_event_stream(&self) -> bool {
        self.headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.trim_start().starts_with("text/event-stream"))
    }

    /// The provider's name.
    pub fn provider(&self) -> &Arc<str> {
        &self.transport.settings.provider
    }

    /// The transport that received this answer (to [`scrub`](Transport::scrub) errors).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Reads the whole body.
    ///
    /// # Errors
    ///
    /// [`LlmErrorKind::Timeout`] past the call's timeout or the idle timeout,
    /// [`LlmErrorKind::MalformedResponse`] if the body is larger than
    /// [`ClientConfig::max_response_bytes`], and [`LlmErrorKind::StreamInterrupted`] if the connection
    /// breaks.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the body.
    pub async fn bytes(self) -> Result<Bytes, LlmError> {
        let settings = &self.transport.settings;
        let cap = settings.max_response_bytes;
        let mut response = self.body;
        // The usual answer arrives in one piece: it is kept as it came, not copied.
        let mut first: Option<Bytes> = None;
        let mut rest = BytesMut::new();
        // A body whose announced length has all arrived is complete: its end is not polled.
        while !response.is_end_stream() {
            let idle = Instant::now() + settings.stream_idle_timeout;
            match brace_core::deadline::timeout_at(self.deadline.min(idle), response.data()).await {
                Ok(Ok(Some(piece))) => {
                    let read = first.as_ref().map_or(0, Bytes::len) + rest.len();
                    if read + piece.len() > cap {
                        return Err(LlmError::new(
                            LlmErrorKind::MalformedResponse,
                            format!("response body larger than {cap} bytes"),
                        )
                        .with_provider(settings.provider.clone()));
                    }
                    if first.is_none() && rest.is_empty() {
                        first = Some(piece);
                    } else {
                        if let Some(first) = first.take() {
                            rest.extend_from_slice(&first);
                        }
                        rest.extend_from_slice(&piece);
                    }
                }
                Ok(Ok(None)) => break,
                Ok(Err(err)) => {
                    return Err(err.with_provider(settings.provider.clone()));
                }
                Err(_) => {
                    return Err(self.transport.timeout_error("response body not complete"));
                }
            }
        }
        Ok(first.unwrap_or_else(|| rest.freeze()))
    }

    /// Reads the whole body as JSON.
    ///
    /// # Errors
    ///
    /// As [`bytes`](Self::bytes), and [`LlmErrorKind::MalformedResponse`] naming what is
    /// wrong if the body is not a `T`. A 2xx body that is an error object (some servers
    /// answer errors with 200) is read by [`LlmError::from_response`].
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, LlmError> {
        let provider = self.provider().clone();
        let status = self.status();
        let headers = self.headers().clone();
        let transport = self.transport.clone();
        let body = self.bytes().await?;
        parse_json_body(&body, status, &headers)
            .map_err(|err| transport.scrub(err.with_provider(provider)))
    }

    /// The body as a stream of pieces, each bounded by the idle timeout and all by the
    /// call's timeout.
    pub fn into_body_stream(self) -> BodyStream {
        let settings = self.transport.settings.clone();
        BodyStream {
            inner: self.body,
            deadline: Box::pin(tokio::time::sleep_until(self.deadline)),
            idle: Box::pin(tokio::time::sleep(settings.stream_idle_timeout)),
            settings,
            done: false,
        }
    }

    /// The body as server-sent events decoded into chunks by `decoder`, with the provider's
    /// malformed-event policy and counters. See [`ChunkStream`] for how a stream ends.
    pub fn into_chunks<D: SseDecoder>(self, decoder: D) -> ChunkStream<SseEvents<BodyStream>, D> {
        let settings = self.transport.settings.clone();
        ChunkStream::new(SseEvents::new(self.into_body_stream()), decoder)
            .with_provider(settings.provider.clone())
            .with_malformed_events(settings.malformed_events)
            .with_stats(settings.stats.clone())
            .with_secret(settings.secret.clone())
    }
}

/// Reads a successful body as JSON; a body that is an error object becomes that error.
///
/// # Errors
///
/// [`LlmErrorKind::MalformedResponse`] naming the problem, or the error the body holds.
pub fn parse_json_body<T: DeserializeOwned>(
    body: &[u8],
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<T, LlmError> {
    json_from_bytes(body).map_err(|err| answer_error(body, status, headers, &err))
}

/// What a 2xx body that did not read as the expected answer is: the error it holds if it is
/// an error object (some compatible servers answer errors with 200), else a malformed
/// response saying what `serde_json` found.
pub(crate) fn answer_error(
    body: &[u8],
    status: StatusCode,
    headers: &HeaderMap,
    err: &serde_json::Error,
) -> LlmError {
    if looks_like_error(body) {
        LlmError::from_response(status, headers, body)
    } else {
        LlmError::new(
            LlmErrorKind::MalformedResponse,
            format!("the response body is not a valid answer: {err}"),
        )
        .with_status(status.as_u16())
    }
}

/// `serde_json::from_slice` with the body's UTF-8 checked once (brace-llm's, used by the
/// providers' decoders and by the gateway).
pub use brace_llm::types::json_from_bytes;

fn looks_like_error(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .is_some_and(|value| value.get("error").is_some())
}

/// Reads a transport error from reqwest into a `Timeout`, `Connect`, `StreamInterrupted` or
/// `MalformedResponse` [`LlmError`]. reqwest's errors can include the URL, which is dropped
/// (an Azure or Gemini URL may hold a key).
pub fn error_from_reqwest(err: &reqwest::Error) -> LlmError {
    let kind = if err.is_timeout() {
        LlmErrorKind::Timeout
    } else if err.is_connect() {
        LlmErrorKind::Connect
    } else if err.is_decode() {
        LlmErrorKind::MalformedResponse
    } else if err.is_body() {
        LlmErrorKind::StreamInterrupted
    } else {
        LlmErrorKind::Connect
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        detail = cause.to_string();
        source = cause.source();
    }
    let message = if detail.is_empty() {
        kind.to_string()
    } else {
        detail
    };
    let out = LlmError::new(kind, message);
    match err.status() {
        Some(status) => out.with_status(status.as_u16()),
        None => out,
    }
}

/// Seconds since the Unix epoch (the `created` of a translated answer).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// A failure while reading a body that had started: the answer is cut, whatever reqwest
/// calls it (it reports a connection dropped mid-body as a decode error).
fn body_error(err: &reqwest::Error) -> LlmError {
    let read = error_from_reqwest(err);
    if read.kind() == LlmErrorKind::Timeout {
        return read;
    }
    let prefix = format!("{}: ", read.kind());
    let detail = read
        .message()
        .strip_prefix(&prefix)
        .unwrap_or(read.message());
    body_broke(detail)
}

/// A body that had started and broke: [`LlmErrorKind::StreamInterrupted`], in the one
/// wording every HTTP client of this crate gives it, with what the transport said.
pub(crate) fn body_broke(detail: &str) -> LlmError {
    LlmError::new(
        LlmErrorKind::StreamInterrupted,
        format!("the connection broke during the body: {detail}"),
    )
}

/// `err` with `secret` masked in its message.
pub(crate) fn scrub_secret(err: LlmError, secret: Option<&ApiKey>) -> LlmError {
    let Some(secret) = secret.map(ApiKey::expose) else {
        return err;
    };
    if secret.len() < 4 || !err.message().contains(secret) {
        return err;
    }
    let mut out = LlmError::new(err.kind(), err.message().replace(secret, "[redacted]"))
        .with_retry_after(err.retry_after());
    if let Some(provider) = err.provider() {
        out = out.with_provider(provider);
    }
    if let Some(status) = err.status() {
        out = out.with_status(status);
    }
    if let Some(code) = err.code() {
        out = out.with_code(code);
    }
    out
}

// ===== BodyStream =====

pin_project! {
    /// A response body as a stream of pieces, with the idle and total timeouts applied.
    ///
    /// Yields `Err` once — [`LlmErrorKind::Timeout`] when a bound passes, or the transport's
    /// error ([`LlmErrorKind::StreamInterrupted`] for a connection that breaks) — and then
    /// ends.
    pub struct BodyStream {
        inner: RawBody,
        deadline: Pin<Box<Sleep>>,
        idle: Pin<Box<Sleep>>,
        settings: Arc<Settings>,
        done: bool,
    }
}

impl fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyStream")
            .field("provider", &self.settings.provider)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Stream for BodyStream {
    type Item = Result<Bytes, LlmError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        match this.inner.poll_data(cx) {
            Poll::Ready(Some(Ok(piece))) => {
                let next = Instant::now() + this.settings.stream_idle_timeout;
                this.idle.as_mut().reset(next);
                return Poll::Ready(Some(Ok(piece)));
            }
            Poll::Ready(Some(Err(err))) => {
                *this.done = true;
                return Poll::Ready(Some(Err(err.with_provider(this.settings.provider.clone()))));
            }
            Poll::Ready(None) => {
                *this.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        let message = if this.deadline.as_mut().poll(cx).is_ready() {
            format!("response not complete within {:?}", this.settings.timeout)
        } else if this.idle.as_mut().poll(cx).is_ready() {
            format!(
                "no data for {:?} in the response body",
                this.settings.stream_idle_timeout
            )
        } else {
            return Poll::Pending;
        };
        *this.done = true;
        Poll::Ready(Some(Err(LlmError::new(LlmErrorKind::Timeout, message)
            .with_provider(this.settings.provider.clone()))))
    }
}

// ===== ResponseFuture =====

/// The future a provider client returns: boxed, since a network call's cost dwarfs one
/// allocation and the state machine (send, read head, read or start the body) is long.
///
/// # Cancel safety
///
/// Dropping it abandons the request.
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<ChatResponse, LlmError>> + Send>>,
}

impl ResponseFuture {
    /// Wraps a future.
    pub fn new<F>(future: F) -> Self
    where
        F: Future<Output = Result<ChatResponse, LlmError>> + Send + 'static,
    {
        Self {
            inner: Box::pin(future),
        }
    }

    /// A future that fails at once with `error` (a request refused before it was sent).
    pub fn error(error: LlmError) -> Self {
        Self::new(std::future::ready(Err(error)))
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<ChatResponse, LlmError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

/// The future of an active health probe: `Ok(())` if the provider answered.
pub type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), LlmError>> + Send>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_sent_to_as_the_uri_it_parses_to_whether_kept_or_not() {
        let cache = UriCache::default();
        let urls = [
            "http://127.0.0.1:1/v1/chat/completions",
            "http://127.0.0.1:1/v1/models?limit=1",
            "http://127.0.0.1:1/v1/chat/completions",
            // Past the kept ones: parsed each time.
            "http://127.0.0.1:2/v1beta/models/m:generateContent?alt=sse",
            "http://127.0.0.1:2/v1beta/models/m:generateContent?alt=sse",
        ];
        for text in urls {
            let url = reqwest::Url::parse(text).unwrap();
            let uri = cache.get(&url).unwrap();
            assert_eq!(uri, http::Uri::try_from(text).unwrap(), "{text}");
        }
        let kept: Vec<_> = cache
            .0
            .iter()
            .filter_map(|slot| slot.get())
            .map(|(text, _)| &**text)
            .collect();
        assert_eq!(kept, [urls[0], urls[1]]);
    }

    #[test]
    fn json_is_read_alike_whether_or_not_the_body_is_utf8() {
        let good = "{\"a\":\"\\u00e9t\\u00e9\",\"b\":[\"x\",\"\u{e9}t\u{e9}\"]}".as_bytes();
        let ours: serde_json::Value = json_from_bytes(good).unwrap();
        assert_eq!(
            ours,
            serde_json::from_slice::<serde_json::Value>(good).unwrap()
        );
        // Not UTF-8 (inside a string, then after the value): the same error as `from_slice`,
        // saying where.
        for bad in [&b"{\"a\":\"\xff\"}"[..], &b"{\"a\":1}\xc3"[..]] {
            let ours = json_from_bytes::<serde_json::Value>(bad)
                .unwrap_err()
                .to_string();
            let theirs = serde_json::from_slice::<serde_json::Value>(bad)
                .unwrap_err()
                .to_string();
            assert_eq!(ours, theirs);
            assert!(ours.contains("line 1 column"), "{ours}");
        }
        let err = parse_json_body::<serde_json::Value>(
            b"{\"id\":\"\xff\"}",
            StatusCode::OK,
            &HeaderMap::new(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), LlmErrorKind::MalformedResponse);
        assert!(err.to_string().contains("line 1 column"), "{err}");
    }

    #[test]
    fn model_resolution_prefers_mapping_then_default_then_request() {
        let config = ClientConfig::new("p", "http://127.0.0.1:1")
            .with_model("fast", "small-v2")
            .with_model("big", "big");
        assert_eq!(config.resolve_model("fast"), "small-v2");
        assert_eq!(config.resolve_model("other"), "other");
        let config = config.with_default_model("medium");
        assert_eq!(config.resolve_model("big"), "big");
        assert_eq!(config.resolve_model("other"), "medium");
        assert_eq!(config.resolve_model(""), "medium");
    }

    #[test]
    fn urls_lose_query_and_user_info_in_messages() {
        assert_eq!(
            redact_url("https://user:pw@host/v1?key=abc"),
            "https://host/v1"
        );
        assert_eq!(
            redact_url("https://host/v1beta?key=abc"),
            "https://host/v1beta"
        );
    }

    #[test]
    fn bad_base_urls_are_refused_without_their_query() {
        let config = ClientConfig::new("p", "ftp://host/x?key=secret-value");
        let err = config.checked_base_url().unwrap_err();
        assert!(!err.to_string().contains("secret-value"), "{err}");
        let config = ClientConfig::new("p", "not a url?key=secret-value");
        assert!(
            !config
                .checked_base_url()
                .unwrap_err()
                .to_string()
                .contains("secret")
        );
        let config = ClientConfig::new("p", "http://127.0.0.1:8080/v1/");
        assert_eq!(
            config.checked_base_url().unwrap(),
            "http://127.0.0.1:8080/v1"
        );
    }

    #[test]
    fn missing_key_variable_is_named_not_read() {
        let err = ApiKey::from_env("BRACE_TEST_SURELY_UNSET_VARIABLE").unwrap_err();
        assert!(err.to_string().contains("BRACE_TEST_SURELY_UNSET_VARIABLE"));
    }

    #[test]
    fn header_values_from_keys_are_sensitive() {
        let value = ApiKey::new("sk-abcdef").header_value("Bearer ").unwrap();
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("abcdef"));
        assert!(ApiKey::new("bad\nkey").header_value("").is_err());
    }
}
