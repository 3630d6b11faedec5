//! Slabs (64 KiB groups of one size class) and the per-thread caches that own
//! them.
//!
//! # Ownership
//!
//! Each slab has one owner: the thread cache whose tag (thread index + 1) is
//! in `owner`, or nobody (0) when it is abandoned. Only the owner touches the
//! slab's [`Local`] state: a thread for its own index, the holder of the
//! heap's shared lock for the shared slot, the holder of the central lock for
//! abandoned slabs. Ownership moves only through the central lock (abandon,
//! adopt), which orders the `Local` writes of the old owner before the reads
//! of the new one; or, for a slab emptied while retired or abandoned, to the
//! thread whose free emptied it (*Claims*, below).
//!
//! A slab's list links ([`Links`]) belong to whoever owns the list it is
//! on: the owner for its current and partial lists, the holder of the
//! cache's retired lock for a retired list (the owner, or a claimer taking
//! its slab off), the holder of the central lock for the abandoned lists.
//!
//! # Free lists
//!
//! Freed objects are linked through their first four bytes, as offsets inside
//! the slab (every class is a multiple of 4 bytes, so links are aligned):
//!
//! - the owner pushes and pops its `free` list with plain reads and writes
//!   (LIFO: the object freed last, still in cache, is handed out next);
//! - other threads push onto `thread_free`, a lock-free stack in one atomic
//!   word, which the owner takes whole (`swap`), so no ABA is possible.
//!
//! `thread_free` also carries the `FULL` bit, set by the owner when it retires
//! a slab with nothing left to hand out. The remote free that clears it (with
//! the same compare-exchange that pushes the object) tells the owner through
//! its cache's `revived` counter for that class, and the owner moves the slab
//! back into use the next time it runs short, once at most a quarter of its
//! objects are still live (else it sets the bit again, `rearm`, and waits
//! for the next remote free).
//!
//! # Claims
//!
//! A slab its owner does not allocate from, and whose objects other threads
//! free, would otherwise keep their memory until the owner comes back: a
//! retired slab of a thread that has stopped allocating (a producer that
//! handed everything over and now waits), or a slab whose owner's thread
//! exited with objects still out (abandoned). Such a slab is *armed*: its
//! `thread_free` word gets the `ARMED` bit (and `ORPHAN` for an abandoned
//! one), with a Release that publishes the slab's `used` count. While it is
//! armed its owner never hands an object out of it, so `used` only falls
//! (the owner may still free its own objects into a retired slab). A remote
//! free that sees the bit reads `used` (after an Acquire fence: a stale
//! value can only be too high) and, in the same compare-exchange that
//! pushes its object, sets `CLAIMED` if the pending count now equals it:
//! every object is back, nobody else can reach the slab's `Local` any more,
//! and that thread takes it off its list (under the cache's retired lock,
//! or the central lock for an abandoned slab) and releases it to its arena.
//! Whoever takes an armed slab back into use (the owner reviving a retired
//! slab, a thread adopting an abandoned one, an exiting thread abandoning
//! its retired ones) first disarms it, with a compare-exchange (Acquire)
//! that fails on a claimed slab, which is then left to its claimer: a slab
//! is never both taken back and released.
//!
//! # Catching misuse
//!
//! A freed object also carries a mark in its second word (bytes 8..16): its
//! address mixed with a per-process secret, which live data matches by
//! accident with odds of 2^-64. Handing an object out clears the mark. A
//! free that finds the mark already there is a double free: the owner
//! confirms it by looking for the object on its free lists, a remote free
//! takes the mark's word for it; either way the process aborts with a
//! message (`misuse.rs`) before the object can be handed out twice. A free
//! of an address that is not the start of an object of the slab (checked
//! with a multiplication by the class's reciprocal), or of one never handed
//! out, aborts the same way. These checks cost a load, a multiplication and
//! a store on each path (`benches/README.md` has the figures).

use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering, fence};

use super::class::{self, CLASSES};
use super::runs::{UNIT, UNIT_SHIFT};
use crate::lock::SpinLock;
use crate::misuse;

/// Bytes per slab; slabs start at multiples of this inside an arena.
pub(crate) const GROUP: usize = 64 << 10;

/// No object (end of a free list).
const NIL: u32 = u32::MAX;
/// `thread_free` (bits 0-31: the first object's offset, or NIL): the owner
/// retired the slab as full.
const FULL: u64 = 1 << 32;
/// `thread_free`: the slab is armed (module documentation, *Claims*).
const ARMED: u64 = 1 << 33;
/// `thread_free`, bits 34-47: how many objects are on the list.
const PENDING_SHIFT: u32 = 34;
/// The pending count's bits (a slab holds at most `GROUP / 16` = 4096
/// objects).
const COUNT_MASK: u64 = (1 << 14) - 1;
/// `thread_free`: a remote free brought an armed slab's last object back,
/// and releases the slab.
const CLAIMED: u64 = 1 << 62;
/// `thread_free`: the armed slab is abandoned (else it is retired).
const ORPHAN: u64 = 1 << 63;
/// `thread_free` with no remote frees and not full.
const EMPTY: u64 = NIL as u64;

