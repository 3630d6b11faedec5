use std::collections::HashMap;
use std::sync::Barrier;

use super::*;
use crate::testing::options;
use runs::UNIT;

/// A heap that reserves at most `blocks` times `block_bytes` (the first
/// arena `block_bytes`, the next twice that if the limit leaves room).
fn heap(block_bytes: usize, blocks: usize) -> Heap {
    Heap::lazy_with(block_bytes, options())
        .limit(block_bytes * blocks)
        .open_now()
        .unwrap()
}

/// A pointer handed to another thread, as a program hands over an
/// allocation it no longer uses.
#[derive(Clone, Copy)]
struct Sent(NonNull<u8>);

// SAFETY: the allocation is owned by whoever holds the `Sent`.
unsafe impl Send for Sent {}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

fn alloc(heap: &Heap, layout: Layout) -> Option<NonNull<u8>> {
    crate::alloc::allocate(heap, layout).map(NonNull::cast)
}

/// # Safety
/// `ptr` came from `alloc(heap, layout)`.
unsafe fn free(heap: &Heap, ptr: NonNull<u8>, layout: Layout) {
    // SAFETY: the caller's contract.
    unsafe { crate::alloc::deallocate(heap, ptr, layout) }
}

fn fill(ptr: NonNull<u8>, len: usize, seed: u8) {
    // SAFETY: callers pass live allocations of at least `len` bytes.
    unsafe { ptr.as_ptr().write_bytes(seed, len) }
}

fn check(ptr: NonNull<u8>, len: usize, seed: u8) {
    // SAFETY: as `fill`.
    let bytes = unsafe { core::slice::from_raw_parts(ptr.as_ptr(), len) };
    assert!(
        bytes.iter().all(|&b| b == seed),
        "pattern {seed} lost at {ptr:p}"
    );
}

#[test]
fn bad_configurations_are_errors() {
    assert!(matches!(
        Heap::lazy_with(Heap::MIN_BLOCK - 1, options()).open_now(),
        Err(Error::TooSmall {
            minimum: Heap::MIN_BLOCK,
            ..
        })
    ));
    assert!(matches!(
        Heap::lazy_with(1 << 20, options()).limit(1000).open_now(),
        Err(Error::TooSmall { .. })
    ));
    assert!(matches!(
        Heap::lazy_with(usize::MAX, options()).open_now(),
        Err(Error::Overflow { .. })
    ));
    let broken = Heap::lazy_with(0, options());
    assert_eq!(alloc(&broken, layout(8, 8)), None);
    assert!(!broken.owns(core::ptr::null::<u8>()));
    assert_eq!(broken.stats(), HeapStats::default());
}

#[test]
fn the_smallest_block_works() {
    let heap = heap(Heap::MIN_BLOCK, 1);
    let p = alloc(&heap, layout(100, 8)).unwrap();
    let q = alloc(&heap, layout(20_000, 8)).unwrap();
    // SAFETY: allocated above.
    unsafe {
        free(&heap, p, layout(100, 8));
        free(&heap, q, layout(20_000, 8));
    }
}

#[test]
fn small_and_large_allocations_are_aligned_owned_and_counted() {
    let heap = heap(4 << 20, 1);
    let mut live = Vec::new();
    for (i, (size, align)) in [
        (1, 1),
        (16, 16),
        (17, 8),
        (100, 64),
        (4096, 4096),
        (32768, 8),
        (40000, 8),
        (100_000, 1 << 16),
        (8, 1 << 14),
    ]
    .into_iter()
    .enumerate()
    {
        let l = layout(size, align);
        let p = alloc(&heap, l).unwrap();
        assert_eq!(p.as_ptr().addr() % align, 0, "{l:?}");
        assert!(heap.owns(p.as_ptr()));
        fill(p, size, i as u8);
        live.push((p, l, i as u8));
    }
    for &(p, l, seed) in &live {
        check(p, l.size(), seed);
    }
    let stats = heap.stats();
    assert!(stats.in_use >= live.iter().map(|x| x.1.size()).sum::<usize>());
    assert!(stats.committed >= stats.in_use);
    assert_eq!(stats.blocks, 1);
    for (p, l, _) in live {
        // SAFETY: allocated above with `l`.
        unsafe { free(&heap, p, l) };
    }
    assert_eq!(heap.stats().in_use, 0);
}

