//! [`Grid`]: fixed-size cells with a lock-free free list and per-thread
//! slots, in two Blocks committed as cells are first used.
//!
//! # Layout
//!
//! The cells live in their own Block, from its first byte; the threads'
//! slots and the free list's links live in a second Block (slots first,
//! then one link per cell), which devices and other registrations never
//! see. Cells are handed out the first time in address order (`fresh`
//! counts them), and both Blocks are committed as that count grows, so a
//! Grid of any size costs the cells it has used.
//!
//! # A cell's link
//!
//! Each cell's link says where the cell is: the cell below it on the free
//! list (or `NIL` at the bottom), `PARKED` in a thread's slot, or `HELD` by
//! whoever took it. Only the holder moves a cell out of `HELD`, so giving
//! back a cell whose link is not `HELD` is a double free (or a pointer the
//! Grid never handed out), caught with one load before it can corrupt the
//! list.
//!
//! # Files
//!
//! This file holds the Grid, its geometry and carving, and the paths that
//! combine the two lock-free structures: the shared free list (`list.rs`)
//! and the per-thread slots (`slots.rs`), whose words are stamped
//! (`stamp.rs`). The cells as their holders see them are in `cell.rs`.

mod cell;
mod list;
mod slots;
mod stamp;

use core::alloc::Layout;
use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

use self::slots::Slot;
use self::stamp::{AtomicStamped, Stamped};
use crate::alloc::{Engine, Exhaustion};
use crate::lazy::LazyBlock;
use crate::once::Once;
use crate::{Block, BlockOptions, Error, Region, misuse, page_size, thread};

pub use self::cell::{Cell, UninitCell};

/// The index that marks the end of the free list, and an empty slot.
const NIL: u32 = u32::MAX;
/// A cell's link while someone holds it.
const HELD: u32 = u32::MAX - 1;
/// A cell's link while it sits in a thread's slot.
const PARKED: u32 = u32::MAX - 2;
/// Cells per Grid, at most: every index stays below the markers.
const MAX_CELLS: usize = PARKED as usize;

/// Threads whose tag is at most this have a slot in every Grid; the others
/// use the shared list alone.
const SLOTS: usize = 64;

/// `CELLS` cells of `CELL_SIZE` bytes each, in one pinned Block, handed out
/// and taken back without locks.
///
/// Cells start at the Block's first byte, each `CELL_SIZE` rounded up to 16
/// bytes (or to the next power of two below 16) apart, so a cell is aligned to
/// the largest power of two dividing that stride, up to a page. The free list
/// and the threads' slots live in a second Block of their own: taking and
/// giving never touch the heap, so a Grid can be a global allocator.
///
/// Each of the first 64 threads to hold a thread tag (tags pass to new
/// threads as old ones exit) has a slot for one cell, 128 bytes each on
/// x86-64 and aarch64 (8 KiB in all). Giving a cell back puts it in the
/// giver's slot if that is empty, and otherwise on a shared free list, last
/// in, first out; taking looks in the taker's own slot first, then on the
/// list, then at the cells never used yet. A thread that takes and gives
/// back one buffer after another thus keeps working on the same cell, still
/// in its cache, with one atomic operation per cycle on a cache line that
/// other threads only touch to take from. When those are empty, `take`
/// takes from other threads' slots, so a parked cell is never lost to the
/// rest: `take` returns `None` only when, at one moment during the call,
/// every cell was held (or a never-used cell's memory could not be
/// committed).
///
/// [`Grid::open`] commits every cell at once; a lazy Grid ([`Grid::lazy`])
/// commits cells as they are first used. Giving back a cell twice through
/// the allocator traits (or an address that is not a cell the Grid handed
/// out) aborts the process with a message, as a double free in glibc does.
///
/// ```
/// use unimem::{BlockOptions, Grid, Pinning};
///
/// let grid = Grid::<4096, 8>::open_with(&BlockOptions::new().pinning(Pinning::BestEffort))?;
/// let cell = grid.take().expect("a free cell");
/// assert_eq!(cell.address() as usize % 4096, 0);
/// assert_eq!(grid.free(), 7);
/// grid.give(cell);
/// assert_eq!(grid.free(), 8);
/// # Ok::<(), unimem::Error>(())
/// ```
pub struct Grid<const CELL_SIZE: usize, const CELLS: usize> {
    /// The top of the free list (`list.rs`): the free cell on top, or
    /// `NIL`, stamped against ABA (`stamp.rs`).
    head: CachePadded<AtomicStamped>,
    /// Cells handed out at least once: `0..fresh`. Cells at or above it have
    /// never been taken and are on no list. Only grows.
    fresh: CachePadded<AtomicU32>,
    /// One word per cell, in the links Block after the slots: the cell's
    /// link (module documentation). Null until the Grid is carved; stored
    /// last, with Release, so a thread that sees it also sees the slots and
    /// the fields `slots`, `cells` and `align` initialized.
    links: AtomicPtr<AtomicU32>,
    /// The threads' slots, `SLOTS` of them, at the links Block's start.
    slots: AtomicPtr<Slot>,
    /// The first cell.
    cells: AtomicPtr<u8>,
    /// The alignment every cell has.
    align: AtomicUsize,
    /// Whether carving worked; runs the carving once.
    carved: Once<bool>,
    /// The cells' Block.
    block: LazyBlock,
    /// The slots and links: a private, unpinned Block of its own.
    meta: LazyBlock,
    /// Why the sizes are invalid, kept for `try_block` once asked.
    size_error: Once<Error>,
    exhaustion: Exhaustion,
}

