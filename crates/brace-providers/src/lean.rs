//! [`LeanClient`]: a pooled client for plain-`http` providers, for the hot path where
//! reqwest's extra work shows.
//!
//! reqwest wraps hyper-util's client in layers a provider call does not need: every request
//! goes through a redirect layer (which parses the URL again, IDNA included, even with
//! redirects off), header-sensitivity and cookie plumbing, and a URL → URI conversion; and
//! hyper-util's pooled client itself hashes its pool key (SipHash) on every checkout and
//! return, formats the `Host` header per request, and keeps a checkout future, a waiter
//! queue and a spawned "return to the pool when ready" task for cases a provider call rarely
//! meets. A [`LeanClient`] keeps its own small pool of connections: a request takes the most
//! recently returned idle connection of its host (or opens one), and a response body read to
//! its end returns the connection. Connections are opened by hyper-util's `HttpConnector`
//! with the options brace configures reqwest with: connect timeout, `TCP_NODELAY`, TCP
//! keep-alive; idle connections are closed after 90 s (see [`ClientOptions`]). It speaks
//! plain `http` only: TLS and proxies stay with reqwest.
//!
//! # HTTP/1.1 without a connection task
//!
//! hyper's client connection is a task of its own, fed through a channel: each request and
//! each piece of a streamed answer wakes another task, and each connection holds a task, a
//! channel block and a read and a write buffer of 8 KiB for as long as its answer streams.
//! A provider call sends one request at a time on a connection and reads its answer to the
//! end, so the lean client does HTTP/1.1 itself, in the caller's own future: the request's
//! head and body go out in one vectored write from where they are, and the answer is read
//! into one small buffer (1 KiB to start, grown while reads fill it; the connection's next
//! exchange reuses it once the previous answer's pieces are gone, unless a large answer
//! grew it), its head parsed with `httparse` (as hyper does), its body's pieces split off
//! without copying.
//! Framing follows RFC 9112: `Transfer-Encoding: chunked` (extensions and trailer fields
//! read and dropped), `Content-Length`, or the connection's close; interim `1xx` answers are
//! skipped. A head that is not HTTP, two different lengths or a broken chunk is a
//! [`LlmErrorKind::MalformedResponse`]; a body cut before its end a
//! [`LlmErrorKind::StreamInterrupted`]. HTTP/2 (prior knowledge, with its keep-alive ping)
//! is hyper's.
//!
//! # Which connection
//!
//! - HTTP/1.1: one request at a time per connection. A connection goes back to its host's
//!   idle list when its answer has been read exactly to its end, was HTTP/1.1, did not say
//!   `Connection: close` and did not end at the close; a body dropped earlier closes it. A
//!   request finds the most recently returned connection first (its socket is the warmest),
//!   skipping connections the server closed meanwhile (as far as the runtime has seen). If
//!   a reused connection fails before any of the request was written, the request is sent
//!   again on a new connection — it never reached the server, so this is safe for any
//!   request.
//! - HTTP/2 (prior knowledge): one connection per host, shared by every request at once;
//!   a closed one is replaced by the next request.
//!
//! # One pool per runtime
//!
//! A pooled connection is registered with the runtime that opened it (an HTTP/2 one is a
//! task there). The client keeps one pool per tokio runtime it is used from, so that a
//! gateway running one current-thread runtime per core (each with its own listener) never
//! wakes another core's runtime for an upstream call. On tokio's multi-threaded runtime that is one pool, as with reqwest. A runtime's
//! pool goes with it: when the runtime shuts down (and drops its tasks), the client forgets
//! the pool, so a process that starts many runtimes over its life (a test suite, a CLI
//! that makes one per command) does not accumulate the pools of dead ones.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use brace_core::clock;
use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;
use tower_service::Service;

use crate::provider::{
    ClientOptions, HTTP2_KEEP_ALIVE_INTERVAL, HTTP2_KEEP_ALIVE_TIMEOUT, POOL_IDLE_TIMEOUT,
    TCP_KEEPALIVE,
};
use brace_llm::error::{LlmError, LlmErrorKind};

pub mod chunked;
mod h1;

/// A pooled HTTP client for plain-`http` upstreams (see the [module docs](self)).
///
/// # Clone
///
/// Clones share the pools.
#[derive(Clone)]
pub struct LeanClient {
    inner: Arc<Inner>,
}

