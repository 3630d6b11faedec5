//! [`Block`]: an owned reservation with its bytes (part of `block`).

use core::fmt;
use core::ops::Deref;

use super::commit::Caller;
use super::{
    BlockOptions, COMMIT_STEP, Export, Pages, Platform, Region, Settings, imp, numa, round_to,
};
use crate::Error;

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
