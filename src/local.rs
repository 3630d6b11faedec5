//! [`TapeLocal`]: one thread's bump pointer into a shared [`Tape`].

use core::alloc::Layout;
use core::cell::Cell;
use core::fmt;
use core::ptr::{self, NonNull};

use crate::Tape;
use crate::alloc::{Engine, Exhaustion};

/// One thread's handle on a shared [`Tape`]: it reserves chunks from the
/// Tape with one atomic operation each, then bumps inside the current chunk
/// with plain loads and stores.
///
/// Taking from a handle costs what a single-threaded bump allocator costs:
/// like bumpalo, it bumps downward from the chunk's end, which takes the
/// fewest instructions (one subtraction, one mask, one compare). The Tape's
/// cursor is touched once per chunk instead of once per take. The rest of a
/// chunk is left behind when the next one is reserved (at most one chunk per
/// refill). The newest allocation can be given back or shrunk in place, but
/// not grown in place (growth moves it). A handle is `Send` but not `Sync`:
/// make one per thread.
///
/// ```
/// use allocator_api2::vec::Vec;
/// use unimem::{BlockOptions, Pinning, Tape};
///
/// let tape = Tape::open_with(1 << 20, &BlockOptions::new().pinning(Pinning::BestEffort))?;
/// std::thread::scope(|s| {
///     for t in 0..4u32 {
///         let tape = &tape;
///         s.spawn(move || {
///             let local = tape.local();
///             let mut v = Vec::new_in(&local);
///             v.extend(0..1000 * t);
///             assert!(tape.owns(v.as_ptr()) || v.is_empty());
///         });
///     }
/// });
/// # Ok::<(), unimem::Error>(())
/// ```
pub struct TapeLocal<'t> {
    tape: &'t Tape,
    /// One past the free part of the current chunk: takes go just below it
    /// (null before the first chunk).
    next: Cell<*mut u8>,
    /// The current chunk's first byte (1 before the first chunk, so that
    /// every take fails over to a refill).
    start: Cell<usize>,
    chunk: usize,
}

// SAFETY: the handle owns its current chunk exclusively (nothing else was
// given those bytes), and `&Tape` is Send because Tape is Sync.
unsafe impl Send for TapeLocal<'_> {}

impl Tape {
    /// A per-thread handle that reserves [`TapeLocal::DEFAULT_CHUNK`] bytes
    /// at a time.
    pub fn local(&self) -> TapeLocal<'_> {
        self.local_with_chunk(TapeLocal::DEFAULT_CHUNK)
    }

    /// A per-thread handle that reserves `chunk` bytes at a time (or more,
    /// for a larger request).
    pub fn local_with_chunk(&self, chunk: usize) -> TapeLocal<'_> {
        TapeLocal {
            tape: self,
            next: Cell::new(ptr::null_mut()),
            start: Cell::new(1),
            chunk: chunk.max(1),
        }
    }
}

impl<'t> TapeLocal<'t> {
    /// The size of the chunks [`Tape::local`] reserves: 64 KiB.
    pub const DEFAULT_CHUNK: usize = 64 << 10;

    /// Takes `size` bytes aligned to `align` (a power of two), as
    /// [`Tape::take`] does, from this handle's chunk.
    #[inline]
    pub fn take(&self, size: usize, align: usize) -> Option<*mut u8> {
        if !align.is_power_of_two() {
            return None;
        }
        let next = self.next.get();
        if let Some(low) = next.addr().checked_sub(size) {
            let low = low & !(align - 1);
            if low >= self.start.get() && size != 0 {
                // `start <= low` and `low + size <= next`: inside the chunk.
                let taken = next.with_addr(low);
                self.next.set(taken);
                return Some(taken);
            }
        }
        self.refill(size, align)
    }

    /// Takes room for one `T`.
    #[inline]
    pub fn take_one<T>(&self) -> Option<*mut T> {
        self.take(size_of::<T>(), align_of::<T>())
            .map(<*mut u8>::cast)
    }

    /// Reserves a new chunk that holds the request, and takes from it (a
    /// zero-size take consumes nothing).
    #[cold]
    fn refill(&self, size: usize, align: usize) -> Option<*mut u8> {
        if size == 0 {
            return Some(ptr::without_provenance_mut(align));
        }
        let len = size.max(self.chunk);
        let start = self.tape.take(len, align.max(64))?;
        // `start` is aligned to `align`, so the take at the chunk's top,
        // rounded down, stays at or above it.
        let low = (start.addr() + len - size) & !(align - 1);
        let taken = start.with_addr(low);
        self.start.set(start.addr());
        self.next.set(taken);
        Some(taken)
    }

