//! [`Block`]: a reserved range of address space with a committed prefix:
//! pinned, page-aligned, at a stable address, growable in place.
//!
//! # The backend contract
//!
//! Exactly one backend is compiled, chosen here by `cfg`:
//!
//! | backend | chosen when | reserve | commit | decommit | export |
//! |---|---|---|---|---|---|
//! | `linux.rs` | Linux, not Miri | `mmap(PROT_NONE, MAP_NORESERVE)`, aligned | private: `mprotect`; shared: the owner grows the sealed memfd, every mapping maps it in place (an attached one only as far as the memfd's size); huge pages: map `MAP_HUGETLB` pages in place | private: map fresh `PROT_NONE` pages over the range (frees and unlocks them); shared: refused | the memfd (shared Blocks) |
//! | `apple.rs` | Apple targets, not Miri | cannot reserve: an IOSurface of the whole capacity, all committed at open | nothing left to commit | refused | a Mach port |
//! | `portable.rs` | everything else, and Miri | zeroed `System` memory of the whole capacity | bookkeeping | zeroes the range | none |
//!
//! Each backend implements [`Platform`] for its `Raw` type, which owns the
//! operating-system object behind one reservation. Whatever the backend, a
//! [`Region`] satisfies:
//!
//! 1. `ptr` is aligned to the Block's granule (the page size, or the huge
//!    page size for huge-page Blocks; at least [`page_size()`]) and the
//!    capacity is a positive multiple of it;
//! 2. the bytes `ptr..ptr + committed` are mapped, initialized (zero when
//!    first committed) and readable and writable until they are decommitted
//!    or `release` runs; bytes beyond `committed` are never accessed;
//! 3. `ptr` never changes for the region's lifetime, and committing more
//!    never moves it;
//! 4. the bytes locked in memory (`mlock`) are a prefix of the committed
//!    part, less the ranges an allocator discarded (`Region::discard`) or
//!    could not lock again;
//! 5. nothing on reserve, commit or decommit allocates through the global
//!    allocator, so a global allocator may open and grow Blocks.
//!
//! Commits and decommits of one Block are serialized by a commit lock (one of
//! a few striped locks, so that Blocks need no lock of their own at a stable
//! address; `fork` takes them all, see `fork.rs`). Each commit maps the new
//! pages, binds them to the Block's NUMA node if it has one (`numa/`), locks
//! them (or records why not), populates them unless prefault is off, and
//! tells every watcher (a device registration covering the Block)
//! before publishing the new committed size, so no allocation can land in
//! pages a registration has not seen. A Block with a watcher refuses to
//! decommit: the device may still use the pages.

#[allow(clippy::module_inception)]
mod block;
mod commit;
mod numa;
mod options;
mod pin;
mod populate;
mod region;
mod report;

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use self::commit::{lock_for_fork, unlock_after_fork};
use crate::Error;
use crate::fork::Hooks;

pub use self::block::Block;
pub(crate) use self::commit::{WATCHERS, Watch, Watcher};
pub use self::options::{BlockOptions, Pages, Pinning};
pub use self::region::Region;

#[cfg(unimem_linux)]
#[path = "linux.rs"]
mod imp;

#[cfg(unimem_apple)]
#[path = "apple.rs"]
mod imp;

#[cfg(unimem_portable)]
#[path = "portable.rs"]
mod imp;

pub use imp::Export;
#[cfg(unimem_apple)]
pub use imp::IOSurfaceRef;
pub use numa::{Node, Placement};

/// What a backend's `reserve` or `attach` made.
pub(crate) struct Reserved {
    pub(crate) raw: imp::Raw,
    pub(crate) ptr: NonNull<u8>,
    pub(crate) capacity: usize,
    /// Bytes already committed (a backend that cannot reserve commits all).
    pub(crate) committed: usize,
    /// Bytes already locked (a prefix of `committed`).
    pub(crate) locked: usize,
    pub(crate) granule: usize,
}

/// What a platform backend provides; see the module documentation. Offsets
/// are from the reservation's first byte and multiples of its granule.
pub(crate) trait Platform: Sized {
    /// Reserves `capacity` bytes (a positive multiple of `granule`) of
    /// address space aligned to `align`, committing nothing unless the
    /// backend cannot reserve. `open` is what the caller commits right
    /// after (0 for a lazy Block): a shared Block that commits its whole
    /// capacity at once can be sealed at its final size.
    fn reserve(
        capacity: usize,
        granule: usize,
        align: usize,
        open: usize,
        options: &BlockOptions<'_>,
    ) -> Result<Reserved, Error>;

    /// Maps `from..to` readable and writable (zero-filled on first touch).
    ///
    /// # Safety
    /// `base` is this reservation's; `from..to` lies in it beyond what is
    /// committed.
    unsafe fn map(&self, base: NonNull<u8>, from: usize, to: usize) -> Result<(), Error>;

    /// Locks `from..to` (mapped), faulting every page in when `populate`.
    ///
    /// # Safety
    /// As `map`, for a mapped range.
    unsafe fn lock(
        &self,
        base: NonNull<u8>,
        from: usize,
        to: usize,
        populate: bool,
    ) -> Result<(), std::io::Error>;

    /// Faults every page of `from..to` (mapped) in, reporting failure.
    ///
    /// # Safety
    /// As `lock`.
    unsafe fn populate(&self, base: NonNull<u8>, from: usize, to: usize) -> Result<(), Error>;

    /// Gives the pages of `from..to` back: afterwards they are neither
    /// mapped nor locked nor counted, and a later `map` finds them zero.
    ///
    /// # Safety
    /// As `lock`; nothing refers to the range any more.
    unsafe fn unmap(&self, base: NonNull<u8>, from: usize, to: usize) -> Result<(), Error>;

