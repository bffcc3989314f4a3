//! [`RedisStore`]: the connection, its supervisor, and the [`StateStore`] methods.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use brace_circuit::{CircuitHandle, CircuitState};
use brace_failover::StoreUnavailable;
use brace_failover::store::{ApplyPin, StateStore, StoreFuture};
use futures_util::StreamExt;
use parking_lot::{Mutex, RwLock};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

use crate::circuit::Share;
use crate::config::RedisConfig;
use crate::error::ConnectError;

/// The quota script: a one-minute-ish window of one-second buckets in a hash (field: the
/// Unix second by Redis's clock, value: units). `reserve` grants what fits under the limit
/// counting every bucket of the last `window` seconds (strict: whole seconds, rounded
/// towards more); `charge` adds without a cap (usage beyond an estimate).
const QUOTA_LUA: &str = r"
local now = tonumber(redis.call('TIME')[1])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
if ARGV[4] == 'charge' then
  redis.call('HINCRBY', KEYS[1], now, want)
  redis.call('EXPIRE', KEYS[1], window + 1)
  return want
end
local fields = redis.call('HGETALL', KEYS[1])
local used = 0
for i = 1, #fields, 2 do
  local second = tonumber(fields[i])
  if second < now - window then
    redis.call('HDEL', KEYS[1], fields[i])
  else
    used = used + tonumber(fields[i + 1])
  end
end
local grant = math.min(want, limit - used)
if grant < 0 then grant = 0 end
if grant > 0 then
  redis.call('HINCRBY', KEYS[1], now, grant)
end
redis.call('EXPIRE', KEYS[1], window + 1)
return grant
";

/// The longest wait between two reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// A [`StateStore`] in Redis: replicas given the same Redis (and key prefix) share circuit
/// transitions with one probe lease per provider, the pinned level, a response-cache tier
/// and rate-limit windows. See the [crate docs](crate) for how.
///
/// # Clone
///
/// Cheap: clones are the same store (one connection, one supervisor task). The background
/// tasks end when the last clone is dropped.
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: RedisConfig,
    pub(crate) replica: Arc<str>,
    channel: String,
    pub(crate) conn: ConnectionManager,
    pub(crate) runtime: tokio::runtime::Handle,
    up: AtomicBool,
    up_watch: watch::Sender<bool>,
    /// An outage has been logged and not yet ended.
    outage_logged: AtomicBool,
    writes: mpsc::Sender<redis::Pipeline>,
    dropped_writes: AtomicU64,
    pub(crate) circuits: RwLock<HashMap<String, Arc<Share>>>,
    pins: RwLock<Vec<ApplyPin>>,
    /// A pin or release made here that Redis has not seen (made while it was down).
    pending_pin: Mutex<Option<PendingPin>>,
    quota: redis::Script,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().drain(..) {
            task.abort();
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.config.url)
            .field("key_prefix", &self.inner.config.key_prefix)
            .field("replica", &self.inner.replica)
            .field("up", &self.inner.is_up())
            .finish_non_exhaustive()
    }
}

/// What replicas tell each other on the pub/sub channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Message {
    Circuit {
        from: String,
        provider: String,
        state: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_ms: Option<u64>,
    },
    Pin {
        from: String,
        level: Option<String>,
    },
}

/// A pin (`Some(level)`) or a release (`None`) made while Redis was down.
#[derive(Debug)]
struct PendingPin(Option<String>);

/// What a circuit's key holds.
#[derive(Debug, Serialize, Deserialize)]
struct StoredCircuit {
    state: String,
}

pub(crate) fn state_name(state: CircuitState) -> &'static str {
    state.as_str()
}

