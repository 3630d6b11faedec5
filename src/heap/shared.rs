//! [`HeapCore`]: a heap's shared state, in a Block of its own: the arena
//! table, the thread caches, the abandoned slabs, the counters, and growth
//! (opening arenas).
//!
//! The core Block holds the `HeapCore` and then one [`ThreadCache`] per
//! thread tag, each made (and its pages committed) when its tag's thread
//! first allocates. Tags are handed out lowest first, so what is committed
//! follows the number of threads. The Block is private and unpinned, like
//! the arenas' metadata.

use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use super::arena::Arena;
use super::class::CLASSES;
use super::registry;
use super::runs::UNIT;
use super::slab::{self, SlabHeader, ThreadCache};
use super::{Config, Heap, MAX_ARENA, MAX_BLOCKS};
use crate::Block;
use crate::Error;
use crate::block::{Watch, Watcher};
use crate::lock::SpinLock;
use crate::thread::SLOTS;

/// A heap's core, once open.
pub(super) struct Core(pub(super) NonNull<HeapCore>);

// SAFETY: the core is shared state built from atomics and locks; it lives in
// its own Block, which it owns.
unsafe impl Send for Core {}
// SAFETY: as above.
unsafe impl Sync for Core {}

/// What the central lock guards.
pub(super) struct Central {
    /// Slabs whose owner's thread exited, per class (linked through
    /// `Local::next`/`prev`).
    pub(super) abandoned: [*mut SlabHeader; CLASSES],
    /// Registrations that cover the heap: each arena opened from now on is
    /// watched by them too.
    followers: [Option<Watcher>; FOLLOWERS],
}

/// How many registrations can follow one heap at once: as many as watch
/// one Block, so that every follower can watch each arena it opens.
const FOLLOWERS: usize = crate::block::WATCHERS;

// SAFETY: the pointers point into the heap's Blocks; the lock orders access.
unsafe impl Send for Central {}

/// The heap's shared state, at the start of its core Block.
#[repr(C)]
pub(super) struct HeapCore {
    /// The Block this core lives in: the handle is kept inside the memory it
    /// describes, and `close` copies it out before unmapping.
    block: Block,
    arenas: [AtomicPtr<Arena>; MAX_BLOCKS],
    /// Arenas open; each slot below it is written before the count is
    /// published (Release) and never changes after.
    arena_count: AtomicUsize,
    /// One cache per thread tag (slot 0 unused), and the shared slot last;
    /// each written once, by the thread holding the tag (or the shared lock).
    caches: [AtomicPtr<ThreadCache>; SLOTS],
    /// Held by threads using the shared slot.
    pub(super) shared: SpinLock<()>,
    pub(super) central: SpinLock<Central>,
    pub(super) large_in_use: AtomicUsize,
    /// Bytes held for allocations: slabs and page runs.
    held: AtomicUsize,
    /// Bytes of data committed across the arenas, and the most it has been.
    committed: AtomicUsize,
    high_water: AtomicUsize,
    config: Config,
    /// Previous and next heap in the registry (registry lock).
    pub(super) links: UnsafeCell<[*mut HeapCore; 2]>,
}

// SAFETY: atomics, locks, the Block (whose shared state is atomic or under
// its commit lock), and `links`, which only the registry lock reaches.
unsafe impl Sync for HeapCore {}

/// Where the thread caches start in the core Block.
const CACHES_OFFSET: usize = size_of::<HeapCore>().next_multiple_of(align_of::<ThreadCache>());

