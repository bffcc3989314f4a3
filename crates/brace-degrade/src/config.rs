//! Configuration, as read from a file.

use std::time::Duration;

use crate::error::DegradeConfigError;
use crate::level::{Ladder, Level, NoShape};

/// Everything a [`DegradeLayer`](crate::DegradeLayer) can be configured with.
///
/// Every field has a default; unknown fields are rejected. Durations are humantime text
/// (`30s`, `5m`) or seconds.
///
/// `Sh` is how live levels reshape a request (the request type's
/// [`Degradable::Shape`](brace_core::degrade::Degradable::Shape)); its fields sit beside a
/// level's name (for chat requests, `brace_llm::degrade::Shape`: `{"name": "haiku",
/// "model": "claude-haiku", "max_tokens": 512, "allow": {"tools": false}}`).
///
/// ```
/// use brace_degrade::DegradeConfig;
///
/// #[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
/// #[serde(default, deny_unknown_fields)]
/// struct Shape {
///     brief: bool,
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config: DegradeConfig<Shape> = serde_json::from_str(r#"{
///     "levels": [
///         { "name": "full" },
///         { "name": "brief", "brief": true },
///         { "name": "cached", "kind": "cached" },
///         { "name": "offline", "kind": "static", "message": "Back soon" }
///     ],
///     "cache": { "max_entries": 1000, "ttl": "10m", "admit": "all" },
///     "auto": { "failure_threshold": 3, "window": "10s" }
/// }"#)?;
/// let ladder = config.ladder()?;
/// assert_eq!(ladder.len(), 4);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(
    default,
    deny_unknown_fields,
    bound(
        serialize = "Sh: Clone + Default + PartialEq + serde::Serialize",
        deserialize = "Sh: Default + PartialEq + serde::Deserialize<'de>"
    )
)]
pub struct DegradeConfig<Sh = NoShape> {
    /// The ladder, top first; [`Ladder::standard`] when absent.
    pub levels: Option<Vec<Level<Sh>>>,
    /// The level to start at, by name; the top when absent.
    pub start: Option<String>,
    /// How many more live attempts, each one level further down, a request gets after a
    /// failure (cached and static levels are always tried). Default 1: a failure is retried
    /// once at the next level down.
    pub fallback_attempts: u32,
    /// Whether a request whose levels all failed is answered by a static level below them
    /// (default `true`, seed behaviour). With `false`, a static level answers only when it
    /// is the current level (the ladder dropped there, or it is pinned); a failing request
    /// otherwise gets its real error (say, a 429 with its Retry-After), so callers can back
    /// off instead of receiving a placeholder.
    pub fallback_to_static: bool,
    /// The response cache.
    pub cache: CacheConfig,
    /// Automatic movement of the current level.
    pub auto: AutoConfig,
}

impl<Sh> Default for DegradeConfig<Sh> {
    fn default() -> Self {
        Self {
            levels: None,
            start: None,
            fallback_attempts: 1,
            fallback_to_static: true,
            cache: CacheConfig::default(),
            auto: AutoConfig::default(),
        }
    }
}

impl<Sh: Clone + Default> DegradeConfig<Sh> {
    /// The configured ladder.
    ///
    /// # Errors
    ///
    /// [`DegradeConfigError`] if the levels are empty or two share a name.
    pub fn ladder(&self) -> Result<Ladder<Sh>, DegradeConfigError> {
        match &self.levels {
            Some(levels) => Ladder::new(levels.clone()),
            None => Ok(Ladder::standard()),
        }
    }

    /// Checks everything that deserializing cannot.
    ///
    /// # Errors
    ///
    /// [`DegradeConfigError`] saying what is wrong.
    pub fn validate(&self) -> Result<Ladder<Sh>, DegradeConfigError> {
        let ladder = self.ladder()?;
        if let Some(start) = &self.start
            && ladder.index_of(start).is_none()
        {
            return Err(DegradeConfigError::new(format!(
                "start level `{start}` is not on the ladder"
            )));
        }
        if self.cache.max_entries == 0 || self.cache.max_bytes == 0 {
            return Err(DegradeConfigError::new(
                "cache.max_entries and cache.max_bytes must be positive (disable with `enabled: false`)",
            ));
        }
        if self.cache.ttl.is_zero() {
            return Err(DegradeConfigError::new("cache.ttl must be positive"));
        }
        if self.auto.failure_threshold == 0 {
            return Err(DegradeConfigError::new(
                "auto.failure_threshold must be positive",
            ));
        }
        if self.auto.window.is_zero() || self.auto.probe_interval.is_zero() {
            return Err(DegradeConfigError::new(
                "auto.window and auto.probe_interval must be positive",
            ));
        }
        Ok(ladder)
    }
}

/// Which successful responses are stored in the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Admit {
    /// Only requests that say they are deterministic
    /// ([`Degradable::is_deterministic`](brace_core::degrade::Degradable::is_deterministic);
    /// for chat requests: temperature 0 and a single choice). The default: caching a
    /// sampled answer would hand every later caller the same draw.
    #[default]
    Deterministic,
    /// Every successful response.
    All,
    /// None: the cached level then only serves what another layer sharing the cache stored.
    None,
}

/// The response cache's bounds and admission rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Whether there is a cache at all (without one a cached level always misses).
    pub enabled: bool,
    /// At most this many entries. Default 10 000.
    pub max_entries: u64,
    /// At most this many bytes of responses. Default 64 MiB.
    pub max_bytes: u64,
    /// How long an entry is served after it was stored. Default 10 minutes.
    #[serde(with = "brace_core::duration")]
    pub ttl: Duration,
    /// Which responses are stored.
    pub admit: Admit,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
            ttl: Duration::from_mins(10),
            admit: Admit::Deterministic,
        }
    }
}

/// When the current level moves by itself.
///
/// Down: `failure_threshold` failures at the current level within `window` drop it one
/// level. Up: once `recovery_successes` calls in a row succeeded at the current level, or
/// `probe_interval` after the last move or probe, one request is sent as a probe to the
/// nearest live level above; if it succeeds the current level climbs one level (if it fails,
/// that request falls back down as any other). The level therefore never stays down while
/// requests keep coming.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoConfig {
    /// Whether the level moves by itself at all.
    pub enabled: bool,
    /// Failures within `window` that drop the level. Default 5.
    pub failure_threshold: u32,
    /// The window failures are counted over. Default 30 s.
    #[serde(with = "brace_core::duration")]
    pub window: Duration,
    /// Successes in a row at a lowered level before a probe one level up. Default 10.
    pub recovery_successes: u32,
    /// Time after the last move or probe after which a probe is sent anyway. Default 30 s.
    #[serde(with = "brace_core::duration")]
    pub probe_interval: Duration,
}

impl Default for AutoConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_threshold: 5,
            window: Duration::from_secs(30),
            recovery_successes: 10,
            probe_interval: Duration::from_secs(30),
        }
    }
}
