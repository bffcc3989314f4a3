//! [`RedisConfig`] and [`RedisUrl`], whose password never shows.

use std::fmt;
use std::time::Duration;

/// A Redis URL (`redis://[user][:password@]host[:port][/db]`, `rediss://` for TLS is not
/// built in) that never shows its password: `Debug` and `Display` print `***` in its place,
/// and errors that quote it are scrubbed the same way.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Wraps `url` (checked when the store connects).
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL itself, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The password, if the URL has one (in its user part or a `pass=` query).
    fn password(&self) -> Option<&str> {
        let url = &self.0;
        let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if let Some((userinfo, _host)) = authority.rsplit_once('@')
            && let Some((_user, password)) = userinfo.split_once(':')
            && !password.is_empty()
        {
            return Some(password);
        }
        let (_, query) = url.split_once('?')?;
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("pass="))
            .filter(|password| !password.is_empty())
    }

    /// `text` with every occurrence of the URL's password replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        match self.password() {
            Some(password) => text.replace(password, "***"),
            None => text.to_owned(),
        }
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.scrub(&self.0))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// How a [`RedisStore`](crate::RedisStore) connects and shares.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Where Redis is.
    pub url: RedisUrl,
    /// Put before every key and the pub/sub channel, so that several deployments (or
    /// tests) can share one Redis. Default `brace:`.
    pub key_prefix: String,
    /// The longest wait for one Redis command (a cache lookup, a quota reservation, a
    /// health check) before the store answers from local state. Default 50 ms.
    pub timeout: Duration,
    /// How long a replica's probe lease lasts: while it holds it, the other replicas keep
    /// the provider's circuit open and leave the trial calls to it. It should outlast a
    /// trial call; when the holder dies, the others wait this long. Default 10 s.
    pub probe_lease: Duration,
    /// How often the connection is checked (a `PING`), which bounds how long a Redis that
    /// hangs goes unnoticed. Default 1 s.
    pub health_interval: Duration,
    /// The first wait before reconnecting, doubled after each failure up to 2 s.
    /// Default 100 ms.
    pub reconnect_delay: Duration,
    /// Larger cache entries (serialized) are not stored in Redis. Default 1 MiB.
    pub max_cache_entry_bytes: usize,
    /// Writes waiting to be sent; more are dropped (and counted). Default 1024.
    pub write_queue: usize,
}

impl RedisConfig {
    /// The defaults, for Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: RedisUrl::new(url),
            key_prefix: "brace:".to_owned(),
            timeout: Duration::from_millis(50),
            probe_lease: Duration::from_secs(10),
            health_interval: Duration::from_secs(1),
            reconnect_delay: Duration::from_millis(100),
            max_cache_entry_bytes: 1 << 20,
            write_queue: 1024,
        }
    }

    /// Sets the key prefix.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets the command timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the probe lease's length.
    pub fn probe_lease(mut self, lease: Duration) -> Self {
        self.probe_lease = lease;
        self
    }

    /// Sets the health-check interval.
    pub fn health_interval(mut self, interval: Duration) -> Self {
        self.health_interval = interval;
        self
    }

    /// Sets the first reconnect delay.
    pub fn reconnect_delay(mut self, delay: Duration) -> Self {
        self.reconnect_delay = delay;
        self
    }

    /// Sets the largest cache entry stored in Redis.
    pub fn max_cache_entry_bytes(mut self, bytes: usize) -> Self {
        self.max_cache_entry_bytes = bytes;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        for url in [
            "redis://:s3cret@127.0.0.1:6379/0",
            "redis://app:s3cret@redis.internal:6380",
            "redis://127.0.0.1:6379/0?pass=s3cret",
        ] {
            let url = RedisUrl::new(url);
            assert!(!url.to_string().contains("s3cret"), "{url}");
            assert!(!format!("{url:?}").contains("s3cret"), "{url:?}");
            assert!(url.to_string().contains("***"), "{url}");
            assert_eq!(
                url.scrub("cannot connect to redis://:s3cret@x"),
                "cannot connect to redis://:***@x"
            );
            assert!(url.expose().contains("s3cret"));
        }
        let plain = RedisUrl::new("redis://127.0.0.1:6379");
        assert_eq!(plain.to_string(), "redis://127.0.0.1:6379");
        assert!(!format!("{:?}", RedisConfig::new("redis://:pw123@h")).contains("pw123"));
    }
}
