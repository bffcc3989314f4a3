//! Incremental server-sent-events parsing, and turning events into [`ChatChunk`](brace_llm::ChatChunk)s with a
//! provider-specific [`SseDecoder`].
//!
//! Three layers, each usable alone:
//!
//! - [`SseParser`]: pure and synchronous — push bytes as they arrive, pull complete
//!   [`SseEvent`]s. Follows the WHATWG event-stream rules: `\n`, `\r\n` and `\r` line ends
//!   (also split across reads), `:` comment lines (keep-alive pings) ignored, `event:`,
//!   `data:` (several lines joined with `\n`), `id:`, `retry:`, a leading BOM dropped, and
//!   — unlike a browser — a final event without a trailing blank line is still delivered at
//!   the end of the body (some servers close right after the last `data:` line).
//! - [`SseEvents`]: a [`Stream`] of events over a stream of byte pieces (such as
//!   [`BodyStream`](crate::provider::BodyStream)).
//! - [`ChunkStream`]: a [`Stream`] of chunks over a stream of events, driven by a
//!   [`SseDecoder`], which decides what each event means.
//!
//! # How a chunk stream ends
//!
//! A [`ChunkStream`] never makes a truncated answer look complete:
//!
//! - the decoder says [`Flow::Done`] (OpenAI's `data: [DONE]`, Anthropic's `message_stop`):
//!   the stream ends cleanly, once the body has ended too (waited for at most 100 ms, and
//!   only inside a tokio runtime; what follows the marker is dropped), so that the
//!   connection can be reused rather than closed with an unread body;
//! - the body ends without that, but a chunk carried a finish reason: the answer is whole
//!   and the stream ends cleanly (see [`SseDecoder::finish`]);
//! - the body ends with neither: one `Err` item of kind
//!   [`LlmErrorKind::StreamInterrupted`], then the end;
//! - the body breaks or times out: its error as one `Err` item, then the end;
//! - the decoder reports an error event ([`DecodeError::Fatal`]): that error, then the end;
//! - one event cannot be understood ([`DecodeError::Malformed`]): under
//!   [`MalformedEvents::Skip`] it is skipped, logged and counted; under
//!   [`MalformedEvents::Fail`] it ends the stream with a
//!   [`LlmErrorKind::MalformedResponse`] error.
//!
//! After an `Err` item the stream always ends.
//!
//! # Example
//!
//! ```
//! use brace_providers::sse::SseParser;
//!
//! let mut parser = SseParser::new();
//! parser.push(b": ping\r\n\r\nevent: delta\r\ndata: {\"a\"");
//! assert!(parser.next_event().unwrap().is_none()); // not complete yet
//! parser.push(b":1}\r\n\r\ndata: [DONE]");
//! let event = parser.next_event().unwrap().unwrap();
//! assert_eq!((event.event.as_str(), event.data.as_str()), ("delta", "{\"a\":1}"));
//! // The body ended without a blank line: the last event is still delivered.
//! assert!(parser.finish().unwrap().unwrap().is_done());
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};

use crate::provider::{ApiKey, ProviderStats, scrub_secret};
use brace_llm::error::{LlmError, LlmErrorKind};
use brace_llm::response::ChatStream;
use brace_llm::response::StreamChunk;

/// The largest event (or line) [`SseParser`] accepts by default: 8 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

// ===== SseEvent =====

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name; empty if the event had none (the spec's `message`).
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The `id:` field, if the event had one.
    pub id: Option<String>,
    /// The `retry:` field, if the event had one.
    pub retry: Option<Duration>,
}

impl SseEvent {
    /// An unnamed event with `data`.
    pub fn data(data: impl Into<String>) -> Self {
        Self {
            data: data.into(),
            ..Self::default()
        }
    }

    /// A named event with `data`.
    pub fn named(event: impl Into<String>, data: impl Into<String>) -> Self {
        Self {
            event: event.into(),
            data: data.into(),
            ..Self::default()
        }
    }

    /// The event's type: its `event:` name, or `message` if it had none.
    pub fn event_type(&self) -> &str {
        if self.event.is_empty() {
            "message"
        } else {
            &self.event
        }
    }