/// Where the cells, the links and the slots are, once the Block is open.
#[derive(Clone, Copy)]
struct Parts {
    cells: NonNull<u8>,
    lists: Lists,
    align: usize,
}

/// Where the free cells are: the shared list's links and the threads' slots
/// (all that taking and giving need).
#[derive(Clone, Copy)]
struct Lists {
    links: NonNull<AtomicU32>,
    slots: NonNull<Slot>,
}

// SAFETY: the pointers in `Parts` and `Lists` point into the Blocks the
// Grid owns; every access through them is atomic (links, slots) or goes to
// the one holder of a cell.
unsafe impl<const C: usize, const N: usize> Send for Grid<C, N> {}
// SAFETY: as above; the shared state is the atomic head, links and slots.
unsafe impl<const C: usize, const N: usize> Sync for Grid<C, N> {}

/// The sizes of a Grid's parts: the cells' Block; the slots, then the links,
/// in the links Block.
#[derive(Clone, Copy)]
struct Geometry {
    stride: usize,
    cells_bytes: usize,
    meta_bytes: usize,
}

/// Why a Grid of `cell` × `cells` cannot be: `None` if it can.
const fn invalid(cell: usize, cells: usize) -> Option<&'static str> {
    if cell == 0 || cells == 0 {
        return Some("zero");
    }
    if cells > MAX_CELLS {
        return Some("more cells than a Grid can index (at most 2^32 - 3)");
    }
    if geometry(cell, cells).is_none() {
        return Some("the cells' total size overflows the address space");
    }
    None
}

const fn geometry(cell: usize, cells: usize) -> Option<Geometry> {
    if cell == 0 || cells == 0 || cells > MAX_CELLS {
        return None;
    }
    let granule = if cell >= 16 {
        16
    } else {
        cell.next_power_of_two()
    };
    let Some(stride) = cell.checked_next_multiple_of(granule) else {
        return None;
    };
    let Some(cells_bytes) = stride.checked_mul(cells) else {
        return None;
    };
    if cells_bytes > isize::MAX as usize {
        return None;
    }
    let links_start = SLOTS * size_of::<Slot>();
    let Some(meta_bytes) = links_start.checked_add(cells * size_of::<AtomicU32>()) else {
        return None;
    };
    Some(Geometry {
        stride,
        cells_bytes,
        meta_bytes,
    })
}

