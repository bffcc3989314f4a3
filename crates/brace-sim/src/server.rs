//! [`SimServer`]: the simulated provider served over HTTP on a loopback port.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode, Version, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::behavior::{Behavior, Failure, StreamFault, WireFormat};
use super::script::{Action, ReplyPlan, SimHandle, Step, ends_cleanly, timeline};
use super::wire;
use brace_llm::error::LlmErrorKind;

/// The simulated provider served over HTTP on a loopback port.
///
/// It speaks three wire formats, all driven by the same [`SimHandle`] script:
///
/// | route | format |
/// |---|---|
/// | `POST /v1/chat/completions` (also `/chat/completions`) | OpenAI: JSON, or SSE `data: {chunk}` … `data: [DONE]` when `"stream": true` |
/// | `POST /v1/messages` | Anthropic Messages: JSON, or its SSE event stream when `"stream": true` |
/// | `POST /v1beta/models/{model}:generateContent` | Gemini: JSON |
/// | `POST /v1beta/models/{model}:streamGenerateContent` | Gemini: SSE (as with `?alt=sse`) |
/// | `GET /v1/models` | OpenAI models list |
/// | `POST /_sim/behavior` | control: sets the [`Behavior`] (JSON body) |
/// | `GET /_sim/behavior` | control: the current behaviour |
/// | `GET /_sim/stats` | control: the [`SimStats`](super::SimStats) |
/// | `POST /_sim/reset` | control: [`SimHandle::reset`] |
///
/// Faults are real HTTP: error statuses with the provider's own error body and its
/// `Retry-After` (`retry-after-ms` too for OpenAI; Gemini's `RetryInfo` in the body), slow
/// answers, hangs (until the client gives up or the server shuts down), connections dropped
/// after the headers and part of the body, truncated or invalid JSON, streams broken after N
/// events without `[DONE]`, stalled streams, invalid events and in-band error events.
///
/// # HTTP versions
///
/// Each connection speaks HTTP/1.1 or cleartext HTTP/2 with prior knowledge (h2c: a client
/// that opens with the HTTP/2 preface), on the same port. An HTTP/2 connection carries up to
/// [`MAX_CONCURRENT_STREAMS`](Self::MAX_CONCURRENT_STREAMS) streams at once, so a load
/// bench's thousand slow streams from one client fit on one connection. The version each
/// call came over is counted in [`SimStats::http_versions`](super::SimStats::http_versions).
/// A fault that drops the connection over HTTP/1.1 resets only its stream over HTTP/2
/// (`RST_STREAM`), which a client sees as the same broken answer.
///
/// Shut down by [`shutdown`](Self::shutdown) or by dropping it.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use brace_sim::{Behavior, SimConfig, SimHandle, SimServer};
/// # let _ = rustls::crypto::ring::default_provider().install_default();
///
/// let server = SimServer::start(SimHandle::new(SimConfig::new("sim-http"))).await.unwrap();
/// let client = reqwest::Client::new();
/// let answer: serde_json::Value = client
///     .post(format!("{}/v1/chat/completions", server.base_url()))
///     .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
///     .send()
///     .await
///     .unwrap()
///     .json()
///     .await
///     .unwrap();
/// assert_eq!(answer["choices"][0]["message"]["content"], "simulated answer to: hi");
///
/// // Kill it at run time.
/// server.handle().set_behavior(Behavior::fail(brace_llm::LlmErrorKind::Overloaded));
/// let status = client
///     .post(format!("{}/v1/chat/completions", server.base_url()))
///     .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
///     .send()
///     .await
///     .unwrap()
///     .status();
/// assert_eq!(status, 503);
/// server.shutdown().await;
/// # }
/// ```
pub struct SimServer {
    addr: SocketAddr,
    handle: SimHandle,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for SimServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimServer")
            .field("addr", &self.addr)
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl SimServer {
    /// The most streams one HTTP/2 connection may have open at once
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`), 10 000: ten times the load bench's thousand
    /// concurrent streams. hyper's default, 200, would make a client that multiplexes a
    /// thousand streams over one connection hold the other 800 back until streams end.
    pub const MAX_CONCURRENT_STREAMS: u32 = 10_000;

    /// Serves `handle`'s script on `127.0.0.1` at a free port.
    ///
    /// # Errors
    ///
    /// If the port cannot be bound.
    pub async fn start(handle: SimHandle) -> io::Result<Self> {
        Self::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), handle).await
    }

    /// Serves `handle`'s script on `addr`, which must be a loopback address (port 0 picks a
    /// free port).
    ///
    /// # Errors
    ///
    /// If `addr` is not a loopback address, or cannot be bound.
    #[allow(
        clippy::unused_async,
        reason = "async in the public API, as tokio's bind; it no longer awaits"
    )]
    pub async fn bind(addr: SocketAddr, handle: SimHandle) -> io::Result<Self> {
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the simulated provider binds loopback addresses only, not {addr}"),
            ));
        }
        // A backlog of 1 024 (`bind`'s is 128): a gateway opening a thousand streams at once
        // would otherwise have some of its connections dropped and retried a second later.
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let app = app(AppState {
            handle: handle.clone(),
            shutdown: shutdown.clone(),
        });
        let task = tokio::spawn(serve(listener, app, shutdown.clone()));
        Ok(Self {
            addr,
            handle,
            shutdown,
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash, no `/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The handle on its script.
    pub fn handle(&self) -> &SimHandle {
        &self.handle
    }

    /// The routes alone, to mount in another axum app (hangs and stalls then last until the
    /// client gives up).
    pub fn router(handle: SimHandle) -> Router {
        app(AppState {
            handle,
            shutdown: CancellationToken::new(),
        })
    }

    /// Stops accepting, ends hanging and stalled answers (their connections are dropped),
    /// asks every connection to close once its requests are answered (HTTP/2: `GOAWAY`), and
    /// waits (at most a second) for open connections to close.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(1), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Accepts connections until `shutdown`, serving each (HTTP/1.1 or h2c) on its own task;
/// then asks them all to close gracefully and waits until they have.
async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(SimServer::MAX_CONCURRENT_STREAMS);
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    accept_error(&err, &shutdown).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::trace!(error = %err, "simulated provider connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// What to do after a failed accept: a connection that failed before it was accepted is
/// skipped; anything else (say, out of file descriptors) is logged and accepting pauses for a
/// second (or until shutdown), as axum's own accept loop does.
async fn accept_error(err: &io::Error, shutdown: &CancellationToken) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %err, "simulated provider: accept error");
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
        () = shutdown.cancelled() => {}
    }
}

