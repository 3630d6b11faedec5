//! Linux backend: a `PROT_NONE` reservation, committed in place.
//!
//! - **Private** (the default): anonymous memory. Committing makes a range
//!   readable and writable (`mprotect`); decommitting unlocks it, drops its
//!   pages (`MADV_DONTNEED`) and makes it inaccessible again, keeping the
//!   range's label and huge-page advice. `fork` copies it into the child.
//! - **Shared**: a memfd, sealed at open, grown by its owner with
//!   `ftruncate` and mapped `MAP_SHARED | MAP_FIXED` over the reservation as
//!   it is committed; see [who may do what](#shared-blocks-who-may-do-what).
//! - **Explicit huge pages**: `MAP_HUGETLB` pages (private) or an
//!   `MFD_HUGETLB` memfd (shared) mapped over the reservation; the kernel
//!   takes them from its pool at `mmap`, so too few is an error there. A
//!   forked child shares a private huge-page Block's pages copy-on-write,
//!   and the copy comes from the pool too: a child that writes a page (or
//!   touches one the parent wrote since) when the pool has no free page is
//!   killed with SIGBUS.
//! - **Kept out of children** (`BlockOptions::inherit(false)`): every
//!   mapping of the Block is `MADV_DONTFORK`, so `fork` copies none of it;
//!   before `fork` returns in the child, the child reserves the range again,
//!   inaccessible ([`after_fork_in_child`]), so that nothing else is placed
//!   there and a touch is a SIGSEGV. (`MADV_WIPEONFORK`, which would leave
//!   zeros instead, is refused by the kernel for huge pages and memfds,
//!   and zeros under an allocator's live allocations would be worse than a
//!   fault.)
//!
//! # Shared Blocks: who may do what
//!
//! The owner (the process that opened the Block) creates the memfd and seals
//! it at once against shrinking and against any further seal
//! (`F_SEAL_SHRINK | F_SEAL_SEAL`); a Block that commits its whole capacity
//! at open is first sized to it and sealed against growing as well. The
//! memfd's size says how far the owner has committed: the owner grows it
//! before it maps more, and no one else in this crate ever resizes it. A
//! receiver ([`Block::attach`](super::Block::attach)) maps what the size
//! says, and [`follow`](super::Region::follow) maps up to the size again,
//! within the capacity the receiver reserved.
//!
//! Why not size the memfd to the whole capacity at open and seal it against
//! growing too, so that committing is only mapping and nobody can change
//! the size? Because the size would then no longer say how far the owner
//! has committed, and nothing else can tell a receiver without changing
//! what is sent (a header page inside the Block, a second fd): a receiver
//! would have to map the owner's whole capacity, and with prefault or
//! pinning fault all of it in, allocating pages the owner only reserved (a
//! lazy shared Tape of 64 GiB would cost every receiver 64 GiB).
//!
//! What each side trusts of the other holders of the fd:
//!
//! - **The owner** trusts them with the contents, as any shared memory
//!   does: they can write every byte (bytes the owner has not committed yet
//!   too, which are then not zero when it commits them) and punch holes
//!   (`fallocate(FALLOC_FL_PUNCH_HOLE)`, which zeroes pages). It trusts them
//!   with nothing else. No holder can shrink the memfd (pages vanishing
//!   under the owner's mapping would be SIGBUS) or seal it: `F_SEAL_SEAL`
//!   refuses `F_SEAL_WRITE`, `F_SEAL_FUTURE_WRITE` and `F_SEAL_GROW`, each
//!   of which would stop the owner's next commit. A holder can grow the
//!   memfd (`ftruncate` or `fallocate` past its end), which costs nothing
//!   until touched: the owner grows it only where it is smaller than what
//!   it commits, and goes on; receivers then follow it past what the owner
//!   committed, up to their own capacity.
//! - **A receiver** trusts the fd for nothing but its contents: `attach`
//!   checks that it is a memfd sealed against shrinking and not against
//!   writing, of whole pages, and that what pinning or prefaulting would
//!   fault in fits in the memory available (a sparse memfd of any size costs
//!   its sender nothing); `follow` checks what it adds the same way. A
//!   sender that kept the right to seal can seal against writing later (the
//!   next `follow` is an error), or grow the memfd past the receiver's
//!   capacity (`follow` maps up to the capacity and says
//!   [`Error::Capacity`]). A receiver never resizes the memfd: it commits
//!   only what the size covers.
//! - **Huge pages** (`MFD_HUGETLB`): a hole punched in a huge-page memfd
//!   gives its pages back to the system's pool, and the next touch of that
//!   range through any mapping takes a free huge page again. If the pool has
//!   none by then, that touch is SIGBUS, not an error, whether or not the
//!   pages were pinned. So `attach` refuses a huge-page memfd unless the
//!   receiver accepts the risk (`BlockOptions::accept_huge_page_sigbus`),
//!   and the owner of a shared huge-page Block trusts every holder of its fd
//!   not to punch holes.
//!
//! Every call here is a raw system call through `libc`; nothing allocates, so a
//! global allocator can open and grow Blocks from its first allocation.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{BlockOptions, Pages, Platform, Reserved, Shared, page_size};
use crate::Error;

