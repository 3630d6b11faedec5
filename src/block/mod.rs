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

mod numa;
mod populate;
mod report;

use core::cell::{Cell, UnsafeCell};
use core::fmt;
use core::ops::Deref;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::Error;
use crate::fork::{self, Hooks, Stage};
use crate::lock::SpinLock;

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
pub(crate) use report::pin_error;

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

/// Whether a Block must be pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Pinning {
    /// `mlock` must succeed, or the commit fails: opening returns
    /// [`Error::Pin`], an allocator's growth fails that allocation (or
    /// spills, and says so once on standard error).
    Required,
    /// Try `mlock` at every commit; where it is refused, go on unpinned
    /// ([`Region::is_pinned`] says whether everything committed is locked,
    /// [`Region::locked`] how much), and tell standard error once per
    /// process. The default: a program runs the first time for an ordinary
    /// user, and pins what the limit allows.
    #[default]
    BestEffort,
    /// Never lock: the pages can be swapped out like any other memory.
    Off,
}

/// Which pages back a Block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Pages {
    /// The system's base pages (4 KiB on x86-64), with no advice.
    Base,
    /// Base pages with transparent huge page advice (`MADV_HUGEPAGE`): on
    /// Linux a private Block of at least 2 MiB is aligned to 2 MiB so that
    /// the kernel can back it with huge pages where its settings allow
    /// (`/sys/kernel/mm/transparent_hugepage/enabled`). The default.
    #[default]
    Transparent,
    /// Explicit 2 MiB huge pages from the system's pool (`MAP_HUGETLB`,
    /// `MFD_HUGETLB`; reserve them in `/proc/sys/vm/nr_hugepages`). Sizes
    /// round up to 2 MiB; too few free huge pages is [`Error::HugePages`].
    ///
    /// Where the kernel takes a huge page later than at commit, too few is
    /// SIGBUS instead, which no option turns into an error:
    /// - **`fork`**: a child shares a private Block's huge pages
    ///   copy-on-write, and each copy is a page from the pool. A child that
    ///   writes a page (or touches one the parent wrote since the fork) when
    ///   the pool has no free page is killed with SIGBUS; the parent is never
    ///   affected. A child that uses the Block needs a free huge page for
    ///   every page either side writes; one that does not is safest with
    ///   [`BlockOptions::inherit`]`(false)`, which leaves the Block out of it.
    /// - **Sharing**: any holder of a shared Block's memfd can punch a hole
    ///   in it (`fallocate(FALLOC_FL_PUNCH_HOLE)`), which gives the pages
    ///   back to the pool; the next touch through any mapping, the owner's
    ///   included, takes a page again, and is SIGBUS if none is free. So
    ///   [`Block::attach`] maps a huge-page memfd only with
    ///   [`BlockOptions::accept_huge_page_sigbus`], and the owner trusts
    ///   whoever it gives the fd to.
    Huge2M,
    /// Explicit 1 GiB huge pages, as [`Pages::Huge2M`]
    /// (`/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages`).
    Huge1G,
}

impl Pages {
    /// The size of the explicit huge pages, if these are.
    pub const fn huge_page_size(self) -> Option<usize> {
        match self {
            Pages::Huge2M => Some(2 << 20),
            Pages::Huge1G => Some(1 << 30),
            Pages::Base | Pages::Transparent => None,
        }
    }
}

/// How to open a [`Block`]: capacity, sharing, pinning, prefaulting, pages
/// and a label.
///
/// ```
/// use unimem::{BlockOptions, Pinning};
///
/// let block = BlockOptions::new()
///     .pinning(Pinning::BestEffort)
///     .capacity(64 << 20) // reserve 64 MiB of address space...
///     .label("weights")
///     .open(1 << 20)?; // ...and commit the first MiB
/// assert_eq!(block.committed(), 1 << 20);
/// assert_eq!(block.capacity(), 64 << 20);
/// block.commit(8 << 20)?; // grows in place
/// assert_eq!(block.committed(), 8 << 20);
/// # Ok::<(), unimem::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockOptions<'a> {
    pub(crate) pinning: Pinning,
    pub(crate) prefault: bool,
    pub(crate) pages: Pages,
    pub(crate) label: &'a str,
    pub(crate) capacity: usize,
    pub(crate) shared: bool,
    pub(crate) quiet: bool,
    pub(crate) inherit: bool,
    pub(crate) accept_huge_page_sigbus: bool,
    pub(crate) node: Option<Node>,
    pub(crate) placement: Placement,
}

impl Default for BlockOptions<'_> {
    fn default() -> Self {
        BlockOptions::new()
    }
}

