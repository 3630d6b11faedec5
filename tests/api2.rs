//! The `allocator_api2::Allocator` impls of Tape and Grid.

mod support;

use core::alloc::Layout;
use core::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator};
use allocator_api2::boxed::Box;
use allocator_api2::vec::Vec;
use hashbrown::HashMap;
use support::options;
use unimem::{Exhaustion, Grid, Heap, Tape};

fn tape(bytes: usize) -> Tape {
    Tape::open_with(bytes, &options()).unwrap()
}

#[test]
fn collections_live_in_a_tape() {
    let tape = tape(1 << 20);
    let mut v = Vec::new_in(&tape);
    v.extend(0..1000u32);
    assert!(tape.owns(v.as_ptr()));
    assert_eq!(v.iter().sum::<u32>(), 999 * 1000 / 2);

    let b = Box::new_in([7u64; 16], &tape);
    assert!(tape.owns(&*b));
    assert_eq!(b.iter().sum::<u64>(), 7 * 16);

    let mut map = HashMap::new_in(&tape);
    for i in 0..500u32 {
        map.insert(i, i * 2);
    }
    assert_eq!(map[&250], 500);
    // Entries live inline in the table, so their addresses are the table's.
    assert!(tape.owns(map.get(&250).unwrap()));
}

#[test]
fn collections_live_in_a_grid() {
    let grid = Grid::<4096, 64>::open_with(&options()).unwrap();
    let mut v: Vec<u8, _> = Vec::with_capacity_in(100, &grid);
    v.extend_from_slice(&[1; 100]);
    assert!(grid.owns(v.as_ptr()));
    let cell = v.as_ptr();
    v.resize(4096, 2);
    assert_eq!(v.as_ptr(), cell, "growth inside the cell stays in place");
    assert_eq!(grid.free(), 63);

    let b = Box::new_in(42u128, &grid);
    assert!(grid.owns(&*b));
    assert_eq!(grid.free(), 62);
    drop(b);
    drop(v);
    assert_eq!(grid.free(), 64, "deallocation gives the cells back");

    let mut map = HashMap::new_in(&grid);
    for i in 0..100u16 {
        map.insert(i, i);
    }
    assert_eq!(map.len(), 100);
    // Entries live inline in the table, so their addresses are the table's.
    assert!(grid.owns(map.get(&50).unwrap()));
}

#[test]
fn tape_alignment_is_exact() {
    let tape = tape(1 << 20);
    for align in [1, 2, 8, 64, 4096, 1 << 16] {
        let layout = Layout::from_size_align(3, align).unwrap();
        let block = tape.allocate(layout).unwrap();
        assert_eq!(block.cast::<u8>().as_ptr() as usize % align, 0);
        assert_eq!(block.len(), 3);
    }
}

#[test]
fn tape_rewinds_when_the_newest_allocation_is_freed() {
    let tape = tape(1 << 16);
    let keep = tape.allocate(Layout::new::<[u8; 100]>()).unwrap();
    let used = tape.used();
    let newest = tape.allocate(Layout::new::<[u64; 32]>()).unwrap();
    let start = newest.cast::<u8>().as_ptr() as usize - tape.block().as_ptr() as usize;
    assert_eq!(
        start,
        used.next_multiple_of(8),
        "after the alignment padding"
    );
    assert_eq!(tape.used(), start + 256);
    // SAFETY: allocated above with this layout, not used again.
    unsafe { tape.deallocate(newest.cast(), Layout::new::<[u64; 32]>()) };
    assert_eq!(
        tape.used(),
        start,
        "rewound to the start of the newest allocation"
    );
    // An older allocation does not rewind anything.
    let again = tape.allocate(Layout::new::<u8>()).unwrap();
    let used = tape.used();
    // SAFETY: as above.
    unsafe { tape.deallocate(keep.cast(), Layout::new::<[u8; 100]>()) };
    assert_eq!(tape.used(), used);
    // SAFETY: as above.
    unsafe { tape.deallocate(again.cast(), Layout::new::<u8>()) };
}

