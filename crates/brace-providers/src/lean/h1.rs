//! HTTP/1.1 for the lean client, read and written by the task that makes the call (why, and
//! what it reads: the [parent module's docs](super)).

use std::io::{self, IoSlice};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use brace_llm::error::{LlmError, LlmErrorKind};

use super::chunked::{Chunked, Decoded as Step, take};
use crate::provider::body_broke;

/// How much an answer's head may take, header fields included (hyper's default limit is
/// about 400 KiB; a provider's head is one or two).
const MAX_HEAD: usize = 256 * 1024;
/// How many header fields an answer's head may have (hyper's default).
const MAX_HEADERS: usize = 100;
/// How much a connection asks for at first while the size of what comes is not known.
/// Small: a stream holds its connection's buffer for its whole length, and a streamed
/// answer's events are a few hundred bytes each (at 1 000 streams, 4 KiB here held 2 MiB
/// more than 1 KiB). Grown while reads fill it, see [`ReadSize`].
const READ_SIZE: usize = 1024;
/// The most read at once.
const MAX_READ: usize = 64 * 1024;
/// The largest read buffer a connection keeps while idle in the pool.
const MAX_IDLE_BUFFER: usize = 4 * READ_SIZE;

/// How much the next read asks room for when the size of what comes is not known (a head,
/// a chunked body): it doubles after a read that filled what it asked, up to [`MAX_READ`],
/// and halves after one that took less than half, down to [`READ_SIZE`] — so a large
/// answer is read in few system calls and a trickle of small events keeps a small buffer
/// (hyper's adaptive read strategy, in short).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReadSize(usize);

impl ReadSize {
    const fn new() -> Self {
        Self(READ_SIZE)
    }

    fn get(self) -> usize {
        self.0
    }

    /// Takes note of a read of `read` bytes that asked for `asked`.
    fn record(&mut self, asked: usize, read: usize) {
        if read >= asked {
            self.0 = (self.0 * 2).min(MAX_READ);
        } else if read < self.0 / 2 {
            self.0 = (self.0 / 2).max(READ_SIZE);
        }
    }
}

/// An open HTTP/1.1 connection with no exchange in progress.
#[derive(Debug)]
pub(super) struct Conn {
    io: TcpStream,
    /// Read but not yet consumed; empty between exchanges (its allocation is reused once
    /// the pieces split off it for the last answer are dropped).
    buf: BytesMut,
    /// Found closed (or sent something unasked) while idle: never used again.
    closed: bool,
    /// Room asked for by reads of unknown length.
    read_size: ReadSize,
}

impl Conn {
    pub(super) fn new(io: TcpStream) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            closed: false,
            read_size: ReadSize::new(),
        }
    }

    /// Whether the server closed it (or sent something nobody asked for) since its last
    /// exchange: such a connection must not carry another request. Reads only what the
    /// runtime already knows has arrived (no system call while it knows of nothing); a close
    /// not yet seen shows on the next request.
    pub(super) fn is_closed(&mut self) -> bool {
        if !self.closed {
            let mut probe = [0u8; 1];
            self.closed = match self.io.try_read(&mut probe) {
                Err(err) => err.kind() != io::ErrorKind::WouldBlock,
                // The end of the stream, or bytes between exchanges.
                Ok(_) => true,
            };
        }
        self.closed
    }

    /// Reads what has arrived into the buffer, with room for at least `want` bytes.
    /// `Ok(0)`: the server closed the connection.
    ///
    /// Through tokio's `poll_read`, which takes a read that did not fill the room it had as
    /// the socket drained and forgets its readiness: the next read (or [`is_closed`]'s
    /// probe between exchanges) then waits for the runtime's word instead of making a
    /// system call only to hear "nothing yet".
    ///
    /// [`is_closed`]: Self::is_closed
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        // Nothing to do when the room is there already (`reserve` checks first).
        self.buf.reserve(want);
        tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Readies a connection whose exchange ended for the pool: it keeps a buffer of the
    /// usual size for its next exchange, but not one a large answer grew (a stream later
    /// carried on it would hold that for its whole length), and its next reads start
    /// small again.
    fn rest(&mut self) {
        if self.buf.capacity() > MAX_IDLE_BUFFER {
            self.buf = BytesMut::new();
        }
        self.read_size = ReadSize::new();
    }

    /// [`poll_fill`](Self::poll_fill) for what is of unknown length: asks for the room the
    /// reads so far call for.
    fn poll_fill_unknown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let asked = self.read_size.get();
        let result = ready!(self.poll_fill(cx, asked));
        if let Ok(read) = result {
            self.read_size.record(asked, read);
        }
        Poll::Ready(result)
    }
}

