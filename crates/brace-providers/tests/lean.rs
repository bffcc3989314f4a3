//! The lean HTTP client (its own pool of connections) against reqwest, over real loopback sockets:
//! which one a provider gets, that both give the same answers and the same errors, and that
//! the lean one keeps one connection pool per runtime and reuses its connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use brace_llm::{ChatRequest, ChatResponse, LlmError, LlmErrorKind, Message, ResponseBody};
use brace_providers::lean::LeanClient;
use brace_providers::openai::{OpenAiClient, OpenAiConfig};
use brace_providers::{ClientConfig, ClientOptions, HttpClient, Transport};
use brace_sim::{Behavior, Reply, SimConfig, SimHandle, SimServer, StreamFault};
use futures::StreamExt;
use tower::ServiceExt;

mod raw_http;

async fn sim(behavior: Behavior) -> SimServer {
    SimServer::start(SimHandle::new(
        SimConfig::new("sim-lean")
            .with_model("sim-model")
            .with_behavior(behavior),
    ))
    .await
    .unwrap()
}

fn config(base_url: String, http_client: HttpClient) -> OpenAiConfig {
    OpenAiConfig::compatible("sim-openai", base_url).map_client(|c| {
        c.with_timeout(Duration::from_secs(30))
            .with_http_client(http_client)
    })
}

fn client(server: &SimServer, http_client: HttpClient) -> OpenAiClient {
    OpenAiClient::new(config(format!("{}/v1", server.base_url()), http_client)).unwrap()
}

fn request(stream: bool) -> ChatRequest {
    ChatRequest::new("gpt-4o", vec![Message::user("hello sim")]).with_stream(stream)
}

/// Bounds a wait (nothing here should come near it; it only turns a hang into a failure).
async fn guard<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("the client hung")
}

/// The whole text of an answer, or the error that ended it.
async fn text(response: Result<ChatResponse, LlmError>) -> Result<String, LlmError> {
    let response = response?;
    match response.body {
        ResponseBody::Complete(completion) => Ok(completion.text()),
        ResponseBody::Stream(mut chunks) => {
            let mut text = String::new();
            while let Some(chunk) = chunks.next().await {
                for choice in chunk?.into_inner().choices {
                    text.push_str(choice.delta.content.as_deref().unwrap_or_default());
                }
            }
            Ok(text)
        }
    }
}

const BOTH: [HttpClient; 2] = [HttpClient::Lean, HttpClient::Reqwest];

#[test]
fn auto_takes_the_lean_client_for_plain_http_and_reqwest_for_https() {
    let transport = |url: &str, choice: HttpClient| {
        Transport::new(&ClientConfig::new("p", url).with_http_client(choice))
            .unwrap()
            .is_lean()
    };
    // (A proxy variable in the environment would make `auto` take reqwest; none is set
    // where the tests run.)
    assert!(transport("http://127.0.0.1:8080/v1", HttpClient::Auto));
    assert!(!transport("https://api.openai.com/v1", HttpClient::Auto));
    assert!(!transport("http://127.0.0.1:8080/v1", HttpClient::Reqwest));
    assert!(transport("http://127.0.0.1:8080/v1", HttpClient::Lean));
    let yaml: ClientConfig = serde_json::from_str(
        r#"{"name": "p", "base_url": "http://h/v1", "http_client": "reqwest"}"#,
    )
    .unwrap();
    assert_eq!(yaml.http_client, HttpClient::Reqwest);
}

