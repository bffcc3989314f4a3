//! Active health checks: a probe the user supplies, run on an interval.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use brace_core::BoxError;

use crate::health::HealthTable;

/// Checks whether a provider is up, for active health checks.
///
/// Implemented for any `FnMut(Arc<str>) -> impl Future<Output = Result<(), BoxError>>`
/// that is `Send + 'static`: the argument is the provider's name. A success brings an
/// unhealthy provider back at once; a failure keeps it out for another recovery time.
///
/// Each probe is bounded by the probe interval: one that takes longer counts as failed.
pub trait Probe: Send + 'static {
    /// The check in progress.
    type Future: Future<Output = Result<(), BoxError>> + Send + 'static;

    /// Starts checking the provider named `provider`.
    fn probe(&mut self, provider: Arc<str>) -> Self::Future;
}

impl<F, Fut> Probe for F
where
    F: FnMut(Arc<str>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    type Future = Fut;

    fn probe(&mut self, provider: Arc<str>) -> Self::Future {
        self(provider)
    }
}

/// Longest probe interval: longer ones are clamped so the timer cannot overflow.
const MAX_INTERVAL: Duration = Duration::from_hours(24 * 365);

/// Probes every provider each `interval` until the health table is dropped (when the last
/// clone of the service and the last in-flight call are gone).
pub(crate) fn spawn<P: Probe>(
    runtime: &tokio::runtime::Handle,
    table: &Arc<HealthTable>,
    names: Vec<Arc<str>>,
    interval: Duration,
    mut probe: P,
) {
    let interval = interval.clamp(Duration::from_millis(1), MAX_INTERVAL);
    let weak: Weak<HealthTable> = Arc::downgrade(table);
    let task = runtime.spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            for (index, name) in names.iter().enumerate() {
                let ok = matches!(
                    tokio::time::timeout(interval, probe.probe(name.clone())).await,
                    Ok(Ok(()))
                );
                let Some(table) = weak.upgrade() else {
                    return;
                };
                table.record_probe(index, ok);
            }
            if weak.strong_count() == 0 {
                return;
            }
        }
    });
    *table.probe_task.lock() = Some(task.abort_handle());
}