impl HeapCore {
    /// Reserves the core Block and the first arena, and builds the core.
    pub(super) fn create(config: Config) -> Result<Core, Error> {
        if config.block_bytes < Heap::MIN_BLOCK {
            return Err(Error::TooSmall {
                requested: config.block_bytes,
                minimum: Heap::MIN_BLOCK,
            });
        }
        slab::init_secret();
        let block = Block::reserve(
            CACHES_OFFSET + SLOTS * size_of::<ThreadCache>(),
            &config.options.for_metadata(),
        )?;
        block.commit(CACHES_OFFSET)?;
        let place = NonNull::new(block.as_ptr().cast::<HeapCore>()).ok_or(Error::ZeroSize)?;
        // SAFETY: the core Block's first bytes are committed, aligned (the
        // Block is page-aligned) and unused; the Block's handle moves in.
        unsafe {
            place.write(HeapCore {
                block,
                arenas: [const { AtomicPtr::new(ptr::null_mut()) }; MAX_BLOCKS],
                arena_count: AtomicUsize::new(0),
                caches: [const { AtomicPtr::new(ptr::null_mut()) }; SLOTS],
                shared: SpinLock::new(()),
                central: SpinLock::new(Central {
                    abandoned: [ptr::null_mut(); CLASSES],
                    followers: [None; FOLLOWERS],
                }),
                large_in_use: AtomicUsize::new(0),
                held: AtomicUsize::new(0),
                committed: AtomicUsize::new(0),
                high_water: AtomicUsize::new(0),
                config,
                links: UnsafeCell::new([ptr::null_mut(); 2]),
            });
        }
        let arena = match Arena::open(config.block_bytes, &config.options, place) {
            Ok(arena) => arena,
            Err(error) => {
                // SAFETY: just built, never published or registered: read
                // the handle out before the memory it lives in goes.
                drop(unsafe { ptr::addr_of!((*place.as_ptr()).block).read() });
                return Err(error);
            }
        };
        // SAFETY: just written.
        let this = unsafe { place.as_ref() };
        this.arenas[0].store(arena.as_ptr(), Ordering::Relaxed);
        // Release: publishes the arena (and the core's contents) to every
        // thread that loads the count.
        this.arena_count.store(1, Ordering::Release);
        registry::register(place.as_ptr());
        Ok(Core(place))
    }

    /// Unregisters and drops the core at `core`: its arenas (newest first),
    /// then its own Block.
    ///
    /// # Safety
    /// Nothing refers to the core, its arenas or their memory any more, and
    /// it is closed once.
    pub(super) unsafe fn close(core: NonNull<HeapCore>) {
        registry::unregister(core.as_ptr());
        // SAFETY: the caller's contract.
        let this = unsafe { core.as_ref() };
        let count = this.arena_count.load(Ordering::Acquire);
        for slot in this.arenas[..count].iter().rev() {
            // SAFETY: published arenas are live until now; closed once.
            unsafe { Arena::close(NonNull::new_unchecked(slot.load(Ordering::Relaxed))) };
        }
        // SAFETY: the handle is read out before the memory it lives in goes.
        let block = unsafe { ptr::addr_of!((*core.as_ptr()).block).read() };
        drop(block);
    }

    /// The published arenas.
    #[inline]
    pub(super) fn arenas(&self) -> impl Iterator<Item = &Arena> {
        // Acquire: pairs with the Release publishing each arena.
        let count = self.arena_count.load(Ordering::Acquire);
        self.arenas[..count].iter().map(|slot| {
            // SAFETY: published arenas live as long as the heap.
            unsafe { &*slot.load(Ordering::Relaxed) }
        })
    }

    /// The first arena, which exists from the start.
    #[inline]
    pub(super) fn first(&self) -> &Arena {
        // SAFETY: the first arena is published before the core is.
        unsafe { &*self.arenas[0].load(Ordering::Relaxed) }
    }

    /// The arena `ptr` points into.
    #[inline]
    pub(super) fn arena_of(&self, ptr: *const u8) -> Option<&Arena> {
        // The first arena takes most traffic: check it before the count.
        let first = self.first();
        if first.contains(ptr) {
            return Some(first);
        }
        self.arenas().skip(1).find(|arena| arena.contains(ptr))
    }

    /// Units of the largest run an arena can hold: what the limit leaves
    /// for one arena, at most [`MAX_ARENA`].
    pub(super) fn max_units(&self) -> usize {
        self.config.limit.min(MAX_ARENA) / UNIT
    }

