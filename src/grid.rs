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

use core::alloc::Layout;
use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

use crate::alloc::{Engine, Exhaustion};
use crate::lazy::LazyBlock;
use crate::once::Once;
use crate::{Block, BlockOptions, Error, Pages, Pinning, Region, misuse, page_size, thread};

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

/// One thread's slot: a cell it gave back, until some thread takes it, as
/// `seq << 32 | index` (`index` NIL when empty; `seq` counts every change).
///
/// Only the thread holding the tag puts a cell in; any thread may take it
/// out. Padded as crossbeam pads against false sharing (128 bytes on x86-64
/// and aarch64, whose prefetchers pull cache lines in pairs), so that a
/// thread working on its own slot does not contend with the others.
struct Slot {
    word: CachePadded<AtomicU64>,
}

/// What the first pass over the list and the slots found.
enum Look {
    /// A cell, now ours.
    Took(u32),
    /// A word changed under us: look again.
    Changed,
    /// Every word empty; the head word seen (the slots' are kept aside).
    Empty(u64),
}

/// `word` (a head or slot word) with `index` in it and its count moved on.
#[inline(always)]
fn next_word(word: u64, index: u32) -> u64 {
    ((word >> 32).wrapping_add(1) << 32) | u64::from(index)
}

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
    /// The top of the free list as one word: `tag << 32 | index`.
    ///
    /// `index` is the free cell on top, or `NIL`. `tag` counts every change
    /// of the word (wrapping), so a compare-exchange that read the word before
    /// a pop and a push restored the same index fails: that is what prevents
    /// ABA. A thread would have to sleep through 2^32 changes between its
    /// load and its compare-exchange to be fooled.
    head: CachePadded<AtomicU64>,
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

