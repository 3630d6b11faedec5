use super::slots::Look;
use super::*;
use crate::testing::options;

#[test]
fn cells_are_aligned_distinct_and_counted() {
    let grid = Grid::<100, 16>::open_with(&options()).unwrap();
    assert_eq!(grid.cell_size(), 112);
    assert_eq!(grid.cell_align(), 16);
    let cells: Vec<_> = (0..16).map(|_| grid.take().unwrap()).collect();
    assert!(grid.take().is_none());
    assert_eq!(grid.free(), 0);
    let mut addresses: Vec<_> = cells.iter().map(|c| c.address().addr()).collect();
    addresses.sort_unstable();
    addresses.dedup();
    assert_eq!(addresses.len(), 16);
    for pair in addresses.windows(2) {
        assert!(pair[1] - pair[0] >= 112);
    }
    assert!(cells.iter().all(|c| grid.owns(c.address())));
    drop(cells);
    assert_eq!(grid.free(), 16);
}

#[test]
fn small_cells_round_to_a_power_of_two() {
    let grid = Grid::<3, 4>::open_with(&options()).unwrap();
    assert_eq!(grid.cell_size(), 4);
    assert_eq!(grid.cell_align(), 4);
    let grid = Grid::<4096, 2>::open_with(&options()).unwrap();
    assert_eq!(grid.cell_align(), 4096.min(page_size()));
}

#[test]
fn bad_sizes_are_errors() {
    assert!(matches!(
        Grid::<0, 4>::open_with(&options()),
        Err(Error::ZeroSize)
    ));
    assert!(matches!(
        Grid::<64, 0>::open_with(&options()),
        Err(Error::ZeroSize)
    ));
    assert!(matches!(
        Grid::<{ usize::MAX / 2 }, 4>::open_with(&options()),
        Err(Error::GridSize { cells: 4, .. })
    ));
    assert!(matches!(
        Grid::<16, { u32::MAX as usize }>::open_with(&options()),
        Err(Error::GridSize { .. })
    ));
}

#[test]
fn a_given_cell_is_reused() {
    let grid = Grid::<64, 2>::open_with(&options()).unwrap();
    let a = grid.take().unwrap();
    let id = a.id();
    grid.give(a);
    let b = grid.take().unwrap();
    assert_eq!(b.id(), id, "the cell given back is the next taken");
}

#[test]
fn cell_bytes_are_writable() {
    let grid = Grid::<32, 2>::open_with(&options()).unwrap();
    let mut cell = grid.take_uninit().unwrap();
    cell.as_uninit_mut().fill(MaybeUninit::new(0xAB));
    // SAFETY: every byte was just written.
    let cell = unsafe { cell.assume_init() };
    assert!(cell.iter().all(|&b| b == 0xAB));
    assert_eq!(cell.len(), 32);
}

/// `take` hands out zeroed cells: a fresh one as committed, a reused one
/// zeroed again whatever its last owner wrote (through a `Cell`, an
/// `UninitCell` or the allocator traits).
#[test]
fn taken_cells_read_as_zero() {
    let grid = Grid::<64, 1>::open_with(&options()).unwrap();
    let mut cell = grid.take().unwrap();
    assert!(cell.iter().all(|&b| b == 0), "fresh");
    cell.fill(7);
    drop(cell);
    let cell = grid.take().unwrap();
    assert!(cell.iter().all(|&b| b == 0), "reused after a Cell");
    drop(cell);
    let mut uninit = grid.take_uninit().unwrap();
    uninit.as_uninit_mut()[3] = MaybeUninit::uninit();
    drop(uninit);
    let cell = grid.take().unwrap();
    assert!(cell.iter().all(|&b| b == 0), "reused after an UninitCell");
    drop(cell);
    let layout = Layout::from_size_align(64, 1).unwrap();
    let p = crate::alloc::allocate(&grid, layout).unwrap().cast::<u8>();
    // SAFETY: a live 64-byte allocation.
    unsafe { p.as_ptr().write_bytes(9, 64) };
    // SAFETY: allocated above with `layout`.
    unsafe { crate::alloc::deallocate(&grid, p, layout) };
    let mut cell = grid.take().unwrap();
    assert!(cell.iter().all(|&b| b == 0), "reused after the allocator");
    cell[0] = 1;
    let zeroed = grid.take_uninit();
    assert!(zeroed.is_none(), "one cell, held");
}

#[test]
#[should_panic(expected = "belongs to the Grid")]
fn giving_to_another_grid_panics() {
    let a = Grid::<64, 2>::open_with(&options()).unwrap();
    let b = Grid::<64, 2>::open_with(&options()).unwrap();
    let cell = a.take().unwrap();
    b.give(cell);
}

