//! The small-object paths: allocating from a thread's slabs, freeing into
//! them (locally or from another thread), and each slab's life cycle:
//! current, partial, retired when full, abandoned when its thread exits,
//! adopted or released when empty. See `slab.rs` for who may touch what.

use core::ptr::{self, NonNull};
use core::sync::atomic::Ordering;

use super::arena::Arena;
use super::class::CLASSES;
use super::shared::HeapCore;
use super::slab::{self, GROUP, SlabHeader, ThreadCache};
use crate::thread::{self, SHARED};

impl HeapCore {
    /// Allocates one object of `class` for this thread; says whether it is
    /// known to read zero (never used, in units that were zero: it was not
    /// written).
    #[inline]
    pub(super) fn alloc_class(&self, class: usize) -> Option<(NonNull<u8>, bool)> {
        let tag = thread::tag();
        if tag == SHARED {
            return self.alloc_shared(class);
        }
        let cache = self.cache(tag)?;
        // SAFETY: this thread holds `tag`, so it owns the cache.
        unsafe { self.alloc_small(cache, tag as u32, class) }
    }

    #[cold]
    fn alloc_shared(&self, class: usize) -> Option<(NonNull<u8>, bool)> {
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
    ) -> Option<(NonNull<u8>, bool)> {
        // SAFETY: the caller owns the cache and so its current slab.
        unsafe {
            match cache
                .class(class)
                .current
                .as_ref()
                .and_then(|slab| slab.pop_zeroed())
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
    ) -> Option<(NonNull<u8>, bool)> {
        // SAFETY: the caller owns the cache and every slab on its lists.
        unsafe {
            let cc = cache.class(class);
            if let Some(current) = cc.current.as_ref() {
                if current.collect() > 0 {
                    return current.pop_zeroed();
                }
                cc.current = ptr::null_mut();
                current.set_list(slab::NONE);
                if let Some(object) = Self::retire(cache, cc, class, current) {
                    return Some(object);
                }
            }
            loop {
                if let Some(partial) = cc.partial.as_ref() {
                    slab::unlink(&mut cc.partial, partial);
                    partial.collect();
                    if let Some(object) = partial.pop_zeroed() {
                        Self::make_current(cc, partial);
                        return Some(object);
                    }
                    if let Some(object) = Self::retire(cache, cc, class, partial) {
                        return Some(object);
                    }
                    continue;
                }
                // Acquire: pairs with the Release bump in `free_remote`.
                let revived = cache.revived[class].load(Ordering::Acquire);
                if revived != cc.seen {
                    cc.seen = revived;
                    self.revive(cache, cc, class);
                    if !cc.partial.is_null() {
                        continue;
                    }
                }
                let slab = self.new_slab(tag, class)?;
                slab.collect();
                if let Some(object) = slab.pop_zeroed() {
                    Self::make_current(cc, slab);
                    return Some(object);
                }
                // An adopted slab with nothing free yet.
                if let Some(object) = Self::retire(cache, cc, class, slab) {
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

    /// Puts an exhausted slab (on no list) on the retired list, armed (a
    /// remote free that brings its last object back releases it); if
    /// remote frees arrived meanwhile, makes it current and allocates
    /// instead.
    ///
    /// # Safety
    /// The caller owns `cache`, `cc` (its `class`) and `slab`.
    unsafe fn retire(
        cache: &ThreadCache,
        cc: &mut slab::ClassCache,
        class: usize,
        slab: &SlabHeader,
    ) -> Option<(NonNull<u8>, bool)> {
        // SAFETY: the caller owns both; the retired lock is held from the
        // arming on, so a claimer finds the slab on the list.
        unsafe {
            let mut retired = cache.retired.lock();
            if slab.try_retire() {
                slab::push(&mut retired.0[class], slab, slab::RETIRED);
                return None;
            }
            drop(retired);
            slab.collect();
            let object = slab.pop_zeroed();
            debug_assert!(object.is_some(), "remote frees arrived, so one is free");
            if cc.current.is_null() {
                Self::make_current(cc, slab);
            } else {
                slab::push(&mut cc.partial, slab, slab::PARTIAL);
            }
            object
        }
    }

    /// Moves retired slabs that remote frees revived back into use: those
    /// with at most a quarter of their objects still live go to the partial
    /// list, except that of the entirely free ones only one is kept and the
    /// others go back to the arena; the rest are retired again (the next
    /// remote free tells the owner again).
    ///
    /// A thread whose objects other threads free (a producer) would
    /// otherwise take back a slab on its first remote free and allocate
    /// from it while the other thread is still freeing into it, the two
    /// passing its lines and its remote-free word back and forth; and after
    /// a pause it finds many slabs entirely free at once, which it would
    /// keep while other threads take fresh ones.
    ///
    /// # Safety
    /// The caller owns `cache`, `cc` (its `class`) and their slabs.
    unsafe fn revive(&self, cache: &ThreadCache, cc: &mut slab::ClassCache, class: usize) {
        let mut spare = false;
        let mut retired = cache.retired.lock();
        let head = &mut retired.0[class];
        let mut at = *head;
        // SAFETY: the caller owns every slab on the list but those remote
        // frees claimed, which are only looked at and left (`disarm`); we
        // hold the retired lock.
        unsafe {
            while let Some(slab) = at.as_ref() {
                at = slab::next(slab);
                if slab.is_retired() {
                    continue;
                }
                let mut live = slab.live();
                if live > slab.capacity() / 4 {
                    slab.rearm();
                    // A remote free between the count and the rearm saw no
                    // FULL bit and told no one: count again (the load comes
                    // after the rearm's read-modify-write of the same word,
                    // so it sees every push before it; later pushes clear
                    // the bit and tell the owner). Without this, a slab
                    // whose last objects came back in that window would
                    // stay retired, empty, until its owner exits.
                    live = slab.live();
                    if live > slab.capacity() / 4 {
                        continue;
                    }
                }
                if !slab.disarm() {
                    // Emptied by a remote free, which releases it.
                    continue;
                }
                slab::unlink(head, slab);
                if live == 0 {
                    slab.collect();
                    if slab.is_empty() {
                        if spare {
                            self.release_slab(slab);
                            continue;
                        }
                        spare = true;
                    }
                }
                slab::push(&mut cc.partial, slab, slab::PARTIAL);
            }
        }
    }

    /// A slab for the owner `tag`: an abandoned one, else a fresh one (after
    /// reclaiming empty abandoned slabs if the arenas are full).
    fn new_slab(&self, tag: u32, class: usize) -> Option<&SlabHeader> {
        if let Some(slab) = self.adopt(tag, class) {
            return Some(slab);
        }
        let slab = self
            .arenas()
            .find_map(|arena| arena.fresh_slab(class))
            .or_else(|| {
                // The arenas are full: release emptied abandoned slabs, then
                // try again, opening more Blocks if allowed.
                self.reclaim();
                self.take_from_arenas(GROUP, |arena| arena.fresh_slab(class))
            })?;
        self.hold(GROUP);
        // Relaxed: only this thread reads its own tag as "mine"; other
        // threads only need "not theirs", which any value gives them.
        slab.owner.store(tag, Ordering::Relaxed);
        Some(slab)
    }

    /// Takes an abandoned slab of `class`, if any (not one a remote free
    /// claimed: its claimer releases it).
    fn adopt(&self, tag: u32, class: usize) -> Option<&SlabHeader> {
        let mut central = self.central.lock();
        let head = &mut central.abandoned[class];
        let mut at = *head;
        // SAFETY: abandoned slabs belong to the central lock's holder; the
        // slab is handed to `tag` before the lock is released.
        unsafe {
            while let Some(slab) = at.as_ref() {
                at = slab::next(slab);
                if !slab.disarm() {
                    continue;
                }
                slab::unlink(head, slab);
                // Relaxed: as in `new_slab`; the central lock orders the
                // slab's state before the adopter's use of it.
                slab.owner.store(tag, Ordering::Relaxed);
                return Some(slab);
            }
        }
        None
    }

    /// Releases every abandoned slab that remote frees emptied; says whether
    /// there was one. (The remote free that empties an abandoned slab
    /// releases it, so this finds one only in a race with that free.)
    #[cold]
    pub(super) fn reclaim(&self) -> bool {
        let mut central = self.central.lock();
        let mut released = false;
        for head in &mut central.abandoned {
            let mut at = *head;
            // SAFETY: abandoned slabs belong to the central lock's holder.
            unsafe {
                while let Some(slab) = at.as_ref() {
                    at = slab::next(slab);
                    if !slab.disarm() {
                        continue;
                    }
                    slab.collect();
                    if !slab.arm(slab.out()) {
                        slab::unlink(head, slab);
                        self.release_slab(slab);
                        released = true;
                    }
                }
            }
        }
        released
    }

    /// Releases the retired slab of `class` whose last object this thread's
    /// remote free brought back, claiming it (`Remote::Emptied`): takes it
    /// off its owner's retired list, and gives it back to its arena.
    ///
    /// # Safety
    /// This thread claimed the slab: it is empty, on its owner's retired
    /// list, and nobody else revives, abandons or releases it.
    #[cold]
    #[inline(never)]
    unsafe fn release_claimed(&self, class: usize, slab: &SlabHeader) {
        // Relaxed: a claimed slab's owner no longer changes (abandoning and
        // adopting disarm first, which a claim makes fail); the claim
        // happened after the owner stored its tag, in this thread's view
        // (the tag was there before the objects were handed out).
        let owner = slab.owner.load(Ordering::Relaxed) as usize;
        let Some(cache) = self.cache_of(owner) else {
            unreachable!("a retired slab's owner has a cache")
        };
        let mut retired = cache.retired.lock();
        // SAFETY: the caller's contract; the slab is on the retired list we
        // hold the lock of, and ours once off it.
        unsafe {
            slab::unlink(&mut retired.0[class], slab);
            drop(retired);
            slab.collect();
            debug_assert!(slab.is_empty(), "a claimed slab has nothing out");
            self.release_slab(slab);
        }
    }

    /// Releases the abandoned slab of `class` whose last object this
    /// thread's remote free brought back, claiming it (`Remote::Orphaned`).
    ///
    /// # Safety
    /// This thread claimed the slab: it is empty, on the abandoned list, and
    /// nobody else adopts, reclaims or releases it.
    #[cold]
    #[inline(never)]
    unsafe fn release_emptied(&self, class: usize, slab: &SlabHeader) {
        let mut central = self.central.lock();
        // SAFETY: the caller's contract; abandoned slabs belong to the
        // central lock's holder.
        unsafe {
            slab::unlink(&mut central.abandoned[class], slab);
            slab.collect();
            debug_assert!(slab.is_empty(), "a claimed slab has nothing out");
            self.release_slab(slab);
        }
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
        // SAFETY: the caller owns the slab.
        let zero = unsafe { slab.untouched_zero() };
        arena.free_run(arena.unit_of(data), |_| {
            arena.restore_zero(arena.offset(data) / GROUP, zero);
            // No owner: `give` trusts an owner tag to mean a live slab.
            slab.owner.store(0, Ordering::Relaxed);
            slab.kind.store(slab::NOT_SLAB, Ordering::Relaxed);
        });
        self.release(GROUP);
    }

    /// Frees `ptr`, which lies in `arena`.
    ///
    /// # Safety
    /// `ptr` is a live allocation of this heap, not used again.
    #[inline]
    pub(super) unsafe fn free(&self, arena: &Arena, ptr: NonNull<u8>) {
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
        if unsafe { slab.push_local(object) } {
            let Some(cache) = self.cache_of(tag) else {
                unreachable!("a tag that owns a slab has a cache")
            };
            // SAFETY: as above.
            unsafe { self.after_local_free(cache, slab) };
        }
    }

    /// A free emptied a slab that is not current, or landed in a retired one.
    ///
    /// # Safety
    /// The caller owns `cache` and `slab`.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn after_local_free(&self, cache: &ThreadCache, slab: &SlabHeader) {
        // SAFETY: the caller owns the cache and the slab.
        unsafe {
            let class = slab.class.load(Ordering::Relaxed) as usize;
            let cc = cache.class(class);
            if slab.list() == slab::RETIRED {
                let mut retired = cache.retired.lock();
                // Never claimed: this thread just freed one of its objects,
                // which no remote free can then bring back.
                let disarmed = slab.disarm();
                debug_assert!(disarmed, "a slab its owner frees into is claimed");
                if !disarmed {
                    return;
                }
                slab::unlink(&mut retired.0[class], slab);
                drop(retired);
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
        // Read before the push: once pushed, the slab may be released (and
        // its header decommitted by a trim) unless this free claimed it.
        // Relaxed, both: `class` is fixed while the slab lives; `owner`
        // only picks whom to tell (a stale one costs a spurious scan).
        let class = slab.class.load(Ordering::Relaxed) as usize;
        let owner = slab.owner.load(Ordering::Relaxed) as usize;
        // SAFETY: the caller's contract.
        match unsafe { slab.push_remote(object) } {
            slab::Remote::Pushed => {}
            slab::Remote::Revived => {
                // We revived a retired slab: tell its owner.
                if let Some(cache) = self.cache_of(owner).filter(|_| owner != 0) {
                    // Release: pairs with the Acquire load in `alloc_slow`.
                    cache.revived[class].fetch_add(1, Ordering::Release);
                }
            }
            // SAFETY: this free claimed the retired slab.
            slab::Remote::Emptied => unsafe { self.release_claimed(class, slab) },
            // SAFETY: this free claimed the abandoned slab.
            slab::Remote::Orphaned => unsafe { self.release_emptied(class, slab) },
        }
    }

    /// Flushes thread tag `tag`'s cache: every slab it owns goes back to its
    /// arena if empty, else to the abandoned lists.
    ///
    /// # Safety
    /// Called by the thread holding `tag`, as it exits.
    pub(super) unsafe fn flush(&self, tag: usize) {
        let Some(cache) = self.cache_of(tag) else {
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
                let mut retired = cache.retired.lock();
                let head = &mut retired.0[class];
                let mut at = *head;
                while let Some(slab) = at.as_ref() {
                    at = slab::next(slab);
                    // A slab a remote free emptied stays for its claimer to
                    // take off (with this lock).
                    if slab.disarm() {
                        slab::unlink(head, slab);
                        self.abandon(class, slab);
                    }
                }
                drop(retired);
                // Relaxed: the count only has to be current for this thread,
                // whose slabs of the class are all gone now.
                cc.seen = cache.revived[class].load(Ordering::Relaxed);
            }
        }
    }

    /// Hands an exiting thread's slab on: back to its arena if empty, else
    /// to the abandoned list, armed so that the remote free that empties it
    /// releases it (`slab.rs`, *Claims*).
    ///
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
            if slab.arm(slab.out()) {
                slab::push(&mut central.abandoned[class], slab, slab::ABANDONED);
            } else {
                // Its last objects came back since the collect.
                slab.collect();
                self.release_slab(slab);
            }
        }
    }
}
