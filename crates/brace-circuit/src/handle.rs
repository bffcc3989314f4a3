//! [`CircuitHandle`]: read a breaker's state and metrics, force its state, watch its events.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::event::StateTransition;
use crate::gate::HalfOpenGate;
use crate::state::{Admission, CircuitState, Shared};

/// A handle on one circuit breaker, shared with every service the breaker's layer built.
///
/// # Clone
///
/// Cloning is cheap (an `Arc`); every clone controls the same breaker.
///
/// # Example
///
/// ```
/// use brace_circuit::{CircuitBreakerLayer, CircuitState};
///
/// let layer = CircuitBreakerLayer::builder("openai").build()?;
/// let handle = layer.handle();
/// handle.force_open();
/// assert_eq!(handle.state(), CircuitState::ForcedOpen);
/// handle.reset();
/// assert_eq!(handle.metrics().buffered_calls, 0);
/// # Ok::<(), brace_circuit::CircuitConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct CircuitHandle {
    pub(crate) shared: Arc<Shared>,
}

impl CircuitHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The current state. An open breaker whose wait is over reports `Open` until the next
    /// call moves it to half-open (or the timer does, with automatic transition).
    pub fn state(&self) -> CircuitState {
        self.shared.state()
    }

    /// Whether a call would be admitted now, read without admitting one (nothing is counted,
    /// no permit is taken): what a failover service asks before choosing a provider, so a
    /// provider whose circuit is open is skipped without a call.
    pub fn admission(&self) -> Admission {
        self.shared.admission()
    }

    /// Moves an open breaker to half-open now, before its wait is over, so the next calls
    /// are its trials: what a successful active health check does. Returns whether it
    /// moved (only an `Open` breaker does; forced states are left alone).
    pub fn try_half_open(&self) -> bool {
        self.shared.try_half_open()
    }

    /// A snapshot of the breaker's metrics.
    pub fn metrics(&self) -> CircuitMetrics {
        self.shared.metrics()
    }

    /// Rejects every call until another state is set by hand.
    pub fn force_open(&self) {
        self.shared.force(CircuitState::ForcedOpen);
    }

    /// Closes the breaker with an empty window.
    pub fn force_closed(&self) {
        self.shared.force(CircuitState::Closed);
    }

    /// Admits every call and records nothing until another state is set by hand.
    pub fn disable(&self) {
        self.shared.force(CircuitState::Disabled);
    }

    /// Admits every call and records it, but never opens, until another state is set by
    /// hand.
    pub fn metrics_only(&self) {
        self.shared.force(CircuitState::MetricsOnly);
    }

    /// Closes the breaker and forgets its recorded calls, its not-permitted count and the
    /// growth of its wait. Emits an event only if the breaker was not closed.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Receives every state transition from now on.
    ///
    /// A receiver more than 64 events behind loses the oldest and is told so by
    /// [`RecvError::Lagged`](broadcast::error::RecvError::Lagged).
    pub fn subscribe(&self) -> broadcast::Receiver<StateTransition> {
        self.shared.subscribe()
    }

    /// Applies a state learned from elsewhere — another replica's breaker for the same
    /// service, through a shared store — without deciding it here:
    ///
    /// - `Open` with `wait`: open for `wait` from now (the other replica's remaining wait;
    ///   an already open breaker takes the new wait);
    /// - `Closed`: closed with an empty window (the other replica's trial succeeded, or the
    ///   state was forced there);
    /// - `ForcedOpen`, `Disabled`, `MetricsOnly`: as forced by hand;
    /// - `HalfOpen` is never applied (a trial is one replica's own).
    ///
    /// The transition is emitted as any other, marked
    /// [`is_remote`](StateTransition::is_remote) so that whoever shares transitions does
    /// not send it back. Returns whether the breaker changed.
    pub fn apply_remote(&self, state: CircuitState, wait: Option<Duration>) -> bool {
        self.shared.apply_remote(state, wait)
    }

    /// Installs `gate`, asked before every move from open to half-open (see
    /// [`HalfOpenGate`]). Returns `false`, changing nothing, if a gate is installed
    /// already.
    pub fn set_half_open_gate(&self, gate: Arc<dyn HalfOpenGate>) -> bool {
        self.shared.set_gate(gate)
    }

    /// `true` if both handles control the same breaker.
    pub fn same_breaker(&self, other: &CircuitHandle) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

/// A snapshot of a breaker's metrics, as [`CircuitHandle::metrics`] returns it.
///
/// The counts are those of the current state's window: the closed window in closed,
/// metrics-only and open state (an open breaker keeps the window that tripped it), the
/// trial calls in half-open state. Serializes to JSON for an endpoint such as
/// `GET /v1/circuits` (durations in seconds).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CircuitMetrics {
    /// The breaker's name.
    pub name: Arc<str>,
    /// The state.
    pub state: CircuitState,
    /// Failure rate in percent, `None` until the window holds the minimum number of calls.
    pub failure_rate: Option<f32>,
    /// Slow-call rate in percent, `None` until the window holds the minimum number of calls.
    pub slow_call_rate: Option<f32>,
    /// Calls recorded in the window (successes and failures; ignored outcomes are not
    /// recorded).
    pub buffered_calls: u64,
    /// Failed calls in the window.
    pub failed_calls: u64,
    /// Slow calls in the window (successful or not).
    pub slow_calls: u64,
    /// Calls rejected since the breaker last closed.
    pub not_permitted_calls: u64,
    /// Trial permits left, in half-open state.
    pub half_open_permits_left: Option<u32>,
    /// How many times in a row the breaker has opened (drives the wait growth).
    pub consecutive_opens: u32,
    /// When the last transition happened.
    #[serde(skip)]
    pub last_transition_at: Instant,
    /// How long ago the last transition happened.
    #[serde(serialize_with = "secs")]
    pub since_last_transition: Duration,
    /// In open state, how long until trial calls are admitted.
    #[serde(serialize_with = "option_secs")]
    pub remaining_wait: Option<Duration>,
}

fn secs<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

#[allow(clippy::ref_option)] // serde's `serialize_with` passes `&Option<_>`
fn option_secs<S: serde::Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => secs(duration, serializer),
        None => serializer.serialize_none(),
    }
}
