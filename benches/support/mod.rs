//! What every benchmark measures, once: each subject is a function that runs
//! `iters` operations and returns the time they took (setup and cleanup left
//! out), so the criterion harness (`alloc.rs`), the table printer (`table.rs`)
//! and the scaling run (`scaling.rs`) time exactly the same code.
#![allow(dead_code)]

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

/// Allocating `size` bytes (frees untimed), with each allocator.
pub fn take(size: usize) -> Vec<(&'static str, Subject)> {
    let layout = Layout::from_size_align(size, 8).unwrap();
    let batch = if size >= 1 << 20 { 100 } else { BATCH };
    let tape_bytes = (batch as usize * size).next_multiple_of(1 << 20) * 2;
    let with_global = move |alloc: &'static dyn GlobalAlloc| -> Subject {
        Box::new(move |iters| {
            let mut held = Vec::with_capacity(batch as usize);
            batched(
                iters,
                batch,
                &mut held,
                // SAFETY: a non-zero layout; freed with it in the reset.
                |held| held.push(unsafe { alloc.alloc(black_box(layout)) }),
                |held| {
                    for p in held.drain(..) {
                        // SAFETY: allocated above with `layout`.
                        unsafe { alloc.dealloc(p, layout) };
                    }
                },
            )
        })
    };
    let mut subjects: Vec<(&'static str, Subject)> = vec![
        (
            "unimem",
            Box::new(move |iters| {
                let mut tape = Tape::open_with(tape_bytes, &OPTIONS.prefault(false)).unwrap();
                batched(
                    iters,
                    batch,
                    &mut tape,
                    |tape| {
                        black_box(tape.take(black_box(size), 8));
                    },
                    Tape::clear,
                )
            }),
        ),
        ("system", with_global(&SYSTEM)),
        ("mimalloc", with_global(&MIMALLOC)),
        (
            "bumpalo",
            Box::new(move |iters| {
                let mut bump = Bump::with_capacity(tape_bytes);
                batched(
                    iters,
                    batch,
                    &mut bump,
                    |bump| {
                        black_box(bump.alloc_layout(black_box(layout)));
                    },
                    Bump::reset,
                )
            }),
        ),
        (
            "Vec",
            Box::new(move |iters| {
                let mut held: Vec<Vec<u8>> = Vec::with_capacity(batch as usize);
                batched(
                    iters,
                    batch,
                    &mut held,
                    |held| held.push(Vec::with_capacity(black_box(size))),
                    |held| held.clear(),
                )
            }),
        ),
        (
            "Box",
            Box::new(move |iters| {
                let mut held: Vec<Box<[std::mem::MaybeUninit<u8>]>> =
                    Vec::with_capacity(batch as usize);
                batched(
                    iters,
                    batch,
                    &mut held,
                    |held| held.push(Box::new_uninit_slice(black_box(size))),
                    |held| held.clear(),
                )
            }),
        ),
    ];
    if size >= 4096 {
        subjects.push((
            "mmap",
            Box::new(move |iters| {
                let mut held = Vec::with_capacity(batch as usize);
                batched(
                    iters,
                    batch.min(100),
                    &mut held,
                    |held| held.push(mmap(black_box(size))),
                    |held| held.drain(..).for_each(|p| munmap(p, size)),
                )
            }),
        ));
        subjects.push((
            "mmap+mlock",
            Box::new(move |iters| {
                let mut held = Vec::with_capacity(batch as usize);
                batched(
                    iters,
                    batch.min(100),
                    &mut held,
                    |held| {
                        let p = mmap(black_box(size));
                        mlock(p, size);
                        held.push(p);
                    },
                    |held| held.drain(..).for_each(|p| munmap(p, size)),
                )
            }),
        ));
    }
    subjects
}

