//! The crate's locks: a lock for short sections that spins briefly and then
//! sleeps, and a re-entrant one for first-use setup.
//!
//! Written by hand because an allocator's own lock cannot allocate: std's
//! `Mutex` boxes a pthread mutex on some platforms and parking_lot allocates
//! its hash table. The sections guarded here are short (taking a run,
//! adopting a slab), so a waiter first spins; but some make system calls
//! (committing pages) and a holder can be preempted, so a waiter that is
//! still waiting then sleeps on a futex (Linux) until the holder wakes it.
//! Yielding instead, as this lock once did, let a thousand waiting threads
//! take turns on two cores while the holder waited for one of them.
//!
//! Every lock an allocation path can hold is also taken around `fork` (see
//! `fork.rs`): `lock_for_fork` and `unlock_after_fork` do that without a
//! guard, since the handlers that take and release it are separate calls.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crate::sys::park;

/// A lock for short sections: spins while the holder is likely to be
/// quick, then sleeps until woken (see the module docs).
pub(crate) struct SpinLock<T> {
    /// `UNLOCKED`, `LOCKED`, or `CONTENDED`: locked, and a thread may be
    /// asleep waiting for it (the release then wakes one).
    state: AtomicU32,
    value: UnsafeCell<T>,
}

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;
/// Looks at a held lock before a waiter goes to sleep.
const SPINS: u32 = 100;

// SAFETY: the lock hands out the value to one thread at a time.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the value.
unsafe impl<T: Send> Send for SpinLock<T> {}

/// Spins on `held` until it reads false: briefly with the CPU's pause hint,
/// then yielding the CPU to the holder.
#[inline]
fn wait_while(held: impl Fn() -> bool) {
    let mut spins = 0u32;
    while held() {
        spins += 1;
        if spins < 64 {
            core::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

impl<T> SpinLock<T> {
    pub(crate) const fn new(value: T) -> SpinLock<T> {
        SpinLock {
            state: AtomicU32::new(UNLOCKED),
            value: UnsafeCell::new(value),
        }
    }

    pub(crate) fn lock(&self) -> Guard<'_, T> {
        self.acquire();
        Guard { lock: self }
    }

    #[inline]
    fn acquire(&self) {
        // Acquire, here and below: pairs with the Release swap in `release`,
        // so the previous holder's writes to the value happen-before ours.
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.acquire_contended();
        }
    }

    #[cold]
    fn acquire_contended(&self) {
        // Spin on a plain load, so the line stays shared while it is held,
        // unless others are asleep already.
        for _ in 0..SPINS {
            match self.state.load(Ordering::Relaxed) {
                UNLOCKED
                    if self
                        .state
                        .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok() =>
                {
                    return;
                }
                CONTENDED => break,
                _ => {}
            }
            core::hint::spin_loop();
        }
        // Mark it contended (the holder's release will wake a sleeper) and
        // sleep while it is held. Taking it this way leaves it marked, which
        // costs at most a wake-up nobody needed.
        while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            park::wait(&self.state, CONTENDED);
        }
    }

    #[inline]
    fn release(&self) {
        // Release: publishes our writes to the next holder's Acquire.
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            park::wake_one(&self.state);
        }
    }

    /// Takes the lock with no guard, for the `fork` handlers.
    pub(crate) fn lock_for_fork(&self) {
        self.acquire();
    }

    /// Releases a lock taken by `lock_for_fork`.
    ///
    /// # Safety
    /// This thread took the lock with `lock_for_fork` (in the child of a
    /// `fork`, the thread that forked: the child's only thread).
    pub(crate) unsafe fn unlock_after_fork(&self) {
        self.release();
    }

    /// The value, for a caller that holds the lock without a guard.
    ///
    /// # Safety
    /// The caller holds the lock (through `lock_for_fork`) and no guard or
    /// other reference to the value is alive.
    #[expect(
        clippy::mut_from_ref,
        reason = "holding the lock, not the borrow, makes this unique"
    )]
    pub(crate) unsafe fn get_locked(&self) -> &mut T {
        // SAFETY: the caller's contract.
        unsafe { &mut *self.value.get() }
    }
}

pub(crate) struct Guard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the lock is held.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as `deref`, and `&mut self` makes this the only access.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        self.lock.release();
    }
}

