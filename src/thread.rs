//! Thread tags, a crate-wide service: each thread that allocates from a Heap
//! (or gives a cell back to a Grid) takes a small tag (1 ..= MAX_THREADS,
//! process-wide, shared by every Heap and Grid) that names its cache in each
//! Heap, marks the slabs it owns, and names its slot in each Grid (tags up to
//! the Grid's slot count).
//!
//! A cache belongs to the tag, not to the thread: when a thread exits, the
//! exit listener (the Heap's flush, registered with [`on_exit`]) hands its
//! caches on (empty slabs go back to their arenas, the rest are abandoned for
//! other threads to adopt) and the tag is released for the next thread. Heaps
//! therefore hold no thread-local pointers into themselves and can be dropped
//! at any time. A Grid slot needs no flush: any thread may take the cell an
//! exited thread left there, and the tag's next holder finds the slot as it
//! was left (the tag's release and claim order the two).
//!
//! The tag lives in a `const`-initialized thread-local without a destructor
//! (a plain TLS load, no registration, no allocation). The exit hook is a
//! pthread key destructor: it runs after Rust's own thread-local destructors,
//! which may still free memory into a Heap. A thread that allocates after its
//! hook ran, or finds all tags taken, uses the heap's shared slot under a
//! lock. Platforms without pthreads never release tags.
//!
//! # Fork
//!
//! A child of `fork` has one thread, the one that forked, which keeps its tag
//! and the child's copy of its caches. The tags that other threads of the
//! parent held stay taken in the child for good: their caches (copies of
//! caches that their threads may have been changing at the moment of the
//! fork) are never used again, and a free into their slabs goes through the
//! atomic remote-free path. So the child's new threads never reuse a tag or a
//! cache of the parent's threads. This needs no handler: the bitmap below is
//! copied as it was, and a tag is released only by its own thread's exit.

use core::cell::Cell;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// Tags available; further threads share one slot.
pub(crate) const MAX_THREADS: usize = 1024;
/// The shared slot's tag.
pub(crate) const SHARED: usize = MAX_THREADS + 1;
/// Slots per heap: tag 0 means "no owner" and has none in use.
pub(crate) const SLOTS: usize = MAX_THREADS + 2;

/// No tag yet. Both markers lie above every tag, so one compare tells a tag.
const UNSET: u32 = u32::MAX;
/// Exited, or no tag was free: use the shared slot.
const NO_TAG: u32 = u32::MAX - 1;

/// One bit per index, set while a thread holds it.
static TAKEN: [AtomicU64; MAX_THREADS / 64] = [const { AtomicU64::new(0) }; MAX_THREADS / 64];

thread_local! {
    static TAG: Cell<u32> = const { Cell::new(UNSET) };
}

/// This thread's tag, if it has one already (the fast paths' check).
#[inline(always)]
pub(crate) fn tag_fast() -> Option<usize> {
    let tag = TAG.with(Cell::get) as usize;
    (tag <= MAX_THREADS).then_some(tag)
}

/// This thread's tag word as stored, unchecked: a tag (1 ..= MAX_THREADS),
/// or a marker above every tag and above `SHARED`. So it equals a slab's
/// owner tag only if it is this thread's tag and that owner: what the
/// Heap's free fast path compares, with no check of its own.
#[inline(always)]
pub(crate) fn tag_raw() -> u32 {
    TAG.with(Cell::get)
}

/// This thread's tag (1 ..= MAX_THREADS), or `SHARED`.
#[inline(always)]
pub(crate) fn tag() -> usize {
    let tag = TAG.with(Cell::get) as usize;
    // Tags are 1 ..= MAX_THREADS; 0 is never stored.
    if tag <= MAX_THREADS {
        return tag;
    }
    tag_slow(tag as u32)
}

