//! Zeroed allocations from a Heap cost nothing until touched: memory the
//! system provided zero (committed fresh, or given back by a trim and taken
//! again) is not written, and memory a program wrote before is zeroed by
//! giving its pages back rather than by writing them, so that the pages a
//! program does not touch stay out of memory (`mincore`). Every zeroed
//! allocation still reads zero to its last byte.
#![cfg(all(target_os = "linux", not(miri)))]

use std::alloc::{GlobalAlloc, Layout};
use std::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use unimem::{BlockOptions, Heap};

const PAGE: usize = 4096;

/// The README's global Heap (`Heap::lazy`'s options), quiet, in a first
/// arena of 64 MiB. Transparent huge pages are advised off for its data
/// Block, whatever the system's setting, so that a touch faults one page.
fn heap() -> Heap {
    let heap = Heap::lazy_with(
        64 << 20,
        BlockOptions::lazy()
            .prefault(false)
            .huge_pages(false)
            .quiet(true),
    )
    .open_now()
    .unwrap();
    let block = heap.block();
    // SAFETY: advice over the heap's own reservation; it changes no data.
    let rc = unsafe {
        libc::madvise(
            block.as_ptr().cast(),
            block.capacity(),
            libc::MADV_NOHUGEPAGE,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    heap
}

/// How many of the pages of `ptr..ptr + len` are resident.
fn resident(ptr: *const u8, len: usize) -> usize {
    let start = ptr.addr() & !(PAGE - 1);
    let end = (ptr.addr() + len).next_multiple_of(PAGE);
    let mut pages = vec![0u8; (end - start) / PAGE];
    // SAFETY: the range is mapped (inside a live allocation, rounded out
    // to pages of the same Block), and `pages` has one byte per page.
    let rc = unsafe {
        libc::mincore(
            std::ptr::without_provenance_mut(start),
            end - start,
            pages.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    pages.iter().filter(|&&p| p & 1 != 0).count()
}

/// Every byte of the allocation is zero (read after the residency checks:
/// reading faults pages in).
fn all_zero(block: NonNull<[u8]>) -> bool {
    // SAFETY: a live allocation of `block.len()` bytes, initialized (zero).
    let bytes = unsafe { std::slice::from_raw_parts(block.cast::<u8>().as_ptr(), block.len()) };
    bytes.iter().all(|&b| b == 0)
}

/// Writes every page of an allocation (a program that used all of it).
fn write_all(block: NonNull<[u8]>) {
    // SAFETY: the allocation is ours and holds `block.len()` bytes.
    unsafe { block.cast::<u8>().as_ptr().write_bytes(0xA5, block.len()) };
}

const BIG: usize = 8 << 20;

#[test]
fn a_fresh_zeroed_allocation_is_not_written() {
    let heap = heap();
    // Objects of slabs made on fresh pages, then page runs; through
    // `GlobalAlloc` (which zeroes the size asked for).
    for size in [32 << 10, 9000, 100, BIG / 2] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe { GlobalAlloc::alloc_zeroed(&heap, layout) };
        assert!(!p.is_null());
        assert_eq!(resident(p, size), 0, "{size} bytes: nothing touched yet");
        let block = NonNull::slice_from_raw_parts(NonNull::new(p).unwrap(), size);
        assert!(all_zero(block), "{size} bytes");
        // SAFETY: allocated above with `layout`.
        unsafe { GlobalAlloc::dealloc(&heap, p, layout) };
    }

    // Through `Allocator`, which zeroes the whole returned slice, on a heap
    // of its own (the one above has written memory to reuse).
    let heap = self::heap();
    let layout = Layout::from_size_align(BIG, 8).unwrap();
    let block = heap.allocate_zeroed(layout).unwrap();
    let base = block.cast::<u8>().as_ptr();
    assert_eq!(resident(base, block.len()), 0, "nothing touched yet");
    // SAFETY: the first and last bytes of the allocation.
    unsafe {
        base.write(1);
        base.add(block.len() - 1).write(1);
    }
    assert_eq!(resident(base, block.len()), 2, "the two pages touched");
    // SAFETY: as above.
    unsafe {
        base.write(0);
        base.add(block.len() - 1).write(0);
    }
    assert!(all_zero(block));
    // SAFETY: allocated above with `layout`.
    unsafe { heap.deallocate(block.cast(), layout) };
}

#[test]
fn memory_given_back_by_a_trim_comes_back_zero_and_untouched() {
    let heap = heap();
    let layout = Layout::from_size_align(BIG, 8).unwrap();
    // At the arena's end: the trim decommits it.
    let used = heap.allocate(layout).unwrap();
    write_all(used);
    // SAFETY: allocated above with `layout`.
    unsafe { heap.deallocate(used.cast(), layout) };
    assert!(heap.trim() >= BIG);
    let block = heap.allocate_zeroed(layout).unwrap();
    assert_eq!(block.cast::<u8>(), used.cast::<u8>(), "the same memory");
    assert_eq!(resident(block.cast().as_ptr(), block.len()), 0);
    assert!(all_zero(block));
    // SAFETY: allocated above with `layout`.
    unsafe { heap.deallocate(block.cast(), layout) };

    // Inside the arena, with a live allocation after it: the trim discards
    // its groups instead.
    let used = heap.allocate(layout).unwrap();
    let after = heap.allocate(layout).unwrap();
    write_all(used);
    // SAFETY: allocated above with `layout`.
    unsafe { heap.deallocate(used.cast(), layout) };
    assert!(heap.trim() >= BIG - (64 << 10));
    let block = heap.allocate_zeroed(layout).unwrap();
    assert_eq!(block.cast::<u8>(), used.cast::<u8>(), "the same memory");
    assert_eq!(resident(block.cast().as_ptr(), block.len()), 0);
    assert!(all_zero(block));
    // SAFETY: allocated above with `layout`.
    unsafe {
        heap.deallocate(block.cast(), layout);
        heap.deallocate(after.cast(), layout);
    }
}

#[test]
fn written_memory_is_zeroed_without_faulting_in_the_rest() {
    let heap = heap();
    let layout = Layout::from_size_align(BIG, 8).unwrap();
    let used = heap.allocate(layout).unwrap();
    write_all(used);
    // Read once the memory is committed (an ordinary user's memlock limit
    // may leave part of it unpinned).
    let pinned = heap.block().is_pinned();
    assert_eq!(resident(used.cast().as_ptr(), used.len()), BIG / PAGE);
    // SAFETY: allocated above with `layout`.
    unsafe { heap.deallocate(used.cast(), layout) };
    // Reused at once, no trim: every byte was written, so every byte is
    // zeroed: the first and last pages by writing them (a program touches
    // those), the others by giving them back (a private Block of base
    // pages), so that they stay out of memory until touched.
    let block = heap.allocate_zeroed(layout).unwrap();
    assert_eq!(block.cast::<u8>(), used.cast::<u8>(), "the same memory");
    let base = block.cast::<u8>().as_ptr();
    assert_eq!(resident(base, block.len()), 2);
    // SAFETY: inside the allocation.
    let inner = unsafe { base.add(PAGE) };
    assert_eq!(resident(inner, block.len() - 2 * PAGE), 0);
    assert!(all_zero(block));
    // Pages given back were locked again where they were locked.
    assert_eq!(heap.block().is_pinned(), pinned);
    // SAFETY: allocated above with `layout`.
    unsafe { heap.deallocate(block.cast(), layout) };

    // A small object reused from a slab's free list is written (the
    // object, not more).
    let small = Layout::from_size_align(100, 8).unwrap();
    let first = heap.allocate(small).unwrap();
    write_all(first);
    // SAFETY: allocated above with `small`.
    unsafe { heap.deallocate(first.cast(), small) };
    let again = heap.allocate_zeroed(small).unwrap();
    assert_eq!(again.cast::<u8>(), first.cast::<u8>(), "the same object");
    assert!(all_zero(again));
    // SAFETY: allocated above with `small`.
    unsafe { heap.deallocate(again.cast(), small) };
}

#[test]
fn growing_zeroed_in_place_leaves_the_new_pages_untouched() {
    let heap = heap();
    let small = Layout::from_size_align(1 << 20, 8).unwrap();
    let block = heap.allocate_zeroed(small).unwrap();
    write_all(block);
    let big = Layout::from_size_align(BIG, 8).unwrap();
    // SAFETY: allocated above with `small`; `big` is larger.
    let grown = unsafe { heap.grow_zeroed(block.cast(), small, big) }.unwrap();
    assert_eq!(grown.cast::<u8>(), block.cast::<u8>(), "grown in place");
    // SAFETY: inside the grown allocation.
    let tail = unsafe { grown.cast::<u8>().as_ptr().add(1 << 20) };
    assert_eq!(resident(tail, BIG - (1 << 20)), 0);
    let tail = NonNull::slice_from_raw_parts(NonNull::new(tail).unwrap(), grown.len() - (1 << 20));
    assert!(all_zero(tail));
    // SAFETY: the grown allocation, with the layout it has now.
    unsafe { heap.deallocate(grown.cast(), big) };
}
