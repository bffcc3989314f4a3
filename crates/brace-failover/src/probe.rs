//! Active health checks: a probe the user supplies, run on an interval, one task per
//! provider of a [`ProviderRegistry`](crate::ProviderRegistry).

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use brace_core::BoxError;

use crate::registry::{ProviderEntry, Record};

/// Checks whether a provider is up, for active health checks.
///
/// Implemented for any `FnMut(Arc<str>) -> impl Future<Output = Result<(), BoxError>>`
/// that is `Send + 'static`: the argument is the provider's name. A success moves the
/// provider's open circuit to half-open at once (its next real call is the trial); a failure
/// changes nothing — the circuit's own wait decides, so there is one recovery clock.
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

/// Probes one provider each `interval` until its record is dropped.
pub(crate) fn spawn<P: Probe>(
    runtime: &tokio::runtime::Handle,
    record: Weak<Record>,
    interval: Duration,
    mut probe: P,
) -> tokio::task::AbortHandle {
    let interval = interval.clamp(Duration::from_millis(1), MAX_INTERVAL);
    let task = runtime.spawn(async move {
        let Some(name) = record
            .upgrade()
            .map(|record| ProviderEntry(record).name_arc().clone())
        else {
            return;
        };
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let ok = matches!(
                tokio::time::timeout(interval, probe.probe(name.clone())).await,
                Ok(Ok(()))
            );
            let Some(record) = record.upgrade() else {
                return;
            };
            ProviderEntry(record).record_probe(ok);
        }
    });
    task.abort_handle()
}
