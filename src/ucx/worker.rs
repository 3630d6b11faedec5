//! [`Worker`]: a UCP worker, which connects to peers and progresses the
//! operations of both sides.

use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;
use core::ptr;
use std::time::{Duration, Instant};

use super::endpoint::{Endpoint, ErrorMode};
use super::error::{UcxError, check};
use super::grant::Peer;
use super::{Context, Link, sys};
use crate::Error;

/// Progress calls in a row that find nothing to do before a wait yields
/// the CPU: on a machine with fewer cores than busy processes, the peer
/// being waited for may need this one's core.
const SPINS_BEFORE_YIELD: u32 = 64;

/// A UCP worker: the owner's side serves remote puts and gets through it,
/// a peer's side connects and issues them through it.
///
/// **UCX moves bytes only while a worker is progressed.** Without RDMA
/// hardware (and for memory UCX did not allocate itself), a peer's put or
/// get into a registration is carried out by the owner's worker, in software,
/// when the owner calls [`progress`](Worker::progress) (or
/// [`serve_for`](Worker::serve_for), [`serve_until`](Worker::serve_until),
/// or [`Link::recv_serving`](super::Link::recv_serving)); a peer's
/// operations wait until it does. An owner that stops progressing stalls its
/// peers, which then time out.
///
/// Made in thread mode `SERIALIZED`: it may move to another thread (`Send`)
/// but is used by one at a time (`!Sync`).
///
/// A worker whose operation timed out is *poisoned*: UCX may still hold that
/// operation's buffer and would touch it when progressed, so the worker is
/// never progressed again. Every later call on it and its endpoints returns
/// [`UcxError::Closed`], and dropping it leaks the UCX objects instead of
/// tearing them down. (UCX moves an operation's bytes only inside calls on
/// its worker: in UCX 1.13, the worker's own thread only accepts
/// connections and signals events.)
pub struct Worker {
    handle: sys::ucp_worker_h,
    context: Context,
    poisoned: Cell<bool>,
    /// Whether a connection found no transport for `ErrorMode::Peer`.
    no_peer_mode: Cell<bool>,
    /// `!Sync`: one thread at a time.
    _serialized: PhantomData<Cell<()>>,
}

// SAFETY: the worker is created in `UCS_THREAD_MODE_SERIALIZED`, so any
// thread may use it as long as one does at a time, which `!Sync` and the
// borrows of its endpoints ensure.
unsafe impl Send for Worker {}

impl Worker {
    pub(crate) fn new(context: &Context) -> Result<Worker, Error> {
        let params = sys::ucp_worker_params_t {
            field_mask: sys::UCP_WORKER_PARAM_FIELD_THREAD_MODE,
            thread_mode: sys::UCS_THREAD_MODE_SERIALIZED,
            ..Default::default()
        };
        let mut handle = ptr::null_mut();
        // SAFETY: a live context, valid parameters and out-pointer.
        let status = unsafe { sys::ucp_worker_create(context.raw(), &params, &mut handle) };
        check("ucp_worker_create", status)?;
        Ok(Worker {
            handle,
            context: context.clone(),
            poisoned: Cell::new(false),
            no_peer_mode: Cell::new(false),
            _serialized: PhantomData,
        })
    }

    /// The worker's address: the bytes a peer needs to connect to it,
    /// which [`Link::send_address`] sends ([`Worker::connect`] on the
    /// other side).
    pub fn address(&self) -> Result<Vec<u8>, Error> {
        self.usable()?;
        let mut address = ptr::null_mut();
        let mut len = 0;
        // SAFETY: a live worker and valid out-pointers; UCX allocates the
        // address, released below.
        let status = unsafe { sys::ucp_worker_get_address(self.handle, &mut address, &mut len) };
        check("ucp_worker_get_address", status)?;
        // SAFETY: UCX returned `len` readable bytes at `address`.
        let bytes = unsafe { core::slice::from_raw_parts(address.cast::<u8>(), len) }.to_vec();
        // SAFETY: returned by `ucp_worker_get_address` on this worker, once.
        unsafe { sys::ucp_worker_release_address(self.handle, address) };
        Ok(bytes)
    }

