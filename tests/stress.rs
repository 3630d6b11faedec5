//! Every thread allocates and frees, and hands allocations to other threads
//! to free: Tape, Grid and Heap through their `Allocator` impls, with every
//! allocation's bytes checked before it is freed.

mod support;

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Barrier;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread;

use allocator_api2::alloc::Allocator;
use support::options;
use unimem::{Grid, Heap, Tape};

const THREADS: usize = 4;

/// An allocation on its way to another thread.
struct Parcel {
    ptr: NonNull<u8>,
    layout: Layout,
    seed: u8,
}

// SAFETY: the parcel owns its allocation; whoever receives it frees it.
unsafe impl Send for Parcel {}

impl Parcel {
    fn new(ptr: NonNull<u8>, layout: Layout, seed: u8) -> Parcel {
        // SAFETY: a fresh allocation of `layout.size()` bytes.
        unsafe { ptr.as_ptr().write_bytes(seed, layout.size()) };
        Parcel { ptr, layout, seed }
    }

    fn check(&self) {
        // SAFETY: live until freed by the holder of the parcel.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) };
        assert!(
            bytes.iter().all(|&b| b == self.seed),
            "an allocation was overwritten"
        );
    }
}

/// Runs `THREADS` threads on `alloc`: each allocates `rounds` times, keeps
/// some allocations, frees some itself and sends the rest to the next
/// thread, which frees them.
fn churn<A: Allocator + Sync>(alloc: &A, rounds: usize, size: impl Fn(usize) -> usize + Sync) {
    let barrier = Barrier::new(THREADS);
    let (senders, receivers): (Vec<Sender<Parcel>>, Vec<Receiver<Parcel>>) =
        (0..THREADS).map(|_| channel()).unzip();
    thread::scope(|s| {
        let mut threads = Vec::new();
        for (t, inbox) in receivers.into_iter().enumerate() {
            let next = senders[(t + 1) % THREADS].clone();
            let (barrier, size) = (&barrier, &size);
            threads.push(s.spawn(move || {
                barrier.wait();
                let mut kept: Vec<Parcel> = Vec::new();
                for round in 0..rounds {
                    let layout = Layout::from_size_align(size(round * THREADS + t), 8).unwrap();
                    if let Ok(block) = alloc.allocate(layout) {
                        let parcel = Parcel::new(block.cast(), layout, (round * 7 + t) as u8);
                        match round % 3 {
                            0 => kept.push(parcel),
                            1 => next.send(parcel).unwrap(),
                            _ => {
                                parcel.check();
                                // SAFETY: allocated above with `layout`.
                                unsafe { alloc.deallocate(parcel.ptr, layout) };
                            }
                        }
                    }
                    if kept.len() > 32 {
                        let parcel = kept.swap_remove(round % kept.len());
                        parcel.check();
                        // SAFETY: allocated by this thread with its layout.
                        unsafe { alloc.deallocate(parcel.ptr, parcel.layout) };
                    }
                    while let Ok(parcel) = inbox.try_recv() {
                        parcel.check();
                        // SAFETY: allocated by another thread, handed over.
                        unsafe { alloc.deallocate(parcel.ptr, parcel.layout) };
                    }
                }
                drop(next);
                for parcel in kept {
                    parcel.check();
                    // SAFETY: as above.
                    unsafe { alloc.deallocate(parcel.ptr, parcel.layout) };
                }
                barrier.wait();
                while let Ok(parcel) = inbox.try_recv() {
                    parcel.check();
                    // SAFETY: as above.
                    unsafe { alloc.deallocate(parcel.ptr, parcel.layout) };
                }
            }));
        }
        drop(senders);
        // Join each thread, which also waits for its exit hooks (a Heap
        // hands an exiting thread's slabs on then): the scope alone would
        // only wait for the closures.
        for thread in threads {
            thread.join().unwrap();
        }
    });
}

fn rounds(normal: usize) -> usize {
    if cfg!(miri) { 20 } else { normal }
}

#[test]
fn heap_threads_free_each_others_memory() {
    let heap = Heap::lazy_with(16 << 20, options()).open_now().unwrap();
    churn(&heap, rounds(20_000), |i| match i % 50 {
        0 => 40_000 + i % 20_000,
        1..=9 => 1000 + i % 7000,
        _ => 1 + i % 700,
    });
    assert_eq!(heap.stats().in_use, 0, "everything was freed");
}

#[test]
fn grid_threads_free_each_others_cells() {
    let grid = Grid::<512, 256>::open_with(&options()).unwrap();
    churn(&grid, rounds(20_000), |i| 1 + i % 512);
    assert_eq!(grid.free(), 256, "every cell came back");
}

#[test]
fn tape_threads_free_each_others_memory() {
    let tape = Tape::open_with(64 << 20, &options()).unwrap();
    churn(&tape, rounds(5_000), |i| 1 + i % 1000);
    assert!(tape.used() <= tape.total());
}

/// `stats()` beside trims: the walk over slab headers must not read the
/// metadata a trim decommits (on the portable Block, which Miri runs, a
/// decommit writes zeros: a walk that raced it was a data race there and a
/// crash on Linux, where the pages become inaccessible).
#[test]
fn heap_stats_beside_trims() {
    let heap = Heap::lazy_with(8 << 20, options()).open_now().unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            let big = Layout::from_size_align(3 << 20, 8).unwrap();
            let small = Layout::from_size_align(100, 8).unwrap();
            for _ in 0..rounds(2_000).min(200) {
                let a = heap.allocate(big).unwrap();
                let b = heap.allocate(small).unwrap();
                // SAFETY: allocated above with these layouts, freed once.
                unsafe {
                    heap.deallocate(b.cast(), small);
                    heap.deallocate(a.cast(), big);
                }
                heap.trim();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = heap.stats();
            }
        });
    });
    assert_eq!(heap.stats().in_use, 0);
}