/// The options of a Grid's links Block: private and unpinned (devices never
/// see it; locked memory is kept for the cells).
const fn meta_options(options: BlockOptions<'_>) -> BlockOptions<'_> {
    options
        .pinning(Pinning::Off)
        .prefault(false)
        .pages(Pages::Base)
        .shared(false)
        .capacity(0)
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
                &meta_options(*options),
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
            head: CachePadded::new(AtomicU64::new(NIL as u64)),
            fresh: CachePadded::new(AtomicU32::new(0)),
            links: AtomicPtr::new(core::ptr::null_mut()),
            slots: AtomicPtr::new(core::ptr::null_mut()),
            cells: AtomicPtr::new(core::ptr::null_mut()),
            align: AtomicUsize::new(0),
            carved: Once::new(),
            block: LazyBlock::new(cells_bytes, options.capacity(0)),
            meta: LazyBlock::new(meta_bytes, meta_options(options)),
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
        if meta.committed() < Self::LINKS_START && !meta.grow_to(Self::LINKS_START) {
            return false;
        }
        let slots = meta.as_ptr().cast::<Slot>();
        for i in 0..SLOTS {
            // SAFETY: `i < SLOTS`, inside the committed slot area at the
            // links Block's start, aligned for Slot (the Block is
            // page-aligned) and initialized (committed memory is zero).
            unsafe { &*slots.add(i) }
                .word
                .store(u64::from(NIL), Ordering::Relaxed);
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
            if (cells.committed() < cell_end && !cells.grow_to(cell_end))
                || (meta.committed() < link_end && !meta.grow_to(link_end))
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

    #[inline]
    fn link(&self, links: NonNull<AtomicU32>, index: u32) -> &AtomicU32 {
        debug_assert!((index as usize) < CELLS);
        // SAFETY: callers pass an index below CELLS (from the head word or a
        // link, which only ever hold cell indices or NIL, checked before);
        // the link area holds CELLS initialized AtomicU32s for as long as the
        // Grid (`&self`) lives.
        unsafe { links.add(index as usize).as_ref() }
    }

    /// Pops a free cell's index off the shared list.
    #[inline]
    fn pop(&self, links: NonNull<AtomicU32>) -> Option<u32> {
        // Acquire: pairs with the Release compare-exchange in `push` that put
        // this top there, so its link store and every write the previous owner
        // made to the cell happen-before our reading of the link and our use
        // of the cell.
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let next = self.below(links, head)?;
            match self.try_pop(head, next) {
                Ok(index) => return Some(index),
                Err(seen) => head = seen,
            }
        }
    }

    /// The index below the top in the head word `head`, or `None` if the list
    /// is empty.
    #[inline]
    fn below(&self, links: NonNull<AtomicU32>, head: u64) -> Option<u32> {
        let index = head as u32;
        if index == NIL {
            return None;
        }
        // Relaxed: the link was published by the Acquire that gave us `head`.
        // If another thread pops this cell meanwhile, the link may change
        // under us, but then the tag has moved on and `try_pop` fails.
        Some(self.link(links, index).load(Ordering::Relaxed))
    }

    /// Replaces the head word `head` with `next` on top (and the tag moved
    /// on); returns the popped index, or the head word seen instead.
    #[inline]
    fn try_pop(&self, head: u64, next: u32) -> Result<u32, u64> {
        // Success Acquire: as the load in `pop`, for the value we replace.
        // Failure Acquire: the caller retries with the value seen, so it needs
        // the same guarantee as the first load.
        self.head
            .compare_exchange(
                head,
                next_word(head, next),
                Ordering::Acquire,
                Ordering::Acquire,
            )
            .map(|_| head as u32)
    }

    /// Pushes a cell's index onto the shared list.
    #[inline]
    fn push(&self, links: NonNull<AtomicU32>, index: u32) {
        // Relaxed: the value only seeds the compare-exchange, which checks it.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // Relaxed: published by the Release compare-exchange below.
            self.link(links, index)
                .store(head as u32, Ordering::Relaxed);
            // Release: pairs with the Acquire in `pop`, publishing the link
            // and our writes to the cell to whoever takes it next.
            match self.head.compare_exchange_weak(
                head,
                next_word(head, index),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(seen) => head = seen,
            }
        }
    }

    /// All the threads' slots; tag `t` has slot `t - 1`.
    #[inline(always)]
    fn slots(&self, lists: Lists) -> &[Slot] {
        // SAFETY: the slot area holds SLOTS initialized slots in the Block,
        // which lives as long as the Grid (`&self`); they are only accessed
        // atomically.
        unsafe { core::slice::from_raw_parts(lists.slots.as_ptr(), SLOTS) }
    }

    /// The slot of the thread with tag `tag`, if it has one.
    #[inline(always)]
    fn slot(&self, lists: Lists, tag: usize) -> Option<&Slot> {
        // Tag 0 wraps to an index past the end.
        self.slots(lists).get(tag.wrapping_sub(1))
    }

    /// Empties `slot`, which held `word` with a cell in it; says whether this
    /// thread got the cell (another may have taken it first).
    #[inline(always)]
    fn try_empty(slot: &Slot, word: u64) -> bool {
        // Success Acquire: pairs with the Release store in `give_index` that
        // put the cell there, so the previous holder's writes to the cell
        // happen-before our use of it. Failure Relaxed: nothing is read.
        slot.word
            .compare_exchange(
                word,
                next_word(word, NIL),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
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
            if word as u32 != NIL && Self::try_empty(slot, word) {
                return Some((word as u32, false));
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

    /// The shared list was empty and every cell was used once: takes from
    /// the list or any thread's slot, or returns `None` once two passes over
    /// all of them saw the same empty words. (`fresh` only grows, so once it
    /// reached `CELLS` no cell comes from there again.)
    ///
    /// Every change of the head word or of a slot word counts up its top
    /// half, so equal words in both passes mean that the word did not change
    /// in between (barring 2^32 changes during the call). Then there was a
    /// moment, between the passes, when the list and every slot were empty at
    /// once. A cell moves only between a holder and the list or a slot, never
    /// through a hidden step, so at that moment every cell was held. If a word
    /// changed, another thread took or gave a cell: we look again, and the
    /// Grid as a whole made progress (lock-free, not wait-free).
    #[cold]
    fn take_elsewhere(&self, lists: Lists) -> Option<u32> {
        let mut seen = [0u64; SLOTS];
        loop {
            match self.look(lists, &mut seen) {
                Look::Took(index) => return Some(index),
                Look::Changed => {}
                Look::Empty(head) => {
                    if self.unchanged(lists, head, &seen) {
                        return None;
                    }
                }
            }
        }
    }

    /// The first pass of `take_elsewhere`: takes a cell from the list or a
    /// slot, or records the empty words it saw.
    fn look(&self, lists: Lists, seen: &mut [u64; SLOTS]) -> Look {
        // Acquire: as in `pop`.
        let head = self.head.load(Ordering::Acquire);
        if head as u32 != NIL {
            return match self.pop(lists.links) {
                Some(index) => Look::Took(index),
                None => Look::Changed,
            };
        }
        for (slot, seen) in self.slots(lists).iter().zip(seen.iter_mut()) {
            // Acquire: keeps the pass's loads in order. The cell itself is
            // covered by `try_empty`'s Acquire.
            let word = slot.word.load(Ordering::Acquire);
            if word as u32 != NIL {
                return if Self::try_empty(slot, word) {
                    Look::Took(word as u32)
                } else {
                    Look::Changed
                };
            }
            *seen = word;
        }
        Look::Empty(head)
    }

    /// The second pass of `take_elsewhere`: whether the head and every slot
    /// still hold the words the first pass saw.
    fn unchanged(&self, lists: Lists, head: u64, seen: &[u64; SLOTS]) -> bool {
        // Acquire: orders this pass after the first (no later load moves
        // above it).
        self.head.load(Ordering::Acquire) == head
            && (self.slots(lists).iter().zip(seen))
                // Acquire: keeps the pass's loads in order.
                .all(|(slot, &seen)| slot.word.load(Ordering::Acquire) == seen)
    }

    /// Gives a cell's index back: into this thread's slot if it is empty,
    /// else onto the shared list. Aborts if the cell is not held: it was
    /// given back already.
    #[inline(always)]
    fn give_index(&self, lists: Lists, index: u32) {
        let link = self.link(lists.links, index);
        // Relaxed: only the cell's holder moves its link out of HELD, and the
        // caller says it is the holder; the load sees our own `take_held`'s
        // store or one that happened-before the cell reached us. Anything
        // else means the cell was given back already.
        if link.load(Ordering::Relaxed) != HELD {
            Self::given_twice(lists, index);
        }
        if let Some(slot) = self.slot(lists, thread::tag()) {
            // Relaxed: only the thread holding the tag (this one) puts a cell
            // into its slot; other threads only empty it. So if we see it
            // empty it stays empty until we fill it, and a plain store does;
            // if we see a stale cell, the list takes ours. (A tag's previous
            // holder released it with Release and we claimed it with Acquire,
            // so its stores to the slot happen-before ours.)
            let word = slot.word.load(Ordering::Relaxed);
            if word as u32 == NIL {
                // Relaxed: published with the slot by the Release below.
                link.store(PARKED, Ordering::Relaxed);
                // Release: pairs with the Acquire in `try_empty`, publishing
                // our writes to the cell (and its link) to whoever takes it.
                slot.word.store(next_word(word, index), Ordering::Release);
                return;
            }
        }
        self.push(lists.links, index);
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
            .filter(|slot| slot.word.load(Ordering::Relaxed) as u32 != NIL)
            .count();
        // Acquire: as in `pop`, so the links of the cells on the list are
        // visible. Under concurrent changes the walk may see a mix of old and
        // new links, so it stops after CELLS steps.
        let mut at = self.head.load(Ordering::Acquire) as u32;
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

/// One cell of a [`Grid`] (from [`Grid::take`]), held exclusively until it
/// is dropped or given back. Its bytes are initialized: it dereferences to
/// `[u8]`, so it reads, writes, slices and copies like any buffer.
///
/// ```
/// use unimem::Grid;
///
/// let grid = Grid::<4096, 4>::open()?;
/// let mut cell = grid.take().expect("a free cell");
/// assert!(cell.iter().all(|&b| b == 0));
/// cell[..5].copy_from_slice(b"hello");
/// assert_eq!(&cell[..5], b"hello");
/// assert_eq!(cell.len(), 4096);
/// # Ok::<(), unimem::Error>(())
/// ```
pub struct Cell<'g, const CELL_SIZE: usize, const CELLS: usize> {
    grid: &'g Grid<CELL_SIZE, CELLS>,
    index: u32,
    /// A Cell hands out `&mut` access to its bytes, so sharing one between
    /// threads is not allowed; moving it to another thread is.
    _not_sync: PhantomData<core::cell::Cell<()>>,
}

/// One cell of a [`Grid`] (from [`Grid::take_uninit`]) whose bytes may be
/// uninitialized: write them through [`as_uninit_mut`](UninitCell::as_uninit_mut),
/// then make it a [`Cell`] with [`zero`](UninitCell::zero) or
/// [`assume_init`](UninitCell::assume_init). Held exclusively until it is
/// dropped, which gives it back.
pub struct UninitCell<'g, const CELL_SIZE: usize, const CELLS: usize> {
    grid: &'g Grid<CELL_SIZE, CELLS>,
    index: u32,
    /// As `Cell`'s.
    _not_sync: PhantomData<core::cell::Cell<()>>,
}

/// What both kinds of cell share: where the cell is, and giving it back.
macro_rules! cell_common {
    ($cell:ident) => {
        impl<const CELL_SIZE: usize, const CELLS: usize> $cell<'_, CELL_SIZE, CELLS> {
            /// The cell's first byte.
            #[inline]
            pub fn address(&self) -> *mut u8 {
                let parts = self.grid.parts_with(cell_links(self.grid));
                Grid::<CELL_SIZE, CELLS>::cell_ptr(&parts, self.index).as_ptr()
            }

            /// The cell's index in its Grid, `0..CELLS`.
            #[inline]
            pub fn id(&self) -> usize {
                self.index as usize
            }

            /// The usable bytes, as [`Grid::cell_size`].
            #[inline]
            pub fn size(&self) -> usize {
                Grid::<CELL_SIZE, CELLS>::STRIDE
            }
        }

        impl<const CELL_SIZE: usize, const CELLS: usize> Drop for $cell<'_, CELL_SIZE, CELLS> {
            #[inline]
            fn drop(&mut self) {
                let lists = self.grid.lists_with(cell_links(self.grid));
                self.grid.give_index(lists, self.index);
            }
        }

        impl<const CELL_SIZE: usize, const CELLS: usize> fmt::Debug
            for $cell<'_, CELL_SIZE, CELLS>
        {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($cell))
                    .field("id", &self.index)
                    .field("address", &self.address())
                    .finish()
            }
        }
    };
}

