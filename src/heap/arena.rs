//! An arena: one data Block of allocations, and the metadata Block that
//! describes it.
//!
//! The data Block holds nothing but allocations, from its first byte (a
//! 64 KiB boundary, so that every slab is aligned to its size): it is what
//! is pinned and what devices see. The metadata Block starts with the
//! [`Arena`] itself and then holds one [`GroupMeta`] per 64 KiB group of
//! data: the group's slab header and its 16 units' boundary tags. Both are
//! reserved whole when the arena opens and committed together as the arena
//! grows: data in steps of 2 MiB (`Region::grow_to`), metadata as the data
//! it describes. The run allocator tiles what is committed; when it cannot
//! serve a request, the arena commits more (`extend`).
//!
//! Free memory goes back to the system (`trim`): a free run at the arena's
//! end is decommitted, and whole free groups inside are discarded (their
//! pages dropped and unlocked, the range still committed; a group's
//! `discarded` flag says so, and taking any of its units recommits it
//! first). This runs on its own when a free leaves more than
//! [`TRIM_THRESHOLD`](super::Heap::TRIM_THRESHOLD) of free memory in the
//! arena, keeping [`TRIM_KEEP`](super::Heap::TRIM_KEEP), and fully on
//! `Heap::trim`. What an automatic trim keeps adapts: each time
//! the arena has to commit again after trims gave memory back, the amount
//! kept (and the threshold with it) doubles, and grows to at least what they
//! gave back, up to [`TRIM_KEEP_MAX`](super::Heap::TRIM_KEEP_MAX), so that a
//! program whose free memory swings back and forth stops paying a page
//! fault for every page of the swing (glibc's trim threshold adapts the
//! same way).
//!
//! Growing and trimming run under the arena's grow lock, with the run lock
//! taken only to read or change the runs: requests the committed part can
//! serve do not wait for a commit's system calls.
//!
//! # Zeroed memory
//!
//! Each group keeps one bit per unit (`GroupMeta::zero`): set, the unit
//! reads zero and nothing has touched it since the system provided it.
//! Bits are set for units committed fresh (`extend`: a commit maps pages
//! that read zero) and for groups discarded (`discard_free`: their pages
//! read zero when taken back), and for the units a released slab never
//! handed out (`restore_zero`); they are cleared when the units are handed
//! out (`claim_units`, `fresh_slab`), whatever the caller then writes. A
//! zeroed allocation (`alloc_run` with `zeroed`, a run growing in place)
//! therefore writes nothing where the bits are set: those pages stay out
//! of memory until the program touches them. The units it must zero, which
//! a program wrote before, are zeroed by giving their pages back
//! (`Region::clear`: the pages read zero, and only those touched again
//! come back) when at least [`CLEAR_UNITS`] of them lie together and the
//! Block allows it (private base pages, not prefaulted, not registered, not
//! `Pinning::Required`), the run's first and last units excepted; else,
//! and for those two, by writing zeros. Slabs keep their group's
//! bits (`slab.rs`), so that objects never handed out from fresh units need
//! no zeroing either.

use core::ops::Range;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};

use super::runs::{GROUP_UNITS, Runs, UNIT, UnitMeta};
use super::shared::HeapCore;
use super::slab::{GROUP, SlabHeader};
use crate::lock::SpinLock;
use crate::{Block, BlockOptions, Error, Region};

/// When a free leaves at least this much free memory in memory in an arena,
/// the arena gives all but [`TRIM_KEEP`](super::Heap::TRIM_KEEP) of it back to the system at once:
/// after a burst, committed (and locked) memory falls without waiting for
/// `Heap::trim`.
pub const TRIM_THRESHOLD: usize = 16 << 20;
/// The free memory an automatic trim leaves in memory, so that the next
/// burst does not start by committing again: what an arena starts with.
/// It doubles (and grows to at least what the trims gave back), up to
/// [`TRIM_KEEP_MAX`](super::Heap::TRIM_KEEP_MAX), each time the arena commits again after automatic
/// trims gave memory back, and the threshold with it (the threshold stays
/// [`TRIM_THRESHOLD`](super::Heap::TRIM_THRESHOLD) `- TRIM_KEEP` above it).
pub const TRIM_KEEP: usize = 4 << 20;
/// The most free memory an automatic trim keeps in memory.
pub const TRIM_KEEP_MAX: usize = 64 << 20;

