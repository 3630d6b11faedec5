//! [`Grid`]: fixed-size cells with a lock-free free list, inside one Block.

use core::alloc::Layout;
use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crossbeam_utils::CachePadded;

use crate::alloc::{Engine, Exhaustion};
use crate::{BlockOptions, Error, Tape, page_size};

/// The index that marks the end of the free list.
const NIL: u32 = u32::MAX;

/// `CELLS` cells of `CELL_SIZE` bytes each, carved out of one pinned Block,
/// handed out and taken back without locks.
///
/// Cells start at the Block's first byte, each `CELL_SIZE` rounded up to 16
/// bytes (or to the next power of two below 16) apart, so a cell is aligned to
/// the largest power of two dividing that stride, up to a page. The free list
/// lives in the same Block, after the cells: taking and giving never touch the
/// heap, so a Grid can be a global allocator.
///
/// ```
/// use unimem::{BlockOptions, Grid, Pinning};
///
/// let grid = Grid::<4096, 8>::new_with(&BlockOptions::new().pinning(Pinning::BestEffort))?;
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
    tape: Tape,
    parts: OnceLock<Option<Parts>>,
    exhaustion: Exhaustion,
}

/// Where the cells and the links are, once the Block is open.
#[derive(Clone, Copy)]
struct Parts {
    cells: NonNull<u8>,
    /// One word per cell: `len << 32 | next`, where `next` is the cell below
    /// in the free list (or `NIL`) and `len` the length of the list from this
    /// cell down, so the list's length is read off its top.
    links: NonNull<AtomicU64>,
    /// The alignment every cell has.
    align: usize,
}

// SAFETY: the pointers in `Parts` point into the Block the Grid's Tape owns;
// every access through them is atomic (links) or goes to the one owner of a
// cell.
unsafe impl<const C: usize, const N: usize> Send for Grid<C, N> {}
// SAFETY: as above; the shared state is the atomic head and atomic links.
unsafe impl<const C: usize, const N: usize> Sync for Grid<C, N> {}

/// The sizes of a Grid's parts.
#[derive(Clone, Copy)]
struct Geometry {
    stride: usize,
    cells_bytes: usize,
    total: usize,
}

