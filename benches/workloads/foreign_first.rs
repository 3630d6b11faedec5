//! foreign-first: not from mimalloc-bench. Small objects on threads whose
//! first free is of another thread's object: the main thread allocates one
//! 8-byte `Box` per worker, and each worker frees its box, then loops:
//! allocate an 8-byte `Box`, write it 100 times, free it.
//!
//! What it shows: the cost of the smallest allocation and free when the
//! thread's first contact with the allocator was a free of memory it does
//! not own (a thread started to drop what another thread made, say), with
//! just enough work between the two calls (100 volatile stores) that the
//! loop is not all allocator. The throughput is loops per second, all
//! threads together: 16 M loops split among the threads (a quarter with
//! `--quick`), timed from the start to the last join.

use std::sync::Barrier;
use std::time::Instant;

use super::common::Outcome;

const LOOPS: usize = 16_000_000;
const WRITES: u64 = 100;

fn worker(first: Box<u64>, loops: usize, start: &Barrier) {
    start.wait();
    drop(std::hint::black_box(first));
    for i in 0..loops {
        let mut object = std::hint::black_box(Box::new(0u64));
        for j in 0..WRITES {
            // SAFETY: the box is live and ours.
            unsafe { std::ptr::write_volatile(&mut *object, i as u64 ^ j) };
        }
        drop(std::hint::black_box(object));
    }
}

pub fn run(threads: usize, scale: f64) -> Outcome {
    let loops = (LOOPS as f64 * scale) as usize / threads;
    let firsts: Vec<Box<u64>> = (0..threads).map(|i| Box::new(i as u64)).collect();
    let start = Barrier::new(threads + 1);
    let begin = std::thread::scope(|s| {
        for first in firsts {
            let start = &start;
            s.spawn(move || worker(first, loops, start));
        }
        start.wait();
        Instant::now()
    });
    Outcome::new((loops * threads) as f64, begin.elapsed())
}
