//! [`Tape`]: a lock-free bump allocator over one Block, committing it as the
//! cursor grows.

use core::alloc::Layout;
use core::fmt;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

use crate::alloc::{Engine, Exhaustion};
use crate::lazy::LazyBlock;
use crate::{Block, BlockOptions, Error, Region};

/// A bump allocator over one pinned [`Block`]: `take` moves a cursor forward,
/// [`clear`](Tape::clear) moves it back to the start.
///
/// The cursor is an offset into the Block, advanced with a compare-exchange
/// loop, so any number of threads take at once without locks. Alignment
/// applies to the address returned, for any power of two that fits in the
/// Block. Memory is reclaimed all at once by `clear`, and the newest
/// allocation alone can be given back, grown or shrunk in place (through the
/// [`Allocator`](allocator_api2::alloc::Allocator) impl).
///
/// The Block's capacity is reserved address space; a take inside the
/// committed part is one compare-exchange, and the take that crosses the
/// committed end first commits the next [`COMMIT_STEP`](Tape::COMMIT_STEP)
/// (or what the request needs) in place, under the Block's commit lock. So a
/// Tape of any capacity costs the memory its takes reach.
///
/// ```
/// use unimem::{BlockOptions, Pinning, Tape};
///
/// let mut tape = Tape::open_with(1 << 20, &BlockOptions::new().pinning(Pinning::BestEffort))?;
/// let a = tape.take(100, 64).expect("room for 100 bytes");
/// assert_eq!(a as usize % 64, 0);
/// assert!(tape.owns(a));
/// assert!(tape.used() >= 100);
/// tape.clear();
/// assert_eq!(tape.used(), 0);
/// # Ok::<(), unimem::Error>(())
/// ```
pub struct Tape {
    /// Offset of the first free byte. Written by every taker, so it sits on a
    /// cache line of its own.
    cursor: CachePadded<AtomicUsize>,
    block: LazyBlock,
    exhaustion: Exhaustion,
}

impl Tape {
    /// How much a Tape commits at a time as it grows: 2 MiB (one transparent
    /// huge page), or what one take needs, up to the capacity.
    pub const COMMIT_STEP: usize = crate::block::COMMIT_STEP;

    /// Opens a Block of at least `bytes` bytes, all committed, and a Tape
    /// over it, with the default [`BlockOptions`] (pinned where the
    /// locked-memory limit allows).
    pub fn open(bytes: usize) -> Result<Tape, Error> {
        Tape::open_with(bytes, &BlockOptions::new())
    }

    /// As [`Tape::open`], opening the Block with `options`: with
    /// [`BlockOptions::capacity`] larger than `bytes`, the Tape commits
    /// `bytes` now and grows in place up to the capacity.
    pub fn open_with(bytes: usize, options: &BlockOptions<'_>) -> Result<Tape, Error> {
        Ok(Tape::from_block(Block::open_with(bytes, options)?))
    }

    /// A Tape over an open Block (one attached from another process, for
    /// instance). The Tape takes from its first byte.
    pub fn from_block(block: Block) -> Tape {
        Tape {
            cursor: CachePadded::new(AtomicUsize::new(0)),
            block: LazyBlock::ready(block),
            exhaustion: Exhaustion::Fail,
        }
    }

    /// A Tape whose Block of `bytes` bytes is reserved on first use and
    /// committed as takes reach it: the constructor for `#[global_allocator]`
    /// statics. Any capacity starts in constant time and memory.
    ///
    /// The Block's options are [`BlockOptions::lazy`]: pinned where
    /// `RLIMIT_MEMLOCK` allows, and past it unpinned, with one line on
    /// standard error saying so ([`Pinning::BestEffort`](crate::Pinning)).
    ///
    /// ```
    /// use unimem::Tape;
    ///
    /// static SCRATCH: Tape = Tape::lazy(1 << 40); // 1 TiB of address space
    /// let p = SCRATCH.take(64, 8).unwrap();
    /// assert!(SCRATCH.owns(p));
    /// assert_eq!(SCRATCH.committed(), Tape::COMMIT_STEP);
    /// ```
    pub const fn lazy(bytes: usize) -> Tape {
        Tape::lazy_with(bytes, BlockOptions::lazy())
    }

    /// As [`Tape::lazy`], with options for the Block.
    pub const fn lazy_with(bytes: usize, options: BlockOptions<'static>) -> Tape {
        Tape {
            cursor: CachePadded::new(AtomicUsize::new(0)),
            block: LazyBlock::new(bytes, options),
            exhaustion: Exhaustion::Fail,
        }
    }

    /// Sets what allocations through the allocator traits do once the Block is
    /// full (or could not be opened): fail (the default) or spill to the
    /// system allocator. [`take`](Tape::take) itself never spills.
    pub const fn on_exhaustion(mut self, exhaustion: Exhaustion) -> Tape {
        self.exhaustion = exhaustion;
        self
    }

