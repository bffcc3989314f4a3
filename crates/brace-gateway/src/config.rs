//! The gateway's YAML configuration.
//!
//! One file describes the providers, the layers and the routes. The seed configuration loads
//! as written:
//!
//! ```
//! let config = brace_gateway::GatewayConfig::from_yaml(r#"
//! providers:
//!   - name: anthropic
//!     model: claude-sonnet-4-20250514
//!     priority: 1
//!   - name: openai
//!     model: gpt-4o
//!     priority: 2
//!   - name: google
//!     model: gemini-2.0-flash
//!     priority: 3
//! fallback:
//!   on_error: [429, 500, 502, 503, timeout]
//!   max_retries: 2
//!   backoff: exponential
//! "#).unwrap();
//! assert_eq!(config.providers.len(), 3);
//! assert_eq!(config.providers[2].kind(), brace_gateway::config::ProviderKind::Gemini);
//! ```
//!
//! Unknown keys, wrong types and impossible values are rejected with the line, the column
//! and what is wrong — checks that need the whole file (a route naming an unknown provider,
//! two sections that contradict each other) included.
//!
//! What a new user types works: a route lists providers by name or as mappings, a
//! provider only ever asked with `passthrough` needs no `model`, and the degradation ladder
//! can name standard levels:
//!
//! ```
//! let config = brace_gateway::GatewayConfig::from_yaml(r#"
//! providers:
//!   - name: openai
//!     model: gpt-4o
//!   - name: local-llama
//!     base_url: http://127.0.0.1:11434/v1
//! routes:
//!   - match: "gpt-*"
//!     providers: [openai]
//!   - match: "llama*"
//!     providers: [{name: local-llama, passthrough: true}]
//! degradation:
//!   levels: [full, reduced, offline]
//! "#).unwrap();
//! assert_eq!(config.routes[0].providers[0].name, "openai");
//! assert_eq!(config.providers[1].model, None);
//! ```

use brace_llm::degrade::Shape;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use brace_sim::Behavior;