/// The metadata of one 64 KiB group of data.
#[repr(C, align(64))]
pub(super) struct GroupMeta {
    pub(super) slab: SlabHeader,
    tags: [UnitMeta; GROUP_UNITS as usize],
    /// Whether the group's pages were given back (`discard_free`): the
    /// group is free and still committed. Set under the runs lock, cleared
    /// under the grow lock once the pages are taken back (`recommit`).
    discarded: AtomicBool,
    /// Bit `u` set: unit `u` of the group is known to read zero, untouched
    /// since the system provided it (committed fresh, or discarded) and not
    /// handed out since (module documentation, *Zeroed memory*).
    zero: AtomicU16,
}

/// A stretch of dirty units at least this long is zeroed by giving its
/// pages back (`Region::clear`) rather than by writing zeros: its pages,
/// resident or not, are not touched, and only those the program touches
/// come back. Every large run is longer (large requests are above 32 KiB).
/// The run's first and last units are written all the same: a program
/// touches a buffer's start (and often its end), and writing a page it
/// touches costs less than the fault that would bring it back.
const CLEAR_UNITS: u32 = 8;

/// The bits of units `from..to` (`from < to <= GROUP_UNITS`) of a group.
#[inline]
fn unit_bits(from: u32, to: u32) -> u16 {
    debug_assert!(from < to && to <= GROUP_UNITS);
    ((1u32 << to) - (1u32 << from)) as u16
}

/// One data Block's allocator. Lives at the start of its metadata Block.
pub(super) struct Arena {
    pub(super) runs: SpinLock<Runs>,
    /// Held while the arena's Blocks are committed or decommitted.
    grow: SpinLock<()>,
    /// The data: unit 0 at its first byte. Its handle never changes.
    data: Block,
    /// The Block this Arena lives in. The handle is kept inside the memory
    /// it describes; dropping the heap copies it out first.
    meta: Block,
    /// The data's first byte, as `data.as_ptr()`.
    base: NonNull<u8>,
    /// Reserved bytes of data: whole groups.
    len: usize,
    /// One per group, after the Arena in the metadata Block.
    groups: NonNull<GroupMeta>,
    /// Where `groups` starts in the metadata Block.
    groups_offset: usize,
    /// Groups discarded now (their flags set).
    discarded: AtomicUsize,
    /// The free bytes an automatic trim keeps in memory: [`TRIM_KEEP`](super::Heap::TRIM_KEEP) and
    /// up, doubled by `note_taken_back`. Changed under the grow lock.
    keep: AtomicUsize,
    /// Bytes automatic trims gave back since the arena last committed or
    /// recommitted. Changed under the grow lock.
    given_back: AtomicUsize,
    /// The heap's core, which counts what arenas commit; it outlives them.
    core: NonNull<HeapCore>,
}

// SAFETY: the pointers point into the arena's Blocks and the heap's core,
// which outlive it; `runs` is locked and the headers are shared as
// documented in `slab.rs`.
unsafe impl Sync for Arena {}

impl Arena {
    /// Reserves a data Block of `bytes` with `options` and its metadata
    /// Block, and builds the arena at the start of the latter. Nothing of
    /// the data is committed yet.
    pub(super) fn open(
        bytes: usize,
        options: &BlockOptions<'static>,
        core: NonNull<HeapCore>,
    ) -> Result<NonNull<Arena>, Error> {
        let data = Block::reserve_aligned(bytes, GROUP, options)?;
        let groups = data.capacity() / GROUP;
        let units = groups * GROUP_UNITS as usize;
        if groups < 3 || units > u32::MAX as usize {
            return Err(Error::TooSmall {
                requested: bytes,
                minimum: super::Heap::MIN_BLOCK,
            });
        }
        let groups_offset = size_of::<Arena>().next_multiple_of(align_of::<GroupMeta>());
        let meta = Block::reserve(
            groups_offset + groups * size_of::<GroupMeta>(),
            &options.for_metadata(),
        )?;
        meta.commit(groups_offset)?;
        let start = meta.as_ptr();
        let base = NonNull::new(data.as_ptr()).ok_or(Error::ZeroSize)?;
        // SAFETY: the metadata Block holds the Arena (committed above) and
        // then the group array (committed as the data grows), so the
        // pointers keep its provenance; the tags of unit 0 are the first
        // group's, after its slab header.
        unsafe {
            let groups_ptr = NonNull::new_unchecked(start.add(groups_offset).cast::<GroupMeta>());
            let tags = NonNull::new_unchecked(
                groups_ptr
                    .as_ptr()
                    .cast::<u8>()
                    .add(core::mem::offset_of!(GroupMeta, tags))
                    .cast::<UnitMeta>(),
            );
            let runs = Runs::new(tags, size_of::<GroupMeta>(), 0, base.as_ptr().addr());
            let arena = start.cast::<Arena>();
            arena.write(Arena {
                runs: SpinLock::new(runs),
                grow: SpinLock::new(()),
                data,
                meta,
                base,
                len: groups * GROUP,
                groups: groups_ptr,
                groups_offset,
                discarded: AtomicUsize::new(0),
                keep: AtomicUsize::new(TRIM_KEEP),
                given_back: AtomicUsize::new(0),
                core,
            });
            Ok(NonNull::new_unchecked(arena))
        }
    }

