//! Anthropic's Messages API (`POST /v1/messages`).
//!
//! [`AnthropicClient`] is the tower service. The translation between the OpenAI chat
//! format and Anthropic's is kept in pure functions, testable without a socket:
//! [`encode_request`], [`decode_response`], and [`StreamState`] for streamed events.

mod client;
pub(crate) mod stream;
pub(crate) mod translate;

pub use self::client::{
    API_KEY_ENV, AnthropicClient, DEFAULT_BASE_URL, DEFAULT_MAX_TOKENS, DEFAULT_VERSION,
};
pub use self::stream::StreamState;
pub use self::translate::{
    RequestOptions, decode_response, encode_request, error_status, finish_reason, request_to_value,
};
