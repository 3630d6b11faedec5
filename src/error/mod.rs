//! The crate's one error type, and the device errors it carries.
//!
//! A leaf: nothing here uses the rest of the crate. The device errors
//! (`cuda.rs`, `vulkan.rs`, `metal.rs`, `wgpu.rs`, `ucx.rs`, each behind
//! its feature) and the loader's (`load.rs`, feature `load`) are plain
//! data, made by their modules, which re-export them
//! (`unimem::cuda::CudaError`); the text telling how to raise the
//! locked-memory limit is here, and `block` fills in the limit.

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(all(feature = "load", unimem_linux))]
mod load;
#[cfg(all(feature = "metal", target_vendor = "apple"))]
mod metal;
#[cfg(feature = "ucx")]
mod ucx;
#[cfg(feature = "vulkan")]
mod vulkan;
#[cfg(feature = "wgpu")]
mod wgpu;

use core::fmt;
use std::io;

#[cfg(feature = "cuda")]
pub use cuda::CudaError;
#[cfg(all(feature = "load", unimem_linux))]
pub use load::{LoadError, ViewError};
#[cfg(all(feature = "metal", target_vendor = "apple"))]
pub use metal::MetalError;
#[cfg(feature = "ucx")]
pub use ucx::UcxError;
#[cfg(feature = "vulkan")]
pub use vulkan::VulkanError;
#[cfg(feature = "wgpu")]
pub use wgpu::WgpuError;

/// How to raise the locked-memory limit: in [`Error::Pin`]'s message and in
/// the line a refused best-effort pin writes (`block/report.rs`).
pub(crate) const HOW_TO_RAISE: &str = "raise it with `memlock` in /etc/security/limits.conf, \
     LimitMEMLOCK= for a systemd service, `docker run --ulimit memlock=-1`, or \
     `setcap cap_ipc_lock=+ep` on the program";

/// What lets a process bind memory to a NUMA node, in [`Error::Placement`]'s
/// message and the line told when `mbind` is first refused.
pub(crate) const HOW_TO_ALLOW_MBIND: &str = "in a container, allow the mbind system call: Docker's \
     default seccomp profile allows it with `--cap-add SYS_NICE`, or run with a profile that \
     allows it";

/// Everything that can go wrong when opening, growing, sharing or attaching
/// memory.
///
/// Allocation paths that a trait obliges to answer with `None`, a null pointer
/// or `AllocError` do so; every constructor and system interaction reports one
/// of these variants instead. `Debug` shows the message too (with its hints),
/// so that `fn main() -> Result<(), unimem::Error>` prints it.
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
    /// A Grid's cell size and count cannot make a Grid.
    GridSize {
        /// The cell size asked for, in bytes.
        cell_size: usize,
        /// The number of cells asked for.
        cells: usize,
        /// What is wrong with them.
        reason: &'static str,
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
        /// The size of the range that could not be pinned, in bytes.
        bytes: usize,
        /// The soft `RLIMIT_MEMLOCK` when it was refused, in bytes (`None`:
        /// unlimited).
        limit: Option<u64>,
        /// The error `mlock` reported (usually `ENOMEM` or `EPERM`).
        source: io::Error,
    },
    /// More memory was asked to be faulted in or pinned than the machine
    /// has (or, for a handle from another process, has available; for a
    /// Block with [`Placement::Required`](crate::Placement::Required), than
    /// its node has).
    OutOfMemory {
        /// The bytes that would have been faulted in.
        requested: usize,
        /// The bytes the machine (or the node) has, or has available.
        available: usize,
    },
    /// Too few explicit huge pages are free for a Block of huge pages.
    HugePages {
        /// The huge page size asked for, in bytes.
        page_size: usize,
        /// The bytes that could not be mapped.
        bytes: usize,
        /// The error `mmap` reported (usually `ENOMEM`).
        source: io::Error,
    },
    /// A Block cannot be placed on the NUMA node asked for: it does not
    /// exist, has no memory, or is outside the nodes this process may use.
    Node {
        /// The node asked for.
        node: u32,
        /// Why it cannot hold the Block.
        reason: &'static str,
    },
    /// The system refused to bind a Block to its NUMA node (`mbind` failed
    /// with `EPERM` or `ENOSYS`: memory policies are forbidden here, as
    /// some containers' seccomp profiles do) and placement was required.
    Placement {
        /// The node asked for.
        node: u32,
        /// The error `mbind` reported.
        source: io::Error,
    },
    /// A commit past the Block's reserved capacity.
    Capacity {
        /// The committed size asked for, in bytes.
        requested: usize,
        /// The Block's capacity, in bytes.
        capacity: usize,
    },
    /// A decommit of a Block that a device registration covers: the device
    /// may still use the pages.
    Registered,
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
    /// Something that exists once at a time is already in use (a
    /// [`Model`](crate::Model)'s conversation, or its pass).
    Busy {
        /// What is in use.
        what: &'static str,
    },
    /// This platform's backend cannot do what was asked.
    Unsupported {
        /// What cannot be done.
        what: &'static str,
    },
    /// The CUDA driver is absent or refused a call.
    #[cfg(feature = "cuda")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cuda")))]
    Cuda(CudaError),
    /// The Vulkan loader or device is absent or refused a call.
    #[cfg(feature = "vulkan")]
    #[cfg_attr(docsrs, doc(cfg(feature = "vulkan")))]
    Vulkan(VulkanError),
    /// Metal has no device, or refused to wrap memory.
    #[cfg(all(feature = "metal", target_vendor = "apple"))]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "metal", target_vendor = "apple"))))]
    Metal(MetalError),
    /// wgpu has no adapter that takes host memory, or refused a buffer over
    /// an allocation.
    #[cfg(feature = "wgpu")]
    #[cfg_attr(docsrs, doc(cfg(feature = "wgpu")))]
    Wgpu(WgpuError),
    /// UCX refused a call, or a descriptor, remote access or bootstrap link
    /// failed.
    #[cfg(feature = "ucx")]
    #[cfg_attr(docsrs, doc(cfg(feature = "ucx")))]
    Ucx(UcxError),
    /// A file could not be read into memory, or is not a well-formed
    /// checkpoint.
    #[cfg(all(feature = "load", unimem_linux))]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "load", target_os = "linux"))))]
    Load(LoadError),
}