/// What [`Region::share`](super::Region::share) returns on Linux: an owned,
/// close-on-exec duplicate of a shared Block's sealed memfd. Send it to
/// another process over a Unix socket (`SCM_RIGHTS`), or hand it to a child
/// on purpose: being close-on-exec, it does not survive `exec` as it is, so
/// duplicate it in the child between fork and exec (`dup2` onto a chosen
/// number, in `std::os::unix::process::CommandExt::pre_exec`), as
/// `examples/share.rs` does.
pub type Export = OwnedFd;

/// The operating-system side of one reservation.
pub(crate) struct Raw {
    /// The memfd of a shared Block; `None` for private memory.
    fd: Option<OwnedFd>,
    /// Whether this mapping opened the memfd and grows it (the owner), or
    /// attached it and maps only what the memfd's size covers.
    owner: bool,
    /// `MAP_HUGETLB` and its size flag for private explicit huge pages, 0
    /// otherwise.
    hugetlb: libc::c_int,
    /// The unit of commits: the page or huge page size.
    granule: usize,
    /// Whether forked children are kept out: every mapping of the
    /// reservation is `MADV_DONTFORK`, and the reservation is in
    /// [`KEPT_OUT`].
    kept_out: bool,
    /// The label, NUL-terminated, for ranges mapped afresh.
    name: [u8; NAME_MAX + 1],
}

/// The longest memfd name the kernel takes, without the NUL.
const NAME_MAX: usize = 249;
/// The longest anonymous-memory name (`PR_SET_VMA_ANON_NAME`), with the NUL.
const ANON_NAME_MAX: usize = 80;
/// `madvise` advice (Linux 5.18): `MADV_DONTNEED` that drops locked pages
/// too, leaving the range locked. Spelled here so that older C library
/// headers (and `libc` releases) need not have it.
const MADV_DONTNEED_LOCKED: libc::c_int = 24;

/// `label` as a NUL-terminated name, cut to `max` bytes at a character
/// boundary. Built on the stack: opening must not allocate.
fn name(label: &str, max: usize) -> [u8; NAME_MAX + 1] {
    let mut name = [0u8; NAME_MAX + 1];
    let mut end = label.len().min(max).min(NAME_MAX);
    while !label.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].copy_from_slice(&label.as_bytes()[..end]);
    name
}

/// The `mmap`/`memfd_create` size flag for explicit huge pages.
fn huge_flags(pages: Pages) -> Option<(libc::c_int, libc::c_uint)> {
    match pages {
        Pages::Huge2M => Some((libc::MAP_HUGE_2MB, libc::MFD_HUGE_2MB)),
        Pages::Huge1G => Some((libc::MAP_HUGE_1GB, libc::MFD_HUGE_1GB)),
        Pages::Base | Pages::Transparent => None,
    }
}

/// The error for a huge-page mapping the kernel refused.
fn huge_page_error(granule: usize, bytes: usize, source: io::Error) -> Error {
    match source.raw_os_error() {
        Some(libc::ENOMEM | libc::EINVAL) => Error::HugePages {
            page_size: granule,
            bytes,
            source,
        },
        _ => Error::Os {
            call: "mmap(MAP_HUGETLB)",
            source,
        },
    }
}

