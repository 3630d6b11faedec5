//! [`Heap`]: a general-purpose allocator over pinned Blocks, committed as
//! it grows and given back when it shrinks.
//!
//! # Layout
//!
//! A heap reserves three kinds of Blocks, each committed as it is used:
//!
//! - the **core** Block (`shared.rs`, with the paths in `small.rs` and
//!   `large.rs`): the heap's shared state (arena table,
//!   abandoned slabs, counters) and one thread cache per thread tag;
//! - per arena, a **data** Block (`arena.rs`): nothing but allocations,
//!   pinned and device-visible, committed in 2 MiB steps as the arena
//!   grows and decommitted from its end as it shrinks;
//! - per arena, a **metadata** Block: the arena's run allocator and one
//!   slab header and sixteen boundary tags per 64 KiB group of data,
//!   committed with the data it describes.
//!
//! Only data Blocks are pinned, registered with devices or listed by
//! [`Heap::blocks`]: a stray device write cannot reach the allocator's own
//! state. Nothing of the heap lives outside its Blocks, so a `Heap` value
//! moves freely and a `static` one needs no setup.
//!
//! # Paths
//!
//! - Requests up to 32 KiB (`class.rs`) come from slabs (`small.rs`): 64 KiB
//!   groups of one size class, each owned by one thread cache (`slab.rs`). A
//!   thread allocates from its cache's current slab and frees into slabs it
//!   owns with plain loads and stores; frees into other threads' slabs go
//!   through one compare-exchange, and their memory is reused once the owner
//!   collects it. The hottest of these are in this file (`take_fast`,
//!   `give_fast`), starting from copies kept in the `Heap` value.
//! - Larger requests (`large.rs`), and slabs themselves, are runs of 4 KiB
//!   units from the arena's TLSF allocator (`runs.rs`), under the arena's
//!   lock; freed runs merge with their neighbours and are reused.
//! - When an arena's committed part cannot serve a request it commits more,
//!   up to its reservation; when every arena is full, a new arena is
//!   opened, up to the configured limit; past it the exhaustion policy
//!   applies (fail, or spill to the system allocator). A request larger
//!   than an arena can ever hold fails (or spills) at once.
//! - Zeroed requests (`alloc_zeroed`, `allocate_zeroed`, `grow_zeroed`)
//!   write zeros only where the memory is not known to read zero: each
//!   arena tracks, per 4 KiB unit, what the system provided zero and nobody
//!   touched since (fresh commits, pages given back by a trim), and memory
//!   a program wrote is zeroed by giving its pages back where that is
//!   allowed, so pages the program does not touch stay out of memory
//!   (`arena.rs`, *Zeroed memory*).
//! - Threads are named by crate-wide tags (`thread.rs`); an exiting thread's
//!   caches are flushed through the registry of live heaps (`registry.rs`).
//!
//! # What an exiting thread leaves
//!
//! When a thread exits, each of its slabs goes back to its arena at once if
//! nothing of it is out; a slab with objects still out (freed later by
//! other threads) is abandoned: another thread that needs a slab of its
//! class adopts it, and the free that brings its last object back returns
//! it to its arena then, without waiting for the arena to fill (`slab.rs`,
//! *Abandoned slabs*). Memory back in an arena is free like any other: the
//! automatic trim gives it back to the system once an arena's free memory
//! passes [`TRIM_THRESHOLD`](Heap::TRIM_THRESHOLD) (keeping what the arena
//! keeps), and [`Heap::trim`] gives back all of it.
//!
//! # Lock order
//!
//! setup → registry → shared slot → a cache's retired lists → central →
//! arena grow → arena runs → commit locks. No lock is held while allocating
//! through the global allocator (nothing here does). The `fork` handlers
//! take them all in this order (`fork.rs`).

mod arena;
mod class;
mod large;
mod registry;
mod runs;
mod shared;
mod slab;
mod small;