#[test]
fn freed_memory_is_reused() {
    let heap = heap(1 << 20, 1);
    let l = layout(64, 8);
    let p = alloc(&heap, l).unwrap();
    // SAFETY: allocated above.
    unsafe { free(&heap, p, l) };
    assert_eq!(alloc(&heap, l), Some(p), "LIFO reuse within the slab");
    let big = layout(200_000, 8);
    let q = alloc(&heap, big).unwrap();
    // SAFETY: allocated above.
    unsafe { free(&heap, q, big) };
    assert_eq!(alloc(&heap, big), Some(q), "the run is reused");
}

/// A full slab that is retired comes back into use once an eighth of its
/// objects is free, not on its first free: until then fresh slabs serve,
/// and the counts stay exact throughout.
#[test]
fn a_retired_slab_comes_back_once_an_eighth_of_it_is_free() {
    let heap = heap(1 << 20, 1);
    let l = layout(1024, 8);
    let per_slab = slab::GROUP / 1024;
    let eighth = per_slab / 8;
    let group = |p: NonNull<u8>| p.as_ptr().addr() / slab::GROUP;
    let in_use = |heap: &Heap| heap.stats().in_use / 1024;
    let retired: Vec<NonNull<u8>> = (0..per_slab).map(|_| alloc(&heap, l).unwrap()).collect();
    let a = group(retired[0]);
    assert!(retired.iter().all(|&p| group(p) == a), "one slab");
    // The next slab fills up, and the first is retired on the way.
    let mut live: Vec<NonNull<u8>> = (0..per_slab).map(|_| alloc(&heap, l).unwrap()).collect();
    assert!(live.iter().all(|&p| group(p) != a));
    for &p in &retired[..eighth - 1] {
        // SAFETY: allocated above, freed once.
        unsafe { free(&heap, p, l) };
    }
    assert_eq!(in_use(&heap), 2 * per_slab - (eighth - 1));
    live.push(alloc(&heap, l).unwrap());
    assert_ne!(
        group(live[per_slab]),
        a,
        "a fresh slab, not the retired one"
    );
    // SAFETY: as above.
    unsafe { free(&heap, retired[eighth - 1], l) };
    assert_eq!(in_use(&heap), 2 * per_slab - eighth + 1);
    // Once the current slab runs out, the freed objects are reused.
    let mut reused = 0;
    for _ in 0..per_slab {
        let p = alloc(&heap, l).unwrap();
        if group(p) == a {
            assert!(retired[..eighth].contains(&p));
            reused += 1;
        }
        live.push(p);
    }
    assert!(reused > 0, "the slab came back into use");
    assert_eq!(in_use(&heap), per_slab - eighth + live.len());
    for p in live.into_iter().chain(retired[eighth..].iter().copied()) {
        // SAFETY: allocated above, freed once.
        unsafe { free(&heap, p, l) };
    }
    assert_eq!(heap.stats().in_use, 0);
}

#[test]
fn churn_of_ten_times_the_capacity_never_exhausts() {
    // Room for the live set: up to 64 allocations of up to 70 KB, spread over
    // most size classes, each class holding at least one 64 KiB slab.
    let capacity = if cfg!(miri) { 4 << 20 } else { 16 << 20 };
    let heap = heap(capacity, 1);
    let mut live: HashMap<usize, (NonNull<u8>, Layout, u8)> = HashMap::new();
    let mut total = 0usize;
    let mut seed = 0x1234_5678u64;
    let rounds = if cfg!(miri) { 200 } else { 200_000 };
    for round in 0..rounds {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let slot = (seed >> 33) as usize % 64;
        if let Some((p, l, tag)) = live.remove(&slot) {
            check(p, l.size(), tag);
            // SAFETY: allocated below with `l`.
            unsafe { free(&heap, p, l) };
        } else {
            // Under Miri, every byte written and checked costs: smaller sizes.
            let scale = if cfg!(miri) { 20 } else { 1 };
            let size = match (seed >> 20) % 10 {
                0 => (40_000 + (seed >> 40) as usize % 30_000) / scale,
                1..=3 => (1000 + (seed >> 40) as usize % 8000) / scale,
                _ => 1 + (seed >> 40) as usize % 500,
            };
            let l = layout(size, 1 << ((seed >> 50) % 5));
            let p = alloc(&heap, l).unwrap_or_else(|| panic!("exhausted at round {round}"));
            fill(p, size, round as u8);
            live.insert(slot, (p, l, round as u8));
            total += size;
        }
    }
    if !cfg!(miri) {
        assert!(total > 10 * capacity, "churned {total} bytes");
    }
    for (_, (p, l, tag)) in live {
        check(p, l.size(), tag);
        // SAFETY: allocated with `l`.
        unsafe { free(&heap, p, l) };
    }
    let stats = heap.stats();
    assert_eq!(stats.in_use, 0);
    assert!(stats.high_water <= capacity);
}

