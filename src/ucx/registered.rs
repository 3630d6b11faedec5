//! UCX as a registration backend ([`Ucx`]), and what a [`Registered`]
//! allocator gives remote peers ([`Registered::descriptor_of`]).

use core::ffi::c_void;
use core::fmt;
use core::mem::ManuallyDrop;
use core::ops::Deref;
use core::ptr::{self, NonNull};
use std::sync::Arc;

use super::descriptor::Descriptor;
use super::error::{UcxError, check};
use super::grant::Issued;
use super::{Context, sys};
use crate::register::{Backend, Regions, Span};
use crate::{Block, Error, Model, Tape};

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

    fn continues(&self, _prev: &Span<MemHandle>, _next: &Span<MemHandle>) -> bool {
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
/// what it needs committed).
///
/// It keeps the descriptors it issued, each with a random token, and confirms
/// exactly those to peers that ask over a [`Link`](super::Link)
/// ([`Link::verify`](super::Link::verify)), counting which links hold
/// which ([`held`](Registered::held)). Dropping it with nothing held
/// unmaps every part before the pages go. Dropping it while a peer holds a
/// descriptor (the owner did not [`revoke`](super::Link::revoke) it, or
/// the peer did not let go in time) could let that peer's next put land in
/// unmapped memory, which kills the owner (UCX's software path writes
/// wherever the address points): so it then keeps the memory instead,
/// mapped and registered, for the rest of the process, and says so on
/// standard error. [`into_inner`](Registered::into_inner) gives the
/// allocator back only when nothing is held.
pub struct Registered<A: Regions> {
    inner: ManuallyDrop<crate::register::Registered<A, Ucx>>,
    issued: Arc<Issued>,
}

impl<A: Regions> Registered<A> {
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
        let inner = crate::register::Registered::with_backend(backend, inner)?;
        Ok(Registered {
            inner: ManuallyDrop::new(inner),
            issued: Issued::new(context.id()),
        })
    }

    /// The descriptor a peer needs to put into and get from `slice`, an
    /// allocation (or part of one) in the registered Blocks.
    ///
    /// The first call for a range issues a descriptor with a fresh random
    /// token and keeps it, for confirming to peers; later calls for the same
    /// range give the same one. A peer can do nothing with it until it is
    /// confirmed ([`Link::verify`](super::Link::verify)), and the peer's
    /// unimem reaches only its bytes. [`withdraw`](Registered::withdraw)
    /// stops confirming it.
    ///
    /// Errors: [`Error::ZeroSize`] for an empty slice,
    /// [`UcxError::NotRegistered`] for memory outside the registered parts
    /// (or across two of them), a failed `ucp_rkey_pack`, and a failure to
    /// read random bytes.
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
        let pack = || {
            let mut buffer = ptr::null_mut();
            let mut len = 0;
            // SAFETY: a handle mapped on this context, live while `self`
            // is; valid out-pointers. UCX allocates the buffer, released
            // below.
            let status =
                unsafe { sys::ucp_rkey_pack(self.context().raw(), memh, &mut buffer, &mut len) };
            check("ucp_rkey_pack", status)?;
            // SAFETY: UCX returned `len` readable bytes at `buffer`.
            let key = unsafe { core::slice::from_raw_parts(buffer.cast::<u8>(), len) }.to_vec();
            // SAFETY: returned by `ucp_rkey_pack`, released once.
            unsafe { sys::ucp_rkey_buffer_release(buffer) };
            Ok(key)
        };
        self.issued
            .issue(address as u64, bytes, pack)
            .map_err(|error| match error {
                Error::Ucx(UcxError::BadDescriptor { .. }) => UcxError::BadDescriptor {
                    reason: "UCX packed a key whose framing is not UCX 1.13's (a newer UCX \
                             with another key format?)",
                }
                .into(),
                other => other,
            })
    }

    /// Stops confirming `descriptor` to peers (for an allocation about to
    /// be freed, or to keep the table of issued descriptors small); whether
    /// this registration issued it. Peers that hold it already keep it
    /// until it is revoked or they let go.
    pub fn withdraw(&self, descriptor: &Descriptor) -> bool {
        self.issued.withdraw(descriptor)
    }

    /// How many holds peers have on its descriptors: one per link and
    /// descriptor confirmed over it and not yet let go of.
    pub fn held(&self) -> usize {
        self.issued.held()
    }

    /// How many descriptors it issued and did not withdraw.
    pub fn issued(&self) -> usize {
        self.issued.issued()
    }

    /// The context the Blocks are mapped with.
    pub fn context(&self) -> &Context {
        &self.inner.backend().context
    }

    /// How many ranges are mapped.
    pub fn chunks(&self) -> usize {
        self.inner.chunks()
    }

    /// Every mapped range, in address order.
    pub fn spans(&self) -> std::vec::Vec<Span<MemHandle>> {
        self.inner.spans()
    }

    /// The mapped range that holds the address `ptr`, and the offset of
    /// `ptr` in it, if the `bytes` bytes from `ptr` lie in that one range.
    pub fn lookup(&self, ptr: usize, bytes: usize) -> Option<(Span<MemHandle>, usize)> {
        self.inner.lookup(ptr, bytes)
    }

    /// The first failure to map memory committed after the registration was
    /// made, if any (the allocation that needed it still succeeded; it has
    /// no descriptor).
    pub fn take_error(&self) -> Option<Error> {
        self.inner.take_error()
    }

    /// Unmaps everything and gives the allocator back, if no peer holds a
    /// descriptor of it ([`held`](Registered::held) is zero: revoke
    /// first); else gives `self` back unchanged. Once it succeeds, no
    /// descriptor of it is confirmed any more.
    pub fn into_inner(self) -> Result<A, Self> {
        if self.issued.close_if_unheld().is_err() {
            return Err(self);
        }
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so each field is taken once.
        let (inner, issued) =
            unsafe { (ManuallyDrop::take(&mut this.inner), ptr::read(&this.issued)) };
        drop(issued);
        Ok(inner.into_inner())
    }

    /// Whether `issued` is this registration's table.
    pub(crate) fn issued_by(&self, issued: &Arc<Issued>) -> bool {
        Arc::ptr_eq(&self.issued, issued)
    }

    /// The memory handle of the one part that holds `len` bytes at
    /// `address`.
    pub(crate) fn memh_of(&self, address: usize, len: usize) -> Result<sys::ucp_mem_h, Error> {
        match self.inner.lookup(address, len) {
            Some((range, _)) => Ok(range.chunk.0),
            None => Err(UcxError::NotRegistered { address, len }.into()),
        }
    }
}