#[test]
fn a_growing_vec_reallocates_in_place() {
    let tape = tape(4 << 20);
    let mut v: Vec<u8, _> = Vec::new_in(&tape);
    let mut first = None;
    let len = if cfg!(miri) { 1 << 12 } else { 1 << 20 };
    for i in 0..len {
        v.push(i as u8);
        first.get_or_insert(v.as_ptr());
    }
    assert_eq!(Some(v.as_ptr()), first, "never moved");
    assert!(
        tape.used() <= v.capacity() + 64,
        "used {} for capacity {}",
        tape.used(),
        v.capacity()
    );
    v.truncate(10);
    v.shrink_to_fit();
    assert!(
        tape.used() <= 64,
        "shrinking the newest allocation gives the tail back"
    );
    assert_eq!(v[9], 9);
}

#[test]
fn growth_of_an_older_allocation_moves_it() {
    let tape = tape(1 << 20);
    let mut a: Vec<u32, _> = Vec::with_capacity_in(4, &tape);
    a.extend([1, 2, 3, 4]);
    let b: Vec<u32, _> = Vec::with_capacity_in(4, &tape);
    let before = a.as_ptr();
    a.push(5);
    assert_ne!(a.as_ptr(), before);
    assert_eq!(a, [1, 2, 3, 4, 5]);
    drop(b);
}

#[test]
fn zero_sized_requests_take_nothing() {
    let tape = tape(4096);
    let layout = Layout::from_size_align(0, 64).unwrap();
    let block = tape.allocate(layout).unwrap();
    assert_eq!(block.len(), 0);
    assert_eq!(block.cast::<u8>().as_ptr() as usize % 64, 0);
    assert_eq!(tape.used(), 0);
    // SAFETY: allocated above with this layout.
    unsafe { tape.deallocate(block.cast(), layout) };
    let v: Vec<(), _> = core::iter::repeat_n((), 1000).collect_in(&tape);
    assert_eq!(v.len(), 1000);
    assert_eq!(tape.used(), 0);

    let grid = Grid::<64, 1>::open_with(&options()).unwrap();
    let block = grid.allocate(layout).unwrap();
    assert_eq!(block.len(), 0);
    assert_eq!(grid.free(), 1);
}

/// Collects an iterator into a `Vec` in an allocator.
trait CollectIn: Iterator + Sized {
    fn collect_in<A: Allocator>(self, alloc: A) -> Vec<Self::Item, A> {
        let mut v = Vec::new_in(alloc);
        v.extend(self);
        v
    }
}
impl<I: Iterator> CollectIn for I {}

#[test]
fn allocate_zeroed_zeroes_reused_memory() {
    let mut tape = tape(1 << 16);
    let layout = Layout::from_size_align(4096, 8).unwrap();
    let block = tape.allocate(layout).unwrap();
    // SAFETY: 4096 bytes, ours.
    unsafe { block.cast::<u8>().as_ptr().write_bytes(0xAA, 4096) };
    tape.clear();
    let zeroed = tape.allocate_zeroed(layout).unwrap();
    assert_eq!(
        zeroed.cast::<u8>(),
        block.cast::<u8>(),
        "the same bytes, reused"
    );
    // SAFETY: 4096 bytes, ours, just zeroed.
    let bytes = unsafe { core::slice::from_raw_parts(zeroed.cast::<u8>().as_ptr(), 4096) };
    assert!(bytes.iter().all(|&b| b == 0));

    // Growing in place with grow_zeroed zeroes the new tail too.
    let small = Layout::from_size_align(16, 8).unwrap();
    tape.clear();
    let p = tape.allocate(small).unwrap().cast::<u8>();
    // SAFETY: allocated with `small`; grown to `layout`.
    let grown = unsafe { tape.grow_zeroed(p, small, layout) }.unwrap();
    assert_eq!(grown.cast::<u8>(), p);
    // SAFETY: 4096 bytes, ours.
    let bytes = unsafe { core::slice::from_raw_parts(grown.cast::<u8>().as_ptr(), 4096) };
    assert!(bytes[16..].iter().all(|&b| b == 0));
}

