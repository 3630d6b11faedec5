//! Process services on Unix (part of `sys`): the thread-exit key, writes to
//! standard error, the locked-memory limit.

use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// The hook `on_thread_exit` calls, set by its first caller.
static HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Arranges for `hook(value)` when this thread exits (`value` is not 0);
/// every caller passes the same hook. False if the system refused.
pub(crate) fn on_thread_exit(value: usize, hook: fn(usize)) -> bool {
    debug_assert!(value != 0);
    // Relaxed: every caller stores the same function; `destructor` runs on a
    // thread that stored it (or saw it) before registering its value.
    HOOK.store(hook as *mut (), Ordering::Relaxed);
    let Some(key) = key() else {
        return false;
    };
    let value = core::ptr::without_provenance::<c_void>(value);
    // SAFETY: a key we created; the value is never dereferenced.
    unsafe { libc::pthread_setspecific(key, value) == 0 }
}

/// The key whose destructor is the exit hook: 0 until made, the key + 1
/// once made, `usize::MAX` if it could not be.
static KEY: AtomicUsize = AtomicUsize::new(0);

/// The key whose destructor is the exit hook; `None` if it could not be
/// created. (Made here with one compare-exchange rather than a `Once`, so
/// that `sys` stands on nothing of the crate.)
fn key() -> Option<libc::pthread_key_t> {
    // Acquire: pairs with the AcqRel exchange below (the key is a plain
    // value, but a thread that sees it may use it at once).
    match KEY.load(Ordering::Acquire) {
        0 => {}
        usize::MAX => return None,
        made => return libc::pthread_key_t::try_from(made - 1).ok(),
    }
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; `destructor` has the signature
    // pthreads expects.
    let made = unsafe { libc::pthread_key_create(&mut key, Some(destructor)) } == 0;
    let word = match usize::try_from(key) {
        Ok(key) if made && key < usize::MAX - 1 => key + 1,
        _ => usize::MAX,
    };
    // AcqRel: publishes our key, or reads the one another thread made first.
    match KEY.compare_exchange(0, word, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => (word != usize::MAX).then_some(key),
        Err(theirs) => {
            if word != usize::MAX {
                // SAFETY: our key, never handed out: nobody set a value.
                unsafe { libc::pthread_key_delete(key) };
            }
            match theirs {
                usize::MAX => None,
                theirs => libc::pthread_key_t::try_from(theirs - 1).ok(),
            }
        }
    }
}

unsafe extern "C" fn destructor(value: *mut c_void) {
    // Relaxed: see `on_thread_exit`.
    let hook = HOOK.load(Ordering::Relaxed);
    if !hook.is_null() {
        // SAFETY: only `fn(usize)` pointers are stored.
        let hook: fn(usize) = unsafe { core::mem::transmute::<*mut (), fn(usize)>(hook) };
        hook(value.addr());
    }
}

/// Writes `bytes` to standard error, unbuffered, without allocating.
pub(crate) fn write_stderr(bytes: &[u8]) {
    let mut bytes = bytes;
    while !bytes.is_empty() {
        // SAFETY: a readable buffer of that length.
        let written = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        match usize::try_from(written) {
            Ok(0) | Err(_) => return,
            Ok(n) => bytes = &bytes[n..],
        }
    }
}

/// The soft `RLIMIT_MEMLOCK`, in bytes; `None` when unlimited or unknown
/// (under Miri, whose portable Blocks lock nothing).
pub(crate) fn memlock_limit() -> Option<u64> {
    if cfg!(miri) {
        return None;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return None;
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}
