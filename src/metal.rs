//! Metal: an Apple GPU reads and writes a Block's pages with no copies
//! (feature `metal`, Apple platforms).
//!
//! A Block on Apple platforms is an IOSurface, whose memory is page-aligned
//! and a whole number of pages long: exactly what
//! `newBufferWithBytesNoCopy:length:options:deallocator:` wraps without a
//! copy. [`Registered`] wraps every Block of an allocator in such an
//! `MTLBuffer` (shared storage, the default CPU cache mode, no deallocator:
//! the registration owns the allocator, so the Block outlives every buffer),
//! and gives, for any allocation, the buffer and offset that hold it and its
//! GPU address (`gpuAddress`, macOS 13 / iOS 16 and later). The registration
//! layer is `register.rs`; this module is the Metal calls.
//!
//! Type-checked and linted for `aarch64-apple-darwin` in CI; not run there
//! (CI has no Mac).
//!
//! ```no_run
//! use allocator_api2::vec::Vec;
//! use unimem::Tape;
//! use unimem::metal::{self, Registered};
//!
//! let device = metal::system_default()?;
//! let tape = Registered::new(&device, Tape::open(16 << 20)?)?;
//! let mut v: Vec<f32, _> = Vec::with_capacity_in(1024, &*tape);
//! v.resize(1024, 0.0);
//! let (buffer, offset) = tape.buffer_of(&v).expect("in the Block");
//! let gpu = tape.gpu_address(&v).expect("in the Block");
//! // setBuffer:offset:atIndex: with `buffer` and `offset`, or pass `gpu`.
//! # let _ = (buffer, offset, gpu);
//! # Ok::<(), unimem::Error>(())
//! ```

use core::ffi::c_void;
use core::fmt;
use core::ptr::NonNull;

use objc2::rc::Retained;
use objc2::runtime::ProtocolObject;
pub use objc2_metal;
use objc2_metal::{MTLBuffer, MTLDevice, MTLResourceOptions};

use crate::Error;
use crate::register::{Backend, Regions, Span};

/// A Metal device, as `MTLCreateSystemDefaultDevice` gives it.
pub type Device = Retained<ProtocolObject<dyn MTLDevice>>;

pub use crate::error::MetalError;

/// The system's default Metal device.
pub fn system_default() -> Result<Device, Error> {
    objc2_metal::MTLCreateSystemDefaultDevice().ok_or_else(|| MetalError::NoDevice.into())
}

/// One wrapped part: a retained `MTLBuffer` over the pages, and its GPU
/// address.
#[derive(Clone, Copy)]
pub struct NoCopy {
    buffer: NonNull<ProtocolObject<dyn MTLBuffer>>,
    /// The buffer's `gpuAddress`.
    pub gpu_address: u64,
}

// SAFETY: a retained Metal buffer, which Metal lets any thread use; the
// registration releases it once (`unregister`).
unsafe impl Send for NoCopy {}
// SAFETY: as above; `&NoCopy` gives only `&ProtocolObject<dyn MTLBuffer>`.
unsafe impl Sync for NoCopy {}

impl NoCopy {
    /// The buffer, handed over with the reference `register` took: the
    /// caller releases it, and it must not be unregistered too.
    #[cfg_attr(
        not(feature = "wgpu"),
        expect(dead_code, reason = "used by feature wgpu")
    )]
    pub(crate) fn into_retained(self) -> Retained<ProtocolObject<dyn MTLBuffer>> {
        // SAFETY: `register` made `buffer` a +1 reference with
        // `Retained::into_raw`; taking it back here hands that reference on.
        let Some(buffer) = (unsafe { Retained::from_raw(self.buffer.as_ptr()) }) else {
            unreachable!("a NonNull is never null")
        };
        buffer
    }
}

impl fmt::Debug for NoCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoCopy")
            .field("buffer", &self.buffer)
            .field("gpu_address", &self.gpu_address)
            .finish()
    }
}

/// Metal as a registration backend: each part is one no-copy buffer.
pub struct Metal {
    device: Device,
}

impl fmt::Debug for Metal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metal").finish_non_exhaustive()
    }
}

impl Backend for Metal {
    type Chunk = NoCopy;

    fn register(&self, host: NonNull<u8>, len: usize) -> Result<NoCopy, Error> {
        let options =
            MTLResourceOptions::StorageModeShared | MTLResourceOptions::CPUCacheModeDefaultCache;
        // SAFETY: `host..host + len` is page-aligned memory of whole pages
        // that the registration keeps mapped until it releases the buffer;
        // no deallocator, since the Block, not Metal, owns the pages.
        let buffer = unsafe {
            self.device
                .newBufferWithBytesNoCopy_length_options_deallocator(
                    host.cast::<c_void>(),
                    len,
                    options,
                    None,
                )
        }
        .ok_or(MetalError::NoBuffer { len })?;
        let gpu_address = buffer.gpuAddress();
        let Some(buffer) = NonNull::new(Retained::into_raw(buffer)) else {
            unreachable!("a Retained is never null")
        };
        Ok(NoCopy {
            buffer,
            gpu_address,
        })
    }

    unsafe fn unregister(&self, _host: NonNull<u8>, _len: usize, chunk: NoCopy) {
        // SAFETY: the retained buffer `register` made, released once here
        // (the caller's contract).
        drop(unsafe { Retained::from_raw(chunk.buffer.as_ptr()) });
    }

    fn max_chunk(&self) -> usize {
        self.device.maxBufferLength()
    }

    fn continues(&self, prev: &Span<NoCopy>, next: &Span<NoCopy>) -> bool {
        next.chunk.gpu_address == prev.chunk.gpu_address + prev.len as u64
    }
}

/// An allocator (or Block) whose Blocks are wrapped in no-copy Metal
/// buffers. It owns what it wraps, so the Blocks outlive every buffer.
pub type Registered<A> = crate::register::Registered<A, Metal>;

impl<A: Regions> crate::register::Registered<A, Metal> {
    /// Wraps every Block of `inner` in a no-copy buffer of `device`.
    pub fn new(device: &Device, inner: A) -> Result<Self, Error> {
        Self::with_backend(
            Metal {
                device: device.clone(),
            },
            inner,
        )
    }

    /// The buffer that holds `bytes` bytes from `ptr`, and the offset of
    /// `ptr` in it, if they lie in one wrapped Block.
    pub fn buffer_range<T: ?Sized>(
        &self,
        ptr: *const T,
        bytes: usize,
    ) -> Option<(&ProtocolObject<dyn MTLBuffer>, usize)> {
        let (range, offset) = self.lookup(ptr.cast::<u8>().addr(), bytes)?;
        // SAFETY: the buffer is retained by the registration, which `&self`
        // keeps alive for the reference's lifetime.
        Some((unsafe { range.chunk.buffer.as_ref() }, offset))
    }

    /// The buffer and offset of a slice in a wrapped Block.
    pub fn buffer_of<T>(&self, slice: &[T]) -> Option<(&ProtocolObject<dyn MTLBuffer>, usize)> {
        self.buffer_range(slice.as_ptr(), size_of_val(slice))
    }

    /// The GPU address of a slice in a wrapped Block (`gpuAddress` plus the
    /// offset), for argument buffers and bindless access.
    pub fn gpu_address<T>(&self, slice: &[T]) -> Option<u64> {
        let (range, offset) = self.lookup(slice.as_ptr().addr(), size_of_val(slice))?;
        Some(range.chunk.gpu_address + offset as u64)
    }
}