    /// Drops the arena at `arena`: its data Block, then the metadata Block
    /// it lives in.
    ///
    /// # Safety
    /// `arena` came from `open`, nothing refers to it or its memory any
    /// more, and it is dropped once.
    pub(super) unsafe fn close(arena: NonNull<Arena>) {
        // SAFETY: the caller's contract; the copy is read out before the
        // memory it lives in goes.
        let Arena { data, meta, .. } = unsafe { arena.read() };
        drop(data);
        drop(meta);
    }

    /// The data Block.
    pub(super) fn data(&self) -> &Region {
        &self.data
    }

    /// Bytes of metadata committed.
    pub(super) fn metadata(&self) -> usize {
        self.meta.committed()
    }

    /// The first byte of data (64 KiB-aligned).
    #[inline]
    pub(super) fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Reserved bytes of data.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The group array.
    #[inline]
    pub(super) fn groups(&self) -> NonNull<GroupMeta> {
        self.groups
    }

    #[inline]
    pub(super) fn contains(&self, ptr: *const u8) -> bool {
        ptr.addr().wrapping_sub(self.base.as_ptr().addr()) < self.len
    }

    #[inline]
    pub(super) fn offset(&self, ptr: *const u8) -> usize {
        ptr.addr() - self.base.as_ptr().addr()
    }

    /// The header of the group `ptr` is in.
    #[inline]
    pub(super) fn header(&self, ptr: *const u8) -> &SlabHeader {
        self.header_at(self.offset(ptr) / GROUP)
    }

    /// The header of group `group`, which the caller knows is committed
    /// (it holds an allocation there, or the runs tile it).
    #[inline]
    pub(super) fn header_at(&self, group: usize) -> &SlabHeader {
        debug_assert!(group < self.len / GROUP);
        // SAFETY: the group's metadata is committed (the caller's word) and
        // lives as long as the arena. Only the header is borrowed: the
        // group's tags beside it are the runs' (under their lock), so no
        // reference to the whole `GroupMeta` is ever made.
        unsafe { &(*self.groups.as_ptr().add(group)).slab }
    }

    #[inline]
    pub(super) fn unit_of(&self, ptr: *const u8) -> u32 {
        (self.offset(ptr) / UNIT) as u32
    }

    #[inline]
    pub(super) fn unit_ptr(&self, unit: u32) -> NonNull<u8> {
        // SAFETY: units come from `runs`, inside the arena.
        unsafe { self.base.add(unit as usize * UNIT) }
    }

    /// Bytes of live objects in the arena's slabs: each slab header's live
    /// count times its class size. A snapshot, exact when no thread
    /// allocates or frees in the arena.
    ///
    /// This is the one walk over headers that no allocation holds, so it
    /// takes the grow lock: the headers of every group the runs tile stay
    /// committed while it reads them (trims decommit metadata, and grow it,
    /// only under that lock).
    pub(super) fn slab_in_use(&self) -> usize {
        let _grow = self.grow.lock();
        // The runs tile the committed groups; only the grow lock changes
        // how many (`extend`, `trim_top`).
        let groups = self.runs.lock().units().div_ceil(GROUP_UNITS) as usize;
        (0..groups)
            .map(|group| {
                let slab = self.header_at(group);
                // Relaxed, both: a snapshot; a slab's fields are written by
                // its owner, and a stale value only makes the count stale.
                if slab.kind.load(Ordering::Relaxed) == super::slab::SLAB {
                    let class = slab.class.load(Ordering::Relaxed) as usize;
                    slab.live() as usize * super::class::size(class.min(super::class::CLASSES - 1))
                } else {
                    0
                }
            })
            .sum()
    }

