//! CUDA: an NVIDIA GPU reads and writes a Block's pages with no copies
//! (feature `cuda`).
//!
//! [`Registered`] registers every Block of an allocator with the CUDA driver
//! (`cuMemHostRegister`, page-locked, portable and device-mapped) and
//! unregisters them when dropped. Kernels then address the same pages the CPU
//! uses: [`Registered::device_ptr_of`] gives the device address of any
//! allocation, asked of the driver (`cuMemHostGetDevicePointer`) rather than
//! assumed equal to the host address. Copies from registered pages also take
//! the driver's fast pinned path, which `mlock` alone does not.
//!
//! The driver is loaded at run time (cudarc's dynamic loading): the crate
//! builds and its tests pass on machines without CUDA, and every entry point
//! here returns [`CudaError::NoDriver`] there instead of panicking.
//!
//! ```no_run
//! use allocator_api2::vec::Vec;
//! use unimem::Tape;
//! use unimem::cuda::{self, Registered};
//!
//! let ctx = cuda::context(0)?;
//! let tape = Registered::new(&ctx, Tape::start(64 << 20)?)?;
//! let mut v: Vec<f32, _> = Vec::with_capacity_in(1024, &*tape);
//! v.resize(1024, 0.0);
//! let device_ptr = tape.device_slice(&v).expect("inside the registered Block");
//! // ... launch a kernel on `device_ptr`; after it finishes, read `v` here.
//! # let _ = device_ptr;
//! # Ok::<(), unimem::Error>(())
//! ```

use core::fmt;
use core::mem::ManuallyDrop;
use core::ops::Deref;
use std::sync::{Arc, OnceLock};

pub use cudarc;
pub use cudarc::driver::CudaContext;
use cudarc::driver::{DriverError, sys};

use crate::{Block, Error, Grid, Layout, Region, Tape, page_size};

/// What went wrong with CUDA.
#[derive(Debug)]
#[non_exhaustive]
pub enum CudaError {
    /// No CUDA driver library (`libcuda.so`) could be loaded.
    NoDriver,
    /// The driver has no device with this ordinal.
    NoDevice {
        /// The ordinal asked for.
        ordinal: usize,
        /// How many devices the driver reports.
        count: usize,
    },
    /// A driver call failed; `error` carries the CUDA error code.
    Driver {
        /// The driver function that failed.
        call: &'static str,
        /// The error it returned.
        error: DriverError,
    },
}

impl fmt::Display for CudaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CudaError::NoDriver => f.write_str(
                "no CUDA driver: libcuda.so could not be loaded (is the NVIDIA driver installed?)",
            ),
            CudaError::NoDevice { ordinal, count } => {
                write!(f, "no CUDA device {ordinal}: the driver reports {count}")
            }
            CudaError::Driver { call, error } => {
                write!(
                    f,
                    "{call} failed with CUDA error {} ({error})",
                    error.0 as i32
                )
            }
        }
    }
}

impl std::error::Error for CudaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CudaError::Driver { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<CudaError> for Error {
    fn from(error: CudaError) -> Error {
        Error::Cuda(error)
    }
}

fn driver_error(call: &'static str) -> impl FnOnce(DriverError) -> Error {
    move |error| CudaError::Driver { call, error }.into()
}

/// Whether the CUDA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: loading the library runs its initializers; NVIDIA's driver
    // library is built to be loaded this way (dlopen is how every CUDA
    // program reaches it).
    *PRESENT.get_or_init(|| unsafe { sys::is_culib_present() })
}

/// The primary context of device `ordinal`, with typed errors where cudarc
/// would panic: [`CudaError::NoDriver`] without a driver,
/// [`CudaError::NoDevice`] without that device.
pub fn context(ordinal: usize) -> Result<Arc<CudaContext>, Error> {
    if !driver_present() {
        return Err(CudaError::NoDriver.into());
    }
    let count = match CudaContext::device_count() {
        Ok(count) => usize::try_from(count).unwrap_or(0),
        Err(DriverError(sys::CUresult::CUDA_ERROR_NO_DEVICE)) => 0,
        Err(error) => return Err(driver_error("cuDeviceGetCount")(error)),
    };
    if ordinal >= count {
        return Err(CudaError::NoDevice { ordinal, count }.into());
    }
    CudaContext::new(ordinal).map_err(driver_error("cuDevicePrimaryCtxRetain"))
}

/// Registrations larger than this are split: drivers refuse single
/// registrations approaching 512 GiB.
pub const DEFAULT_CHUNK: usize = 128 << 30;

/// What can be registered: the Blocks behind an allocator.
pub trait Regions {
    /// Every Block this value owns (a lazy allocator opens its Block).
    fn regions(&self) -> Vec<&Region>;
}

impl Regions for Region {
    fn regions(&self) -> Vec<&Region> {
        vec![self]
    }
}

impl Regions for Block {
    fn regions(&self) -> Vec<&Region> {
        vec![self]
    }
}

impl Regions for Tape {
    fn regions(&self) -> Vec<&Region> {
        self.try_block().ok().into_iter().collect()
    }
}