#[test]
fn a_foreign_cell_returns_home() {
    let a = Grid::<64, 2>::open_with(&options()).unwrap();
    let b = Grid::<64, 2>::open_with(&options()).unwrap();
    let cell = a.take().unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.give(cell)));
    assert!(result.is_err());
    assert_eq!(a.free(), 2, "the cell went back to its own grid");
    assert_eq!(b.free(), 2, "and never entered the other");
}

/// The ABA case on the shared list, interleaved by hand: a pop reads
/// top 0 and its link 1, then stalls; meanwhile 0 and 1 are popped and 0
/// is pushed back, so the top is 0 again but its link is 2. The stalled
/// pop's compare-exchange must fail (the stamp moved on): succeeding would
/// put cell 1, which is held, back on top.
#[test]
fn a_stalled_pop_cannot_reinstall_a_taken_cell() {
    let grid = Grid::<64, 3>::open_with(&options()).unwrap();
    let links = grid.parts().unwrap().lists.links;
    fill_list(&grid, 3);
    let stale = grid.head.load(Ordering::Acquire);
    let next = grid.below(links, stale).unwrap();
    assert_eq!((stale.index(), next), (0, 1));

    assert_eq!(grid.pop(links), Some(0));
    assert_eq!(grid.pop(links), Some(1));
    grid.push(links, 0);
    let top = grid.head.load(Ordering::Acquire);
    assert_eq!(top.index(), 0, "the same index is on top again");
    assert_eq!(grid.below(links, top), Some(2));

    assert_eq!(grid.try_pop(stale, next), Err(top), "the stale pop fails");
    assert_eq!(grid.pop(links), Some(0));
    assert_eq!(grid.pop(links), Some(2), "cell 1 stays with its holder");
    assert_eq!(grid.pop(links), None);
    grid.push(links, 1);
}

/// The "every cell is held" check, interleaved by hand: between the two
/// passes another thread parks a cell and a third takes it, so the slot
/// is empty again, but its stamp moved on and the check fails; likewise a
/// cell given to the list and taken again.
#[test]
fn an_empty_word_refilled_between_passes_is_a_change() {
    let grid = Grid::<64, 2>::open_with(&options()).unwrap();
    let lists = grid.parts().unwrap().lists;
    let links = lists.links;
    fill_list(&grid, 2);
    let (zero, one) = (grid.pop(links).unwrap(), grid.pop(links).unwrap());
    let mut seen = [Stamped::EMPTY; SLOTS];
    let Look::Empty(head) = grid.look(lists, &mut seen) else {
        panic!("all cells are held")
    };
    assert!(grid.unchanged(lists, head, &seen));

    let slot = grid.slot(lists, 5).unwrap();
    let empty = slot.word.load(Ordering::Relaxed);
    slot.word.store(empty.with(zero), Ordering::Release);
    assert!(Grid::<64, 2>::try_empty(slot, empty.with(zero)));
    assert!(slot.word.load(Ordering::Relaxed).is_empty());
    assert!(!grid.unchanged(lists, head, &seen), "the slot changed");

    let Look::Empty(head) = grid.look(lists, &mut seen) else {
        panic!("all cells are held")
    };
    grid.push(links, one);
    assert_eq!(grid.pop(links), Some(one));
    assert!(!grid.unchanged(lists, head, &seen), "the list changed");

    let Look::Empty(head) = grid.look(lists, &mut seen) else {
        panic!("all cells are held")
    };
    assert!(grid.unchanged(lists, head, &seen));
    grid.push(links, zero);
    grid.push(links, one);
    assert_eq!(grid.free(), 2);
}

/// Takes every cell once from `fresh` and pushes them on the list in
/// reverse, so that it holds 0, 1, 2, ... from the top, as a list that
/// started full would.
fn fill_list<const C: usize, const N: usize>(grid: &Grid<C, N>, cells: u32) {
    let lists = grid.parts().unwrap().lists;
    let taken: Vec<u32> = (0..cells).map(|_| grid.take_fresh().unwrap()).collect();
    assert_eq!(
        taken,
        (0..cells).collect::<Vec<_>>(),
        "fresh cells in order"
    );
    for index in taken.into_iter().rev() {
        grid.push(lists.links, index);
    }
}

/// The slots that hold a cell now.
fn parked<const C: usize, const N: usize>(grid: &Grid<C, N>) -> Vec<u32> {
    grid.slots(grid.parts().unwrap().lists)
        .iter()
        .map(|slot| slot.word.load(Ordering::Relaxed).index())
        .filter(|&index| index != NIL)
        .collect()
}