    /// Takes a run of `units` units aligned to `align` for a large
    /// allocation, committing more of the arena if the committed part
    /// cannot serve it, and taking back discarded groups it covers. Its
    /// first `zeroed` bytes read as zero: only the units not known to be
    /// zero are zeroed (`zero_units`).
    pub(super) fn alloc_run(&self, units: u32, align: usize, zeroed: usize) -> Option<u32> {
        let unit = self.take_run_in_use(units, align)?;
        self.claim_units(unit, units, zeroed);
        Some(unit)
    }

    /// Takes a run as `alloc_run` does, leaving its units' zero bits to the
    /// caller.
    fn take_run_in_use(&self, units: u32, align: usize) -> Option<u32> {
        let unit = self.take_run(units, align)?;
        if self.any_discarded(unit, units) && !self.recommit(unit, units) {
            let _ = self.free_run(unit, |_| {});
            return None;
        }
        Some(unit)
    }

    /// The zero bits of group `group`.
    fn zero_bits(&self, group: usize) -> &AtomicU16 {
        debug_assert!(group < self.len / GROUP);
        // SAFETY: callers pass groups of committed units, whose metadata is
        // committed and lives as long as the arena; only the bits are
        // borrowed (see `header_at`).
        unsafe { &(*self.groups.as_ptr().add(group)).zero }
    }

    /// Records the units `from..to` as known to read zero. They are in no
    /// run anyone holds, and read zero: committed fresh, discarded, or never
    /// written since they were.
    fn mark_zero(&self, from: u32, to: u32) {
        let mut at = from;
        while at < to {
            let group = at / GROUP_UNITS;
            let end = to.min((group + 1) * GROUP_UNITS);
            let bits = unit_bits(at % GROUP_UNITS, end - group * GROUP_UNITS);
            // Relaxed: the units reach an allocator only through the runs
            // lock (`Runs::extend`, `Runs::free`), taken after this.
            self.zero_bits(group as usize)
                .fetch_or(bits, Ordering::Relaxed);
            at = end;
        }
    }

    /// The caller was just handed the units `unit..unit + units`: from now
    /// on they count as written. Their first `zeroed` bytes are to read as
    /// zero: the units not known to be zero among them are zeroed.
    fn claim_units(&self, unit: u32, units: u32, zeroed: usize) {
        let end = unit + units;
        // A stretch of dirty units waiting to be zeroed: (start, end).
        let mut dirty: Option<(u32, u32)> = None;
        let mut at = unit;
        while at < end {
            let group = at / GROUP_UNITS;
            let stop = end.min((group + 1) * GROUP_UNITS);
            let bits = unit_bits(at % GROUP_UNITS, stop - group * GROUP_UNITS);
            let flag = self.zero_bits(group as usize);
            // Relaxed, both: the bits of units in a run are changed only by
            // the run's holder (us); other units' bits in the same word are
            // changed with read-modify-writes too. A word with none of our
            // bits set is left alone, so that runs of written memory cost a
            // load per group.
            let known = if flag.load(Ordering::Relaxed) & bits != 0 {
                flag.fetch_and(!bits, Ordering::Relaxed) & bits
            } else {
                0
            };
            if zeroed > 0 {
                let mut rest = bits & !known;
                while rest != 0 {
                    let first = rest.trailing_zeros();
                    let len = (rest >> first).trailing_ones();
                    let (from, to) = (
                        group * GROUP_UNITS + first,
                        group * GROUP_UNITS + first + len,
                    );
                    dirty = match dirty {
                        Some((start, stretch_end)) if stretch_end == from => Some((start, to)),
                        Some((start, stretch_end)) => {
                            self.zero_units(start..stretch_end, unit..end, zeroed);
                            Some((from, to))
                        }
                        None => Some((from, to)),
                    };
                    rest &= !unit_bits(first, first + len);
                }
            }
            at = stop;
        }
        if let Some((start, stretch_end)) = dirty {
            self.zero_units(start..stretch_end, unit..end, zeroed);
        }
    }

