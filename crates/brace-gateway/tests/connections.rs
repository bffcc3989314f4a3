//! No connection held forever, and overload shed rather than queued: `serve` on a real
//! socket (127.0.0.1), with paused time where the limit is a timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use brace_gateway::{Gateway, GatewayConfig};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn config(server: &str) -> String {
    format!(
        "providers:\n  - name: primary\n    kind: simulated\n    model: sim-model\n\
         degradation:\n  auto:\n    enabled: false\nserver:\n{server}"
    )
}

struct Served {
    addr: std::net::SocketAddr,
    gateway: Arc<Gateway>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(yaml: &str) -> Served {
    brace_providers::provider::install_crypto_provider();
    let gateway = Gateway::build(GatewayConfig::from_yaml(yaml).unwrap()).unwrap();
    let (listener, addr) = brace_gateway::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(brace_gateway::serve(
        gateway.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    Served {
        addr,
        gateway,
        _stop: stop,
    }
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    let served = serve(&config("  header_timeout: 5s\n")).await;
    let mut client = TcpStream::connect(served.addr).await.unwrap();
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), read_to_close(&mut client)).await;
    assert_eq!(closed.expect("closed within the bound"), b"");
    assert!(started.elapsed() >= Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_partial_http2_preface_is_closed_at_the_header_timeout() {
    let served = serve(&config("  header_timeout: 5s\n  idle_timeout: 1h\n")).await;
    let mut client = TcpStream::connect(served.addr).await.unwrap();
    client.write_all(&PREFACE[..16]).await.unwrap();
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), read_to_close(&mut client))
        .await
        .expect("closed within the bound");
    assert!(closed.is_empty(), "{closed:?}");
    assert!(started.elapsed() >= Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_connection_is_busy_while_its_answer_streams_and_closed_an_idle_timeout_after() {
    // Four chunks 7 s apart: the answer streams for longer than the idle timeout.
    let yaml = "providers:\n  - name: primary\n    kind: simulated\n    model: sim-model\n    \
                simulate:\n      type: succeed\n      chunks: 4\n      chunk_delay: 7s\n\
                degradation:\n  auto:\n    enabled: false\n\
                server:\n  idle_timeout: 10s\n  send_timeout: 1h\n";
    let served = serve(yaml).await;
    let stream = TcpStream::connect(served.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .unwrap();
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = connection.await;
        let _ = ended_tx.send(Instant::now());
    });
    let started = Instant::now();
    let body = r#"{"model":"sim-model","stream":true,"messages":[{"role":"user","content":"Hello there"}]}"#;
    let response = sender
        .send_request(
            http::Request::post("http://gateway/v1/chat/completions")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = response.into_body().collect().await.unwrap().to_bytes();
    let streamed_for = started.elapsed();
    assert!(
        events.ends_with(b"data: [DONE]\n\n"),
        "the whole answer arrived: {events:?}"
    );
    assert!(streamed_for > Duration::from_secs(10), "{streamed_for:?}");
    let idle_since = Instant::now();

    let ended_at = tokio::time::timeout(Duration::from_mins(1), ended)
        .await
        .expect("closed within the bound")
        .unwrap();
    let idle_for = ended_at - idle_since;
    assert!(
        idle_for >= Duration::from_secs(10) && idle_for < Duration::from_secs(11),
        "{idle_for:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_http2_connection_is_closed_at_the_idle_timeout() {
    let served = serve(&config(
        "  idle_timeout: 10s\n  http2_keep_alive_interval: 1h\n",
    ))
    .await;
    let stream = TcpStream::connect(served.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .unwrap();
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let result = connection.await;
        let _ = ended_tx.send((Instant::now(), result.is_ok()));
    });
    let response = sender
        .send_request(
            http::Request::get("http://gateway/v1/health")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    let idle_since = Instant::now();

    let (ended_at, clean) = tokio::time::timeout(Duration::from_secs(30), ended)
        .await
        .expect("closed within the bound")
        .unwrap();
    assert!(clean, "closed with a GOAWAY, not reset");
    assert!(ended_at - idle_since >= Duration::from_secs(10));
    assert!(sender.is_closed());
}

#[tokio::test(start_paused = true)]
async fn an_http2_connection_that_ignores_pings_is_closed_after_the_keep_alive_timeout() {
    let served = serve(&config(
        "  idle_timeout: 1h\n  http2_keep_alive_interval: 5s\n  http2_keep_alive_timeout: 5s\n",
    ))
    .await;
    let mut client = TcpStream::connect(served.addr).await.unwrap();
    // The preface and an empty SETTINGS frame; then nothing, not even a PING's answer.
    client.write_all(PREFACE).await.unwrap();
    client
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let started = Instant::now();
    let frames = tokio::time::timeout(Duration::from_mins(1), read_to_close(&mut client))
        .await
        .expect("closed within the bound");
    assert!(started.elapsed() >= Duration::from_secs(10));
    // A PING frame (type 6) was sent before the connection was given up.
    assert!(frames.windows(4).any(|w| w[..3] == [0, 0, 8] && w[3] == 6));
}

#[tokio::test(start_paused = true)]
async fn a_stalled_request_body_is_answered_408_and_its_connection_closed() {
    let served = serve(&config("  body_timeout: 5s\n")).await;
    let mut client = TcpStream::connect(served.addr).await.unwrap();
    client
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n\
              content-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"model\":",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(20), read_to_close(&mut client))
        .await
        .expect("answered and closed within the bound");
    assert!(started.elapsed() >= Duration::from_secs(5));
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body: serde_json::Value =
        serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["error"]["code"], "request_timeout");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stalled")
    );
}

#[tokio::test(start_paused = true)]
async fn a_trickling_body_is_cut_at_the_request_timeout() {
    let served = serve(&config("  body_timeout: 5s\n  request_timeout: 20s\n")).await;
    let mut client = TcpStream::connect(served.addr).await.unwrap();
    client
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n\
              content-type: application/json\r\ncontent-length: 1000\r\n\r\n",
        )
        .await
        .unwrap();
    let started = Instant::now();
    // One byte every 4 s: never a 5 s gap, but never done either.
    let reading = tokio::spawn(async move {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            tokio::select! {
                read = client.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return answer,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                },
                () = tokio::time::sleep(Duration::from_secs(4)) => {
                    let _ = client.write_all(b" ").await;
                }
            }
        }
    });
    let answer = tokio::time::timeout(Duration::from_mins(1), reading)
        .await
        .expect("answered within the bound")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("in full within"), "{answer}");
    assert!(started.elapsed() >= Duration::from_secs(20));
}

