//! A Heap's trims against everything that runs beside them: `stats()` from a
//! monitor thread while workers free bursts (automatic trims) and another
//! thread trims explicitly, and a registered Heap whose trims are refused
//! but whose pages are reused.
#![cfg(unimem_linux)]

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use allocator_api2::alloc::Allocator;
use unimem::register::{Backend, Registered, Span};
use unimem::{BlockOptions, Error, Heap, Pages, Region};

/// Locked bytes of this process's mappings that start in `region` (from
/// `/proc/self/smaps`: other tests lock memory elsewhere at the same time).
fn smaps_locked(region: &Region) -> usize {
    let start = region.as_ptr().addr();
    let end = start + region.capacity();
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    let mut locked = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        let from = first
            .split_once('-')
            .and_then(|(from, _)| usize::from_str_radix(from, 16).ok());
        if let Some(from) = from {
            inside = (start..end).contains(&from);
        } else if let Some(kib) = line.strip_prefix("Locked:").filter(|_| inside) {
            let kib: usize = kib.trim().trim_end_matches("kB").trim().parse().unwrap();
            locked += kib * 1024;
        }
    }
    locked
}

/// Writes every page of an allocation, so that it is resident.
fn touch(ptr: NonNull<[u8]>, seed: u8) {
    let len = ptr.len();
    let base = ptr.cast::<u8>().as_ptr();
    for at in (0..len).step_by(4096).chain([len - 1]) {
        // SAFETY: inside the allocation, which we own.
        unsafe { base.add(at).write(seed) };
    }
}

/// `stats()` walks the slab headers of every arena while bursts are freed
/// (each free past the threshold trims the arena's top, decommitting the
/// headers of the groups it gives back) and a thread trims in a loop. It
/// used to read the headers of groups a trim had just decommitted, and
/// crashed (SIGSEGV on `PROT_NONE` metadata).
#[test]
fn stats_is_sound_while_the_heap_trims() {
    let heap = Heap::lazy_with(256 << 20, BlockOptions::lazy().quiet(true).prefault(false))
        .open_now()
        .unwrap();
    let stop = AtomicBool::new(false);
    let seconds = std::env::var("UNIMEM_TRIM_RACE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let walks = thread::scope(|s| {
        for worker in 0..2 {
            let heap = &heap;
            let stop = &stop;
            s.spawn(move || {
                let mut round = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    // A burst of slabs and runs at the arena's top, then all
                    // of it freed: the free run at the top passes the
                    // threshold and is trimmed.
                    let mut live = Vec::new();
                    for i in 0..600 {
                        let size = match (i + round + worker) % 8 {
                            0 => 96 << 10,
                            1 => 20 << 10,
                            _ => 64 + (i * 37) % 4000,
                        };
                        let layout = Layout::from_size_align(size, 8).unwrap();
                        if let Ok(ptr) = heap.allocate(layout) {
                            touch(ptr, i as u8);
                            live.push((ptr, layout));
                        }
                    }
                    for (ptr, layout) in live.drain(..) {
                        // SAFETY: allocated above with `layout`, freed once.
                        unsafe { heap.deallocate(ptr.cast(), layout) };
                    }
                    round += 1;
                }
            });
        }
        {
            let heap = &heap;
            let stop = &stop;
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    heap.trim();
                }
            });
        }
        let mut walks = 0u64;
        while Instant::now() < deadline {
            let stats = heap.stats();
            assert!(stats.in_use <= stats.held.max(stats.committed) + (256 << 20));
            walks += 1;
        }
        stop.store(true, Ordering::Relaxed);
        walks
    });
    assert!(walks > 0);
    heap.trim();
    let stats = heap.stats();
    assert_eq!(stats.in_use, 0, "everything was freed: {stats:?}");
}

/// A registration that registers nothing: it only makes the Heap's Blocks
/// registered, as a device's would.
#[derive(Debug)]
struct Watching;

impl Backend for Watching {
    type Chunk = ();

    fn register(&self, _host: NonNull<u8>, _len: usize) -> Result<(), Error> {
        Ok(())
    }

    unsafe fn unregister(&self, _host: NonNull<u8>, _len: usize, _chunk: ()) {}

    fn max_chunk(&self) -> usize {
        1 << 30
    }

    fn continues(&self, _prev: &Span<()>, _next: &Span<()>) -> bool {
        true
    }
}

/// What the Block says of its pinning agrees with the kernel, and the
/// Heap's count with the Block.
fn assert_accounting(heap: &Heap, when: &str) {
    let block = heap.blocks()[0];
    let smaps = smaps_locked(block);
    assert_eq!(
        block.locked(),
        smaps,
        "{when}: locked() against smaps' Locked (committed {}, discarded {})",
        block.committed(),
        block.discarded()
    );
    if block.is_pinned() {
        assert_eq!(
            smaps,
            block.committed() - block.discarded(),
            "{when}: is_pinned() while resident committed memory is not locked"
        );
    }
    assert_eq!(
        heap.stats().committed,
        block.committed() - block.discarded(),
        "{when}: the Heap's committed count against its Block"
    );
}

/// A registered Heap keeps its pages (its trims are refused), but the
/// groups a trim had discarded before the registration must still be
/// committed and locked again when they are reused. A refused trim used to
/// forget that they were discarded: reused unlocked while `locked()` and
/// `is_pinned()` said otherwise.
#[test]
fn a_registered_heaps_trims_keep_pinning_and_counts_true() {
    // Prefaulted, so that what is locked is resident and smaps can count it;
    // best effort, so that an ordinary user's limit only makes it unpinned.
    let options = BlockOptions::lazy()
        .prefault(true)
        .pages(Pages::Base)
        .quiet(true);
    let heap = Heap::lazy_with(512 << 20, options).open_now().unwrap();
    let big = Layout::from_size_align(100 << 20, 8).unwrap();
    let small = Layout::from_size_align(64 << 10, 8).unwrap();
    let a = heap.allocate(big).unwrap();
    touch(a, 1);
    let b = heap.allocate(small).unwrap();
    touch(b, 2);
    // Freeing `a` leaves 100 MiB free below `b`: the automatic trim
    // discards most of it (not the top: `b` is there).
    // SAFETY: allocated above with `big`.
    unsafe { heap.deallocate(a.cast(), big) };
    assert!(
        heap.blocks()[0].discarded() >= 64 << 20,
        "the free groups were discarded: {}",
        heap.blocks()[0].discarded()
    );
    assert_accounting(&heap, "after the discard");

    let registered = Registered::with_backend(Watching, heap).unwrap();
    // SAFETY: allocated above with `small`.
    unsafe { registered.deallocate(b.cast(), small) };
    // Everything is free now; the trim is refused (registered), and the
    // discarded groups stay discarded.
    assert_eq!(registered.trim(), 0, "a registered Heap keeps its pages");
    assert_accounting(&registered, "after a refused trim");

    // Reuse: every page of the discarded groups is written again.
    let c = registered.allocate(big).unwrap();
    touch(c, 3);
    assert_accounting(&registered, "after reuse");
    // SAFETY: allocated above with `big`.
    unsafe { registered.deallocate(c.cast(), big) };
    let heap = registered.into_inner();
    heap.trim();
    assert_accounting(&heap, "after unregistering and trimming");
}