#[tokio::test]
async fn both_clients_give_the_same_answers() {
    let server = sim(Behavior::reply(Reply::new().with_text("one two three"))).await;
    for choice in BOTH {
        let client = client(&server, choice);
        for stream in [false, true] {
            let answer = text(guard(client.clone().oneshot(request(stream))).await).await;
            assert_eq!(
                answer.unwrap(),
                "one two three",
                "{choice:?}, stream {stream}"
            );
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn both_clients_give_the_same_errors() {
    let cases = [
        (
            Behavior::fail(LlmErrorKind::Overloaded),
            false,
            LlmErrorKind::Overloaded,
        ),
        (
            Behavior::fail(LlmErrorKind::RateLimited),
            false,
            LlmErrorKind::RateLimited,
        ),
        (
            Behavior::drop_connection(20),
            false,
            LlmErrorKind::StreamInterrupted,
        ),
        (
            Behavior::reply(
                Reply::new()
                    .with_text("a b c d e f")
                    .with_fault(StreamFault::Break { after: 3 }),
            ),
            true,
            LlmErrorKind::StreamInterrupted,
        ),
    ];
    for (behavior, stream, kind) in cases {
        let server = sim(behavior.clone()).await;
        for choice in BOTH {
            let client = client(&server, choice);
            let err = text(guard(client.oneshot(request(stream))).await)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), kind, "{choice:?} on {behavior:?}: {err}");
            assert_eq!(err.provider(), Some("sim-openai"));
        }
        server.shutdown().await;
    }
    // Nothing listening.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    for choice in BOTH {
        let client = OpenAiClient::new(config(format!("http://{addr}/v1"), choice)).unwrap();
        let err = guard(client.oneshot(request(false))).await.unwrap_err();
        assert_eq!(err.kind(), LlmErrorKind::Connect, "{choice:?}: {err}");
        assert!(
            !err.to_string().contains(&addr.port().to_string()),
            "no URL in {err}"
        );
    }
}

#[test]
fn the_lean_client_keeps_one_pool_per_runtime() {
    let server_rt = tokio::runtime::Runtime::new().unwrap();
    let server = server_rt.block_on(sim(Behavior::default()));
    let base_url = format!("{}/v1", server.base_url());
    let lean = LeanClient::new(ClientOptions::new(Duration::from_secs(5)));
    let provider = |lean: &LeanClient| -> OpenAiClient {
        let config = config(base_url.clone(), HttpClient::Lean);
        let transport = Transport::with_lean_client(&config.client, lean.clone());
        OpenAiClient::with_transport(config, transport).unwrap()
    };
    let call = |client: OpenAiClient| async move {
        text(guard(client.oneshot(request(false))).await)
            .await
            .unwrap()
    };
    // Two current-thread runtimes (one per core, as the gateway's per-core mode runs them),
    // side by side: a pool each.
    let runtimes: Vec<_> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let client = provider(&lean);
                scope.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(call(client));
                    rt
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(lean.pools(), 2);
    // Every worker of a multi-threaded runtime shares that runtime's one pool.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let calls: Vec<_> = (0..8)
            .map(|_| tokio::spawn(call(provider(&lean))))
            .collect();
        for answered in futures::future::join_all(calls).await {
            answered.unwrap();
        }
    });
    assert_eq!(lean.pools(), 3);
    // A runtime's pool goes with it: a process that starts runtime after runtime keeps none
    // of the dead ones' pools.
    drop(runtimes);
    assert_eq!(lean.pools(), 1);
    drop(rt);
    assert_eq!(lean.pools(), 0);
    for _ in 0..3 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(call(provider(&lean)));
        assert_eq!(lean.pools(), 1);
    }
    assert_eq!(lean.pools(), 0);
    server_rt.block_on(server.shutdown());
}