    /// `true` for OpenAI's end marker, `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.data.trim() == "[DONE]"
    }
}

// ===== SseParser =====

/// An incremental event-stream parser: push bytes, pull events.
///
/// Memory is bounded: a line or an event larger than the limit is an error rather than an
/// unbounded buffer.
#[derive(Debug, Clone)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Start of the unparsed bytes in `buf`.
    pos: usize,
    /// Bytes from `pos` already searched for a line end.
    scanned: usize,
    started: bool,
    event: String,
    data: String,
    has_data: bool,
    id: Option<String>,
    retry: Option<Duration>,
    max_event_bytes: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    /// A parser with the default size limit ([`DEFAULT_MAX_EVENT_BYTES`]).
    pub fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A parser that refuses lines and events larger than `max` bytes.
    pub fn with_max_event_bytes(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            scanned: 0,
            started: false,
            event: String::new(),
            data: String::new(),
            has_data: false,
            id: None,
            retry: None,
            max_event_bytes: max,
        }
    }

    /// Adds bytes as they arrived (any split: mid-line, mid-CRLF, mid-UTF-8 character).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event, if the bytes pushed so far hold one.
    ///
    /// # Errors
    ///
    /// [`LlmErrorKind::MalformedResponse`] if a line or an event exceeds the size limit;
    /// the parser should not be used after that.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, LlmError> {
        while let Some(line_end) = self.find_line_end(false) {
            if let Some(event) = self.take_line(line_end)? {
                return Ok(Some(event));
            }
        }
        if self.buf.len() - self.pos > self.max_event_bytes {
            return Err(self.too_large());
        }
        Ok(None)
    }

    /// The body ended: returns the remaining complete events one by one, then the last
    /// event even without its trailing blank line (an unterminated last line counts), then
    /// `None`.
    ///
    /// # Errors
    ///
    /// As [`next_event`](Self::next_event).
    pub fn finish(&mut self) -> Result<Option<SseEvent>, LlmError> {
        while let Some(line_end) = self.find_line_end(true) {
            if let Some(event) = self.take_line(line_end)? {
                return Ok(Some(event));
            }
        }
        if self.pos < self.buf.len() {
            let end = self.buf.len();
            if let Some(event) = self.take_line((end, end))? {
                return Ok(Some(event));
            }
        }
        Ok(self.dispatch())
    }

    /// Finds the next line end from `pos`: `(end of line, start of next line)`.
    fn find_line_end(&mut self, at_eof: bool) -> Option<(usize, usize)> {
        let from = self.pos + self.scanned;
        // Vectorised: a streamed answer's every byte passes through here.
        let offset = memchr::memchr2(b'\n', b'\r', &self.buf[from..]);
        let Some(offset) = offset else {
            self.scanned = self.buf.len() - self.pos;
            return None;
        };
        let at = from + offset;
        if self.buf[at] == b'\n' {
            return Some((at, at + 1));
        }
        match self.buf.get(at + 1) {
            Some(b'\n') => Some((at, at + 2)),
            Some(_) => Some((at, at + 1)),
            // A CR at the end of what has arrived may be the first half of a CRLF.
            None if at_eof => Some((at, at + 1)),
            None => {
                self.scanned = at - self.pos;
                None
            }
        }
    }

    fn take_line(&mut self, (end, next): (usize, usize)) -> Result<Option<SseEvent>, LlmError> {
        let start = self.pos;
        self.pos = next;
        self.scanned = 0;
        let mut line = &self.buf[start..end];
        if !self.started {
            self.started = true;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line[0] == b':' {
            return Ok(None);
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() > self.max_event_bytes {
                    return Err(self.too_large());
                }
                if self.has_data {
                    self.data.push('\n');
                }
                push_text(&mut self.data, value);
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                push_text(&mut self.event, value);
            }
            b"id" if !value.contains(&0) => {
                let mut id = String::new();
                push_text(&mut id, value);
                self.id = Some(id);
            }
            b"retry" => {
                if let Some(ms) = std::str::from_utf8(value)
                    .ok()
                    .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|text| text.parse::<u64>().ok())
                {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
        Ok(None)
    }

    /// Ends the current event: returns it if it had data (an event without `data:` lines is
    /// not dispatched, per the spec).
    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = std::mem::take(&mut self.event);
        let retry = self.retry.take();
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        Some(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            id: self.id.clone(),
            retry,
        })
    }

    fn too_large(&self) -> LlmError {
        LlmError::new(
            LlmErrorKind::MalformedResponse,
            format!(
                "server-sent event larger than {} bytes",
                self.max_event_bytes
            ),
        )
    }
}

