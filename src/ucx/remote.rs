//! [`Remote`]: a peer's allocation, named by a descriptor, that this side
//! puts into and gets from.

use core::ffi::c_void;
use core::fmt;
use core::ptr;
use std::rc::Rc;

use super::batch::Batch;
use super::endpoint::Endpoint;
use super::error::{UcxError, check};
use super::grant::Track;
use super::sys;
use super::{Descriptor, Registered};
use crate::Error;
use crate::register::Regions;

/// How many bytes of zeros follow a packed key handed to UCX: each memory
/// domain's part of the key is read by its transport without a length, and
/// a part is at most 255 bytes long, so a transport reading a whole part
/// whose length byte lies stays inside this copy.
const KEY_PADDING: usize = 256;

/// A put or a get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Put,
    Get,
}

impl Op {
    pub(crate) fn call(self) -> &'static str {
        match self {
            Op::Put => "ucp_put_nbx",
            Op::Get => "ucp_get_nbx",
        }
    }
}

/// A peer's allocation, named by a [`Grant`](super::Grant) (or, `unsafe`,
/// a [`Descriptor`]), unpacked on an endpoint: puts and gets of bytes at
/// offsets inside it.
///
/// Every put and get is checked against the descriptor's range before
/// anything is sent: UCX does not check remote addresses against the key
/// (without RDMA hardware the owner's worker would write wherever the
/// address points), so a range outside the allocation is refused here with
/// [`UcxError::OutOfRange`]. Once the owner revokes the grant it came from,
/// every operation is refused with [`UcxError::Revoked`], before anything
/// is sent.
///
/// `put` and `get` wait for local completion: the source may be reused, the
/// destination holds the bytes. A put has landed at the owner once
/// [`flush`](Remote::flush) returns. [`batch`](Remote::batch) keeps many
/// operations in flight at once.
pub struct Remote<'e> {
    endpoint: &'e Endpoint<'e>,
    rkey: sys::ucp_rkey_h,
    address: u64,
    size: usize,
    /// Its part in the hold of the grant it came from (none when unpacked
    /// from a descriptor directly).
    track: Option<Rc<Track>>,
}

