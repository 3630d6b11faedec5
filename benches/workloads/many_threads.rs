//! many-threads: not from mimalloc-bench. 1500 threads are alive at once,
//! each holding a few KiB to a few hundred KiB in blocks of varied sizes;
//! when all of them hold their blocks (a barrier), each frees its blocks and
//! exits. After every thread is joined, the main thread reads its resident
//! set (`VmRSS`): what the allocator kept of memory that is all free again,
//! and of the per-thread state of threads that are gone. With more threads
//! than the Heap's 1024 thread tags, the last ones share its one locked
//! slot.
//!
//! Each thread draws a budget log-uniformly in 4 KiB ..= 256 KiB, then
//! allocates blocks of sizes log-uniform in 16 B ..= 64 KiB until the budget
//! is reached, writing one byte per 4 KiB page of each block (so the pages
//! are resident), and checks them after the barrier. The throughput is
//! threads per second (start to last join); the RSS after the joins is
//! reported beside the peak. Threads get 128 KiB stacks, so that their
//! stacks take little of the resident set.

use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::common::{Outcome, free, malloc, proc_status_kib};

pub const THREADS: usize = 1500;
const STACK: usize = 128 << 10;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Log-uniform in `lo ..= hi`.
fn log_uniform(state: &mut u64, lo: usize, hi: usize) -> usize {
    let u = (splitmix(state) >> 11) as f64 / (1u64 << 53) as f64;
    let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
    ((l + u * (h - l)).exp() as usize).clamp(lo, hi)
}

fn worker(index: usize, barrier: &Barrier, held: &AtomicU64) {
    let mut state = 0x6d61_6e79 ^ (index as u64).wrapping_mul(0x9e37_79b9);
    let budget = log_uniform(&mut state, 4 << 10, 256 << 10);
    let mut blocks: Vec<(*mut u8, usize)> = Vec::new();
    let mut total = 0;
    while total < budget {
        let size = log_uniform(&mut state, 16, 64 << 10);
        let p = malloc(size);
        for offset in (0..size).step_by(4096) {
            // SAFETY: inside the block.
            unsafe { p.add(offset).write(index as u8) };
        }
        blocks.push((p, size));
        total += size;
    }
    held.fetch_add(total as u64, Ordering::Relaxed);
    barrier.wait();
    for (p, size) in blocks {
        for offset in (0..size).step_by(4096) {
            // SAFETY: inside the block, written above.
            assert_eq!(unsafe { p.add(offset).read() }, index as u8);
        }
        // SAFETY: allocated above with `size`.
        unsafe { free(p, size) };
    }
}

/// Runs the threads; the outcome carries the resident set after the joins.
pub fn run(_threads: usize, _scale: f64) -> Outcome {
    let barrier = Barrier::new(THREADS);
    let held = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let (barrier, held) = (&barrier, &held);
                std::thread::Builder::new()
                    .stack_size(STACK)
                    .spawn_scoped(s, move || worker(i, barrier, held))
                    .expect("spawning a thread")
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    let elapsed = start.elapsed();
    let rss_after = proc_status_kib("VmRSS");
    std::hint::black_box(held.load(Ordering::Relaxed));
    Outcome {
        rss_after_kib: Some(rss_after),
        ..Outcome::new(THREADS as f64, elapsed)
    }
}
