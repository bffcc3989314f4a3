//! The gateway binary's allocator: [mimalloc] (v2, built without transparent huge pages),
//! and the one setting it needs to behave like a server's allocator should.
//!
//! A request through the gateway makes about seventy small, short-lived allocations;
//! mimalloc serves them from per-thread free lists for much less CPU than glibc's malloc
//! (BENCHMARKS.md, "Allocator"), and [`Allocator`] asks for them by the shortest call each
//! allows. Out of the box, though, it keeps memory a thread freed until
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

/// The allocator to install with `#[global_allocator]`: mimalloc, asked the cheapest way
/// each allocation allows.
///
/// The `mimalloc` crate's own allocator calls `mi_malloc_aligned` for every allocation,
/// which checks the alignment and whether the next free block happens to meet it before it
/// takes the block, and goes the long way for anything over 1 KiB. Every mimalloc block is
/// aligned to at least a machine word, so an allocation that asks for no more than that —
/// nearly all of them — is served by plain `mi_malloc` (`mi_zalloc`, `mi_realloc`); larger
/// alignments go through the aligned calls as before. Freeing is `mi_free` either way.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocator;

/// The alignment every mimalloc block has (its size classes are whole machine words).
const WORD: usize = std::mem::size_of::<usize>();

// SAFETY: every method hands the layout to mimalloc, which returns memory of at least the
// size asked for, aligned to a machine word by every call and to `layout.align()` by the
// aligned ones (used whenever more than a word is asked for), or null on failure; `dealloc`
// and `realloc` are only called, by `GlobalAlloc`'s contract, with pointers these methods
// returned, which `mi_free` and `mi_realloc*` accept whichever call made them.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: see the impl's comment.
        unsafe {
            if layout.align() <= WORD {
                libmimalloc_sys::mi_malloc(layout.size()).cast()
            } else {
                libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: see the impl's comment.
        unsafe {
            if layout.align() <= WORD {
                libmimalloc_sys::mi_zalloc(layout.size()).cast()
            } else {
                libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        // SAFETY: see the impl's comment.
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl's comment.
        unsafe {
            if layout.align() <= WORD {
                libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

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
