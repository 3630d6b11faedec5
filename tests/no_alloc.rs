//! No allocation path of Tape or Grid allocates through the global allocator,
//! first-use opening included: a global allocator built on them cannot recurse.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use allocator_api2::alloc::Allocator;
use unimem::{BlockOptions, Grid, Pinning, Tape};

/// Counts, per thread, the allocations made while the thread is watching
/// (tests run on several threads at once; each counts only its own).
struct Counting;

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    if WATCHING.with(Cell::get) {
        COUNT.with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: forwards to System unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note();
        // SAFETY: forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns how many global allocations it made.
fn global_allocations(f: impl FnOnce()) -> usize {
    let before = COUNT.with(Cell::get);
    WATCHING.with(|w| w.set(true));
    f();
    WATCHING.with(|w| w.set(false));
    COUNT.with(Cell::get) - before
}

const OPTIONS: BlockOptions<'static> = BlockOptions::new().pinning(Pinning::BestEffort);

#[test]
fn the_counter_sees_global_allocations() {
    assert_eq!(
        global_allocations(|| drop(std::hint::black_box(vec![1u8]))),
        2
    );
}

#[test]
fn tape_and_grid_paths_never_allocate_globally() {
    static TAPE: Tape = Tape::lazy_with(1 << 20, OPTIONS).spill();
    static GRID: Grid<64, 1024> = Grid::lazy_with(OPTIONS).spill();
    let small = Layout::from_size_align(48, 16).unwrap();
    let large = Layout::from_size_align(4 << 20, 64).unwrap();
    let count = global_allocations(|| {
        // SAFETY: every pointer is used with the layout it was allocated with.
        unsafe {
            // First use opens the Block (and carves the Grid).
            let p = TAPE.alloc(small);
            let p = TAPE.realloc(p, small, 4096);
            TAPE.dealloc(p, Layout::from_size_align(4096, 16).unwrap());
            let spilled = TAPE.alloc(large);
            assert!(!spilled.is_null() && !TAPE.owns(spilled));
            TAPE.dealloc(spilled, large);

            let c = GRID.alloc(small);
            assert!(GRID.owns(c));
            GRID.dealloc(c, small);
            let spilled = GRID.alloc(large);
            GRID.dealloc(spilled, large);

            let cell = GRID.take().unwrap();
            GRID.give(cell);
            let block = Allocator::allocate(&TAPE, small).unwrap();
            let block = Allocator::grow(&TAPE, block.cast(), small, large).unwrap();
            Allocator::deallocate(&TAPE, block.cast(), large);
        }
    });
    assert_eq!(count, 0, "global allocations on Tape and Grid paths");
}

#[cfg(unimem_linux)]
#[test]
fn opening_a_block_never_allocates_globally() {
    let count = global_allocations(|| {
        let mut private = OPTIONS
            .label("no-alloc")
            .capacity(4 << 20)
            .open(1 << 16)
            .unwrap();
        private.commit(2 << 20).unwrap();
        private.decommit(1 << 16).unwrap();
        drop(private);
        let shared = OPTIONS
            .label("no-alloc")
            .shared(true)
            .capacity(1 << 20)
            .open(1 << 16)
            .unwrap();
        shared.commit(1 << 20).unwrap();
        let fd = shared.share().unwrap();
        drop(fd);
        drop(shared);
        assert!(OPTIONS.open(0).is_err());
    });
    assert_eq!(count, 0);
}

#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn placing_a_block_on_a_node_never_allocates_globally() {
    use unimem::{Error, Node, Placement};
    static TAPE: Tape = Tape::lazy_with(
        1 << 20,
        OPTIONS
            .node(Some(Node::new(0)))
            .placement(Placement::BestEffort),
    );
    let count = global_allocations(|| {
        for placement in [Placement::Required, Placement::BestEffort] {
            let options = OPTIONS
                .label("no-alloc")
                .node(Some(Node::new(0)))
                .placement(placement)
                .capacity(4 << 20);
            // Checking the node, binding the reservation and each commit;
            // a system that refuses mbind fails without allocating too.
            match options.open(1 << 16) {
                Ok(block) => block.commit(2 << 20).unwrap(),
                Err(error) => assert!(matches!(error, Error::Placement { .. })),
            }
            if let Ok(block) = options.shared(true).open(1 << 16) {
                block.commit(1 << 20).unwrap();
            }
            // A node past the kernel's limit, and one that is not online.
            for node in [Node::new(4096), Node::new(1023)] {
                let missing = options.node(Some(node)).open(1 << 16);
                assert!(matches!(missing, Err(Error::Node { .. })));
            }
        }
        // SAFETY: used with the layout it was allocated with.
        unsafe {
            let layout = Layout::from_size_align(64, 8).unwrap();
            let p = TAPE.alloc(layout);
            assert!(!p.is_null());
            TAPE.dealloc(p, layout);
        }
    });
    assert_eq!(count, 0);
}
