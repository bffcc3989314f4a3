//! The pure part of the OpenAI client: requests built, answers read, no socket.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};

use super::config::{OpenAiApi, OpenAiConfig};
use crate::provider::{ConfigError, ProviderConfig, endpoint, prepared_request};
use crate::sse::{DecodeError, Flow, SseDecoder, SseEvent};
use brace_llm::error::{LlmError, LlmErrorKind};
use brace_llm::types::{ChatChunk, ChatCompletion, ChatRequest};

/// Builds an OpenAI-style provider's HTTP requests and reads its answers, without I/O.
///
/// Made once per client from an [`OpenAiConfig`] (the key is read then); every method is a
/// pure function of its arguments. Its `Debug` shows no key and no header value.
#[derive(Clone)]
pub struct OpenAiWire {
    provider: ProviderConfig,
    api: OpenAiApi,
    base: String,
    headers: HeaderMap,
    urls: Urls,
}

/// The endpoints, parsed once when the wire is made (a request clones one: no parsing per
/// call). Never printed.
#[derive(Clone)]
struct Urls {
    /// The chat-completions URL when it does not depend on the model (all but Azure).
    chat: Option<reqwest::Url>,
    /// Azure: the chat-completions URL of each deployment the configuration names.
    deployments: HashMap<String, reqwest::Url>,
    /// The base, for a deployment the configuration does not name.
    base: reqwest::Url,
    models: reqwest::Url,
}

impl Urls {
    fn new(provider: &ProviderConfig, api: &OpenAiApi) -> Result<Self, ConfigError> {
        let base = provider.parsed_base_url()?;
        Ok(match api {
            OpenAiApi::Azure { api_version } => {
                let query = format!("api-version={}", percent_encode(api_version));
                let deployments = provider
                    .models
                    .values()
                    .chain(provider.default_model.as_ref())
                    .map(|model| (model.clone(), azure_chat_url(&base, model, &query)))
                    .collect();
                Self {
                    chat: None,
                    deployments,
                    models: endpoint(&base, "/openai/models", Some(&query)),
                    base,
                }
            }
            OpenAiApi::OpenAi { .. } | OpenAiApi::Compatible => Self {
                chat: Some(endpoint(&base, "/chat/completions", None)),
                deployments: HashMap::new(),
                models: endpoint(&base, "/models", None),
                base,
            },
        })
    }
}

fn azure_chat_url(base: &reqwest::Url, model: &str, query: &str) -> reqwest::Url {
    let path = format!(
        "/openai/deployments/{}/chat/completions",
        percent_encode(model)
    );
    endpoint(base, &path, Some(query))
}

