//! The per-thread slots of a [`Grid`] (part of `grid`): one parked cell
//! per thread tag, so that a thread giving back and taking one buffer after
//! another keeps working on the same cell with one atomic operation per
//! cycle.
//!
//! The argument: each slot is a [`Stamped`] word. Only the thread holding
//! the slot's tag puts a cell in (a plain store, when it sees the slot
//! empty: no other thread fills it), and any thread may take the cell out
//! (a compare-exchange to empty with the stamp moved on, so that two takers
//! cannot both win). The filling store is Release and the taking exchange
//! Acquire: the giver's writes to the cell reach the taker. When the list
//! and every slot look empty, `take_elsewhere` looks twice; equal words
//! (stamps included) in both passes prove a moment when every cell was
//! held, which is the only time `take` may fail.

use core::sync::atomic::Ordering;

use crossbeam_utils::CachePadded;

use super::stamp::{AtomicStamped, Stamped};
use super::{Grid, HELD, Lists, NIL, PARKED, SLOTS};
use crate::thread;

/// One thread's slot: a cell it gave back, until some thread takes it, in a
/// [`Stamped`] word (empty, or the cell; its stamp counts every change).
///
/// Only the thread holding the tag puts a cell in; any thread may take it
/// out. Padded as crossbeam pads against false sharing (128 bytes on x86-64
/// and aarch64, whose prefetchers pull cache lines in pairs), so that a
/// thread working on its own slot does not contend with the others.
pub(super) struct Slot {
    pub(super) word: CachePadded<AtomicStamped>,
}

/// What the first pass over the list and the slots found.
pub(super) enum Look {
    /// A cell, now ours.
    Took(u32),
    /// A word changed under us: look again.
    Changed,
    /// Every word empty; the head word seen (the slots' are kept aside).
    Empty(Stamped),
}

impl<const CELL_SIZE: usize, const CELLS: usize> Grid<CELL_SIZE, CELLS> {
    /// All the threads' slots; tag `t` has slot `t - 1`.
    #[inline(always)]
    pub(super) fn slots(&self, lists: Lists) -> &[Slot] {
        // SAFETY: the slot area holds SLOTS initialized slots in the Block,
        // which lives as long as the Grid (`&self`); they are only accessed
        // atomically.
        unsafe { core::slice::from_raw_parts(lists.slots.as_ptr(), SLOTS) }
    }

    /// The slot of the thread with tag `tag`, if it has one.
    #[inline(always)]
    pub(super) fn slot(&self, lists: Lists, tag: usize) -> Option<&Slot> {
        // Tag 0 wraps to an index past the end.
        self.slots(lists).get(tag.wrapping_sub(1))
    }

    /// Empties `slot`, which held `word` with a cell in it; says whether this
    /// thread got the cell (another may have taken it first).
    #[inline(always)]
    pub(super) fn try_empty(slot: &Slot, word: Stamped) -> bool {
        // Success Acquire: pairs with the Release store in `give_index` that
        // put the cell there, so the previous holder's writes to the cell
        // happen-before our use of it. Failure Relaxed: nothing is read.
        slot.word
            .compare_exchange(
                word,
                word.with(NIL),
                Ordering::Acquire,
                Ordering::Relaxed,
                false,
            )
            .is_ok()
    }

    /// The shared list was empty and every cell was used once: takes from
    /// the list or any thread's slot, or returns `None` once two passes over
    /// all of them saw the same empty words. (`fresh` only grows, so once it
    /// reached `CELLS` no cell comes from there again.)
    ///
    /// Every change of the head word or of a slot word moves its stamp on,
    /// so equal words in both passes mean that the word did not change
    /// in between (barring 2^32 changes during the call). Then there was a
    /// moment, between the passes, when the list and every slot were empty at
    /// once. A cell moves only between a holder and the list or a slot, never
    /// through a hidden step, so at that moment every cell was held. If a word
    /// changed, another thread took or gave a cell: we look again, and the
    /// Grid as a whole made progress (lock-free, not wait-free).
    #[cold]
    pub(super) fn take_elsewhere(&self, lists: Lists) -> Option<u32> {
        let mut seen = [Stamped::EMPTY; SLOTS];
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
    pub(super) fn look(&self, lists: Lists, seen: &mut [Stamped; SLOTS]) -> Look {
        // Acquire: as in `pop`.
        let head = self.head.load(Ordering::Acquire);
        if !head.is_empty() {
            return match self.pop(lists.links) {
                Some(index) => Look::Took(index),
                None => Look::Changed,
            };
        }
        for (slot, seen) in self.slots(lists).iter().zip(seen.iter_mut()) {
            // Acquire: keeps the pass's loads in order. The cell itself is
            // covered by `try_empty`'s Acquire.
            let word = slot.word.load(Ordering::Acquire);
            if !word.is_empty() {
                return if Self::try_empty(slot, word) {
                    Look::Took(word.index())
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
    pub(super) fn unchanged(&self, lists: Lists, head: Stamped, seen: &[Stamped; SLOTS]) -> bool {
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
    pub(super) fn give_index(&self, lists: Lists, index: u32) {
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
            if word.is_empty() {
                // Relaxed: published with the slot by the Release below.
                link.store(PARKED, Ordering::Relaxed);
                // Release: pairs with the Acquire in `try_empty`, publishing
                // our writes to the cell (and its link) to whoever takes it.
                slot.word.store(word.with(index), Ordering::Release);
                return;
            }
        }
        self.push(lists.links, index);
    }
}