cell_common!(Cell);
cell_common!(UninitCell);

/// The links of a Grid that handed out a cell: a cell exists only in a
/// carved Grid.
#[inline]
fn cell_links<const C: usize, const N: usize>(grid: &Grid<C, N>) -> NonNull<AtomicU32> {
    // Acquire: as in `Grid::parts`.
    let links = grid.links.load(Ordering::Acquire);
    let Some(links) = NonNull::new(links) else {
        unreachable!("a cell exists only in a carved Grid")
    };
    links
}

impl<'g, const CELL_SIZE: usize, const CELLS: usize> UninitCell<'g, CELL_SIZE, CELLS> {
    /// The cell's bytes, for writing. They hold whatever the previous owner
    /// left (zero on first use), which Rust treats as possibly
    /// uninitialized.
    pub fn as_uninit_mut(&mut self) -> &mut [MaybeUninit<u8>] {
        // SAFETY: the cell is inside the Grid's Block, which outlives 'g; this
        // cell owns it exclusively until dropped, and `&mut self` makes this
        // the only view.
        unsafe {
            core::slice::from_raw_parts_mut(self.address().cast::<MaybeUninit<u8>>(), self.size())
        }
    }

    /// Zeroes the cell, making it a [`Cell`].
    pub fn zero(mut self) -> Cell<'g, CELL_SIZE, CELLS> {
        self.as_uninit_mut().fill(MaybeUninit::new(0));
        // SAFETY: every byte was just written.
        unsafe { self.assume_init() }
    }

    /// The same cell, as a [`Cell`] whose bytes are initialized.
    ///
    /// # Safety
    /// Every byte of the cell is initialized: written since it was taken
    /// (through [`as_uninit_mut`](UninitCell::as_uninit_mut) or
    /// [`address`](UninitCell::address)) with initialized values.
    pub unsafe fn assume_init(self) -> Cell<'g, CELL_SIZE, CELLS> {
        let this = core::mem::ManuallyDrop::new(self);
        Cell {
            grid: this.grid,
            index: this.index,
            _not_sync: PhantomData,
        }
    }
}

