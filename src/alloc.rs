//! What every allocator of this crate shares: the exhaustion policy, and the
//! routing between its own Blocks and the system allocator.
//!
//! Each allocator implements [`Engine`] with its own logic (inherent methods
//! do the work); the functions here add zero-size handling, spilling and
//! routing by address, and the trait impls in `api2.rs` and `global.rs` are
//! thin adapters over them.

use core::alloc::Layout;
use core::ptr::{self, NonNull};
use std::alloc::{GlobalAlloc, System};

/// What an allocator does when its Blocks cannot serve a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Exhaustion {
    /// Fail the request: `None`, `AllocError`, or a null pointer from
    /// `GlobalAlloc` (the standard allocation-error path then runs). The default.
    #[default]
    Fail,
    /// Serve it from the system allocator. Deallocation routes by address, so
    /// spilled memory goes back to the system allocator.
    Spill,
}

/// One allocator's own logic, over its own Blocks.
///
/// # Safety
/// `take` returns memory that is valid for `layout` and disjoint from every
/// other live allocation; `owns` is true for every pointer `take` returned
/// until it is given back, and false for memory from the system allocator.
pub(crate) unsafe trait Engine {
    /// Serves `layout` (non-zero size) from the Blocks on the hot path; the
    /// slice is the usable size. `None` sends the request to `take_slow`.
    fn take(&self, layout: Layout) -> Option<NonNull<[u8]>>;

    /// The rest of `take`, out of line; `None`: the Blocks cannot serve it.
    fn take_slow(&self, _layout: Layout) -> Option<NonNull<[u8]>> {
        None
    }

    /// As `take`, with the returned bytes zero: all of them when `all`, else
    /// the first `layout.size()`. An engine that knows which of its memory
    /// reads zero already (pages the system provided and nothing wrote
    /// since) zeroes only the rest, and leaves untouched pages untouched.
    #[inline(always)]
    fn take_zeroed(&self, layout: Layout, all: bool) -> Option<NonNull<[u8]>> {
        let block = self.take(layout)?;
        // SAFETY: `take` returned `block.len()` writable bytes.
        unsafe { zero(block.cast(), if all { block.len() } else { layout.size() }) };
        Some(block)
    }

    /// The rest of `take_zeroed`, out of line, as `take_slow`.
    fn take_zeroed_slow(&self, layout: Layout, all: bool) -> Option<NonNull<[u8]>> {
        let block = self.take_slow(layout)?;
        // SAFETY: `take_slow` returned `block.len()` writable bytes.
        unsafe { zero(block.cast(), if all { block.len() } else { layout.size() }) };
        Some(block)
    }

    /// Whether `ptr` lies in one of the allocator's Blocks.
    fn owns(&self, ptr: NonNull<u8>) -> bool;

    /// Gives back memory that `take` returned, on the hot path; returns
    /// whether it did. `false` sends the pointer to `give_slow`.
    ///
    /// # Safety
    /// `ptr` came from `take` on `self` with a layout that `layout` fits (same
    /// alignment, size between the requested and the usable size), or from
    /// the system allocator with `layout`; it is not used afterwards.
    unsafe fn give(&self, ptr: NonNull<u8>, layout: Layout) -> bool;

    /// The rest of `give`, out of line: `false` means `ptr` is not in the
    /// Blocks (it was spilled).
    ///
    /// # Safety
    /// As `give`.
    unsafe fn give_slow(&self, _ptr: NonNull<u8>, _layout: Layout) -> bool {
        false
    }

    /// Resizes the allocation at `ptr` from `old` to `new` without moving it,
    /// or says it cannot. `new.align()` is already satisfied by `ptr`.
    ///
    /// # Safety
    /// As `give`, for `ptr` and `old`.
    unsafe fn resize(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Option<NonNull<[u8]>>;

    /// As `resize`, with every byte of the returned block from `old.size()`
    /// on reading zero (written only where not known to be zero already).
    ///
    /// # Safety
    /// As `resize`.
    unsafe fn resize_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Option<NonNull<[u8]>> {
        // SAFETY: the caller's contract.
        let block = unsafe { self.resize(ptr, old, new) }?;
        if block.len() > old.size() {
            // SAFETY: the block holds `block.len()` bytes; those past the
            // old size are to read as zero.
            unsafe { zero(ptr.add(old.size()), block.len() - old.size()) };
        }
        Some(block)
    }

    /// The policy for requests the Blocks cannot serve.
    fn exhaustion(&self) -> Exhaustion;

    /// Counts bytes that went to (positive) or came back from (negative) the
    /// system allocator.
    fn note_spill(&self, _bytes: isize) {}
}

/// What the bytes of a new allocation must be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// Anything.
    Any,
    /// Zero up to the size asked for (`GlobalAlloc::alloc_zeroed`).
    Zero,
    /// Zero to the end of the returned slice (`Allocator::allocate_zeroed`).
    ZeroAll,
}