    /// Whether `unmap` may run: false where other mappings share the pages.
    fn can_unmap(&self) -> bool;

    /// Gives the pages of the committed range `from..to` back to the system
    /// and unlocks them, leaving the range mapped: it reads as zero when
    /// touched again.
    ///
    /// # Safety
    /// As `unmap`.
    unsafe fn discard(&self, base: NonNull<u8>, from: usize, to: usize) -> Result<(), Error>;

    /// Whether `discard` may run: private memory of base pages only.
    fn can_discard(&self) -> bool;

    /// Drops the pages of the committed range `from..to` in one step,
    /// leaving it mapped and locked as it was (pages touched again come back
    /// zero, and locked where the range is locked). `Ok(false)`: the system
    /// cannot in one step (`discard` then `lock` do it in two).
    ///
    /// # Safety
    /// As `discard`.
    unsafe fn drop_pages(&self, base: NonNull<u8>, from: usize, to: usize) -> Result<bool, Error>;

    /// Gives a handle through which another mapping reaches the same pages.
    fn share(&self) -> Result<Export, Error>;

    /// Reserves room for the pages behind `export` (untrusted: checked
    /// first) and returns the reservation, nothing committed yet, with the
    /// size to commit: what the owner committed. The mapping never resizes
    /// the pages: its `map` refuses to go past what they hold.
    ///
    /// # Safety
    /// As [`Block::attach`].
    unsafe fn attach(
        export: Export,
        options: &BlockOptions<'_>,
    ) -> Result<(Reserved, usize), Error>;

    /// What the pages behind an attached reservation hold now (what their
    /// owner committed, as far as the handle says); `None` for private
    /// memory and for the owner's own mapping, which has nothing to follow.
    fn shared_size(&self) -> Result<Option<Shared>, Error>;

    /// Unmaps the whole reservation and releases the operating-system object.
    ///
    /// # Safety
    /// `ptr` and `capacity` are the ones this backend returned with `self`,
    /// and no reference into the region outlives this call.
    unsafe fn release(&mut self, ptr: NonNull<u8>, capacity: usize);
}

/// The size of the pages behind an attached reservation, as its handle says
/// (untrusted).
pub(crate) struct Shared {
    /// Bytes the pages hold.
    pub(crate) size: usize,
    /// Bytes of them in memory already (which following does not fault in
    /// again).
    pub(crate) resident: usize,
}

/// Checks that faulting `bytes` in fits in the memory available, for pages
/// whose size an untrusted handle chose.
pub(crate) fn check_fault_in(bytes: usize) -> Result<(), Error> {
    let available = crate::sys::available_memory();
    if bytes > available {
        return Err(Error::OutOfMemory {
            requested: bytes,
            available,
        });
    }
    Ok(())
}

/// The commit locks' part in `fork` (`fork.rs`, [`Stage::Blocks`]).
static FORK_HOOKS: Hooks = Hooks {
    lock: lock_for_fork,
    unlock: unlock_after_fork,
    child: in_child_after_fork,
};

/// In a forked child, before `fork` returns there: reserves again the
/// ranges of Blocks kept out of children ([`BlockOptions::inherit`]), then
/// releases the commit locks.
///
/// # Safety
/// As [`unlock_after_fork`].
unsafe fn in_child_after_fork() {
    #[cfg(unimem_linux)]
    imp::after_fork_in_child();
    // SAFETY: the caller's contract.
    unsafe { unlock_after_fork() };
}

/// The system's page size in bytes (read once from the system, then cached).
pub fn page_size() -> usize {
    // Relaxed: every thread that fills the cache stores the same value, so a
    // racing reader sees either 0 (and asks the system itself) or that value.
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let cached = PAGE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    let page = crate::sys::page_size();
    PAGE.store(page, Ordering::Relaxed);
    page
}

/// Rounds `bytes` up to a multiple of `granule` (a power of two), rejecting
/// zero and overflow.
pub(crate) fn round_to(bytes: usize, granule: usize) -> Result<usize, Error> {
    if bytes == 0 {
        return Err(Error::ZeroSize);
    }
    match bytes.checked_next_multiple_of(granule) {
        Some(size) if size <= isize::MAX as usize => Ok(size),
        _ => Err(Error::Overflow { requested: bytes }),
    }
}

/// What allocators commit at a time as they grow (more if one request needs
/// more, less if the Block is smaller): one transparent huge page with 4 KiB
/// pages, so that growing a private Block populates it a huge page at a time.
pub(crate) const COMMIT_STEP: usize = 2 << 20;

/// What later commits of a Block need of the options it was opened with.
#[derive(Clone, Copy, Debug)]
struct Settings {
    pinning: Pinning,
    prefault: bool,
    quiet: bool,
    /// The node asked for, whose CPUs populate large commits (even where
    /// binding was refused: the kernel's default placement then puts the
    /// pages where those threads touch them).
    node: Option<Node>,
    /// The most a commit may fault in: the node's memory for a required
    /// placement, else the machine's.
    memory: usize,
}

impl Settings {
    /// `node_memory`: the memory of the options' node, as checked.
    fn of(options: &BlockOptions<'_>, node_memory: Option<usize>) -> Settings {
        let physical = crate::sys::physical_memory();
        Settings {
            pinning: options.pinning,
            prefault: options.prefault,
            quiet: options.quiet,
            node: options.node,
            memory: match (node_memory, options.placement) {
                (Some(node), Placement::Required) => node.min(physical),
                _ => physical,
            },
        }
    }
}

#[cfg(test)]
mod tests;
