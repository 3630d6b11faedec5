//! Without a futex: a waiter yields the CPU instead of sleeping (part of
//! `sys`).

use core::sync::atomic::AtomicU32;

/// Yields once; the caller checks the word again.
pub(crate) fn wait(_state: &AtomicU32, _expected: u32) {
    std::thread::yield_now();
}

/// Nobody sleeps, so nobody is woken.
pub(crate) fn wake_one(_state: &AtomicU32) {}