    /// Zeroes the units `stretch` of the caller's run `run`, of which the
    /// first `zeroed` bytes are to read zero: a long enough stretch by giving
    /// its pages back where the Block allows it, except for the run's first
    /// and last units, which are written (`CLEAR_UNITS`); a short one by
    /// writing zeros. Nothing is written past `zeroed` bytes of the run.
    fn zero_units(&self, stretch: Range<u32>, run: Range<u32>, zeroed: usize) {
        let limit = (run.start as usize * UNIT).saturating_add(zeroed);
        let write = |from: u32, to: u32| {
            let (start, end) = (from as usize * UNIT, (to as usize * UNIT).min(limit));
            if start < end {
                // SAFETY: `start..end` lies in the caller's run, committed;
                // nothing refers to its contents yet.
                unsafe { self.base.add(start).write_bytes(0, end - start) };
            }
        };
        if (stretch.start as usize * UNIT) >= limit {
            return;
        }
        if stretch.len() as u32 >= CLEAR_UNITS {
            let from = stretch.start + u32::from(stretch.start == run.start);
            let to = stretch.end - u32::from(stretch.end == run.end);
            // SAFETY: units of the caller's run, committed and not discarded
            // (`take_run_in_use` took discarded groups back); nothing refers
            // to their contents yet.
            if unsafe { self.data.clear(from as usize * UNIT, to as usize * UNIT) }.is_ok() {
                write(stretch.start, from);
                write(to, stretch.end);
                return;
            }
        }
        write(stretch.start, stretch.end);
    }

    /// The groups the units `unit..unit + units` touch.
    fn groups_of(unit: u32, units: u32) -> Range<usize> {
        let first = (unit / GROUP_UNITS) as usize;
        first..(unit + units).div_ceil(GROUP_UNITS) as usize
    }

    /// The `discarded` flag of group `group`.
    fn discarded_flag(&self, group: usize) -> &AtomicBool {
        debug_assert!(group < self.len / GROUP);
        // SAFETY: callers pass groups of committed units, whose metadata is
        // committed and lives as long as the arena; only the flag is
        // borrowed (see `header_at`).
        unsafe { &(*self.groups.as_ptr().add(group)).discarded }
    }

    /// Whether a group the units touch is discarded.
    #[inline]
    fn any_discarded(&self, unit: u32, units: u32) -> bool {
        // Acquire: pairs with the Release store in `discard_free`, after the
        // runs lock that handed us the units was taken.
        Self::groups_of(unit, units).any(|g| self.discarded_flag(g).load(Ordering::Acquire))
    }

    /// Takes back the discarded groups the units `unit..unit + units` touch
    /// (all of each group: its other units may be taken next); false if
    /// their pages could not be locked again with pinning required.
    #[cold]
    fn recommit(&self, unit: u32, units: u32) -> bool {
        let _grow = self.grow.lock();
        let groups = Self::groups_of(unit, units);
        let mut taken = 0;
        let mut at = groups.start;
        while at < groups.end {
            // Relaxed: under the grow lock, which every clearing holds; a set
            // flag was published to us by the runs lock.
            if !self.discarded_flag(at).load(Ordering::Relaxed) {
                at += 1;
                continue;
            }
            let mut end = at + 1;
            while end < groups.end && self.discarded_flag(end).load(Ordering::Relaxed) {
                end += 1;
            }
            // SAFETY: every byte of these groups was discarded and not taken
            // back (their flags); their units are ours or free, and whoever
            // takes the free ones waits for this grow lock before touching
            // them (`any_discarded`).
            if unsafe { self.data.recommit(at * GROUP, end * GROUP) }.is_err() {
                break;
            }
            for group in at..end {
                // Release: pairs with the Acquire in `any_discarded`.
                self.discarded_flag(group).store(false, Ordering::Release);
            }
            taken += end - at;
            at = end;
        }
        self.discarded.fetch_sub(taken, Ordering::Relaxed);
        self.core().note_committed((taken * GROUP) as isize);
        if taken > 0 {
            self.note_taken_back();
        }
        at >= groups.end
    }

