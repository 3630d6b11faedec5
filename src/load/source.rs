//! [`Source`]: one open file to read from: its length as opened, a second
//! descriptor opened `O_DIRECT` where the file system allows it, and the
//! alignment direct reads of it need.

use core::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::LoadError;
use super::alignment::{self, DirectAlign, Found};
use crate::Error;

/// How many pages [`Source::cached`] samples.
const SAMPLES: u64 = 64;

/// One file opened for reading into memory.
///
/// Opening stats the file once: its length then is the length every read
/// is checked against (a file that shrinks later makes reads come back
/// short, which is [`LoadError::Shrunk`]). Where the file system offers
/// direct I/O, a second descriptor is opened with `O_DIRECT`, and the
/// alignment it needs is taken from `statx(STATX_DIOALIGN)`, or else from
/// the logical block size of the device the file is on.
pub struct Source {
    path: PathBuf,
    file: File,
    direct: Option<File>,
    align: Option<DirectAlign>,
    len: u64,
}

impl Source {
    /// Opens `path` for reading.
    pub fn open(path: impl AsRef<Path>) -> Result<Source, Error> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| io_error(path, "open", source))?;
        Source::from_file(path, file)
    }

    /// Wraps a file opened for reading; `path` names it in errors and is
    /// opened again with `O_DIRECT` (and checked to be the same file) for
    /// direct reads.
    pub fn from_file(path: impl AsRef<Path>, file: File) -> Result<Source, Error> {
        let path = path.as_ref();
        let meta = file
            .metadata()
            .map_err(|source| io_error(path, "fstat", source))?;
        if !meta.is_file() {
            return Err(io_error(
                path,
                "open",
                io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        let align = match alignment::statx(&file) {
            Found::Statx(align) => Some(align),
            Found::Refused => None,
            Found::Unknown => alignment::logical_block_size(&file).map(|size| DirectAlign {
                memory: size,
                offset: size,
            }),
        };
        let direct = align.and_then(|_| alignment::open_direct(path, &file));
        Ok(Source {
            path: path.to_path_buf(),
            align: direct.as_ref().and(align),
            direct,
            file,
            len: meta.len(),
        })
    }

    /// The path the file was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file was empty when it was opened.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The alignment direct reads of this file need, or `None` where the
    /// file system offers no direct I/O (tmpfs, for one): such a file is
    /// read buffered.
    pub fn direct_alignment(&self) -> Option<DirectAlign> {
        self.align
    }

    /// The fraction of a sample of the file's pages (64, evenly spread)
    /// that are in the page cache, by `mincore` on a mapping of the file
    /// (which reads nothing). An empty file counts as cached.
    pub fn cached(&self) -> Result<f64, Error> {
        if self.len == 0 {
            return Ok(1.0);
        }
        let page = crate::page_size() as u64;
        let Ok(len) = usize::try_from(self.len) else {
            return Ok(0.0);
        };
        // SAFETY: a fresh shared read-only mapping of our own fd, never
        // dereferenced; unmapped below.
        let map = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                self.file.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io_error(&self.path, "mmap", io::Error::last_os_error()));
        }
        let pages = self.len.div_ceil(page);
        let samples = pages.min(SAMPLES);
        let mut resident = 0;
        let mut result = Ok(());
        for i in 0..samples {
            // Evenly spread, the first and the last page included.
            let index = if samples == 1 {
                0
            } else {
                i * (pages - 1) / (samples - 1)
            };
            let mut status = 0u8;
            // SAFETY: one page inside the mapping; `status` takes one byte.
            let rc = unsafe {
                libc::mincore(
                    map.cast::<u8>().add((index * page) as usize).cast(),
                    page as usize,
                    &mut status,
                )
            };
            if rc != 0 {
                result = Err(io_error(&self.path, "mincore", io::Error::last_os_error()));
                break;
            }
            resident += u64::from(status & 1);
        }
        // SAFETY: the mapping made above, of `len` bytes.
        unsafe { libc::munmap(map, len) };
        result.map(|()| resident as f64 / samples as f64)
    }

    /// Asks the kernel to drop the file's clean pages from the page cache
    /// (`posix_fadvise(POSIX_FADV_DONTNEED)`): what benchmarks and tests use
    /// to make a file cold. Dirty pages stay until written back; call
    /// `sync_all` on a file just written first.
    pub fn drop_cached(&self) -> Result<(), Error> {
        // SAFETY: a valid fd; advice only.
        let rc =
            unsafe { libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            return Err(io_error(
                &self.path,
                "posix_fadvise",
                io::Error::from_raw_os_error(rc),
            ));
        }
        Ok(())
    }

    /// The buffered descriptor.
    pub(crate) fn buffered_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// The `O_DIRECT` descriptor, where there is one.
    pub(crate) fn direct_fd(&self) -> Option<i32> {
        self.direct.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Reads `len` bytes at `offset` into a new vector, directly where the
    /// file allows it (so that a cold file's pages stay out of the page
    /// cache), else buffered. For headers: small, read once.
    pub(crate) fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>, Error> {
        let end = offset
            .checked_add(len as u64)
            .filter(|&end| end <= self.len);
        if end.is_none() {
            return Err(LoadError::Truncated {
                path: self.path.clone(),
                needed: offset.saturating_add(len as u64),
                len: self.len,
            }
            .into());
        }
        let mut out = vec![0u8; len];
        if let (Some(fd), Some(align)) = (self.direct_fd(), self.align) {
            let unit = align.unit() as u64;
            let start = offset - offset % unit;
            let span = (offset + len as u64 - start).next_multiple_of(unit) as usize;
            let mut bounce = super::bounce::Bounce::new(span, align.unit());
            let got = pread_full(fd, bounce.as_mut_slice(), start, true)
                .map_err(|source| io_error(&self.path, "pread", source))?;
            let skip = (offset - start) as usize;
            if got < skip + len {
                return Err(self.shrunk(offset, len as u64, got.saturating_sub(skip) as u64));
            }
            out.copy_from_slice(&bounce.as_mut_slice()[skip..skip + len]);
            return Ok(out);
        }
        let got = pread_full(self.buffered_fd(), &mut out, offset, false)
            .map_err(|source| io_error(&self.path, "pread", source))?;
        if got < len {
            return Err(self.shrunk(offset, len as u64, got as u64));
        }
        Ok(out)
    }

    pub(crate) fn shrunk(&self, offset: u64, expected: u64, found: u64) -> Error {
        LoadError::Shrunk {
            path: self.path.clone(),
            offset,
            expected,
            found,
        }
        .into()
    }
}

/// `pread` until `buf` is full or the file ends (or, for a `direct` read, a
/// short read leaves an unaligned remainder); returns the bytes read.
fn pread_full(fd: i32, buf: &mut [u8], offset: u64, direct: bool) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let rest = &mut buf[got..];
        // SAFETY: `rest` is valid for writes of its length.
        let n = unsafe {
            libc::pread(
                fd,
                rest.as_mut_ptr().cast(),
                rest.len(),
                (offset + got as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        if n == 0 {
            break;
        }
        got += n as usize;
        if direct && got % 512 != 0 {
            // A direct read stops short only at the end of the file.
            break;
        }
    }
    Ok(got)
}

pub(crate) fn io_error(path: &Path, call: &'static str, source: io::Error) -> Error {
    LoadError::Io {
        path: path.to_path_buf(),
        call,
        source,
    }
    .into()
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("direct", &self.align)
            .finish()
    }
}