impl<'a> BlockOptions<'a> {
    /// Private, pinned where the locked-memory limit allows
    /// ([`Pinning::BestEffort`]), pages prefaulted, transparent huge page
    /// advice, label `"unimem"`, capacity equal to what is opened,
    /// inherited by forked children, huge-page memfds not attached, no NUMA
    /// node (the kernel's default placement).
    ///
    /// Best effort is the default so that a program works the first time
    /// for an ordinary user, whose limit (`RLIMIT_MEMLOCK`) is often 8 MiB:
    /// what the limit allows is locked, the rest is not, the first refusal
    /// in the process is told once on standard error (with how to raise the
    /// limit), and [`Region::is_pinned`] and [`Region::locked`] say what
    /// happened. A program that must not run unpinned asks for
    /// [`Pinning::Required`], and then gets [`Error::Pin`] instead.
    pub const fn new() -> Self {
        BlockOptions {
            pinning: Pinning::BestEffort,
            prefault: true,
            pages: Pages::Transparent,
            label: "unimem",
            capacity: 0,
            shared: false,
            quiet: false,
            inherit: true,
            accept_huge_page_sigbus: false,
            node: None,
            placement: Placement::BestEffort,
        }
    }

    /// The options of the lazy constructors (`Tape::lazy`, `Grid::lazy`,
    /// `Heap::lazy`): the same as [`new`](BlockOptions::new).
    /// (`Heap::lazy` also turns prefault and transparent huge pages off;
    /// see there.)
    pub const fn lazy() -> Self {
        BlockOptions::new()
    }

    /// Whether `mlock` must succeed, is tried, or is not called.
    pub const fn pinning(mut self, pinning: Pinning) -> Self {
        self.pinning = pinning;
        self
    }

