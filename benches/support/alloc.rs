//! Allocation paths: taking and freeing small and large requests from each
//! allocator and its peers, a collections workload, the Heap's and Tape's
//! fast paths (part of `support`).

use super::*;

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