/// Freeing 10 000 allocations of 64 bytes: one operation is the whole lot.
pub fn free_all() -> Vec<(&'static str, Subject)> {
    const N: usize = 10_000;
    let layout = Layout::from_size_align(64, 8).unwrap();
    let with_global = |alloc: &'static dyn GlobalAlloc| -> Subject {
        Box::new(move |iters| {
            let mut total = Duration::ZERO;
            let mut held = Vec::with_capacity(N);
            for _ in 0..iters {
                // SAFETY: a non-zero layout; freed just below.
                held.extend((0..N).map(|_| unsafe { alloc.alloc(layout) }));
                let start = Instant::now();
                for p in held.drain(..) {
                    // SAFETY: allocated above with `layout`.
                    unsafe { alloc.dealloc(p, layout) };
                }
                total += start.elapsed();
            }
            total
        })
    };
    vec![
        (
            "unimem",
            Box::new(|iters| {
                let mut tape = Tape::open_with(1 << 20, &OPTIONS).unwrap();
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for _ in 0..N {
                        black_box(tape.take(64, 8));
                    }
                    let start = Instant::now();
                    tape.clear();
                    black_box(&mut tape);
                    total += start.elapsed();
                }
                total
            }),
        ),
        ("system", with_global(&SYSTEM)),
        ("mimalloc", with_global(&MIMALLOC)),
        (
            "bumpalo",
            Box::new(move |iters| {
                let mut bump = Bump::with_capacity(1 << 20);
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for _ in 0..N {
                        black_box(bump.alloc_layout(layout));
                    }
                    let start = Instant::now();
                    bump.reset();
                    total += start.elapsed();
                }
                total
            }),
        ),
        (
            "Vec",
            Box::new(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let held: Vec<Vec<u8>> = (0..N).map(|_| Vec::with_capacity(64)).collect();
                    let start = Instant::now();
                    drop(black_box(held));
                    total += start.elapsed();
                }
                total
            }),
        ),
        (
            "Box",
            Box::new(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let held: Vec<Box<[u8; 64]>> = (0..N).map(|_| Box::new([0u8; 64])).collect();
                    let start = Instant::now();
                    drop(black_box(held));
                    total += start.elapsed();
                }
                total
            }),
        ),
    ]
}

/// An `ArrayQueue` holding every index of a pool of `cells`.
fn full_queue(cells: usize) -> ArrayQueue<usize> {
    let queue = ArrayQueue::new(cells);
    for i in 0..cells {
        queue.push(i).unwrap();
    }
    queue
}

/// Taking a 4 KiB buffer and giving it back.
pub fn cycle_4k() -> Vec<(&'static str, Subject)> {
    let layout = Layout::from_size_align(4096, 4096).unwrap();
    let with_global = |alloc: &'static dyn GlobalAlloc| -> Subject {
        Box::new(move |iters| {
            batched(
                iters,
                BATCH,
                &mut (),
                // SAFETY: a non-zero layout, freed at once.
                |_| unsafe {
                    let p = alloc.alloc(black_box(layout));
                    alloc.dealloc(black_box(p), layout);
                },
                |_| {},
            )
        })
    };
    vec![
        (
            "unimem",
            Box::new(|iters| {
                let grid = Grid::<4096, 64>::open_with(&OPTIONS).unwrap();
                batched(
                    iters,
                    BATCH,
                    &mut (),
                    |_| {
                        black_box(grid.take_uninit());
                    },
                    |_| {},
                )
            }),
        ),
        ("system", with_global(&SYSTEM)),
        ("mimalloc", with_global(&MIMALLOC)),
        (
            "ArrayQueue",
            Box::new(|iters| {
                let queue = full_queue(64);
                batched(
                    iters,
                    BATCH,
                    &mut (),
                    |_| {
                        let cell = black_box(queue.pop().unwrap());
                        queue.push(cell).unwrap();
                    },
                    |_| {},
                )
            }),
        ),
        (
            "Vec",
            Box::new(|iters| {
                batched(
                    iters,
                    BATCH,
                    &mut (),
                    |_| {
                        black_box(Vec::<u8>::with_capacity(4096));
                    },
                    |_| {},
                )
            }),
        ),
        (
            "mmap",
            Box::new(|iters| {
                batched(
                    iters,
                    BATCH,
                    &mut (),
                    |_| munmap(black_box(mmap(4096)), 4096),
                    |_| {},
                )
            }),
        ),
    ]
}

const INIT: usize = 16 << 20;

/// Getting 16 MiB without touching it.
pub fn init_lazy() -> Vec<(&'static str, Subject)> {
    vec![
        (
            "unimem",
            Box::new(|iters| {
                let options = OPTIONS.prefault(false);
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let block = black_box(Block::open_with(INIT, &options).unwrap());
                    total += start.elapsed();
                    drop(block);
                }
                total
            }),
        ),
        (
            "system",
            Box::new(|iters| {
                let layout = Layout::from_size_align(INIT, 4096).unwrap();
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    // SAFETY: a non-zero layout; freed below.
                    let p = black_box(unsafe { System.alloc(layout) });
                    total += start.elapsed();
                    // SAFETY: allocated above.
                    unsafe { System.dealloc(p, layout) };
                }
                total
            }),
        ),
        (
            "mmap",
            Box::new(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let p = black_box(mmap(INIT));
                    total += start.elapsed();
                    munmap(p, INIT);
                }
                total
            }),
        ),
    ]
}