impl<const CELL_SIZE: usize, const CELLS: usize> Grid<CELL_SIZE, CELLS> {
    /// Distance between cells: `CELL_SIZE` rounded up to the cell granule.
    const STRIDE: usize = match geometry(CELL_SIZE, CELLS) {
        Some(g) => g.stride,
        None => 0,
    };

    /// Where the links start in the links Block.
    const LINKS_START: usize = SLOTS * size_of::<Slot>();

    /// The error for a Grid whose size is invalid, if it is.
    fn check_size() -> Result<Geometry, Error> {
        match (invalid(CELL_SIZE, CELLS), geometry(CELL_SIZE, CELLS)) {
            (None, Some(geometry)) => Ok(geometry),
            (Some("zero"), _) => Err(Error::ZeroSize),
            (reason, _) => Err(Error::GridSize {
                cell_size: CELL_SIZE,
                cells: CELLS,
                reason: reason.unwrap_or("invalid"),
            }),
        }
    }

    /// Opens a pinned Block for the cells, all committed, and a Block for
    /// the free list.
    ///
    /// A zero `CELL_SIZE` or `CELLS` is [`Error::ZeroSize`]; a Grid whose
    /// size overflows, or with more than `u32::MAX - 2` cells, is
    /// [`Error::GridSize`].
    pub fn open() -> Result<Self, Error> {
        Self::open_with(&BlockOptions::new())
    }

    /// As [`Grid::open`], opening the cells' Block with `options`.
    pub fn open_with(options: &BlockOptions<'_>) -> Result<Self, Error> {
        let geometry = Self::check_size()?;
        let grid = Grid {
            block: LazyBlock::ready(Block::open_with(
                geometry.cells_bytes,
                &options.capacity(0),
            )?),
            meta: LazyBlock::ready(Block::open_with(
                geometry.meta_bytes,
                &options.for_metadata(),
            )?),
            ..Self::lazy_with(BlockOptions::new())
        };
        match grid.parts() {
            Some(_) => Ok(grid),
            None => Err(Error::GridSize {
                cell_size: CELL_SIZE,
                cells: CELLS,
                reason: "its Blocks could not be carved",
            }),
        }
    }

    /// A Grid whose Blocks are reserved on first use and committed as cells
    /// are first used: the constructor for `#[global_allocator]` statics,
    /// with the options of [`BlockOptions::lazy`] (pinned where
    /// `RLIMIT_MEMLOCK` allows, then unpinned with one line on standard
    /// error). Bad sizes show up as failed takes, and
    /// [`try_block`](Grid::try_block) says why.
    pub const fn lazy() -> Self {
        Self::lazy_with(BlockOptions::lazy())
    }

    /// As [`Grid::lazy`], with options for the cells' Block.
    pub const fn lazy_with(options: BlockOptions<'static>) -> Self {
        let (cells_bytes, meta_bytes) = match geometry(CELL_SIZE, CELLS) {
            Some(g) => (g.cells_bytes, g.meta_bytes),
            None => (0, 0),
        };
        Grid {
            head: CachePadded::new(AtomicStamped::new(Stamped::EMPTY)),
            fresh: CachePadded::new(AtomicU32::new(0)),
            links: AtomicPtr::new(core::ptr::null_mut()),
            slots: AtomicPtr::new(core::ptr::null_mut()),
            cells: AtomicPtr::new(core::ptr::null_mut()),
            align: AtomicUsize::new(0),
            carved: Once::new(),
            block: LazyBlock::new(cells_bytes, options.capacity(0)),
            meta: LazyBlock::new(meta_bytes, options.for_metadata()),
            size_error: Once::new(),
            exhaustion: Exhaustion::Fail,
        }
    }

    /// Sets what allocations through the allocator traits do when no cell is
    /// free or a request does not fit a cell: fail (the default) or spill to
    /// the system allocator. [`take`](Grid::take) itself never spills.
    pub const fn on_exhaustion(mut self, exhaustion: Exhaustion) -> Self {
        self.exhaustion = exhaustion;
        self
    }

