//! A provider: a service with a name and the metadata selection uses.

use std::fmt;
use std::sync::Arc;

use brace_circuit::CircuitHandle;

/// One provider of a [`FailoverService`](crate::FailoverService): a service (with its own
/// stack — breaker, retry, timeout) plus its name, priority, weight, cost and the handle of
/// its circuit breaker.
///
/// The circuit breaker decides whether the provider is tried: while it refuses calls the
/// failover service skips the provider without calling it (and names it in the error with
/// when it may be tried again). Put the breaker's layer in the provider's stack and pass its
/// [`handle`](brace_circuit::CircuitBreakerLayer::handle) here.
///
/// # Example
///
/// ```
/// use brace_failover::Provider;
/// # let service = tower::service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) });
///
/// let provider = Provider::new("openai", service)
///     .priority(0)
///     .weight(3)
///     .cost(12.5)
///     .model("gpt-4o");
/// assert_eq!(provider.name(), "openai");
/// ```
#[derive(Clone)]
pub struct Provider<S> {
    pub(crate) meta: ProviderMeta,
    pub(crate) service: S,
    pub(crate) circuit: Option<CircuitHandle>,
}

/// A provider's metadata.
#[derive(Debug, Clone)]
pub(crate) struct ProviderMeta {
    pub(crate) name: Arc<str>,
    pub(crate) model: Option<Arc<str>>,
    pub(crate) priority: u32,
    pub(crate) weight: u32,
    pub(crate) cost: Option<f64>,
}

impl<S> Provider<S> {
    /// A provider named `name` calling `service`, with priority 0 and weight 1.
    pub fn new(name: impl Into<Arc<str>>, service: S) -> Self {
        Self {
            meta: ProviderMeta {
                name: name.into(),
                model: None,
                priority: 0,
                weight: 1,
                cost: None,
            },
            service,
            circuit: None,
        }
    }

    /// Sets the priority: lower numbers are tried first (default 0).
    #[must_use]
    pub fn priority(mut self, priority: u32) -> Self {
        self.meta.priority = priority;
        self
    }

    /// Sets the weight for [`Selection::Weighted`](crate::Selection::Weighted) (default 1).
    /// A provider of weight 0 is chosen only after the weighted ones of its priority.
    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.meta.weight = weight;
        self
    }

    /// Sets the provider's relative cost, in any unit shared by the providers (an LLM
    /// gateway uses the price of a million input plus output tokens), for
    /// [`Selection::Cheapest`](crate::Selection::Cheapest).
    #[must_use]
    pub fn cost(mut self, cost: f64) -> Self {
        self.meta.cost = Some(cost);
        self
    }

    /// Attaches the provider's circuit breaker, which then decides whether it is tried.
    #[must_use]
    pub fn circuit(mut self, circuit: CircuitHandle) -> Self {
        self.circuit = Some(circuit);
        self
    }

    /// Records which model this provider serves (shown in [`health`](crate::FailoverService::health)).
    #[must_use]
    pub fn model(mut self, model: impl Into<Arc<str>>) -> Self {
        self.meta.model = Some(model.into());
        self
    }

    /// Wraps the provider's service (in a breaker layer, say), keeping its name and
    /// metadata.
    pub fn map_service<S2>(self, f: impl FnOnce(S) -> S2) -> Provider<S2> {
        Provider {
            meta: self.meta,
            service: f(self.service),
            circuit: self.circuit,
        }
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.meta.name
    }

    /// The provider's service.
    pub fn get_ref(&self) -> &S {
        &self.service
    }
}

impl<S> fmt::Debug for Provider<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.meta.name)
            .field("model", &self.meta.model)
            .field("priority", &self.meta.priority)
            .field("weight", &self.meta.weight)
            .field("cost", &self.meta.cost)
            .field("circuit", &self.circuit.as_ref().map(CircuitHandle::state))
            .finish_non_exhaustive()
    }
}
