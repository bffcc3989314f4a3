//! [`OpenAiWire`]: OpenAI's chat-completions API (and Azure's, and compatible servers') as
//! a [`ProviderApi`]; [`OpenAiDecoder`] for its stream events.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::config::{OpenAiApi, OpenAiConfig};
use crate::api::{Encoded, ProviderApi};
use crate::provider::{ClientConfig, ClientConfigError, endpoint};
use crate::sse::{DecodeError, Flow, SseDecoder, SseEvent};
use brace_llm::error::{LlmError, LlmErrorKind};
use brace_llm::response::{CompletionBody, StreamChunk};
use brace_llm::types::{ChatCompletion, ChatRequest};

/// OpenAI's chat-completions API in one of its flavours ([`OpenAiApi`]): requests built,
/// answers and stream events read, without I/O.
///
/// Made once per client from an [`OpenAiConfig`] (the key is read then). Its `Debug` shows
/// no key and no header value. [`OpenAiClient`](super::OpenAiClient) is a
/// [`ProviderClient`](crate::ProviderClient) over it.
#[derive(Clone)]
pub struct OpenAiWire {
    client: ClientConfig,
    api: OpenAiApi,
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
    /// Azure: the `api-version` query, for a deployment the configuration does not name.
    query: String,
    /// The base, for a deployment the configuration does not name.
    base: reqwest::Url,
    models: reqwest::Url,
}

impl Urls {
    fn new(client: &ClientConfig, api: &OpenAiApi) -> Result<Self, ClientConfigError> {
        let base = client.parsed_base_url()?;
        Ok(match api {
            OpenAiApi::Azure { api_version } => {
                let query = format!("api-version={}", percent_encode(api_version));
                let deployments = client
                    .models
                    .values()
                    .chain(client.default_model.as_ref())
                    .map(|model| (model.clone(), azure_chat_url(&base, model, &query)))
                    .collect();
                Self {
                    chat: None,
                    deployments,
                    models: endpoint(&base, "/openai/models", Some(&query)),
                    query,
                    base,
                }
            }
            OpenAiApi::OpenAi { .. } | OpenAiApi::Compatible => Self {
                chat: Some(endpoint(&base, "/chat/completions", None)),
                deployments: HashMap::new(),
                models: endpoint(&base, "/models", None),
                query: String::new(),
                base,
            },
        })
    }

