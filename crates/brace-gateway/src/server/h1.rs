//! HTTP/1.1 client connections, read and written by the connection's own task.
//!
//! hyper's HTTP/1.1 server keeps an 8 KiB read buffer and an 8 KiB write buffer for each
//! connection from its first request to its close — a stream included, whose connection
//! reads nothing more and writes a few hundred bytes at a time. Here the connection holds a
//! read buffer only while there are bytes in it (a head being read, a body not yet handed
//! on), and writes each response's head from a buffer of its size and each body piece from
//! where it is, head and first piece in one vectored write.
//!
//! What it speaks (RFC 9112):
//!
//! - requests one at a time on a keep-alive connection (pipelined ones read after the one
//!   before is answered); HTTP/1.0 kept alive only when it asks (`Connection: keep-alive`);
//! - request bodies framed by `Content-Length` (several equal values allowed) or `chunked`
//!   (extensions and trailer fields read and dropped); `Expect: 100-continue` answered with
//!   `100 Continue` when the router first asks for the body (a request answered without
//!   its body — refused, say — is not sent it, and its connection is then closed);
//! - responses framed by their body's exact size, else by the response's `Content-Length`,
//!   else chunked (HTTP/1.1) or ended by the close (HTTP/1.0); no body for `HEAD`, 1xx, 204
//!   and 304; a `Date` field on every response that has none;
//! - a connection is reused only when the request asked for it, the response did not say
//!   `Connection: close`, the request's body was read to its end and the response's framing
//!   was whole;
//! - a client that closes its side while its request is answered (before the response
//!   starts, or between a stream's pieces) has the request dropped — an upstream stream
//!   included — as hyper does.
//!
//! Refused, each with an answer in OpenAI's error shape and the connection closed: a head
//! that is not HTTP/1.x, a field name or value HTTP does not allow, a bad request target, a
//! `Content-Length` that is not one number, `Transfer-Encoding` with `Content-Length` or not
//! ending in `chunked`, or on HTTP/1.0 (400); a head over 64 KiB or 100 fields (431); a
//! transfer coding other than `chunked` (501). A body that breaks its framing fails the
//! request's body read (which the router answers 400) and the connection is not reused.
//!
//! Time bounds are the [server's](super): each head within `server.header_timeout` of when
//! the connection began waiting for it, and while none of it has arrived within
//! `server.idle_timeout` too; writes by `SendTimeout`; bodies by the router's limits.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use axum::body::Body;
use brace_core::BoxError;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::Service;

use brace_providers::lean::chunked::{Chunked, Decoded};

use crate::config::ServerConfig;
use crate::error::ApiError;

use super::SendTimeout;

/// The largest request head, header fields included (nginx's is four 8 KiB buffers).
const MAX_HEAD: usize = 64 * 1024;
/// How many header fields a request head may have (hyper's default).
const MAX_FIELDS: usize = 100;
/// How much room a read for a head asks for: an SDK's request head is under 1 KiB.
const HEAD_READ: usize = 1024;
/// The most a read for a request body asks room for.
const BODY_READ: usize = 16 * 1024;
/// How long, and for how many bytes, a connection closed with request bytes unread keeps
/// reading (and dropping) them after its response, so that closing does not reset the
/// connection and lose the response before the client has read it.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

/// Serves HTTP/1.1 on `stream` (whose first bytes, `read`, were read already) until the
/// client closes it, a request or response ends it, its next head is late, or `stop` turns
/// `true` (the request in flight, if any, answered first). The first head is due by
/// `first_head_by`.
pub(super) async fn serve<S, B>(
    stream: TcpStream,
    read: Bytes,
    mut app: S,
    options: &ServerConfig,
    mut stop: watch::Receiver<bool>,
    first_head_by: Instant,
) where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (read_half, write_half) = stream.into_split();
    let reader = Arc::new(parking_lot::Mutex::new(Reader {
        io: read_half,
        buf: BytesMut::from(&read[..]),
        body: Framing::Done,
        request: 0,
        expect: Expect::Nothing,
        closed: false,
    }));
    drop(read);
    let mut writer = SendTimeout::new(write_half, options.send_timeout);
    let mut head_by = first_head_by;
    let mut idle_until = Instant::now() + options.idle_timeout;
    loop {
        let head = match read_head(&reader, head_by, idle_until, &mut stop).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(refusal) => {
                // Written as every answer is, then the connection closed.
                let answer = refusal.into_response();
                let written =
                    respond(&reader, &mut writer, answer, false, Version::HTTP_11, true).await;
                if written.is_ok() {
                    close(&reader, &mut writer).await;
                }
                return;
            }
        };
        let Head {
            request,
            framing,
            keep_alive,
            expect_continue,
        } = head;
        let has_body = framing != Framing::Done;
        let number = {
            let mut reader = reader.lock();
            reader.request += 1;
            reader.body = framing;
            reader.expect = if expect_continue {
                Expect::Waiting
            } else {
                Expect::Nothing
            };
            reader.request
        };
        let request = request.map(|()| {
            if has_body {
                Body::new(RequestBody {
                    reader: reader.clone(),
                    request: number,
                })
            } else {
                Body::empty()
            }
        });
        let head_only = request.method() == Method::HEAD;
        let version = request.version();
        let Ok(()) = poll_fn(|cx| app.poll_ready(cx)).await;
        let future = app.call(request);
        let mut future = pin!(future);
        let response = loop {
            let polled = poll_fn(|cx| {
                if let Poll::Ready(answered) = future.as_mut().poll(cx) {
                    let Ok(response) = answered;
                    return Poll::Ready(Waited::Answered(response));
                }
                if matches!(reader.lock().expect, Expect::Asked(_)) {
                    return Poll::Ready(Waited::Continue);
                }
                reader.lock().poll_gone(cx).map(|()| Waited::Gone)
            })
            .await;
            match polled {
                Waited::Answered(response) => break response,
                // The client left before its answer: the request (an upstream call
                // included) is dropped with it.
                Waited::Gone => return,
                // The router asked for the body its client holds back.
                Waited::Continue => {
                    if writer.write_all(CONTINUE).await.is_err() {
                        return;
                    }
                    let asked = std::mem::replace(&mut reader.lock().expect, Expect::Nothing);
                    if let Expect::Asked(waker) = asked {
                        waker.wake();
                    }
                }
            }
        };
        let wants_close = !keep_alive || *stop.borrow() || !reader.lock().body_read();
        let Ok(reuse) = respond(
            &reader,
            &mut writer,
            response,
            head_only,
            version,
            wants_close,
        )
        .await
        else {
            return;
        };
        if !reuse {
            close(&reader, &mut writer).await;
            return;
        }
        let now = Instant::now();
        head_by = now + options.header_timeout;
        idle_until = now + options.idle_timeout;
    }
}

