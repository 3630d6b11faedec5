//! `GlobalAlloc` impls: thin adapters over [`crate::alloc`].
//!
//! With a `const` constructor (`Tape::lazy`, `Grid::lazy`) a static can be the
//! program's `#[global_allocator]`: its Block opens on the first allocation,
//! and nothing on these paths allocates through the global allocator.

/// Implements `GlobalAlloc` for one type.
macro_rules! impl_global_alloc {
    ([$($generics:tt)*] $ty:ty) => {
        const _: () = {
            use core::alloc::{GlobalAlloc, Layout};
            use core::ptr::{self, NonNull};

            // SAFETY: `crate::alloc` returns memory valid for the layout and
            // disjoint from every live allocation, or null; `dealloc` and
            // `realloc` route by address back to where the memory came from.
            unsafe impl<$($generics)*> GlobalAlloc for $ty {
                #[inline]
                unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                    crate::alloc::allocate_nonzero(self, layout).map_or(ptr::null_mut(), NonNull::as_ptr)
                }

                #[inline]
                unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                    crate::alloc::allocate_zeroed_nonzero(self, layout)
                        .map_or(ptr::null_mut(), NonNull::as_ptr)
                }

                #[inline]
                unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                    debug_assert!(!ptr.is_null());
                    // SAFETY: the trait's contract: `ptr` came from this
                    // allocator with `layout`, so it is not null and the
                    // size is not zero.
                    unsafe { crate::alloc::deallocate_nonzero(self, NonNull::new_unchecked(ptr), layout) }
                }

                #[inline]
                unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                    let (Some(ptr), Ok(new)) =
                        (NonNull::new(ptr), Layout::from_size_align(new_size, layout.align()))
                    else {
                        return ptr::null_mut();
                    };
                    // SAFETY: the trait's contract: `ptr` came from this
                    // allocator with `layout`; on failure it stays allocated.
                    unsafe { crate::alloc::reallocate(self, ptr, layout, new, false) }
                        .map_or(ptr::null_mut(), |block| block.cast::<u8>().as_ptr())
                }
            }
        };
    };
}

impl_global_alloc!([] crate::Tape);
impl_global_alloc!([const C: usize, const N: usize] crate::Grid<C, N>);
impl_global_alloc!([] crate::Heap);