impl fmt::Debug for OpenAiWire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiWire")
            .field("provider", &self.provider.name)
            .field("api", &self.api)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl OpenAiWire {
    /// Checks `config` and prepares the headers every request carries.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if the base URL is not an http(s) URL, the key's environment
    /// variable is unset or empty, OpenAI or Azure has no key, a header is invalid, or
    /// Azure's `api-version` is empty.
    pub fn new(config: OpenAiConfig) -> Result<Self, ConfigError> {
        let base = config.provider.checked_base_url()?;
        let key = config.provider.resolve_api_key()?;
        let mut headers = config.provider.header_map()?;
        match (&config.api, key) {
            (OpenAiApi::Azure { api_version }, key) => {
                if api_version.trim().is_empty() {
                    return Err(ConfigError::new("Azure OpenAI needs an `api_version`"));
                }
                let key = key.ok_or_else(|| {
                    ConfigError::new(format!(
                        "provider `{}` (Azure OpenAI) needs an API key",
                        config.provider.name
                    ))
                })?;
                headers.insert(HeaderName::from_static("api-key"), key.header_value("")?);
            }
            (OpenAiApi::OpenAi { .. }, None) => {
                return Err(ConfigError::new(format!(
                    "provider `{}` (OpenAI) needs an API key",
                    config.provider.name
                )));
            }
            (OpenAiApi::OpenAi { .. } | OpenAiApi::Compatible, Some(key)) => {
                headers.insert(AUTHORIZATION, key.header_value("Bearer ")?);
            }
            (OpenAiApi::Compatible, None) => {}
        }
        if let OpenAiApi::OpenAi {
            organization,
            project,
        } = &config.api
        {
            for (name, value) in [
                ("openai-organization", organization),
                ("openai-project", project),
            ] {
                if let Some(value) = value {
                    let value = HeaderValue::try_from(value.as_str())
                        .map_err(|_| ConfigError::new(format!("invalid value for `{name}`")))?;
                    headers.insert(HeaderName::from_static(name), value);
                }
            }
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let urls = Urls::new(&config.provider, &config.api)?;
        Ok(Self {
            provider: config.provider,
            api: config.api,
            base,
            headers,
            urls,
        })
    }

    /// The provider's name.
    pub fn provider(&self) -> &Arc<str> {
        &self.provider.name
    }

    /// The flavour.
    pub fn api(&self) -> &OpenAiApi {
        &self.api
    }

    /// The provider model (for Azure: the deployment) a requested model resolves to.
    pub fn resolve_model<'a>(&'a self, requested: &'a str) -> &'a str {
        self.provider.resolve_model(requested)
    }

    /// The chat-completions URL for the provider model `model`.
    pub fn chat_url(&self, model: &str) -> String {
        match &self.api {
            OpenAiApi::Azure { api_version } => format!(
                "{}/openai/deployments/{}/chat/completions?api-version={}",
                self.base,
                percent_encode(model),
                percent_encode(api_version)
            ),
            OpenAiApi::OpenAi { .. } | OpenAiApi::Compatible => {
                format!("{}/chat/completions", self.base)
            }
        }
    }

    /// The URL the health probe asks: the model list (`GET {base}/models`; for Azure
    /// `GET {endpoint}/openai/models?api-version=…`).
    pub fn models_url(&self) -> String {
        match &self.api {
            OpenAiApi::Azure { api_version } => format!(
                "{}/openai/models?api-version={}",
                self.base,
                percent_encode(api_version)
            ),
            OpenAiApi::OpenAi { .. } | OpenAiApi::Compatible => format!("{}/models", self.base),
        }
    }

    /// The HTTP request for `request`: its model resolved, everything else — unknown fields
    /// included — sent as it came. `Accept` is `text/event-stream` for a streamed request.
    ///
    /// # Errors
    ///
    /// [`LlmErrorKind::BadRequest`] if the request cannot be serialized or the URL is
    /// invalid (a model name cannot make it invalid: it is percent-encoded).
    pub fn chat_request(&self, request: &ChatRequest) -> Result<Request<Bytes>, LlmError> {
        let model = self.resolve_model(&request.model);
        let url = self.chat_url(model);
        let (accept, body) = Self::chat_body(request, model)?;
        self.build(Method::POST, &url, accept, body)
    }

    /// [`chat_request`](Self::chat_request) in reqwest's form, its URL one parsed when the
    /// wire was made (cloned, not parsed again).
    pub(crate) fn prepared_chat_request(
        &self,
        request: &ChatRequest,
    ) -> Result<reqwest::Request, LlmError> {
        let model = self.resolve_model(&request.model);
        let (accept, body) = Self::chat_body(request, model)?;
        let url = match (&self.urls.chat, &self.api) {
            (Some(url), _) => url.clone(),
            (None, OpenAiApi::Azure { api_version }) => match self.urls.deployments.get(model) {
                Some(url) => url.clone(),
                None => azure_chat_url(
                    &self.urls.base,
                    model,
                    &format!("api-version={}", percent_encode(api_version)),
                ),
            },
            (None, _) => endpoint(&self.urls.base, "/chat/completions", None),
        };
        let mut headers = self.headers.clone();
        headers.insert(ACCEPT, accept);
        Ok(prepared_request(Method::POST, url, headers, body))
    }

    /// [`probe_request`](Self::probe_request) in reqwest's form, its URL parsed in advance.
    pub(crate) fn prepared_probe_request(&self) -> reqwest::Request {
        let mut headers = self.headers.clone();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        prepared_request(Method::GET, self.urls.models.clone(), headers, Bytes::new())
    }

    /// The `Accept` header and the body for `request` sent to the provider model `model`.
    fn chat_body(request: &ChatRequest, model: &str) -> Result<(HeaderValue, Bytes), LlmError> {
        let wire = request.wire().with_model(model);
        let body = serde_json::to_vec(&wire).map_err(|err| {
            LlmError::new(
                LlmErrorKind::BadRequest,
                format!("the request cannot be serialized: {err}"),
            )
        })?;
        let accept = if request.is_stream() {
            HeaderValue::from_static("text/event-stream")
        } else {
            HeaderValue::from_static("application/json")
        };
        Ok((accept, Bytes::from(body)))
    }

    /// The probe's HTTP request (see [`models_url`](Self::models_url)).
    ///
    /// # Errors
    ///
    /// [`LlmErrorKind::BadRequest`] if the URL is invalid.
    pub fn probe_request(&self) -> Result<Request<Bytes>, LlmError> {
        self.build(
            Method::GET,
            &self.models_url(),
            HeaderValue::from_static("application/json"),
            Bytes::new(),
        )
    }

    fn build(
        &self,
        method: Method,
        url: &str,
        accept: HeaderValue,
        body: Bytes,
    ) -> Result<Request<Bytes>, LlmError> {
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .body(body)
            .map_err(|_| LlmError::new(LlmErrorKind::BadRequest, "invalid request URL"))?;
        let headers = request.headers_mut();
        headers.reserve(self.headers.len() + 1);
        for (name, value) in &self.headers {
            headers.insert(name, value.clone());
        }
        headers.insert(ACCEPT, accept);
        Ok(request)
    }
}

/// Reads a whole (non-streamed) chat-completions body.
///
/// # Errors
///
/// [`LlmErrorKind::MalformedResponse`] naming what is wrong if the body is not a
/// completion or has no choices; the error it holds if it is an error object (some
/// compatible servers answer errors with 200).
pub fn parse_completion(body: &[u8]) -> Result<ChatCompletion, LlmError> {
    let completion: ChatCompletion =
        crate::provider::parse_json_body(body, StatusCode::OK, &HeaderMap::new())?;
    if completion.choices.is_empty() {
        return Err(LlmError::new(
            LlmErrorKind::MalformedResponse,
            "the completion has no choices",
        ));
    }
    Ok(completion)
}

/// OpenAI's stream events as chunks: `data: {chunk}` is a chunk, `data: [DONE]` ends the
/// stream, an event holding an `error` object (or named `error`) ends it with that error,
/// anything else that is not a chunk is malformed.
///
/// An error event's kind comes from its code (`rate_limit_exceeded` → rate limited,
/// `overloaded_error` → overloaded, …), else from a message that says "overloaded", and is
/// [`LlmErrorKind::Server`] otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAiDecoder;

impl OpenAiDecoder {
    /// A decoder.
    pub fn new() -> Self {
        Self
    }
}

impl SseDecoder for OpenAiDecoder {
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<Flow, DecodeError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Flow::Done);
        }
        if data.is_empty() && event.event_type() != "error" {
            return Ok(Flow::Continue);
        }
        if event.event_type() != "error" {
            match serde_json::from_str::<ChatChunk>(data) {
                Ok(chunk) => {
                    out.push(chunk);
                    return Ok(Flow::Continue);
                }
                Err(err) if !data.contains("\"error\"") => {
                    return Err(DecodeError::Malformed(format!("not a chunk: {err}")));
                }
                Err(_) => {}
            }
        }
        match serde_json::from_str::<serde_json::Value>(data) {
            Ok(value) if event.event_type() == "error" || value.get("error").is_some() => {
                Err(DecodeError::Fatal(stream_error(data.as_bytes())))
            }
            Ok(_) => Err(DecodeError::Malformed("not a chunk".to_owned())),
            Err(_) if event.event_type() == "error" => Err(DecodeError::Fatal(LlmError::new(
                LlmErrorKind::Server,
                if data.is_empty() {
                    "error event in the stream".to_owned()
                } else {
                    format!("error event in the stream: {data}")
                },
            ))),
            Err(err) => Err(DecodeError::Malformed(format!("not a chunk: {err}"))),
        }
    }
}