    /// Whether every page is faulted in as it is committed (the default): by
    /// `mlock` itself when pinning, else by `MADV_POPULATE_WRITE` on Linux
    /// (which, unlike `MAP_POPULATE`, reports failure). Without it the pages
    /// are locked as they are first touched (`MLOCK_ONFAULT` on Linux), so
    /// committing is fast and the cost moves to first use.
    pub const fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }

    /// Which pages back the Block; see [`Pages`].
    pub const fn pages(mut self, pages: Pages) -> Self {
        self.pages = pages;
        self
    }

    /// Shorthand: `true` for [`Pages::Transparent`] (the default), `false`
    /// for [`Pages::Base`].
    pub const fn huge_pages(self, huge_pages: bool) -> Self {
        self.pages(if huge_pages {
            Pages::Transparent
        } else {
            Pages::Base
        })
    }

    /// Reserves at least `bytes` of address space, of which `open` commits
    /// only what it is asked for; [`Region::commit`] commits more in place,
    /// up to the capacity. Less than what is opened means the same.
    pub const fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// Whether another process can map the same pages ([`Region::share`],
    /// [`Block::attach`]): on Linux a sealed memfd mapped `MAP_SHARED`
    /// instead of private memory. A shared Block is shared with forked
    /// children too, as any `MAP_SHARED` memory is; a private one (the
    /// default) is copied into them.
    ///
    /// The memfd is sealed at open against shrinking and against further
    /// seals, so that no holder of the fd can pull pages from under a
    /// mapping or stop the owner's growth; a Block that commits its whole
    /// capacity at open is sealed against growing too. Its size is how far
    /// the owner has committed: only the owner grows it. Holders of the fd
    /// can write the pages (and punch holes, which zero them), so give it
    /// only to processes trusted with the contents; see [`Pages::Huge2M`]
    /// for what a hole means in huge pages.
    pub const fn shared(mut self, shared: bool) -> Self {
        self.shared = shared;
        self
    }

    /// Whether a forked child inherits the Block (the default: a copy of a
    /// private Block, the same pages of a shared one). With `false` the
    /// child finds the Block's address range reserved and inaccessible
    /// (Linux: `MADV_DONTFORK` on every mapping of it, and the range
    /// reserved again in the child before `fork` returns there): `fork`
    /// copies none of its pages, and the child must not touch the Block, nor
    /// use an allocator over it, which would be SIGSEGV. Meant for large
    /// Blocks of explicit huge pages in a process that forks: a child that
    /// writes to an inherited huge page needs a free page from the pool or
    /// is killed with SIGBUS (see [`Pages::Huge2M`]), and leaving the
    /// Block out spares the copy of its page tables at every `fork` too.
    /// Also for [`Block::attach`]. Other backends refuse `false`
    /// ([`Error::Unsupported`]).
    pub const fn inherit(mut self, inherit: bool) -> Self {
        self.inherit = inherit;
        self
    }

    /// Whether [`Block::attach`] may map a memfd of explicit huge pages
    /// (off by default), accepting that its sender can make this process's
    /// next touch of the Block a SIGBUS. Any holder of such a memfd can punch
    /// a hole in it (`fallocate(FALLOC_FL_PUNCH_HOLE)`, which the seals a
    /// growable Block needs allow), giving the pages back to the system's
    /// huge-page pool; the next touch of that range takes a free huge page
    /// again, and if the pool has none by then the kernel raises SIGBUS,
    /// pinned or not. Memfds of base pages have no such risk: a hole there
    /// is refilled with zeros from ordinary memory. Accept it only from a
    /// sender trusted not to punch holes.
    pub const fn accept_huge_page_sigbus(mut self, accept: bool) -> Self {
        self.accept_huge_page_sigbus = accept;
        self
    }

    /// The NUMA node the Block's pages come from (Linux); `None`, the
    /// default, leaves placement to the kernel (the node of the CPU that
    /// first touches a page). [`Node::near_pci`] and, with their features,
    /// `Node::near_cuda` and `Node::near_vulkan` find the node nearest a
    /// device, and return an `Option` this takes as it is.
    ///
    /// The node is checked at open: one that does not exist, has no memory,
    /// or is outside the nodes this process may use is [`Error::Node`].
    /// The reservation is then bound to it (`mbind`) before any page is
    /// populated, private and shared Blocks alike, and so is every range a
    /// commit maps afresh; a commit large enough to populate from several
    /// threads runs them on the node's CPUs. [`placement`](Self::placement)
    /// says how strictly (best effort by default), [`Region::node`] whether
    /// the binding took, and [`Region::nodes`] where the pages are.
    /// Allocators pass it on to every data Block they open (a Tape, Heap or
    /// Grid near a GPU); their metadata Blocks, which devices never see,
    /// are not placed. [`Block::attach`] takes no node: the owner placed the
    /// pages ([`Error::InvalidArgument`]).
    ///
    /// The macOS and portable backends cannot place memory: any node there
    /// is [`Error::Unsupported`].
    ///
    /// ```no_run
    /// use unimem::{BlockOptions, Node, Placement, Tape};
    ///
    /// let near_gpu = Node::near_pci("0000:3b:00.0")?; // None on a one-node machine
    /// let options = BlockOptions::new().node(near_gpu).placement(Placement::Required);
    /// let tape = Tape::open_with(256 << 20, &options)?;
    /// println!("pages on {:?}", tape.block().nodes()?);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    pub const fn node(mut self, node: Option<Node>) -> Self {
        self.node = node;
        self
    }

    /// How strictly the pages keep to the [`node`](Self::node): see
    /// [`Placement`]. Without a node it changes nothing.
    pub const fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Whether to keep quiet when `mlock` or `mbind` is refused. By default
    /// the first refusal of each in the process writes one line to standard
    /// error that says what was refused and how to allow it; programs that
    /// choose [`Pinning::BestEffort`] or [`Placement::BestEffort`]
    /// deliberately can turn it off.
    pub const fn quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    /// A name for the memory: it shows in `/proc/<pid>/maps` on Linux, as
    /// `/memfd:<label>` for a shared Block, and as `[anon:<label>]` for a
    /// private one where the kernel names anonymous memory
    /// (`CONFIG_ANON_VMA_NAME`; advice only, ignored elsewhere). Longer than
    /// 249 bytes (79 for a private Block) is cut; a NUL byte is an error at
    /// open.
    pub const fn label(mut self, label: &'a str) -> Self {
        self.label = label;
        self
    }

    /// Opens a Block committing at least `bytes` bytes with these options.
    pub fn open(&self, bytes: usize) -> Result<Block, Error> {
        Block::open_with(bytes, self)
    }

    /// The granule of Blocks opened with these options: the huge page size
    /// for explicit huge pages, else the page size.
    pub(crate) fn granule(&self) -> usize {
        self.pages.huge_page_size().unwrap_or(0).max(page_size())
    }
}

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
fn lock_for_fork() {
    for lock in &COMMIT_LOCKS {
        lock.lock_for_fork();
    }
}

/// Releases what `lock_for_fork` took.
///
/// # Safety
/// As [`SpinLock::unlock_after_fork`].
unsafe fn unlock_after_fork() {
    for lock in COMMIT_LOCKS.iter().rev() {
        // SAFETY: the caller's contract.
        unsafe { lock.unlock_after_fork() };
    }
}

