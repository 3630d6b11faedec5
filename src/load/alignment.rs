//! [`DirectAlign`]: what direct I/O on one file needs of its requests, and
//! how it is found: `statx(STATX_DIOALIGN)`, then the logical block size
//! of the device the file lives on, else none (buffered reads).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;

/// The alignments direct I/O (`O_DIRECT`) on a file needs: each request's
/// memory address a multiple of `memory`, its file offset and length
/// multiples of `offset`. Both are powers of two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectAlign {
    /// What the destination address must be a multiple of.
    pub memory: usize,
    /// What the file offset and the length must be multiples of.
    pub offset: usize,
}

/// Where a file's direct I/O alignment came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// `statx` reported `STATX_DIOALIGN` with these values.
    Statx(DirectAlign),
    /// `statx` says the file offers no direct I/O (it reported
    /// `STATX_DIOALIGN` with zeros).
    Refused,
    /// `statx` did not report it (an older kernel, or a file system that
    /// does not say).
    Unknown,
}

impl DirectAlign {
    /// The larger of the two: a chunk size that is a multiple of it keeps
    /// every chunk aligned both ways.
    pub fn unit(&self) -> usize {
        self.memory.max(self.offset)
    }

    /// Checks values a kernel (or sysfs) gave: powers of two, at most 1 MiB.
    pub(crate) fn checked(memory: u64, offset: u64) -> Option<DirectAlign> {
        let ok = |v: u64| v.is_power_of_two() && v <= 1 << 20;
        (ok(memory) && ok(offset)).then_some(DirectAlign {
            memory: memory as usize,
            offset: offset as usize,
        })
    }
}

/// Asks `statx` for the file's direct I/O alignment.
pub(crate) fn statx(file: &File) -> Found {
    // SAFETY: a zeroed statx is a valid out-parameter.
    let mut stx: libc::statx = unsafe { core::mem::zeroed() };
    // SAFETY: a valid fd, an empty NUL-terminated path with AT_EMPTY_PATH,
    // and a valid out-pointer.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return Found::Unknown;
    }
    from_statx(
        u64::from(stx.stx_dio_mem_align),
        u64::from(stx.stx_dio_offset_align),
    )
}

/// What `statx`'s two fields mean: zeros, no direct I/O.
pub(crate) fn from_statx(memory: u64, offset: u64) -> Found {
    if memory == 0 || offset == 0 {
        return Found::Refused;
    }
    DirectAlign::checked(memory, offset).map_or(Found::Refused, Found::Statx)
}

/// The logical block size of the block device that holds `file`, from
/// sysfs (`/sys/dev/block/MAJ:MIN/queue/logical_block_size`, or the
/// whole disk's for a partition); `None` for a file on no block device
/// (tmpfs, a network file system).
pub(crate) fn logical_block_size(file: &File) -> Option<usize> {
    // SAFETY: a zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: a valid fd and out-pointer.
    if unsafe { libc::fstat(file.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    let (major, minor) = (libc::major(st.st_dev), libc::minor(st.st_dev));
    if major == 0 {
        // Anonymous devices: tmpfs, overlay, network file systems.
        return None;
    }
    for queue in ["queue", "../queue"] {
        let path = format!("/sys/dev/block/{major}:{minor}/{queue}/logical_block_size");
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(size) = text.trim().parse::<u64>() {
                return DirectAlign::checked(size, size).map(|a| a.offset);
            }
        }
    }
    None
}

/// Opens `path` again with `O_DIRECT`, checking that it is the same file
/// as `file` (same device and inode).
pub(crate) fn open_direct(path: &std::path::Path, file: &File) -> Option<File> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: a NUL-terminated path; the fd returned is owned below.
    let fd = unsafe {
        libc::open(
            c_path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECT | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    let direct = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let (a, b) = (file.metadata().ok()?, direct.metadata().ok()?);
    (a.dev() == b.dev() && a.ino() == b.ino()).then_some(direct)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statx_values_are_checked() {
        assert_eq!(from_statx(0, 0), Found::Refused);
        assert_eq!(from_statx(512, 0), Found::Refused);
        assert_eq!(from_statx(3, 512), Found::Refused, "not a power of two");
        assert_eq!(from_statx(1 << 30, 512), Found::Refused, "absurd");
        assert_eq!(
            from_statx(4, 512),
            Found::Statx(DirectAlign {
                memory: 4,
                offset: 512
            })
        );
        assert_eq!(
            DirectAlign {
                memory: 4,
                offset: 512
            }
            .unit(),
            512
        );
    }

    #[test]
    fn block_devices_have_a_logical_block_size() {
        // The crate's own manifest lives on some file system; where that is
        // a block device, sysfs gives a power of two of at least 512.
        let file = File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
        if let Some(size) = logical_block_size(&file) {
            assert!(size.is_power_of_two() && size >= 512, "{size}");
        }
        // A memfd lives on an anonymous device: no block size.
        // SAFETY: a NUL-terminated name; the fd is owned below.
        let fd = unsafe { libc::memfd_create(c"unimem-test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: just created, owned here.
        let memfd = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        assert_eq!(logical_block_size(&memfd), None);
        assert!(
            !matches!(statx(&memfd), Found::Statx(_)),
            "shmem offers no direct I/O alignment"
        );
    }
}
