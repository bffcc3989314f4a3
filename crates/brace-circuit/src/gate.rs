//! [`HalfOpenGate`]: a say in when an open breaker moves to half-open.

/// Asked before an open breaker whose wait is over moves to half-open — on the call that
/// finds the wait over, on the automatic-transition timer, and on
/// [`CircuitHandle::try_half_open`](crate::CircuitHandle::try_half_open).
///
/// `true` lets the breaker move (and its trial calls through). `false` keeps it open: the
/// call is refused with a [`CircuitOpen`](crate::CircuitOpen) without a `retry_after` (the
/// trial is someone else's, and when it ends is not known here), and
/// [`CircuitHandle::admission`](crate::CircuitHandle::admission) reports a refusal, so a
/// failover service skips the provider. The breaker asks again on the next call; a gate
/// that learns later that the trial is its own calls
/// [`CircuitHandle::try_half_open`](crate::CircuitHandle::try_half_open).
///
/// This is how replicas sharing a breaker's state send one trial between them rather
/// than one each: the gate answers `true` only on the replica that holds a probe lease in
/// a shared store, and starts acquiring one (asynchronously: the method must not block)
/// when it has none. Without a gate, the breaker moves by itself.
///
/// The method is called with the breaker's transition lock not held, only on the rare
/// path (an open breaker whose wait is over), never on a closed breaker's hot path.
pub trait HalfOpenGate: Send + Sync + 'static {
    /// Whether the breaker named `circuit` may move from open to half-open now.
    fn may_half_open(&self, circuit: &str) -> bool;
}

impl<F> HalfOpenGate for F
where
    F: Fn(&str) -> bool + Send + Sync + 'static,
{
    fn may_half_open(&self, circuit: &str) -> bool {
        self(circuit)
    }
}