    /// Free bytes of the arena in memory: free units less discarded groups.
    fn resident_free(&self, runs: &Runs) -> usize {
        // Relaxed: changed under the grow lock; a snapshot is enough for a
        // threshold.
        (runs.free_units() as usize * UNIT)
            .saturating_sub(self.discarded.load(Ordering::Relaxed) * GROUP)
    }

    /// Takes a run from the runs, committing more of the arena if needed.
    fn take_run(&self, units: u32, align: usize) -> Option<u32> {
        if let Some(unit) = self.runs.lock().alloc(units, align) {
            return Some(unit);
        }
        let slack = (align / UNIT).max(1) as u32 - 1;
        loop {
            let (have, top) = {
                let runs = self.runs.lock();
                (runs.units(), runs.free_top())
            };
            // The new units merge with a free run at the end.
            let need = units.checked_add(slack)?.saturating_sub(top);
            let target = have.checked_add(need)?.min((self.len / UNIT) as u32);
            if target <= have || !self.extend(target) {
                return None;
            }
            if let Some(unit) = self.runs.lock().alloc(units, align) {
                return Some(unit);
            }
        }
    }

    /// Frees the run at `unit` (calling `before` with the runs locked, first);
    /// returns its length, or `None` if no used run starts there. If the
    /// free memory in memory is then past the threshold, the arena is
    /// trimmed to what it keeps.
    pub(super) fn free_run(&self, unit: u32, before: impl FnOnce(&mut Runs)) -> Option<u32> {
        let (len, resident) = {
            let mut runs = self.runs.lock();
            let len = runs.used_len(unit)?;
            before(&mut runs);
            runs.free(unit);
            (len, self.resident_free(&runs))
        };
        // Relaxed: a threshold; the trim reads it again under the grow lock.
        let keep = self.keep.load(Ordering::Relaxed);
        if resident >= keep + (TRIM_THRESHOLD - TRIM_KEEP) {
            self.trim_auto();
        }
        Some(len)
    }

    /// The automatic trim: down to what the arena keeps.
    #[cold]
    fn trim_auto(&self) {
        let _grow = self.grow.lock();
        // Relaxed, both: changed under the grow lock, which we hold.
        let keep = self.keep.load(Ordering::Relaxed);
        let given = self.trim_top(keep) + self.discard_free(keep);
        self.given_back.fetch_add(given, Ordering::Relaxed);
    }

    /// The arena commits (or recommits) memory: if automatic trims gave
    /// memory back since it last did, that memory was needed after all, and
    /// automatic trims keep twice as much from now on, and at least what
    /// they gave back (a program that frees in several steps is trimmed
    /// several times before it comes back). Under the grow lock.
    fn note_taken_back(&self) {
        // Relaxed, all: changed under the grow lock, which the caller holds.
        let given = self.given_back.swap(0, Ordering::Relaxed);
        if given > 0 {
            let keep = self.keep.load(Ordering::Relaxed);
            self.keep
                .store((keep * 2).max(given).min(TRIM_KEEP_MAX), Ordering::Relaxed);
        }
    }

    /// Grows or shrinks the used run at `unit` to `units` in place, committing
    /// more if it ends the arena; returns its old length. When it grows, the
    /// new units read as zero if `zeroed` (only those not known to be zero
    /// are zeroed).
    pub(super) fn resize_run(&self, unit: u32, units: u32, zeroed: bool) -> Option<u32> {
        loop {
            let at_end = {
                let mut runs = self.runs.lock();
                let old = runs.used_len(unit)?;
                if units <= old {
                    runs.shrink(unit, units);
                    return Some(old);
                }
                if runs.grow(unit, units) {
                    drop(runs);
                    if self.any_discarded(unit + old, units - old)
                        && !self.recommit(unit + old, units - old)
                    {
                        self.runs.lock().shrink(unit, old);
                        return None;
                    }
                    let zero = if zeroed {
                        (units - old) as usize * UNIT
                    } else {
                        0
                    };
                    self.claim_units(unit + old, units - old, zero);
                    return Some(old);
                }
                let end = unit + old;
                end == runs.units() || end + runs.free_top() == runs.units()
            };
            let target = unit.checked_add(units)?;
            if !at_end || target as usize * UNIT > self.len || !self.extend(target) {
                return None;
            }
        }
    }

