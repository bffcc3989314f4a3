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

/// What a pick reads of a failover service's providers: see [`Shared::roster`](crate::service::Shared::roster).
#[derive(Clone, Copy)]
pub(crate) struct Roster<'a> {
    pub(crate) providers: &'a [ProviderMeta],
    /// Every provider's position, by priority, then by position (see [`by_priority`]).
    pub(crate) order: &'a [usize],
    /// Each provider's record in the registry, in the order of `providers`.
    pub(crate) entries: &'a [ProviderEntry],
    pub(crate) selection: Selection,
}

/// Picks the next provider for a request: the preferred one if it may be tried; otherwise,
/// among the untried providers of the best priority that may be tried, one chosen by the
/// roster's selection. The roster's `order` lists every provider by priority, then by
/// position, so the first eligible one in it has the best priority left and its equals
/// follow it: the common pick (the first provider, or [`Selection::Ordered`]) asks
/// `eligible` once instead of once per provider. `eligible` says whether a provider may be
/// tried now (its circuit admits a call, it is not excluded). `None` when no provider is
/// left.
pub(crate) fn next(
    roster: Roster<'_>,
    tried: Tried,
    preferred: Option<usize>,
    rng: &mut Rng,
    eligible: &dyn Fn(usize) -> bool,
) -> Option<usize> {
    let Roster {
        providers,
        order,
        entries,
        selection,
    } = roster;
    let eligible = |i: usize| tried & bit(i) == 0 && eligible(i);
    if let Some(i) = preferred
        && eligible(i)
    {
        return Some(i);
    }
    let at = order.iter().position(|&i| eligible(i))?;
    let first = order[at];
    let priority = providers[first].priority;
    let rest = &order[at + 1..];
    choose(providers, entries, selection, rng, || {
        std::iter::once(first).chain(
            rest.iter()
                .copied()
                .take_while(move |&i| providers[i].priority == priority)
                .filter(move |&i| eligible(i)),
        )
    })
}

/// One of `candidates` — the untried providers of the best priority left that may be tried,
/// in position order, never none — chosen by `selection`.
fn choose<I: Iterator<Item = usize>>(
    providers: &[ProviderMeta],
    entries: &[ProviderEntry],
    selection: Selection,
    rng: &mut Rng,
    candidates: impl Fn() -> I,
) -> Option<usize> {
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

/// The providers' positions ordered by priority (lower first), then by position: the order
/// [`next`] walks.
pub(crate) fn by_priority(providers: &[ProviderMeta]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..providers.len()).collect();
    // Stable: equals keep their positions' order.
    order.sort_by_key(|&i| providers[i].priority);
    order
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use brace_core::Outcome;
    use fastrand::Rng;
    use proptest::prelude::*;

    use super::*;
    use crate::registry::ProviderRegistry;

    /// Which providers `next` chooses among, by the rule as it reads (every provider asked,
    /// in position order, the best priority first found), then chosen as `next` chooses: the
    /// walk over `order` must come to the same pick.
    fn by_definition(
        roster: Roster<'_>,
        tried: Tried,
        preferred: Option<usize>,
        rng: &mut Rng,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        // Not `roster.order`: the rule asks every provider.
        let Roster {
            providers,
            entries,
            selection,
            ..
        } = roster;
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
        choose(providers, entries, selection, rng, || {
            (0..providers.len()).filter(move |&i| providers[i].priority == priority && eligible(i))
        })
    }

    /// One provider: priority, weight, cost, latency sample (ms), eligible now.
    type Spec = (u32, u32, Option<u8>, Option<u8>, bool);

    fn selection() -> impl Strategy<Value = Selection> {
        prop_oneof![
            Just(Selection::Ordered),
            Just(Selection::Weighted),
            Just(Selection::LeastLatency),
            Just(Selection::PowerOfTwoChoices),
            Just(Selection::Cheapest),
        ]
    }

    proptest! {
        #[test]
        fn the_walk_by_priority_picks_what_the_rule_picks(
            specs in prop::collection::vec((0u32..3, 0u32..4, prop::option::of(0u8..4), prop::option::of(1u8..5), any::<bool>()), 1..8),
            tried in any::<u8>(),
            preferred in prop::option::of(0usize..8),
            selection in selection(),
            seed in any::<u64>(),
        ) {
            let specs: Vec<Spec> = specs;
            let registry = ProviderRegistry::default();
            let providers: Vec<ProviderMeta> = specs
                .iter()
                .enumerate()
                .map(|(i, &(priority, weight, cost, _, _))| ProviderMeta {
                    name: Arc::from(format!("p{i}")),
                    model: None,
                    priority,
                    weight,
                    cost: cost.map(f64::from),
                })
                .collect();
            let entries: Vec<ProviderEntry> = providers
                .iter()
                .zip(&specs)
                .map(|(meta, &(_, _, _, latency, _))| {
                    let entry = registry.entry(&meta.name);
                    if let Some(ms) = latency {
                        entry.record(&Outcome::SUCCESS, Some(Duration::from_millis(u64::from(ms))), None);
                    }
                    entry
                })
                .collect();
            let eligible = |i: usize| specs[i].4;
            let preferred = preferred.filter(|&i| i < specs.len());
            let tried = Tried::from(tried) & ((1 << specs.len()) - 1);
            let order = by_priority(&providers);
            let (mut fast_rng, mut rule_rng) = (Rng::with_seed(seed), Rng::with_seed(seed));
            let roster = Roster { providers: &providers, order: &order, entries: &entries, selection };
            let fast = next(roster, tried, preferred, &mut fast_rng, &eligible);
            let rule = by_definition(roster, tried, preferred, &mut rule_rng, &eligible);
            prop_assert_eq!(fast, rule);
            // The same randomness consumed: later picks of the request stay the same too.
            prop_assert_eq!(fast_rng.u64(..), rule_rng.u64(..));
        }
    }

    #[test]
    fn the_first_pick_asks_only_the_provider_it_picks() {
        let meta = |name: &str, priority| ProviderMeta {
            name: Arc::from(name),
            model: None,
            priority,
            weight: 1,
            cost: None,
        };
        // Added out of priority order: the walk still starts at the best priority.
        let providers = [meta("c", 2), meta("a", 0), meta("b", 1)];
        let registry = ProviderRegistry::default();
        let entries: Vec<_> = providers.iter().map(|p| registry.entry(&p.name)).collect();
        let asked = std::cell::Cell::new(0);
        let eligible = |_: usize| {
            asked.set(asked.get() + 1);
            true
        };
        let order = by_priority(&providers);
        assert_eq!(order, [1, 2, 0]);
        let roster = Roster {
            providers: &providers,
            order: &order,
            entries: &entries,
            selection: Selection::Ordered,
        };
        let picked = next(roster, 0, None, &mut Rng::with_seed(1), &eligible);
        assert_eq!(picked, Some(1));
        assert_eq!(asked.get(), 1);
        // With "a" tried, "b" is next.
        let picked = next(roster, bit(1), None, &mut Rng::with_seed(1), &eligible);
        assert_eq!(picked, Some(2));
    }
}
