//! [`Endpoint`]: a connection from a worker to a peer's worker.

use core::cell::{Cell, RefCell};
use core::ffi::c_void;
use core::fmt;
use core::mem::ManuallyDrop;
use core::ptr;
use core::sync::atomic::{AtomicI8, Ordering};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::error::{UcxError, check};
use super::grant::{Peer, Track};
use super::remote::Remote;
use super::sys;
use super::{Descriptor, Grant, Worker};
use crate::Error;

/// How long an operation may take before it fails with
/// [`UcxError::TimedOut`], unless [`Endpoint::set_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest worker address [`Worker::connect`] takes.
pub const MAX_ADDRESS: usize = 64 << 10;

/// How long dropping an endpoint without peer error handling waits for its
/// flushing close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How an endpoint deals with a failed peer (`ucp_err_handling_mode_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorMode {
    /// `UCP_ERR_HANDLING_MODE_PEER`: a failed peer is detected and reported
    /// ([`UcxError::Closed`], or the failing call's status), and the
    /// endpoint is force-closed on drop. Needs transports that detect peer
    /// failure (tcp, RDMA); UCX 1.13's shared-memory transports do not.
    Peer,
    /// `UCP_ERR_HANDLING_MODE_NONE`: what the shared-memory transports need.
    /// A failed peer shows only as operations that time out; dropping the
    /// endpoint closes it with a flush, waiting two seconds at most.
    None,
}

/// A connection to a peer's worker, through which [`Remote`]s put and get.
///
/// Made by [`Worker::connect`], through the [`Link`](super::Link) that
/// carried the peer's address (or by the `unsafe`
/// [`Worker::connect_unchecked`]); borrows its worker, whose progress moves
/// its operations. Every operation waits at most its timeout
/// ([`DEFAULT_TIMEOUT`], [`set_timeout`](Endpoint::set_timeout)) and then
/// poisons the worker (see [`Worker`]). Dropping it flushes what its
/// remotes started (two seconds at most), then force-closes it
/// ([`ErrorMode::Peer`]) or closes it with a bounded flush
/// ([`ErrorMode::None`]): [`flush`](Endpoint::flush) first for puts to be
/// sure to land.
pub struct Endpoint<'w> {
    handle: sys::ucp_ep_h,
    worker: &'w Worker,
    mode: ErrorMode,
    /// The link it was connected through and the context of the address,
    /// if it was (`Worker::connect`): grants confirmed over that link are
    /// for it.
    peer: Option<Peer>,
    /// The remotes with operations no flush has completed yet: a flush
    /// settles them, so that their owners hear the peer is done.
    unsettled: RefCell<Vec<Rc<Track>>>,
    /// The status the error handler reported, 0 while none. Boxed: UCX
    /// holds its address as the handler's argument. Freed after the
    /// endpoint is closed, or leaked with a poisoned worker.
    failed: ManuallyDrop<Box<AtomicI8>>,
    timeout: Cell<Duration>,
}

/// The error handler of endpoints in [`ErrorMode::Peer`].
///
/// # Safety
/// `arg` is the `failed` flag of a live endpoint: UCX calls the handler only
/// while the endpoint is open, and the flag is freed after it is closed.
unsafe extern "C" fn on_error(arg: *mut c_void, _ep: sys::ucp_ep_h, status: sys::ucs_status_t) {
    // SAFETY: the caller's contract.
    let failed = unsafe { &*arg.cast::<AtomicI8>() };
    // Relaxed: the flag carries its own value and publishes nothing else;
    // it is read on the worker's thread, which is the one progressing.
    let _ = failed.compare_exchange(0, status.min(-1), Ordering::Relaxed, Ordering::Relaxed);
}

