//! The gateway's HTTP/1.1 server on a real loopback socket, spoken to byte for byte: keep-alive
//! and pipelining, request bodies in both framings, `Expect: 100-continue`, HTTP/1.0, `HEAD`,
//! heads it refuses (each with a message saying why), and a client that leaves while its
//! request is answered.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use brace_gateway::{Gateway, GatewayConfig};

mod support;

const SIMULATED: &str = "providers:\n  - name: primary\n    kind: simulated\n    model: sim-model\n\
                         degradation:\n  auto:\n    enabled: false\n";

const CHAT: &str = r#"{"model":"sim-model","messages":[{"role":"user","content":"Hello there"}]}"#;
const STREAMED_CHAT: &str =
    r#"{"model":"sim-model","stream":true,"messages":[{"role":"user","content":"Hello there"}]}"#;

/// A bound on every wait in these tests (none of them waits for a timer of the server's).
const BOUND: Duration = Duration::from_secs(20);

/// Serves `yaml` on 127.0.0.1: the address, and what keeps it served (drop it to stop).
async fn serve(yaml: &str) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    brace_providers::provider::install_crypto_provider();
    let gateway = Gateway::build(GatewayConfig::from_yaml(yaml).unwrap()).unwrap();
    support::serve_on_loopback(gateway).await
}

/// One answer read off the wire.
#[derive(Debug)]
struct Answer {
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn status(&self) -> u16 {
        self.head[9..12].parse().unwrap()
    }

