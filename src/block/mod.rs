//! [`Block`]: one pinned, page-aligned region with a stable address.
//!
//! # The backend contract
//!
//! Exactly one backend is compiled, chosen here by `cfg`:
//!
//! | backend | chosen when | memory | export handle |
//! |---|---|---|---|
//! | `linux.rs` | Linux, not Miri | sealed `memfd`, `mmap(MAP_SHARED)`, `mlock` | the memfd |
//! | `apple.rs` | Apple targets, not Miri | IOSurface, locked at creation, `mlock` | a Mach port |
//! | `portable.rs` | everything else, and Miri | page-aligned `System` memory | none |
//!
//! Each backend implements [`Backend`] for its `Raw` type, which owns the
//! operating-system object behind one mapping. Whatever the backend, a
//! [`Region`] it returns satisfies:
//!
//! 1. `ptr` is aligned to [`page_size()`] and `size` is a positive multiple of it;
//! 2. the bytes `ptr..ptr + size` are mapped, initialized (zero for a fresh
//!    block) and readable and writable until `release` runs;
//! 3. `ptr` never changes for the region's lifetime;
//! 4. `pinned` is true only if the pages are locked in memory;
//! 5. nothing on `open` allocates through the global allocator, so a global
//!    allocator may open Blocks.

use core::fmt;
use core::ops::Deref;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::Error;

#[cfg(all(target_os = "linux", not(miri)))]
#[path = "linux.rs"]
mod imp;

#[cfg(all(target_vendor = "apple", not(miri)))]
#[path = "apple.rs"]
mod imp;

#[cfg(not(any(
    all(target_os = "linux", not(miri)),
    all(target_vendor = "apple", not(miri))
)))]
#[path = "portable.rs"]
mod imp;

pub use imp::Export;
#[cfg(target_vendor = "apple")]
pub use imp::IOSurfaceRef;

/// What a platform backend provides; see the module documentation.
pub(crate) trait Backend: Sized {
    /// Maps `size` bytes, a positive multiple of the page size, as `options` say.
    fn open(size: usize, options: &BlockOptions<'_>) -> Result<Region, Error>;

    /// Gives a handle through which another mapping reaches the same pages.
    fn share(&self) -> Result<Export, Error>;

    /// Maps the pages behind `export`.
    ///
    /// # Safety
    /// As [`Block::attach`].
    unsafe fn attach(export: Export, options: &BlockOptions<'_>) -> Result<Region, Error>;

    /// Unmaps the region and releases the operating-system object.
    ///
    /// # Safety
    /// `ptr` and `size` are the ones this backend returned with `self`, and no
    /// reference into the region outlives this call.
    unsafe fn release(&mut self, ptr: NonNull<u8>, size: usize);
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
    let page = imp::system_page_size();
    PAGE.store(page, Ordering::Relaxed);
    page
}

/// Rounds `bytes` up to whole pages, rejecting zero and overflow.
pub(crate) fn round_to_pages(bytes: usize) -> Result<usize, Error> {
    if bytes == 0 {
        return Err(Error::ZeroSize);
    }
    match bytes.checked_next_multiple_of(page_size()) {
        Some(size) if size <= isize::MAX as usize => Ok(size),
        _ => Err(Error::Overflow { requested: bytes }),
    }
}

/// Whether a Block must be pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Pinning {
    /// `mlock` must succeed, or opening fails with [`Error::Pin`]. The default.
    #[default]
    Required,
    /// Try `mlock`; if it fails, keep the Block unpinned
    /// ([`Region::is_pinned`] says which happened).
    BestEffort,
}

/// How to open a [`Block`]: pinning, prefaulting, huge pages and a label.
///
/// ```
/// use unimem::{BlockOptions, Pinning};
///
/// let block = BlockOptions::new()
///     .pinning(Pinning::BestEffort)
///     .label("weights")
///     .open(1 << 20)?;
/// assert!(block.size() >= 1 << 20);
/// # Ok::<(), unimem::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockOptions<'a> {
    pub(crate) pinning: Pinning,
    pub(crate) prefault: bool,
    pub(crate) huge_pages: bool,
    pub(crate) label: &'a str,
}

