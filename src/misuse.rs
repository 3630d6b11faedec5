//! What the allocators do when they catch misuse they cannot survive: a
//! pointer freed twice, or one that is not the start of an allocation.
//!
//! Going on would hand the same memory out twice, so the process aborts,
//! as glibc does (`free(): double free detected`), after one line on
//! standard error that names the allocator, the address and what is wrong.
//! The line is written without allocating (`stderr.rs`): the allocator may
//! be the global one, and its state is not to be trusted.

use core::fmt::Write;

use crate::stderr::Line;

/// Writes "unimem: <allocator>: <what> (address <addr>)" to standard error
/// and aborts the process.
#[cold]
#[inline(never)]
pub(crate) fn abort(allocator: &str, what: &str, addr: usize) -> ! {
    let mut line = Line::<256>::new();
    let _ = writeln!(line, "unimem: {allocator}: {what} (address {addr:#x})");
    line.emit();
    std::process::abort()
}
