//! alloc-test (OLogN Technologies' allocator tester, `bench/alloc-test/`), as
//! mimalloc-bench runs it: `alloc-test 1` and `alloc-test <procs>` (at most
//! 16), the `randomPos_RandomSize` test with full memory access.
//!
//! Each thread owns a table of `2^18 / threads` slots. It first fills about
//! half of them (one random bit per slot), then runs its main loop: pick a
//! slot with an 80/20 Pareto distribution over six ranges (hot slots are
//! picked again and again), free its block if it has one (after reading all
//! of it), else allocate one and fill it. Sizes follow the tester's
//! "statistically adjusted" distribution: a power-of-two class chosen with
//! halving probability (8 B, 16 B, ... up to 1 KiB), uniform within it. At
//! the end every remaining block is read and freed. The resident set is
//! sampled 32 times through the run, as the tester does. The throughput is
//! the main loop's alloc-or-free operations per second (all threads), as the
//! tester's "made N alloc/dealloc operations in T ms".
//!
//! Follows the original: the tester's PRNG (xorshift with a multiply) and
//! its seed 41 for every thread, the slot count (`2^18 / threads`), the size
//! distribution with `maxItemSizeExp = 10`, the Pareto 80/20 table and its
//! ranges, the setup phase, the full reads and `memset`s of the `full`
//! access mode, the 32 chunks of the main loop with an RSS sample after each.
//! Scaled: the original runs 100 million operations per thread, so its work
//! grows with the thread count; here it is 12 million operations in all
//! (3 million with `--quick`), split among the threads, so each run does the
//! same work at every thread count.

use std::hint::black_box;
use std::time::Instant;

use super::common::{Outcome, free, malloc, statm_resident_pages};

const MAX_ITEMS: usize = 1 << 18;
const MAX_ITEM_SIZE_EXP: usize = 10;
const SEED: u64 = 41;
const TOTAL_OPS: f64 = 12_000_000.0;

struct Prng(u64);

impl Prng {
    #[inline]
    fn rng32(&mut self) -> u32 {
        let ret = self.0.wrapping_mul(0xd989_bcac_c137_dcd5);
        self.0 ^= self.0 >> 11;
        self.0 ^= self.0 << 31;
        self.0 ^= self.0 >> 18;
        (ret >> 32) as u32
    }

    #[inline]
    fn rng64(&mut self) -> u64 {
        let hi = u64::from(self.rng32()) << 32;
        hi + u64::from(self.rng32())
    }
}

#[inline]
fn size_with_stats_adjustment(mut rand: u64, max_size_exp: usize) -> usize {
    let exp = max_size_exp - 3;
    let class_base = (rand & ((1 << exp) - 1)) + 1;
    rand >>= exp;
    let idx = class_base.trailing_zeros() as usize + 2;
    let mask = (1u64 << idx) - 1;
    ((rand & mask) + 1 + (1 << idx)) as usize
}

const PARETO_80_20_6: [f64; 7] = [
    0.262144, 0.393216, 0.245760, 0.081920, 0.015360, 0.001536, 0.000064,
];

struct Pareto {
    ranges: [u32; 6],
    offsets: [u32; 8],
}

impl Pareto {
    fn new(items: u32) -> Pareto {
        let max = f64::from(u32::MAX);
        let mut ranges = [0u32; 6];
        ranges[0] = (max * PARETO_80_20_6[0]) as u32;
        ranges[5] = (max * (1.0 - PARETO_80_20_6[6])) as u32;
        for i in 1..5 {
            ranges[i] = ranges[i - 1].wrapping_add((max * PARETO_80_20_6[i]) as u32);
        }
        let mut offsets = [0u32; 8];
        offsets[7] = items;
        for i in 0..6 {
            offsets[i + 1] = offsets[i] + (f64::from(items) * PARETO_80_20_6[6 - i]) as u32;
        }
        Pareto { ranges, offsets }
    }

    #[inline]
    fn pick(&self, r1: u32, r2: u32) -> usize {
        let idx = self.ranges.iter().position(|&r| r1 < r).unwrap_or(6);
        let range = self.offsets[idx + 1] - self.offsets[idx];
        (self.offsets[idx] + r2 % range) as usize
    }
}

