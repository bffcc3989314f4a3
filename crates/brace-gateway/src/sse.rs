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

use bytes::Bytes;
use futures_util::Stream;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use brace_llm::continuation::{CONTINUED_BY, CONTINUED_HOW};
use brace_llm::{ChatStream, LlmError, LlmErrorKind, StreamChunk, Usage};

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

/// Turns a chat stream into SSE events, each a whole `data:` event as it goes on the wire,
/// within `limits`. `on_end` is called once when the stream ends (for metrics, logs and
/// trailers); it is not called if the client goes away first.
///
/// [`SseBody`] sends them as a response body, with keep-alive comments.
pub fn events<F>(
    chunks: ChatStream,
    limits: StreamLimits,
    on_end: F,
) -> impl Stream<Item = Bytes> + Unpin
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

    fn fail(&mut self, err: &LlmError, api: &ApiError) -> Bytes {
        tracing::warn!(
            provider = err.provider().unwrap_or("gateway"),
            delivered_tokens = self.delivered,
            code = api.body()["error"]["code"].as_str().unwrap_or_default(),
            error = %err,
            outcome = "error_event",
            "stream ended with an error event, without [DONE]"
        );
        self.end(Err(err));
        data_event(api.body().to_string().as_bytes())
    }

    fn chunk(&mut self, chunk: &StreamChunk) -> Bytes {
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
        // The provider's own JSON when it sent OpenAI's and nothing changed the chunk since:
        // forwarded as it came, as a proxy would.
        if let Some(json) = chunk.json() {
            return data_event(json);
        }
        // Else written straight into the event: compact JSON has no raw line break (one inside a
        // string is escaped), so the event is `data: `, the JSON and the blank line, with no
        // line to split and nothing to scan.
        let text: usize = chunk
            .choices
            .iter()
            .filter_map(|choice| choice.delta.content.as_deref())
            .map(str::len)
            .sum();
        let mut event = Vec::with_capacity(DATA.len() + 256 + text + text / 8 + 2);
        event.extend_from_slice(DATA);
        if serde_json::to_writer(&mut event, &**chunk).is_err() {
            event.truncate(DATA.len());
            event.extend_from_slice(b"{}");
        }
        event.extend_from_slice(b"\n\n");
        event.into()
    }
}

/// How long a stream may go without an event before [`SseBody`] sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What starts an event's data line.
const DATA: &[u8] = b"data: ";

/// The event that ends a clean stream.
const DONE: &[u8] = b"data: [DONE]\n\n";

/// The comment sent to keep a quiet stream's connection from looking idle.
const KEEP_ALIVE_COMMENT: &[u8] = b":\n\n";

/// An event carrying `data`: one `data:` line per line of it (a line break in the data ends
/// a line, as the SSE format reads it back: `\r\n`, `\n` or `\r`), then the blank line that
/// ends the event.
pub fn data_event(data: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(data.len() + DATA.len() + 2);
    let mut rest = data;
    loop {
        event.extend_from_slice(DATA);
        match memchr::memchr2(b'\n', b'\r', rest) {
            Some(at) => {
                event.extend_from_slice(&rest[..at]);
                event.push(b'\n');
                let skip = if rest[at..].starts_with(b"\r\n") {
                    2
                } else {
                    1
                };
                rest = &rest[at + skip..];
            }
            None => {
                event.extend_from_slice(rest);
                event.extend_from_slice(b"\n\n");
                return event.into();
            }
        }
    }
}

impl<F> Stream for Events<F>
where
    F: FnOnce(&StreamEnd<'_>) + Send + 'static,
{
    type Item = Bytes;

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
            return Poll::Ready(Some(this.fail(&err, &api)));
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
            return Poll::Ready(Some(this.fail(&err, &api)));
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
                Bytes::from_static(DONE)
            }
        };
        Poll::Ready(Some(event))
    }
}

// ===== SseBody =====

/// A response body of SSE events (each item a whole event, as [`events`] makes them), with a
/// keep-alive comment (`:`) after every `keep_alive` without an event, so that a proxy in
/// between does not take a stream waiting on a slow model for an idle connection.
///
/// The timer is set once and moved on only when it fires: an event costs a clock reading,
/// not a timer update.
pub struct SseBody<S> {
    events: S,
    keep_alive: Duration,
    timer: Pin<Box<Sleep>>,
    last: Instant,
    ended: bool,
}

