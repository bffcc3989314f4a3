//! Hot reload: a new configuration is put in force without a restart, dropping no connection
//! and no request.
//!
//! [`Gateway::reload_from_file`] reads the file and checks it whole first; a file that does
//! not load (bad YAML, an unknown key, a route naming an unknown provider…) leaves the
//! running configuration in force, and the error — with its line and column — is logged,
//! counted (`brace_config_reload_total{outcome="invalid"}`) and shown by `GET /v1/config`.
//! A file that loads is built into a new stack over the gateway's state and swapped in
//! atomically: requests already running finish on the stack they started on, the next
//! ones take the new one. What carries over is described on [`Gateway`]: each unchanged
//! provider's circuit, latency, counters and client, and the degradation level and cache
//! while their sections are unchanged.
//!
//! [`watch`] reloads on SIGHUP and when the file's content changes (polled, so that editors
//! that replace the file and network file systems are seen alike; a change is acted on once
//! the file has stopped changing for [`WatchOptions::debounce`]).
//!
//! `listen`, `admin`, `auth`, `state`, `telemetry` and the `server` section (but `request_timeout`,
//! `max_retry_after` and `max_stream_duration`, read for each request) are read once at
//! start: a reload that changes them logs that they wait for a restart.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use tokio::time::Instant;

use crate::config::{ConfigError, GatewayConfig};
use crate::stack::{Gateway, GatewayBuildError, Rebuilt};

/// The hash `GET /v1/config` shows: BLAKE3 of the configuration as it serializes (its
/// meaning, not its text: comments and key order do not change it), 16 hex digits.
pub fn config_hash(config: &GatewayConfig) -> String {
    let bytes = serde_json::to_vec(config).unwrap_or_default();
    blake3::hash(&bytes).to_hex()[..16].to_owned()
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The new configuration is in force.
    Applied(Rebuilt),
    /// The configuration means the same as the one in force: nothing was rebuilt.
    Unchanged,
}

/// A reload that left the running configuration in force.
#[derive(Debug)]
pub enum ReloadError {
    /// The file could not be read or is not a valid configuration.
    Invalid(ConfigError),
    /// The configuration is valid but its stack could not be built.
    Build(GatewayBuildError),
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(err) => write!(f, "invalid configuration: {err}"),
            Self::Build(err) => write!(f, "configuration cannot be built: {err}"),
        }
    }
}

impl std::error::Error for ReloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Invalid(err) => Some(err),
            Self::Build(err) => Some(err),
        }
    }
}

/// The outcomes `brace_config_reload_total` counts.
const OUTCOMES: [&str; 4] = ["applied", "unchanged", "invalid", "failed"];

/// The gateway's reload bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct Reloads {
    /// One reload at a time.
    lock: Mutex<()>,
    source: Mutex<Option<String>>,
    last_error: Mutex<Option<(String, Instant)>>,
    counts: [AtomicU64; 4],
}

impl Reloads {
    fn count(&self, outcome: usize) {
        self.counts[outcome].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("brace_config_reload_total", "outcome" => OUTCOMES[outcome]).increment(1);
    }
}

impl Gateway {
    /// Puts `config` in force (see the [module docs](self)).
    ///
    /// # Errors
    ///
    /// The stack of `config` cannot be built; the running one stays in force.
    pub fn reload(&self, config: GatewayConfig) -> Result<Reloaded, GatewayBuildError> {
        let _one_at_a_time = self.reloads.lock.lock();
        let result = self.reload_locked(config);
        let outcome = match &result {
            Ok(Reloaded::Applied(_)) => 0,
            Ok(Reloaded::Unchanged) => 1,
            Err(err) => {
                *self.reloads.last_error.lock() = Some((err.to_string(), Instant::now()));
                3
            }
        };
        self.reloads.count(outcome);
        result
    }

    fn reload_locked(&self, config: GatewayConfig) -> Result<Reloaded, GatewayBuildError> {
        let previous = self.config();
        if config == *previous {
            tracing::info!("configuration reloaded: unchanged");
            return Ok(Reloaded::Unchanged);
        }
        let restart = restart_only(&previous, &config);
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        let rebuilt = self.rebuild(config).inspect_err(|err| {
            tracing::error!(error = %err, "configuration not reloaded; the running one stays in force");
        })?;
        tracing::info!(
            hash = %self.live.load().hash,
            kept = ?rebuilt.kept,
            changed = ?rebuilt.changed,
            added = ?rebuilt.added,
            removed = ?rebuilt.removed,
            degradation_kept = rebuilt.degradation_kept,
            "configuration reloaded"
        );
        if !restart.is_empty() {
            tracing::warn!(
                sections = ?restart,
                "configuration reloaded, but these settings are read at start: they take effect at the next restart"
            );
        }
        Ok(Reloaded::Applied(rebuilt))
    }

