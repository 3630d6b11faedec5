//! Linux backend: a sealed memfd, mapped shared and locked with `mlock`.
//!
//! Every call here is a raw system call through `libc`; nothing allocates, so a
//! global allocator can open Blocks from its first allocation.

use core::ptr::{self, NonNull};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{Backend, BlockOptions, Pinning, Region, page_size};
use crate::Error;

/// What [`Region::share`] returns on Linux: an owned, close-on-exec duplicate of
/// the Block's sealed memfd. Send it to another process over a Unix socket
/// (`SCM_RIGHTS`) or let a child inherit it.
pub type Export = OwnedFd;

/// The memfd behind one mapping.
pub(crate) struct Raw {
    fd: OwnedFd,
}

/// The longest memfd name the kernel takes, without the NUL.
const NAME_MAX: usize = 249;

const SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;

pub(crate) fn system_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    // POSIX lets sysconf fail; Linux always answers _SC_PAGESIZE, so the
    // fallback is only there to keep this function total.
    usize::try_from(page).unwrap_or(4096)
}

/// The size of a transparent huge page: one page-table page's worth of pages
/// (2 MiB with 4 KiB pages, 32 MiB with 16 KiB, 512 MiB with 64 KiB).
fn huge_page_size() -> usize {
    let page = page_size();
    page * (page / size_of::<u64>())
}

/// Bytes of physical memory, or `usize::MAX` if the system does not say.
fn physical_memory() -> usize {
    // SAFETY: sysconf has no preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    usize::try_from(pages).map_or(usize::MAX, |pages| pages.saturating_mul(page_size()))
}

/// `label` as a NUL-terminated memfd name, cut to the kernel's limit at a
/// character boundary. Built on the stack: opening must not allocate.
fn memfd_name(label: &str) -> [u8; NAME_MAX + 1] {
    let mut name = [0u8; NAME_MAX + 1];
    let mut end = label.len().min(NAME_MAX);
    while !label.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].copy_from_slice(&label.as_bytes()[..end]);
    name
}

impl Backend for Raw {
    fn open(size: usize, options: &BlockOptions<'_>) -> Result<Region, Error> {
        // More than the machine's memory can be neither pinned nor faulted
        // in: say so now rather than after the kernel has tried (and pushed
        // everything else out of memory on the way).
        if size > physical_memory() {
            let source = io::Error::from_raw_os_error(libc::ENOMEM);
            if options.pinning == Pinning::Required {
                return Err(Error::Pin {
                    bytes: size,
                    source,
                });
            }
            if options.prefault {
                return Err(Error::Os {
                    call: "madvise(MADV_POPULATE_WRITE)",
                    source,
                });
            }
        }
        let name = memfd_name(options.label);
        // SAFETY: `name` is NUL-terminated and outlives the call.
        let fd = unsafe {
            libc::memfd_create(
                name.as_ptr().cast(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if fd < 0 {
            return Err(Error::last_os("memfd_create"));
        }
        // SAFETY: memfd_create just returned this descriptor; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let len = libc::off_t::try_from(size).map_err(|_| Error::Overflow { requested: size })?;
        // SAFETY: plain system calls on a descriptor we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
            return Err(Error::last_os("ftruncate"));
        }
        // Seal the size so that no holder of a shared fd can truncate the pages
        // under a mapping (which would turn accesses into SIGBUS), and seal the
        // seals so that nobody can add F_SEAL_WRITE later.
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS | libc::F_SEAL_SEAL) } != 0
        {
            return Err(Error::last_os("fcntl(F_ADD_SEALS)"));
        }
        map(fd, size, options)
    }

    fn share(&self) -> Result<Export, Error> {
        // `try_clone` is fcntl(F_DUPFD_CLOEXEC): the duplicate is close-on-exec.
        self.fd.try_clone().map_err(|source| Error::Os {
            call: "fcntl(F_DUPFD_CLOEXEC)",
            source,
        })
    }

    unsafe fn attach(export: Export, options: &BlockOptions<'_>) -> Result<Region, Error> {
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
        if seals & SEALS != SEALS {
            return Err(Error::BadHandle {
                reason: "the memfd is not sealed against shrinking and growing",
            });
        }
        if seals & (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) != 0 {
            return Err(Error::BadHandle {
                reason: "the memfd is sealed against writing",
            });
        }
        let size = usize::try_from(st.st_size).unwrap_or(0);
        if size == 0 {
            return Err(Error::BadHandle {
                reason: "the memfd is empty",
            });
        }
        if size % page_size() != 0 || size > isize::MAX as usize {
            return Err(Error::BadHandle {
                reason: "the memfd's size is not a whole number of pages",
            });
        }
        map(fd, size, options)
    }

