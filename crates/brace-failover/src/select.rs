//! Choosing the next provider to try.

use std::cell::Cell;

use fastrand::Rng;
use tokio::time::Instant;

use crate::config::Selection;
use crate::health::HealthTable;
use crate::provider::ProviderMeta;

/// The providers already tried by one request, as a bit set (at most 64 providers).
pub(crate) type Tried = u64;

pub(crate) fn bit(index: usize) -> Tried {
    1 << index
}

/// Picks the next provider for a request: the preferred one if it is healthy and untried;
/// otherwise, among the healthy untried providers of the best priority, one chosen by
/// `selection`. `None` when no healthy provider is left.
pub(crate) fn next(
    providers: &[ProviderMeta],
    health: &HealthTable,
    tried: Tried,
    preferred: Option<usize>,
    selection: Selection,
    rng: &mut Rng,
    now: Option<Instant>,
) -> Option<usize> {
    // The clock is read only if some provider is unhealthy.
    let ticks = Cell::new(now.map(|now| health.ticks(now)));
    let now = || {
        ticks.get().unwrap_or_else(|| {
            let now = health.ticks(Instant::now());
            ticks.set(Some(now));
            now
        })
    };
    let eligible = |i: usize| {
        tried & bit(i) == 0 && {
            let until = health.unhealthy_until(i);
            until == 0 || until <= now()
        }
    };
    if let Some(i) = preferred
        && eligible(i)
    {
        return Some(i);
    }
    let priority = (0..providers.len())
        .filter(|&i| eligible(i))
        .map(|i| providers[i].priority)
        .min()?;
    let candidates =
        || (0..providers.len()).filter(move |&i| providers[i].priority == priority && eligible(i));
    match selection {
        Selection::Ordered => candidates().next(),
        Selection::Weighted => {
            let total: u64 = candidates().map(|i| u64::from(providers[i].weight)).sum();
            if total == 0 {
                return candidates().next();
            }
            let mut point = rng.u64(0..total);
            candidates().find(|&i| {
                let weight = u64::from(providers[i].weight);
                if point < weight {
                    true
                } else {
                    point -= weight;
                    false
                }
            })
        }
        Selection::LeastLatency => candidates().min_by_key(|&i| health.latency_ns(i)),
        Selection::PowerOfTwoChoices => {
            let count = candidates().count();
            if count < 2 {
                return candidates().next();
            }
            let a = rng.usize(0..count);
            let mut b = rng.usize(0..count - 1);
            if b >= a {
                b += 1;
            }
            let a = candidates().nth(a)?;
            let b = candidates().nth(b)?;
            if health.latency_ns(b) < health.latency_ns(a) {
                Some(b)
            } else {
                Some(a)
            }
        }
        Selection::Cheapest => candidates().min_by(|&a, &b| {
            let price = |i: usize| providers[i].price.map_or(f64::INFINITY, |p| p.blended());
            price(a).total_cmp(&price(b))
        }),
    }
}

/// The untried provider that is closest to recovering: tried when every provider is
/// unhealthy, rather than failing without trying.
pub(crate) fn least_bad(count: usize, health: &HealthTable, tried: Tried) -> Option<usize> {
    (0..count)
        .filter(|&i| tried & bit(i) == 0)
        .min_by_key(|&i| health.unhealthy_until(i))
}
