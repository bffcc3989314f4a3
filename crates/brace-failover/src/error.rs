//! Errors of building a failover service. (A failed call returns
//! [`AllProvidersFailed`](brace_core::AllProvidersFailed) or the provider's own error.)

use std::error::Error;
use std::fmt;

/// A failover service could not be built.
#[derive(Debug)]
pub struct BuildError {
    kind: BuildErrorKind,
}

#[derive(Debug)]
enum BuildErrorKind {
    TooManyProviders(usize),
    DuplicateName(String),
    NoRuntime,
}

impl BuildError {
    pub(crate) fn too_many_providers(count: usize) -> Self {
        Self {
            kind: BuildErrorKind::TooManyProviders(count),
        }
    }

    pub(crate) fn duplicate_name(name: &str) -> Self {
        Self {
            kind: BuildErrorKind::DuplicateName(name.to_owned()),
        }
    }

    pub(crate) fn no_runtime() -> Self {
        Self {
            kind: BuildErrorKind::NoRuntime,
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            BuildErrorKind::TooManyProviders(count) => write!(
                f,
                "{count} providers given, a failover service takes at most {}",
                crate::MAX_PROVIDERS
            ),
            BuildErrorKind::DuplicateName(name) => {
                write!(f, "two providers are named `{name}`")
            }
            BuildErrorKind::NoRuntime => {
                f.write_str("active health checks need a tokio runtime to run in")
            }
        }
    }
}

impl Error for BuildError {}
