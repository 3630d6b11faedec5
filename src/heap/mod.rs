//! [`Heap`]: a general-purpose allocator over pinned Blocks.
//!
//! # Layout
//!
//! Each Block is an *arena*: a header, the out-of-band metadata (one boundary
//! tag per 4 KiB unit, one slab header per 64 KiB group) and then the data,
//! starting at a 64 KiB boundary. The first Block also holds the heap's core:
//! the arena table, a cache pointer per thread tag, the abandoned slabs and
//! the counters. Nothing of the heap lives outside its Blocks, so a `Heap`
//! value moves freely and a `static` one needs no setup.
//!
//! # Paths
//!
//! - Requests up to 32 KiB (`class.rs`) come from slabs: 64 KiB groups of one
//!   size class, each owned by one thread cache (`slab.rs`). A thread
//!   allocates from its cache's current slab and frees into slabs it owns
//!   with plain loads and stores; frees into other threads' slabs go through
//!   one compare-exchange, and their memory is reused once the owner collects
//!   it.
//! - Larger requests, and slabs themselves, are runs of 4 KiB units from the
//!   arena's TLSF allocator (`runs.rs`), under the arena's lock; freed runs
//!   merge with their neighbours and are reused.
//! - When every arena is full, empty abandoned slabs are reclaimed, then a new
//!   Block is opened, up to the configured limit; past it the exhaustion
//!   policy applies (fail, or spill to the system allocator).
//!
//! # Lock order
//!
//! registry → shared slot → central → arena. No lock is held while
//! allocating through the global allocator (nothing here does).

mod class;
mod lock;
mod runs;
mod slab;
pub(crate) mod thread;

use core::alloc::Layout;
use core::cell::UnsafeCell;
use core::fmt;
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::alloc::{Engine, Exhaustion};
use crate::{Block, BlockOptions, Error, Region};
use class::CLASSES;
use lock::SpinLock;
use runs::{Runs, UNIT, UNIT_SHIFT, UnitMeta};
use slab::{GROUP, SlabHeader, ThreadCache};
use thread::{SHARED, SLOTS};

/// The most Blocks one Heap opens.
pub const MAX_BLOCKS: usize = 64;
/// The smallest Block a Heap takes: its metadata, a thread cache and two
/// slabs fit whatever the Block's alignment.
pub const MIN_BLOCK: usize = 512 << 10;
/// Units per slab.
const GROUP_UNITS: u32 = (GROUP / UNIT) as u32;

/// A general-purpose allocator over pinned Blocks, able to carry a whole
/// program for hours: freed memory is reused, frees from other threads are
/// fine, and more Blocks open as needed up to a limit.
///
/// Requests up to 32 KiB are served from per-thread slabs of size classes (at
/// most a quarter of a class wasted); larger ones from runs of 4 KiB pages
/// that merge and are reused once freed. `Heap` implements
/// `allocator_api2::alloc::Allocator` and `GlobalAlloc`.
///
/// A `Heap` value is about 8 KiB: it keeps one cache pointer per thread slot
/// so that the fast paths start from it. A `static` (as a global allocator
/// is) or a `Box` holds it without copies.
///
/// ```
/// use allocator_api2::vec::Vec;
/// use unimem::{BlockOptions, Heap, Pinning};
///
/// let heap = Heap::lazy_with(8 << 20, BlockOptions::new().pinning(Pinning::BestEffort)).open()?;
/// let mut v = Vec::new_in(&heap);
/// v.extend(0..10_000u64);
/// assert!(heap.owns(v.as_ptr()));
/// drop(v);
/// assert_eq!(heap.stats().in_use, 0);
/// # Ok::<(), unimem::Error>(())
/// ```
///
/// As a global allocator:
///
/// ```no_run
/// use unimem::Heap;
///
/// // Up to 4 Blocks of 256 MiB, then the system allocator.
/// #[global_allocator]
/// static HEAP: Heap = Heap::lazy(256 << 20).max_blocks(4).spill();
/// # fn main() {}
/// ```
pub struct Heap {
    core: OnceLock<Result<Core, Error>>,
    /// The core once open: one load on the hot paths instead of the
    /// `OnceLock` check (set right after `core` is).
    open: AtomicPtr<HeapCore>,
    config: Config,
    /// Bytes currently spilled to the system allocator.
    spilled: AtomicUsize,
    /// What the fast paths read, copied out of the core so that they start
    /// from `self`: each saves a dependent load or two.
    fast: Fast,
}

/// Copies of core fields for the fast paths. The pointers point into the
/// heap's first Block, so they stay right when the `Heap` value moves.
/// In this order, and aligned, so that the free path's fields and the
/// first threads' cache pointers share one cache line.
#[repr(C, align(64))]
struct Fast {
    /// The first arena's `base` address, `len` and `groups`; zero and null
    /// until the core opens (stored before `Heap::open` is).
    base: AtomicUsize,
    len: AtomicUsize,
    groups: AtomicPtr<SlabHeader>,
    /// Per thread tag, that thread's cache: the core's `caches` entry, copied
    /// by the owning thread on its slow path; null until then.
    caches: [AtomicPtr<ThreadCache>; SLOTS],
}

