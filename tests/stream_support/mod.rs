//! The realistic stack the streaming tests run through: per provider a stream guard and a
//! retry layer, failover across providers, and optionally continuation on top.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use brace::BoxError;
use brace::commit::Immediate;
use brace::failover::{FailoverService, Provider};
use brace::llm::guard::StreamGuardLayer;
use brace::llm::{
    ChatChunk, ChatRequest, ChatResponse, LlmClassifier, LlmError, Message, ResponseBody,
    StreamAccumulator,
};
use brace::retry::{Backoff, RetryLayer};
use futures_util::StreamExt;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder};

/// A provider's whole stack, boxed as the gateway boxes it.
pub type Chat = BoxCloneSyncService<ChatRequest, ChatResponse, BoxError>;

/// The failover service over provider stacks.
pub type Failover = FailoverService<Chat, LlmClassifier, Immediate>;

/// The limits of a provider's stream guard.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub first_token: Duration,
    pub idle: Duration,
    pub total: Duration,
}

pub const LIMITS: Limits = Limits {
    first_token: Duration::from_secs(2),
    idle: Duration::from_secs(3),
    total: Duration::from_mins(1),
};

/// The retry backoff between attempts on one provider.
pub const BACKOFF: Duration = Duration::from_millis(100);

/// A provider's stack: retry (once, constant backoff, Retry-After honoured up to 10 s)
/// around a stream guard with `limits`, around the client.
pub fn stack<S>(client: S, limits: Limits) -> Chat
where
    S: Service<ChatRequest, Response = ChatResponse, Error = LlmError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let retry = RetryLayer::builder()
        .classifier(LlmClassifier::new())
        .max_retries(1)
        .backoff(Backoff::constant(BACKOFF))
        .max_retry_after(Duration::from_secs(10))
        .no_budget()
        .build();
    let guard = StreamGuardLayer::new()
        .first_token_timeout(limits.first_token)
        .idle_timeout(limits.idle)
        .total_timeout(limits.total);
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(retry)
            .layer(guard)
            .service(client),
    )
}

/// Failover across `providers`, in the given order.
pub fn failover(providers: &[(&str, Chat)]) -> Failover {
    // No circuits: every provider is always tried.
    let mut builder = FailoverService::builder().classifier(LlmClassifier::new());
    for (priority, (name, service)) in providers.iter().enumerate() {
        builder = builder.provider(Provider::new(*name, service.clone()).priority(priority as u32));
    }
    builder.build().unwrap()
}

pub const TEXT: &str = "one two three four five six seven eight nine ten eleven twelve";

/// A streamed request asking for usage.
pub fn request() -> ChatRequest {
    let mut request =
        ChatRequest::new("m", vec![Message::user("count to twelve")]).with_stream(true);
    request.options_mut().stream_options = Some(brace::llm::StreamOptions {
        include_usage: Some(true),
        ..Default::default()
    });
    request
}

/// Every item of a streamed response.
pub async fn items(response: ChatResponse) -> Vec<Result<ChatChunk, LlmError>> {
    let ResponseBody::Stream(stream) = response.body else {
        panic!("expected a stream");
    };
    stream.map(|item| item.map(ChatChunk::from)).collect().await
}

/// The chunks before the first error, and the error.
pub fn split(items: Vec<Result<ChatChunk, LlmError>>) -> (StreamAccumulator, Option<LlmError>) {
    let mut accumulator = StreamAccumulator::new();
    let mut error = None;
    let count = items.len();
    for (at, item) in items.into_iter().enumerate() {
        match item {
            Ok(chunk) => accumulator.push(&chunk),
            Err(err) => {
                assert_eq!(at + 1, count, "an error item is the last item");
                error = Some(err);
            }
        }
    }
    (accumulator, error)
}

/// What the caller receives is either the complete answer or a clear error.
pub fn assert_whole_or_error(accumulator: &StreamAccumulator, error: Option<&LlmError>) {
    match error {
        Some(_) => assert!(
            !accumulator.is_finished(),
            "an answer with an error item must not look complete"
        ),
        None => assert!(
            accumulator.is_finished(),
            "a clean end must be a finished answer"
        ),
    }
}