use core::alloc::Layout;
use core::fmt;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use self::arena::GroupMeta;
use self::shared::{Core, HeapCore};
use crate::alloc::{Engine, Exhaustion};
use crate::once::Once;
use crate::thread::{self, SHARED, SLOTS};
use crate::{BlockOptions, Error, Region};
use slab::{GROUP, SlabHeader, ThreadCache};

/// The most arenas one Heap opens: each is twice the size of the one before
/// (up to [`MAX_ARENA`]), so the address space runs out long before.
pub(crate) const MAX_BLOCKS: usize = 64;
/// The largest arena: what one arena's 32-bit unit numbers reach, with room
/// (1 GiB where the address space is 32 bits).
pub(crate) const MAX_ARENA: usize = if usize::BITS >= 64 {
    (1u64 << 42) as usize
} else {
    1 << 30
};

/// A general-purpose allocator over pinned Blocks, able to carry a whole
/// program for hours: freed memory is reused, frees from other threads are
/// fine, and arenas commit memory as they grow and give it back as they
/// shrink.
///
/// Requests up to 32 KiB are served from per-thread slabs of size classes (at
/// most a quarter of a class wasted); larger ones from runs of 4 KiB pages
/// that merge and are reused once freed. `Heap` implements
/// `allocator_api2::alloc::Allocator` and `GlobalAlloc`.
///
/// The first arena reserves `block_bytes` of address space and commits it
/// in steps of 2 MiB as it is used, so a Heap of any size starts in
/// constant time and memory; when the arenas are full another opens, twice
/// the size of the last (or what the request needs), until the system
/// refuses or the [`limit`](Heap::limit) is reached. When a free leaves
/// [`TRIM_THRESHOLD`](Heap::TRIM_THRESHOLD) or more of free memory in an
/// arena, all but [`TRIM_KEEP`](Heap::TRIM_KEEP) of it is given back at
/// once; an arena that has to commit again after such trims keeps twice as
/// much from then on, and at least what they gave back (up to
/// [`TRIM_KEEP_MAX`](Heap::TRIM_KEEP_MAX)), so memory that a program keeps
/// coming back for stays. [`trim`](Heap::trim) gives back every free run at
/// the arenas' ends and every free group inside them. The slabs of a thread
/// that exits go back to their arena once nothing of them is out.
///
/// A zeroed allocation (`alloc_zeroed`, `allocate_zeroed`, `grow_zeroed`)
/// writes zeros only where the memory is not known to read zero already
/// (committed fresh, or given back to the system and taken again); memory
/// a program wrote before is zeroed by giving its pages back where the
/// Block allows it. Either way, pages the program does not touch stay out
/// of memory: `vec![0u8; n]` costs what the program uses of it.
///
/// Freeing an object twice, or freeing a pointer that is not the start of
/// an allocation, aborts the process with a message, as glibc's
/// `free(): double free detected` does.
///
/// A `Heap` value is about 8 KiB: it keeps one cache pointer per thread slot
/// so that the fast paths start from it. A `static` (as a global allocator
/// is) or a `Box` holds it without copies.
///
/// ```
/// use allocator_api2::vec::Vec;
/// use unimem::{BlockOptions, Heap, Pinning};
///
/// let heap = Heap::lazy_with(8 << 20, BlockOptions::new().pinning(Pinning::BestEffort)).open_now()?;
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
/// // A first arena of 256 MiB of address space, more as the program grows.
/// #[global_allocator]
/// static HEAP: Heap = Heap::lazy(256 << 20);
/// # fn main() {}
/// ```
pub struct Heap {
    core: Once<Result<Core, Error>>,
    /// The core once open: one load on the hot paths instead of the `Once`
    /// check (set right after `core` is).
    open: AtomicPtr<HeapCore>,
    config: Config,
    /// Bytes currently spilled to the system allocator.
    spilled: AtomicUsize,
    /// What the fast paths read, copied out of the core so that they start
    /// from `self`: each saves a dependent load or two.
    fast: Fast,
}