    /// Shorthand for `on_exhaustion(Exhaustion::Spill)`.
    pub const fn spill(self) -> Self {
        self.on_exhaustion(Exhaustion::Spill)
    }

    /// The cell and link areas, carving them on first use.
    #[inline]
    fn parts(&self) -> Option<Parts> {
        // Acquire: pairs with the Release store at the end of `carve`.
        match NonNull::new(self.links.load(Ordering::Acquire)) {
            Some(links) => Some(self.parts_with(links)),
            None => self.parts_slow(),
        }
    }

    /// The parts, given the links (which are published last).
    #[inline]
    fn parts_with(&self, links: NonNull<AtomicU32>) -> Parts {
        // Relaxed: ordered before `links` was published (see `carve`).
        let cells = self.cells.load(Ordering::Relaxed);
        Parts {
            // SAFETY: stored non-null by `carve` before `links`.
            cells: unsafe { NonNull::new_unchecked(cells) },
            lists: self.lists_with(links),
            align: self.align.load(Ordering::Relaxed),
        }
    }

    /// The lists, given the links (which are published last).
    #[inline(always)]
    fn lists_with(&self, links: NonNull<AtomicU32>) -> Lists {
        // Relaxed: ordered before `links` was published (see `carve`), and
        // the caller saw `links`.
        let slots = self.slots.load(Ordering::Relaxed);
        Lists {
            links,
            // SAFETY: stored non-null by `carve` before `links`.
            slots: unsafe { NonNull::new_unchecked(slots) },
        }
    }

    #[cold]
    fn parts_slow(&self) -> Option<Parts> {
        if !*self.carved.get_or_init(|| self.carve())? {
            return None;
        }
        // Acquire: as in `parts`.
        Some(self.parts_with(NonNull::new(self.links.load(Ordering::Acquire))?))
    }

    /// Reserves the two Blocks (a lazy Grid), commits the slots and empties
    /// them; says whether it could. Runs once, inside `Once`. The free list
    /// starts empty: cells come from `fresh` the first time.
    #[cold]
    fn carve(&self) -> bool {
        if Self::check_size().is_err() {
            return false;
        }
        let (Ok(cells), Ok(meta)) = (self.block.force(), self.meta.force()) else {
            return false;
        };
        if meta.ensure_committed(Self::LINKS_START).is_none() {
            return false;
        }
        let slots = meta.as_ptr().cast::<Slot>();
        for i in 0..SLOTS {
            // SAFETY: `i < SLOTS`, inside the committed slot area at the
            // links Block's start, aligned for Slot (the Block is
            // page-aligned) and initialized (committed memory is zero).
            unsafe { &*slots.add(i) }
                .word
                .store(Stamped::EMPTY, Ordering::Relaxed);
        }
        // SAFETY: the links start right after the slots, inside the
        // reservation; they are committed before any is used (`take_fresh`).
        let links = unsafe { meta.as_ptr().add(Self::LINKS_START) }.cast::<AtomicU32>();
        let stride_align = 1 << Self::STRIDE.trailing_zeros();
        // Relaxed: all published by the Release store of `links` below.
        self.slots.store(slots, Ordering::Relaxed);
        self.cells.store(cells.as_ptr(), Ordering::Relaxed);
        self.align
            .store(stride_align.min(page_size()), Ordering::Relaxed);
        // Release: pairs with the Acquire loads in `parts`.
        self.links.store(links, Ordering::Release);
        true
    }