/// Dirties the whole returned slice, frees it, and checks that the next
/// `allocate_zeroed` of the same request gives the same memory with every
/// byte of the returned slice zero, not only the bytes asked for.
fn zeroed_slices_are_zero_to_the_end(allocator: &impl Allocator, size: usize) -> usize {
    let layout = Layout::from_size_align(size, 1).unwrap();
    let first = allocator.allocate(layout).unwrap();
    // SAFETY: the returned slice is ours to write, all of it.
    unsafe { first.cast::<u8>().as_ptr().write_bytes(0xAA, first.len()) };
    // SAFETY: allocated just above with `layout`.
    unsafe { allocator.deallocate(first.cast(), layout) };
    let again = allocator.allocate_zeroed(layout).unwrap();
    assert_eq!(again.cast::<u8>(), first.cast::<u8>(), "the same memory");
    // SAFETY: the returned slice, all of it.
    let bytes = unsafe { core::slice::from_raw_parts(again.cast::<u8>().as_ptr(), again.len()) };
    assert!(
        bytes.iter().all(|&b| b == 0),
        "{} of {} zero",
        bytes.iter().filter(|&&b| b == 0).count(),
        bytes.len()
    );
    // SAFETY: as above.
    unsafe { allocator.deallocate(again.cast(), layout) };
    again.len()
}

#[test]
fn allocate_zeroed_zeroes_the_whole_returned_slice() {
    let grid = Grid::<256, 4>::open_with(&options()).unwrap();
    assert_eq!(zeroed_slices_are_zero_to_the_end(&grid, 10), 256);
    let heap = Heap::lazy_with(4 << 20, options()).open_now().unwrap();
    assert_eq!(zeroed_slices_are_zero_to_the_end(&heap, 33), 40);
    assert_eq!(zeroed_slices_are_zero_to_the_end(&heap, 40_000), 40_960);
    // grow_zeroed in place: from the old size to the returned end.
    let small = Layout::from_size_align(33, 4).unwrap();
    let p = heap.allocate(small).unwrap();
    // SAFETY: the returned slice is ours.
    unsafe { p.cast::<u8>().as_ptr().write_bytes(0xAA, p.len()) };
    let bigger = Layout::from_size_align(38, 4).unwrap();
    // SAFETY: allocated with `small`.
    let grown = unsafe { heap.grow_zeroed(p.cast(), small, bigger) }.unwrap();
    assert_eq!(
        grown.cast::<u8>(),
        p.cast::<u8>(),
        "in place, inside the class"
    );
    // SAFETY: the returned slice.
    let bytes = unsafe { core::slice::from_raw_parts(grown.cast::<u8>().as_ptr(), grown.len()) };
    assert_eq!(grown.len(), 40);
    assert!(bytes[..33].iter().all(|&b| b == 0xAA));
    assert!(bytes[33..].iter().all(|&b| b == 0));
    // SAFETY: allocated (grown) with `bigger`.
    unsafe { heap.deallocate(grown.cast(), bigger) };
}

