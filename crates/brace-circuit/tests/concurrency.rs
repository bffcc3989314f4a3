//! Many tasks on several threads calling one breaker while it changes state.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use brace_circuit::{CircuitBreakerLayer, CircuitOpen, CircuitState, SlidingWindow};
use brace_core::BoxError;
use common::{Call, Harness, TestError, judged};
use tokio::sync::oneshot;
use tower::{Service, ServiceExt};

/// A bound on each test, so that a bug hangs nothing (not a timing threshold).
const HANG_GUARD: Duration = Duration::from_mins(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Passed,
    Failed,
    Rejected,
}

fn ended(result: &Result<(), BoxError>) -> Ended {
    match result {
        Ok(()) => Ended::Passed,
        Err(err) if err.is::<CircuitOpen>() => Ended::Rejected,
        Err(err) if err.is::<TestError>() => Ended::Failed,
        Err(err) => panic!("unexpected error {err}"),
    }
}

/// Starts `n` calls that wait for their sender, each on its own task.
fn start_waiting(
    h: &Harness,
    n: usize,
) -> (
    Vec<oneshot::Sender<bool>>,
    Vec<tokio::task::JoinHandle<Ended>>,
) {
    let (senders, tasks) = (0..n)
        .map(|_| {
            let (tx, rx) = oneshot::channel();
            let mut service = h.service.clone();
            let task = tokio::spawn(async move {
                let result = match service.ready().await {
                    Ok(ready) => ready.call(Call::Wait(rx)).await,
                    Err(err) => Err(err),
                };
                ended(&result)
            });
            (tx, task)
        })
        .unzip();
    (senders, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_never_admits_more_trial_calls_than_permitted_across_threads() {
    const PERMITTED: usize = 3;
    const CALLERS: usize = 32;
    let layer = CircuitBreakerLayer::builder("shared")
        .sliding_window(SlidingWindow::Count(10))
        .minimum_calls(5)
        .failure_rate_threshold(50.0)
        .wait_in_open(Duration::ZERO)
        .permitted_calls_in_half_open(PERMITTED as u32);
    let h = Harness::new(&judged(layer));
    tokio::time::timeout(HANG_GUARD, async {
        for round in 0..40 {
            h.handle.reset();
            // 16 calls admitted while closed fail together: the fifth trips the breaker, the
            // rest are recorded late without re-tripping.
            let (senders, tasks) = start_waiting(&h, 16);
            while h.inner_calls() < round * (16 + PERMITTED) + 16 {
                tokio::task::yield_now().await;
            }
            for tx in senders {
                tx.send(false).unwrap();
            }
            for task in tasks {
                assert_eq!(task.await.unwrap(), Ended::Failed);
            }
            let metrics = h.handle.metrics();
            assert_eq!(metrics.state, CircuitState::Open);
            assert_eq!((metrics.buffered_calls, metrics.failed_calls), (10, 10));
            assert_eq!(metrics.consecutive_opens, 1);

            // The wait is zero: every caller races for the trial permits.
            let before = h.inner_calls();
            let (senders, tasks) = start_waiting(&h, CALLERS);
            let mut rejected = 0;
            let mut waiting = Vec::new();
            for (tx, task) in senders.into_iter().zip(tasks) {
                if task.is_finished() {
                    assert_eq!(task.await.unwrap(), Ended::Rejected);
                    rejected += 1;
                } else {
                    waiting.push((tx, task));
                }
            }
            while h.inner_calls() - before + rejected < CALLERS {
                let mut still = Vec::new();
                for (tx, task) in waiting {
                    if task.is_finished() {
                        assert_eq!(task.await.unwrap(), Ended::Rejected);
                        rejected += 1;
                    } else {
                        still.push((tx, task));
                    }
                }
                waiting = still;
                tokio::task::yield_now().await;
            }
            assert_eq!(h.inner_calls() - before, PERMITTED, "round {round}");
            let metrics = h.handle.metrics();
            assert_eq!(metrics.state, CircuitState::HalfOpen);
            assert_eq!(metrics.half_open_permits_left, Some(0));
            assert_eq!(metrics.not_permitted_calls as usize, CALLERS - PERMITTED);

            let succeed = round % 2 == 0;
            let mut trials = Vec::new();
            for (tx, task) in waiting {
                // A rejected caller may still be finishing; its sender is simply dropped.
                let _ = tx.send(succeed);
                trials.push(task);
            }
            let mut passed = 0;
            for task in trials {
                match task.await.unwrap() {
                    Ended::Passed | Ended::Failed => passed += 1,
                    Ended::Rejected => rejected += 1,
                }
            }
            assert_eq!((passed, rejected), (PERMITTED, CALLERS - PERMITTED));
            let expected = if succeed {
                CircuitState::Closed
            } else {
                CircuitState::Open
            };
            assert_eq!(h.handle.state(), expected, "round {round}");
        }
    })
    .await
    .expect("the test hung");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counts_stay_consistent_while_state_flips_under_load() {
    const TASKS: usize = 8;
    const CALLS: usize = 2_000;
    const PERMITTED: u32 = 5;
    let layer = CircuitBreakerLayer::builder("shared")
        .sliding_window(SlidingWindow::Count(100))
        .minimum_calls(20)
        .failure_rate_threshold(50.0)
        .wait_in_open(Duration::ZERO)
        .permitted_calls_in_half_open(PERMITTED);
    let mut h = Harness::new(&judged(layer));
    let transitions = Arc::new(AtomicUsize::new(0));
    let mut events = h.handle.subscribe();
    let counter = transitions.clone();
    let listener = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            assert_ne!(event.from(), event.to());
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });

    tokio::time::timeout(HANG_GUARD, async {
        let workers: Vec<_> = (0..TASKS)
            .map(|task| {
                let mut service = h.service.clone();
                tokio::spawn(async move {
                    let mut seed = task as u64 * 7919 + 1;
                    let mut counts = [0usize; 3];
                    for _ in 0..CALLS {
                        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        // Failures come in bursts so the breaker keeps flipping.
                        let fail = (seed >> 33) % 100
                            < if (seed >> 50).is_multiple_of(4) {
                                90
                            } else {
                                20
                            };
                        let call = if fail { Call::Fail } else { Call::Ok };
                        let result = service.ready().await.unwrap().call(call).await;
                        counts[ended(&result) as usize] += 1;
                        tokio::task::yield_now().await;
                    }
                    counts
                })
            })
            .collect();

        let handle = h.handle.clone();
        let flipper = tokio::spawn(async move {
            let mut snapshots = Vec::new();
            for i in 0..300 {
                match i % 10 {
                    0 => handle.force_open(),
                    3 => handle.disable(),
                    5 => handle.metrics_only(),
                    1 | 4 | 6 => handle.reset(),
                    _ => {}
                }
                snapshots.push(handle.metrics());
                tokio::task::yield_now().await;
            }
            snapshots
        });

        let mut totals = [0usize; 3];
        for worker in workers {
            for (total, count) in totals.iter_mut().zip(worker.await.unwrap()) {
                *total += count;
            }
        }
        for snapshot in flipper.await.unwrap() {
            assert!(snapshot.buffered_calls <= 100, "{snapshot:?}");
            assert!(
                snapshot.failed_calls <= snapshot.buffered_calls,
                "{snapshot:?}"
            );
            assert!(snapshot.slow_calls == 0, "{snapshot:?}");
            if let Some(left) = snapshot.half_open_permits_left {
                assert!(left <= PERMITTED, "{snapshot:?}");
            }
        }
        let [passed, failed, rejected] = totals;
        assert_eq!(passed + failed + rejected, TASKS * CALLS);
        assert_eq!(
            h.inner_calls(),
            passed + failed,
            "every admitted call reached the service"
        );
        assert!(
            rejected > 0 && failed > 0,
            "the breaker flipped: {totals:?}"
        );

        // After the storm the window is exact again.
        h.handle.reset();
        let before = h.inner_calls();
        h.calls(20, || Call::Ok).await;
        h.calls(10, || Call::Fail).await;
        let metrics = h.handle.metrics();
        assert_eq!(h.inner_calls() - before, 30);
        assert_eq!((metrics.buffered_calls, metrics.failed_calls), (30, 10));
        assert_eq!(metrics.state, CircuitState::Closed);
    })
    .await
    .expect("the test hung");
    assert!(transitions.load(Ordering::Relaxed) > 0);
    listener.abort();
}
