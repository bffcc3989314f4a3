//! [`ServiceBuilderExt`]: brace's layers as `tower::ServiceBuilder` methods.

#[allow(unused_imports)] // every method is behind a feature
use std::time::Duration;

use tower::ServiceBuilder;
use tower_layer::Stack;

mod sealed {
    pub trait Sealed<L> {}
    impl<L> Sealed<L> for tower::ServiceBuilder<L> {}
}

/// Adds brace's layers to [`tower::ServiceBuilder`] (as tower-http's `ServiceBuilderExt`
/// adds its own), so that a stack reads top to bottom in the order calls go through it.
///
/// Failover is not a layer over one service but a service over several: [`failover`]
/// ends the builder as [`ServiceBuilder::service`] does, with a failover service built from
/// its builder under the layers above.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use brace::ServiceBuilderExt;
/// use brace::circuit::CircuitBreakerLayer;
/// use brace::llm::LlmClassifier;
/// use brace::llm::guard::StreamGuardLayer;
/// use brace::retry::RetryLayer;
/// use brace::sim::SimProvider;
/// use tower::ServiceBuilder;
///
/// # fn main() -> Result<(), brace::BoxError> {
/// let service = ServiceBuilder::new()
///     .circuit_breaker(CircuitBreakerLayer::builder("sim").classifier(LlmClassifier::new()).build()?)
///     .retries(RetryLayer::builder().classifier(LlmClassifier::new()).build())
///     .attempt_timeout(Duration::from_secs(30))
///     .stream_guard(StreamGuardLayer::new().first_token_timeout(Duration::from_secs(10)))
///     .service(SimProvider::with_behavior("sim", Default::default()));
/// # let _ = service;
/// # Ok(())
/// # }
/// ```
///
/// [`failover`]: ServiceBuilderExt::failover
pub trait ServiceBuilderExt<L>: sealed::Sealed<L> + Sized {
    /// A circuit breaker: see [`brace_circuit`].
    #[cfg(feature = "circuit")]
    fn circuit_breaker<C>(
        self,
        layer: brace_circuit::CircuitBreakerLayer<C>,
    ) -> ServiceBuilder<Stack<brace_circuit::CircuitBreakerLayer<C>, L>>;

    /// Retries: see [`brace_retry`]. (Not `retry`: tower's own `ServiceBuilder::retry`, an
    /// inherent method that takes a tower `Policy`, would win over it.)
    #[cfg(feature = "retry")]
    fn retries<C>(
        self,
        layer: brace_retry::RetryLayer<C>,
    ) -> ServiceBuilder<Stack<brace_retry::RetryLayer<C>, L>>;

    /// A degradation ladder: see [`brace_degrade`].
    #[cfg(feature = "degrade")]
    fn degrade<R, C>(
        self,
        layer: brace_degrade::DegradeLayer<R, C>,
    ) -> ServiceBuilder<Stack<brace_degrade::DegradeLayer<R, C>, L>>
    where
        R: brace_degrade::Degradable;

    /// The stream guard (commit at the first content, time limits): see
    /// [`brace_llm::guard`]. Its place is right above a provider client.
    #[cfg(feature = "llm")]
    fn stream_guard(
        self,
        layer: brace_llm::guard::StreamGuardLayer,
    ) -> ServiceBuilder<Stack<brace_llm::guard::StreamGuardLayer, L>>;

    /// A per-attempt timeout that keeps to the call's deadline:
    /// [`brace_core::deadline::TimeoutLayer`]. Under a retry layer, each attempt gets
    /// `timeout`.
    fn attempt_timeout(
        self,
        timeout: Duration,
    ) -> ServiceBuilder<Stack<brace_core::deadline::TimeoutLayer, L>>;

    /// One deadline for the whole call, seen by every layer below:
    /// [`brace_core::deadline::DeadlineLayer`].
    fn deadline(
        self,
        timeout: Duration,
    ) -> ServiceBuilder<Stack<brace_core::deadline::DeadlineLayer, L>>;

    /// Builds the failover service `builder` describes and wraps it in the layers added so
    /// far: the end of the builder, like [`ServiceBuilder::service`].
    ///
    /// # Errors
    ///
    /// What [`FailoverBuilder::build`](brace_failover::FailoverBuilder::build) refuses.
    #[cfg(feature = "failover")]
    fn failover<S, C, K, P>(
        self,
        builder: brace_failover::FailoverBuilder<S, C, K, P>,
    ) -> Result<L::Service, brace_failover::FailoverBuildError>
    where
        L: tower_layer::Layer<brace_failover::FailoverService<S, C, K, P>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    #[cfg(feature = "circuit")]
    fn circuit_breaker<C>(
        self,
        layer: brace_circuit::CircuitBreakerLayer<C>,
    ) -> ServiceBuilder<Stack<brace_circuit::CircuitBreakerLayer<C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "retry")]
    fn retries<C>(
        self,
        layer: brace_retry::RetryLayer<C>,
    ) -> ServiceBuilder<Stack<brace_retry::RetryLayer<C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "degrade")]
    fn degrade<R, C>(
        self,
        layer: brace_degrade::DegradeLayer<R, C>,
    ) -> ServiceBuilder<Stack<brace_degrade::DegradeLayer<R, C>, L>>
    where
        R: brace_degrade::Degradable,
    {
        self.layer(layer)
    }

    #[cfg(feature = "llm")]
    fn stream_guard(
        self,
        layer: brace_llm::guard::StreamGuardLayer,
    ) -> ServiceBuilder<Stack<brace_llm::guard::StreamGuardLayer, L>> {
        self.layer(layer)
    }

    fn attempt_timeout(
        self,
        timeout: Duration,
    ) -> ServiceBuilder<Stack<brace_core::deadline::TimeoutLayer, L>> {
        self.layer(brace_core::deadline::TimeoutLayer::new(timeout))
    }

    fn deadline(
        self,
        timeout: Duration,
    ) -> ServiceBuilder<Stack<brace_core::deadline::DeadlineLayer, L>> {
        self.layer(brace_core::deadline::DeadlineLayer::new(timeout))
    }

    #[cfg(feature = "failover")]
    fn failover<S, C, K, P>(
        self,
        builder: brace_failover::FailoverBuilder<S, C, K, P>,
    ) -> Result<L::Service, brace_failover::FailoverBuildError>
    where
        L: tower_layer::Layer<brace_failover::FailoverService<S, C, K, P>>,
    {
        Ok(self.service(builder.build()?))
    }
}