/// Getting `bytes` with every page faulted in (and, where the method pins,
/// locked): a Block (whose open populates 64 MiB and more from several
/// threads), malloc or mimalloc and a write per page, `mmap` and a write per
/// page, `mmap` and `mlock` (one thread).
pub fn init_warm(bytes: usize) -> Vec<(&'static str, Subject)> {
    let layout = Layout::from_size_align(bytes, 4096).unwrap();
    let with_global = move |alloc: &'static dyn GlobalAlloc| -> Subject {
        Box::new(move |iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                // SAFETY: a non-zero layout; freed below.
                let p = unsafe { alloc.alloc(layout) };
                touch(p, bytes);
                total += start.elapsed();
                // SAFETY: allocated above.
                unsafe { alloc.dealloc(p, layout) };
            }
            total
        })
    };
    vec![
        ("unimem", open_warm(bytes, OPTIONS)),
        ("system", with_global(&SYSTEM)),
        ("mimalloc", with_global(&MIMALLOC)),
        (
            "mmap",
            Box::new(move |iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let p = mmap(bytes);
                    touch(p, bytes);
                    total += start.elapsed();
                    munmap(p, bytes);
                }
                total
            }),
        ),
        ("mmap+mlock", mmap_mlock(bytes, 0)),
    ]
}

/// Opening a Block of `bytes`, all committed, with `options`.
fn open_warm(bytes: usize, options: BlockOptions<'static>) -> Subject {
    Box::new(move |iters| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let start = Instant::now();
            let block = black_box(Block::open_with(bytes, &options).unwrap());
            total += start.elapsed();
            drop(block);
        }
        total
    })
}

/// `mmap` (with `flags` added) and `mlock` of `bytes`, which faults every
/// page in on one thread.
fn mmap_mlock(bytes: usize, flags: libc::c_int) -> Subject {
    Box::new(move |iters| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let start = Instant::now();
            let p = mmap_with(bytes, flags);
            mlock(p, bytes);
            total += start.elapsed();
            munmap(p, bytes);
        }
        total
    })
}

/// As `init_warm`, with transparent huge pages not asked for: a Block of
/// 4 KiB pages, populated from several threads, against `mmap` and `mlock`
/// on one (what the parallel populate alone gains).
pub fn init_warm_small_pages(bytes: usize) -> Vec<(&'static str, Subject)> {
    vec![
        ("unimem", open_warm(bytes, OPTIONS.huge_pages(false))),
        ("mmap+mlock", mmap_mlock(bytes, 0)),
    ]
}

/// Whether the system's pool has `bytes` of free 2 MiB pages.
pub fn huge_pages_free(bytes: usize) -> bool {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()
        .and_then(|free| free.trim().parse::<usize>().ok())
        .is_some_and(|free| free * (2 << 20) >= bytes)
}

/// As `init_warm`, with explicit 2 MiB pages: a huge-page Block against
/// `mmap(MAP_HUGETLB)` and `mlock`.
pub fn init_warm_huge(bytes: usize) -> Vec<(&'static str, Subject)> {
    vec![
        ("unimem", open_warm(bytes, OPTIONS.pages(Pages::Huge2M))),
        (
            "mmap+mlock",
            mmap_mlock(bytes, libc::MAP_HUGETLB | libc::MAP_HUGE_2MB),
        ),
    ]
}

pub const STREAM: usize = 64 << 20;

/// Writes (or reads) every u64 of `STREAM` bytes at `p`, volatile.
fn stream(p: *mut u64, write: bool) {
    let n = STREAM / 8;
    if write {
        for i in 0..n {
            // SAFETY: callers pass STREAM bytes, u64-aligned.
            unsafe { p.add(i).write_volatile(i as u64) };
        }
    } else {
        let mut sum = 0u64;
        for i in 0..n {
            // SAFETY: as above.
            sum = sum.wrapping_add(unsafe { p.add(i).read_volatile() });
        }
        black_box(sum);
    }
}