impl<A: Regions> Drop for Registered<A> {
    fn drop(&mut self) {
        let held = self.issued.close();
        if held == 0 {
            // SAFETY: dropped once, here; nothing is confirmed any more, and
            // no peer holds a descriptor.
            unsafe { ManuallyDrop::drop(&mut self.inner) };
            return;
        }
        // A peer may still write: the registration, its Blocks and their
        // pages are kept (`inner` is never dropped), so a late write lands
        // in memory that is there.
        let bytes: usize = self.inner.spans().iter().map(|range| range.len).sum();
        eprintln!(
            "unimem: a UCX registration of {bytes} bytes was dropped while peers held {held} \
             of its descriptors; its memory is kept (leaked) so that their writes cannot land \
             in unmapped memory (Link::revoke before dropping)"
        );
    }
}

impl<A: Regions> Deref for Registered<A> {
    type Target = A;

    fn deref(&self) -> &A {
        &self.inner
    }
}

impl Registered<Tape> {
    /// [`Tape::clear`], keeping the registration. Peers holding descriptors
    /// of the old allocations reach the new ones at those addresses: revoke
    /// first.
    pub fn clear(&mut self) {
        self.inner.inner_mut().clear();
    }
}

impl Registered<Model> {
    /// [`Model::clear_pass`], keeping the registration.
    pub fn clear_pass(&mut self) {
        self.inner.inner_mut().clear_pass();
    }

    /// [`Model::clear_talk`], keeping the registration.
    pub fn clear_talk(&mut self) {
        self.inner.inner_mut().clear_talk();
    }
}

impl Registered<Block> {
    /// [`Block::as_bytes_mut`], keeping the registration.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        self.inner.inner_mut().as_bytes_mut()
    }

    /// [`Block::as_f32_mut`], keeping the registration.
    pub fn as_f32_mut(&mut self) -> &mut [f32] {
        self.inner.inner_mut().as_f32_mut()
    }

    /// [`Block::as_u16_mut`], keeping the registration.
    pub fn as_u16_mut(&mut self) -> &mut [u16] {
        self.inner.inner_mut().as_u16_mut()
    }
}

impl<A: Regions + fmt::Debug> fmt::Debug for Registered<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registered")
            .field("inner", &*self.inner)
            .field("issued", &self.issued.issued())
            .field("held", &self.issued.held())
            .finish()
    }
}
