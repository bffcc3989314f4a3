//! Anthropic's Messages API (`POST /v1/messages`).
//!
//! [`AnthropicClient`] is the tower service: a [`ProviderClient`](crate::ProviderClient) over
//! [`AnthropicWire`], the API as a [`ProviderApi`](crate::ProviderApi). The translation
//! between the OpenAI chat format and Anthropic's is kept in pure functions, testable
//! without a socket: [`encode_request`], [`decode_response`], and [`AnthropicDecoder`] for
//! streamed events.

pub(crate) mod stream;
pub(crate) mod translate;
mod wire;

pub use self::stream::AnthropicDecoder;
pub use self::translate::{
    RequestOptions, decode_response, encode_request, error_status, finish_reason, request_to_value,
};
pub use self::wire::{
    API_KEY_ENV, AnthropicWire, DEFAULT_BASE_URL, DEFAULT_MAX_TOKENS, DEFAULT_VERSION,
};

use crate::provider::ClientConfig;

/// A client for Anthropic's Messages API: a [`ProviderClient`](crate::ProviderClient) over
/// [`AnthropicWire`], made from a [`ClientConfig`].
///
/// Requests in the OpenAI chat format are translated to Anthropic's (see
/// [`encode_request`]); answers, whole or streamed, come back as OpenAI-style completions
/// and chunks. Every failure is an [`LlmError`](brace_llm::LlmError) naming the provider:
/// error responses are read by [`LlmError::from_response`](brace_llm::LlmError::from_response)
/// (`overloaded_error` 529 is overloaded, `rate_limit_error` 429 rate limited with its
/// `retry-after`), an `error` event in a stream ends the stream with its error.
///
/// # Example
///
/// ```
/// use brace_providers::ApiKey;
/// use brace_providers::anthropic::AnthropicClient;
///
/// let config = AnthropicClient::default_config()
///     .with_api_key(ApiKey::new("sk-ant-api03-secret"))
///     .with_default_model("claude-sonnet-4-5");
/// let client = AnthropicClient::new(config).unwrap().with_default_max_tokens(1024);
/// assert!(!format!("{client:?}").contains("secret"));
/// ```
pub type AnthropicClient = crate::ProviderClient<AnthropicWire>;

impl AnthropicClient {
    /// The default configuration: see [`AnthropicWire::default_config`].
    pub fn default_config() -> ClientConfig {
        AnthropicWire::default_config()
    }

    /// Sets the `max_tokens` sent when a request sets no output limit (default
    /// [`DEFAULT_MAX_TOKENS`]); clones made before keep theirs.
    #[must_use]
    pub fn with_default_max_tokens(mut self, max_tokens: u32) -> Self {
        self.change_api(|api| api.set_default_max_tokens(max_tokens));
        self
    }
}