impl<S> fmt::Debug for SseBody<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseBody")
            .field("keep_alive", &self.keep_alive)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<S> SseBody<S> {
    /// Sends `events`, with a comment after every `keep_alive` without one. Needs a tokio
    /// runtime with its timer.
    pub fn new(events: S, keep_alive: Duration) -> Self {
        let now = Instant::now();
        Self {
            events,
            keep_alive,
            timer: Box::pin(tokio::time::sleep_until(now + keep_alive)),
            last: now,
            ended: false,
        }
    }
}

impl<S> http_body::Body for SseBody<S>
where
    S: Stream<Item = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.events).poll_next(cx) {
            Poll::Ready(Some(event)) => {
                this.last = Instant::now();
                return Poll::Ready(Some(Ok(Frame::data(event))));
            }
            Poll::Ready(None) => {
                this.ended = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        loop {
            std::task::ready!(this.timer.as_mut().poll(cx));
            let due = this.last + this.keep_alive;
            let now = Instant::now();
            if now < due {
                // An event went out since the timer was set: wait the rest from it.
                this.timer.as_mut().reset(due);
                continue;
            }
            this.last = now;
            this.timer.as_mut().reset(now + this.keep_alive);
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                KEEP_ALIVE_COMMENT,
            )))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
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

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use brace_llm::{ChatChunk, Delta};
    use futures_util::StreamExt;
    use http_body::Body as _;

    use super::*;

    fn chunk(text: &str) -> ChatChunk {
        ChatChunk::new("c-1", "m", Delta::text(text))
    }

    /// Polls the body once, as a connection does when woken.
    fn poll(body: &mut SseBody<impl Stream<Item = Bytes> + Unpin>) -> Poll<Option<Bytes>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(body)
            .poll_frame(&mut cx)
            .map(|frame| frame.map(|frame| frame.unwrap().into_data().unwrap()))
    }

    #[test]
    fn data_event_writes_a_data_line_per_line() {
        assert_eq!(&*data_event(b"{\"a\":1}"), b"data: {\"a\":1}\n\n");
        assert_eq!(&*data_event(b""), b"data: \n\n");
        // Each of the three line ends is one break, as an SSE reader reads it back.
        assert_eq!(
            &*data_event(b"{\n\"a\":1\r\n}\rx"),
            b"data: {\ndata: \"a\":1\ndata: }\ndata: x\n\n"
        );
    }

    #[tokio::test]
    async fn chunks_are_data_events_and_a_clean_end_is_done() {
        let stream = ChatStream::from_items(vec![Ok(chunk("he\nllo")), Ok(chunk("!"))]);
        let events: Vec<Bytes> = events(stream, StreamLimits::none(), |_| {}).collect().await;
        assert_eq!(events.len(), 3);
        for (event, text) in events.iter().zip(["he\nllo", "!"]) {
            let line = event.strip_prefix(b"data: ").unwrap();
            let json = line.strip_suffix(b"\n\n").unwrap();
            // One line: the line break inside the text is escaped in the JSON.
            assert!(!json.contains(&b'\n'));
            let read: ChatChunk = serde_json::from_slice(json).unwrap();
            assert_eq!(read, chunk(text));
        }
        assert_eq!(&*events[2], b"data: [DONE]\n\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_gets_a_comment_after_each_keep_alive() {
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let events = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
        let mut body = SseBody::new(events, Duration::from_secs(15));
        assert!(poll(&mut body).is_pending());

        // An event at 10 s: the comment is due 15 s after it, not 15 s after the start.
        tokio::time::advance(Duration::from_secs(10)).await;
        sender.send(Bytes::from_static(b"data: 1\n\n")).unwrap();
        assert_eq!(
            poll(&mut body),
            Poll::Ready(Some(Bytes::from_static(b"data: 1\n\n")))
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(
            poll(&mut body).is_pending(),
            "16 s from the start, 6 s from the event"
        );
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(
            poll(&mut body),
            Poll::Ready(Some(Bytes::from_static(b":\n\n")))
        );
        // And again after another quiet 15 s.
        assert!(poll(&mut body).is_pending());
        tokio::time::advance(Duration::from_secs(14)).await;
        assert!(poll(&mut body).is_pending());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            poll(&mut body),
            Poll::Ready(Some(Bytes::from_static(b":\n\n")))
        );

        drop(sender);
        assert_eq!(poll(&mut body), Poll::Ready(None));
        assert!(body.is_end_stream());
    }
}
