//! Errors of a failover service. A failed call returns
//! [`AllProvidersFailed`](brace_core::AllProvidersFailed) or the provider's own error;
//! [`NotReady`] is what a provider that stayed unready is charged with.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// A provider did not become ready within the
/// [ready timeout](crate::FailoverConfig::ready_timeout); the request moved on.
#[derive(Debug, Clone, Copy)]
pub struct NotReady {
    after: Duration,
}

impl NotReady {
    pub(crate) fn new(after: Duration) -> Self {
        Self { after }
    }

    /// How long the provider was waited for.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "provider not ready after {}ms", self.after.as_millis())
    }
}

impl Error for NotReady {}

/// A failover service could not be built.
#[derive(Debug)]
pub struct FailoverBuildError {
    kind: BuildErrorKind,
}

#[derive(Debug)]
enum BuildErrorKind {
    TooManyProviders(usize),
    DuplicateName(String),
    NoRuntime,
    SecondCircuit(String),
}

impl FailoverBuildError {
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

    pub(crate) fn second_circuit(name: &str) -> Self {
        Self {
            kind: BuildErrorKind::SecondCircuit(name.to_owned()),
        }
    }

    pub(crate) fn no_runtime() -> Self {
        Self {
            kind: BuildErrorKind::NoRuntime,
        }
    }
}

impl fmt::Display for FailoverBuildError {
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
            BuildErrorKind::SecondCircuit(name) => write!(
                f,
                "provider `{name}` already has another circuit breaker in this registry \
                 (one provider, one breaker)"
            ),
            BuildErrorKind::NoRuntime => {
                f.write_str("active health checks need a tokio runtime to run in")
            }
        }
    }
}

impl Error for FailoverBuildError {}