/// Reserves `capacity` bytes of inaccessible address space aligned to
/// `align`: nothing is committed, counted or locked. With `kept_out` the
/// range is `MADV_DONTFORK` and recorded in [`KEPT_OUT`], so that a forked
/// child reserves it again rather than inheriting it.
fn reserve_range(capacity: usize, align: usize, kept_out: bool) -> Result<NonNull<u8>, Error> {
    let page = page_size();
    let extra = align.saturating_sub(page);
    let len = capacity.checked_add(extra).ok_or(Error::Overflow {
        requested: capacity,
    })?;
    // SAFETY: a fresh private mapping chosen by the kernel; it aliases nothing.
    let addr = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(Error::last_os("mmap(PROT_NONE)"));
    }
    let start = addr.addr();
    let aligned = start.next_multiple_of(align);
    // SAFETY: the head and tail of our own fresh mapping, outside the part
    // kept.
    unsafe {
        if aligned > start {
            libc::munmap(addr, aligned - start);
        }
        let end = aligned + capacity;
        if start + len > end {
            libc::munmap(addr.with_addr(end), start + len - end);
        }
    }
    let Some(ptr) = NonNull::new(addr.with_addr(aligned).cast::<u8>()) else {
        // Only a MAP_FIXED request can map page zero; keep the contract anyway.
        return Err(Error::Os {
            call: "mmap",
            source: io::Error::from_raw_os_error(libc::EFAULT),
        });
    };
    if kept_out {
        // Advice first, record second: a child forked in between finds a
        // hole nobody refers to, never a recorded range that it inherited.
        let result = keep_from_children(ptr.as_ptr(), capacity).and_then(|()| {
            record_kept_out(ptr.as_ptr().addr(), capacity)
                .then_some(())
                .ok_or(Error::Unsupported {
                    what: "keeping more than 128 Blocks out of forked children at once",
                })
        });
        if let Err(error) = result {
            // SAFETY: our own fresh reservation, which nothing refers to.
            unsafe { libc::munmap(ptr.as_ptr().cast(), capacity) };
            return Err(error);
        }
    }
    Ok(ptr)
}

/// `MADV_DONTFORK` over `len` bytes at `at`: `fork` leaves them out of the
/// child. Needed again for every mapping made afresh over the range (a
/// new mapping does not take the old one's advice).
fn keep_from_children(at: *mut u8, len: usize) -> Result<(), Error> {
    // SAFETY: advice on our own mapping; it changes no byte.
    if unsafe { libc::madvise(at.cast(), len, libc::MADV_DONTFORK) } != 0 {
        return Err(Error::last_os("madvise(MADV_DONTFORK)"));
    }
    Ok(())
}

/// One reservation kept out of forked children: its first byte (0: a free
/// slot) and its length (0 while it is being recorded).
struct KeptOut {
    start: AtomicUsize,
    len: AtomicUsize,
}

/// How many reservations can be kept out of forked children at once.
const KEPT_OUT_SLOTS: usize = 128;

/// The reservations kept out of forked children, which
/// [`after_fork_in_child`] reserves again in the child. A fixed table, so
/// that recording never allocates.
///
/// Relaxed, every access: a slot changes only while its Block is being
/// opened or released, by the one thread doing it. A child only ever uses
/// Blocks that were neither at the fork, whose slots were settled before
/// any thread could reach them; a slot in flux belongs to a Block no thread
/// of the child can reach (its opener or releaser is not copied into the
/// child), and the child never replaces a mapping, so a half-written slot
/// at worst reserves an unused range there.
static KEPT_OUT: [KeptOut; KEPT_OUT_SLOTS] = [const {
    KeptOut {
        start: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
    }
}; KEPT_OUT_SLOTS];

/// Records `start..start + len` in a free slot of [`KEPT_OUT`]; false if
/// the table is full.
fn record_kept_out(start: usize, len: usize) -> bool {
    for slot in &KEPT_OUT {
        // Relaxed: see `KEPT_OUT`; the compare-exchange alone decides who
        // takes the slot.
        if slot
            .start
            .compare_exchange(0, start, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            slot.len.store(len, Ordering::Relaxed);
            return true;
        }
    }
    false
}

