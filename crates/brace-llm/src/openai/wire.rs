//! The pure part of the OpenAI client: requests built, answers read, no socket.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};

use super::config::{OpenAiApi, OpenAiConfig};
use crate::error::{LlmError, LlmErrorKind};
use crate::provider::{ConfigError, ProviderConfig};
use crate::sse::{DecodeError, Flow, SseDecoder, SseEvent};
use crate::types::{ChatChunk, ChatCompletion, ChatRequest};

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
        Ok(Self {
            provider: config.provider,
            api: config.api,
            base,
            headers,
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
        let body = if model == request.model {
            serde_json::to_vec(request)
        } else {
            let mut request = request.clone();
            model.clone_into(&mut request.model);
            serde_json::to_vec(&request)
        }
        .map_err(|err| {
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
        self.build(Method::POST, &url, accept, Bytes::from(body))
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
}