fn push_text(out: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => out.push_str(text),
        Err(_) => out.push_str(&String::from_utf8_lossy(bytes)),
    }
}

// ===== SseEvents =====

pin_project! {
    /// A stream of [`SseEvent`]s over a stream of byte pieces.
    ///
    /// Complete events are yielded as soon as their blank line arrives. An error from the
    /// byte stream is yielded once (after the events completed before it), then the stream
    /// ends; a partial event is not delivered then. At a clean end of the bytes, a final
    /// event without its blank line is delivered.
    pub struct SseEvents<S> {
        #[pin]
        inner: S,
        parser: SseParser,
        eof: bool,
        done: bool,
    }
}

impl<S> fmt::Debug for SseEvents<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseEvents")
            .field("eof", &self.eof)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<S> SseEvents<S> {
    /// Events over `bytes`, with the default size limit.
    pub fn new(bytes: S) -> Self {
        Self::with_parser(bytes, SseParser::new())
    }

    /// Events over `bytes`, parsed by `parser` (for another size limit).
    pub fn with_parser(bytes: S, parser: SseParser) -> Self {
        Self {
            inner: bytes,
            parser,
            eof: false,
            done: false,
        }
    }
}

impl<S> Stream for SseEvents<S>
where
    S: Stream<Item = Result<Bytes, LlmError>>,
{
    type Item = Result<SseEvent, LlmError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            if *this.done {
                return Poll::Ready(None);
            }
            let next = if *this.eof {
                this.parser.finish()
            } else {
                this.parser.next_event()
            };
            match next {
                Ok(Some(event)) => return Poll::Ready(Some(Ok(event))),
                Ok(None) if *this.eof => {
                    *this.done = true;
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(err) => {
                    *this.done = true;
                    return Poll::Ready(Some(Err(err)));
                }
            }
            match ready!(this.inner.as_mut().poll_next(cx)) {
                Some(Ok(bytes)) => this.parser.push(&bytes),
                Some(Err(err)) => {
                    *this.done = true;
                    return Poll::Ready(Some(Err(err)));
                }
                None => *this.eof = true,
            }
        }
    }
}

// ===== decoding =====

/// What a malformed event in an otherwise valid stream does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MalformedEvents {
    /// Skip it, log it at `warn` and count it
    /// ([`ProviderStats::malformed_events_skipped`]). A stream of nothing but bad events
    /// still fails: it ends without a finish reason.
    #[default]
    Skip,
    /// End the stream with a [`LlmErrorKind::MalformedResponse`] error.
    Fail,
}

/// What [`SseDecoder::decode`] says about the stream after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// More events are expected.
    Continue,
    /// The stream's end marker: the answer is complete; events after it are ignored.
    Done,
}

/// Why [`SseDecoder::decode`] could not use an event.
#[derive(Debug)]
pub enum DecodeError {
    /// The event cannot be understood (bad JSON, a wrong type): skipped or fatal according
    /// to [`MalformedEvents`]. The message says what is wrong.
    Malformed(String),
    /// The event reports a failure (an `error` event): the stream ends with this error.
    Fatal(LlmError),
}

