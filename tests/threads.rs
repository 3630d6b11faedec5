//! Many threads on one Tape and one Grid: no overlap, nothing lost.

mod support;

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use support::options;
use unimem::{BlockOptions, Grid, Pinning, Tape};

const THREADS: usize = 8;

#[test]
fn threads_taking_from_one_tape_get_disjoint_ranges() {
    let bytes = if cfg!(miri) { 32 << 10 } else { 4 << 20 };
    let tape = Tape::open_with(bytes, &options()).unwrap();
    let barrier = Barrier::new(THREADS);
    let ranges: Vec<Vec<(usize, usize)>> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (tape, barrier) = (&tape, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let mut mine = Vec::new();
                    let mut i = 0usize;
                    // Take until the tape runs out, varying sizes and alignments.
                    loop {
                        let size = 1 + (i * 7 + t * 13) % 300;
                        let align = 1 << ((i + t) % 8);
                        let Some(p) = tape.take(size, align) else {
                            break;
                        };
                        assert_eq!(p as usize % align, 0);
                        // SAFETY: the range is ours alone until the tape drops.
                        unsafe { p.write_bytes(t as u8 + 1, size) };
                        mine.push((p as usize, size));
                        i += 1;
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let base_ptr = tape.block().as_ptr();
    let base = base_ptr as usize;
    let end = base + tape.total();
    let mut all: Vec<(usize, usize, u8)> = Vec::new();
    for (t, mine) in ranges.iter().enumerate() {
        for &(start, size) in mine {
            assert!(start >= base && start + size <= end);
            // SAFETY: inside the tape's block (the pointer carries the
            // block's provenance), written above.
            let bytes = unsafe { std::slice::from_raw_parts(base_ptr.with_addr(start), size) };
            assert!(
                bytes.iter().all(|&b| b == t as u8 + 1),
                "range of thread {t} was overwritten"
            );
            all.push((start, size, t as u8));
        }
    }
    all.sort_unstable();
    for pair in all.windows(2) {
        assert!(pair[0].0 + pair[0].1 <= pair[1].0, "overlap: {pair:?}");
    }
    assert!(
        tape.free() < 300 + 128,
        "threads stopped only when the tape was full"
    );
}

/// Marks cell `id` held; two owners at once fail the test.
fn hold(held: &[AtomicBool], id: usize) {
    assert!(
        !held[id].swap(true, Ordering::AcqRel),
        "cell {id} had two owners"
    );
}

/// Marks cell `id` free again.
fn release(held: &[AtomicBool], id: usize) {
    assert!(
        held[id].swap(false, Ordering::AcqRel),
        "cell {id} was not held"
    );
}

/// Once the threads are done: every cell is free, and each is taken once.
fn every_cell_is_back<const CELLS: usize>(grid: &Grid<64, CELLS>) {
    assert_eq!(grid.free(), CELLS, "no cell lost");
    let all: Vec<_> = (0..CELLS).map(|_| grid.take().unwrap()).collect();
    let mut ids: Vec<_> = all.iter().map(|c| c.id()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..CELLS).collect::<Vec<_>>());
    assert!(grid.take().is_none());
}

#[test]
fn threads_cycling_one_grid_never_share_a_cell() {
    const CELLS: usize = 32;
    const _: () = assert!(THREADS * 3 < CELLS);
    let grid = Grid::<64, CELLS>::open_with(&options()).unwrap();
    let held: Vec<AtomicBool> = (0..CELLS).map(|_| AtomicBool::new(false)).collect();
    let rounds = if cfg!(miri) { 50 } else { 20_000 };
    thread::scope(|s| {
        for t in 0..THREADS {
            let (grid, held) = (&grid, &held);
            s.spawn(move || {
                let mut mine = Vec::new();
                for round in 0..rounds {
                    // Hold up to three cells at a time, to keep the list
                    // busy. Together the threads hold fewer than CELLS, so
                    // every take finds a free cell: a `None` here would be a
                    // false "all taken".
                    let cell = grid.take().expect("a free cell");
                    hold(held, cell.id());
                    let stamp = (t * rounds + round) as u64;
                    // SAFETY: the cell is ours; 64 bytes, 16-aligned.
                    unsafe { cell.address().cast::<u64>().write(stamp) };
                    mine.push((cell, stamp));
                    if mine.len() > 2 || (round % 3 == 0 && !mine.is_empty()) {
                        let (cell, stamp) = mine.remove(0);
                        // SAFETY: as above.
                        assert_eq!(unsafe { cell.address().cast::<u64>().read() }, stamp);
                        release(held, cell.id());
                        grid.give(cell);
                    }
                }
                for (cell, _) in mine {
                    release(held, cell.id());
                    drop(cell);
                }
            });
        }
    });
    every_cell_is_back(&grid);
}

/// Takers never give and givers never take: each taker hands its cells to
/// a giver, whose slot keeps one, so takers find the shared list empty and
/// take from the givers' slots while the givers refill them. Together the
/// threads hold fewer cells than exist (a taker one in hand and one in its
/// channel, a giver one), so a `None` would be a false "all taken".
#[test]
fn takers_find_cells_parked_by_other_threads() {
    const PAIRS: usize = THREADS / 2;
    const CELLS: usize = PAIRS * 3 + 1;
    let grid = Grid::<64, CELLS>::open_with(&options()).unwrap();
    let held: Vec<AtomicBool> = (0..CELLS).map(|_| AtomicBool::new(false)).collect();
    let rounds = if cfg!(miri) { 30 } else { 50_000 };
    thread::scope(|s| {
        for t in 0..PAIRS {
            let (grid, held) = (&grid, &held);
            let (to_giver, from_taker) = std::sync::mpsc::sync_channel(1);
            s.spawn(move || {
                for round in 0..rounds {
                    let cell = grid.take().expect("a free cell");
                    hold(held, cell.id());
                    let stamp = (t * rounds + round) as u64;
                    // SAFETY: the cell is ours; 64 bytes, 16-aligned.
                    unsafe { cell.address().cast::<u64>().write(stamp) };
                    to_giver.send((cell, stamp)).unwrap();
                }
            });
            s.spawn(move || {
                for (cell, stamp) in from_taker {
                    // SAFETY: as above; the cell came with its owner's writes.
                    assert_eq!(unsafe { cell.address().cast::<u64>().read() }, stamp);
                    release(held, cell.id());
                    drop(cell);
                }
            });
        }
    });
    every_cell_is_back(&grid);
}

#[test]
fn racing_first_uses_open_exactly_one_block() {
    // Shared Blocks, so that each shows in /proc/self/maps under its label.
    const OPTIONS: BlockOptions<'static> = BlockOptions::new()
        .pinning(Pinning::BestEffort)
        .shared(cfg!(unimem_linux));
    static TAPE: Tape = Tape::lazy_with(1 << 20, OPTIONS.label("unimem-race-tape"));
    static GRID: Grid<64, 64> = Grid::lazy_with(OPTIONS.label("unimem-race-grid"));
    let barrier = Barrier::new(THREADS);
    let taken: Vec<(usize, usize)> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let p = TAPE.take(8, 8).unwrap() as usize;
                    let cell = GRID.take().unwrap();
                    let address = cell.address() as usize;
                    std::mem::forget(cell);
                    (p, address)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut cells = Vec::new();
    for &(p, cell) in &taken {
        assert!(TAPE.owns(std::ptr::without_provenance::<u8>(p)));
        assert!(GRID.owns(std::ptr::without_provenance::<u8>(cell)));
        cells.push(cell);
    }
    cells.sort_unstable();
    cells.dedup();
    assert_eq!(cells.len(), THREADS, "distinct cells");
    assert_eq!(TAPE.used(), THREADS * 8);
    assert_eq!(GRID.free(), 64 - THREADS);
    #[cfg(unimem_linux)]
    {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        for label in ["unimem-race-tape", "unimem-race-grid"] {
            let mappings = maps
                .lines()
                .filter(|l| l.contains(&format!("/memfd:{label} ")))
                .count();
            assert_eq!(mappings, 1, "{label}: one Block, mapped once");
        }
    }
}