/// What waiting for the router's answer ended with.
enum Waited<T> {
    Answered(T),
    /// The client closed its side.
    Gone,
    /// The router asked for a body whose client waits for `100 Continue`.
    Continue,
}

/// What a client with `Expect: 100-continue` waits for before it sends its body.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Reads the connection's next request head: `None` when the connection is to close without
/// an answer (it closed or failed, the head was late, the gateway stops while no head has
/// begun).
async fn read_head(
    reader: &parking_lot::Mutex<Reader>,
    head_by: Instant,
    idle_until: Instant,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Head>, Refusal> {
    loop {
        let begun = {
            let mut reader = reader.lock();
            if let Some((head, length)) = parse_head(&reader.buf)? {
                reader.buf.advance(length);
                // (A request without a body holds no buffer while it is answered.)
                reader.release_if_empty();
                return Ok(Some(head));
            }
            !reader.buf.is_empty()
        };
        let deadline = if begun {
            head_by
        } else {
            head_by.min(idle_until)
        };
        let read = poll_fn(|cx| reader.lock().poll_fill(cx, HEAD_READ));
        tokio::select! {
            read = read => match read {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            },
            () = tokio::time::sleep_until(deadline) => return Ok(None),
            _ = stop.wait_for(|stopped| *stopped), if !begun => return Ok(None),
        }
    }
}

/// Writes `response`; `Ok(true)` when the connection may carry another request, `Err` when
/// it is to be dropped at once (a write failed, the client left, the body broke).
async fn respond<B>(
    reader: &parking_lot::Mutex<Reader>,
    writer: &mut SendTimeout<tokio::net::tcp::OwnedWriteHalf>,
    response: Response<B>,
    head_only: bool,
    version: Version,
    mut close: bool,
) -> Result<bool, ()>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = response.into_parts();
    let mut framing = Outgoing::of(&parts, &body.size_hint(), head_only);
    if matches!(framing, Outgoing::Chunked) && version == Version::HTTP_10 {
        framing = Outgoing::UntilClose;
    }
    close |= matches!(framing, Outgoing::UntilClose) || has_token(&parts.headers, "close");
    // Emptied once written.
    let mut head = encode_head(&parts, &framing, version, close);
    let mut body = pin!(body);
    if matches!(framing, Outgoing::Empty { .. }) {
        write_all(writer, &mut [IoSlice::new(&head)]).await?;
        return Ok(!close);
    }
    let mut left = match framing {
        Outgoing::Length(length) => Some(length),
        _ => None,
    };
    let chunked = matches!(framing, Outgoing::Chunked);
    // The head goes with the body's first piece when that is ready at once (a whole
    // answer), alone when it is not (a stream's first event is yet to come).
    loop {
        let frame = if head.is_empty() {
            // `None`: the client left between pieces.
            next_frame(body.as_mut(), reader).await.ok_or(())?
        } else if let Poll::Ready(frame) =
            poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await
        {
            frame
        } else {
            write_all(writer, &mut [IoSlice::new(&std::mem::take(&mut head))]).await?;
            continue;
        };
        let head = std::mem::take(&mut head);
        let mut data = match frame {
            None if left.is_some_and(|left| left > 0) => {
                tracing::debug!("a response body ended before its content-length");
                write_all(writer, &mut [IoSlice::new(&head)]).await?;
                return Err(());
            }
            None => {
                let end: &[u8] = if chunked { b"0\r\n\r\n" } else { b"" };
                write_all(writer, &mut [IoSlice::new(&head), IoSlice::new(end)]).await?;
                return Ok(!close);
            }
            Some(Err(err)) => {
                let err: BoxError = err.into();
                tracing::debug!(error = %err, "a response body failed; closing its connection");
                write_all(writer, &mut [IoSlice::new(&head)]).await?;
                return Err(());
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    if let (true, Ok(trailers)) = (chunked, frame.into_trailers()) {
                        let mut end = b"0\r\n".to_vec();
                        encode_fields(&mut end, &trailers);
                        end.extend_from_slice(b"\r\n");
                        write_all(writer, &mut [IoSlice::new(&head), IoSlice::new(&end)]).await?;
                        return Ok(!close);
                    }
                    // Trailers where the framing has no room for them: dropped.
                    write_all(writer, &mut [IoSlice::new(&head)]).await?;
                    continue;
                }
            },
        };
        let mut overran = false;
        if let Some(left) = left.as_mut() {
            if data.len() as u64 > *left {
                tracing::debug!("a response body ran past its content-length; cut there");
                data.truncate(*left as usize);
                overran = true;
            }
            *left -= data.len() as u64;
        }
        // An empty piece is not written as a chunk: a chunk of size 0 ends the body.
        let mut size = [0u8; 18];
        let (size, after): (&[u8], &[u8]) = if chunked && !data.is_empty() {
            (chunk_size_line(data.len(), &mut size), b"\r\n")
        } else {
            (b"", b"")
        };
        write_all(
            writer,
            &mut [
                IoSlice::new(&head),
                IoSlice::new(size),
                IoSlice::new(&data),
                IoSlice::new(after),
            ],
        )
        .await?;
        if overran {
            return Err(());
        }
    }
}

