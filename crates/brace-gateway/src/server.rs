//! Serving the gateway on a TCP listener: the accept loop, and how long each connection may
//! live.
//!
//! A connection that opens with HTTP/2's preface is served by hyper's HTTP/2 server; any
//! other is read as HTTP/1.1 by the gateway's own connection code, in the connection's task,
//! which holds a read buffer only while there are bytes in it and writes each response from
//! where its pieces are (hyper's HTTP/1.1 server keeps an 8 KiB read and an 8 KiB write buffer
//! per connection for its whole life: with 1 000 streams open, the gateway's resident memory
//! is about 6 MiB less without them).
//! Request heads may take 64 KiB and 100 header fields; a head beyond either is answered
//! `431`, one HTTP/1.1 cannot read one way (a bad field, `Transfer-Encoding` with
//! `Content-Length`, two different lengths) `400`, each with a message saying what was wrong.
//!
//! No connection is held open without a bound:
//!
//! - the first bytes — for HTTP/2 the whole 24-byte connection preface — and every request
//!   head must arrive within `server.header_timeout`;
//! - a request body must keep arriving (`server.body_timeout` between pieces, the whole of it
//!   within `server.request_timeout`), see [`limits`](crate::limits);
//! - a connection with no request in flight for `server.idle_timeout` is closed (HTTP/2 with
//!   a GOAWAY first);
//! - a response must keep leaving: a connection whose writes make no progress for
//!   `server.send_timeout` (a client that stopped reading, or vanished without a reset) is
//!   closed, and the request it held — an upstream stream included — is dropped with it; an
//!   HTTP/2 stream whose client takes none of its data for as long (its flow-control window
//!   left shut while the connection stays alive) is reset alone, its request dropped likewise;
//! - HTTP/2 connections are pinged every `server.http2_keep_alive_interval` and closed when a
//!   ping goes unanswered for `server.http2_keep_alive_timeout`;
//! - at most `server.max_connections` are open at once; one more is answered `503` with
//!   `Retry-After` and closed, and counted in `brace_connections_refused_total`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use brace_core::BoxError;
use bytes::Bytes;
use http::Request;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::Service;

use crate::config::ServerConfig;
use crate::limits::Holding;
use crate::metrics::Metrics;
use crate::stack::Gateway;

mod h1;

/// The address the gateway listens on, in each admin request's extensions (set by
/// [`serve`]; the admin endpoints allow a request without a token only on a loopback
/// address). Without it — a router served some other way — the configured `listen` is
/// assumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

/// Serves `gateway` on `listener` until `shutdown` resolves, then stops accepting and lets
/// in-flight requests (streams included) finish within the configured grace period. Streams
/// still open when it runs out end with an SSE error event (`code: shutting_down`, no
/// `[DONE]`; see [`sse`](crate::sse)).
///
/// Each connection speaks HTTP/1.1, or HTTP/2 when it opens with the HTTP/2 preface (prior
/// knowledge), within the limits of the [module docs](self). Idle keep-alive connections are
/// closed as soon as `shutdown` resolves. When the configuration has a client keys file, it
/// is watched for changes and SIGHUP while serving.
///
/// # Errors
///
/// The listener's address cannot be read. As in axum's own accept loop, a failed `accept` is
/// logged and retried (after a second, for errors such as running out of file descriptors).
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listening = listener.local_addr()?;
    let options = Arc::new(gateway.config().server.clone());
    if !listening.ip().to_canonical().is_loopback() && gateway.client_keys().is_none() {
        tracing::warn!(
            %listening,
            "no `auth` section: anyone who can reach this address can use the configured providers"
        );
    }
    // The edge around the router, outermost first. Put around it (not on it with
    // `Router::layer`, which boxes every route once per layer) these cost a request no
    // allocation of their own.
    let app = tower::ServiceBuilder::new()
        .layer(
            tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer::new([
                http::header::AUTHORIZATION,
            ]),
        )
        .layer(crate::request_id::RequestIdLayer)
        .layer(crate::span::RequestSpanLayer::new(
            crate::telemetry::request_span::<Body>,
        ))
        .layer(crate::app::edge(&gateway.config().server))
        .service(crate::app::chat_first(gateway.clone(), Some(listening)));
    // Histogram samples pile up in the recorder until they are folded into buckets.
    let upkeep = {
        let metrics = gateway.metrics.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(crate::metrics::UPKEEP_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                metrics.run_upkeep();
            }
        })
    };
    let _stop_upkeep = AbortOnDrop(upkeep);
    let _stop_watching_keys = gateway
        .client_keys()
        .map(|keys| AbortOnDrop(tokio::spawn(keys.clone().watch())));
    let slots = Slots::new(options.max_connections, gateway.metrics.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each connection task holds a receiver; `closed()` resolves when the last one is gone.
    let (all_closed_tx, all_closed_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _remote)) => stream,
                Err(err) => {
                    accept_error(&err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = slots.take() else {
            slots.refuse(stream);
            continue;
        };
        tokio::spawn(serve_connection(
            stream,
            app.clone(),
            options.clone(),
            slot,
            stop_rx.clone(),
            all_closed_rx.clone(),
        ));
    }
    gateway.begin_shutdown();
    let _ = stop_tx.send(true);
    drop(listener);
    drop(all_closed_rx);
    // Every connection finishes what it has in flight, within the grace period.
    let grace = options.shutdown_grace;
    if tokio::time::timeout(grace, all_closed_tx.closed())
        .await
        .is_err()
    {
        // Streams still open end with the documented error event, so that no client takes
        // a cut for an answer; their connections then close.
        let open = gateway.streams().end_all();
        tracing::warn!(
            grace_secs = grace.as_secs(),
            open_streams = open,
            "shutdown grace period over; ending open streams with an error event"
        );
        if tokio::time::timeout(STREAM_END_FLUSH, all_closed_tx.closed())
            .await
            .is_err()
        {
            tracing::warn!("dropping remaining connections");
        }
    }
    Ok(())
}