impl Fast {
    const fn new() -> Fast {
        Fast {
            caches: [const { AtomicPtr::new(ptr::null_mut()) }; SLOTS],
            base: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            groups: AtomicPtr::new(ptr::null_mut()),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Config {
    block_bytes: usize,
    max_blocks: usize,
    exhaustion: Exhaustion,
    options: BlockOptions<'static>,
}

/// The heap's core, inside its first Block.
struct Core(NonNull<HeapCore>);

// SAFETY: the core is shared state built from atomics and locks; it lives in
// the first Block, which the Heap owns.
unsafe impl Send for Core {}
// SAFETY: as above.
unsafe impl Sync for Core {}

/// What a [`Heap`] holds, from [`Heap::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeapStats {
    /// Bytes of live allocations, counted as the heap hands them out: the
    /// size class of a small allocation, whole 4 KiB units of a large one.
    /// Exact whenever no other thread is allocating, freeing or exiting (an
    /// exiting thread hands its slabs on). `stats` walks the slab headers
    /// for it, so the allocation paths count nothing.
    pub in_use: usize,
    /// Bytes the heap holds for allocations now: slabs, page runs and thread
    /// caches taken from its Blocks.
    pub committed: usize,
    /// The largest `committed` has been.
    pub high_water: usize,
    /// Blocks opened.
    pub blocks: usize,
    /// Bytes currently served by the system allocator (spilled).
    pub spilled: usize,
}

impl Heap {
    /// A Heap whose first pinned Block of `block_bytes` opens on first use,
    /// with at most one Block and failing once it is full: the constructor
    /// for `#[global_allocator]` statics. See [`max_blocks`](Heap::max_blocks)
    /// and [`spill`](Heap::spill).
    pub const fn lazy(block_bytes: usize) -> Heap {
        Heap::lazy_with(block_bytes, BlockOptions::new())
    }

    /// As [`Heap::lazy`], with options for every Block it opens.
    pub const fn lazy_with(block_bytes: usize, options: BlockOptions<'static>) -> Heap {
        Heap {
            core: OnceLock::new(),
            open: AtomicPtr::new(ptr::null_mut()),
            config: Config {
                block_bytes,
                max_blocks: 1,
                exhaustion: Exhaustion::Fail,
                options,
            },
            spilled: AtomicUsize::new(0),
            fast: Fast::new(),
        }
    }

    /// Opens a Heap of one pinned Block of `block_bytes` now.
    pub fn new(block_bytes: usize) -> Result<Heap, Error> {
        Heap::lazy(block_bytes).open()
    }

    /// Lets the heap open up to `blocks` Blocks (1 to [`MAX_BLOCKS`]) before
    /// the exhaustion policy applies.
    pub const fn max_blocks(mut self, blocks: usize) -> Heap {
        self.config.max_blocks = blocks;
        self
    }

    /// Sets what happens when the Blocks are full: fail (the default) or
    /// spill to the system allocator.
    pub const fn on_exhaustion(mut self, exhaustion: Exhaustion) -> Heap {
        self.config.exhaustion = exhaustion;
        self
    }

    /// Shorthand for `on_exhaustion(Exhaustion::Spill)`.
    pub const fn spill(self) -> Heap {
        self.on_exhaustion(Exhaustion::Spill)
    }

    /// Opens the first Block now, reporting why if it cannot be.
    ///
    /// Errors: [`Error::TooSmall`] below [`MIN_BLOCK`] bytes,
    /// [`Error::InvalidArgument`] for a block limit of 0 or above
    /// [`MAX_BLOCKS`], and whatever [`Block::open_with`] reports.
    pub fn open(mut self) -> Result<Heap, Error> {
        match self.try_core() {
            Ok(_) => Ok(self),
            Err(_) => match core::mem::take(&mut self.core).into_inner() {
                Some(Err(error)) => Err(error),
                _ => unreachable!("try_core failed, so the cell holds an error"),
            },
        }
    }

    /// The core, opening the first Block on first use.
    #[inline]
    fn core(&self) -> Option<&HeapCore> {
        match self.opened() {
            Some(core) => Some(core),
            None => self.try_core().ok(),
        }
    }

    /// The core if the first Block is open; never opens it.
    #[inline]
    fn opened(&self) -> Option<&HeapCore> {
        // Acquire: pairs with the Release store in `try_core`, after the core
        // was built.
        let core = self.open.load(Ordering::Acquire);
        // SAFETY: the core lives in the first Block, which lives as long as
        // `self`.
        unsafe { core.as_ref() }
    }

    #[cold]
    fn try_core(&self) -> Result<&HeapCore, &Error> {
        let core = self.core.get_or_init(|| HeapCore::create(self.config));
        let core = core.as_ref().map(|core| core.0)?;
        // SAFETY: as in `opened`; the first arena is published with the core.
        let first = unsafe { &*core.as_ref().arenas[0].load(Ordering::Relaxed) };
        // Relaxed: published by the Release store of `open` below. Every
        // thread that gets here stores the same values.
        self.fast
            .groups
            .store(first.groups.as_ptr(), Ordering::Relaxed);
        self.fast
            .base
            .store(first.base.as_ptr().addr(), Ordering::Relaxed);
        self.fast.len.store(first.len, Ordering::Relaxed);
        // Release: see `opened`.
        self.open.store(core.as_ptr(), Ordering::Release);
        // SAFETY: as in `opened`.
        Ok(unsafe { core.as_ref() })
    }

    /// Whether `ptr` points into one of the heap's Blocks.
    #[inline]
    pub fn owns<T: ?Sized>(&self, ptr: *const T) -> bool {
        self.opened()
            .is_some_and(|core| core.arena_of(ptr.cast()).is_some())
    }

    /// Counts of what the heap holds; see [`HeapStats`].
    pub fn stats(&self) -> HeapStats {
        // Relaxed loads throughout: a snapshot, exact when quiescent.
        let spilled = self.spilled.load(Ordering::Relaxed);
        let Some(core) = self.opened() else {
            return HeapStats {
                spilled,
                ..HeapStats::default()
            };
        };
        // Walk the slab headers: nothing is counted on the allocation paths.
        let mut in_use = core.large_in_use.load(Ordering::Relaxed);
        let count = core.arena_count.load(Ordering::Acquire);
        for slot in &core.arenas[..count] {
            // SAFETY: published arenas live as long as the heap.
            let arena = unsafe { &*slot.load(Ordering::Relaxed) };
            for group in 0..arena.len.div_ceil(GROUP) {
                // SAFETY: every group of the arena has a header.
                let slab = unsafe { arena.groups.add(group).as_ref() };
                if slab.kind.load(Ordering::Relaxed) == slab::SLAB {
                    let class = slab.class.load(Ordering::Relaxed) as usize;
                    in_use += slab.live() as usize * class::size(class.min(CLASSES - 1));
                }
            }
        }
        HeapStats {
            in_use,
            committed: core.committed.load(Ordering::Relaxed),
            high_water: core.high_water.load(Ordering::Relaxed),
            blocks: core.arena_count.load(Ordering::Relaxed),
            spilled,
        }
    }

    /// The Blocks opened so far (a lazy Heap opens its first).
    pub fn blocks(&self) -> Vec<&Region> {
        let Some(core) = self.core() else {
            return Vec::new();
        };
        let central = core.central.lock();
        // Acquire: pairs with the Release publishing each arena (the Blocks
        // below the count are written before it).
        let count = core.arena_count.load(Ordering::Acquire);
        (0..count)
            .map(|i| {
                // SAFETY: the first `count` slots are written before the count
                // is published, and stay until the heap drops.
                let block: &Block = unsafe { &*central.blocks[i].as_ptr() };
                let region: &Region = block;
                // SAFETY: the Block does not move or drop while `self` lives.
                unsafe { &*ptr::from_ref(region) }
            })
            .collect()
    }

    /// The exhaustion policy chosen at construction.
    pub fn exhaustion(&self) -> Exhaustion {
        self.config.exhaustion
    }
}

/// The hot paths, kept small so that they inline into `GlobalAlloc` and
/// `Allocator` calls without spilling registers; everything else is in the
/// `_slow` functions, out of line.
impl Heap {
    /// A small object from this thread's current slab, if there is one at
    /// hand: the object and its usable size.
    #[inline(always)]
    fn take_fast(&self, layout: Layout) -> Option<(NonNull<u8>, usize)> {
        let class = class::of_common(layout.size(), layout.align())?;
        let tag = thread::tag_fast()?;
        // Relaxed: only this thread (holding `tag`) stores its entry, in
        // `take_slow`, after `HeapCore::cache` acquired the cache; a thread
        // that held the tag before handed it over with a happens-before
        // (`thread.rs`). Non-null means the core is open.
        // SAFETY: caches live as long as the heap.
        let cache = unsafe { self.fast.caches[tag].load(Ordering::Relaxed).as_ref()? };
        // SAFETY: this thread holds `tag`, so it owns the cache and its
        // current slab.
        let object = unsafe { cache.class(class).current.as_ref()?.pop()? };
        Some((object, class::size(class)))
    }

    /// Every allocation `take_fast` does not serve.
    #[inline]
    fn take_slow(&self, layout: Layout) -> Option<NonNull<[u8]>> {
        let core = self.core()?;
        match class::of(layout.size(), layout.align()) {
            Some(class) => {
                let tag = thread::tag();
                if tag != SHARED && self.fast.caches[tag].load(Ordering::Relaxed).is_null() {
                    // This thread's first small allocation here: give the
                    // fast path its cache.
                    let cache = core.cache(tag)?;
                    // Relaxed: see `take_fast`.
                    self.fast.caches[tag].store(ptr::from_ref(cache).cast_mut(), Ordering::Relaxed);
                }
                let object = core.alloc_class(class)?;
                Some(NonNull::slice_from_raw_parts(object, class::size(class)))
            }
            None => core.alloc_large(layout),
        }
    }

    /// Frees a small object of this thread's, in the first arena; false (and
    /// nothing done) for anything else.
    ///
    /// # Safety
    /// As `Engine::give`.
    #[inline(always)]
    unsafe fn give_fast(&self, ptr: NonNull<u8>) -> bool {
        // Relaxed: `ptr` came from this heap (the caller's contract), so the
        // core opened before it was allocated, and that allocation, which
        // happened-before this free, saw the values `try_core` stored. Memory
        // spilled before the core opened finds zero, so `len` 0: nothing is
        // in range.
        let offset = ptr
            .as_ptr()
            .addr()
            .wrapping_sub(self.fast.base.load(Ordering::Relaxed));
        if offset >= self.fast.len.load(Ordering::Relaxed) {
            return false;
        }
        let Some(tag) = thread::tag_fast() else {
            return false;
        };
        // SAFETY: `offset` lies in the first arena, which has a header per
        // group and lives as long as the heap (as `Arena::header`).
        let slab = unsafe { &*self.fast.groups.load(Ordering::Relaxed).add(offset / GROUP) };
        // Relaxed: as in `HeapCore::free`.
        if slab.owner.load(Ordering::Relaxed) != tag as u32 {
            return false;
        }
        // SAFETY: the slab is this thread's, and `ptr` a live object of it.
        if unsafe { slab.push_local(ptr) } <= 0 {
            // SAFETY: as above.
            unsafe { self.after_local_free(tag, slab) };
        }
        true
    }

    /// `HeapCore::after_local_free`, out of line.
    ///
    /// # Safety
    /// As `HeapCore::free_local`.
    #[cold]
    #[inline(never)]
    unsafe fn after_local_free(&self, tag: usize, slab: &SlabHeader) {
        let Some(core) = self.opened() else {
            unreachable!("a slab exists only in an open heap")
        };
        // SAFETY: the caller's contract; a tag that owns a slab has a cache.
        unsafe { core.after_local_free(&*core.caches[tag].load(Ordering::Relaxed), slab) };
    }

    /// Every free `give_fast` does not handle; false if `ptr` is not in the
    /// heap's Blocks.
    ///
    /// # Safety
    /// As `Engine::give`.
    #[inline]
    unsafe fn give_slow(&self, ptr: NonNull<u8>) -> bool {
        let Some(core) = self.opened() else {
            return false;
        };
        let Some(arena) = core.arena_of(ptr.as_ptr()) else {
            return false;
        };
        // SAFETY: the caller's contract: a live allocation of this heap.
        unsafe { core.free(arena, ptr) };
        true
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        let Some(Ok(core)) = self.core.get() else {
            return;
        };
        let core = core.0.as_ptr();
        *self.open.get_mut() = ptr::null_mut();
        unregister(core);
        // SAFETY: no thread can reach the core any more: `&mut self` rules
        // out users, and it left the registry.
        let core = unsafe { &*core };
        let count = core.arena_count.load(Ordering::Acquire);
        let mut blocks = [const { MaybeUninit::<Block>::uninit() }; MAX_BLOCKS];
        {
            let central = core.central.lock();
            for (slot, block) in blocks.iter_mut().zip(&central.blocks).take(count) {
                // SAFETY: the first `count` Blocks were written; each is read
                // out once and never used in place again.
                slot.write(unsafe { block.assume_init_read() });
            }
        }
        // The core lives in the first Block: from here on, only the copies.
        for block in blocks[..count].iter_mut().rev() {
            // SAFETY: written above.
            unsafe { block.assume_init_drop() };
        }
    }
}

impl fmt::Debug for Heap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heap")
            .field("block_bytes", &self.config.block_bytes)
            .field("max_blocks", &self.config.max_blocks)
            .field("exhaustion", &self.config.exhaustion)
            .field("stats", &self.stats())
            .finish()
    }
}