impl<'w> Endpoint<'w> {
    /// Connects `worker` to the worker whose address this is.
    ///
    /// # Safety
    /// `address` is a worker address made by UCX (`ucp_worker_get_address`)
    /// in a process this one trusts as a UCX peer: UCX parses it without a
    /// length and trusts what it says. `peer`, if given, names the link it
    /// came over and the context it names.
    pub(crate) unsafe fn connect(
        worker: &'w Worker,
        address: &[u8],
        mode: ErrorMode,
        peer: Option<Peer>,
    ) -> Result<Endpoint<'w>, Error> {
        worker.usable()?;
        if address.is_empty() || address.len() > MAX_ADDRESS {
            return Err(UcxError::BadDescriptor {
                reason: "a worker address is 1 to 64 KiB long",
            }
            .into());
        }
        let failed = ManuallyDrop::new(Box::new(AtomicI8::new(0)));
        let mut params = sys::ucp_ep_params_t {
            field_mask: sys::UCP_EP_PARAM_FIELD_REMOTE_ADDRESS
                | sys::UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE
                | sys::UCP_EP_PARAM_FIELD_NAME,
            address: address.as_ptr().cast(),
            err_mode: sys::UCP_ERR_HANDLING_MODE_NONE,
            name: c"unimem".as_ptr(),
            ..Default::default()
        };
        if mode == ErrorMode::Peer {
            params.field_mask |= sys::UCP_EP_PARAM_FIELD_ERR_HANDLER;
            params.err_mode = sys::UCP_ERR_HANDLING_MODE_PEER;
            params.err_handler = sys::ucp_err_handler_t {
                cb: Some(on_error),
                arg: ptr::from_ref::<AtomicI8>(&**failed).cast_mut().cast(),
            };
        }
        let mut handle = ptr::null_mut();
        // SAFETY: a live worker, valid parameters (the address bytes live
        // through the call, and are a worker address as the caller
        // promises; UCX copies what it keeps) and out-pointer.
        let status = unsafe { sys::ucp_ep_create(worker.raw(), &params, &mut handle) };
        if let Err(error) = check("ucp_ep_create", status) {
            drop(ManuallyDrop::into_inner(failed));
            return Err(error);
        }
        Ok(Endpoint {
            handle,
            worker,
            mode,
            peer,
            unsettled: RefCell::new(Vec::new()),
            failed,
            timeout: Cell::new(DEFAULT_TIMEOUT),
        })
    }

    /// The peer's allocation that `grant` names, ready for puts and gets:
    /// its packed key unpacked on this endpoint. The grant must have been
    /// confirmed over the link this endpoint was connected through
    /// ([`UcxError::OtherPeer`] otherwise), and not revoked
    /// ([`UcxError::Revoked`]).
    pub fn remote(&self, grant: &Grant) -> Result<Remote<'_>, Error> {
        self.usable()?;
        if self.peer != Some(grant.peer()) {
            return Err(UcxError::OtherPeer.into());
        }
        grant.held().hold()?;
        let track = Track::new(grant.held().clone());
        // SAFETY: the process at the other end of the link this endpoint
        // was connected through confirmed the descriptor as one it issued,
        // byte for byte, from a live registration of the context whose
        // worker address the same link carried (the peers match, checked
        // above): the key is what UCX packed there, for this endpoint's
        // peer, and that process is trusted as a UCX peer (`Peers`).
        unsafe { Remote::unpack(self, grant.descriptor(), Some(track)) }
    }

    /// The peer's allocation that `descriptor` names, its key unpacked on
    /// this endpoint without its owner's confirmation.
    ///
    /// # Safety
    /// The descriptor's bytes are exactly what
    /// [`Registered::descriptor_of`](super::Registered::descriptor_of) made
    /// in the process whose worker this endpoint is connected to, from a
    /// registration on the context of that worker: UCX parses and trusts
    /// the packed key (a corrupted one aborts the process, or crashes it,
    /// inside `ucp_ep_rkey_unpack` with the shared-memory transports; one
    /// from another process or context is read against the wrong memory
    /// domains). Only the framing is checked here. Nothing tells the owner
    /// this peer uses it: the caller makes sure the owner keeps the
    /// registration until every put and get through the remote has been
    /// flushed (else a put may land in memory the owner unmapped, which
    /// kills it), and the descriptor's range is trusted as it is.
    pub unsafe fn remote_unchecked(&self, descriptor: &Descriptor) -> Result<Remote<'_>, Error> {
        self.usable()?;
        // SAFETY: the caller's contract.
        unsafe { Remote::unpack(self, descriptor, None) }
    }

    /// Waits until every put and get issued on this endpoint has completed
    /// at the peer (`ucp_ep_flush_nbx`): after it returns, the owner's
    /// memory holds what was put, and grants the owner revoked (or that
    /// were dropped with their remotes) are let go of.
    pub fn flush(&self) -> Result<(), Error> {
        self.usable()?;
        let (deadline, timeout) = self.deadline();
        let param = sys::ucp_request_param_t::default();
        // SAFETY: a live endpoint and a parameter with nothing set.
        let status = unsafe { sys::ucp_ep_flush_nbx(self.handle, &param) };
        // SAFETY: just returned by a `_nbx` call on this endpoint; it uses
        // no buffer of ours.
        unsafe {
            self.worker
                .wait("ucp_ep_flush_nbx", status, deadline, timeout)
        }?;
        self.usable()?;
        self.settle();
        Ok(())
    }

    /// Keeps `track` until the next flush: its remote began an operation.
    pub(crate) fn unsettled(&self, track: &Rc<Track>) {
        self.unsettled.borrow_mut().push(track.clone());
    }

    /// After a flush completed every operation begun before it: the
    /// remotes are settled. (The endpoint is used by one thread, so no
    /// operation began while the flush ran.)
    fn settle(&self) {
        let tracks = core::mem::take(&mut *self.unsettled.borrow_mut());
        for track in tracks {
            track.settle();
        }
    }

    /// Orders the worker's operations (`ucp_worker_fence`): puts and gets
    /// issued on any of its endpoints after the fence complete at their
    /// peers after those issued before it. Completes nothing by itself:
    /// [`flush`](Endpoint::flush) does.
    pub fn fence(&self) -> Result<(), Error> {
        self.usable()?;
        // SAFETY: a live worker.
        check("ucp_worker_fence", unsafe {
            sys::ucp_worker_fence(self.worker.raw())
        })
    }

    /// How long each operation may take from now on.
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout.set(timeout);
    }

    /// How long each operation may take.
    pub fn timeout(&self) -> Duration {
        self.timeout.get()
    }

    /// The error handling mode it was made with.
    pub fn mode(&self) -> ErrorMode {
        self.mode
    }

    /// The worker it was made on.
    pub fn worker(&self) -> &'w Worker {
        self.worker
    }

    /// `Ok` unless the worker is poisoned or the peer was reported failed.
    pub(crate) fn usable(&self) -> Result<(), Error> {
        self.worker.usable()?;
        // Relaxed: see `on_error`.
        match self.failed.load(Ordering::Relaxed) {
            0 => Ok(()),
            _ => Err(UcxError::Closed {
                reason: "UCX reported the peer failed",
            }
            .into()),
        }
    }

    /// The deadline of an operation starting now, and the timeout it is.
    pub(crate) fn deadline(&self) -> (Instant, Duration) {
        let timeout = self.timeout.get();
        (Instant::now() + timeout, timeout)
    }

    /// The endpoint handle, live while `self` is.
    pub(crate) fn raw(&self) -> sys::ucp_ep_h {
        self.handle
    }
}

