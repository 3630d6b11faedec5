//! [`Stamped`]: the Grid's packed word, `stamp << 32 | index` (part of
//! `grid`).
//!
//! The shared list's head and each thread's slot are one such word: `index`
//! is a cell (or `NIL`: empty), and `stamp` counts every change of the word,
//! wrapping. A compare-exchange that read a word before other threads took
//! and gave back the same cell fails, because the stamp moved on: that is
//! what defeats ABA (a thread would have to sleep through 2^32 changes
//! between its load and its compare-exchange to be fooled). Crossbeam calls
//! the same thing a stamp. This file is the only place that packs or
//! unpacks the word.

use core::sync::atomic::{AtomicU64, Ordering};

use super::NIL;

/// A stamp and a cell index in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamped(u64);

impl Stamped {
    /// No cell, stamp 0: a fresh head or slot.
    pub(super) const EMPTY: Stamped = Stamped(NIL as u64);

    /// The cell index (or `NIL`).
    #[inline(always)]
    pub(super) const fn index(self) -> u32 {
        // The low half is the index: the truncation is the unpacking.
        self.0 as u32
    }

    /// Whether the word holds no cell.
    #[inline(always)]
    pub(super) const fn is_empty(self) -> bool {
        self.index() == NIL
    }

    /// The word that replaces this one to hold `index`: the stamp moved on.
    #[inline(always)]
    pub(super) const fn with(self, index: u32) -> Stamped {
        Stamped(((self.0 >> 32).wrapping_add(1) << 32) | index as u64)
    }
}

/// A [`Stamped`] word shared between threads.
pub(super) struct AtomicStamped(AtomicU64);

impl AtomicStamped {
    pub(super) const fn new(word: Stamped) -> AtomicStamped {
        AtomicStamped(AtomicU64::new(word.0))
    }

    #[inline(always)]
    pub(super) fn load(&self, order: Ordering) -> Stamped {
        Stamped(self.0.load(order))
    }

    #[inline(always)]
    pub(super) fn store(&self, word: Stamped, order: Ordering) {
        self.0.store(word.0, order);
    }

    /// The compare-exchange: weak (it may fail spuriously: for loops that
    /// retry) or strong.
    #[inline(always)]
    pub(super) fn compare_exchange(
        &self,
        current: Stamped,
        new: Stamped,
        success: Ordering,
        failure: Ordering,
        weak: bool,
    ) -> Result<Stamped, Stamped> {
        let result = if weak {
            self.0
                .compare_exchange_weak(current.0, new.0, success, failure)
        } else {
            self.0.compare_exchange(current.0, new.0, success, failure)
        };
        result.map(Stamped).map_err(Stamped)
    }
}