#[derive(Clone)]
struct AppState {
    handle: SimHandle,
    shutdown: CancellationToken,
}

fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai))
        .route("/chat/completions", post(openai))
        .route("/v1/messages", post(anthropic))
        .route("/v1beta/models/{target}", post(gemini))
        .route("/v1/models", get(models))
        .route("/_sim/behavior", post(set_behavior).get(get_behavior))
        .route("/_sim/stats", get(stats))
        .route("/_sim/reset", post(reset))
        .with_state(state)
}

// ===== routes =====

async fn openai(State(state): State<AppState>, version: Version, body: Bytes) -> Response {
    answer(&state, version, WireFormat::OpenAi, &body, None, false).await
}

async fn anthropic(State(state): State<AppState>, version: Version, body: Bytes) -> Response {
    answer(&state, version, WireFormat::Anthropic, &body, None, false).await
}

async fn gemini(
    State(state): State<AppState>,
    version: Version,
    Path(target): Path<String>,
    body: Bytes,
) -> Response {
    let stream = match target.split_once(':') {
        Some((_, "generateContent")) => false,
        Some((_, "streamGenerateContent")) => true,
        _ => {
            let failure = Failure::new(LlmErrorKind::ModelNotFound)
                .with_message(format!("unknown method: {target}"));
            return error_response(WireFormat::Gemini, &failure, 404);
        }
    };
    let model = target.split_once(':').map(|(model, _)| model);
    answer(&state, version, WireFormat::Gemini, &body, model, stream).await
}

async fn models(State(state): State<AppState>) -> Response {
    json_response(
        StatusCode::OK,
        wire::models_body(state.handle.model().unwrap_or("sim-model")),
    )
}

async fn set_behavior(State(state): State<AppState>, body: Bytes) -> Response {
    match serde_json::from_slice::<Behavior>(&body) {
        Ok(behavior) => {
            state.handle.set_behavior(behavior);
            json_response(StatusCode::OK, r#"{"ok":true}"#.to_owned())
        }
        Err(err) => json_response(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": format!("invalid behavior: {err}")}).to_string(),
        ),
    }
}

async fn get_behavior(State(state): State<AppState>) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_string(&state.handle.behavior()).unwrap_or_default(),
    )
}

async fn stats(State(state): State<AppState>) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_string(&state.handle.stats()).unwrap_or_default(),
    )
}