/// A request's head in HTTP/1.1's wire form: the target in origin form, `host` (unless the
/// request names its own), the request's fields, and `content-length` for a body of
/// `length` bytes (for a method that may have a body, also when it is empty). The request
/// has no `transfer-encoding` of its own (the caller refuses one: bodies go with a length).
pub(super) fn encode_head(
    parts: &http::request::Parts,
    host: &HeaderValue,
    length: usize,
) -> Vec<u8> {
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let fields: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let mut head = Vec::with_capacity(parts.method.as_str().len() + target.len() + fields + 96);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    if !parts.headers.contains_key(HOST) {
        field(&mut head, HOST.as_str(), host.as_bytes());
    }
    for (name, value) in &parts.headers {
        field(&mut head, name.as_str(), value.as_bytes());
    }
    let may_have_body = !matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    if !parts.headers.contains_key(CONTENT_LENGTH) && (length > 0 || may_have_body) {
        field(
            &mut head,
            CONTENT_LENGTH.as_str(),
            itoa::Buffer::new().format(length).as_bytes(),
        );
    }
    head.extend_from_slice(b"\r\n");
    head
}

fn field(head: &mut Vec<u8>, name: &str, value: &[u8]) {
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// Why an exchange failed, and whether any of the request was written (a request that was
/// not may go out on another connection).
#[derive(Debug)]
pub(super) struct Failed {
    pub(super) error: LlmError,
    pub(super) unsent: bool,
}

/// An answer's head, read.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) status: StatusCode,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
}

/// Sends a request (`head` from [`encode_head`], then `body`) on `conn` and reads the
/// answer's head; the body is read from the returned [`Body`].
pub(super) async fn exchange(
    mut conn: Conn,
    method: &Method,
    head: &[u8],
    body: &[u8],
) -> Result<(Head, Body), Failed> {
    let mut written = 0;
    let total = head.len() + body.len();
    while written < total {
        let slices = if written < head.len() {
            [IoSlice::new(&head[written..]), IoSlice::new(body)]
        } else {
            [
                IoSlice::new(&body[written - head.len()..]),
                IoSlice::new(&[]),
            ]
        };
        match conn.io.write_vectored(&slices).await {
            Ok(0) => {
                return Err(Failed {
                    error: connect("the connection closed while the request was written"),
                    unsent: written == 0,
                });
            }
            Ok(n) => written += n,
            Err(err) => {
                return Err(Failed {
                    error: LlmError::new(LlmErrorKind::Connect, err.to_string()),
                    unsent: written == 0,
                });
            }
        }
    }
    let sent = |error| Failed {
        error,
        unsent: false,
    };
    // Interim answers (`100 Continue`, `103 Early Hints`) are read past: the final one follows.
    let head = loop {
        if let Some(head) = std::future::poll_fn(|cx| poll_head(&mut conn, cx))
            .await
            .map_err(sent)?
        {
            break head;
        }
    };
    let framing = framing(method, &head).map_err(sent)?;
    // Both framings given: the length is not trusted, nor the connection after it.
    let ambiguous =
        head.headers.contains_key(TRANSFER_ENCODING) && head.headers.contains_key(CONTENT_LENGTH);
    let keep_alive = head.version == Version::HTTP_11
        && framing != Framing::Close
        && !ambiguous
        && !has_token(&head.headers, &CONNECTION, "close");
    let body = Body {
        conn: Some(conn),
        framing,
        keep_alive,
    };
    Ok((head, body))
}