    /// Reads the configuration file at `path` and puts it in force; a file that does not
    /// load leaves the running configuration in force. Every outcome is logged and counted.
    ///
    /// # Errors
    ///
    /// Why the running configuration stays in force.
    pub fn reload_from_file(&self, path: &Path) -> Result<Reloaded, ReloadError> {
        self.set_config_source(path.display().to_string());
        match GatewayConfig::from_file(path) {
            Ok(config) => self.reload(config).map_err(ReloadError::Build),
            Err(err) => {
                tracing::error!(
                    line = err.line(),
                    column = err.column(),
                    "configuration not reloaded; the running one stays in force: {err}"
                );
                *self.reloads.last_error.lock() = Some((err.to_string(), Instant::now()));
                self.reloads.count(2);
                Err(ReloadError::Invalid(err))
            }
        }
    }

    /// Says where the configuration in force came from (a file name, or "embedded demo"),
    /// for `GET /v1/config`.
    pub fn set_config_source(&self, source: impl Into<String>) {
        *self.reloads.source.lock() = Some(source.into());
    }

    /// `GET /v1/config`: the configuration in force (URL passwords and secret-looking query
    /// parameters elided; API keys are never in it, only the names of their variables), its
    /// hash, and how reloads went.
    pub fn config_json(&self) -> serde_json::Value {
        let live = self.live.load_full();
        let mut config = serde_json::to_value(&*live.config).unwrap_or_else(|_| json!({}));
        redact(&mut config);
        let now = Instant::now();
        let counts: serde_json::Map<_, _> = OUTCOMES
            .iter()
            .zip(&self.reloads.counts)
            .map(|(name, count)| ((*name).to_owned(), json!(count.load(Ordering::Relaxed))))
            .collect();
        let last_error = self
            .reloads
            .last_error
            .lock()
            .as_ref()
            .map(|(message, at)| {
                json!({
                    "message": message,
                    "s_ago": now.saturating_duration_since(*at).as_secs_f64(),
                })
            });
        json!({
            "hash": live.hash,
            "generation": live.generation,
            "source": *self.reloads.source.lock(),
            "loaded_s_ago": now.saturating_duration_since(live.loaded_at).as_secs_f64(),
            "reloads": counts,
            "last_error": last_error,
            "config": config,
        })
    }
}

/// The settings read once at start that differ between `old` and `new`.
fn restart_only(old: &GatewayConfig, new: &GatewayConfig) -> Vec<&'static str> {
    let mut sections = Vec::new();
    if old.listen != new.listen {
        sections.push("listen");
    }
    // Read for each request: the deadline and the bounds on what clients are told.
    let per_request = |server: &crate::config::ServerConfig| {
        let mut server = server.clone();
        server.request_timeout = Duration::ZERO;
        server.max_retry_after = Duration::ZERO;
        server.max_stream_duration = None;
        server
    };
    if per_request(&old.server) != per_request(&new.server) {
        sections.push("server (but request_timeout, max_retry_after, max_stream_duration)");
    }
    if old.admin != new.admin {
        sections.push("admin");
    }
    if old.auth != new.auth {
        sections.push("auth");
    }
    if old.state != new.state {
        sections.push("state");
    }
    if old.telemetry != new.telemetry {
        sections.push("telemetry");
    }
    sections
}

/// Elides what could be a secret in a configuration's values: a URL's password, and the
/// value of a query parameter whose name says key, token, secret, password or signature.
pub(crate) fn redact(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) => {
            if let Some(redacted) = redact_url(text) {
                *text = redacted;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        serde_json::Value::Object(map) => map.values_mut().for_each(redact),
        _ => {}
    }
}

const REDACTED: &str = "REDACTED";

fn redact_url(text: &str) -> Option<String> {
    if !text.contains("://") {
        return None;
    }
    let mut url = reqwest::Url::parse(text).ok()?;
    let mut changed = false;
    if url.password().is_some() {
        let _ = url.set_password(Some(REDACTED));
        changed = true;
    }
    let secret = |name: &str| {
        let name = name.to_ascii_lowercase();
        ["key", "token", "secret", "password", "sig"]
            .iter()
            .any(|word| name.contains(word))
    };
    if url.query_pairs().any(|(name, _)| secret(&name)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let value = if secret(&name) {
                    REDACTED.to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        changed = true;
    }
    changed.then(|| url.to_string())
}

// ===== watching =====

/// How [`watch`] notices a changed file.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// How often the file is read to see whether it changed (default 1 s); `None` reloads on
    /// SIGHUP only.
    pub poll_interval: Option<Duration>,
    /// How long a changed file must stay unchanged before it is reloaded (default 250 ms):
    /// an editor that writes a file in several steps is reloaded once, when it is done.
    pub debounce: Duration,
    /// Reload on SIGHUP (default on; Unix only).
    pub sighup: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            poll_interval: Some(Duration::from_secs(1)),
            debounce: Duration::from_millis(250),
            sighup: true,
        }
    }
}

