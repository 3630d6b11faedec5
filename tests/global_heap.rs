//! A whole test binary whose memory all comes from a unimem Heap over pinned
//! Blocks, churned through ten times its capacity by a real std workload on
//! several threads.
//!
//! The global allocator is a thin wrapper that counts the bytes the program
//! asks for and hands every call to the Heap unchanged: the count is how the
//! test knows how much it churned.

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};

use unimem::{BlockOptions, Heap, Pinning};

const BLOCK: usize = 16 << 20;
const CAPACITY: usize = 2 * BLOCK;

/// Arenas of 16 MiB and more, at most 32 MiB in all; failing (not
/// spilling) past them, so running out would abort the test.
static HEAP: Heap = Heap::lazy_with(
    BLOCK,
    BlockOptions::new()
        .pinning(Pinning::BestEffort)
        .label("unimem-global-heap"),
)
.limit(CAPACITY);

/// Bytes requested so far.
static ASKED: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: every call goes to HEAP unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ASKED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded.
        unsafe { HEAP.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ASKED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded.
        unsafe { HEAP.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { HEAP.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ASKED.fetch_add(new_size, Ordering::Relaxed);
        // SAFETY: forwarded.
        unsafe { HEAP.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn ten_times_the_capacity_churns_through() {
    let mut rounds = 0;
    while ASKED.load(Ordering::Relaxed) < 10 * CAPACITY {
        common::strings(3000);
        common::maps(30);
        common::vectors(300);
        common::threads(4, 2000);
        rounds += 1;
        assert!(rounds < 10_000, "the workload allocates too little");
    }
    let stats = HEAP.stats();
    assert!(stats.high_water <= CAPACITY, "{stats:?}");
    assert_eq!(stats.spilled, 0);
    eprintln!(
        "{rounds} rounds, {} MiB asked for: {stats:?}",
        ASKED.load(Ordering::Relaxed) >> 20
    );
}

/// `blocks()` collects into a Vec, which here allocates from the same heap:
/// it must not hold a heap lock while it does.
#[test]
fn listing_the_blocks_of_the_global_heap_does_not_deadlock() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let blocks = HEAP.blocks();
        tx.send(blocks.iter().map(|b| b.capacity()).collect::<Vec<_>>())
            .unwrap();
    });
    let capacities = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("blocks() finished");
    assert!(!capacities.is_empty());
    assert!(capacities.iter().all(|&c| c == BLOCK));
}

#[test]
fn allocations_come_from_the_blocks() {
    let text = format!("{:>100}", "pinned");
    assert!(HEAP.owns(text.as_ptr()));
    let big = vec![7u8; 1 << 20];
    assert!(HEAP.owns(big.as_ptr()));
    let from_thread = std::thread::spawn(|| vec![1u64; 1000]).join().unwrap();
    assert!(HEAP.owns(from_thread.as_ptr()));
    assert_eq!(from_thread.iter().sum::<u64>(), 1000);
}
