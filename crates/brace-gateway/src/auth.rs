//! Client keys: who may use the data plane, and how often.
//!
//! With an `auth` section, requests to `/v1/chat/completions`, `/v1/completions` and
//! `/v1/models` need `Authorization: Bearer <key>` with a listed key, else 401 in OpenAI's
//! shape. Keys come from `auth.keys_env` (comma-separated) and `auth.keys_file` (one per
//! line, `#` comments); an entry is `KEY` or `NAME KEY`. The file is read again every
//! `auth.reload_interval` when its content changed, and on SIGHUP ([`ClientKeys::watch`]); a
//! file that became unreadable or empty keeps the keys already loaded.
//!
//! Keys are held only as BLAKE3 digests and looked up by digest, so they are never in
//! memory in the clear after loading, never logged and never compared byte by byte. Logs
//! and metrics name a key by its [`ClientKey::id`]: the entry's name, or `key-` and the
//! first 8 hex digits of its digest.
//!
//! `auth.rate_per_minute` gives each key a token bucket of that many requests, refilled
//! evenly over a minute; a request beyond it is answered 429 with `Retry-After`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;

use crate::config::AuthConfig;
use crate::error::ApiError;
use crate::stack::Gateway;

/// The key a request was let in with, in the request's extensions.
#[derive(Debug, Clone)]
pub struct ClientKey {
    id: Arc<str>,
}

impl ClientKey {
    /// The key's name in logs and metrics: its configured name, or `key-` and 8 hex digits
    /// of its digest. Never the key.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The listed client keys. See the [module docs](self).
pub struct ClientKeys {
    /// Keys from the environment, read once at start.
    fixed: Vec<Entry>,
    file: Option<PathBuf>,
    table: RwLock<Arc<Table>>,
    /// The digest of the file's content when it was last loaded.
    file_digest: Mutex<Option<blake3::Hash>>,
    rate_per_minute: Option<u32>,
    reload_interval: Duration,
    /// Counts the loads that changed the keys.
    generation: tokio::sync::watch::Sender<u64>,
}

impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKeys")
            .field("keys", &self.len())
            .field("file", &self.file)
            .field("rate_per_minute", &self.rate_per_minute)
            .finish_non_exhaustive()
    }
}

/// One parsed entry: the key's digest and its id.
struct Entry {
    digest: [u8; 32],
    id: Arc<str>,
}

#[derive(Default)]
struct Table {
    keys: HashMap<[u8; 32], Arc<KeyState>>,
}

struct KeyState {
    id: Arc<str>,
    bucket: Mutex<Bucket>,
}