/// The body's next frame, or `None` when the client leaves first.
async fn next_frame<B: http_body::Body>(
    mut body: Pin<&mut B>,
    reader: &parking_lot::Mutex<Reader>,
) -> Option<Option<Result<Frame<B::Data>, B::Error>>> {
    poll_fn(|cx| {
        if let Poll::Ready(frame) = body.as_mut().poll_frame(cx) {
            return Poll::Ready(Some(frame));
        }
        match reader.lock().poll_gone(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Closes the connection after a response: the write side first, then reading and dropping
/// what the client still sends until it closes too (for at most 2 s and 256 KiB), so that
/// request bytes left unread do not make the close a reset that loses the response before
/// the client has read it (nginx's lingering close).
async fn close(
    reader: &parking_lot::Mutex<Reader>,
    writer: &mut SendTimeout<tokio::net::tcp::OwnedWriteHalf>,
) {
    if writer.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(LINGER, async {
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            match poll_fn(|cx| reader.lock().poll_discard(cx)).await {
                Ok(0) | Err(_) => return,
                Ok(n) => dropped += n,
            }
        }
    })
    .await;
}

/// Writes all of `pieces`, in as few system calls as the socket takes them.
async fn write_all(
    writer: &mut SendTimeout<tokio::net::tcp::OwnedWriteHalf>,
    mut pieces: &mut [IoSlice<'_>],
) -> Result<(), ()> {
    IoSlice::advance_slices(&mut pieces, 0);
    while !pieces.is_empty() {
        match writer.write_vectored(pieces).await {
            Ok(0) | Err(_) => return Err(()),
            Ok(n) => IoSlice::advance_slices(&mut pieces, n),
        }
    }
    Ok(())
}

// ===== the read side, shared by the connection and its request's body =====

/// A connection's read side: the socket, what was read from it and not yet handed on, and
/// what is left of the current request's body.
struct Reader {
    io: OwnedReadHalf,
    buf: BytesMut,
    body: Framing,
    /// How many requests the connection has read (the current one's number).
    request: u64,
    /// Where the current request's `Expect: 100-continue` stands.
    expect: Expect,
    /// The client closed its side.
    closed: bool,
}

/// What is left of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Nothing (read to its end, or none).
    Done,
    Length(u64),
    Chunked(Chunked),
    /// The body broke its framing, or the connection broke during it.
    Broken,
}

/// A request's `Expect: 100-continue`: its client sends the body only after `100 Continue`,
/// which is sent when the router first asks for the body — so that a request answered
/// without it (refused, say) is not sent a body it will not read.
#[derive(Debug)]
enum Expect {
    /// No expectation (or it was met).
    Nothing,
    /// The client waits; the body has not been asked for.
    Waiting,
    /// The body was asked for: `100 Continue` is to be sent, then the body's reader woken.
    Asked(Waker),
}

/// Why a request body cannot be read.
#[derive(Debug)]
struct BodyError(&'static str);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for BodyError {}

impl Reader {
    /// Reads into the buffer with room for `want` more bytes; the number read.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.closed {
            return Poll::Ready(Ok(0));
        }
        self.buf.reserve(want);
        let read = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.buf
        ));
        if matches!(read, Ok(0) | Err(_)) {
            self.closed = true;
        }
        Poll::Ready(read)
    }

    /// Reads and drops what the client sends; the number of bytes, 0 at its end.
    fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.clear();
        if self.closed {
            return Poll::Ready(Ok(0));
        }
        let mut scratch = [std::mem::MaybeUninit::uninit(); 4096];
        let mut read = ReadBuf::uninit(&mut scratch);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
        Poll::Ready(Ok(read.filled().len()))
    }

    /// Whether the request's body was read to its end.
    fn body_read(&self) -> bool {
        self.body == Framing::Done
    }

    /// Ready when the client has gone while its request is answered: it closed its side (or
    /// the connection failed). Watched only once the request's body is read and while no
    /// next request is waiting in the buffer; bytes that arrive are kept for the next head.
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.closed {
            return Poll::Ready(());
        }
        if !self.body_read() || !self.buf.is_empty() {
            return Poll::Pending;
        }
        // Polled at every wake of a request in flight (each streamed event): not zeroed.
        let mut scratch = [std::mem::MaybeUninit::uninit(); 512];
        let mut read = ReadBuf::uninit(&mut scratch);
        match Pin::new(&mut self.io).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                // A pipelined request: kept, and the socket no longer watched.
                self.buf.extend_from_slice(read.filled());
                Poll::Pending
            }
            Poll::Ready(_) => {
                self.closed = true;
                Poll::Ready(())
            }
        }
    }

    /// Lets go of the read buffer when it holds nothing once a head or a whole body has been
    /// handed on: an idle connection, or one whose answer streams, keeps none.
    fn release_if_empty(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// The body's next piece of data: `None` at its end.
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            let want = match step(&mut self.body, &mut self.buf) {
                Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(data))),
                Ok(Step::End) => {
                    self.body = Framing::Done;
                    self.release_if_empty();
                    return Poll::Ready(None);
                }
                Ok(Step::More(want)) => want,
                Err(err) => {
                    self.body = Framing::Broken;
                    return Poll::Ready(Some(Err(err)));
                }
            };
            if let Ok(0) | Err(_) = ready!(self.poll_fill(cx, want)) {
                self.body = Framing::Broken;
                return Poll::Ready(Some(Err(BodyError(
                    "the connection closed before the request body's end",
                ))));
            }
        }
    }
}