    /// Takes a never-used cell, committing its memory (and its link's) first
    /// if needed. `None` when every cell has been used once, or the memory
    /// cannot be committed.
    #[cold]
    fn take_fresh(&self) -> Option<u32> {
        // Relaxed: a guess, checked by the compare-exchange; the cells'
        // memory is published by the Blocks' own commit (Acquire) below.
        let mut fresh = self.fresh.load(Ordering::Relaxed);
        loop {
            if fresh as usize >= CELLS {
                return None;
            }
            let index = fresh as usize;
            let (cells, meta) = (self.block.get()?, self.meta.get()?);
            let cell_end = (index + 1) * Self::STRIDE;
            let link_end = Self::LINKS_START + (index + 1) * size_of::<AtomicU32>();
            if cells.ensure_committed(cell_end).is_none()
                || meta.ensure_committed(link_end).is_none()
            {
                return None;
            }
            // Relaxed: the index is all that is handed over; the memory was
            // committed above, before the claim, by whichever thread did it.
            match self.fresh.compare_exchange_weak(
                fresh,
                fresh + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(fresh),
                Err(seen) => fresh = seen,
            }
        }
    }

    /// Takes a free cell's index and marks the cell held; also whether the
    /// cell was never used (its bytes are still the zeros it was committed
    /// with).
    #[inline(always)]
    fn take_held(&self, lists: Lists) -> Option<(u32, bool)> {
        let (index, fresh) = self.take_index(lists)?;
        // Relaxed: the cell is ours now. Whoever reads the link next is our
        // own give (on this thread, or on one the program handed the cell
        // to, after us), or a stale pop whose compare-exchange fails anyway.
        self.link(lists.links, index).store(HELD, Ordering::Relaxed);
        Some((index, fresh))
    }

    /// Takes a free cell's index: this thread's slot first, then the shared
    /// list, then a never-used cell (`true`: fresh), then the other threads'
    /// slots.
    #[inline(always)]
    fn take_index(&self, lists: Lists) -> Option<(u32, bool)> {
        if let Some(slot) = thread::tag_fast().and_then(|tag| self.slot(lists, tag)) {
            // Relaxed: a guess, checked by the compare-exchange.
            let word = slot.word.load(Ordering::Relaxed);
            if !word.is_empty() && Self::try_empty(slot, word) {
                return Some((word.index(), false));
            }
        }
        if let Some(index) = self.pop(lists.links) {
            return Some((index, false));
        }
        if let Some(index) = self.take_fresh() {
            return Some((index, true));
        }
        self.take_elsewhere(lists).map(|index| (index, false))
    }

    /// A cell given back twice: going on would hand it out twice.
    #[cold]
    #[inline(never)]
    fn given_twice(lists: Lists, index: u32) -> ! {
        let _ = lists;
        misuse::abort(
            "Grid",
            "a cell was given back twice (double free), or was never taken",
            index as usize,
        )
    }