/// Forgets the slot of the reservation at `start`, if it has one.
fn forget_kept_out(start: usize) {
    // Relaxed: see `KEPT_OUT`.
    if let Some(slot) = KEPT_OUT
        .iter()
        .find(|slot| slot.start.load(Ordering::Relaxed) == start)
    {
        slot.len.store(0, Ordering::Relaxed);
        slot.start.store(0, Ordering::Relaxed);
    }
}

/// In a forked child, before `fork` returns there: reserves again,
/// inaccessible, every range kept out of children (`MADV_DONTFORK` left it
/// unmapped), so that no later mapping of the child lands in it while the
/// child's copy of its Block still points there. Raw system calls only: the
/// child may be the copy of a multi-threaded process.
pub(crate) fn after_fork_in_child() {
    for slot in &KEPT_OUT {
        // Relaxed: see `KEPT_OUT`.
        let start = slot.start.load(Ordering::Relaxed);
        let len = slot.len.load(Ordering::Relaxed);
        if start == 0 || len == 0 {
            continue;
        }
        // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping: it maps the
        // range only where nothing is mapped.
        let addr = unsafe {
            libc::mmap(
                ptr::without_provenance_mut(start),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE
                    | libc::MAP_ANONYMOUS
                    | libc::MAP_NORESERVE
                    | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if addr != libc::MAP_FAILED && addr.addr() != start {
            // A kernel before 4.17 took the flag as a hint and mapped
            // elsewhere: give that back.
            // SAFETY: the mapping just made, which nothing refers to.
            unsafe { libc::munmap(addr, len) };
        }
    }
}

/// The size of the memfd behind `fd`, and the bytes of it in memory.
fn fd_size(fd: BorrowedFd<'_>) -> Result<(usize, usize), Error> {
    // SAFETY: `stat` is plain data; all zeroes is a valid value.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(Error::last_os("fstat"));
    }
    Ok((
        usize::try_from(st.st_size).unwrap_or(0),
        usize::try_from(st.st_blocks)
            .unwrap_or(0)
            .saturating_mul(512),
    ))
}

impl Platform for Raw {
    fn reserve(
        capacity: usize,
        granule: usize,
        align: usize,
        open: usize,
        options: &BlockOptions<'_>,
    ) -> Result<Reserved, Error> {
        let huge = huge_flags(options.pages);
        let fd = if options.shared {
            let name = name(options.label, NAME_MAX);
            let mut flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
            if let Some((_, mfd)) = huge {
                flags |= libc::MFD_HUGETLB | mfd;
            }
            // SAFETY: `name` is NUL-terminated and outlives the call.
            let fd = unsafe { libc::memfd_create(name.as_ptr().cast(), flags) };
            if fd < 0 {
                let source = io::Error::last_os_error();
                if huge.is_some() {
                    return Err(huge_page_error(granule, capacity, source));
                }
                return Err(Error::Os {
                    call: "memfd_create",
                    source,
                });
            }
            // SAFETY: memfd_create just returned this descriptor; nothing
            // else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // Sealed before anyone else can hold the fd (see the module
            // documentation): against shrinking, so that no holder can take
            // pages from under a mapping, and against any further seal, so
            // that no holder can stop the owner's growth. A Block that
            // commits its whole capacity now is sized to it and sealed
            // against growing too: its size is final.
            let mut seals = libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
            if open >= capacity {
                let size = libc::off_t::try_from(capacity).map_err(|_| Error::Overflow {
                    requested: capacity,
                })?;
                // SAFETY: a plain system call on a descriptor we own.
                if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
                    return Err(Error::last_os("ftruncate"));
                }
                seals |= libc::F_SEAL_GROW;
            }
            // SAFETY: a plain system call on a descriptor we own.
            if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
                return Err(Error::last_os("fcntl(F_ADD_SEALS)"));
            }
            Some(fd)
        } else {
            None
        };
        let ptr = reserve_range(capacity, align, !options.inherit)?;
        let raw = Raw {
            fd,
            owner: true,
            hugetlb: match huge {
                Some((map, _)) if !options.shared => libc::MAP_HUGETLB | map,
                _ => 0,
            },
            granule,
            kept_out: !options.inherit,
            name: name(options.label, ANON_NAME_MAX - 1),
        };
        // From here `reserved` owns the reservation: an early return would
        // drop it through `Region`, but nothing below can fail.
        if options.shared {
            // The memfd's name shows for shared pages; nothing to advise.
        } else {
            if options.pages == Pages::Transparent {
                // Advice only: the kernel's THP setting decides, and the
                // Block works the same either way.
                // SAFETY: madvise on our own reservation changes no byte.
                unsafe { libc::madvise(ptr.as_ptr().cast(), capacity, libc::MADV_HUGEPAGE) };
            }
            raw.label(ptr, 0, capacity);
        }
        Ok(Reserved {
            raw,
            ptr,
            capacity,
            committed: 0,
            locked: 0,
            granule,
        })
    }

    unsafe fn map(&self, base: NonNull<u8>, from: usize, to: usize) -> Result<(), Error> {
        // SAFETY: the caller's contract: `from..to` is ours, uncommitted.
        let at = unsafe { base.as_ptr().add(from) };
        let len = to - from;
        if let Some(fd) = &self.fd {
            if self.owner {
                grow(fd.as_fd(), to)?;
            } else if fd_size(fd.as_fd())?.0 < to {
                // Mapped past the memfd's end, the pages would be SIGBUS;
                // and only the owner grows the memfd.
                return Err(Error::InvalidArgument {
                    reason: "an attached Block commits only what the memfd's owner committed: \
                             only the owner grows a shared Block, and follow() maps its growth",
                });
            }
            // SAFETY: maps the memfd's pages over our own reservation; other
            // mappings of them are covered by `attach`'s contract. The memfd
            // covers `to` (grown above, or checked), and cannot shrink.
            let addr = unsafe {
                libc::mmap(
                    at.cast(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd.as_raw_fd(),
                    from as libc::off_t,
                )
            };
            if addr == libc::MAP_FAILED {
                let source = io::Error::last_os_error();
                if self.granule > page_size() {
                    return Err(huge_page_error(self.granule, len, source));
                }
                return Err(Error::Os {
                    call: "mmap(MAP_SHARED)",
                    source,
                });
            }
        } else if self.hugetlb != 0 {
            // SAFETY: replaces part of our own reservation with huge pages.
            let addr = unsafe {
                libc::mmap(
                    at.cast(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | self.hugetlb,
                    -1,
                    0,
                )
            };
            if addr == libc::MAP_FAILED {
                return Err(huge_page_error(
                    self.granule,
                    len,
                    io::Error::last_os_error(),
                ));
            }
            self.label(base, from, to);
        } else {
            // SAFETY: part of our own reservation; the range keeps its
            // advice (`MADV_DONTFORK` included).
            if unsafe { libc::mprotect(at.cast(), len, libc::PROT_READ | libc::PROT_WRITE) } != 0 {
                return Err(Error::last_os("mprotect"));
            }
            return Ok(());
        }
        if self.kept_out {
            if let Err(error) = keep_from_children(at, len) {
                // SAFETY: just mapped, not yet committed: nothing refers to it.
                let _ = unsafe { self.unmap(base, from, to) };
                return Err(error);
            }
        }
        Ok(())
    }

    unsafe fn lock(
        &self,
        base: NonNull<u8>,
        from: usize,
        to: usize,
        populate: bool,
    ) -> Result<(), io::Error> {
        // SAFETY: the caller's contract: `from..to` is ours and mapped.
        let at = unsafe { base.as_ptr().add(from) };
        let rc = if populate {
            // A plain `mlock` faults every page in: one pass instead of a
            // populate and a lock.
            // SAFETY: mlock on our own mapping.
            unsafe { libc::mlock(at.cast(), to - from) }
        } else {
            // Lock pages as they are faulted in, so that committing stays
            // cheap. Called through syscall(2) so that old C libraries
            // without the wrapper still link.
            // SAFETY: mlock2 on our own mapping.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_mlock2,
                    at,
                    to - from,
                    libc::MLOCK_ONFAULT as libc::c_ulong,
                )
            };
            rc as libc::c_int
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    unsafe fn populate(&self, base: NonNull<u8>, from: usize, to: usize) -> Result<(), Error> {
        // SAFETY: the caller's contract.
        unsafe { populate(base.as_ptr().add(from), to - from) }
    }

    unsafe fn unmap(&self, base: NonNull<u8>, from: usize, to: usize) -> Result<(), Error> {
        // SAFETY: the caller's contract: `from..to` is ours and mapped.
        let at = unsafe { base.as_ptr().add(from) }.cast::<libc::c_void>();
        let len = to - from;
        if self.fd.is_some() || self.hugetlb != 0 {
            // Map fresh inaccessible memory over the range: the shared or
            // huge pages go (the memfd keeps its size; it cannot shrink).
            // SAFETY: replaces part of our own reservation; nothing refers to it.
            let addr = unsafe {
                libc::mmap(
                    at,
                    len,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if addr == libc::MAP_FAILED {
                return Err(Error::last_os("mmap(PROT_NONE)"));
            }
            if self.fd.is_none() {
                self.label(base, from, to);
            }
            if self.kept_out {
                keep_from_children(at.cast(), len)?;
            }
            return Ok(());
        }
        // Locked pages cannot be dropped: unlock first (a no-op for pages
        // that were not locked). Then drop them and close the range off,
        // which keeps its label and huge-page advice.
        // SAFETY: our own mapping, which nothing refers to any more.
        unsafe {
            libc::munlock(at, len);
            if libc::madvise(at, len, libc::MADV_DONTNEED) != 0 {
                return Err(Error::last_os("madvise(MADV_DONTNEED)"));
            }
            if libc::mprotect(at, len, libc::PROT_NONE) != 0 {
                return Err(Error::last_os("mprotect(PROT_NONE)"));
            }
        }
        Ok(())
    }

    fn can_unmap(&self) -> bool {
        self.fd.is_none()
    }

    unsafe fn discard(&self, base: NonNull<u8>, from: usize, to: usize) -> Result<(), Error> {
        // SAFETY: the caller's contract: `from..to` is ours, committed, and
        // nothing refers to it. Locked pages cannot be dropped: unlock first
        // (a no-op for pages that were not locked).
        unsafe {
            let at = base.as_ptr().add(from).cast::<libc::c_void>();
            libc::munlock(at, to - from);
            if libc::madvise(at, to - from, libc::MADV_DONTNEED) != 0 {
                return Err(Error::last_os("madvise(MADV_DONTNEED)"));
            }
        }
        Ok(())
    }

    fn can_discard(&self) -> bool {
        self.fd.is_none() && self.hugetlb == 0
    }

    unsafe fn drop_pages(&self, base: NonNull<u8>, from: usize, to: usize) -> Result<bool, Error> {
        if !self.can_discard() {
            return Ok(false);
        }
        // SAFETY: the caller's contract: `from..to` is ours, committed, and
        // nothing refers to it. Locked pages are dropped too (and locked
        // again as they are faulted back in).
        let rc = unsafe {
            libc::madvise(
                base.as_ptr().add(from).cast(),
                to - from,
                MADV_DONTNEED_LOCKED,
            )
        };
        if rc == 0 {
            return Ok(true);
        }
        match io::Error::last_os_error().raw_os_error() {
            // Kernels before 5.18 do not know the advice.
            Some(libc::EINVAL) => Ok(false),
            _ => Err(Error::last_os("madvise(MADV_DONTNEED_LOCKED)")),
        }
    }

    fn share(&self) -> Result<Export, Error> {
        let Some(fd) = &self.fd else {
            return Err(Error::InvalidArgument {
                reason: "share() needs a shared Block: open it with BlockOptions::new().shared(true) \
                         (private Blocks are anonymous memory, copied into forked children)",
            });
        };
        // `try_clone` is fcntl(F_DUPFD_CLOEXEC): the duplicate is close-on-exec.
        fd.try_clone().map_err(|source| Error::Os {
            call: "fcntl(F_DUPFD_CLOEXEC)",
            source,
        })
    }

    unsafe fn attach(
        export: Export,
        options: &BlockOptions<'_>,
    ) -> Result<(Reserved, usize), Error> {
        let fd = export;
        // SAFETY: `stat` is plain data; all zeroes is a valid value.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: `st` is a valid out-pointer for the duration of the call.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(Error::last_os("fstat"));
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Error::BadHandle {
                reason: "the fd is not a regular file",
            });
        }
        // SAFETY: F_GET_SEALS only reads the descriptor's seals.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 {
            let source = io::Error::last_os_error();
            if source.raw_os_error() == Some(libc::EINVAL) {
                return Err(Error::BadHandle {
                    reason: "the fd does not support seals: it is not a memfd",
                });
            }
            return Err(Error::Os {
                call: "fcntl(F_GET_SEALS)",
                source,
            });
        }
        if seals & libc::F_SEAL_SHRINK == 0 {
            return Err(Error::BadHandle {
                reason: "the memfd is not sealed against shrinking",
            });
        }
        if seals & (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) != 0 {
            return Err(Error::BadHandle {
                reason: "the memfd is sealed against writing",
            });
        }
        let hugetlbfs = is_hugetlbfs(fd.as_fd());
        if hugetlbfs && !options.accept_huge_page_sigbus {
            return Err(Error::BadHandle {
                reason: "the memfd is of explicit huge pages, in which its sender can punch \
                         holes that make this process's next touch a SIGBUS when the huge-page \
                         pool is empty; accept that with \
                         BlockOptions::accept_huge_page_sigbus(true)",
            });
        }
        let granule = if hugetlbfs {
            usize::try_from(st.st_blksize).unwrap_or(0)
        } else {
            page_size()
        };
        if !granule.is_power_of_two() || granule < page_size() {
            return Err(Error::BadHandle {
                reason: "the memfd's page size is not a power of two",
            });
        }
        let size = usize::try_from(st.st_size).unwrap_or(0);
        if size == 0 {
            return Err(Error::BadHandle {
                reason: "the memfd is empty",
            });
        }
        if size % granule != 0 || size > isize::MAX as usize {
            return Err(Error::BadHandle {
                reason: "the memfd's size is not a whole number of pages",
            });
        }
        // The fd is untrusted: a sparse memfd of any size costs nothing until
        // its pages are touched. Check what pinning or prefaulting would
        // fault in against what the machine has before touching a page.
        if options.prefault || options.pinning != super::Pinning::Off {
            let allocated = usize::try_from(st.st_blocks)
                .unwrap_or(0)
                .saturating_mul(512);
            super::check_fault_in(size.saturating_sub(allocated))?;
        }
        let capacity = options
            .capacity
            .checked_next_multiple_of(granule)
            .unwrap_or(size)
            .max(size);
        let ptr = reserve_range(capacity, granule, !options.inherit)?;
        let raw = Raw {
            fd: Some(fd),
            owner: false,
            hugetlb: 0,
            granule,
            kept_out: !options.inherit,
            name: [0; NAME_MAX + 1],
        };
        let reserved = Reserved {
            raw,
            ptr,
            capacity,
            committed: 0,
            locked: 0,
            granule,
        };
        Ok((reserved, size))
    }

    fn shared_size(&self) -> Result<Option<Shared>, Error> {
        match &self.fd {
            Some(fd) if !self.owner => {
                let (size, resident) = fd_size(fd.as_fd())?;
                Ok(Some(Shared { size, resident }))
            }
            _ => Ok(None),
        }
    }

    unsafe fn release(&mut self, ptr: NonNull<u8>, capacity: usize) {
        if self.kept_out {
            forget_kept_out(ptr.as_ptr().addr());
        }
        // SAFETY: the caller passes the reservation `reserve` made; munmap
        // also drops the locks. The fd closes when `self` drops, right after.
        let rc = unsafe { libc::munmap(ptr.as_ptr().cast(), capacity) };
        debug_assert_eq!(rc, 0, "munmap of a Block failed");
    }
}

