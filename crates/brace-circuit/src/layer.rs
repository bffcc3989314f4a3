//! [`CircuitBreakerLayer`].

use std::sync::Arc;

use brace_core::DefaultClassifier;
use tower_layer::Layer;

use crate::config::{CircuitBreakerBuilder, Settings};
use crate::handle::CircuitHandle;
use crate::service::CircuitBreaker;
use crate::state::Shared;

/// Wraps services in a [`CircuitBreaker`]; every service it builds shares one breaker.
///
/// `C` is the classifier that judges each outcome ([`DefaultClassifier`] unless set with
/// the builder's [`classifier`](CircuitBreakerBuilder::classifier)).
///
/// # Example
///
/// ```
/// use brace_circuit::CircuitBreakerLayer;
/// use brace_core::StatusClassifier;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), brace_core::BoxError> {
/// let layer = CircuitBreakerLayer::builder("echo").consecutive_failures(5).build()?;
/// let service = ServiceBuilder::new()
///     .layer(layer)
///     .service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) });
/// assert_eq!(service.oneshot(7).await?, 7);
///
/// // Over HTTP: 5xx and 429 count, other 4xx are ignored.
/// let http = CircuitBreakerLayer::builder("api").classifier(StatusClassifier::new()).build()?;
/// # let _ = http;
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
    /// errors, events and metrics). A configuration file's settings give one too:
    /// [`CircuitBreakerConfig::to_builder`](crate::CircuitBreakerConfig::to_builder).
    ///
    /// [`CircuitOpen`]: crate::CircuitOpen
    pub fn builder(name: impl Into<Arc<str>>) -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::new(name)
    }
}

impl<C> CircuitBreakerLayer<C> {
    pub(crate) fn from_settings(name: Arc<str>, settings: Settings, classifier: C) -> Self {
        Self {
            handle: CircuitHandle::new(Arc::new(Shared::new(name, settings))),
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
