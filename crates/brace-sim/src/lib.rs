//! A simulated LLM provider: the test bed every brace layer is proven against, and the
//! gateway's embedded default.
//!
//! - [`SimProvider`]: an in-process tower `Service<ChatRequest>` whose behaviour is
//!   scripted by a [`Behavior`]: succeed (text derived from the request, usage counted),
//!   fail with any [`LlmErrorKind`](brace_llm::LlmErrorKind) (status, retry-after), wait then
//!   act, hang, fail with a seeded probability, follow a sequence of outcomes, act on a
//!   [`Condition`] of the request (a prefill, a stream, tools, images, a model), answer with
//!   a tool call ([`ToolCallReply`]), continue a prefilled answer, and stream with faults
//!   ([`StreamFault`]: break, stall, invalid event, in-band error; a first-token delay and a
//!   per-chunk delay in [`Reply`]). Waits use `tokio::time`, so they follow paused time.
//! - [`SimServer`]: the same script served over HTTP on a loopback port, in the OpenAI,
//!   Anthropic and Gemini wire formats, with every fault as real HTTP and a control endpoint
//!   (`POST /_sim/behavior`, `GET /_sim/stats`) to change it at run time.
//! - [`SimHandle`]: the script shared by providers and servers built from it: change the
//!   behaviour, read the counts ([`SimStats`]), reset.
//!
//! The script is deterministic: the same [`SimConfig::seed`] and the same calls give the same
//! outcomes.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::time::Duration;
//!
//! use brace_sim::{Behavior, Reply, SimConfig, SimProvider, StreamFault};
//! use brace_llm::{ChatRequest, LlmErrorKind, Message};
//! use futures_util::StreamExt;
//! use tower::ServiceExt;
//!
//! let sim = SimProvider::new(SimConfig::new("sim").with_behavior(Behavior::reply(
//!     Reply::new().with_chunks(4).with_fault(StreamFault::Break { after: 3 }),
//! )));
//! let request = ChatRequest::new("m", vec![Message::user("hi")]).with_stream(true);
//! let response = sim.clone().oneshot(request).await.unwrap();
//! let brace_llm::ResponseBody::Stream(stream) = response.body else { unreachable!() };
//! let items: Vec<_> = stream.collect().await;
//! assert_eq!(items.len(), 4); // role chunk, two content chunks, then the break
//! assert_eq!(items[3].as_ref().unwrap_err().kind(), LlmErrorKind::StreamInterrupted);
//! # }
//! ```

mod behavior;
mod script;
mod server;
mod service;
mod wire;

pub use self::behavior::{
    ALL_KINDS, Behavior, Condition, Failure, PREFILL_REJECTED, Reply, SimConfig, StreamFault,
    ToolCallReply, WireFormat, parse_kind,
};
pub use self::script::{SimHandle, SimStats};
pub use self::server::SimServer;
pub use self::service::{ResponseFuture, SimProvider};
