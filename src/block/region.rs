//! [`Region`]: a Block's address range, sizes, commits and handle, without
//! its bytes (part of `block`). The commit machine that changes them is in
//! `commit.rs`, pinning and placement in `pin.rs`.

use core::cell::UnsafeCell;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

#[cfg(unimem_apple)]
use super::IOSurfaceRef;
use super::commit::{WATCHERS, Watcher};
use super::numa::{self, Node, Placement};
use super::{Export, FORK_HOOKS, Platform, Reserved, Settings, imp, page_size};
use crate::Error;
use crate::fork::{self, Stage};

/// The address range, capacity, committed size and platform handle of a
/// [`Block`](crate::Block), without access to its bytes.
///
/// Allocators hand this out (`tape.block()`): the allocations they give out
/// are the only sound way to reach the bytes while they own the Block.
pub struct Region {
    pub(super) ptr: NonNull<u8>,
    pub(super) capacity: usize,
    /// Bytes committed from `ptr`. Changed under the commit lock; read
    /// anywhere (Acquire, pairing with the Release store that published it
    /// after the pages were mapped).
    pub(super) committed: AtomicUsize,
    /// The end of the locked prefix: every byte below it was locked when it
    /// was committed. Changed under the commit lock.
    pub(super) locked: AtomicUsize,
    /// Bytes an allocator discarded inside the committed part (not resident,
    /// zero when touched again). Under the commit lock.
    pub(super) discarded: AtomicUsize,
    /// Bytes below `locked` that are not locked now: discarded, or not
    /// locked again when recommitted (best-effort pinning past the limit).
    /// Under the commit lock.
    pub(super) unlocked: AtomicUsize,
    pub(super) granule: usize,
    pub(super) settings: Settings,
    /// The node the reservation is bound to and how strictly; `None` when
    /// no node was asked for, or a best-effort binding was refused. Set
    /// before the Region is shared, never changed after.
    pub(super) placement: Option<(Node, Placement)>,
    /// Registrations told of each commit; under the commit lock.
    pub(super) watchers: UnsafeCell<[Option<Watcher>; WATCHERS]>,
    pub(super) raw: imp::Raw,
}

// SAFETY: a Region owns its reservation like a `Box<[u8]>` owns its buffer;
// it hands out only a raw pointer and plain values, never references into
// the bytes, and the OS objects it holds (an fd, an IOSurface) may be used
// and released from any thread. `watchers` holds pointers to registrations'
// states, which are Sync, and is only reached under the commit lock.
unsafe impl Send for Region {}
// SAFETY: as above; the mutable state is atomic or under the commit lock.
unsafe impl Sync for Region {}

impl Region {
    pub(super) fn new(reserved: Reserved, settings: Settings) -> Region {
        // Before any commit lock of the Block can be taken.
        fork::register(Stage::Blocks, &FORK_HOOKS);
        Region {
            ptr: reserved.ptr,
            capacity: reserved.capacity,
            committed: AtomicUsize::new(reserved.committed),
            locked: AtomicUsize::new(reserved.locked),
            discarded: AtomicUsize::new(0),
            unlocked: AtomicUsize::new(0),
            granule: reserved.granule,
            settings,
            placement: None,
            watchers: UnsafeCell::new([None; WATCHERS]),
            raw: reserved.raw,
        }
    }

    /// The first byte. Aligned to the granule; the same for the region's
    /// whole life.
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The committed bytes, which can be read and written: the same as
    /// [`committed`](Region::committed), the seed's name for it.
    #[inline]
    pub fn size(&self) -> usize {
        self.committed()
    }

    /// The committed bytes from the first byte: a whole number of granules.
    #[inline]
    pub fn committed(&self) -> usize {
        // Acquire: pairs with the Release store in `commit_locked`, after
        // the pages were mapped.
        self.committed.load(Ordering::Acquire)
    }

    /// The reserved bytes: what the Block can grow to without moving.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The unit of commits: the page size, or the huge page size for a
    /// Block of explicit huge pages.
    #[inline]
    pub fn granule(&self) -> usize {
        self.granule
    }

    /// Whether every committed byte in memory is locked (bytes an allocator
    /// gave back inside the committed part are locked again when reused).
    #[inline]
    pub fn is_pinned(&self) -> bool {
        // Relaxed: a snapshot; exact when no commit runs.
        self.locked.load(Ordering::Relaxed) == self.committed.load(Ordering::Relaxed)
            && self.unlocked.load(Ordering::Relaxed) == self.discarded.load(Ordering::Relaxed)
    }

    /// The committed bytes that are locked in memory.
    #[inline]
    pub fn locked(&self) -> usize {
        // Relaxed: a snapshot, as `is_pinned`.
        self.locked
            .load(Ordering::Relaxed)
            .saturating_sub(self.unlocked.load(Ordering::Relaxed))
    }