/// The whole configuration.
///
/// It serializes to what it means — defaults filled in, the `health` shorthands folded into
/// `circuit_breaker` — which is what `GET /v1/config` shows (with URL passwords elided).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, try_from = "RawGatewayConfig")]
pub struct GatewayConfig {
    /// Where to listen (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// The providers, in no particular order (priority orders them).
    pub providers: Vec<ProviderConfig>,
    /// Retries (the seed's `fallback` section).
    pub fallback: brace_retry::RetryConfig,
    /// The circuit breaker put in front of each provider (the `health` section folded in,
    /// the gateway's defaults filled in); a provider's own `circuit_breaker` keys override
    /// it (see [`circuit_breaker_for`](Self::circuit_breaker_for)).
    pub circuit_breaker: brace_circuit::CircuitBreakerConfig,
    /// The degradation ladder.
    pub degradation: DegradeConfig,
    /// The response cache (overrides `degradation.cache`).
    pub cache: Option<brace_degrade::CacheConfig>,
    /// How providers of equal priority are chosen.
    pub selection: brace_failover::Selection,
    /// Hedging across providers.
    pub hedging: Option<brace_failover::HedgeConfig>,
    /// Active probes (and, as shorthands, breaker settings: see [`HealthConfig`]).
    pub health: HealthConfig,
    /// Admin endpoints: absent, the mutating ones answer only on a loopback address.
    pub admin: Option<AdminConfig>,
    /// Client keys: absent, the data plane needs no key.
    pub auth: Option<AuthConfig>,
    /// Routes from requested model names to providers.
    pub routes: Vec<RouteConfig>,
    /// HTTP server limits.
    pub server: ServerConfig,
    /// Trace export (off by default).
    pub telemetry: crate::telemetry::TelemetryConfig,
    /// Where provider state is kept: in memory (absent), or in Redis shared by replicas.
    pub state: Option<StateConfig>,
    /// Failover drills started with the configuration (none by default): a named provider's
    /// calls fail or slow down at a set rate for a bounded time (see [`crate::chaos`]).
    pub chaos: Vec<crate::chaos::ChaosConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGatewayConfig {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    providers: Vec<RawProviderConfig>,
    #[serde(default)]
    fallback: check::Fallback,
    #[serde(default)]
    circuit_breaker: check::CircuitBreaker,
    #[serde(default)]
    degradation: check::Degradation,
    #[serde(default)]
    cache: Option<check::Cache>,
    #[serde(default)]
    selection: brace_failover::Selection,
    #[serde(default)]
    hedging: Option<check::Hedging>,
    #[serde(default)]
    health: HealthConfig,
    #[serde(default)]
    admin: Option<AdminConfig>,
    #[serde(default)]
    auth: Option<AuthConfig>,
    #[serde(default)]
    routes: Vec<RouteConfig>,
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    telemetry: crate::telemetry::TelemetryConfig,
    state: Option<StateConfig>,
    #[serde(default)]
    chaos: Vec<crate::chaos::ChaosConfig>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// A configuration mistake found after reading: where it is, as a key path such as
/// `providers[1].circuit_breaker` (located in the file by [`GatewayConfig::from_yaml`]), and
/// what is wrong.
#[derive(Debug)]
struct Invalid {
    path: String,
    message: String,
}

impl Invalid {
    fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same mistake, `prefix` (a path) in front of its path.
    fn under(mut self, prefix: &str) -> Self {
        self.path = match (prefix.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => prefix.to_owned(),
            (false, false) => format!("{prefix}.{}", self.path),
        };
        self
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl TryFrom<RawGatewayConfig> for GatewayConfig {
    type Error = Invalid;

    fn try_from(raw: RawGatewayConfig) -> Result<Self, Invalid> {
        if raw.providers.is_empty() {
            return Err(Invalid::at(
                "providers",
                "`providers` must list at least one provider",
            ));
        }
        let providers = raw
            .providers
            .into_iter()
            .enumerate()
            .map(|(index, provider)| {
                ProviderConfig::try_from(provider).map_err(|err| err.under(&providers_at(index)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (index, provider) in providers.iter().enumerate() {
            if let Some(first) = seen.insert(provider.name.clone(), index) {
                return Err(Invalid::at(
                    format!("{}.name", providers_at(index)),
                    format!(
                        "the name `{}` is already used by providers[{first}]",
                        provider.name
                    ),
                ));
            }
        }
        check_routes(&raw.routes, &providers)?;
        let degradation: DegradeConfig = raw.degradation.0.into();
        if let Some(cache) = &raw.cache {
            // The ladder is checked with the cache it will really use.
            let mut effective = degradation.clone();
            effective.cache = cache.0.clone();
            effective
                .validate()
                .map_err(|err| Invalid::at("cache", format!("cache: {err}")))?;
        }
        let circuit_breaker = effective_breaker(raw.circuit_breaker.0, &raw.health)?;
        circuit_breaker
            .to_builder("global")
            .and_then(brace_circuit::CircuitBreakerBuilder::build)
            .map_err(|err| {
                let section = if raw.health.consecutive_failures.is_some()
                    || raw.health.failure_rate.is_some()
                    || raw.health.recovery_time.is_some()
                {
                    "circuit_breaker (with the health shorthands)"
                } else {
                    "circuit_breaker"
                };
                Invalid::at("circuit_breaker", format!("{section}: {err}"))
            })?;
        let config = Self {
            listen: raw.listen,
            providers,
            fallback: raw.fallback.0,
            circuit_breaker,
            degradation,
            cache: raw.cache.map(|cache| cache.0),
            selection: raw.selection,
            hedging: raw.hedging.map(|hedging| hedging.0),
            health: raw.health,
            admin: raw.admin,
            auth: raw.auth,
            routes: raw.routes,
            server: raw.server,
            telemetry: raw.telemetry,
            state: raw.state,
            chaos: raw.chaos,
        };
        let levels: Vec<String> = config
            .degradation
            .validate()
            .map_err(|err| Invalid::at("degradation", err.to_string()))?
            .levels()
            .iter()
            .map(|level| level.name().to_owned())
            .collect();
        for (index, provider) in config.providers.iter().enumerate() {
            let at = providers_at(index);
            let name = &provider.name;
            for (level, model) in &provider.models {
                if !levels.contains(level) {
                    return Err(Invalid::at(
                        format!("{at}.models.{level}"),
                        format!(
                            "unknown degradation level `{level}` (levels: {}) in provider `{name}`",
                            levels.join(", ")
                        ),
                    ));
                }
                if model.trim().is_empty() {
                    return Err(Invalid::at(
                        format!("{at}.models.{level}"),
                        format!("models.{level} of provider `{name}` must not be empty"),
                    ));
                }
            }
            // A provider's own sections are checked laid over the global ones, and blamed
            // for what they add: the global sections were checked above.
            if provider.circuit_breaker.is_some() {
                let breaker = config
                    .circuit_breaker_for(provider)
                    .map_err(|err| Invalid::at(format!("{at}.circuit_breaker"), err))?;
                breaker
                    .to_builder(name.as_str())
                    .and_then(brace_circuit::CircuitBreakerBuilder::build)
                    .map_err(|err| {
                        Invalid::at(
                            format!("{at}.circuit_breaker"),
                            format!(
                                "provider `{name}`: circuit_breaker (laid over the global \
                                 section): {err}"
                            ),
                        )
                    })?;
            }
            if provider.fallback.is_some() {
                config
                    .fallback_for(provider)
                    .map_err(|err| Invalid::at(format!("{at}.fallback"), err))?;
            }
        }
        for (index, drill) in config.chaos.iter().enumerate() {
            drill
                .validate()
                .map_err(|(key, message)| Invalid::at(format!("chaos[{index}].{key}"), message))?;
            if !seen.contains_key(drill.provider.as_str()) {
                return Err(Invalid::at(
                    format!("chaos[{index}].provider"),
                    format!(
                        "unknown provider `{}` (known: {})",
                        drill.provider,
                        known(&config.providers)
                    ),
                ));
            }
        }
        Ok(config)
    }
}

fn providers_at(index: usize) -> String {
    format!("providers[{index}]")
}

fn known(providers: &[ProviderConfig]) -> String {
    providers
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every route lists providers that exist, and asks each for a model it can name.
fn check_routes(routes: &[RouteConfig], providers: &[ProviderConfig]) -> Result<(), Invalid> {
    for (index, route) in routes.iter().enumerate() {
        let at = format!("routes[{index}]");
        if route.providers.is_empty() {
            return Err(Invalid::at(
                format!("{at}.providers"),
                format!("route `{}` lists no provider", route.pattern),
            ));
        }
        let known_name = |name: &str| providers.iter().any(|p| p.name == name);
        for (key, names) in [
            ("on_content_filter", route.on_content_filter.providers()),
            (
                "on_context_length",
                route.on_context_length.as_deref().unwrap_or_default(),
            ),
        ] {
            if let Some((position, name)) =
                names.iter().enumerate().find(|(_, name)| !known_name(name))
            {
                return Err(Invalid::at(
                    format!("{at}.{key}[{position}]"),
                    format!(
                        "route `{}`: unknown provider `{name}` in {key} (known: {})",
                        route.pattern,
                        known(providers)
                    ),
                ));
            }
        }
        if route.on_context_length.as_ref().is_some_and(Vec::is_empty) {
            return Err(Invalid::at(
                format!("{at}.on_context_length"),
                format!(
                    "route `{}`: on_context_length lists no provider",
                    route.pattern
                ),
            ));
        }
        for (position, target) in route.providers.iter().enumerate() {
            let target_at = format!("{at}.providers[{position}]");
            let Some(provider) = providers.iter().find(|p| p.name == target.name) else {
                return Err(Invalid::at(
                    target_at,
                    format!(
                        "route `{}`: unknown provider `{}` (known: {})",
                        route.pattern,
                        target.name,
                        known(providers)
                    ),
                ));
            };
            if target.passthrough && target.model.is_some() {
                return Err(Invalid::at(
                    target_at,
                    format!(
                        "route `{}`, provider `{}`: `passthrough` forwards the requested model, \
                         so `model` has no effect; keep one of them",
                        route.pattern, target.name
                    ),
                ));
            }
            if !target.passthrough && target.model.is_none() && provider.model.is_none() {
                return Err(Invalid::at(
                    target_at,
                    format!(
                        "route `{}`: provider `{}` has no `model`; give it one, or ask it for \
                         one here (`{{name: {}, model: ...}}`), or forward the requested model \
                         (`{{name: {}, passthrough: true}}`)",
                        route.pattern, target.name, target.name, target.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The global breaker: the `circuit_breaker` section, with the `health` section's
/// shorthands folded in (a contradiction between the two is an error: they are one rule),
/// and the gateway's defaults for what neither sets: 3 failures in a row or half of the
/// last 20 calls (10 needed) open a provider's circuit for 30 s.
fn effective_breaker(
    mut breaker: brace_circuit::CircuitBreakerConfig,
    health: &HealthConfig,
) -> Result<brace_circuit::CircuitBreakerConfig, Invalid> {
    fn fold<T: PartialEq + Copy + fmt::Display>(
        slot: &mut Option<T>,
        from_health: Option<T>,
        health_key: &str,
        breaker_key: &str,
    ) -> Result<(), Invalid> {
        match (*slot, from_health) {
            (Some(set), Some(health)) if set != health => Err(Invalid::at(
                format!("health.{health_key}"),
                format!(
                    "health.{health_key} ({health}) contradicts circuit_breaker.{breaker_key} \
                     ({set}): a provider's circuit is the one rule for when it is tried; set it \
                     in one place"
                ),
            )),
            (None, Some(health)) => {
                *slot = Some(health);
                Ok(())
            }
            _ => Ok(()),
        }
    }
    if let Some(rate) = health.failure_rate
        && !(rate > 0.0 && rate <= 1.0)
    {
        return Err(Invalid::at(
            "health.failure_rate",
            format!("health.failure_rate must be a fraction in (0, 1], got {rate}"),
        ));
    }
    fold(
        &mut breaker.failure_threshold,
        health.consecutive_failures,
        "consecutive_failures",
        "failure_threshold",
    )?;
    fold(
        &mut breaker.failure_rate_threshold,
        health.failure_rate.map(|rate| (rate * 100.0) as f32),
        "failure_rate",
        "failure_rate_threshold",
    )?;
    match (breaker.wait_in_open, health.recovery_time) {
        (Some(wait), Some(recovery)) if wait != recovery => {
            return Err(Invalid::at(
                "health.recovery_time",
                format!(
                    "health.recovery_time ({recovery:?}) contradicts \
                     circuit_breaker.reset_timeout / wait_in_open ({wait:?}): a provider's \
                     circuit is the one rule for when it is tried; set it in one place"
                ),
            ));
        }
        (None, recovery) => breaker.wait_in_open = recovery,
        _ => {}
    }
    if breaker.failure_threshold == Some(0) {
        let at = if health.consecutive_failures == Some(0) {
            "health.consecutive_failures"
        } else {
            "circuit_breaker.failure_threshold"
        };
        return Err(Invalid::at(at, format!("{at} must be at least 1")));
    }
    breaker.failure_threshold.get_or_insert(3);
    breaker.sliding_window_size.get_or_insert(20);
    breaker.minimum_calls.get_or_insert(10);
    breaker.wait_in_open.get_or_insert(Duration::from_secs(30));
    Ok(breaker)
}

/// Lays the keys of `over` (a provider's own section) over `base` (the global one).
fn overlay<T>(base: &T, over: &serde_json::Value, aliases: &[(&str, &str)]) -> Result<T, String>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut merged = serde_json::to_value(base).map_err(|err| err.to_string())?;
    if let (Some(merged), Some(over)) = (merged.as_object_mut(), over.as_object()) {
        for (key, value) in over {
            let key = aliases
                .iter()
                .find(|(alias, _)| alias == key)
                .map_or(key.as_str(), |(_, canonical)| canonical);
            merged.insert(key.to_owned(), value.clone());
        }
    }
    serde_json::from_value(merged).map_err(|err| err.to_string())
}

impl GatewayConfig {
    /// The breaker of `provider`: the global one with the provider's own `circuit_breaker`
    /// keys laid over it.
    ///
    /// # Errors
    ///
    /// A message naming the provider when the merged settings are not valid.
    pub fn circuit_breaker_for(
        &self,
        provider: &ProviderConfig,
    ) -> Result<brace_circuit::CircuitBreakerConfig, String> {
        match &provider.circuit_breaker {
            None => Ok(self.circuit_breaker.clone()),
            Some(over) => overlay(
                &self.circuit_breaker,
                over,
                &[
                    ("reset_timeout", "wait_in_open"),
                    ("consecutive_failures", "failure_threshold"),
                ],
            )
            .map_err(|err| format!("provider `{}`: circuit_breaker: {err}", provider.name)),
        }
    }

    /// The retry settings of `provider`: the global `fallback` section with the provider's
    /// own `fallback` keys laid over it.
    ///
    /// # Errors
    ///
    /// A message naming the provider when the merged settings are not valid.
    pub fn fallback_for(
        &self,
        provider: &ProviderConfig,
    ) -> Result<brace_retry::RetryConfig, String> {
        let merged = match &provider.fallback {
            None => self.fallback.clone(),
            Some(over) => overlay(&self.fallback, over, &[])
                .map_err(|err| format!("provider `{}`: fallback: {err}", provider.name))?,
        };
        if merged.max_retries > MAX_RETRIES {
            return Err(format!(
                "provider `{}`: fallback: max_retries must be at most {MAX_RETRIES}, not {}",
                provider.name, merged.max_retries
            ));
        }
        merged
            .validate()
            .map_err(|err| format!("provider `{}`: fallback: {err}", provider.name))?;
        Ok(merged)
    }
}

/// The degradation section's settings: brace-degrade's configuration over chat requests'
/// shapes (a level's `model`, `max_tokens` and `allow`).
pub type DegradeConfig = brace_degrade::DegradeConfig<Shape>;

/// The gateway's default ladder, when the configuration names no levels: `full`, `reduced`
/// (`max_tokens` capped at 1024, no images), `minimal` (256; no tools, images or response
/// format), `cached`, `offline` ([`Shape::standard_levels`] above brace-degrade's cached and
/// static levels).
pub fn default_ladder() -> brace_degrade::Ladder<Shape> {
    brace_degrade::Ladder::with_live_levels(Shape::standard_levels())
        .expect("the standard levels have distinct names")
}

/// The `degradation` section: brace-degrade's configuration, except that a request whose
/// live levels all failed gets its real error (a 429 with Retry-After, a 503 listing each
/// provider) rather than the static message, unless `fallback_to_static: true`. The static
/// level still answers every request once the ladder has dropped to it (or it is pinned).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DegradationConfig {
    levels: Option<Vec<LevelSpec>>,
    start: Option<String>,
    fallback_attempts: u32,
    fallback_to_static: bool,
    cache: brace_degrade::CacheConfig,
    auto: brace_degrade::AutoConfig,
}

impl Default for DegradationConfig {
    fn default() -> Self {
        let library = DegradeConfig::default();
        Self {
            levels: library
                .levels
                .map(|levels| levels.into_iter().map(LevelSpec).collect()),
            start: library.start,
            fallback_attempts: library.fallback_attempts,
            fallback_to_static: false,
            cache: library.cache,
            auto: library.auto,
        }
    }
}

impl From<DegradationConfig> for DegradeConfig {
    fn from(config: DegradationConfig) -> Self {
        Self {
            // Without levels, the gateway's default ladder.
            levels: Some(config.levels.map_or_else(
                || default_ladder().levels().to_vec(),
                |levels| levels.into_iter().map(|LevelSpec(level)| level).collect(),
            )),
            start: config.start,
            fallback_attempts: config.fallback_attempts,
            fallback_to_static: config.fallback_to_static,
            cache: config.cache,
            auto: config.auto,
        }
    }
}

/// A level of the `degradation` section as written: a mapping (see
/// [`brace_degrade::Level`]) or the bare name of a level of the [default
/// ladder](default_ladder) (`full`, `reduced`, `minimal`, `cached`, `offline`).
#[derive(Clone)]
struct LevelSpec(brace_degrade::Level<Shape>);

impl<'de> Deserialize<'de> for LevelSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = LevelSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "the name of a standard level (full, reduced, minimal, cached, offline) or a \
                     mapping with `name` and `kind`",
                )
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<LevelSpec, E> {
                let standard = default_ladder();
                let found = standard.levels().iter().find(|level| level.name() == name);
                found.cloned().map(LevelSpec).ok_or_else(|| {
                    let names: Vec<_> = standard
                        .levels()
                        .iter()
                        .map(brace_degrade::Level::name)
                        .collect();
                    E::custom(format!(
                        "`{name}` is not a standard level (standard levels: {}); describe it as a \
                         mapping with `name` and `kind`",
                        names.join(", ")
                    ))
                })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<LevelSpec, A::Error> {
                Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(LevelSpec)
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

/// A configuration that could not be loaded: where (the file, and the line and column when
/// the mistake is in the text) and what is wrong.
#[derive(Debug)]
pub struct ConfigError {
    origin: String,
    position: Option<crate::locate::Position>,
    message: String,
}

impl ConfigError {
    /// The line of the mistake (from 1), when it is in the text.
    pub fn line(&self) -> Option<u64> {
        self.position.map(|p| p.line)
    }

    /// The column of the mistake (from 1), when it is in the text.
    pub fn column(&self) -> Option<u64> {
        self.position.map(|p| p.column)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl GatewayConfig {
    /// Parses a YAML configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the line, the column and what is wrong.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, "<config>")
    }

    /// Reads and parses a YAML file.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the file, the line, the column and what is wrong.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            origin: origin.clone(),
            position: None,
            message: format!("cannot read: {err}"),
        })?;
        Self::parse(&text, &origin)
    }

    /// Parses `text`, read from `origin` (a file name, for errors).
    ///
    /// # Errors
    ///
    /// As [`from_yaml`](Self::from_yaml).
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        serde_saphyr::from_str(text).map_err(|err| locate_error(&err, text, origin))
    }

    /// What is probably a mistake but not an error, one sentence each (logged when a
    /// gateway starts or reloads): a route that continues broken streams but has no
    /// provider to continue on.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (index, route) in self.routes.iter().enumerate() {
            if !route.continuation {
                continue;
            }
            let can_continue = route.providers.iter().skip(1).any(|target| {
                self.providers
                    .iter()
                    .any(|p| p.name == target.name && p.accepts_prefill)
            });
            if route.providers.len() < 2 {
                warnings.push(format!(
                    "routes[{index}] (`{}`): `continuation` is on but the route has one \
                     provider: a broken stream has nowhere to continue",
                    route.pattern
                ));
            } else if !can_continue {
                warnings.push(format!(
                    "routes[{index}] (`{}`): `continuation` is on but no provider after the \
                     first accepts an assistant prefill (`accepts_prefill: true`): a broken \
                     stream cannot be continued",
                    route.pattern
                ));
            }
        }
        warnings
    }
}

/// A read error with its line and column: serde-saphyr's own position when it has one, else
/// the position of the key path a whole-file check named (see [`Invalid`]).
fn locate_error(err: &serde_saphyr::Error, text: &str, origin: &str) -> ConfigError {
    let own = err
        .location()
        .filter(|location| location.line() > 0)
        .map(|location| crate::locate::Position {
            line: location.line(),
            column: location.column(),
        });
    if own.is_none()
        && let serde_saphyr::Error::Message { msg, .. } = err.without_snippet()
        && let Some((path, said)) = msg.split_once(": ")
        && let Some(position) = crate::locate::locate(text, path)
    {
        // The path once: some messages start with it already.
        let msg = if said.starts_with(path) { said } else { msg };
        let source_line = text
            .lines()
            .nth(usize::try_from(position.line).unwrap_or(usize::MAX) - 1)
            .unwrap_or_default();
        let gutter = " ".repeat(position.line.to_string().len());
        let caret = " ".repeat(usize::try_from(position.column).unwrap_or(1) - 1);
        return ConfigError {
            origin: origin.to_owned(),
            position: Some(position),
            message: scrub_url_passwords(&format!(
                "error: line {} column {}: {msg}\n{gutter} |\n{} | {source_line}\n{gutter} | \
                 {caret}^",
                position.line, position.column, position.line
            )),
        };
    }
    ConfigError {
        origin: origin.to_owned(),
        position: own,
        message: scrub_url_passwords(&err.to_string()),
    }
}

impl GatewayConfig {
    /// The embedded demo: three simulated providers in-process — a flaky primary, a slow
    /// secondary and a steady local fallback — so failover, circuit breaking and degradation
    /// can be seen with no API key.
    pub fn demo() -> Self {
        Self::from_yaml(DEMO_CONFIG).expect("the embedded demo configuration is valid")
    }
}

/// `text` with the password of every URL in it (`scheme://user:password@host`, or a
/// `pass=` query value) replaced by `***`.
pub fn scrub_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '/' | '?' | '\'' | '"' | '`' | ')'))
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(user_end) => match authority[..user_end].find(':') {
                Some(colon) => {
                    out.push_str(&authority[..=colon]);
                    out.push_str("***");
                    out.push_str(&authority[user_end..]);
                }
                None => out.push_str(authority),
            },
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    let mut scrubbed = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.find("pass=") {
        let (head, tail) = rest.split_at(at + 5);
        scrubbed.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '&' | '\'' | '"' | '`'))
            .unwrap_or(tail.len());
        if end > 0 {
            scrubbed.push_str("***");
        }
        rest = &tail[end..];
    }
    scrubbed.push_str(rest);
    scrubbed
}

/// The embedded demo configuration.
pub const DEMO_CONFIG: &str = include_str!("demo.yaml");

/// Which wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// OpenAI.
    Openai,
    /// Azure OpenAI.
    Azure,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini.
    Gemini,
    /// Any OpenAI-compatible server (Ollama, llama.cpp, vLLM, LM Studio).
    OpenaiCompatible,
    /// brace's simulated provider, in-process (or over HTTP when `base_url` is set).
    Simulated,
}

impl ProviderKind {
    fn infer(name: &str) -> Option<Self> {
        let name = name.to_ascii_lowercase();
        let has = |needle: &str| name.contains(needle);
        if has("azure") {
            Some(Self::Azure)
        } else if has("openai") || has("gpt") {
            Some(Self::Openai)
        } else if has("anthropic") || has("claude") {
            Some(Self::Anthropic)
        } else if has("google") || has("gemini") {
            Some(Self::Gemini)
        } else if has("ollama") || has("llama") || has("local") || has("vllm") {
            Some(Self::OpenaiCompatible)
        } else if has("sim") {
            Some(Self::Simulated)
        } else {
            None
        }
    }

    /// The environment variable the provider's key is usually in.
    pub fn default_key_env(self) -> Option<&'static str> {
        match self {
            Self::Openai => Some("OPENAI_API_KEY"),
            Self::Azure => Some("AZURE_OPENAI_API_KEY"),
            Self::Anthropic => Some("ANTHROPIC_API_KEY"),
            Self::Gemini => Some("GEMINI_API_KEY"),
            Self::OpenaiCompatible | Self::Simulated => None,
        }
    }
}

/// Price per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million input (prompt) tokens.
    pub input: f64,
    /// Per million output (completion) tokens.
    pub output: f64,
}

/// One provider.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, try_from = "RawProviderConfig")]
pub struct ProviderConfig {
    /// Its name, unique.
    pub name: String,
    kind: ProviderKind,
    /// The model asked for there unless a route says otherwise. A provider without one is
    /// asked for the model the request names (as with a route's `passthrough`), and a route
    /// that lists it must say `passthrough: true` or name a `model`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Lower is tried first (default 1).
    pub priority: u32,
    /// Relative weight among providers of the same priority (default 1).
    pub weight: u32,
    /// The API's base URL (default: the provider's public endpoint).
    pub base_url: Option<String>,
    /// The environment variable holding the API key (default: the provider's usual one,
    /// e.g. `OPENAI_API_KEY`; an empty string for a server that needs no key).
    pub api_key_env: Option<String>,
    /// Timeout of one call.
    #[serde(serialize_with = "brace_core::duration::serialize")]
    pub timeout: Duration,
    /// Longest wait for the first streamed token.
    #[serde(serialize_with = "brace_core::duration::option::serialize")]
    pub first_token_timeout: Option<Duration>,
    /// Longest silence between two streamed chunks.
    #[serde(serialize_with = "brace_core::duration::option::serialize")]
    pub stream_idle_timeout: Option<Duration>,
    /// The most calls in flight to this provider at once, streams included, shared by every
    /// route (a bulkhead; default unbounded). A call beyond it is not queued: it fails over
    /// to the next provider at once, and the caller gets a 503 with `Retry-After` if none is
    /// left.
    pub max_in_flight: Option<usize>,
    /// Whether the provider accepts an assistant prefill (stream continuation).
    pub accepts_prefill: bool,
    /// Speak HTTP/2 to the provider from the first byte (default off). Over plain `http`
    /// that is cleartext HTTP/2 (h2c), for upstreams known to speak it — an internal proxy,
    /// another gateway, brace's simulated provider — so that the provider's calls share one
    /// connection instead of taking one each; a server that only speaks HTTP/1.1 then fails
    /// every call. Over `https`, HTTP/2 is negotiated anyway where the server offers it.
    /// Only for providers reached over HTTP (not an in-process `simulated` one).
    pub http2_prior_knowledge: bool,
    /// The HTTP client the provider's calls go through: `auto` (default: brace's lean client
    /// on hyper-util for plain `http`, reqwest for `https` and behind an `http_proxy`),
    /// `reqwest` or `lean` (see `brace_providers::HttpClient`).
    pub http_client: brace_providers::HttpClient,
    /// Price per million tokens.
    pub price: Option<Price>,
    /// Azure: the `api-version`.
    pub api_version: Option<String>,
    /// Simulated providers: how it behaves.
    pub simulate: Option<Behavior>,
    /// Simulated providers: the seed of their random choices.
    pub seed: u64,
    /// The model to ask this provider for at a degradation level below the top, by level
    /// name (`{reduced: gpt-4o-mini, minimal: gpt-4o-mini}`). It wins over the level's own
    /// `model` and the route's; a level not listed asks for the provider's usual model.
    pub models: BTreeMap<String, String>,
    /// This provider's own circuit-breaker keys, laid over the global `circuit_breaker`
    /// section (see [`GatewayConfig::circuit_breaker_for`]).
    pub circuit_breaker: Option<serde_json::Value>,
    /// This provider's own retry keys, laid over the global `fallback` section (see
    /// [`GatewayConfig::fallback_for`]).
    pub fallback: Option<serde_json::Value>,
    /// The provider's quota (`requests_per_minute`, `tokens_per_minute`): a call that
    /// would exceed it goes to the next provider at once, without counting against this
    /// provider's circuit. Counted by every replica together when `state` names a Redis.
    pub rate_limit: Option<brace_failover::RateLimit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProviderConfig {
    name: String,
    #[serde(default)]
    kind: Option<ProviderKind>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default = "one")]
    priority: u32,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(default = "default_timeout", with = "brace_core::duration")]
    timeout: Duration,
    #[serde(default, deserialize_with = "check::positive_duration_option")]
    first_token_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "check::positive_duration_option")]
    stream_idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "check::at_least_one_option")]
    max_in_flight: Option<usize>,
    #[serde(default)]
    accepts_prefill: bool,
    #[serde(default)]
    http2_prior_knowledge: bool,
    #[serde(default)]
    http_client: brace_providers::HttpClient,
    #[serde(default)]
    price: Option<Price>,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    simulate: Option<Behavior>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    models: BTreeMap<String, String>,
    #[serde(default)]
    circuit_breaker: Option<serde_json::Value>,
    #[serde(default)]
    fallback: Option<serde_json::Value>,
    #[serde(default)]
    rate_limit: Option<brace_failover::RateLimit>,
}