/// The address range, capacity, committed size and platform handle of a
/// [`Block`], without access to its bytes.
///
/// Allocators hand this out (`tape.block()`): the allocations they give out
/// are the only sound way to reach the bytes while they own the Block.
pub struct Region {
    ptr: NonNull<u8>,
    capacity: usize,
    /// Bytes committed from `ptr`. Changed under the commit lock; read
    /// anywhere (Acquire, pairing with the Release store that published it
    /// after the pages were mapped).
    committed: AtomicUsize,
    /// The end of the locked prefix: every byte below it was locked when it
    /// was committed. Changed under the commit lock.
    locked: AtomicUsize,
    /// Bytes an allocator discarded inside the committed part (not resident,
    /// zero when touched again). Under the commit lock.
    discarded: AtomicUsize,
    /// Bytes below `locked` that are not locked now: discarded, or not
    /// locked again when recommitted (best-effort pinning past the limit).
    /// Under the commit lock.
    unlocked: AtomicUsize,
    granule: usize,
    settings: Settings,
    /// The node the reservation is bound to and how strictly; `None` when
    /// no node was asked for, or a best-effort binding was refused. Set
    /// before the Region is shared, never changed after.
    placement: Option<(Node, Placement)>,
    /// Registrations told of each commit; under the commit lock.
    watchers: UnsafeCell<[Option<Watcher>; WATCHERS]>,
    raw: imp::Raw,
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
    fn new(reserved: Reserved, settings: Settings) -> Region {
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

    fn commit_to(&self, end: usize, caller: Caller) -> Result<(), Error> {
        if end <= self.committed() {
            return Ok(());
        }
        if COMMITTING.get() {
            return Err(Error::InvalidArgument {
                reason: "a Block cannot commit from inside a commit on the same thread \
                         (a registration's driver allocating from the allocator it registers)",
            });
        }
        let _lock = self.commit_lock().lock();
        COMMITTING.set(true);
        // SAFETY: we hold the commit lock.
        let result = unsafe { self.commit_locked(end, caller) };
        COMMITTING.set(false);
        result
    }

    /// # Safety
    /// The caller holds the commit lock.
    unsafe fn commit_locked(&self, end: usize, caller: Caller) -> Result<(), Error> {
        // Relaxed: only holders of the commit lock store these.
        let from = self.committed.load(Ordering::Relaxed);
        let to = end
            .checked_next_multiple_of(self.granule)
            .map_or(self.capacity, |to| to.min(self.capacity));
        if to <= from {
            return Ok(());
        }
        // SAFETY: `from..to` lies in the reservation beyond what is committed.
        unsafe { self.raw.map(self.ptr, from, to)? };
        if let Err(error) = self.lock_and_populate(from, to, caller) {
            // SAFETY: just mapped, and not published: nothing refers to it.
            let _ = unsafe { self.raw.unmap(self.ptr, from, to) };
            return Err(error);
        }
        // SAFETY: we hold the commit lock, which guards the watchers.
        for watcher in unsafe { &*self.watchers.get() }.iter().flatten() {
            // SAFETY: registered with this `data`; the range is mapped.
            unsafe { (watcher.committed)(watcher.data, self.ptr, from, to) };
        }
        // Release: publishes the mapping to every Acquire load of
        // `committed`, after the watchers saw it.
        self.committed.store(to, Ordering::Release);
        Ok(())
    }

    /// Locks (or not, as pinning says) and populates the freshly mapped
    /// `from..to`.
    fn lock_and_populate(&self, from: usize, to: usize, caller: Caller) -> Result<(), Error> {
        let settings = self.settings;
        // More than the machine's memory (or the node's, for a required
        // placement) can be neither pinned nor faulted in: say so now rather
        // than after the kernel has tried (and pushed everything else out
        // of memory on the way).
        if settings.prefault && to - from > settings.memory {
            return Err(Error::OutOfMemory {
                requested: to - from,
                available: settings.memory,
            });
        }
        // Before a page is touched: a mapping made afresh (a shared or
        // huge-page commit) does not keep the reservation's policy.
        self.bind(from, to, caller)?;
        let mut populated = false;
        if settings.pinning != Pinning::Off {
            // Keep the locked part a prefix: lock from its end, which is
            // below `from` where an earlier lock was refused.
            // Relaxed: under the commit lock.
            let locked = self.locked.load(Ordering::Relaxed);
            // A large commit right after the locked prefix: lock it from
            // several threads, each faulting its own part in.
            // SAFETY: `from..to` was mapped just now, nothing refers to it.
            let in_threads = settings.prefault
                && caller == Caller::User
                && locked == from
                && populate::worth_threads(to - from)
                && unsafe { populate::lock_in_threads(self.ptr, from, to, settings.node) };
            let result = if in_threads {
                Ok(())
            } else {
                // SAFETY: `locked..to` is mapped (committed or just mapped).
                unsafe { self.raw.lock(self.ptr, locked, to, settings.prefault) }
            };
            match result {
                Ok(()) => {
                    self.locked.store(to, Ordering::Relaxed);
                    populated |= settings.prefault;
                }
                Err(source) => {
                    let required = settings.pinning == Pinning::Required;
                    if required {
                        // The error says it all to a caller that gets it.
                        if caller == Caller::Allocator && !settings.quiet {
                            report::refusal(to - locked, &source, true);
                        }
                        return Err(pin_error(to - locked, source));
                    }
                    // Best effort: pin what the limit still allows, a step
                    // at a time, and go on unpinned past it.
                    let step = COMMIT_STEP.max(self.granule);
                    let mut end = locked;
                    while end < to {
                        let next = (end + step).min(to);
                        // SAFETY: as above, a part of `locked..to`.
                        if unsafe { self.raw.lock(self.ptr, end, next, settings.prefault) }.is_err()
                        {
                            break;
                        }
                        end = next;
                    }
                    self.locked.store(end, Ordering::Relaxed);
                    if !settings.quiet && end < to {
                        report::refusal(to - end, &source, false);
                    }
                }
            }
        }
        if settings.prefault && !populated {
            if caller == Caller::User && populate::worth_threads(to - from) {
                // SAFETY: as above.
                unsafe { populate::in_threads(self.ptr, from, to, settings.node)? };
            } else {
                // SAFETY: as above.
                unsafe { self.raw.populate(self.ptr, from, to)? };
            }
        }
        Ok(())
    }

    /// Binds `from..to` of the reservation to the Block's node, if it has
    /// one (see [`bind_reservation`](Region::bind_reservation) for what a
    /// refusal does).
    fn bind(&self, from: usize, to: usize, caller: Caller) -> Result<(), Error> {
        let Some((node, placement)) = self.placement else {
            return Ok(());
        };
        // SAFETY: `from..to` lies in our own reservation, page-aligned.
        let bound = unsafe { numa::bind(self.ptr.as_ptr().add(from), to - from, node, placement) };
        match bound {
            Ok(()) => Ok(()),
            Err(source) => self.refused(node, placement, source, caller),
        }
    }

    /// Binds the whole reservation to `node` as `placement` says, before
    /// anything is committed, and records it. A refusal (`EPERM`,
    /// `ENOSYS`: the system forbids memory policies) is
    /// [`Error::Placement`] when placement is required (told once on
    /// standard error too when an allocator opens the Block, whose error
    /// reaches no one); best effort tells standard error once and goes on
    /// unbound. `EINVAL` (a node this process may not use: its cpuset) is
    /// [`Error::Node`] either way.
    fn bind_reservation(
        &mut self,
        node: Node,
        placement: Placement,
        caller: Caller,
    ) -> Result<(), Error> {
        // SAFETY: the whole reservation, ours, page-aligned.
        match unsafe { numa::bind(self.ptr.as_ptr(), self.capacity, node, placement) } {
            Ok(()) => {
                self.placement = Some((node, placement));
                Ok(())
            }
            Err(source) => self.refused(node, placement, source, caller),
        }
    }

    /// What a refused `mbind` of the Block to `node` means; see
    /// [`bind_reservation`](Region::bind_reservation).
    fn refused(
        &self,
        node: Node,
        placement: Placement,
        source: std::io::Error,
        caller: Caller,
    ) -> Result<(), Error> {
        let quiet = self.settings.quiet;
        match numa::refusal(&source) {
            numa::Refusal::Forbidden => {
                let required = placement == Placement::Required;
                if required {
                    if caller == Caller::Allocator && !quiet {
                        report::placement_refusal(node.index(), &source, true);
                    }
                    return Err(Error::Placement {
                        node: node.index(),
                        source,
                    });
                }
                if !quiet {
                    report::placement_refusal(node.index(), &source, false);
                }
                Ok(())
            }
            numa::Refusal::NotAllowed => Err(Error::Node {
                node: node.index(),
                reason: "not among the memory nodes this process may use (its cpuset: \
                         Mems_allowed in /proc/self/status)",
            }),
            numa::Refusal::Other => Err(Error::Os {
                call: "mbind",
                source,
            }),
        }
    }

    /// The NUMA node the Block's pages are bound to: the one
    /// [`BlockOptions::node`] asked for, once the system accepted the
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
        let _lock = self.commit_lock().lock();
        // SAFETY: we hold the commit lock, which guards the watchers.
        if unsafe { &*self.watchers.get() }.iter().any(Option::is_some) {
            return Err(Error::Registered);
        }
        // Relaxed: only holders of the commit lock store these.
        let committed = self.committed.load(Ordering::Relaxed);
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
            // Relaxed, all: under the commit lock.
            let locked = self.locked.load(Ordering::Relaxed);
            self.unlocked
                .fetch_sub(to.min(locked).saturating_sub(from), Ordering::Relaxed);
            self.discarded.fetch_sub(to - from, Ordering::Relaxed);
        });
        // Release: no thread may use the range from here (the caller's
        // contract); lower it before the pages go, so that a reader never
        // sees a committed size covering unmapped pages.
        self.committed.store(keep, Ordering::Release);
        // SAFETY: the caller's contract; `keep..committed` is mapped.
        let result = unsafe { self.raw.unmap(self.ptr, keep, committed) };
        let locked = self.locked.load(Ordering::Relaxed);
        self.locked.store(locked.min(keep), Ordering::Relaxed);
        // Unlocked bytes past `keep` were discarded ones, counted out above:
        // what is left is below `keep`.
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
        let _lock = self.commit_lock().lock();
        // SAFETY: we hold the commit lock, which guards the watchers.
        if unsafe { &*self.watchers.get() }.iter().any(Option::is_some) {
            return Err(Error::Registered);
        }
        // SAFETY: the caller's contract; the range is committed.
        unsafe { self.raw.discard(self.ptr, from, to)? };
        // Relaxed, all: under the commit lock.
        self.discarded.fetch_add(to - from, Ordering::Relaxed);
        let locked = self.locked.load(Ordering::Relaxed);
        self.unlocked
            .fetch_add(to.min(locked).saturating_sub(from), Ordering::Relaxed);
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
        let _lock = self.commit_lock().lock();
        let settings = self.settings;
        // Relaxed, all: under the commit lock.
        let locked = self.locked.load(Ordering::Relaxed);
        let relock = to.min(locked).saturating_sub(from);
        let mut populated = false;
        if relock > 0 && settings.pinning != Pinning::Off {
            // SAFETY: the range is committed (mapped) and ours.
            match unsafe {
                self.raw
                    .lock(self.ptr, from, from + relock, settings.prefault)
            } {
                Ok(()) => {
                    self.unlocked.fetch_sub(relock, Ordering::Relaxed);
                    populated = settings.prefault && relock == to - from;
                }
                Err(source) => {
                    let required = settings.pinning == Pinning::Required;
                    if !settings.quiet {
                        report::refusal(relock, &source, required);
                    }
                    if required {
                        return Err(pin_error(relock, source));
                    }
                }
            }
        }
        if settings.prefault && !populated {
            // SAFETY: as above.
            unsafe { self.raw.populate(self.ptr, from, to)? };
        }
        self.discarded.fetch_sub(to - from, Ordering::Relaxed);
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
    /// capacity this mapping reserved ([`BlockOptions::capacity`] at
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
        let _lock = self.commit_lock().lock();
        // SAFETY: we hold the commit lock, which guards the watchers.
        for watcher in unsafe { &*self.watchers.get() }.iter().flatten() {
            // SAFETY: registered with this `data`, under the commit lock.
            unsafe { (watcher.reused)(watcher.data) };
        }
    }

    /// Adds a watcher, told of every commit from now on.
    pub(crate) fn watch(&self, watcher: Watcher) -> Watch {
        let _lock = self.commit_lock().lock();
        // SAFETY: we hold the commit lock, which guards the watchers.
        let slots = unsafe { &mut *self.watchers.get() };
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
        // Relaxed: under the commit lock, which every store holds.
        Watch::Added(self.committed.load(Ordering::Relaxed))
    }

    /// The first byte, as the non-null pointer it is.
    #[inline]
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Removes the watcher added by `watch` with this `data`; after this
    /// returns, it is not called again.
    pub(crate) fn unwatch(&self, data: *const ()) {
        let _lock = self.commit_lock().lock();
        // SAFETY: we hold the commit lock, which guards the watchers.
        let slots = unsafe { &mut *self.watchers.get() };
        if let Some(slot) = slots
            .iter_mut()
            .find(|slot| slot.is_some_and(|watcher| watcher.data == data))
        {
            *slot = None;
        }
    }

    /// Gives a handle through which another process (or a second mapping in
    /// this one, see [`Block::attach`]) reaches the same pages: on Linux an
    /// owned, close-on-exec duplicate of the sealed memfd of a Block opened
    /// with [`BlockOptions::shared`], on Apple platforms a Mach send right.
    ///
    /// Whoever holds the memfd can read and write every page and punch
    /// holes (zeroing them; in huge pages, see [`Pages::Huge2M`]), but can
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

