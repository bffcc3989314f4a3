//! Google's Gemini API (`generateContent`, `streamGenerateContent?alt=sse`).
//!
//! [`GeminiClient`] is the tower service: a [`ProviderClient`](crate::ProviderClient) over
//! [`GeminiWire`], the API as a [`ProviderApi`](crate::ProviderApi). The translation between
//! the OpenAI chat format and Gemini's is kept in pure functions, testable without a socket:
//! [`encode_request`], [`decode_response`], and [`GeminiDecoder`] for streamed events.

pub(crate) mod stream;
pub(crate) mod translate;
mod wire;

pub use self::stream::GeminiDecoder;
pub use self::translate::{decode_response, encode_request, finish_reason, request_to_value};
pub use self::wire::{API_KEY_ENV, DEFAULT_BASE_URL, GeminiWire};

use crate::provider::ClientConfig;

/// A client for Google's Gemini API: a [`ProviderClient`](crate::ProviderClient) over
/// [`GeminiWire`], made from a [`ClientConfig`].
///
/// Requests in the OpenAI chat format are translated to Gemini's (see [`encode_request`]);
/// answers, whole or streamed, come back as OpenAI-style completions and chunks. Every
/// failure is an [`LlmError`](brace_llm::LlmError) naming the provider:
/// `RESOURCE_EXHAUSTED` is rate limited (with the `RetryInfo` delay), `UNAVAILABLE`
/// overloaded, a blocked prompt content-filtered. The key goes in the `x-goog-api-key`
/// header, never in the URL.
///
/// # Example
///
/// ```
/// use brace_providers::ApiKey;
/// use brace_providers::gemini::GeminiClient;
///
/// let config = GeminiClient::default_config()
///     .with_api_key(ApiKey::new("AIzaSyD-secret-key"))
///     .with_default_model("gemini-2.5-flash");
/// let client = GeminiClient::new(config).unwrap();
/// assert!(!format!("{client:?}").contains("secret"));
/// ```
pub type GeminiClient = crate::ProviderClient<GeminiWire>;

impl GeminiClient {
    /// The default configuration: see [`GeminiWire::default_config`].
    pub fn default_config() -> ClientConfig {
        GeminiWire::default_config()
    }
}