    /// The Tape this handle takes from.
    pub fn tape(&self) -> &'t Tape {
        self.tape
    }

    /// Bytes left in the current chunk.
    pub fn remaining(&self) -> usize {
        self.next.get().addr().saturating_sub(self.start.get())
    }
}

// SAFETY: takes come from chunks the Tape handed this handle alone, so they
// are disjoint from every other allocation; `owns` is the Tape's range check.
unsafe impl Engine for TapeLocal<'_> {
    #[inline]
    fn take(&self, layout: Layout) -> Option<NonNull<[u8]>> {
        let ptr = NonNull::new(TapeLocal::take(self, layout.size(), layout.align())?)?;
        Some(NonNull::slice_from_raw_parts(ptr, layout.size()))
    }

    #[inline]
    fn owns(&self, ptr: NonNull<u8>) -> bool {
        self.tape.owns(ptr.as_ptr())
    }

    #[inline]
    unsafe fn give(&self, ptr: NonNull<u8>, layout: Layout) -> bool {
        if !self.tape.owns(ptr.as_ptr()) {
            return false;
        }
        // The newest take of this chunk is the lowest: it can be given back.
        if ptr.as_ptr() == self.next.get() {
            self.next.set(ptr.as_ptr().wrapping_add(layout.size()));
        }
        true
    }

    #[inline]
    unsafe fn resize(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Option<NonNull<[u8]>> {
        // Below the newest take is the free part: shrinking keeps the
        // allocation where it is, growing would run into the one above it.
        (new.size() <= old.size()).then(|| NonNull::slice_from_raw_parts(ptr, new.size()))
    }

    fn exhaustion(&self) -> Exhaustion {
        self.tape.exhaustion()
    }
}

impl fmt::Debug for TapeLocal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TapeLocal")
            .field("chunk", &self.chunk)
            .field("remaining", &self.remaining())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlockOptions, Pinning};

    fn tape(bytes: usize) -> Tape {
        Tape::open_with(bytes, &BlockOptions::new().pinning(Pinning::BestEffort)).unwrap()
    }

    #[test]
    fn takes_come_from_chunks_of_the_tape() {
        let tape = tape(1 << 20);
        let local = tape.local_with_chunk(4096);
        let a = local.take(100, 8).unwrap();
        assert!(tape.owns(a));
        assert_eq!(tape.used(), 4096, "one chunk reserved");
        let b = local.take(100, 64).unwrap();
        assert_eq!(b.addr() % 64, 0);
        assert!(b.addr() + 100 <= a.addr(), "downward: below the first take");
        assert_eq!(tape.used(), 4096, "still the same chunk");
        let big = local.take(10_000, 8).unwrap();
        assert!(tape.owns(big.wrapping_add(9_999)));
        assert_eq!(local.take(8, 3), None);
        assert_eq!(local.take(0, 16).unwrap().addr(), 16);
    }

    #[test]
    fn exhaustion_is_none() {
        let tape = tape(8192);
        let local = tape.local_with_chunk(4096);
        assert!(local.take(4096, 1).is_some());
        assert!(local.take(4096, 1).is_some());
        assert_eq!(local.take(1, 1), None);
        assert_eq!(local.take(usize::MAX, 1), None);
    }

    #[test]
    fn threads_with_their_own_handles_never_overlap() {
        let tape = tape(8 << 20);
        let ranges: Vec<Vec<(usize, usize)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let tape = &tape;
                    s.spawn(move || {
                        let local = tape.local_with_chunk(1024);
                        let mut mine = Vec::new();
                        for i in 0..2000usize {
                            let size = 1 + (i * 13 + t) % 200;
                            let p = local.take(size, 1 << (i % 5)).unwrap();
                            // SAFETY: the range is ours alone.
                            unsafe { p.write_bytes(t as u8, size) };
                            mine.push((p.addr(), size));
                        }
                        mine
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all: Vec<(usize, usize)> = ranges.concat();
        all.sort_unstable();
        for pair in all.windows(2) {
            assert!(pair[0].0 + pair[0].1 <= pair[1].0, "overlap {pair:?}");
        }
    }
}