struct Inner {
    options: ClientOptions,
    /// One pool per runtime the client has been used from (few: one per core at most).
    pools: RwLock<Vec<(tokio::runtime::Id, Arc<Pool>)>>,
}

impl fmt::Debug for LeanClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeanClient")
            .field("options", &self.inner.options)
            .field("pools", &self.inner.pools.read().len())
            .finish()
    }
}

/// A request's exchange, boxed.
type Exchange =
    Pin<Box<dyn Future<Output = Result<http::Response<LeanBody>, LlmError>> + Send + 'static>>;

/// The host a request goes to, if the lean client can reach it (plain `http`).
fn target(request: &http::Request<Full<Bytes>>) -> Result<Authority, LlmError> {
    let uri = request.uri();
    if uri.scheme() != Some(&Scheme::HTTP) {
        return Err(LlmError::new(
            LlmErrorKind::Connect,
            "the lean HTTP client speaks plain http only",
        ));
    }
    uri.authority()
        .cloned()
        .ok_or_else(|| LlmError::new(LlmErrorKind::Connect, "the request's URI names no host"))
}

impl LeanClient {
    /// A client with `options` (nothing is connected until the first request).
    pub fn new(options: ClientOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                options,
                pools: RwLock::new(Vec::new()),
            }),
        }
    }

    /// The options it was made with.
    pub fn options(&self) -> ClientOptions {
        self.inner.options
    }

    /// The number of runtimes it keeps a connection pool on (one per live runtime it has
    /// sent from).
    pub fn pools(&self) -> usize {
        self.inner.pools.read().len()
    }

    /// The number of open connections the current runtime's pool keeps for the next
    /// requests: HTTP/1.1 connections idle, plus the HTTP/2 connection of each host reached
    /// over HTTP/2 (busy or not). Must be called within a tokio runtime.
    pub fn idle_connections(&self) -> usize {
        let id = tokio::runtime::Handle::current().id();
        let pools = self.inner.pools.read();
        pools
            .iter()
            .find(|(of, _)| *of == id)
            .map_or(0, |(_, pool)| pool.idle_connections())
    }

    /// Sends `request` (its URI absolute, `http`) on the current runtime's pool and waits
    /// for the answer's head. Must be called within a tokio runtime.
    ///
    /// # Errors
    ///
    /// A transport failure: [`LlmErrorKind::Connect`] (refused, reset, closed before the
    /// answer, a URI that is not plain `http`) or [`LlmErrorKind::Timeout`] (the connect
    /// timeout), without the URL.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the request (its connection is closed, not reused).
    pub fn send(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> impl Future<Output = Result<http::Response<LeanBody>, LlmError>> + Send + 'static {
        // Boxed (one allocation): the exchange's state is large, and every layer above moves
        // the future that holds it at least once — inline, each move would copy it all. One
        // protocol's exchange per box: a pool speaks one, and a future able to run either
        // would be as large as the larger for every request.
        let pool = self.pool();
        let authority = match target(&request) {
            Ok(authority) => authority,
            Err(err) => return Box::pin(std::future::ready(Err(err))) as Exchange,
        };
        if pool.options.http2_prior_knowledge() {
            Box::pin(pool.send_h2(authority, request))
        } else {
            Box::pin(pool.send_h1(authority, request))
        }
    }

    /// The current runtime's pool, made on its first request.
    fn pool(&self) -> Arc<Pool> {
        let id = tokio::runtime::Handle::current().id();
        // The common case: this runtime's pool exists, found under a shared lock (every
        // runtime of a per-core gateway reads it at once).
        if let Some((_, pool)) = self.inner.pools.read().iter().find(|(of, _)| *of == id) {
            return pool.clone();
        }
        let pool = {
            let mut pools = self.inner.pools.write();
            if let Some((_, pool)) = pools.iter().find(|(of, _)| *of == id) {
                return pool.clone();
            }
            let pool = Pool::new(self.inner.options);
            pools.push((id, pool.clone()));
            pool
        };
        // Spawned after the list is unlocked, and after the pool is in it: a runtime that is
        // shutting down drops the task at once, and with it the registration, which takes
        // the pool out of the list again (under the same lock).
        let registration = Registration {
            client: Arc::downgrade(&self.inner),
            id,
        };
        tokio::spawn(sweep(Arc::downgrade(&pool), registration));
        pool
    }
}