    /// Shorthand for `on_exhaustion(Exhaustion::Spill)`.
    pub const fn spill(self) -> Tape {
        self.on_exhaustion(Exhaustion::Spill)
    }

    /// Takes `size` bytes aligned to `align` (a power of two).
    ///
    /// Returns `None` when `align` is not a power of two, when the request
    /// does not fit in what is left, when the memory it needs cannot be
    /// committed (pinning required and refused), or when a lazy Tape's Block
    /// cannot be reserved. A zero-size take succeeds with a dangling, aligned
    /// pointer and consumes nothing. The memory stays valid until
    /// [`clear`](Tape::clear) or the Tape's drop; its contents are
    /// unspecified (zero on first use).
    #[inline]
    pub fn take(&self, size: usize, align: usize) -> Option<*mut u8> {
        if !align.is_power_of_two() {
            return None;
        }
        if size == 0 {
            return Some(ptr::without_provenance_mut(align));
        }
        let block = match self.block.get() {
            Some(block) => block,
            None => self.block.force().ok()?,
        };
        let (start, _) = self.bump(block, size, align)?;
        // SAFETY: `bump` keeps `start + size` within what is committed.
        Some(unsafe { block.as_ptr().add(start) })
    }

    /// Takes room for one `T`, aligned for it.
    #[inline]
    pub fn take_one<T>(&self) -> Option<*mut T> {
        self.take(size_of::<T>(), align_of::<T>())
            .map(<*mut u8>::cast)
    }

    /// Advances the cursor past `size` bytes aligned to `align`, inside the
    /// committed part of the Block (committing more first if needed);
    /// returns the start and end offsets.
    #[inline]
    fn bump(&self, block: &Block, size: usize, align: usize) -> Option<(usize, usize)> {
        let base = block.as_ptr().addr();
        // Relaxed: only a first guess; the compare-exchange below checks it.
        let mut cursor = self.cursor.load(Ordering::Relaxed);
        loop {
            // Alignment applies to the address: `pad` bytes take base + cursor
            // to the next multiple of `align`. `base + cursor` cannot overflow
            // because the reservation itself fits in the address space.
            let pad = (base + cursor).wrapping_neg() & (align - 1);
            let start = cursor.checked_add(pad)?;
            let end = start.checked_add(size)?;
            // `committed` only grows while `&self` lives (decommitting takes
            // `&mut self`), so a range below it stays committed.
            if end > block.committed() {
                if !block.grow_to(end) {
                    return None;
                }
                // Relaxed: as above; others may have taken meanwhile.
                cursor = self.cursor.load(Ordering::Relaxed);
                continue;
            }
            // Success is AcqRel: Acquire pairs with the Release of the
            // compare-exchange in `rewind`/`resize_in_place` that last moved
            // the cursor back, so the bytes a previous owner wrote before
            // giving them back happen-before our use of them; Release orders
            // our own earlier writes before any later rewind by another
            // thread. Failure is Relaxed: we only retry with the value seen.
            match self.cursor.compare_exchange_weak(
                cursor,
                end,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some((start, end)),
                Err(seen) => cursor = seen,
            }
        }
    }

    /// Bytes taken so far, alignment padding included.
    pub fn used(&self) -> usize {
        // Relaxed: a snapshot; exact whenever no other thread is taking.
        self.cursor.load(Ordering::Relaxed)
    }

    /// Bytes left: `total() - used()`.
    pub fn free(&self) -> usize {
        self.total().saturating_sub(self.used())
    }

    /// The Block's capacity: what the Tape can take in all (a lazy Tape
    /// reserves its Block; 0 if it cannot).
    pub fn total(&self) -> usize {
        self.block.force().map_or(0, |block| block.capacity())
    }

    /// Bytes of the Block committed so far (0 before a lazy Tape's first
    /// take).
    pub fn committed(&self) -> usize {
        self.block.get().map_or(0, |block| block.committed())
    }

    /// Whether `ptr` points into this Tape's Block.
    #[inline]
    pub fn owns<T: ?Sized>(&self, ptr: *const T) -> bool {
        self.block
            .get()
            .is_some_and(|block| block.contains(ptr.cast()))
    }

    /// The Block's address, sizes and handle (a lazy Tape reserves its Block).
    ///
    /// # Panics
    /// If this is a lazy Tape whose Block cannot be reserved; see
    /// [`try_block`](Tape::try_block).
    pub fn block(&self) -> &Region {
        match self.try_block() {
            Ok(region) => region,
            Err(error) => panic!("the Tape's Block could not be opened: {error}"),
        }
    }

