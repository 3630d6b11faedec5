//! [`Cell`] and [`UninitCell`]: a Grid's cells as their holders see them
//! (part of `grid`). A `Cell`'s bytes are initialized, so it dereferences
//! to `[u8]`; an `UninitCell`'s may not be, so it only hands out
//! `MaybeUninit` bytes until it is zeroed or known written.

use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};

use super::Grid;

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
    pub(super) grid: &'g Grid<CELL_SIZE, CELLS>,
    pub(super) index: u32,
    /// A Cell hands out `&mut` access to its bytes, so sharing one between
    /// threads is not allowed; moving it to another thread is.
    pub(super) _not_sync: PhantomData<core::cell::Cell<()>>,
}

/// One cell of a [`Grid`] (from [`Grid::take_uninit`]) whose bytes may be
/// uninitialized: write them through [`as_uninit_mut`](UninitCell::as_uninit_mut),
/// then make it a [`Cell`] with [`zero`](UninitCell::zero) or
/// [`assume_init`](UninitCell::assume_init). Held exclusively until it is
/// dropped, which gives it back.
pub struct UninitCell<'g, const CELL_SIZE: usize, const CELLS: usize> {
    pub(super) grid: &'g Grid<CELL_SIZE, CELLS>,
    pub(super) index: u32,
    /// As `Cell`'s.
    pub(super) _not_sync: PhantomData<core::cell::Cell<()>>,
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
