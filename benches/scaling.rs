//! Throughput as threads are added: 1, 2, 4, 8 and 16 threads taking from one
//! Tape (shared atomic cursor, and per-thread handles), cycling one Grid, and
//! churning one Heap, with mimalloc and the system allocator on the same
//! churn. Prints millions of operations per second for each thread count.
//! Builds and runs on any Linux machine; it says something about contention
//! only on one with 16 cores or more; rows with more threads than cores are
//! marked oversubscribed. The allocator workloads at the same thread counts,
//! each allocator the global one of its own process, are the `workloads`
//! bench (its scaling table).
//!
//! Run with `cargo bench -p unimem-benches --bench scaling` (`-- --quick` for fewer operations).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use mimalloc::MiMalloc;
use unimem::{Grid, Heap, Tape};

const COUNTS: [usize; 5] = [1, 2, 4, 8, 16];

/// Runs `work(thread)` on `threads` threads released together; returns the
/// wall-clock time from the first thread's start to the last one's end
/// (thread start-up is not counted). Each thread reads the clock itself: with
/// more threads than cores, a coordinator could be scheduled too late.
fn race(threads: usize, work: impl Fn(usize) + Sync) -> Duration {
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, work) = (&barrier, &work);
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    work(t);
                    (start, Instant::now())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first = spans.iter().map(|s| s.0).min().unwrap();
    let last = spans.iter().map(|s| s.1).max().unwrap();
    last - first
}

/// Each op frees the oldest of 64 live allocations and allocates a new one.
fn churn(alloc: &dyn GlobalAlloc, ops: usize, thread: usize) {
    const LIVE: usize = 64;
    let mut ring: [(*mut u8, Layout); LIVE] = [(std::ptr::null_mut(), Layout::new::<u8>()); LIVE];
    for i in 0..ops {
        let slot = i % LIVE;
        let (old, layout) = ring[slot];
        if !old.is_null() {
            // SAFETY: allocated below with `layout`.
            unsafe { alloc.dealloc(old, layout) };
        }
        let size = 16 + (i * 37 + thread * 11) % 1009;
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: a non-zero layout.
        let p = unsafe { alloc.alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: at least one byte.
        unsafe { p.write(i as u8) };
        ring[slot] = (p, layout);
    }
    for (p, layout) in ring {
        if !p.is_null() {
            // SAFETY: allocated above with `layout`.
            unsafe { alloc.dealloc(p, layout) };
        }
    }
}

static HEAP: Heap = Heap::lazy_with(256 << 20, support::OPTIONS);

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let ops: usize = if quick { 200_000 } else { 2_000_000 };
    // Open the Heap's Block before any timing.
    churn(&HEAP, 1, 0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{cores} hardware threads available; {ops} operations per thread; millions of operations per second (all threads together); \
         rows with more threads than that are marked oversubscribed\n"
    );
    println!(
        "| threads | Tape take 16 B (shared cursor) | TapeLocal take 16 B | Grid take+give | Heap churn | mimalloc churn | system churn |"
    );
    println!("|---|---|---|---|---|---|---|");
    for threads in COUNTS {
        let total = (threads * ops) as f64;
        let rate = |time: Duration| format!("{:.1}", total / time.as_secs_f64() / 1e6);

        let tape = Tape::open_with(
            threads * ops * 16 + (threads << 20),
            &support::OPTIONS.prefault(false),
        )
        .unwrap();
        let shared = race(threads, |_| {
            for _ in 0..ops {
                black_box(tape.take(16, 8).unwrap());
            }
        });
        drop(tape);

        let tape = Tape::open_with(
            threads * ops * 16 + (threads << 20),
            &support::OPTIONS.prefault(false),
        )
        .unwrap();
        let local = race(threads, |_| {
            let handle = tape.local();
            for _ in 0..ops {
                black_box(handle.take(16, 8).unwrap());
            }
        });
        drop(tape);

        let grid = Grid::<64, 1024>::open_with(&support::OPTIONS).unwrap();
        let cycle = race(threads, |_| {
            for _ in 0..ops {
                drop(black_box(grid.take_uninit().unwrap()));
            }
        });

        let heap = race(threads, |t| churn(&HEAP, ops, t));
        let mi = race(threads, |t| churn(&MiMalloc, ops, t));
        let system = race(threads, |t| churn(&System, ops, t));
        let label = if threads > cores {
            format!("{threads} (oversubscribed)")
        } else {
            threads.to_string()
        };
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} |",
            rate(shared),
            rate(local),
            rate(cycle),
            rate(heap),
            rate(mi),
            rate(system)
        );
    }
    println!(
        "\nThe same thread counts on mimalloc-bench's workloads, one process per allocator: \
         `cargo bench -p unimem-benches --bench workloads` (its scaling table)."
    );
}