    /// Commits the arena up to at least `target` units (data in steps, then
    /// the metadata that describes it) and adds them to the runs; false if
    /// it cannot.
    #[cold]
    fn extend(&self, target: u32) -> bool {
        let _grow = self.grow.lock();
        let have = self.runs.lock().units();
        if have >= target {
            return true;
        }
        let groups = (target as usize).div_ceil(GROUP_UNITS as usize);
        let meta_end = self.groups_offset + groups * size_of::<GroupMeta>();
        if self.meta.ensure_committed(meta_end).is_none() {
            return false;
        }
        let before = self.data.committed();
        let Some(after) = self.data.ensure_committed(target as usize * UNIT) else {
            return false;
        };
        // Grown in steps, the data may now reach past the metadata.
        let units = (after.min(self.len) / UNIT) as u32;
        let groups = (units as usize).div_ceil(GROUP_UNITS as usize);
        let meta_end = self.groups_offset + groups * size_of::<GroupMeta>();
        let units = if self.meta.ensure_committed(meta_end).is_some() {
            units
        } else {
            target
        };
        // What was committed just now reads zero; the runs publish it.
        let fresh = (before / UNIT) as u32;
        if units > fresh {
            self.mark_zero(fresh, units);
        }
        self.runs.lock().extend(units);
        self.core().note_committed(after as isize - before as isize);
        self.note_taken_back();
        true
    }

    /// Gives free memory back to the system, keeping at most `keep` bytes of
    /// it in memory: first the free run at the arena's end is decommitted,
    /// then whole free groups inside are discarded. Returns the bytes given
    /// back. A data Block registered with a device, or shared, keeps its
    /// pages. (`Heap::trim`; what an automatic trim keeps does not change.)
    pub(super) fn trim(&self, keep: usize) -> usize {
        let _grow = self.grow.lock();
        let top = self.trim_top(keep);
        top + self.discard_free(keep)
    }

    /// Decommits the free run at the end, all but `keep` bytes of it (to a
    /// group boundary); returns the bytes decommitted. Under the grow lock.
    fn trim_top(&self, keep: usize) -> usize {
        let keep_units = {
            let runs = self.runs.lock();
            let used = runs.units() - runs.free_top();
            let kept = used.saturating_add(u32::try_from(keep / UNIT).unwrap_or(u32::MAX));
            kept.next_multiple_of(GROUP_UNITS).min(runs.units())
        };
        let Some(units) = self.runs.lock().trim_top(keep_units) else {
            return 0;
        };
        let before = self.data.committed();
        let end = units as usize * UNIT;
        // Discarded groups past the end go with the decommit: once it is
        // certain (the Block is not registered), their flags are cleared and
        // the Block counts them out. A refused decommit leaves them flagged,
        // so that whoever takes them again recommits (and relocks) them.
        let mut forgotten = 0;
        let groups = end / GROUP..before.min(self.len) / GROUP;
        // SAFETY: the units past `units` are in no run now: nobody holds or
        // can take them until `extend` adds them back, under the grow lock
        // we hold. Each range passed on is a group whose flag says it was
        // discarded and not taken back (flags change under the grow lock),
        // past `end`, passed once.
        let result = unsafe {
            self.data.decommit_discarded_to(end, |forget| {
                for group in groups {
                    let flag = self.discarded_flag(group);
                    // Relaxed: under the grow lock, which every change holds.
                    if flag.load(Ordering::Relaxed) {
                        forget(group * GROUP, (group + 1) * GROUP);
                        flag.store(false, Ordering::Relaxed);
                        forgotten += 1;
                    }
                }
            })
        };
        self.discarded.fetch_sub(forgotten, Ordering::Relaxed);
        // What is committed now: lower if the decommit went ahead (even if
        // the system then failed to drop a page), unchanged if refused
        // (registered or shared: the pages stay, and so do the units).
        let after = self.data.committed();
        if result.is_ok() {
            let groups = (after / UNIT).div_ceil(GROUP_UNITS as usize);
            let meta_end = self.groups_offset + groups * size_of::<GroupMeta>();
            // SAFETY: the metadata of groups past `after` describes no run
            // and is read by nobody: `Arena::slab_in_use`, the one walk over
            // headers that no allocation holds, takes the grow lock we hold.
            // The Arena itself is below `meta_end`.
            let _ = unsafe { self.meta.decommit_to(meta_end) };
        }
        // The data may have stayed committed past `units` (a granule larger
        // than a unit, or a refused decommit): hand that part back to the
        // runs.
        self.runs.lock().extend((after.min(self.len) / UNIT) as u32);
        // The forgotten groups were counted out when discarded.
        let given = before - after - forgotten * GROUP;
        self.core().note_committed(-(given as isize));
        given
    }

