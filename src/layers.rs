//! [`Layers`]: one classifier for a whole stack.

#[allow(unused_imports)] // used by the methods of enabled features
use std::sync::Arc;

/// Starts each layer's builder with the same classifier, so that a stack sets it once.
///
/// Every brace layer asks its classifier about the same input (`Result<&Response,
/// &BoxError>`, see [`Classify`](crate::Classify)), so one classifier serves the circuit
/// breaker, the retry layer, the degradation layer and the failover service alike. The
/// builders it returns are the layers' own, with [`classifier`] already called; anything
/// else is set on them as usual.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use brace::Layers;
/// use brace::llm::LlmClassifier;
///
/// # fn main() -> Result<(), brace::BoxError> {
/// let layers = Layers::new(LlmClassifier::new());
/// let breaker = layers.circuit_breaker("openai").consecutive_failures(3).build()?;
/// let retry = layers.retry().max_retries(2).build();
/// # let _ = (breaker, retry);
/// # Ok(())
/// # }
/// ```
///
/// [`classifier`]: crate::retry::RetryLayerBuilder::classifier
#[derive(Debug, Clone, Copy, Default)]
pub struct Layers<C> {
    classifier: C,
}

impl<C: Clone> Layers<C> {
    /// Builders judging outcomes with `classifier`.
    pub const fn new(classifier: C) -> Self {
        Self { classifier }
    }

    /// The classifier.
    pub fn classifier(&self) -> &C {
        &self.classifier
    }

    /// A circuit breaker named `name`: see
    /// [`CircuitBreakerLayer::builder`](brace_circuit::CircuitBreakerLayer::builder).
    #[cfg(feature = "circuit")]
    pub fn circuit_breaker(
        &self,
        name: impl Into<Arc<str>>,
    ) -> brace_circuit::CircuitBreakerBuilder<C> {
        brace_circuit::CircuitBreakerLayer::builder(name).classifier(self.classifier.clone())
    }

    /// A retry layer: see [`RetryLayer::builder`](brace_retry::RetryLayer::builder).
    #[cfg(feature = "retry")]
    pub fn retry(&self) -> brace_retry::RetryLayerBuilder<C> {
        brace_retry::RetryLayer::builder().classifier(self.classifier.clone())
    }

    /// A degradation ladder for requests `R`: see
    /// [`DegradeLayer::builder`](brace_degrade::DegradeLayer::builder).
    #[cfg(feature = "degrade")]
    pub fn degrade<R: brace_degrade::Degradable>(
        &self,
    ) -> brace_degrade::DegradeLayerBuilder<R, C> {
        brace_degrade::DegradeLayer::<R>::builder().classifier(self.classifier.clone())
    }

    /// A failover service over providers of type `S`: see
    /// [`FailoverService::builder`](brace_failover::FailoverService::builder).
    #[cfg(feature = "failover")]
    pub fn failover<S>(&self) -> brace_failover::FailoverBuilder<S, C> {
        brace_failover::FailoverService::builder().classifier(self.classifier.clone())
    }
}