/// A token bucket: `tokens` as of `at`.
#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl ClientKeys {
    /// Loads the keys `config` lists, reading `keys_env` through `env`.
    ///
    /// # Errors
    ///
    /// A message naming the variable or file when the variable is unset or empty, the
    /// file cannot be read, an entry is malformed, or no key is listed at all.
    pub fn from_config(
        config: &AuthConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let mut fixed = Vec::new();
        if let Some(var) = &config.keys_env {
            let value = env(var)
                .filter(|value| !value.trim().is_empty())
                .ok_or_else(|| {
                    format!(
                        "auth.keys_env: the environment variable {var} is not set or empty; \
                         set it to comma-separated client keys"
                    )
                })?;
            fixed = parse(&value, ',').map_err(|err| format!("auth.keys_env ({var}): {err}"))?;
        }
        let keys = Self {
            fixed,
            file: config.keys_file.clone(),
            table: RwLock::default(),
            file_digest: Mutex::new(None),
            rate_per_minute: config.rate_per_minute,
            reload_interval: config.reload_interval,
            generation: tokio::sync::watch::Sender::new(0),
        };
        keys.reload()?;
        Ok(keys)
    }

    /// How many keys are listed.
    pub fn len(&self) -> usize {
        self.table.read().keys.len()
    }

    /// `true` when no key is listed (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the keys file again if its content changed; returns whether the keys changed.
    /// Rate buckets of keys still listed are kept.
    ///
    /// # Errors
    ///
    /// A message (naming the file, never a key) when the file cannot be read, an entry is
    /// malformed or no key would be left; the keys already loaded stay in force.
    pub fn reload(&self) -> Result<bool, String> {
        let mut entries: Vec<&Entry> = self.fixed.iter().collect();
        let from_file;
        let mut digest = None;
        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path)
                .map_err(|err| format!("auth.keys_file {}: cannot read: {err}", path.display()))?;
            let content = blake3::hash(text.as_bytes());
            if *self.file_digest.lock() == Some(content) {
                return Ok(false);
            }
            from_file = parse(&text, '\n')
                .map_err(|err| format!("auth.keys_file {}: {err}", path.display()))?;
            entries.extend(&from_file);
            digest = Some(content);
        }
        if entries.is_empty() {
            return Err(format!(
                "auth lists no client key ({}): every request would be refused",
                self.sources()
            ));
        }
        let old = self.table.read().clone();
        let now = Instant::now();
        let capacity = self.rate_per_minute.map_or(0.0, f64::from);
        let keys = entries
            .into_iter()
            .map(|entry| {
                let state = old.keys.get(&entry.digest).map_or_else(
                    || {
                        Arc::new(KeyState {
                            id: entry.id.clone(),
                            bucket: Mutex::new(Bucket {
                                tokens: capacity,
                                at: now,
                            }),
                        })
                    },
                    |kept| {
                        Arc::new(KeyState {
                            id: entry.id.clone(),
                            bucket: Mutex::new(*kept.bucket.lock()),
                        })
                    },
                );
                (entry.digest, state)
            })
            .collect();
        *self.table.write() = Arc::new(Table { keys });
        *self.file_digest.lock() = digest;
        self.generation.send_modify(|generation| *generation += 1);
        Ok(true)
    }

    /// Watches the loads that changed the keys: the value counts them (1 after the first).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn sources(&self) -> String {
        match &self.file {
            Some(path) => format!("keys_file {}", path.display()),
            None => "keys_env".to_owned(),
        }
    }

    /// Checks a request's `Authorization` header and takes one request from its key's rate.
    ///
    /// # Errors
    ///
    /// 401 when the key is missing or not listed; 429 with `Retry-After` when the key is
    /// over its rate.
    pub fn check(&self, headers: &http::HeaderMap) -> Result<ClientKey, ApiError> {
        let Some(given) = crate::admin::bearer(headers) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing API key: send `Authorization: Bearer <key>`",
            )
            .with_code("invalid_api_key"));
        };
        let digest = *blake3::hash(given.as_bytes()).as_bytes();
        let Some(state) = self.table.read().keys.get(&digest).cloned() else {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid API key")
                .with_code("invalid_api_key"));
        };
        if let Some(rate) = self.rate_per_minute {
            take(&state.bucket, rate).map_err(|wait| {
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "rate limit reached for key {}: {rate} requests per minute",
                        state.id
                    ),
                )
                .with_code("rate_limit_exceeded")
                .with_retry_after(Some(wait))
            })?;
        }
        Ok(ClientKey {
            id: state.id.clone(),
        })
    }

    /// Reloads the keys file every `reload_interval` (when its content changed) and on
    /// SIGHUP, logging what happened; runs until dropped. [`serve`](crate::serve) runs it
    /// when a keys file is configured.
    pub async fn watch(self: Arc<Self>) {
        if self.file.is_none() {
            return std::future::pending().await;
        }
        // Listening for SIGHUP from the first poll on.
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut every = tokio::time::interval_at(
            tokio::time::Instant::now() + self.reload_interval,
            self.reload_interval,
        );
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let signal = async {
                match hangup.as_mut() {
                    Some(hangup) => hangup.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let signal = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = every.tick() => {}
                _ = signal => {}
            }
            match self.reload() {
                Ok(true) => tracing::info!(keys = self.len(), "client keys reloaded"),
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "client keys not reloaded; the loaded keys stay");
                }
            }
        }
    }
}

/// Takes one token from `bucket` (refilled at `rate` per minute, holding at most `rate`),
/// or says how long until one is there.
fn take(bucket: &Mutex<Bucket>, rate: u32) -> Result<(), Duration> {
    let capacity = f64::from(rate);
    let per_second = capacity / 60.0;
    let now = Instant::now();
    let mut bucket = bucket.lock();
    let refilled = bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * per_second;
    bucket.tokens = refilled.min(capacity);
    bucket.at = now;
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        Ok(())
    } else {
        Err(Duration::from_secs_f64(
            (1.0 - bucket.tokens) * 60.0 / capacity,
        ))
    }
}

