//! rptest (Mattias Jansson's rpmalloc benchmark, `bench/rptest/rptest.c`), as
//! mimalloc-bench runs it: `rptest <threads> 0 1 2 500 1000 100 8 16000`:
//! random sizes with a linear drop-off between 8 and 16 000 bytes, a
//! cross-thread hand-off every 2nd loop, 500 loops, 1000 live slots per
//! thread, 100 operations per loop.
//!
//! Each thread keeps 1000 slots. Each loop it frees about 0.8 × 30–99 slots
//! (stepping through them by a prime stride), frees the batch other threads
//! handed it, then allocates 30–99 blocks into slots (stepping by another
//! prime, freeing what was there), every block written in full (`calloc`,
//! or `memalign` then `memset`) and marked on its first word, every page and
//! its last byte; every other loop it also allocates a batch of as many
//! blocks and pushes it onto the next thread's lock-free hand-off stack
//! (tagged pointers, one shared counter), so about a third of all frees are
//! remote. The threads run two such passes of 500 loops, synchronizing with
//! the main thread after each (freeing what arrives meanwhile, then all their
//! slots), and the whole thing runs twice with fresh threads. The throughput
//! is memory operations (allocations and frees) per thread-second: the
//! operations of all threads divided by the sum of the threads' timed spans,
//! rptest's "memory ops/CPU second".
//!
//! Follows the original: the parameters of bench.sh, the size tables' shapes
//! (2000 sizes uniform in 0..100 000 mapped onto [8, 16 000] and then
//! dropped off linearly from three neighbours; 311 allocation and 257 free
//! counts of 30–99 % of 100, the free counts × 0.8), the strides (the first
//! primes that do not divide 1000: 7 and 11), the alignments (none, 8, 16
//! in turn below 4 KiB), the writes, the hand-off stack with its tag bits
//! and shared counter, the shared `allocated` counters, the two passes and
//! two runs, what is timed.
//! Changed: the size and count tables are drawn from a fixed-seed generator
//! with the original's distributions, not the original's numbers; the
//! main thread's 1 s pauses and the workers' 10 ms pause are 1 ms (they are
//! outside the timed spans). Scaled: loops per pass are 8000 at one thread
//! and `4000 / threads` (at least 125) at more, instead of 500 at any count
//! (÷ 4 with `--quick`, at least 50): the original's 500 takes 0.02 s at one
//! thread, and with more threads each loop costs about twice as much (the
//! hand-offs) and, oversubscribed, hand-offs pile up at descheduled threads;
//! so every run lasts 0.3–1.5 s on two cores.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::common::{Outcome, calloc_aligned, free_aligned, malloc_aligned, statm_resident_pages};

const MIN_SIZE: usize = 8;
const MAX_SIZE: usize = 16_000;
const CROSS_RATE: usize = 2;
const ALLOC_COUNT: usize = 1000;
const OP_COUNT: usize = 100;
const RANDOM_SIZES: usize = 2000;
const ALLOC_OPS: usize = 311;
const FREE_OPS: usize = 257;
const ALIGNMENTS: [usize; 3] = [0, 8, 16];
const PRIMES: [usize; 43] = [
    7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101,
    103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167, 173, 179, 181, 191, 193, 197,
    199,
];

