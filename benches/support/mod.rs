//! What every benchmark measures, once: each subject is a function that runs
//! `iters` operations and returns the time they took (setup and cleanup left
//! out), so the criterion harness (`alloc.rs`), the table printer (`table.rs`)
//! and the scaling run (`scaling.rs`) time exactly the same code.
//!
//! This file has the row and subject types, the peers and the system calls
//! the subjects share, and the table's rows in order; the subjects are in a
//! file per thing measured: allocation paths (`alloc.rs`), fixed-size
//! buffers (`cells.rs`), getting memory (`init.rs`) and streaming
//! bandwidth (`stream.rs`).
#![allow(dead_code)]

mod alloc;
mod cells;
mod init;
mod stream;

pub use self::alloc::*;
pub use self::cells::*;
pub use self::init::*;
pub use self::stream::*;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use allocator_api2::alloc::{AllocError, Allocator};
use bumpalo::Bump;
use crossbeam_queue::ArrayQueue;
use mimalloc::MiMalloc;
use unimem::{Block, BlockOptions, Grid, Heap, Pages, Pinning, Tape};

/// Runs `iters` operations and returns their time.
pub type Subject = Box<dyn Fn(u64) -> Duration>;

/// One row of the table: what it measures, its unit, and the subjects.
pub struct Row {
    pub name: &'static str,
    /// How a figure is shown: a time per operation, or bytes per second.
    pub unit: Unit,
    pub subjects: Vec<(&'static str, Subject)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Nanoseconds per operation (lower is better).
    Time,
    /// Bytes per operation, shown as GB/s (higher is better).
    Bandwidth(u64),
}

/// Best-effort pinning: the figures compare allocation paths, and the bench
/// must also run under a small RLIMIT_MEMLOCK. `pinned()` says what happened.
pub const OPTIONS: BlockOptions<'static> = BlockOptions::new().pinning(Pinning::BestEffort);

/// Operations timed together between two clock reads.
const BATCH: u64 = 1000;

/// Times `iters` calls of `op` on `state`, in batches of at most `batch`,
/// calling `reset` (untimed) after each batch.
fn batched<S>(
    iters: u64,
    batch: u64,
    state: &mut S,
    mut op: impl FnMut(&mut S),
    mut reset: impl FnMut(&mut S),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(batch);
        let start = Instant::now();
        for _ in 0..n {
            op(state);
        }
        total += start.elapsed();
        reset(state);
        left -= n;
    }
    total
}

/// `GlobalAlloc` as an `allocator_api2` allocator, for collection workloads
/// on the system allocator and mimalloc.
pub struct ViaGlobal<A: GlobalAlloc + 'static>(pub &'static A);

impl<A: GlobalAlloc> Clone for ViaGlobal<A> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A: GlobalAlloc> Copy for ViaGlobal<A> {}

// SAFETY: forwards to a GlobalAlloc, which hands out valid, disjoint memory.
unsafe impl<A: GlobalAlloc> Allocator for ViaGlobal<A> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(NonNull::slice_from_raw_parts(NonNull::dangling(), 0));
        }
        // SAFETY: a non-zero layout.
        let ptr = NonNull::new(unsafe { self.0.alloc(layout) }).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(ptr, layout.size()))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: allocated by `allocate` with `layout`.
            unsafe { self.0.dealloc(ptr.as_ptr(), layout) }
        }
    }
}

pub static SYSTEM: System = System;
pub static MIMALLOC: MiMalloc = MiMalloc;

/// Anonymous private memory straight from the kernel.
fn mmap(bytes: usize) -> *mut u8 {
    mmap_with(bytes, 0)
}

/// An anonymous private mapping of `bytes`, with `flags` added.
fn mmap_with(bytes: usize, flags: libc::c_int) -> *mut u8 {
    // SAFETY: a fresh anonymous mapping.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap failed");
    p.cast()
}

fn munmap(p: *mut u8, bytes: usize) {
    // SAFETY: a mapping made by `mmap` above.
    unsafe { libc::munmap(p.cast(), bytes) };
}