/// Grows the owner's memfd to at least `to` bytes before it maps them.
/// Another holder may have grown it already (or does so meanwhile): the
/// memfd cannot shrink, so once it covers `to` it always will, and then
/// there is nothing to do.
fn grow(fd: BorrowedFd<'_>, to: usize) -> Result<(), Error> {
    if fd_size(fd)?.0 >= to {
        return Ok(());
    }
    let size = libc::off_t::try_from(to).map_err(|_| Error::Overflow { requested: to })?;
    // SAFETY: a plain system call on a descriptor we own.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } == 0 {
        return Ok(());
    }
    let source = io::Error::last_os_error();
    // EPERM: a shrink, refused because another holder grew the memfd past
    // `to` since we looked.
    if source.raw_os_error() == Some(libc::EPERM) && fd_size(fd)?.0 >= to {
        return Ok(());
    }
    Err(Error::Os {
        call: "ftruncate",
        source,
    })
}

impl Raw {
    /// The memfd of a shared Block.
    pub(crate) fn handle(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(AsFd::as_fd)
    }

    /// Names `from..to` of a private reservation (`[anon:<label>]` in
    /// `/proc/<pid>/maps`). Advice only: kernels without
    /// `CONFIG_ANON_VMA_NAME` refuse it.
    fn label(&self, base: NonNull<u8>, from: usize, to: usize) {
        if self.name[0] == 0 {
            return;
        }
        // SAFETY: names our own mapping; the name is NUL-terminated and the
        // kernel copies it.
        unsafe {
            libc::prctl(
                libc::PR_SET_VMA,
                libc::PR_SET_VMA_ANON_NAME as libc::c_ulong,
                base.as_ptr().add(from),
                to - from,
                self.name.as_ptr(),
            )
        };
    }
}

