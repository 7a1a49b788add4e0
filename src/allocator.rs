//! The process's memory allocator: mimalloc, called through its plain entry points.
//!
//! Why mimalloc: SIP messages are allocated on one thread and freed on another (the database
//! thread, a tokio worker), and glibc's per-thread arenas turn that into lock and consolidation
//! work — a fifth of the server's CPU under registration load (bench/RESULTS.md).
//!
//! Why not the `mimalloc` crate's `MiMalloc`: it sends every allocation through
//! `mi_malloc_aligned`, even with Rust's usual alignments of 1 to 8. In mimalloc 3 that call
//! takes its fast path only while the size class's current page has a free block at hand;
//! otherwise it falls back to a generic path which, for a block size that is not a power of two
//! (24, 40, 48 bytes...), over-allocates from a larger class. `mi_malloc` already returns blocks
//! aligned to the word size (every size class is a multiple of it, every page starts at least
//! 16-aligned), so for alignments up to a word this calls it and `mi_realloc` directly, and keeps
//! the aligned entry points for the rest (hash tables' 16-byte groups, for instance).
//! Measured with callgrind in the call benchmark: see bench/RESULTS.md, fifteenth session.
//!
//! This module owns nothing but that choice; the binaries install it with `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// The alignment every `mi_malloc` block has whatever its size.
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc as a Rust global allocator. See the module documentation.
pub struct Allocator;

// SAFETY: each method hands the layout's size and alignment to the mimalloc entry point that
// guarantees them (plain calls only where the alignment is at most a word, which every mimalloc
// block has), and frees only pointers mimalloc returned.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            libmimalloc_sys::mi_malloc(layout.size()).cast()
        } else {
            libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            libmimalloc_sys::mi_zalloc(layout.size()).cast()
        } else {
            libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        libmimalloc_sys::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            libmimalloc_sys::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            libmimalloc_sys::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align())
                .cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size from 1 byte to past the small classes, at each alignment Rust uses, comes back
    /// aligned and writable, and survives growing and shrinking with its contents.
    #[test]
    fn blocks_are_aligned_and_keep_their_contents() {
        let a = Allocator;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in (1..=1100).step_by(7).chain([8192, 70_000]) {
                let layout = Layout::from_size_align(size, align).expect("valid layout");
                // SAFETY: non-zero size; the pointer is used within the layout and freed once.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null(), "{size}/{align}");
                    assert_eq!(p as usize % align, 0, "alloc {size}/{align}");
                    p.write_bytes(0xa5, size);
                    let grown = a.realloc(p, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "realloc {size}/{align}");
                    assert!((0..size).all(|i| *grown.add(i) == 0xa5));
                    let big = Layout::from_size_align(size * 3, align).expect("valid layout");
                    let shrunk = a.realloc(grown, big, size.div_ceil(2));
                    assert!((0..size.div_ceil(2)).all(|i| *shrunk.add(i) == 0xa5));
                    let small = Layout::from_size_align(size.div_ceil(2), align).expect("valid");
                    a.dealloc(shrunk, small);

                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "alloc_zeroed {size}/{align}");
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
