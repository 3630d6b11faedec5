//! Faulting in (and locking) large commits from several threads.
//!
//! Populating pages is mostly zeroing them, which one core does at a few
//! GB/s; page faults on one process take the address space's lock in shared
//! mode, so several threads fault disjoint ranges in at once. Explicit opens
//! and commits ([`Block::open`](super::Block::open),
//! [`Region::commit`](super::Region::commit)) of at least [`PARALLEL_MIN`]
//! bytes split the range into one part per thread, up to the machine's
//! cores, [`MAX_THREADS`], and one thread per [`PER_THREAD`] bytes. A pinned
//! commit has each thread `mlock` its part, which faults it in and locks it
//! in one pass (populating first and locking after would walk every page
//! twice); if the limit refuses a part, the parts already locked are
//! unlocked and the commit is locked on one thread, as it would have been,
//! so the locked bytes stay a prefix. Growth inside an allocator never
//! goes parallel: spawning a thread allocates.
//!
//! A Block placed on a NUMA node ([`BlockOptions::node`](super::BlockOptions::node))
//! populates from that node's CPUs (those of them this process may use,
//! at most as many threads as there are): each thread moves itself there
//! (`sched_setaffinity`) before it touches a page, so that zeroing writes
//! local memory, and so that the pages land on the node even where the
//! system refused to bind them. The committing thread itself never moves.

use core::ptr::NonNull;

use super::{COMMIT_STEP, Node, imp, numa};
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
    cfg!(unimem_linux) && len >= PARALLEL_MIN && threads(len) > 1
}

/// Populates `from..to` of the reservation at `base` from several threads,
/// on `node`'s CPUs if there is one.
///
/// # Safety
/// `from..to` is mapped and nothing else refers to it.
pub(crate) unsafe fn in_threads(
    base: NonNull<u8>,
    from: usize,
    to: usize,
    node: Option<Node>,
) -> Result<(), Error> {
    let cpus = node.and_then(numa::cpus);
    // SAFETY: a part of `from..to`, mapped (the caller's contract); the
    // kernel faults it in without changing a byte.
    let results = each_part(base, from, to, cpus.as_ref(), |at, len| unsafe {
        imp::populate(at, len)
    });
    results.into_iter().try_for_each(|(_, _, result)| result)
}

/// Faults `from..to` of the reservation at `base` in and locks it, from
/// several threads: each locks its own part, which faults it in (one pass
/// over the pages, where populating and then locking would make two). True
/// if every part was locked; otherwise the parts that were are unlocked
/// again and the range is left mapped and unlocked, for the caller to lock
/// on one thread (and report a refusal as it does).
///
/// # Safety
/// As `in_threads`.
pub(crate) unsafe fn lock_in_threads(
    base: NonNull<u8>,
    from: usize,
    to: usize,
    node: Option<Node>,
) -> bool {
    let cpus = node.and_then(numa::cpus);
    // SAFETY: as in `in_threads`; locking changes no byte.
    let results = each_part(base, from, to, cpus.as_ref(), |at, len| unsafe {
        imp::lock_pages(at, len)
    });
    if results.iter().all(|(_, _, locked)| *locked) {
        return true;
    }
    for (at, len, _) in results {
        // SAFETY: a part of the caller's range; unlocking a part that was
        // not (or only partly) locked is harmless.
        unsafe { imp::unlock_pages(at, len) };
    }
    false
}

/// Runs `work(at, len)` on one thread per part of `from..to` (parts of
/// whole commit steps), each moved onto `cpus` first if given (at most one
/// thread per CPU), and returns each part with its result, in order.
pub(super) fn each_part<R: Send>(
    base: NonNull<u8>,
    from: usize,
    to: usize,
    cpus: Option<&numa::Cpus>,
    work: impl Fn(*mut u8, usize) -> R + Sync,
) -> Vec<(*mut u8, usize, R)> {
    let threads = threads(to - from).min(cpus.map_or(usize::MAX, numa::Cpus::count));
    let part = (to - from).div_ceil(threads).next_multiple_of(COMMIT_STEP);
    // The threads get addresses: a pointer is not Send, and each only asks
    // the kernel to act on its own part.
    let start = base.as_ptr().expose_provenance();
    let work = &work;
    let results: Vec<(usize, usize, R)> = std::thread::scope(|s| {
        let parts: Vec<_> = (from..to)
            .step_by(part)
            .map(|at| {
                let len = part.min(to - at);
                s.spawn(move || {
                    if let Some(cpus) = cpus {
                        numa::run_on(cpus);
                    }
                    let result = work(core::ptr::with_exposed_provenance_mut(start + at), len);
                    (at, len, result)
                })
            })
            .collect();
        parts
            .into_iter()
            .map(|part| {
                part.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    results
        .into_iter()
        .map(|(at, len, result)| (base.as_ptr().wrapping_add(at), len, result))
        .collect()
}