pub(crate) fn parse_state(name: &str) -> Option<CircuitState> {
    Some(match name {
        "closed" => CircuitState::Closed,
        "open" => CircuitState::Open,
        "half_open" => CircuitState::HalfOpen,
        "disabled" => CircuitState::Disabled,
        "forced_open" => CircuitState::ForcedOpen,
        "metrics_only" => CircuitState::MetricsOnly,
        _ => return None,
    })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl RedisStore {
    /// Starts a store for Redis at `config.url`: it connects in the background, so a Redis
    /// that is down does not stop the application — the store is down
    /// ([`is_up`](StateStore::is_up) is `false`, everything is local) until it connects.
    ///
    /// # Errors
    ///
    /// [`ConnectError`] when the URL is not a Redis URL, or outside a tokio runtime. The
    /// error never shows the URL's password.
    pub fn connect(config: RedisConfig) -> Result<Self, ConnectError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ConnectError::new("a Redis state store needs a tokio runtime"))?;
        let client = redis::Client::open(config.url.expose()).map_err(|err| {
            ConnectError::new(format!(
                "invalid Redis URL {}: {}",
                config.url,
                config.url.scrub(&err.to_string())
            ))
        })?;
        let manager_config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(config.reconnect_delay)
            .set_max_delay(MAX_RECONNECT_DELAY)
            .set_connection_timeout(Some(config.timeout.max(Duration::from_millis(250))))
            .set_response_timeout(Some(config.timeout.max(Duration::from_millis(250))));
        let _guard = runtime.enter();
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(|err| ConnectError::new(config.url.scrub(&err.to_string())))?;
        let (writes, queue) = mpsc::channel(config.write_queue.max(1));
        let replica: Arc<str> = format!("{:016x}", fastrand::u64(..)).into();
        let inner = Arc::new(Inner {
            channel: format!("{}events", config.key_prefix),
            config,
            replica,
            conn,
            runtime: runtime.clone(),
            up: AtomicBool::new(false),
            up_watch: watch::channel(false).0,
            outage_logged: AtomicBool::new(false),
            writes,
            dropped_writes: AtomicU64::new(0),
            circuits: RwLock::new(HashMap::new()),
            pins: RwLock::new(Vec::new()),
            pending_pin: Mutex::new(None),
            quota: redis::Script::new(QUOTA_LUA),
            tasks: Mutex::new(Vec::new()),
        });
        let writer = runtime.spawn(write_loop(
            Arc::downgrade(&inner),
            inner.conn.clone(),
            queue,
        ));
        let supervisor = runtime.spawn(supervise(Arc::downgrade(&inner), client));
        inner
            .tasks
            .lock()
            .extend([writer.abort_handle(), supervisor.abort_handle()]);
        Ok(Self { inner })
    }

    /// This replica's id in the store (random per store).
    pub fn replica_id(&self) -> &str {
        &self.inner.replica
    }

    /// Writes dropped because the queue was full.
    pub fn dropped_writes(&self) -> u64 {
        self.inner.dropped_writes.load(Ordering::Relaxed)
    }

    /// Waits until the store is up (connected, subscribed and resynchronised), or for at
    /// most `limit`. Returns whether it is up.
    pub async fn wait_up(&self, limit: Duration) -> bool {
        let mut up = self.inner.up_watch.subscribe();
        timeout(limit, up.wait_for(|up| *up)).await.is_ok()
    }
}