/// Reads until a whole head is in the buffer and parses it: `Ok(None)` for an interim
/// (`1xx`) answer, which has been consumed.
fn poll_head(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<Option<Head>, LlmError>> {
    loop {
        if !conn.buf.is_empty() {
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut fields);
            match response.parse(&conn.buf) {
                Ok(httparse::Status::Complete(length)) => {
                    let head = read_head(&response)?;
                    conn.buf.advance(length);
                    if head.status.is_informational() {
                        if head.status == StatusCode::SWITCHING_PROTOCOLS {
                            return Poll::Ready(Err(malformed(
                                "the provider switched protocols, which was not asked for",
                            )));
                        }
                        return Poll::Ready(Ok(None));
                    }
                    return Poll::Ready(Ok(Some(head)));
                }
                Ok(httparse::Status::Partial) if conn.buf.len() >= MAX_HEAD => {
                    return Poll::Ready(Err(malformed("the answer's head is too large")));
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Poll::Ready(Err(malformed(
                        "the answer's head has more than 100 header fields",
                    )));
                }
                Err(err) => {
                    return Poll::Ready(Err(malformed(&format!(
                        "the answer's head is not valid HTTP/1.1: {err}"
                    ))));
                }
            }
        }
        match ready!(conn.poll_fill_unknown(cx)) {
            Ok(0) if conn.buf.is_empty() => {
                return Poll::Ready(Err(connect(
                    "the connection closed before the answer's head",
                )));
            }
            Ok(0) => {
                return Poll::Ready(Err(malformed(
                    "the connection closed in the middle of the answer's head",
                )));
            }
            Ok(_) => {}
            Err(err) => {
                return Poll::Ready(Err(LlmError::new(LlmErrorKind::Connect, err.to_string())));
            }
        }
    }
}

fn read_head(response: &httparse::Response<'_, '_>) -> Result<Head, LlmError> {
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| malformed("the answer's status is not valid"))?;
    let version = match response.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    for field in response.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| malformed("an answer's header name is not valid"))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| malformed("an answer's header value is not valid"))?;
        headers.append(name, value);
    }
    Ok(Head {
        status,
        version,
        headers,
    })
}

/// How an answer's body ends (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunked),
    /// Everything until the server closes the connection.
    Close,
}

fn framing(method: &Method, head: &Head) -> Result<Framing, LlmError> {
    if method == Method::HEAD
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Length(0));
    }
    if head.headers.contains_key(TRANSFER_ENCODING) {
        // Chunked only when it is the final coding; otherwise the body lasts until the close.
        let last = tokens(&head.headers, &TRANSFER_ENCODING).rfind(|coding| !coding.is_empty());
        return Ok(match last {
            Some(coding) if coding.eq_ignore_ascii_case("chunked") => {
                Framing::Chunked(Chunked::new())
            }
            _ => Framing::Close,
        });
    }
    let mut length = None;
    for value in head.headers.get_all(CONTENT_LENGTH) {
        let text = value
            .to_str()
            .map_err(|_| malformed("the answer's content-length is not a number"))?;
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed("the answer's content-length is not a number"));
            }
            let parsed: u64 = part
                .parse()
                .map_err(|_| malformed("the answer's content-length is too large"))?;
            if length.is_some_and(|seen| seen != parsed) {
                return Err(malformed("the answer gives two different content-lengths"));
            }
            length = Some(parsed);
        }
    }
    Ok(length.map_or(Framing::Close, Framing::Length))
}

/// The comma-separated items of every `name` field, trimmed, in order.
fn tokens<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> impl DoubleEndedIterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
}

/// Whether a field lists `token` (case aside), as `Connection: close` does.
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    tokens(headers, name).any(|part| part.eq_ignore_ascii_case(token))
}

/// An answer's body, read from its connection by whoever polls it.
#[derive(Debug)]
pub(super) struct Body {
    /// `None` once the body has ended or failed.
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
}

/// What a body's end leaves: its connection, when it can carry another request.
#[derive(Debug)]
pub(super) enum Ended {
    Reusable(Conn),
    Closed,
}