impl<'e> Remote<'e> {
    /// Unpacks `descriptor`'s key on `endpoint`; `track` is the remote's
    /// part in the hold of the grant it came from, if any.
    ///
    /// # Safety
    /// The key is what UCX packed in the process whose worker `endpoint`
    /// is connected to, on that worker's context (see
    /// `Endpoint::remote_unchecked`).
    pub(crate) unsafe fn unpack(
        endpoint: &'e Endpoint<'e>,
        descriptor: &Descriptor,
        track: Option<Rc<Track>>,
    ) -> Result<Remote<'e>, Error> {
        let key = descriptor.packed_key();
        let mut padded = Vec::with_capacity(key.len() + KEY_PADDING);
        padded.extend_from_slice(key);
        padded.resize(key.len() + KEY_PADDING, 0);
        let mut rkey = ptr::null_mut();
        // SAFETY: a live endpoint and out-pointer; the key is what UCX
        // packed for this endpoint's peer (the caller's contract), and its
        // framing was checked when the descriptor was made
        // (`Descriptor::from_bytes`), so UCX's parse of it stays inside
        // `padded`, which lives through the call (UCX copies what it keeps).
        let status =
            unsafe { sys::ucp_ep_rkey_unpack(endpoint.raw(), padded.as_ptr().cast(), &mut rkey) };
        check("ucp_ep_rkey_unpack", status)?;
        Ok(Remote {
            endpoint,
            rkey,
            address: descriptor.address(),
            size: descriptor.size(),
            track,
        })
    }

    /// The allocation's address in the owner's process.
    pub fn address(&self) -> u64 {
        self.address
    }

    /// Its length in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether its owner revoked it (as far as the link has read): then
    /// every operation is refused.
    pub fn is_revoked(&self) -> bool {
        self.track.as_ref().is_some_and(|track| track.is_revoked())
    }

    /// The endpoint it was unpacked on.
    pub fn endpoint(&self) -> &'e Endpoint<'e> {
        self.endpoint
    }

    /// Writes `src` at `offset` in the allocation, and waits until `src`
    /// may be reused (not until it has landed: [`flush`](Remote::flush)).
    pub fn put(&self, offset: usize, src: &[u8]) -> Result<(), Error> {
        // SAFETY: `src` is borrowed, readable and unchanged, until `run`
        // returns, and `run` returns only after the operation completed (or
        // poisoned the worker, which then never touches it again).
        unsafe { self.run(Op::Put, offset, src.as_ptr().cast_mut(), src.len(), None) }
    }

    /// Reads the allocation's bytes at `offset` into `dst`.
    pub fn get(&self, offset: usize, dst: &mut [u8]) -> Result<(), Error> {
        // SAFETY: `dst` is borrowed mutably until `run` returns, after the
        // operation completed (or poisoned the worker).
        unsafe { self.run(Op::Get, offset, dst.as_mut_ptr(), dst.len(), None) }
    }

    /// [`put`](Remote::put) from memory registered with UCX on this side
    /// (`local`, made with the endpoint's context): its memory handle goes
    /// with the put, so UCX need not look the source up or register it.
    pub fn put_from<A: Regions>(
        &self,
        offset: usize,
        src: &[u8],
        local: &Registered<A>,
    ) -> Result<(), Error> {
        let memh = self.local_memh(local, src.as_ptr(), src.len())?;
        // SAFETY: as in `put`.
        unsafe { self.run(Op::Put, offset, src.as_ptr().cast_mut(), src.len(), memh) }
    }

    /// [`get`](Remote::get) into memory registered with UCX on this side.
    pub fn get_into<A: Regions>(
        &self,
        offset: usize,
        dst: &mut [u8],
        local: &Registered<A>,
    ) -> Result<(), Error> {
        let memh = self.local_memh(local, dst.as_ptr(), dst.len())?;
        // SAFETY: as in `get`.
        unsafe { self.run(Op::Get, offset, dst.as_mut_ptr(), dst.len(), memh) }
    }

    /// Runs `f` with a [`Batch`] of puts and gets into this allocation that
    /// are in flight together (up to a window of them), and returns once
    /// every one has completed locally: the buffers given to the batch are
    /// borrowed until then. The first error of `f` or of an operation is
    /// returned.
    pub fn batch<'b, T>(
        &'b self,
        f: impl FnOnce(&mut Batch<'b>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut batch = Batch::new(self);
        let result = f(&mut batch);
        let finished = batch.finish();
        let value = result?;
        finished?;
        Ok(value)
    }

    /// [`Endpoint::flush`]: waits until every put on the endpoint has
    /// landed at the owner.
    pub fn flush(&self) -> Result<(), Error> {
        self.endpoint.flush()
    }

    /// The owner's address of `len` bytes at `offset`, if they lie inside
    /// the allocation.
    pub(crate) fn target(&self, offset: usize, len: usize) -> Result<u64, Error> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(self.address + offset as u64),
            _ => Err(UcxError::OutOfRange {
                offset,
                len,
                registered: self.size,
            }
            .into()),
        }
    }

    /// The memory handle of `len` bytes at `ptr` in `local`.
    pub(crate) fn local_memh<A: Regions>(
        &self,
        local: &Registered<A>,
        ptr: *const u8,
        len: usize,
    ) -> Result<Option<sys::ucp_mem_h>, Error> {
        if !local.context().same(self.endpoint.worker().context()) {
            return Err(UcxError::OtherContext.into());
        }
        if len == 0 {
            return Ok(None);
        }
        local.memh_of(ptr.addr(), len).map(Some)
    }

    /// Checks the range and starts the operation; what `ucp_put_nbx` or
    /// `ucp_get_nbx` returned, or `None` when there is nothing to do (zero
    /// bytes).
    ///
    /// # Safety
    /// `local..local + len` is readable (a put) or writable (a get) and is
    /// neither written (a put) nor accessed (a get) by anything else until
    /// the operation completes or poisons the worker; `memh`, if given,
    /// covers it.
    pub(crate) unsafe fn start(
        &self,
        op: Op,
        offset: usize,
        local: *mut u8,
        len: usize,
        memh: Option<sys::ucp_mem_h>,
    ) -> Result<Option<sys::ucs_status_ptr_t>, Error> {
        self.endpoint.usable()?;
        let target = self.target(offset, len)?;
        if let Some(track) = &self.track {
            // Refused once revoked; the first operation since a flush keeps
            // the track with the endpoint until the next one.
            if track.begin(len > 0)? {
                self.endpoint.unsettled(track);
            }
        }
        if len == 0 {
            return Ok(None);
        }
        let mut param = sys::ucp_request_param_t::default();
        if let Some(memh) = memh {
            param.op_attr_mask |= sys::UCP_OP_ATTR_FIELD_MEMH;
            param.memh = memh;
        }
        let ep = self.endpoint.raw();
        // SAFETY: a live endpoint and key unpacked on it; the target range
        // lies inside the descriptor's allocation (checked above), which
        // its owner confirmed (or the caller of `remote_unchecked` vouched
        // for); the local buffer is valid as the caller promises.
        let status = unsafe {
            match op {
                Op::Put => {
                    sys::ucp_put_nbx(ep, local.cast::<c_void>(), len, target, self.rkey, &param)
                }
                Op::Get => {
                    sys::ucp_get_nbx(ep, local.cast::<c_void>(), len, target, self.rkey, &param)
                }
            }
        };
        Ok(Some(status))
    }

    /// Starts the operation and waits for it.
    ///
    /// # Safety
    /// As `start`, until this returns.
    unsafe fn run(
        &self,
        op: Op,
        offset: usize,
        local: *mut u8,
        len: usize,
        memh: Option<sys::ucp_mem_h>,
    ) -> Result<(), Error> {
        let (deadline, timeout) = self.endpoint.deadline();
        // SAFETY: the caller's contract.
        let Some(status) = (unsafe { self.start(op, offset, local, len, memh) })? else {
            return Ok(());
        };
        // SAFETY: just returned by a `_nbx` call on this endpoint; the
        // buffer stays valid until the wait returns (the caller's contract).
        unsafe {
            self.endpoint
                .worker()
                .wait(op.call(), status, deadline, timeout)
        }
    }
}

impl Drop for Remote<'_> {
    fn drop(&mut self) {
        if self.endpoint.worker().is_poisoned() {
            // A timed-out operation may still refer to the key: leaked.
            return;
        }
        // SAFETY: unpacked in `unpack`, destroyed once, here; no operation
        // of it is in flight (each waits before returning).
        unsafe { sys::ucp_rkey_destroy(self.rkey) }
    }
}

impl fmt::Debug for Remote<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("address", &format_args!("{:#x}", self.address))
            .field("size", &self.size)
            .finish()
    }
}