/// Writes `len` zeros at `ptr`.
///
/// # Safety
/// `ptr` is valid for writes of `len` bytes.
#[inline(always)]
unsafe fn zero(ptr: NonNull<u8>, len: usize) {
    // SAFETY: the caller's contract.
    unsafe { ptr::write_bytes(ptr.as_ptr(), 0, len) };
}

/// A well-aligned, dangling pointer for a zero-size allocation.
#[inline]
fn dangling(layout: Layout) -> NonNull<[u8]> {
    // SAFETY: `Layout` guarantees a non-zero alignment.
    let ptr = unsafe { NonNull::new_unchecked(ptr::without_provenance_mut::<u8>(layout.align())) };
    NonNull::slice_from_raw_parts(ptr, 0)
}

#[inline]
pub(crate) fn allocate<E: Engine + ?Sized>(engine: &E, layout: Layout) -> Option<NonNull<[u8]>> {
    if layout.size() == 0 {
        return Some(dangling(layout));
    }
    match engine.take(layout) {
        Some(block) => Some(block),
        None => allocate_slow(engine, layout, Fill::Any),
    }
}

/// What `take` did not serve: the engine's slow path, then spilling. Out of
/// line, so that the hot paths keep nothing alive across it.
#[inline(never)]
fn allocate_slow<E: Engine + ?Sized>(
    engine: &E,
    layout: Layout,
    fill: Fill,
) -> Option<NonNull<[u8]>> {
    let block = match fill {
        Fill::Any => engine.take_slow(layout),
        Fill::Zero => engine.take_zeroed_slow(layout, false),
        Fill::ZeroAll => engine.take_zeroed_slow(layout, true),
    };
    match block {
        Some(block) => Some(block),
        None => spill(engine, layout, fill != Fill::Any),
    }
}

/// What `give` did not take back: the engine's slow path, else memory that
/// was spilled. Out of line, as `allocate_slow`.
///
/// # Safety
/// As `deallocate`.
#[inline(never)]
unsafe fn deallocate_slow<E: Engine + ?Sized>(engine: &E, ptr: NonNull<u8>, layout: Layout) {
    // SAFETY: the caller's contract.
    if !unsafe { engine.give_slow(ptr, layout) } {
        engine.note_spill(-(layout.size() as isize));
        // SAFETY: not in the Blocks, so `spill` allocated it from System with
        // this layout.
        unsafe { System.dealloc(ptr.as_ptr(), layout) }
    }
}

#[cold]
fn spill<E: Engine + ?Sized>(engine: &E, layout: Layout, zeroed: bool) -> Option<NonNull<[u8]>> {
    if engine.exhaustion() != Exhaustion::Spill {
        return None;
    }
    // SAFETY: `layout` has a non-zero size (checked by the callers).
    let ptr = unsafe {
        if zeroed {
            System.alloc_zeroed(layout)
        } else {
            System.alloc(layout)
        }
    };
    let ptr = NonNull::new(ptr)?;
    debug_assert!(!engine.owns(ptr));
    engine.note_spill(layout.size() as isize);
    Some(NonNull::slice_from_raw_parts(ptr, layout.size()))
}

/// `allocate` for `GlobalAlloc`, whose callers never ask for zero bytes.
#[inline]
pub(crate) fn allocate_nonzero<E: Engine + ?Sized>(
    engine: &E,
    layout: Layout,
) -> Option<NonNull<u8>> {
    debug_assert_ne!(layout.size(), 0, "GlobalAlloc::alloc with a zero size");
    match engine.take(layout) {
        Some(block) => Some(block.cast()),
        None => allocate_slow(engine, layout, Fill::Any).map(NonNull::cast),
    }
}

/// `deallocate` for `GlobalAlloc`, whose callers never free zero bytes.
///
/// # Safety
/// As `deallocate`.
#[inline]
pub(crate) unsafe fn deallocate_nonzero<E: Engine + ?Sized>(
    engine: &E,
    ptr: NonNull<u8>,
    layout: Layout,
) {
    debug_assert_ne!(layout.size(), 0, "GlobalAlloc::dealloc with a zero size");
    // SAFETY: the caller's contract.
    if !unsafe { engine.give(ptr, layout) } {
        // SAFETY: as above.
        unsafe { deallocate_slow(engine, ptr, layout) }
    }
}