    /// Discards whole free groups until at most `keep` bytes of free memory
    /// are in memory; returns the bytes discarded. Under the grow lock.
    fn discard_free(&self, keep: usize) -> usize {
        let runs = self.runs.lock();
        let mut resident = self.resident_free(&runs);
        let mut given = 0;
        let mut failed = false;
        runs.for_each_free(|start, len| {
            if resident <= keep || failed {
                return;
            }
            let first = start.div_ceil(GROUP_UNITS) as usize;
            let end = ((start + len) / GROUP_UNITS) as usize;
            let mut at = first;
            while at < end && resident > keep {
                // Relaxed: under the runs and grow locks, which every change
                // holds.
                if self.discarded_flag(at).load(Ordering::Relaxed) {
                    at += 1;
                    continue;
                }
                let mut stop = at + 1;
                let mut bytes = GROUP;
                while stop < end
                    && resident > keep + bytes
                    && !self.discarded_flag(stop).load(Ordering::Relaxed)
                {
                    stop += 1;
                    bytes += GROUP;
                }
                // SAFETY: whole groups inside a free run, not discarded: no
                // allocation is there, and taking them needs the runs lock
                // we hold.
                if unsafe { self.data.discard(at * GROUP, stop * GROUP) }.is_err() {
                    failed = true;
                    return;
                }
                for group in at..stop {
                    // Release: pairs with the Acquire in `any_discarded`.
                    self.discarded_flag(group).store(true, Ordering::Release);
                }
                // The pages read zero when taken back.
                self.mark_zero(at as u32 * GROUP_UNITS, stop as u32 * GROUP_UNITS);
                self.discarded.fetch_add(stop - at, Ordering::Relaxed);
                resident = resident.saturating_sub(bytes);
                given += bytes;
                at = stop;
            }
        });
        drop(runs);
        self.core().note_committed(-(given as isize));
        given
    }

    /// Takes a group from the runs and makes it a slab of `class`. The
    /// slab keeps the group's zero bits: objects it hands out from units
    /// still zero need no zeroing.
    pub(super) fn fresh_slab(&self, class: usize) -> Option<&SlabHeader> {
        let unit = self.take_run_in_use(GROUP_UNITS, GROUP)?;
        let group = (unit / GROUP_UNITS) as usize;
        // Relaxed: as in `claim_units`; the whole group is ours.
        let zero = self.zero_bits(group).swap(0, Ordering::Relaxed);
        let data = self.unit_ptr(unit);
        let slab = self.header(data.as_ptr());
        // SAFETY: we just took this group: no object of it exists, and its
        // header is ours until the slab is handed to a cache.
        unsafe { slab.init(data.as_ptr(), class, zero) };
        Some(slab)
    }

    /// Records that the units of group `group` in `bits` read zero again:
    /// a slab being released never wrote them. Under the runs lock, before
    /// the group is freed (`free_run`'s `before`).
    pub(super) fn restore_zero(&self, group: usize, bits: u16) {
        if bits != 0 {
            // Relaxed: published with the group by the runs lock.
            self.zero_bits(group).fetch_or(bits, Ordering::Relaxed);
        }
    }

    fn core(&self) -> &HeapCore {
        // SAFETY: the core outlives every arena of its heap.
        unsafe { self.core.as_ref() }
    }

    /// Takes the arena's locks, for `fork` (grow, then runs).
    pub(super) fn lock_for_fork(&self) {
        self.grow.lock_for_fork();
        self.runs.lock_for_fork();
    }

    /// Releases what `lock_for_fork` took.
    ///
    /// # Safety
    /// As [`SpinLock::unlock_after_fork`].
    pub(super) unsafe fn unlock_after_fork(&self) {
        // SAFETY: the caller's contract.
        unsafe {
            self.runs.unlock_after_fork();
            self.grow.unlock_after_fork();
        }
    }
}