/// Copies of core fields for the fast paths. The pointers point into the
/// heap's Blocks, so they stay right when the `Heap` value moves.
/// In this order, and aligned, so that the free path's fields and the
/// first threads' cache pointers share one cache line.
#[repr(C, align(64))]
struct Fast {
    /// The first arena's data `base` address, its reserved `len` and its
    /// `groups`; zero and null until the core opens (stored before
    /// `Heap::open` is).
    base: AtomicUsize,
    len: AtomicUsize,
    groups: AtomicPtr<GroupMeta>,
    /// The freed objects' secret (`slab::secret`), stored with the above.
    secret: AtomicU64,
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
            secret: AtomicU64::new(0),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Config {
    /// The first arena's reservation; each next arena reserves twice the
    /// one before (or what a request needs), up to [`MAX_ARENA`].
    block_bytes: usize,
    /// The most data the arenas may reserve together; `usize::MAX` for no
    /// limit but the system's.
    limit: usize,
    exhaustion: Exhaustion,
    options: BlockOptions<'static>,
}

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
    /// Bytes held for allocations now: slabs and page runs taken from the
    /// arenas (a slab counts whole while any of its objects is live or it
    /// is a thread's).
    pub held: usize,
    /// Bytes of data committed in the arenas' Blocks: mapped and, when
    /// pinned, locked. Falls when free runs at the arenas' ends are given
    /// back ([`Heap::trim`], and automatically past [`TRIM_THRESHOLD`](Heap::TRIM_THRESHOLD)).
    pub committed: usize,
    /// The largest `committed` has been.
    pub high_water: usize,
    /// Bytes committed for the heap's own metadata (the core and the
    /// arenas' tags and headers), unpinned and apart from the data.
    pub metadata: usize,
    /// Arenas (data Blocks) opened.
    pub blocks: usize,
    /// Bytes currently served by the system allocator (spilled).
    pub spilled: usize,
}

/// The data Blocks' options of [`Heap::lazy`].
const HEAP_OPTIONS: BlockOptions<'static> = BlockOptions::lazy().prefault(false).huge_pages(false);

/// What a heap that cannot be opened reports when it asks for itself while
/// opening (nothing in the crate does).
static RECURSED: Error = Error::InvalidArgument {
    reason: "a Heap was used while it was being opened",
};

impl Heap {
    /// The smallest first arena a Heap takes: three slabs, whatever the
    /// alignment.
    pub const MIN_BLOCK: usize = 512 << 10;
    /// When a free leaves at least this much free memory in memory in an
    /// arena, the arena gives all but [`TRIM_KEEP`](Heap::TRIM_KEEP) of it
    /// back to the system at once: after a burst, committed (and locked)
    /// memory falls without waiting for [`Heap::trim`].
    pub const TRIM_THRESHOLD: usize = arena::TRIM_THRESHOLD;
    /// The free memory an automatic trim leaves in memory, so that the next
    /// burst does not start by committing again: what an arena starts with.
    /// It doubles (and grows to at least what the trims gave back), up to
    /// [`TRIM_KEEP_MAX`](Heap::TRIM_KEEP_MAX), each time the arena commits
    /// again after automatic trims gave memory back, and the threshold with
    /// it.
    pub const TRIM_KEEP: usize = arena::TRIM_KEEP;
    /// The most free memory an automatic trim keeps in memory.
    pub const TRIM_KEEP_MAX: usize = arena::TRIM_KEEP_MAX;