#[test]
fn more_blocks_open_up_to_the_limit_then_the_policy_applies() {
    // Room for a first arena and a second of twice its size.
    let heap = heap(Heap::MIN_BLOCK, 3);
    let l = layout(100_000, 8);
    let mut held = Vec::new();
    while let Some(p) = alloc(&heap, l) {
        held.push(p);
    }
    assert_eq!(heap.stats().blocks, 2);
    let reserved: usize = heap.blocks().iter().map(|b| b.capacity()).sum();
    assert_eq!(reserved, 3 * Heap::MIN_BLOCK, "the limit, exactly");
    assert!(held.len() >= 3);
    assert!(held.iter().all(|p| heap.owns(p.as_ptr())));
    for p in held {
        // SAFETY: allocated above.
        unsafe { free(&heap, p, l) };
    }
    assert!(alloc(&heap, l).is_some(), "freed runs are reused");

    let spilling = Heap::lazy_with(Heap::MIN_BLOCK, options())
        .limit(Heap::MIN_BLOCK)
        .spill()
        .open_now()
        .unwrap();
    let huge = layout(1 << 20, 8);
    let p = alloc(&spilling, huge).unwrap();
    assert!(!spilling.owns(p.as_ptr()));
    assert_eq!(spilling.stats().spilled, 1 << 20);
    // SAFETY: allocated above; routed back to the system.
    unsafe { free(&spilling, p, huge) };
    assert_eq!(spilling.stats().spilled, 0);
}

/// A thread whose objects another thread frees takes its slabs back once
/// they are mostly free, not on their first remote free, and of those
/// entirely free keeps one and gives the others back to the arena.
#[test]
fn slabs_freed_by_another_thread_come_back_mostly_free_and_go_back() {
    let heap = heap(4 << 20, 1);
    let l = layout(1024, 8);
    let per_slab = slab::GROUP / 1024;
    let slabs = 8;
    let group = |p: NonNull<u8>| p.as_ptr().addr() / slab::GROUP;
    let free_elsewhere = |objects: Vec<Sent>| {
        std::thread::scope(|s| {
            s.spawn(|| {
                for Sent(p) in objects {
                    // SAFETY: allocated with `l` by the main thread, handed
                    // over, freed once.
                    unsafe { free(&heap, p, l) };
                }
            });
        });
    };
    let mut first: Vec<NonNull<u8>> = (0..slabs * per_slab)
        .map(|_| alloc(&heap, l).unwrap())
        .collect();
    let groups: Vec<usize> = first.iter().map(|&p| group(p)).collect();
    // Another thread frees half of each slab: they stay retired.
    let (kept, handed): (Vec<_>, Vec<_>) =
        first.drain(..).enumerate().partition(|(i, _)| i % 2 == 0);
    free_elsewhere(handed.into_iter().map(|(_, p)| Sent(p)).collect());
    let second: Vec<NonNull<u8>> = (0..2 * per_slab)
        .map(|_| alloc(&heap, l).unwrap())
        .collect();
    let reused = second
        .iter()
        .filter(|&&p| groups.contains(&group(p)))
        .count();
    assert!(
        reused <= per_slab / 2,
        "half-live slabs wait: {reused} reused"
    );
    // Then the rest: of the slabs now entirely free, one is kept.
    free_elsewhere(kept.into_iter().map(|(_, p)| Sent(p)).collect());
    let third: Vec<NonNull<u8>> = (0..2 * per_slab)
        .map(|_| alloc(&heap, l).unwrap())
        .collect();
    let live = second.len() + third.len();
    assert_eq!(heap.stats().in_use, live * 1024);
    assert!(
        heap.stats().held <= (live / per_slab + 3) * slab::GROUP,
        "{:?}",
        heap.stats()
    );
    for p in second.into_iter().chain(third) {
        // SAFETY: allocated above, freed once.
        unsafe { free(&heap, p, l) };
    }
    assert_eq!(heap.stats().in_use, 0);
}