impl Endpoint<'_> {
    /// Flushes what its remotes started, waiting `CLOSE_WAIT` at most, and
    /// settles them if it completed (without poisoning the worker if it did
    /// not: the flush holds no buffer of ours).
    fn flush_before_close(&self) {
        if self.unsettled.borrow().is_empty() || self.usable().is_err() {
            return;
        }
        let param = sys::ucp_request_param_t::default();
        // SAFETY: a live endpoint and a parameter with nothing set.
        let status = unsafe { sys::ucp_ep_flush_nbx(self.handle, &param) };
        let flushed = if status.is_null() {
            true
        } else if sys::ptr_is_err(status) {
            false
        } else {
            let end = Instant::now() + CLOSE_WAIT;
            let mut idle = 0;
            let state = loop {
                // SAFETY: a live flush request, not yet freed.
                let state = unsafe { sys::ucp_request_check_status(status) };
                if state != sys::UCS_INPROGRESS || Instant::now() >= end {
                    break state;
                }
                self.worker.spin(&mut idle);
            };
            // SAFETY: freed once, here; one still running is released to
            // UCX, which frees it when it ends.
            unsafe { sys::ucp_request_free(status) };
            state == sys::UCS_OK
        };
        if flushed && self.usable().is_ok() {
            self.settle();
        }
    }

    /// Closes the endpoint: at once in [`ErrorMode::Peer`], else with a
    /// flush that waits `CLOSE_WAIT` at most.
    fn close(&mut self) {
        let mut param = sys::ucp_request_param_t::default();
        if self.mode == ErrorMode::Peer {
            param.op_attr_mask = sys::UCP_OP_ATTR_FIELD_FLAGS;
            param.flags = sys::UCP_EP_CLOSE_FLAG_FORCE;
        }
        // SAFETY: a live endpoint, closed once, here.
        let status = unsafe { sys::ucp_ep_close_nbx(self.handle, &param) };
        if status.is_null() || sys::ptr_is_err(status) {
            // Closed at once (a forced close always is), or nothing to wait for.
            return;
        }
        let end = Instant::now() + CLOSE_WAIT;
        let mut idle = 0;
        loop {
            // SAFETY: a live close request, not yet freed.
            let state = unsafe { sys::ucp_request_check_status(status) };
            if state != sys::UCS_INPROGRESS || Instant::now() >= end {
                break;
            }
            self.worker.spin(&mut idle);
        }
        // SAFETY: freed once, here. The close request holds no buffer of
        // ours: one still running is released to UCX, which frees it when
        // it ends.
        unsafe { sys::ucp_request_free(status) };
    }
}

impl Drop for Endpoint<'_> {
    fn drop(&mut self) {
        if self.worker.is_poisoned() {
            // Never touched again: the endpoint and its handler's flag are
            // leaked with the worker (and its remotes stay unsettled, so
            // their owners keep their memory).
            return;
        }
        self.flush_before_close();
        self.close();
        // SAFETY: dropped once, here, after the endpoint is closed: UCX
        // calls its error handler no more.
        unsafe { ManuallyDrop::drop(&mut self.failed) };
    }
}

impl fmt::Debug for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("handle", &self.handle)
            .field("mode", &self.mode)
            .field("through_link", &self.peer.is_some())
            .field("timeout", &self.timeout.get())
            // Relaxed: a snapshot for display.
            .field("failed", &self.failed.load(Ordering::Relaxed))
            .finish()
    }
}
