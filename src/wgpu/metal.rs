//! wgpu over Metal: part of `wgpu/mod.rs`. Any Metal device takes host
//! memory; the Blocks are wrapped by [`crate::metal`], and a buffer is a
//! no-copy `MTLBuffer` made by the same backend over the allocation's pages,
//! handed to wgpu with `Device::buffer_from_raw` and
//! `Device::create_buffer_from_hal`. Type-checked only: CI has no Mac.

use core::ptr::NonNull;

use ::wgpu::hal;
use ::wgpu::hal::api::Metal as Api;

use super::{WgpuError, block_on, caught, wgpu};
use crate::Error;
use crate::register::{Backend, Regions};

/// The backends an instance enumerates.
pub(super) const BACKENDS: wgpu::Backends = wgpu::Backends::METAL;

/// The wrapped Blocks behind a registration.
pub(super) type Imported<A> = crate::metal::Registered<A>;

/// Where a buffer a scope made lies: nothing more than the buffer says.
pub(super) type Binding = ();

/// Whether `adapter` is a Metal adapter (every Metal device takes host
/// memory).
pub(super) fn can_import(adapter: &wgpu::Adapter) -> bool {
    adapter.get_info().backend == wgpu::Backend::Metal
}

/// Opens `adapter` as `descriptor` asks: Metal needs nothing added.
pub(super) fn open(
    adapter: &wgpu::Adapter,
    descriptor: &wgpu::DeviceDescriptor<'_>,
) -> Result<(wgpu::Device, wgpu::Queue), Error> {
    if !can_import(adapter) {
        return Err(WgpuError::NoAdapter.into());
    }
    block_on(adapter.request_device(descriptor)).map_err(|error| {
        WgpuError::Open {
            reason: error.to_string(),
        }
        .into()
    })
}

/// The Metal device behind a wgpu device.
#[derive(Clone)]
pub(super) struct Native {
    device: crate::metal::Device,
}

impl Native {
    /// The Metal device of `device`, which must be a Metal device.
    pub(super) fn of(device: &wgpu::Device) -> Result<Native, Error> {
        // SAFETY: the hal device is only queried, and its Metal device
        // retained; nothing is destroyed through it.
        let Some(hal) = (unsafe { device.as_hal::<Api>() }) else {
            return Err(WgpuError::Unsupported {
                reason: "not a Metal device",
            }
            .into());
        };
        Ok(Native {
            device: hal.raw_device().clone(),
        })
    }

    /// Wraps `inner`'s Blocks in no-copy buffers of the device.
    pub(super) fn import<A: Regions>(&self, inner: A) -> Result<Imported<A>, Error> {
        Imported::new(&self.device, inner)
    }

    /// A no-copy buffer starts on a page.
    pub(super) fn buffer_alignment(&self, _usage: wgpu::BufferUsages) -> Result<u64, Error> {
        Ok(crate::page_size() as u64)
    }

    /// A wgpu buffer over the `len` bytes at `bytes`: a no-copy `MTLBuffer`
    /// over their pages (whole pages: `newBufferWithBytesNoCopy` takes no
    /// less), of which wgpu is told the first `len` bytes.
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
        let page = crate::page_size();
        if !address.is_multiple_of(page) {
            return Err(WgpuError::Misaligned {
                address,
                alignment: page as u64,
            }
            .into());
        }
        let not_registered = WgpuError::NotRegistered { address, len };
        let (part, offset) = imported.lookup(address, len).ok_or(not_registered)?;
        let pages = len.checked_next_multiple_of(page);
        let Some(pages) = pages.filter(|&pages| offset + pages <= part.len) else {
            return Err(WgpuError::NotRegistered { address, len }.into());
        };
        // The same call that wraps the Blocks, over just these pages: they
        // lie in a wrapped part, which the registration keeps mapped.
        let raw = imported.backend().register(bytes, pages)?.into_retained();
        // SAFETY: a buffer of this device over memory the registration
        // keeps; wgpu is told only the allocation's `len` bytes, so its
        // bindings (bounds-checked against that size) stay inside them.
        let hal_buffer = unsafe { hal::metal::Device::buffer_from_raw(raw, len as u64) };
        let descriptor = wgpu::BufferDescriptor {
            label: Some("unimem"),
            size: len as u64,
            usage,
            mapped_at_creation: false,
        };
        let buffer = caught(device, || {
            // SAFETY: made from this device's `MTLDevice`, with shared
            // storage (which every usage allows), not zero-sized, and
            // initialized: its bytes are the allocation's.
            unsafe { device.create_buffer_from_hal::<Api>(hal_buffer, &descriptor) }
        })?;
        Ok((buffer, ()))
    }

    /// A failed wait leaves nothing else to wait on: Metal has no
    /// device-wide wait.
    pub(super) fn wait_idle(&self, _error: &wgpu::PollError) {}
}