/// Whether `fd` lives on hugetlbfs (an `MFD_HUGETLB` memfd).
fn is_hugetlbfs(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: `statfs` is plain data; all zeroes is a valid value.
    let mut fs: libc::statfs = unsafe { core::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    unsafe { libc::fstatfs(fd.as_raw_fd(), &mut fs) == 0 && fs.f_type == libc::HUGETLBFS_MAGIC }
}

/// Faults every page of `len` bytes at `at` in, reporting failure
/// (`MAP_POPULATE` would not).
///
/// # Safety
/// The range is mapped, readable and writable, and nothing else refers to
/// it unless it is shared (then only its contents are untouched).
pub(crate) unsafe fn populate(at: *mut u8, len: usize) -> Result<(), Error> {
    // SAFETY: MADV_POPULATE_WRITE faults pages of our mapping in as if
    // written, without changing a byte.
    if unsafe { libc::madvise(at.cast(), len, libc::MADV_POPULATE_WRITE) } == 0 {
        return Ok(());
    }
    let source = io::Error::last_os_error();
    if source.raw_os_error() != Some(libc::EINVAL) {
        return Err(Error::Os {
            call: "madvise(MADV_POPULATE_WRITE)",
            source,
        });
    }
    // Kernels before 5.14 lack MADV_POPULATE_WRITE: write each page's first
    // byte back as it is read. A read alone maps the shared zero page for
    // private memory; writing the value read changes no byte.
    for offset in (0..len).step_by(page_size()) {
        // SAFETY: `offset < len`, inside our writable mapping.
        unsafe {
            let byte = at.add(offset);
            byte.write_volatile(byte.read_volatile());
        }
    }
    Ok(())
}

/// Locks `len` bytes at `at`, faulting every page in; whether it worked
/// (the parallel populate falls back to one thread when it did not).
///
/// # Safety
/// As `populate`.
pub(crate) unsafe fn lock_pages(at: *mut u8, len: usize) -> bool {
    // SAFETY: mlock on the caller's mapping changes no byte.
    unsafe { libc::mlock(at.cast(), len) == 0 }
}

/// Unlocks `len` bytes at `at` (pages not locked stay as they are).
///
/// # Safety
/// As `populate`.
pub(crate) unsafe fn unlock_pages(at: *mut u8, len: usize) {
    // SAFETY: munlock on the caller's mapping changes no byte.
    unsafe { libc::munlock(at.cast(), len) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cut_at_char_boundaries() {
        let long = "é".repeat(200);
        let name = name(&long, NAME_MAX);
        let end = name.iter().position(|&b| b == 0).unwrap();
        assert!(end <= NAME_MAX);
        assert!(core::str::from_utf8(&name[..end]).is_ok());
        assert_eq!(&super::name("weights", NAME_MAX)[..8], b"weights\0");
        let anon = super::name(&long, ANON_NAME_MAX - 1);
        assert!(anon.iter().position(|&b| b == 0).unwrap() < ANON_NAME_MAX);
    }

    #[test]
    fn available_memory_is_read() {
        let available = crate::sys::available_memory();
        assert!(
            available > 0 && available <= crate::sys::physical_memory(),
            "{available}"
        );
    }
}