fn one() -> u32 {
    1
}

fn default_timeout() -> Duration {
    Duration::from_mins(1)
}

impl TryFrom<RawProviderConfig> for ProviderConfig {
    type Error = Invalid;

    fn try_from(raw: RawProviderConfig) -> Result<Self, Invalid> {
        let name = raw.name.trim().to_owned();
        if name.is_empty() {
            return Err(Invalid::at("name", "a provider's `name` must not be empty"));
        }
        let kind = match raw.kind {
            Some(kind) => kind,
            None => ProviderKind::infer(&name).ok_or_else(|| {
                Invalid::at(
                    "name",
                    format!(
                        "provider `{name}`: cannot infer its kind from the name; set `kind` to \
                         one of openai, azure, anthropic, gemini, openai-compatible, simulated"
                    ),
                )
            })?,
        };
        let fail = |key: &str, message: String| Err(Invalid::at(key, message));
        if raw
            .model
            .as_deref()
            .is_some_and(|model| model.trim().is_empty())
        {
            return fail(
                "model",
                format!(
                    "provider `{name}`: `model` must not be empty (leave it out to forward the requested model)"
                ),
            );
        }
        if raw.weight == 0 {
            return fail(
                "weight",
                format!("provider `{name}`: `weight` must be at least 1"),
            );
        }
        if raw.timeout.is_zero() {
            return fail(
                "timeout",
                format!("provider `{name}`: `timeout` must be more than zero"),
            );
        }
        if let Some(price) = raw.price
            && (price.input < 0.0
                || price.output < 0.0
                || !price.input.is_finite()
                || !price.output.is_finite())
        {
            return fail(
                "price",
                format!("provider `{name}`: prices must be finite and not negative"),
            );
        }
        if matches!(kind, ProviderKind::Azure | ProviderKind::OpenaiCompatible)
            && raw.base_url.is_none()
        {
            return fail(
                "name",
                format!("provider `{name}`: `base_url` is required for kind {kind:?}"),
            );
        }
        if let Some(base_url) = &raw.base_url {
            brace_providers::ClientConfig::new(name.as_str(), base_url.as_str())
                .checked_base_url()
                .map_err(|err| Invalid::at("base_url", format!("provider `{name}`: {err}")))?;
        }
        if let Some(behavior) = &raw.simulate {
            check::behavior(behavior).map_err(|err| {
                Invalid::at("simulate", format!("provider `{name}`: simulate: {err}"))
            })?;
        }
        if raw.simulate.is_some() && kind != ProviderKind::Simulated {
            return fail(
                "simulate",
                format!("provider `{name}`: `simulate` is only for kind simulated"),
            );
        }
        if let Some(section) = &raw.circuit_breaker {
            serde_json::from_value::<brace_circuit::CircuitBreakerConfig>(section.clone())
                .map_err(|err| {
                    Invalid::at(
                        "circuit_breaker",
                        format!("provider `{name}`: circuit_breaker: {err}"),
                    )
                })?;
        }
        if let Some(section) = &raw.fallback {
            serde_json::from_value::<brace_retry::RetryConfig>(section.clone()).map_err(|err| {
                Invalid::at("fallback", format!("provider `{name}`: fallback: {err}"))
            })?;
        }
        if let Some(limit) = &raw.rate_limit {
            limit
                .validate()
                .map_err(|err| Invalid::at("rate_limit", format!("provider `{name}`: {err}")))?;
        }
        if raw.http2_prior_knowledge && kind == ProviderKind::Simulated && raw.base_url.is_none() {
            return fail(
                "http2_prior_knowledge",
                format!(
                    "provider `{name}`: `http2_prior_knowledge` is only for providers reached \
                     over HTTP; this simulated provider runs in-process (set `base_url` to \
                     reach one over HTTP)"
                ),
            );
        }
        Ok(Self {
            name,
            kind,
            model: raw.model,
            priority: raw.priority,
            weight: raw.weight,
            base_url: raw.base_url,
            api_key_env: raw.api_key_env,
            timeout: raw.timeout,
            first_token_timeout: raw.first_token_timeout,
            stream_idle_timeout: raw.stream_idle_timeout,
            max_in_flight: raw.max_in_flight,
            accepts_prefill: raw.accepts_prefill,
            http2_prior_knowledge: raw.http2_prior_knowledge,
            http_client: raw.http_client,
            price: raw.price,
            api_version: raw.api_version,
            simulate: raw.simulate,
            seed: raw.seed,
            models: raw.models,
            circuit_breaker: raw.circuit_breaker,
            fallback: raw.fallback,
            rate_limit: raw.rate_limit,
        })
    }
}

