//! One shared circuit: its local transitions go out, the others' come in, and a probe
//! lease decides which replica trials a recovering provider.

use std::sync::{Arc, Weak};
use std::time::Duration;

use brace_circuit::{CircuitHandle, CircuitState, HalfOpenGate, StateTransition};
use parking_lot::Mutex;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, timeout};

use crate::store::Inner;

/// A replica's view of a provider's probe lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lease {
    /// Nobody is known to trial.
    Free,
    /// This replica is asking Redis for it.
    Acquiring,
    /// This replica holds it until then: its breaker may trial.
    Held(Instant),
    /// Another replica holds it until then (at most): stay open.
    Elsewhere(Instant),
}

pub(crate) struct Share {
    provider: String,
    handle: CircuitHandle,
    lease: Mutex<Lease>,
}

impl Share {
    /// Shares `circuit`: installs the lease gate and a task that sends its transitions.
    pub(crate) fn start(inner: &Arc<Inner>, provider: &str, circuit: &CircuitHandle) {
        let share = Arc::new(Self {
            provider: provider.to_owned(),
            handle: circuit.clone(),
            lease: Mutex::new(Lease::Free),
        });
        let gate = Gate {
            share: Arc::downgrade(&share),
            store: Arc::downgrade(inner),
        };
        if !circuit.set_half_open_gate(Arc::new(gate)) {
            tracing::warn!(
                provider,
                "circuit already has a half-open gate: its trials are not coordinated"
            );
        }
        inner
            .circuits
            .write()
            .insert(provider.to_owned(), share.clone());
        let mut events = circuit.subscribe();
        let store = Arc::downgrade(inner);
        let task_share = share.clone();
        inner.spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => {
                        let Some(store) = store.upgrade() else {
                            return;
                        };
                        task_share.on_transition(&store, &event);
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        });
        // A store that is up already learns the shared state of this new circuit now
        // (otherwise the resync after connecting does).
        if inner.is_up() {
            let store = Arc::downgrade(inner);
            inner.spawn(async move {
                if let Some(store) = store.upgrade() {
                    share.resync(&store).await;
                }
            });
        }
    }

    /// A transition of the local breaker (or one applied from elsewhere).
    fn on_transition(&self, store: &Inner, event: &StateTransition) {
        if event.to() == CircuitState::HalfOpen {
            return;
        }
        let held = {
            let mut lease = self.lease.lock();
            let held = matches!(*lease, Lease::Held(_));
            *lease = Lease::Free;
            held
        };
        if held {
            // This replica's trial ended (or was overtaken): let the lease go.
            self.release(store);
        }
        if event.is_remote() {
            return;
        }
        store.publish_circuit(&self.provider, event.to(), event.wait());
    }

    /// Applies a state another replica decided.
    pub(crate) fn apply_remote(&self, state: CircuitState, wait: Option<Duration>) {
        self.handle.apply_remote(state, wait);
        if state != CircuitState::HalfOpen {
            let mut lease = self.lease.lock();
            if !matches!(*lease, Lease::Held(_)) {
                *lease = Lease::Free;
            }
        }
    }

    /// Shares the local state when Redis holds none for the provider (decided while the
    /// store was down): an open with its remaining wait, or a forced state.
    pub(crate) fn publish_local(&self, store: &Inner) {
        let state = self.handle.state();
        match state {
            CircuitState::Open => {
                if let Some(wait) = self.handle.metrics().remaining_wait
                    && !wait.is_zero()
                {
                    store.publish_circuit(&self.provider, state, Some(wait));
                }
            }
            CircuitState::ForcedOpen | CircuitState::Disabled | CircuitState::MetricsOnly => {
                store.publish_circuit(&self.provider, state, None);
            }
            CircuitState::Closed | CircuitState::HalfOpen => {}
        }
    }

    /// Reads the provider's shared state (for a circuit shared after the store connected).
    async fn resync(&self, store: &Inner) {
        let key = store.key("circuit", &self.provider);
        let stored: Result<Option<String>, String> = store.query(redis::cmd("GET").arg(&key)).await;
        let Ok(Some(text)) = stored else {
            if stored.is_ok() {
                self.publish_local(store);
            }
            return;
        };
        let Some(state) = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|value| value["state"].as_str().and_then(crate::store::parse_state))
        else {
            return;
        };
        let wait = if state == CircuitState::Open {
            let ttl: i64 = store.query(redis::cmd("PTTL").arg(&key)).await.unwrap_or(0);
            Some(Duration::from_millis(u64::try_from(ttl).unwrap_or(0)))
        } else {
            None
        };
        self.apply_remote(state, wait);
    }

    fn release(&self, store: &Inner) {
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(store.key("lease", &self.provider))
            .arg(&*store.replica)
            .ignore();
        store.send(pipe);
    }

    /// Asks Redis for the lease (`SET NX PX`); on success, moves the breaker to half-open.
    async fn acquire(self: Arc<Self>, store: Arc<Inner>) {
        let key = store.key("lease", &self.provider);
        let ttl = store.config.probe_lease;
        let won: Result<Option<String>, String> = store
            .query(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&*store.replica)
                    .arg("NX")
                    .arg("PX")
                    .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)),
            )
            .await;
        match won {
            Ok(Some(_)) => {
                *self.lease.lock() = Lease::Held(Instant::now() + ttl);
                tracing::debug!(provider = %self.provider, "probe lease taken: this replica trials");
                if !self.handle.try_half_open() {
                    // Closed or re-opened meanwhile: the lease is not needed.
                    *self.lease.lock() = Lease::Free;
                    self.release(&store);
                }
            }
            Ok(None) => {
                let left: i64 = store.query(redis::cmd("PTTL").arg(&key)).await.unwrap_or(0);
                let left = u64::try_from(left)
                    .map_or(ttl, Duration::from_millis)
                    .min(ttl);
                let mut lease = self.lease.lock();
                if *lease == Lease::Acquiring {
                    *lease = Lease::Elsewhere(Instant::now() + left);
                }
            }
            Err(_) => {
                let mut lease = self.lease.lock();
                if *lease == Lease::Acquiring {
                    *lease = Lease::Free;
                }
            }
        }
    }
}

/// Deletes a lease only if this replica holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The half-open gate: only the replica holding the provider's probe lease trials; the
/// others stay open until its outcome arrives or the lease lapses. With the store down,
/// every replica decides alone.
struct Gate {
    share: Weak<Share>,
    store: Weak<Inner>,
}

impl HalfOpenGate for Gate {
    fn may_half_open(&self, _circuit: &str) -> bool {
        let (Some(share), Some(store)) = (self.share.upgrade(), self.store.upgrade()) else {
            return true;
        };
        if !store.is_up() {
            return true;
        }
        let now = Instant::now();
        {
            let mut lease = share.lease.lock();
            match *lease {
                Lease::Held(until) if now < until => return true,
                Lease::Elsewhere(until) if now < until => return false,
                Lease::Acquiring => return false,
                _ => *lease = Lease::Acquiring,
            }
        }
        let task_store = store.clone();
        let limit = store.config.timeout * 4;
        store.spawn(async move {
            let share_for_reset = share.clone();
            if timeout(limit, share.acquire(task_store)).await.is_err() {
                let mut lease = share_for_reset.lease.lock();
                if *lease == Lease::Acquiring {
                    *lease = Lease::Free;
                }
            }
        });
        false
    }
}