#[test]
fn a_request_made_while_its_runtime_shuts_down_neither_hangs_nor_leaves_a_pool() {
    // A task whose drop sends a request: its runtime, shutting down, drops it, so the pool
    // is made on a runtime that takes no more tasks (the pool's sweep task is dropped as it
    // is spawned). That must not hang the shutdown, and the dead runtime keeps no pool.
    struct SendsOnDrop(LeanClient);
    impl Drop for SendsOnDrop {
        fn drop(&mut self) {
            drop(self.0.send(post(SocketAddr::from(([127, 0, 0, 1], 9)))));
        }
    }
    let lean = LeanClient::new(ClientOptions::new(Duration::from_secs(5)));
    let (done, finished) = std::sync::mpsc::channel();
    let client = lean.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let sends = SendsOnDrop(client);
            tokio::spawn(async move {
                let _sends = sends;
                std::future::pending::<()>().await;
            });
            tokio::task::yield_now().await;
        });
        drop(rt);
        done.send(()).unwrap();
    });
    // A bound on the test, so that a hang fails it (not a timing threshold).
    finished
        .recv_timeout(Duration::from_secs(30))
        .expect("the runtime's shutdown hung");
    assert_eq!(lean.pools(), 0);
}

/// A TCP forwarder in front of `upstream` that counts the connections it accepts: how many
/// connections a client opened to reach the server.
async fn counting_proxy(upstream: SocketAddr) -> raw_http::Counted {
    raw_http::Counted::start(move |mut inbound| async move {
        let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
            return;
        };
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
    })
    .await
}

/// The sim server's socket address, from its base URL (`http://127.0.0.1:port`).
fn sim_addr(server: &SimServer) -> SocketAddr {
    server
        .base_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// A provider on a lean client of its own (no pool shared with other tests) reaching `addr`.
fn lean_provider(addr: SocketAddr, http2_prior_knowledge: bool) -> OpenAiClient {
    let config = config(format!("http://{addr}/v1"), HttpClient::Lean)
        .map_client(|c| c.with_http2_prior_knowledge(http2_prior_knowledge));
    let lean = LeanClient::new(
        ClientOptions::new(Duration::from_secs(5))
            .with_http2_prior_knowledge(http2_prior_knowledge),
    );
    let transport = Transport::with_lean_client(&config.client, lean);
    OpenAiClient::with_transport(config, transport).unwrap()
}

#[tokio::test]
async fn the_lean_client_reuses_its_connections() {
    let server = sim(Behavior::reply(Reply::new().with_text("one two three"))).await;
    let upstream = sim_addr(&server);

    // HTTP/1.1: one call after another, streamed or not, all on the first connection (each
    // body read to its end returns the connection to the pool).
    let proxy = counting_proxy(upstream).await;
    let client = lean_provider(proxy.addr, false);
    for round in 0..6 {
        let answer = text(guard(client.clone().oneshot(request(round % 2 == 1))).await).await;
        assert_eq!(answer.unwrap(), "one two three", "call {round}");
    }
    assert_eq!(proxy.accepted(), 1, "sequential HTTP/1.1 calls");

    // HTTP/1.1, four at once: a connection each; then calls one after another reuse those.
    let calls = (0..4).map(|_| {
        let client = client.clone();
        async move { text(client.oneshot(request(true)).await).await }
    });
    for answer in guard(futures::future::join_all(calls)).await {
        assert_eq!(answer.unwrap(), "one two three");
    }
    let after_burst = proxy.accepted();
    assert!(
        (1..=4).contains(&after_burst),
        "{after_burst} connections for 4 concurrent calls"
    );
    for _ in 0..4 {
        text(guard(client.clone().oneshot(request(false))).await)
            .await
            .unwrap();
    }
    assert_eq!(proxy.accepted(), after_burst, "calls after the burst");

    // HTTP/2 with prior knowledge: ten calls at once share one connection.
    let proxy = counting_proxy(upstream).await;
    let client = lean_provider(proxy.addr, true);
    let calls = (0..10).map(|_| {
        let client = client.clone();
        async move { text(client.oneshot(request(true)).await).await }
    });
    for answer in guard(futures::future::join_all(calls)).await {
        assert_eq!(answer.unwrap(), "one two three");
    }
    assert_eq!(proxy.accepted(), 1, "concurrent HTTP/2 calls");
    assert_eq!(
        server.handle().stats().http_versions.get("HTTP/2.0"),
        Some(&10)
    );
    server.shutdown().await;
}

/// How [`RawServer`] ends its exchanges.
#[derive(Clone, Copy, PartialEq)]
enum Closing {
    /// Keeps each connection open for the next request.
    KeepAlive,
    /// Answers with `Connection: close` and closes.
    Announced,
    /// Answers as if it kept the connection, then closes it when told to
    /// ([`RawServer::close_idle`]).
    Silent,
}

/// A minimal HTTP/1.1 server on loopback that answers every request with a small JSON body
/// and ends each exchange as `closing` says; counts connections.
struct RawServer {
    server: raw_http::Counted,
    addr: SocketAddr,
    close: Arc<tokio::sync::Notify>,
}

impl RawServer {
    async fn start(closing: Closing) -> Self {
        use tokio::io::AsyncWriteExt;

        let close = Arc::new(tokio::sync::Notify::new());
        let told = close.clone();
        let server = raw_http::Counted::start(move |mut socket| {
            let told = told.clone();
            async move {
                let mut buffer = Vec::new();
                while raw_http::next_request(&mut socket, &mut buffer)
                    .await
                    .is_some()
                {
                    let body = br#"{"ok":true}"#;
                    let connection = if closing == Closing::Announced {
                        "close"
                    } else {
                        "keep-alive"
                    };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: {connection}\r\n\r\n",
                        body.len()
                    );
                    if socket.write_all(answer.as_bytes()).await.is_err()
                        || socket.write_all(body).await.is_err()
                    {
                        return;
                    }
                    match closing {
                        Closing::KeepAlive => {}
                        Closing::Announced => return,
                        Closing::Silent => return told.notified().await,
                    }
                }
            }
        })
        .await;
        Self {
            addr: server.addr,
            server,
            close,
        }
    }

    fn accepted(&self) -> usize {
        self.server.accepted()
    }

    /// Closes the connection that answered last ([`Closing::Silent`]).
    fn close_idle(&self) {
        self.close.notify_one();
    }
}