    /// The Blocks that hold the Tape's allocations: its one Block (a
    /// lazy Tape reserves it), or none if it cannot be reserved. The same
    /// list as [`Heap::blocks`](crate::Heap::blocks) gives for a Heap.
    pub fn blocks(&self) -> Vec<&Region> {
        self.try_block().into_iter().collect()
    }

    /// The Block's address, sizes and handle, or why a lazy Tape's Block
    /// could not be reserved. Whether it is pinned is
    /// [`Region::is_pinned`]; a refused `mlock` was also told on standard
    /// error once.
    pub fn try_block(&self) -> Result<&Region, &Error> {
        self.block.force().map(|block| &**block)
    }

    /// `clear` through a shared reference, for owners that prove by other
    /// means that nothing of the Tape is alive ([`Model`](crate::Model)'s
    /// guards).
    ///
    /// # Safety
    /// No allocation of the Tape is alive or used again, and no other
    /// thread takes from it during the call.
    pub(crate) unsafe fn clear_shared(&self) {
        self.before_reuse();
        // Release: pairs with the Acquire of the next take's compare-exchange
        // (`move_cursor`, `bump`), so that what was done with the old
        // allocations happens before their bytes are handed out again.
        self.cursor.store(0, Ordering::Release);
    }

    /// Forgets every allocation: the next take starts at the Block's first
    /// byte again. Takes `&mut self`, so no allocation (and no collection
    /// borrowing the Tape) can outlive it. What is committed stays
    /// committed; see [`clear_to`](Tape::clear_to).
    pub fn clear(&mut self) {
        self.before_reuse();
        *self.cursor.get_mut() = 0;
    }

    /// Waits until no device registration uses the Tape's memory any more
    /// (a copy still in flight from a CUDA `HostBuffer` that was leaked):
    /// what `clear` hands out again must not be read or written by a device
    /// meanwhile.
    fn before_reuse(&self) {
        if let Some(block) = self.block.get() {
            block.reuse();
        }
    }

    /// [`clear`](Tape::clear), and gives back what is committed past the
    /// first `keep` bytes: the pages are unlocked and returned to the system,
    /// and committed again when takes reach them.
    ///
    /// The cursor is cleared whatever happens. Errors: a shared Block
    /// ([`Error::Unsupported`]) or one registered with a device
    /// ([`Error::Registered`]), which keep their pages.
    pub fn clear_to(&mut self, keep: usize) -> Result<(), Error> {
        self.clear();
        match self.block.get() {
            // SAFETY: `&mut self`: no allocation of the Tape is alive, and
            // no other thread can take from it.
            Some(block) => unsafe { block.decommit_to(keep) },
            None => Ok(()),
        }
    }

    /// The exhaustion policy chosen at construction.
    pub fn exhaustion(&self) -> Exhaustion {
        self.exhaustion
    }

    /// Offset of `ptr` in the open Block.
    #[inline]
    fn offset(block: &Block, ptr: NonNull<u8>) -> usize {
        ptr.as_ptr().addr() - block.as_ptr().addr()
    }

