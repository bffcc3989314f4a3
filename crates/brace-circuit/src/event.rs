//! State-transition events.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::state::CircuitState;

/// A circuit breaker changed state.
///
/// Delivered to the callback set with
/// [`CircuitBreakerBuilder::on_transition`](crate::CircuitBreakerBuilder::on_transition) and to every receiver from
/// [`CircuitHandle::subscribe`](crate::CircuitHandle::subscribe). A transition to the state
/// the breaker is already in is not a transition: it emits nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTransition {
    pub(crate) name: Arc<str>,
    pub(crate) from: CircuitState,
    pub(crate) to: CircuitState,
    pub(crate) at: Instant,
    /// The wait of an open that this transition entered.
    pub(crate) wait: Option<Duration>,
    /// Applied from elsewhere ([`CircuitHandle::apply_remote`](crate::CircuitHandle::apply_remote)).
    pub(crate) remote: bool,
}

impl StateTransition {
    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state it left.
    pub fn from(&self) -> CircuitState {
        self.from
    }

    /// The state it entered.
    pub fn to(&self) -> CircuitState {
        self.to
    }

    /// When.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// For a transition to `Open`, how long the breaker stays open (the whole wait, from
    /// [`at`](Self::at)); `None` for every other state.
    pub fn wait(&self) -> Option<Duration> {
        self.wait
    }

    /// `true` if the breaker did not decide this itself: the state was learned from
    /// elsewhere (another replica, through a shared state store) and applied with
    /// [`CircuitHandle::apply_remote`](crate::CircuitHandle::apply_remote). Whoever shares
    /// transitions skips these, so that a state is not echoed back to where it came from.
    pub fn is_remote(&self) -> bool {
        self.remote
    }
}

impl fmt::Display for StateTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit `{}` went from {} to {}",
            self.name, self.from, self.to
        )
    }
}