/// 64 MiB held by each method, set up once per process and faulted in.
fn stream_buffers() -> &'static [(&'static str, usize)] {
    static BUFFERS: std::sync::OnceLock<Vec<(&'static str, usize)>> = std::sync::OnceLock::new();
    BUFFERS.get_or_init(|| {
        let block = Box::leak(Box::new(Block::open_with(STREAM, &OPTIONS).unwrap()));
        let vec = Box::leak(vec![1u64; STREAM / 8].into_boxed_slice());
        let layout = Layout::from_size_align(STREAM, 64).unwrap();
        // SAFETY: non-zero layouts; kept for the process's life.
        let (system, mi) = unsafe { (System.alloc(layout), MiMalloc.alloc(layout)) };
        touch(system, STREAM);
        touch(mi, STREAM);
        let mapped = mmap(STREAM);
        touch(mapped, STREAM);
        let locked = mmap(STREAM);
        mlock(locked, STREAM);
        vec![
            ("unimem", block.as_ptr() as usize),
            ("system", system as usize),
            ("mimalloc", mi as usize),
            ("Vec", vec.as_mut_ptr() as usize),
            ("mmap", mapped as usize),
            ("mmap+mlock", locked as usize),
        ]
    })
}

/// A huge-page Block of 64 MiB, set up once, if the pool has the pages.
fn huge_stream_buffer() -> Option<usize> {
    static BUFFER: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *BUFFER.get_or_init(|| {
        let block = OPTIONS.pages(Pages::Huge2M).open(STREAM).ok()?;
        Some(Box::leak(Box::new(block)).as_ptr() as usize)
    })
}

/// Streaming over 64 MiB of a huge-page Block, against the same peers as
/// `bandwidth`; `None` without the huge pages.
pub fn bandwidth_huge(write: bool) -> Option<Vec<(&'static str, Subject)>> {
    let huge = huge_stream_buffer()?;
    let mut subjects = bandwidth(write);
    subjects[0] = ("unimem", streaming(huge, write));
    Some(subjects)
}

fn streaming(p: usize, write: bool) -> Subject {
    Box::new(move |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            stream(p as *mut u64, write);
        }
        start.elapsed()
    })
}

/// Streaming over 64 MiB held by each method.
pub fn bandwidth(write: bool) -> Vec<(&'static str, Subject)> {
    stream_buffers()
        .iter()
        .map(|&(name, p)| -> (&'static str, Subject) {
            (
                name,
                Box::new(move |iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        stream(p as *mut u64, write);
                    }
                    start.elapsed()
                }),
            )
        })
        .collect()
}

/// A collections workload (a map of vectors, churned) on each allocator.
pub fn collections() -> Vec<(&'static str, Subject)> {
    fn workload<A: Allocator + Copy>(alloc: A) {
        let mut map = hashbrown::HashMap::new_in(alloc);
        for i in 0..2000u64 {
            let mut v = allocator_api2::vec::Vec::with_capacity_in((i % 64) as usize, alloc);
            v.extend((0..i % 97).map(|x| x as u8));
            map.insert(i % 700, v);
            if i % 3 == 0 {
                map.remove(&(i / 3 % 700));
            }
        }
        black_box(map.len());
    }
    fn run<A: Allocator + Copy>(alloc: A, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            workload(alloc);
        }
        start.elapsed()
    }
    static HEAP: Heap = Heap::lazy_with(64 << 20, OPTIONS);
    vec![
        ("unimem", Box::new(|iters| run(&HEAP, iters))),
        ("system", Box::new(|iters| run(ViaGlobal(&SYSTEM), iters))),
        (
            "mimalloc",
            Box::new(|iters| run(ViaGlobal(&MIMALLOC), iters)),
        ),
    ]
}

/// One allocation and its free, through `GlobalAlloc`.
fn pair(alloc: &dyn GlobalAlloc, layout: Layout) {
    // SAFETY: a non-zero layout; the pointer is freed with it at once.
    unsafe {
        let p = alloc.alloc(layout);
        alloc.dealloc(black_box(p), layout);
    }
}

/// A 64-byte malloc and free: the Heap against mimalloc and the system.
pub fn heap_pair() -> Vec<(&'static str, Subject)> {
    static HEAP: Heap = Heap::lazy_with(64 << 20, OPTIONS);
    let layout = Layout::from_size_align(64, 8).unwrap();
    let with = move |alloc: &'static dyn GlobalAlloc| -> Subject {
        Box::new(move |iters| {
            batched(
                iters,
                BATCH,
                &mut (),
                |_| pair(alloc, black_box(layout)),
                |_| {},
            )
        })
    };
    vec![
        ("unimem", with(&HEAP)),
        ("mimalloc", with(&MIMALLOC)),
        ("system", with(&SYSTEM)),
    ]
}