    /// Moves the cursor from `from` to `to` if nothing was taken since.
    #[inline]
    fn move_cursor(&self, from: usize, to: usize) -> bool {
        // AcqRel: Release publishes our writes to the bytes we give back to
        // the next taker (its Acquire in `bump`); Acquire, when growing, pairs
        // with the Release of whoever gave back the bytes we now take.
        self.cursor
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

impl From<Block> for Tape {
    /// [`Tape::from_block`].
    fn from(block: Block) -> Tape {
        Tape::from_block(block)
    }
}

// SAFETY: `take` hands out disjoint ranges inside the Block (each successful
// compare-exchange claims `start..end` beyond every earlier claim); `owns` is a
// range check on the Block, and spilled memory never lies in it.
unsafe impl Engine for Tape {
    #[inline]
    fn take(&self, layout: Layout) -> Option<NonNull<[u8]>> {
        let ptr = NonNull::new(Tape::take(self, layout.size(), layout.align())?)?;
        Some(NonNull::slice_from_raw_parts(ptr, layout.size()))
    }

    #[inline]
    fn owns(&self, ptr: NonNull<u8>) -> bool {
        Tape::owns(self, ptr.as_ptr())
    }

    #[inline]
    unsafe fn give(&self, ptr: NonNull<u8>, layout: Layout) -> bool {
        let Some(block) = self.block.get().filter(|b| b.contains(ptr.as_ptr())) else {
            return false;
        };
        // Only the newest allocation can be given back: rewind if it is.
        let start = Tape::offset(block, ptr);
        self.move_cursor(start + layout.size(), start);
        true
    }

    #[inline]
    unsafe fn resize(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Option<NonNull<[u8]>> {
        let block = self.block.get()?;
        let start = Tape::offset(block, ptr);
        let end = start + old.size();
        let new_end = start.checked_add(new.size())?;
        let in_place = if new.size() <= old.size() {
            // Shrinking: give the tail back if this is the newest allocation;
            // the prefix stays valid either way.
            self.move_cursor(end, new_end);
            true
        } else {
            block.ensure_committed(new_end).is_some() && self.move_cursor(end, new_end)
        };
        in_place.then(|| NonNull::slice_from_raw_parts(ptr, new.size()))
    }

    fn exhaustion(&self) -> Exhaustion {
        self.exhaustion
    }
}

impl fmt::Debug for Tape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tape")
            .field("used", &self.used())
            .field("committed", &self.committed())
            .field("block", &self.block.get().map(|block| &**block))
            .field("exhaustion", &self.exhaustion)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pinning;

    fn tape(bytes: usize) -> Tape {
        Tape::open_with(bytes, &BlockOptions::new().pinning(Pinning::BestEffort)).unwrap()
    }

    #[test]
    fn takes_are_aligned_disjoint_and_owned() {
        let tape = tape(64 << 10);
        let mut last_end = 0;
        for (size, align) in [(1, 1), (3, 8), (100, 64), (7, 4096), (1, 2)] {
            let p = tape.take(size, align).unwrap();
            assert_eq!(p.addr() % align, 0);
            assert!(tape.owns(p));
            assert!(tape.owns(p.wrapping_add(size - 1)));
            let offset = p.addr() - tape.block().as_ptr().addr();
            assert!(offset >= last_end, "overlap");
            last_end = offset + size;
            assert_eq!(tape.used(), last_end);
        }
        assert_eq!(tape.free(), tape.total() - tape.used());
    }

    #[test]
    fn bad_alignments_and_overflow_are_none() {
        let tape = tape(4096);
        for align in [0, 3, 6, 12, usize::MAX] {
            assert_eq!(tape.take(8, align), None, "align {align}");
        }
        assert_eq!(tape.take(usize::MAX, 1), None);
        assert_eq!(tape.take(usize::MAX - 2, 8), None);
        assert_eq!(tape.take(1, 1 << (usize::BITS - 1)), None);
        assert_eq!(tape.take(tape.total() + 1, 1), None);
        assert_eq!(tape.used(), 0, "failed takes consume nothing");
    }

    #[test]
    fn alignment_above_a_page_applies_to_the_address() {
        let tape = tape(1 << 20);
        tape.take(1, 1).unwrap();
        let big = 64 << 10;
        let p = tape.take(10, big).unwrap();
        assert_eq!(p.addr() % big, 0);
        // An alignment larger than the whole block cannot be met.
        assert_eq!(tape.take(1, 1 << 40), None);
    }

    #[test]
    fn zero_size_takes_consume_nothing() {
        let tape = tape(4096);
        let p = tape.take(0, 256).unwrap();
        assert_eq!(p.addr(), 256);
        assert_eq!(tape.used(), 0);
        let unit = tape.take_one::<()>().unwrap();
        assert!(!unit.is_null());
    }

    #[test]
    fn exhaustion_then_recovery_after_clear() {
        let mut tape = tape(4096);
        let total = tape.total();
        assert!(tape.take(total, 1).is_some());
        assert_eq!(tape.take(1, 1), None);
        assert_eq!(tape.free(), 0);
        tape.clear();
        assert_eq!(tape.used(), 0);
        let p = tape.take(total, 1).unwrap();
        assert_eq!(p, tape.block().as_ptr());
    }

    #[test]
    fn take_one_is_typed() {
        let tape = tape(4096);
        let p = tape.take_one::<u64>().unwrap();
        assert_eq!(p.addr() % align_of::<u64>(), 0);
        // SAFETY: fresh, aligned, in bounds.
        unsafe {
            p.write(7);
            assert_eq!(p.read(), 7);
        }
    }

    #[test]
    fn lazy_tape_opens_on_first_take() {
        let tape = Tape::lazy_with(8192, BlockOptions::new().pinning(Pinning::BestEffort));
        assert!(!tape.owns(ptr::null::<u8>()));
        assert_eq!(tape.used(), 0);
        let p = tape.take(16, 16).unwrap();
        assert!(tape.owns(p));
        assert!(tape.total() >= 8192);
    }

    #[test]
    fn lazy_tape_that_cannot_open_reports_why() {
        let tape = Tape::lazy_with(0, BlockOptions::new().pinning(Pinning::BestEffort));
        assert_eq!(tape.take(1, 1), None);
        assert!(matches!(tape.try_block(), Err(Error::ZeroSize)));
        assert_eq!(tape.total(), 0);
        assert_eq!(tape.free(), 0);
    }
}
