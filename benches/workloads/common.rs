//! What the ports share: the result a workload reports, `malloc`/`free` over
//! the global allocator, Wolfram Gloger's `lran2` generator (larson and
//! xmalloc-test use it), and reads of the process's resident set.

use std::alloc::{self, Layout};
use std::time::Duration;

/// What one run of a workload measured: `ops` operations in `secs` seconds,
/// the throughput being `ops / secs` in the workload's unit.
pub struct Outcome {
    pub ops: f64,
    pub secs: f64,
    /// The resident set at a moment the workload chose, in KiB; `None`: the
    /// harness reads it once the workload has returned.
    pub rss_after_kib: Option<u64>,
}

impl Outcome {
    pub fn new(ops: f64, elapsed: Duration) -> Outcome {
        Outcome {
            ops,
            secs: elapsed.as_secs_f64(),
            rss_after_kib: None,
        }
    }
}

/// The alignment the ports ask for where the C code calls `malloc`: that of
/// a pointer, what a Rust `Box<[usize]>` or `Vec<*mut T>` asks for. (`malloc`
/// itself promises 16 on x86-64 glibc; asking for 8 lets an allocator pack
/// small objects as tightly as it would for Rust code.)
pub const ALIGN: usize = 8;

/// The layout of a `malloc(size)` in these ports.
#[inline]
pub fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size.max(1), align).expect("a valid layout")
}

/// `malloc(size)` through the global allocator; aborts on failure, as the
/// C benchmarks' asserts do.
#[inline]
pub fn malloc(size: usize) -> *mut u8 {
    malloc_aligned(size, ALIGN)
}

/// An allocation of `size` bytes aligned to `align`.
#[inline]
pub fn malloc_aligned(size: usize, align: usize) -> *mut u8 {
    let layout = layout(size, align);
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc::alloc(layout) };
    if p.is_null() {
        alloc::handle_alloc_error(layout);
    }
    p
}

/// `calloc(1, size)` through the global allocator.
#[inline]
pub fn calloc_aligned(size: usize, align: usize) -> *mut u8 {
    let layout = layout(size, align);
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc::alloc_zeroed(layout) };
    if p.is_null() {
        alloc::handle_alloc_error(layout);
    }
    p
}

/// `free(p)` of a `malloc(size)`.
///
/// # Safety
///
/// `p` came from [`malloc`] with this `size` and is not used again.
#[inline]
pub unsafe fn free(p: *mut u8, size: usize) {
    // SAFETY: the caller's contract.
    unsafe { free_aligned(p, size, ALIGN) }
}

/// Frees an allocation of `size` bytes aligned to `align`.
///
/// # Safety
///
/// `p` came from [`malloc_aligned`] or [`calloc_aligned`] with this `size`
/// and `align`, and is not used again.
#[inline]
pub unsafe fn free_aligned(p: *mut u8, size: usize, align: usize) {
    // SAFETY: the caller's contract: `p` was allocated with this layout.
    unsafe { alloc::dealloc(p, layout(size, align)) }
}

/// Wolfram Gloger's small portable generator (`lran2`, after Numerical
/// Recipes), as larson and xmalloc-test use it: the same sequence for the
/// same seed.
pub struct Lran2 {
    x: i64,
    y: i64,
    v: [i64; 97],
}

const LRAN2_MAX: i64 = 714_025;
const LRAN2_IA: i64 = 1366;
const LRAN2_IC: i64 = 150_889;

impl Lran2 {
    pub fn new(seed: i64) -> Lran2 {
        let mut x = ((LRAN2_IC - seed) % LRAN2_MAX).abs();
        let mut v = [0; 97];
        for slot in &mut v {
            x = (LRAN2_IA * x + LRAN2_IC) % LRAN2_MAX;
            *slot = x;
        }
        let x = (LRAN2_IA * x + LRAN2_IC) % LRAN2_MAX;
        Lran2 { x, y: x, v }
    }

    /// The next value, in `0 .. 714025`.
    #[inline]
    pub fn next(&mut self) -> i64 {
        let j = (self.y % 97) as usize;
        self.y = self.v[j];
        self.x = (LRAN2_IA * self.x + LRAN2_IC) % LRAN2_MAX;
        self.v[j] = self.x;
        self.y
    }
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`), or 0 where
/// there is none.
pub fn proc_status_kib(field: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The resident set in pages from `/proc/self/statm`, as alloc-test's and
/// rptest's own memory samples read it (the file is opened and read each
/// time, which allocates, as `fopen` does in C).
pub fn statm_resident_pages() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}
