//! The shared free list of a [`Grid`] (part of `grid`): a Treiber stack of
//! cell indices whose links live in the links Block, one `AtomicU32` per
//! cell, and whose head is a [`Stamped`] word.
//!
//! The argument: a cell is on the list only between a `push` (by the thread
//! that held it) and the `pop` that takes it. `pop` reads the head, then the
//! top cell's link, then swaps the head for the link's cell with the stamp
//! moved on; if another thread popped that cell meanwhile (and maybe pushed
//! it back, with a different link), the head's stamp changed and the swap
//! fails, so no stale link is installed. `push` writes the cell's link
//! before it publishes the cell with the head's Release, and `pop` reads the
//! link after the head's Acquire, so a link is always read after it was
//! written. The same Release/Acquire pair carries the previous holder's
//! writes to the cell to its next holder.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};

use super::stamp::Stamped;
use super::{Grid, NIL};

impl<const CELL_SIZE: usize, const CELLS: usize> Grid<CELL_SIZE, CELLS> {
    #[inline]
    pub(super) fn link(&self, links: NonNull<AtomicU32>, index: u32) -> &AtomicU32 {
        debug_assert!((index as usize) < CELLS);
        // SAFETY: callers pass an index below CELLS (from the head word or a
        // link, which only ever hold cell indices or NIL, checked before);
        // the link area holds CELLS initialized AtomicU32s for as long as the
        // Grid (`&self`) lives.
        unsafe { links.add(index as usize).as_ref() }
    }

    /// Pops a free cell's index off the shared list.
    #[inline]
    pub(super) fn pop(&self, links: NonNull<AtomicU32>) -> Option<u32> {
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
    pub(super) fn below(&self, links: NonNull<AtomicU32>, head: Stamped) -> Option<u32> {
        let index = head.index();
        if index == NIL {
            return None;
        }
        // Relaxed: the link was published by the Acquire that gave us `head`.
        // If another thread pops this cell meanwhile, the link may change
        // under us, but then the stamp has moved on and `try_pop` fails.
        Some(self.link(links, index).load(Ordering::Relaxed))
    }

    /// Replaces the head word `head` with `next` on top (and the stamp moved
    /// on); returns the popped index, or the head word seen instead.
    #[inline]
    pub(super) fn try_pop(&self, head: Stamped, next: u32) -> Result<u32, Stamped> {
        // Success Acquire: as the load in `pop`, for the value we replace.
        // Failure Acquire: the caller retries with the value seen, so it needs
        // the same guarantee as the first load.
        self.head
            .compare_exchange(
                head,
                head.with(next),
                Ordering::Acquire,
                Ordering::Acquire,
                false,
            )
            .map(|_| head.index())
    }

    /// Pushes a cell's index onto the shared list.
    #[inline]
    pub(super) fn push(&self, links: NonNull<AtomicU32>, index: u32) {
        // Relaxed: the value only seeds the compare-exchange, which checks it.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // Relaxed: published by the Release compare-exchange below.
            self.link(links, index)
                .store(head.index(), Ordering::Relaxed);
            // Release: pairs with the Acquire in `pop`, publishing the link
            // and our writes to the cell to whoever takes it next.
            match self.head.compare_exchange(
                head,
                head.with(index),
                Ordering::Release,
                Ordering::Relaxed,
                true,
            ) {
                Ok(_) => return,
                Err(seen) => head = seen,
            }
        }
    }
}
