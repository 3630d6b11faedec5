//! The one line a process writes when `mlock` is first refused, and the
//! one it writes when `mbind` is first refused.
//!
//! Pinning fails for ordinary users at `RLIMIT_MEMLOCK` (often 8 MiB), and
//! it may fail inside a global allocator before `main`, where nothing can be
//! returned to anyone. So the first refusal in the process writes one line
//! to standard error: what was asked, the limit, how to raise it, and what
//! happens now. It is formatted on the stack and written with `write(2)`:
//! nothing here allocates (`std::io::Error`'s `Display` would, for the
//! message of the errno).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};
use std::io;

use crate::Error;
use crate::error::{HOW_TO_ALLOW_MBIND, HOW_TO_RAISE};
use crate::stderr::Line;

/// Whether the line was written already.
static TOLD: AtomicBool = AtomicBool::new(false);

/// Whether the line about a refused `mbind` was written already.
static TOLD_PLACEMENT: AtomicBool = AtomicBool::new(false);

/// The errno's name, for the common ones.
pub(crate) fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        1 => "EPERM",
        #[cfg(target_os = "linux")]
        38 => "ENOSYS",
        11 => "EAGAIN",
        12 => "ENOMEM",
        22 => "EINVAL",
        _ => return None,
    })
}

/// A refused `mlock` of `bytes`, with the limit at this moment.
pub(crate) fn pin_error(bytes: usize, source: io::Error) -> Error {
    Error::Pin {
        bytes,
        limit: memlock_limit(),
        source,
    }
}

/// The locked-memory limit: the soft limit, in bytes (`None`: unlimited or
/// unknown).
pub(crate) fn memlock_limit() -> Option<u64> {
    crate::sys::memlock_limit()
}

/// Writes "<bytes> bytes (ENOMEM)" and the limit, shared by the line and the
/// error's message.
pub(crate) fn describe(out: &mut impl Write, bytes: usize, errno: Option<i32>) -> fmt::Result {
    write!(out, "mlock refused to pin {bytes} bytes")?;
    if let Some(errno) = errno {
        match errno_name(errno) {
            Some(name) => write!(out, " ({name})")?,
            None => write!(out, " (errno {errno})")?,
        }
    }
    match memlock_limit() {
        Some(limit) => write!(out, "; RLIMIT_MEMLOCK is {limit} bytes"),
        None => write!(out, "; RLIMIT_MEMLOCK is unlimited"),
    }
}

/// Tells standard error, once per process, that `mlock` of `bytes` was
/// refused with `source`, and whether the commit fails (`required`) or goes
/// on unpinned.
pub(crate) fn refusal(bytes: usize, source: &io::Error, required: bool) {
    if source.kind() == io::ErrorKind::Unsupported {
        // The portable backend: there is nothing to raise.
        return;
    }
    // Relaxed: only "once" matters; the line carries no data to anyone.
    if TOLD.swap(true, Ordering::Relaxed) {
        return;
    }
    let mut line = Line::<768>::new();
    let _ = line.write_str("unimem: ");
    let _ = describe(&mut line, bytes, source.raw_os_error());
    let _ = write!(line, ". To pin more, {HOW_TO_RAISE}. ");
    let _ = line.write_str(if required {
        "The commit fails (Pinning::Required): the allocation that needed it fails or \
         spills; Pinning::BestEffort goes on unpinned instead.\n"
    } else {
        "Going on unpinned (Pinning::BestEffort; BlockOptions::quiet(true) silences this).\n"
    });
    line.emit();
}

/// Tells standard error, once per process, that `mbind` to `node` was
/// refused with `source`, and whether the commit fails (`required`) or goes
/// on with the kernel's default placement.
pub(crate) fn placement_refusal(node: u32, source: &io::Error, required: bool) {
    // Relaxed: only "once" matters, as for `TOLD`.
    if TOLD_PLACEMENT.swap(true, Ordering::Relaxed) {
        return;
    }
    let mut line = Line::<768>::new();
    let _ = write!(
        line,
        "unimem: mbind refused to bind a Block to NUMA node {node}"
    );
    if let Some(errno) = source.raw_os_error() {
        match errno_name(errno) {
            Some(name) => {
                let _ = write!(line, " ({name})");
            }
            None => {
                let _ = write!(line, " (errno {errno})");
            }
        }
    }
    let _ = write!(
        line,
        ": this system forbids memory policies (or its kernel has none). To place memory, \
         {HOW_TO_ALLOW_MBIND}. "
    );
    let _ = line.write_str(if required {
        "The allocation that needed the memory fails or spills (Placement::Required); \
         Placement::BestEffort goes on unplaced instead.\n"
    } else {
        "Going on with the kernel's default placement (Placement::BestEffort; \
         BlockOptions::quiet(true) silences this).\n"
    });
    line.emit();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_names_bytes_errno_and_limit() {
        let mut line = Line::<256>::new();
        describe(&mut line, 4096, Some(12)).unwrap();
        let text = core::str::from_utf8(line.as_bytes()).unwrap();
        assert!(
            text.starts_with("mlock refused to pin 4096 bytes (ENOMEM)"),
            "{text}"
        );
        assert!(text.contains("RLIMIT_MEMLOCK is"), "{text}");
    }
}