impl ProviderConfig {
    /// The provider's kind, given or inferred from its name.
    pub fn kind(&self) -> ProviderKind {
        self.kind
    }

    /// The environment variable the API key is read from: `api_key_env`, else the
    /// provider's usual variable. An empty `api_key_env` means the server needs no key.
    pub fn key_env(&self) -> Option<&str> {
        match self.api_key_env.as_deref() {
            Some("") => None,
            Some(var) => Some(var),
            None => self.kind.default_key_env(),
        }
    }
}

/// The `health` section: active probes, and shorthands for the circuit breaker.
///
/// A provider is tried while its circuit breaker admits calls, and only then: that is the
/// one rule. `consecutive_failures`, `failure_rate` and `recovery_time` are other names for
/// the breaker's `failure_threshold`, `failure_rate_threshold` (as a fraction) and
/// `wait_in_open` / `reset_timeout`; setting one in both sections with different values is
/// an error.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How often to probe each provider actively (off when absent); a successful probe
    /// moves an open circuit to half-open at once.
    #[serde(
        deserialize_with = "check::positive_duration_option",
        serialize_with = "brace_core::duration::option::serialize"
    )]
    pub probe_interval: Option<Duration>,
    /// Failures in a row that open a provider's circuit (`circuit_breaker.failure_threshold`).
    #[serde(deserialize_with = "check::at_least_one_option")]
    pub consecutive_failures: Option<u32>,
    /// Failure rate over the breaker's window that opens it, 0–1
    /// (`circuit_breaker.failure_rate_threshold` / 100).
    #[serde(deserialize_with = "check::fraction_option")]
    pub failure_rate: Option<f64>,
    /// How long an open circuit holds a provider out (`circuit_breaker.wait_in_open`).
    #[serde(
        deserialize_with = "check::positive_duration_option",
        serialize_with = "brace_core::duration::option::serialize"
    )]
    pub recovery_time: Option<Duration>,
}

