//! UCX as a registration backend ([`Ucx`]), and what a [`Registered`]
//! allocator gives remote peers ([`Registered::descriptor_of`]).

use core::ffi::c_void;
use core::ptr::{self, NonNull};

use super::descriptor::Descriptor;
use super::error::{UcxError, check};
use super::{Context, sys};
use crate::Error;
use crate::register::{Backend, Range, Regions};

/// Ranges larger than this are mapped in parts, each its own memory handle
/// and key: 64 GiB, far above what one commit adds.
pub const DEFAULT_CHUNK: usize = 64 << 30;

/// One registered range's UCP memory handle (`ucp_mem_h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemHandle(sys::ucp_mem_h);

// SAFETY: an opaque handle, only passed to UCP calls on its context, which
// take the context's lock (`ucp_rkey_pack`, `ucp_mem_unmap`) or only read it
// (the `memh` of an operation's parameters).
unsafe impl Send for MemHandle {}
// SAFETY: as above.
unsafe impl Sync for MemHandle {}

/// UCX as a registration backend: each part of a Block is mapped with
/// `ucp_mem_map` for local and remote reading and writing, as host memory.
#[derive(Debug)]
pub struct Ucx {
    context: Context,
    chunk: usize,
}

impl Backend for Ucx {
    type Chunk = MemHandle;

    fn register(&self, host: NonNull<u8>, len: usize) -> Result<MemHandle, Error> {
        let params = sys::ucp_mem_map_params_t {
            field_mask: sys::UCP_MEM_MAP_PARAM_FIELD_ADDRESS
                | sys::UCP_MEM_MAP_PARAM_FIELD_LENGTH
                | sys::UCP_MEM_MAP_PARAM_FIELD_FLAGS
                | sys::UCP_MEM_MAP_PARAM_FIELD_PROT
                | sys::UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE,
            address: host.as_ptr().cast::<c_void>(),
            length: len,
            flags: 0,
            prot: sys::UCP_MEM_MAP_PROT_LOCAL_READ
                | sys::UCP_MEM_MAP_PROT_LOCAL_WRITE
                | sys::UCP_MEM_MAP_PROT_REMOTE_READ
                | sys::UCP_MEM_MAP_PROT_REMOTE_WRITE,
            memory_type: sys::UCS_MEMORY_TYPE_HOST,
        };
        let mut memh = ptr::null_mut();
        // SAFETY: `host..host + len` is mapped, committed memory that the
        // registration keeps mapped until it unmaps the range
        // (`unregister`); a live context; valid parameters and out-pointer.
        let status = unsafe { sys::ucp_mem_map(self.context.raw(), &params, &mut memh) };
        check("ucp_mem_map", status)?;
        Ok(MemHandle(memh))
    }

    unsafe fn unregister(&self, _host: NonNull<u8>, _len: usize, memh: MemHandle) {
        // A failure here has no one to report to (this runs in drop); the
        // mapping then lasts until the context is cleaned up.
        // SAFETY: a handle `register` made on this context and not unmapped
        // (the caller's contract).
        let _ = unsafe { sys::ucp_mem_unmap(self.context.raw(), memh.0) };
    }

    fn max_chunk(&self) -> usize {
        self.chunk
    }

    fn continues(&self, _prev: &Range<MemHandle>, _next: &Range<MemHandle>) -> bool {
        // Two handles are two keys: no descriptor covers both.
        false
    }
}

/// An allocator (or Block) whose Blocks are registered with UCX, so that
/// remote peers put and get straight into its allocations.
///
/// It owns what it registers, so the pages cannot be unmapped while peers
/// may reach them, and derefs to it for allocation. Every committed part of
/// its Blocks is mapped when it is made, and what they commit later is
/// mapped as it is committed, as a part of its own, before an allocation
/// can land there; an allocation that straddles two parts has no single
/// descriptor ([`descriptor_of`](Registered::descriptor_of) says
/// [`UcxError::NotRegistered`]: commit ahead, or open the allocator with
/// what it needs committed). Dropping it unmaps every part before the pages
/// go.
pub type Registered<A> = crate::register::Registered<A, Ucx>;

impl<A: Regions> crate::register::Registered<A, Ucx> {
    /// Maps every committed part of `inner`'s Blocks with `context`, and
    /// what they commit from now on.
    pub fn new(context: &Context, inner: A) -> Result<Self, Error> {
        Self::with_chunk_size(context, inner, DEFAULT_CHUNK)
    }

    /// As [`Registered::new`], mapping in parts of at most `chunk_bytes`
    /// (rounded up to whole pages).
    pub fn with_chunk_size(context: &Context, inner: A, chunk_bytes: usize) -> Result<Self, Error> {
        let chunk = crate::register::chunk_size(chunk_bytes)?;
        let backend = Ucx {
            context: context.clone(),
            chunk,
        };
        Self::with_backend(backend, inner)
    }

    /// The descriptor a peer needs to put into and get from `slice`, an
    /// allocation (or part of one) in the registered Blocks.
    ///
    /// Errors: [`Error::ZeroSize`] for an empty slice,
    /// [`UcxError::NotRegistered`] for memory outside the registered parts
    /// (or across two of them), and a failed `ucp_rkey_pack`.
    pub fn descriptor_of<T>(&self, slice: &[T]) -> Result<Descriptor, Error> {
        self.descriptor_range(slice.as_ptr(), size_of_val(slice))
    }

    /// The descriptor of `bytes` bytes from `ptr`, as
    /// [`descriptor_of`](Registered::descriptor_of).
    pub fn descriptor_range<T: ?Sized>(
        &self,
        ptr: *const T,
        bytes: usize,
    ) -> Result<Descriptor, Error> {
        let address = ptr.cast::<u8>().addr();
        if bytes == 0 {
            return Err(Error::ZeroSize);
        }
        let memh = self.memh_of(address, bytes)?;
        let mut buffer = ptr::null_mut();
        let mut len = 0;
        // SAFETY: a handle mapped on this context, live while `self` is;
        // valid out-pointers. UCX allocates the buffer, released below.
        let status =
            unsafe { sys::ucp_rkey_pack(self.context().raw(), memh, &mut buffer, &mut len) };
        check("ucp_rkey_pack", status)?;
        // SAFETY: UCX returned `len` readable bytes at `buffer`.
        let key = unsafe { core::slice::from_raw_parts(buffer.cast::<u8>(), len) }.to_vec();
        // SAFETY: returned by `ucp_rkey_pack`, released once.
        unsafe { sys::ucp_rkey_buffer_release(buffer) };
        Descriptor::new(address as u64, bytes, key).map_err(|error| match error {
            Error::Ucx(UcxError::BadDescriptor { .. }) => UcxError::BadDescriptor {
                reason: "UCX packed a key whose framing is not UCX 1.13's (a newer UCX \
                         with another key format?)",
            }
            .into(),
            other => other,
        })
    }

    /// The context the Blocks are mapped with.
    pub fn context(&self) -> &Context {
        &self.backend().context
    }

    /// The memory handle of the one part that holds `len` bytes at
    /// `address`.
    pub(crate) fn memh_of(&self, address: usize, len: usize) -> Result<sys::ucp_mem_h, Error> {
        match self.lookup(address, len) {
            Some((range, _)) => Ok(range.chunk.0),
            None => Err(UcxError::NotRegistered { address, len }.into()),
        }
    }
}