/// Who commits: whether the commit may populate its pages from several
/// threads, and whether its error reaches anyone.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Caller {
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

/// A reserved range of address space with a committed prefix: pinned,
/// page-aligned, at a stable address, growable in place.
///
/// On Linux a Block is private anonymous memory by default (a forked child
/// gets a copy; transparent huge pages apply), or a sealed memfd mapped
/// shared when [`BlockOptions::shared`] asks for one; committed pages are
/// locked with `mlock`. On Apple platforms it is an IOSurface locked at
/// creation, all committed at open; elsewhere (and under Miri) page-aligned
/// heap memory. A Block dereferences to its [`Region`] for the address,
/// sizes, commits and handle.
///
/// ```
/// use unimem::{BlockOptions, Pinning};
///
/// let mut block = BlockOptions::new().pinning(Pinning::BestEffort).open(4096)?;
/// block.as_f32_mut()[0] = 1.5;
/// assert_eq!(block.as_f32()[0], 1.5);
/// assert_eq!(block.as_ptr() as usize % unimem::page_size(), 0);
/// # Ok::<(), unimem::Error>(())
/// ```
pub struct Block {
    region: Region,
}

impl Block {
    /// Opens a pinned Block of at least `bytes` bytes, rounded up to whole
    /// pages, all committed, with the default [`BlockOptions`].
    pub fn open(bytes: usize) -> Result<Block, Error> {
        Block::open_with(bytes, &BlockOptions::new())
    }