const fn geometry(cell: usize, cells: usize) -> Option<Geometry> {
    if cell == 0 || cells == 0 || cells >= NIL as usize {
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
    let Some(links_start) = cells_bytes.checked_next_multiple_of(align_of::<AtomicU64>()) else {
        return None;
    };
    let Some(total) = links_start.checked_add(cells * size_of::<AtomicU64>()) else {
        return None;
    };
    Some(Geometry {
        stride,
        cells_bytes,
        total,
    })
}

impl<const CELL_SIZE: usize, const CELLS: usize> Grid<CELL_SIZE, CELLS> {
    /// Distance between cells: `CELL_SIZE` rounded up to the cell granule.
    const STRIDE: usize = match geometry(CELL_SIZE, CELLS) {
        Some(g) => g.stride,
        None => 0,
    };

    /// Opens a pinned Block for the cells and their free list.
    ///
    /// A zero `CELL_SIZE` or `CELLS` is [`Error::ZeroSize`]; a Grid whose
    /// size overflows, or with `u32::MAX` cells or more, is [`Error::Overflow`].
    pub fn new() -> Result<Self, Error> {
        Self::new_with(&BlockOptions::new())
    }

    /// As [`Grid::new`], opening the Block with `options`.
    pub fn new_with(options: &BlockOptions<'_>) -> Result<Self, Error> {
        if CELL_SIZE == 0 || CELLS == 0 {
            return Err(Error::ZeroSize);
        }
        let Some(geometry) = geometry(CELL_SIZE, CELLS) else {
            return Err(Error::Overflow { requested: CELLS });
        };
        let grid = Grid {
            head: CachePadded::new(AtomicU64::new(u64::from(NIL))),
            tape: Tape::start_with(geometry.total, options)?,
            parts: OnceLock::new(),
            exhaustion: Exhaustion::Fail,
        };
        match grid.parts() {
            Some(_) => Ok(grid),
            None => Err(Error::Overflow { requested: CELLS }),
        }
    }

    /// A Grid whose pinned Block opens on first use: the constructor for
    /// `#[global_allocator]` statics. Bad sizes show up as failed takes.
    pub const fn lazy() -> Self {
        Self::lazy_with(BlockOptions::new())
    }

    /// As [`Grid::lazy`], with options for the Block.
    pub const fn lazy_with(options: BlockOptions<'static>) -> Self {
        let bytes = match geometry(CELL_SIZE, CELLS) {
            Some(g) => g.total,
            None => 0,
        };
        Grid {
            head: CachePadded::new(AtomicU64::new(NIL as u64)),
            tape: Tape::lazy_with(bytes, options),
            parts: OnceLock::new(),
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
    fn parts(&self) -> Option<&Parts> {
        match self.parts.get() {
            Some(parts) => parts.as_ref(),
            None => self.parts.get_or_init(|| self.carve()).as_ref(),
        }
    }

    /// Carves the cells and links out of the Tape and threads every cell onto
    /// the free list, in address order. Runs once, inside `OnceLock`, whose
    /// completion publishes these plain and Relaxed writes to every thread
    /// that later sees the parts.
    #[cold]
    fn carve(&self) -> Option<Parts> {
        let geometry = geometry(CELL_SIZE, CELLS)?;
        let cells = self.tape.take(geometry.cells_bytes, 1)?;
        let links = self
            .tape
            .take(CELLS * size_of::<AtomicU64>(), align_of::<AtomicU64>())?;
        let links = NonNull::new(links.cast::<AtomicU64>())?;
        for i in 0..CELLS {
            let next = if i + 1 < CELLS { (i + 1) as u32 } else { NIL };
            let len = (CELLS - i) as u64;
            // SAFETY: `i < CELLS`, inside the link area just taken, which is
            // aligned for AtomicU64 and initialized (Block memory always is).
            unsafe { links.add(i).as_ref() }.store(len << 32 | u64::from(next), Ordering::Relaxed);
        }
        self.head.store(0, Ordering::Relaxed);
        let stride_align = 1 << Self::STRIDE.trailing_zeros();
        Some(Parts {
            cells: NonNull::new(cells)?,
            links,
            align: stride_align.min(page_size()),
        })
    }

    #[inline]
    fn link(parts: &Parts, index: u32) -> &AtomicU64 {
        debug_assert!((index as usize) < CELLS);
        // SAFETY: callers pass an index below CELLS (from the head word or a
        // link, which only ever hold cell indices or NIL, checked before);
        // the link area holds CELLS initialized AtomicU64s for the Grid's life.
        unsafe { parts.links.add(index as usize).as_ref() }
    }

    /// Pops a free cell's index.
    #[inline]
    fn pop(&self, parts: &Parts) -> Option<u32> {
        // Acquire: pairs with the Release compare-exchange in `push` that put
        // this top there, so its link store and every write the previous owner
        // made to the cell happen-before our reading of the link and our use
        // of the cell.
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let index = head as u32;
            if index == NIL {
                return None;
            }
            // Relaxed: the link was published by the Acquire that gave us
            // `head`. If another thread pops this cell meanwhile, the link may
            // change under us, but then the tag has moved on and the
            // compare-exchange below fails.
            let next = Self::link(parts, index).load(Ordering::Relaxed) as u32;
            let new = ((head >> 32).wrapping_add(1) << 32) | u64::from(next);
            // Success Acquire: as the load above, for the value we replace.
            // Failure Acquire: we retry with the value seen, so it needs the
            // same guarantee as the first load.
            match self
                .head
                .compare_exchange_weak(head, new, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => return Some(index),
                Err(seen) => head = seen,
            }
        }
    }

    /// Pushes a cell's index back.
    #[inline]
    fn push(&self, parts: &Parts, index: u32) {
        // Relaxed: the value only seeds the compare-exchange, which checks it.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let top = head as u32;
            let below = if top == NIL {
                0
            } else {
                // Relaxed: a stale length means the top changed, and the
                // compare-exchange below fails.
                Self::link(parts, top).load(Ordering::Relaxed) >> 32
            };
            // Relaxed: published by the Release compare-exchange below.
            Self::link(parts, index).store((below + 1) << 32 | u64::from(top), Ordering::Relaxed);
            let new = ((head >> 32).wrapping_add(1) << 32) | u64::from(index);
            // Release: pairs with the Acquire in `pop`, publishing the link
            // and our writes to the cell to whoever takes it next.
            match self
                .head
                .compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(seen) => head = seen,
            }
        }
    }

    /// Takes a free cell; `None` when all are taken (or a lazy Grid's Block
    /// cannot be opened). The cell goes back when dropped or given.
    #[inline]
    pub fn take(&self) -> Option<Cell<'_, CELL_SIZE, CELLS>> {
        let parts = self.parts()?;
        let index = self.pop(parts)?;
        Some(Cell {
            grid: self,
            index,
            _not_sync: PhantomData,
        })
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

    /// Free cells now (a snapshot while other threads take and give).
    pub fn free(&self) -> usize {
        let Some(parts) = self.parts() else {
            return 0;
        };
        let top = self.head.load(Ordering::Acquire) as u32;
        if top == NIL {
            0
        } else {
            (Self::link(parts, top).load(Ordering::Relaxed) >> 32) as usize
        }
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

    /// The alignment of every cell (a lazy Grid opens its Block; 0 if it cannot).
    pub fn cell_align(&self) -> usize {
        self.parts().map_or(0, |parts| parts.align)
    }

    /// The Tape the cells and the free list were carved from (the rest of its
    /// last page is still there to take).
    pub fn tape(&self) -> &Tape {
        // Carve first, so that nobody takes from the Tape before the cells do.
        let _ = self.parts();
        &self.tape
    }

    /// Whether `ptr` points into one of the cells.
    #[inline]
    pub fn owns<T: ?Sized>(&self, ptr: *const T) -> bool {
        match self.parts.get() {
            Some(Some(parts)) => {
                ptr.cast::<u8>()
                    .addr()
                    .wrapping_sub(parts.cells.as_ptr().addr())
                    < Self::STRIDE * CELLS
            }
            _ => false,
        }
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
        let index = self.pop(parts)?;
        Some(NonNull::slice_from_raw_parts(
            Self::cell_ptr(parts, index),
            Self::STRIDE,
        ))
    }

    #[inline]
    fn owns(&self, ptr: NonNull<u8>) -> bool {
        Grid::owns(self, ptr.as_ptr())
    }

    #[inline]
    unsafe fn give(&self, ptr: NonNull<u8>, _layout: Layout) -> bool {
        let Some(Some(parts)) = self.parts.get() else {
            return false;
        };
        let offset = ptr
            .as_ptr()
            .addr()
            .wrapping_sub(parts.cells.as_ptr().addr());
        if offset >= Self::STRIDE * N {
            return false;
        }
        debug_assert_eq!(offset % Self::STRIDE, 0, "not the start of a cell");
        self.push(parts, (offset / Self::STRIDE) as u32);
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

/// One cell of a [`Grid`], held exclusively until it is dropped or given back.
pub struct Cell<'g, const CELL_SIZE: usize, const CELLS: usize> {
    grid: &'g Grid<CELL_SIZE, CELLS>,
    index: u32,
    /// A Cell hands out `&mut` access to its bytes, so sharing one between
    /// threads is not allowed; moving it to another thread is.
    _not_sync: PhantomData<core::cell::Cell<()>>,
}

impl<const CELL_SIZE: usize, const CELLS: usize> Cell<'_, CELL_SIZE, CELLS> {
    /// The cell's first byte.
    #[inline]
    pub fn address(&self) -> *mut u8 {
        let parts = self.parts();
        Grid::<CELL_SIZE, CELLS>::cell_ptr(parts, self.index).as_ptr()
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

    /// The cell's bytes, for writing. They hold whatever the previous owner
    /// left (zero on first use), which Rust treats as possibly uninitialized.
    pub fn as_uninit_mut(&mut self) -> &mut [MaybeUninit<u8>] {
        // SAFETY: the cell is inside the Grid's Block, which outlives 'g; this
        // Cell owns it exclusively until dropped, and `&mut self` makes this
        // the only view.
        unsafe {
            core::slice::from_raw_parts_mut(self.address().cast::<MaybeUninit<u8>>(), self.size())
        }
    }

    #[inline]
    fn parts(&self) -> &Parts {
        match self.grid.parts.get() {
            Some(Some(parts)) => parts,
            // A Cell exists only after `take` found the parts.
            _ => unreachable!("a Cell exists only in a carved Grid"),
        }
    }
}

impl<const CELL_SIZE: usize, const CELLS: usize> Drop for Cell<'_, CELL_SIZE, CELLS> {
    fn drop(&mut self) {
        let parts = *self.parts();
        self.grid.push(&parts, self.index);
    }
}

impl<const CELL_SIZE: usize, const CELLS: usize> fmt::Debug for Cell<'_, CELL_SIZE, CELLS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cell")
            .field("id", &self.index)
            .field("address", &self.address())
            .finish()
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
        let grid = Grid::<100, 16>::new_with(&options()).unwrap();
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
        let grid = Grid::<3, 4>::new_with(&options()).unwrap();
        assert_eq!(grid.cell_size(), 4);
        assert_eq!(grid.cell_align(), 4);
        let grid = Grid::<4096, 2>::new_with(&options()).unwrap();
        assert_eq!(grid.cell_align(), 4096.min(page_size()));
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(matches!(
            Grid::<0, 4>::new_with(&options()),
            Err(Error::ZeroSize)
        ));
        assert!(matches!(
            Grid::<64, 0>::new_with(&options()),
            Err(Error::ZeroSize)
        ));
        assert!(matches!(
            Grid::<{ usize::MAX / 2 }, 4>::new_with(&options()),
            Err(Error::Overflow { .. })
        ));
        assert!(matches!(
            Grid::<16, { u32::MAX as usize }>::new_with(&options()),
            Err(Error::Overflow { .. })
        ));
    }

    #[test]
    fn a_given_cell_is_reused() {
        let grid = Grid::<64, 2>::new_with(&options()).unwrap();
        let a = grid.take().unwrap();
        let id = a.id();
        grid.give(a);
        let b = grid.take().unwrap();
        assert_eq!(b.id(), id, "LIFO: the cell given back is the next taken");
    }

    #[test]
    fn cell_bytes_are_writable() {
        let grid = Grid::<32, 2>::new_with(&options()).unwrap();
        let mut cell = grid.take().unwrap();
        cell.as_uninit_mut().fill(MaybeUninit::new(0xAB));
        // SAFETY: every byte was just written.
        let bytes = unsafe { core::slice::from_raw_parts(cell.address(), 32) };
        assert!(bytes.iter().all(|&b| b == 0xAB));
    }

    #[test]
    #[should_panic(expected = "belongs to the Grid")]
    fn giving_to_another_grid_panics() {
        let a = Grid::<64, 2>::new_with(&options()).unwrap();
        let b = Grid::<64, 2>::new_with(&options()).unwrap();
        let cell = a.take().unwrap();
        b.give(cell);
    }

    #[test]
    fn a_foreign_cell_returns_home() {
        let a = Grid::<64, 2>::new_with(&options()).unwrap();
        let b = Grid::<64, 2>::new_with(&options()).unwrap();
        let cell = a.take().unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.give(cell)));
        assert!(result.is_err());
        assert_eq!(a.free(), 2, "the cell went back to its own grid");
        assert_eq!(b.free(), 2, "and never entered the other");
    }

    #[test]
    fn lazy_grid_carves_on_first_take() {
        let grid = Grid::<64, 8>::lazy_with(options());
        assert!(!grid.owns(core::ptr::null::<u8>()));
        let cell = grid.take().unwrap();
        assert!(grid.owns(cell.address()));
        assert_eq!(grid.free(), 7);
        assert_eq!(grid.tape().used(), 8 * 64 + 8 * size_of::<AtomicU64>());
    }
}