/// An error object sent inside a stream: its kind from its code, overloaded if its message
/// says so (OpenAI's overload errors are `server_error`s whose message says "overloaded"),
/// else a server error. It has no HTTP status of its own (the stream's was 200).
fn stream_error(body: &[u8]) -> LlmError {
    let read = LlmError::from_response(StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new(), body);
    let kind = if read.kind() == LlmErrorKind::Server
        && read.message().to_ascii_lowercase().contains("overloaded")
    {
        LlmErrorKind::Overloaded
    } else {
        read.kind()
    };
    let mut err = LlmError::new(kind, read.message()).with_retry_after(read.retry_after());
    if let Some(code) = read.code() {
        err = err.with_code(code);
    }
    err
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_names_are_percent_encoded() {
        assert_eq!(percent_encode("gpt-4o_v2.1~x"), "gpt-4o_v2.1~x");
        assert_eq!(percent_encode("a/b?c d"), "a%2Fb%3Fc%20d");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    use crate::provider::ApiKey;
    use brace_llm::types::Message;

    /// The parsed-once URL, method and headers of the request the client sends are those of
    /// the public, string-built [`OpenAiWire::chat_request`].
    fn assert_prepared_matches(wire: &OpenAiWire, model: &str, stream: bool) {
        let request = ChatRequest::new(model, vec![Message::user("Hi")]).with_stream(stream);
        let built = wire.chat_request(&request).unwrap();
        let prepared = wire.prepared_chat_request(&request).unwrap();
        assert_eq!(prepared.url().as_str(), built.uri().to_string());
        assert_eq!(prepared.method(), built.method());
        assert_eq!(prepared.headers(), built.headers());
        let body = prepared.body().and_then(reqwest::Body::as_bytes).unwrap();
        assert_eq!(body, built.body().as_ref());
    }

    #[test]
    fn prepared_requests_match_built_ones_for_every_flavour() {
        let openai = OpenAiWire::new(OpenAiConfig::openai(ApiKey::new("sk-KEY123456"))).unwrap();
        assert_prepared_matches(&openai, "gpt-4o", false);
        assert_prepared_matches(&openai, "gpt-4o", true);
        let compatible = OpenAiWire::new(OpenAiConfig::compatible(
            "local",
            "http://127.0.0.1:8080/v1/",
        ))
        .unwrap();
        assert_prepared_matches(&compatible, "llama", false);
        let azure = OpenAiConfig::azure(
            "https://res.openai.azure.com/",
            ApiKey::new("azure-KEY123456"),
            "2024-10-21",
        )
        .map_provider(|p| p.with_model("gpt-4o", "prod gpt/4o"));
        let azure = OpenAiWire::new(azure).unwrap();
        // A configured deployment (parsed once) and an unknown one (made from the base).
        assert_prepared_matches(&azure, "gpt-4o", true);
        assert_prepared_matches(&azure, "other?model é", false);
        assert_eq!(
            azure
                .prepared_chat_request(&ChatRequest::new("gpt-4o", vec![]))
                .unwrap()
                .url()
                .as_str(),
            "https://res.openai.azure.com/openai/deployments/prod%20gpt%2F4o/chat/completions?api-version=2024-10-21"
        );
    }

    #[test]
    fn prepared_probes_match_built_ones() {
        let openai = OpenAiWire::new(OpenAiConfig::openai(ApiKey::new("sk-KEY123456"))).unwrap();
        let azure = OpenAiWire::new(OpenAiConfig::azure(
            "https://res.openai.azure.com",
            ApiKey::new("azure-KEY123456"),
            "2024-10-21",
        ))
        .unwrap();
        for wire in [openai, azure] {
            let built = wire.probe_request().unwrap();
            let prepared = wire.prepared_probe_request();
            assert_eq!(prepared.url().as_str(), built.uri().to_string());
            assert_eq!(prepared.method(), built.method());
            assert_eq!(prepared.headers(), built.headers());
        }
    }
}
