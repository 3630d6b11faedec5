//! A whole test binary whose heap is a Grid of 256-byte cells that spills
//! what a cell cannot hold to the system allocator.

mod common;

use std::sync::{Mutex, MutexGuard};

use unimem::{BlockOptions, Grid, Pinning};

#[global_allocator]
static HEAP: Grid<256, 65536> = Grid::lazy_with(
    BlockOptions::new()
        .pinning(Pinning::BestEffort)
        .label("unimem-global-grid"),
)
.spill();

/// The tests take turns: one that counts free cells must not run while
/// another holds thousands.
fn alone() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn std_workload_runs_in_the_grid() {
    let _turn = alone();
    common::strings(2000);
    common::maps(20);
    common::vectors(200);
    common::threads(4, 1000);
}

#[test]
fn small_allocations_take_cells_and_large_ones_spill() {
    let _turn = alone();
    let small = Box::new([3u8; 200]);
    assert!(HEAP.owns(&*small));
    let large = vec![5u8; 10_000];
    assert!(!HEAP.owns(large.as_ptr()));
    assert!(large.iter().all(|&b| b == 5));
    // Growing a cell-sized Vec past the cell moves it to the system.
    let mut v: Vec<u8> = Vec::with_capacity(100);
    v.extend_from_slice(&[1; 100]);
    assert!(HEAP.owns(v.as_ptr()));
    v.extend_from_slice(&[2; 1000]);
    assert!(!HEAP.owns(v.as_ptr()));
    assert!(v[..100].iter().all(|&b| b == 1) && v[100..].iter().all(|&b| b == 2));
}

#[test]
fn freed_cells_are_reused() {
    let _turn = alone();
    let free = HEAP.free();
    let boxes: Vec<Box<[u8; 128]>> = (0..1000).map(|_| Box::new([9; 128])).collect();
    assert!(boxes.iter().all(|b| HEAP.owns(&**b)));
    drop(boxes);
    // The test harness may allocate meanwhile, so compare loosely.
    assert!(
        HEAP.free() + 50 > free,
        "{free} cells free before, {} after",
        HEAP.free()
    );
}
