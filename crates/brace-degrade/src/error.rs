//! Errors of the degradation layer.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// No level of the ladder could answer and no inner service error is left to return: the
/// request reached the bottom of a ladder that has no static level (for instance after a
/// cache miss at a last, cached level).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLevelAnswered {
    _priv: (),
}

impl NoLevelAnswered {
    pub(crate) const fn new() -> Self {
        Self { _priv: () }
    }
}

impl fmt::Display for NoLevelAnswered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no degradation level could answer")
    }
}

impl Error for NoLevelAnswered {}

/// A level name that is not on the ladder.
#[derive(Debug, Clone)]
pub struct UnknownLevel {
    name: Arc<str>,
}

impl UnknownLevel {
    pub(crate) fn new(name: impl Into<Arc<str>>) -> Self {
        Self { name: name.into() }
    }

    /// The name that was asked for.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for UnknownLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown degradation level `{}`", self.name)
    }
}

impl Error for UnknownLevel {}

/// A ladder or configuration that cannot work, with what is wrong.
#[derive(Debug, Clone)]
pub struct DegradeConfigError {
    reason: String,
}

impl DegradeConfigError {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    /// What is wrong.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for DegradeConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid degradation config: {}", self.reason)
    }
}

impl Error for DegradeConfigError {}
