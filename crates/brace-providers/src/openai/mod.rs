//! OpenAI's chat-completions API, Azure OpenAI, and OpenAI-compatible servers (Ollama,
//! llama.cpp, vLLM, LM Studio) — one implementation, three flavours ([`OpenAiApi`]).
//!
//! - [`OpenAiClient`]: the tower service (`Service<ChatRequest, Response = ChatResponse,
//!   Error = LlmError>`), with an active health probe ([`OpenAiClient::probe`]).
//! - [`OpenAiConfig`]: a [`ProviderConfig`](crate::provider::ProviderConfig) plus the
//!   flavour (organization/project headers for OpenAI, `api-version` for Azure).
//! - [`OpenAiWire`]: the pure part — URLs, headers and bodies built, completions and stream
//!   events read — testable without a socket.
//! - [`OpenAiDecoder`]: OpenAI's stream events (`data: {chunk}`, `data: [DONE]`, an
//!   `error` object) as an [`SseDecoder`](crate::sse::SseDecoder).
//!
//! # Example
//!
//! ```
//! use brace_providers::openai::{OpenAiConfig, OpenAiWire};
//! use brace_providers::provider::ApiKey;
//! use brace_llm::{ChatRequest, Message};
//!
//! // Azure: the requested model maps to a deployment.
//! let mut config = OpenAiConfig::azure(
//!     "https://my-resource.openai.azure.com",
//!     ApiKey::new("0123456789abcdef"),
//!     "2024-10-21",
//! );
//! config.provider = config.provider.with_model("gpt-4o", "prod-gpt4o");
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

mod client;
mod config;
mod wire;

pub use self::client::OpenAiClient;
pub use self::config::{
    AZURE_API_KEY_ENV, DEFAULT_AZURE_API_VERSION, DEFAULT_BASE_URL, OPENAI_API_KEY_ENV, OpenAiApi,
    OpenAiConfig,
};
pub use self::wire::{OpenAiDecoder, OpenAiWire, parse_completion};
