//! Streaming a [`ChatStream`] to the client as OpenAI-style server-sent events.
//!
//! Each chunk is a `data: {json}` event and a clean end is `data: [DONE]`. A stream that
//! does not end cleanly ends with a `data: {"error": {...}}` event in OpenAI's error shape
//! and no `[DONE]`, so the client can never mistake a truncated answer for a complete one:
//!
//! | why | `error.code` | `error.type` |
//! |---|---|---|
//! | the provider's stream broke and was not continued | the error kind (`stream_interrupted`, `timeout`, …) | as for the same error before the stream |
//! | `server.max_stream_duration` passed | `stream_deadline` | `timeout_error` |
//! | the gateway shut down and its grace period ran out | `shutting_down` | `api_error` |
//!
//! A continued stream's final chunks carry `x_brace_continued_by` and
//! `x_brace_continued_how`; the same two are sent as HTTP trailers (`x-brace-continued-by`,
//! `x-brace-continued-how`, declared in the response's `Trailer` header) where the
//! connection carries trailers (HTTP/2, and chunked HTTP/1.1).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::sse::Event;
use bytes::Bytes;
use futures_util::Stream;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use brace_llm::continuation::{CONTINUED_BY, CONTINUED_HOW};
use brace_llm::{ChatChunk, ChatStream, LlmError, LlmErrorKind, Usage};

use crate::error::ApiError;

/// The trailer that names the provider that continued a stream.
pub const CONTINUED_BY_TRAILER: HeaderName = HeaderName::from_static("x-brace-continued-by");

/// The trailer that says how the stream was continued (`prefill` or `verified_restart`).
pub const CONTINUED_HOW_TRAILER: HeaderName = HeaderName::from_static("x-brace-continued-how");

/// How a stream ended, as reported to the `on_end` callback of [`events`].
#[derive(Debug)]
#[non_exhaustive]
pub struct StreamEnd<'a> {
    /// The usage the stream reported (if any), or the error that ended it (the provider's,
    /// or the gateway's own for a deadline or a shutdown).
    pub outcome: Result<Option<&'a Usage>, &'a LlmError>,
    /// Who continued the answer and how (`prefill`, `verified_restart`), if it was.
    pub continued: Option<(&'a str, &'a str)>,
}

// ===== StreamShutdown =====

/// Ends every open stream at once: what the server does when its shutdown grace runs out.
///
/// # Clone
///
/// Clones end the same streams.
#[derive(Clone)]
pub struct StreamShutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl fmt::Debug for StreamShutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamShutdown")
            .field("ended", &*self.tx.borrow())
            .field("open_streams", &self.open_streams())
            .finish()
    }
}

impl Default for StreamShutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamShutdown {
    /// A switch no stream has seen yet.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    /// Ends every open stream (and every stream opened later) with the `shutting_down`
    /// error event. Returns how many were open.
    pub fn end_all(&self) -> usize {
        let open = self.open_streams();
        self.tx.send_replace(true);
        open
    }

    /// How many streams are open.
    pub fn open_streams(&self) -> usize {
        self.tx.receiver_count()
    }

    /// The limits of a stream whose request arrived at `started`: it ends at
    /// `started + max_duration` (if set), or when [`end_all`](Self::end_all) is called.
    pub fn limits(&self, started: Instant, max_duration: Option<Duration>) -> StreamLimits {
        StreamLimits {
            max_duration,
            deadline: max_duration.and_then(|max| started.checked_add(max)),
            shutdown: Some(self.tx.subscribe()),
        }
    }
}

/// What may end a stream before its end: a deadline, and the server's shutdown.
#[derive(Debug, Default)]
pub struct StreamLimits {
    max_duration: Option<Duration>,
    deadline: Option<Instant>,
    shutdown: Option<watch::Receiver<bool>>,
}

impl StreamLimits {
    /// No limits.
    pub fn none() -> Self {
        Self::default()
    }
}

// ===== events =====

/// Turns a chat stream into SSE events, within `limits`. `on_end` is called once when the
/// stream ends (for metrics, logs and trailers); it is not called if the client goes away
/// first.
pub fn events<F>(
    chunks: ChatStream,
    limits: StreamLimits,
    on_end: F,
) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(&StreamEnd<'_>) + Send + 'static,
{
    let shutdown = limits.shutdown.map(|mut rx| {
        let ended: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            if rx.wait_for(|ended| *ended).await.is_err() {
                // The switch is gone with its gateway: nothing will end the stream early.
                std::future::pending::<()>().await;
            }
        });
        ended
    });
    Events {
        chunks: Some(chunks),
        on_end: Some(on_end),
        usage: None,
        continued: None,
        delivered: 0,
        max_duration: limits.max_duration,
        deadline: limits
            .deadline
            .map(|at| Box::pin(tokio::time::sleep_until(at))),
        shutdown,
    }
}

