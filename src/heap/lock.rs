//! A test-and-test-and-set spin lock for the heap's slow paths.
//!
//! Written by hand because an allocator's own lock cannot allocate: std's
//! `Mutex` boxes a pthread mutex on some platforms and parking_lot allocates
//! its hash table. The locks here guard short sections (taking a run,
//! adopting a slab), so spinning briefly and then yielding the CPU is enough.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out the value to one thread at a time.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the value.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub(crate) const fn new(value: T) -> SpinLock<T> {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    pub(crate) fn lock(&self) -> Guard<'_, T> {
        let mut spins = 0u32;
        // Acquire pairs with the Release store in `Guard::drop`, so the
        // previous holder's writes to the value happen-before ours.
        while self.locked.swap(true, Ordering::Acquire) {
            // Wait on a plain load so the line stays shared while it is held.
            while self.locked.load(Ordering::Relaxed) {
                spins += 1;
                if spins < 64 {
                    core::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
        Guard { lock: self }
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
        // Release: publishes our writes to the next holder's Acquire.
        self.lock.locked.store(false, Ordering::Release);
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
}