/// A lock that the thread holding it may take again: the crate's one lock
/// for first-use setup (opening a lazy allocator's Blocks), whose setup can
/// open further Blocks lazily.
///
/// Threads are told apart by the address of a thread-local, which needs no
/// allocation and no registration.
pub(crate) struct ReentrantLock {
    /// The holder's thread address, or 0.
    owner: AtomicUsize,
    /// How many times the holder has taken it; only the holder touches it.
    depth: UnsafeCell<usize>,
}

// SAFETY: `depth` is only touched by the thread that `owner` names.
unsafe impl Sync for ReentrantLock {}

thread_local! {
    static ME: u8 = const { 0 };
}

/// An address unique to the calling thread while it lives.
#[inline]
fn me() -> usize {
    ME.with(|me| core::ptr::from_ref(me).addr())
}

impl ReentrantLock {
    pub(crate) const fn new() -> ReentrantLock {
        ReentrantLock {
            owner: AtomicUsize::new(0),
            depth: UnsafeCell::new(0),
        }
    }

    /// Takes the lock (again, if this thread holds it).
    pub(crate) fn lock(&self) -> ReentrantGuard<'_> {
        let me = me();
        // Relaxed: only this thread ever stores `me`, so reading it back
        // means we hold the lock already.
        if self.owner.load(Ordering::Relaxed) != me {
            // Acquire pairs with the Release store in `unlock`.
            while self
                .owner
                .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                wait_while(|| self.owner.load(Ordering::Relaxed) != 0);
            }
        }
        // SAFETY: we hold the lock, so `depth` is ours.
        unsafe { *self.depth.get() += 1 };
        ReentrantGuard { lock: self }
    }

    fn unlock(&self) {
        // SAFETY: called by the holder (a guard's drop, or the fork handlers'
        // contract).
        let depth = unsafe { &mut *self.depth.get() };
        *depth -= 1;
        if *depth == 0 {
            // Release: publishes what was set up to the next holder.
            self.owner.store(0, Ordering::Release);
        }
    }

    /// Takes the lock with no guard, for the `fork` handlers.
    pub(crate) fn lock_for_fork(&self) {
        core::mem::forget(self.lock());
    }

    /// Releases a lock taken by `lock_for_fork`.
    ///
    /// # Safety
    /// As [`SpinLock::unlock_after_fork`]. In a child the thread-local's
    /// address is the forking thread's, so the owner check still holds.
    pub(crate) unsafe fn unlock_after_fork(&self) {
        self.unlock();
    }
}

pub(crate) struct ReentrantGuard<'a> {
    lock: &'a ReentrantLock,
}

impl Drop for ReentrantGuard<'_> {
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes() {
        let lock = SpinLock::new(0u64);
        let rounds = if cfg!(miri) { 50 } else { 100_000 };
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..rounds {
                        let mut g = lock.lock();
                        // A non-atomic read-modify-write: lost updates would
                        // show if two threads held the lock at once.
                        let v = *g;
                        *g = v + 1;
                    }
                });
            }
        });
        assert_eq!(*lock.lock(), 4 * rounds);
    }

    /// Waiters that find the lock held for long go to sleep, and every one
    /// of them is woken: a holder that sleeps while holding it parks the
    /// others, and the count comes out whole.
    #[test]
    fn waiters_sleep_and_are_all_woken() {
        let lock = SpinLock::new(0u64);
        let rounds = if cfg!(miri) { 5 } else { 200 };
        let threads = 8;
        std::thread::scope(|s| {
            for t in 0..threads {
                let lock = &lock;
                s.spawn(move || {
                    for i in 0..rounds {
                        let mut g = lock.lock();
                        if (i + t) % 16 == 0 {
                            std::thread::sleep(std::time::Duration::from_micros(200));
                        }
                        let v = *g;
                        *g = v + 1;
                    }
                });
            }
        });
        assert_eq!(*lock.lock(), threads * rounds);
        assert_eq!(lock.state.load(Ordering::Relaxed), UNLOCKED);
    }

    #[test]
    fn a_reentrant_lock_nests_and_excludes() {
        let lock = ReentrantLock::new();
        let counter = SpinLock::new(0u64);
        let rounds = if cfg!(miri) { 20 } else { 20_000 };
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..rounds {
                        let _outer = lock.lock();
                        let _inner = lock.lock();
                        // Held twice: a lost update would show if another
                        // thread got in after the inner guard's drop.
                        let v = *counter.lock();
                        drop(_inner);
                        *counter.lock() = v + 1;
                    }
                });
            }
        });
        assert_eq!(*counter.lock(), 3 * rounds);
        assert_eq!(lock.owner.load(Ordering::Relaxed), 0);
    }
}