/// `Allocator::allocate_zeroed`: the whole returned slice is zero, as the
/// trait promises, not only the bytes asked for (a Grid cell or a Heap size
/// class can be longer).
#[inline]
pub(crate) fn allocate_zeroed<E: Engine + ?Sized>(
    engine: &E,
    layout: Layout,
) -> Option<NonNull<[u8]>> {
    if layout.size() == 0 {
        return Some(dangling(layout));
    }
    // Blocks reuse memory (after a rewind, a clear or a free): the engine
    // writes the bytes it does not know to be zero.
    match engine.take_zeroed(layout, true) {
        Some(block) => Some(block),
        None => allocate_slow(engine, layout, Fill::ZeroAll),
    }
}

/// `GlobalAlloc::alloc_zeroed`, whose caller gets a pointer, not a slice:
/// the bytes asked for are zero.
#[inline]
pub(crate) fn allocate_zeroed_nonzero<E: Engine + ?Sized>(
    engine: &E,
    layout: Layout,
) -> Option<NonNull<u8>> {
    debug_assert_ne!(
        layout.size(),
        0,
        "GlobalAlloc::alloc_zeroed with a zero size"
    );
    match engine.take_zeroed(layout, false) {
        Some(block) => Some(block.cast()),
        None => allocate_slow(engine, layout, Fill::Zero).map(NonNull::cast),
    }
}

/// # Safety
/// `ptr` was allocated through the functions of this module with `engine`,
/// with a layout that `layout` fits.
#[inline]
pub(crate) unsafe fn deallocate<E: Engine + ?Sized>(engine: &E, ptr: NonNull<u8>, layout: Layout) {
    if layout.size() == 0 {
        return;
    }
    // SAFETY: the caller's contract.
    if !unsafe { engine.give(ptr, layout) } {
        // SAFETY: as above.
        unsafe { deallocate_slow(engine, ptr, layout) }
    }
}

/// Grows or shrinks, in place where the engine can, else by moving.
///
/// # Safety
/// As `deallocate` for `ptr` and `old`; the trait callers check that `new` is
/// larger (grow) or smaller (shrink).
#[inline]
pub(crate) unsafe fn reallocate<E: Engine + ?Sized>(
    engine: &E,
    ptr: NonNull<u8>,
    old: Layout,
    new: Layout,
    zeroed: bool,
) -> Option<NonNull<[u8]>> {
    if old.size() == 0 {
        return if zeroed {
            allocate_zeroed(engine, new)
        } else {
            allocate(engine, new)
        };
    }
    if new.size() == 0 {
        // SAFETY: the caller's contract.
        unsafe { deallocate(engine, ptr, old) };
        return Some(dangling(new));
    }
    let aligned = ptr.as_ptr().addr() & (new.align() - 1) == 0;
    if engine.owns(ptr) {
        if aligned {
            // SAFETY: the caller's contract; `owns` says it came from `take`.
            let resized = unsafe {
                if zeroed {
                    engine.resize_zeroed(ptr, old, new)
                } else {
                    engine.resize(ptr, old, new)
                }
            };
            if let Some(block) = resized {
                return Some(block);
            }
        }
    } else if aligned && new.align() == old.align() {
        // Spilled memory stays with the system allocator.
        // SAFETY: `ptr` came from System with `old`; `new.size()` is non-zero.
        let moved = NonNull::new(unsafe { System.realloc(ptr.as_ptr(), old, new.size()) })?;
        engine.note_spill(new.size() as isize - old.size() as isize);
        if zeroed && new.size() > old.size() {
            // SAFETY: the reallocation holds `new.size()` bytes.
            unsafe { ptr::write_bytes(moved.as_ptr().add(old.size()), 0, new.size() - old.size()) };
        }
        return Some(NonNull::slice_from_raw_parts(moved, new.size()));
    }
    let moved = if zeroed {
        allocate_zeroed(engine, new)?
    } else {
        allocate(engine, new)?
    };
    // SAFETY: both are live and distinct; the smaller size is inside both.
    unsafe {
        ptr::copy_nonoverlapping(
            ptr.as_ptr(),
            moved.cast::<u8>().as_ptr(),
            old.size().min(new.size()),
        );
        deallocate(engine, ptr, old);
    }
    Some(moved)
}