impl<const CELL_SIZE: usize, const CELLS: usize> core::ops::Deref for Cell<'_, CELL_SIZE, CELLS> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: the cell is inside the Grid's Block, which outlives the
        // borrow of the Grid; this Cell holds it exclusively; its bytes are
        // initialized (a `Cell` is made only zeroed or by `assume_init`, and
        // only initialized bytes are written through it).
        unsafe { core::slice::from_raw_parts(self.address(), self.size()) }
    }
}

impl<const CELL_SIZE: usize, const CELLS: usize> core::ops::DerefMut
    for Cell<'_, CELL_SIZE, CELLS>
{
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(self.address(), self.size()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pinning;

    fn options() -> BlockOptions<'static> {
        BlockOptions::new().pinning(Pinning::BestEffort)
    }

    #[test]
    fn cells_are_aligned_distinct_and_counted() {
        let grid = Grid::<100, 16>::open_with(&options()).unwrap();
        assert_eq!(grid.cell_size(), 112);
        assert_eq!(grid.cell_align(), 16);
        let cells: Vec<_> = (0..16).map(|_| grid.take().unwrap()).collect();
        assert!(grid.take().is_none());
        assert_eq!(grid.free(), 0);
        let mut addresses: Vec<_> = cells.iter().map(|c| c.address().addr()).collect();
        addresses.sort_unstable();
        addresses.dedup();
        assert_eq!(addresses.len(), 16);
        for pair in addresses.windows(2) {
            assert!(pair[1] - pair[0] >= 112);
        }
        assert!(cells.iter().all(|c| grid.owns(c.address())));
        drop(cells);
        assert_eq!(grid.free(), 16);
    }

    #[test]
    fn small_cells_round_to_a_power_of_two() {
        let grid = Grid::<3, 4>::open_with(&options()).unwrap();
        assert_eq!(grid.cell_size(), 4);
        assert_eq!(grid.cell_align(), 4);
        let grid = Grid::<4096, 2>::open_with(&options()).unwrap();
        assert_eq!(grid.cell_align(), 4096.min(page_size()));
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(matches!(
            Grid::<0, 4>::open_with(&options()),
            Err(Error::ZeroSize)
        ));
        assert!(matches!(
            Grid::<64, 0>::open_with(&options()),
            Err(Error::ZeroSize)
        ));
        assert!(matches!(
            Grid::<{ usize::MAX / 2 }, 4>::open_with(&options()),
            Err(Error::GridSize { cells: 4, .. })
        ));
        assert!(matches!(
            Grid::<16, { u32::MAX as usize }>::open_with(&options()),
            Err(Error::GridSize { .. })
        ));
    }

    #[test]
    fn a_given_cell_is_reused() {
        let grid = Grid::<64, 2>::open_with(&options()).unwrap();
        let a = grid.take().unwrap();
        let id = a.id();
        grid.give(a);
        let b = grid.take().unwrap();
        assert_eq!(b.id(), id, "the cell given back is the next taken");
    }

    #[test]
    fn cell_bytes_are_writable() {
        let grid = Grid::<32, 2>::open_with(&options()).unwrap();
        let mut cell = grid.take_uninit().unwrap();
        cell.as_uninit_mut().fill(MaybeUninit::new(0xAB));
        // SAFETY: every byte was just written.
        let cell = unsafe { cell.assume_init() };
        assert!(cell.iter().all(|&b| b == 0xAB));
        assert_eq!(cell.len(), 32);
    }

    /// `take` hands out zeroed cells: a fresh one as committed, a reused one
    /// zeroed again whatever its last owner wrote (through a `Cell`, an
    /// `UninitCell` or the allocator traits).
    #[test]
    fn taken_cells_read_as_zero() {
        let grid = Grid::<64, 1>::open_with(&options()).unwrap();
        let mut cell = grid.take().unwrap();
        assert!(cell.iter().all(|&b| b == 0), "fresh");
        cell.fill(7);
        drop(cell);
        let cell = grid.take().unwrap();
        assert!(cell.iter().all(|&b| b == 0), "reused after a Cell");
        drop(cell);
        let mut uninit = grid.take_uninit().unwrap();
        uninit.as_uninit_mut()[3] = MaybeUninit::uninit();
        drop(uninit);
        let cell = grid.take().unwrap();
        assert!(cell.iter().all(|&b| b == 0), "reused after an UninitCell");
        drop(cell);
        let layout = Layout::from_size_align(64, 1).unwrap();
        let p = crate::alloc::allocate(&grid, layout).unwrap().cast::<u8>();
        // SAFETY: a live 64-byte allocation.
        unsafe { p.as_ptr().write_bytes(9, 64) };
        // SAFETY: allocated above with `layout`.
        unsafe { crate::alloc::deallocate(&grid, p, layout) };
        let mut cell = grid.take().unwrap();
        assert!(cell.iter().all(|&b| b == 0), "reused after the allocator");
        cell[0] = 1;
        let zeroed = grid.take_uninit();
        assert!(zeroed.is_none(), "one cell, held");
    }

    #[test]
    #[should_panic(expected = "belongs to the Grid")]
    fn giving_to_another_grid_panics() {
        let a = Grid::<64, 2>::open_with(&options()).unwrap();
        let b = Grid::<64, 2>::open_with(&options()).unwrap();
        let cell = a.take().unwrap();
        b.give(cell);
    }

    #[test]
    fn a_foreign_cell_returns_home() {
        let a = Grid::<64, 2>::open_with(&options()).unwrap();
        let b = Grid::<64, 2>::open_with(&options()).unwrap();
        let cell = a.take().unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.give(cell)));
        assert!(result.is_err());
        assert_eq!(a.free(), 2, "the cell went back to its own grid");
        assert_eq!(b.free(), 2, "and never entered the other");
    }

    /// The ABA case on the shared list, interleaved by hand: a pop reads
    /// top 0 and its link 1, then stalls; meanwhile 0 and 1 are popped and 0
    /// is pushed back, so the top is 0 again but its link is 2. The stalled
    /// pop's compare-exchange must fail (the tag moved on): succeeding would
    /// put cell 1, which is held, back on top.
    #[test]
    fn a_stalled_pop_cannot_reinstall_a_taken_cell() {
        let grid = Grid::<64, 3>::open_with(&options()).unwrap();
        let links = grid.parts().unwrap().lists.links;
        fill_list(&grid, 3);
        let stale = grid.head.load(Ordering::Acquire);
        let next = grid.below(links, stale).unwrap();
        assert_eq!((stale as u32, next), (0, 1));

        assert_eq!(grid.pop(links), Some(0));
        assert_eq!(grid.pop(links), Some(1));
        grid.push(links, 0);
        let top = grid.head.load(Ordering::Acquire);
        assert_eq!(top as u32, 0, "the same index is on top again");
        assert_eq!(grid.below(links, top), Some(2));

        assert_eq!(grid.try_pop(stale, next), Err(top), "the stale pop fails");
        assert_eq!(grid.pop(links), Some(0));
        assert_eq!(grid.pop(links), Some(2), "cell 1 stays with its holder");
        assert_eq!(grid.pop(links), None);
        grid.push(links, 1);
    }

    /// The "every cell is held" check, interleaved by hand: between the two
    /// passes another thread parks a cell and a third takes it, so the slot
    /// is empty again, but its count moved on and the check fails; likewise a
    /// cell given to the list and taken again.
    #[test]
    fn an_empty_word_refilled_between_passes_is_a_change() {
        let grid = Grid::<64, 2>::open_with(&options()).unwrap();
        let lists = grid.parts().unwrap().lists;
        let links = lists.links;
        fill_list(&grid, 2);
        let (zero, one) = (grid.pop(links).unwrap(), grid.pop(links).unwrap());
        let mut seen = [0; SLOTS];
        let Look::Empty(head) = grid.look(lists, &mut seen) else {
            panic!("all cells are held")
        };
        assert!(grid.unchanged(lists, head, &seen));

        let slot = grid.slot(lists, 5).unwrap();
        let empty = slot.word.load(Ordering::Relaxed);
        slot.word.store(next_word(empty, zero), Ordering::Release);
        assert!(Grid::<64, 2>::try_empty(slot, next_word(empty, zero)));
        assert_eq!(slot.word.load(Ordering::Relaxed) as u32, NIL);
        assert!(!grid.unchanged(lists, head, &seen), "the slot changed");

        let Look::Empty(head) = grid.look(lists, &mut seen) else {
            panic!("all cells are held")
        };
        grid.push(links, one);
        assert_eq!(grid.pop(links), Some(one));
        assert!(!grid.unchanged(lists, head, &seen), "the list changed");

        let Look::Empty(head) = grid.look(lists, &mut seen) else {
            panic!("all cells are held")
        };
        assert!(grid.unchanged(lists, head, &seen));
        grid.push(links, zero);
        grid.push(links, one);
        assert_eq!(grid.free(), 2);
    }

    /// Takes every cell once from `fresh` and pushes them on the list in
    /// reverse, so that it holds 0, 1, 2, ... from the top, as a list that
    /// started full would.
    fn fill_list<const C: usize, const N: usize>(grid: &Grid<C, N>, cells: u32) {
        let lists = grid.parts().unwrap().lists;
        let taken: Vec<u32> = (0..cells).map(|_| grid.take_fresh().unwrap()).collect();
        assert_eq!(
            taken,
            (0..cells).collect::<Vec<_>>(),
            "fresh cells in order"
        );
        for index in taken.into_iter().rev() {
            grid.push(lists.links, index);
        }
    }

    /// The slots that hold a cell now.
    fn parked<const C: usize, const N: usize>(grid: &Grid<C, N>) -> Vec<u32> {
        grid.slots(grid.parts().unwrap().lists)
            .iter()
            .map(|slot| slot.word.load(Ordering::Relaxed) as u32)
            .filter(|&index| index != NIL)
            .collect()
    }

    #[test]
    fn a_thread_takes_from_its_slot_then_the_list() {
        let grid = Grid::<64, 4>::open_with(&options()).unwrap();
        let (a, b) = (grid.take().unwrap(), grid.take().unwrap());
        let (ia, ib) = (a.id(), b.id());
        assert!(thread::tag() <= SLOTS, "a test thread has a slot");
        grid.give(a);
        assert_eq!(parked(&grid), [ia as u32], "the first goes to the slot");
        grid.give(b);
        assert_eq!(parked(&grid), [ia as u32], "the second to the list");
        assert_eq!(grid.free(), 4);
        let first = grid.take().unwrap();
        assert_eq!(first.id(), ia, "the slot first");
        let second = grid.take().unwrap();
        assert_eq!(second.id(), ib, "then the list's top");
        assert!(parked(&grid).is_empty());
    }

    /// A cell parked in another thread's slot is taken once the list is
    /// empty, while that thread lives and after it exits.
    #[test]
    fn cells_in_other_threads_slots_are_taken() {
        let grid = Grid::<64, 3>::open_with(&options()).unwrap();
        let (parked_tx, parked_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            let grid = &grid;
            s.spawn(move || {
                let cell = grid.take().unwrap();
                drop(cell);
                assert!(thread::tag() <= SLOTS, "a test thread has a slot");
                parked_tx.send(()).unwrap();
                done_rx.recv().unwrap();
            });
            parked_rx.recv().unwrap();
            assert_eq!(parked(grid).len(), 1, "the other thread parked its cell");
            let all: Vec<_> = (0..3).map(|_| grid.take().expect("a free cell")).collect();
            assert!(parked(grid).is_empty(), "taken from the live thread's slot");
            assert!(grid.take().is_none());
            drop(all);
            done_tx.send(()).unwrap();
        });
        // Park this thread's cell elsewhere: a thread that exits leaves its.
        let held: Vec<_> = (0..3).map(|_| grid.take().unwrap()).collect();
        std::thread::scope(|s| {
            s.spawn(move || drop(held));
        });
        assert_eq!(parked(&grid).len(), 1, "the exited thread's slot holds one");
        assert_eq!(grid.free(), 3);
        let all: Vec<_> = (0..3).map(|_| grid.take().expect("a free cell")).collect();
        assert!(grid.take().is_none());
        drop(all);
    }

    #[test]
    fn lazy_grid_carves_on_first_take() {
        let grid = Grid::<64, 8>::lazy_with(options());
        assert!(!grid.owns(core::ptr::null::<u8>()));
        let cell = grid.take().unwrap();
        assert!(grid.owns(cell.address()));
        assert_eq!(
            cell.address(),
            grid.block().as_ptr(),
            "the first cell first"
        );
        assert_eq!(grid.free(), 7);
        assert!(size_of::<Slot>() >= 64, "a cache line per slot at least");
        let meta = grid.meta.get().unwrap();
        assert!(meta.committed() >= SLOTS * size_of::<Slot>() + 8 * 4);
        assert!(
            !meta.contains(cell.address()),
            "the links live apart from the cells"
        );
    }

    /// A lazy Grid commits its cells as they are first used, not at once.
    #[test]
    fn a_lazy_grid_commits_what_it_uses() {
        const CELL: usize = 64 << 10;
        let grid = Grid::<CELL, 1024>::lazy_with(options().prefault(false));
        let first = grid.take().unwrap();
        let block = grid.block();
        assert_eq!(block.capacity(), CELL * 1024);
        assert!(block.committed() <= crate::block::COMMIT_STEP, "{block:?}");
        let held: Vec<_> = (0..100).map(|_| grid.take().unwrap()).collect();
        assert!(block.committed() >= 101 * CELL);
        assert!(block.committed() < 101 * CELL + 2 * crate::block::COMMIT_STEP);
        drop(held);
        drop(first);
        assert_eq!(grid.free(), 1024);
    }

    #[test]
    fn invalid_sizes_say_why() {
        let grid = Grid::<{ usize::MAX }, 1>::lazy_with(options());
        assert!(grid.take().is_none());
        match grid.try_block() {
            Err(Error::GridSize {
                cell_size, cells, ..
            }) => assert_eq!((*cell_size, *cells), (usize::MAX, 1)),
            other => panic!("{other:?}"),
        }
        match Grid::<16, { u32::MAX as usize }>::open_with(&options()) {
            Err(error @ Error::GridSize { cells, .. }) => {
                assert_eq!(cells, u32::MAX as usize);
                assert!(error.to_string().contains("cells"), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }
}