    /// Opens a Block reserving `max(bytes, options.capacity)` bytes and
    /// committing `bytes` of them (zero is allowed when the capacity is
    /// not), with `options`.
    pub fn open_with(bytes: usize, options: &BlockOptions<'_>) -> Result<Block, Error> {
        let block =
            Block::reserve_for(bytes.max(options.capacity), 1, bytes, options, Caller::User)?;
        block.commit_to(bytes, Caller::User)?;
        Ok(block)
    }

    /// Reserves `capacity` bytes as `options` say and commits nothing (an
    /// allocator's lazy Block).
    pub(crate) fn reserve(capacity: usize, options: &BlockOptions<'_>) -> Result<Block, Error> {
        Block::reserve_aligned(capacity, 1, options)
    }

    /// As [`reserve`](Block::reserve), the first byte aligned to at least
    /// `align` (a power of two).
    pub(crate) fn reserve_aligned(
        capacity: usize,
        align: usize,
        options: &BlockOptions<'_>,
    ) -> Result<Block, Error> {
        Block::reserve_for(capacity, align, 0, options, Caller::Allocator)
    }

    /// As [`reserve_aligned`](Block::reserve_aligned), for a caller that
    /// commits `open` bytes right after: the program itself (`User`), or an
    /// allocator.
    fn reserve_for(
        capacity: usize,
        align: usize,
        open: usize,
        options: &BlockOptions<'_>,
        caller: Caller,
    ) -> Result<Block, Error> {
        if options.label.as_bytes().contains(&0) {
            return Err(Error::InvalidArgument {
                reason: "a Block label cannot contain a NUL byte",
            });
        }
        // The node exists and has memory (and this platform places pages)
        // before anything is reserved.
        let node_memory = options.node.map(numa::check).transpose()?;
        let granule = options.granule();
        let capacity = round_to(capacity, granule)?;
        // Transparent huge pages need 2 MiB-aligned 2 MiB ranges.
        let align = if options.pages == Pages::Transparent && capacity >= COMMIT_STEP {
            COMMIT_STEP
        } else {
            granule
        }
        .max(align);
        // `open` in granules, as the commit right after rounds it.
        let open = open.checked_next_multiple_of(granule).unwrap_or(usize::MAX);
        let reserved = <imp::Raw as Platform>::reserve(capacity, granule, align, open, options)?;
        let mut region = Region::new(reserved, Settings::of(options, node_memory));
        if let Some(node) = options.node {
            // Dropping the Region on an error releases the reservation.
            region.bind_reservation(node, options.placement, caller)?;
        }
        Ok(Block { region })
    }