impl Error {
    /// The system's error number, when the error came from the system
    /// (`ENOMEM` for [`Error::OutOfMemory`]).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Os { source, .. }
            | Error::Pin { source, .. }
            | Error::HugePages { source, .. }
            | Error::Placement { source, .. } => source.raw_os_error(),
            Error::OutOfMemory { .. } => Some(ENOMEM),
            _ => None,
        }
    }

    /// Captures `errno` right after a failed call.
    #[cfg(unimem_linux)]
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
            Error::GridSize {
                cell_size,
                cells,
                reason,
            } => write!(
                f,
                "a Grid of {cells} cells of {cell_size} bytes cannot be made: {reason}"
            ),
            Error::TooSmall { requested, minimum } => write!(
                f,
                "a size of {requested} bytes is too small: at least {minimum} bytes are needed"
            ),
            Error::Os { call, source } => write!(f, "{call} failed: {source}"),
            Error::Platform { call, code } => write!(f, "{call} failed with status {code:#x}"),
            Error::Pin {
                bytes,
                limit,
                source,
            } => {
                write!(f, "mlock refused to pin {bytes} bytes ({source}); ")?;
                match limit {
                    Some(limit) => write!(f, "RLIMIT_MEMLOCK is {limit} bytes")?,
                    None => f.write_str("RLIMIT_MEMLOCK is unlimited")?,
                }
                write!(
                    f,
                    ". To pin more, {}; or open the Block with Pinning::BestEffort",
                    HOW_TO_RAISE
                )
            }
            Error::OutOfMemory {
                requested,
                available,
            } => write!(
                f,
                "{requested} bytes cannot be faulted in or pinned: the machine (or the NUMA node \
                 the Block is bound to) has {available} bytes \
                 (open with prefault(false) and Pinning::Off to reserve without touching)"
            ),
            Error::HugePages {
                page_size,
                bytes,
                source,
            } => write!(
                f,
                "no {} KiB huge pages for {bytes} bytes ({source}): reserve more in \
                 /proc/sys/vm/nr_hugepages (or \
                 /sys/kernel/mm/hugepages/hugepages-{}kB/nr_hugepages)",
                page_size >> 10,
                page_size >> 10
            ),
            Error::Node { node, reason } => {
                write!(f, "NUMA node {node} cannot hold a Block: {reason}")
            }
            Error::Placement { node, source } => write!(
                f,
                "mbind refused to bind a Block to NUMA node {node} ({source}): this system \
                 forbids memory policies ({}); open with Placement::BestEffort to go on with \
                 the kernel's default placement",
                HOW_TO_ALLOW_MBIND
            ),
            Error::Capacity {
                requested,
                capacity,
            } => write!(
                f,
                "a commit of {requested} bytes is past the Block's capacity of {capacity} bytes"
            ),
            Error::Registered => f.write_str(
                "the Block is registered with a device, which may still use its pages: drop the \
                 registration before decommitting",
            ),
            Error::BadHandle { reason } => write!(f, "not a block handle: {reason}"),
            Error::InvalidArgument { reason } => write!(f, "invalid argument: {reason}"),
            Error::Busy { what } => write!(f, "already in use: {what}"),
            Error::Unsupported { what } => write!(f, "not supported on this platform: {what}"),
            #[cfg(feature = "cuda")]
            Error::Cuda(error) => write!(f, "{error}"),
            #[cfg(feature = "vulkan")]
            Error::Vulkan(error) => write!(f, "{error}"),
            #[cfg(all(feature = "metal", target_vendor = "apple"))]
            Error::Metal(error) => write!(f, "{error}"),
            #[cfg(feature = "wgpu")]
            Error::Wgpu(error) => write!(f, "{error}"),
            #[cfg(feature = "ucx")]
            Error::Ucx(error) => write!(f, "{error}"),
            #[cfg(all(feature = "load", unimem_linux))]
            Error::Load(error) => write!(f, "{error}"),
        }
    }
}