/// The connections of one runtime, by host.
struct Pool {
    options: ClientOptions,
    connector: HttpConnector,
    /// A handful of hosts (a gateway's providers): found by a comparison each, no hashing.
    hosts: Mutex<Vec<Host>>,
}

/// The idle connections to one host (`authority`, plain `http`).
struct Host {
    authority: Authority,
    /// The `Host` header its HTTP/1.1 requests carry, made once.
    header: HeaderValue,
    /// HTTP/1.1 connections waiting for a request, the most recently returned last.
    idle: Vec<Idle>,
    /// The HTTP/2 connection (prior knowledge), shared by every request at once, and when
    /// a request last took it.
    shared: Option<(http2::SendRequest<Full<Bytes>>, Instant)>,
    /// Held by the request opening the HTTP/2 connection, awaited by the others.
    opening: Arc<tokio::sync::Mutex<()>>,
    /// When the last attempt to open the HTTP/2 connection failed, and how.
    failed: Option<(Instant, LlmErrorKind, String)>,
}

impl Host {
    /// The HTTP/2 connection, if one is open.
    fn open_h2(&mut self) -> Option<http2::SendRequest<Full<Bytes>>> {
        match &mut self.shared {
            Some((sender, used)) if !sender.is_closed() => {
                *used = clock::now();
                Some(sender.clone())
            }
            _ => None,
        }
    }
}

/// An idle HTTP/1.1 connection, and since when. The idle times (and the HTTP/2
/// connection's last use) are read with [`clock::now`]: on the request path that is the
/// reading the layers above already took in the same poll, not another read of the clock.
struct Idle {
    conn: h1::Conn,
    since: Instant,
}

