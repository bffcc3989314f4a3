//! The gateway binary's allocator: [mimalloc] (v2, built without transparent huge pages),
//! and the one setting it needs to behave like a server's allocator should.
//!
//! A request through the gateway makes a couple of hundred small, short-lived allocations;
//! mimalloc serves them from per-thread free lists for much less CPU than glibc's malloc
//! (BENCHMARKS.md, "Allocator"). Out of the box, though, it keeps memory a thread freed until
//! that thread allocates again after a 10 ms delay: a burst that held hundreds of MiB (300
//! stalled 1 MiB request bodies) stayed resident while the gateway was idle afterwards.
//! [`give_back_at_once`] sets that delay to zero, so freed memory goes back to the system
//! when it is freed.
//!
//! ```
//! #[global_allocator]
//! static ALLOCATOR: brace_alloc::Allocator = brace_alloc::Allocator;
//!
//! fn main() {
//!     brace_alloc::give_back_at_once();
//!     assert_eq!(brace_alloc::purge_delay_ms(), 0);
//!     let burst: Vec<Vec<u8>> = (0..8).map(|_| vec![1; 1 << 20]).collect();
//!     drop(burst); // returned to the system now, not when this thread allocates again
//! }
//! ```
//!
//! [mimalloc]: https://github.com/microsoft/mimalloc

/// The allocator to install with `#[global_allocator]`.
pub use mimalloc::MiMalloc as Allocator;

/// `mi_option_purge_delay` in mimalloc v2's `mimalloc.h` (the bindings name no constant
/// for it): how long freed memory waits before it is given back, in milliseconds.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc give memory back to the system as soon as it is freed, instead of after
/// its default delay (which only runs out when the freeing thread allocates again). Call it
/// first thing in `main`; it affects only memory freed afterwards.
pub fn give_back_at_once() {
    // SAFETY: `mi_option_set` stores a value in mimalloc's option table (an atomic store);
    // it may be called from any thread at any time, and 0 is a documented value of this
    // option ("use 0 for immediate purging").
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
}

/// mimalloc's purge delay in force, in milliseconds (0 after [`give_back_at_once`]).
#[must_use]
// `c_long` is 32 bits wide on some targets.
#[allow(clippy::useless_conversion)]
pub fn purge_delay_ms() -> i64 {
    // SAFETY: `mi_option_get` reads mimalloc's option table; it may be called at any time.
    #[allow(unsafe_code)]
    let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
    i64::from(delay)
}
