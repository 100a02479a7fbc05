//! The process's memory allocator: mimalloc, told to hand freed memory back at once.
//!
//! A monthly report allocates and frees millions of small strings across tokio's worker and
//! blocking threads. glibc's allocator spent about a tenth of the CPU on them and kept freed
//! memory scattered over its per-thread arenas; mimalloc is faster and, with the options below,
//! returns what a finished phase (reading, lookups, a workbook) freed instead of keeping it.
//!
//! The programs install it (`#[global_allocator]` in `main.rs` and in the bench): a library
//! leaves that choice to what links it, and the tests count allocations with their own.

use libmimalloc_sys::{mi_option_set, mi_option_t};

pub use mimalloc::MiMalloc as Allocator;

/// `mi_option_arena_eager_commit` in mimalloc.h: 0 commits arena memory as it is used.
const ARENA_EAGER_COMMIT: mi_option_t = 4;
/// `mi_option_purge_delay` in mimalloc.h: 0 returns freed pages to the OS at once.
const PURGE_DELAY: mi_option_t = 15;

/// Sets the options above (mimalloc otherwise reads them from `MIMALLOC_*` variables). Call it
/// first thing in `main`, before threads start.
pub fn tune() {
    // SAFETY: mi_option_set only stores an option value; both are valid options of the mimalloc built here.
    unsafe {
        mi_option_set(ARENA_EAGER_COMMIT, 0);
        mi_option_set(PURGE_DELAY, 0);
    }
}