impl Pool {
    fn new(options: ClientOptions) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(options.connect_timeout()));
        connector.set_keepalive(Some(TCP_KEEPALIVE));
        connector.set_keepalive_interval(Some(TCP_KEEPALIVE));
        connector.set_keepalive_retries(Some(3));
        Arc::new(Self {
            options,
            connector,
            hosts: Mutex::new(Vec::new()),
        })
    }

    fn idle_connections(&self) -> usize {
        self.hosts
            .lock()
            .iter_mut()
            .map(|host| {
                let mut open = 0;
                for idle in &mut host.idle {
                    open += usize::from(!idle.conn.is_closed());
                }
                let shared = host.shared.iter().filter(|(sender, _)| !sender.is_closed());
                open + shared.count()
            })
            .sum()
    }

    async fn send_h1(
        self: Arc<Self>,
        authority: Authority,
        request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<LeanBody>, LlmError> {
        if request
            .headers()
            .contains_key(http::header::TRANSFER_ENCODING)
        {
            return Err(LlmError::new(
                LlmErrorKind::BadRequest,
                "the lean HTTP client sends bodies of a known length only",
            ));
        }
        let (mut idle, header) = self.checkout(&authority);
        let (parts, body) = request.into_parts();
        let body = full_bytes(body);
        let head = h1::encode_head(&parts, &header, body.len());
        loop {
            let (conn, reused) = match idle.take() {
                Some(conn) => (conn, true),
                // Boxed: opening a connection is rare, and its future is large (the
                // connector's); inline, every request's future would carry it.
                None => (Box::pin(self.connect_h1(&authority)).await?, false),
            };
            match h1::exchange(conn, &parts.method, &head, &body).await {
                Ok((answer, body)) => {
                    let give_back = GiveBack {
                        pool: Arc::downgrade(&self),
                        authority,
                    };
                    let mut response = http::Response::new(LeanBody::h1(body, give_back));
                    *response.status_mut() = answer.status;
                    *response.version_mut() = answer.version;
                    *response.headers_mut() = answer.headers;
                    return Ok(response);
                }
                // Not written: the connection had closed while idle. Send it on another.
                Err(failed) if failed.unsent && reused => {
                    idle = self.checkout(&authority).0;
                }
                Err(failed) => return Err(failed.error),
            }
        }
    }

    async fn send_h2(
        self: Arc<Self>,
        authority: Authority,
        mut request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<LeanBody>, LlmError> {
        let (mut sender, mut reused) = self.shared_h2(&authority).await?;
        loop {
            if let Err(err) = sender.ready().await {
                if reused {
                    (sender, reused) = self.shared_h2(&authority).await?;
                    continue;
                }
                return Err(error_from_hyper(&err));
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(response.map(LeanBody::h2)),
                Err(mut err) => match err.take_message() {
                    // Not written: the connection closed meanwhile. Send it on a new one.
                    Some(unsent) if reused => {
                        request = unsent;
                        (sender, reused) = self.shared_h2(&authority).await?;
                    }
                    _ => return Err(error_from_hyper(err.error())),
                },
            }
        }
    }

    /// The host's open HTTP/2 connection (`true`: it was open already), or a new one. One
    /// request at a time opens it; the others wait for it and share it — or share its
    /// failure: had each waiter tried again in turn, the last of them would wait one connect
    /// timeout per request ahead of it.
    async fn shared_h2(
        &self,
        authority: &Authority,
    ) -> Result<(http2::SendRequest<Full<Bytes>>, bool), LlmError> {
        let opening = {
            let mut hosts = self.hosts.lock();
            let host = Self::host(&mut hosts, authority);
            if let Some(sender) = host.open_h2() {
                return Ok((sender, true));
            }
            host.opening.clone()
        };
        // Only when there is no connection to take (not per request), and a fresh reading:
        // a retry sent in the same poll as the failure it follows would share that poll's
        // reading, and take the failure it retries for one that came after it asked.
        let asked = Instant::now();
        let _opening = opening.lock().await;
        {
            let mut hosts = self.hosts.lock();
            let host = Self::host(&mut hosts, authority);
            if let Some(sender) = host.open_h2() {
                return Ok((sender, true));
            }
            if let Some((at, kind, message)) = &host.failed
                && *at >= asked
            {
                return Err(LlmError::new(*kind, message.clone()));
            }
        }
        let opened = Box::pin(self.connect_h2(authority)).await;
        let mut hosts = self.hosts.lock();
        let host = Self::host(&mut hosts, authority);
        match opened {
            Ok(sender) => {
                host.shared = Some((sender.clone(), clock::now()));
                host.failed = None;
                Ok((sender, false))
            }
            Err(err) => {
                host.failed = Some((Instant::now(), err.kind(), err.message().to_owned()));
                Err(err)
            }
        }
    }

    /// The most recently returned idle HTTP/1.1 connection to `authority` that is still
    /// open, if any, and the host's `Host` header. Connections found closed or idle for
    /// too long are dropped on the way.
    fn checkout(&self, authority: &Authority) -> (Option<h1::Conn>, HeaderValue) {
        let mut hosts = self.hosts.lock();
        let host = Self::host(&mut hosts, authority);
        let now = clock::now();
        while let Some(mut idle) = host.idle.pop() {
            if !idle.conn.is_closed() && now.duration_since(idle.since) < POOL_IDLE_TIMEOUT {
                return (Some(idle.conn), host.header.clone());
            }
        }
        (None, host.header.clone())
    }

    /// `authority`'s entry, made on its first request.
    fn host<'a>(hosts: &'a mut Vec<Host>, authority: &Authority) -> &'a mut Host {
        // The same bytes first (a provider's URL is parsed once, so its requests carry the
        // very text its entry was made from): `Authority`'s own `==` ignores ASCII case, a
        // byte at a time, against every entry before the one that matches.
        let same = |host: &Host| host.authority.as_str() == authority.as_str();
        let at = match hosts
            .iter()
            .position(same)
            .or_else(|| hosts.iter().position(|host| host.authority == *authority))
        {
            Some(at) => at,
            None => {
                hosts.push(Host {
                    authority: authority.clone(),
                    header: host_header(authority),
                    idle: Vec::new(),
                    shared: None,
                    opening: Arc::default(),
                    failed: None,
                });
                hosts.len() - 1
            }
        };
        &mut hosts[at]
    }

    /// Puts an HTTP/1.1 connection whose exchange ended back among its host's idle ones.
    fn give_back(&self, authority: &Authority, conn: h1::Conn) {
        let mut hosts = self.hosts.lock();
        let host = Self::host(&mut hosts, authority);
        host.idle.push(Idle {
            conn,
            since: clock::now(),
        });
    }

    /// Drops idle connections unused for [`POOL_IDLE_TIMEOUT`] (closing them) and closed
    /// ones.
    fn evict(&self) {
        let now = Instant::now();
        let fresh = |since: Instant| now.duration_since(since) < POOL_IDLE_TIMEOUT;
        for host in self.hosts.lock().iter_mut() {
            host.idle
                .retain_mut(|idle| !idle.conn.is_closed() && fresh(idle.since));
            if host
                .shared
                .as_ref()
                .is_some_and(|(sender, used)| sender.is_closed() || !fresh(*used))
            {
                host.shared = None;
            }
        }
    }

    async fn connect(
        &self,
        authority: &Authority,
    ) -> Result<TokioIo<tokio::net::TcpStream>, LlmError> {
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| LlmError::new(LlmErrorKind::Connect, "the request's host is not valid"))?;
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|err| classify(&err, false))?;
        connector
            .call(uri)
            .await
            .map_err(|err| classify(&err, false))
    }

    async fn connect_h1(&self, authority: &Authority) -> Result<h1::Conn, LlmError> {
        Ok(h1::Conn::new(self.connect(authority).await?.into_inner()))
    }

    async fn connect_h2(
        &self,
        authority: &Authority,
    ) -> Result<http2::SendRequest<Full<Bytes>>, LlmError> {
        let io = self.connect(authority).await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(false)
            .handshake(io)
            .await
            .map_err(|err| error_from_hyper(&err))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// The `Host` header for `authority`: its host and any port but http's default — never
/// user information (`user:password@`), which an authority may carry.
fn host_header(authority: &Authority) -> HeaderValue {
    let value = match authority.port_u16() {
        Some(port) if port != 80 => format!("{}:{port}", authority.host()),
        _ => authority.host().to_owned(),
    };
    HeaderValue::from_str(&value).expect("a parsed host and port are a valid header value")
}

/// Closes a pool's connections idle for too long, every [`POOL_IDLE_TIMEOUT`] / 3, until
/// the pool is gone. Holds the pool's registration: when the runtime shuts down it drops
/// this task, and with it the registration, which forgets the pool.
async fn sweep(pool: Weak<Pool>, _registration: Registration) {
    let mut ticks = tokio::time::interval(POOL_IDLE_TIMEOUT / 3);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match pool.upgrade() {
            Some(pool) => pool.evict(),
            None => return,
        }
    }
}