/// What a file held when last read: its content's hash, or why it could not be read.
fn fingerprint(path: &Path) -> Result<blake3::Hash, std::io::ErrorKind> {
    std::fs::read(path)
        .map(|bytes| blake3::hash(&bytes))
        .map_err(|err| err.kind())
}

/// Reloads `gateway` from `path` on SIGHUP and whenever the file's content changes (see the
/// [module docs](self)); runs until dropped. [`Gateway::reload_from_file`] logs and counts
/// each outcome.
///
/// # Cancel safety
///
/// Dropping it stops watching; a reload is never left half done (it runs synchronously).
pub async fn watch(gateway: Arc<Gateway>, path: PathBuf, options: WatchOptions) {
    gateway.set_config_source(path.display().to_string());
    let mut hangups = hangups(options.sighup);
    // Unknown at first: the file may have changed since the configuration in force was read
    // from it.
    let mut seen = None;
    let mut poll = options.poll_interval.map(|every| {
        let mut interval = tokio::time::interval_at(Instant::now() + every, every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    tracing::info!(path = %path.display(), "watching the configuration file (and SIGHUP) for changes");
    loop {
        let tick = async {
            match poll.as_mut() {
                Some(interval) => {
                    interval.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        let hangup = async {
            match hangups.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tick => {
                let mut current = fingerprint(&path);
                if seen.as_ref() == Some(&current) {
                    continue;
                }
                if seen.is_none() {
                    seen = Some(current);
                    let same = GatewayConfig::from_file(&path)
                        .is_ok_and(|config| config == *gateway.config());
                    if same {
                        continue;
                    }
                }
                // Changed: wait until it stops changing.
                loop {
                    tokio::time::sleep(options.debounce).await;
                    let next = fingerprint(&path);
                    if next == current {
                        break;
                    }
                    current = next;
                }
                seen = Some(current);
                tracing::info!(path = %path.display(), "configuration file changed: reloading");
            }
            () = hangup => {
                seen = Some(fingerprint(&path));
                tracing::info!(path = %path.display(), "SIGHUP: reloading the configuration");
            }
        }
        let _ = gateway.reload_from_file(&path);
    }
}

/// SIGHUP as a stream, where there is one.
struct Hangups {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Hangups {
    async fn recv(&mut self) {
        #[cfg(unix)]
        if self.signal.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await;
    }
}

fn hangups(wanted: bool) -> Option<Hangups> {
    if !wanted {
        return None;
    }
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Some(Hangups { signal }),
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGHUP; reloading on file changes only");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_and_secret_parameters_are_elided() {
        let mut value = json!({
            "a": "https://user:hunter2@example.com/v1",
            "b": ["https://example.com/v1?api-key=abc&region=eu"],
            "c": "http://127.0.0.1:8080/v1",
            "d": "not a url",
        });
        redact(&mut value);
        let text = value.to_string();
        assert!(!text.contains("hunter2") && !text.contains("abc"), "{text}");
        assert_eq!(value["a"], "https://user:REDACTED@example.com/v1");
        assert_eq!(
            value["b"][0],
            "https://example.com/v1?api-key=REDACTED&region=eu"
        );
        assert_eq!(value["c"], "http://127.0.0.1:8080/v1");
        assert_eq!(value["d"], "not a url");
    }

    #[test]
    fn the_hash_follows_meaning_not_text() {
        let a = GatewayConfig::from_yaml("providers:\n  - name: openai\n    model: m\n").unwrap();
        let b = GatewayConfig::from_yaml(
            "# a comment\nproviders:\n  - model: m   # reordered\n    name: openai\n    priority: 1\n",
        )
        .unwrap();
        let c = GatewayConfig::from_yaml("providers:\n  - name: openai\n    model: n\n").unwrap();
        assert_eq!(config_hash(&a), config_hash(&b));
        assert_ne!(config_hash(&a), config_hash(&c));
        assert_eq!(config_hash(&a).len(), 16);
    }

    #[test]
    fn settings_read_at_start_are_named_and_per_request_ones_are_not() {
        let config = |extra: &str| {
            GatewayConfig::from_yaml(&format!(
                "providers:\n  - name: openai\n    model: m\n{extra}"
            ))
            .unwrap()
        };
        let base = config("");
        assert!(restart_only(&base, &base).is_empty());
        // Read for each request: in force at once.
        assert!(restart_only(&base, &config("server:\n  request_timeout: 5s\n")).is_empty());
        assert_eq!(
            restart_only(&base, &config("server:\n  send_timeout: 5s\n")),
            ["server (but request_timeout, max_retry_after, max_stream_duration)"]
        );
        assert_eq!(
            restart_only(
                &base,
                &config("telemetry:\n  otlp_endpoint: http://127.0.0.1:4318\n")
            ),
            ["telemetry"]
        );
    }
}
