//! wgpu over Vulkan: part of `wgpu/mod.rs`. The device is opened through
//! wgpu-hal with `VK_EXT_external_memory_host` added to the extensions wgpu
//! enables; the Blocks are imported by [`crate::vulkan`] into that same
//! `VkDevice`; a buffer is a `VkBuffer` bound into an import at the
//! allocation's offset, handed to wgpu with `Buffer::from_raw_externally_owned`
//! and `Device::create_buffer_from_hal`.

use core::ptr::NonNull;
use std::sync::Arc;

use ::wgpu::hal;
use ::wgpu::hal::api::Vulkan as Api;
use ash::vk;

use super::{WgpuError, caught, wgpu};
use crate::Error;
use crate::register::Regions;
use crate::vulkan::{BufferRange, VulkanError};

/// The backends an instance enumerates.
pub(super) const BACKENDS: wgpu::Backends = wgpu::Backends::VULKAN;

/// The extension that imports host memory.
const EXTENSION: &core::ffi::CStr = ash::ext::external_memory_host::NAME;

/// The imports behind a registration.
pub(super) type Imported<A> = crate::vulkan::Registered<A>;

/// Where a buffer a scope made lies.
pub(super) type Binding = BufferRange;

/// Whether `adapter` is a Vulkan 1.1 device with the extension.
pub(super) fn can_import(adapter: &wgpu::Adapter) -> bool {
    // SAFETY: the hal adapter is only queried, and the guard dropped here.
    let Some(hal) = (unsafe { adapter.as_hal::<Api>() }) else {
        return false;
    };
    let capabilities = hal.physical_device_capabilities();
    capabilities.properties().api_version >= vk::API_VERSION_1_1
        && capabilities.supports_extension(EXTENSION)
}

/// Opens `adapter` as `descriptor` asks (its features and limits were
/// checked against the adapter's), with the extension enabled.
pub(super) fn open(
    adapter: &wgpu::Adapter,
    descriptor: &wgpu::DeviceDescriptor<'_>,
) -> Result<(wgpu::Device, wgpu::Queue), Error> {
    if !can_import(adapter) {
        return Err(WgpuError::NoAdapter.into());
    }
    let open = {
        // SAFETY: the guard lives only through the open below.
        let Some(hal) = (unsafe { adapter.as_hal::<Api>() }) else {
            return Err(WgpuError::NoAdapter.into());
        };
        let add_extension = Box::new(|args: hal::vulkan::CreateDeviceCallbackArgs<'_, '_, '_>| {
            if !args.extensions.contains(&EXTENSION) {
                args.extensions.push(EXTENSION);
            }
        });
        // SAFETY: the features and limits are within the adapter's (checked
        // by the caller, as `Adapter::request_device` checks them); the
        // callback only adds an extension the physical device has
        // (`can_import`), whose one dependency (VK_KHR_external_memory) is
        // core in Vulkan 1.1, and removes nothing.
        unsafe {
            hal.open_with_callback(
                descriptor.required_features,
                &descriptor.required_limits,
                &descriptor.memory_hints,
                Some(add_extension),
            )
        }
        .map_err(|error| WgpuError::Open {
            reason: format!("vkCreateDevice through wgpu-hal: {error}"),
        })?
    };
    // SAFETY: `open` was made from this adapter's hal adapter, with exactly
    // the descriptor's features.
    unsafe { adapter.create_device_from_hal::<Api>(open, descriptor) }.map_err(|error| {
        WgpuError::Open {
            reason: error.to_string(),
        }
        .into()
    })
}

/// This crate's handles to the `VkDevice` behind a wgpu device.
#[derive(Clone)]
pub(super) struct Native {
    vulkan: Arc<crate::vulkan::Device>,
}

impl Native {
    /// The handles of `device`, which must be a Vulkan device with the
    /// extension enabled.
    pub(super) fn of(device: &wgpu::Device) -> Result<Native, Error> {
        // SAFETY: the hal device is only queried and its handles cloned;
        // nothing is destroyed through them (see below).
        let Some(hal) = (unsafe { device.as_hal::<Api>() }) else {
            return Err(WgpuError::Unsupported {
                reason: "not a Vulkan device",
            }
            .into());
        };
        if !hal.enabled_device_extensions().contains(&EXTENSION) {
            return Err(VulkanError::MissingExtension {
                extension: "VK_EXT_external_memory_host",
            }
            .into());
        }
        let shared = hal.shared_instance();
        // SAFETY: the handles are wgpu's, live while the wgpu device is; every
        // holder of this `Native` (a `Device`, and through it a
        // `Registered`) keeps a clone of the wgpu device beside it, and the
        // registration's imports are freed before its clone goes. The
        // value does not own the device (`from_raw` destroys nothing), and
        // the extension is enabled (checked above).
        let vulkan = unsafe {
            crate::vulkan::Device::from_raw(
                shared.entry().clone(),
                shared.raw_instance().clone(),
                hal.raw_physical_device(),
                hal.raw_device().clone(),
                hal.queue_family_index(),
            )
        }?;
        Ok(Native { vulkan })
    }

    /// Imports `inner`'s Blocks into the device. Freeing an import does
    /// not wait for the device idle: the queue is wgpu's, and every buffer
    /// wgpu was given over an import is destroyed and waited for when its
    /// scope ends, before the registration can go.
    pub(super) fn import<A: Regions>(&self, inner: A) -> Result<Imported<A>, Error> {
        Imported::import(&self.vulkan, inner, false)
    }

