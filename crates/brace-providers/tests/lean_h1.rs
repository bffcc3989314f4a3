//! The lean client's own HTTP/1.1 reading and writing, against a loopback server that
//! answers with exact bytes: interim answers, chunked bodies with extensions and trailers,
//! bodies that end at the close, when a connection is kept for the next request, and which
//! error each broken answer is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use brace_llm::{LlmError, LlmErrorKind};
use brace_providers::ClientOptions;
use brace_providers::lean::LeanClient;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;

mod raw_http;

/// Bounds a wait (nothing here comes near it; it only turns a hang into a failure).
async fn guard<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("the client hung")
}

/// A loopback server that reads each request (head and `content-length` body), keeps its
/// head, and answers with `answer`'s bytes, a few at a time; then it closes the connection
/// if `close`, else waits for the next request on it.
struct Scripted {
    server: raw_http::Counted,
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    async fn start(answer: &'static [u8], close: bool) -> Self {
        let heads = Arc::new(Mutex::new(Vec::new()));
        let kept = heads.clone();
        let server = raw_http::Counted::start(move |mut socket| {
            let kept = kept.clone();
            async move {
                socket.set_nodelay(true).unwrap();
                let mut buffer = Vec::new();
                while let Some(head) = raw_http::next_request(&mut socket, &mut buffer).await {
                    kept.lock().push(head);
                    // A few bytes per write, so the answer arrives in many pieces.
                    for piece in answer.chunks(7) {
                        if socket.write_all(piece).await.is_err() {
                            return;
                        }
                        tokio::task::yield_now().await;
                    }
                    if close {
                        return;
                    }
                }
            }
        })
        .await;
        Self {
            addr: server.addr,
            server,
            heads,
        }
    }

    fn accepted(&self) -> usize {
        self.server.accepted()
    }
}

const BODY: &str = r#"{"model":"sim-model","messages":[{"role":"user","content":"hi"}]}"#;

fn post(addr: SocketAddr) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("http://{addr}/v1/chat/completions?api-version=1"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap()
}

/// Sends `post(addr)` and reads the answer's body to its end: its status and text, or the
/// error of the head or of the body.
async fn exchange(lean: &LeanClient, addr: SocketAddr) -> Result<(u16, String), LlmError> {
    let response = guard(lean.send(post(addr))).await?;
    let status = response.status().as_u16();
    let body = guard(response.into_body().collect()).await?;
    Ok((status, String::from_utf8(body.to_bytes().to_vec()).unwrap()))
}

fn client() -> LeanClient {
    LeanClient::new(ClientOptions::new(Duration::from_secs(5)))
}

/// A chunked answer far larger than a connection's first read buffer (1 KiB): read whole,
/// twice on one connection, the second time after the connection went back to the pool.
#[tokio::test]
async fn a_large_chunked_answer_is_read_whole_and_its_connection_kept() {
    let text: String = (0..70_000)
        .map(|i| char::from(b'a' + u8::try_from(i % 26).unwrap()))
        .collect();
    let mut answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for piece in text.as_bytes().chunks(5_000) {
        answer.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        answer.extend_from_slice(piece);
        answer.extend_from_slice(b"\r\n");
    }
    answer.extend_from_slice(b"0\r\n\r\n");
    let server = Scripted::start(Vec::leak(answer), false).await;
    let lean = client();
    for call in 0..2 {
        let (status, body) = exchange(&lean, server.addr).await.unwrap();
        assert_eq!(status, 200, "call {call}");
        assert!(body == text, "call {call}: {} bytes read", body.len());
        assert_eq!(lean.idle_connections(), 1, "after call {call}");
    }
    assert_eq!(server.accepted(), 1, "one connection for both calls");
}