async fn reset(State(state): State<AppState>) -> Response {
    state.handle.reset();
    json_response(StatusCode::OK, r#"{"ok":true}"#.to_owned())
}

// ===== answering =====

async fn answer(
    state: &AppState,
    version: Version,
    format: WireFormat,
    body: &[u8],
    model: Option<&str>,
    stream: bool,
) -> Response {
    let request = match wire::parse_request(format, body, model, stream) {
        Ok(request) => request,
        Err(message) => {
            let failure = Failure::new(LlmErrorKind::BadRequest).with_message(message);
            return error_response(format, &failure, 400);
        }
    };
    let plan = state.handle.next_plan(&request, Some(version));
    if plan.delay > Duration::ZERO {
        tokio::select! {
            () = tokio::time::sleep(plan.delay) => {}
            () = state.shutdown.cancelled() => return dropped(Bytes::new()),
        }
    }
    match plan.action {
        Action::Reply(reply) if reply.stream => sse_response(state, format, &reply),
        Action::Reply(reply) => json_response(StatusCode::OK, wire::json_body(format, &reply)),
        Action::Fail(failure) => match failure.status_for(format) {
            Some(status) => error_response(format, &failure, status),
            None => match failure.kind {
                LlmErrorKind::MalformedResponse => malformed(None),
                LlmErrorKind::StreamInterrupted => dropped(Bytes::from_static(
                    b"{\"id\":\"chatcmpl-sim\",\"choices\":[",
                )),
                _ => dropped(Bytes::new()),
            },
        },
        Action::Hang => {
            state.shutdown.cancelled().await;
            dropped(Bytes::new())
        }
        Action::Drop(after_bytes) => {
            let full = wire::json_body(format, &fallback_plan(&state.handle, &request));
            let cut = after_bytes.min(full.len());
            dropped(Bytes::copy_from_slice(&full.as_bytes()[..cut]))
        }
        Action::Malformed(body) => malformed(body),
        Action::Truncated => {
            let full = wire::json_body(format, &fallback_plan(&state.handle, &request));
            let mut cut = full.len() / 2;
            while !full.is_char_boundary(cut) {
                cut -= 1;
            }
            json_response(StatusCode::OK, full[..cut].to_owned())
        }
    }
}

/// The answer a dropped or truncated response is cut from.
fn fallback_plan(handle: &SimHandle, request: &brace_llm::ChatRequest) -> ReplyPlan {
    ReplyPlan::new(&super::Reply::default(), request, handle.model(), 0)
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn error_response(format: WireFormat, failure: &Failure, status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(status, wire::error_body(format, failure));
    for (name, value) in wire::error_headers(format, failure) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn malformed(body: Option<String>) -> Response {
    json_response(
        StatusCode::OK,
        body.unwrap_or_else(|| r#"{"id": "chatcmpl-sim", "choices": [oops not json"#.to_owned()),
    )
}

/// The connection is dropped: with an empty `prefix` before the status line is sent (the
/// client gets no response at all), else after `200`, the headers and `prefix` (the body
/// never ends properly).
fn dropped(prefix: Bytes) -> Response {
    let stream = futures_util::stream::unfold(Some(prefix), |prefix| async move {
        match prefix {
            Some(prefix) if !prefix.is_empty() => Some((Ok(prefix), None)),
            _ => {
                if prefix.is_none() {
                    flush_pause().await;
                }
                Some((Err(cut()), Some(Bytes::new())))
            }
        }
    })
    .take(2);
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn sse_response(state: &AppState, format: WireFormat, plan: &ReplyPlan) -> Response {
    let events = wire::stream_events(format, plan);
    let mut steps: VecDeque<(Duration, Step<wire::WireEvent>)> =
        timeline(plan, events, |event| event.content).into();
    let done = format == WireFormat::OpenAi
        && ends_cleanly(plan)
        && !matches!(plan.fault, Some(StreamFault::MissingDone));
    if done {
        steps.push_back((
            Duration::ZERO,
            Step::Event(wire::WireEvent {
                name: None,
                data: "[DONE]".to_owned(),
                content: false,
            }),
        ));
    }
    let stream = futures_util::stream::unfold(
        (steps, state.shutdown.clone(), false),
        move |(mut steps, shutdown, ended)| async move {
            if ended {
                return None;
            }
            let (wait, step) = steps.pop_front()?;
            if wait > Duration::ZERO {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => return Some((Err(cut()), (steps, shutdown, true))),
                }
            }
            let item = match step {
                Step::Event(event) => Ok(event.to_bytes()),
                Step::Malformed => Ok(wire::malformed_event(format)),
                Step::Error(failure) => {
                    return Some((
                        Ok(wire::error_event(format, &failure)),
                        (steps, shutdown, true),
                    ));
                }
                Step::Break => {
                    flush_pause().await;
                    return Some((Err(cut()), (steps, shutdown, true)));
                }
                Step::Stall => {
                    shutdown.cancelled().await;
                    return Some((Err(cut()), (steps, shutdown, true)));
                }
            };
            Some((item, (steps, shutdown, false)))
        },
    );
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Lets the server write what it has sent so far to the socket before it drops the
/// connection, so the client sees the headers and the first bytes, then the cut.
async fn flush_pause() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

fn cut() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "simulated broken stream")
}
