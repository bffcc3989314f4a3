//! Choosing the next provider to try.

use fastrand::Rng;

use crate::config::Selection;
use crate::provider::ProviderMeta;
use crate::registry::ProviderEntry;

/// The providers already dealt with by one request (tried, or skipped and named in its
/// trail), as a bit set (at most 64 providers).
pub(crate) type Tried = u64;

pub(crate) fn bit(index: usize) -> Tried {
    1 << index
}

/// Picks the next provider for a request: the preferred one if it may be tried; otherwise,
/// among the untried providers of the best priority that may be tried, one chosen by
/// `selection`. `eligible` says whether a provider may be tried now (its circuit admits a
/// call, it is not excluded). `None` when no provider is left.
pub(crate) fn next(
    providers: &[ProviderMeta],
    entries: &[ProviderEntry],
    tried: Tried,
    preferred: Option<usize>,
    selection: Selection,
    rng: &mut Rng,
    eligible: &dyn Fn(usize) -> bool,
) -> Option<usize> {
    let eligible = |i: usize| tried & bit(i) == 0 && eligible(i);
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
        Selection::LeastLatency => candidates().min_by_key(|&i| entries[i].latency_ns()),
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
            if entries[b].latency_ns() < entries[a].latency_ns() {
                Some(b)
            } else {
                Some(a)
            }
        }
        Selection::Cheapest => candidates().min_by(|&a, &b| {
            let cost = |i: usize| providers[i].cost.unwrap_or(f64::INFINITY);
            cost(a).total_cmp(&cost(b))
        }),
    }
}
