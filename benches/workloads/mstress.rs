//! mstress (Daan Leijen's stress test from mimalloc, `bench/mstress/mstress.c`),
//! as mimalloc-bench runs it: `mstress <threads> 50 25`.
//!
//! 25 times over, `threads` threads (the main thread as thread 0) each run a
//! loop of allocations of `2^k` words filled with a check pattern: about half
//! go to a local array, a quarter are retained to the thread's end, two in
//! three steps free a random local one (checking its pattern), and one step
//! in four swaps a random local pointer with a random slot of a shared
//! 1000-entry transfer array (an atomic exchange), so objects move between
//! threads and outlive the threads that made them. 2% of allocations are
//! 100×, 1000× or 10 000× larger (up to 5 MiB). Between rounds the main
//! thread frees half of the transfer array (all of it after the last). The
//! local array grows by `realloc` in steps of 100 000 pointers. The
//! throughput is allocations per second; the original reports the time.
//!
//! Follows the original: the generator (splitmix64's finalizer on a per-thread
//! state), the size distribution (`1 << (r % 5)` words local, `1 << (r % 7)`
//! retained, the 2% / 0.02% / 0.22% large ones, the 40-word exception), the
//! `chance` test (`r % 100 <= percent`, so 51%, 67%, 26%, 2%, 11%), the
//! pattern written and checked word by word, the transfer array and its
//! exchange, `(tid % 8 + 1)` times more work for some threads, the 25
//! rounds of fresh threads, the main thread's clean-up between rounds.
//! Scaled: the load per thread. The original's `100 × 50 × (tid % 8 + 1)`
//! allocations per thread grow with the thread count (72 × the one-thread
//! load at 16 threads); here the scale factor 50 becomes `800 / Σ(tid % 8 + 1)`
//! (at least 5), so the total allocations stay near those of 800 × 100 at any
//! thread count: 800 at one thread, 267 at two, 80 at four, 22 at eight,
//! 11 at sixteen (÷ 4 with `--quick`). The size of a `free` comes from the
//! object's own first word, where the pattern stores its word count.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::time::Instant;

use super::common::{ALIGN, Outcome, free, layout, malloc};

const ITER: usize = 25;
const TRANSFERS: usize = 1000;
const COOKIE: usize = 0xbf58_476d_1ce4_e5b9;
const LOAD: f64 = 800.0;

struct Shared {
    transfer: [AtomicPtr<usize>; TRANSFERS],
    allocs: AtomicU64,
    scale: usize,
}

#[inline]
fn pick(r: &mut usize) -> usize {
    let mut x = *r;
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    *r = x;
    x
}

#[inline]
fn chance(percent: usize, r: &mut usize) -> bool {
    pick(r) % 100 <= percent
}

fn alloc_items(mut items: usize, r: &mut usize) -> *mut usize {
    if chance(1, r) {
        if chance(1, r) {
            items *= 10_000; // giant
        } else if chance(10, r) {
            items *= 1000; // huge
        } else {
            items *= 100; // large
        }
    }
    if items == 40 {
        items += 1; // the original avoids a size pthreads uses
    }
    let p = malloc(items * size_of::<usize>()).cast::<usize>();
    for i in 0..items {
        // SAFETY: `p` holds `items` words.
        unsafe { p.add(i).write((items - i) ^ COOKIE) };
    }
    p
}

/// Checks the pattern and frees; null is a no-op.
fn free_items(p: *mut usize) {
    if p.is_null() {
        return;
    }
    // SAFETY: a live object from `alloc_items`: its first word holds the
    // word count, and every word the pattern.
    let items = unsafe { p.read() } ^ COOKIE;
    for i in 0..items {
        // SAFETY: as above.
        if unsafe { p.add(i).read() } ^ COOKIE != items - i {
            eprintln!("memory corruption at block {p:p} at {i}");
            std::process::abort();
        }
    }
    // SAFETY: allocated by `alloc_items` with `items` words.
    unsafe { free(p.cast(), items * size_of::<usize>()) };
}