#[test]
fn large_allocations_grow_and_shrink_in_place() {
    let heap = heap(4 << 20, 1);
    let small = layout(40_000, 8);
    let p = alloc(&heap, small).unwrap();
    fill(p, 40_000, 7);
    let bigger = layout(400_000, 8);
    // SAFETY: allocated with `small`.
    let grown = unsafe { crate::alloc::reallocate(&heap, p, small, bigger, false) }.unwrap();
    assert_eq!(grown.cast::<u8>(), p, "the run after it was free");
    check(p, 40_000, 7);
    let tiny = layout(10, 8);
    // SAFETY: allocated with `bigger`.
    let shrunk = unsafe { crate::alloc::reallocate(&heap, p, bigger, tiny, false) }.unwrap();
    assert_eq!(shrunk.cast::<u8>(), p);
    assert_eq!(heap.stats().in_use, UNIT);
    // SAFETY: allocated with `tiny`.
    unsafe { free(&heap, p, tiny) };
    assert_eq!(heap.stats().in_use, 0);

    // A small object grows in place inside its class, and moves past it.
    let a = layout(33, 8);
    let q = alloc(&heap, a).unwrap();
    // SAFETY: allocated with `a`; 40 is the class of 33.
    let same = unsafe { crate::alloc::reallocate(&heap, q, a, layout(40, 8), false) }.unwrap();
    assert_eq!(same.cast::<u8>(), q);
    // SAFETY: now allocated with (40, 8).
    let moved =
        unsafe { crate::alloc::reallocate(&heap, q, layout(40, 8), layout(41, 8), false) }.unwrap();
    assert_ne!(moved.cast::<u8>(), q);
    // SAFETY: allocated with (41, 8).
    unsafe { free(&heap, moved.cast(), layout(41, 8)) };
}

#[test]
fn frees_from_other_threads_are_reused() {
    let heap = heap(2 << 20, 1);
    let l = layout(48, 8);
    let rounds = if cfg!(miri) { 3 } else { 200 };
    let batch = if cfg!(miri) { 50 } else { 5000 };
    let (to_consumer, from_producer) = std::sync::mpsc::sync_channel::<Vec<Sent>>(2);
    std::thread::scope(|s| {
        let heap = &heap;
        let consumer = s.spawn(move || {
            for _ in 0..rounds {
                let pointers = from_producer.recv().unwrap();
                for Sent(p) in pointers {
                    check(p, 48, (p.as_ptr().addr() % 251) as u8);
                    // SAFETY: the producer allocated it with `l` and gave it up.
                    unsafe { free(heap, p, l) };
                }
            }
        });
        for _ in 0..rounds {
            let pointers: Vec<Sent> = (0..batch)
                .map(|_| {
                    let p =
                        alloc(heap, l).expect("remote frees are reused, so this never runs out");
                    fill(p, 48, (p.as_ptr().addr() % 251) as u8);
                    Sent(p)
                })
                .collect();
            to_consumer.send(pointers).unwrap();
        }
        // Joining waits for the thread's exit hook too (the scope alone
        // would only wait for its closure), so the stats below are settled.
        consumer.join().unwrap();
    });
    let stats = heap.stats();
    assert_eq!(stats.in_use, 0);
    if !cfg!(miri) {
        // 200 rounds of 5000 × 48 bytes is 48 MB through a 2 MiB heap.
        assert!(stats.high_water <= 2 << 20);
        assert_eq!(stats.blocks, 1);
    }
}

