//! [`BlockOptions`], [`Pinning`] and [`Pages`]: how a Block is opened (part
//! of `block`).

use super::numa::{Node, Placement};
use super::{Block, page_size};
use crate::Error;

/// Whether a Block must be pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Pinning {
    /// `mlock` must succeed, or the commit fails: opening returns
    /// [`Error::Pin`], an allocator's growth fails that allocation (or
    /// spills, and says so once on standard error).
    Required,
    /// Try `mlock` at every commit; where it is refused, go on unpinned
    /// ([`Region::is_pinned`](crate::Region::is_pinned) says whether everything committed is locked,
    /// [`Region::locked`](crate::Region::locked) how much), and tell standard error once per
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
    ///   [`Block::attach`](crate::Block::attach) maps a huge-page memfd only with
    ///   [`BlockOptions::accept_huge_page_sigbus`], and the owner trusts
    ///   whoever it gives the fd to.
    Huge2M,
    /// Explicit 1 GiB huge pages, as [`Pages::Huge2M`](crate::Pages::Huge2M)
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

/// How to open a [`Block`](crate::Block): capacity, sharing, pinning, prefaulting, pages
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
    /// limit), and [`Region::is_pinned`](crate::Region::is_pinned) and [`Region::locked`](crate::Region::locked) say what
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
    /// only what it is asked for; [`Region::commit`](crate::Region::commit) commits more in place,
    /// up to the capacity. Less than what is opened means the same.
    pub const fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// Whether another process can map the same pages ([`Region::share`](crate::Region::share),
    /// [`Block::attach`](crate::Block::attach)): on Linux a sealed memfd mapped `MAP_SHARED`
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
    /// only to processes trusted with the contents; see [`Pages::Huge2M`](crate::Pages::Huge2M)
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
    /// is killed with SIGBUS (see [`Pages::Huge2M`](crate::Pages::Huge2M)), and leaving the
    /// Block out spares the copy of its page tables at every `fork` too.
    /// Also for [`Block::attach`](crate::Block::attach). Other backends refuse `false`
    /// ([`Error::Unsupported`]).
    pub const fn inherit(mut self, inherit: bool) -> Self {
        self.inherit = inherit;
        self
    }

    /// Whether [`Block::attach`](crate::Block::attach) may map a memfd of explicit huge pages
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
    /// says how strictly (best effort by default), [`Region::node`](crate::Region::node) whether
    /// the binding took, and [`Region::nodes`](crate::Region::nodes) where the pages are.
    /// Allocators pass it on to every data Block they open (a Tape, Heap or
    /// Grid near a GPU); their metadata Blocks, which devices never see,
    /// are not placed. [`Block::attach`](crate::Block::attach) takes no node: the owner placed the
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

    /// These options for an allocator's own metadata (a Heap's headers and
    /// caches, a Grid's links): private, unpinned, base pages, on no
    /// particular NUMA node, capacity as opened. Devices never see such a
    /// Block, and locked memory is kept for the data.
    pub(crate) const fn for_metadata(self) -> Self {
        self.pinning(Pinning::Off)
            .prefault(false)
            .pages(Pages::Base)
            .shared(false)
            .node(None)
            .capacity(0)
    }

    /// The granule of Blocks opened with these options: the huge page size
    /// for explicit huge pages, else the page size.
    pub(crate) fn granule(&self) -> usize {
        self.pages.huge_page_size().unwrap_or(0).max(page_size())
    }
}