    /// The committed bytes an allocator gave back to the system without
    /// decommitting them (a Heap's free runs inside its arenas): mapped, not
    /// in memory, and committed again when reused.
    #[inline]
    pub fn discarded(&self) -> usize {
        // Relaxed: a snapshot, as `is_pinned`.
        self.discarded.load(Ordering::Relaxed)
    }

    /// Whether `ptr` points into the reservation (committed or not): the
    /// address range the Block owns for its whole life.
    #[inline]
    pub fn contains(&self, ptr: *const u8) -> bool {
        ptr.addr().wrapping_sub(self.ptr.as_ptr().addr()) < self.capacity
    }

    /// The NUMA node the Block's pages are bound to: the one
    /// [`BlockOptions::node`](crate::BlockOptions::node) asked for, once the system accepted the
    /// binding; `None` when no node was asked for, or a best-effort binding
    /// was refused. Where the pages actually are, [`nodes`](Region::nodes)
    /// says.
    pub fn node(&self) -> Option<Node> {
        self.placement.map(|(node, _)| node)
    }

    /// Where the committed pages are: the bytes in memory on each NUMA node,
    /// in node order, nodes without any left out (pages not in memory yet,
    /// or given back, are not counted). Asked of the kernel page by page
    /// (`move_pages` with no target, which moves nothing): about a system
    /// call per 512 pages, for checking placement rather than for a hot
    /// path. Where `move_pages` is refused (Docker's default seccomp profile
    /// refuses it whatever the capabilities), the kernel's per-mapping
    /// counts in `/proc/self/numa_maps` answer instead. A snapshot: commits
    /// and first touches on other threads move on meanwhile.
    ///
    /// ```
    /// # #[cfg(target_os = "linux")] {
    /// use unimem::{BlockOptions, Node};
    ///
    /// let block = BlockOptions::new().node(Some(Node::new(0))).open(4 << 20)?;
    /// for (node, bytes) in block.nodes()? {
    ///     println!("{bytes} bytes on {node}"); // all 4 MiB on node 0
    /// }
    /// # }
    /// # Ok::<(), unimem::Error>(())
    /// ```
    ///
    /// Errors: `move_pages` refused and `/proc/self/numa_maps` of no help
    /// (unreadable, or a mapping of the Block merged with a neighbour's),
    /// [`Error::Os`] with `move_pages`'s error; not Linux
    /// ([`Error::Unsupported`]).
    pub fn nodes(&self) -> Result<Vec<(Node, usize)>, Error> {
        let step = if self.granule > page_size() {
            self.granule
        } else {
            page_size()
        };
        numa::residency(self.ptr.as_ptr(), self.committed(), self.capacity, step)
    }

    /// The first byte, as the non-null pointer it is.
    #[inline]
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Gives a handle through which another process (or a second mapping in
    /// this one, see [`Block::attach`](crate::Block::attach)) reaches the same pages: on Linux an
    /// owned, close-on-exec duplicate of the sealed memfd of a Block opened
    /// with [`BlockOptions::shared`](crate::BlockOptions::shared), on Apple platforms a Mach send right.
    ///
    /// Whoever holds the memfd can read and write every page and punch
    /// holes (zeroing them; in huge pages, see [`Pages::Huge2M`](crate::Pages::Huge2M)), but can
    /// neither shrink it nor seal it: the owner's mapping stays valid and
    /// its commits go on whatever the holders do. A holder can grow the
    /// memfd, which costs nothing until touched and only makes receivers
    /// [`follow`](Region::follow) further.
    ///
    /// A private Block is [`Error::InvalidArgument`] (it names the option);
    /// the portable backend has no handle ([`Error::Unsupported`]).
    pub fn share(&self) -> Result<Export, Error> {
        self.raw.share()
    }

    /// The memfd behind a shared Block; `None` for a private one.
    #[cfg(unimem_linux)]
    pub fn handle(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.raw.handle()
    }

    /// The IOSurface behind the mapping, for Metal and the ANE.
    #[cfg(unimem_apple)]
    pub fn handle(&self) -> IOSurfaceRef {
        self.raw.handle()
    }

    /// The IOSurface's ID.
    #[cfg(unimem_apple)]
    pub fn id(&self) -> u32 {
        self.raw.id()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        debug_assert!(
            self.watchers.get_mut().iter().all(Option::is_none),
            "a Region dropped while registered"
        );
        // SAFETY: `ptr` and `capacity` came from the backend with `raw`; a
        // Region hands out no references, and every borrow of a Block or an
        // allocator that owns this Region has ended.
        unsafe { self.raw.release(self.ptr, self.capacity) }
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("ptr", &self.ptr)
            .field("committed", &self.committed())
            .field("capacity", &self.capacity)
            .field("locked", &self.locked())
            .finish_non_exhaustive()
    }
}
