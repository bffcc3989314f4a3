//! The allocator honours every layout it is asked for: the alignment (a word or less goes to
//! plain `mi_malloc`, more to the aligned calls), zeroed memory, and a reallocation's
//! contents, for sizes across mimalloc's small, medium and large classes.

// Allocating by hand is what is under test.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};

use brace_alloc::Allocator;

const SIZES: &[usize] = &[
    1, 7, 8, 9, 15, 16, 17, 24, 40, 48, 100, 1_000, 1_024, 1_025, 4_000, 70_000, 600_000,
];
const ALIGNS: &[usize] = &[1, 2, 4, 8, 16, 32, 64, 4_096];

/// Every (size, alignment) pair, many times over: a misaligned block shows up in a free
/// list's order, so one allocation of each would prove little.
#[test]
fn every_block_meets_its_layout_and_keeps_its_bytes() {
    for &size in SIZES {
        for &align in ALIGNS {
            let layout = Layout::from_size_align(size, align).unwrap();
            let mut blocks = Vec::new();
            for round in 0..64_u8 {
                // SAFETY: the layout's size is not zero; each block is freed below with it.
                let block = unsafe { Allocator.alloc(layout) };
                assert!(!block.is_null(), "{size} bytes, aligned {align}");
                assert_eq!(block as usize % align, 0, "{size} bytes, aligned {align}");
                // SAFETY: the block holds `size` bytes.
                unsafe { block.write_bytes(round, size) };
                blocks.push((block, round));
            }
            for (block, round) in blocks {
                // SAFETY: written above; freed with the layout it was made with.
                unsafe {
                    assert_eq!(*block, round);
                    assert_eq!(*block.add(size - 1), round);
                    Allocator.dealloc(block, layout);
                }
            }
        }
    }
}

#[test]
fn zeroed_blocks_are_zero_even_where_freed_memory_was_written() {
    for &size in SIZES {
        for &align in ALIGNS {
            let layout = Layout::from_size_align(size, align).unwrap();
            // Dirty some blocks of this size first, so a reused one would show it.
            for _ in 0..4 {
                // SAFETY: as in the test above.
                unsafe {
                    let dirty = Allocator.alloc(layout);
                    dirty.write_bytes(0xAB, size);
                    Allocator.dealloc(dirty, layout);
                }
            }
            // SAFETY: the layout's size is not zero; freed below with it.
            let block = unsafe { Allocator.alloc_zeroed(layout) };
            assert_eq!(block as usize % align, 0, "{size} bytes, aligned {align}");
            // SAFETY: the block holds `size` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(block, size) };
            assert!(
                bytes.iter().all(|&b| b == 0),
                "{size} bytes, aligned {align}"
            );
            // SAFETY: made above with this layout.
            unsafe { Allocator.dealloc(block, layout) };
        }
    }
}

#[test]
fn a_reallocated_block_keeps_its_alignment_and_its_contents() {
    for &align in ALIGNS {
        let mut layout = Layout::from_size_align(24, align).unwrap();
        // SAFETY: the layout's size is not zero.
        let mut block = unsafe { Allocator.alloc(layout) };
        // SAFETY: the block holds 24 bytes.
        unsafe { block.write_bytes(0x5A, 24) };
        // Grow through every class, then shrink back.
        for size in [100, 1_025, 70_000, 600_000, 40, 24] {
            let kept = size.min(layout.size()).min(24);
            // SAFETY: `block` was made with `layout`; the new size is not zero.
            block = unsafe { Allocator.realloc(block, layout, size) };
            assert!(!block.is_null());
            assert_eq!(block as usize % align, 0, "{size} bytes, aligned {align}");
            // SAFETY: the first `kept` bytes were written and kept by `realloc`.
            let bytes = unsafe { std::slice::from_raw_parts(block, kept) };
            assert!(
                bytes.iter().all(|&b| b == 0x5A),
                "{size} bytes, aligned {align}"
            );
            layout = Layout::from_size_align(size, align).unwrap();
        }
        // SAFETY: made (last reallocated) with `layout`.
        unsafe { Allocator.dealloc(block, layout) };
    }
}
