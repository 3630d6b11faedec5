//! larson (Paul Larson's server simulation, `bench/larson/larson.cpp`), as
//! mimalloc-bench runs it: `larson 5 8 1000 5000 100 4141 <threads>`.
//!
//! The main thread allocates `threads × 5000` blocks of 8 ..< 1000 bytes,
//! shuffles them and churns them four times over; then each thread takes
//! 5000 of those slots and, 100 × 5000 times, frees a random slot's block and
//! puts a new one of random size there, writing its first two bytes. When a
//! thread has done its rounds it starts its successor on the same slots and
//! exits, so every block is freed by a thread other than the one that
//! allocated it: first the main thread's, then each dead predecessor's. The
//! throughput is allocations per second over the timed window, as larson's
//! "Throughput = … operations per second".
//!
//! Follows the original: block sizes (8 ..< 1000, `min + lran2 % (max - min)`),
//! 5000 blocks per thread, 100 rounds per thread generation, seed 4141 and
//! the `lran2` generator (the same size sequence), the warm-up, the
//! per-thread seeds drawn from the main generator, the two-byte write, the
//! successor threads on the same slots.
//! Scaled: the run lasts 0.5 s instead of 5 s (0.15 s with `--quick`), and the
//! 2.5 s pause after it is left out; at 20–60 M operations per second a
//! thread generation still lasts about 10–25 ms, so a run sees tens of them.
//! Sizes are passed to `dealloc` (larson's `SIZED` variant keeps them too).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::common::{Lran2, Outcome, free, malloc};

const MIN_SIZE: usize = 8;
const MAX_SIZE: usize = 1000;
const CHUNKS_PER_THREAD: usize = 5000;
const ROUNDS: usize = 100;
const SEED: i64 = 4141;

/// One thread's share: its slots and its generator, handed from each thread
/// generation to the next.
struct Slots {
    blocks: Vec<(*mut u8, usize)>,
    rng: Lran2,
}

// SAFETY: the blocks are plain heap memory; one thread at a time owns them
// (the successor starts after its predecessor's last touch).
unsafe impl Send for Slots {}

struct Shared {
    stop: AtomicBool,
    allocs: AtomicU64,
    /// Threads that saw the stop flag and will start no successor.
    finished: AtomicUsize,
    /// Every thread started, joined at the end.
    handles: Mutex<Vec<JoinHandle<Slots>>>,
}

fn random_size(rng: &mut Lran2) -> usize {
    MIN_SIZE + (rng.next() as usize) % (MAX_SIZE - MIN_SIZE)
}

/// One thread generation: `ROUNDS × CHUNKS_PER_THREAD` free-and-replace
/// steps, or fewer once the stop flag is up; then a successor, unless
/// stopped. Returns the slots when it is the last of its line.
fn exercise(mut slots: Slots, shared: Arc<Shared>) -> Slots {
    if shared.stop.load(Ordering::Relaxed) {
        shared.finished.fetch_add(1, Ordering::Release);
        return slots;
    }
    let mut allocs = 0u64;
    let n = slots.blocks.len();
    for _ in 0..ROUNDS * n {
        let victim = (slots.rng.next() as usize) % n;
        let (old, old_size) = slots.blocks[victim];
        // SAFETY: allocated with `old_size` by this thread or an earlier one.
        unsafe { free(old, old_size) };
        let size = random_size(&mut slots.rng);
        let p = malloc(size);
        slots.blocks[victim] = (p, size);
        allocs += 1;
        // Write something, as larson does: two bytes, one read back.
        // SAFETY: `p` holds at least 8 bytes.
        unsafe {
            p.write_volatile(b'a');
            std::hint::black_box(p.read_volatile());
            p.add(1).write_volatile(b'b');
        }
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
    }
    shared.allocs.fetch_add(allocs, Ordering::Relaxed);
    if shared.stop.load(Ordering::Relaxed) {
        shared.finished.fetch_add(1, Ordering::Release);
        return slots;
    }
    let next_shared = Arc::clone(&shared);
    // Spawned under the lock: the main thread takes the handles only after
    // this one is in, even if the successor stops at once.
    let mut handles = shared.handles.lock().unwrap();
    handles.push(std::thread::spawn(move || exercise(slots, next_shared)));
    drop(handles);
    Slots {
        blocks: Vec::new(),
        rng: Lran2::new(0),
    }
}

pub fn run(threads: usize, scale: f64) -> Outcome {
    let duration = Duration::from_secs_f64(0.5 * scale);
    let mut rng = Lran2::new(SEED);
    let total = threads * CHUNKS_PER_THREAD;

    // Warm-up (larson's `warmup`): allocate, shuffle, churn four times over.
    let mut blocks: Vec<(*mut u8, usize)> = (0..total)
        .map(|_| {
            let size = random_size(&mut rng);
            (malloc(size), size)
        })
        .collect();
    for i in (1..=total).rev() {
        let victim = (rng.next() as usize) % i;
        blocks.swap(victim, i - 1);
    }
    for _ in 0..4 * total {
        let victim = (rng.next() as usize) % total;
        let (old, old_size) = blocks[victim];
        // SAFETY: allocated above with `old_size`.
        unsafe { free(old, old_size) };
        let size = random_size(&mut rng);
        blocks[victim] = (malloc(size), size);
    }

    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        allocs: AtomicU64::new(0),
        finished: AtomicUsize::new(0),
        handles: Mutex::new(Vec::new()),
    });
    // Thread i gets slots i × 5000 .. and the i-th seed drawn.
    let seeds: Vec<i64> = (0..threads).map(|_| rng.next()).collect();
    let mut shares = Vec::with_capacity(threads);
    for t in (0..threads).rev() {
        shares.push(Slots {
            blocks: blocks.split_off(t * CHUNKS_PER_THREAD),
            rng: Lran2::new(seeds[t]),
        });
    }
    shares.reverse();

    for slots in shares {
        let s = Arc::clone(&shared);
        let handle = std::thread::spawn(move || exercise(slots, s));
        shared.handles.lock().unwrap().push(handle);
    }
    let start = Instant::now();
    std::thread::sleep(duration);
    shared.stop.store(true, Ordering::Relaxed);
    while shared.finished.load(Ordering::Acquire) < threads {
        std::thread::yield_now();
    }
    let elapsed = start.elapsed();

    // Join every generation; the last of each line hands its slots back.
    let handles = std::mem::take(&mut *shared.handles.lock().unwrap());
    for handle in handles {
        let slots = handle.join().unwrap();
        for (p, size) in slots.blocks {
            // SAFETY: allocated with `size`; the thread that held it is gone.
            unsafe { free(p, size) };
        }
    }
    Outcome::new(shared.allocs.load(Ordering::Relaxed) as f64, elapsed)
}