#[derive(Clone, Copy)]
#[repr(C)]
struct TestBin {
    ptr: *mut u8,
    sz: u32,
    reincarnation: u32,
}

/// Reads every byte of a block, word by word then the tail (the `full`
/// access mode's read before a free).
#[inline]
fn read_all(p: *const u8, sz: usize) -> usize {
    let mut sum = 0usize;
    let words = sz / size_of::<usize>();
    for i in 0..words {
        // SAFETY: `p` holds `sz` bytes; blocks are 8-aligned.
        sum = sum.wrapping_add(unsafe { p.cast::<usize>().add(i).read() });
    }
    for i in words * size_of::<usize>()..sz {
        // SAFETY: as above.
        sum = sum.wrapping_add(usize::from(unsafe { p.add(i).read() }));
    }
    sum
}

#[inline]
fn alloc_filled(sz: usize) -> *mut u8 {
    let p = malloc(sz);
    // SAFETY: `p` holds `sz` bytes.
    unsafe { p.write_bytes(sz as u8, sz) };
    p
}

/// One thread of `randomPos_RandomSize` with full access.
fn random_pos_random_size(iter_count: usize, max_items: usize) {
    let pareto = Pareto::new(max_items as u32);
    let bins_bytes = max_items * size_of::<TestBin>();
    let bins = malloc(bins_bytes).cast::<TestBin>();
    // SAFETY: `bins` holds `max_items` bins; null pointers and zeros are a
    // valid TestBin.
    unsafe { bins.write_bytes(0, max_items) };
    // SAFETY: as above, now initialized.
    let bins = unsafe { std::slice::from_raw_parts_mut(bins, max_items) };
    let mut rng = Prng(SEED);
    let mut dummy = 0usize;
    let mut rss_max = 0;

    // Setup: about half the slots filled.
    for i in 0..max_items / 32 {
        let rand = rng.rng32();
        for j in 0..32 {
            if (rand >> j) & 1 != 0 {
                let sz = size_with_stats_adjustment(rng.rng64(), MAX_ITEM_SIZE_EXP);
                let bin = &mut bins[i * 32 + j];
                bin.sz = sz as u32;
                bin.ptr = alloc_filled(sz);
            }
        }
    }
    rss_max = rss_max.max(statm_resident_pages());

    // Main loop, in 32 chunks with an RSS sample after each.
    for _ in 0..32 {
        for _ in 0..iter_count >> 5 {
            let r1 = rng.rng32();
            let r2 = rng.rng32();
            let bin = &mut bins[pareto.pick(r1, r2)];
            if !bin.ptr.is_null() {
                let sz = bin.sz as usize;
                dummy = dummy.wrapping_add(read_all(bin.ptr, sz));
                // SAFETY: allocated by `alloc_filled(sz)`.
                unsafe { free(bin.ptr, sz) };
                bin.ptr = std::ptr::null_mut();
            } else {
                let sz = size_with_stats_adjustment(rng.rng64(), MAX_ITEM_SIZE_EXP);
                bin.sz = sz as u32;
                bin.ptr = alloc_filled(sz);
            }
        }
        rss_max = rss_max.max(statm_resident_pages());
    }

    // Exit: read and free what is left.
    for bin in bins.iter() {
        if !bin.ptr.is_null() {
            let sz = bin.sz as usize;
            dummy = dummy.wrapping_add(read_all(bin.ptr, sz));
            // SAFETY: allocated by `alloc_filled(sz)`.
            unsafe { free(bin.ptr, sz) };
        }
    }
    // SAFETY: allocated above with `bins_bytes`.
    unsafe { free(bins.as_mut_ptr().cast(), bins_bytes) };
    black_box((dummy, rss_max));
}

pub fn run(threads: usize, scale: f64) -> Outcome {
    let max_items = MAX_ITEMS / threads;
    // A multiple of 32: the main loop runs in 32 chunks.
    let iter_count = ((TOTAL_OPS * scale) as usize / threads) & !31;
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(move || random_pos_random_size(iter_count, max_items));
        }
    });
    Outcome::new((iter_count * threads) as f64, start.elapsed())
}
