//! Portable backend: page-aligned, zeroed memory from the system allocator.
//!
//! Used on platforms without a native backend and under Miri, so that Tape,
//! Grid and Heap run everywhere. Address space cannot be reserved
//! portably, so the whole capacity is allocated (zeroed) at reserve, and
//! committing is bookkeeping; decommitting zeroes the range, so that it
//! reads as zero when committed again, as fresh pages do. The memory is not
//! pinned and cannot be shared: [`Pinning::Required`] and `share` are
//! [`Error::Unsupported`].
//!
//! It allocates from [`System`] directly, never through the global allocator,
//! so a `#[global_allocator]` built on this crate does not recurse into itself.

use core::ptr::NonNull;
use std::alloc::{GlobalAlloc, Layout, System};
use std::io;

use super::{BlockOptions, Pinning, Platform, Reserved, Shared};
use crate::Error;

/// The portable backend has no export handle; this type has no values.
#[derive(Debug)]
pub enum Export {}

/// The layout the memory was allocated with.
pub(crate) struct Raw {
    layout: Layout,
}

/// Nothing to fault in: the memory came zeroed from the allocator.
///
/// # Safety
/// None needed; kept `unsafe` to match the native backends.
pub(crate) unsafe fn populate(_at: *mut u8, _len: usize) -> Result<(), Error> {
    Ok(())
}

/// Locks `len` bytes at `at`, faulting them in; whether it worked.
///
/// # Safety
/// The range is mapped and readable.
pub(crate) unsafe fn lock_pages(at: *mut u8, len: usize) -> bool {
    let _ = (at, len);
    false
}

/// Unlocks `len` bytes at `at`.
///
/// # Safety
/// As `lock_pages`.
pub(crate) unsafe fn unlock_pages(at: *mut u8, len: usize) {
    let _ = (at, len);
}

fn unsupported_lock() -> io::Error {
    io::Error::from(io::ErrorKind::Unsupported)
}

impl Platform for Raw {
    fn reserve(
        capacity: usize,
        granule: usize,
        align: usize,
        _open: usize,
        options: &BlockOptions<'_>,
    ) -> Result<Reserved, Error> {
        if options.pinning == Pinning::Required {
            return Err(Error::Unsupported {
                what: "pinning: the portable backend cannot lock pages; use Pinning::BestEffort",
            });
        }
        if options.shared {
            return Err(Error::Unsupported {
                what: "sharing: the portable backend has no export handle",
            });
        }
        if !options.inherit {
            return Err(Error::Unsupported {
                what: "keeping a Block out of forked children: the portable backend cannot",
            });
        }
        let layout =
            Layout::from_size_align(capacity, align.max(granule)).map_err(|_| Error::Overflow {
                requested: capacity,
            })?;
        // SAFETY: `capacity` is positive (`round_to` rejects zero).
        let ptr = unsafe { System.alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            return Err(Error::Os {
                call: "alloc_zeroed",
                source: io::ErrorKind::OutOfMemory.into(),
            });
        };
        Ok(Reserved {
            raw: Raw { layout },
            ptr,
            capacity,
            committed: 0,
            locked: 0,
            granule,
        })
    }

    unsafe fn map(&self, _base: NonNull<u8>, _from: usize, _to: usize) -> Result<(), Error> {
        Ok(())
    }

    unsafe fn lock(
        &self,
        _base: NonNull<u8>,
        _from: usize,
        _to: usize,
        _populate: bool,
    ) -> Result<(), io::Error> {
        Err(unsupported_lock())
    }

    unsafe fn populate(&self, _base: NonNull<u8>, _from: usize, _to: usize) -> Result<(), Error> {
        Ok(())
    }

    unsafe fn unmap(&self, base: NonNull<u8>, from: usize, to: usize) -> Result<(), Error> {
        // SAFETY: the caller's contract: `from..to` is inside our allocation
        // and nothing refers to it.
        unsafe { base.as_ptr().add(from).write_bytes(0, to - from) };
        Ok(())
    }

    fn can_unmap(&self) -> bool {
        true
    }

    unsafe fn discard(&self, base: NonNull<u8>, from: usize, to: usize) -> Result<(), Error> {
        // SAFETY: as `unmap`: discarded memory reads as zero.
        unsafe { self.unmap(base, from, to) }
    }

    fn can_discard(&self) -> bool {
        true
    }

    unsafe fn drop_pages(&self, base: NonNull<u8>, from: usize, to: usize) -> Result<bool, Error> {
        // SAFETY: as `discard`, which this is here (nothing is locked).
        unsafe { self.discard(base, from, to) }.map(|()| true)
    }

    fn share(&self) -> Result<Export, Error> {
        Err(Error::Unsupported {
            what: "sharing: the portable backend has no export handle",
        })
    }

    unsafe fn attach(
        export: Export,
        _options: &BlockOptions<'_>,
    ) -> Result<(Reserved, usize), Error> {
        match export {}
    }

    fn shared_size(&self) -> Result<Option<Shared>, Error> {
        Ok(None)
    }

    unsafe fn release(&mut self, ptr: NonNull<u8>, _capacity: usize) {
        // SAFETY: `ptr` came from `System.alloc_zeroed(self.layout)` in `reserve`.
        unsafe { System.dealloc(ptr.as_ptr(), self.layout) }
    }
}
