//! Streaming bandwidth: writing and reading 64 MiB in a Block (base and
//! huge pages) and in its peers' memory (part of `support`).

use super::*;

pub const STREAM: usize = 64 << 20;

/// Writes (or reads) every u64 of `STREAM` bytes at `p`, volatile.
fn stream(p: *mut u64, write: bool) {
    let n = STREAM / 8;
    if write {
        for i in 0..n {
            // SAFETY: callers pass STREAM bytes, u64-aligned.
            unsafe { p.add(i).write_volatile(i as u64) };
        }
    } else {
        let mut sum = 0u64;
        for i in 0..n {
            // SAFETY: as above.
            sum = sum.wrapping_add(unsafe { p.add(i).read_volatile() });
        }
        black_box(sum);
    }
}

/// 64 MiB held by each method, set up once per process and faulted in.
fn stream_buffers() -> &'static [(&'static str, usize)] {
    static BUFFERS: std::sync::OnceLock<Vec<(&'static str, usize)>> = std::sync::OnceLock::new();
    BUFFERS.get_or_init(|| {
        let block = Box::leak(Box::new(Block::open_with(STREAM, &OPTIONS).unwrap()));
        let vec = Box::leak(vec![1u64; STREAM / 8].into_boxed_slice());
        let layout = Layout::from_size_align(STREAM, 64).unwrap();
        // SAFETY: non-zero layouts; kept for the process's life.
        let (system, mi) = unsafe { (System.alloc(layout), MiMalloc.alloc(layout)) };
        touch(system, STREAM);
        touch(mi, STREAM);
        let mapped = mmap(STREAM);
        touch(mapped, STREAM);
        let locked = mmap(STREAM);
        mlock(locked, STREAM);
        vec![
            ("unimem", block.as_ptr() as usize),
            ("system", system as usize),
            ("mimalloc", mi as usize),
            ("Vec", vec.as_mut_ptr() as usize),
            ("mmap", mapped as usize),
            ("mmap+mlock", locked as usize),
        ]
    })
}

/// A huge-page Block of 64 MiB, set up once, if the pool has the pages.
fn huge_stream_buffer() -> Option<usize> {
    static BUFFER: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *BUFFER.get_or_init(|| {
        let block = OPTIONS.pages(Pages::Huge2M).open(STREAM).ok()?;
        Some(Box::leak(Box::new(block)).as_ptr() as usize)
    })
}

/// Streaming over 64 MiB of a huge-page Block, against the same peers as
/// `bandwidth`; `None` without the huge pages.
pub fn bandwidth_huge(write: bool) -> Option<Vec<(&'static str, Subject)>> {
    let huge = huge_stream_buffer()?;
    let mut subjects = bandwidth(write);
    subjects[0] = ("unimem", streaming(huge, write));
    Some(subjects)
}

fn streaming(p: usize, write: bool) -> Subject {
    Box::new(move |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            stream(p as *mut u64, write);
        }
        start.elapsed()
    })
}

/// Streaming over 64 MiB held by each method.
pub fn bandwidth(write: bool) -> Vec<(&'static str, Subject)> {
    stream_buffers()
        .iter()
        .map(|&(name, p)| -> (&'static str, Subject) {
            (
                name,
                Box::new(move |iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        stream(p as *mut u64, write);
                    }
                    start.elapsed()
                }),
            )
        })
        .collect()
}