/// How long connections get, once the grace period is over, to send their streams' final
/// error event and close.
const STREAM_END_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

/// Aborts a background task when dropped (when `serve` returns or is dropped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ===== the connection bound =====

/// The open connections, at most `server.max_connections`.
#[derive(Clone)]
struct Slots {
    semaphore: Arc<Semaphore>,
    open: Arc<AtomicUsize>,
    refusing: Arc<AtomicUsize>,
    metrics: Metrics,
}

/// One open connection's place; dropping it frees the place.
struct Slot {
    _permit: OwnedSemaphorePermit,
    slots: Slots,
}

/// How many refused connections are answered at once; beyond that they are closed without
/// an answer.
const MAX_REFUSING: usize = 256;

/// How long a refused connection is given to send its request and read the 503.
const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// What a connection beyond `server.max_connections` is told before it is closed: a whole
/// HTTP/1.1 503 in OpenAI's error shape.
static REFUSAL: std::sync::LazyLock<Bytes> = std::sync::LazyLock::new(|| {
    let body = crate::error::ApiError::overloaded(
        "the gateway is at its limit of open connections (server.max_connections); retry \
         shortly",
    )
    .body()
    .to_string();
    let secs = crate::error::SHED_RETRY_AFTER.as_secs();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: {secs}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into()
});

impl Slots {
    fn new(max: usize, metrics: Metrics) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            open: Arc::default(),
            refusing: Arc::default(),
            metrics,
        }
    }

    fn take(&self) -> Option<Slot> {
        let permit = self.semaphore.clone().try_acquire_owned().ok()?;
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.metrics.open_connections(open);
        Some(Slot {
            _permit: permit,
            slots: self.clone(),
        })
    }

    /// Answers a connection beyond the bound with a 503 and closes it, off the accept loop.
    fn refuse(&self, mut stream: TcpStream) {
        self.metrics.connection_refused();
        if self.refusing.fetch_add(1, Ordering::Relaxed) >= MAX_REFUSING {
            self.refusing.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let refusing = self.refusing.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REFUSAL_TIME, async {
                // Read the request first: closing with it unread would reset the connection
                // and could lose the answer.
                let mut buf = [0u8; 1024];
                let _request = stream.read(&mut buf).await?;
                stream.write_all(&REFUSAL).await?;
                stream.shutdown().await?;
                while stream.read(&mut buf).await? > 0 {}
                io::Result::Ok(())
            })
            .await;
            refusing.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let open = self.slots.open.fetch_sub(1, Ordering::Relaxed) - 1;
        self.slots.metrics.open_connections(open);
    }
}

// ===== one connection =====

/// The HTTP/2 connection preface a client speaking HTTP/2 without TLS starts with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Sends every write at once: without `TCP_NODELAY`, Nagle's algorithm holds a small write
/// (a streamed event, a response) while the previous one is unacknowledged — up to the
/// peer's delayed-ACK time, 40 ms on Linux — a stall between streamed tokens.
fn configure_socket(stream: &TcpStream) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(error = %err, "could not set TCP_NODELAY on a connection");
    }
}

