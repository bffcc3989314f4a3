//! [`ConnectError`].

use std::fmt;

/// A [`RedisStore`](crate::RedisStore) could not be started: the URL is not a Redis URL,
/// or there is no tokio runtime. (A Redis that is down is not an error: the store starts
/// down and connects when it can.) The message never shows the URL's password.
#[derive(Debug, Clone)]
pub struct ConnectError {
    message: String,
}

impl ConnectError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConnectError {}