    /// A Heap whose first arena (`block_bytes` of address space) is reserved
    /// on first use and committed as it is used: the constructor for
    /// `#[global_allocator]` statics.
    ///
    /// It grows until the system refuses: when its arenas are full it opens
    /// another, reserving twice as much as the one before (or what the
    /// request needs), so `block_bytes` is where it starts, not a cap. Set
    /// one with [`limit`](Heap::limit). When the system refuses to reserve
    /// or commit more, the allocation fails (null from `GlobalAlloc`, which
    /// Rust's collections report through `handle_alloc_error`), or goes to
    /// the system allocator with [`spill`](Heap::spill); memory freed later
    /// is reused as usual.
    ///
    /// The data Blocks' options are [`BlockOptions::lazy`] (pinned where
    /// `RLIMIT_MEMLOCK` allows, then unpinned, with one line on standard
    /// error saying so: [`Pinning::BestEffort`](crate::Pinning)), with
    /// prefault and transparent huge pages off: a heap's slabs are used
    /// sparsely at first (a thread touches a few objects of each class), so
    /// populating 2 MiB steps, or backing them with 2 MiB pages, would cost
    /// memory the program never touches. Pages are locked as they are first
    /// touched (`MLOCK_ONFAULT`). Choose otherwise with
    /// [`lazy_with`](Heap::lazy_with).
    pub const fn lazy(block_bytes: usize) -> Heap {
        Heap::lazy_with(block_bytes, HEAP_OPTIONS)
    }

    /// As [`Heap::lazy`], with options for every data Block it opens.
    pub const fn lazy_with(block_bytes: usize, options: BlockOptions<'static>) -> Heap {
        Heap {
            core: Once::new(),
            open: AtomicPtr::new(ptr::null_mut()),
            config: Config {
                block_bytes,
                limit: usize::MAX,
                exhaustion: Exhaustion::Fail,
                options,
            },
            spilled: AtomicUsize::new(0),
            fast: Fast::new(),
        }
    }

    /// Opens a Heap now, its first arena reserving `block_bytes`, with the
    /// options of [`Heap::lazy`]; errors are those of
    /// [`open_now`](Heap::open_now).
    pub fn open(block_bytes: usize) -> Result<Heap, Error> {
        Heap::lazy(block_bytes).open_now()
    }

    /// As [`Heap::open`], with options for every data Block it opens (the
    /// heap keeps them, so a label must be `'static`).
    pub fn open_with(block_bytes: usize, options: &BlockOptions<'static>) -> Result<Heap, Error> {
        Heap::lazy_with(block_bytes, *options).open_now()
    }

    /// Caps the address space the arenas reserve together at `bytes` (and
    /// so the memory they can commit): past it the exhaustion policy
    /// applies. The first arena is never larger than the limit.
    pub const fn limit(mut self, bytes: usize) -> Heap {
        self.config.limit = bytes;
        if self.config.block_bytes > bytes {
            self.config.block_bytes = bytes;
        }
        self
    }

    /// Sets what happens when the heap cannot grow (its limit, or the
    /// system refusing): fail (the default) or spill to the system
    /// allocator.
    pub const fn on_exhaustion(mut self, exhaustion: Exhaustion) -> Heap {
        self.config.exhaustion = exhaustion;
        self
    }

    /// Shorthand for `on_exhaustion(Exhaustion::Spill)`.
    pub const fn spill(self) -> Heap {
        self.on_exhaustion(Exhaustion::Spill)
    }

    /// Opens the first arena now, reporting why if it cannot be.
    ///
    /// Errors: [`Error::TooSmall`] below [`MIN_BLOCK`](Heap::MIN_BLOCK)
    /// bytes (or a limit below it), and whatever reserving a Block reports.
    pub fn open_now(mut self) -> Result<Heap, Error> {
        match self.try_core() {
            Ok(_) => Ok(self),
            Err(_) => match self.core.take() {
                Some(Err(error)) => Err(error),
                _ => Err(Error::InvalidArgument {
                    reason: "a Heap was used while it was being opened",
                }),
            },
        }
    }

    /// The core, opening the first arena on first use.
    #[inline]
    fn core(&self) -> Option<&HeapCore> {
        match self.opened() {
            Some(core) => Some(core),
            None => self.try_core().ok(),
        }
    }