/// The pending count of a `thread_free` word.
#[inline(always)]
fn pending(word: u64) -> u32 {
    ((word >> PENDING_SHIFT) & COUNT_MASK) as u32
}

/// What a remote free did besides pushing its object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Remote {
    /// Nothing more.
    Pushed,
    /// It cleared the `FULL` bit of a retired slab: its owner is to be told.
    Revived,
    /// It brought the last object of a retired slab back and claimed it:
    /// the caller takes it off its owner's retired list and releases it.
    Emptied,
    /// The same, for an abandoned slab (off the abandoned list).
    Orphaned,
}

/// Which owner list a slab is on (`Local::list`).
pub(crate) const NONE: u8 = 0;
pub(crate) const CURRENT: u8 = 1;
pub(crate) const PARTIAL: u8 = 2;
pub(crate) const RETIRED: u8 = 3;
pub(crate) const ABANDONED: u8 = 4;

/// `SlabHeader::kind`.
pub(crate) const NOT_SLAB: u8 = 0;
pub(crate) const SLAB: u8 = 1;

/// The header of one 64 KiB group of an arena. Lives out of band, in the
/// arena's header array, whether or not the group is a slab right now.
#[repr(C, align(64))]
pub(crate) struct SlabHeader {
    /// `SLAB` while the group is a slab. Written under the arena lock before
    /// any object of the slab exists; read by frees, which happen after that.
    pub(crate) kind: AtomicU8,
    /// The size class; fixed while the group is a slab.
    pub(crate) class: AtomicU8,
    /// The owner's tag, or 0 when abandoned or not a slab.
    pub(crate) owner: AtomicU32,
    /// Remote frees, in one word: the first object's offset (bits 0-31, NIL
    /// if none), the `FULL` bit (32), the `ARMED` bit (33), how many objects
    /// are on the list (bits 34-47), the `CLAIMED` (62) and `ORPHAN` (63)
    /// bits.
    thread_free: AtomicU64,
    /// Objects handed out and not yet back on the owner's list, in units of
    /// `ONE` (bits 2-31), with `CURRENT_BIT` and `RETIRED_BIT`, which mirror
    /// `Local::list`, in bits 0-1; a retired slab counts from its
    /// `retire_base` (`encode`); stored less `ATTENTION`. Written only by
    /// the owner (a load and a store), read by `stats` and by remote frees
    /// into an armed slab. The one check after a free is then the sign of
    /// the result: as an `i32` the word is below `ATTENTION` (the stored
    /// word below zero) only for an empty slab that is neither current nor
    /// retired, and for a retired slab that has had a `RETIRE_SHARE`th of
    /// its objects freed, which goes back into use (a slab moved back on its
    /// first free would be current for one allocation, then retired again).
    used: AtomicU32,
    /// `ceil(2^32 / size)`: `offset * magic` (wrapping, in 32 bits) is
    /// below `magic` exactly when `offset` is a multiple of `size`, for
    /// every offset in a group (Lemire, Kaser and Kurz's divisibility test:
    /// offsets below 2^16, sizes up to 2^15; a test checks every case).
    /// Written with `class`, before any object of the slab exists.
    magic: AtomicU32,
    local: UnsafeCell<Local>,
    links: UnsafeCell<Links>,
}

/// The per-process secret in freed objects' marks; 0 until the first heap
/// opens ([`init_secret`]).
static SECRET: AtomicU64 = AtomicU64::new(0);

