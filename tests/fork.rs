//! `fork` and the allocators: a child gets its own copy of every private
//! Block, so what it writes, allocates and frees never reaches the parent;
//! a shared Block is shared with the child, as any `MAP_SHARED` memory is.
#![cfg(unimem_linux)]

mod support;

mod common;

use std::time::Duration;

use allocator_api2::vec::Vec;
use common::fork::{Ended, fork, wait};
use support::options;
use unimem::{Grid, Heap, Tape};

const DEADLINE: Duration = Duration::from_secs(20);

#[test]
fn a_childs_writes_to_a_tape_never_reach_the_parent() {
    let tape = Tape::open_with(1 << 20, &options().capacity(64 << 20)).unwrap();
    let mut v: Vec<u64, _> = Vec::with_capacity_in(1000, &tape);
    v.extend(0..1000);
    let used = tape.used();
    let pid = fork(|| {
        v.iter_mut().for_each(|x| *x = 7);
        // The child takes from its copy of the Tape, past the first commit.
        let mut more: Vec<u8, _> = Vec::with_capacity_in(8 << 20, &tape);
        more.resize(8 << 20, 9);
        let ours = v.iter().all(|&x| x == 7) && more.iter().all(|&b| b == 9);
        if ours { 0 } else { 1 }
    });
    assert_eq!(wait(pid, DEADLINE), Ended::Exited(0));
    assert!(
        v.iter().enumerate().all(|(i, &x)| x == i as u64),
        "the parent's copy"
    );
    assert_eq!(tape.used(), used, "the child's takes stayed in the child");
}

#[test]
fn a_childs_writes_to_a_grid_never_reach_the_parent() {
    let grid = Grid::<256, 64>::open_with(&options()).unwrap();
    let mut cell = grid.take().unwrap();
    cell.fill(1);
    let address = cell.address();
    let pid = fork(|| {
        cell.fill(2);
        // The child gives and takes cells of its copy.
        let all: std::vec::Vec<_> = (0..63).map(|_| grid.take()).collect();
        let full = all.iter().all(Option::is_some) && grid.take().is_none();
        drop(all);
        if full && grid.free() == 63 { 0 } else { 1 }
    });
    assert_eq!(wait(pid, DEADLINE), Ended::Exited(0));
    // SAFETY: the cell is ours and 256 bytes long.
    let bytes = unsafe { std::slice::from_raw_parts(address, 256) };
    assert!(bytes.iter().all(|&b| b == 1), "the parent's copy");
    assert_eq!(grid.free(), 63, "the child's takes stayed in the child");
    drop(cell);
}

#[test]
fn a_child_allocates_and_frees_in_its_copy_of_a_heap() {
    let heap = Heap::lazy_with(64 << 20, options()).open_now().unwrap();
    let mut small: Vec<u32, _> = Vec::new_in(&heap);
    small.extend(0..100);
    let mut large: Vec<u8, _> = Vec::new_in(&heap);
    large.resize(1 << 20, 3);
    let before = heap.stats();
    let heap = &heap;
    let pid = fork(|| {
        small.iter_mut().for_each(|x| *x = 0);
        // Frees the parent's allocations in the child's copy, then allocates.
        drop(std::mem::replace(&mut small, Vec::new_in(heap)));
        drop(std::mem::replace(&mut large, Vec::new_in(heap)));
        let again: std::vec::Vec<Vec<u8, &Heap>> = (0..64)
            .map(|i| {
                let mut v = Vec::new_in(heap);
                v.resize(1000 * i + 1, i as u8);
                v
            })
            .collect();
        let right = again
            .iter()
            .enumerate()
            .all(|(i, v)| v.len() == 1000 * i + 1 && v.iter().all(|&b| b == i as u8));
        if right { 0 } else { 1 }
    });
    assert_eq!(wait(pid, DEADLINE), Ended::Exited(0));
    assert_eq!(
        heap.stats().in_use,
        before.in_use,
        "the child's frees stayed there"
    );
    assert!(small.iter().enumerate().all(|(i, &x)| x == i as u32));
    assert!(large.iter().all(|&b| b == 3));
}

