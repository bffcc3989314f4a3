//! [`CircuitBreakerLayer`].

use std::sync::Arc;

use brace_core::DefaultClassifier;
use tower_layer::Layer;

use crate::config::{CircuitBreakerBuilder, CircuitBreakerConfig, Settings};
use crate::error::CircuitConfigError;
use crate::handle::CircuitHandle;
use crate::service::CircuitBreaker;
use crate::state::Shared;

/// Wraps services in a [`CircuitBreaker`]; every service it builds shares one breaker.
///
/// `C` is the classifier that judges each outcome ([`DefaultClassifier`] unless set with
/// [`with_classifier`](Self::with_classifier)).
///
/// # Example
///
/// ```
/// use brace_circuit::CircuitBreakerLayer;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), brace_core::BoxError> {
/// let layer = CircuitBreakerLayer::builder("echo").consecutive_failures(5).build()?;
/// let service = ServiceBuilder::new()
///     .layer(layer)
///     .service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) });
/// assert_eq!(service.oneshot(7).await?, 7);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = DefaultClassifier> {
    handle: CircuitHandle,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// Starts a builder for a breaker named `name` (the name appears in [`CircuitOpen`]
    /// errors, events and metrics).
    ///
    /// [`CircuitOpen`]: crate::CircuitOpen
    pub fn builder(name: impl Into<Arc<str>>) -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::new(name)
    }

    /// A layer configured from a file's settings.
    ///
    /// # Errors
    ///
    /// [`CircuitConfigError`] when a setting is out of range or `failure_threshold` is combined
    /// with window settings.
    pub fn from_config(
        name: impl Into<Arc<str>>,
        config: &CircuitBreakerConfig,
    ) -> Result<Self, CircuitConfigError> {
        config.to_builder(name)?.build()
    }

    /// A layer around an existing breaker, so that several stacks share it.
    pub fn from_handle(handle: CircuitHandle) -> Self {
        Self {
            handle,
            classifier: DefaultClassifier,
        }
    }

    pub(crate) fn from_settings(name: Arc<str>, settings: Settings) -> Self {
        Self::from_handle(CircuitHandle::new(Arc::new(Shared::new(name, settings))))
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// The same breaker, judging outcomes with `classifier` (for example
    /// [`StatusClassifier`](brace_core::StatusClassifier) for `http::Response`s).
    pub fn with_classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            handle: self.handle,
            classifier,
        }
    }

    /// The breaker's handle.
    pub fn handle(&self) -> CircuitHandle {
        self.handle.clone()
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::with_classifier(inner, self.handle.clone(), self.classifier.clone())
    }
}
