//! [`WgpuError`]: what went wrong handing memory to wgpu (feature `wgpu`;
//! re-exported by `unimem::wgpu`).

use core::fmt;

use ::wgpu::BufferUsages;

use super::Error;

/// What went wrong handing memory to wgpu.
#[derive(Debug)]
#[non_exhaustive]
pub enum WgpuError {
    /// No adapter can take host memory: on Vulkan, none has
    /// `VK_EXT_external_memory_host` (and Vulkan 1.1); on Apple platforms,
    /// there is no Metal adapter.
    NoAdapter,
    /// This device cannot take host memory: `reason` says why (a device of
    /// another backend; a Vulkan device created without the extension is
    /// [`VulkanError::MissingExtension`](super::VulkanError::MissingExtension)).
    Unsupported {
        /// Why.
        reason: &'static str,
    },
    /// The adapter cannot give what the device descriptor asked for, or
    /// refused to open the device.
    Open {
        /// What the adapter or wgpu said.
        reason: String,
    },
    /// The bytes do not lie in one registered part of the allocator's
    /// Blocks (memory of another allocator, or an allocation across two
    /// commits).
    NotRegistered {
        /// The first byte's address.
        address: usize,
        /// How many bytes.
        len: usize,
    },
    /// The bytes do not start where a buffer over them can start.
    Misaligned {
        /// The first byte's address.
        address: usize,
        /// The alignment needed.
        alignment: u64,
    },
    /// A buffer over no bytes: wgpu has no such buffer.
    Empty,
    /// The usages asked for cannot be given.
    Usage {
        /// The usages asked for.
        usage: BufferUsages,
        /// Why not.
        reason: &'static str,
    },
    /// wgpu refused the buffer.
    Refused {
        /// The error wgpu reported.
        reason: String,
    },
}

impl fmt::Display for WgpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WgpuError::NoAdapter => f.write_str(if cfg!(target_vendor = "apple") {
                "no Metal adapter"
            } else {
                "no wgpu adapter can import host memory (a Vulkan 1.1 device with \
                 VK_EXT_external_memory_host; Debian: install libvulkan1, and \
                 mesa-vulkan-drivers or the GPU's driver)"
            }),
            WgpuError::Unsupported { reason } => {
                write!(f, "this wgpu device cannot take host memory: {reason}")
            }
            WgpuError::Open { reason } => write!(f, "could not open the wgpu device: {reason}"),
            WgpuError::NotRegistered { address, len } => write!(
                f,
                "{len} bytes at {address:#x} are not in one registered part of the allocator's \
                 Blocks"
            ),
            WgpuError::Misaligned { address, alignment } => write!(
                f,
                "a buffer cannot start at {address:#x}: the device needs a multiple of \
                 {alignment} bytes"
            ),
            WgpuError::Empty => f.write_str("a buffer over no bytes"),
            WgpuError::Usage { usage, reason } => write!(f, "usage {usage:?}: {reason}"),
            WgpuError::Refused { reason } => write!(f, "wgpu refused the buffer: {reason}"),
        }
    }
}

impl std::error::Error for WgpuError {}

impl From<WgpuError> for Error {
    fn from(error: WgpuError) -> Error {
        Error::Wgpu(error)
    }
}
