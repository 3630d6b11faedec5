//! [`VulkanError`]: what went wrong with Vulkan (feature `vulkan`;
//! re-exported by `unimem::vulkan`).

use core::fmt;

use ash::vk;

use super::Error;

/// What went wrong with Vulkan.
#[derive(Debug)]
#[non_exhaustive]
pub enum VulkanError {
    /// No Vulkan loader (`libvulkan.so.1`) could be loaded.
    NoLoader {
        /// What the loader said.
        reason: String,
    },
    /// No Vulkan device: no driver, or none that can import host memory
    /// (`VK_EXT_external_memory_host`).
    NoDevice,
    /// A device given to [`Device::from_raw`](crate::vulkan::Device::from_raw) was created without this
    /// extension enabled, or the driver does not offer an extension a query
    /// needs (`VK_EXT_pci_bus_info` for
    /// [`Node::near_vulkan`](crate::Node::near_vulkan)).
    MissingExtension {
        /// The extension's name.
        extension: &'static str,
    },
    /// The driver offers no host-visible memory type for this pointer.
    NoMemoryType,
    /// The range is not aligned to the device's
    /// `minImportedHostPointerAlignment`.
    Misaligned {
        /// The range's address.
        address: usize,
        /// Its length.
        len: usize,
        /// The alignment the device needs.
        alignment: u64,
    },
    /// A Vulkan call failed with `result`.
    Call {
        /// The function that failed.
        call: &'static str,
        /// The result it returned.
        result: vk::Result,
    },
}

impl fmt::Display for VulkanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VulkanError::NoLoader { reason } => write!(
                f,
                "no Vulkan loader: libvulkan.so.1 could not be loaded ({reason}); install the \
                 loader (Debian: libvulkan1) and a driver (mesa-vulkan-drivers, or the GPU's)"
            ),
            VulkanError::NoDevice => f.write_str(
                "no Vulkan device that can import host memory (VK_EXT_external_memory_host)",
            ),
            VulkanError::MissingExtension { extension } => {
                write!(
                    f,
                    "the Vulkan device lacks {extension} (not offered, or not enabled)"
                )
            }
            VulkanError::NoMemoryType => {
                f.write_str("the driver offers no host-visible memory type to import this memory")
            }
            VulkanError::Misaligned {
                address,
                len,
                alignment,
            } => write!(
                f,
                "{len} bytes at {address:#x} are not aligned to the device's \
                 minImportedHostPointerAlignment of {alignment}"
            ),
            VulkanError::Call { call, result } => write!(f, "{call} failed: {result}"),
        }
    }
}

impl std::error::Error for VulkanError {}

impl From<VulkanError> for Error {
    fn from(error: VulkanError) -> Error {
        Error::Vulkan(error)
    }
}