/// Turns one provider's events into OpenAI-style chunks.
///
/// A decoder is a small state machine (Anthropic's content blocks need state; OpenAI's
/// chunks need none). It is `Send + 'static` so the stream can move across tasks.
pub trait SseDecoder: Send + 'static {
    /// Reads one event, pushing zero or more chunks to `out`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Malformed`] for an event that cannot be understood,
    /// [`DecodeError::Fatal`] for an event that reports a failure. Chunks pushed to `out`
    /// before an error are still delivered.
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamChunk>)
    -> Result<Flow, DecodeError>;

    /// The body ended without [`Flow::Done`]; `saw_finish_reason` says whether a chunk
    /// delivered so far carried a finish reason. May push final chunks to `out`.
    ///
    /// The default: complete if a finish reason was seen.
    ///
    /// # Errors
    ///
    /// The error that ends the stream: by default [`LlmErrorKind::StreamInterrupted`] if no
    /// finish reason was seen.
    fn finish(
        &mut self,
        saw_finish_reason: bool,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), LlmError> {
        let _ = out;
        if saw_finish_reason {
            Ok(())
        } else {
            Err(LlmError::new(
                LlmErrorKind::StreamInterrupted,
                "the stream ended before its end marker and without a finish reason",
            ))
        }
    }
}

pin_project! {
    /// A stream of [`StreamChunk`]s decoded from a stream of [`SseEvent`]s. See the
    /// [module docs](self) for how it ends.
    ///
    /// Every error it yields names the provider (if set with
    /// [`with_provider`](Self::with_provider)).
    pub struct ChunkStream<S, D> {
        #[pin]
        events: S,
        decoder: D,
        pending: VecDeque<StreamChunk>,
        scratch: Vec<StreamChunk>,
        error: Option<LlmError>,
        ended: bool,
        // The end marker was seen; the body is read to its end (briefly) before the stream
        // ends, so that its connection goes back to the pool.
        draining: bool,
        drained_events: u8,
        drain_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
        saw_finish: bool,
        chunks: u64,
        skipped: u64,
        provider: Option<Arc<str>>,
        policy: MalformedEvents,
        stats: Option<Arc<ProviderStats>>,
        secret: Option<ApiKey>,
    }
}

