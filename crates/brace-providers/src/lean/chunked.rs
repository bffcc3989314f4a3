//! HTTP/1.1's chunked transfer coding (RFC 9112 §7.1), decoded from a buffer as its bytes
//! arrive: the lean client reads answers with it, and the gateway's HTTP/1.1 server reads
//! request bodies with it.
//!
//! Chunk extensions and trailer fields are read and dropped. Lines end with CRLF (a bare LF
//! is an error: a reader that took it would see a different body than one that did not); a
//! chunk-size line may take [`MAX_CHUNK_LINE`] bytes and the trailer fields together
//! [`MAX_TRAILERS`].
//!
//! ```
//! use brace_providers::lean::chunked::{Chunked, Decoded};
//! use bytes::BytesMut;
//!
//! let mut body = Chunked::new();
//! let mut buf = BytesMut::from(&b"5;ext=1\r\nhello\r\n0\r\nx-trailer: t\r\n\r\nNEXT"[..]);
//! assert_eq!(body.decode(&mut buf).unwrap(), Decoded::Data("hello".into()));
//! assert_eq!(body.decode(&mut buf).unwrap(), Decoded::End);
//! // What follows the body stays in the buffer.
//! assert_eq!(&buf[..], b"NEXT");
//! ```

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

/// The longest chunk-size line accepted, extensions included.
pub const MAX_CHUNK_LINE: usize = 4 * 1024;
/// The most trailer-field bytes accepted.
pub const MAX_TRAILERS: usize = 16 * 1024;

/// Where the reading of a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunked {
    at: At,
    /// Trailer bytes read so far.
    trailers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes still to come.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields until an empty line.
    Trailers,
    /// Read to its end.
    Ended,
}

/// What one step of decoding found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A piece of the body's data (split off the buffer, not copied).
    Data(Bytes),
    /// More bytes are needed.
    More,
    /// The body's end; what follows it is left in the buffer.
    End,
}

/// A body that breaks the chunked coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedError(&'static str);

impl ChunkedError {
    /// What is wrong, in a few words.
    pub fn message(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ChunkedError {}

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

impl Chunked {
    /// A body whose first chunk-size line is next.
    pub const fn new() -> Self {
        Self {
            at: At::Size,
            trailers: 0,
        }
    }

    /// The bytes of the current chunk still to come, while inside one: how much a read may
    /// usefully ask for.
    pub fn data_left(&self) -> Option<u64> {
        match self.at {
            At::Data(left) => Some(left),
            _ => None,
        }
    }

    /// Takes what comes next out of the front of `buf`: a piece of data, the end, or word
    /// that more bytes are needed.
    ///
    /// # Errors
    ///
    /// The body breaks the coding: a size that is not hexadecimal or does not fit 64 bits,
    /// a chunk not followed by CRLF, a bare LF, a size line or trailer section too long.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkedError> {
        loop {
            match &mut self.at {
                At::Ended => return Ok(Decoded::End),
                At::Size => {
                    let end = match line_end(buf)? {
                        Some(end) if end <= MAX_CHUNK_LINE => end,
                        None if buf.len() <= MAX_CHUNK_LINE => return Ok(Decoded::More),
                        _ => return Err(ChunkedError("a chunk-size line is too long")),
                    };
                    let size = chunk_size(&buf[..end])?;
                    buf.advance(end + 2);
                    self.at = if size == 0 {
                        At::Trailers
                    } else {
                        At::Data(size)
                    };
                }
                At::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let data = take(buf, left);
                    if *left == 0 {
                        self.at = At::DataEnd;
                    }
                    return Ok(Decoded::Data(data));
                }
                At::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkedError("a chunk does not end where its size says"));
                    }
                    buf.advance(2);
                    self.at = At::Size;
                }
                At::Trailers => {
                    let Some(end) = line_end(buf)? else {
                        if self.trailers + buf.len() > MAX_TRAILERS {
                            return Err(ChunkedError("the trailer fields are too large"));
                        }
                        return Ok(Decoded::More);
                    };
                    buf.advance(end + 2);
                    if end == 0 {
                        self.at = At::Ended;
                        return Ok(Decoded::End);
                    }
                    self.trailers += end + 2;
                    if self.trailers > MAX_TRAILERS {
                        return Err(ChunkedError("the trailer fields are too large"));
                    }
                }
            }
        }
    }
}