/// Sets the secret, once, before the first heap hands out an object.
pub(crate) fn init_secret() {
    // Relaxed: any thread that stores, stores a value it made itself; every
    // object a heap hands out is handed out after its own `create` called
    // this, so its marks use a nonzero secret from then on, and a free's
    // check only compares with what was written.
    if SECRET.load(Ordering::Relaxed) == 0 {
        let _ = SECRET.compare_exchange(
            0,
            crate::sys::random_seed(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

/// The secret, once set (`init_secret`): what `push_local` takes. The
/// `Heap` keeps a copy for its free path, which saves it a load.
#[inline]
pub(crate) fn secret() -> u64 {
    // Relaxed: see `init_secret`.
    SECRET.load(Ordering::Relaxed)
}

/// The mark a freed `object` carries in its second word.
#[inline(always)]
pub(super) fn mark(object: NonNull<u8>) -> u64 {
    object.as_ptr().addr() as u64 ^ secret()
}

/// The second word of `object` (objects are at least 16 bytes; classes of
/// 20 and 28 bytes leave it only 4-aligned, hence unaligned access).
#[inline(always)]
fn mark_word(object: NonNull<u8>) -> *mut u64 {
    object.as_ptr().wrapping_add(8).cast::<u64>()
}

/// The owner's state of a slab.
pub(crate) struct Local {
    /// The group's first byte (with the Block's provenance).
    pub(crate) data: *mut u8,
    /// Offset of the first object of the owner's free list, or NIL.
    free: u32,
    /// Offset of the first never-used object.
    bump: u32,
    pub(crate) size: u32,
    /// Which owner list the slab is on; change it with `set_list`.
    list: u8,
    /// The group's units that read zero when the slab was made (the
    /// arena's zero bits): never-used objects lying wholly in them are zero.
    zero: u16,
}

/// A slab's links on the list it is on (module documentation: who may
/// touch them).
pub(crate) struct Links {
    pub(crate) next: *mut SlabHeader,
    pub(crate) prev: *mut SlabHeader,
}

/// `SlabHeader::used`: the slab is its class's current one.
const CURRENT_BIT: u32 = 2;
/// `SlabHeader::used`: the slab is on its owner's retired list.
const RETIRED_BIT: u32 = 1;
/// `SlabHeader::used`: one object handed out.
const ONE: u32 = 4;
/// `used` words (as `i32`) below this need the owner's attention after a
/// free; the word is stored less this, so that the test is a sign.
const ATTENTION: u32 = 2;
/// A retired slab goes back into use once this share of its objects (at
/// least one) has been freed.
const RETIRE_SHARE: u32 = 8;

/// The count from which a retired slab of `size`-byte objects counts in
/// `used`: it needs attention when its count falls to this.
#[inline]
fn retire_base(size: u32) -> u32 {
    retire_base_of(GROUP as u32 / size)
}

/// `retire_base` from the slab's capacity.
#[inline]
fn retire_base_of(capacity: u32) -> u32 {
    capacity - (capacity / RETIRE_SHARE).max(1)
}

/// The `used` word (as stored) of a slab on `list` with `count` objects
/// handed out.
#[inline]
fn encode(count: u32, list: u8, size: u32) -> u32 {
    let word = match list {
        CURRENT => (count * ONE) | CURRENT_BIT,
        // Wrapping: collecting remote frees into a retired slab may take it
        // below its base (`decode` reads the word as signed).
        RETIRED => count.wrapping_sub(retire_base(size)).wrapping_mul(ONE) | RETIRED_BIT,
        _ => count * ONE,
    };
    word.wrapping_sub(ATTENTION)
}

/// The count of objects handed out that a stored `used` word holds.
#[inline]
fn decode(stored: u32, size: u32) -> u32 {
    decode_with(stored, || retire_base(size))
}

/// `decode`, with the retired base computed only when needed.
#[inline]
fn decode_with(stored: u32, base: impl FnOnce() -> u32) -> u32 {
    let word = stored.wrapping_add(ATTENTION);
    let count = ((word as i32) >> 2) as u32;
    if word & RETIRED_BIT != 0 {
        count.wrapping_add(base())
    } else {
        count
    }
}

/// `thread_free`: one more object on the list.
const ONE_PENDING: u64 = 1 << PENDING_SHIFT;

// SAFETY: the atomics are shared; `Local` is reached only by the owner (see
// the module documentation), and its pointers point into the heap's Blocks.
unsafe impl Sync for SlabHeader {}

impl SlabHeader {
    /// Makes this (unused) group a slab of `class` starting at `data`,
    /// whose units in `zero` read zero.
    ///
    /// # Safety
    /// The caller just took the group at `data` from the arena's runs, and
    /// no object of it exists yet; the units in `zero` read zero.
    pub(crate) unsafe fn init(&self, data: *mut u8, class: usize, zero: u16) {
        // SAFETY: no other thread can reach a group that is not a slab yet.
        unsafe {
            *self.local.get() = Local {
                data,
                free: NIL,
                bump: 0,
                size: class::size(class) as u32,
                list: NONE,
                zero,
            };
            *self.links.get() = Links {
                next: ptr::null_mut(),
                prev: ptr::null_mut(),
            };
        }
        // Relaxed, all six: the slab reaches its owner's cache, and its
        // objects other threads, only through the owner's later stores and
        // the program's own synchronization, which order these stores before
        // any free.
        self.thread_free.store(EMPTY, Ordering::Relaxed);
        self.used.store(
            encode(0, NONE, class::size(class) as u32),
            Ordering::Relaxed,
        );
        self.owner.store(0, Ordering::Relaxed);
        let magic = (1u64 << 32).div_ceil(class::size(class) as u64) as u32;
        self.magic.store(magic, Ordering::Relaxed);
        self.class.store(class as u8, Ordering::Relaxed);
        self.kind.store(SLAB, Ordering::Relaxed);
    }

    /// Checks that `offset` (inside the group) starts an object of this
    /// slab; aborts if not.
    #[inline(always)]
    fn check_start(&self, object: NonNull<u8>, offset: u32) {
        // Relaxed: written before any object of the slab was handed out,
        // which happened-before this free.
        let magic = self.magic.load(Ordering::Relaxed);
        if !starts_object(offset, magic) {
            not_an_object(object);
        }
    }

    /// The owner's state.
    ///
    /// # Safety
    /// The caller owns the slab (module documentation) and holds no other
    /// reference to its `Local`.
    #[inline]
    #[expect(
        clippy::mut_from_ref,
        reason = "ownership, not the borrow, makes this unique"
    )]
    pub(crate) unsafe fn local(&self) -> &mut Local {
        // SAFETY: the caller's contract.
        unsafe { &mut *self.local.get() }
    }

    /// The slab's list links.
    ///
    /// # Safety
    /// The caller owns the list the slab is on (module documentation), or
    /// the slab if it is on none, and holds no other reference to them.
    #[inline]
    #[expect(
        clippy::mut_from_ref,
        reason = "ownership of the list, not the borrow, makes this unique"
    )]
    pub(crate) unsafe fn links(&self) -> &mut Links {
        // SAFETY: the caller's contract.
        unsafe { &mut *self.links.get() }
    }

    /// Hands out an object: from the free list, else a never-used one.
    ///
    /// # Safety
    /// The caller owns the slab.
    #[inline]
    pub(crate) unsafe fn pop(&self) -> Option<NonNull<u8>> {
        // SAFETY: the caller owns the slab.
        let local = unsafe { self.local() };
        // Offsets are below `GROUP` (2^16) and NIL is `u32::MAX`: a sign
        // test tells them apart.
        if local.free as i32 >= 0 {
            // SAFETY: `free` is the offset of a free object inside the group,
            // whose first four bytes hold the next link (u32-aligned: classes
            // are multiples of 4 bytes and the group is 64 KiB-aligned), and
            // whose second word holds its mark, cleared as it goes out.
            unsafe {
                let object = local.data.add(local.free as usize);
                local.free = object.cast::<u32>().read();
                object.add(8).cast::<u64>().write_unaligned(0);
                self.add_used(1);
                return Some(NonNull::new_unchecked(object));
            }
        }
        if (local.bump + local.size) as usize <= GROUP {
            // SAFETY: `bump + size <= GROUP`: a never-used object inside the
            // group. Its bytes may be left from the group's earlier life (a
            // mark among them): clear the mark's word.
            unsafe {
                let object = local.data.add(local.bump as usize);
                local.bump += local.size;
                object.add(8).cast::<u64>().write_unaligned(0);
                self.add_used(1);
                return Some(NonNull::new_unchecked(object));
            }
        }
        None
    }

    /// As [`pop`](SlabHeader::pop), for a zeroed allocation: also says
    /// whether the object is known to read zero (never used, in units that
    /// were zero when the slab was made), in which case it is not written
    /// at all, its mark's word included, so that its pages stay untouched.
    ///
    /// # Safety
    /// The caller owns the slab.
    #[inline]
    pub(crate) unsafe fn pop_zeroed(&self) -> Option<(NonNull<u8>, bool)> {
        // SAFETY: the caller owns the slab.
        let local = unsafe { self.local() };
        if local.free == NIL && (local.bump + local.size) as usize <= GROUP {
            let (first, last) = (
                local.bump >> UNIT_SHIFT,
                (local.bump + local.size - 1) >> UNIT_SHIFT,
            );
            let span = ((2u32 << last) - (1u32 << first)) as u16;
            if local.zero & span == span {
                // SAFETY: `bump + size <= GROUP`: a never-used object inside
                // the group, in units that read zero and that nothing wrote
                // since (only objects below `bump` are ever written).
                unsafe {
                    let object = local.data.add(local.bump as usize);
                    local.bump += local.size;
                    self.add_used(1);
                    return Some((NonNull::new_unchecked(object), true));
                }
            }
        }
        // SAFETY: the caller owns the slab.
        unsafe { self.pop() }.map(|object| (object, false))
    }

    /// The units of the group that read zero now: those that did when the
    /// slab was made and that lie wholly past every object it handed out.
    /// What a released slab gives back to the arena's zero bits.
    ///
    /// # Safety
    /// The caller owns the slab.
    pub(crate) unsafe fn untouched_zero(&self) -> u16 {
        // SAFETY: the caller owns the slab.
        let local = unsafe { self.local() };
        let used_units = local.bump.div_ceil(UNIT as u32);
        // `used_units <= 16`: below it, every unit was written (or may be).
        local.zero & !(((1u32 << used_units) - 1) as u16)
    }

    /// Adds `delta` (wrapping) to the count of objects handed out (the owner
    /// only); returns the new `used` word.
    #[inline]
    fn add_used(&self, delta: u32) -> u32 {
        // Relaxed load and store: only the owner writes; `stats` reads.
        let used = self
            .used
            .load(Ordering::Relaxed)
            .wrapping_add(delta.wrapping_mul(ONE));
        self.used.store(used, Ordering::Relaxed);
        used
    }

    /// Objects handed out and not yet given back (remote frees still on
    /// `thread_free` count as given back). A snapshot when not the owner.
    pub(crate) fn live(&self) -> u32 {
        // Relaxed: a statistic; `class` is fixed while the group is a slab.
        let size = class::size(self.class.load(Ordering::Relaxed) as usize) as u32;
        let used = decode(self.used.load(Ordering::Relaxed), size);
        let pending = pending(self.thread_free.load(Ordering::Relaxed));
        used.saturating_sub(pending)
    }

    /// Objects handed out and not back on the owner's list (remote frees
    /// not yet collected count as out).
    ///
    /// # Safety
    /// The caller owns the slab.
    pub(crate) unsafe fn out(&self) -> u32 {
        // SAFETY: the caller owns the slab.
        let size = unsafe { self.local().size };
        // Relaxed: only the owner, the caller, writes `used`.
        decode(self.used.load(Ordering::Relaxed), size)
    }

    /// Whether the owner has nothing handed out (remote frees collected).
    ///
    /// # Safety
    /// The caller owns the slab.
    pub(crate) unsafe fn is_empty(&self) -> bool {
        // SAFETY: the caller owns the slab.
        let size = unsafe { self.local().size };
        // Relaxed: only the owner, the caller, writes `used`.
        decode(self.used.load(Ordering::Relaxed), size) == 0
    }

    /// Takes back an object on the owner's free list. Returns whether the
    /// slab needs attention: it emptied and is neither current nor retired,
    /// or it is retired and has had enough of its objects freed to go back
    /// into use (`SlabHeader::used`).
    ///
    /// # Safety
    /// The caller owns the slab; `object` was handed out by it and is not used
    /// again.
    /// Aborts, with a message, if `object` is not the start of an object
    /// this slab handed out, or was freed already.
    #[inline]
    pub(crate) unsafe fn push_local(&self, object: NonNull<u8>) -> bool {
        // SAFETY: the caller's contract.
        unsafe {
            match self.try_push_local(object, secret()) {
                Some(attention) => attention,
                None => self.push_local_marked(object),
            }
        }
    }

    /// `push_local` for the fast path: `None` (and nothing done) when the
    /// object carries a freed object's mark, for the caller to finish with
    /// `push_local_marked` out of line. Split so that every call the free
    /// fast path makes is its last act, and it keeps nothing in registers
    /// that a call must preserve.
    ///
    /// # Safety
    /// As `push_local`; `secret` is [`secret()`] (callers keep a copy).
    #[inline(always)]
    pub(crate) unsafe fn try_push_local(&self, object: NonNull<u8>, secret: u64) -> Option<bool> {
        debug_assert_eq!(secret, self::secret());
        let offset = (object.as_ptr().addr() & (GROUP - 1)) as u32;
        self.check_start(object, offset);
        // SAFETY: the caller owns the slab.
        if offset >= unsafe { self.local().bump } {
            not_an_object(object);
        }
        let mark = object.as_ptr().addr() as u64 ^ secret;
        // SAFETY: the object is inside the group, at an object's start: its
        // second word is read unaligned.
        if unsafe { mark_word(object).read_unaligned() } == mark {
            return None;
        }
        // SAFETY: the caller's contract; `offset` starts an object.
        Some(unsafe { self.push_checked(object, offset, mark) })
    }

    /// The rest of `push_local` for an object that carries a freed object's
    /// mark: aborts if it is a double free, else pushes it.
    ///
    /// # Safety
    /// As `push_local`, for an object `try_push_local` returned `None` for.
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn push_local_marked(&self, object: NonNull<u8>) -> bool {
        let offset = (object.as_ptr().addr() & (GROUP - 1)) as u32;
        // SAFETY: the caller's contract.
        unsafe {
            self.confirm_double_free(object, offset);
            self.push_checked(object, offset, mark(object))
        }
    }

    /// Pushes `object`, at `offset`, checked, marking it with `mark`.
    ///
    /// # Safety
    /// As `push_local`; the checks passed.
    #[inline(always)]
    unsafe fn push_checked(&self, object: NonNull<u8>, offset: u32, mark: u64) -> bool {
        // SAFETY: the object is the caller's to overwrite; its first word is
        // u32-aligned, its second written unaligned. The caller owns the
        // slab, and no other borrow of its `Local` is alive.
        unsafe {
            mark_word(object).write_unaligned(mark);
            let local = self.local();
            object.cast::<u32>().write(local.free);
            local.free = offset;
        }
        (self.add_used(u32::MAX) as i32) < 0
    }

    /// `object` carries a freed object's mark: a double free if the object
    /// is on the slab's free lists; aborts then. Otherwise its live data
    /// happened to match, and the free goes on.
    ///
    /// # Safety
    /// The caller owns the slab.
    #[cold]
    #[inline(never)]
    unsafe fn confirm_double_free(&self, object: NonNull<u8>, offset: u32) {
        // SAFETY: the caller owns the slab: it may collect the remote frees
        // and walk its own list, whose links are offsets of free objects.
        unsafe {
            self.collect();
            let local = self.local();
            let mut at = local.free;
            let mut steps = 0;
            while at != NIL && steps <= GROUP {
                if at == offset {
                    double_free(object);
                }
                at = local.data.add(at as usize).cast::<u32>().read();
                steps += 1;
            }
        }
    }

    /// Which owner list the slab is on.
    ///
    /// # Safety
    /// The caller owns the slab.
    pub(crate) unsafe fn list(&self) -> u8 {
        // SAFETY: the caller's contract.
        unsafe { self.local().list }
    }

    /// Records which owner list the slab is on (and the flags in `used`).
    ///
    /// # Safety
    /// The caller owns the slab.
    pub(crate) unsafe fn set_list(&self, list: u8) {
        // SAFETY: the caller's contract.
        let local = unsafe { self.local() };
        local.list = list;
        // Relaxed: as in `add_used`.
        let count = decode(self.used.load(Ordering::Relaxed), local.size);
        self.used
            .store(encode(count, list, local.size), Ordering::Relaxed);
    }

    /// Takes back an object from a thread that does not own the slab.
    /// Returns what else the free did: revived a slab retired as full (the
    /// caller tells the owner), or emptied an abandoned one (the caller
    /// releases it; see the module documentation).
    ///
    /// # Safety
    /// `object` was handed out by this slab and is not used again.
    ///
    /// Aborts, with a message, if `object` is not the start of an object of
    /// the slab, or carries a freed object's mark (the owner's lists cannot
    /// be walked from here, so the mark's 2^-64 odds decide).
    #[inline]
    pub(crate) unsafe fn push_remote(&self, object: NonNull<u8>) -> Remote {
        let offset = (object.as_ptr().addr() & (GROUP - 1)) as u64;
        self.check_start(object, offset as u32);
        let mark = mark(object);
        // SAFETY: the object is the caller's to read and overwrite.
        unsafe {
            if mark_word(object).read_unaligned() == mark {
                double_free(object);
            }
            mark_word(object).write_unaligned(mark);
        }
        // Relaxed: the compare-exchange below checks the value.
        let mut old = self.thread_free.load(Ordering::Relaxed);
        loop {
            // SAFETY: the object is ours to overwrite and u32-aligned.
            unsafe { object.cast::<u32>().write(old as u32) };
            // One more pending, this object first, and the FULL bit dropped.
            let mut new = ((old & !(FULL | u64::from(NIL))) + ONE_PENDING) | offset;
            // The last object out of an armed slab: claim it.
            let emptied = old & ARMED != 0 && self.armed_out() == pending(new);
            if emptied {
                new |= CLAIMED;
            }
            // Release: pairs with the Acquire swap in `collect`, so the link
            // (and the caller's last writes to the object) are visible to the
            // owner that takes the list.
            match self.thread_free.compare_exchange_weak(
                old,
                new,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) if emptied && old & ORPHAN != 0 => return Remote::Orphaned,
                Ok(_) if emptied => return Remote::Emptied,
                Ok(_) if old & FULL != 0 => return Remote::Revived,
                Ok(_) => return Remote::Pushed,
                Err(seen) => old = seen,
            }
        }
    }

    /// Moves the remote frees onto the owner's list (and clears `FULL`, and
    /// an abandoned slab's arming); returns how many there were.
    ///
    /// # Safety
    /// The caller owns the slab.
    pub(crate) unsafe fn collect(&self) -> u32 {
        // Acquire: pairs with the Release compare-exchange of every
        // `push_remote` whose object is on the list we take.
        let taken = self.thread_free.swap(EMPTY, Ordering::Acquire);
        let first = taken as u32;
        if first == NIL {
            return 0;
        }
        let count = pending(taken);
        // SAFETY: the caller owns the slab.
        let local = unsafe { self.local() };
        if local.free != NIL {
            // Splice the taken list in front of `free`: find its last object.
            let mut last = first;
            for _ in 1..count {
                // SAFETY: every offset on the list is a freed object.
                last = unsafe { local.data.add(last as usize).cast::<u32>().read() };
            }
            // SAFETY: as above.
            unsafe {
                local
                    .data
                    .add(last as usize)
                    .cast::<u32>()
                    .write(local.free)
            };
        }
        local.free = first;
        self.add_used(count.wrapping_neg());
        count
    }

    /// The objects out of an armed slab, as a remote free that saw the
    /// `ARMED` bit reads them: from `used`, which only falls while the slab
    /// is armed (its owner may free into it, never allocate from it: that
    /// needs `disarm` first). A stale read is too high, never too low: the
    /// fence pairs with the Release arming (`try_retire`, `arm`), after which
    /// `used` held the count at arming or less; a count written after a
    /// later `disarm` is higher, or its compare-exchange fails our free's.
    #[inline]
    fn armed_out(&self) -> u32 {
        fence(Ordering::Acquire);
        // Relaxed, both: ordered by the fence; `magic` is fixed while the
        // group is a slab.
        let used = self.used.load(Ordering::Relaxed);
        // The capacity, `GROUP / size`, is `magic >> 16` (`magic` is
        // `ceil(2^32 / size)`; a test checks every class).
        let magic = self.magic.load(Ordering::Relaxed);
        decode_with(used, || retire_base_of(magic >> 16))
    }

    /// Retires the slab as full unless remote frees are waiting, arming it
    /// (module documentation, *Claims*).
    ///
    /// # Safety
    /// The caller owns the slab, which has nothing left to hand out (its
    /// `used` counts every object out).
    pub(crate) unsafe fn try_retire(&self) -> bool {
        // Release: publishes `used` to the remote frees that see the bit
        // (`armed_out`). Relaxed on failure: nothing changes.
        self.thread_free
            .compare_exchange(
                EMPTY,
                EMPTY | FULL | ARMED,
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Arms the abandoned slab (module documentation, *Claims*), which has
    /// `out` objects out (`SlabHeader::out`, after a `collect`): the remote
    /// free that brings the last back claims it. False if they are all back
    /// already: the caller releases it.
    ///
    /// # Safety
    /// The caller holds the central lock and owns the slab through it, on
    /// the abandoned list (`used` says so) or about to put it there; it is
    /// not armed.
    pub(crate) unsafe fn arm(&self, out: u32) -> bool {
        // Relaxed: the compare-exchange checks the value.
        let mut old = self.thread_free.load(Ordering::Relaxed);
        loop {
            debug_assert_eq!(old & (ARMED | CLAIMED | FULL), 0);
            if pending(old) == out {
                return false;
            }
            // Release: as in `try_retire`. Relaxed on failure: we retry.
            match self.thread_free.compare_exchange_weak(
                old,
                old | ARMED | ORPHAN,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => old = seen,
            }
        }
    }

    /// Disarms an armed slab before it is taken back into use (adopted,
    /// reclaimed, abandoned, or revived by its owner), and clears `FULL`: no
    /// remote free claims it from now on. False if one did already: the
    /// slab is empty and its claimer is about to take it off its list and
    /// release it (leave it be).
    ///
    /// # Safety
    /// The caller owns the list the slab is on (the abandoned list, or the
    /// retired list under the cache's retired lock).
    pub(crate) unsafe fn disarm(&self) -> bool {
        // Relaxed: the compare-exchange checks the value.
        let mut old = self.thread_free.load(Ordering::Relaxed);
        loop {
            if old & CLAIMED != 0 {
                return false;
            }
            // Acquire: pairs with the Release push of every remote free
            // before it, so that none of them reads a `used` we write after
            // this (`armed_out`). Relaxed on failure: we retry.
            match self.thread_free.compare_exchange_weak(
                old,
                old & !(ARMED | ORPHAN | FULL),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => old = seen,
            }
        }
    }

    /// Whether the owner retired the slab and no remote free has come since.
    pub(crate) fn is_retired(&self) -> bool {
        // Acquire: when false after a retire, a remote free cleared the bit;
        // `collect` then acquires its objects anyway.
        self.thread_free.load(Ordering::Acquire) & FULL != 0
    }

    /// Sets the `FULL` bit again on a retired slab that remote frees
    /// revived, so that the next remote free tells the owner again.
    ///
    /// # Safety
    /// The caller owns the slab, which is on its retired list.
    pub(crate) unsafe fn rearm(&self) {
        // Relaxed: as in `try_retire`.
        self.thread_free.fetch_or(FULL, Ordering::Relaxed);
    }

    /// Objects the slab holds (`class` is fixed while the group is a slab).
    pub(crate) fn capacity(&self) -> u32 {
        // Relaxed: written before any object of the slab was handed out.
        GROUP as u32 / class::size(self.class.load(Ordering::Relaxed) as usize) as u32
    }
}

/// Whether `offset` (below `GROUP`) is a multiple of the size whose
/// `SlabHeader::magic` is `magic`.
#[inline(always)]
fn starts_object(offset: u32, magic: u32) -> bool {
    offset.wrapping_mul(magic) < magic
}

/// A free of an address that starts no object of its slab.
#[cold]
#[inline(never)]
fn not_an_object(object: NonNull<u8>) -> ! {
    misuse::abort(
        "Heap",
        "free of a pointer that is not the start of an allocation",
        object.as_ptr().addr(),
    )
}

/// A free of an object that is free already.
#[cold]
#[inline(never)]
pub(crate) fn double_free(object: NonNull<u8>) -> ! {
    misuse::abort(
        "Heap",
        "double free detected: the object was freed already",
        object.as_ptr().addr(),
    )
}

/// One class's slabs in a thread cache (owner-only).
#[derive(Clone, Copy)]
pub(crate) struct ClassCache {
    pub(crate) current: *mut SlabHeader,
    pub(crate) partial: *mut SlabHeader,
    /// The `revived` count last acted on.
    pub(crate) seen: u32,
}

/// A cache's retired lists, one per class: what its retired lock guards
/// (the owner puts slabs on them and takes them back; a claimer takes an
/// emptied one off).
pub(crate) struct Retired(pub(crate) [*mut SlabHeader; CLASSES]);

// SAFETY: the pointers point into the heap's metadata; the lock around the
// lists orders every access.
unsafe impl Send for Retired {}

/// The slabs of one thread tag in one heap. Aligned to a cache line: the
/// caches sit side by side in the core Block, and each is written by its
/// own thread.
#[repr(C, align(64))]
pub(crate) struct ThreadCache {
    classes: [UnsafeCell<ClassCache>; CLASSES],
    /// Bumped by remote frees that clear a retired slab's `FULL` bit.
    pub(crate) revived: [AtomicU32; CLASSES],
    /// The retired lists (module documentation, *Claims*).
    pub(crate) retired: SpinLock<Retired>,
}

// SAFETY: `classes` is reached only by the cache's owner; `retired` is
// locked; the rest is atomic.
unsafe impl Sync for ThreadCache {}

impl ThreadCache {
    pub(crate) fn new() -> ThreadCache {
        ThreadCache {
            classes: [const {
                UnsafeCell::new(ClassCache {
                    current: ptr::null_mut(),
                    partial: ptr::null_mut(),
                    seen: 0,
                })
            }; CLASSES],
            revived: [const { AtomicU32::new(0) }; CLASSES],
            retired: SpinLock::new(Retired([ptr::null_mut(); CLASSES])),
        }
    }

    /// One class's slabs.
    ///
    /// # Safety
    /// The caller owns the cache and holds no other reference to this
    /// class; `class < CLASSES`.
    #[inline]
    #[expect(
        clippy::mut_from_ref,
        reason = "ownership, not the borrow, makes this unique"
    )]
    pub(crate) unsafe fn class(&self, class: usize) -> &mut ClassCache {
        debug_assert!(class < CLASSES);
        // SAFETY: the caller's contract; classes come from `class::of` or a
        // slab header, so `class < CLASSES` (no bounds check on the hot path).
        unsafe { &mut *self.classes.get_unchecked(class).get() }
    }
}