/// Admin endpoints (`POST /v1/degradation/level`, `POST /v1/circuits/{name}`,
/// `POST`/`DELETE /v1/chaos`, `GET /v1/config`).
///
/// With this section, the mutating admin endpoints need `Authorization: Bearer <token>`, the
/// token being the value of the variable `token_env` names; the gateway refuses to start if
/// that variable is unset or empty. Without it, they answer only when the gateway listens on
/// a loopback address, and 403 on any other.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The environment variable holding the admin token.
    #[serde(deserialize_with = "check::non_empty")]
    pub token_env: String,
}

/// Client keys: who may use the data plane (`/v1/chat/completions`, `/v1/completions`,
/// `/v1/models`).
///
/// Requests need `Authorization: Bearer <key>` with a listed key. Keys come from
/// `keys_env` (comma-separated) and/or `keys_file` (one per line; `#` starts a comment), each
/// entry either `KEY` or `NAME KEY`; the name, or else a short hash of the key, is what logs
/// and metrics show. The file is read again when it changes and on SIGHUP.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, try_from = "RawAuthConfig")]
pub struct AuthConfig {
    /// The environment variable holding comma-separated keys.
    pub keys_env: Option<String>,
    /// A file of keys, one per line.
    pub keys_file: Option<std::path::PathBuf>,
    /// Requests allowed per key per minute (a token bucket of that size; default unlimited).
    /// Beyond it: 429 with `Retry-After`.
    pub rate_per_minute: Option<u32>,
    /// How often the keys file is checked for changes (default 5 s).
    #[serde(serialize_with = "brace_core::duration::serialize")]
    pub reload_interval: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthConfig {
    #[serde(default, deserialize_with = "check::non_empty_option")]
    keys_env: Option<String>,
    #[serde(default, deserialize_with = "check::non_empty_option")]
    keys_file: Option<String>,
    #[serde(default, deserialize_with = "check::at_least_one_option")]
    rate_per_minute: Option<u32>,
    #[serde(
        default = "default_reload_interval",
        deserialize_with = "check::positive_duration",
        serialize_with = "brace_core::duration::serialize"
    )]
    reload_interval: Duration,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(5)
}