/// Splits off as much of `buf` as is there, up to `left` bytes, and counts it off `left`
/// (a chunk's data here, a length-framed body in the lean client).
pub(super) fn take(buf: &mut BytesMut, left: &mut u64) -> Bytes {
    let take = usize::try_from(*left).map_or(buf.len(), |left| left.min(buf.len()));
    *left -= take as u64;
    buf.split_to(take).freeze()
}

/// Where the line at the start of `buf` ends (its CR), if a whole one has arrived: found
/// with `memchr`, a streamed body's every chunk-size line passes through here.
///
/// # Errors
///
/// A line ended by a bare LF.
fn line_end(buf: &[u8]) -> Result<Option<usize>, ChunkedError> {
    match memchr::memchr(b'\n', buf) {
        None => Ok(None),
        Some(lf) if lf > 0 && buf[lf - 1] == b'\r' => Ok(Some(lf - 1)),
        Some(_) => Err(ChunkedError("a line of the chunked body ends without a CR")),
    }
}

/// A chunk-size line's size: hexadecimal digits, then optional whitespace and extensions.
fn chunk_size(line: &[u8]) -> Result<u64, ChunkedError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ChunkedError("a chunk-size line has no hexadecimal size"));
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest[0] == b';') || rest.iter().any(|b| *b == b'\n' || *b == b'\r') {
        return Err(ChunkedError("a chunk-size line is not valid"));
    }
    line[..digits].iter().try_fold(0u64, |size, digit| {
        let value = u64::from(char::from(*digit).to_digit(16).unwrap_or(0));
        size.checked_mul(16)
            .and_then(|size| size.checked_add(value))
            .ok_or(ChunkedError("a chunk's size is too large"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` handed over `piece` bytes at a time: the body, and whether the wire
    /// ended exactly at the body's end (`Ok` with `false` as well when it stopped short).
    fn decode(wire: &[u8], piece: usize) -> Result<(Vec<u8>, bool), ChunkedError> {
        let mut chunked = Chunked::new();
        let mut buf = BytesMut::new();
        let mut pieces = wire.chunks(piece);
        let mut body = Vec::new();
        loop {
            match chunked.decode(&mut buf)? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::End => return Ok((body, buf.is_empty() && pieces.next().is_none())),
                Decoded::More => match pieces.next() {
                    Some(piece) => buf.extend_from_slice(piece),
                    None => return Ok((body, false)),
                },
            }
        }
    }

    /// `body` in chunked framing: chunks of the sizes in `sizes` (cycled; 1 at least), each
    /// size in hexadecimal of either case, every other one with an extension, then the last
    /// chunk and, if `trailer`, a trailer field.
    fn chunked(body: &[u8], sizes: &[usize], trailer: bool) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut at = 0;
        let mut sizes = sizes.iter().cycle();
        let mut n = 0;
        while at < body.len() {
            let size = sizes
                .next()
                .copied()
                .unwrap_or(1)
                .max(1)
                .min(body.len() - at);
            let hex = if n % 2 == 0 {
                format!("{size:x}")
            } else {
                format!("{size:X};ext=\"v\"")
            };
            wire.extend_from_slice(hex.as_bytes());
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(&body[at..at + size]);
            wire.extend_from_slice(b"\r\n");
            at += size;
            n += 1;
        }
        wire.extend_from_slice(b"0\r\n");
        if trailer {
            wire.extend_from_slice(b"x-trailer: done\r\n");
        }
        wire.extend_from_slice(b"\r\n");
        wire
    }

    proptest::proptest! {
        #[test]
        fn any_chunked_body_decodes_to_itself_however_it_arrives(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000),
            sizes in proptest::collection::vec(1usize..300, 1..8),
            trailer in proptest::prelude::any::<bool>(),
            piece in 1usize..64,
        ) {
            let wire = chunked(&body, &sizes, trailer);
            let (decoded, exact) = decode(&wire, piece).unwrap();
            proptest::prop_assert_eq!(decoded, body);
            proptest::prop_assert!(exact);
        }

        #[test]
        fn any_bytes_give_a_body_or_an_error_never_a_panic(
            wire in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            piece in 1usize..32,
        ) {
            // Whatever it is: decoded (never more than arrived), waiting for more, or an
            // error — and never a panic.
            if let Ok((decoded, _)) = decode(&wire, piece) {
                proptest::prop_assert!(decoded.len() <= wire.len());
            }
        }
    }
}
