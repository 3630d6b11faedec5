//! The live Heaps of the process: what an exiting thread's caches are
//! flushed in, and what the `fork` handlers lock.
//!
//! Each core is linked in while its Heap lives (the links are in the core,
//! under the registry lock): nothing here allocates.

use core::ptr;

use super::shared::HeapCore;
use crate::fork::{self, Hooks, Stage};
use crate::lock::SpinLock;

/// The live heaps, as a doubly linked list through `HeapCore::links`.
struct Registry {
    first: *mut HeapCore,
}

// SAFETY: the pointers are to live cores; the registry lock orders access.
unsafe impl Send for Registry {}

static REGISTRY: SpinLock<Registry> = SpinLock::new(Registry {
    first: ptr::null_mut(),
});

/// Links `core` in; from now on exiting threads flush their caches in it.
pub(super) fn register(core: *mut HeapCore) {
    crate::thread::on_exit(flush_thread);
    // Before the registry lock is first taken.
    fork::register(Stage::Heaps, &FORK_HOOKS);
    let mut registry = REGISTRY.lock();
    // SAFETY: `core` is live; links are only touched under the registry lock.
    unsafe {
        *(*core).links.get() = [ptr::null_mut(), registry.first];
        if let Some(first) = registry.first.as_ref() {
            (*first.links.get())[0] = core;
        }
    }
    registry.first = core;
}

/// Links `core` out; after this returns no flush reaches it.
pub(super) fn unregister(core: *mut HeapCore) {
    let mut registry = REGISTRY.lock();
    // SAFETY: as in `register`; `core` and its neighbours are live.
    unsafe {
        let [prev, next] = *(*core).links.get();
        match prev.as_ref() {
            Some(prev) => (*prev.links.get())[1] = next,
            None => registry.first = next,
        }
        if let Some(next) = next.as_ref() {
            (*next.links.get())[0] = prev;
        }
    }
}

/// Flushes thread tag `tag`'s caches in every live heap (the thread exit
/// listener, see `thread.rs`).
fn flush_thread(tag: usize) {
    let registry = REGISTRY.lock();
    let mut at = registry.first;
    // SAFETY: registered cores are live until they unregister, which waits
    // for the registry lock we hold; the exiting thread holds `tag`.
    unsafe {
        while let Some(core) = at.as_ref() {
            core.flush(tag);
            at = (*core.links.get())[1];
        }
    }
}

/// Takes the registry's lock, then every live heap's locks, for `fork`.
/// The Heaps' part in `fork` (`fork.rs`, [`Stage::Heaps`]): the child
/// releases what the parent does.
static FORK_HOOKS: Hooks = Hooks {
    lock: lock_for_fork,
    unlock: unlock_after_fork,
    child: unlock_after_fork,
};

fn lock_for_fork() {
    REGISTRY.lock_for_fork();
    // SAFETY: we hold the registry lock (without a guard): the list and its
    // cores stay as they are, and no other reference to it is alive.
    let mut at = unsafe { REGISTRY.get_locked() }.first;
    // SAFETY: registered cores are live while we hold the registry lock.
    while let Some(core) = unsafe { at.as_ref() } {
        core.lock_for_fork();
        // SAFETY: links are only touched under the registry lock.
        at = unsafe { (*core.links.get())[1] };
    }
}

/// Releases what `lock_for_fork` took, in reverse order.
///
/// # Safety
/// This thread took the locks with `lock_for_fork` (in the child of a
/// `fork`, the forking thread, the child's only one).
unsafe fn unlock_after_fork() {
    // SAFETY: the caller's contract: we hold the registry lock.
    let mut at = unsafe { REGISTRY.get_locked() }.first;
    // SAFETY: as in `lock_for_fork`.
    while let Some(core) = unsafe { at.as_ref() } {
        // SAFETY: the caller's contract: we took the core's locks.
        unsafe { core.unlock_after_fork() };
        // SAFETY: as above.
        at = unsafe { (*core.links.get())[1] };
    }
    // SAFETY: the caller's contract.
    unsafe { REGISTRY.unlock_after_fork() };
}