/// One Block's allocator: units and slab headers. Lives at the start of its
/// Block.
struct Arena {
    runs: SpinLock<Runs>,
    /// Unit 0: 64 KiB-aligned.
    base: NonNull<u8>,
    /// Bytes of data from `base`.
    len: usize,
    /// One header per 64 KiB group.
    groups: NonNull<SlabHeader>,
}

// SAFETY: the pointers point into the arena's Block; `runs` is locked and
// the headers are shared as documented in `slab.rs`.
unsafe impl Sync for Arena {}

impl Arena {
    /// Lays out an arena in `block` (and the heap's core after the arena's
    /// header if `with_core`). Returns the arena and the core's place.
    fn init(block: &Block, with_core: bool) -> Option<(NonNull<Arena>, NonNull<HeapCore>)> {
        let start = block.as_ptr();
        let size = block.size();
        let mut offset = size_of::<Arena>();
        let core_offset = offset.next_multiple_of(align_of::<HeapCore>());
        if with_core {
            offset = core_offset + size_of::<HeapCore>();
        }
        let max_units = size / UNIT;
        let meta_offset = offset.next_multiple_of(align_of::<UnitMeta>());
        offset = meta_offset + max_units * size_of::<UnitMeta>();
        let groups_offset = offset.next_multiple_of(align_of::<SlabHeader>());
        offset = groups_offset + max_units.div_ceil(GROUP_UNITS as usize) * size_of::<SlabHeader>();
        let data_offset = (start.addr() + offset).next_multiple_of(GROUP) - start.addr();
        let units = size.checked_sub(data_offset)? / UNIT;
        if units < 3 * GROUP_UNITS as usize || units > u32::MAX as usize {
            return None;
        }
        // SAFETY: every offset is inside the Block (data_offset < size, and
        // the metadata ends before it), so the pointers keep its provenance.
        unsafe {
            let arena = start.cast::<Arena>();
            let base = NonNull::new_unchecked(start.add(data_offset));
            let meta = NonNull::new_unchecked(start.add(meta_offset).cast::<UnitMeta>());
            // The tags need no initial value beyond what `Runs::new` writes;
            // the headers start zeroed (the Block is fresh), which is a valid
            // "not a slab" header.
            let runs = Runs::new(meta, units as u32, base.as_ptr().addr());
            arena.write(Arena {
                runs: SpinLock::new(runs),
                base,
                len: units * UNIT,
                groups: NonNull::new_unchecked(start.add(groups_offset).cast()),
            });
            Some((
                NonNull::new_unchecked(arena),
                NonNull::new_unchecked(start.add(core_offset).cast()),
            ))
        }
    }