struct Events<F> {
    chunks: Option<ChatStream>,
    on_end: Option<F>,
    usage: Option<Usage>,
    continued: Option<(String, String)>,
    /// Content deltas sent to the client.
    delivered: u64,
    max_duration: Option<Duration>,
    deadline: Option<Pin<Box<Sleep>>>,
    shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<F> Unpin for Events<F> {}

impl<F> Events<F>
where
    F: FnOnce(&StreamEnd<'_>) + Send + 'static,
{
    fn end(&mut self, outcome: Result<Option<&Usage>, &LlmError>) {
        self.chunks = None;
        self.deadline = None;
        self.shutdown = None;
        if let Some(on_end) = self.on_end.take() {
            on_end(&StreamEnd {
                outcome,
                continued: self
                    .continued
                    .as_ref()
                    .map(|(by, how)| (by.as_str(), how.as_str())),
            });
        }
    }

    fn fail(&mut self, err: &LlmError, api: &ApiError) -> Event {
        tracing::warn!(
            provider = err.provider().unwrap_or("gateway"),
            delivered_tokens = self.delivered,
            code = api.body()["error"]["code"].as_str().unwrap_or_default(),
            error = %err,
            outcome = "error_event",
            "stream ended with an error event, without [DONE]"
        );
        self.end(Err(err));
        Event::default().data(api.body().to_string())
    }

    fn chunk(&mut self, chunk: &ChatChunk) -> Event {
        self.delivered += u64::from(chunk.has_content());
        if chunk.usage.is_some() {
            self.usage.clone_from(&chunk.usage);
        }
        if let Some(by) = chunk.extra.get(CONTINUED_BY).and_then(|v| v.as_str()) {
            let how = chunk
                .extra
                .get(CONTINUED_HOW)
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            self.continued = Some((by.to_owned(), how.to_owned()));
        }
        // Written whole, then handed over as the event's data: `Event::json_data` serializes
        // straight into the event, and checks every one of the serializer's small writes (a
        // quote, a key, a colon) for line breaks — 109 K instructions of a 7-chunk streamed
        // answer here (BENCHMARKS.md, issue 22's eleventh pass). Compact JSON has no raw line
        // break, so the event's one check of the whole text finds none.
        match serde_json::to_string(chunk) {
            Ok(json) => Event::default().data(json),
            Err(_) => Event::default().data("{}"),
        }
    }
}

impl<F> Stream for Events<F>
where
    F: FnOnce(&StreamEnd<'_>) + Send + 'static,
{
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.chunks.is_none() {
            return Poll::Ready(None);
        }
        if let Some(shutdown) = &mut this.shutdown
            && shutdown.as_mut().poll(cx).is_ready()
        {
            let err = LlmError::new(
                LlmErrorKind::Cancelled,
                "the gateway is shutting down and its grace period ran out: the stream was \
                 ended before its end",
            );
            let api = ApiError::new(http::StatusCode::SERVICE_UNAVAILABLE, err.message())
                .with_code("shutting_down");
            return Poll::Ready(Some(Ok(this.fail(&err, &api))));
        }
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            let message = format!(
                "the stream exceeded the gateway's max_stream_duration ({}ms)",
                this.max_duration.unwrap_or_default().as_millis()
            );
            let err = LlmError::new(LlmErrorKind::Timeout, message);
            let api = ApiError::new(http::StatusCode::GATEWAY_TIMEOUT, err.message())
                .with_code("stream_deadline");
            return Poll::Ready(Some(Ok(this.fail(&err, &api))));
        }
        let chunks = this.chunks.as_mut().expect("checked above");
        let event = match std::task::ready!(Pin::new(chunks).poll_next(cx)) {
            Some(Ok(chunk)) => this.chunk(&chunk),
            Some(Err(err)) => {
                let boxed: brace_core::BoxError = Box::new(err);
                let api = ApiError::from_stack_error(&boxed);
                let err = boxed
                    .downcast::<LlmError>()
                    .expect("boxed from an LlmError just above");
                this.fail(&err, &api)
            }
            None => {
                let usage = this.usage.take();
                this.end(Ok(usage.as_ref()));
                Event::default().data("[DONE]")
            }
        };
        Poll::Ready(Some(Ok(event)))
    }
}

// ===== trailers =====

/// Where a stream's trailers are put before its body ends.
pub type TrailerSlot = Arc<Mutex<Option<HeaderMap>>>;

/// The trailers that say who continued a stream and how.
pub fn continued_trailers(by: &str, how: &str) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(by) {
        trailers.insert(CONTINUED_BY_TRAILER, value);
    }
    if let Ok(value) = HeaderValue::from_str(how) {
        trailers.insert(CONTINUED_HOW_TRAILER, value);
    }
    trailers
}

/// A body that sends the trailers put in its slot (if any) after its last frame.
pub struct WithTrailers<B> {
    inner: B,
    slot: TrailerSlot,
    sent: bool,
}

impl<B> fmt::Debug for WithTrailers<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithTrailers")
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl<B> WithTrailers<B> {
    /// Wraps `inner`; whatever is in `slot` when it ends is sent as its trailers.
    pub fn new(inner: B, slot: TrailerSlot) -> Self {
        Self {
            inner,
            slot,
            sent: false,
        }
    }
}

impl<B> http_body::Body for WithTrailers<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if self.sent {
            return Poll::Ready(None);
        }
        match std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(frame) => Poll::Ready(Some(frame)),
            None => {
                self.sent = true;
                Poll::Ready(self.slot.lock().take().map(|map| Ok(Frame::trailers(map))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.sent
    }
}
