//! The process services the allocators need, one contract for every
//! platform: Tape, Grid, Heap, Model and the locks call these and no OS
//! function of their own; `block/` has what is about a reservation (map,
//! lock, share), per backend.
//!
//! | service | Linux | Apple | other Unix | elsewhere, Miri |
//! |---|---|---|---|---|
//! | [`park`]: sleep until a lock word changes | futex | yield | yield | yield (Miri: futex on Linux) |
//! | [`on_thread_exit`]: a hook when a thread ends | pthread key | pthread key | pthread key | none |
//! | [`at_fork`]: handlers around `fork` | `pthread_atfork` | `pthread_atfork` | `pthread_atfork` | none (no fork) |
//! | [`write_stderr`]: one unbuffered write | `write(2)` | `write(2)` | `write(2)` | `std::io::stderr` |
//! | [`page_size`] | `sysconf` | `sysconf` | `sysconf` | 4 KiB |
//! | [`physical_memory`], [`available_memory`] | `sysconf`, `/proc/meminfo` | `sysconf` | unknown | unknown |
//! | [`memlock_limit`]: `RLIMIT_MEMLOCK` | `getrlimit` | `getrlimit` | `getrlimit` | none |
//! | [`random_seed`], [`random_bytes`] | `AT_RANDOM`, `getrandom` | ASLR, `/dev/urandom` | ASLR, `/dev/urandom` | ASLR, unavailable |
//!
//! Nothing here allocates, except [`random_bytes`] where it opens
//! `/dev/urandom` (never on an allocation path): a global allocator calls
//! these from its first allocation.

#[cfg(any(target_os = "linux", target_os = "android"))]
#[path = "futex.rs"]
pub(crate) mod park;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[path = "yield.rs"]
pub(crate) mod park;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::{memlock_limit, on_thread_exit, write_stderr};

#[cfg(not(unix))]
mod other;
#[cfg(not(unix))]
pub(crate) use other::{memlock_limit, on_thread_exit, write_stderr};

mod memory;
pub(crate) use memory::{available_memory, page_size, physical_memory};

mod random;
#[cfg(feature = "ucx")]
pub(crate) use random::random_bytes;
pub(crate) use random::random_seed;

/// Installs `prepare`, `parent` and `child` around every `fork` of the
/// process (`pthread_atfork`); where there is no fork (Miri, non-Unix),
/// nothing. The C library may allocate its record with its own malloc,
/// never through Rust's global allocator.
pub(crate) fn at_fork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    #[cfg(unimem_fork)]
    {
        // SAFETY: the handlers are `extern "C"` functions with no
        // arguments, as pthread_atfork expects, and `'static`.
        let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        debug_assert_eq!(rc, 0, "pthread_atfork failed");
    }
    #[cfg(not(unimem_fork))]
    let _ = (prepare, parent, child);
}