    #[inline]
    fn contains(&self, ptr: *const u8) -> bool {
        ptr.addr().wrapping_sub(self.base.as_ptr().addr()) < self.len
    }

    #[inline]
    fn offset(&self, ptr: *const u8) -> usize {
        ptr.addr() - self.base.as_ptr().addr()
    }

    /// The header of the group `ptr` is in.
    #[inline]
    fn header(&self, ptr: *const u8) -> &SlabHeader {
        let group = self.offset(ptr) / GROUP;
        // SAFETY: `ptr` is inside the arena (callers checked `contains`), so
        // its group has a header, and headers live as long as the arena.
        unsafe { self.groups.add(group).as_ref() }
    }

    #[inline]
    fn unit_of(&self, ptr: *const u8) -> u32 {
        (self.offset(ptr) >> UNIT_SHIFT) as u32
    }

    #[inline]
    fn unit_ptr(&self, unit: u32) -> NonNull<u8> {
        // SAFETY: units come from `runs`, inside the arena.
        unsafe { self.base.add((unit as usize) << UNIT_SHIFT) }
    }

    /// Takes a group from the runs and makes it a slab of `class`.
    fn fresh_slab(&self, class: usize) -> Option<&SlabHeader> {
        let runs = &mut *self.runs.lock();
        let unit = runs.alloc(GROUP_UNITS, GROUP)?;
        let data = self.unit_ptr(unit);
        let slab = self.header(data.as_ptr());
        // SAFETY: we hold the arena lock and just took this group.
        unsafe { slab.init(data.as_ptr(), class) };
        Some(slab)
    }
}

/// What the central lock guards.
struct Central {
    /// Slabs whose owner's thread exited, per class (linked through
    /// `Local::next`/`prev`).
    abandoned: [*mut SlabHeader; CLASSES],
    /// The Blocks, `arena_count` of them.
    blocks: [MaybeUninit<Block>; MAX_BLOCKS],
}

// SAFETY: the pointers point into the heap's Blocks; the lock orders access.
unsafe impl Send for Central {}

/// The heap's shared state, in its first Block.
#[repr(C)]
struct HeapCore {
    arenas: [AtomicPtr<Arena>; MAX_BLOCKS],
    /// Arenas open; each slot below it is written before the count is
    /// published (Release) and never changes after.
    arena_count: AtomicUsize,
    /// One cache per thread tag (slot 0 unused), and the shared slot last;
    /// each written once, by the thread holding the tag.
    caches: [AtomicPtr<ThreadCache>; SLOTS],
    /// Held by threads using the shared slot.
    shared: SpinLock<()>,
    central: SpinLock<Central>,
    large_in_use: AtomicUsize,
    committed: AtomicUsize,
    high_water: AtomicUsize,
    config: Config,
    /// Previous and next heap in the registry (registry lock).
    links: UnsafeCell<[*mut HeapCore; 2]>,
}

// SAFETY: atomics, locks, and `links`, which only the registry lock reaches.
unsafe impl Sync for HeapCore {}

