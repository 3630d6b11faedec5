//! [`Once`]: a value set up on first use, under the crate's setup lock.
//!
//! `std::sync::OnceLock` would do, but for `fork`: a child forked while
//! another thread is inside `OnceLock::get_or_init` finds the cell running
//! forever and waits on it for good. Here every setup runs while holding
//! [`SETUP`], which the `fork` handlers take (`fork.rs`), so no setup is ever
//! half done in a child. The lock is re-entrant because setting up one
//! allocator can set up another (a Grid opens its Blocks lazily). Setups are
//! rare and never allocate through the global allocator, so one lock for the
//! whole crate costs nothing that matters.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::fork::{self, Hooks, Stage};
use crate::lock::ReentrantLock;

/// Held while any [`Once`] runs its setup; taken around `fork`.
pub(crate) static SETUP: ReentrantLock = ReentrantLock::new();

/// The setup lock's part in `fork` (`fork.rs`, [`Stage::Setup`]).
static FORK_HOOKS: Hooks = Hooks {
    lock: || SETUP.lock_for_fork(),
    unlock: unlock_setup,
    child: unlock_setup,
};

/// # Safety
/// As [`ReentrantLock::unlock_after_fork`].
unsafe fn unlock_setup() {
    // SAFETY: the caller's contract.
    unsafe { SETUP.unlock_after_fork() };
}

const EMPTY: u8 = 0;
const BUSY: u8 = 1;
const DONE: u8 = 2;

/// A value set up at most once.
pub(crate) struct Once<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written once, before `state` becomes DONE (Release),
// and only read after an Acquire load sees DONE; after that it is shared
// like a `&T`.
unsafe impl<T: Send + Sync> Sync for Once<T> {}
// SAFETY: moving the cell moves the value.
unsafe impl<T: Send> Send for Once<T> {}

impl<T> Once<T> {
    pub(crate) const fn new() -> Once<T> {
        Once {
            state: AtomicU8::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// A cell that holds `value` already.
    pub(crate) const fn from(value: T) -> Once<T> {
        Once {
            state: AtomicU8::new(DONE),
            value: UnsafeCell::new(MaybeUninit::new(value)),
        }
    }

    /// The value, if it is set.
    #[inline]
    pub(crate) fn get(&self) -> Option<&T> {
        // Acquire: pairs with the Release store in `get_or_init`.
        if self.state.load(Ordering::Acquire) == DONE {
            // SAFETY: DONE means written, and never written again.
            Some(unsafe { (*self.value.get()).assume_init_ref() })
        } else {
            None
        }
    }

    /// The value, setting it up with `init` first if nobody has. `None` only
    /// when `init` itself, on this thread, asks for the value it is making.
    #[inline]
    pub(crate) fn get_or_init(&self, init: impl FnOnce() -> T) -> Option<&T> {
        match self.get() {
            Some(value) => Some(value),
            None => self.init_slow(init),
        }
    }

    #[cold]
    fn init_slow(&self, init: impl FnOnce() -> T) -> Option<&T> {
        // Before the setup lock is first taken.
        fork::register(Stage::Setup, &FORK_HOOKS);
        let _setup = SETUP.lock();
        // Relaxed: under the lock, which orders every earlier setup's stores.
        match self.state.load(Ordering::Relaxed) {
            DONE => return self.get(),
            // Only a setup on this thread can hold the lock and leave BUSY.
            BUSY => return None,
            _ => {}
        }
        self.state.store(BUSY, Ordering::Relaxed);
        let value = init();
        // SAFETY: EMPTY until now and we hold the setup lock: nobody else
        // writes or reads the value.
        unsafe { (*self.value.get()).write(value) };
        // Release: pairs with the Acquire load in `get`.
        self.state.store(DONE, Ordering::Release);
        self.get()
    }

    /// Takes the value out, leaving the cell empty.
    pub(crate) fn take(&mut self) -> Option<T> {
        if *self.state.get_mut() != DONE {
            return None;
        }
        *self.state.get_mut() = EMPTY;
        // SAFETY: DONE means written; the state now says empty, so it is read
        // out once.
        Some(unsafe { (*self.value.get()).assume_init_read() })
    }
}

impl<T> Drop for Once<T> {
    fn drop(&mut self) {
        drop(self.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicUsize;

    #[test]
    fn sets_up_once_across_threads() {
        let once = Once::new();
        let runs = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let v = once.get_or_init(|| {
                        runs.fetch_add(1, Ordering::Relaxed);
                        7
                    });
                    assert_eq!(v, Some(&7));
                });
            }
        });
        assert_eq!(runs.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_setup_asking_for_itself_gets_none() {
        let once: Once<u32> = Once::new();
        let inner = once.get_or_init(|| {
            assert!(once.get_or_init(|| 1).is_none());
            2
        });
        assert_eq!(inner, Some(&2));
    }

    #[test]
    fn take_empties_and_drop_drops() {
        let mut once = Once::from(String::from("x"));
        assert_eq!(once.take().as_deref(), Some("x"));
        assert!(once.get().is_none());
        let counted = std::sync::Arc::new(());
        drop(Once::from(counted.clone()));
        assert_eq!(std::sync::Arc::strong_count(&counted), 1);
    }
}
