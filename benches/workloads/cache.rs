//! cache-scratch and cache-thrash (Emery Berger's false-sharing tests from
//! Hoard, `bench/cache-scratch/cache-scratch.cpp` and
//! `bench/cache-thrash/cache-thrash.cpp`), as mimalloc-bench runs them:
//! `cache-scratch <threads> 1000 1 2000000 <procs>` and the same for
//! cache-thrash.
//!
//! Each of `threads` threads, 1000 times, allocates an object of 1 byte,
//! writes and reads back every byte of it `2000000 / threads` times, and
//! frees it. In cache-thrash each thread allocates its own objects: an
//! allocator that hands consecutive small objects to different threads puts
//! them on one cache line, and the threads' writes then bounce that line
//! between cores (active false sharing). In cache-scratch the main thread
//! first allocates one object per thread, all together, and each thread
//! starts by freeing its own: an allocator that gives a freed object back to
//! the thread that freed it rather than to the one that allocated it hands
//! every thread a piece of the main thread's cache line again (passive false
//! sharing). The total work does not depend on the thread count, so the
//! ideal is a speed-up as large as the number of cores. The throughput is
//! object writes per second (`1000 × repetitions × size / seconds`); the
//! original reports the time.
//!
//! Follows the original: 1000 iterations, 1-byte objects (`new char[1]`:
//! alignment 1), the repetitions divided among the threads, the write and
//! volatile read-back of each byte, the main thread's objects freed by the
//! workers (cache-scratch).
//! Scaled: 800 000 repetitions instead of 2 000 000 (200 000 with `--quick`),
//! for 0.8 billion writes per run instead of 2 billion (about half a second
//! on one core at 0.6 ns a write and read-back).

use std::time::Instant;

use super::common::{Outcome, free_aligned, malloc_aligned};

const ITERATIONS: usize = 1000;
const OBJ_SIZE: usize = 1;
const REPETITIONS: f64 = 800_000.0;

/// One worker's loop, shared by both tests.
fn worker(iterations: usize, repetitions: usize) {
    for _ in 0..iterations {
        let obj = malloc_aligned(OBJ_SIZE, 1);
        for _ in 0..repetitions {
            for k in 0..OBJ_SIZE {
                // SAFETY: `obj` holds OBJ_SIZE bytes.
                unsafe {
                    obj.add(k).write_volatile(k as u8);
                    let ch = obj.add(k).read_volatile();
                    std::hint::black_box(ch.wrapping_add(1));
                }
            }
        }
        // SAFETY: allocated above with this size and alignment.
        unsafe { free_aligned(obj, OBJ_SIZE, 1) };
    }
}

fn repetitions(threads: usize, scale: f64) -> usize {
    ((REPETITIONS * scale) as usize / threads).max(1)
}

fn outcome(threads: usize, reps: usize, start: Instant) -> Outcome {
    let writes = (threads * ITERATIONS * reps * OBJ_SIZE) as f64;
    Outcome::new(writes, start.elapsed())
}

/// cache-thrash: every thread allocates its own objects.
pub fn thrash(threads: usize, scale: f64) -> Outcome {
    let reps = repetitions(threads, scale);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(move || worker(ITERATIONS, reps));
        }
    });
    outcome(threads, reps, start)
}

/// A pointer handed to another thread.
struct Handed(*mut u8);

// SAFETY: the receiving thread is the only one to touch it.
unsafe impl Send for Handed {}

/// cache-scratch: the main thread's objects, one per thread, freed by the
/// threads before their own loops.
pub fn scratch(threads: usize, scale: f64) -> Outcome {
    let reps = repetitions(threads, scale);
    let objs: Vec<Handed> = (0..threads)
        .map(|_| Handed(malloc_aligned(OBJ_SIZE, 1)))
        .collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        for obj in objs {
            s.spawn(move || {
                let obj = obj;
                // SAFETY: allocated by the main thread with this layout and
                // handed to this thread alone.
                unsafe { free_aligned(obj.0, OBJ_SIZE, 1) };
                worker(ITERATIONS, reps);
            });
        }
    });
    outcome(threads, reps, start)
}
