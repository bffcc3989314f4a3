//! OpenAI's chat-completions API, Azure OpenAI, and OpenAI-compatible servers (Ollama,
//! llama.cpp, vLLM, LM Studio) — one implementation, three flavours ([`OpenAiApi`]).
//!
//! - [`OpenAiClient`]: the tower service (`Service<ChatRequest, Response = ChatResponse,
//!   Error = LlmError>`), with an active health probe
//!   ([`probe`](crate::ProviderClient::probe)): a [`ProviderClient`](crate::ProviderClient)
//!   over [`OpenAiWire`].
//! - [`OpenAiConfig`]: a [`ClientConfig`](crate::provider::ClientConfig) plus the
//!   flavour (organization/project headers for OpenAI, `api-version` for Azure).
//! - [`OpenAiWire`]: the pure part, a [`ProviderApi`](crate::ProviderApi) — URLs, headers
//!   and bodies built, completions and stream events read — testable without a socket.
//! - [`OpenAiDecoder`]: OpenAI's stream events (`data: {chunk}`, `data: [DONE]`, an
//!   `error` object) as an [`SseDecoder`](crate::sse::SseDecoder).
//!
//! # Example
//!
//! ```
//! use brace_providers::openai::{OpenAiConfig, OpenAiWire};
//! use brace_providers::{ApiKey, ProviderApi};
//! use brace_llm::{ChatRequest, Message};
//!
//! // Azure: the requested model maps to a deployment.
//! let mut config = OpenAiConfig::azure(
//!     "https://my-resource.openai.azure.com",
//!     ApiKey::new("0123456789abcdef"),
//!     "2024-10-21",
//! );
//! config.client = config.client.with_model("gpt-4o", "prod-gpt4o");
//! let wire = OpenAiWire::new(config).unwrap();
//! let request = wire
//!     .chat_request(&ChatRequest::new("gpt-4o", vec![Message::user("Hi")]))
//!     .unwrap();
//! assert_eq!(
//!     request.uri(),
//!     "https://my-resource.openai.azure.com/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-10-21"
//! );
//! assert!(request.headers()["api-key"].is_sensitive());
//! assert!(!format!("{request:?}").contains("0123456789abcdef"));
//! ```

mod config;
mod wire;

pub use self::config::{
    AZURE_API_KEY_ENV, DEFAULT_AZURE_API_VERSION, DEFAULT_BASE_URL, OPENAI_API_KEY_ENV, OpenAiApi,
    OpenAiConfig,
};
pub use self::wire::{OpenAiDecoder, OpenAiWire, parse_completion};

/// A client for OpenAI, Azure OpenAI or an OpenAI-compatible server: a
/// [`ProviderClient`](crate::ProviderClient) over [`OpenAiWire`], made from an
/// [`OpenAiConfig`].
///
/// The requested model is resolved by the configuration's mapping (for Azure, to the
/// deployment); the rest of the request, unknown fields included, is sent as it came. Error
/// answers and in-stream `error` events are read by their code (`rate_limit_exceeded`,
/// `insufficient_quota`, `context_length_exceeded`, …) and status.
///
/// # Example
///
/// ```
/// use brace_providers::openai::{OpenAiClient, OpenAiConfig};
///
/// // A local Ollama; no key needed. Building a client does not connect.
/// let config = OpenAiConfig::compatible("ollama", "http://127.0.0.1:11434/v1")
///     .map_client(|c| c.with_default_model("llama3.1:8b"));
/// let client = OpenAiClient::new(config).unwrap();
/// assert_eq!(client.name(), "ollama");
/// ```
pub type OpenAiClient = crate::ProviderClient<OpenAiWire>;
