//! Linux backend: a `PROT_NONE` reservation, committed in place.
//!
//! - **Private** (the default): anonymous memory. Committing makes a range
//!   readable and writable (`mprotect`); decommitting unlocks it, drops its
//!   pages (`MADV_DONTNEED`) and makes it inaccessible again, keeping the
//!   range's label and huge-page advice. `fork` copies it into the child.
//! - **Shared**: a memfd, sealed against shrinking (and against growing once
//!   the whole capacity is committed), grown with `ftruncate` and mapped
//!   `MAP_SHARED | MAP_FIXED` over the reservation as it is committed.
//! - **Explicit huge pages**: `MAP_HUGETLB` pages (private) or an
//!   `MFD_HUGETLB` memfd (shared) mapped over the reservation; the kernel
//!   takes them from its pool at `mmap`, so too few is an error there.
//!
//! Every call here is a raw system call through `libc`; nothing allocates, so a
//! global allocator can open and grow Blocks from its first allocation.

use core::ptr::{self, NonNull};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{Backend, BlockOptions, Pages, Reserved, page_size};
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
    /// `MAP_HUGETLB` and its size flag for private explicit huge pages, 0
    /// otherwise.
    hugetlb: libc::c_int,
    /// The unit of commits: the page or huge page size.
    granule: usize,
    /// The owner's capacity, for a shared Block it opened: once committed
    /// that far, the memfd is sealed against growing too. 0 for private
    /// and attached memory.
    seal_at: usize,
    /// The label, NUL-terminated, for ranges mapped afresh.
    name: [u8; NAME_MAX + 1],
}

/// The longest memfd name the kernel takes, without the NUL.
const NAME_MAX: usize = 249;
/// The longest anonymous-memory name (`PR_SET_VMA_ANON_NAME`), with the NUL.
const ANON_NAME_MAX: usize = 80;

pub(crate) fn system_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    // POSIX lets sysconf fail; Linux always answers _SC_PAGESIZE, so the
    // fallback is only there to keep this function total.
    usize::try_from(page).unwrap_or(4096)
}

/// Bytes of physical memory, or `usize::MAX` if the system does not say.
pub(crate) fn physical_memory() -> usize {
    // SAFETY: sysconf has no preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    usize::try_from(pages).map_or(usize::MAX, |pages| pages.saturating_mul(page_size()))
}

/// Bytes the kernel expects it can hand out without swapping (`MemAvailable`
/// in `/proc/meminfo`), read into a stack buffer; free memory if that file
/// cannot be read.
fn available_memory() -> usize {
    const PATH: &[u8] = b"/proc/meminfo\0";
    let mut buf = [0u8; 4096];
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(PATH.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    let len = if fd >= 0 {
        // SAFETY: `buf` is writable for its length; `fd` is ours.
        let len = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        // SAFETY: ours, closed once.
        unsafe { libc::close(fd) };
        usize::try_from(len).unwrap_or(0)
    } else {
        0
    };
    let text = &buf[..len];
    let key = b"MemAvailable:";
    if let Some(at) = text.windows(key.len()).position(|w| w == key) {
        let kib = text[at + key.len()..]
            .iter()
            .skip_while(|b| b.is_ascii_whitespace())
            .take_while(|b| b.is_ascii_digit())
            .fold(0usize, |n, &d| {
                n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
            });
        return kib.saturating_mul(1024);
    }
    // SAFETY: `sysinfo` is plain data; all zeroes is a valid value, and the
    // call fills it.
    let mut info: libc::sysinfo = unsafe { core::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    if unsafe { libc::sysinfo(&mut info) } == 0 {
        return (info.freeram as usize).saturating_mul(info.mem_unit as usize);
    }
    usize::MAX
}

/// The soft `RLIMIT_MEMLOCK`, in bytes; `None` when unlimited or unknown.
pub(crate) fn memlock_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return None;
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

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
/// `align`: nothing is committed, counted or locked.
fn reserve_range(capacity: usize, align: usize) -> Result<NonNull<u8>, Error> {
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
    Ok(ptr)
}

impl Backend for Raw {
    fn reserve(
        capacity: usize,
        granule: usize,
        align: usize,
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
            // Sealed against shrinking from the start, so that no holder of
            // a shared fd can truncate the pages under a mapping (which would
            // turn accesses into SIGBUS). Growing and the seals themselves
            // are sealed once the whole capacity is committed (`map`).
            // SAFETY: a plain system call on a descriptor we own.
            if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) } != 0 {
                return Err(Error::last_os("fcntl(F_ADD_SEALS)"));
            }
            Some(fd)
        } else {
            None
        };
        let ptr = reserve_range(capacity, align)?;
        let raw = Raw {
            seal_at: if fd.is_some() { capacity } else { 0 },
            fd,
            hugetlb: match huge {
                Some((map, _)) if !options.shared => libc::MAP_HUGETLB | map,
                _ => 0,
            },
            granule,
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
        let at = unsafe { base.as_ptr().add(from) }.cast::<libc::c_void>();
        let len = to - from;
        if let Some(fd) = &self.fd {
            let size = libc::off_t::try_from(to).map_err(|_| Error::Overflow { requested: to })?;
            // SAFETY: plain system calls on a descriptor we own.
            if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
                return Err(Error::last_os("ftruncate"));
            }
            // SAFETY: maps the memfd's pages over our own reservation; other
            // mappings of them are covered by `attach`'s contract.
            let addr = unsafe {
                libc::mmap(
                    at,
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
            if to == self.seal_at {
                // The whole capacity is committed: seal the size for good,
                // and the seals, so that nobody can add F_SEAL_WRITE later.
                let seals = libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
                // SAFETY: a plain system call on a descriptor we own.
                if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
                    return Err(Error::last_os("fcntl(F_ADD_SEALS)"));
                }
            }
        } else if self.hugetlb != 0 {
            // SAFETY: replaces part of our own reservation with huge pages.
            let addr = unsafe {
                libc::mmap(
                    at,
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
            // SAFETY: part of our own reservation.
            if unsafe { libc::mprotect(at, len, libc::PROT_READ | libc::PROT_WRITE) } != 0 {
                return Err(Error::last_os("mprotect"));
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
            let to_fault = size.saturating_sub(allocated);
            let available = available_memory();
            if to_fault > available {
                return Err(Error::OutOfMemory {
                    requested: to_fault,
                    available,
                });
            }
        }
        let capacity = options
            .capacity
            .checked_next_multiple_of(granule)
            .unwrap_or(size)
            .max(size);
        let ptr = reserve_range(capacity, granule)?;
        let raw = Raw {
            fd: Some(fd),
            hugetlb: 0,
            granule,
            seal_at: 0,
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

    fn shared_size(&self) -> Result<Option<usize>, Error> {
        let Some(fd) = &self.fd else {
            return Ok(None);
        };
        // SAFETY: as in `attach`.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: a valid out-pointer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(Error::last_os("fstat"));
        }
        Ok(Some(usize::try_from(st.st_size).unwrap_or(0)))
    }

    unsafe fn release(&mut self, ptr: NonNull<u8>, capacity: usize) {
        // SAFETY: the caller passes the reservation `reserve` made; munmap
        // also drops the locks. The fd closes when `self` drops, right after.
        let rc = unsafe { libc::munmap(ptr.as_ptr().cast(), capacity) };
        debug_assert_eq!(rc, 0, "munmap of a Block failed");
    }
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
        let available = available_memory();
        assert!(
            available > 0 && available <= physical_memory(),
            "{available}"
        );
    }
}