impl TryFrom<RawAuthConfig> for AuthConfig {
    type Error = String;

    fn try_from(raw: RawAuthConfig) -> Result<Self, String> {
        if raw.keys_env.is_none() && raw.keys_file.is_none() {
            return Err("auth: set `keys_env`, `keys_file` or both".into());
        }
        Ok(Self {
            keys_env: raw.keys_env,
            keys_file: raw.keys_file.map(Into::into),
            rate_per_minute: raw.rate_per_minute,
            reload_interval: raw.reload_interval,
        })
    }
}

/// A route: requests whose `model` matches `pattern` go to these providers, in order.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// An exact model name or a glob with `*` (`fast-*`).
    #[serde(rename = "match")]
    pub pattern: String,
    /// The providers, in order.
    pub providers: Vec<RouteTarget>,
    /// Continue a broken stream on the route's other providers (off by default): with an
    /// assistant prefill on a provider with `accepts_prefill: true`, by a verified restart
    /// on the others.
    #[serde(default)]
    pub continuation: bool,
    /// When a stream commits to its provider: `first_content` (default), `{after_tokens:
    /// N}` or `complete` (see [`brace_llm::commit`]). A hold-back makes a break before that
    /// point an ordinary failure that fails over, at the cost of the caller's time to first
    /// token.
    #[serde(default)]
    pub commit: brace_llm::commit::CommitPolicy,
    /// What a content-policy refusal does: answered to the caller as a 400
    /// `content_policy_violation` (default), `failover` to the route's next provider, or a
    /// list of provider names to ask instead.
    #[serde(default)]
    pub on_content_filter: crate::policy::OnContentFilter,
    /// Providers to ask when the prompt is too long for the route's providers (by default a
    /// context-length error fails over along the route, as any failure another provider may
    /// fix).
    #[serde(default)]
    pub on_context_length: Option<Vec<String>>,
}

/// One provider of a route: its name alone (`providers: [openai, anthropic]`), or a mapping
/// with the model to ask it for or `passthrough`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteTarget {
    /// The provider's name.
    pub name: String,
    /// The model to ask for there (default: the provider's model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Forward the requested model name as is.
    pub passthrough: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouteTarget {
    name: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    passthrough: bool,
}

impl RouteTarget {
    /// The provider named `name`, asked for its own model.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            model: None,
            passthrough: false,
        }
    }
}

