//! Allocators commit their Blocks as they grow, at a stable address, and
//! give memory back: a Tape and a Heap grow far past their first commit
//! with every allocation's address and bytes unchanged, locked memory
//! follows what is committed, and trimming lowers both.
#![cfg(not(miri))]

mod support;

use std::alloc::Layout;
use std::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use support::options;
use unimem::{Heap, Tape};

/// VmLck is process-wide, and every test here locks memory: they take turns.
static LOCKED: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Locked memory of this process, in bytes.
#[cfg(target_os = "linux")]
fn vm_lck() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmLck:")).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// One allocation, its length and the byte it was filled with.
struct Live {
    ptr: NonNull<u8>,
    layout: Layout,
    seed: u8,
}

impl Live {
    fn new(allocator: &impl Allocator, size: usize, seed: u8) -> Live {
        let layout = Layout::from_size_align(size, 16).unwrap();
        let ptr = allocator
            .allocate(layout)
            .expect("room to grow")
            .cast::<u8>();
        // SAFETY: a fresh allocation of `size` bytes.
        unsafe { ptr.as_ptr().write_bytes(seed, size) };
        Live { ptr, layout, seed }
    }

    fn check(&self) {
        // SAFETY: still allocated, `layout.size()` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) };
        assert!(
            bytes.iter().all(|&b| b == self.seed),
            "the bytes at {:p} changed",
            self.ptr
        );
    }
}

#[test]
fn a_tape_grows_far_past_its_first_commit_in_place() {
    let _one_at_a_time = LOCKED.lock().unwrap();
    let tape = Tape::open_with(1 << 20, &options().capacity(1 << 30)).unwrap();
    let base = tape.block().as_ptr();
    assert_eq!(tape.committed(), 1 << 20);
    let mut live = Vec::new();
    for i in 0..2000 {
        live.push(Live::new(&tape, 1 + (i * 7919) % 200_000, i as u8));
    }
    assert!(tape.committed() > 100 << 20, "grew: {}", tape.committed());
    assert!(tape.committed() <= tape.used() + Tape::COMMIT_STEP);
    assert_eq!(tape.block().as_ptr(), base, "never moved");
    for allocation in &live {
        allocation.check();
        assert!(tape.owns(allocation.ptr.as_ptr()));
    }
}

#[test]
fn a_heap_grows_far_past_its_first_commit_and_gives_memory_back() {
    let _one_at_a_time = LOCKED.lock().unwrap();
    let heap = Heap::lazy_with(1 << 30, options()).open_now().unwrap();
    let first = heap.stats();
    assert!(first.committed <= 4 << 20, "starts small: {first:?}");
    let mut live = Vec::new();
    for i in 0..3000 {
        let size = match i % 4 {
            0 => 24,
            1 => 1000,
            2 => 30_000,
            _ => 200_000 + i * 16,
        };
        live.push(Live::new(&heap, size, i as u8));
    }
    let grown = heap.stats();
    assert!(grown.committed > 150 << 20, "grew: {grown:?}");
    assert_eq!(grown.blocks, 1, "in place, one Block");
    for allocation in &live {
        allocation.check();
    }
    for allocation in live.drain(..) {
        // SAFETY: allocated above with this layout.
        unsafe { heap.deallocate(allocation.ptr, allocation.layout) };
    }
    let freed = heap.stats();
    assert!(
        freed.committed <= unimem::Heap::TRIM_KEEP + (8 << 20),
        "a burst that ends gives its memory back: {freed:?}"
    );
    heap.trim();
    let trimmed = heap.stats();
    assert!(trimmed.committed <= freed.committed, "{trimmed:?}");
    assert!(trimmed.high_water >= grown.committed);
    // It grows again where it was.
    let again = Live::new(&heap, 50 << 20, 7);
    again.check();
    assert!(heap.stats().committed >= 50 << 20);
    // SAFETY: allocated just above.
    unsafe { heap.deallocate(again.ptr, again.layout) };
}

#[test]
fn a_tape_clear_can_give_its_pages_back() {
    let _one_at_a_time = LOCKED.lock().unwrap();
    let mut tape = Tape::open_with(1 << 20, &options().capacity(256 << 20)).unwrap();
    let big = Live::new(&tape, 64 << 20, 1);
    big.check();
    assert!(tape.committed() >= 64 << 20);
    tape.clear_to(4 << 20).unwrap();
    assert_eq!(tape.used(), 0);
    assert_eq!(tape.committed(), 4 << 20);
    let again = Live::new(&tape, 10 << 20, 2);
    again.check();
}

/// Locked memory follows what is committed: it grows with the commits and
/// falls with the decommits. (Skipped where the limit is below what this
/// needs; CI runs it as root, and again unprivileged, where the 8 MiB limit
/// binds and the Tape goes on unpinned past it.)
#[cfg(target_os = "linux")]
#[test]
fn locked_memory_follows_what_is_committed() {
    let _one_at_a_time = LOCKED.lock().unwrap();
    let limit = unimem_memlock_limit();
    let mut tape = Tape::open_with(0, &options().capacity(64 << 20)).unwrap();
    let before = vm_lck();
    let a = Live::new(&tape, 3 << 20, 1);
    let after = vm_lck();
    let pinned = tape.block().locked();
    assert_eq!(after - before, pinned, "VmLck counts what the Tape locked");
    if limit.is_none_or(|limit| limit >= 64 << 20) {
        assert_eq!(pinned, tape.committed(), "all of it");
        assert!(tape.block().is_pinned());
    } else {
        assert!(pinned <= tape.committed());
    }
    a.check();
    tape.clear_to(0).unwrap();
    assert_eq!(vm_lck(), before, "decommitting unlocks");
    assert_eq!(tape.block().locked(), 0);
}