    /// Maps the pages behind `export` (from [`Region::share`], here or in
    /// another process), pinned as the default [`BlockOptions`] say.
    ///
    /// On Linux the fd must be a memfd sealed against shrinking (and not
    /// against writing), of a whole number of pages, and of base pages
    /// unless [`BlockOptions::accept_huge_page_sigbus`] accepts a huge-page
    /// one; anything else is [`Error::BadHandle`]. The fd is untrusted: its
    /// size is checked against the memory that can be committed and locked
    /// before a page is touched. The new Block maps what the memfd's size
    /// covers at that moment, while the owner may be growing it; with
    /// [`BlockOptions::capacity`] it reserves room to
    /// [`follow`](Region::follow) the owner's growth. It never resizes the
    /// memfd: committing past what the owner committed is
    /// [`Error::InvalidArgument`] (a Tape over an attached Block stops
    /// there).
    ///
    /// # Safety
    /// The new Block aliases every other mapping of the same pages, in this
    /// process and others. Rust's aliasing rules then rest on the caller: while
    /// a reference from one mapping's views (`as_bytes`, `as_f32`, ...) is
    /// alive, no other mapping may write the bytes it covers, and a `_mut` view
    /// of one mapping must not overlap any access through another. Share
    /// memory under a protocol (a fence, a flag, a channel) that orders the
    /// writers.
    pub unsafe fn attach(export: Export) -> Result<Block, Error> {
        // SAFETY: the caller upholds `attach_with`'s contract, which is ours.
        unsafe { Block::attach_with(export, &BlockOptions::new()) }
    }

