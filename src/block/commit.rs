//! The commit machine (part of `block`): committing, decommitting,
//! discarding and taking back a Region's pages, and the watchers told of
//! each commit, all under the Region's commit lock.
//!
//! Commits and decommits of one Block are serialized by a commit lock (one
//! of a few striped locks, so that Blocks need no lock of their own at a
//! stable address; `fork` takes them all). Each commit maps the new pages,
//! binds them to the Block's NUMA node if it has one, locks them (or records
//! why not, `pin.rs`), populates them unless prefault is off, and tells
//! every watcher (a device registration covering the Block) before
//! publishing the new committed size, so no allocation can land in pages a
//! registration has not seen. A Block with a watcher refuses to decommit:
//! the device may still use the pages.

use core::cell::Cell;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use super::{COMMIT_STEP, Pinning, Platform, Region, check_fault_in};
use crate::Error;
use crate::lock::{Guard, SpinLock};

/// Who commits: whether the commit may populate its pages from several
/// threads, and whether its error reaches anyone.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Caller {
    /// An explicit open or commit: a large one populates in threads, and
    /// the error is returned to the program, which is told nothing else.
    User,
    /// An allocator growing, possibly inside a global allocator: spawning
    /// threads would allocate, and a failure only makes an allocation fail
    /// (or spill), so a refused required pin is also told on standard
    /// error, once.
    Allocator,
    /// A receiver following a shared Block's owner: one thread, the error
    /// returned.
    Follower,
}

/// Something told about every commit of a Block: a device registration that
/// covers it (see `register.rs`).
#[derive(Clone, Copy)]
pub(crate) struct Watcher {
    /// The registration's state, passed back to `committed`.
    pub(crate) data: *const (),
    /// Registers the newly committed bytes `from..to` of the reservation at
    /// `base`. Its failure leaves the commit in place (undoing it could
    /// unmap pages that other watchers registered); the watcher keeps the
    /// error itself.
    ///
    /// # Safety
    /// Called with the `data` it was registered with, under the commit lock,
    /// for mapped bytes of the Block.
    pub(crate) committed: unsafe fn(data: *const (), base: NonNull<u8>, from: usize, to: usize),
    /// Waits until the registration's device no longer uses memory of the
    /// Block that its owner is about to hand out again ([`Region::reuse`]).
    ///
    /// # Safety
    /// Called with the `data` it was registered with, under the commit lock.
    pub(crate) reused: unsafe fn(data: *const ()),
}

/// What [`Region::watch`] did.
pub(crate) enum Watch {
    /// Added; the committed size at that moment, which the watcher must
    /// cover itself (later commits it is told of).
    Added(usize),
    /// A watcher with the same data was there already.
    Already,
    /// The Block has no room for another watcher.
    Full,
}

/// How many watchers one Block takes (a Heap follows with as many
/// registrations: `heap/shared.rs`).
pub(crate) const WATCHERS: usize = 4;

/// The striped commit locks: a Block uses the one its address picks.
const STRIPES: usize = 16;
static COMMIT_LOCKS: [SpinLock<()>; STRIPES] = [const { SpinLock::new(()) }; STRIPES];

thread_local! {
    /// Whether this thread is inside a commit (a watcher may allocate, and
    /// an allocator it reaches must not commit again on this thread).
    static COMMITTING: Cell<bool> = const { Cell::new(false) };
}

/// Takes every commit lock, for `fork` (see `fork.rs`).
pub(super) fn lock_for_fork() {
    for lock in &COMMIT_LOCKS {
        lock.lock_for_fork();
    }
}

/// Releases what `lock_for_fork` took.
///
/// # Safety
/// As [`SpinLock::unlock_after_fork`].
pub(super) unsafe fn unlock_after_fork() {
    for lock in COMMIT_LOCKS.iter().rev() {
        // SAFETY: the caller's contract.
        unsafe { lock.unlock_after_fork() };
    }
}

/// Proof that this thread holds a Region's commit lock: what the code that
/// changes commits, locks, discards and watchers takes, instead of a comment
/// saying it runs under the lock. Only one exists per Region at a time (the
/// lock is not reentrant), so it may hand out the watchers mutably.
pub(super) struct Committing<'a> {
    pub(super) region: &'a Region,
    _lock: Guard<'a, ()>,
}

