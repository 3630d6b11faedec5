//! [`MetalError`]: what went wrong with Metal (feature `metal`, Apple
//! platforms; re-exported by `unimem::metal`).

use core::fmt;

use super::Error;

/// What went wrong with Metal.
#[derive(Debug)]
#[non_exhaustive]
pub enum MetalError {
    /// The system has no Metal device.
    NoDevice,
    /// `newBufferWithBytesNoCopy` returned nil for `len` bytes (longer than
    /// `maxBufferLength`, or memory Metal cannot wrap).
    NoBuffer {
        /// The bytes that were to be wrapped.
        len: usize,
    },
}

impl fmt::Display for MetalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetalError::NoDevice => f.write_str("no Metal device (MTLCreateSystemDefaultDevice)"),
            MetalError::NoBuffer { len } => write!(
                f,
                "newBufferWithBytesNoCopy refused {len} bytes (beyond maxBufferLength, or not \
                 page-aligned memory of whole pages)"
            ),
        }
    }
}

impl std::error::Error for MetalError {}

impl From<MetalError> for Error {
    fn from(error: MetalError) -> Error {
        Error::Metal(error)
    }
}