impl HeapCore {
    /// Opens the first Block and builds the core in it.
    fn create(config: Config) -> Result<Core, Error> {
        if config.block_bytes < MIN_BLOCK {
            return Err(Error::TooSmall {
                requested: config.block_bytes,
                minimum: MIN_BLOCK,
            });
        }
        if config.max_blocks == 0 || config.max_blocks > MAX_BLOCKS {
            return Err(Error::InvalidArgument {
                reason: "a Heap's block limit is 1 to MAX_BLOCKS",
            });
        }
        let block = Block::open_with(config.block_bytes, &config.options)?;
        let Some((arena, core)) = Arena::init(&block, true) else {
            return Err(Error::Overflow {
                requested: config.block_bytes,
            });
        };
        // SAFETY: `Arena::init` reserved room for the core, aligned, in the
        // Block, which nothing else uses yet.
        unsafe {
            core.write(HeapCore {
                arenas: [const { AtomicPtr::new(ptr::null_mut()) }; MAX_BLOCKS],
                arena_count: AtomicUsize::new(0),
                caches: [const { AtomicPtr::new(ptr::null_mut()) }; SLOTS],
                shared: SpinLock::new(()),
                central: SpinLock::new(Central {
                    abandoned: [ptr::null_mut(); CLASSES],
                    blocks: [const { MaybeUninit::uninit() }; MAX_BLOCKS],
                }),
                large_in_use: AtomicUsize::new(0),
                committed: AtomicUsize::new(0),
                high_water: AtomicUsize::new(0),
                config,
                links: UnsafeCell::new([ptr::null_mut(); 2]),
            });
        }
        // SAFETY: just written.
        let this = unsafe { core.as_ref() };
        this.central.lock().blocks[0].write(block);
        this.arenas[0].store(arena.as_ptr(), Ordering::Relaxed);
        // Release: publishes the arena (and the core's contents) to every
        // thread that loads the count.
        this.arena_count.store(1, Ordering::Release);
        register(core.as_ptr());
        Ok(Core(core))
    }

    /// The arena `ptr` points into.
    #[inline]
    fn arena_of(&self, ptr: *const u8) -> Option<&Arena> {
        // The first arena exists from the start and takes most traffic: check
        // it before loading the count.
        // SAFETY: the first arena is published before the core is.
        let first = unsafe { &*self.arenas[0].load(Ordering::Relaxed) };
        if first.contains(ptr) {
            return Some(first);
        }
        self.arena_of_rest(ptr)
    }

    fn arena_of_rest(&self, ptr: *const u8) -> Option<&Arena> {
        // Acquire: pairs with the Release publishing each arena.
        let count = self.arena_count.load(Ordering::Acquire);
        self.arenas[1..count.max(1)].iter().find_map(|slot| {
            // SAFETY: published arenas live as long as the heap.
            let arena = unsafe { &*slot.load(Ordering::Relaxed) };
            arena.contains(ptr).then_some(arena)
        })
    }

    fn commit(&self, bytes: usize) {
        // Relaxed: statistics.
        let now = self.committed.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.high_water.fetch_max(now, Ordering::Relaxed);
    }

