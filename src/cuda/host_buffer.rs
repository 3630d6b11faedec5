//! [`HostBuffer`]: an allocation in CUDA-registered memory that cudarc's
//! asynchronous copies can use soundly (part of `cuda`).
//!
//! The contract, as cudarc's `PinnedHostSlice` keeps it for the memory it
//! allocates: one event per buffer; before a copy is queued the stream
//! waits on the event (so copies through one buffer are ordered, whatever
//! their streams); once the copy is queued the event is recorded on the
//! stream; every host access, `into_vec` and the drop wait for the event.
//! Where cudarc does not record events (a context with one stream, or with
//! event tracking off), the stream is synchronized after each copy instead,
//! so that the copy is done before the call returns.
//!
//! The buffer owns its allocation, so no borrow can end while a copy runs:
//! forgetting a buffer (`mem::forget`) leaks the memory rather than freeing
//! it under the DMA. The one way memory is handed out again without a free
//! is a registered Tape's `clear` (or a `Model`'s guards): the registration
//! keeps every buffer's event, and waits for them first (`Backend::quiesce`).

use core::fmt;
use core::mem::ManuallyDrop;
use std::sync::{Arc, PoisonError};

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec;
use cudarc::driver::{CudaEvent, CudaStream, HostSlice, SyncOnDrop, sys};

use super::{Cuda, driver_error};
use crate::Error;
use crate::register::{Regions, Registered};

/// An allocation in CUDA-registered memory, owned, that cudarc's copies
/// take as a `HostSlice`: `stream.memcpy_htod(&buffer, &mut device)` and
/// `stream.memcpy_dtoh(&device, &mut buffer)` queue DMA straight from and
/// to the registered pages, and host access waits for them.
///
/// Made by [`Registered::host_buffer`] from a `Vec` whose memory the
/// registration covers. See the [module docs](crate::cuda) for why a bare
/// slice of registered memory must not be handed to cudarc's copies.
///
/// ```no_run
/// use unimem::allocator_api2::vec::Vec;
/// use unimem::Tape;
/// use unimem::cuda::{self, Registered};
///
/// let ctx = cuda::context(0)?;
/// let stream = ctx.new_stream().expect("a stream");
/// let tape = Registered::new(&ctx, Tape::open(64 << 20)?)?;
/// let mut v: Vec<f32, _> = Vec::with_capacity_in(1 << 20, &*tape);
/// v.resize(1 << 20, 1.0);
/// let mut buffer = tape.host_buffer(v).map_err(|rejected| rejected.error)?;
/// let mut device = stream.clone_htod(&buffer).expect("queued");
/// // ... kernels on `device` ...
/// stream.memcpy_dtoh(&device, &mut buffer).expect("queued");
/// let host = buffer.as_slice()?; // waits for the copy back
/// # let _ = (host, &mut device);
/// # Ok::<(), unimem::Error>(())
/// ```
pub struct HostBuffer<T, A: Allocator> {
    vec: Vec<T, A>,
    /// Recorded after each copy through the buffer; shared with the
    /// registration's backend, which waits for it before a Tape clears.
    event: Arc<CudaEvent>,
}

/// A `Vec` that [`Registered::host_buffer`] refused, given back with why.
pub struct Rejected<T, A: Allocator> {
    /// Why it was refused.
    pub error: Error,
    /// The `Vec`, untouched.
    pub vec: Vec<T, A>,
}

impl<T, A: Allocator> fmt::Debug for Rejected<T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejected")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T, A: Allocator> fmt::Display for Rejected<T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not made a host buffer: {}", self.error)
    }
}