impl<const C: usize, const N: usize> Regions for Grid<C, N> {
    fn regions(&self) -> Vec<&Region> {
        self.tape().regions()
    }
}

/// The Blocks the Heap has opened when it is registered: register a Heap
/// that may open more Blocks later (`max_blocks` above 1) only once it has
/// them, since allocations in a Block opened afterwards have no device
/// address.
impl Regions for crate::Heap {
    fn regions(&self) -> Vec<&Region> {
        self.blocks()
    }
}

impl Regions for Layout {
    fn regions(&self) -> Vec<&Region> {
        [self.weights(), self.scratch(), self.history()]
            .into_iter()
            .flat_map(Regions::regions)
            .collect()
    }
}

impl<R: Regions + ?Sized> Regions for &R {
    fn regions(&self) -> Vec<&Region> {
        (**self).regions()
    }
}

/// One registered range: host address, length, device address.
#[derive(Clone, Copy, Debug)]
struct Chunk {
    host: usize,
    len: usize,
    device: sys::CUdeviceptr,
}

/// An allocator (or Block) whose Blocks are registered with the CUDA driver.
///
/// It owns what it registers, so the pages cannot be unmapped while the GPU
/// may use them, and derefs to it for allocation. Dropping it unregisters
/// every range; [`into_inner`](Registered::into_inner) unregisters and gives
/// the allocator back.
pub struct Registered<A: Regions> {
    chunks: Vec<Chunk>,
    ctx: Arc<CudaContext>,
    inner: ManuallyDrop<A>,
}

impl<A: Regions> Registered<A> {
    /// Registers every Block of `inner` with `ctx`'s driver, page-locked,
    /// portable (usable from every context) and device-mapped.
    pub fn new(ctx: &Arc<CudaContext>, inner: A) -> Result<Self, Error> {
        Registered::with_chunk_size(ctx, inner, DEFAULT_CHUNK)
    }

    /// As [`Registered::new`], registering each Block in ranges of at most
    /// `chunk_bytes` (rounded up to whole pages).
    pub fn with_chunk_size(
        ctx: &Arc<CudaContext>,
        inner: A,
        chunk_bytes: usize,
    ) -> Result<Self, Error> {
        if chunk_bytes == 0 {
            return Err(Error::ZeroSize);
        }
        let chunk_bytes =
            chunk_bytes
                .checked_next_multiple_of(page_size())
                .ok_or(Error::Overflow {
                    requested: chunk_bytes,
                })?;
        ctx.bind_to_thread()
            .map_err(driver_error("cuCtxSetCurrent"))?;
        let mut registered = Registered {
            chunks: Vec::new(),
            ctx: ctx.clone(),
            inner: ManuallyDrop::new(inner),
        };
        let regions: Vec<(usize, usize)> = registered
            .inner
            .regions()
            .iter()
            .map(|r| (r.as_ptr().addr(), r.size()))
            .collect();
        if regions.is_empty() {
            return Err(Error::InvalidArgument {
                reason: "nothing to register: the allocator's Block could not be opened",
            });
        }
        for (start, size) in regions {
            let mut offset = 0;
            while offset < size {
                let len = chunk_bytes.min(size - offset);
                // On failure `registered` drops, unregistering what came before.
                let chunk = register_range(registered.ptr_at(start + offset), len)?;
                registered.chunks.push(chunk);
                offset += len;
            }
        }
        Ok(registered)
    }

    /// A pointer with the provenance of one of `inner`'s regions.
    fn ptr_at(&self, addr: usize) -> *mut u8 {
        self.inner
            .regions()
            .into_iter()
            .find(|r| r.contains(core::ptr::without_provenance(addr)))
            .map_or(core::ptr::null_mut(), |r| {
                r.as_ptr().wrapping_add(addr - r.as_ptr().addr())
            })
    }

    /// The device address of the byte at `ptr`, if it lies in a registered
    /// Block.
    pub fn device_ptr_of<T: ?Sized>(&self, ptr: *const T) -> Option<sys::CUdeviceptr> {
        self.device_range(ptr, 1)
    }

    /// The device address of `bytes` bytes from `ptr`, if they all lie in one
    /// registered Block and map to one contiguous device range.
    pub fn device_range<T: ?Sized>(&self, ptr: *const T, bytes: usize) -> Option<sys::CUdeviceptr> {
        let start = ptr.cast::<u8>().addr();
        let end = start.checked_add(bytes.max(1))?;
        let first = self
            .chunks
            .iter()
            .position(|c| c.host <= start && start < c.host + c.len)?;
        // Walk the chunks the range covers; each must continue the host and
        // the device ranges of the one before.
        let mut covered = self.chunks[first].host + self.chunks[first].len;
        let mut last = self.chunks[first];
        for chunk in &self.chunks[first + 1..] {
            if covered >= end {
                break;
            }
            let continues =
                chunk.host == last.host + last.len && chunk.device == last.device + last.len as u64;
            if !continues {
                return None;
            }
            covered += chunk.len;
            last = *chunk;
        }
        if covered < end {
            return None;
        }
        let head = self.chunks[first];
        Some(head.device + (start - head.host) as u64)
    }