#[tokio::test]
async fn chunked_answers_after_an_interim_one_are_read_whole_on_one_connection() {
    let server = Scripted::start(
        b"HTTP/1.1 100 Continue\r\n\r\n\
          HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
          4;name=value\r\n{\"ok\r\n\
          7\r\n\":true}\r\n\
          0\r\nx-checksum: 1\r\n\r\n",
        false,
    )
    .await;
    let lean = client();
    for call in 0..3 {
        let (status, text) = exchange(&lean, server.addr).await.unwrap();
        assert_eq!(
            (status, text.as_str()),
            (200, r#"{"ok":true}"#),
            "call {call}"
        );
        assert_eq!(lean.idle_connections(), 1, "after call {call}");
    }
    assert_eq!(server.accepted(), 1, "one connection for the three calls");

    // What went out: origin form, the host, the body's length, the caller's fields.
    let heads = server.heads.lock().clone();
    assert_eq!(heads.len(), 3);
    let port = server.addr.port();
    assert_eq!(
        heads[0],
        format!(
            "POST /v1/chat/completions?api-version=1 HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\
             content-type: application/json\r\ncontent-length: {}",
            BODY.len()
        )
    );
}

#[tokio::test]
async fn a_connection_is_kept_only_when_its_answer_ended_exactly() {
    // Ends at the close: read whole, and the connection is gone.
    let server = Scripted::start(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"ok\":true}",
        true,
    )
    .await;
    let lean = client();
    for call in 0..2 {
        let (_, text) = exchange(&lean, server.addr).await.unwrap();
        assert_eq!(text, r#"{"ok":true}"#, "call {call}");
        assert_eq!(lean.idle_connections(), 0, "after call {call}");
    }
    assert_eq!(server.accepted(), 2);

    // Bytes after the announced length, an HTTP/1.0 answer, `Connection: close`: each
    // answer is read, and its connection is not used again.
    for answer in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"ok\":true}EXTRA"[..],
        b"HTTP/1.0 200 OK\r\ncontent-length: 11\r\n\r\n{\"ok\":true}",
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\ncontent-length: 11\r\n\r\n{\"ok\":true}",
    ] {
        let server = Scripted::start(answer, false).await;
        let lean = client();
        for call in 0..2 {
            let (_, text) = exchange(&lean, server.addr).await.unwrap();
            assert_eq!(text, r#"{"ok":true}"#, "call {call} on {answer:?}");
        }
        assert_eq!(lean.idle_connections(), 0, "{answer:?}");
        assert_eq!(server.accepted(), 2, "{answer:?}");
    }

    // An empty answer (`204`) needs no reading: its connection is back at once.
    let server = Scripted::start(b"HTTP/1.1 204 No Content\r\n\r\n", false).await;
    let lean = client();
    let response = guard(lean.send(post(server.addr))).await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(lean.idle_connections(), 1);
    drop(response);
    exchange(&lean, server.addr).await.unwrap();
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn broken_answers_are_classified_errors() {
    let cases: [(&'static [u8], LlmErrorKind); 7] = [
        // Not HTTP.
        (b"SPDY/9 200 OK\r\n\r\n", LlmErrorKind::MalformedResponse),
        // Two lengths that disagree.
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
            LlmErrorKind::MalformedResponse,
        ),
        // A protocol switch nobody asked for.
        (
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
            LlmErrorKind::MalformedResponse,
        ),
        // A chunk longer than its size says.
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            LlmErrorKind::MalformedResponse,
        ),
        // Cut in the middle of the body (length), and of the chunks.
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this",
            LlmErrorKind::StreamInterrupted,
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n",
            LlmErrorKind::StreamInterrupted,
        ),
        // Closed before a word of the answer.
        (b"", LlmErrorKind::Connect),
    ];
    for (answer, kind) in cases {
        let server = Scripted::start(answer, true).await;
        let lean = client();
        let err = exchange(&lean, server.addr).await.unwrap_err();
        assert_eq!(
            err.kind(),
            kind,
            "{:?}: {err}",
            String::from_utf8_lossy(answer)
        );
        assert!(
            !err.to_string().contains(&server.addr.port().to_string()),
            "no address in {err}"
        );
        assert_eq!(lean.idle_connections(), 0);
    }
}

#[tokio::test]
async fn a_request_with_a_transfer_encoding_of_its_own_is_refused_before_it_goes_out() {
    let server = Scripted::start(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", false).await;
    let lean = client();
    // A connection in the pool first: refusing the request must not cost it.
    exchange(&lean, server.addr).await.unwrap();
    assert_eq!(lean.idle_connections(), 1);
    let mut request = post(server.addr);
    request.headers_mut().insert(
        http::header::TRANSFER_ENCODING,
        http::HeaderValue::from_static("chunked"),
    );
    let err = guard(lean.send(request)).await.unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::BadRequest, "{err}");
    assert_eq!(lean.idle_connections(), 1, "the pooled connection is kept");
    assert_eq!(server.heads.lock().len(), 1, "nothing more went out");
}
