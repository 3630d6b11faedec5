//! Fork safety: every allocator lock is held across `fork`.
//!
//! `fork` copies the whole address space but only the calling thread. A lock
//! that another thread held at that moment stays held in the child, by a
//! thread that does not exist there, and the child's first allocation that
//! needs it waits forever. So `pthread_atfork` handlers take every lock an
//! allocation path can hold before the fork, in the crate's one lock order,
//! and release them in both the parent and the child.
//!
//! This file is a leaf: it knows the lock order ([`Stage`]) and nothing of
//! the locks. Each stage's owner registers its [`Hooks`] before it first
//! takes its locks, and the handlers are installed with the first
//! registration, so a stage that is not registered yet holds nothing a
//! fork could catch:
//!
//! 1. [`Stage::Setup`], the setup lock (`once.rs`): no lazy allocator is
//!    half opened;
//! 2. [`Stage::Heaps`], the registry of Heaps (`heap/registry.rs`), then
//!    each Heap's shared slot, central and arena locks: no Heap structure is
//!    half changed;
//! 3. [`Stage::Blocks`], the striped commit locks (`block/mod.rs`): no Block
//!    is half committed. Its child hook first reserves again the ranges of
//!    Blocks kept out of children (`BlockOptions::inherit(false)`, see
//!    `block/linux.rs`), which `fork` left unmapped there.
//!
//! Tape, Grid and the Heap's per-thread fast paths take no lock: each of
//! their steps is one atomic operation, or private to one thread, whose state
//! the child never uses again (see `thread.rs`). Memory itself is private by
//! default, so the child works on its own copy; what it does never reaches
//! the parent, and a child killed in the middle of an allocation leaves the
//! parent's memory as it was.

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// The crate's lock order, outermost first: `prepare` takes the stages'
/// locks in this order, and both sides of the fork release them in reverse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    Setup,
    Heaps,
    Blocks,
}

const STAGES: usize = 3;

/// What a stage's owner does around a fork.
pub(crate) struct Hooks {
    /// Takes every lock of the stage (before the fork).
    pub(crate) lock: fn(),
    /// Releases them, in the parent.
    ///
    /// # Safety
    /// This thread took them with `lock`.
    pub(crate) unlock: unsafe fn(),
    /// In the child (its only thread is the one that forked): puts right
    /// what the fork changed, then releases the stage's locks.
    ///
    /// # Safety
    /// As `unlock`.
    pub(crate) child: unsafe fn(),
}

/// Each stage's hooks, once its owner registered them.
static HOOKS: [AtomicPtr<Hooks>; STAGES] = [const { AtomicPtr::new(ptr::null_mut()) }; STAGES];

/// Whether the handlers are installed.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The stages whose locks `prepare` took (bit `stage`), for `parent` and
/// `child` to release exactly those: a stage registered during the fork
/// took none. Written by the forking thread once it holds every lock, so a
/// second fork, which waits for those locks, writes it only after the first
/// fork's handlers have read it.
static PREPARED: AtomicUsize = AtomicUsize::new(0);

/// Registers `hooks` for `stage` (every call for a stage passes the same
/// hooks), and installs the fork handlers if they are not yet. Owners call
/// it before they first take the stage's locks; nothing here allocates.
#[inline]
pub(crate) fn register(stage: Stage, hooks: &'static Hooks) {
    let slot = &HOOKS[stage as usize];
    // Acquire: pairs with the Release below (a registered stage stays so).
    if slot.load(Ordering::Acquire).is_null() {
        // Release: publishes the hooks to the handlers, which load them
        // with Acquire.
        slot.store(ptr::from_ref(hooks).cast_mut(), Ordering::Release);
    }
    // Acquire: pairs with the Release store in `install_slow`.
    if !INSTALLED.load(Ordering::Acquire) {
        install_slow();
    }
}

#[cold]
fn install_slow() {
    // Relaxed: whoever wins installs; the others see `true` and return.
    // (A fork between the swap and the install below catches no lock of
    // ours: the stages registered so far have not taken any yet.)
    if INSTALLED.swap(true, Ordering::AcqRel) {
        return;
    }
    crate::sys::at_fork(prepare, parent, child);
}

/// The stages `mask` names that are registered, with their hooks, in lock
/// order.
fn stages(mask: usize) -> impl DoubleEndedIterator<Item = (usize, &'static Hooks)> {
    HOOKS
        .iter()
        .enumerate()
        .filter(move |(stage, _)| mask & (1 << stage) != 0)
        .filter_map(|(stage, slot)| {
            // Acquire: pairs with the Release store in `register`.
            // SAFETY: only `&'static Hooks` are stored.
            unsafe { slot.load(Ordering::Acquire).as_ref() }.map(|hooks| (stage, hooks))
        })
}

/// Before `fork`: takes every registered stage's locks, in lock order.
extern "C" fn prepare() {
    let mut taken = 0;
    for (stage, hooks) in stages(usize::MAX) {
        (hooks.lock)();
        taken |= 1 << stage;
    }
    // Relaxed: read by this same thread in `parent` or `child`.
    PREPARED.store(taken, Ordering::Relaxed);
}

/// After `fork`, in the parent.
extern "C" fn parent() {
    // Relaxed: stored by this thread in `prepare`.
    for (_, hooks) in stages(PREPARED.load(Ordering::Relaxed)).rev() {
        // SAFETY: this thread took these stages' locks in `prepare`.
        unsafe { (hooks.unlock)() };
    }
}

/// After `fork`, in the child, whose only thread is the one that took the
/// locks in `prepare`.
extern "C" fn child() {
    // Relaxed: as in `parent` (the child's memory is the parent's copy).
    for (_, hooks) in stages(PREPARED.load(Ordering::Relaxed)).rev() {
        // SAFETY: as in `parent`: the child's thread is the one that forked.
        unsafe { (hooks.child)() };
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