    /// The device address of a slice in a registered Block.
    pub fn device_slice<T>(&self, slice: &[T]) -> Option<sys::CUdeviceptr> {
        self.device_range(slice.as_ptr(), size_of_val(slice))
    }

    /// How many ranges were registered.
    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }

    /// The context the Blocks are registered with.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// Unregisters, and gives back what was registered.
    pub fn into_inner(self) -> A {
        let mut this = ManuallyDrop::new(self);
        this.unregister();
        // SAFETY: `this` is never dropped, so `inner` is taken exactly once;
        // the other fields are dropped here by hand.
        unsafe {
            core::ptr::drop_in_place(&mut this.chunks);
            core::ptr::drop_in_place(&mut this.ctx);
            ManuallyDrop::take(&mut this.inner)
        }
    }

    fn unregister(&mut self) {
        if self.chunks.is_empty() {
            return;
        }
        // A failure here has no one to report to (this runs in drop); the
        // driver keeps the registration until the context is destroyed.
        let _ = self.ctx.bind_to_thread();
        for chunk in self.chunks.drain(..) {
            // SAFETY: `chunk.host` is the start of a range this value
            // registered and has not unregistered.
            let _ =
                unsafe { sys::cuMemHostUnregister(core::ptr::without_provenance_mut(chunk.host)) };
        }
    }
}

/// Registers one page-aligned range and asks the driver for its device address.
fn register_range(host: *mut u8, len: usize) -> Result<Chunk, Error> {
    let flags = sys::CU_MEMHOSTREGISTER_PORTABLE | sys::CU_MEMHOSTREGISTER_DEVICEMAP;
    // SAFETY: `host..host + len` is mapped, page-aligned memory owned by the
    // `Registered` that keeps it mapped until it unregisters the range.
    unsafe { sys::cuMemHostRegister_v2(host.cast(), len, flags) }
        .result()
        .map_err(driver_error("cuMemHostRegister"))?;
    let mut device: sys::CUdeviceptr = 0;
    // SAFETY: `host` was just registered with DEVICEMAP; `device` is a valid
    // out-pointer.
    let asked = unsafe { sys::cuMemHostGetDevicePointer_v2(&mut device, host.cast(), 0) }.result();
    if let Err(error) = asked {
        // SAFETY: registered just above.
        let _ = unsafe { sys::cuMemHostUnregister(host.cast()) };
        return Err(driver_error("cuMemHostGetDevicePointer")(error));
    }
    Ok(Chunk {
        host: host.addr(),
        len,
        device,
    })
}

impl<A: Regions> Drop for Registered<A> {
    fn drop(&mut self) {
        self.unregister();
        // SAFETY: dropped once, here, after the pages were unregistered.
        unsafe { ManuallyDrop::drop(&mut self.inner) }
    }
}

impl<A: Regions> Deref for Registered<A> {
    type Target = A;

    fn deref(&self) -> &A {
        &self.inner
    }
}

impl Registered<Tape> {
    /// [`Tape::clear`], keeping the registration.
    pub fn clear(&mut self) {
        self.inner.clear();
    }
}

impl Registered<Layout> {
    /// [`Layout::clear_pass`], keeping the registration.
    pub fn clear_pass(&mut self) {
        self.inner.clear_pass();
    }

    /// [`Layout::clear_talk`], keeping the registration.
    pub fn clear_talk(&mut self) {
        self.inner.clear_talk();
    }
}

impl Registered<Block> {
    /// [`Block::as_bytes_mut`], keeping the registration.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        self.inner.as_bytes_mut()
    }

    /// [`Block::as_f32_mut`], keeping the registration.
    pub fn as_f32_mut(&mut self) -> &mut [f32] {
        self.inner.as_f32_mut()
    }

    /// [`Block::as_u16_mut`], keeping the registration.
    pub fn as_u16_mut(&mut self) -> &mut [u16] {
        self.inner.as_u16_mut()
    }
}

impl<A: Regions + fmt::Debug> fmt::Debug for Registered<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registered")
            .field("chunks", &self.chunks)
            .field("ordinal", &self.ctx.ordinal())
            .field("inner", &*self.inner)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_cause() {
        let no_driver = Error::from(CudaError::NoDriver);
        assert!(no_driver.to_string().contains("libcuda"), "{no_driver}");
        let no_device = CudaError::NoDevice {
            ordinal: 3,
            count: 1,
        };
        assert!(no_device.to_string().contains("device 3"));
    }

    #[test]
    fn context_is_a_typed_error_without_a_driver() {
        match context(0) {
            Ok(ctx) => assert_eq!(ctx.ordinal(), 0),
            Err(Error::Cuda(CudaError::NoDriver)) => assert!(!driver_present()),
            Err(Error::Cuda(CudaError::NoDevice { .. })) => {}
            Err(error) => panic!("unexpected: {error}"),
        }
        if !driver_present() {
            assert!(matches!(context(5), Err(Error::Cuda(CudaError::NoDriver))));
        }
    }
}