/// Takes the next piece of a body framed as `body` from the front of `buf`, or says how
/// much room the next read should ask for.
fn step(body: &mut Framing, buf: &mut BytesMut) -> Result<Step, BodyError> {
    Ok(match body {
        Framing::Done | Framing::Length(0) => Step::End,
        Framing::Broken => return Err(BodyError("the request body is broken")),
        Framing::Length(left) if buf.is_empty() => Step::More(read_size(*left)),
        Framing::Length(left) => {
            let (data, rest) = take(buf, *left);
            *left = rest;
            Step::Data(data)
        }
        Framing::Chunked(chunked) => match chunked
            .decode(buf)
            .map_err(|err| BodyError(err.message()))?
        {
            Decoded::Data(data) => Step::Data(data),
            Decoded::End => Step::End,
            Decoded::More => Step::More(chunked.data_left().map_or(HEAD_READ, read_size)),
        },
    })
}

/// What the body's reading found.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Data(Bytes),
    End,
    /// More bytes are needed; room for this many asked.
    More(usize),
}

/// How much room a read for a body with `left` bytes to come asks for.
fn read_size(left: u64) -> usize {
    left.min(BODY_READ as u64) as usize
}

/// Up to `left` bytes from the front of `buf`, without a copy; and what is left after them.
fn take(buf: &mut BytesMut, left: u64) -> (Bytes, u64) {
    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
    (buf.split_to(n).freeze(), left - n as u64)
}

/// A request's body, read from its connection as the router asks for it.
struct RequestBody {
    reader: Arc<parking_lot::Mutex<Reader>>,
    /// Which of the connection's requests this body is: a body kept past its request
    /// reads nothing of the next one's.
    request: u64,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut reader = self.reader.lock();
        if reader.request != self.request {
            return Poll::Ready(None);
        }
        if let Expect::Waiting | Expect::Asked(_) = reader.expect {
            // The connection sends `100 Continue`, then wakes this reader.
            reader.expect = Expect::Asked(cx.waker().clone());
            return Poll::Pending;
        }
        reader
            .poll_body(cx)
            .map(|piece| piece.map(|piece| piece.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        let reader = self.reader.lock();
        reader.request != self.request || reader.body_read()
    }

    fn size_hint(&self) -> SizeHint {
        let reader = self.reader.lock();
        match reader.body {
            _ if reader.request != self.request => SizeHint::with_exact(0),
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(left) => SizeHint::with_exact(left),
            Framing::Chunked(_) | Framing::Broken => SizeHint::default(),
        }
    }
}

// ===== request heads =====

/// A request head, read.
struct Head {
    request: Request<()>,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
}

/// A request refused before it reached the router.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// The answer: its status, and an OpenAI-shaped body saying what was wrong.
    fn into_response(self) -> axum::response::Response {
        use axum::response::IntoResponse;
        ApiError::new(self.status, self.message)
            .with_code("invalid_http_request")
            .into_response()
    }
}