#[test]
fn a_full_tape_fails_or_spills() {
    let tape = tape(4096);
    let big = Layout::from_size_align(8192, 8).unwrap();
    assert_eq!(tape.allocate(big), Err(AllocError));
    assert_eq!(tape.used(), 0);

    let spilling = Tape::open_with(4096, &options())
        .unwrap()
        .on_exhaustion(Exhaustion::Spill);
    let block = spilling.allocate(big).unwrap();
    assert!(!spilling.owns(block.cast::<u8>().as_ptr()));
    // SAFETY: 8192 bytes, ours.
    unsafe { block.cast::<u8>().as_ptr().write_bytes(1, 8192) };
    // Growing spilled memory stays with the system allocator.
    let bigger = Layout::from_size_align(16384, 8).unwrap();
    // SAFETY: allocated with `big`.
    let grown = unsafe { spilling.grow(block.cast(), big, bigger) }.unwrap();
    assert!(!spilling.owns(grown.cast::<u8>().as_ptr()));
    // SAFETY: the first 8192 bytes were written.
    assert_eq!(unsafe { *grown.cast::<u8>().as_ptr().add(8191) }, 1);
    // SAFETY: allocated with `bigger`; routed back to the system allocator.
    unsafe { spilling.deallocate(grown.cast(), bigger) };
    assert_eq!(spilling.used(), 0);
}

#[test]
fn grid_takes_what_fits_and_refuses_the_rest() {
    let grid = Grid::<256, 4>::open_with(&options()).unwrap();
    let fits = Layout::from_size_align(256, 16).unwrap();
    let block = grid.allocate(fits).unwrap();
    assert_eq!(block.len(), grid.cell_size());
    assert_eq!(grid.free(), 3);
    // SAFETY: allocated above with this layout.
    unsafe { grid.deallocate(block.cast(), fits) };
    assert_eq!(grid.free(), 4);

    let too_big = Layout::from_size_align(257, 1).unwrap();
    assert_eq!(grid.allocate(too_big), Err(AllocError));
    let too_aligned = Layout::from_size_align(8, 1 << 20).unwrap();
    assert_eq!(grid.allocate(too_aligned), Err(AllocError));
    assert_eq!(grid.free(), 4, "refusals take nothing");

    let held: std::vec::Vec<_> = (0..4).map(|_| grid.allocate(fits).unwrap()).collect();
    assert_eq!(grid.allocate(fits), Err(AllocError), "all cells taken");
    for block in held {
        // SAFETY: allocated above with this layout.
        unsafe { grid.deallocate(block.cast(), fits) };
    }

    // Growing inside a cell keeps the pointer; past it fails.
    let small = Layout::from_size_align(8, 8).unwrap();
    let p: NonNull<u8> = grid.allocate(small).unwrap().cast();
    // SAFETY: allocated with `small`.
    let grown = unsafe { grid.grow(p, small, fits) }.unwrap();
    assert_eq!(grown.cast::<u8>(), p);
    // SAFETY: allocated (grown) with `fits`.
    assert_eq!(unsafe { grid.grow(p, fits, too_big) }, Err(AllocError));
    // SAFETY: still allocated with `fits`.
    unsafe { grid.deallocate(p, fits) };
    assert_eq!(grid.free(), 4);
}

#[test]
fn a_grid_that_spills_serves_large_requests_from_the_system() {
    let grid = Grid::<64, 2>::open_with(&options()).unwrap().spill();
    let large = Layout::from_size_align(1000, 8).unwrap();
    let block = grid.allocate(large).unwrap();
    assert!(!grid.owns(block.cast::<u8>().as_ptr()));
    // SAFETY: allocated above with this layout; routed to the system.
    unsafe { grid.deallocate(block.cast(), large) };
    assert_eq!(grid.free(), 2);
}

#[cfg(feature = "allocator-api2-04")]
#[test]
fn the_0_4_allocator_trait_is_implemented() {
    let tape = tape(1 << 16);
    let mut v = allocator_api2_04::vec::Vec::new_in(&tape);
    v.extend_from_slice(&[1u8, 2, 3]);
    assert!(tape.owns(v.as_ptr()));
    let grid = Grid::<64, 4>::open_with(&options()).unwrap();
    let b = allocator_api2_04::boxed::Box::new_in(5u32, &grid);
    assert!(grid.owns(&*b));
}
