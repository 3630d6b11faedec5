//! [`LoadError`]: what can go wrong reading files into memory, and what is
//! wrong with a file that is not a well-formed safetensors checkpoint; and
//! [`ViewError`], what a typed view of a tensor refuses. Plain data, made
//! by `load` (which re-exports them).

use core::fmt;
use std::io;
use std::path::PathBuf;

use safetensors::Dtype;

/// What went wrong loading a file (feature `load`), carried by
/// [`Error::Load`](super::Error::Load).
///
/// Files are untrusted input: every malformed case has its own variant,
/// naming the file and, where there is one, the tensor.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// A system call on a file failed (open, stat, read).
    Io {
        /// The file.
        path: PathBuf,
        /// The call that failed, as written in C.
        call: &'static str,
        /// The error the system reported.
        source: io::Error,
    },
    /// Direct I/O was required ([`Direct::On`](crate::load::Direct::On)) and the
    /// file's file system does not offer it (tmpfs, for one).
    DirectUnsupported {
        /// The file.
        path: PathBuf,
    },
    /// io_uring was required ([`Engine::Uring`](crate::load::Engine::Uring)) and
    /// the kernel refused it (`io_uring_setup` denied by a seccomp profile,
    /// `/proc/sys/kernel/io_uring_disabled`, or a kernel without it).
    Uring {
        /// The call that failed.
        call: &'static str,
        /// The error the kernel reported.
        source: io::Error,
    },
    /// A read came back short: the file ended before a range it had when it
    /// was opened (it shrank while it was read).
    Shrunk {
        /// The file.
        path: PathBuf,
        /// Where the short read started.
        offset: u64,
        /// Bytes that were expected from there.
        expected: u64,
        /// Bytes that came.
        found: u64,
    },
    /// A range asked of a file lies past its end (as it was when opened).
    OutOfRange {
        /// The file.
        path: PathBuf,
        /// The range's first byte.
        offset: u64,
        /// The range's length.
        len: u64,
        /// The file's length.
        file_len: u64,
    },
    /// The file is shorter than its own header says it is.
    Truncated {
        /// The file.
        path: PathBuf,
        /// The length the header (or the 8-byte length before it) needs.
        needed: u64,
        /// The file's length.
        len: u64,
    },
    /// The 8-byte header length is past the cap
    /// ([`MAX_HEADER`](crate::load::safetensors::MAX_HEADER)).
    HeaderTooLarge {
        /// The file.
        path: PathBuf,
        /// The length the file gives.
        len: u64,
        /// The cap.
        max: u64,
    },
    /// The header is not JSON of the safetensors schema (or not UTF-8).
    Header {
        /// The file.
        path: PathBuf,
        /// What the parser said, with the line and column.
        source: serde_json::Error,
    },
    /// Two tensors have the same name (in one header, or in two shards).
    DuplicateName {
        /// The file (the second shard, for names in two shards).
        path: PathBuf,
        /// The name.
        name: String,
    },
    /// A tensor's `data_offsets` end before they start.
    ReversedOffsets {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Its start.
        start: usize,
        /// Its end.
        end: usize,
    },
    /// Two tensors' bytes overlap.
    Overlap {
        /// The file.
        path: PathBuf,
        /// The tensor that starts inside another.
        name: String,
        /// The one it starts inside.
        other: String,
    },
    /// Bytes between two tensors (or before the first) belong to none.
    Gap {
        /// The file.
        path: PathBuf,
        /// The tensor after the gap.
        name: String,
        /// Where it should start (the end of the one before).
        expected: usize,
        /// Where it starts.
        start: usize,
    },
    /// A tensor ends past the file's end.
    TensorPastEnd {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Its end, from the start of the file.
        end: u64,
        /// The file's length.
        file_len: u64,
    },
    /// A tensor's byte count is not its dtype's size times its elements.
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Its dtype.
        dtype: Dtype,
        /// Its shape.
        shape: Vec<usize>,
        /// The bytes dtype and shape make.
        expected: usize,
        /// The bytes its offsets give.
        found: usize,
    },
    /// The product of a tensor's shape (or that times its dtype's size)
    /// overflows.
    ShapeOverflow {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
    },
    /// A tensor of a dtype narrower than a byte does not fill whole bytes.
    PartialByte {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
    },
    /// Bytes follow the last tensor: the file is longer than its header
    /// says.
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Where the last tensor ends.
        data_end: u64,
        /// The file's length.
        len: u64,
    },
    /// The header broke a rule of the `safetensors` crate's own validation
    /// that none of the variants above names.
    Invalid {
        /// The file.
        path: PathBuf,
        /// What the crate said.
        reason: String,
    },
    /// A sharded checkpoint's index is malformed.
    Index {
        /// The index file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A shard named in the index cannot be opened.
    MissingShard {
        /// The index file.
        index: PathBuf,
        /// The shard.
        shard: PathBuf,
        /// Why it cannot be opened.
        source: io::Error,
    },
    /// A tensor the index places in a shard is not in that shard's header,
    /// or a shard holds a tensor the index does not name.
    IndexMismatch {
        /// The index file.
        index: PathBuf,
        /// The tensor.
        name: String,
        /// The shard.
        shard: PathBuf,
        /// Which of the two it is.
        reason: &'static str,
    },
    /// The Tape has too little room left for the checkpoint; nothing was
    /// taken from it.
    TapeTooSmall {
        /// Bytes the checkpoint needs (tensors, their alignment and the
        /// room direct reads need around them).
        needed: usize,
        /// Bytes the Tape has left.
        free: usize,
    },
    /// No tensor has this name.
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// A typed view of a tensor was refused.
    View {
        /// The tensor.
        name: String,
        /// Why.
        error: ViewError,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io { path, call, source } => {
                write!(f, "{call} of {} failed: {source}", path.display())
            }
            LoadError::DirectUnsupported { path } => write!(
                f,
                "{}: its file system offers no direct I/O (O_DIRECT), which Direct::On requires",
                path.display()
            ),
            LoadError::Uring { call, source } => write!(
                f,
                "io_uring was required and {call} failed: {source} (Engine::Auto falls back to threads)"
            ),
            LoadError::Shrunk {
                path,
                offset,
                expected,
                found,
            } => write!(
                f,
                "{}: {expected} bytes were expected at offset {offset} and {found} came: the file \
                 shrank while it was read",
                path.display()
            ),
            LoadError::OutOfRange {
                path,
                offset,
                len,
                file_len,
            } => write!(
                f,
                "{}: {len} bytes at offset {offset} lie past the end of the file ({file_len} bytes)",
                path.display()
            ),
            LoadError::Truncated { path, needed, len } => write!(
                f,
                "{}: truncated: {needed} bytes are needed and the file has {len}",
                path.display()
            ),
            LoadError::HeaderTooLarge { path, len, max } => write!(
                f,
                "{}: a header of {len} bytes is past the cap of {max} bytes",
                path.display()
            ),
            LoadError::Header { path, source } => {
                write!(f, "{}: the header is not valid: {source}", path.display())
            }
            LoadError::DuplicateName { path, name } => {
                write!(
                    f,
                    "{}: the tensor name {name:?} appears twice",
                    path.display()
                )
            }
            LoadError::ReversedOffsets {
                path,
                name,
                start,
                end,
            } => write!(
                f,
                "{}: tensor {name:?} ends ({end}) before it starts ({start})",
                path.display()
            ),
            LoadError::Overlap { path, name, other } => write!(
                f,
                "{}: tensor {name:?} overlaps tensor {other:?}",
                path.display()
            ),
            LoadError::Gap {
                path,
                name,
                expected,
                start,
            } => write!(
                f,
                "{}: tensor {name:?} starts at {start}, not at {expected} where the previous one ends",
                path.display()
            ),
            LoadError::TensorPastEnd {
                path,
                name,
                end,
                file_len,
            } => write!(
                f,
                "{}: tensor {name:?} ends at byte {end}, past the end of the file ({file_len} bytes)",
                path.display()
            ),
            LoadError::SizeMismatch {
                path,
                name,
                dtype,
                shape,
                expected,
                found,
            } => write!(
                f,
                "{}: tensor {name:?} ({dtype} {shape:?}) needs {expected} bytes and its offsets give {found}",
                path.display()
            ),
            LoadError::ShapeOverflow { path, name } => write!(
                f,
                "{}: the size of tensor {name:?} overflows",
                path.display()
            ),
            LoadError::PartialByte { path, name } => write!(
                f,
                "{}: tensor {name:?} does not fill a whole number of bytes",
                path.display()
            ),
            LoadError::TrailingBytes {
                path,
                data_end,
                len,
            } => write!(
                f,
                "{}: the tensors end at byte {data_end} and the file has {len} bytes",
                path.display()
            ),
            LoadError::Invalid { path, reason } => write!(f, "{}: {reason}", path.display()),
            LoadError::Index { path, reason } => {
                write!(f, "{}: malformed index: {reason}", path.display())
            }
            LoadError::MissingShard {
                index,
                shard,
                source,
            } => write!(
                f,
                "{}: shard {} cannot be opened: {source}",
                index.display(),
                shard.display()
            ),
            LoadError::IndexMismatch {
                index,
                name,
                shard,
                reason,
            } => write!(
                f,
                "{}: tensor {name:?} and shard {}: {reason}",
                index.display(),
                shard.display()
            ),
            LoadError::TapeTooSmall { needed, free } => write!(
                f,
                "the Tape has {free} bytes left and the checkpoint needs {needed}: nothing was loaded"
            ),
            LoadError::NotFound { name } => write!(f, "no tensor is named {name:?}"),
            LoadError::View { name, error } => write!(f, "tensor {name:?}: {error}"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Io { source, .. }
            | LoadError::Uring { source, .. }
            | LoadError::MissingShard { source, .. } => Some(source),
            LoadError::Header { source, .. } => Some(source),
            LoadError::View { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<LoadError> for super::Error {
    fn from(error: LoadError) -> super::Error {
        super::Error::Load(error)
    }
}

/// Why a typed view of a tensor ([`Tensor::as_slice`](crate::load::Tensor::as_slice)
/// and its shorthands) was refused. Nothing is reinterpreted unless dtype,
/// length and alignment all fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ViewError {
    /// The tensor's dtype is not the one asked for.
    Dtype {
        /// The tensor's dtype.
        dtype: Dtype,
        /// The dtype the element type reads.
        asked: Dtype,
    },
    /// The bytes are not a whole number of elements.
    Length {
        /// The tensor's bytes.
        bytes: usize,
        /// The element's size.
        size: usize,
    },
    /// The first byte is not aligned for the element type (possible only
    /// when the checkpoint was placed with an alignment below it).
    Alignment {
        /// The first byte's address.
        address: usize,
        /// The alignment the element needs.
        align: usize,
    },
}

impl fmt::Display for ViewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ViewError::Dtype { dtype, asked } => {
                write!(f, "its dtype is {dtype}, not {asked}")
            }
            ViewError::Length { bytes, size } => write!(
                f,
                "{bytes} bytes are not a whole number of {size}-byte elements"
            ),
            ViewError::Alignment { address, align } => write!(
                f,
                "its first byte at {address:#x} is not aligned to {align} bytes"
            ),
        }
    }
}

impl std::error::Error for ViewError {}