#[test]
fn an_exiting_threads_slabs_are_adopted_or_released() {
    let heap = heap(1 << 20, 1);
    let l = layout(1000, 8);
    // A thread allocates and exits, leaving some objects alive.
    let survivors: Vec<Sent> = std::thread::scope(|s| {
        s.spawn(|| {
            let all: Vec<_> = (0..100).map(|_| alloc(&heap, l).unwrap()).collect();
            for (i, p) in all.iter().enumerate() {
                fill(*p, 1000, i as u8);
            }
            let (keep, drop_now): (Vec<_>, Vec<_>) =
                all.into_iter().enumerate().partition(|(i, _)| i % 10 == 0);
            for (_, p) in drop_now {
                // SAFETY: allocated above.
                unsafe { free(&heap, p, l) };
            }
            keep.into_iter()
                .map(|(i, p)| {
                    check(p, 1000, i as u8);
                    Sent(p)
                })
                .collect()
        })
        .join()
        .unwrap()
    });
    // Its slabs are abandoned, holding the survivors; this thread frees them
    // and allocates again, so the memory is reused rather than lost.
    let committed = heap.stats().committed;
    for Sent(p) in survivors {
        // SAFETY: allocated with `l` by the exited thread.
        unsafe { free(&heap, p, l) };
    }
    let again: Vec<_> = (0..100).map(|_| alloc(&heap, l).unwrap()).collect();
    assert!(
        heap.stats().committed <= committed + GROUP,
        "reused, not grown"
    );
    for p in again {
        // SAFETY: allocated above.
        unsafe { free(&heap, p, l) };
    }
    assert_eq!(heap.stats().in_use, 0);
}

/// The slabs of a thread that exited with objects out go back to their
/// arena as soon as the last of those objects is freed: nothing is held
/// once every object is, without waiting for the arena to fill.
#[test]
fn an_exited_threads_slabs_go_back_when_their_last_object_is_freed() {
    let heap = heap(4 << 20, 1);
    let sizes = [24, 200, 3000];
    let count = if cfg!(miri) { 40 } else { 400 };
    let out: Vec<(Sent, Layout)> = std::thread::scope(|s| {
        s.spawn(|| {
            let mut out = Vec::new();
            for (k, &size) in sizes.iter().enumerate() {
                for i in 0..count {
                    let l = layout(size, 8);
                    let p = alloc(&heap, l).unwrap();
                    fill(p, size, (k + i) as u8);
                    out.push((Sent(p), l));
                }
            }
            out
        })
        .join()
        .unwrap()
    });
    let held = heap.stats().held;
    assert!(held >= sizes.len() * GROUP, "abandoned slabs hold {held}");
    for (Sent(p), l) in out {
        // SAFETY: allocated with `l` by the exited thread.
        unsafe { free(&heap, p, l) };
    }
    let stats = heap.stats();
    assert_eq!((stats.in_use, stats.held), (0, 0), "{stats:?}");
}

/// Threads exit while others free their objects and others still adopt
/// their slabs: every object keeps its bytes, and once all threads are gone
/// and every object is freed, nothing is held (no slab both adopted and
/// released, none lost).
#[test]
fn abandoned_slabs_are_adopted_or_released_while_frees_race() {
    let heap = heap(8 << 20, 2);
    let rounds = if cfg!(miri) { 3 } else { 200 };
    let per = if cfg!(miri) { 30 } else { 300 };
    let l = layout(48, 8);
    let (tx, rx) = std::sync::mpsc::channel::<Vec<Sent>>();
    std::thread::scope(|s| {
        // The consumer frees what producers made: half of each batch at
        // once, while its producer exits, and the other half once the next
        // producer runs (its slabs abandoned by then, and being adopted).
        let heap_ref = &heap;
        let consumer = s.spawn(move || {
            let free_all = |batch: Vec<(usize, Sent)>| {
                for (i, Sent(p)) in batch {
                    check(p, 48, i as u8);
                    // SAFETY: allocated with `l` by a producer, sent here.
                    unsafe { free(heap_ref, p, l) };
                }
            };
            let mut later = Vec::new();
            for batch in rx {
                let (now, rest): (Vec<_>, Vec<_>) =
                    batch.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
                free_all(now);
                free_all(std::mem::replace(&mut later, rest));
            }
            free_all(later);
        });
        for _ in 0..rounds {
            let tx = tx.clone();
            let producer = s.spawn(move || {
                // Churn first (adopting what earlier producers left), then
                // hand a batch over and exit with it out.
                let mine: Vec<_> = (0..per).map(|_| alloc(heap_ref, l).unwrap()).collect();
                let batch: Vec<Sent> = (0..per)
                    .map(|i| {
                        let p = alloc(heap_ref, l).unwrap();
                        fill(p, 48, i as u8);
                        Sent(p)
                    })
                    .collect();
                for p in mine {
                    // SAFETY: allocated above.
                    unsafe { free(heap_ref, p, l) };
                }
                tx.send(batch).unwrap();
            });
            producer.join().unwrap();
        }
        drop(tx);
        consumer.join().unwrap();
    });
    let stats = heap.stats();
    assert_eq!((stats.in_use, stats.held), (0, 0), "{stats:?}");
}