impl Inner {
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub(crate) fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{name}", self.config.key_prefix)
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            if self.outage_logged.swap(false, Ordering::AcqRel) {
                tracing::info!(url = %self.config.url, "state store back: replicas share state again");
            } else {
                tracing::info!(url = %self.config.url, "state store connected");
            }
            self.up_watch.send_replace(true);
        }
    }

    fn mark_down(&self, reason: &str) {
        self.up.store(false, Ordering::Release);
        self.up_watch.send_replace(false);
        if !self.outage_logged.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                url = %self.config.url,
                reason = %self.config.url.scrub(reason),
                "state store unreachable: every replica serves from local state until it is back"
            );
        }
    }

    /// Queues a write; dropped while the store is down (the resync after it returns sends
    /// what matters) or when the queue is full.
    pub(crate) fn send(&self, pipe: redis::Pipeline) {
        if !self.is_up() {
            return;
        }
        if self.writes.try_send(pipe).is_err() {
            self.dropped_writes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A command with the store's timeout.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, String> {
        let mut conn = self.conn.clone();
        match timeout(self.config.timeout, command.query_async(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!(
                "no answer within {}ms",
                self.config.timeout.as_millis()
            )),
        }
    }

    /// Shares a circuit transition: its key (an open with its wait as the key's time to
    /// live, forced states without one, closed deletes it) and a message to the others.
    pub(crate) fn publish_circuit(
        &self,
        provider: &str,
        state: CircuitState,
        wait: Option<Duration>,
    ) {
        let key = self.key("circuit", provider);
        let mut pipe = redis::pipe();
        match state {
            CircuitState::Closed => {
                pipe.cmd("DEL").arg(&key).ignore();
            }
            CircuitState::HalfOpen => return,
            _ => {
                let value = serde_json::to_string(&StoredCircuit {
                    state: state_name(state).to_owned(),
                })
                .unwrap_or_default();
                let set = pipe.cmd("SET").arg(&key).arg(value);
                if state == CircuitState::Open {
                    set.arg("PX").arg(millis(wait.unwrap_or_default()));
                }
                set.ignore();
            }
        }
        let message = Message::Circuit {
            from: self.replica.to_string(),
            provider: provider.to_owned(),
            state: state_name(state).to_owned(),
            wait_ms: wait.map(millis),
        };
        self.publish(&mut pipe, &message);
        self.send(pipe);
    }

    fn publish(&self, pipe: &mut redis::Pipeline, message: &Message) {
        if let Ok(payload) = serde_json::to_string(message) {
            pipe.cmd("PUBLISH").arg(&self.channel).arg(payload).ignore();
        }
    }

    fn receive(&self, payload: &[u8]) {
        let Ok(message) = serde_json::from_slice::<Message>(payload) else {
            tracing::debug!("state store: ignored a message that is not brace's");
            return;
        };
        match message {
            Message::Circuit {
                from,
                provider,
                state,
                wait_ms,
            } if *from != *self.replica => {
                let share = self.circuits.read().get(&provider).cloned();
                if let (Some(share), Some(state)) = (share, parse_state(&state)) {
                    share.apply_remote(state, wait_ms.map(Duration::from_millis));
                }
            }
            Message::Pin { from, level } if *from != *self.replica => {
                self.apply_pin(level.as_deref());
            }
            _ => {}
        }
    }

    fn apply_pin(&self, level: Option<&str>) {
        for apply in self.pins.read().iter() {
            apply(level);
        }
    }

    /// After (re)connecting: learns what the others decided while this replica was away,
    /// and shares what it decided alone.
    async fn resync(&self) -> Result<(), String> {
        let circuits: Vec<(String, Arc<Share>)> = self
            .circuits
            .read()
            .iter()
            .map(|(name, share)| (name.clone(), share.clone()))
            .collect();
        for (provider, share) in circuits {
            let key = self.key("circuit", &provider);
            let mut pipe = redis::pipe();
            pipe.cmd("GET").arg(&key).cmd("PTTL").arg(&key);
            let mut conn = self.conn.clone();
            let (stored, ttl): (Option<String>, i64) =
                match timeout(self.config.timeout, pipe.query_async(&mut conn)).await {
                    Ok(Ok(found)) => found,
                    Ok(Err(err)) => return Err(err.to_string()),
                    Err(_) => return Err("resync timed out".to_owned()),
                };
            let stored = stored
                .and_then(|text| serde_json::from_str::<StoredCircuit>(&text).ok())
                .and_then(|stored| parse_state(&stored.state));
            match stored {
                Some(state) => {
                    let wait = (state == CircuitState::Open)
                        .then(|| Duration::from_millis(u64::try_from(ttl).unwrap_or(0)));
                    share.apply_remote(state, wait);
                }
                None => share.publish_local(self),
            }
        }
        let pending = self.pending_pin.lock().take();
        match pending {
            Some(PendingPin(level)) => self.write_pin(level.as_deref()),
            None => {
                let level: Option<String> = self
                    .query(redis::cmd("GET").arg(self.key("pin", "level")))
                    .await?;
                self.apply_pin(level.as_deref());
            }
        }
        Ok(())
    }

    fn write_pin(&self, level: Option<&str>) {
        let key = self.key("pin", "level");
        let mut pipe = redis::pipe();
        match level {
            Some(level) => pipe.cmd("SET").arg(&key).arg(level).ignore(),
            None => pipe.cmd("DEL").arg(&key).ignore(),
        };
        self.publish(
            &mut pipe,
            &Message::Pin {
                from: self.replica.to_string(),
                level: level.map(str::to_owned),
            },
        );
        self.send(pipe);
    }

    pub(crate) fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        let task = self.runtime.spawn(future);
        let mut tasks = self.tasks.lock();
        tasks.retain(|task| !task.is_finished());
        tasks.push(task.abort_handle());
    }
}