fn mlock(p: *mut u8, bytes: usize) {
    // SAFETY: our own mapping; failure (a small limit) only means unpinned.
    unsafe { libc::mlock(p.cast(), bytes) };
}

/// Writes one byte per page (faulting each in).
fn touch(p: *mut u8, bytes: usize) {
    for offset in (0..bytes).step_by(4096) {
        // SAFETY: callers pass memory they own of `bytes` bytes.
        unsafe { p.add(offset).write_volatile(1) };
    }
}

/// Every row of the table, in order.
pub fn rows() -> Vec<Row> {
    let mut rows = vec![
        Row {
            name: "take 64 B",
            unit: Unit::Time,
            subjects: take(64),
        },
        Row {
            name: "take 4 KiB",
            unit: Unit::Time,
            subjects: take(4096),
        },
        Row {
            name: "take 1 MiB",
            unit: Unit::Time,
            subjects: take(1 << 20),
        },
        Row {
            name: "free all (10 000 × 64 B)",
            unit: Unit::Time,
            subjects: free_all(),
        },
        Row {
            name: "grid cycle 4 KiB",
            unit: Unit::Time,
            subjects: cycle_4k(),
        },
        Row {
            name: "init 16 MiB (lazy)",
            unit: Unit::Time,
            subjects: init_lazy(),
        },
        Row {
            name: "init 16 MiB (warm)",
            unit: Unit::Time,
            subjects: init_warm(INIT),
        },
        Row {
            name: "init 1 GiB (warm)",
            unit: Unit::Time,
            subjects: init_warm(1 << 30),
        },
        Row {
            name: "init 1 GiB (warm, 4 KiB pages)",
            unit: Unit::Time,
            subjects: init_warm_small_pages(1 << 30),
        },
        Row {
            name: "write 64 MiB",
            unit: Unit::Bandwidth(STREAM as u64),
            subjects: bandwidth(true),
        },
        Row {
            name: "read 64 MiB",
            unit: Unit::Bandwidth(STREAM as u64),
            subjects: bandwidth(false),
        },
        Row {
            name: "collections workload (Heap)",
            unit: Unit::Time,
            subjects: collections(),
        },
        Row {
            name: "fast path: Heap malloc+free 64 B",
            unit: Unit::Time,
            subjects: heap_pair(),
        },
        Row {
            name: "fast path: TapeLocal take 64 B vs bumpalo",
            unit: Unit::Time,
            subjects: local_take(),
        },
        Row {
            name: "fast path: Tape take 64 B vs CAS loop",
            unit: Unit::Time,
            subjects: shared_take(),
        },
        Row {
            name: "fast path: Grid take+give vs ArrayQueue",
            unit: Unit::Time,
            subjects: grid_cycle(),
        },
        Row {
            name: "Grid take+fill 4 KiB+give, 1024 cells, vs ArrayQueue",
            unit: Unit::Time,
            subjects: grid_cycle_write(),
        },
    ];
    if huge_pages_free(1 << 30) {
        rows.insert(
            9,
            Row {
                name: "init 1 GiB (warm, 2 MiB pages)",
                unit: Unit::Time,
                subjects: init_warm_huge(1 << 30),
            },
        );
    } else {
        eprintln!(
            "row \"init 1 GiB (warm, 2 MiB pages)\" left out: fewer than 512 free 2 MiB pages \
             (reserve them with /proc/sys/vm/nr_hugepages)"
        );
    }
    for write in [true, false] {
        if let Some(subjects) = bandwidth_huge(write) {
            rows.push(Row {
                name: if write {
                    "write 64 MiB, huge-page Block"
                } else {
                    "read 64 MiB, huge-page Block"
                },
                unit: Unit::Bandwidth(STREAM as u64),
                subjects,
            });
        } else {
            eprintln!(
                "huge-page Block streaming rows left out: the 2 MiB page pool has not 64 MiB free"
            );
            break;
        }
    }
    rows
}