/// Which protocol a connection speaks, and the bytes already read to find out.
#[derive(Debug, PartialEq, Eq)]
enum Opening {
    Http1(Bytes),
    Http2(Bytes),
}

/// Reads as much of the connection's opening as it takes to tell HTTP/2's preface from an
/// HTTP/1 request.
///
/// The first bytes are peeked, not read: a connection that does not open with the preface
/// goes to the HTTP/1 server with nothing consumed, whose read buffer then sees the request
/// head whole, and one whose first segment holds the whole preface goes to the HTTP/2
/// server likewise. Only an opening that arrives in pieces is read here, until it stops
/// matching the preface or the preface is complete, and handed on with those bytes.
async fn read_opening(stream: &mut TcpStream) -> io::Result<Opening> {
    let mut first = [0u8; H2_PREFACE.len()];
    let n = stream.peek(&mut first).await?;
    if n == 0 || !H2_PREFACE.starts_with(&first[..n]) {
        return Ok(Opening::Http1(Bytes::new()));
    }
    if n == H2_PREFACE.len() {
        return Ok(Opening::Http2(Bytes::new()));
    }
    let mut read = Vec::with_capacity(H2_PREFACE.len());
    while read.len() < H2_PREFACE.len() {
        let mut chunk = [0u8; H2_PREFACE.len()];
        let n = stream
            .read(&mut chunk[..H2_PREFACE.len() - read.len()])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        read.extend_from_slice(&chunk[..n]);
        if !H2_PREFACE.starts_with(&read) {
            return Ok(Opening::Http1(read.into()));
        }
    }
    Ok(Opening::Http2(read.into()))
}

/// Serves one connection until it closes, it has been idle for `idle_timeout`, or `stop`
/// turns `true` and the requests in flight on it are answered.
async fn serve_connection<S, B>(
    mut stream: TcpStream,
    app: S,
    options: Arc<ServerConfig>,
    slot: Slot,
    mut stop: watch::Receiver<bool>,
    closed: watch::Receiver<()>,
) where
    S: Service<Request<Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    configure_socket(&stream);
    let first_head_by = tokio::time::Instant::now() + options.header_timeout;
    let opening = tokio::select! {
        opening = tokio::time::timeout_at(first_head_by, read_opening(&mut stream)) => match opening {
            Ok(Ok(opening)) => opening,
            // A connection that sends nothing, or only part of the preface, within the head
            // timeout is not kept open; nor one that fails or closes meanwhile.
            Ok(Err(_)) | Err(_) => return,
        },
        _ = stop.wait_for(|stopped| *stopped) => return,
    };
    match opening {
        // HTTP/1.1 in this task, without hyper's per-connection buffers (see `h1`).
        Opening::Http1(read) => {
            h1::serve(stream, read, app, &options, stop, first_head_by).await;
        }
        // Boxed: the HTTP/2 connection and its sweeps would otherwise widen every
        // connection's task, HTTP/1.1's included.
        Opening::Http2(read) => {
            Box::pin(serve_http2(stream, read, app, &options, stop)).await;
        }
    }
    drop(slot);
    drop(closed);
}

/// Serves an HTTP/2 connection with hyper, within the limits of the [module docs](self).
async fn serve_http2<S, B>(
    stream: TcpStream,
    read: Bytes,
    app: S,
    options: &ServerConfig,
    mut stop: watch::Receiver<bool>,
) where
    S: Service<Request<Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

    let activity = Arc::new(Activity::new());
    // Its response bodies watched for a client that takes none of their data.
    let watchlist = Arc::new(Watchlist::default());
    let service = hyper_util::service::TowerToHyperService::new(Tracked {
        inner: app,
        activity: activity.clone(),
        watchlist: watchlist.clone(),
    });
    let io = TokioIo::new(SendTimeout::new(
        Prefixed {
            prefix: read,
            inner: stream,
        },
        options.send_timeout,
    ));
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(options.http2_keep_alive_interval)
        .keep_alive_timeout(options.http2_keep_alive_timeout)
        .serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    // `interval` refuses a zero period: a send_timeout of a few nanoseconds is allowed.
    let period = (options.send_timeout / SWEEPS_PER_SEND_TIMEOUT).max(Duration::from_millis(1));
    let mut sweeps = tokio::time::interval(period);
    sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The idle timer is checked when it fires rather than moved by each request: a request
    // starting or ending does not wake this task (each wake would poll the requests in
    // flight again, through every layer).
    let idle = tokio::time::sleep(options.idle_timeout);
    let mut idle = std::pin::pin!(idle);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::trace!(error = %err, "connection ended with an error");
                }
                break;
            }
            _ = stop.wait_for(|stopped| *stopped), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
            () = idle.as_mut(), if !stopping => {
                let now = tokio::time::Instant::now();
                match activity.idle_since() {
                    None => idle.as_mut().reset(now + options.idle_timeout),
                    Some(since) if now.saturating_duration_since(since) >= options.idle_timeout => {
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    Some(since) => idle.as_mut().reset(since + options.idle_timeout),
                }
            }
            _ = sweeps.tick() => watchlist.sweep(SWEEPS_PER_SEND_TIMEOUT),
        }
    }
}

