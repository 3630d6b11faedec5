//! Getting memory: a Block opened lazily or with every page faulted in (and
//! pinned), against malloc, mimalloc, `mmap` and `mmap` + `mlock` (part of
//! `support`).

use super::*;

pub const INIT: usize = 16 << 20;

/// Getting 16 MiB without touching it.
pub fn init_lazy() -> Vec<(&'static str, Subject)> {
    vec![
        (
            "unimem",
            Box::new(|iters| {
                let options = OPTIONS.prefault(false);
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let block = black_box(Block::open_with(INIT, &options).unwrap());
                    total += start.elapsed();
                    drop(block);
                }
                total
            }),
        ),
        (
            "system",
            Box::new(|iters| {
                let layout = Layout::from_size_align(INIT, 4096).unwrap();
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    // SAFETY: a non-zero layout; freed below.
                    let p = black_box(unsafe { System.alloc(layout) });
                    total += start.elapsed();
                    // SAFETY: allocated above.
                    unsafe { System.dealloc(p, layout) };
                }
                total
            }),
        ),
        (
            "mmap",
            Box::new(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let p = black_box(mmap(INIT));
                    total += start.elapsed();
                    munmap(p, INIT);
                }
                total
            }),
        ),
    ]
}

/// Getting `bytes` with every page faulted in (and, where the method pins,
/// locked): a Block (whose open populates 64 MiB and more from several
/// threads), malloc or mimalloc and a write per page, `mmap` and a write per
/// page, `mmap` and `mlock` (one thread).
pub fn init_warm(bytes: usize) -> Vec<(&'static str, Subject)> {
    let layout = Layout::from_size_align(bytes, 4096).unwrap();
    let with_global = move |alloc: &'static dyn GlobalAlloc| -> Subject {
        Box::new(move |iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                // SAFETY: a non-zero layout; freed below.
                let p = unsafe { alloc.alloc(layout) };
                touch(p, bytes);
                total += start.elapsed();
                // SAFETY: allocated above.
                unsafe { alloc.dealloc(p, layout) };
            }
            total
        })
    };
    vec![
        ("unimem", open_warm(bytes, OPTIONS)),
        ("system", with_global(&SYSTEM)),
        ("mimalloc", with_global(&MIMALLOC)),
        (
            "mmap",
            Box::new(move |iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let p = mmap(bytes);
                    touch(p, bytes);
                    total += start.elapsed();
                    munmap(p, bytes);
                }
                total
            }),
        ),
        ("mmap+mlock", mmap_mlock(bytes, 0)),
    ]
}

/// Opening a Block of `bytes`, all committed, with `options`.
fn open_warm(bytes: usize, options: BlockOptions<'static>) -> Subject {
    Box::new(move |iters| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let start = Instant::now();
            let block = black_box(Block::open_with(bytes, &options).unwrap());
            total += start.elapsed();
            drop(block);
        }
        total
    })
}

/// `mmap` (with `flags` added) and `mlock` of `bytes`, which faults every
/// page in on one thread.
fn mmap_mlock(bytes: usize, flags: libc::c_int) -> Subject {
    Box::new(move |iters| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let start = Instant::now();
            let p = mmap_with(bytes, flags);
            mlock(p, bytes);
            total += start.elapsed();
            munmap(p, bytes);
        }
        total
    })
}

/// As `init_warm`, with transparent huge pages not asked for: a Block of
/// 4 KiB pages, populated from several threads, against `mmap` and `mlock`
/// on one (what the parallel populate alone gains).
pub fn init_warm_small_pages(bytes: usize) -> Vec<(&'static str, Subject)> {
    vec![
        ("unimem", open_warm(bytes, OPTIONS.huge_pages(false))),
        ("mmap+mlock", mmap_mlock(bytes, 0)),
    ]
}

/// Whether the system's pool has `bytes` of free 2 MiB pages.
pub fn huge_pages_free(bytes: usize) -> bool {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()
        .and_then(|free| free.trim().parse::<usize>().ok())
        .is_some_and(|free| free * (2 << 20) >= bytes)
}

/// As `init_warm`, with explicit 2 MiB pages: a huge-page Block against
/// `mmap(MAP_HUGETLB)` and `mlock`.
pub fn init_warm_huge(bytes: usize) -> Vec<(&'static str, Subject)> {
    vec![
        ("unimem", open_warm(bytes, OPTIONS.pages(Pages::Huge2M))),
        (
            "mmap+mlock",
            mmap_mlock(bytes, libc::MAP_HUGETLB | libc::MAP_HUGE_2MB),
        ),
    ]
}