    fn uncommit(&self, bytes: usize) {
        // Relaxed: statistics.
        self.committed.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Runs `take` on each arena, then on new ones while the limit allows.
    fn take_from_arenas<'a, T>(
        &'a self,
        mut take: impl FnMut(&'a Arena) -> Option<T>,
    ) -> Option<T> {
        let mut tried = 0;
        loop {
            // Acquire: pairs with the Release in `grow`.
            let count = self.arena_count.load(Ordering::Acquire);
            for slot in &self.arenas[tried..count] {
                // SAFETY: published arenas live as long as the heap.
                if let Some(found) = take(unsafe { &*slot.load(Ordering::Relaxed) }) {
                    return Some(found);
                }
            }
            tried = count;
            if !self.grow(count) {
                return None;
            }
        }
    }

    /// Opens arena number `seen` unless another thread already did; false if
    /// the limit is reached or the Block cannot be opened.
    #[cold]
    fn grow(&self, seen: usize) -> bool {
        let mut central = self.central.lock();
        // Relaxed: only the holder of the central lock changes the count.
        let count = self.arena_count.load(Ordering::Relaxed);
        if count > seen {
            return true;
        }
        if count >= self.config.max_blocks {
            return false;
        }
        let Ok(block) = Block::open_with(self.config.block_bytes, &self.config.options) else {
            return false;
        };
        let Some((arena, _)) = Arena::init(&block, false) else {
            return false;
        };
        central.blocks[count].write(block);
        // Relaxed: published by the Release store of the count below.
        self.arenas[count].store(arena.as_ptr(), Ordering::Relaxed);
        // Release: publishes the arena to `arena_of` and `take_from_arenas`.
        self.arena_count.store(count + 1, Ordering::Release);
        true
    }

    /// The cache of thread tag `tag`, made on first use.
    #[inline]
    fn cache(&self, tag: usize) -> Option<&ThreadCache> {
        // Acquire: pairs with the Release in `create_cache` (needed by other
        // threads, which read a cache's counters).
        let cache = self.caches[tag].load(Ordering::Acquire);
        if cache.is_null() {
            return self.create_cache(tag);
        }
        // SAFETY: caches live as long as the heap.
        Some(unsafe { &*cache })
    }

    #[cold]
    fn create_cache(&self, tag: usize) -> Option<&ThreadCache> {
        let units = size_of::<ThreadCache>().div_ceil(UNIT) as u32;
        let place = self.take_from_arenas(|arena| {
            let unit = arena.runs.lock().alloc(units, UNIT)?;
            Some(arena.unit_ptr(unit).cast::<ThreadCache>())
        })?;
        self.commit(units as usize * UNIT);
        // SAFETY: a fresh run of our own, aligned to a unit.
        unsafe { place.write(ThreadCache::new()) };
        // Release: publishes the initialized cache.
        self.caches[tag].store(place.as_ptr(), Ordering::Release);
        // SAFETY: just written.
        Some(unsafe { place.as_ref() })
    }

    /// Allocates one object of `class` for this thread.
    #[inline]
    fn alloc_class(&self, class: usize) -> Option<NonNull<u8>> {
        let tag = thread::tag();
        if tag == SHARED {
            return self.alloc_shared(class);
        }
        let cache = self.cache(tag)?;
        // SAFETY: this thread holds `tag`, so it owns the cache.
        unsafe { self.alloc_small(cache, tag as u32, class) }
    }

    #[cold]
    fn alloc_shared(&self, class: usize) -> Option<NonNull<u8>> {
        let _shared = self.shared.lock();
        let cache = self.cache(SHARED)?;
        // SAFETY: the shared lock makes us the shared slot's owner.
        unsafe { self.alloc_small(cache, SHARED as u32, class) }
    }

    /// # Safety
    /// The caller owns `cache`, whose owner tag is `tag`.
    #[inline]
    unsafe fn alloc_small(
        &self,
        cache: &ThreadCache,
        tag: u32,
        class: usize,
    ) -> Option<NonNull<u8>> {
        // SAFETY: the caller owns the cache and so its current slab.
        unsafe {
            match cache
                .class(class)
                .current
                .as_ref()
                .and_then(|slab| slab.pop())
            {
                Some(object) => Some(object),
                None => self.alloc_slow(cache, tag, class),
            }
        }
    }

    /// The current slab is exhausted (or missing): collect remote frees,
    /// move to a partial or revived slab, or take a new one.
    ///
    /// # Safety
    /// As `alloc_small`.
    #[cold]
    unsafe fn alloc_slow(
        &self,
        cache: &ThreadCache,
        tag: u32,
        class: usize,
    ) -> Option<NonNull<u8>> {
        // SAFETY: the caller owns the cache and every slab on its lists.
        unsafe {
            let cc = cache.class(class);
            if let Some(current) = cc.current.as_ref() {
                if current.collect() > 0 {
                    return current.pop();
                }
                cc.current = ptr::null_mut();
                current.set_list(slab::NONE);
                if let Some(object) = Self::retire(cc, current) {
                    return Some(object);
                }
            }
            loop {
                if let Some(partial) = cc.partial.as_ref() {
                    slab::unlink(&mut cc.partial, partial);
                    partial.collect();
                    if let Some(object) = partial.pop() {
                        Self::make_current(cc, partial);
                        return Some(object);
                    }
                    if let Some(object) = Self::retire(cc, partial) {
                        return Some(object);
                    }
                    continue;
                }
                // Acquire: pairs with the Release bump in `free_remote`.
                let revived = cache.revived[class].load(Ordering::Acquire);
                if revived != cc.seen {
                    cc.seen = revived;
                    Self::revive(cc);
                    if !cc.partial.is_null() {
                        continue;
                    }
                }
                let slab = self.new_slab(tag, class)?;
                slab.collect();
                if let Some(object) = slab.pop() {
                    Self::make_current(cc, slab);
                    return Some(object);
                }
                // An adopted slab with nothing free yet.
                if let Some(object) = Self::retire(cc, slab) {
                    return Some(object);
                }
            }
        }
    }

    /// Makes `slab` (on no list) its class's current slab.
    ///
    /// # Safety
    /// The caller owns `cc` and `slab`.
    unsafe fn make_current(cc: &mut slab::ClassCache, slab: &SlabHeader) {
        cc.current = ptr::from_ref(slab).cast_mut();
        // SAFETY: the caller owns the slab.
        unsafe { slab.set_list(slab::CURRENT) };
    }

    /// Puts an exhausted slab (on no list) on the retired list; if remote
    /// frees arrived meanwhile, makes it current and allocates instead.
    ///
    /// # Safety
    /// The caller owns `cc` and `slab`.
    unsafe fn retire(cc: &mut slab::ClassCache, slab: &SlabHeader) -> Option<NonNull<u8>> {
        // SAFETY: the caller owns both.
        unsafe {
            if slab.try_retire() {
                slab::push(&mut cc.retired, slab, slab::RETIRED);
                return None;
            }
            slab.collect();
            let object = slab.pop();
            debug_assert!(object.is_some(), "remote frees arrived, so one is free");
            if cc.current.is_null() {
                Self::make_current(cc, slab);
            } else {
                slab::push(&mut cc.partial, slab, slab::PARTIAL);
            }
            object
        }
    }

    /// Moves retired slabs that remote frees revived to the partial list.
    ///
    /// # Safety
    /// The caller owns `cc` and its slabs.
    unsafe fn revive(cc: &mut slab::ClassCache) {
        let mut at = cc.retired;
        // SAFETY: the caller owns every slab on the list.
        unsafe {
            while let Some(slab) = at.as_ref() {
                at = slab.local().next;
                if !slab.is_retired() {
                    slab::unlink(&mut cc.retired, slab);
                    slab::push(&mut cc.partial, slab, slab::PARTIAL);
                }
            }
        }
    }

    /// A slab for the owner `tag`: an abandoned one, else a fresh one (after
    /// reclaiming empty abandoned slabs if the arenas are full).
    fn new_slab(&self, tag: u32, class: usize) -> Option<&SlabHeader> {
        if let Some(slab) = self.adopt(tag, class) {
            return Some(slab);
        }
        // Acquire: pairs with the Release in `grow`.
        let count = self.arena_count.load(Ordering::Acquire);
        let slab = self.arenas[..count]
            .iter()
            // SAFETY: published arenas live as long as the heap.
            .find_map(|slot| unsafe { &*slot.load(Ordering::Relaxed) }.fresh_slab(class))
            .or_else(|| {
                // The arenas are full: release emptied abandoned slabs, then
                // try again, opening more Blocks if allowed.
                self.reclaim();
                self.take_from_arenas(|arena| arena.fresh_slab(class))
            })?;
        self.commit(GROUP);
        // Relaxed: only this thread reads its own tag as "mine"; other
        // threads only need "not theirs", which any value gives them.
        slab.owner.store(tag, Ordering::Relaxed);
        Some(slab)
    }

    /// Takes an abandoned slab of `class`, if any.
    fn adopt(&self, tag: u32, class: usize) -> Option<&SlabHeader> {
        let mut central = self.central.lock();
        let head = &mut central.abandoned[class];
        // SAFETY: abandoned slabs belong to the central lock's holder; the
        // slab is handed to `tag` before the lock is released.
        unsafe {
            let slab = head.as_ref()?;
            slab::unlink(head, slab);
            // Relaxed: as in `new_slab`; the central lock orders the slab's
            // state before the adopter's use of it.
            slab.owner.store(tag, Ordering::Relaxed);
            Some(slab)
        }
    }

    /// Releases every abandoned slab that remote frees emptied; says whether
    /// there was one.
    #[cold]
    fn reclaim(&self) -> bool {
        let mut central = self.central.lock();
        let mut released = false;
        for head in &mut central.abandoned {
            let mut at = *head;
            // SAFETY: abandoned slabs belong to the central lock's holder.
            unsafe {
                while let Some(slab) = at.as_ref() {
                    at = slab.local().next;
                    slab.collect();
                    if slab.is_empty() {
                        slab::unlink(head, slab);
                        self.release_slab(slab);
                        released = true;
                    }
                }
            }
        }
        released
    }

    /// Gives an empty slab's group back to its arena.
    ///
    /// # Safety
    /// The caller owns `slab`, which is on no list and has no live object.
    unsafe fn release_slab(&self, slab: &SlabHeader) {
        // SAFETY: the caller owns the slab.
        let data = unsafe { slab.local().data };
        let Some(arena) = self.arena_of(data) else {
            debug_assert!(false, "a slab outside every arena");
            return;
        };
        {
            let runs = &mut *arena.runs.lock();
            // No owner: `give` trusts an owner tag to mean a live slab.
            slab.owner.store(0, Ordering::Relaxed);
            slab.kind.store(slab::NOT_SLAB, Ordering::Relaxed);
            runs.free(arena.unit_of(data));
        }
        self.uncommit(GROUP);
    }

    /// Frees `ptr`, which lies in `arena`.
    ///
    /// # Safety
    /// `ptr` is a live allocation of this heap, not used again.
    #[inline]
    unsafe fn free(&self, arena: &Arena, ptr: NonNull<u8>) {
        let slab = arena.header(ptr.as_ptr());
        let tag = thread::tag();
        // Relaxed: only this thread puts its own tag on a slab, and only it
        // takes it off; a released group has no owner. So seeing our tag
        // means a live slab of ours (the shared slot's tag needs its lock).
        if tag != SHARED && slab.owner.load(Ordering::Relaxed) == tag as u32 {
            // SAFETY: the slab is ours (above), and `ptr` a live object of it.
            unsafe { self.free_local(tag, slab, ptr) };
        } else if slab.kind.load(Ordering::Relaxed) == slab::SLAB {
            // Relaxed: the group became a slab before this object was handed
            // out, which happened-before this free.
            // SAFETY: the caller's contract.
            unsafe { self.free_not_mine(slab, ptr, tag) };
        } else {
            self.free_large(arena, ptr);
        }
    }

    /// Frees a slab object this thread's cache does not own.
    ///
    /// # Safety
    /// `object` is a live object of `slab`, not used again.
    #[cold]
    unsafe fn free_not_mine(&self, slab: &SlabHeader, object: NonNull<u8>, tag: usize) {
        if tag == SHARED {
            let _shared = self.shared.lock();
            // Relaxed: only a holder of the shared lock sets this tag.
            if slab.owner.load(Ordering::Relaxed) == SHARED as u32 {
                // SAFETY: the shared lock makes us the shared slot's owner.
                unsafe { self.free_local(SHARED, slab, object) };
                return;
            }
        }
        // SAFETY: the caller's contract.
        unsafe { self.free_remote(slab, object) }
    }

    /// # Safety
    /// The thread holding `tag` (or, for the shared slot, the shared lock)
    /// calls this; the slab is that tag's, and `object` a live object of it.
    #[inline]
    unsafe fn free_local(&self, tag: usize, slab: &SlabHeader, object: NonNull<u8>) {
        // SAFETY: the caller's contract.
        if unsafe { slab.push_local(object) } <= 0 {
            // SAFETY: as above; a tag that owns a slab has a cache.
            unsafe { self.after_local_free(&*self.caches[tag].load(Ordering::Relaxed), slab) };
        }
    }

    /// A free emptied a slab that is not current, or landed in a retired one.
    ///
    /// # Safety
    /// The caller owns `cache` and `slab`.
    #[cold]
    #[inline(never)]
    unsafe fn after_local_free(&self, cache: &ThreadCache, slab: &SlabHeader) {
        // SAFETY: the caller owns the cache and the slab.
        unsafe {
            let cc = cache.class(slab.class.load(Ordering::Relaxed) as usize);
            if slab.list() == slab::RETIRED {
                slab.unretire();
                slab::unlink(&mut cc.retired, slab);
                slab::push(&mut cc.partial, slab, slab::PARTIAL);
            }
            if slab.list() == slab::PARTIAL && slab.is_empty() {
                slab.collect();
                slab::unlink(&mut cc.partial, slab);
                self.release_slab(slab);
            }
        }
    }

    /// # Safety
    /// `object` is a live object of `slab`, not used again.
    #[inline]
    unsafe fn free_remote(&self, slab: &SlabHeader, object: NonNull<u8>) {
        // Read before the push: once pushed, the owner may release the slab.
        let class = slab.class.load(Ordering::Relaxed) as usize;
        // SAFETY: the caller's contract.
        if unsafe { slab.push_remote(object) } {
            // We revived a retired slab: tell its owner. The owner may have
            // changed since (a spurious count only costs it a scan).
            let owner = slab.owner.load(Ordering::Relaxed) as usize;
            if owner != 0 {
                // SAFETY: caches live as long as the heap.
                if let Some(cache) = unsafe { self.caches[owner].load(Ordering::Acquire).as_ref() }
                {
                    // Release: pairs with the Acquire load in `alloc_slow`.
                    cache.revived[class].fetch_add(1, Ordering::Release);
                }
            }
        }
    }

    fn alloc_large(&self, layout: Layout) -> Option<NonNull<[u8]>> {
        let units = u32::try_from(layout.size().div_ceil(UNIT)).ok()?;
        let align = layout.align().max(UNIT);
        let (arena, unit) = self.take_from_arenas(|arena| {
            let unit = arena.runs.lock().alloc(units, align)?;
            Some((arena, unit))
        })?;
        let bytes = units as usize * UNIT;
        self.commit(bytes);
        // Relaxed: statistics.
        self.large_in_use.fetch_add(bytes, Ordering::Relaxed);
        Some(NonNull::slice_from_raw_parts(arena.unit_ptr(unit), bytes))
    }

    fn free_large(&self, arena: &Arena, ptr: NonNull<u8>) {
        let unit = arena.unit_of(ptr.as_ptr());
        let units = {
            let runs = &mut *arena.runs.lock();
            let Some(units) = runs.used_len(unit) else {
                debug_assert!(false, "freeing {ptr:p}, which starts no run");
                return;
            };
            runs.free(unit);
            units
        };
        let bytes = units as usize * UNIT;
        self.uncommit(bytes);
        // Relaxed: statistics.
        self.large_in_use.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn resize_large(&self, arena: &Arena, ptr: NonNull<u8>, new: Layout) -> Option<NonNull<[u8]>> {
        let units = u32::try_from(new.size().div_ceil(UNIT).max(1)).ok()?;
        let unit = arena.unit_of(ptr.as_ptr());
        let old = {
            let runs = &mut *arena.runs.lock();
            let old = runs.used_len(unit)?;
            if units < old {
                runs.shrink(unit, units);
            } else if units > old && !runs.grow(unit, units) {
                return None;
            }
            old
        };
        let (old, new_bytes) = (old as usize * UNIT, units as usize * UNIT);
        // Relaxed below: statistics.
        if new_bytes > old {
            self.commit(new_bytes - old);
            self.large_in_use
                .fetch_add(new_bytes - old, Ordering::Relaxed);
        } else {
            self.uncommit(old - new_bytes);
            self.large_in_use
                .fetch_sub(old - new_bytes, Ordering::Relaxed);
        }
        Some(NonNull::slice_from_raw_parts(ptr, new_bytes))
    }

    /// Flushes thread tag `tag`'s cache: every slab it owns goes back to its
    /// arena if empty, else to the abandoned lists.
    ///
    /// # Safety
    /// Called by the thread holding `tag`, as it exits.
    unsafe fn flush(&self, tag: usize) {
        // SAFETY: caches live as long as the heap.
        let Some(cache) = (unsafe { self.caches[tag].load(Ordering::Acquire).as_ref() }) else {
            return;
        };
        for class in 0..CLASSES {
            // SAFETY: the exiting thread owns its cache and its slabs.
            unsafe {
                let cc = cache.class(class);
                if let Some(current) = cc.current.as_ref() {
                    cc.current = ptr::null_mut();
                    current.set_list(slab::NONE);
                    self.abandon(class, current);
                }
                while let Some(slab) = cc.partial.as_ref() {
                    slab::unlink(&mut cc.partial, slab);
                    self.abandon(class, slab);
                }
                while let Some(slab) = cc.retired.as_ref() {
                    slab::unlink(&mut cc.retired, slab);
                    self.abandon(class, slab);
                }
                // Relaxed: the count only has to be current for this thread,
                // whose slabs of the class are all gone now.
                cc.seen = cache.revived[class].load(Ordering::Relaxed);
            }
        }
    }

    /// # Safety
    /// The caller owns `slab`, which is on no list.
    unsafe fn abandon(&self, class: usize, slab: &SlabHeader) {
        // SAFETY: the caller owns the slab until it is released or handed to
        // the central lock.
        unsafe {
            slab.collect();
            if slab.is_empty() {
                self.release_slab(slab);
                return;
            }
            // Relaxed: published to the adopter by the central lock.
            slab.owner.store(0, Ordering::Relaxed);
            let mut central = self.central.lock();
            slab::push(&mut central.abandoned[class], slab, slab::ABANDONED);
        }
    }
}

// SAFETY: small requests take objects from slabs (each object handed out once
// until freed), large ones runs from the arenas' TLSF (disjoint by
// construction); both lie inside the heap's Blocks, which `owns` checks, and
// spilled memory never does.
unsafe impl Engine for Heap {
    #[inline(always)]
    fn take(&self, layout: Layout) -> Option<NonNull<[u8]>> {
        let (object, len) = self.take_fast(layout)?;
        Some(NonNull::slice_from_raw_parts(object, len))
    }

    fn take_slow(&self, layout: Layout) -> Option<NonNull<[u8]>> {
        Heap::take_slow(self, layout)
    }

    #[inline]
    fn owns(&self, ptr: NonNull<u8>) -> bool {
        Heap::owns(self, ptr.as_ptr())
    }

    #[inline]
    unsafe fn give(&self, ptr: NonNull<u8>, _layout: Layout) -> bool {
        // SAFETY: the caller's contract.
        unsafe { self.give_fast(ptr) }
    }

    unsafe fn give_slow(&self, ptr: NonNull<u8>, _layout: Layout) -> bool {
        // SAFETY: the caller's contract.
        unsafe { Heap::give_slow(self, ptr) }
    }

    #[inline]
    unsafe fn resize(&self, ptr: NonNull<u8>, _old: Layout, new: Layout) -> Option<NonNull<[u8]>> {
        let core = self.opened()?;
        let arena = core.arena_of(ptr.as_ptr())?;
        let slab = arena.header(ptr.as_ptr());
        // Relaxed: as in `HeapCore::free`; the slab is live while the caller
        // holds one of its objects.
        if slab.kind.load(Ordering::Relaxed) == slab::SLAB {
            let class = slab.class.load(Ordering::Relaxed) as usize;
            let fits = new.size() <= class::size(class) && new.align() <= class::align(class);
            fits.then(|| NonNull::slice_from_raw_parts(ptr, class::size(class)))
        } else {
            core.resize_large(arena, ptr, new)
        }
    }

    fn exhaustion(&self) -> Exhaustion {
        self.config.exhaustion
    }

    fn note_spill(&self, bytes: isize) {
        // Relaxed: statistics.
        if bytes >= 0 {
            self.spilled.fetch_add(bytes as usize, Ordering::Relaxed);
        } else {
            self.spilled
                .fetch_sub(bytes.unsigned_abs(), Ordering::Relaxed);
        }
    }
}

/// The live heaps, for flushing an exiting thread's caches.
struct Registry {
    first: *mut HeapCore,
}

// SAFETY: the pointers are to live cores; the registry lock orders access.
unsafe impl Send for Registry {}

static REGISTRY: SpinLock<Registry> = SpinLock::new(Registry {
    first: ptr::null_mut(),
});

fn register(core: *mut HeapCore) {
    let mut registry = REGISTRY.lock();
    // SAFETY: `core` is live; links are only touched under the registry lock.
    unsafe {
        *(*core).links.get() = [ptr::null_mut(), registry.first];
        if let Some(first) = registry.first.as_ref() {
            (*first.links.get())[0] = core;
        }
    }
    registry.first = core;
}

fn unregister(core: *mut HeapCore) {
    let mut registry = REGISTRY.lock();
    // SAFETY: as in `register`; `core` and its neighbours are live.
    unsafe {
        let [prev, next] = *(*core).links.get();
        match prev.as_ref() {
            Some(prev) => (*prev.links.get())[1] = next,
            None => registry.first = next,
        }
        if let Some(next) = next.as_ref() {
            (*next.links.get())[0] = prev;
        }
    }
}

/// Flushes thread tag `tag`'s caches in every live heap (at thread exit).
fn flush_thread(tag: usize) {
    let registry = REGISTRY.lock();
    let mut at = registry.first;
    // SAFETY: registered cores are live until they unregister, which waits
    // for the registry lock we hold; the exiting thread holds `tag`.
    unsafe {
        while let Some(core) = at.as_ref() {
            core.flush(tag);
            at = (*core.links.get())[1];
        }
    }
}

#[cfg(test)]
mod tests;
