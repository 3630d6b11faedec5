//! The large-object paths: requests above 32 KiB are runs of 4 KiB units
//! from an arena's TLSF allocator (`runs.rs`), taken, freed, grown and
//! shrunk in place under the arena's lock.

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use super::arena::Arena;
use super::runs::UNIT;
use super::shared::HeapCore;
use crate::misuse;

impl HeapCore {
    /// A run for `layout`, its first `zeroed` bytes reading zero.
    pub(super) fn alloc_large(&self, layout: Layout, zeroed: usize) -> Option<NonNull<[u8]>> {
        let units = u32::try_from(layout.size().div_ceil(UNIT)).ok()?;
        let align = layout.align().max(UNIT);
        // More than any arena can hold: fail (or spill) now, without
        // opening every Block the limit allows first.
        if units as usize > self.max_units() {
            return None;
        }
        // A new arena needs room for the run at its alignment.
        let need = units as usize * UNIT + (align - UNIT);
        let (arena, unit) = self.take_from_arenas(need, |arena| {
            let unit = arena.alloc_run(units, align, zeroed)?;
            Some((arena, unit))
        })?;
        let bytes = units as usize * UNIT;
        self.hold(bytes);
        // Relaxed: statistics.
        self.large_in_use.fetch_add(bytes, Ordering::Relaxed);
        Some(NonNull::slice_from_raw_parts(arena.unit_ptr(unit), bytes))
    }

    /// Frees the large allocation at `ptr`; aborts if `ptr` starts no
    /// allocation (freed twice, or not one of ours).
    pub(super) fn free_large(&self, arena: &Arena, ptr: NonNull<u8>) {
        if !arena.offset(ptr.as_ptr()).is_multiple_of(UNIT) {
            not_a_run(ptr);
        }
        let Some(units) = arena.free_run(arena.unit_of(ptr.as_ptr()), |_| {}) else {
            not_a_run(ptr);
        };
        let bytes = units as usize * UNIT;
        self.release(bytes);
        // Relaxed: statistics.
        self.large_in_use.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Resizes the run at `ptr` in place for `new`. With `zero_from`, every
    /// byte of the result from there on reads zero: the old bytes are
    /// written, the units it grows by only where not known to be zero.
    ///
    /// # Safety
    /// `ptr` is a live large allocation of this heap, the caller's.
    pub(super) unsafe fn resize_large(
        &self,
        arena: &Arena,
        ptr: NonNull<u8>,
        new: Layout,
        zero_from: Option<usize>,
    ) -> Option<NonNull<[u8]>> {
        let units = u32::try_from(new.size().div_ceil(UNIT).max(1)).ok()?;
        let old = arena.resize_run(arena.unit_of(ptr.as_ptr()), units, zero_from.is_some())?;
        let (old, new_bytes) = (old as usize * UNIT, units as usize * UNIT);
        if let Some(from) = zero_from {
            let end = old.min(new_bytes);
            if from < end {
                // SAFETY: `from..end` lies in the run, which is the caller's
                // (the contract).
                unsafe { ptr.add(from).write_bytes(0, end - from) };
            }
        }
        // Relaxed below: statistics.
        if new_bytes > old {
            self.hold(new_bytes - old);
            self.large_in_use
                .fetch_add(new_bytes - old, Ordering::Relaxed);
        } else {
            self.release(old - new_bytes);
            self.large_in_use
                .fetch_sub(old - new_bytes, Ordering::Relaxed);
        }
        Some(NonNull::slice_from_raw_parts(ptr, new_bytes))
    }
}

/// A free of an address that starts no run: freed twice, or never ours.
#[cold]
#[inline(never)]
fn not_a_run(ptr: NonNull<u8>) -> ! {
    misuse::abort(
        "Heap",
        "free of a pointer that is not the start of a live allocation (double free?)",
        ptr.as_ptr().addr(),
    )
}