    /// The core if the first arena is open; never opens it.
    #[inline]
    fn opened(&self) -> Option<&HeapCore> {
        // Acquire: pairs with the Release store in `try_core`, after the core
        // was built.
        let core = self.open.load(Ordering::Acquire);
        // SAFETY: the core lives in its Block, which lives as long as `self`.
        unsafe { core.as_ref() }
    }

    #[cold]
    fn try_core(&self) -> Result<&HeapCore, &Error> {
        let core = match self.core.get_or_init(|| HeapCore::create(self.config)) {
            Some(core) => core.as_ref().map(|core| core.0)?,
            None => return Err(&RECURSED),
        };
        // SAFETY: as in `opened`; the first arena is published with the core.
        let first = unsafe { core.as_ref() }.first();
        // Relaxed: published by the Release store of `open` below. Every
        // thread that gets here stores the same values.
        self.fast
            .groups
            .store(first.groups().as_ptr(), Ordering::Relaxed);
        self.fast
            .base
            .store(first.base().as_ptr().addr(), Ordering::Relaxed);
        self.fast.len.store(first.len(), Ordering::Relaxed);
        // Set before the core was built (`HeapCore::create`), never changed.
        self.fast.secret.store(slab::secret(), Ordering::Relaxed);
        // Release: see `opened`.
        self.open.store(core.as_ptr(), Ordering::Release);
        // SAFETY: as in `opened`.
        Ok(unsafe { core.as_ref() })
    }