/// A thread that filled slabs and handed every object over, then stopped
/// allocating (a producer that now waits), does not keep that memory: the
/// free that brings the last object of a retired slab back releases it.
#[test]
fn retired_slabs_emptied_by_other_threads_go_back_while_their_owner_waits() {
    let heap = heap(4 << 20, 1);
    let l = layout(1024, 8);
    let per_slab = slab::GROUP / 1024;
    let slabs = if cfg!(miri) { 3 } else { 8 };
    let mut objects: Vec<Sent> = (0..slabs * per_slab)
        .map(|i| {
            let p = alloc(&heap, l).unwrap();
            fill(p, 1024, i as u8);
            Sent(p)
        })
        .collect();
    assert_eq!(heap.stats().held, slabs * slab::GROUP);
    // The owner frees a few objects of each slab itself (too few to take a
    // retired slab back into use); the rest go to another thread.
    for at in (0..slabs).rev() {
        for Sent(p) in objects.drain(at * per_slab..at * per_slab + 2) {
            // SAFETY: allocated above, freed once.
            unsafe { free(&heap, p, l) };
        }
    }
    let objects: Vec<(usize, Sent)> = objects
        .into_iter()
        .enumerate()
        .map(|(k, sent)| (k + 2 * (k / (per_slab - 2) + 1), sent))
        .collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            for (i, Sent(p)) in objects {
                check(p, 1024, i as u8);
                // SAFETY: allocated with `l` by the main thread, handed over,
                // freed once.
                unsafe { free(&heap, p, l) };
            }
        });
    });
    // The last slab is still this thread's current one (not retired); the
    // others went back to the arena.
    assert_eq!(heap.stats().held, slab::GROUP, "{:?}", heap.stats());
    // And this thread allocates normally again.
    let again: Vec<_> = (0..2 * per_slab)
        .map(|_| alloc(&heap, l).unwrap())
        .collect();
    for p in again {
        // SAFETY: allocated above.
        unsafe { free(&heap, p, l) };
    }
    assert_eq!(heap.stats().in_use, 0);
}

/// An owner churning its slabs (retiring them, reviving them, freeing into
/// them) while another thread frees half of its objects, and claims the
/// retired slabs it empties: every object keeps its bytes, and once both
/// threads are done and have exited, nothing is held.
#[test]
fn retired_slabs_are_revived_or_claimed_while_frees_race() {
    let heap = heap(8 << 20, 2);
    let rounds = if cfg!(miri) { 4 } else { 400 };
    let per = if cfg!(miri) { 40 } else { 400 };
    let l = layout(256, 8);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Sent>>(4);
    std::thread::scope(|s| {
        let heap = &heap;
        s.spawn(move || {
            for batch in rx {
                for (i, Sent(p)) in batch.into_iter().enumerate() {
                    check(p, 256, i as u8);
                    // SAFETY: allocated with `l` by the owner, sent here.
                    unsafe { free(heap, p, l) };
                }
            }
        });
        s.spawn(move || {
            let mut mine = Vec::new();
            for round in 0..rounds {
                let batch: Vec<Sent> = (0..per)
                    .map(|i| {
                        let p = alloc(heap, l).unwrap();
                        fill(p, 256, i as u8);
                        Sent(p)
                    })
                    .collect();
                mine.extend((0..per / 4).map(|_| alloc(heap, l).unwrap()));
                if round % 3 == 0 {
                    for p in mine.drain(..) {
                        // SAFETY: allocated above.
                        unsafe { free(heap, p, l) };
                    }
                }
                tx.send(batch).unwrap();
            }
            for p in mine {
                // SAFETY: allocated above.
                unsafe { free(heap, p, l) };
            }
        });
    });
    let stats = heap.stats();
    assert_eq!((stats.in_use, stats.held), (0, 0), "{stats:?}");
}

