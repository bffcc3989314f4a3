//! Durations in configuration files.
//!
//! Every brace config struct reads durations with this module, so a YAML file may say
//! `250ms`, `30s`, `5m` or `1h 30m` (humantime), or a bare number of seconds (`60`, `0.5`),
//! as the seed configuration's `reset_timeout: 60` does. Use it with
//! `#[serde(with = "brace_core::duration")]`, or [`option`] for an `Option<Duration>`.
//! [`nanos`] counts a duration in whole nanoseconds for the layers' atomic clocks.
//!
//! ```
//! use std::time::Duration;
//!
//! #[derive(serde::Deserialize)]
//! struct Config {
//!     #[serde(with = "brace_core::duration")]
//!     timeout: Duration,
//! }
//!
//! let config: Config = serde_json::from_str(r#"{"timeout": "250ms"}"#).unwrap();
//! assert_eq!(config.timeout, Duration::from_millis(250));
//! let config: Config = serde_json::from_str(r#"{"timeout": 60}"#).unwrap();
//! assert_eq!(config.timeout, Duration::from_secs(60));
//! assert!(serde_json::from_str::<Config>(r#"{"timeout": -1}"#).is_err());
//! ```

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;

/// `duration` in whole nanoseconds, saturating at `u64::MAX` (584 years).
pub fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Serializes a duration as humantime text (`1s 500ms`).
pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*duration))
}

/// Deserializes a duration from humantime text or a non-negative number of seconds.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

/// Parses humantime text or a number of seconds, with a message that says what is wrong.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return from_secs(secs);
    }
    humantime::parse_duration(text).map_err(|err| {
        format!("invalid duration `{text}`: {err} (expected e.g. `250ms`, `30s`, `5m` or seconds)")
    })
}

fn from_secs(secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        format!("invalid duration {secs}: must be a finite, non-negative number of seconds")
    })
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as `250ms`, `30s`, `5m`, or a number of seconds")
    }

    fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(secs))
    }

    fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Duration, E> {
        u64::try_from(secs)
            .map(Duration::from_secs)
            .map_err(|_| E::custom(format!("invalid duration {secs}: must not be negative")))
    }

    fn visit_f64<E: de::Error>(self, secs: f64) -> Result<Duration, E> {
        from_secs(secs).map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        parse(text).map_err(E::custom)
    }
}

/// The same for `Option<Duration>`: absent or `null` is `None`.
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `Some` as humantime text and `None` as null.
    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => super::serialize(duration, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Deserializes `null` as `None`, anything else as [`super::deserialize`] does.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapper(#[serde(with = "super")] Duration);
        Option::<Wrapper>::deserialize(deserializer).map(|wrapper| wrapper.map(|w| w.0))
    }
}
