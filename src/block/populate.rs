//! Faulting in large commits from several threads.
//!
//! Populating pages is mostly zeroing them, which one core does at a few
//! GB/s; page faults on one process take the address space's lock in shared
//! mode, so several threads fault disjoint ranges in at once. Explicit opens
//! and commits ([`Block::open`](super::Block::open),
//! [`Region::commit`](super::Region::commit)) of at least [`PARALLEL_MIN`]
//! bytes split the range into one part per thread, up to the machine's
//! cores, [`MAX_THREADS`], and one thread per [`PER_THREAD`] bytes. Growth
//! inside an allocator never does: spawning a thread allocates.

use core::ptr::NonNull;

use super::{COMMIT_STEP, imp};
use crate::Error;

/// Commits below this populate on the committing thread.
pub(crate) const PARALLEL_MIN: usize = 64 << 20;
/// The most threads one commit uses.
pub(crate) const MAX_THREADS: usize = 16;
/// Bytes per thread, at least.
pub(crate) const PER_THREAD: usize = 16 << 20;

/// How many threads populate `len` bytes.
fn threads(len: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.min(MAX_THREADS).min(len / PER_THREAD).max(1)
}

/// Whether populating `len` bytes is worth more than one thread here.
pub(crate) fn worth_threads(len: usize) -> bool {
    cfg!(all(target_os = "linux", not(miri))) && len >= PARALLEL_MIN && threads(len) > 1
}

/// Populates `from..to` of the reservation at `base` from several threads.
///
/// # Safety
/// `from..to` is mapped and nothing else refers to it.
pub(crate) unsafe fn in_threads(base: NonNull<u8>, from: usize, to: usize) -> Result<(), Error> {
    let threads = threads(to - from);
    let part = (to - from).div_ceil(threads).next_multiple_of(COMMIT_STEP);
    // The threads get addresses: a pointer is not Send, and each only asks
    // the kernel to fault its own part in.
    let start = base.as_ptr().expose_provenance();
    std::thread::scope(|s| {
        let parts: Vec<_> = (from..to)
            .step_by(part)
            .map(|at| {
                let len = part.min(to - at);
                s.spawn(move || {
                    // SAFETY: a part of `from..to`, mapped (the caller's
                    // contract); the kernel faults it in without changing a byte.
                    unsafe {
                        imp::populate(core::ptr::with_exposed_provenance_mut(start + at), len)
                    }
                })
            })
            .collect();
        parts.into_iter().try_for_each(|part| {
            part.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    })
}
