//! glibc-simple (glibc's `bench-malloc-simple`, with mimalloc-bench's FIFO and
//! LIFO frees, `bench/glibc-bench/bench-malloc-simple.c`), as mimalloc-bench
//! runs it: `glibc-simple` (no arguments: sizes 16, 32 and 64).
//!
//! For each size, for each of 25, 100, 400 and 1600 live blocks: `iters / n`
//! times, allocate `n` blocks writing every byte, free the first half in
//! allocation order and the second half in reverse. Each size runs this four
//! times: a warm-up, then on the main thread, then on a second thread, then
//! on the main thread again (glibc's main arena, a thread arena, and the main
//! arena once the process is multi-threaded). It is a single-threaded
//! workload: the harness runs it at one thread only. The throughput is
//! allocations (each with its free) per second; the original reports the
//! time.
//!
//! Follows the original: sizes 16, 32, 64; the block counts; the byte-by-byte
//! fill (`block[g] = g`); the free orders; the four passes; the one other
//! thread.
//! Scaled: `NUM_ITERS` is 1 000 000 instead of 2 000 000 (250 000 with
//! `--quick`): 48 million allocations per run instead of 96 million.

use std::hint::black_box;
use std::time::Instant;

use super::common::{Outcome, free, malloc};

const NUM_ITERS: f64 = 1_000_000.0;
const ALLOCS: [usize; 4] = [25, 100, 400, 1600];
const MAX_ALLOCS: usize = 1600;

/// One `do_benchmark`: returns the allocations made.
fn do_benchmark(iters: usize, size: usize, n: usize, arr: &mut [*mut u8]) -> u64 {
    for _ in 0..iters {
        for slot in &mut arr[..n] {
            let p = black_box(malloc(size));
            // SAFETY: `p` holds `size` bytes.
            let block = unsafe { std::slice::from_raw_parts_mut(p, size) };
            for (g, byte) in block.iter_mut().enumerate() {
                *byte = g as u8;
            }
            *slot = black_box(p);
        }
        // Free half in FIFO order, the other half in LIFO order.
        for &p in &arr[..n / 2] {
            // SAFETY: allocated above with `size`.
            unsafe { free(p, size) };
        }
        for &p in arr[n / 2..n].iter().rev() {
            // SAFETY: as above.
            unsafe { free(p, size) };
        }
    }
    (iters * n) as u64
}

/// A pointer array handed to the second thread and back.
struct Arr(Vec<*mut u8>);

// SAFETY: the pointers are only slots; one thread at a time uses them.
unsafe impl Send for Arr {}

fn bench(size: usize, num_iters: usize) -> u64 {
    let mut arr = Arr(vec![std::ptr::null_mut(); MAX_ALLOCS]);
    let mut allocs = 0;
    // The warm-up, then the main thread.
    for _ in 0..2 {
        for n in ALLOCS {
            allocs += do_benchmark(num_iters / n, size, n, &mut arr.0);
        }
    }
    // A thread of its own.
    let (returned, in_thread) = std::thread::spawn(move || {
        let mut allocs = 0;
        for n in ALLOCS {
            allocs += do_benchmark(num_iters / n, size, n, &mut arr.0);
        }
        (arr, allocs)
    })
    .join()
    .unwrap();
    arr = returned;
    allocs += in_thread;
    // The main thread again, now that the process has had two threads.
    for n in ALLOCS {
        allocs += do_benchmark(num_iters / n, size, n, &mut arr.0);
    }
    allocs
}

pub fn run(_threads: usize, scale: f64) -> Outcome {
    let num_iters = (NUM_ITERS * scale) as usize;
    let start = Instant::now();
    let mut allocs = 0;
    for size in [16, 32, 64] {
        allocs += bench(size, num_iters);
    }
    Outcome::new(allocs as f64, start.elapsed())
}
