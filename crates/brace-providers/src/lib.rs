//! LLM provider clients as tower services over reqwest.
//!
//! Each client is a `Service<ChatRequest, Response = ChatResponse, Error = LlmError>` (the
//! types of [`brace_llm`]) that maps its provider's wire format and errors to brace's,
//! streaming included:
//!
//! - [`openai::OpenAiClient`]: OpenAI's chat-completions API, Azure OpenAI, and any
//!   OpenAI-compatible server (Ollama, llama.cpp, vLLM, LM Studio);
//! - [`anthropic::AnthropicClient`]: Anthropic's Messages API;
//! - [`gemini::GeminiClient`]: Google's Gemini API.
//!
//! Each is one generic client, [`ProviderClient`], over one implementation of one trait,
//! [`ProviderApi`]: the provider's endpoints and authentication headers, how a
//! [`ChatRequest`](brace_llm::ChatRequest) is encoded, how a whole answer, a stream event and
//! an error answer are decoded. [`ProviderClient`] does the rest once for all of them: the
//! HTTP plumbing of [`provider`] — [`ClientConfig`], [`ApiKey`] (never printed), one pooled
//! reqwest client, a [`Transport`] that bounds every wait and turns each failure into an
//! [`LlmError`](brace_llm::LlmError) naming the provider — the SSE reader of [`sse`], the
//! statistics and the health probe. A client for another API is an implementation of
//! [`ProviderApi`].
//!
//! The clients keep the raw status, `Retry-After` and rate-limit headers, see the first
//! streamed byte, pass unknown fields through, and never retry on their own: that is the job
//! of brace's layers stacked on top.
//!
//! # Example
//!
//! An OpenAI-compatible client pointed at a simulated provider on a loopback port:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use brace_llm::{ChatRequest, Message};
//! use brace_providers::openai::{OpenAiClient, OpenAiConfig};
//! use brace_sim::{SimConfig, SimHandle, SimServer};
//! use tower::ServiceExt;
//!
//! let server = SimServer::start(SimHandle::new(SimConfig::new("sim"))).await.unwrap();
//! let config = OpenAiConfig::compatible("local", format!("{}/v1", server.base_url()));
//! let client = OpenAiClient::new(config).unwrap();
//!
//! let request = ChatRequest::new("any-model", vec![Message::user("Hello")]);
//! let completion = client.oneshot(request).await.unwrap().into_completion().await.unwrap();
//! assert!(!completion.text().is_empty());
//! server.shutdown().await;
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod anthropic;
mod api;
mod client;
pub mod gemini;
pub mod lean;
pub mod openai;
pub mod provider;
pub mod sse;

pub use self::api::{Encoded, ProviderApi};
pub use self::client::ProviderClient;
pub use self::provider::{
    ApiKey, ClientConfig, ClientConfigError, ClientOptions, HttpClient, HttpResponse,
    ProviderStats, Transport, error_from_reqwest, install_crypto_provider,
};
/// The URL type of [`ProviderApi`] endpoints (reqwest's, re-exported).
pub use reqwest::Url;