/// The tables every thread reads, built once per run.
struct Tables {
    sizes: Vec<usize>,
    alloc_ops: Vec<usize>,
    free_ops: Vec<usize>,
    alloc_scatter: usize,
    free_scatter: usize,
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Tables {
    fn new() -> Tables {
        let mut state = 0x7270_7465_7374; // fixed seed
        // Uniform in 0 .. 100 000, mapped onto [min, max].
        let range = MAX_SIZE - MIN_SIZE;
        let even: Vec<usize> = (0..RANDOM_SIZES)
            .map(|_| {
                let r = (splitmix(&mut state) % 100_000) as f64;
                MIN_SIZE + (range as f64 * (r / 100_000.0)).round() as usize
            })
            .collect();
        // The linear drop-off (size mode 1).
        let sizes = (0..RANDOM_SIZES)
            .map(|i| {
                let w0 = 1.0 - (even[i] - MIN_SIZE) as f64 / range as f64;
                let w1 = 1.0 - (even[(i + 1) % RANDOM_SIZES] - MIN_SIZE) as f64 / range as f64;
                let base = (even[(i + 2) % RANDOM_SIZES] - MIN_SIZE) as f64;
                MIN_SIZE + (base * ((w0 + w1) - 1.0).abs()) as usize
            })
            .collect();
        let mut percent = |n: usize, factor: f64| -> Vec<usize> {
            (0..n)
                .map(|_| {
                    let pct = 30 + (splitmix(&mut state) % 70) as usize;
                    (factor * OP_COUNT as f64 * (pct as f64 / 100.0)) as usize
                })
                .collect()
        };
        let alloc_ops = percent(ALLOC_OPS, 1.0);
        let free_ops = percent(FREE_OPS, 0.8);
        let mut i = 0;
        while ALLOC_COUNT.is_multiple_of(PRIMES[i]) {
            i += 1;
        }
        let alloc_scatter = PRIMES[i];
        i += 1;
        while ALLOC_COUNT.is_multiple_of(PRIMES[i]) {
            i += 1;
        }
        Tables {
            sizes,
            alloc_ops,
            free_ops,
            alloc_scatter,
            free_scatter: PRIMES[i],
        }
    }
}

/// A batch handed to another thread (`thread_pointers`).
#[repr(C, align(16))]
struct Handoff {
    pointers: *mut *mut u8,
    count: usize,
    next: *mut Handoff,
    /// The allocating thread's `allocated` counter.
    allocated: *const AtomicI32,
}

/// One thread's state that others see (`benchmark_arg`'s shared part).
struct Arg {
    /// The hand-off stack: a `Handoff` pointer with 4 tag bits.
    foreign: AtomicUsize,
    allocated: AtomicI32,
}

struct Run<'a> {
    tables: &'a Tables,
    args: Vec<Arg>,
    threads: usize,
    cross_rate: usize,
    loops: usize,
    start: AtomicBool,
    sync: AtomicU32,
    epoch: AtomicU32,
    counter: AtomicU32,
    mops: AtomicU64,
    nanos: AtomicU64,
}

/// The block at `p`: its size and alignment code, stored on its first word
/// (rptest stores the size there; the code rides in the top bits, so that
/// `dealloc` gets the layout back).
#[inline]
fn mark(p: *mut u8, size: usize, code: usize) {
    // SAFETY: every block holds at least 8 bytes and is 8-aligned.
    unsafe { p.cast::<i32>().write((size | (code << 28)) as i32) };
}

#[inline]
fn size_of_block(p: *mut u8) -> (usize, usize) {
    // SAFETY: a live block, marked by `mark`.
    let word = unsafe { p.cast::<i32>().read() } as usize;
    (word & 0x0fff_ffff, word >> 28)
}

/// `benchmark_malloc`: `calloc` without an alignment, else `memalign` and a
/// `memset` of 0xCD; then the first word, each page and the last byte.
#[inline]
fn block_alloc(size: usize, code: usize) -> *mut u8 {
    let p = match ALIGNMENTS[code] {
        0 => calloc_aligned(size, 8),
        align => {
            let p = malloc_aligned(size, align);
            // SAFETY: `p` holds `size` bytes.
            unsafe { p.write_bytes(0xCD, size) };
            p
        }
    };
    mark(p, size, code);
    let pages = (size - 1) / 4096;
    for page in 1..pages {
        // SAFETY: inside the block.
        unsafe { p.add(page * 4096).write(1) };
    }
    // SAFETY: the last byte, inside the block.
    unsafe { p.add(size - 1).write(1) };
    p
}

/// Frees a block; returns its size.
#[inline]
fn block_free(p: *mut u8) -> usize {
    let (size, code) = size_of_block(p);
    let align = ALIGNMENTS[code].max(8);
    // SAFETY: allocated by `block_alloc(size, code)`.
    unsafe { free_aligned(p, size, align) };
    size
}

