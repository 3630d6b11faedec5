//! Sleeping until a lock's state word changes: the futex (part of `sys`).

use core::sync::atomic::AtomicU32;

/// Sleeps while `state` holds `expected` (or until a spurious wake-up:
/// callers check again).
pub(crate) fn wait(state: &AtomicU32, expected: u32) {
    // SAFETY: a futex wait on a live, aligned u32 of this process, with
    // no timeout; it only reads the word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            state.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            core::ptr::null::<libc::timespec>(),
        )
    };
}

/// Wakes one thread sleeping in `wait` on `state`, if any.
pub(crate) fn wake_one(state: &AtomicU32) {
    // SAFETY: a futex wake on a live, aligned u32 of this process.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            state.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        )
    };
}
