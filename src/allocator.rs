//! The process's memory allocator: jemalloc, with one arena, small thread caches and freed
//! memory handed back within a tenth of a second.
//!
//! A monthly report allocates and frees millions of small strings across tokio's worker and
//! blocking threads. glibc's allocator spent about a tenth of the CPU on them and kept freed
//! memory scattered over per-thread arenas; mimalloc was faster but, with 64 KiB pages per
//! size class and thread, held nearly twice the live heap. jemalloc packs small objects into
//! page-sized slabs. One arena stops each thread from growing its own; thread caches kept to
//! objects of 4 KiB and less stop each workbook writer from holding on to the buffers it
//! freed; a short decay returns what a finished phase (reading, lookups, a workbook) freed
//! without a system call on every free. Measured on the 10k-subscription month: the same CPU
//! as mimalloc, peak RSS 29–31 → 25–26 MiB (BENCHMARKS.md).
//!
//! The programs install it (`#[global_allocator]` in `main.rs` and in the bench): a library
//! leaves that choice to what links it, and the tests count allocations with their own.

use std::ffi::c_char;

pub use tikv_jemallocator::Jemalloc as Allocator;

/// jemalloc's options (`malloc_conf` in its manual), read before `main` runs. A `MALLOC_CONF`
/// in the environment (`_RJEM_MALLOC_CONF`, the symbols being prefixed) is applied after these.
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: Options =
    Options(c"narenas:1,tcache_max:4096,dirty_decay_ms:100,muzzy_decay_ms:0".as_ptr());

/// A C string pointer jemalloc reads at start-up, as its `const char *malloc_conf`.
#[repr(transparent)]
struct Options(*const c_char);

// SAFETY: the pointer is to a string literal: immutable and valid for the whole program.
unsafe impl Sync for Options {}
