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
//! serve a request, the arena commits more (`extend`), and a free run at its
//! end is given back (`trim`), automatically past [`TRIM_THRESHOLD`].
//!
//! Growing and trimming run under the arena's grow lock, with the run lock
//! taken only to read or change the runs: requests the committed part can
//! serve do not wait for a commit's system calls.

use core::ptr::NonNull;

use super::runs::{GROUP_UNITS, Runs, UNIT, UnitMeta};
use super::shared::HeapCore;
use super::slab::{GROUP, SlabHeader};
use crate::lock::SpinLock;
use crate::{Block, BlockOptions, Error, Pages, Pinning, Region};

/// A free run at least this long at an arena's end is decommitted at once,
/// all but [`TRIM_KEEP`] of it: after a burst, committed (and locked) memory
/// falls without waiting for `Heap::trim`.
pub const TRIM_THRESHOLD: usize = 16 << 20;
/// What an automatic trim leaves committed above the last allocation, so
/// that the next burst does not start with a commit.
pub const TRIM_KEEP: usize = 4 << 20;

/// The metadata of one 64 KiB group of data.
#[repr(C, align(64))]
pub(super) struct GroupMeta {
    pub(super) slab: SlabHeader,
    tags: [UnitMeta; GROUP_UNITS as usize],
}

/// The options of the metadata Blocks: private, unpinned, base pages
/// (devices never see them; locked memory is kept for the data).
pub(super) fn meta_options(options: &BlockOptions<'static>) -> BlockOptions<'static> {
    options
        .pinning(Pinning::Off)
        .prefault(false)
        .pages(Pages::Base)
        .shared(false)
        .capacity(0)
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
                minimum: super::MIN_BLOCK,
            });
        }
        let groups_offset = size_of::<Arena>().next_multiple_of(align_of::<GroupMeta>());
        let meta = Block::reserve(
            groups_offset + groups * size_of::<GroupMeta>(),
            &meta_options(options),
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
        // SAFETY: `ptr` is inside a committed part of the arena (callers hold
        // an allocation there), so its group's metadata is committed and
        // lives as long as the arena.
        unsafe { &self.groups.add(self.offset(ptr) / GROUP).as_ref().slab }
    }

    /// The header of group `group`, which the caller knows is committed.
    #[inline]
    pub(super) fn header_at(&self, group: usize) -> &SlabHeader {
        debug_assert!(group < self.len / GROUP);
        // SAFETY: as `header`, by the caller's word.
        unsafe { &self.groups.add(group).as_ref().slab }
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

    /// Units committed and tiled by runs now.
    pub(super) fn units(&self) -> u32 {
        self.runs.lock().units()
    }

    /// Takes a run of `units` units aligned to `align`, committing more of
    /// the arena if the committed part cannot serve it.
    pub(super) fn alloc_run(&self, units: u32, align: usize) -> Option<u32> {
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
    /// returns its length, or `None` if no used run starts there. A free run
    /// past [`TRIM_THRESHOLD`] at the end is then trimmed.
    pub(super) fn free_run(&self, unit: u32, before: impl FnOnce(&mut Runs)) -> Option<u32> {
        let (len, top, units) = {
            let mut runs = self.runs.lock();
            let len = runs.used_len(unit)?;
            before(&mut runs);
            runs.free(unit);
            (len, runs.free_top(), runs.units())
        };
        if top as usize * UNIT >= TRIM_THRESHOLD {
            let used = (units - top) as usize * UNIT;
            self.trim(used + TRIM_KEEP);
        }
        Some(len)
    }

    /// Grows or shrinks the used run at `unit` to `units` in place, committing
    /// more if it ends the arena; returns its old length.
    pub(super) fn resize_run(&self, unit: u32, units: u32) -> Option<u32> {
        loop {
            let at_end = {
                let mut runs = self.runs.lock();
                let old = runs.used_len(unit)?;
                if units <= old {
                    runs.shrink(unit, units);
                    return Some(old);
                }
                if runs.grow(unit, units) {
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
        if self.meta.committed() < meta_end && !self.meta.grow_to(meta_end) {
            return false;
        }
        let before = self.data.committed();
        if !self.data.grow_to(target as usize * UNIT) {
            return false;
        }
        let after = self.data.committed();
        // Grown in steps, the data may now reach past the metadata.
        let units = (after.min(self.len) / UNIT) as u32;
        let groups = (units as usize).div_ceil(GROUP_UNITS as usize);
        let meta_end = self.groups_offset + groups * size_of::<GroupMeta>();
        let units = if self.meta.committed() >= meta_end || self.meta.grow_to(meta_end) {
            units
        } else {
            target
        };
        self.runs.lock().extend(units);
        self.core().note_committed(after as isize - before as isize);
        true
    }

    /// Decommits the free run at the arena's end down to `keep` bytes of
    /// data (at least what is in use); returns the bytes given back. A data
    /// Block registered with a device, or shared, keeps its pages.
    pub(super) fn trim(&self, keep: usize) -> usize {
        let _grow = self.grow.lock();
        let keep_units = u32::try_from(keep.div_ceil(UNIT)).unwrap_or(u32::MAX);
        let Some(units) = self.runs.lock().trim_top(keep_units) else {
            return 0;
        };
        let before = self.data.committed();
        // SAFETY: the units past `units` are in no run now: nobody holds or
        // can take them until `extend` adds them back, under the grow lock
        // we hold.
        match unsafe { self.data.decommit_to(units as usize * UNIT) } {
            Ok(()) => {
                let after = self.data.committed();
                let groups = (after / UNIT).div_ceil(GROUP_UNITS as usize);
                let meta_end = self.groups_offset + groups * size_of::<GroupMeta>();
                // SAFETY: the metadata of groups past `after` describes no
                // run; the Arena itself is below `meta_end`.
                let _ = unsafe { self.meta.decommit_to(meta_end) };
                // The data may have stayed committed past `units` (a granule
                // larger than a unit): hand that part back to the runs.
                self.runs.lock().extend((after / UNIT) as u32);
                self.core().note_committed(after as isize - before as isize);
                before - after
            }
            Err(_) => {
                // Registered or shared: the pages stay, and so do the units.
                self.runs
                    .lock()
                    .extend((before.min(self.len) / UNIT) as u32);
                0
            }
        }
    }

    /// Takes a group from the runs and makes it a slab of `class`.
    pub(super) fn fresh_slab(&self, class: usize) -> Option<&SlabHeader> {
        let unit = self.alloc_run(GROUP_UNITS, GROUP)?;
        let data = self.unit_ptr(unit);
        let slab = self.header(data.as_ptr());
        // SAFETY: we just took this group: no object of it exists, and its
        // header is ours until the slab is handed to a cache.
        unsafe { slab.init(data.as_ptr(), class) };
        Some(slab)
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
