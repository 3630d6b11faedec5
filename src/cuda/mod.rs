//! CUDA: an NVIDIA GPU reads and writes a Block's pages with no copies
//! (feature `cuda`).
//!
//! [`Registered`] registers every committed part of an allocator's Blocks
//! with the CUDA driver (`cuMemHostRegister`, page-locked, portable and
//! device-mapped), and what they commit later as it is committed, and
//! unregisters them when dropped (the registration layer is `register.rs`;
//! this module is the driver calls). Kernels then address the same pages the CPU
//! uses: [`Registered::device_ptr_of`] gives the device address of any
//! allocation, asked of the driver (`cuMemHostGetDevicePointer`) rather than
//! assumed equal to the host address. Copies from registered pages also take
//! the driver's fast pinned path, which `mlock` alone does not.
//!
//! The driver is loaded at run time (cudarc's dynamic loading): the crate
//! builds and its tests pass on machines without CUDA, and every entry point
//! here returns [`CudaError::NoDriver`] there instead of panicking.
//!
//! # Copies with cudarc: use a [`HostBuffer`], never a bare slice
//!
//! cudarc implements its `HostSlice` for `[T]` and `Vec<T>` as if their
//! memory were pageable, whose copies the driver finishes before the call
//! returns. Registered memory is pinned: the driver queues the copy and
//! returns, so `stream.memcpy_htod(&v[..], &mut dst)` with `v` in a
//! registered allocator is a race — the program may overwrite or free `v`
//! while the DMA still reads it — and `memcpy_dtoh(&src, &mut v[..])`
//! returns before the bytes land. A [`HostBuffer`] (from
//! [`Registered::host_buffer`]) owns an allocation and does what cudarc's
//! own `PinnedHostSlice` does: the stream waits on its event before a copy,
//! the event is recorded once the copy is queued, host access waits for it,
//! and dropping it waits before the memory is freed. A leaked buffer keeps
//! its memory; a registered Tape's `clear` waits for every buffer's copies
//! first.
//!
//! ```no_run
//! use allocator_api2::vec::Vec;
//! use unimem::Tape;
//! use unimem::cuda::{self, Registered};
//!
//! let ctx = cuda::context(0)?;
//! let tape = Registered::new(&ctx, Tape::open(64 << 20)?)?;
//! let mut v: Vec<f32, _> = Vec::with_capacity_in(1024, &*tape);
//! v.resize(1024, 0.0);
//! let device_ptr = tape.device_slice(&v).expect("inside the registered Block");
//! // ... launch a kernel on `device_ptr`; after it finishes, read `v` here.
//! # let _ = device_ptr;
//! # Ok::<(), unimem::Error>(())
//! ```

mod host_buffer;

use core::fmt;
use core::ptr::NonNull;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

pub use cudarc;
pub use cudarc::driver::CudaContext;
use cudarc::driver::{CudaEvent, DriverError, sys};

pub use crate::error::CudaError;
pub use host_buffer::{HostBuffer, Rejected};

use crate::Error;

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
    check_ordinal(ordinal)?;
    CudaContext::new(ordinal).map_err(driver_error("cuDevicePrimaryCtxRetain"))
}

/// Loads and initializes the driver and checks that it has device
/// `ordinal`, with the typed errors of [`context`].
fn check_ordinal(ordinal: usize) -> Result<(), Error> {
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
    Ok(())
}

/// Registrations larger than this are split: drivers refuse single
/// registrations approaching 512 GiB.
pub const DEFAULT_CHUNK: usize = 128 << 30;

pub use crate::register::{Regions, Span};

/// The CUDA driver as a registration backend: page-locked, portable (usable
/// from every context) and device-mapped registrations of host ranges.
pub struct Cuda {
    ctx: Arc<CudaContext>,
    chunk: usize,
    /// The events of the [`HostBuffer`]s made over this registration that
    /// may still be alive (a leaked one too): `quiesce` waits for each.
    pending: Mutex<Vec<Arc<CudaEvent>>>,
}