    /// Connects to the owner at the other end of `link`: waits up to
    /// `timeout` for the worker address it sends
    /// ([`Link::send_address`]), and connects to it with peer error
    /// handling where the transports allow it ([`ErrorMode::Peer`]; UCX
    /// 1.13's shared-memory transports do not, and then
    /// [`ErrorMode::None`], after UCX logs that the first try found no
    /// transport; the worker's later connections skip that try).
    ///
    /// The endpoint unpacks the [`Grant`](super::Grant)s confirmed over
    /// the same link ([`Endpoint::remote`]). The address goes to UCX as the
    /// owner sent it: UCX parses it without a length and trusts it, as it
    /// trusts the peer it names ([`Peers`](super::Peers)); no bytes from
    /// anyone but the process at the other end of the link reach it.
    pub fn connect(&self, link: &mut Link, timeout: Duration) -> Result<Endpoint<'_>, Error> {
        self.connect_through(link, timeout, None)
    }

    /// As [`connect`](Worker::connect), with the error handling mode chosen.
    pub fn connect_with(
        &self,
        link: &mut Link,
        timeout: Duration,
        mode: ErrorMode,
    ) -> Result<Endpoint<'_>, Error> {
        self.connect_through(link, timeout, Some(mode))
    }

    /// Connects to the worker whose [`address`](Worker::address) this is,
    /// however it came (`mode`: as [`connect`](Worker::connect) chooses
    /// when `None`). The endpoint takes no [`Grant`](super::Grant)s, only
    /// descriptors through the `unsafe`
    /// [`Endpoint::remote_unchecked`].
    ///
    /// # Safety
    /// `address` is a worker address that UCX made
    /// (`ucp_worker_get_address`) in a process trusted as a UCX peer
    /// ([`Peers`](super::Peers)): UCX parses it without a length and trusts
    /// what it says, so other bytes may crash this process. (Its length is
    /// checked: 1 byte to [`MAX_ADDRESS`](super::MAX_ADDRESS).)
    pub unsafe fn connect_unchecked(
        &self,
        address: &[u8],
        mode: Option<ErrorMode>,
    ) -> Result<Endpoint<'_>, Error> {
        // SAFETY: the caller's contract.
        unsafe { self.connect_address(address, mode, None) }
    }

    fn connect_through(
        &self,
        link: &mut Link,
        timeout: Duration,
        mode: Option<ErrorMode>,
    ) -> Result<Endpoint<'_>, Error> {
        self.usable()?;
        let (context, address) = link.peer_address(timeout)?;
        let peer = Peer {
            link: link.id(),
            context,
        };
        // SAFETY: the address came in the address frame of the process at
        // the other end of `link` (`Link::send_address`, which sends what
        // `ucp_worker_get_address` made there); that process is the peer
        // this connects to, trusted as UCX trusts its peers (`Peers`).
        unsafe { self.connect_address(&address, mode, Some(peer)) }
    }

    /// # Safety
    /// As `Endpoint::connect`.
    unsafe fn connect_address(
        &self,
        address: &[u8],
        mode: Option<ErrorMode>,
        peer: Option<Peer>,
    ) -> Result<Endpoint<'_>, Error> {
        let mode = match mode {
            Some(mode) => mode,
            None if self.no_peer_mode.get() => ErrorMode::None,
            None => {
                // SAFETY: the caller's contract.
                let tried = unsafe { Endpoint::connect(self, address, ErrorMode::Peer, peer) };
                match tried {
                    Err(Error::Ucx(UcxError::Call { status, .. }))
                        if status == sys::UCS_ERR_UNREACHABLE =>
                    {
                        // The transports are the context's: later
                        // connections go straight to `ErrorMode::None`,
                        // without UCX's log line.
                        self.no_peer_mode.set(true);
                        ErrorMode::None
                    }
                    other => return other,
                }
            }
        };
        // SAFETY: the caller's contract.
        unsafe { Endpoint::connect(self, address, mode, peer) }
    }

    /// Progresses the worker once: carries out what peers asked of this
    /// side, and moves this side's operations along. Whether anything
    /// happened. Does nothing on a poisoned worker.
    pub fn progress(&self) -> bool {
        if self.poisoned.get() {
            return false;
        }
        // SAFETY: a live worker, used by this thread alone (`!Sync`).
        unsafe { sys::ucp_worker_progress(self.handle) != 0 }
    }

    /// Progresses the worker for `duration`.
    pub fn serve_for(&self, duration: Duration) {
        let end = Instant::now() + duration;
        let mut idle = 0;
        while Instant::now() < end {
            self.spin(&mut idle);
        }
    }

    /// Progresses the worker until `done` says so, or fails with
    /// [`UcxError::TimedOut`] after `timeout`.
    pub fn serve_until(
        &self,
        mut done: impl FnMut() -> bool,
        timeout: Duration,
    ) -> Result<(), Error> {
        self.usable()?;
        let deadline = Instant::now() + timeout;
        let mut idle = 0;
        while !done() {
            if Instant::now() >= deadline {
                return Err(UcxError::TimedOut {
                    call: "serve_until",
                    after: timeout,
                }
                .into());
            }
            self.spin(&mut idle);
        }
        Ok(())
    }

    /// One progress call; after many in a row with nothing done, yields.
    pub(crate) fn spin(&self, idle: &mut u32) {
        if self.progress() {
            *idle = 0;
        } else {
            *idle += 1;
            if *idle >= SPINS_BEFORE_YIELD {
                *idle = 0;
                std::thread::yield_now();
            }
        }
    }

    /// Waits for what a `_nbx` call returned: done at once (null), failed
    /// (an error pointer), or a request, progressed until it completes and
    /// then freed. A request still running at `deadline` is freed (UCX
    /// releases it when it ends) and the worker poisoned.
    ///
    /// # Safety
    /// `status` was returned by a `_nbx` call on this worker or one of its
    /// endpoints and has not been waited for; whatever buffer the operation
    /// uses stays valid until this returns or the worker is poisoned.
    pub(crate) unsafe fn wait(
        &self,
        call: &'static str,
        status: sys::ucs_status_ptr_t,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), Error> {
        if status.is_null() {
            return Ok(());
        }
        if sys::ptr_is_err(status) {
            return Err(UcxError::call(call, sys::ptr_raw_status(status)).into());
        }
        let mut idle = 0;
        loop {
            if self.poisoned.get() {
                // Another operation timed out meanwhile (in a batch).
                // SAFETY: freed once, here; UCX releases it when it ends.
                unsafe { sys::ucp_request_free(status) };
                return self.usable();
            }
            self.spin(&mut idle);
            // SAFETY: a live request (the caller's contract), not yet freed.
            let state = unsafe { sys::ucp_request_check_status(status) };
            if state != sys::UCS_INPROGRESS {
                // SAFETY: completed, and freed once, here.
                unsafe { sys::ucp_request_free(status) };
                return check(call, state);
            }
            if Instant::now() >= deadline {
                // SAFETY: freed once, here; UCX releases it when it ends.
                unsafe { sys::ucp_request_free(status) };
                self.poisoned.set(true);
                return Err(UcxError::TimedOut {
                    call,
                    after: timeout,
                }
                .into());
            }
        }
    }

    /// `Ok` unless the worker is poisoned.
    pub(crate) fn usable(&self) -> Result<(), Error> {
        if self.poisoned.get() {
            return Err(UcxError::Closed {
                reason: "an operation on this worker timed out and may still hold its buffer",
            }
            .into());
        }
        Ok(())
    }

    /// Whether an operation timed out on this worker.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.get()
    }

    /// The context the worker was made from.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The worker handle, live while `self` is.
    pub(crate) fn raw(&self) -> sys::ucp_worker_h {
        self.handle
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.poisoned.get() {
            // UCX may still hold a timed-out operation's buffer; tearing the
            // worker down would let it finish. Leak the worker, and keep its
            // context alive for it.
            core::mem::forget(self.context.clone());
            return;
        }
        // SAFETY: a live worker; its endpoints borrow it, so they are closed.
        unsafe { sys::ucp_worker_destroy(self.handle) }
    }
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("handle", &self.handle)
            .field("poisoned", &self.poisoned.get())
            .finish()
    }
}
