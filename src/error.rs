//! The crate's one error type.

use core::fmt;
use std::io;

/// Everything that can go wrong when opening, sharing or attaching memory.
///
/// Allocation paths that a trait obliges to answer with `None`, a null pointer
/// or `AllocError` do so; every constructor and system interaction reports one
/// of these variants instead.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A size of zero bytes was asked for.
    ZeroSize,
    /// The size asked for overflows once rounded up to whole pages, or is larger
    /// than any mapping can be.
    Overflow {
        /// The size that was asked for, in bytes (or in cells for a `Grid`).
        requested: usize,
    },
    /// The size asked for is below what the structure needs for itself.
    TooSmall {
        /// The size that was asked for, in bytes.
        requested: usize,
        /// The smallest size that works, in bytes.
        minimum: usize,
    },
    /// A system call failed.
    Os {
        /// The call that failed, as written in C.
        call: &'static str,
        /// The error the system reported (it carries the errno).
        source: io::Error,
    },
    /// A platform call failed with a status code that is not an errno (a
    /// `kern_return_t` on Apple platforms).
    Platform {
        /// The call that failed.
        call: &'static str,
        /// The status it returned.
        code: i32,
    },
    /// `mlock` refused to pin the pages and pinning was required.
    Pin {
        /// The size of the region that could not be pinned, in bytes.
        bytes: usize,
        /// The error `mlock` reported (usually `ENOMEM` or `EPERM`).
        source: io::Error,
    },
    /// A handle given to [`Block::attach`](crate::Block::attach) does not name
    /// memory that a Block can map.
    BadHandle {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An argument is malformed (for example a label with a NUL byte).
    InvalidArgument {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// This platform's backend cannot do what was asked.
    Unsupported {
        /// What cannot be done.
        what: &'static str,
    },
    /// The CUDA driver is absent or refused a call.
    #[cfg(feature = "cuda")]
    Cuda(crate::cuda::CudaError),
}

impl Error {
    /// The system's error number, when the error came from the system.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Os { source, .. } | Error::Pin { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// Captures `errno` right after a failed call.
    #[cfg(all(target_os = "linux", not(miri)))]
    pub(crate) fn last_os(call: &'static str) -> Error {
        Error::Os {
            call,
            source: io::Error::last_os_error(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ZeroSize => f.write_str("a size of zero bytes was requested"),
            Error::Overflow { requested } => write!(
                f,
                "a size of {requested} overflows when rounded up to whole pages or exceeds the address space"
            ),
            Error::TooSmall { requested, minimum } => write!(
                f,
                "a size of {requested} bytes is too small: at least {minimum} bytes are needed"
            ),
            Error::Os { call, source } => write!(f, "{call} failed: {source}"),
            Error::Platform { call, code } => write!(f, "{call} failed with status {code:#x}"),
            Error::Pin { bytes, source } => write!(
                f,
                "mlock could not pin {bytes} bytes: {source}; raise the locked-memory limit \
                 (RLIMIT_MEMLOCK, `ulimit -l`), grant CAP_IPC_LOCK, or open the block with \
                 Pinning::BestEffort"
            ),
            Error::BadHandle { reason } => write!(f, "not a block handle: {reason}"),
            Error::InvalidArgument { reason } => write!(f, "invalid argument: {reason}"),
            Error::Unsupported { what } => write!(f, "not supported on this platform: {what}"),
            #[cfg(feature = "cuda")]
            Error::Cuda(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Os { source, .. } | Error::Pin { source, .. } => Some(source),
            #[cfg(feature = "cuda")]
            Error::Cuda(error) => Some(error),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_cause() {
        let pin = Error::Pin {
            bytes: 4096,
            source: io::Error::from_raw_os_error(libc_enomem()),
        };
        let text = pin.to_string();
        assert!(text.contains("RLIMIT_MEMLOCK"), "{text}");
        assert!(text.contains("4096"), "{text}");
        assert_eq!(pin.raw_os_error(), Some(libc_enomem()));
        assert!(std::error::Error::source(&pin).is_some());

        let os = Error::Os {
            call: "mmap",
            source: io::Error::from_raw_os_error(libc_enomem()),
        };
        assert!(os.to_string().starts_with("mmap failed"));
        assert_eq!(Error::ZeroSize.raw_os_error(), None);
        assert!(
            Error::Overflow {
                requested: usize::MAX
            }
            .to_string()
            .contains(&usize::MAX.to_string())
        );
    }

    fn libc_enomem() -> i32 {
        12
    }
}