fn stress(tid: usize, shared: &Shared) {
    let mut r = (tid + 1) * 43;
    const MAX_ITEM_SHIFT: usize = 5; // 128 bytes
    const MAX_ITEM_RETAINED_SHIFT: usize = MAX_ITEM_SHIFT + 2;
    let mut allocs = 100 * shared.scale * (tid % 8 + 1); // some threads do more
    let mut retain = allocs / 2;
    let mut count = 0u64;
    let mut data: *mut *mut usize = std::ptr::null_mut();
    let mut data_size = 0usize;
    let mut data_top = 0usize;
    let retained_bytes = retain.max(1) * size_of::<usize>();
    let retained = malloc(retained_bytes).cast::<*mut usize>();
    let mut retain_top = 0usize;

    while allocs > 0 || retain > 0 {
        if retain == 0 || (chance(50, &mut r) && allocs > 0) {
            // 50%+ allocate
            allocs -= 1;
            if data_top >= data_size {
                let old = data_size * size_of::<usize>();
                data_size += 100_000;
                let new = data_size * size_of::<usize>();
                data = if data.is_null() {
                    malloc(new).cast()
                } else {
                    // SAFETY: `data` came from `malloc(old)`.
                    let p = unsafe { std::alloc::realloc(data.cast(), layout(old, ALIGN), new) };
                    assert!(!p.is_null(), "realloc failed");
                    p.cast()
                };
            }
            let p = alloc_items(1 << (pick(&mut r) % MAX_ITEM_SHIFT), &mut r);
            // SAFETY: `data_top < data_size`.
            unsafe { data.add(data_top).write(p) };
            data_top += 1;
        } else {
            // 25% retain
            let p = alloc_items(1 << (pick(&mut r) % MAX_ITEM_RETAINED_SHIFT), &mut r);
            // SAFETY: at most `allocs / 2` are retained.
            unsafe { retained.add(retain_top).write(p) };
            retain_top += 1;
            retain -= 1;
        }
        count += 1;
        if chance(66, &mut r) && data_top > 0 {
            // 66% free a previous allocation
            let idx = pick(&mut r) % data_top;
            // SAFETY: `idx < data_top`.
            unsafe {
                free_items(data.add(idx).read());
                data.add(idx).write(std::ptr::null_mut());
            }
        }
        if chance(25, &mut r) && data_top > 0 {
            // 25% exchange a local pointer with the shared transfer array
            let data_idx = pick(&mut r) % data_top;
            let transfer_idx = pick(&mut r) % TRANSFERS;
            // SAFETY: `data_idx < data_top`.
            unsafe {
                let p = data.add(data_idx).read();
                let q = shared.transfer[transfer_idx].swap(p, Ordering::AcqRel);
                data.add(data_idx).write(q);
            }
        }
    }
    // Free everything that is left.
    for i in 0..retain_top {
        // SAFETY: `i < retain_top`.
        free_items(unsafe { retained.add(i).read() });
    }
    for i in 0..data_top {
        // SAFETY: `i < data_top`.
        free_items(unsafe { data.add(i).read() });
    }
    // SAFETY: allocated above with these sizes.
    unsafe {
        free(retained.cast(), retained_bytes);
        if !data.is_null() {
            free(data.cast(), data_size * size_of::<usize>());
        }
    }
    shared.allocs.fetch_add(count, Ordering::Relaxed);
}

/// The scale factor at this thread count: the total work near that of one
/// thread at `LOAD`.
fn scale_for(threads: usize, scale: f64) -> usize {
    let weight: usize = (0..threads).map(|t| t % 8 + 1).sum();
    ((LOAD * scale / weight as f64).round() as usize).max(5)
}

pub fn run(threads: usize, scale: f64) -> Outcome {
    let shared = Shared {
        transfer: [const { AtomicPtr::new(std::ptr::null_mut()) }; TRANSFERS],
        allocs: AtomicU64::new(0),
        scale: scale_for(threads, scale),
    };
    let start = Instant::now();
    let mut r = 43 * 43;
    for n in 0..ITER {
        std::thread::scope(|s| {
            for tid in 1..threads {
                let shared = &shared;
                s.spawn(move || stress(tid, shared));
            }
            stress(0, &shared); // the main thread runs as well
        });
        for slot in &shared.transfer {
            // Free half of the transfers, all of them after the last round.
            if chance(50, &mut r) || n + 1 == ITER {
                free_items(slot.swap(std::ptr::null_mut(), Ordering::AcqRel));
            }
        }
    }
    Outcome::new(
        shared.allocs.load(Ordering::Relaxed) as f64,
        start.elapsed(),
    )
}