impl Default for BlockOptions<'_> {
    fn default() -> Self {
        BlockOptions::new()
    }
}

impl<'a> BlockOptions<'a> {
    /// Pinning required, pages prefaulted, huge-page advice on, label `"unimem"`.
    pub const fn new() -> Self {
        BlockOptions {
            pinning: Pinning::Required,
            prefault: true,
            huge_pages: true,
            label: "unimem",
        }
    }

    /// Whether `mlock` must succeed.
    pub const fn pinning(mut self, pinning: Pinning) -> Self {
        self.pinning = pinning;
        self
    }

    /// Whether every page is faulted in at open (the default): by `mlock`
    /// itself when pinning, else by `MADV_POPULATE_WRITE` on Linux (which,
    /// unlike `MAP_POPULATE`, reports failure). Without it the pages are
    /// locked as they are first touched (`MLOCK_ONFAULT` on Linux), so
    /// opening is fast and the cost moves to first use.
    pub const fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }

    /// Whether to advise transparent huge pages (`MADV_HUGEPAGE`) for Blocks of
    /// at least one huge page (2 MiB with 4 KiB pages). Advice only: the
    /// kernel's `shmem_enabled` setting decides.
    pub const fn huge_pages(mut self, huge_pages: bool) -> Self {
        self.huge_pages = huge_pages;
        self
    }

    /// A name for the memory: it shows in `/proc/<pid>/maps` as
    /// `/memfd:<label>` on Linux. Longer than 249 bytes is cut; a NUL byte is
    /// an error at open.
    pub const fn label(mut self, label: &'a str) -> Self {
        self.label = label;
        self
    }

    /// Opens a Block of at least `bytes` bytes with these options.
    pub fn open(&self, bytes: usize) -> Result<Block, Error> {
        Block::open_with(bytes, self)
    }
}

/// The address range, size and platform handle of a [`Block`], without access
/// to its bytes.
///
/// Allocators hand this out (`tape.block()`): the allocations they give out
/// are the only sound way to reach the bytes while they own the Block.
pub struct Region {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) size: usize,
    pub(crate) pinned: bool,
    pub(crate) raw: imp::Raw,
}

// SAFETY: a Region owns its mapping like a `Box<[u8]>` owns its buffer; it
// hands out only a raw pointer and plain values, never references into the
// bytes, and the OS objects it holds (an fd, an IOSurface) may be used and
// released from any thread.
unsafe impl Send for Region {}
// SAFETY: as above; every `&self` method reads fields that never change.
unsafe impl Sync for Region {}

impl Region {
    /// The first byte. Page-aligned; the same for the region's whole life.
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The size in bytes: a whole number of pages.
    #[inline]
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether the pages are locked in memory.
    #[inline]
    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// Whether `ptr` points into this region.
    #[inline]
    pub fn contains(&self, ptr: *const u8) -> bool {
        ptr.addr().wrapping_sub(self.ptr.as_ptr().addr()) < self.size
    }

    /// Gives a handle through which another process (or a second mapping in
    /// this one, see [`Block::attach`]) reaches the same pages: a sealed memfd
    /// on Linux, a Mach send right on Apple platforms.
    ///
    /// The portable backend has no such handle and returns
    /// [`Error::Unsupported`].
    pub fn share(&self) -> Result<Export, Error> {
        self.raw.share()
    }