/// Parses entries separated by `separator`: `KEY` or `NAME KEY`, blank entries and `#`
/// comments skipped. Errors give the entry's number, never its content.
fn parse(text: &str, separator: char) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    for (index, entry) in text.split(separator).enumerate() {
        let entry = entry.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = entry.split_whitespace().collect();
        let (name, key) = match fields[..] {
            [key] => (None, key),
            [name, key] => (Some(name), key),
            _ => {
                return Err(format!("entry {} is not `KEY` or `NAME KEY`", index + 1));
            }
        };
        let digest = blake3::hash(key.as_bytes());
        let id: Arc<str> = match name {
            Some(name) => name.into(),
            None => format!("key-{}", &digest.to_hex()[..8]).into(),
        };
        entries.push(Entry {
            digest: *digest.as_bytes(),
            id,
        });
    }
    Ok(entries)
}

/// The data plane's key check (see the module docs), as a tower layer: a request without a
/// listed key is answered 401 (or 429 over its rate) in OpenAI's shape and goes no further;
/// an accepted one carries its [`ClientKey`] in its extensions and its id on the request
/// span, and its answer is counted per key. Without an `auth` section requests pass as they
/// are. A layer rather than an `axum::middleware::from_fn`: no boxed future and no clone of
/// the routes per request.
#[derive(Clone)]
pub(crate) struct RequireKeyLayer {
    gateway: Arc<Gateway>,
}

impl RequireKeyLayer {
    pub(crate) fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

impl<S> tower::Layer<S> for RequireKeyLayer {
    type Service = RequireKey<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireKey {
            inner,
            gateway: self.gateway.clone(),
        }
    }
}

/// The service of [`RequireKeyLayer`].
#[derive(Clone)]
pub(crate) struct RequireKey<S> {
    inner: S,
    gateway: Arc<Gateway>,
}

impl<S> tower::Service<Request> for RequireKey<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RequireKeyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let Some(keys) = self.gateway.client_keys() else {
            return RequireKeyFuture::Passed {
                future: self.inner.call(request),
                counted: None,
            };
        };
        match keys.check(request.headers()) {
            Ok(key) => {
                tracing::Span::current().record("key", key.id());
                let id = key.id.clone();
                request.extensions_mut().insert(key);
                RequireKeyFuture::Passed {
                    future: self.inner.call(request),
                    counted: Some((id, self.gateway.clone())),
                }
            }
            Err(err) => {
                self.gateway.metrics.auth_refused(err.status());
                RequireKeyFuture::Refused {
                    response: Some(err.into_response()),
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RequireKey`].
    #[project = RequireKeyProj]
    pub(crate) enum RequireKeyFuture<F> {
        Refused { response: Option<Response> },
        Passed {
            #[pin]
            future: F,
            // The key to count the answer for, when there are keys.
            counted: Option<(Arc<str>, Arc<Gateway>)>,
        },
    }
}

impl<F, E> Future for RequireKeyFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RequireKeyProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .expect("RequireKeyFuture polled after completion"))),
            RequireKeyProj::Passed { future, counted } => {
                let response = ready!(future.poll(cx))?;
                if let Some((id, gateway)) = counted.take() {
                    gateway.metrics.client_request(&id, response.status());
                }
                Poll::Ready(Ok(response))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_keys_or_named_keys_and_errors_never_show_them() {
        let entries = parse("# team keys\nalice sk-alice\n\nsk-anonymous\n", '\n').unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(&*entries[0].id, "alice");
        assert!(entries[1].id.starts_with("key-") && entries[1].id.len() == 12);
        assert!(!entries[1].id.contains("anonymous"));

        let err = parse("a b sk-secret-three", ',').err().unwrap();
        assert!(
            err.contains("entry 1") && !err.contains("sk-secret"),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_holds_the_rate_and_refills_over_a_minute() {
        let bucket = Mutex::new(Bucket {
            tokens: 3.0,
            at: Instant::now(),
        });
        for _ in 0..3 {
            take(&bucket, 3).unwrap();
        }
        // Three a minute: one every 20 s.
        assert_eq!(take(&bucket, 3), Err(Duration::from_secs(20)));
        tokio::time::advance(Duration::from_secs(20)).await;
        take(&bucket, 3).unwrap();
        assert!(take(&bucket, 3).is_err());
        // Never more than the rate, however long it rests.
        tokio::time::advance(Duration::from_hours(1)).await;
        for _ in 0..3 {
            take(&bucket, 3).unwrap();
        }
        assert!(take(&bucket, 3).is_err());
    }
}