impl Body {
    /// Whether nothing more is to come (a length read to its end).
    pub(super) fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.framing == Framing::Length(0)
    }

    /// The body's length left, when it has one.
    pub(super) fn remaining(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(left) => Some(left),
            _ => None,
        }
    }

    /// Takes the connection of a body read to its end (`None` until then).
    pub(super) fn take_ended(&mut self) -> Option<Ended> {
        if self.framing != Framing::Length(0) {
            return None;
        }
        let mut conn = self.conn.take()?;
        Some(if self.keep_alive && conn.buf.is_empty() {
            conn.rest();
            Ended::Reusable(conn)
        } else {
            Ended::Closed
        })
    }

    /// The next piece of the body, `Ok(None)` at its end (then [`take_ended`](Self::take_ended)
    /// gives its connection).
    pub(super) fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, LlmError>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(None));
        };
        loop {
            let step = match step(&mut self.framing, &mut conn.buf) {
                Ok(step) => step,
                Err(err) => {
                    self.conn = None;
                    return Poll::Ready(Err(err));
                }
            };
            match step {
                Step::Data(data) => return Poll::Ready(Ok(Some(data))),
                Step::End => {
                    // Read to its end: a length of zero left marks it.
                    self.framing = Framing::Length(0);
                    return Poll::Ready(Ok(None));
                }
                Step::More => {}
            }
            let filled = match self.framing {
                Framing::Length(left) => {
                    let want = usize::try_from(left).unwrap_or(MAX_READ).clamp(1, MAX_READ);
                    conn.poll_fill(cx, want)
                }
                _ => conn.poll_fill_unknown(cx),
            };
            match ready!(filled) {
                Ok(0) if self.framing == Framing::Close => {
                    self.keep_alive = false;
                    self.framing = Framing::Length(0);
                    return Poll::Ready(Ok(None));
                }
                Ok(0) => {
                    self.conn = None;
                    return Poll::Ready(Err(body_broke(
                        "the connection closed before the answer's end",
                    )));
                }
                Ok(_) => {}
                Err(err) => {
                    self.conn = None;
                    return Poll::Ready(Err(body_broke(&err.to_string())));
                }
            }
        }
    }
}

/// Takes what `framing` says comes next out of `buf`.
fn step(framing: &mut Framing, buf: &mut BytesMut) -> Result<Step, LlmError> {
    Ok(match framing {
        Framing::Length(0) => Step::End,
        Framing::Length(_) | Framing::Close if buf.is_empty() => Step::More,
        Framing::Length(left) => Step::Data(take(buf, left)),
        Framing::Close => Step::Data(buf.split().freeze()),
        Framing::Chunked(chunked) => chunked
            .decode(buf)
            .map_err(|err| malformed(err.message()))?,
    })
}

fn connect(message: &str) -> LlmError {
    LlmError::new(LlmErrorKind::Connect, message)
}

