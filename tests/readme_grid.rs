//! The README's global Grid, as written there, run as a program's whole heap.
//! CI runs it as root and as an ordinary user with an 8 MiB memlock limit.

mod common;

// README begin
use unimem::Grid;

// 65 536 cells of 256 bytes for small allocations, committed as they are
// first used; the system allocator for the rest and for whatever the cells
// cannot hold:
#[global_allocator]
static CELLS: Grid<256, 65536> = Grid::lazy().spill();

fn main() {
    let small = Box::new([7u64; 16]);
    assert!(CELLS.owns(&*small));
    let large = vec![0u8; 4096];
    assert!(!CELLS.owns(large.as_ptr()));
    println!(
        "{} of {} cells free, {} KiB of cells committed",
        CELLS.free(),
        CELLS.total(),
        CELLS.block().committed() >> 10
    );
}
// README end

#[test]
fn the_readme_snippet_runs() {
    main();
}

#[test]
fn the_readme_shows_this_code() {
    common::readme::assert_in_readme(include_str!("readme_grid.rs"));
}