/// Pushes `slab` on the front of a doubly linked list.
///
/// # Safety
/// The caller owns `slab` (its `Local`) and the list; `slab` is on no list.
pub(crate) unsafe fn push(head: &mut *mut SlabHeader, slab: &SlabHeader, list: u8) {
    // SAFETY: the caller owns `slab` and the list, so the head's links too.
    unsafe {
        let links = slab.links();
        links.prev = ptr::null_mut();
        links.next = *head;
        slab.set_list(list);
        if let Some(first) = head.as_ref() {
            first.links().prev = ptr::from_ref(slab).cast_mut();
        }
    }
    *head = ptr::from_ref(slab).cast_mut();
}

/// Takes `slab` off the doubly linked list `head`.
///
/// # Safety
/// The caller owns `slab` (its `Local`) and the list, and `slab` is on it.
pub(crate) unsafe fn unlink(head: &mut *mut SlabHeader, slab: &SlabHeader) {
    // SAFETY: the caller owns the list, so the links of `slab` and of its
    // neighbours.
    unsafe {
        let links = slab.links();
        if let Some(prev) = links.prev.as_ref() {
            prev.links().next = links.next;
        } else {
            *head = links.next;
        }
        if let Some(next) = links.next.as_ref() {
            next.links().prev = links.prev;
        }
        links.next = ptr::null_mut();
        links.prev = ptr::null_mut();
        slab.set_list(NONE);
    }
}

/// The slab after `slab` on its list.
///
/// # Safety
/// The caller owns the list `slab` is on.
pub(crate) unsafe fn next(slab: &SlabHeader) -> *mut SlabHeader {
    // SAFETY: the caller's contract.
    unsafe { slab.links().next }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The divisibility test `check_start` relies on holds for every class
    /// and every offset in a group.
    #[test]
    fn the_magic_test_finds_exactly_the_object_starts() {
        let step = if cfg!(miri) { 61 } else { 1 };
        for class in 0..CLASSES {
            let size = class::size(class) as u32;
            let magic = (1u64 << 32).div_ceil(u64::from(size)) as u32;
            assert_eq!(magic >> 16, GROUP as u32 / size, "capacity of {size}");
            for offset in (0..GROUP as u32).step_by(step) {
                assert_eq!(
                    starts_object(offset, magic),
                    offset % size == 0,
                    "size {size}, offset {offset}"
                );
            }
        }
    }
}