impl Run<'_> {
    fn put_cross(&self, to: usize, handoff: *mut Handoff) {
        let slot = &self.args[to].foreign;
        loop {
            let prev = slot.load(Ordering::Acquire);
            // SAFETY: `handoff` is this thread's until the exchange succeeds.
            unsafe { (*handoff).next = (prev & !0xF) as *mut Handoff };
            let tag = self.counter.fetch_add(1, Ordering::Relaxed) as usize & 0xF;
            let new = handoff as usize | tag;
            if slot
                .compare_exchange(prev, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
        }
    }

    fn get_cross(&self, me: usize) -> *mut Handoff {
        let slot = &self.args[me].foreign;
        loop {
            let prev = slot.load(Ordering::Acquire);
            let current = (prev & !0xF) as *mut Handoff;
            if current.is_null() {
                return current;
            }
            let tag = self.counter.fetch_add(1, Ordering::Relaxed) as usize & 0xF;
            if slot
                .compare_exchange(prev, tag, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return current;
            }
        }
    }

    /// Frees a list of hand-offs; returns the memory operations.
    fn free_foreign(&self, mut foreign: *mut Handoff, account: bool) -> u64 {
        let mut mops = 0;
        while !foreign.is_null() {
            // SAFETY: a hand-off taken off this thread's stack: this thread
            // owns it and its blocks now.
            let h = unsafe { &*foreign };
            let mut freed = 0i32;
            for i in 0..h.count {
                // SAFETY: as above.
                freed -= block_free(unsafe { h.pointers.add(i).read() }) as i32;
                mops += 1;
            }
            let next = h.next;
            if account {
                freed -= (h.count * size_of::<*mut u8>() + size_of::<Handoff>()) as i32;
                // SAFETY: the counter belongs to a thread of this run, which
                // outlives every hand-off.
                unsafe { (*h.allocated).fetch_add(freed, Ordering::Relaxed) };
                mops += 2;
            }
            let (pointers, count) = (h.pointers, h.count);
            // SAFETY: allocated by the sender with these layouts.
            unsafe {
                free_aligned(pointers.cast(), count.max(1) * size_of::<*mut u8>(), 16);
                free_aligned(foreign.cast(), size_of::<Handoff>(), 16);
            }
            foreign = next;
        }
        mops
    }

    fn worker(&self, index: usize) {
        let t = self.tables;
        let me = &self.args[index];
        let pointers_bytes = ALLOC_COUNT * size_of::<*mut u8>();
        let pointers = calloc_aligned(pointers_bytes, 16).cast::<*mut u8>();
        me.allocated
            .fetch_add(pointers_bytes as i32, Ordering::Relaxed);
        while !self.start.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut ticks = Duration::ZERO;
        let mut mops = 0u64;
        let (mut alloc_idx, mut free_idx, mut cross_index) = (0usize, 0usize, 0usize);
        let mut peak_allocated = 0;

        for iter in 0..2 {
            let mut size_index = ((index + 1) * ((iter + 1) * 37)) % RANDOM_SIZES;
            let mut do_foreign = true;
            for iloop in 0..self.loops {
                let foreign = self.get_cross(index);
                let mut allocated = 0i32;
                let tick = Instant::now();
                let free_op_count = t.free_ops[(iter + iloop) % FREE_OPS];
                let alloc_op_count = t.alloc_ops[(iter + iloop) % ALLOC_OPS];

                for _ in 0..free_op_count {
                    // SAFETY: `free_idx < ALLOC_COUNT`.
                    let p = unsafe { pointers.add(free_idx).read() };
                    if !p.is_null() {
                        allocated -= block_free(p) as i32;
                        mops += 1;
                        // SAFETY: as above.
                        unsafe { pointers.add(free_idx).write(std::ptr::null_mut()) };
                    }
                    free_idx = (free_idx + t.free_scatter) % ALLOC_COUNT;
                }

                mops += self.free_foreign(foreign, true);

                for iop in 0..alloc_op_count {
                    // SAFETY: `alloc_idx < ALLOC_COUNT`.
                    let old = unsafe { pointers.add(alloc_idx).read() };
                    if !old.is_null() {
                        allocated -= block_free(old) as i32;
                        mops += 1;
                    }
                    let size = t.sizes[(size_index + 2) % RANDOM_SIZES];
                    let code = if size < 4096 {
                        (size_index + iop) % 3
                    } else {
                        0
                    };
                    let p = block_alloc(size, code);
                    // SAFETY: as above.
                    unsafe { pointers.add(alloc_idx).write(p) };
                    allocated += size as i32;
                    mops += 1;
                    alloc_idx = (alloc_idx + t.alloc_scatter) % ALLOC_COUNT;
                    size_index = (size_index + 1) % RANDOM_SIZES;
                }

                let mut handoff = std::ptr::null_mut::<Handoff>();
                if self.cross_rate != 0 && iloop % self.cross_rate == 0 && do_foreign {
                    handoff = malloc_aligned(size_of::<Handoff>(), 16).cast();
                    let list = malloc_aligned(alloc_op_count.max(1) * size_of::<*mut u8>(), 16)
                        .cast::<*mut u8>();
                    allocated +=
                        (alloc_op_count * size_of::<*mut u8>() + size_of::<Handoff>()) as i32;
                    mops += 2;
                    for iop in 0..alloc_op_count {
                        let size = t.sizes[(size_index + 2) % RANDOM_SIZES];
                        let code = if size < 4096 {
                            (size_index + iop) % 3
                        } else {
                            0
                        };
                        // SAFETY: `list` holds `alloc_op_count` pointers.
                        unsafe { list.add(iop).write(block_alloc(size, code)) };
                        allocated += size as i32;
                        mops += 1;
                        size_index = (size_index + 1) % RANDOM_SIZES;
                    }
                    // SAFETY: `handoff` is a fresh allocation of a Handoff.
                    unsafe {
                        handoff.write(Handoff {
                            pointers: list,
                            count: alloc_op_count,
                            next: std::ptr::null_mut(),
                            allocated: &me.allocated,
                        })
                    };
                }
                ticks += tick.elapsed();

                let current = me.allocated.fetch_add(allocated, Ordering::Relaxed) + allocated;
                peak_allocated = peak_allocated.max(current);

                if !handoff.is_null() {
                    cross_index = (cross_index + 1) % self.threads;
                    if self.threads > 1 && cross_index == index {
                        cross_index = (cross_index + 1) % self.threads;
                    }
                    self.put_cross(cross_index, handoff);
                }
                if self.sync.load(Ordering::Acquire) > 0 {
                    do_foreign = false; // one thread has completed
                }
            }

            // Synchronize with the main thread, freeing what arrives.
            mops += self.barrier(index, &mut ticks);
            let mut allocated = 0i32;
            let tick = Instant::now();
            for i in 0..ALLOC_COUNT {
                // SAFETY: `i < ALLOC_COUNT`.
                let p = unsafe { pointers.add(i).read() };
                if !p.is_null() {
                    allocated -= block_free(p) as i32;
                    mops += 1;
                    // SAFETY: as above.
                    unsafe { pointers.add(i).write(std::ptr::null_mut()) };
                }
            }
            ticks += tick.elapsed();
            me.allocated.fetch_add(allocated, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(1));
            self.free_foreign(self.get_cross(index), false);
        }

        // The last synchronization.
        std::thread::sleep(Duration::from_millis(1));
        mops += self.barrier(index, &mut ticks);
        // SAFETY: allocated above with this layout.
        unsafe { free_aligned(pointers.cast(), pointers_bytes, 16) };
        me.allocated
            .fetch_sub(pointers_bytes as i32, Ordering::Relaxed);
        std::hint::black_box(peak_allocated);
        self.mops.fetch_add(mops, Ordering::Relaxed);
        self.nanos
            .fetch_add(ticks.as_nanos() as u64, Ordering::Relaxed);
    }

    /// A worker's side of a synchronization: counts itself in, then frees
    /// what other threads hand it (timed) until the main thread releases
    /// everyone. The original waits for the count to drop back to 0; the
    /// epoch keeps a thread that is slow to see that from missing it once a
    /// faster one has counted itself in for the next pass.
    fn barrier(&self, index: usize, ticks: &mut Duration) -> u64 {
        let epoch = self.epoch.load(Ordering::Acquire);
        self.sync.fetch_add(1, Ordering::AcqRel);
        let mut mops = 0;
        loop {
            let foreign = self.get_cross(index);
            if !foreign.is_null() {
                let tick = Instant::now();
                mops += self.free_foreign(foreign, true);
                *ticks += tick.elapsed();
            }
            std::thread::sleep(Duration::from_millis(1));
            if self.epoch.load(Ordering::Acquire) != epoch {
                return mops;
            }
        }
    }

    /// The main thread's side: waits until every thread has counted itself
    /// in.
    fn wait_all(&self) {
        while (self.sync.load(Ordering::Acquire) as usize) < self.threads {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(1));
    }

    /// Releases the threads waiting in `barrier`.
    fn release(&self) {
        self.sync.store(0, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

pub fn run(threads: usize, scale: f64) -> Outcome {
    let tables = Tables::new();
    let loops = if threads == 1 {
        8000
    } else {
        (4000 / threads).max(125)
    };
    let loops = ((loops as f64 * scale) as usize).max(50);
    let run = Run {
        tables: &tables,
        args: (0..threads)
            .map(|_| Arg {
                foreign: AtomicUsize::new(0),
                allocated: AtomicI32::new(0),
            })
            .collect(),
        threads,
        cross_rate: if threads == 1 { 0 } else { CROSS_RATE },
        loops,
        start: AtomicBool::new(false),
        sync: AtomicU32::new(0),
        epoch: AtomicU32::new(0),
        counter: AtomicU32::new(0),
        mops: AtomicU64::new(0),
        nanos: AtomicU64::new(0),
    };
    let mut samples = 0;
    for _ in 0..2 {
        run.start.store(false, Ordering::Release);
        run.sync.store(0, Ordering::Release);
        std::thread::scope(|s| {
            for index in 0..threads {
                let run = &run;
                s.spawn(move || run.worker(index));
            }
            std::thread::sleep(Duration::from_millis(1));
            run.start.store(true, Ordering::Release);
            // After each pass: sample the memory, release the threads.
            for _ in 0..2 {
                run.wait_all();
                samples = samples.max(statm_resident_pages());
                run.release();
                std::thread::sleep(Duration::from_millis(1));
            }
            run.wait_all();
            run.release();
        });
    }
    std::hint::black_box(samples);
    let secs = (run.nanos.load(Ordering::Relaxed) as f64 / 1e9).max(1e-9);
    Outcome {
        ops: run.mops.load(Ordering::Relaxed) as f64,
        secs,
        rss_after_kib: None,
    }
}
