//! [`Bounce`]: a small aligned buffer that direct reads land in when their
//! destination cannot take them (an unaligned head or tail, or memory
//! that disagrees with the file's alignment); its bytes are then copied.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// A transparent huge page.
const HUGE: usize = 2 << 20;

/// Heap memory aligned for direct I/O, zeroed, owned.
pub(crate) struct Bounce {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: a uniquely owned heap buffer, like `Box<[u8]>`.
unsafe impl Send for Bounce {}

impl Bounce {
    /// `len` bytes (at least 1) aligned to `align` (a power of two). From
    /// 1 MiB on, whole 2 MiB-aligned transparent huge pages (asked for with
    /// `MADV_HUGEPAGE` before the first touch): a direct read into base
    /// pages is cut into many small requests (a virtio disk takes 254
    /// segments a request), and runs at a third of the speed.
    ///
    /// # Panics
    /// If the layout is invalid; aborts (as `Vec` does) if the allocation
    /// fails.
    pub(crate) fn new(len: usize, align: usize) -> Bounce {
        let huge = len >= HUGE / 2;
        let (len, align) = if huge {
            (len.next_multiple_of(HUGE), align.max(HUGE))
        } else {
            (len.max(1), align.max(4096))
        };
        let layout = Layout::from_size_align(len, align)
            .expect("a bounce buffer's size and alignment make a layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            alloc::handle_alloc_error(layout)
        };
        if huge {
            // SAFETY: advice on memory this buffer owns, before any touch;
            // failure (no transparent huge pages here) changes nothing.
            unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_HUGEPAGE) };
        }
        // SAFETY: `len` bytes owned; initialized here once, so that the
        // buffer can be borrowed as a slice.
        unsafe { ptr.as_ptr().write_bytes(0, len) };
        Bounce { ptr, layout }
    }

    /// The whole buffer.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: allocated (zeroed, so initialized) for `layout.size()`
        // bytes and owned by `self`.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }

    /// The first byte, for a read the kernel fills.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Bounce {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}