/// Taking 64 bytes through a per-thread handle, against bumpalo.
pub fn local_take() -> Vec<(&'static str, Subject)> {
    vec![
        (
            "unimem",
            Box::new(|iters| {
                let mut tape = Tape::open_with(32 << 20, &OPTIONS.prefault(false)).unwrap();
                let mut total = Duration::ZERO;
                let mut left = iters;
                // A handle borrows the Tape, so the batches are written out
                // here rather than through `batched`.
                while left > 0 {
                    let n = left.min(100_000);
                    {
                        let local = tape.local();
                        let start = Instant::now();
                        for _ in 0..n {
                            black_box(local.take(black_box(64), 8));
                        }
                        total += start.elapsed();
                    }
                    tape.clear();
                    left -= n;
                }
                total
            }),
        ),
        (
            "bumpalo",
            Box::new(|iters| {
                let mut bump = Bump::with_capacity(32 << 20);
                let layout = Layout::from_size_align(64, 8).unwrap();
                batched(
                    iters,
                    100_000,
                    &mut bump,
                    |bump| {
                        black_box(bump.alloc_layout(black_box(layout)));
                    },
                    Bump::reset,
                )
            }),
        ),
    ]
}

/// A bump over a shared cursor with a plain compare-exchange loop: the
/// baseline the Tape's shared take is held to.
pub struct CasBump {
    cursor: AtomicUsize,
    base: usize,
    len: usize,
}

impl CasBump {
    pub fn take(&self, size: usize, align: usize) -> Option<usize> {
        let mut cursor = self.cursor.load(Ordering::Relaxed);
        loop {
            let start = (self.base + cursor).next_multiple_of(align) - self.base;
            let end = start + size;
            if end > self.len {
                return None;
            }
            match self.cursor.compare_exchange_weak(
                cursor,
                end,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(self.base + start),
                Err(seen) => cursor = seen,
            }
        }
    }
}

/// The Tape's shared (atomic) take of 64 bytes, against a bare
/// compare-exchange bump.
pub fn shared_take() -> Vec<(&'static str, Subject)> {
    vec![
        (
            "unimem",
            Box::new(|iters| {
                let mut tape = Tape::open_with(32 << 20, &OPTIONS.prefault(false)).unwrap();
                batched(
                    iters,
                    100_000,
                    &mut tape,
                    |tape| {
                        black_box(tape.take(black_box(64), 8));
                    },
                    Tape::clear,
                )
            }),
        ),
        (
            "CAS loop",
            Box::new(|iters| {
                let block = Block::open_with(32 << 20, &OPTIONS.prefault(false)).unwrap();
                let bump = CasBump {
                    cursor: AtomicUsize::new(0),
                    base: block.as_ptr() as usize,
                    len: block.size(),
                };
                batched(
                    iters,
                    100_000,
                    &mut (),
                    |_| {
                        black_box(bump.take(black_box(64), 8));
                    },
                    |_| bump.cursor.store(0, Ordering::Relaxed),
                )
            }),
        ),
    ]
}

/// A Grid's take and give of a 4 KiB cell, against crossbeam's ArrayQueue
/// pop and push.
pub fn grid_cycle() -> Vec<(&'static str, Subject)> {
    cycle_4k()
        .into_iter()
        .filter(|(name, _)| matches!(*name, "unimem" | "ArrayQueue"))
        .collect()
}

/// Taking a 4 KiB buffer from a pool of 1024 (4 MiB), filling it and giving
/// it back: what a buffer pool is for. The Grid hands out the cell given
/// back last, which is still in cache; `ArrayQueue` is first in, first out,
/// so it cycles through all 4 MiB.
pub fn grid_cycle_write() -> Vec<(&'static str, Subject)> {
    const CELLS: usize = 1024;
    fn fill(buffer: *mut u8) {
        // SAFETY: callers pass a 4 KiB buffer they hold.
        unsafe { core::ptr::write_bytes(buffer, 0x5A, 4096) };
        black_box(buffer);
    }
    vec![
        (
            "unimem",
            Box::new(|iters| {
                let grid = Grid::<4096, CELLS>::open_with(&OPTIONS).unwrap();
                batched(
                    iters,
                    BATCH,
                    &mut (),
                    |_| {
                        let cell = grid.take_uninit().unwrap();
                        fill(cell.address());
                    },
                    |_| {},
                )
            }),
        ),
        (
            "ArrayQueue",
            Box::new(|iters| {
                let mut buffers = vec![0u8; CELLS * 4096];
                let base = buffers.as_mut_ptr();
                let queue = full_queue(CELLS);
                batched(
                    iters,
                    BATCH,
                    &mut (),
                    |_| {
                        let index = queue.pop().unwrap();
                        fill(base.wrapping_add(index * 4096));
                        queue.push(index).unwrap();
                    },
                    |_| {},
                )
            }),
        ),
    ]
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