/// Reads a request head from the front of `buf`: `None` while it is incomplete; else the
/// head and its length.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, Refusal> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut fields);
    let length = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(length)) if length <= MAX_HEAD => length,
        Ok(httparse::Status::Complete(_)) => return Err(too_large()),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(too_large()),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("the request head has more than {MAX_FIELDS} header fields"),
            ));
        }
        Err(err) => {
            return Err(Refusal::bad(format!(
                "the request head is not valid HTTP/1.1: {err}"
            )));
        }
    };
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| Refusal::bad("the request method is not a valid token"))?;
    let uri = http::Uri::try_from(parsed.path.unwrap_or_default())
        .map_err(|err| Refusal::bad(format!("the request target is not valid: {err}")))?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| {
            Refusal::bad(format!(
                "the header field name {:?} is not valid",
                field.name
            ))
        })?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| {
            Refusal::bad(format!("the value of the header field {name} is not valid"))
        })?;
        headers.append(name, value);
    }
    let framing = request_framing(&headers, version)?;
    let keep_alive = match version {
        Version::HTTP_10 => has_token(&headers, "keep-alive"),
        _ => !has_token(&headers, "close"),
    };
    let expect_continue = version == Version::HTTP_11
        && framing != Framing::Done
        && headers
            .get(EXPECT)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some((
        Head {
            request,
            framing,
            keep_alive,
            expect_continue,
        },
        length,
    )))
}

fn too_large() -> Refusal {
    Refusal::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        format!("the request head is larger than {} KiB", MAX_HEAD / 1024),
    )
}

/// How a request's body is framed (RFC 9112 §6.3), refusing what a proxy in front could
/// read differently.
fn request_framing(headers: &HeaderMap, version: Version) -> Result<Framing, Refusal> {
    if headers.contains_key(TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(Refusal::bad(
                "an HTTP/1.0 request cannot have Transfer-Encoding",
            ));
        }
        if headers.contains_key(CONTENT_LENGTH) {
            return Err(Refusal::bad(
                "a request cannot have both Transfer-Encoding and Content-Length",
            ));
        }
        let codings: Vec<&[u8]> = tokens(headers, &TRANSFER_ENCODING).collect();
        if !codings
            .last()
            .is_some_and(|last| last.eq_ignore_ascii_case(b"chunked"))
        {
            return Err(Refusal::bad(
                "a request's Transfer-Encoding must end with chunked",
            ));
        }
        if codings.len() > 1 {
            return Err(Refusal::new(
                StatusCode::NOT_IMPLEMENTED,
                "no transfer coding but chunked is supported",
            ));
        }
        return Ok(Framing::Chunked(Chunked::new()));
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for element in value.as_bytes().split(|&b| b == b',') {
            let parsed = std::str::from_utf8(element.trim_ascii())
                .ok()
                .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|text| text.parse::<u64>().ok())
                .ok_or_else(|| Refusal::bad("the request's Content-Length is not a number"))?;
            if length.is_some_and(|length| length != parsed) {
                return Err(Refusal::bad(
                    "the request has Content-Length values that differ",
                ));
            }
            length = Some(parsed);
        }
    }
    Ok(match length {
        None | Some(0) => Framing::Done,
        Some(length) => Framing::Length(length),
    })
}

/// The comma-separated elements of every `name` field, trimmed, empty ones skipped.
fn tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

/// Whether the `Connection` field names `token`.
fn has_token(headers: &HeaderMap, token: &str) -> bool {
    tokens(headers, &CONNECTION).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

// ===== responses =====

/// How a response's body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outgoing {
    /// No body (a `HEAD` request's answer, 1xx, 204, 304); the length to declare, if any.
    Empty {
        length: Option<u64>,
    },
    Length(u64),
    Chunked,
    /// Ended by closing the connection (an HTTP/1.0 client, a length not known).
    UntilClose,
}

impl Outgoing {
    fn of(parts: &http::response::Parts, hint: &SizeHint, head_only: bool) -> Self {
        let declared = tokens(&parts.headers, &CONTENT_LENGTH)
            .next()
            .and_then(|value| std::str::from_utf8(value).ok()?.parse().ok());
        let status = parts.status;
        if status.is_informational() || status == StatusCode::NO_CONTENT {
            return Self::Empty { length: None };
        }
        if status == StatusCode::NOT_MODIFIED {
            return Self::Empty { length: declared };
        }
        if head_only {
            // A router answering HEAD drops the body after declaring its length.
            return Self::Empty {
                length: declared.or(hint.exact()),
            };
        }
        match hint.exact().or(declared) {
            Some(length) => Self::Length(length),
            None => Self::Chunked,
        }
    }
}