// ===== requests in flight on one connection =====

/// Counts a connection's requests in flight, each until its response body ends.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    /// The response bodies watched for a client that takes none of their data.
    watchlist: Arc<Watchlist>,
}

/// A connection's requests in flight, and since when it has had none: read by the
/// connection's idle timer when it fires, so that requests coming and going never wake the
/// connection's task.
struct Activity {
    in_flight: AtomicUsize,
    /// When the last request ended (or the connection opened), in nanoseconds from `epoch`.
    idle_since: AtomicU64,
    epoch: tokio::time::Instant,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            epoch: tokio::time::Instant::now(),
        }
    }

    /// `None` while a request is in flight; else when the last one ended.
    fn idle_since(&self) -> Option<tokio::time::Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let nanos = self.idle_since.load(Ordering::Acquire);
        Some(self.epoch + Duration::from_nanos(nanos))
    }
}

/// One request in flight.
struct Active(Arc<Activity>);

impl Active {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let activity = &self.0;
        // The end is stored before the count falls, so whoever sees no request in flight
        // sees when the last one ended (the latest, when several end at once).
        let ended = brace_core::duration::nanos(activity.epoch.elapsed());
        activity.idle_since.fetch_max(ended, Ordering::AcqRel);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, B, RB> Service<Request<B>> for Tracked<S>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    S: Service<Request<Body>, Response = http::Response<RB>>,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        TrackedFuture {
            active: Some(Active::new(&self.activity)),
            watchlist: self.watchlist.clone(),
            // The one box of the request body (the router would box it otherwise).
            future: self.inner.call(request.map(Body::new)),
        }
    }
}

pin_project! {
    /// The response future of [`Tracked`]: moves the request's count into its body.
    struct TrackedFuture<F> {
        #[pin]
        future: F,
        active: Option<Active>,
        watchlist: Arc<Watchlist>,
    }
}

impl<F, E, RB> Future for TrackedFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.future.poll(cx))?;
        let active = this.active.take().expect("polled after completion");
        Poll::Ready(Ok(response.map(|body| {
            this.watchlist.watch(Body::new(Holding::new(body, active)))
        })))
    }
}

// ===== HTTP/2 streams whose client takes none of their data =====

/// How often, per `send_timeout`, an HTTP/2 connection's response bodies are checked: a
/// stalled stream is reset between 1 and 1¼ `send_timeout` after its client last took data.
const SWEEPS_PER_SEND_TIMEOUT: u32 = 4;

/// The response bodies of one HTTP/2 connection, watched for a client that takes none of
/// their data.
///
/// HTTP/2 asks a response body for data only while the client's flow-control window has
/// room, so a client that leaves a stream's window shut — and answers pings, so the
/// connection looks alive — would hold that request, its place in `max_in_flight` and its
/// upstream stream for ever. No socket write stalls, so [`SendTimeout`] cannot see it; each
/// body counts how often it is asked for data instead, and a sweep drops the request of any
/// body that handed out a frame and was not asked again for `send_timeout`. The client's next
/// read of that stream ends in an error (a reset); the connection's other streams go on.
#[derive(Default)]
struct Watchlist(parking_lot::Mutex<Vec<Watch>>);

/// One watched body, as the sweeps last saw it.
struct Watch {
    stream: std::sync::Weak<parking_lot::Mutex<WatchedStream>>,
    /// How often the body had been asked for data at the last sweep (`None`: not yet swept,
    /// so that the first sweep only takes note and a stall is never cut sooner than
    /// `send_timeout` after it began).
    polls: Option<u64>,
    stale: u32,
}