    /// The memfd behind the mapping.
    #[cfg(all(target_os = "linux", not(miri)))]
    pub fn handle(&self) -> std::os::fd::BorrowedFd<'_> {
        self.raw.handle()
    }

    /// The IOSurface behind the mapping, for Metal and the ANE.
    #[cfg(all(target_vendor = "apple", not(miri)))]
    pub fn handle(&self) -> IOSurfaceRef {
        self.raw.handle()
    }

    /// The IOSurface's ID.
    #[cfg(all(target_vendor = "apple", not(miri)))]
    pub fn id(&self) -> u32 {
        self.raw.id()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `size` came from the backend with `raw`; a Region
        // hands out no references, and every borrow of a Block or an allocator
        // that owns this Region has ended.
        unsafe { self.raw.release(self.ptr, self.size) }
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("ptr", &self.ptr)
            .field("size", &self.size)
            .field("pinned", &self.pinned)
            .finish_non_exhaustive()
    }
}

/// One pinned, page-aligned region of memory with a stable address.
///
/// On Linux the pages belong to a sealed memfd, mapped shared and locked with
/// `mlock`; on Apple platforms to an IOSurface locked at creation; elsewhere
/// (and under Miri) to page-aligned heap memory. A Block dereferences to its
/// [`Region`] for the address, size and handle.
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
    /// Opens a pinned Block of at least `bytes` bytes, rounded up to whole pages,
    /// with the default [`BlockOptions`].
    pub fn open(bytes: usize) -> Result<Block, Error> {
        Block::open_with(bytes, &BlockOptions::new())
    }

    /// Opens a Block of at least `bytes` bytes with `options`.
    pub fn open_with(bytes: usize, options: &BlockOptions<'_>) -> Result<Block, Error> {
        if options.label.as_bytes().contains(&0) {
            return Err(Error::InvalidArgument {
                reason: "a Block label cannot contain a NUL byte",
            });
        }
        let size = round_to_pages(bytes)?;
        let region = <imp::Raw as Backend>::open(size, options)?;
        Ok(Block { region })
    }

    /// Maps the pages behind `export` (from [`Region::share`], here or in
    /// another process), pinned as the default [`BlockOptions`] say.
    ///
    /// On Linux the fd must be a memfd sealed against shrinking and growing,
    /// of a whole number of pages; anything else is [`Error::BadHandle`].
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

    /// [`Block::attach`] with `options` (pinning and prefault; the label and
    /// huge-page advice were fixed by the owner).
    ///
    /// # Safety
    /// As [`Block::attach`].
    pub unsafe fn attach_with(export: Export, options: &BlockOptions<'_>) -> Result<Block, Error> {
        // SAFETY: the caller upholds the aliasing contract documented above.
        let region = unsafe { <imp::Raw as Backend>::attach(export, options)? };
        Ok(Block { region })
    }

    /// Gives up the views, keeping only the [`Region`].
    pub fn into_region(self) -> Region {
        self.region
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: the region's bytes are mapped and initialized for its lifetime
        // (backend contract 2), which `&self` covers; no `&mut` view can exist
        // at the same time, and other mappings are excluded by `attach`'s
        // contract.
        unsafe { core::slice::from_raw_parts(self.as_ptr(), self.size()) }
    }

    /// The bytes, mutably.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `as_bytes`; `&mut self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(self.as_ptr(), self.size()) }
    }

    /// The bytes as `f32`s (a page-aligned block holds a whole number of them).
    pub fn as_f32(&self) -> &[f32] {
        // SAFETY: as `as_bytes`; the address is page-aligned, hence aligned for
        // f32, the size is a multiple of 4, and every bit pattern is an f32.
        unsafe { core::slice::from_raw_parts(self.as_ptr().cast(), self.size() / 4) }
    }

    /// The bytes as `f32`s, mutably.
    pub fn as_f32_mut(&mut self) -> &mut [f32] {
        // SAFETY: as `as_f32`; `&mut self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(self.as_ptr().cast(), self.size() / 4) }
    }

    /// The bytes as `u16`s (half-precision and bfloat16 tensors).
    pub fn as_u16(&self) -> &[u16] {
        // SAFETY: as `as_f32`, for u16.
        unsafe { core::slice::from_raw_parts(self.as_ptr().cast(), self.size() / 2) }
    }

    /// The bytes as `u16`s, mutably.
    pub fn as_u16_mut(&mut self) -> &mut [u16] {
        // SAFETY: as `as_u16`; `&mut self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(self.as_ptr().cast(), self.size() / 2) }
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
mod tests {
    use super::*;

    fn options() -> BlockOptions<'static> {
        BlockOptions::new().pinning(Pinning::BestEffort)
    }

    #[test]
    fn sizes_round_to_pages() {
        let page = page_size();
        assert!(page.is_power_of_two());
        let block = options().open(1).unwrap();
        assert_eq!(block.size(), page);
        assert_eq!(block.as_ptr().addr() % page, 0);
        let block = options().open(page + 1).unwrap();
        assert_eq!(block.size(), 2 * page);
    }

    #[test]
    fn bad_sizes_are_typed_errors() {
        assert!(matches!(options().open(0), Err(Error::ZeroSize)));
        assert!(matches!(
            options().open(usize::MAX),
            Err(Error::Overflow {
                requested: usize::MAX
            })
        ));
        assert!(matches!(
            options().open(isize::MAX as usize + 2),
            Err(Error::Overflow { .. })
        ));
    }

    /// Sizes that round and fit the address space, but that no machine can
    /// pin or fault in, fail at once with the errno the kernel would give.
    #[cfg(all(target_os = "linux", not(miri)))]
    #[test]
    fn more_than_physical_memory_is_an_error_when_pinned_or_prefaulted() {
        let huge = 1usize << 46;
        match BlockOptions::new().open(huge) {
            Err(error @ Error::Pin { .. }) => assert_eq!(error.raw_os_error(), Some(12)),
            other => panic!("pinning 64 TiB gave {other:?}"),
        }
        match options().open(huge) {
            Err(error @ Error::Os { .. }) => assert_eq!(error.raw_os_error(), Some(12)),
            other => panic!("prefaulting 64 TiB gave {other:?}"),
        }
        // Neither pinned nor prefaulted, 64 TiB is address space only, which
        // the kernel may or may not grant; either way the answer is clean.
        match options().prefault(false).open(huge) {
            Ok(block) => assert_eq!(block.size(), huge),
            Err(error) => assert!(error.raw_os_error().is_some(), "{error}"),
        }
    }

    #[test]
    fn label_with_nul_is_rejected() {
        assert!(matches!(
            options().label("a\0b").open(4096),
            Err(Error::InvalidArgument { .. })
        ));
    }

    #[test]
    fn views_see_the_same_bytes() {
        let mut block = options().open(4096).unwrap();
        assert!(
            block.as_bytes().iter().all(|&b| b == 0),
            "fresh blocks are zero"
        );
        block.as_f32_mut()[1] = 1.0;
        assert_eq!(&block.as_bytes()[4..8], &1.0f32.to_ne_bytes());
        block.as_u16_mut()[0] = 0xBEEF;
        assert_eq!(block.as_u16()[0], 0xBEEF);
        assert_eq!(block.as_f32().len(), block.size() / 4);
        assert_eq!(block.as_u16().len(), block.size() / 2);
        assert!(block.contains(block.as_ptr()));
        assert!(block.contains(block.as_ptr().wrapping_add(block.size() - 1)));
        assert!(!block.contains(block.as_ptr().wrapping_add(block.size())));
        assert!(!block.contains(block.as_ptr().wrapping_sub(1)));
    }

    #[test]
    fn address_is_stable_across_moves() {
        let block = options().open(4096).unwrap();
        let ptr = block.as_ptr();
        let moved = std::thread::spawn(move || block).join().unwrap();
        assert_eq!(moved.as_ptr(), ptr);
        let region = moved.into_region();
        assert_eq!(region.as_ptr(), ptr);
    }
}