impl fmt::Debug for Cuda {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cuda")
            .field("ordinal", &self.ctx.ordinal())
            .field("chunk", &self.chunk)
            .finish()
    }
}

impl Cuda {
    /// Runs `f` with this backend's context current on the calling thread,
    /// and the thread's own context current again afterwards: commits
    /// register memory on whichever thread grows an allocator.
    fn in_context<T>(&self, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        let mut previous: sys::CUcontext = core::ptr::null_mut();
        // SAFETY: a valid out-pointer; the driver is loaded (a context exists).
        unsafe { sys::cuCtxGetCurrent(&mut previous) }
            .result()
            .map_err(driver_error("cuCtxGetCurrent"))?;
        let ours = self.ctx.cu_ctx();
        if previous != ours {
            // SAFETY: our context is alive while `self.ctx` is.
            unsafe { sys::cuCtxSetCurrent(ours) }
                .result()
                .map_err(driver_error("cuCtxSetCurrent"))?;
        }
        let result = f();
        if previous != ours {
            // SAFETY: the context that was current before; null is allowed.
            let _ = unsafe { sys::cuCtxSetCurrent(previous) };
        }
        result
    }
}

impl crate::register::Backend for Cuda {
    type Chunk = sys::CUdeviceptr;

    fn register(&self, host: NonNull<u8>, len: usize) -> Result<sys::CUdeviceptr, Error> {
        self.in_context(|| register_range(host.as_ptr(), len))
    }

    unsafe fn unregister(&self, host: NonNull<u8>, _len: usize, _chunk: sys::CUdeviceptr) {
        // A failure here has no one to report to (this runs in drop); the
        // driver keeps the registration until the context is destroyed.
        let _ = self.in_context(|| {
            // SAFETY: `host` is the start of a range this backend registered
            // and has not unregistered (the caller's contract).
            unsafe { sys::cuMemHostUnregister(host.as_ptr().cast()) }
                .result()
                .map_err(driver_error("cuMemHostUnregister"))
        });
    }

    fn max_chunk(&self) -> usize {
        self.chunk
    }

    fn continues(&self, prev: &Span<sys::CUdeviceptr>, next: &Span<sys::CUdeviceptr>) -> bool {
        next.chunk == prev.chunk + prev.len as u64
    }

    /// Waits for the copies queued through every [`HostBuffer`] of this
    /// registration that may be alive, and forgets those that are gone.
    fn quiesce(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for event in pending.iter() {
            // An error here is the device's (a failed copy): nothing is in
            // flight on the event any more either way.
            let _ = event.synchronize();
        }
        pending.retain(|event| Arc::strong_count(event) > 1);
    }
}

/// An allocator (or Block) whose Blocks are registered with the CUDA driver.
///
/// It owns what it registers, so the pages cannot be unmapped while the GPU
/// may use them, and derefs to it for allocation. Memory the allocator
/// commits later (a Tape or Heap growing, a Heap opening an arena) is
/// registered as it is committed, before any allocation lands in it.
/// Dropping it unregisters every range; `into_inner` unregisters and gives
/// the allocator back.
pub type Registered<A> = crate::register::Registered<A, Cuda>;

impl<A: Regions> crate::register::Registered<A, Cuda> {
    /// Registers every committed part of `inner`'s Blocks with `ctx`'s
    /// driver, page-locked, portable (usable from every context) and
    /// device-mapped, and what they commit from now on.
    pub fn new(ctx: &Arc<CudaContext>, inner: A) -> Result<Self, Error> {
        Self::with_chunk_size(ctx, inner, DEFAULT_CHUNK)
    }

    /// As [`Registered::new`], registering in ranges of at most
    /// `chunk_bytes` (rounded up to whole pages).
    pub fn with_chunk_size(
        ctx: &Arc<CudaContext>,
        inner: A,
        chunk_bytes: usize,
    ) -> Result<Self, Error> {
        let chunk = crate::register::chunk_size(chunk_bytes)?;
        let backend = Cuda {
            ctx: ctx.clone(),
            chunk,
            pending: Mutex::new(Vec::new()),
        };
        Self::with_backend(backend, inner)
    }