/// An HTTP/1.1 connection to `addr` and a `GET path` on it.
async fn http1(addr: std::net::SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
) -> (http::StatusCode, http::HeaderMap, String) {
    let response = sender
        .send_request(
            http::Request::get(format!("http://gateway{path}"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn connections_beyond_max_connections_get_503_with_retry_after_while_open_ones_answer() {
    let served = serve(&config("  max_connections: 2\n")).await;
    let mut first = http1(served.addr).await;
    let mut second = http1(served.addr).await;
    // Both are accepted and served (so both hold their place).
    assert_eq!(get(&mut first, "/v1/health").await.0, 200);
    assert_eq!(get(&mut second, "/v1/health").await.0, 200);

    let mut third = TcpStream::connect(served.addr).await.unwrap();
    third
        .write_all(b"GET /v1/health HTTP/1.1\r\nhost: gateway\r\n\r\n")
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(30), read_to_close(&mut third))
        .await
        .expect("refused and closed");
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1\r\n"), "{answer}");
    assert!(answer.contains("\"code\":\"overloaded\""), "{answer}");

    // The open connections keep answering, and the refusal is counted.
    let (status, _, metrics) = get(&mut first, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("brace_connections_refused_total"),
        "{metrics}"
    );
    assert_eq!(get(&mut second, "/v1/health").await.0, 200);

    // A place frees when a connection closes.
    drop(first);
    let mut fourth = loop {
        let mut sender = http1(served.addr).await;
        let response = sender
            .send_request(
                http::Request::get("http://gateway/v1/health")
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
        if response.is_ok_and(|response| response.status() == 200) {
            break sender;
        }
        // The server learns of the close when it reads the end of the first connection.
        tokio::task::yield_now().await;
    };
    assert_eq!(get(&mut fourth, "/v1/health").await.0, 200);
    drop(served.gateway);
}

#[tokio::test]
async fn requests_beyond_max_in_flight_are_shed_with_retry_after_while_health_answers() {
    // Streams send their first token, then wait an hour before the next.
    let yaml = "providers:\n  - name: primary\n    kind: simulated\n    model: sim-model\n    \
                simulate:\n      type: succeed\n      chunks: 3\n      chunk_delay: 1h\n\
                degradation:\n  auto:\n    enabled: false\nserver:\n  max_in_flight: 1\n";
    let served = serve(yaml).await;
    let url = format!("http://{}", served.addr);
    let client = reqwest::Client::new();
    let chat = |stream: bool| {
        client
            .post(format!("{url}/v1/chat/completions"))
            .json(&serde_json::json!({
                "model": "sim-model",
                "stream": stream,
                "messages": [{"role": "user", "content": "Hello there"}],
            }))
            .send()
    };
    // The first request streams its first token, then stalls: it is in flight.
    let streaming = chat(true).await.unwrap();
    assert_eq!(streaming.status(), 200);

    let shed = chat(false).await.unwrap();
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "1");
    let body: serde_json::Value = shed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("server.max_in_flight")
    );

    // Health, metrics and the admin endpoints are outside the bound.
    let health = client.get(format!("{url}/v1/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let level = client
        .get(format!("{url}/v1/degradation/level"))
        .send()
        .await
        .unwrap();
    assert_eq!(level.status(), 200);
    let metrics = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("brace_shed_total{scope=\"gateway\"}"),
        "{metrics}"
    );
    drop(streaming);
}

/// An upstream speaking OpenAI's streaming wire that sends `chunks` events of 8 KiB of
/// content each as fast as it is read; resolves to when the gateway hung up on it, or
/// `None` if it wrote them all.
async fn flooding_upstream(chunks: usize) -> (String, tokio::task::JoinHandle<Option<Instant>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let wrote_all = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        // The request head and body (small) arrive in the first reads.
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.ends_with(b"}") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Some(Instant::now()),
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
        if stream.write_all(head.as_bytes()).await.is_err() {
            return Some(Instant::now());
        }
        let content = "x".repeat(8 * 1024);
        for _ in 0..chunks {
            let event = format!(
                "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\
                 \"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}},\
                 \"finish_reason\":null}}]}}\n\n"
            );
            if stream.write_all(event.as_bytes()).await.is_err() {
                return Some(Instant::now());
            }
        }
        let end = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\
                   \"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
                   data: [DONE]\n\n";
        match stream.write_all(end.as_bytes()).await {
            Ok(()) => None,
            Err(_) => Some(Instant::now()),
        }
    });
    (format!("http://{addr}/v1"), wrote_all)
}

/// A gateway over the flooding upstream at `base_url`, with a 10 s send timeout and
/// `more_server` (YAML lines of the `server` section).
fn flooded(base_url: &str, more_server: &str) -> String {
    format!(
        "providers:\n  - name: upstream\n    kind: openai-compatible\n    model: m\n    \
         api_key_env: ''\n    base_url: {base_url}\n    timeout: 1h\n\
         fallback:\n  max_retries: 0\n\
         degradation:\n  auto:\n    enabled: false\n\
         server:\n  send_timeout: 10s\n{more_server}"
    )
}

/// When the upstream was hung up on, `started` being when the client stopped reading: not
/// before the send timeout (10 s), and within a quarter of it after (the sweeps' period).
fn assert_hung_up_at_the_send_timeout(hung_up: Instant, started: Instant) {
    let after = hung_up - started;
    assert!(
        after >= Duration::from_secs(10) && after <= Duration::from_secs(13),
        "{after:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_cut_off_at_the_send_timeout_with_its_upstream_stream() {
    // 4 096 events of 8 KiB: 32 MiB, more than every socket buffer between the upstream and
    // a client that reads nothing can hold.
    let (base_url, wrote_all) = flooding_upstream(4096).await;
    let served = serve(&flooded(&base_url, "")).await;

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut client = socket.connect(served.addr).await.unwrap();
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    client
        .write_all(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();

    // The client reads nothing for a while: the buffers fill, the gateway's writes stall.
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;

    // What the client finds when it reads at last: a cut stream, then the close.
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
        assert!(received.len() < 64 * 1024 * 1024, "the stream never ended");
    }
    let received = String::from_utf8_lossy(&received);
    assert!(
        received.starts_with("HTTP/1.1 200"),
        "{}",
        &received[..200.min(received.len())]
    );
    assert!(
        !received.contains("[DONE]"),
        "a cut stream ended as if whole"
    );
    // The gateway gave up on the client and dropped the upstream stream it was reading,
    // once its writes had made no progress for the send timeout.
    let hung_up = wrote_all
        .await
        .unwrap()
        .expect("the upstream wrote its whole answer to a gateway whose client reads nothing");
    assert_hung_up_at_the_send_timeout(hung_up, started);
    drop(served.gateway);
}

#[tokio::test(start_paused = true)]
async fn an_http2_stream_whose_window_stays_shut_is_dropped_at_the_send_timeout_alone() {
    // The same 32 MiB stream, to an HTTP/2 client that answers pings (its connection looks
    // alive) but never reads the stream, so its flow-control window stays shut.
    let (base_url, wrote_all) = flooding_upstream(4096).await;
    let served = serve(&flooded(
        &base_url,
        "  idle_timeout: 1h\n  body_timeout: 1h\n  request_timeout: 1h\n",
    ))
    .await;
    let stream = TcpStream::connect(served.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(65_535)
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let stalled = sender
        .send_request(
            http::Request::post("http://gateway/v1/chat/completions")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(stalled.status(), 200);
    let started = Instant::now();

    // The gateway gives up on the stream and drops the upstream call it held.
    let hung_up = tokio::time::timeout(Duration::from_mins(5), wrote_all)
        .await
        .expect("the upstream call was dropped within the bound")
        .unwrap()
        .expect("the upstream wrote its whole answer");
    assert_hung_up_at_the_send_timeout(hung_up, started);

    // The connection itself goes on: another request on it is answered.
    let response = sender
        .send_request(
            http::Request::get("http://gateway/v1/health")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The stalled stream, read at last, ends cut: an error, never `[DONE]`.
    let mut body = stalled.into_body();
    let mut received = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => received.extend_from_slice(frame.data_ref().map_or(&[][..], |d| d)),
            Err(_) => break,
        }
        assert!(received.len() < 64 * 1024 * 1024, "the stream never ended");
    }
    assert!(!String::from_utf8_lossy(&received).contains("[DONE]"));
    drop(served.gateway);
}
