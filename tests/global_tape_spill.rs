//! A whole test binary whose heap is a small Tape that spills to the system
//! allocator once it is full.

mod common;

use unimem::{BlockOptions, Pinning, Tape};

#[global_allocator]
static HEAP: Tape = Tape::lazy_with(
    1 << 20,
    BlockOptions::new()
        .pinning(Pinning::BestEffort)
        .label("unimem-global-small-tape"),
)
.spill();

#[test]
fn std_workload_outgrows_the_tape_and_keeps_running() {
    let first = Box::new(1u64);
    assert!(HEAP.owns(&*first), "the tape serves until it is full");
    common::strings(5000);
    common::maps(50);
    common::vectors(500);
    common::threads(4, 2000);
    assert!(HEAP.free() < 4096, "the workload filled the tape");
    let later = vec![0u8; 100_000];
    assert!(!HEAP.owns(later.as_ptr()), "so later allocations spilled");
    assert_eq!(*first, 1, "early allocations are intact");
}