impl Committing<'_> {
    /// The registrations told of each commit.
    pub(super) fn watchers(&self) -> &[Option<Watcher>; WATCHERS] {
        // SAFETY: the commit lock is held for as long as `self` lives, and
        // every access to the watchers goes through a `Committing`, of
        // which this is the only one: no `&mut` to them is alive.
        unsafe { &*self.region.watchers.get() }
    }

    fn watchers_mut(&mut self) -> &mut [Option<Watcher>; WATCHERS] {
        // SAFETY: as in `watchers`, and `&mut self` rules out any other
        // borrow of them through this (the only) `Committing`.
        unsafe { &mut *self.region.watchers.get() }
    }

    /// Whether a registration covers the Block (it then keeps its pages).
    pub(super) fn registered(&self) -> bool {
        self.watchers().iter().any(Option::is_some)
    }

    /// The committed size. Relaxed: only holders of the commit lock store
    /// it, and we are one.
    pub(super) fn committed(&self) -> usize {
        self.region.committed.load(Ordering::Relaxed)
    }

    /// The end of the locked prefix. Relaxed: as `committed`.
    pub(super) fn locked(&self) -> usize {
        self.region.locked.load(Ordering::Relaxed)
    }

    /// Moves the end of the locked prefix. Relaxed: as `committed`.
    pub(super) fn set_locked(&self, end: usize) {
        self.region.locked.store(end, Ordering::Relaxed);
    }

    /// Counts `bytes` below the locked prefix's end as locked again
    /// (`relocked`) or not (`unlocked`). Relaxed: as `committed`.
    pub(super) fn note_unlocked(&self, unlocked: usize, relocked: usize) {
        let region = self.region;
        region.unlocked.fetch_add(unlocked, Ordering::Relaxed);
        region.unlocked.fetch_sub(relocked, Ordering::Relaxed);
    }

    /// Counts `added` more discarded bytes, `removed` fewer. Relaxed: as
    /// `committed`.
    fn note_discarded(&self, added: usize, removed: usize) {
        let region = self.region;
        region.discarded.fetch_add(added, Ordering::Relaxed);
        region.discarded.fetch_sub(removed, Ordering::Relaxed);
    }

    /// Maps `..end` (past what is committed, rounded to granules and capped
    /// at the capacity), pins and populates it, tells the watchers and
    /// publishes it.
    fn commit(&mut self, end: usize, caller: Caller) -> Result<(), Error> {
        let region = self.region;
        let from = self.committed();
        let to = end
            .checked_next_multiple_of(region.granule)
            .map_or(region.capacity, |to| to.min(region.capacity));
        if to <= from {
            return Ok(());
        }
        // SAFETY: `from..to` lies in the reservation beyond what is committed.
        unsafe { region.raw.map(region.ptr, from, to)? };
        if let Err(error) = self.pin_and_populate(from, to, caller) {
            // SAFETY: just mapped, and not published: nothing refers to it.
            let _ = unsafe { region.raw.unmap(region.ptr, from, to) };
            return Err(error);
        }
        for watcher in self.watchers().iter().flatten() {
            // SAFETY: registered with this `data`; the commit lock is held;
            // the range is mapped.
            unsafe { (watcher.committed)(watcher.data, region.ptr, from, to) };
        }
        // Release: publishes the mapping to every Acquire load of
        // `committed`, after the watchers saw it.
        region.committed.store(to, Ordering::Release);
        Ok(())
    }
}