impl<T, A: Allocator> std::error::Error for Rejected<T, A> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<R: Regions> Registered<R, Cuda> {
    /// Makes `vec`'s allocation a [`HostBuffer`] for cudarc's copies.
    ///
    /// Errors (the `Vec` comes back in [`Rejected`]): memory the
    /// registration does not cover ([`Error::InvalidArgument`]: copies
    /// from it would be pageable, and the allocator is not this one's), or
    /// a driver that cannot make the buffer's event.
    pub fn host_buffer<T, A: Allocator>(
        &self,
        vec: Vec<T, A>,
    ) -> Result<HostBuffer<T, A>, Rejected<T, A>> {
        let bytes = vec.capacity() * size_of::<T>();
        if bytes > 0 && self.device_range(vec.as_ptr(), bytes).is_none() {
            return Err(Rejected {
                error: Error::InvalidArgument {
                    reason: "a HostBuffer's Vec must lie in memory this registration covers",
                },
                vec,
            });
        }
        let backend = self.backend();
        let event = match backend
            .ctx
            .new_event(Some(sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC))
        {
            Ok(event) => Arc::new(event),
            Err(error) => {
                return Err(Rejected {
                    error: driver_error("cuEventCreate")(error),
                    vec,
                });
            }
        };
        let mut pending = backend
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The buffers that are gone waited for their copies when dropped.
        pending.retain(|event| Arc::strong_count(event) > 1);
        pending.push(event.clone());
        Ok(HostBuffer { vec, event })
    }
}

impl<T, A: Allocator> HostBuffer<T, A> {
    /// Elements in the buffer.
    pub fn len(&self) -> usize {
        self.vec.len()
    }

    /// Whether the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.vec.is_empty()
    }

    /// The elements, once every copy queued through the buffer is done.
    pub fn as_slice(&self) -> Result<&[T], Error> {
        self.wait()?;
        Ok(&self.vec)
    }

    /// The elements, mutably, once every copy queued through the buffer is
    /// done.
    pub fn as_mut_slice(&mut self) -> Result<&mut [T], Error> {
        self.wait()?;
        Ok(&mut self.vec)
    }

    /// The `Vec` back, once every copy queued through the buffer is done.
    pub fn into_vec(self) -> Result<Vec<T, A>, Error> {
        self.wait()?;
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so each field is read out (and
        // so dropped or returned) exactly once.
        unsafe {
            drop(core::ptr::read(&this.event));
            Ok(core::ptr::read(&this.vec))
        }
    }

    /// Waits for the copies queued through the buffer.
    fn wait(&self) -> Result<(), Error> {
        self.event
            .synchronize()
            .map_err(driver_error("cuEventSynchronize"))
    }
}

/// What follows a copy through a buffer with `event`, queued on `stream`:
/// the event recorded, or where cudarc records none, the stream
/// synchronized.
fn after_copy<'a>(event: &'a CudaEvent, stream: &'a CudaStream) -> SyncOnDrop<'a> {
    if stream.context().is_managing_stream_synchronization() {
        SyncOnDrop::Record(Some((event, stream)))
    } else {
        SyncOnDrop::Sync(Some(stream))
    }
}

impl<T, A: Allocator> HostSlice<T> for HostBuffer<T, A> {
    fn len(&self) -> usize {
        self.vec.len()
    }

    unsafe fn stream_synced_slice<'a>(
        &'a self,
        stream: &'a CudaStream,
    ) -> (&'a [T], SyncOnDrop<'a>) {
        // Copies through the buffer follow each other, on any stream.
        stream.context().record_err(stream.wait(&self.event));
        (&self.vec, after_copy(&self.event, stream))
    }

    unsafe fn stream_synced_mut_slice<'a>(
        &'a mut self,
        stream: &'a CudaStream,
    ) -> (&'a mut [T], SyncOnDrop<'a>) {
        stream.context().record_err(stream.wait(&self.event));
        let HostBuffer { vec, event } = self;
        (vec, after_copy(event, stream))
    }
}

impl<T, A: Allocator> Drop for HostBuffer<T, A> {
    fn drop(&mut self) {
        // The memory goes back to its allocator when `vec` drops, right
        // after: no copy may still read or write it. An error is the
        // device's, and leaves nothing in flight either.
        let _ = self.event.synchronize();
    }
}

impl<T: fmt::Debug, A: Allocator> fmt::Debug for HostBuffer<T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostBuffer")
            .field("len", &self.vec.len())
            .field("ptr", &self.vec.as_ptr())
            .finish_non_exhaustive()
    }
}