#[test]
fn a_thread_takes_from_its_slot_then_the_list() {
    let grid = Grid::<64, 4>::open_with(&options()).unwrap();
    let (a, b) = (grid.take().unwrap(), grid.take().unwrap());
    let (ia, ib) = (a.id(), b.id());
    assert!(thread::tag() <= SLOTS, "a test thread has a slot");
    grid.give(a);
    assert_eq!(parked(&grid), [ia as u32], "the first goes to the slot");
    grid.give(b);
    assert_eq!(parked(&grid), [ia as u32], "the second to the list");
    assert_eq!(grid.free(), 4);
    let first = grid.take().unwrap();
    assert_eq!(first.id(), ia, "the slot first");
    let second = grid.take().unwrap();
    assert_eq!(second.id(), ib, "then the list's top");
    assert!(parked(&grid).is_empty());
}

/// A cell parked in another thread's slot is taken once the list is
/// empty, while that thread lives and after it exits.
#[test]
fn cells_in_other_threads_slots_are_taken() {
    let grid = Grid::<64, 3>::open_with(&options()).unwrap();
    let (parked_tx, parked_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let grid = &grid;
        s.spawn(move || {
            let cell = grid.take().unwrap();
            drop(cell);
            assert!(thread::tag() <= SLOTS, "a test thread has a slot");
            parked_tx.send(()).unwrap();
            done_rx.recv().unwrap();
        });
        parked_rx.recv().unwrap();
        assert_eq!(parked(grid).len(), 1, "the other thread parked its cell");
        let all: Vec<_> = (0..3).map(|_| grid.take().expect("a free cell")).collect();
        assert!(parked(grid).is_empty(), "taken from the live thread's slot");
        assert!(grid.take().is_none());
        drop(all);
        done_tx.send(()).unwrap();
    });
    // Park this thread's cell elsewhere: a thread that exits leaves its.
    let held: Vec<_> = (0..3).map(|_| grid.take().unwrap()).collect();
    std::thread::scope(|s| {
        s.spawn(move || drop(held));
    });
    assert_eq!(parked(&grid).len(), 1, "the exited thread's slot holds one");
    assert_eq!(grid.free(), 3);
    let all: Vec<_> = (0..3).map(|_| grid.take().expect("a free cell")).collect();
    assert!(grid.take().is_none());
    drop(all);
}

#[test]
fn lazy_grid_carves_on_first_take() {
    let grid = Grid::<64, 8>::lazy_with(options());
    assert!(!grid.owns(core::ptr::null::<u8>()));
    let cell = grid.take().unwrap();
    assert!(grid.owns(cell.address()));
    assert_eq!(
        cell.address(),
        grid.block().as_ptr(),
        "the first cell first"
    );
    assert_eq!(grid.free(), 7);
    assert!(size_of::<Slot>() >= 64, "a cache line per slot at least");
    let meta = grid.meta.get().unwrap();
    assert!(meta.committed() >= SLOTS * size_of::<Slot>() + 8 * 4);
    assert!(
        !meta.contains(cell.address()),
        "the links live apart from the cells"
    );
}

/// A lazy Grid commits its cells as they are first used, not at once.
#[test]
fn a_lazy_grid_commits_what_it_uses() {
    const CELL: usize = 64 << 10;
    let grid = Grid::<CELL, 1024>::lazy_with(options().prefault(false));
    let first = grid.take().unwrap();
    let block = grid.block();
    assert_eq!(block.capacity(), CELL * 1024);
    assert!(block.committed() <= crate::block::COMMIT_STEP, "{block:?}");
    let held: Vec<_> = (0..100).map(|_| grid.take().unwrap()).collect();
    assert!(block.committed() >= 101 * CELL);
    assert!(block.committed() < 101 * CELL + 2 * crate::block::COMMIT_STEP);
    drop(held);
    drop(first);
    assert_eq!(grid.free(), 1024);
}

#[test]
fn invalid_sizes_say_why() {
    let grid = Grid::<{ usize::MAX }, 1>::lazy_with(options());
    assert!(grid.take().is_none());
    match grid.try_block() {
        Err(Error::GridSize {
            cell_size, cells, ..
        }) => assert_eq!((*cell_size, *cells), (usize::MAX, 1)),
        other => panic!("{other:?}"),
    }
    match Grid::<16, { u32::MAX as usize }>::open_with(&options()) {
        Err(error @ Error::GridSize { cells, .. }) => {
            assert_eq!(cells, u32::MAX as usize);
            assert!(error.to_string().contains("cells"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}
