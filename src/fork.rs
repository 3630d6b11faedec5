//! Fork safety: every allocator lock is held across `fork`.
//!
//! `fork` copies the whole address space but only the calling thread. A lock
//! that another thread held at that moment stays held in the child, by a
//! thread that does not exist there, and the child's first allocation that
//! needs it waits forever. So `pthread_atfork` handlers, installed when the
//! first Block is opened, take every lock an allocation path can hold before
//! the fork, in the crate's one lock order, and release them in both the
//! parent and the child:
//!
//! 1. the setup lock (`once.rs`): no lazy allocator is half opened;
//! 2. the registry of Heaps (`heap/registry.rs`), then each Heap's shared
//!    slot, central and arena locks: no Heap structure is half changed;
//! 3. the striped commit locks (`block/mod.rs`): no Block is half committed.
//!
//! The child's handler first reserves again the ranges of Blocks kept out of
//! children (`BlockOptions::inherit(false)`, see `block/linux.rs`), which
//! `fork` left unmapped there.
//!
//! Tape, Grid and the Heap's per-thread fast paths take no lock: each of
//! their steps is one atomic operation, or private to one thread, whose state
//! the child never uses again (see `thread.rs`). Memory itself is private by
//! default, so the child works on its own copy; what it does never reaches
//! the parent, and a child killed in the middle of an allocation leaves the
//! parent's memory as it was.

use core::sync::atomic::{AtomicBool, Ordering};

/// Whether the handlers are installed.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Installs the `fork` handlers once per process.
#[inline]
pub(crate) fn install() {
    // Acquire: pairs with the Release store below (nothing else is
    // published, but it keeps the check cheap and exact).
    if INSTALLED.load(Ordering::Acquire) {
        return;
    }
    install_slow();
}

#[cold]
fn install_slow() {
    #[cfg(all(unix, not(miri)))]
    {
        let _setup = crate::once::SETUP.lock();
        // Relaxed: under the setup lock, which every installer holds.
        if INSTALLED.load(Ordering::Relaxed) {
            return;
        }
        // SAFETY: the handlers are `extern "C"` functions with no arguments,
        // as pthread_atfork expects; they stay valid for the process's life.
        // The C library may allocate its own record with its own malloc,
        // never through Rust's global allocator.
        let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        debug_assert_eq!(rc, 0, "pthread_atfork failed");
    }
    // No fork here (Miri, or a platform without it): nothing to install;
    // the handlers still exist, and their test runs them by hand.
    #[cfg(not(all(unix, not(miri))))]
    let _ = [prepare, parent, child];
    // Release: see the load above.
    INSTALLED.store(true, Ordering::Release);
}

/// Before `fork`: takes every lock, in the crate's lock order.
extern "C" fn prepare() {
    crate::once::SETUP.lock_for_fork();
    crate::heap::lock_for_fork();
    crate::block::lock_for_fork();
}

/// After `fork`, in the parent.
extern "C" fn parent() {
    // SAFETY: this thread took every lock in `prepare`.
    unsafe { unlock_all() }
}

/// After `fork`, in the child, whose only thread is the one that took the
/// locks in `prepare`.
extern "C" fn child() {
    crate::block::after_fork_in_child();
    // SAFETY: as in `parent`: the child's thread is the one that forked.
    unsafe { unlock_all() }
}

/// Releases what `prepare` took, in reverse order.
///
/// # Safety
/// This thread took the locks in `prepare`.
unsafe fn unlock_all() {
    // SAFETY: the caller's contract.
    unsafe {
        crate::block::unlock_after_fork();
        crate::heap::unlock_after_fork();
        crate::once::SETUP.unlock_after_fork();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlockOptions, Heap, Pinning, Tape};

    /// The handlers by hand, without a fork: `prepare` takes every lock of
    /// two live heaps and a Tape's Block, `parent` and `child` give them all
    /// back, and everything works after each.
    #[test]
    fn the_handlers_take_and_give_back_every_lock() {
        let options = BlockOptions::new().pinning(Pinning::BestEffort).quiet(true);
        let heaps = [
            Heap::lazy_with(1 << 20, options).open_now().unwrap(),
            Heap::lazy_with(1 << 20, options).open_now().unwrap(),
        ];
        let tape = Tape::open_with(4096, &options.capacity(4 << 20)).unwrap();
        let layout = core::alloc::Layout::from_size_align(64 << 10, 8).unwrap();
        for after in [parent, child] {
            prepare();
            after();
            for heap in &heaps {
                let p = crate::alloc::allocate(heap, layout).unwrap();
                // SAFETY: allocated just above with `layout`.
                unsafe { crate::alloc::deallocate(heap, p.cast(), layout) };
            }
            assert!(
                tape.take(1 << 20, 8).is_some(),
                "commits after the handlers"
            );
        }
    }
}