    /// A field's value (the first), by lower-case name.
    fn field(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (field, value) = line.split_once(':')?;
            field.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A client connection that reads answers as HTTP/1.1 frames them, keeping what it read
/// past one for the next.
struct Client {
    stream: TcpStream,
    read: Vec<u8>,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            read: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads more; false at the connection's end.
    async fn fill(&mut self) -> bool {
        let mut buf = [0u8; 8192];
        match tokio::time::timeout(BOUND, self.stream.read(&mut buf))
            .await
            .expect("the server answered within the bound")
        {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.read.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    async fn take_line(&mut self) -> Vec<u8> {
        loop {
            if let Some(at) = self.read.windows(2).position(|w| w == b"\r\n") {
                let line = self.read[..at].to_vec();
                self.read.drain(..at + 2);
                return line;
            }
            assert!(self.fill().await, "closed within a line: {:?}", self.read);
        }
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.read.len() < n {
            assert!(self.fill().await, "closed within a body");
        }
        self.read.drain(..n).collect()
    }

    /// The next answer; `head_only` for the answer to a HEAD request.
    async fn answer(&mut self, head_only: bool) -> Answer {
        let mut head = String::new();
        loop {
            let line = String::from_utf8(self.take_line().await).unwrap();
            if line.is_empty() {
                break;
            }
            head.push_str(&line);
            head.push_str("\r\n");
        }
        let mut answer = Answer {
            head,
            body: Vec::new(),
        };
        let status = answer.status();
        if head_only || status < 200 || status == 204 || status == 304 {
            return answer;
        }
        if answer.field("transfer-encoding") == Some("chunked") {
            loop {
                let line = String::from_utf8(self.take_line().await).unwrap();
                let size = usize::from_str_radix(line.split(';').next().unwrap(), 16).unwrap();
                if size == 0 {
                    while !self.take_line().await.is_empty() {}
                    return answer;
                }
                let data = self.take(size).await;
                answer.body.extend_from_slice(&data);
                assert_eq!(self.take(2).await, b"\r\n");
            }
        }
        if let Some(length) = answer.field("content-length") {
            answer.body = self.take(length.parse().unwrap()).await;
            return answer;
        }
        while self.fill().await {}
        answer.body = std::mem::take(&mut self.read);
        answer
    }

    /// Whether the server closes the connection (after nothing more than `self.read`).
    async fn closes(&mut self) -> bool {
        let before = self.read.len();
        while self.fill().await {}
        self.read.len() == before
    }
}

fn post(path: &str, body: &str, more: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n{more}\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn requests_on_one_connection_are_answered_in_turn_pipelined_or_not() {
    let (addr, _served) = serve(SIMULATED).await;
    let mut client = Client::connect(addr).await;
    client
        .send(post("/v1/chat/completions", CHAT, "").as_bytes())
        .await;
    let first = client.answer(false).await;
    assert_eq!(first.status(), 200, "{first:?}");
    assert_eq!(
        first.field("content-length").unwrap(),
        first.body.len().to_string()
    );
    assert!(first.field("date").is_some(), "{first:?}");
    assert_eq!(first.json()["object"], "chat.completion");

    // Three requests in one write: three answers, in order, on the same connection.
    let pipelined = format!(
        "GET /v1/health HTTP/1.1\r\nhost: gateway\r\n\r\n{}GET /v1/models HTTP/1.1\r\nhost: gateway\r\n\r\n",
        post("/v1/chat/completions", CHAT, ""),
    );
    client.send(pipelined.as_bytes()).await;
    let health = client.answer(false).await;
    let chat = client.answer(false).await;
    let models = client.answer(false).await;
    assert_eq!(health.status(), 200, "{health:?}");
    assert!(health.json().get("providers").is_some(), "{health:?}");
    assert_eq!(chat.json()["object"], "chat.completion", "{chat:?}");
    assert_eq!(models.json()["object"], "list", "{models:?}");
    assert!(client.read.is_empty());
}

#[tokio::test]
async fn a_streamed_answer_is_chunked_for_http_1_1_and_ended_by_the_close_for_http_1_0() {
    let (addr, _served) = serve(SIMULATED).await;
    let mut client = Client::connect(addr).await;
    client
        .send(post("/v1/chat/completions", STREAMED_CHAT, "").as_bytes())
        .await;
    let streamed = client.answer(false).await;
    assert_eq!(
        streamed.field("transfer-encoding"),
        Some("chunked"),
        "{streamed:?}"
    );
    assert!(streamed.body.ends_with(b"data: [DONE]\n\n"), "{streamed:?}");
    // Kept alive: a second request on it.
    client
        .send(b"GET /v1/health HTTP/1.1\r\nhost: gateway\r\n\r\n")
        .await;
    assert_eq!(client.answer(false).await.status(), 200);

    let mut old = Client::connect(addr).await;
    let request =
        post("/v1/chat/completions", STREAMED_CHAT, "").replacen("HTTP/1.1", "HTTP/1.0", 1);
    old.send(request.as_bytes()).await;
    let streamed = old.answer(false).await;
    assert_eq!(streamed.status(), 200);
    assert_eq!(streamed.field("transfer-encoding"), None, "{streamed:?}");
    assert_eq!(streamed.field("connection"), Some("close"), "{streamed:?}");
    assert!(streamed.body.ends_with(b"data: [DONE]\n\n"), "{streamed:?}");

    // HTTP/1.0 asking for keep-alive, with an answer of known length: kept.
    let mut kept = Client::connect(addr).await;
    for _ in 0..2 {
        kept.send(b"GET /v1/health HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
            .await;
        let answer = kept.answer(false).await;
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.field("connection"), Some("keep-alive"), "{answer:?}");
    }
}

#[tokio::test]
async fn request_bodies_in_chunks_and_after_100_continue_are_read() {
    let (addr, _served) = serve(SIMULATED).await;
    let mut client = Client::connect(addr).await;
    let (a, b) = CHAT.split_at(20);
    let chunked = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n{:x};note=first\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nx-trailer: t\r\n\r\n",
        a.len(),
        b.len(),
    );
    // In two writes, split inside a chunk-size line.
    let (one, two) = chunked.split_at(chunked.len() / 2 + 3);
    client.send(one.as_bytes()).await;
    client.send(two.as_bytes()).await;
    let answer = client.answer(false).await;
    assert_eq!(answer.status(), 200, "{answer:?}");
    assert_eq!(answer.json()["object"], "chat.completion");

    // Expect: 100-continue — the body is sent after the interim answer.
    let head = post("/v1/chat/completions", "", "expect: 100-continue\r\n").replace(
        "content-length: 0",
        &format!("content-length: {}", CHAT.len()),
    );
    client.send(head.as_bytes()).await;
    let interim = client.answer(false).await;
    assert_eq!(interim.head, "HTTP/1.1 100 Continue\r\n");
    client.send(CHAT.as_bytes()).await;
    let answer = client.answer(false).await;
    assert_eq!(answer.status(), 200, "{answer:?}");
    assert_eq!(answer.json()["object"], "chat.completion");
}

#[tokio::test]
async fn a_request_answered_without_its_body_is_not_asked_for_it() {
    let (addr, _served) = serve(SIMULATED).await;
    let mut client = Client::connect(addr).await;
    // The router answers 404 without reading the body: no `100 Continue` comes first, so
    // the client need not send it; the connection then closes.
    client
        .send(
            b"POST /nowhere HTTP/1.1\r\nhost: gateway\r\ncontent-length: 10\r\n\
              expect: 100-continue\r\n\r\n",
        )
        .await;
    let answer = client.answer(false).await;
    assert_eq!(answer.status(), 404, "{answer:?}");
    assert_eq!(answer.field("connection"), Some("close"), "{answer:?}");
    assert!(client.closes().await);
}

#[tokio::test]
async fn a_head_request_is_answered_with_the_length_and_no_body() {
    let (addr, _served) = serve(SIMULATED).await;
    let mut client = Client::connect(addr).await;
    client
        .send(b"HEAD /v1/health HTTP/1.1\r\nhost: gateway\r\n\r\n")
        .await;
    let head = client.answer(true).await;
    assert_eq!(head.status(), 200, "{head:?}");
    let declared: usize = head.field("content-length").unwrap().parse().unwrap();
    assert!(declared > 0);
    // No body bytes came: the next answer on the connection is read cleanly.
    client
        .send(b"GET /v1/health HTTP/1.1\r\nhost: gateway\r\n\r\n")
        .await;
    let get = client.answer(false).await;
    assert_eq!(get.status(), 200, "{get:?}");
}

#[tokio::test]
async fn a_request_whose_body_goes_unread_is_answered_and_its_connection_closed() {
    let (addr, _served) = serve(SIMULATED).await;
    let mut client = Client::connect(addr).await;
    // The router answers 404 without reading the body, so the connection cannot be reused.
    client
        .send(b"POST /nowhere HTTP/1.1\r\nhost: gateway\r\ncontent-length: 10\r\n\r\n")
        .await;
    let answer = client.answer(false).await;
    assert_eq!(answer.status(), 404, "{answer:?}");
    assert_eq!(answer.field("connection"), Some("close"), "{answer:?}");
    client.send(b"0123456789").await;
    assert!(client.closes().await);
}

#[tokio::test]
async fn a_broken_chunked_body_fails_the_request_and_closes_the_connection() {
    let (addr, _served) = serve(SIMULATED).await;
    let mut client = Client::connect(addr).await;
    client
        .send(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
              transfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        )
        .await;
    let answer = client.answer(false).await;
    assert_eq!(answer.status(), 400, "{answer:?}");
    assert!(
        String::from_utf8_lossy(&answer.body).contains("hexadecimal"),
        "{answer:?}"
    );
    assert_eq!(answer.field("connection"), Some("close"), "{answer:?}");
    assert!(client.closes().await);
}

#[tokio::test]
async fn heads_that_cannot_be_read_one_way_are_refused_with_what_is_wrong() {
    let (addr, _served) = serve(SIMULATED).await;
    let many_fields = "x-field: v\r\n".repeat(101);
    let cases = [
        ("GET / HTTP/1.1\r\nbad header\r\n\r\n".to_owned(), 400, "not valid HTTP/1.1"),
        ("\u{16}\u{3}\u{1}\u{2}\u{0}\u{1}".to_owned(), 400, "not valid HTTP/1.1"),
        (
            "POST /v1/chat/completions HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n"
                .to_owned(),
            400,
            "both Transfer-Encoding and Content-Length",
        ),
        (
            "POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\n"
                .to_owned(),
            400,
            "differ",
        ),
        (
            "POST /v1/chat/completions HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n".to_owned(),
            501,
            "chunked",
        ),
        (format!("GET / HTTP/1.1\r\n{many_fields}\r\n"), 431, "100 header fields"),
        (
            format!("GET / HTTP/1.1\r\ncookie: {}\r\n\r\n", "c".repeat(70 * 1024)),
            431,
            "64 KiB",
        ),
    ];
    for (request, status, says) in cases {
        let mut client = Client::connect(addr).await;
        client.send(request.as_bytes()).await;
        let answer = client.answer(false).await;
        assert_eq!(answer.status(), status, "{request:.80?}: {answer:?}");
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(says), "{request:.80?}: {message}");
        assert!(client.closes().await, "{request:.80?}");
    }
}

/// An upstream speaking OpenAI's wire that reads a request (then sends on `received`) and
/// answers with `answer` (if any) and nothing more; resolves when the gateway hangs up on
/// it.
async fn silent_upstream(
    answer: &'static str,
) -> (
    String,
    tokio::sync::oneshot::Receiver<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (received_tx, received) = tokio::sync::oneshot::channel();
    let hung_up = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.ends_with(b"}") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let _ = received_tx.send(());
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    });
    (format!("http://{addr}/v1"), received, hung_up)
}

fn over(base_url: &str) -> String {
    format!(
        "providers:\n  - name: upstream\n    kind: openai-compatible\n    model: m\n    \
         api_key_env: ''\n    base_url: {base_url}\n    timeout: 1h\n\
         fallback:\n  max_retries: 0\n\
         degradation:\n  auto:\n    enabled: false\n"
    )
}

#[tokio::test]
async fn a_client_that_leaves_before_its_answer_has_its_upstream_call_dropped() {
    let (base_url, received, hung_up) = silent_upstream("").await;
    let (addr, _served) = serve(&over(&base_url)).await;
    let mut client = Client::connect(addr).await;
    client
        .send(post("/v1/chat/completions", &CHAT.replace("sim-model", "m"), "").as_bytes())
        .await;
    // Gone once the request has reached the upstream.
    tokio::time::timeout(BOUND, received)
        .await
        .expect("the request reached the upstream")
        .unwrap();
    drop(client);
    tokio::time::timeout(BOUND, hung_up)
        .await
        .expect("the upstream call was dropped when the client left")
        .unwrap();
}

#[tokio::test]
async fn a_client_that_leaves_between_stream_events_has_its_upstream_stream_dropped() {
    let (base_url, _received, hung_up) = silent_upstream(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n\
         data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\
         \"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
    )
    .await;
    let (addr, _served) = serve(&over(&base_url)).await;
    let mut client = Client::connect(addr).await;
    client
        .send(
            post(
                "/v1/chat/completions",
                &STREAMED_CHAT.replace("sim-model", "m"),
                "",
            )
            .as_bytes(),
        )
        .await;
    // The head and the first event arrive; the stream then waits on the upstream.
    while !String::from_utf8_lossy(&client.read).contains("Hi") {
        assert!(client.fill().await);
    }
    drop(client);
    tokio::time::timeout(BOUND, hung_up)
        .await
        .expect("the upstream stream was dropped when the client left")
        .unwrap();
}