fn malformed(message: &str) -> LlmError {
    LlmError::new(LlmErrorKind::MalformedResponse, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(framing: Framing, wire: &[u8], piece: usize) -> Result<(Vec<u8>, bool), LlmError> {
        let mut framing = framing;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match step(&mut framing, &mut buf)? {
                Step::Data(data) => out.extend_from_slice(&data),
                Step::End => return Ok((out, buf.is_empty())),
                Step::More if fed == wire.len() => return Ok((out, false)),
                Step::More => {
                    let next = (fed + piece).min(wire.len());
                    buf.extend_from_slice(&wire[fed..next]);
                    fed = next;
                }
            }
        }
    }

    #[test]
    fn the_read_size_grows_while_reads_fill_it_and_shrinks_back_for_small_ones() {
        let mut size = ReadSize::new();
        assert_eq!(size.get(), READ_SIZE);
        // A large answer: every read fills what it asked for.
        let mut seen = vec![size.get()];
        for _ in 0..10 {
            let asked = size.get();
            size.record(asked, asked);
            seen.push(size.get());
        }
        assert_eq!(
            seen,
            [
                1024, 2048, 4096, 8192, 16384, 32768, 65536, 65536, 65536, 65536, 65536
            ]
        );
        // A read that took between half and all of it changes nothing.
        size.record(MAX_READ, MAX_READ / 2);
        assert_eq!(size.get(), MAX_READ);
        // Small events: back down, never below the start.
        let mut seen = Vec::new();
        for _ in 0..8 {
            let asked = size.get();
            size.record(asked, 300);
            seen.push(size.get());
        }
        assert_eq!(seen, [32768, 16384, 8192, 4096, 2048, 1024, 1024, 1024]);
    }

    #[tokio::test]
    async fn a_connection_back_in_the_pool_keeps_no_buffer_a_large_answer_grew() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let mut conn = Conn::new(stream);
        // After a small exchange: the buffer stays for the next one.
        conn.buf.reserve(READ_SIZE);
        conn.rest();
        assert!(conn.buf.capacity() >= READ_SIZE);
        // After a large answer (reads grown to their most, the buffer with them).
        conn.buf.reserve(MAX_READ);
        conn.read_size = ReadSize(MAX_READ);
        conn.rest();
        assert!(
            conn.buf.capacity() <= MAX_IDLE_BUFFER,
            "{}",
            conn.buf.capacity()
        );
        assert_eq!(conn.read_size, ReadSize::new());
    }

    const CHUNKED: &[u8] =
        b"5\r\nhello\r\n1;name=value\r\n \r\nA \r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n";

    #[test]
    fn a_chunked_body_decodes_whatever_pieces_it_arrives_in() {
        for piece in [1, 2, 3, 7, CHUNKED.len()] {
            let (body, exact) = decode(Framing::Chunked(Chunked::new()), CHUNKED, piece).unwrap();
            assert_eq!(body, b"hello 0123456789", "pieces of {piece}");
            assert!(exact, "pieces of {piece}");
        }
    }

    #[test]
    fn a_chunked_body_cut_short_has_no_end() {
        let cut = &CHUNKED[..CHUNKED.len() - 2];
        let (_, ended) = decode(Framing::Chunked(Chunked::new()), cut, 4).unwrap();
        assert!(!ended);
    }

    #[test]
    fn bad_chunks_are_malformed_answers() {
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
        ] {
            let err = decode(Framing::Chunked(Chunked::new()), wire, 3).unwrap_err();
            assert_eq!(err.kind(), LlmErrorKind::MalformedResponse, "{wire:?}");
        }
        let endless = vec![b'1'; crate::lean::chunked::MAX_CHUNK_LINE + 10];
        let err = decode(Framing::Chunked(Chunked::new()), &endless, 512).unwrap_err();
        assert_eq!(err.kind(), LlmErrorKind::MalformedResponse);
    }

    #[test]
    fn a_length_body_ends_at_its_length() {
        let (body, exact) = decode(Framing::Length(5), b"hello", 2).unwrap();
        assert_eq!(body, b"hello");
        assert!(exact);
        // Bytes after the length are not the body's, and make the connection unusable.
        let (body, exact) = decode(Framing::Length(5), b"helloEXTRA", 10).unwrap();
        assert_eq!(body, b"hello");
        assert!(!exact);
    }

    fn head(status: u16, fields: &[(&str, &str)]) -> Head {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        Head {
            status: StatusCode::from_u16(status).unwrap(),
            version: Version::HTTP_11,
            headers,
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let post = Method::POST;
        let chunked = Framing::Chunked(Chunked::new());
        assert_eq!(
            framing(&post, &head(200, &[("content-length", "12")])).unwrap(),
            Framing::Length(12)
        );
        assert_eq!(
            framing(&post, &head(200, &[("content-length", "7, 7")])).unwrap(),
            Framing::Length(7)
        );
        assert_eq!(
            framing(&post, &head(200, &[("transfer-encoding", "chunked")])).unwrap(),
            chunked
        );
        assert_eq!(
            framing(&post, &head(200, &[("transfer-encoding", "gzip, Chunked")])).unwrap(),
            chunked
        );
        assert_eq!(
            framing(
                &post,
                &head(
                    200,
                    &[("transfer-encoding", "chunked"), ("content-length", "3")]
                )
            )
            .unwrap(),
            chunked
        );
        assert_eq!(
            framing(&post, &head(200, &[("transfer-encoding", "gzip")])).unwrap(),
            Framing::Close
        );
        assert_eq!(framing(&post, &head(200, &[])).unwrap(), Framing::Close);
        assert_eq!(
            framing(&post, &head(204, &[("content-length", "5")])).unwrap(),
            Framing::Length(0)
        );
        assert_eq!(
            framing(&Method::HEAD, &head(200, &[("content-length", "5")])).unwrap(),
            Framing::Length(0)
        );
        for bad in ["-1", "1.5", "", "5, 6", "99999999999999999999999"] {
            let err = framing(&post, &head(200, &[("content-length", bad)])).unwrap_err();
            assert_eq!(err.kind(), LlmErrorKind::MalformedResponse, "{bad:?}");
        }
    }

    #[test]
    fn a_request_head_is_written_in_origin_form_with_its_length() {
        let request = http::Request::post("http://127.0.0.1:9/v1/chat?x=1")
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let head = encode_head(&parts, &HeaderValue::from_static("127.0.0.1:9"), 1234);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST /v1/chat?x=1 HTTP/1.1\r\nhost: 127.0.0.1:9\r\ncontent-type: application/json\r\ncontent-length: 1234\r\n\r\n"
        );
        let (parts, ()) = http::Request::get("http://h/")
            .body(())
            .unwrap()
            .into_parts();
        let head = encode_head(&parts, &HeaderValue::from_static("h"), 0);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET / HTTP/1.1\r\nhost: h\r\n\r\n"
        );
    }
}