    /// The alignment of a buffer with `usage` over imported memory.
    pub(super) fn buffer_alignment(&self, usage: wgpu::BufferUsages) -> Result<u64, Error> {
        self.vulkan.buffer_alignment(usage_flags(usage))
    }

    /// A wgpu buffer over the `len` bytes at `bytes`, bound into the import
    /// that holds them.
    ///
    /// # Safety
    /// As `Scope::buffer_raw`; `imported` was made by this `Native`, and
    /// outlives the GPU's use of the buffer.
    pub(super) unsafe fn buffer<A: Regions>(
        &self,
        device: &wgpu::Device,
        imported: &Imported<A>,
        bytes: NonNull<u8>,
        len: usize,
        usage: wgpu::BufferUsages,
    ) -> Result<(wgpu::Buffer, Binding), Error> {
        let address = bytes.as_ptr().addr();
        let range = imported
            .buffer_range(bytes.as_ptr(), len)
            .ok_or(WgpuError::NotRegistered { address, len })?;
        // SAFETY: `range.memory` is a live import of this device that holds
        // the bytes; the registration frees it only after the buffer is
        // gone (the scope ends first).
        let raw =
            unsafe { self.vulkan.bind(&range, usage_flags(usage), address) }.map_err(|error| {
                match error {
                    Error::Vulkan(VulkanError::Misaligned { alignment, .. }) => {
                        WgpuError::Misaligned { address, alignment }.into()
                    }
                    other => other,
                }
            })?;
        let owner = self.vulkan.device().clone();
        let release: hal::DropCallback = Box::new(move || {
            // SAFETY: wgpu-hal runs this once, when it lets go of the
            // buffer: after the last submission that used it finished, or
            // at once if wgpu refused it. The device is live then (wgpu-hal
            // drops buffers before their device).
            unsafe { owner.destroy_buffer(raw, None) }
        });
        // SAFETY: `raw` is a live buffer of this device, bound to memory
        // this crate keeps (the import); wgpu-hal never maps it (no MAP
        // usages) and hands it back through `release`.
        let hal_buffer = unsafe { hal::vulkan::Buffer::from_raw_externally_owned(raw, release) };
        let descriptor = wgpu::BufferDescriptor {
            label: Some("unimem"),
            size: len as u64,
            usage,
            mapped_at_creation: false,
        };
        let buffer = caught(device, || {
            // SAFETY: made from this device's `VkDevice`, with the
            // descriptor's size and usages (`usage_flags`), not zero-sized,
            // and initialized: its bytes are the allocation's.
            unsafe { device.create_buffer_from_hal::<Api>(hal_buffer, &descriptor) }
        })?;
        let binding = BufferRange {
            buffer: raw,
            size: len as u64,
            ..range
        };
        Ok((buffer, binding))
    }

    /// Waits for the whole device, when waiting on wgpu's queue failed.
    pub(super) fn wait_idle(&self, error: &wgpu::PollError) {
        let _ = error;
        // SAFETY: only on the failure path: a `vkDeviceWaitIdle` that races
        // a submission from another thread breaks Vulkan's rule that the
        // queue is externally synchronized, which is the lesser risk than
        // letting memory go that the device may still use.
        unsafe {
            let _ = self.vulkan.device().device_wait_idle();
        }
    }
}

/// The Vulkan usages wgpu-hal gives a buffer with `usage`
/// (`wgpu_hal::vulkan::conv::map_buffer_usage`, for the usages allowed).
fn usage_flags(usage: wgpu::BufferUsages) -> vk::BufferUsageFlags {
    let pairs = [
        (
            wgpu::BufferUsages::COPY_SRC,
            vk::BufferUsageFlags::TRANSFER_SRC,
        ),
        (
            wgpu::BufferUsages::COPY_DST,
            vk::BufferUsageFlags::TRANSFER_DST,
        ),
        (
            wgpu::BufferUsages::UNIFORM,
            vk::BufferUsageFlags::UNIFORM_BUFFER,
        ),
        (
            wgpu::BufferUsages::STORAGE,
            vk::BufferUsageFlags::STORAGE_BUFFER,
        ),
        (
            wgpu::BufferUsages::INDEX,
            vk::BufferUsageFlags::INDEX_BUFFER,
        ),
        (
            wgpu::BufferUsages::VERTEX,
            vk::BufferUsageFlags::VERTEX_BUFFER,
        ),
        (
            wgpu::BufferUsages::INDIRECT,
            vk::BufferUsageFlags::INDIRECT_BUFFER,
        ),
    ];
    pairs
        .into_iter()
        .filter(|(wgpu, _)| usage.contains(*wgpu))
        .fold(vk::BufferUsageFlags::empty(), |flags, (_, vk)| flags | vk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usages_map_as_wgpu_hal_maps_them() {
        let flags = usage_flags(wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC);
        assert_eq!(
            flags,
            vk::BufferUsageFlags::STORAGE_BUFFER | vk::BufferUsageFlags::TRANSFER_SRC
        );
        let all = usage_flags(super::super::ALLOWED);
        assert_eq!(all.as_raw().count_ones(), 7);
    }
}