/// A response head: the status line, the response's own fields but those of framing and
/// the connection (written here as they are), and a date if it has none.
fn encode_head(
    parts: &http::response::Parts,
    framing: &Outgoing,
    version: Version,
    close: bool,
) -> Vec<u8> {
    let fields: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let mut head = Vec::with_capacity(fields + 128);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == CONNECTION || name == TRANSFER_ENCODING || name == CONTENT_LENGTH {
            continue;
        }
        field(&mut head, name.as_str().as_bytes(), value.as_bytes());
    }
    match *framing {
        Outgoing::Length(length)
        | Outgoing::Empty {
            length: Some(length),
        } => field(
            &mut head,
            b"content-length",
            itoa::Buffer::new().format(length).as_bytes(),
        ),
        Outgoing::Chunked => field(&mut head, b"transfer-encoding", b"chunked"),
        Outgoing::Empty { length: None } | Outgoing::UntilClose => {}
    }
    if close {
        field(&mut head, b"connection", b"close");
    } else if version == Version::HTTP_10 {
        field(&mut head, b"connection", b"keep-alive");
    }
    if !parts.headers.contains_key(DATE) {
        field(&mut head, b"date", &date());
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Trailer fields, each on its line.
fn encode_fields(out: &mut Vec<u8>, fields: &HeaderMap) {
    for (name, value) in fields {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A chunk's size line (hex digits and CRLF), written into `out`.
fn chunk_size_line(size: usize, out: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = out.len() - 2;
    out[at..].copy_from_slice(b"\r\n");
    let mut left = size;
    loop {
        at -= 1;
        out[at] = HEX[left & 0xf];
        left >>= 4;
        if left == 0 {
            break;
        }
    }
    &out[at..]
}

/// The current time as an HTTP date, formatted once a second on each thread (no lock shared
/// between the threads that answer).
fn date() -> [u8; 29] {
    thread_local! {
        static CACHE: std::cell::Cell<(u64, [u8; 29])> = const { std::cell::Cell::new((u64::MAX, [b' '; 29])) };
    }
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    CACHE.with(|cache| {
        let (cached, text) = cache.get();
        if cached == second {
            return text;
        }
        let fresh = <[u8; 29]>::try_from(httpdate::fmt_http_date(now).as_bytes()).unwrap_or(text);
        cache.set((second, fresh));
        fresh
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a body framed as `framing` from `wire` handed over `piece` bytes at a time:
    /// the data, and what was left in the buffer after the body's end.
    fn read_body(
        framing: Framing,
        wire: &[u8],
        piece: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), BodyError> {
        let mut body = framing;
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut pieces = wire.chunks(piece);
        loop {
            match step(&mut body, &mut buf)? {
                Step::Data(piece) => data.extend_from_slice(&piece),
                Step::End => return Ok((data, buf.to_vec())),
                Step::More(want) => {
                    assert!(want > 0);
                    let Some(piece) = pieces.next() else {
                        return Err(BodyError("ran out of input"));
                    };
                    buf.extend_from_slice(piece);
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_are_read_whole_in_any_pieces_and_stop_at_their_end() {
        let wire = b"4;name=value\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n\
                     0\r\nExpires: never\r\nX-Checksum: 1\r\n\r\nGET /next HTTP/1.1\r\n";
        for piece in [1, 2, 3, 7, wire.len()] {
            let (data, left) = read_body(Framing::Chunked(Chunked::new()), wire, piece).unwrap();
            assert_eq!(data, b"Wikipedia in\r\n\r\nchunks.", "pieces of {piece}");
            // The bytes after the body are the next request's: left in the buffer (all of
            // them only when they came in the same piece).
            assert!(b"GET /next HTTP/1.1\r\n".starts_with(&left), "{left:?}");
            if piece == wire.len() {
                assert_eq!(left, b"GET /next HTTP/1.1\r\n");
            }
        }
        // Upper-case hex, a chunk larger than one read.
        let big = "y".repeat(40_000);
        let wire = format!("9C40\r\n{big}\r\n0\r\n\r\n");
        let (data, left) =
            read_body(Framing::Chunked(Chunked::new()), wire.as_bytes(), 5000).unwrap();
        assert_eq!(data, big.as_bytes());
        assert!(left.is_empty());
    }

    #[test]
    fn broken_chunked_bodies_are_errors() {
        let long_line = format!(
            "1;{}\r\nx\r\n0\r\n\r\n",
            "e".repeat(brace_providers::lean::chunked::MAX_CHUNK_LINE + 10)
        );
        let long_trailers = format!(
            "0\r\nx: {}\r\n\r\n",
            "t".repeat(brace_providers::lean::chunked::MAX_TRAILERS + 10)
        );
        let cases: [&[u8]; 8] = [
            b"g\r\nx\r\n0\r\n\r\n",
            b"\r\nx\r\n0\r\n\r\n",
            b"4\nWiki\r\n0\r\n\r\n",
            b"4\r\nWikiX\r\n0\r\n\r\n",
            b"11112222333344445\r\nx\r\n0\r\n\r\n",
            b"0\r\nx: y\n\r\n",
            long_line.as_bytes(),
            long_trailers.as_bytes(),
        ];
        for case in cases {
            for piece in [1, 3, case.len()] {
                assert!(
                    read_body(Framing::Chunked(Chunked::new()), case, piece).is_err(),
                    "{:?} in pieces of {piece}",
                    String::from_utf8_lossy(case)
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_head_is_read_or_refused_never_a_panic(
            wire in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            start in proptest::prelude::prop_oneof![
                proptest::prelude::Just(&b""[..]),
                proptest::prelude::Just(&b"POST /v1/chat/completions HTTP/1.1\r\n"[..]),
            ],
        ) {
            let mut head = start.to_vec();
            head.extend_from_slice(&wire);
            match parse_head(&head) {
                Ok(Some((_, length))) => proptest::prop_assert!(length <= head.len()),
                Ok(None) => {}
                Err(refusal) => proptest::prop_assert!(refusal.status.is_client_error() || refusal.status == StatusCode::NOT_IMPLEMENTED),
            }
        }
    }

    #[test]
    fn a_length_body_takes_its_length_and_leaves_the_rest() {
        for piece in [1, 4, 100] {
            let (data, left) = read_body(Framing::Length(5), b"hello world", piece).unwrap();
            assert_eq!(data, b"hello");
            assert!(b" world".starts_with(&left));
        }
        // Cut short: more is asked for than there is.
        assert!(read_body(Framing::Length(50), b"hello", 5).is_err());
    }

    fn headers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn request_framing_follows_rfc_9112_and_refuses_what_could_be_read_two_ways() {
        let v11 = Version::HTTP_11;
        let framing = |fields: &[(&str, &str)], version| request_framing(&headers(fields), version);
        assert_eq!(framing(&[], v11).unwrap(), Framing::Done);
        assert_eq!(
            framing(&[("content-length", "0")], v11).unwrap(),
            Framing::Done
        );
        assert_eq!(
            framing(&[("content-length", "12")], v11).unwrap(),
            Framing::Length(12)
        );
        assert_eq!(
            framing(&[("content-length", "5, 5"), ("content-length", "5")], v11).unwrap(),
            Framing::Length(5)
        );
        assert_eq!(
            framing(&[("transfer-encoding", "Chunked")], v11).unwrap(),
            Framing::Chunked(Chunked::new())
        );
        let refused = [
            (&[("content-length", "5, 6")][..], v11, 400),
            (&[("content-length", "+5")][..], v11, 400),
            (&[("content-length", "-1")][..], v11, 400),
            (&[("content-length", "")][..], v11, 400),
            (&[("content-length", "99999999999999999999")][..], v11, 400),
            (
                &[("transfer-encoding", "chunked"), ("content-length", "5")][..],
                v11,
                400,
            ),
            (&[("transfer-encoding", "chunked, gzip")][..], v11, 400),
            (&[("transfer-encoding", "gzip")][..], v11, 400),
            (&[("transfer-encoding", "gzip, chunked")][..], v11, 501),
            (
                &[("transfer-encoding", "chunked")][..],
                Version::HTTP_10,
                400,
            ),
        ];
        for (fields, version, status) in refused {
            let refusal = framing(fields, version).unwrap_err();
            assert_eq!(refusal.status.as_u16(), status, "{fields:?}");
        }
    }

    #[test]
    fn request_heads_are_read_whole_or_refused_with_what_is_wrong() {
        // Incomplete: nothing yet.
        assert!(
            parse_head(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
                .unwrap()
                .is_none()
        );
        let wire =
            b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: gw\r\nX-Two: a\r\nx-two: b\r\n\
                     content-length: 2\r\nexpect: 100-continue\r\n\r\n{}";
        let (head, length) = parse_head(wire).unwrap().unwrap();
        assert_eq!(&wire[length..], b"{}");
        assert_eq!(head.request.method(), Method::POST);
        assert_eq!(head.request.uri().path(), "/v1/chat/completions");
        assert_eq!(head.request.uri().query(), Some("x=1"));
        assert_eq!(head.request.headers().get_all("x-two").iter().count(), 2);
        assert_eq!(head.framing, Framing::Length(2));
        assert!(head.keep_alive && head.expect_continue);

        // Keep-alive: HTTP/1.1 unless it says close, HTTP/1.0 only when it asks.
        let keep_alive = |wire: &[u8]| parse_head(wire).unwrap().unwrap().0.keep_alive;
        assert!(!keep_alive(
            b"GET / HTTP/1.1\r\nconnection: keep-alive, Close\r\n\r\n"
        ));
        assert!(!keep_alive(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(keep_alive(
            b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"
        ));
        // No body, no 100 Continue.
        assert!(
            !parse_head(b"GET / HTTP/1.1\r\nexpect: 100-continue\r\n\r\n")
                .unwrap()
                .unwrap()
                .0
                .expect_continue
        );

        let refused = |wire: &[u8]| parse_head(wire).err().expect("refused");
        let garbage = refused(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
        assert_eq!(garbage.status, 400);
        assert!(
            garbage.message.contains("not valid HTTP/1.1"),
            "{}",
            garbage.message
        );
        let bad_value = refused(b"GET / HTTP/1.1\r\nx-bad: a\x7fb\r\n\r\n");
        assert_eq!(bad_value.status, 400);
        let many = "x-field: v\r\n".repeat(MAX_FIELDS + 1);
        let many = refused(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes());
        assert_eq!(many.status, 431);
        assert!(
            many.message.contains("100 header fields"),
            "{}",
            many.message
        );
        let huge = format!("GET / HTTP/1.1\r\nx-big: {}", "v".repeat(MAX_HEAD));
        let huge = refused(huge.as_bytes());
        assert_eq!(huge.status, 431);
        assert!(huge.message.contains("64 KiB"), "{}", huge.message);
        // Just under the limit: read.
        let big = format!(
            "GET / HTTP/1.1\r\nx-big: {}\r\n\r\n",
            "v".repeat(MAX_HEAD - 100)
        );
        assert!(parse_head(big.as_bytes()).unwrap().is_some());
    }

    #[tokio::test]
    async fn a_refusal_is_a_whole_answer_in_openai_shape_that_closes() {
        use http_body_util::BodyExt;
        let answer =
            Refusal::bad("the request head is not valid HTTP/1.1: invalid token").into_response();
        let (parts, body) = answer.into_parts();
        let framing = Outgoing::of(&parts, &http_body::Body::size_hint(&body), false);
        // The head `respond` writes for it (closing), and its body.
        let head = encode_head(&parts, &framing, Version::HTTP_11, true);
        let head = String::from_utf8(head).unwrap();
        let body = body.collect().await.unwrap().to_bytes();
        let body = std::str::from_utf8(&body).unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(
            head.contains(&format!("\r\ncontent-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "invalid_http_request");
        assert_eq!(json["error"]["type"], "invalid_request_error");
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("invalid token")
        );
    }

    fn parts(status: u16, fields: &[(&str, &str)]) -> http::response::Parts {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        *response.headers_mut() = headers(fields);
        response.into_parts().0
    }

    #[test]
    fn a_response_is_framed_by_its_body_then_its_length_then_chunked() {
        let exact = SizeHint::with_exact(12);
        let unknown = SizeHint::default();
        let of = |status, fields: &[(&str, &str)], hint, head_only| {
            Outgoing::of(&parts(status, fields), hint, head_only)
        };
        assert_eq!(of(200, &[], &exact, false), Outgoing::Length(12));
        // The body's own size wins over a declared one.
        assert_eq!(
            of(200, &[("content-length", "3")], &exact, false),
            Outgoing::Length(12)
        );
        assert_eq!(
            of(200, &[("content-length", "3")], &unknown, false),
            Outgoing::Length(3)
        );
        assert_eq!(of(200, &[], &unknown, false), Outgoing::Chunked);
        assert_eq!(
            of(204, &[("content-length", "3")], &exact, false),
            Outgoing::Empty { length: None }
        );
        assert_eq!(
            of(304, &[("content-length", "3")], &unknown, false),
            Outgoing::Empty { length: Some(3) }
        );
        // HEAD: the declared length (the router dropped the body after declaring it).
        assert_eq!(
            of(
                200,
                &[("content-length", "40")],
                &SizeHint::with_exact(0),
                true
            ),
            Outgoing::Empty { length: Some(40) }
        );
    }

    #[test]
    fn a_response_head_writes_its_own_framing_and_connection_fields() {
        let parts = parts(
            200,
            &[
                ("content-type", "text/event-stream"),
                ("content-length", "99"),
                ("transfer-encoding", "gzip"),
                ("connection", "keep-alive"),
                ("x-brace-provider", "primary"),
            ],
        );
        let head = encode_head(&parts, &Outgoing::Chunked, Version::HTTP_11, false);
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        assert!(
            head.contains("\r\ncontent-type: text/event-stream\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nx-brace-provider: primary\r\n"), "{head}");
        assert!(
            head.contains("\r\ntransfer-encoding: chunked\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\ndate: "), "{head}");
        assert!(
            !head.contains("99") && !head.contains("gzip") && !head.contains("connection"),
            "{head}"
        );

        let closing = encode_head(&parts, &Outgoing::Length(5), Version::HTTP_11, true);
        let closing = String::from_utf8(closing).unwrap();
        assert!(
            closing.contains("\r\ncontent-length: 5\r\n")
                && closing.contains("\r\nconnection: close\r\n"),
            "{closing}"
        );
        let kept = encode_head(&parts, &Outgoing::Length(5), Version::HTTP_10, false);
        assert!(
            String::from_utf8(kept)
                .unwrap()
                .contains("\r\nconnection: keep-alive\r\n")
        );
    }

    #[test]
    fn chunk_size_lines_are_lower_case_hex() {
        let mut out = [0u8; 18];
        assert_eq!(chunk_size_line(1, &mut out), b"1\r\n");
        assert_eq!(chunk_size_line(255, &mut out), b"ff\r\n");
        assert_eq!(chunk_size_line(40_000, &mut out), b"9c40\r\n");
        assert_eq!(
            chunk_size_line(usize::MAX, &mut out),
            b"ffffffffffffffff\r\n"
        );
    }

    #[tokio::test]
    async fn a_connection_keeps_no_read_buffer_once_a_body_is_read_and_nothing_waits() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut client = client.unwrap();
        let (io, _write) = accepted.unwrap().0.into_split();
        let mut reader = Reader {
            io,
            buf: BytesMut::new(),
            body: Framing::Length(5),
            request: 1,
            expect: Expect::Nothing,
            closed: false,
        };
        client.write_all(b"hello").await.unwrap();
        let data = poll_fn(|cx| reader.poll_body(cx)).await.unwrap().unwrap();
        assert_eq!(data, "hello");
        assert!(poll_fn(|cx| reader.poll_body(cx)).await.is_none());
        // What was read is handed on (`data` holds it); the connection holds nothing.
        assert_eq!(reader.buf.capacity(), 0);

        // A body followed by the next request's bytes: those are kept.
        reader.body = Framing::Length(2);
        client.write_all(b"hiGET / HTTP/1.1\r\n").await.unwrap();
        let mut data = Vec::new();
        while let Some(piece) = poll_fn(|cx| reader.poll_body(cx)).await {
            data.extend_from_slice(&piece.unwrap());
        }
        assert_eq!(data, b"hi");
        assert!(
            b"GET / HTTP/1.1\r\n".starts_with(&reader.buf),
            "{:?}",
            reader.buf
        );
    }

    #[test]
    fn the_date_is_an_http_date() {
        let date = date();
        let text = std::str::from_utf8(&date).unwrap();
        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
    }
}