#[cold]
fn tag_slow(tag: u32) -> usize {
    if tag != UNSET {
        return SHARED;
    }
    let Some(index) = claim() else {
        TAG.with(|t| t.set(NO_TAG));
        return SHARED;
    };
    // The value is the index + 1: pthreads skips null values.
    if !crate::sys::on_thread_exit(index + 1, |value| exited(value - 1)) {
        // Without an exit hook the tag could never be released: give it back
        // now and share.
        release(index);
        TAG.with(|t| t.set(NO_TAG));
        return SHARED;
    }
    TAG.with(|t| t.set(index as u32 + 1));
    index + 1
}

fn claim() -> Option<usize> {
    for (word, bits) in TAKEN.iter().enumerate() {
        // Relaxed: a first guess for the compare-exchange.
        let mut taken = bits.load(Ordering::Relaxed);
        while taken != u64::MAX {
            let bit = (!taken).trailing_zeros();
            // Acquire: pairs with the Release in `release`, so the flush of
            // the index's caches by its previous holder happens-before our
            // use of them.
            match bits.compare_exchange_weak(
                taken,
                taken | 1 << bit,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(word * 64 + bit as usize),
                Err(seen) => taken = seen,
            }
        }
    }
    None
}

fn release(index: usize) {
    // Release: publishes the flush to the next holder (`claim`).
    TAKEN[index / 64].fetch_and(!(1 << (index % 64)), Ordering::Release);
}

/// What runs for a tag when its thread exits, before the tag is released;
/// null until [`on_exit`] sets it.
static LISTENER: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Sets what runs for a thread's tag when the thread exits (the Heap's
/// flush). Every caller passes the same function.
pub(crate) fn on_exit(listener: fn(usize)) {
    // Release: pairs with the Acquire load in `exited`.
    LISTENER.store(listener as *mut (), Ordering::Release);
}

/// Runs at thread exit: the listener for the tag, then the tag's release.
fn exited(index: usize) {
    // Acquire: pairs with the Release store in `on_exit`.
    let listener = LISTENER.load(Ordering::Acquire);
    if !listener.is_null() {
        // SAFETY: only `on_exit` stores here, and it stores a `fn(usize)`.
        let listener = unsafe { core::mem::transmute::<*mut (), fn(usize)>(listener) };
        listener(index + 1);
    }
    TAG.with(|t| t.set(NO_TAG));
    release(index);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `tag`'s bit is taken.
    #[cfg(unimem_fork)]
    fn taken(tag: usize) -> bool {
        let index = tag - 1;
        TAKEN[index / 64].load(Ordering::Relaxed) & (1 << (index % 64)) != 0
    }

    /// A child of `fork` keeps the forking thread's tag, and its new threads
    /// never get a tag that another thread of the parent held.
    #[cfg(unimem_fork)]
    #[test]
    fn a_forked_child_never_reuses_the_parents_other_tags() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            tx.send(tag()).unwrap();
            done_rx.recv().unwrap();
        });
        let theirs = rx.recv().unwrap();
        let mine = tag();
        // SAFETY: the child only reads atomics, spawns a thread (whose
        // allocations go to the system allocator in this test binary) and
        // leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let kept = tag() == mine && taken(theirs);
            let new = std::thread::spawn(tag).join().unwrap_or(theirs);
            let code = if kept && new != theirs && new != mine {
                0
            } else {
                1
            };
            // SAFETY: leaves the child at once.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: our own child; a valid out-pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status:#x}"
        );
        done_tx.send(()).unwrap();
        other.join().unwrap();
    }

    #[test]
    fn threads_get_distinct_tags_that_are_reused() {
        let mine = tag();
        assert!((1..=MAX_THREADS).contains(&mine) || mine == SHARED);
        assert_eq!(tag(), mine, "stable within a thread");
        let theirs: Vec<usize> = (0..20)
            .map(|_| std::thread::spawn(tag).join().unwrap())
            .collect();
        for &other in &theirs {
            assert_ne!(other, mine);
        }
        if cfg!(unix) {
            // One thread at a time: each exits (releasing its tag) before the
            // next takes the lowest free one, so tags repeat.
            let mut sorted = theirs.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert!(sorted.len() < theirs.len(), "{theirs:?}");
        }
    }
}
