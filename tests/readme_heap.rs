//! The README's global Heap, as written there, run as a program's whole heap.
//! CI runs it as root and as an ordinary user with an 8 MiB memlock limit.

mod common;

// README begin
use unimem::Heap;

// A whole program on pinned memory: a first arena of 256 MiB of address
// space, more as the program grows, each committed as it is used.
#[global_allocator]
static HEAP: Heap = Heap::lazy(256 << 20);

fn main() {
    let v: Vec<u64> = (0..1000).collect();
    assert!(HEAP.owns(v.as_ptr()));
    let big = vec![0u8; 32 << 20];
    assert!(HEAP.owns(big.as_ptr()));
    let stats = HEAP.stats();
    println!(
        "{} KiB in use, {} KiB committed (peak {} KiB), {} arena(s), {} bytes spilled",
        stats.in_use >> 10,
        stats.committed >> 10,
        stats.high_water >> 10,
        stats.blocks,
        stats.spilled
    );
}
// README end

#[test]
fn the_readme_snippet_runs() {
    main();
    assert_eq!(
        HEAP.stats().spilled,
        0,
        "nothing spilled: the heap served it all"
    );
}

#[test]
fn the_readme_shows_this_code() {
    common::readme::assert_in_readme(include_str!("readme_heap.rs"));
}