#[test]
fn threads_churning_one_heap_keep_their_data() {
    let heap = heap(8 << 20, 2);
    let threads = 4;
    let rounds = if cfg!(miri) { 30 } else { 50_000 };
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for t in 0..threads {
            let (heap, barrier) = (&heap, &barrier);
            handles.push(s.spawn(move || {
                barrier.wait();
                let mut live: Vec<(NonNull<u8>, Layout, u8)> = Vec::new();
                for round in 0..rounds {
                    let size = 1 + (round * 37 + t * 101) % if cfg!(miri) { 300 } else { 3000 };
                    let l = layout(size, 8);
                    let tag = (round + t) as u8;
                    let p = alloc(heap, l).unwrap();
                    fill(p, size, tag);
                    live.push((p, l, tag));
                    if live.len() > 64 {
                        let (p, l, tag) = live.swap_remove((round * 7) % live.len());
                        check(p, l.size(), tag);
                        // SAFETY: allocated above with `l`.
                        unsafe { free(heap, p, l) };
                    }
                }
                for (p, l, tag) in live {
                    check(p, l.size(), tag);
                    // SAFETY: allocated above with `l`.
                    unsafe { free(heap, p, l) };
                }
            }));
        }
        // As in `frees_from_other_threads_are_reused`: wait for exit hooks.
        for handle in handles {
            handle.join().unwrap();
        }
    });
    assert_eq!(heap.stats().in_use, 0);
}

/// The fast paths read copies of core fields kept in the `Heap` value: they
/// must stay right when the value moves, and serve the next allocations.
#[test]
fn a_moved_heap_keeps_serving_from_its_caches() {
    let small = layout(64, 8);
    let first = heap(Heap::MIN_BLOCK, 1);
    let a = alloc(&first, small).unwrap();
    fill(a, 64, 1);
    let moved = Box::new(first);
    let b = alloc(&moved, small).unwrap();
    fill(b, 64, 2);
    assert!(moved.owns(a.as_ptr()) && moved.owns(b.as_ptr()));
    assert_eq!(moved.stats().in_use, 128);
    check(a, 64, 1);
    // SAFETY: both came from this heap (before and after the move).
    unsafe {
        free(&moved, a, small);
        free(&moved, b, small);
    }
    assert_eq!(moved.stats().in_use, 0);
    // Freed objects are reused: the next one is one of the two.
    let c = alloc(&moved, small).unwrap();
    assert!(c == a || c == b);
    // SAFETY: as above.
    unsafe { free(&moved, c, small) };
}

/// A thread's tag passes to a later thread when it exits; the later thread
/// then uses the same cache, through the copy the first one made.
#[test]
fn threads_reusing_a_tag_reuse_its_cache() {
    let heap = heap(Heap::MIN_BLOCK, 1);
    let small = layout(48, 16);
    for round in 0..20u8 {
        std::thread::scope(|s| {
            s.spawn(|| {
                let objects: Vec<_> = (0..100).map(|_| alloc(&heap, small).unwrap()).collect();
                for &object in &objects {
                    fill(object, 48, round);
                }
                for object in objects {
                    check(object, 48, round);
                    // SAFETY: from this heap with this layout.
                    unsafe { free(&heap, object, small) };
                }
            });
        });
    }
    assert_eq!(heap.stats().in_use, 0);
}