/// Sends queued writes, one pipeline at a time.
async fn write_loop(
    inner: Weak<Inner>,
    mut conn: ConnectionManager,
    mut queue: mpsc::Receiver<redis::Pipeline>,
) {
    while let Some(pipe) = queue.recv().await {
        let Some(limit) = inner.upgrade().map(|inner| inner.config.timeout) else {
            return;
        };
        match timeout(limit, pipe.exec_async(&mut conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::debug!(error = %err, "state store: a write failed"),
            Err(_) => tracing::debug!("state store: a write timed out"),
        }
    }
}

/// Keeps the pub/sub subscription and the health check going, reconnecting with a growing
/// delay, for as long as the store lives.
async fn supervise(inner: Weak<Inner>, client: redis::Client) {
    let Some(first) = inner.upgrade().map(|inner| inner.config.reconnect_delay) else {
        return;
    };
    let mut delay = first;
    loop {
        let mut connected = false;
        let reason = session(&inner, &client, &mut connected).await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        strong.mark_down(&reason);
        drop(strong);
        if connected {
            delay = first;
        }
        tokio::time::sleep(delay).await;
        if !connected {
            delay = (delay * 2).min(MAX_RECONNECT_DELAY);
        }
    }
}

/// One connected session: subscribe, check, resync, then relay messages and check health
/// until something fails; returns why it ended.
async fn session(inner: &Weak<Inner>, client: &redis::Client, connected: &mut bool) -> String {
    match run_session(inner, client, connected).await {
        Ok(never) => match never {},
        Err(reason) => reason,
    }
}

async fn run_session(
    inner: &Weak<Inner>,
    client: &redis::Client,
    connected: &mut bool,
) -> Result<std::convert::Infallible, String> {
    let (limit, channel, health) = {
        let strong = inner.upgrade().ok_or("store dropped")?;
        (
            strong.config.timeout.max(Duration::from_millis(250)),
            strong.channel.clone(),
            strong.config.health_interval,
        )
    };
    let mut pubsub = timeout(limit, client.get_async_pubsub())
        .await
        .map_err(|_| "connecting timed out".to_owned())?
        .map_err(|err| err.to_string())?;
    timeout(limit, pubsub.subscribe(&channel))
        .await
        .map_err(|_| "subscribing timed out".to_owned())?
        .map_err(|err| err.to_string())?;
    {
        let strong = inner.upgrade().ok_or("store dropped")?;
        let _: String = strong.query(&redis::cmd("PING")).await?;
        // Up before the resync, so that the resync's writes are sent.
        strong.mark_up();
        *connected = true;
        if let Err(err) = strong.resync().await {
            return Err(format!("resync failed: {err}"));
        }
    }
    let mut messages = pubsub.into_on_message();
    let mut checks = tokio::time::interval(health);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    checks.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return Err("the pub/sub connection closed".to_owned());
                };
                let strong = inner.upgrade().ok_or("store dropped")?;
                strong.receive(message.get_payload_bytes());
            }
            _ = checks.tick() => {
                let strong = inner.upgrade().ok_or("store dropped")?;
                let _: String = strong.query(&redis::cmd("PING")).await?;
            }
        }
    }
}

// ===== StateStore =====

impl StateStore for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn is_up(&self) -> bool {
        self.inner.is_up()
    }

    fn share_circuit(&self, provider: &str, circuit: &CircuitHandle) {
        Share::start(&self.inner, provider, circuit);
    }

    fn publish_pin(&self, level: Option<&str>) {
        if self.inner.is_up() {
            self.inner.write_pin(level);
        } else {
            *self.inner.pending_pin.lock() = Some(PendingPin(level.map(str::to_owned)));
        }
    }

    fn on_remote_pin(&self, apply: ApplyPin) {
        self.inner.pins.write().push(apply);
    }

    fn cache_get(&self, key: &[u8; 32]) -> StoreFuture<Option<Vec<u8>>> {
        if !self.inner.is_up() {
            return Box::pin(std::future::ready(None));
        }
        let inner = self.inner.clone();
        let key = inner.key("cache", &hex(key));
        Box::pin(async move { inner.query(redis::cmd("GET").arg(key)).await.ok().flatten() })
    }

    fn cache_put(&self, key: &[u8; 32], value: Vec<u8>, ttl: Duration) {
        if value.len() > self.inner.config.max_cache_entry_bytes {
            return;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.inner.key("cache", &hex(key)))
            .arg(value)
            .arg("PX")
            .arg(millis(ttl))
            .ignore();
        self.inner.send(pipe);
    }

    fn reserve(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
        want: u64,
    ) -> StoreFuture<Result<u64, StoreUnavailable>> {
        if !self.inner.is_up() {
            return Box::pin(std::future::ready(Err(StoreUnavailable::new(
                "redis is down",
            ))));
        }
        let inner = self.inner.clone();
        let key = inner.key("quota", key);
        let window = window.as_secs().max(1);
        Box::pin(async move {
            let mut conn = inner.conn.clone();
            let mut invocation = inner.quota.key(key);
            invocation.arg(limit).arg(window).arg(want).arg("reserve");
            match timeout(
                inner.config.timeout,
                invocation.invoke_async::<u64>(&mut conn),
            )
            .await
            {
                Ok(Ok(granted)) => Ok(granted),
                Ok(Err(err)) => Err(StoreUnavailable::new(
                    inner.config.url.scrub(&err.to_string()),
                )),
                Err(_) => Err(StoreUnavailable::new("redis answered too slowly")),
            }
        })
    }

    fn charge(&self, key: &str, window: Duration, amount: u64) {
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(QUOTA_LUA)
            .arg(1)
            .arg(self.inner.key("quota", key))
            .arg(0)
            .arg(window.as_secs().max(1))
            .arg(amount)
            .arg("charge")
            .ignore();
        self.inner.send(pipe);
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(64);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}
