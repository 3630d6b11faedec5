//! [`Batch`]: puts and gets into one remote allocation, in flight together.

use core::fmt;
use core::marker::PhantomData;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::remote::{Op, Remote};
use super::sys;
use super::{Registered, Worker};
use crate::Error;
use crate::register::Regions;

/// The most operations a batch keeps in flight; starting one more first
/// waits for the oldest. 32, the window `ucx_perftest` keeps for its put
/// bandwidth test.
pub const WINDOW: usize = 32;

/// One operation in flight.
struct Pending<'b> {
    status: sys::ucs_status_ptr_t,
    call: &'static str,
    /// The worker that progresses it, kept with it so that it is waited for
    /// on its own worker whatever happens to the batch.
    worker: &'b Worker,
    deadline: Instant,
    timeout: Duration,
}

/// Puts and gets into one [`Remote`] allocation that are in flight together
/// (up to [`WINDOW`]); made by [`Remote::batch`], which returns once every
/// one has completed locally.
///
/// The buffers given to it are borrowed for `'b`, which outlasts the
/// `batch` call, so none can be touched or freed while UCX may use it.
/// Ranges are checked as in [`Remote::put`]: one outside the allocation is
/// refused before anything is sent.
pub struct Batch<'b> {
    remote: &'b Remote<'b>,
    pending: VecDeque<Pending<'b>>,
    /// The buffers: read (puts) or written (gets) while in flight.
    _buffers: PhantomData<&'b mut [u8]>,
}

impl<'b> Batch<'b> {
    pub(crate) fn new(remote: &'b Remote<'b>) -> Batch<'b> {
        Batch {
            remote,
            pending: VecDeque::new(),
            _buffers: PhantomData,
        }
    }

    /// Starts writing `src` at `offset` in the allocation.
    pub fn put(&mut self, offset: usize, src: &'b [u8]) -> Result<(), Error> {
        // SAFETY: `src` is borrowed for `'b`, beyond the `batch` call, which
        // waits for every operation (or poisons the worker).
        unsafe { self.start(Op::Put, offset, src.as_ptr().cast_mut(), src.len(), None) }
    }

    /// Starts reading the allocation's bytes at `offset` into `dst`.
    pub fn get(&mut self, offset: usize, dst: &'b mut [u8]) -> Result<(), Error> {
        // SAFETY: as in `put`, borrowed mutably.
        unsafe { self.start(Op::Get, offset, dst.as_mut_ptr(), dst.len(), None) }
    }

    /// [`put`](Batch::put) from memory registered with UCX on this side
    /// ([`Remote::put_from`]).
    pub fn put_from<A: Regions>(
        &mut self,
        offset: usize,
        src: &'b [u8],
        local: &Registered<A>,
    ) -> Result<(), Error> {
        let memh = self.remote.local_memh(local, src.as_ptr(), src.len())?;
        // SAFETY: as in `put`.
        unsafe { self.start(Op::Put, offset, src.as_ptr().cast_mut(), src.len(), memh) }
    }

    /// [`get`](Batch::get) into memory registered with UCX on this side.
    pub fn get_into<A: Regions>(
        &mut self,
        offset: usize,
        dst: &'b mut [u8],
        local: &Registered<A>,
    ) -> Result<(), Error> {
        let memh = self.remote.local_memh(local, dst.as_ptr(), dst.len())?;
        // SAFETY: as in `get`.
        unsafe { self.start(Op::Get, offset, dst.as_mut_ptr(), dst.len(), memh) }
    }

    /// How many operations are in flight.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// # Safety
    /// As `Remote::start`, for `'b`.
    unsafe fn start(
        &mut self,
        op: Op,
        offset: usize,
        local: *mut u8,
        len: usize,
        memh: Option<sys::ucp_mem_h>,
    ) -> Result<(), Error> {
        while self.pending.len() >= WINDOW {
            self.wait_oldest()?;
        }
        let endpoint = self.remote.endpoint();
        let (deadline, timeout) = endpoint.deadline();
        // SAFETY: the caller's contract.
        let started = unsafe { self.remote.start(op, offset, local, len, memh) }?;
        match started {
            None => {}
            Some(status) if status.is_null() => {}
            Some(status) if sys::ptr_is_err(status) => {
                return Err(super::UcxError::call(op.call(), sys::ptr_raw_status(status)).into());
            }
            Some(status) => self.pending.push_back(Pending {
                status,
                call: op.call(),
                worker: endpoint.worker(),
                deadline,
                timeout,
            }),
        }
        Ok(())
    }

    /// Waits for the oldest operation in flight.
    fn wait_oldest(&mut self) -> Result<(), Error> {
        let Some(pending) = self.pending.pop_front() else {
            return Ok(());
        };
        // SAFETY: a request a `_nbx` call returned, waited for once, on its
        // own worker; its buffer is borrowed for `'b`.
        unsafe {
            pending.worker.wait(
                pending.call,
                pending.status,
                pending.deadline,
                pending.timeout,
            )
        }
    }

    /// Waits for every operation in flight; the first error.
    pub(crate) fn finish(&mut self) -> Result<(), Error> {
        let mut first = None;
        while !self.pending.is_empty() {
            if let Err(error) = self.wait_oldest() {
                first.get_or_insert(error);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Batch<'_> {
    /// Waits for whatever is still in flight (`f` panicked): the buffers
    /// must not be released to their owners while UCX may use them.
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

impl fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("remote", self.remote)
            .field("in_flight", &self.pending.len())
            .finish()
    }
}
