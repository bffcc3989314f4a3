//! One clock reading per poll, shared by every layer polled in it.
//!
//! A stack of brace layers reads the clock at the same moments: when an attempt starts the
//! failover service notes it for the provider's latency, the circuit breaker for the call's
//! duration, the retry layer for its deadline; when the attempt ends, each reads it again.
//! Those readings are a few hundred nanoseconds apart, and on a virtual machine each one
//! costs tens of nanoseconds (often more than the layer's own work).
//!
//! [`coherent`] runs a piece of work — a layer's `poll` — during which [`now`] reads the
//! clock once and returns that same reading to every later caller, however deep. The layers
//! wrap their futures' `poll` in it, so a stack polled together reads the clock once per
//! poll instead of once per layer and moment. Outside [`coherent`], [`now`] is
//! [`Instant::now`].
//!
//! What it means for measurements: readings taken in one poll are equal, so a duration
//! measured from a start and an end in the same poll (a call answered without waiting)
//! reads as zero, where separate readings would differ by the nanoseconds the code between
//! them took. Anything that waits ends in a later poll, with a reading of its own.
//!
//! The clock is tokio's: `tokio::time::pause` and `advance` (its `test-util` feature) move it.
//!
//! # Example
//!
//! ```
//! use brace_core::clock;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let (first, second) = clock::coherent(|| {
//!     let first = clock::now();
//!     // However long the work in between takes, the same poll reads the same instant.
//!     let second = clock::now();
//!     (first, second)
//! });
//! assert_eq!(first, second);
//! # }
//! ```

use std::cell::Cell;
use std::marker::PhantomData;

use tokio::time::Instant;

/// What the current thread is doing: not in a [`coherent`] scope, in one that has not read
/// the clock yet, or in one that has.
#[derive(Clone, Copy)]
enum Reading {
    Outside,
    Unread,
    Read(Instant),
}

thread_local! {
    static READING: Cell<Reading> = const { Cell::new(Reading::Outside) };
}

/// The current instant: inside [`coherent`], the scope's one reading (taken on the first
/// call); outside, a fresh [`Instant::now`].
pub fn now() -> Instant {
    READING.with(|reading| match reading.get() {
        Reading::Read(at) => at,
        Reading::Unread => {
            let at = Instant::now();
            reading.set(Reading::Read(at));
            at
        }
        Reading::Outside => Instant::now(),
    })
}

/// Runs `work` as one moment: every [`now`] in it (on this thread) returns the same instant.
///
/// A scope inside another is part of the outer one. The reading is forgotten when the
/// outermost scope ends, also when `work` panics.
pub fn coherent<R>(work: impl FnOnce() -> R) -> R {
    let _scope = scope();
    work()
}

/// Starts a scope like [`coherent`]'s that lasts until the returned guard is dropped (also
/// during a panic): a future's `poll` begins with `let _clock = clock::scope();`.
#[must_use = "the scope ends when the guard is dropped"]
pub fn scope() -> Scope {
    let outermost = READING.with(|reading| {
        let outermost = matches!(reading.get(), Reading::Outside);
        if outermost {
            reading.set(Reading::Unread);
        }
        outermost
    });
    Scope {
        outermost,
        _thread: PhantomData,
    }
}

/// The guard of a [`scope`]: dropping the outermost one forgets the reading. It stays on the
/// thread that made it.
#[derive(Debug)]
pub struct Scope {
    outermost: bool,
    _thread: PhantomData<*const ()>,
}

impl Drop for Scope {
    fn drop(&mut self) {
        if self.outermost {
            READING.with(|reading| reading.set(Reading::Outside));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_reading_per_scope_a_new_one_per_scope() {
        let first = coherent(now);
        tokio::time::advance(Duration::from_secs(1)).await;
        let (a, b) = coherent(|| (now(), now()));
        assert_eq!(a, b);
        assert_eq!(a - first, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn outside_a_scope_every_call_reads_the_clock() {
        let before = now();
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(now() - before, Duration::from_millis(5));
    }

    /// Waits (without sleeping) until the real clock has moved past its current reading.
    fn tick() {
        // Outside a runtime tokio's clock is the system's monotonic clock.
        let start = Instant::now();
        while Instant::now() == start {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn a_nested_scope_shares_the_outer_reading_and_leaves_it_in_place() {
        // The real clock (no runtime): readings taken after `tick` differ unless shared.
        coherent(|| {
            let outer = now();
            let inner = coherent(|| {
                tick();
                now()
            });
            assert_eq!(inner, outer);
            tick();
            assert_eq!(
                now(),
                outer,
                "the inner scope's end must not end the outer one"
            );
        });
        let later = now();
        tick();
        assert!(
            now() > later,
            "outside every scope, the clock is read again"
        );
    }

    #[test]
    fn a_guard_scope_holds_one_reading_until_it_is_dropped() {
        let scope = scope();
        let first = now();
        tick();
        assert_eq!(now(), first);
        {
            let _inner = super::scope();
            tick();
            assert_eq!(now(), first, "a nested guard joins the outer scope");
        }
        assert_eq!(
            now(),
            first,
            "dropping the nested guard keeps the outer scope"
        );
        drop(scope);
        tick();
        assert!(now() > first, "the outermost guard's drop ends the scope");
    }

    #[test]
    fn a_panic_ends_the_scope() {
        let caught = std::panic::catch_unwind(|| {
            coherent(|| {
                let _ = now();
                panic!("work failed");
            })
        });
        assert!(caught.is_err());
        let first = now();
        tick();
        assert!(
            now() > first,
            "a scope left by a panic must not keep its reading"
        );
    }
}