    /// [`Block::attach`] with `options` (pinning, prefault, quiet and
    /// capacity; the label and pages were fixed by the owner, and so was the
    /// placement: a node is [`Error::InvalidArgument`]).
    ///
    /// # Safety
    /// As [`Block::attach`].
    pub unsafe fn attach_with(export: Export, options: &BlockOptions<'_>) -> Result<Block, Error> {
        if options.node.is_some() {
            return Err(Error::InvalidArgument {
                reason: "attach takes no NUMA node: the owner of a shared Block places its \
                         pages (open it with BlockOptions::node)",
            });
        }
        // SAFETY: the caller upholds the aliasing contract documented above.
        let (reserved, size) = unsafe { <imp::Raw as Platform>::attach(export, options)? };
        let block = Block {
            region: Region::new(reserved, Settings::of(options, None)),
        };
        block.commit_to(size, Caller::Follower)?;
        Ok(block)
    }

    /// Decommits everything past the first `keep` bytes (rounded up to the
    /// granule): the pages go back to the system, unlocked, and read as zero
    /// if committed again. The capacity stays reserved.
    ///
    /// Errors: a shared Block ([`Error::Unsupported`]: other processes may
    /// map the pages), or one registered with a device
    /// ([`Error::Registered`]: the device may still use them).
    pub fn decommit(&mut self, keep: usize) -> Result<(), Error> {
        // SAFETY: `&mut self`: no view into the bytes is alive, and the
        // Block's own allocator (if any) is not using it.
        unsafe { self.region.decommit_to(keep) }
    }

    /// Gives up the views, keeping only the [`Region`].
    pub fn into_region(self) -> Region {
        self.region
    }

    /// The committed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: the committed bytes are mapped and initialized while they
        // stay committed (backend contract 2); decommitting takes `&mut self`,
        // which `&self` excludes. No `&mut` view can exist at the same time,
        // and other mappings are excluded by `attach`'s contract.
        unsafe { core::slice::from_raw_parts(self.as_ptr(), self.committed()) }
    }

    /// The committed bytes, mutably.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `as_bytes`; `&mut self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(self.as_ptr(), self.committed()) }
    }

    /// The committed bytes as `f32`s (a page-aligned Block holds a whole
    /// number of them).
    pub fn as_f32(&self) -> &[f32] {
        // SAFETY: as `as_bytes`; the address is page-aligned, hence aligned for
        // f32, the size is a multiple of 4, and every bit pattern is an f32.
        unsafe { core::slice::from_raw_parts(self.as_ptr().cast(), self.committed() / 4) }
    }

    /// The committed bytes as `f32`s, mutably.
    pub fn as_f32_mut(&mut self) -> &mut [f32] {
        // SAFETY: as `as_f32`; `&mut self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(self.as_ptr().cast(), self.committed() / 4) }
    }

    /// The committed bytes as `u16`s (half-precision and bfloat16 tensors).
    pub fn as_u16(&self) -> &[u16] {
        // SAFETY: as `as_f32`, for u16.
        unsafe { core::slice::from_raw_parts(self.as_ptr().cast(), self.committed() / 2) }
    }

    /// The committed bytes as `u16`s, mutably.
    pub fn as_u16_mut(&mut self) -> &mut [u16] {
        // SAFETY: as `as_u16`; `&mut self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(self.as_ptr().cast(), self.committed() / 2) }
    }
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

impl Deref for Block {
    type Target = Region;

    fn deref(&self) -> &Region {
        &self.region
    }
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Block").field(&self.region).finish()
    }
}

#[cfg(test)]
mod tests;