impl<'de> Deserialize<'de> for RouteTarget {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RouteTarget;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a provider's name, or a mapping with `name` and optionally `model` or \
                     `passthrough`",
                )
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<RouteTarget, E> {
                Ok(RouteTarget::named(name))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RouteTarget, A::Error> {
                let raw =
                    RawRouteTarget::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RouteTarget {
                    name: raw.name,
                    model: raw.model,
                    passthrough: raw.passthrough,
                })
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

impl RouteConfig {
    /// `true` if `model` matches the route's pattern.
    pub fn matches(&self, model: &str) -> bool {
        glob_match(&self.pattern, model)
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let mut pieces: Vec<&str> = rest.split('*').collect();
    let last = pieces.pop().unwrap_or_default();
    for piece in pieces {
        match remaining.find(piece) {
            Some(at) => remaining = &remaining[at + piece.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

/// The `state` section: where provider state lives.
///
/// Absent: in memory, one process. With a Redis URL, replicas given the same Redis and
/// `key_prefix` share circuit transitions (one half-open probe lease per provider), the
/// pinned degradation level, a response-cache tier and the providers' rate limits; when
/// Redis is down each replica serves from local state (see brace-redis).
///
/// ```
/// let config = brace_gateway::GatewayConfig::from_yaml(r#"
/// providers: [{ name: sim, model: m }]
/// state: { redis_url_env: BRACE_REDIS_URL, key_prefix: "prod:" }
/// "#).unwrap();
/// assert_eq!(config.state.unwrap().key_prefix, "prod:");
/// ```
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, try_from = "RawStateConfig")]
pub struct StateConfig {
    /// The Redis URL, written in the file (its password is never logged; prefer
    /// `redis_url_env` to keep it out of the file).
    pub redis_url: Option<String>,
    /// The environment variable holding the Redis URL.
    pub redis_url_env: Option<String>,
    /// Put before every key (default `brace:`).
    pub key_prefix: String,
    /// The longest wait for one Redis command before local state answers (default 50 ms).
    #[serde(serialize_with = "brace_core::duration::serialize")]
    pub timeout: Duration,
    /// How long a replica's half-open probe lease lasts (default 10 s).
    #[serde(serialize_with = "brace_core::duration::serialize")]
    pub probe_lease: Duration,
}

impl fmt::Debug for StateConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateConfig")
            .field(
                "redis_url",
                &self
                    .redis_url
                    .as_ref()
                    .map(|url| brace_redis::RedisUrl::new(url.as_str())),
            )
            .field("redis_url_env", &self.redis_url_env)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("probe_lease", &self.probe_lease)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStateConfig {
    #[serde(default)]
    redis_url: Option<String>,
    #[serde(default)]
    redis_url_env: Option<String>,
    #[serde(default = "default_key_prefix")]
    key_prefix: String,
    #[serde(default = "default_state_timeout", with = "brace_core::duration")]
    timeout: Duration,
    #[serde(default = "default_probe_lease", with = "brace_core::duration")]
    probe_lease: Duration,
}

fn default_key_prefix() -> String {
    "brace:".to_owned()
}

fn default_state_timeout() -> Duration {
    Duration::from_millis(50)
}

fn default_probe_lease() -> Duration {
    Duration::from_secs(10)
}

impl TryFrom<RawStateConfig> for StateConfig {
    type Error = String;

    fn try_from(raw: RawStateConfig) -> Result<Self, String> {
        match (&raw.redis_url, &raw.redis_url_env) {
            (None, None) => {
                return Err(
                    "state: set redis_url_env (or redis_url) to share state through Redis, or \
                     leave the section out to keep state in memory"
                        .into(),
                );
            }
            (Some(_), Some(_)) => {
                return Err("state: set redis_url or redis_url_env, not both".into());
            }
            _ => {}
        }
        if let Some(url) = &raw.redis_url
            && !(url.starts_with("redis://") || url.starts_with("unix://"))
        {
            return Err(format!(
                "state.redis_url must start with redis:// (got {})",
                brace_redis::RedisUrl::new(url.as_str())
            ));
        }
        if raw.key_prefix.is_empty() {
            return Err("state.key_prefix must not be empty".into());
        }
        if raw.timeout.is_zero() || raw.probe_lease.is_zero() {
            return Err("state.timeout and state.probe_lease must be more than zero".into());
        }
        Ok(Self {
            redis_url: raw.redis_url,
            redis_url_env: raw.redis_url_env,
            key_prefix: raw.key_prefix,
            timeout: raw.timeout,
            probe_lease: raw.probe_lease,
        })
    }
}

/// HTTP server limits.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Largest request body accepted (bytes; default 4 MiB).
    #[serde(
        default = "default_body_limit",
        deserialize_with = "check::at_least_one"
    )]
    pub body_limit: usize,
    /// Deadline for a whole request (default 120 s). For a stream it covers the time until
    /// the stream commits to a provider (its first token, or the end of a hold-back); what
    /// follows is bounded by `max_stream_duration` and each provider's own limits.
    #[serde(
        default = "default_deadline",
        deserialize_with = "check::positive_duration",
        serialize_with = "brace_core::duration::serialize"
    )]
    pub request_timeout: Duration,
    /// How long a connection may take to send a request head, its first byte and the
    /// HTTP/2 preface included (default 30 s).
    #[serde(
        default = "thirty_seconds",
        deserialize_with = "check::positive_duration",
        serialize_with = "brace_core::duration::serialize"
    )]
    pub header_timeout: Duration,
    /// The longest wait for the next piece of a request body (default 30 s); the whole body
    /// must also arrive within `request_timeout`. A request whose body stalls is answered
    /// 408 and its connection closed.
    #[serde(
        default = "thirty_seconds",
        deserialize_with = "check::positive_duration",
        serialize_with = "brace_core::duration::serialize"
    )]
    pub body_timeout: Duration,
    /// How long a connection may stay open with no request in flight (default 75 s, as
    /// nginx's `keepalive_timeout`).
    #[serde(
        default = "default_idle_timeout",
        deserialize_with = "check::positive_duration",
        serialize_with = "brace_core::duration::serialize"
    )]
    pub idle_timeout: Duration,
    /// The longest a response may make no progress towards the client (default 60 s, as
    /// nginx's `send_timeout`): a client that stops reading has its connection closed, and
    /// the request it held (an upstream stream included) is dropped. Over HTTP/2, a stream
    /// whose client takes none of its data for as long (its flow-control window left shut)
    /// is dropped alone.
    #[serde(
        default = "default_send_timeout",
        deserialize_with = "check::positive_duration",
        serialize_with = "brace_core::duration::serialize"
    )]
    pub send_timeout: Duration,
    /// How often an HTTP/2 connection is pinged (default 30 s).
    #[serde(
        default = "thirty_seconds",
        deserialize_with = "check::positive_duration",
        serialize_with = "brace_core::duration::serialize"
    )]
    pub http2_keep_alive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed (default 20 s).
    #[serde(
        default = "default_keep_alive_timeout",
        deserialize_with = "check::positive_duration",
        serialize_with = "brace_core::duration::serialize"
    )]
    pub http2_keep_alive_timeout: Duration,
    /// The most connections open at once (default 10 000); beyond it a new connection is
    /// answered 503 with `Retry-After` and closed.
    #[serde(
        default = "default_max_connections",
        deserialize_with = "check::at_least_one"
    )]
    pub max_connections: usize,
    /// The most data-plane requests in flight at once, streams included (default 4 096);
    /// beyond it a request is answered 503 with `Retry-After` at once, never queued. Health,
    /// metrics and admin endpoints are not counted and keep answering.
    #[serde(
        default = "default_max_in_flight",
        deserialize_with = "check::at_least_one"
    )]
    pub max_in_flight: usize,
    /// The longest `Retry-After` passed on to clients (default one day, also the most it can
    /// be): a provider's longer wait is sent as this.
    #[serde(
        default = "default_max_retry_after",
        deserialize_with = "check::retry_after_cap",
        serialize_with = "brace_core::duration::serialize"
    )]
    pub max_retry_after: Duration,
    /// The longest a whole streamed answer may take, from the request to its last event
    /// (default: no bound beyond each provider's `timeout`). Past it the stream ends with an
    /// SSE error event (`code: stream_deadline`) and no `[DONE]`.
    #[serde(
        default,
        deserialize_with = "check::positive_duration_option",
        serialize_with = "brace_core::duration::option::serialize"
    )]
    pub max_stream_duration: Option<Duration>,
    /// How long in-flight requests get to finish on shutdown (default 30 s; 0 drops them at
    /// once). Streams still open when it runs out end with an SSE error event
    /// (`code: shutting_down`) and no `[DONE]`.
    #[serde(default = "thirty_seconds", with = "brace_core::duration")]
    pub shutdown_grace: Duration,
    /// Log as JSON lines.
    #[serde(default)]
    pub json_logs: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            body_limit: default_body_limit(),
            request_timeout: default_deadline(),
            header_timeout: thirty_seconds(),
            body_timeout: thirty_seconds(),
            idle_timeout: default_idle_timeout(),
            send_timeout: default_send_timeout(),
            http2_keep_alive_interval: thirty_seconds(),
            http2_keep_alive_timeout: default_keep_alive_timeout(),
            max_connections: default_max_connections(),
            max_in_flight: default_max_in_flight(),
            max_retry_after: default_max_retry_after(),
            max_stream_duration: None,
            shutdown_grace: thirty_seconds(),
            json_logs: false,
        }
    }
}

fn default_body_limit() -> usize {
    4 * 1024 * 1024
}

fn default_deadline() -> Duration {
    Duration::from_mins(2)
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(75)
}

fn default_send_timeout() -> Duration {
    Duration::from_mins(1)
}

fn default_keep_alive_timeout() -> Duration {
    Duration::from_secs(20)
}

fn default_max_connections() -> usize {
    10_000
}

fn default_max_in_flight() -> usize {
    4_096
}

fn default_max_retry_after() -> Duration {
    crate::error::MAX_RETRY_AFTER
}

/// The most retries `fallback.max_retries` may ask for: each is an upstream call, and past a
/// few the answer is late anyway.
pub const MAX_RETRIES: u32 = 20;

/// Checks that reject impossible values where they are read, so the error names their line.
mod check {
    use std::time::Duration;

