//! [`AnthropicWire`]: Anthropic's Messages API as a [`ProviderApi`].

use std::fmt;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

use super::stream::AnthropicDecoder;
use super::translate::{RequestOptions, decode_response, encode_request};
use crate::api::{Encoded, ProviderApi};
use crate::provider::{ClientConfig, ClientConfigError, endpoint};
use brace_llm::error::LlmError;
use brace_llm::types::{ChatCompletion, ChatRequest};

/// Anthropic's API base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The environment variable the default configuration reads the key from.
pub const API_KEY_ENV: &str = "ANTHROPIC_API_KEY";
/// The `anthropic-version` header sent by default.
pub const DEFAULT_VERSION: &str = "2023-06-01";
/// `max_tokens` for requests that set no output limit (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Anthropic's Messages API (`POST {base}/v1/messages`): requests translated from the
/// OpenAI chat format (see [`encode_request`]), answers and stream events translated back,
/// without I/O.
///
/// The model sent is [`ClientConfig::resolve_model`] of the requested one. The key goes in
/// `x-api-key`, marked sensitive; `anthropic-version` is [`DEFAULT_VERSION`] unless the
/// configuration's headers set it. Its `Debug` shows no key and no header value.
/// [`AnthropicClient`](super::AnthropicClient) is a [`ProviderClient`](crate::ProviderClient)
/// over it.
#[derive(Clone)]
pub struct AnthropicWire {
    client: ClientConfig,
    headers: HeaderMap,
    /// The endpoints, parsed once (a request clones one). Never printed.
    messages: reqwest::Url,
    models: reqwest::Url,
    default_max_tokens: u32,
}

impl fmt::Debug for AnthropicWire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicWire")
            .field("client", &self.client)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("default_max_tokens", &self.default_max_tokens)
            .finish_non_exhaustive()
    }
}

impl AnthropicWire {
    /// The default configuration: provider `anthropic`, [`DEFAULT_BASE_URL`], the key from
    /// [`API_KEY_ENV`].
    pub fn default_config() -> ClientConfig {
        ClientConfig::new("anthropic", DEFAULT_BASE_URL).with_api_key_env(API_KEY_ENV)
    }

    /// Checks `config` and prepares the headers every request carries.
    ///
    /// # Errors
    ///
    /// A [`ClientConfigError`] if the base URL is not an http(s) URL, the key's environment
    /// variable is unset, or a header is invalid.
    pub fn new(config: ClientConfig) -> Result<Self, ClientConfigError> {
        let base = config.parsed_base_url()?;
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
            messages: endpoint(&base, "/v1/messages", None),
            models: endpoint(&base, "/v1/models", Some("limit=1")),
            client: config,
            headers,
            default_max_tokens: DEFAULT_MAX_TOKENS,
        })
    }

    /// Sets the `max_tokens` sent when a request sets no output limit (at least 1).
    #[must_use]
    pub fn with_default_max_tokens(mut self, max_tokens: u32) -> Self {
        self.set_default_max_tokens(max_tokens);
        self
    }

    pub(crate) fn set_default_max_tokens(&mut self, max_tokens: u32) {
        self.default_max_tokens = max_tokens.max(1);
    }

    /// The `max_tokens` sent when a request sets no output limit.
    pub fn default_max_tokens(&self) -> u32 {
        self.default_max_tokens
    }
}

impl ProviderApi for AnthropicWire {
    type Config = ClientConfig;
    type Decoder = AnthropicDecoder;

    fn from_config(config: ClientConfig) -> Result<Self, ClientConfigError> {
        Self::new(config)
    }

    fn client_config(config: &ClientConfig) -> &ClientConfig {
        config
    }

    fn config(&self) -> &ClientConfig {
        &self.client
    }

    fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// `POST {base}/v1/messages` with the request translated by [`encode_request`].
    ///
    /// # Errors
    ///
    /// A [`LlmErrorKind::BadRequest`](brace_llm::LlmErrorKind::BadRequest) error if the
    /// request cannot be translated.
    fn encode(&self, request: &ChatRequest) -> Result<Encoded, LlmError> {
        let model = self.client.resolve_model(&request.model).to_owned();
        let body = encode_request(
            request,
            RequestOptions {
                model: &model,
                default_max_tokens: self.default_max_tokens,
            },
        )?;
        Ok(Encoded {
            url: self.messages.clone(),
            body: Bytes::from(body),
            model,
        })
    }

    fn decode(&self, body: &[u8], _model: &str) -> Result<ChatCompletion, LlmError> {
        decode_response(body)
    }

    fn decoder(&self, _model: &str, include_usage: bool) -> AnthropicDecoder {
        AnthropicDecoder::new(include_usage)
    }

    /// One model listed: `GET {base}/v1/models?limit=1`.
    fn probe_url(&self) -> Result<reqwest::Url, LlmError> {
        Ok(self.models.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ApiKey;
    use brace_llm::types::Message;

    #[test]
    fn endpoints_are_made_from_the_base_url() {
        let config = ClientConfig::new("anthropic", "http://127.0.0.1:9/")
            .with_api_key(ApiKey::new("sk-ant-KEY123456"))
            .with_default_model("claude-sonnet-4-5");
        let wire = AnthropicWire::new(config).unwrap();
        let encoded = wire
            .encode(&ChatRequest::new("any", vec![Message::user("Hi")]))
            .unwrap();
        assert_eq!(encoded.url.as_str(), "http://127.0.0.1:9/v1/messages");
        assert_eq!(encoded.model, "claude-sonnet-4-5");
        assert_eq!(
            wire.probe_url().unwrap().as_str(),
            "http://127.0.0.1:9/v1/models?limit=1"
        );
    }
}
