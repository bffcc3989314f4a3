//! A provider: a service with a name and the metadata selection uses.

use std::fmt;
use std::sync::Arc;

/// One provider of a [`FailoverService`](crate::FailoverService): a service (with its own
/// stack — breaker, retry, timeout) plus its name, priority, weight and price.
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
///     .price(2.5, 10.0)
///     .model("gpt-4o");
/// assert_eq!(provider.name(), "openai");
/// ```
#[derive(Clone)]
pub struct Provider<S> {
    pub(crate) meta: ProviderMeta,
    pub(crate) service: S,
}

/// A provider's metadata.
#[derive(Debug, Clone)]
pub(crate) struct ProviderMeta {
    pub(crate) name: Arc<str>,
    pub(crate) model: Option<Arc<str>>,
    pub(crate) priority: u32,
    pub(crate) weight: u32,
    pub(crate) price: Option<Price>,
}

/// What a provider charges, per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Price {
    /// Price of a million input (prompt) tokens.
    pub input: f64,
    /// Price of a million output (completion) tokens.
    pub output: f64,
}

impl Price {
    /// The figure [`Selection::Cheapest`](crate::Selection::Cheapest) compares: input plus
    /// output price.
    pub fn blended(&self) -> f64 {
        self.input + self.output
    }
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
                price: None,
            },
            service,
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

    /// Sets the price per million input and output tokens, for
    /// [`Selection::Cheapest`](crate::Selection::Cheapest).
    #[must_use]
    pub fn price(mut self, input: f64, output: f64) -> Self {
        self.meta.price = Some(Price { input, output });
        self
    }

    /// Records which model this provider serves (shown in [`health`](crate::FailoverService::health)).
    #[must_use]
    pub fn model(mut self, model: impl Into<Arc<str>>) -> Self {
        self.meta.model = Some(model.into());
        self
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
            .field("price", &self.meta.price)
            .finish_non_exhaustive()
    }
}
