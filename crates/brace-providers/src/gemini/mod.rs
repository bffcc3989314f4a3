//! Google's Gemini API (`generateContent`, `streamGenerateContent?alt=sse`).
//!
//! [`GeminiClient`] is the tower service. The translation between the OpenAI chat format
//! and Gemini's is kept in pure functions, testable without a socket: [`encode_request`],
//! [`decode_response`], and [`StreamState`] for streamed events.

mod client;
pub(crate) mod stream;
pub(crate) mod translate;

pub use self::client::{API_KEY_ENV, DEFAULT_BASE_URL, GeminiClient};
pub use self::stream::StreamState;
pub use self::translate::{decode_response, encode_request, finish_reason, request_to_value};