    /// Counts `bytes` more held for allocations.
    pub(super) fn hold(&self, bytes: usize) {
        // Relaxed: statistics.
        self.held.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `bytes` no longer held.
    pub(super) fn release(&self, bytes: usize) {
        // Relaxed: statistics.
        self.held.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Counts data committed (positive) or decommitted (negative).
    pub(super) fn note_committed(&self, delta: isize) {
        // Relaxed: statistics.
        if delta >= 0 {
            let now = self.committed.fetch_add(delta as usize, Ordering::Relaxed) + delta as usize;
            self.high_water.fetch_max(now, Ordering::Relaxed);
        } else {
            self.committed
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// (bytes held, data committed, the most data committed, metadata
    /// committed): a snapshot.
    pub(super) fn counters(&self) -> (usize, usize, usize, usize) {
        let metadata = self.block.committed() + self.arenas().map(Arena::metadata).sum::<usize>();
        // Relaxed: statistics.
        (
            self.held.load(Ordering::Relaxed),
            self.committed.load(Ordering::Relaxed),
            self.high_water.load(Ordering::Relaxed),
            metadata,
        )
    }

    /// Runs `take` on each arena (each commits more of itself as needed),
    /// then on new ones while the limit and the system allow; a new arena
    /// has room for at least `need` bytes.
    pub(super) fn take_from_arenas<'a, T>(
        &'a self,
        need: usize,
        mut take: impl FnMut(&'a Arena) -> Option<T>,
    ) -> Option<T> {
        let mut tried = 0;
        loop {
            // Acquire: pairs with the Release in `open_arena`.
            let count = self.arena_count.load(Ordering::Acquire);
            for slot in &self.arenas[tried..count] {
                // SAFETY: published arenas live as long as the heap.
                if let Some(found) = take(unsafe { &*slot.load(Ordering::Relaxed) }) {
                    return Some(found);
                }
            }
            tried = count;
            if !self.open_arena(count, need) {
                return None;
            }
        }
    }

    /// Opens arena number `seen` unless another thread already did; false if
    /// the limit leaves no room for `need` bytes, or the system refuses.
    ///
    /// Arena `i` reserves twice what arena `i - 1` did (the first, the
    /// configured `block_bytes`), or `need` rounded up to a power of two if
    /// that is more, up to [`MAX_ARENA`] and what the limit leaves. If the
    /// system refuses that much address space (`RLIMIT_AS`, say), halves
    /// are tried down to what `need` takes.
    #[cold]
    fn open_arena(&self, seen: usize, need: usize) -> bool {
        let central = self.central.lock();
        // Relaxed: only the holder of the central lock changes the count.
        let count = self.arena_count.load(Ordering::Relaxed);
        if count > seen {
            return true;
        }
        if count >= MAX_BLOCKS {
            return false;
        }
        let reserved: usize = self.arenas().map(Arena::len).sum();
        let room = self.config.limit.saturating_sub(reserved).min(MAX_ARENA);
        let smallest = need.max(Heap::MIN_BLOCK);
        let last = self.arenas().last().map_or(0, Arena::len);
        let mut bytes = last
            .saturating_mul(2)
            .max(smallest.checked_next_power_of_two().unwrap_or(MAX_ARENA))
            .min(room);
        let arena = loop {
            if bytes < smallest {
                return false;
            }
            match Arena::open(bytes, &self.config.options, NonNull::from(self)) {
                Ok(arena) => break arena,
                Err(_) if bytes / 2 >= smallest => bytes /= 2,
                Err(_) => return false,
            }
        };
        // SAFETY: just opened, not yet published.
        let data = unsafe { arena.as_ref() }.data();
        for follower in central.followers.iter().flatten() {
            // Nothing is committed yet: the watcher hears of every commit. A
            // fresh Block has room for every follower (FOLLOWERS is its
            // WATCHERS), and each follows once.
            let watched = data.watch(*follower);
            debug_assert!(matches!(watched, Watch::Added(0)), "a new arena watched");
        }
        // Relaxed: published by the Release store of the count below.
        self.arenas[count].store(arena.as_ptr(), Ordering::Relaxed);
        // Release: publishes the arena to `arenas` and `take_from_arenas`.
        self.arena_count.store(count + 1, Ordering::Release);
        true
    }

    /// Has every arena opened from now on watched by `watcher` too.
    pub(super) fn follow(&self, watcher: Watcher) -> Result<(), Error> {
        let mut central = self.central.lock();
        if central
            .followers
            .iter()
            .flatten()
            .any(|f| f.data == watcher.data)
        {
            return Ok(());
        }
        let Some(free) = central.followers.iter_mut().find(|f| f.is_none()) else {
            return Err(Error::InvalidArgument {
                reason: "a Heap takes at most four registrations at once",
            });
        };
        *free = Some(watcher);
        Ok(())
    }

    /// Undoes `follow` for the watcher with this `data`.
    pub(super) fn unfollow(&self, data: *const ()) {
        let mut central = self.central.lock();
        for follower in &mut central.followers {
            if follower.is_some_and(|f| f.data == data) {
                *follower = None;
            }
        }
    }

    /// The cache of thread tag `tag`, if it was made.
    #[inline]
    pub(super) fn cache_of(&self, tag: usize) -> Option<&ThreadCache> {
        // Acquire: pairs with the Release in `create_cache` (needed by
        // other threads, which read a cache's counters).
        let cache = self.caches.get(tag)?.load(Ordering::Acquire);
        // SAFETY: a cache, once made, lives as long as the heap (it is in the
        // core Block, committed, and never taken back).
        unsafe { cache.as_ref() }
    }

    /// The cache of thread tag `tag`, made on first use.
    #[inline]
    pub(super) fn cache(&self, tag: usize) -> Option<&ThreadCache> {
        match self.cache_of(tag) {
            Some(cache) => Some(cache),
            None => self.create_cache(tag),
        }
    }

    /// Makes `tag`'s cache, in its place in the core Block, committing its
    /// pages first. Only the thread holding `tag` (or the shared lock) calls
    /// this.
    #[cold]
    fn create_cache(&self, tag: usize) -> Option<&ThreadCache> {
        let offset = CACHES_OFFSET + tag * size_of::<ThreadCache>();
        let end = offset + size_of::<ThreadCache>();
        self.block.ensure_committed(end)?;
        // SAFETY: inside the core Block's committed part, aligned for a
        // ThreadCache, and this tag's alone: nobody else writes it.
        let place = unsafe { self.block.as_ptr().add(offset) }.cast::<ThreadCache>();
        // SAFETY: as above.
        unsafe { place.write(ThreadCache::new()) };
        // Release: publishes the initialized cache.
        self.caches[tag].store(place, Ordering::Release);
        self.cache_of(tag)
    }

    /// The caches made so far.
    fn made_caches(&self) -> impl DoubleEndedIterator<Item = &ThreadCache> {
        (0..SLOTS).filter_map(|tag| self.cache_of(tag))
    }

    /// Takes the core's locks (its caches' retired lists, its arenas'), for
    /// `fork`.
    pub(super) fn lock_for_fork(&self) {
        self.shared.lock_for_fork();
        for cache in self.made_caches() {
            cache.retired.lock_for_fork();
        }
        self.central.lock_for_fork();
        for arena in self.arenas() {
            arena.lock_for_fork();
        }
    }

    /// Releases what `lock_for_fork` took.
    ///
    /// # Safety
    /// As [`SpinLock::unlock_after_fork`].
    pub(super) unsafe fn unlock_after_fork(&self) {
        // SAFETY: the caller's contract.
        unsafe {
            for arena in self.arenas() {
                arena.unlock_after_fork();
            }
            self.central.unlock_after_fork();
            for cache in self.made_caches().rev() {
                cache.retired.unlock_after_fork();
            }
            self.shared.unlock_after_fork();
        }
    }
}