    use super::DegradeConfig;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};

    pub(super) fn positive_duration<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let duration = brace_core::duration::deserialize(deserializer)?;
        if duration.is_zero() {
            return Err(D::Error::custom("must be more than zero"));
        }
        Ok(duration)
    }

    pub(super) fn positive_duration_option<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let duration = brace_core::duration::option::deserialize(deserializer)?;
        if duration.is_some_and(|duration| duration.is_zero()) {
            return Err(D::Error::custom("must be more than zero"));
        }
        Ok(duration)
    }

    pub(super) fn retry_after_cap<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let duration = positive_duration(deserializer)?;
        if duration > crate::error::MAX_RETRY_AFTER {
            return Err(D::Error::custom("must be at most one day (24h)"));
        }
        Ok(duration)
    }

    pub(super) fn at_least_one<'de, D, T>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default + PartialEq,
    {
        let value = T::deserialize(deserializer)?;
        if value == T::default() {
            return Err(D::Error::custom("must be at least 1"));
        }
        Ok(value)
    }

    pub(super) fn at_least_one_option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default + PartialEq,
    {
        let value = Option::<T>::deserialize(deserializer)?;
        if value.as_ref().is_some_and(|value| *value == T::default()) {
            return Err(D::Error::custom("must be at least 1"));
        }
        Ok(value)
    }

    pub(super) fn fraction_option<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<f64>, D::Error> {
        let value = Option::<f64>::deserialize(deserializer)?;
        if let Some(value) = value
            && !(0.0..=1.0).contains(&value)
        {
            return Err(D::Error::custom(format!(
                "must be between 0 and 1, not {value}"
            )));
        }
        Ok(value)
    }

    pub(super) fn non_empty<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<String, D::Error> {
        let value = String::deserialize(deserializer)?;
        if value.trim().is_empty() {
            return Err(D::Error::custom("must not be empty"));
        }
        Ok(value)
    }

    pub(super) fn non_empty_option<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<String>, D::Error> {
        let value = Option::<String>::deserialize(deserializer)?;
        if value
            .as_deref()
            .is_some_and(|value| value.trim().is_empty())
        {
            return Err(D::Error::custom("must not be empty"));
        }
        Ok(value)
    }

    /// Probabilities in a simulated provider's behaviour are between 0 and 1.
    pub(super) fn behavior(node: &brace_sim::Behavior) -> Result<(), String> {
        use brace_sim::Behavior;
        match node {
            Behavior::Flaky {
                probability,
                failure,
                otherwise,
            } => {
                if !(0.0..=1.0).contains(probability) {
                    return Err(format!(
                        "`probability` must be between 0 and 1, not {probability}"
                    ));
                }
                behavior(failure)?;
                behavior(otherwise)
            }
            Behavior::Delay { then, .. } => behavior(then),
            Behavior::Sequence { steps, then } => {
                steps.iter().try_for_each(behavior)?;
                behavior(then)
            }
            Behavior::When {
                then, otherwise, ..
            } => {
                behavior(then)?;
                behavior(otherwise)
            }
            _ => Ok(()),
        }
    }

    // ===== sections of other crates, checked where they are read =====

    /// `fallback`: brace-retry's own checks, and at most [`MAX_RETRIES`](super::MAX_RETRIES).
    #[derive(Default, Deserialize)]
    #[serde(try_from = "brace_retry::RetryConfig")]
    pub(super) struct Fallback(pub(super) brace_retry::RetryConfig);

    impl TryFrom<brace_retry::RetryConfig> for Fallback {
        type Error = String;

        fn try_from(config: brace_retry::RetryConfig) -> Result<Self, String> {
            if config.max_retries > super::MAX_RETRIES {
                return Err(format!(
                    "fallback: max_retries must be at most {}, not {}",
                    super::MAX_RETRIES,
                    config.max_retries
                ));
            }
            config
                .validate()
                .map_err(|err| format!("fallback: {err}"))?;
            Ok(Self(config))
        }
    }

    /// `circuit_breaker`: values impossible whatever the rest (brace-circuit checks the
    /// whole once the `health` shorthands and the defaults are folded in).
    #[derive(Default, Deserialize)]
    #[serde(try_from = "brace_circuit::CircuitBreakerConfig")]
    pub(super) struct CircuitBreaker(pub(super) brace_circuit::CircuitBreakerConfig);

    impl TryFrom<brace_circuit::CircuitBreakerConfig> for CircuitBreaker {
        type Error = String;

        fn try_from(config: brace_circuit::CircuitBreakerConfig) -> Result<Self, String> {
            for (key, value) in [
                ("wait_in_open", config.wait_in_open),
                ("slow_call_duration", config.slow_call_duration),
                ("max_wait_in_open", config.max_wait_in_open),
            ] {
                if value.is_some_and(|value| value.is_zero()) {
                    return Err(format!("circuit_breaker: {key} must be more than zero"));
                }
            }
            for (key, value) in [
                ("failure_rate_threshold", config.failure_rate_threshold),
                ("slow_call_rate_threshold", config.slow_call_rate_threshold),
            ] {
                if let Some(value) = value
                    && !(value > 0.0 && value <= 100.0)
                {
                    return Err(format!(
                        "circuit_breaker: {key} must be a percentage in (0, 100], got {value}"
                    ));
                }
            }
            if config.failure_threshold == Some(0) {
                return Err("circuit_breaker: failure_threshold must be at least 1".into());
            }
            Ok(Self(config))
        }
    }

    /// `degradation`: brace-degrade's checks of the ladder, the cache and the automatic
    /// levels.
    #[derive(Default, Deserialize)]
    #[serde(try_from = "super::DegradationConfig")]
    pub(super) struct Degradation(pub(super) super::DegradationConfig);

    impl TryFrom<super::DegradationConfig> for Degradation {
        type Error = String;

        fn try_from(config: super::DegradationConfig) -> Result<Self, String> {
            DegradeConfig::from(config.clone())
                .validate()
                .map_err(|err| format!("degradation: {err}"))?;
            Ok(Self(config))
        }
    }

    /// `cache`.
    #[derive(Deserialize)]
    #[serde(try_from = "brace_degrade::CacheConfig")]
    pub(super) struct Cache(pub(super) brace_degrade::CacheConfig);

    impl TryFrom<brace_degrade::CacheConfig> for Cache {
        type Error = String;

        fn try_from(cache: brace_degrade::CacheConfig) -> Result<Self, String> {
            DegradeConfig {
                cache: cache.clone(),
                ..DegradeConfig::default()
            }
            .validate()
            .map_err(|err| format!("cache: {err}"))?;
            Ok(Self(cache))
        }
    }

    /// `hedging`: a delay above zero, a percentile and a budget that mean something.
    #[derive(Deserialize)]
    #[serde(try_from = "brace_failover::HedgeConfig")]
    pub(super) struct Hedging(pub(super) brace_failover::HedgeConfig);

    impl TryFrom<brace_failover::HedgeConfig> for Hedging {
        type Error = String;

        fn try_from(hedge: brace_failover::HedgeConfig) -> Result<Self, String> {
            if hedge.delay.is_some_and(|delay| delay.is_zero()) {
                return Err("hedging: delay must be more than zero".into());
            }
            if !(0.0..=1.0).contains(&hedge.percentile) {
                return Err(format!(
                    "hedging: percentile must be between 0 and 1, not {}",
                    hedge.percentile
                ));
            }
            if !(0.0..=1000.0).contains(&hedge.budget_ratio) {
                return Err(format!(
                    "hedging: budget_ratio must be between 0 and 1000, not {}",
                    hedge.budget_ratio
                ));
            }
            if hedge.budget_ttl.is_zero() {
                return Err("hedging: budget_ttl must be more than zero".into());
            }
            Ok(Self(hedge))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_scrubbed() {
        assert_eq!(
            scrub_url_passwords("at 'redis://:pw@h:1/0' and http://u:p@x/y?pass=z&a=b, redis://h"),
            "at 'redis://:***@h:1/0' and http://u:***@x/y?pass=***&a=b, redis://h"
        );
        assert_eq!(scrub_url_passwords("no urls"), "no urls");
    }

    #[test]
    fn globs_match_like_shells() {
        assert!(glob_match("gpt-4o", "gpt-4o"));
        assert!(!glob_match("gpt-4o", "gpt-4o-mini"));
        assert!(glob_match("fast-*", "fast-chat"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "a-x-b-y-c"));
        assert!(!glob_match("a*b*c", "a-x-c"));
        assert!(!glob_match("fast-*", "slow-chat"));
    }
}