fn post(addr: SocketAddr) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"model":"sim-model","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap()
}

/// Sends `post(addr)` on `lean` and reads the answer's body to its end.
async fn exchange(lean: &LeanClient, addr: SocketAddr) -> Result<String, LlmError> {
    use http_body_util::BodyExt;

    let response = guard(lean.send(post(addr))).await?;
    assert_eq!(response.status(), 200);
    let body = guard(response.into_body().collect()).await.unwrap();
    Ok(String::from_utf8(body.to_bytes().to_vec()).unwrap())
}

/// Asserts that call number `call` to the [`RawServer`] at `addr` gets its answer whole.
async fn answered(lean: &LeanClient, addr: SocketAddr, call: usize) {
    assert_eq!(
        exchange(lean, addr).await.unwrap(),
        r#"{"ok":true}"#,
        "call {call}"
    );
}

#[tokio::test]
async fn a_connection_the_server_closes_is_not_reused() {
    // Each answer says `Connection: close`: every call needs a connection of its own, and
    // none fails for having been sent on the closed one.
    let server = RawServer::start(Closing::Announced).await;
    let lean = LeanClient::new(ClientOptions::new(Duration::from_secs(5)));
    for call in 0..4 {
        answered(&lean, server.addr, call).await;
    }
    assert_eq!(server.accepted(), 4);
    assert_eq!(lean.idle_connections(), 0);

    // Closed without a word, after the connection went back to the pool: once its close
    // has been seen, the next call does not take it.
    let server = RawServer::start(Closing::Silent).await;
    for call in 0..4 {
        answered(&lean, server.addr, call).await;
        assert_eq!(lean.idle_connections(), 1, "after call {call}");
        server.close_idle();
        guard(async {
            while lean.idle_connections() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }
    assert_eq!(server.accepted(), 4);

    // Kept alive: one connection for all, waiting in the pool between calls.
    let server = RawServer::start(Closing::KeepAlive).await;
    for call in 0..4 {
        answered(&lean, server.addr, call).await;
        assert_eq!(lean.idle_connections(), 1, "after call {call}");
    }
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn a_body_dropped_before_its_end_closes_its_connection() {
    use http_body_util::BodyExt;

    let server = sim(Behavior::reply(
        Reply::new().with_text("one two three four five six"),
    ))
    .await;
    let proxy = counting_proxy(sim_addr(&server)).await;
    let lean = LeanClient::new(ClientOptions::new(Duration::from_secs(5)));
    let streamed = http::Request::post(format!("http://{}/v1/chat/completions", proxy.addr))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"model":"sim-model","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    let mut response = guard(lean.send(streamed)).await.unwrap();
    assert_eq!(response.status(), 200);
    // One piece of the stream, then the caller gives up on it.
    let first = guard(response.body_mut().frame()).await.unwrap().unwrap();
    assert!(first.is_data());
    drop(response);
    assert_eq!(
        lean.idle_connections(),
        0,
        "a half-read connection is not kept"
    );

    // The next call opens a connection of its own and is answered whole.
    let answer = exchange(&lean, proxy.addr).await.unwrap();
    assert!(answer.contains("one two three four five six"), "{answer}");
    assert_eq!(proxy.accepted(), 2);
    assert_eq!(lean.idle_connections(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    // Requests go out on the real clock; only the idle waits are skipped over (a paused
    // clock's auto-advance could otherwise jump past a request's own timers).
    for http2 in [false, true] {
        let server = sim(Behavior::default()).await;
        let addr = sim_addr(&server);
        let lean = LeanClient::new(
            ClientOptions::new(Duration::from_secs(5)).with_http2_prior_knowledge(http2),
        );
        let call = || async {
            exchange(&lean, addr).await.unwrap();
        };
        let idle_for = |seconds: u64| async move {
            tokio::time::pause();
            tokio::time::advance(Duration::from_secs(seconds)).await;
            // The pool's sweep runs on this runtime: let it.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            tokio::time::resume();
        };
        call().await;
        assert_eq!(lean.idle_connections(), 1, "http2: {http2}");

        // Idle for less than 90 s, then used again: kept.
        idle_for(60).await;
        assert_eq!(lean.idle_connections(), 1, "http2: {http2}");
        call().await;
        idle_for(60).await;
        assert_eq!(lean.idle_connections(), 1, "http2: {http2}");

        // Idle for longer than 90 s since its last use: closed by the pool's sweep.
        idle_for(40).await;
        assert_eq!(lean.idle_connections(), 0, "http2: {http2}");
        assert_eq!(server.handle().stats().calls, 2, "http2: {http2}");
        server.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn requests_waiting_for_an_http2_connection_share_its_failure() {
    // A listener that never accepts, its backlog full: a connection to it is never
    // established, so each attempt ends at the connect timeout (the clock is paused: the
    // timeouts pass without waiting).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut backlog = Vec::new();
    for _ in 0..8 {
        let attempt = tokio::net::TcpStream::connect(addr);
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_millis(100), attempt).await {
            backlog.push(stream);
        }
    }
    let connect_timeout = Duration::from_secs(1);
    let lean =
        LeanClient::new(ClientOptions::new(connect_timeout).with_http2_prior_knowledge(true));
    let started = tokio::time::Instant::now();
    let calls = (0..8).map(|_| async {
        let failed = lean.send(post(addr)).await.unwrap_err();
        (failed.kind(), started.elapsed())
    });
    for (kind, after) in futures::future::join_all(calls).await {
        assert_eq!(kind, LlmErrorKind::Timeout);
        // One connect timeout for all of them, not one per request ahead in the queue.
        assert!(after < 2 * connect_timeout, "failed after {after:?}");
    }
    drop((listener, backlog));
}