    /// Whether `ptr` points into one of the heap's data Blocks.
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
        let mut blocks = 0;
        for arena in core.arenas() {
            blocks += 1;
            in_use += arena.slab_in_use();
        }
        let (held, committed, high_water, metadata) = core.counters();
        HeapStats {
            in_use,
            held,
            committed,
            high_water,
            metadata,
            blocks,
            spilled,
        }
    }

    /// The data Blocks opened so far (a lazy Heap opens its first): what a
    /// device registration covers. Arenas opened later are not in the list.
    pub fn blocks(&self) -> Vec<&Region> {
        // The Blocks are read without a lock (each is published before the
        // count and never changes), so collecting into a Vec through a
        // global Heap cannot wait on this heap's own locks.
        let Some(core) = self.core() else {
            return Vec::new();
        };
        core.arenas().map(arena::Arena::data).collect()
    }

    /// Calls `f` on each data Block opened so far (a lazy Heap opens its
    /// first), without a lock.
    pub(crate) fn for_each_block(&self, f: &mut dyn FnMut(&Region)) {
        if let Some(core) = self.core() {
            core.arenas().for_each(|arena| f(arena.data()));
        }
    }

    /// Has every data Block opened from now on watched by `watcher`.
    pub(crate) fn follow_blocks(&self, watcher: crate::block::Watcher) -> Result<(), Error> {
        match self.core() {
            Some(core) => core.follow(watcher),
            None => Ok(()),
        }
    }

    /// Undoes `follow_blocks` for the watcher with this `data`.
    pub(crate) fn unfollow_blocks(&self, data: *const ()) {
        if let Some(core) = self.opened() {
            core.unfollow(data);
        }
    }

    /// The first data Block (a lazy Heap opens its first arena): what the
    /// fast paths serve from.
    ///
    /// # Panics
    /// If this is a lazy Heap whose first arena cannot be opened; see
    /// [`try_block`](Heap::try_block).
    pub fn block(&self) -> &Region {
        match self.try_block() {
            Ok(region) => region,
            Err(error) => panic!("the Heap's first Block could not be opened: {error}"),
        }
    }

    /// The first data Block, or why the heap's first arena could not be
    /// opened. Whether it is pinned is [`Region::is_pinned`]; a refused
    /// `mlock` was also told on standard error once.
    pub fn try_block(&self) -> Result<&Region, &Error> {
        if let Some(core) = self.opened() {
            return Ok(core.first().data());
        }
        self.try_core().map(|core| core.first().data())
    }

    /// Gives back every free run at the end of an arena: the pages are
    /// decommitted (unlocked and returned to the system) and committed again
    /// when the heap grows back. Returns the bytes given back. Arenas whose
    /// data Block is registered with a device keep their pages.
    pub fn trim(&self) -> usize {
        self.opened()
            .map_or(0, |core| core.arenas().map(|arena| arena.trim(0)).sum())
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
                let (object, _) = self.alloc_class(core, class)?;
                Some(NonNull::slice_from_raw_parts(object, class::size(class)))
            }
            None => core.alloc_large(layout, 0),
        }
    }

    /// An object of `class` from this thread's cache, and whether it is
    /// known to read zero.
    #[inline]
    fn alloc_class(&self, core: &HeapCore, class: usize) -> Option<(NonNull<u8>, bool)> {
        let tag = thread::tag();
        if tag != SHARED && self.fast.caches[tag].load(Ordering::Relaxed).is_null() {
            // This thread's first small allocation here: give the fast path
            // its cache.
            let cache = core.cache(tag)?;
            // Relaxed: see `take_fast`.
            self.fast.caches[tag].store(ptr::from_ref(cache).cast_mut(), Ordering::Relaxed);
        }
        core.alloc_class(class)
    }

    /// As `take_fast`, for a zeroed allocation (`Engine::take_zeroed`): an
    /// object never used in a slab made on zero pages is not written.
    #[inline(always)]
    fn take_zeroed_fast(&self, layout: Layout, all: bool) -> Option<NonNull<[u8]>> {
        let class = class::of_common(layout.size(), layout.align())?;
        let tag = thread::tag_fast()?;
        // Relaxed: as in `take_fast`.
        // SAFETY: caches live as long as the heap.
        let cache = unsafe { self.fast.caches[tag].load(Ordering::Relaxed).as_ref()? };
        // SAFETY: as in `take_fast`.
        let (object, zero) = unsafe { cache.class(class).current.as_ref()?.pop_zeroed()? };
        let size = class::size(class);
        if !zero {
            // SAFETY: the object holds `size` bytes, at least `layout.size()`.
            unsafe { object.write_bytes(0, if all { size } else { layout.size() }) };
        }
        Some(NonNull::slice_from_raw_parts(object, size))
    }

    /// Every zeroed allocation `take_zeroed_fast` does not serve: only what
    /// is not known to read zero is written.
    fn take_zeroed_slow(&self, layout: Layout, all: bool) -> Option<NonNull<[u8]>> {
        let core = self.core()?;
        match class::of(layout.size(), layout.align()) {
            Some(class) => {
                let (object, zero) = self.alloc_class(core, class)?;
                let size = class::size(class);
                if !zero {
                    // SAFETY: the object holds `size` bytes, at least the
                    // size asked for.
                    unsafe { object.write_bytes(0, if all { size } else { layout.size() }) };
                }
                Some(NonNull::slice_from_raw_parts(object, size))
            }
            None => core.alloc_large(layout, if all { usize::MAX } else { layout.size() }),
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
        // Unchecked: a thread without a tag has a marker that matches no
        // owner, so the owner check below sends it to the slow path.
        let tag = thread::tag_raw();
        // SAFETY: `offset` lies in the first arena, in a committed group
        // (`ptr` is a live allocation there), whose metadata is committed and
        // lives as long as the heap (as `Arena::header`).
        let slab = unsafe { &(*self.fast.groups.load(Ordering::Relaxed).add(offset / GROUP)).slab };
        // Relaxed: as in `HeapCore::free`.
        if slab.owner.load(Ordering::Relaxed) != tag {
            return false;
        }
        // A slab's owner is a thread's tag (or 0, or `SHARED`, which no
        // thread holds as its tag word): this thread's tag.
        let tag = tag as usize;
        // Relaxed: as `base` above.
        let secret = self.fast.secret.load(Ordering::Relaxed);
        // SAFETY: the slab is this thread's, and `ptr` a live object of it.
        // Each call below is the last thing done but the `true` (see
        // `try_push_local`).
        match unsafe { slab.try_push_local(ptr, secret) } {
            Some(false) => {}
            // SAFETY: as above.
            Some(true) => unsafe { self.after_local_free(tag, slab) },
            // SAFETY: as above; `try_push_local` did nothing.
            None => unsafe { self.give_marked(tag, slab, ptr) },
        }
        true
    }

    /// The rest of `give_fast` for an object that carries a freed object's
    /// mark (`SlabHeader::push_local_marked`).
    ///
    /// # Safety
    /// As `HeapCore::free_local`.
    #[cold]
    #[inline(never)]
    unsafe fn give_marked(&self, tag: usize, slab: &SlabHeader, ptr: NonNull<u8>) {
        // SAFETY: the caller's contract.
        unsafe {
            if slab.push_local_marked(ptr) {
                self.after_local_free(tag, slab);
            }
        }
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
        let Some(cache) = core.cache_of(tag) else {
            unreachable!("a tag that owns a slab has a cache")
        };
        // SAFETY: the caller's contract.
        unsafe { core.after_local_free(cache, slab) };
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

impl Heap {
    /// `Engine::resize` and `resize_zeroed`: with `zero_from`, the result
    /// reads zero from there on (the units a run grows by are written only
    /// where not known to be zero).
    ///
    /// # Safety
    /// As `Engine::resize`; `zero_from` is at most the old size.
    #[inline]
    unsafe fn resize_in_place(
        &self,
        ptr: NonNull<u8>,
        new: Layout,
        zero_from: Option<usize>,
    ) -> Option<NonNull<[u8]>> {
        let core = self.opened()?;
        let arena = core.arena_of(ptr.as_ptr())?;
        let slab = arena.header(ptr.as_ptr());
        // Relaxed: as in `HeapCore::free`; the slab is live while the caller
        // holds one of its objects.
        if slab.kind.load(Ordering::Relaxed) == slab::SLAB {
            let class = slab.class.load(Ordering::Relaxed) as usize;
            let size = class::size(class);
            if new.size() > size || new.align() > class::align(class) {
                return None;
            }
            if let Some(from) = zero_from.filter(|&from| from < size) {
                // SAFETY: the object is the caller's (the contract) and
                // holds `size` bytes.
                unsafe { ptr.add(from).write_bytes(0, size - from) };
            }
            Some(NonNull::slice_from_raw_parts(ptr, size))
        } else {
            // SAFETY: the caller's contract: a live allocation, not a slab
            // object, so a run.
            unsafe { core.resize_large(arena, ptr, new, zero_from) }
        }
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        let Some(Ok(core)) = self.core.get() else {
            return;
        };
        let core = core.0;
        *self.open.get_mut() = ptr::null_mut();
        // SAFETY: no thread can reach the core any more: `&mut self` rules
        // out users, and closing unregisters it (after waiting for any flush
        // that runs in it) before anything goes.
        unsafe { HeapCore::close(core) };
    }
}

impl fmt::Debug for Heap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heap")
            .field("block_bytes", &self.config.block_bytes)
            .field("limit", &self.config.limit)
            .field("exhaustion", &self.config.exhaustion)
            .field("stats", &self.stats())
            .finish()
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

    #[inline(always)]
    fn take_zeroed(&self, layout: Layout, all: bool) -> Option<NonNull<[u8]>> {
        self.take_zeroed_fast(layout, all)
    }

    fn take_zeroed_slow(&self, layout: Layout, all: bool) -> Option<NonNull<[u8]>> {
        Heap::take_zeroed_slow(self, layout, all)
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
        // SAFETY: the caller's contract.
        unsafe { self.resize_in_place(ptr, new, None) }
    }

    unsafe fn resize_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Option<NonNull<[u8]>> {
        // SAFETY: the caller's contract.
        unsafe { self.resize_in_place(ptr, new, Some(old.size())) }
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

#[cfg(test)]
mod tests;
