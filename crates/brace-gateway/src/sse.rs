//! Streaming a [`ChatStream`] to the client as OpenAI-style server-sent events.
//!
//! Each chunk is a `data: {json}` event and a clean end is `data: [DONE]`. A stream that
//! breaks ends with a `data: {"error": {...}}` event and no `[DONE]`, so the client can
//! never mistake a truncated answer for a complete one.

use std::convert::Infallible;

use axum::response::sse::Event;
use futures_util::{Stream, StreamExt, stream};

use brace_llm::{ChatStream, LlmError, Usage};

use crate::error::ApiError;

/// Turns a chat stream into SSE events. `on_end` is called once when the stream ends, with
/// the usage the stream reported (if any) or the error that broke it (for metrics and
/// logs); it is not called if the client goes away first.
pub fn events<F>(chunks: ChatStream, on_end: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(Result<Option<&Usage>, &LlmError>) + Send + 'static,
{
    stream::unfold(Some((chunks, on_end, None)), |state| async move {
        let (mut chunks, on_end, mut usage) = state?;
        match chunks.next().await {
            Some(Ok(chunk)) => {
                if chunk.usage.is_some() {
                    usage.clone_from(&chunk.usage);
                }
                let event = Event::default()
                    .json_data(&chunk)
                    .unwrap_or_else(|_| Event::default().data("{}"));
                Some((Ok(event), Some((chunks, on_end, usage))))
            }
            Some(Err(err)) => {
                on_end(Err(&err));
                let boxed: brace_core::BoxError = Box::new(err);
                let body = ApiError::from_stack_error(&boxed).body();
                Some((Ok(Event::default().data(body.to_string())), None))
            }
            None => {
                on_end(Ok(usage.as_ref()));
                Some((Ok(Event::default().data("[DONE]")), None))
            }
        }
    })
}