/// What a watched body and the sweeps share.
struct WatchedStream {
    /// The body; taken (and so dropped, with the request it holds) when the stream stalled.
    body: Option<Body>,
    /// How often the body was asked for data.
    polls: u64,
    /// Whether the body waits to be asked again: it has handed out a frame (or nothing yet)
    /// and has not been asked since.
    waiting: bool,
}

impl Watchlist {
    fn watch(&self, body: Body) -> Body {
        let stream = Arc::new(parking_lot::Mutex::new(WatchedStream {
            body: Some(body),
            polls: 0,
            waiting: true,
        }));
        self.0.lock().push(Watch {
            stream: Arc::downgrade(&stream),
            polls: None,
            stale: 0,
        });
        Body::new(WatchedBody(stream))
    }

    /// Drops the request of every body that waited to be asked for data through `sweeps`
    /// sweeps in a row after the one that last saw it asked, and forgets the bodies that
    /// ended.
    fn sweep(&self, sweeps: u32) {
        let mut stalled = Vec::new();
        self.0.lock().retain_mut(|watch| {
            let Some(stream) = watch.stream.upgrade() else {
                return false;
            };
            let mut shared = stream.lock();
            if watch.polls != Some(shared.polls) || !shared.waiting {
                watch.polls = Some(shared.polls);
                watch.stale = 0;
                return true;
            }
            watch.stale += 1;
            if watch.stale < sweeps {
                return true;
            }
            stalled.extend(shared.body.take());
            false
        });
        if stalled.is_empty() {
            return;
        }
        tracing::debug!(
            streams = stalled.len(),
            "dropping HTTP/2 streams whose client took no data within server.send_timeout"
        );
        // Dropped outside the list's lock: a body's drop may end an upstream call.
        drop(stalled);
    }
}

/// A response body on an HTTP/2 connection, watched by its [`Watchlist`].
struct WatchedBody(Arc<parking_lot::Mutex<WatchedStream>>);

/// The error a stalled stream ends with, if its client ever asks again.
#[derive(Debug)]
struct StreamStalled;

impl std::fmt::Display for StreamStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client took none of the stream's data within server.send_timeout")
    }
}

impl std::error::Error for StreamStalled {}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let mut shared = self.0.lock();
        shared.polls += 1;
        let Some(inner) = shared.body.as_mut() else {
            return Poll::Ready(Some(Err(axum::Error::new(StreamStalled))));
        };
        let polled = Pin::new(inner).poll_frame(cx);
        shared.waiting = matches!(polled, Poll::Ready(Some(Ok(_))));
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .lock()
            .body
            .as_ref()
            .is_some_and(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0
            .lock()
            .body
            .as_ref()
            .map_or_else(http_body::SizeHint::default, http_body::Body::size_hint)
    }
}

// ===== an opening read before the protocol was known =====

pin_project! {
    /// A stream whose first bytes were already read: they are read again first.
    struct Prefixed {
        prefix: Bytes,
        #[pin]
        inner: TcpStream,
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

// ===== a bound on writes that make no progress =====

pin_project! {
    /// Fails a write, flush or shutdown that has made no progress for `limit`: a peer that
    /// stops reading fills the socket's buffers, and without this the connection, its
    /// request and whatever that request holds upstream would wait for it forever.
    ///
    /// The clock starts when a write first returns `Pending` and stops at any progress; a
    /// connection that is merely quiet (nothing to send) is never timed here.
    struct SendTimeout<T> {
        #[pin]
        inner: T,
        limit: Duration,
        stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<T> SendTimeout<T> {
    fn new(inner: T, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }
}

/// What a pending write turns into: still pending, or the error that ends the connection.
fn stalled<R>(
    stalled: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    limit: Duration,
    cx: &mut Context<'_>,
    polled: Poll<io::Result<R>>,
) -> Poll<io::Result<R>> {
    if polled.is_ready() {
        *stalled = None;
        return polled;
    }
    let sleep = stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
    match sleep.as_mut().poll(cx) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(()) => {
            tracing::debug!(
                send_timeout_secs = limit.as_secs_f64(),
                "closing a connection whose peer stopped reading"
            );
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing within server.send_timeout",
            )))
        }
    }
}