impl<S, D> fmt::Debug for ChunkStream<S, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkStream")
            .field("provider", &self.provider)
            .field("chunks", &self.chunks)
            .field("skipped", &self.skipped)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<S, D> ChunkStream<S, D> {
    /// Chunks decoded by `decoder` from `events`; malformed events skipped.
    pub fn new(events: S, decoder: D) -> Self {
        Self {
            events,
            decoder,
            pending: VecDeque::new(),
            scratch: Vec::new(),
            error: None,
            ended: false,
            draining: false,
            drained_events: 0,
            drain_deadline: None,
            saw_finish: false,
            chunks: 0,
            skipped: 0,
            provider: None,
            policy: MalformedEvents::Skip,
            stats: None,
            secret: None,
        }
    }

    /// Names the provider in the errors the stream yields.
    #[must_use]
    pub fn with_provider(mut self, provider: Arc<str>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Sets what a malformed event does.
    #[must_use]
    pub fn with_malformed_events(mut self, policy: MalformedEvents) -> Self {
        self.policy = policy;
        self
    }

    /// Counts skipped events and interrupted streams in `stats`.
    #[must_use]
    pub fn with_stats(mut self, stats: Arc<ProviderStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Masks `secret` in the messages of the errors the stream yields (should a provider
    /// echo the key back in an error event).
    #[must_use]
    pub fn with_secret(mut self, secret: Option<ApiKey>) -> Self {
        self.secret = secret;
        self
    }

    /// Chunks yielded so far.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// Malformed events skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

impl<S, D> ChunkStream<S, D>
where
    S: Stream<Item = Result<SseEvent, LlmError>> + Send + 'static,
    D: SseDecoder,
{
    /// Boxes the stream into a [`ChatStream`].
    pub fn into_chat_stream(self) -> ChatStream {
        ChatStream::new(self)
    }
}

impl<S, D> Stream for ChunkStream<S, D>
where
    S: Stream<Item = Result<SseEvent, LlmError>>,
    D: SseDecoder,
{
    type Item = Result<StreamChunk, LlmError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            if let Some(chunk) = this.pending.pop_front() {
                *this.chunks += 1;
                if chunk.finish_reason().is_some() {
                    *this.saw_finish = true;
                }
                return Poll::Ready(Some(Ok(chunk)));
            }
            if let Some(err) = this.error.take() {
                let err = match (err.provider(), this.provider.as_ref()) {
                    (None, Some(provider)) => err.with_provider(provider.clone()),
                    _ => err,
                };
                let err = scrub_secret(err, this.secret.as_ref());
                if *this.chunks > 0
                    && let Some(stats) = this.stats.as_ref()
                {
                    stats.record_stream_interrupted();
                }
                return Poll::Ready(Some(Err(err)));
            }
            if *this.draining {
                match this.events.as_mut().poll_next(cx) {
                    // Whatever follows the end marker is not part of the answer.
                    Poll::Ready(Some(Ok(_))) if *this.drained_events < MAX_DRAINED_EVENTS => {
                        *this.drained_events += 1;
                        continue;
                    }
                    Poll::Ready(_) => *this.draining = false,
                    Poll::Pending => {
                        if this.drain_deadline.is_none()
                            && tokio::runtime::Handle::try_current().is_ok()
                        {
                            *this.drain_deadline =
                                Some(Box::pin(tokio::time::sleep(DRAIN_AFTER_END)));
                        }
                        let waiting = this
                            .drain_deadline
                            .as_mut()
                            .is_some_and(|deadline| deadline.as_mut().poll(cx).is_pending());
                        if waiting {
                            return Poll::Pending;
                        }
                        *this.draining = false;
                    }
                }
                *this.drain_deadline = None;
                return Poll::Ready(None);
            }
            if *this.ended {
                return Poll::Ready(None);
            }
            match ready!(this.events.as_mut().poll_next(cx)) {
                Some(Ok(event)) => {
                    let result = this.decoder.decode(&event, this.scratch);
                    this.pending.extend(this.scratch.drain(..));
                    match result {
                        Ok(Flow::Continue) => {}
                        Ok(Flow::Done) => {
                            *this.ended = true;
                            *this.draining = true;
                        }
                        Err(DecodeError::Fatal(err)) => {
                            *this.ended = true;
                            *this.error = Some(err);
                        }
                        Err(DecodeError::Malformed(message)) => match this.policy {
                            MalformedEvents::Skip => {
                                *this.skipped += 1;
                                if let Some(stats) = this.stats.as_ref() {
                                    stats.record_malformed_event();
                                }
                                tracing::warn!(
                                    provider = this.provider.as_deref().unwrap_or("unknown"),
                                    event = event.event_type(),
                                    error = %message,
                                    "skipped a malformed stream event"
                                );
                            }
                            MalformedEvents::Fail => {
                                *this.ended = true;
                                *this.error = Some(LlmError::new(
                                    LlmErrorKind::MalformedResponse,
                                    format!("malformed stream event: {message}"),
                                ));
                            }
                        },
                    }
                }
                Some(Err(err)) => {
                    *this.ended = true;
                    *this.error = Some(err);
                }
                None => {
                    *this.ended = true;
                    let saw_finish = *this.saw_finish
                        || this
                            .pending
                            .iter()
                            .any(|chunk| chunk.finish_reason().is_some());
                    let result = this.decoder.finish(saw_finish, this.scratch);
                    this.pending.extend(this.scratch.drain(..));
                    if let Err(err) = result {
                        *this.error = Some(err);
                    }
                }
            }
        }
    }
}

/// How long a stream waits, after its end marker, for the body to end (a server closes the
/// body right after the marker; reading that end is what lets the connection be reused).
const DRAIN_AFTER_END: Duration = Duration::from_millis(100);

/// The most events read and dropped after the end marker.
const MAX_DRAINED_EVENTS: u8 = 4;

// ===== starting a stream =====

/// The most chunks [`start`] reads while looking for the model's name.
const MAX_PEEKED_CHUNKS: usize = 8;

/// Waits for a stream's first chunks, so that a failure before any chunk is the call's
/// error (retry and failover can act on it) and the model that really answers is known.
///
/// Reads until a chunk names its model (some servers send a first chunk without one, such
/// as Azure's prompt-filter chunk), at most a few chunks, and returns that model (or
/// `fallback_model` if none named one) with a [`ChatStream`] that yields every chunk, those
/// already read first.
///
/// # Errors
///
/// The stream's first item if it is an error, or [`LlmErrorKind::StreamInterrupted`] if the
/// stream ends before its first chunk.
///
/// # Cancel safety
///
/// Dropping the future drops the stream.
pub async fn start<S, T>(stream: S, fallback_model: &str) -> Result<(String, ChatStream), LlmError>
where
    S: Stream<Item = Result<T, LlmError>> + Send + 'static,
    T: Into<StreamChunk>,
{
    let mut stream = ChatStream::new(stream);
    let mut first = Vec::new();
    let mut model = None;
    while model.is_none() && first.len() < MAX_PEEKED_CHUNKS {
        match std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await {
            Some(Ok(chunk)) => {
                if !chunk.model.is_empty() {
                    model = Some(chunk.model.clone());
                }
                first.push(Ok(chunk));
            }
            Some(Err(err)) if first.is_empty() => return Err(err),
            Some(Err(err)) => {
                first.push(Err(err));
                break;
            }
            None if first.is_empty() => {
                return Err(LlmError::new(
                    LlmErrorKind::StreamInterrupted,
                    "the stream ended before its first chunk",
                ));
            }
            None => break,
        }
    }
    let model = model.unwrap_or_else(|| fallback_model.to_owned());
    let stream = futures_util::stream::StreamExt::chain(futures_util::stream::iter(first), stream);
    Ok((model, ChatStream::new(stream)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(pieces: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for piece in pieces {
            parser.push(piece);
            while let Some(event) = parser.next_event().unwrap() {
                events.push(event);
            }
        }
        while let Some(event) = parser.finish().unwrap() {
            events.push(event);
        }
        events
    }

    #[test]
    fn events_split_at_every_byte_parse_the_same() {
        let text: &[u8] =
            b": ping\r\nevent: a\r\ndata: 1\r\ndata: 2\r\n\r\nid: 7\ndata: x\n\ndata:y\r\rdata: \xC3\xA9\n\n";
        let whole = parse_all(&[text]);
        assert_eq!(
            whole,
            vec![
                SseEvent::named("a", "1\n2"),
                SseEvent {
                    id: Some("7".into()),
                    ..SseEvent::data("x")
                },
                SseEvent {
                    id: Some("7".into()),
                    ..SseEvent::data("y")
                },
                SseEvent {
                    id: Some("7".into()),
                    ..SseEvent::data("é")
                },
            ]
        );
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(parse_all(&bytes), whole);
        for split in 1..text.len() {
            let (a, b) = text.split_at(split);
            assert_eq!(parse_all(&[a, b]), whole, "split at {split}");
        }
    }

    #[test]
    fn final_event_without_blank_line_is_delivered() {
        assert_eq!(
            parse_all(&[b"data: a\n\ndata: b"]),
            vec![SseEvent::data("a"), SseEvent::data("b")]
        );
        assert_eq!(parse_all(&[b"data: b\r"]), vec![SseEvent::data("b")]);
    }

    #[test]
    fn comments_and_eventless_blocks_are_not_events() {
        assert!(parse_all(&[b": keep-alive\n\n:\n\nevent: ping\n\nretry: 10\n\n"]).is_empty());
    }

    #[test]
    fn bom_is_dropped_and_unknown_fields_ignored() {
        assert_eq!(
            parse_all(&[b"\xEF\xBB\xBFdata: a\nfoo: bar\ndata\n\n"]),
            vec![SseEvent::data("a\n")]
        );
    }

    #[test]
    fn oversized_line_is_an_error_not_a_growing_buffer() {
        let mut parser = SseParser::with_max_event_bytes(16);
        parser.push(b"data: 0123456789abcdefghij");
        let err = parser.next_event().unwrap_err();
        assert_eq!(err.kind(), LlmErrorKind::MalformedResponse);
        let mut parser = SseParser::with_max_event_bytes(16);
        parser.push(b"data: 0123456789\ndata: 0123456789\n");
        assert!(parser.next_event().is_err());
    }
}