#[test]
fn a_heap_value_is_about_eight_kib() {
    // The documented size: a cache pointer per thread slot, and the rest.
    assert!(size_of::<Heap>() >= SLOTS * size_of::<usize>());
    assert!(size_of::<Heap>() < 9 << 10, "{}", size_of::<Heap>());
}

/// A request larger than the limit leaves for any arena fails (or spills)
/// at once, without opening every arena the limit allows first.
#[test]
fn a_request_larger_than_the_limit_fails_at_once() {
    let failing = Heap::lazy_with(Heap::MIN_BLOCK, options())
        .limit(4 * Heap::MIN_BLOCK)
        .open_now()
        .unwrap();
    assert!(alloc(&failing, layout(4 << 20, 8)).is_none());
    assert_eq!(failing.stats().blocks, 1, "no arena opened for it");
    let spilling = Heap::lazy_with(Heap::MIN_BLOCK, options())
        .limit(4 * Heap::MIN_BLOCK)
        .spill()
        .open_now()
        .unwrap();
    let p = alloc(&spilling, layout(4 << 20, 8)).unwrap();
    assert!(!spilling.owns(p.as_ptr()));
    assert_eq!(spilling.stats().blocks, 1);
    assert_eq!(spilling.stats().spilled, 4 << 20);
    // SAFETY: allocated just above with this layout.
    unsafe { free(&spilling, p, layout(4 << 20, 8)) };
    assert_eq!(spilling.stats().spilled, 0);
}

/// Without a limit, a request larger than every arena so far opens one that
/// holds it, and arenas double as the heap grows.
#[test]
fn without_a_limit_the_heap_grows_past_its_first_arena() {
    let heap = Heap::lazy_with(Heap::MIN_BLOCK, options())
        .open_now()
        .unwrap();
    // Under Miri, where every byte checked is slow, a request just past the
    // first arena and fewer, smaller ones after it.
    let big = layout(if cfg!(miri) { 640 << 10 } else { 24 << 20 }, 64);
    let p = alloc(&heap, big).unwrap();
    fill(p, big.size(), 7);
    assert!(heap.owns(p.as_ptr()));
    assert_eq!(heap.stats().blocks, 2);
    let mut small = Vec::new();
    let l = layout(if cfg!(miri) { 40_000 } else { 200_000 }, 8);
    for i in 0..if cfg!(miri) { 4 } else { 64 } {
        let q = alloc(&heap, l).unwrap();
        fill(q, l.size(), i as u8);
        small.push(q);
    }
    for (i, q) in small.into_iter().enumerate() {
        check(q, l.size(), i as u8);
        // SAFETY: allocated above with `l`.
        unsafe { free(&heap, q, l) };
    }
    check(p, big.size(), 7);
    // SAFETY: allocated above with `big`.
    unsafe { free(&heap, p, big) };
    let sizes: Vec<usize> = heap.blocks().iter().map(|b| b.capacity()).collect();
    assert!(
        sizes.windows(2).all(|w| w[1] >= w[0]),
        "arenas do not shrink: {sizes:?}"
    );
    assert!(sizes[1] >= big.size(), "{sizes:?}");
}

#[test]
fn live_data_that_looks_like_the_freed_mark_is_freed_normally() {
    // An object whose second word the program happened to set to exactly
    // the mark a freed object carries takes the checked path, which walks
    // the slab's lists, finds it live, and frees it: no false abort, and the
    // object comes back.
    let heap = heap(Heap::MIN_BLOCK, 1);
    let layout = layout(64, 8);
    let keep = alloc(&heap, layout).unwrap();
    let object = alloc(&heap, layout).unwrap();
    // SAFETY: a live 64-byte allocation; its second word is ours to write.
    unsafe {
        object
            .as_ptr()
            .add(8)
            .cast::<u64>()
            .write_unaligned(slab::mark(object))
    };
    // SAFETY: allocated above with `layout`, freed once.
    unsafe { free(&heap, object, layout) };
    let again = alloc(&heap, layout).unwrap();
    assert_eq!(again, object, "the freed object is reused first");
    // SAFETY: as above.
    unsafe {
        free(&heap, again, layout);
        free(&heap, keep, layout);
    }
}