/// `Debug` is the variant's name and the whole message, hints included: it
/// is what `main` returning `Err` prints.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Error::ZeroSize => "ZeroSize",
            Error::Overflow { .. } => "Overflow",
            Error::GridSize { .. } => "GridSize",
            Error::TooSmall { .. } => "TooSmall",
            Error::Os { .. } => "Os",
            Error::Platform { .. } => "Platform",
            Error::Pin { .. } => "Pin",
            Error::OutOfMemory { .. } => "OutOfMemory",
            Error::HugePages { .. } => "HugePages",
            Error::Node { .. } => "Node",
            Error::Placement { .. } => "Placement",
            Error::Capacity { .. } => "Capacity",
            Error::Registered => "Registered",
            Error::BadHandle { .. } => "BadHandle",
            Error::InvalidArgument { .. } => "InvalidArgument",
            Error::Busy { .. } => "Busy",
            Error::Unsupported { .. } => "Unsupported",
            #[cfg(feature = "cuda")]
            Error::Cuda(_) => "Cuda",
            #[cfg(feature = "vulkan")]
            Error::Vulkan(_) => "Vulkan",
            #[cfg(all(feature = "metal", target_vendor = "apple"))]
            Error::Metal(_) => "Metal",
            #[cfg(feature = "wgpu")]
            Error::Wgpu(_) => "Wgpu",
            #[cfg(feature = "ucx")]
            Error::Ucx(_) => "Ucx",
            #[cfg(all(feature = "load", unimem_linux))]
            Error::Load(_) => "Load",
        };
        write!(f, "{name}: {self}")
    }
}

/// `ENOMEM` on every platform this crate runs on.
const ENOMEM: i32 = 12;

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Os { source, .. }
            | Error::Pin { source, .. }
            | Error::HugePages { source, .. }
            | Error::Placement { source, .. } => Some(source),
            #[cfg(feature = "cuda")]
            Error::Cuda(error) => Some(error),
            #[cfg(feature = "vulkan")]
            Error::Vulkan(error) => Some(error),
            #[cfg(all(feature = "metal", target_vendor = "apple"))]
            Error::Metal(error) => Some(error),
            #[cfg(feature = "wgpu")]
            Error::Wgpu(error) => Some(error),
            #[cfg(feature = "ucx")]
            Error::Ucx(error) => Some(error),
            #[cfg(all(feature = "load", unimem_linux))]
            Error::Load(error) => Some(error),
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
            limit: Some(8 << 20),
            source: io::Error::from_raw_os_error(libc_enomem()),
        };
        let text = pin.to_string();
        assert!(text.contains("RLIMIT_MEMLOCK"), "{text}");
        assert!(text.contains("4096"), "{text}");
        for hint in [
            "/etc/security/limits.conf",
            "LimitMEMLOCK=",
            "--ulimit memlock=-1",
            "cap_ipc_lock=+ep",
            "Pinning::BestEffort",
        ] {
            assert!(text.contains(hint), "{hint} missing from {text}");
        }
        let debug = format!("{pin:?}");
        assert!(
            debug.starts_with("Pin: ") && debug.contains("limits.conf"),
            "{debug}"
        );
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

    #[test]
    fn huge_page_errors_name_the_pool() {
        let error = Error::HugePages {
            page_size: 2 << 20,
            bytes: 4 << 20,
            source: io::Error::from_raw_os_error(libc_enomem()),
        };
        let text = error.to_string();
        assert!(text.contains("/proc/sys/vm/nr_hugepages"), "{text}");
        assert!(text.contains("2048 KiB"), "{text}");
        assert_eq!(error.raw_os_error(), Some(libc_enomem()));
    }

    fn libc_enomem() -> i32 {
        ENOMEM
    }
}