#[test]
fn a_shared_block_is_shared_with_a_child() {
    let mut block = options().shared(true).open(4096).unwrap();
    block.as_bytes_mut()[..5].copy_from_slice(b"hello");
    let ptr = block.as_ptr();
    let pid = fork(|| {
        // SAFETY: the parent waits for the child before it reads.
        let seen = unsafe { std::slice::from_raw_parts(ptr, 5) } == b"hello";
        // SAFETY: as above; the child writes while the parent waits.
        unsafe { ptr.add(100).copy_from(b"shared".as_ptr(), 6) };
        if seen { 0 } else { 1 }
    });
    assert_eq!(wait(pid, DEADLINE), Ended::Exited(0));
    assert_eq!(
        &block.as_bytes()[100..106],
        b"shared",
        "the child's write is here"
    );
}

#[test]
fn a_private_block_is_copied_into_a_child() {
    let mut block = options().open(4096).unwrap();
    let ptr = block.as_ptr();
    let pid = fork(|| {
        // SAFETY: the child's own copy of the page.
        unsafe { ptr.write(42) };
        0
    });
    assert_eq!(wait(pid, DEADLINE), Ended::Exited(0));
    assert_eq!(block.as_bytes_mut()[0], 0, "the parent's copy");
}

/// Whether the page at `ptr` is taken in this process's address space: a
/// mapping there that must not be replaced fails with EEXIST. Raw system
/// calls only, for a forked child.
fn reserved(ptr: *mut u8) -> bool {
    let page = unimem::page_size();
    // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping; a new one made
    // is unmapped at once.
    unsafe {
        let addr = libc::mmap(
            ptr.cast(),
            page,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        );
        if addr != libc::MAP_FAILED {
            libc::munmap(addr, page);
            return false;
        }
        *libc::__errno_location() == libc::EEXIST
    }
}

/// A Block kept out of children (`inherit(false)`): a forked child finds
/// its range reserved but inaccessible, its first and its last committed
/// page alike (committed after open too); the parent's Block is as it was.
#[test]
fn a_block_kept_out_of_children_is_reserved_and_inaccessible_there() {
    let page = unimem::page_size();
    for shared in [false, true] {
        let mut block = options()
            .shared(shared)
            .inherit(false)
            .capacity(64 * page)
            .open(4 * page)
            .unwrap();
        block.commit(16 * page).unwrap();
        block.as_bytes_mut().fill(7);
        let first = block.as_ptr();
        let last = first.wrapping_add(15 * page);
        let beyond = first.wrapping_add(40 * page);
        let pid = fork(|| {
            let all = reserved(first) && reserved(last) && reserved(beyond);
            if all { 0 } else { 1 }
        });
        assert_eq!(
            wait(pid, DEADLINE),
            Ended::Exited(0),
            "reserved in the child (shared: {shared})"
        );
        for ptr in [first, last] {
            // SAFETY: the child reads its copy of the range, which must
            // fault; the parent's is untouched.
            let pid = fork(|| i32::from(unsafe { ptr.read_volatile() }));
            assert_eq!(
                wait(pid, DEADLINE),
                Ended::Signalled(libc::SIGSEGV),
                "a touch in the child (shared: {shared})"
            );
        }
        assert!(block.as_bytes().iter().all(|&b| b == 7), "the parent's");
        block.commit(64 * page).unwrap();
        block.as_bytes_mut().fill(8);
        assert!(block.as_bytes().iter().all(|&b| b == 8));
    }
}

/// By default a child inherits the Block (the comparison for the test
/// above).
#[test]
fn a_block_is_inherited_by_default() {
    let mut block = options().open(4096).unwrap();
    block.as_bytes_mut()[0] = 9;
    let ptr = block.as_ptr();
    // SAFETY: the child reads its copy.
    let pid = fork(|| i32::from(unsafe { ptr.read_volatile() }));
    assert_eq!(wait(pid, DEADLINE), Ended::Exited(9));
}
