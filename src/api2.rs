//! `Allocator` impls: thin adapters over [`crate::alloc`].
//!
//! The 0.2 series of `allocator-api2` is always implemented (hashbrown 0.17
//! takes it); the 0.4 series behind the `allocator-api2-04` feature and the
//! unstable `core::alloc::Allocator` behind `nightly`. With the blanket
//! `impl Allocator for &A`, `Vec::new_in(&tape)` works with each of them.

/// Implements one `Allocator` trait (given by its module path) for one type.
macro_rules! impl_allocator {
    ($api:path => [$($generics:tt)*] $ty:ty) => {
        const _: () = {
            use core::alloc::Layout;
            use core::ptr::NonNull;
            use $api::{AllocError, Allocator};

            // SAFETY: `crate::alloc` returns memory valid for the layout and
            // disjoint from every live allocation (the `Engine` contract), keeps
            // contents on grow and shrink, and routes deallocation back to where
            // the memory came from. The memory stays valid while `self` lives.
            unsafe impl<$($generics)*> Allocator for $ty {
                #[inline]
                fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
                    crate::alloc::allocate(self, layout).ok_or(AllocError)
                }

                #[inline]
                fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
                    crate::alloc::allocate_zeroed(self, layout).ok_or(AllocError)
                }

                #[inline]
                unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
                    // SAFETY: the trait's contract: `ptr` is currently
                    // allocated by `self` with a layout that `layout` fits.
                    unsafe { crate::alloc::deallocate(self, ptr, layout) }
                }

                #[inline]
                unsafe fn grow(
                    &self,
                    ptr: NonNull<u8>,
                    old: Layout,
                    new: Layout,
                ) -> Result<NonNull<[u8]>, AllocError> {
                    debug_assert!(new.size() >= old.size());
                    // SAFETY: as `deallocate`.
                    unsafe { crate::alloc::reallocate(self, ptr, old, new, false) }.ok_or(AllocError)
                }

                #[inline]
                unsafe fn grow_zeroed(
                    &self,
                    ptr: NonNull<u8>,
                    old: Layout,
                    new: Layout,
                ) -> Result<NonNull<[u8]>, AllocError> {
                    debug_assert!(new.size() >= old.size());
                    // SAFETY: as `deallocate`.
                    unsafe { crate::alloc::reallocate(self, ptr, old, new, true) }.ok_or(AllocError)
                }

                #[inline]
                unsafe fn shrink(
                    &self,
                    ptr: NonNull<u8>,
                    old: Layout,
                    new: Layout,
                ) -> Result<NonNull<[u8]>, AllocError> {
                    debug_assert!(new.size() <= old.size());
                    // SAFETY: as `deallocate`.
                    unsafe { crate::alloc::reallocate(self, ptr, old, new, false) }.ok_or(AllocError)
                }
            }
        };
    };
}

/// Implements every enabled `Allocator` trait for one type.
macro_rules! impl_allocators {
    ([$($generics:tt)*] $ty:ty) => {
        impl_allocator!(allocator_api2::alloc => [$($generics)*] $ty);
        #[cfg(feature = "allocator-api2-04")]
        impl_allocator!(allocator_api2_04::alloc => [$($generics)*] $ty);
        #[cfg(feature = "nightly")]
        impl_allocator!(core::alloc => [$($generics)*] $ty);
    };
}

impl_allocators!([] crate::Tape);
impl_allocators!([const C: usize, const N: usize] crate::Grid<C, N>);
impl_allocators!([] crate::Heap);
impl_allocators!(['a] crate::TapeLocal<'a>);