impl<T: AsyncRead> AsyncRead for SendTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for SendTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        stalled(this.stalled, *this.limit, cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        stalled(this.stalled, *this.limit, cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let polled = this.inner.poll_flush(cx);
        stalled(this.stalled, *this.limit, cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let polled = this.inner.poll_shutdown(cx);
        stalled(this.stalled, *this.limit, cx, polled)
    }
}

/// What axum's own accept loop does with an accept error: a connection that failed before
/// it was accepted is skipped; anything else (say, out of file descriptors) is logged and
/// accepting pauses for a second.
async fn accept_error(err: &io::Error) {
    use io::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "accept error");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Binds `addr` (port 0 picks a free port) and returns the listener and its address.
///
/// The listener holds up to 1 024 connections the kernel has completed for `accept`: std's
/// and mio's (so tokio's) `bind` listen with a backlog of 128, which a burst of new clients
/// overflows — and each connection attempt dropped on the floor waits a second for its
/// client to try again.
///
/// # Errors
///
/// The bind error.
#[allow(
    clippy::unused_async,
    reason = "async in the public API, as tokio's bind; it no longer awaits"
)]
pub async fn bind(addr: SocketAddr) -> io::Result<(TcpListener, SocketAddr)> {
    let listener = listen(addr, false)?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// The listen backlog of the gateway's sockets.
const BACKLOG: u32 = 1024;

/// A listening socket on `addr` with the gateway's backlog; with `reuse_port`, one that
/// shares its port with others (`SO_REUSEPORT`, see [`per_core`](crate::per_core)).
pub(crate) fn listen(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's `bind` does: a restarted gateway binds its port while the previous one's
    // connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_backlog_with_none_dropped() {
        let (listener, addr) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        // Nothing accepts: each connection completes only by waiting in the backlog, and one
        // the kernel drops would wait a second, then three more, for its retry.
        let connects = (0..300).map(|_| TcpStream::connect(addr));
        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::future::join_all(connects),
        )
        .await
        .expect("every connection completed without a retried SYN");
        assert!(connected.iter().all(Result::is_ok));
        drop(listener);
    }

    #[tokio::test]
    async fn accepted_connections_send_without_delay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (accepted, _) = accepted.unwrap();
        drop(client);
        assert!(!accepted.nodelay().unwrap(), "Nagle is on by default");
        configure_socket(&accepted);
        assert!(accepted.nodelay().unwrap());
    }

    #[test]
    fn the_refusal_is_a_whole_http_answer_in_openai_shape() {
        let text = std::str::from_utf8(&REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "overloaded");
        assert!(head.contains("retry-after: 1"));
    }

    /// A connection pair on loopback: (client, accepted).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn an_opening_in_pieces_is_read_until_it_is_told_apart() {
        // (Whether the first piece is peeked alone depends on scheduling; either way the
        // verdict is the same, and the bytes handed on are exactly those read.)
        // The preface in two pieces: HTTP/2.
        let (mut client, mut accepted) = pair().await;
        let reading = tokio::spawn(async move { read_opening(&mut accepted).await });
        client.write_all(&H2_PREFACE[..16]).await.unwrap();
        tokio::task::yield_now().await;
        client.write_all(&H2_PREFACE[16..]).await.unwrap();
        match reading.await.unwrap().unwrap() {
            Opening::Http2(read) => assert!(read.is_empty() || read == H2_PREFACE, "{read:?}"),
            other @ Opening::Http1(_) => panic!("{other:?}"),
        }

        // `P`, then the rest of a `POST`: HTTP/1.
        let (mut client, mut accepted) = pair().await;
        let reading = tokio::spawn(async move { read_opening(&mut accepted).await });
        let head = b"POST / HTTP/1.1\r\n";
        client.write_all(&head[..1]).await.unwrap();
        tokio::task::yield_now().await;
        client.write_all(&head[1..]).await.unwrap();
        match reading.await.unwrap().unwrap() {
            Opening::Http1(read) => assert!(head.starts_with(&read), "{read:?}"),
            other @ Opening::Http2(_) => panic!("{other:?}"),
        }

        // A whole request head at once: HTTP/1, nothing consumed.
        let (mut client, mut accepted) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(
            read_opening(&mut accepted).await.unwrap(),
            Opening::Http1(Bytes::new())
        );
    }

    #[tokio::test]
    async fn bytes_read_before_the_protocol_was_known_are_read_again_first() {
        let (mut client, accepted) = pair().await;
        client.write_all(b" world").await.unwrap();
        let mut prefixed = Prefixed {
            prefix: Bytes::from_static(b"hello"),
            inner: accepted,
        };
        let mut read = [0u8; 11];
        prefixed.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"hello world");
    }
}