/// A runtime's place in its client's list of pools, owned by the runtime's sweep task:
/// dropped with it (the runtime shut down), it takes the pool out of the list.
struct Registration {
    client: Weak<Inner>,
    id: tokio::runtime::Id,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(client) = self.client.upgrade() {
            client.pools.write().retain(|(of, _)| *of != self.id);
        }
    }
}

/// Where an HTTP/1.1 response body returns its connection when it has been read to its end.
struct GiveBack {
    pool: Weak<Pool>,
    authority: Authority,
}

/// The bytes of a request body made whole (a [`Full`] is ready at once, with one piece).
fn full_bytes(body: Full<Bytes>) -> Bytes {
    let mut body = std::pin::pin!(body);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match body.as_mut().poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

/// The body of a [`LeanClient`] response. Over HTTP/1.1 it reads its connection itself
/// (see the [module docs](self)) and returns it to the pool when read to its end (dropped
/// before, the connection is closed); over HTTP/2 it is hyper's.
///
/// # Errors
///
/// A body cut before its end is [`LlmErrorKind::StreamInterrupted`]; one whose framing is
/// broken (a bad chunk) [`LlmErrorKind::MalformedResponse`].
pub struct LeanBody {
    kind: BodyKind,
}

enum BodyKind {
    H1 {
        body: h1::Body,
        give_back: Option<GiveBack>,
    },
    H2(Incoming),
}

impl fmt::Debug for LeanBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pooled = matches!(
            &self.kind,
            BodyKind::H1 {
                give_back: Some(_),
                ..
            }
        );
        f.debug_struct("LeanBody")
            .field("pooled", &pooled)
            .finish_non_exhaustive()
    }
}