#[cfg(target_os = "linux")]
fn unimem_memlock_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    assert_eq!(rc, 0);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    (!root && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

#[cfg(target_os = "linux")]
#[test]
fn a_heaps_locked_memory_falls_when_it_trims() {
    let _one_at_a_time = LOCKED.lock().unwrap();
    let heap = Heap::lazy_with(256 << 20, options()).open_now().unwrap();
    let before = vm_lck();
    let burst: Vec<Live> = (0..40).map(|i| Live::new(&heap, 1 << 20, i)).collect();
    let grown = vm_lck();
    assert!(grown >= before, "{before} -> {grown}");
    let locked_grew = grown - before;
    assert!(locked_grew <= heap.stats().committed);
    for allocation in burst {
        allocation.check();
        // SAFETY: allocated above with this layout.
        unsafe { heap.deallocate(allocation.ptr, allocation.layout) };
    }
    heap.trim();
    let after = vm_lck();
    assert!(
        after <= before + unimem::Heap::TRIM_KEEP,
        "locked memory falls after the burst: {before} -> {grown} -> {after}"
    );
}

/// Free memory below a live allocation cannot be decommitted from the end:
/// it is discarded in place (given back and unlocked), and taken back,
/// locked again, when the heap reuses it.
#[cfg(target_os = "linux")]
#[test]
fn free_memory_inside_an_arena_is_given_back_and_taken_back() {
    let _one_at_a_time = LOCKED.lock().unwrap();
    let heap = Heap::lazy_with(256 << 20, options()).open_now().unwrap();
    let base = vm_lck();
    let burst: Vec<Live> = (0..40).map(|i| Live::new(&heap, 1 << 20, i)).collect();
    let top = Live::new(&heap, 1 << 20, 99);
    let grown = heap.stats();
    for allocation in burst {
        allocation.check();
        // SAFETY: allocated above with this layout.
        unsafe { heap.deallocate(allocation.ptr, allocation.layout) };
    }
    let freed = heap.stats();
    let block = heap.try_block().unwrap();
    assert!(block.discarded() > 30 << 20, "{freed:?}, {block:?}");
    assert!(
        freed.committed <= (1 << 20) + unimem::Heap::TRIM_KEEP + (2 << 20),
        "given back below the live allocation: {grown:?} -> {freed:?}"
    );
    let pinned_all = unimem_memlock_limit().is_none();
    if pinned_all {
        assert!(block.is_pinned(), "what is in memory is locked");
        assert_eq!(vm_lck() - base, block.locked());
        assert!(vm_lck() - base <= freed.committed + (1 << 20));
    }
    // Reused: taken back, locked again, its bytes fresh.
    let again: Vec<Live> = (0..40)
        .map(|i| Live::new(&heap, 1 << 20, 100 + i))
        .collect();
    for allocation in &again {
        allocation.check();
    }
    top.check();
    let reused = heap.stats();
    assert!(reused.committed >= 41 << 20, "{reused:?}");
    assert!(
        reused.committed <= grown.committed + unimem::Heap::TRIM_KEEP,
        "{reused:?}"
    );
    if pinned_all {
        assert!(block.is_pinned());
        assert_eq!(vm_lck() - base, block.locked());
    }
}

/// An arena that has to commit again after an automatic trim gave memory
/// back keeps more free memory from then on (up to `TRIM_KEEP_MAX`): a
/// program whose free memory swings up and down stops paying page faults
/// for the swing. `trim` still gives all of it back.
#[test]
fn a_heap_keeps_more_free_memory_once_it_comes_back_for_it() {
    let _one_at_a_time = LOCKED.lock().unwrap();
    let heap = Heap::lazy_with(256 << 20, options()).open_now().unwrap();
    let mut kept = Vec::new();
    for round in 0..6u8 {
        let burst: Vec<Live> = (0..40)
            .map(|i| Live::new(&heap, 1 << 20, round.wrapping_mul(40).wrapping_add(i)))
            .collect();
        for allocation in burst {
            allocation.check();
            // SAFETY: allocated above with this layout.
            unsafe { heap.deallocate(allocation.ptr, allocation.layout) };
        }
        kept.push(heap.stats().committed);
    }
    assert!(
        kept[0] <= unimem::Heap::TRIM_THRESHOLD,
        "the first burst is given back: {kept:?}"
    );
    assert!(
        kept[5] >= 32 << 20,
        "the burst comes back each round, so it stays: {kept:?}"
    );
    assert!(
        kept.iter()
            .all(|&k| k <= unimem::Heap::TRIM_KEEP_MAX + unimem::Heap::TRIM_THRESHOLD),
        "{kept:?}"
    );
    heap.trim();
    assert!(heap.stats().committed <= 2 << 20, "{:?}", heap.stats());
}
