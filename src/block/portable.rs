//! Portable backend: page-aligned, zeroed memory from the system allocator.
//!
//! Used on platforms without a native backend and under Miri, so that Tape,
//! Grid and Heap run everywhere. The memory is not pinned and cannot be
//! shared: [`Pinning::Required`] and `share` are [`Error::Unsupported`].
//!
//! It allocates from [`System`] directly, never through the global allocator,
//! so a `#[global_allocator]` built on this crate does not recurse into itself.

use core::ptr::NonNull;
use std::alloc::{GlobalAlloc, Layout, System};

use super::{Backend, BlockOptions, Pinning, Region, page_size};
use crate::Error;

/// The portable backend has no export handle; this type has no values.
#[derive(Debug)]
pub enum Export {}

/// The layout the memory was allocated with.
pub(crate) struct Raw {
    layout: Layout,
}

pub(crate) fn system_page_size() -> usize {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Ok(page) = usize::try_from(page) {
            if page.is_power_of_two() {
                return page;
            }
        }
    }
    // Platforms without sysconf: the page size of every common target.
    4096
}

impl Backend for Raw {
    fn open(size: usize, options: &BlockOptions<'_>) -> Result<Region, Error> {
        if options.pinning == Pinning::Required {
            return Err(Error::Unsupported {
                what: "pinning: the portable backend cannot lock pages; use Pinning::BestEffort",
            });
        }
        let layout = Layout::from_size_align(size, page_size())
            .map_err(|_| Error::Overflow { requested: size })?;
        // SAFETY: `size` is positive (`round_to_pages` rejects zero).
        let ptr = unsafe { System.alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            return Err(Error::Os {
                call: "alloc_zeroed",
                source: std::io::ErrorKind::OutOfMemory.into(),
            });
        };
        Ok(Region {
            ptr,
            size,
            pinned: false,
            raw: Raw { layout },
        })
    }

    fn share(&self) -> Result<Export, Error> {
        Err(Error::Unsupported {
            what: "sharing: the portable backend has no export handle",
        })
    }

    unsafe fn attach(export: Export, _options: &BlockOptions<'_>) -> Result<Region, Error> {
        match export {}
    }

    unsafe fn release(&mut self, ptr: NonNull<u8>, _size: usize) {
        // SAFETY: `ptr` came from `System.alloc_zeroed(self.layout)` in `open`.
        unsafe { System.dealloc(ptr.as_ptr(), self.layout) }
    }
}