    /// The device address of the byte at `ptr`, if it lies in a registered
    /// range.
    pub fn device_ptr_of<T: ?Sized>(&self, ptr: *const T) -> Option<sys::CUdeviceptr> {
        self.device_range(ptr, 1)
    }

    /// The device address of `bytes` bytes from `ptr`, if they all lie in
    /// registered ranges that map to one contiguous device range.
    pub fn device_range<T: ?Sized>(&self, ptr: *const T, bytes: usize) -> Option<sys::CUdeviceptr> {
        let (range, offset) = self.lookup(ptr.cast::<u8>().addr(), bytes)?;
        Some(range.chunk + offset as u64)
    }

    /// The device address of a slice in a registered Block.
    pub fn device_slice<T>(&self, slice: &[T]) -> Option<sys::CUdeviceptr> {
        self.device_range(slice.as_ptr(), size_of_val(slice))
    }

    /// The context the Blocks are registered with.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.backend().ctx
    }
}

/// Registers one page-aligned range and asks the driver for its device address.
fn register_range(host: *mut u8, len: usize) -> Result<sys::CUdeviceptr, Error> {
    let flags = sys::CU_MEMHOSTREGISTER_PORTABLE | sys::CU_MEMHOSTREGISTER_DEVICEMAP;
    // SAFETY: `host..host + len` is mapped, committed, page-aligned memory
    // owned by the `Registered` that keeps it mapped until it unregisters
    // the range.
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
    Ok(device)
}

/// The PCI address of device `ordinal` as the driver reports it
/// (`cuDeviceGetPCIBusId`: `0000:3B:00.0`), with the typed errors of
/// [`context`]; no context is created.
pub fn pci_bus_id(ordinal: usize) -> Result<String, Error> {
    check_ordinal(ordinal)?;
    let ordinal = i32::try_from(ordinal).map_err(|_| CudaError::NoDevice {
        ordinal,
        count: i32::MAX as usize,
    })?;
    let device =
        cudarc::driver::result::device::get(ordinal).map_err(driver_error("cuDeviceGet"))?;
    // The driver writes at most 13 bytes and a NUL; room to spare.
    let mut id = [0 as core::ffi::c_char; 64];
    // SAFETY: a writable buffer of the length given; the device was just
    // asked of the driver.
    unsafe { sys::cuDeviceGetPCIBusId(id.as_mut_ptr(), id.len() as i32, device) }
        .result()
        .map_err(driver_error("cuDeviceGetPCIBusId"))?;
    // The driver NUL-terminates within the length given; the buffer ends
    // with one in any case, as nothing wrote past it.
    let id = &id[..id.len() - 1];
    let len = id.iter().position(|&c| c == 0).unwrap_or(id.len());
    Ok(id[..len].iter().map(|&c| c as u8 as char).collect())
}

impl crate::Node {
    /// The NUMA node nearest CUDA device `ordinal`: the driver's PCI
    /// address for it ([`pci_bus_id`]), then the kernel's word for that
    /// device ([`Node::near_pci`](crate::Node::near_pci)). `None` where the
    /// kernel names no node (a machine of one node). Needs no context.
    ///
    /// Errors: those of [`context`] ([`CudaError::NoDriver`] without a
    /// driver, [`CudaError::NoDevice`] without that device), and those of
    /// `near_pci`.
    ///
    /// ```no_run
    /// use unimem::cuda::{self, Registered};
    /// use unimem::{BlockOptions, Node, Tape};
    ///
    /// let near = Node::near_cuda(0)?;
    /// let tape = Tape::open_with(256 << 20, &BlockOptions::new().node(near))?;
    /// let tape = Registered::new(&cuda::context(0)?, tape)?;
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "cuda")))]
    pub fn near_cuda(ordinal: usize) -> Result<Option<crate::Node>, Error> {
        crate::Node::near_pci(&pci_bus_id(ordinal)?)
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
            assert!(matches!(
                crate::Node::near_cuda(0),
                Err(Error::Cuda(CudaError::NoDriver))
            ));
        }
    }
}