    /// Takes a free cell, its bytes zeroed; `None` when every cell was held
    /// at one moment during the call (or a lazy Grid's Block cannot be
    /// opened). The cell dereferences to its bytes (`&[u8]`, `&mut [u8]`)
    /// and goes back when dropped or given.
    ///
    /// A cell never used before is zero already and is not written; one
    /// used before is zeroed (`CELL_SIZE` bytes written), since its last
    /// owner may have left bytes Rust counts as uninitialized. A program
    /// that writes every byte itself skips that with
    /// [`take_uninit`](Grid::take_uninit).
    ///
    /// A thread takes the cell parked in its own slot if there is one, then
    /// the cell given back last to the shared list, then a never-used cell,
    /// then a cell parked in another thread's slot.
    #[inline]
    pub fn take(&self) -> Option<Cell<'_, CELL_SIZE, CELLS>> {
        let (index, fresh) = self.take_raw()?;
        let mut cell = UninitCell {
            grid: self,
            index,
            _not_sync: PhantomData,
        };
        if !fresh {
            cell.as_uninit_mut().fill(MaybeUninit::new(0));
        }
        // SAFETY: a fresh cell holds the zeros it was committed with (no
        // one wrote it: it was never handed out); any other was just
        // zeroed. Either way every byte is initialized.
        Some(unsafe { cell.assume_init() })
    }

    /// Takes a free cell as [`take`](Grid::take) does, without zeroing it:
    /// its bytes are whatever the last owner left, which Rust treats as
    /// possibly uninitialized, so they can only be written
    /// ([`UninitCell::as_uninit_mut`]) until the cell is known initialized
    /// ([`UninitCell::zero`], or [`UninitCell::assume_init`] once every
    /// byte was written).
    #[inline]
    pub fn take_uninit(&self) -> Option<UninitCell<'_, CELL_SIZE, CELLS>> {
        let (index, _) = self.take_raw()?;
        Some(UninitCell {
            grid: self,
            index,
            _not_sync: PhantomData,
        })
    }

    /// A held cell's index, and whether it was never used.
    #[inline(always)]
    fn take_raw(&self) -> Option<(u32, bool)> {
        // Acquire: pairs with the Release store at the end of `carve`.
        let lists = match NonNull::new(self.links.load(Ordering::Acquire)) {
            Some(links) => self.lists_with(links),
            None => self.parts_slow()?.lists,
        };
        self.take_held(lists)
    }

    /// Gives a cell back (the same as dropping it).
    ///
    /// # Panics
    /// If `cell` came from another Grid. The cell then returns to its own
    /// Grid as the panic unwinds; it never enters this one.
    pub fn give(&self, cell: Cell<'_, CELL_SIZE, CELLS>) {
        assert!(
            core::ptr::eq(cell.grid, self),
            "Grid::give: cell {} belongs to the Grid at {:p}, not to this one at {:p}; \
             it goes back to its own Grid",
            cell.index,
            cell.grid,
            self,
        );
        drop(cell);
    }

    /// Free cells now: exact when no other thread is taking or giving, a
    /// snapshot otherwise. Walks the free list (one load per free cell) and
    /// the threads' slots: taking and giving keep no count, which would cost
    /// each an atomic operation.
    pub fn free(&self) -> usize {
        let Some(parts) = self.parts() else {
            return 0;
        };
        let parked = (self.slots(parts.lists).iter())
            // Relaxed: a snapshot; the cells are not used.
            .filter(|slot| !slot.word.load(Ordering::Relaxed).is_empty())
            .count();
        // Acquire: as in `pop`, so the links of the cells on the list are
        // visible. Under concurrent changes the walk may see a mix of old and
        // new links, so it stops after CELLS steps.
        let mut at = self.head.load(Ordering::Acquire).index();
        let mut count = 0;
        while (at as usize) < CELLS && count < CELLS {
            count += 1;
            at = self.link(parts.lists.links, at).load(Ordering::Relaxed);
        }
        // Relaxed: a snapshot.
        let never_used = CELLS - self.fresh.load(Ordering::Relaxed) as usize;
        (count + parked + never_used).min(CELLS)
    }

    /// The number of cells, `CELLS`.
    pub fn total(&self) -> usize {
        CELLS
    }

    /// The usable bytes of each cell: `CELL_SIZE` rounded up to the cell
    /// granule.
    pub const fn cell_size(&self) -> usize {
        Self::STRIDE
    }

    /// The alignment of every cell (a lazy Grid reserves its Blocks; 0 if
    /// it cannot).
    pub fn cell_align(&self) -> usize {
        self.parts().map_or(0, |parts| parts.align)
    }

    /// The cells' Block: address, sizes and handle (a lazy Grid reserves its
    /// Blocks).
    ///
    /// # Panics
    /// If this is a lazy Grid whose Blocks cannot be reserved; see
    /// [`try_block`](Grid::try_block).
    pub fn block(&self) -> &Region {
        match self.try_block() {
            Ok(region) => region,
            Err(error) => panic!("the Grid's Block could not be opened: {error}"),
        }
    }

    /// The Blocks that hold the Grid's allocations: its one Block (a
    /// lazy Grid reserves it), or none if it cannot be reserved. The same
    /// list as [`Heap::blocks`](crate::Heap::blocks) gives for a Heap.
    pub fn blocks(&self) -> Vec<&Region> {
        self.try_block().into_iter().collect()
    }

    /// The cells' Block, or why a lazy Grid's Blocks could not be reserved.
    /// Whether it is pinned is [`Region::is_pinned`].
    pub fn try_block(&self) -> Result<&Region, &Error> {
        if let Err(error) = Self::check_size() {
            return match self.size_error.get_or_init(|| error) {
                Some(error) => Err(error),
                None => unreachable!("making an error never asks for it"),
            };
        }
        self.meta.force()?;
        let _ = self.parts();
        self.block.force().map(|block| &**block)
    }

    /// Whether `ptr` points into one of the cells.
    #[inline]
    pub fn owns<T: ?Sized>(&self, ptr: *const T) -> bool {
        // Relaxed: a cell the caller holds was handed out after the Grid was
        // carved, which happened-before this call; for any other pointer the
        // answer is false whatever this load sees.
        let cells = self.cells.load(Ordering::Relaxed);
        !cells.is_null()
            && ptr.cast::<u8>().addr().wrapping_sub(cells.addr()) < Self::STRIDE * CELLS
    }

    /// The exhaustion policy chosen at construction.
    pub fn exhaustion(&self) -> Exhaustion {
        self.exhaustion
    }

    #[inline]
    fn cell_ptr(parts: &Parts, index: u32) -> NonNull<u8> {
        // SAFETY: `index < CELLS`, so the cell lies inside the cell area.
        unsafe { parts.cells.add(index as usize * Self::STRIDE) }
    }
}

