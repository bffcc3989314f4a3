//! [`LeanClient`]: a pooled client for plain-`http` providers directly on hyper-util's, for
//! the hot path where reqwest's extra work shows.
//!
//! reqwest wraps hyper-util's client in layers a provider call does not need: every request
//! goes through a redirect layer (which parses the URL again, IDNA included, even with
//! redirects off), header-sensitivity and cookie plumbing, and a URL → URI conversion. Per
//! call that is about a tenth of what the gateway spends on a small request (counted with
//! `cargo bench -p brace-bench --bench http_path`). A [`LeanClient`] sends the request to
//! hyper-util's client as it is, with the same options brace configures reqwest with:
//! connect timeout, `TCP_NODELAY`, TCP keep-alive, idle connections closed after 90 s, and
//! HTTP/2 prior knowledge with its keep-alive ping when configured (see
//! [`ClientOptions`]). It speaks plain `http` only: TLS and proxies stay with reqwest.
//!
//! # One pool per runtime
//!
//! A pooled connection is a task on the runtime that opened it. The client keeps one pool
//! per tokio runtime it is used from, so that a gateway running one current-thread runtime
//! per core (each with its own listener) never wakes another core's runtime for an upstream
//! call. On tokio's multi-threaded runtime that is one pool, as with reqwest.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::RwLock;

use crate::provider::{
    ClientOptions, HTTP2_KEEP_ALIVE_INTERVAL, HTTP2_KEEP_ALIVE_TIMEOUT, POOL_IDLE_TIMEOUT,
    TCP_KEEPALIVE,
};
use brace_llm::error::{LlmError, LlmErrorKind};

/// The pooled client of one runtime.
type Pool = Client<HttpConnector, Full<Bytes>>;

/// A pooled HTTP client for plain-`http` upstreams on hyper-util's client (see the
/// [module docs](self)).
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
    pools: RwLock<Vec<(tokio::runtime::Id, Pool)>>,
}

impl fmt::Debug for LeanClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeanClient")
            .field("options", &self.inner.options)
            .field("pools", &self.inner.pools.read().len())
            .finish()
    }
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

    /// The number of runtimes it keeps a connection pool on (one per runtime it has sent
    /// from).
    pub fn pools(&self) -> usize {
        self.inner.pools.read().len()
    }

    /// Sends `request` (its URI absolute, `http`) on the current runtime's pool and waits
    /// for the answer's head. Must be called within a tokio runtime.
    ///
    /// # Errors
    ///
    /// A transport failure as [`error_from_hyper`] reads it: [`LlmErrorKind::Connect`]
    /// (refused, reset, closed before the answer) or [`LlmErrorKind::Timeout`] (the connect
    /// timeout), without the URL.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the request (its connection is closed, not reused).
    pub fn send(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> impl Future<Output = Result<http::Response<hyper::body::Incoming>, LlmError>> + Send + 'static
    {
        let id = tokio::runtime::Handle::current().id();
        // The common case: this runtime's pool exists, found under a shared lock (every
        // runtime of a per-core gateway reads it at once) and used without a clone.
        let found = {
            let pools = self.inner.pools.read();
            match pools.iter().find(|(of, _)| *of == id) {
                Some((_, pool)) => Ok(pool.request(request)),
                None => Err(request),
            }
        };
        let response = found.unwrap_or_else(|request| self.new_pool(id).request(request));
        async move { response.await.map_err(|err| error_from_hyper(&err)) }
    }

    /// Makes the pool of runtime `id` (on its first request), unless another request made it
    /// meanwhile.
    fn new_pool(&self, id: tokio::runtime::Id) -> Pool {
        let mut pools = self.inner.pools.write();
        if let Some((_, pool)) = pools.iter().find(|(of, _)| *of == id) {
            return pool.clone();
        }
        let pool = build_pool(self.inner.options);
        pools.push((id, pool.clone()));
        pool
    }
}

fn build_pool(options: ClientOptions) -> Pool {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(options.connect_timeout()));
    connector.set_keepalive(Some(TCP_KEEPALIVE));
    connector.set_keepalive_interval(Some(TCP_KEEPALIVE));
    connector.set_keepalive_retries(Some(3));
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .http2_only(options.http2_prior_knowledge())
        .http2_keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
        .http2_keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT)
        .http2_keep_alive_while_idle(false);
    builder.build(connector)
}

/// Reads a transport error from hyper-util's client into an [`LlmError`]: a connect
/// timeout is [`LlmErrorKind::Timeout`], anything else before the answer's head
/// [`LlmErrorKind::Connect`] (the request may not have reached the provider; retrying is
/// safe). The message is the innermost cause's (never the URL).
pub fn error_from_hyper(err: &hyper_util::client::legacy::Error) -> LlmError {
    let timed_out = causes(err).any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    });
    let kind = if timed_out {
        LlmErrorKind::Timeout
    } else {
        LlmErrorKind::Connect
    };
    LlmError::new(kind, innermost(err).unwrap_or_else(|| kind.to_string()))
}

/// A failure while reading a body that had started: the answer is cut.
pub(crate) fn body_error_from_hyper(err: &hyper::Error) -> LlmError {
    let detail = innermost(err).unwrap_or_else(|| err.to_string());
    LlmError::new(
        LlmErrorKind::StreamInterrupted,
        format!("the connection broke during the body: {detail}"),
    )
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
