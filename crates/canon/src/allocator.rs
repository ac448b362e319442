//! The process's allocator: mimalloc, asked the plain way whenever the
//! alignment allows it.
//!
//! The `mimalloc` crate's allocator hands every request to
//! `mi_malloc_aligned`, whose fast path covers only blocks of at most 1 KiB
//! whose page has a free block at hand; everything else (a request's header
//! map, its boxed response future, an emptied page) went through the
//! generic aligned path and over-allocated: about 4 of a record GET's
//! allocations, ~200 instructions each (`bench/run --callgrind`). `mi_malloc`
//! returns blocks aligned to 16 bytes (`MI_MAX_ALIGN_SIZE`: every size class
//! is a multiple of two words), which is all an ordinary layout asks; only
//! layouts aligned beyond that (a cache-padded tokio task) or smaller than
//! their alignment take the aligned calls. The same rule std's `System`
//! allocator follows for `malloc`.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as ffi;

/// The alignment every block of `mi_malloc` has (`MI_MAX_ALIGN_SIZE`).
const PLAIN_ALIGN: usize = 16;

/// mimalloc through its plain calls where the layout allows (module docs).
pub struct Allocator;

/// Whether a block of `size` bytes from the plain calls is aligned enough
/// for `align`: at most the guaranteed 16, and not more than the size (a
/// 4-byte block of the smallest class may be only 8-aligned).
fn plain(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

// SAFETY: every method forwards to the mimalloc call with the contract
// GlobalAlloc asks for: a block of at least `layout.size()` bytes aligned to
// `layout.align()` (the plain calls only where `plain` shows their 16-byte
// alignment suffices), or null on failure; `dealloc` and `realloc` receive
// only pointers these methods returned, which `mi_free` and `mi_realloc*`
// accept whichever call made them.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain FFI calls; see the impl's comment.
        unsafe {
            if plain(layout.size(), layout.align()) {
                ffi::mi_malloc(layout.size()).cast()
            } else {
                ffi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if plain(layout.size(), layout.align()) {
                ffi::mi_zalloc(layout.size()).cast()
            } else {
                ffi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc's contract).
        unsafe { ffi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new
        // block keeps `layout.align()`, by the same rule as `alloc`.
        unsafe {
            if plain(new_size, layout.align()) {
                ffi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                ffi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size up to a few pages, at every alignment up to 4 KiB: the
    /// block is aligned, writable to its end, keeps its bytes when grown and
    /// shrunk, and frees. The test binary runs on this allocator too.
    #[test]
    fn blocks_are_aligned_and_keep_their_bytes() {
        let sizes = (1..=64).chain([100, 1000, 1024, 1025, 1500, 4096, 5000, 70_000, 3 << 20]);
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
                let layout = Layout::from_size_align(size, align).expect("layout");
                // SAFETY: a non-zero size; the block is used within its size
                // and freed once, with the layout it was made with.
                unsafe {
                    let zeroed = Allocator.alloc_zeroed(layout);
                    assert!(!zeroed.is_null());
                    assert_eq!(zeroed as usize % align, 0, "zeroed {size} at {align}");
                    assert!(std::slice::from_raw_parts(zeroed, size).iter().all(|&b| b == 0));
                    Allocator.dealloc(zeroed, layout);

                    let p = Allocator.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "{size} at {align}");
                    for i in 0..size {
                        *p.add(i) = i as u8;
                    }
                    let grown = Allocator.realloc(p, layout, size * 2 + 1);
                    assert_eq!(grown as usize % align, 0, "grown {size} at {align}");
                    assert!((0..size).all(|i| *grown.add(i) == i as u8));
                    let grown_layout = Layout::from_size_align(size * 2 + 1, align).expect("layout");
                    let shrunk = Allocator.realloc(grown, grown_layout, size.div_ceil(2));
                    assert_eq!(shrunk as usize % align, 0, "shrunk {size} at {align}");
                    assert!((0..size.div_ceil(2)).all(|i| *shrunk.add(i) == i as u8));
                    Allocator.dealloc(
                        shrunk,
                        Layout::from_size_align(size.div_ceil(2), align).expect("layout"),
                    );
                }
            }
        }
    }
}