// SAFETY: `take` pops a cell off the free list, which holds each free cell
// once, so cells handed out are disjoint; `owns` is a range check on the cell
// area, where spilled memory never lies.
unsafe impl<const C: usize, const N: usize> Engine for Grid<C, N> {
    #[inline]
    fn take(&self, layout: Layout) -> Option<NonNull<[u8]>> {
        let parts = self.parts()?;
        if layout.size() > Self::STRIDE || layout.align() > parts.align {
            return None;
        }
        let (index, _) = self.take_held(parts.lists)?;
        Some(NonNull::slice_from_raw_parts(
            Self::cell_ptr(&parts, index),
            Self::STRIDE,
        ))
    }

    #[inline]
    fn owns(&self, ptr: NonNull<u8>) -> bool {
        Grid::owns(self, ptr.as_ptr())
    }

    #[inline]
    unsafe fn give(&self, ptr: NonNull<u8>, _layout: Layout) -> bool {
        // Acquire: as in `parts`.
        let Some(links) = NonNull::new(self.links.load(Ordering::Acquire)) else {
            return false;
        };
        let parts = self.parts_with(links);
        let offset = ptr
            .as_ptr()
            .addr()
            .wrapping_sub(parts.cells.as_ptr().addr());
        if offset >= Self::STRIDE * N {
            return false;
        }
        let index = offset / Self::STRIDE;
        // Relaxed: a cell the caller holds was taken from `fresh` before;
        // that take happened-before this give.
        if !offset.is_multiple_of(Self::STRIDE)
            || index >= self.fresh.load(Ordering::Relaxed) as usize
        {
            misuse::abort(
                "Grid",
                "freed a pointer that is not the start of a cell it handed out",
                ptr.as_ptr().addr(),
            );
        }
        self.give_index(parts.lists, index as u32);
        true
    }

    #[inline]
    unsafe fn resize(&self, ptr: NonNull<u8>, _old: Layout, new: Layout) -> Option<NonNull<[u8]>> {
        // A cell holds STRIDE bytes whatever was asked; `reallocate` checked
        // that `ptr` meets the new alignment.
        (new.size() <= Self::STRIDE).then(|| NonNull::slice_from_raw_parts(ptr, Self::STRIDE))
    }

    fn exhaustion(&self) -> Exhaustion {
        self.exhaustion
    }
}

impl<const C: usize, const N: usize> fmt::Debug for Grid<C, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grid")
            .field("cell_size", &Self::STRIDE)
            .field("cells", &N)
            .field("free", &self.free())
            .field("exhaustion", &self.exhaustion)
            .finish()
    }
}

#[cfg(test)]
mod tests;