    unsafe fn release(&mut self, ptr: NonNull<u8>, size: usize) {
        // SAFETY: the caller passes the mapping `map` made; munmap also drops
        // the mlock. The fd closes when `self` drops, right after.
        let rc = unsafe { libc::munmap(ptr.as_ptr().cast(), size) };
        debug_assert_eq!(rc, 0, "munmap of a Block failed");
    }
}

impl Raw {
    pub(crate) fn handle(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Maps `size` bytes of `fd`, then advises, prefaults and pins as `options` say.
fn map(fd: OwnedFd, size: usize, options: &BlockOptions<'_>) -> Result<Region, Error> {
    // SAFETY: a fresh shared mapping chosen by the kernel; it aliases nothing
    // in this process except other mappings of the same fd, which `attach`'s
    // contract covers.
    let addr = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(Error::last_os("mmap"));
    }
    let Some(ptr) = NonNull::new(addr.cast::<u8>()) else {
        // Only a MAP_FIXED request can map page zero; keep the contract anyway.
        // SAFETY: the mapping just made, unused.
        unsafe { libc::munmap(addr, size) };
        return Err(Error::Os {
            call: "mmap",
            source: io::Error::from_raw_os_error(libc::EFAULT),
        });
    };
    // From here the Region owns the mapping and the fd: an early return below
    // drops it, which unmaps and closes.
    let mut region = Region {
        ptr,
        size,
        pinned: false,
        raw: Raw { fd },
    };
    if options.huge_pages && size >= huge_page_size() {
        // Advice only: the kernel may lack THP for shmem or have it switched
        // off (`shmem_enabled`), and the Block works the same either way.
        // SAFETY: madvise on our own mapping does not touch its contents.
        unsafe { libc::madvise(addr, size, libc::MADV_HUGEPAGE) };
    }
    region.pinned = pin(ptr, size, options)?;
    // A full `mlock` has faulted every page in already; otherwise fault them
    // in here, where failure is reported.
    if options.prefault && !region.pinned {
        prefault(ptr, size)?;
    }
    Ok(region)
}

/// Faults every page in, reporting failure (MAP_POPULATE would not).
fn prefault(ptr: NonNull<u8>, size: usize) -> Result<(), Error> {
    // SAFETY: MADV_POPULATE_WRITE faults pages of our mapping in as if written,
    // without changing a byte.
    if unsafe { libc::madvise(ptr.as_ptr().cast(), size, libc::MADV_POPULATE_WRITE) } == 0 {
        return Ok(());
    }
    let source = io::Error::last_os_error();
    if source.raw_os_error() != Some(libc::EINVAL) {
        return Err(Error::Os {
            call: "madvise(MADV_POPULATE_WRITE)",
            source,
        });
    }
    // Kernels before 5.14 lack MADV_POPULATE_WRITE: touch each page. A read
    // allocates a shmem page just as a write does, and never clobbers what
    // another mapping wrote.
    for offset in (0..size).step_by(page_size()) {
        // SAFETY: `offset < size`, inside our readable mapping.
        unsafe { ptr.as_ptr().add(offset).read_volatile() };
    }
    Ok(())
}

/// Locks the pages; says whether they are locked. With prefault, a plain
/// `mlock`, which faults every page in (one pass instead of a populate and
/// a lock); without, `MLOCK_ONFAULT`.
fn pin(ptr: NonNull<u8>, size: usize, options: &BlockOptions<'_>) -> Result<bool, Error> {
    let rc = if options.prefault {
        // SAFETY: mlock on our own mapping.
        unsafe { libc::mlock(ptr.as_ptr().cast(), size) }
    } else {
        // Lock pages as they are faulted in, so that opening stays cheap.
        // Called through syscall(2) so that old C libraries without the
        // wrapper still link.
        // SAFETY: mlock2 on our own mapping.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mlock2,
                ptr.as_ptr(),
                size,
                libc::MLOCK_ONFAULT as libc::c_ulong,
            )
        };
        rc as libc::c_int
    };
    if rc == 0 {
        return Ok(true);
    }
    let source = io::Error::last_os_error();
    match options.pinning {
        Pinning::Required => Err(Error::Pin {
            bytes: size,
            source,
        }),
        Pinning::BestEffort => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cut_at_char_boundaries() {
        let long = "é".repeat(200);
        let name = memfd_name(&long);
        let end = name.iter().position(|&b| b == 0).unwrap();
        assert!(end <= NAME_MAX);
        assert!(core::str::from_utf8(&name[..end]).is_ok());
        assert_eq!(&memfd_name("weights")[..8], b"weights\0");
    }

    #[test]
    fn huge_pages_follow_the_page_size() {
        if page_size() == 4096 {
            assert_eq!(huge_page_size(), 2 << 20);
        }
        assert!(huge_page_size() > page_size());
    }
}
