//! The unstable `core::alloc::Allocator` impls (feature `nightly`, nightly
//! compiler): std's own collections in a Tape or a Grid.
#![cfg(feature = "nightly")]
#![feature(allocator_api)]

use unimem::{BlockOptions, Grid, Pinning, Tape};

#[test]
fn std_collections_live_in_a_tape_and_a_grid() {
    let options = BlockOptions::new().pinning(Pinning::BestEffort);
    let tape = Tape::open_with(1 << 20, &options).unwrap();
    let mut v = Vec::new_in(&tape);
    v.extend(0..100u64);
    assert!(tape.owns(v.as_ptr()));
    let b = Box::new_in(3u8, &tape);
    assert!(tape.owns(&*b));

    let grid = Grid::<128, 8>::open_with(&options).unwrap();
    let b = Box::new_in([1u32; 32], &grid);
    assert!(grid.owns(&*b));
    assert_eq!(grid.free(), 7);
}