impl Region {
    /// Takes the commit lock.
    pub(super) fn committing(&self) -> Committing<'_> {
        Committing {
            region: self,
            _lock: self.commit_lock().lock(),
        }
    }

    /// Commits at least the first `bytes` bytes (rounded up to the granule),
    /// in place: maps, locks as the pinning option says, populates unless
    /// prefault is off, and registers them with every registration covering
    /// the Block. What is committed already stays as it is.
    ///
    /// Errors: more than the capacity ([`Error::Capacity`]), a refused
    /// `mlock` with [`Pinning::Required`] ([`Error::Pin`], and nothing new
    /// stays committed), too few huge pages ([`Error::HugePages`]), a
    /// failed system call, or a commit from inside a registration's own
    /// commit hook on the same thread ([`Error::InvalidArgument`]).
    pub fn commit(&self, bytes: usize) -> Result<(), Error> {
        if bytes > self.capacity {
            return Err(Error::Capacity {
                requested: bytes,
                capacity: self.capacity,
            });
        }
        self.commit_to(bytes, Caller::User)
    }

    /// [`commit`](Region::commit) for allocators: at least `end` bytes, in
    /// steps of [`COMMIT_STEP`] (capped at the capacity), never populating
    /// from other threads. False if `end` is past the capacity or the commit
    /// failed (a refused required pin, too few huge pages, a commit from
    /// inside a commit).
    #[cold]
    pub(crate) fn grow_to(&self, end: usize) -> bool {
        if end > self.capacity {
            return false;
        }
        let step = end.next_multiple_of(COMMIT_STEP).min(self.capacity);
        self.commit_to(step, Caller::Allocator).is_ok()
    }

    pub(super) fn commit_to(&self, end: usize, caller: Caller) -> Result<(), Error> {
        if end <= self.committed() {
            return Ok(());
        }
        if COMMITTING.get() {
            return Err(Error::InvalidArgument {
                reason: "a Block cannot commit from inside a commit on the same thread \
                         (a registration's driver allocating from the allocator it registers)",
            });
        }
        let mut committing = self.committing();
        COMMITTING.set(true);
        let result = committing.commit(end, caller);
        COMMITTING.set(false);
        result
    }

    /// Makes sure the first `end` bytes are committed, growing as
    /// [`grow_to`](Region::grow_to) does if they are not: the committed
    /// size, or `None` if it cannot grow that far. What the allocators call
    /// before they use memory near the committed end.
    #[inline]
    pub(crate) fn ensure_committed(&self, end: usize) -> Option<usize> {
        let committed = self.committed();
        if end <= committed {
            return Some(committed);
        }
        self.grow_to(end).then(|| self.committed())
    }

    /// Decommits everything past the first `keep` bytes (rounded up to the
    /// granule): the pages go back to the system, unlocked, and read as zero
    /// if committed again.
    ///
    /// # Safety
    /// Nothing refers to the bytes past `keep`, and no other thread can come
    /// to (allocators guarantee it for the ranges they give back); none of
    /// them is discarded (else see [`decommit_discarded_to`](Region::decommit_discarded_to)).
    pub(crate) unsafe fn decommit_to(&self, keep: usize) -> Result<(), Error> {
        // SAFETY: the caller's contract; nothing past `keep` is discarded.
        unsafe { self.decommit_discarded_to(keep, |_| {}) }
    }

    /// [`decommit_to`](Region::decommit_to) where ranges past `keep` may be
    /// discarded: once the decommit is certain to go ahead (the Block can
    /// unmap and is not registered), `discarded` is called, under the commit
    /// lock, with a function the caller calls on each such range (`from`,
    /// `to`), which counts it out of [`discarded`](Region::discarded) and
    /// the unlocked bytes. If the decommit is refused, `discarded` is never
    /// called: the caller's own record of its discarded ranges stays true.
    ///
    /// # Safety
    /// As `decommit_to`; the ranges passed to the function were discarded,
    /// not recommitted since, lie past `keep`, and are passed once.
    pub(crate) unsafe fn decommit_discarded_to(
        &self,
        keep: usize,
        discarded: impl FnOnce(&mut dyn FnMut(usize, usize)),
    ) -> Result<(), Error> {
        if !self.raw.can_unmap() {
            return Err(Error::Unsupported {
                what: "decommitting a shared Block, whose pages other mappings may use",
            });
        }
        let committing = self.committing();
        if committing.registered() {
            return Err(Error::Registered);
        }
        let committed = committing.committed();
        let keep = keep
            .checked_next_multiple_of(self.granule)
            .unwrap_or(committed);
        if keep >= committed {
            return Ok(());
        }
        // The decommit goes ahead: count the discarded ranges out first, at
        // the `locked` they were discarded under.
        discarded(&mut |from, to| {
            debug_assert!(keep <= from && from < to && to <= committed);
            let locked = committing.locked();
            committing.note_unlocked(0, to.min(locked).saturating_sub(from));
            committing.note_discarded(0, to - from);
        });
        // Release: no thread may use the range from here (the caller's
        // contract); lower it before the pages go, so that a reader never
        // sees a committed size covering unmapped pages.
        self.committed.store(keep, Ordering::Release);
        // SAFETY: the caller's contract; `keep..committed` is mapped.
        let result = unsafe { self.raw.unmap(self.ptr, keep, committed) };
        committing.set_locked(committing.locked().min(keep));
        // Unlocked bytes past `keep` were discarded ones, counted out above:
        // what is left is below `keep`. Relaxed: under the commit lock, as
        // `committing` proves.
        let unlocked = self.unlocked.load(Ordering::Relaxed);
        self.unlocked.store(unlocked.min(keep), Ordering::Relaxed);
        result
    }

    /// Gives the pages of the committed range `from..to` (granule-aligned)
    /// back to the system, unlocked, without decommitting them: they read as
    /// zero when next touched. [`recommit`](Region::recommit) takes them
    /// back into use.
    ///
    /// Errors: a Block whose memory cannot be discarded (shared, huge pages,
    /// an IOSurface: [`Error::Unsupported`]), or one registered with a device
    /// ([`Error::Registered`]).
    ///
    /// # Safety
    /// Nothing refers to the range, no other thread can come to it, and it
    /// is not discarded already (allocators track which ranges are).
    pub(crate) unsafe fn discard(&self, from: usize, to: usize) -> Result<(), Error> {
        debug_assert!(from < to && to <= self.committed());
        if !self.raw.can_discard() {
            return Err(Error::Unsupported {
                what: "discarding pages of a shared or huge-page Block",
            });
        }
        let committing = self.committing();
        if committing.registered() {
            return Err(Error::Registered);
        }
        // SAFETY: the caller's contract; the range is committed.
        unsafe { self.raw.discard(self.ptr, from, to)? };
        committing.note_discarded(to - from, 0);
        let locked = committing.locked();
        committing.note_unlocked(to.min(locked).saturating_sub(from), 0);
        Ok(())
    }

    /// Takes a range that `discard` gave back into use again: locks what was
    /// locked before (populating it unless prefault is off). With
    /// [`Pinning::Required`] a refused lock is [`Error::Pin`] and the range
    /// stays discarded.
    ///
    /// # Safety
    /// Every byte of `from..to` was discarded and not recommitted since;
    /// nothing else refers to it.
    pub(crate) unsafe fn recommit(&self, from: usize, to: usize) -> Result<(), Error> {
        let committing = self.committing();
        let settings = self.settings;
        // What was locked before the discard: its part below the prefix's end.
        let relock = to.min(committing.locked()).saturating_sub(from);
        // An allocator's own pages: an error reaches no one.
        let pinned = committing.pin(from, from + relock, Caller::Allocator, false)?;
        committing.note_unlocked(0, pinned.locked_to - from);
        if settings.prefault && !(pinned.populated && relock == to - from) {
            // SAFETY: the range is committed (mapped) and ours.
            unsafe { self.raw.populate(self.ptr, from, to)? };
        }
        committing.note_discarded(0, to - from);
        Ok(())
    }

    /// Makes the committed range `from..to` (granule-aligned) read as zero
    /// without writing it and without faulting its pages in: they are given
    /// back to the system ([`discard`](Region::discard)) and the part that
    /// was locked is locked again, on fault. The range stays committed and
    /// in use; only the pages a program touches afterwards come back (as
    /// zero). What an allocator does to zero memory a program may not touch.
    ///
    /// Refused ([`Error::Unsupported`]) where `discard` is (shared, huge
    /// pages, an IOSurface), for a Block that prefaults (its pages would be
    /// faulted straight back in: writing zeros costs less) or that requires
    /// pinning (a lock refused the second time would leave the range
    /// unpinned), and for a registered Block ([`Error::Registered`]: the
    /// device keeps the old pages). Writing the zeros is the caller's
    /// fallback.
    ///
    /// # Safety
    /// The range is committed and not discarded; nothing refers to its
    /// contents any more, and no other thread can come to it while this
    /// runs.
    pub(crate) unsafe fn clear(&self, from: usize, to: usize) -> Result<(), Error> {
        debug_assert!(from < to && to <= self.committed());
        let settings = self.settings;
        if !self.raw.can_discard() || settings.prefault || settings.pinning == Pinning::Required {
            return Err(Error::Unsupported {
                what: "clearing pages of a shared, huge-page, prefaulted or required-pinned Block",
            });
        }
        let committing = self.committing();
        if committing.registered() {
            return Err(Error::Registered);
        }
        // SAFETY: the caller's contract; the range is committed.
        if unsafe { self.raw.drop_pages(self.ptr, from, to)? } {
            return Ok(());
        }
        // SAFETY: as above.
        unsafe { self.raw.discard(self.ptr, from, to)? };
        // What was locked is locked again (on fault: prefault is off here),
        // as the pinning policy says; what the limit refuses is counted
        // unlocked.
        let relock = to.min(committing.locked()).saturating_sub(from);
        let pinned = committing.pin(from, from + relock, Caller::Allocator, false)?;
        committing.note_unlocked(from + relock - pinned.locked_to, 0);
        Ok(())
    }

    /// Maps what the owner of an attached Block's pages committed since this
    /// mapping attached or last followed, as the memfd's size says (whole
    /// granules of it), and returns the committed size. The owner may grow
    /// meanwhile, in this process or another: following never resizes the
    /// memfd, so it never races the owner, and maps what was there when it
    /// looked. For the owner's own Block, and a private one, it changes
    /// nothing.
    ///
    /// The size comes from another process: what pinning or prefaulting the
    /// new part would fault in is checked against the memory available
    /// first ([`Error::OutOfMemory`]). When the owner has grown past the
    /// capacity this mapping reserved ([`BlockOptions::capacity`](crate::BlockOptions::capacity) at
    /// attach), everything up to the capacity is mapped and the answer is
    /// [`Error::Capacity`], whose `requested` is the owner's size: to see
    /// the rest, attach again with a larger capacity.
    pub fn follow(&self) -> Result<usize, Error> {
        let Some(shared) = self.raw.shared_size()? else {
            return Ok(self.committed());
        };
        let size = shared.size - shared.size % self.granule;
        let to = size.min(self.capacity);
        let committed = self.committed();
        let settings = self.settings;
        if to > committed && (settings.prefault || settings.pinning != Pinning::Off) {
            check_fault_in((to - committed).saturating_sub(shared.resident))?;
        }
        self.commit_to(to, Caller::Follower)?;
        if size > self.capacity {
            return Err(Error::Capacity {
                requested: size,
                capacity: self.capacity,
            });
        }
        Ok(self.committed())
    }

    fn commit_lock(&self) -> &'static SpinLock<()> {
        // Fibonacci hashing of the address above the smallest granule: the
        // golden ratio's fraction, in as many bits as an address has.
        const GOLDEN: usize = (0x9E37_79B9_7F4A_7C15_u64 >> (64 - usize::BITS)) as usize;
        let hash = (self.ptr.as_ptr().addr() >> 12).wrapping_mul(GOLDEN);
        &COMMIT_LOCKS[hash >> (usize::BITS - STRIPES.trailing_zeros())]
    }

    /// Tells every watcher that memory of the Block is about to be handed
    /// out again (a Tape's clear), and returns once each has waited for its
    /// device to stop using it.
    pub(crate) fn reuse(&self) {
        let committing = self.committing();
        for watcher in committing.watchers().iter().flatten() {
            // SAFETY: registered with this `data`; the commit lock is held.
            unsafe { (watcher.reused)(watcher.data) };
        }
    }

    /// Adds a watcher, told of every commit from now on.
    pub(crate) fn watch(&self, watcher: Watcher) -> Watch {
        let mut committing = self.committing();
        let committed = committing.committed();
        let slots = committing.watchers_mut();
        if slots
            .iter()
            .flatten()
            .any(|watching| watching.data == watcher.data)
        {
            return Watch::Already;
        }
        let Some(free) = slots.iter_mut().find(|slot| slot.is_none()) else {
            return Watch::Full;
        };
        *free = Some(watcher);
        Watch::Added(committed)
    }

    /// Removes the watcher added by `watch` with this `data`; after this
    /// returns, it is not called again.
    pub(crate) fn unwatch(&self, data: *const ()) {
        let mut committing = self.committing();
        if let Some(slot) = committing
            .watchers_mut()
            .iter_mut()
            .find(|slot| slot.is_some_and(|watcher| watcher.data == data))
        {
            *slot = None;
        }
    }
}
