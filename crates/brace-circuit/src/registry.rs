//! [`CircuitRegistry`]: breakers by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::config::CircuitBreakerBuilder;
use crate::error::CircuitConfigError;
use crate::handle::{CircuitHandle, CircuitMetrics};
use crate::layer::CircuitBreakerLayer;

/// Circuit breakers by name, for an endpoint that lists them (a gateway's
/// `GET /v1/circuits`) or an admin action that forces one.
///
/// # Clone
///
/// Cloning is cheap; every clone sees the same breakers.
///
/// # Example
///
/// ```
/// use brace_circuit::{CircuitBreakerConfig, CircuitRegistry, CircuitState};
///
/// let registry = CircuitRegistry::new();
/// let openai = registry.layer(CircuitBreakerConfig::default().to_builder("openai")?)?;
/// registry.get("openai").unwrap().force_open();
/// assert_eq!(openai.handle().state(), CircuitState::ForcedOpen);
/// let listed = registry.metrics();
/// assert_eq!(listed[0].name.as_ref(), "openai");
/// # Ok::<(), brace_circuit::CircuitConfigError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct CircuitRegistry {
    breakers: Arc<RwLock<BTreeMap<Arc<str>, CircuitHandle>>>,
}

impl CircuitRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a breaker under its name, returning the one it replaces.
    pub fn register(&self, handle: CircuitHandle) -> Option<CircuitHandle> {
        let name = handle.shared.name.clone();
        self.breakers.write().insert(name, handle)
    }

    /// Builds the layer `builder` describes and registers its breaker under its name.
    ///
    /// # Errors
    ///
    /// [`CircuitConfigError`] when a setting is out of range.
    pub fn layer<C>(
        &self,
        builder: CircuitBreakerBuilder<C>,
    ) -> Result<CircuitBreakerLayer<C>, CircuitConfigError> {
        let layer = builder.build()?;
        self.register(layer.handle());
        Ok(layer)
    }

    /// The breaker named `name`.
    pub fn get(&self, name: &str) -> Option<CircuitHandle> {
        self.breakers.read().get(name).cloned()
    }

    /// Removes the breaker named `name`.
    pub fn remove(&self, name: &str) -> Option<CircuitHandle> {
        self.breakers.write().remove(name)
    }

    /// Every breaker, by name.
    pub fn handles(&self) -> Vec<CircuitHandle> {
        self.breakers.read().values().cloned().collect()
    }

    /// Every breaker's metrics, by name.
    pub fn metrics(&self) -> Vec<CircuitMetrics> {
        self.handles().iter().map(CircuitHandle::metrics).collect()
    }
}