    /// The chat-completions URL for the provider model (for Azure, the deployment) `model`.
    fn chat(&self, model: &str) -> reqwest::Url {
        match (&self.chat, self.deployments.get(model)) {
            (Some(url), _) | (None, Some(url)) => url.clone(),
            (None, None) => azure_chat_url(&self.base, model, &self.query),
        }
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
            .field("provider", &self.client.name)
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
    /// A [`ClientConfigError`] if the base URL is not an http(s) URL, the key's environment
    /// variable is unset or empty, OpenAI or Azure has no key, a header is invalid, or
    /// Azure's `api-version` is empty.
    pub fn new(config: OpenAiConfig) -> Result<Self, ClientConfigError> {
        let key = config.client.resolve_api_key()?;
        let mut headers = config.client.header_map()?;
        match (&config.api, key) {
            (OpenAiApi::Azure { api_version }, key) => {
                if api_version.trim().is_empty() {
                    return Err(ClientConfigError::new(
                        "Azure OpenAI needs an `api_version`",
                    ));
                }
                let key = key.ok_or_else(|| {
                    ClientConfigError::new(format!(
                        "provider `{}` (Azure OpenAI) needs an API key",
                        config.client.name
                    ))
                })?;
                headers.insert(HeaderName::from_static("api-key"), key.header_value("")?);
            }
            (OpenAiApi::OpenAi { .. }, None) => {
                return Err(ClientConfigError::new(format!(
                    "provider `{}` (OpenAI) needs an API key",
                    config.client.name
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
                    let value = HeaderValue::try_from(value.as_str()).map_err(|_| {
                        ClientConfigError::new(format!("invalid value for `{name}`"))
                    })?;
                    headers.insert(HeaderName::from_static(name), value);
                }
            }
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let urls = Urls::new(&config.client, &config.api)?;
        Ok(Self {
            client: config.client,
            api: config.api,
            headers,
            urls,
        })
    }

    /// The provider's name.
    pub fn provider(&self) -> &Arc<str> {
        &self.client.name
    }

    /// The flavour.
    pub fn api(&self) -> &OpenAiApi {
        &self.api
    }

    /// The provider model (for Azure: the deployment) a requested model resolves to.
    pub fn resolve_model<'a>(&'a self, requested: &'a str) -> &'a str {
        self.client.resolve_model(requested)
    }
}

impl ProviderApi for OpenAiWire {
    type Config = OpenAiConfig;
    type Decoder = OpenAiDecoder;

    fn from_config(config: OpenAiConfig) -> Result<Self, ClientConfigError> {
        Self::new(config)
    }

    fn client_config(config: &OpenAiConfig) -> &ClientConfig {
        &config.client
    }

    fn config(&self) -> &ClientConfig {
        &self.client
    }

    fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// `POST {base}/chat/completions` (Azure: the deployment's URL with `api-version`) with
    /// the request as it came — unknown fields included — but its model resolved. A
    /// request read from JSON and unchanged since ([`ChatRequest::json`]), whose model
    /// resolves to itself, is sent as those bytes, not written out again.
    ///
    /// # Errors
    ///
    /// [`LlmErrorKind::BadRequest`] if the request cannot be serialized.
    fn encode(&self, request: &ChatRequest) -> Result<Encoded, LlmError> {
        let model = self.resolve_model(&request.model);
        let body = match request.json() {
            Some(json) if request.model == model => json.clone(),
            _ => serde_json::to_vec(&request.wire().with_model(model))
                .map_err(|err| {
                    LlmError::new(
                        LlmErrorKind::BadRequest,
                        format!("the request cannot be serialized: {err}"),
                    )
                })?
                .into(),
        };
        Ok(Encoded {
            url: self.urls.chat(model),
            body,
            model: model.to_owned(),
        })
    }

    fn decode(&self, body: &[u8], _model: &str) -> Result<ChatCompletion, LlmError> {
        parse_completion(body)
    }

    /// The completion with the body kept: it is already the JSON an OpenAI-compatible
    /// caller expects.
    fn decode_body(&self, body: Bytes, _model: &str) -> Result<CompletionBody, LlmError> {
        let completion = match CompletionBody::from_json(body.clone()) {
            Ok(completion) => completion,
            Err(err) => {
                return Err(crate::provider::answer_error(
                    &body,
                    StatusCode::OK,
                    &HeaderMap::new(),
                    &err,
                ));
            }
        };
        has_choices(&completion)?;
        Ok(completion)
    }

    fn decoder(&self, _model: &str, _include_usage: bool) -> OpenAiDecoder {
        OpenAiDecoder::new()
    }

    /// The model list: `GET {base}/models` (Azure: `GET {endpoint}/openai/models?
    /// api-version=…`).
    fn probe_url(&self) -> Result<reqwest::Url, LlmError> {
        Ok(self.urls.models.clone())
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
    has_choices(&completion)?;
    Ok(completion)
}

fn has_choices(completion: &ChatCompletion) -> Result<(), LlmError> {
    if completion.choices.is_empty() {
        return Err(LlmError::new(
            LlmErrorKind::MalformedResponse,
            "the completion has no choices",
        ));
    }
    Ok(())
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
    fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<StreamChunk>,
    ) -> Result<Flow, DecodeError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Flow::Done);
        }
        if data.is_empty() && event.event_type() != "error" {
            return Ok(Flow::Continue);
        }
        if event.event_type() != "error" {
            // The chunk keeps its JSON: unchanged, it is forwarded as it came.
            match StreamChunk::from_json(bytes::Bytes::copy_from_slice(data.as_bytes())) {
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

    #[test]
    fn azure_urls_for_named_and_unnamed_deployments() {
        let config = OpenAiConfig::azure(
            "https://res.openai.azure.com/",
            crate::provider::ApiKey::new("azure-KEY123456"),
            "2024-10-21",
        )
        .map_client(|c| c.with_model("gpt-4o", "prod gpt/4o"));
        let azure = OpenAiWire::new(config).unwrap();
        let url = |model: &str| {
            let request = ChatRequest::new(model, vec![]);
            azure.encode(&request).unwrap().url.to_string()
        };
        // Parsed once (a named deployment) or made from the base (any other).
        assert_eq!(
            url("gpt-4o"),
            "https://res.openai.azure.com/openai/deployments/prod%20gpt%2F4o/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            url("other?model é"),
            "https://res.openai.azure.com/openai/deployments/other%3Fmodel%20%C3%A9/chat/completions?api-version=2024-10-21"
        );
    }
}