impl LeanBody {
    fn h1(body: h1::Body, give_back: GiveBack) -> Self {
        let mut body = Self {
            kind: BodyKind::H1 {
                body,
                give_back: Some(give_back),
            },
        };
        // Nothing to read (a `204`, an empty length): the exchange is over already.
        body.release();
        body
    }

    fn h2(body: Incoming) -> Self {
        Self {
            kind: BodyKind::H2(body),
        }
    }

    /// Returns an HTTP/1.1 body's connection to the pool if the body has been read to its
    /// end and the connection may carry another request.
    fn release(&mut self) {
        let BodyKind::H1 { body, give_back } = &mut self.kind else {
            return;
        };
        let Some(ended) = body.take_ended() else {
            return;
        };
        if let (h1::Ended::Reusable(conn), Some(give_back)) = (ended, give_back.take())
            && let Some(pool) = give_back.pool.upgrade()
        {
            pool.give_back(&give_back.authority, conn);
        }
    }
}

impl Body for LeanBody {
    type Data = Bytes;
    type Error = LlmError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, LlmError>>> {
        let this = &mut *self;
        match &mut this.kind {
            BodyKind::H1 { body, .. } => {
                let polled = std::task::ready!(body.poll_data(cx));
                // Read to its end now (a length fully read, or the end seen): give the
                // connection back before the caller asks again.
                this.release();
                Poll::Ready(polled.map(|data| data.map(Frame::data)).transpose())
            }
            BodyKind::H2(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|err| body_error_from_hyper(&err)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::H1 { body, .. } => body.is_end_stream(),
            BodyKind::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::H1 { body, .. } => body
                .remaining()
                .map_or_else(SizeHint::default, SizeHint::with_exact),
            BodyKind::H2(body) => body.size_hint(),
        }
    }
}

/// Reads a transport error from hyper into an [`LlmError`]: a timeout is
/// [`LlmErrorKind::Timeout`], anything else before the answer's head
/// [`LlmErrorKind::Connect`] (the request may not have reached the provider; retrying is
/// safe). The message is the innermost cause's (never the URL).
pub fn error_from_hyper(err: &hyper::Error) -> LlmError {
    classify(err, err.is_timeout())
}

/// A failure before the answer's head (opening a connection included):
/// [`LlmErrorKind::Timeout`] if `timed_out` or an I/O timeout (the connect timeout) is among
/// its causes, [`LlmErrorKind::Connect`] otherwise.
fn classify(err: &(dyn std::error::Error + 'static), timed_out: bool) -> LlmError {
    let timed_out = timed_out
        || causes(err).any(|cause| {
            cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        });
    let kind = if timed_out {
        LlmErrorKind::Timeout
    } else {
        LlmErrorKind::Connect
    };
    let message = innermost(err).unwrap_or_else(|| err.to_string());
    LlmError::new(kind, message)
}

/// A failure while reading a body that had started: the answer is cut.
fn body_error_from_hyper(err: &hyper::Error) -> LlmError {
    crate::provider::body_broke(&innermost(err).unwrap_or_else(|| err.to_string()))
}

fn causes<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |err| err.source())
}

/// The innermost cause's message, if the error has a cause.
fn innermost(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    causes(err).skip(1).last().map(ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_is_found_by_its_authority_whatever_its_case() {
        let mut hosts = Vec::new();
        for text in [
            "127.0.0.1:1",
            "localhost:2",
            "LocalHost:2",
            "127.0.0.1:1",
            "localhost:3",
        ] {
            let authority: Authority = text.parse().unwrap();
            let found = Pool::host(&mut hosts, &authority);
            assert!(found.authority == authority, "{text}");
        }
        // "LocalHost:2" is "localhost:2"'s entry, not one of its own.
        assert_eq!(hosts.len(), 3);
    }

    #[test]
    fn the_host_header_names_host_and_port_without_user_information() {
        let header = |authority: &str| host_header(&authority.parse().unwrap());
        assert_eq!(header("127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(
            header("user:secret@provider.test:8080"),
            "provider.test:8080"
        );
        assert_eq!(header("provider.test:80"), "provider.test");
        assert_eq!(header("provider.test"), "provider.test");
        assert_eq!(header("[::1]:9000"), "[::1]:9000");
    }
}
