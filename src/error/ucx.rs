//! [`UcxError`]: what went wrong with UCX, a descriptor, a remote access or
//! the bootstrap link (feature `ucx`; re-exported by `unimem::ucx`).

use core::fmt;
use std::io;
use std::time::Duration;

use super::Error;

/// What went wrong with UCX, a descriptor, a remote access or the
/// bootstrap link.
#[derive(Debug)]
#[non_exhaustive]
pub enum UcxError {
    /// A UCX call failed with `status`.
    Call {
        /// The function that failed.
        call: &'static str,
        /// The `ucs_status_t` it returned.
        status: i8,
        /// UCX's text for it (`ucs_status_string`).
        text: &'static str,
    },
    /// An operation did not complete in time (the owner is not progressing
    /// its worker, or is gone). Its worker is poisoned: never progressed
    /// again (see [`Worker`](crate::ucx::Worker)).
    TimedOut {
        /// What was waited for.
        call: &'static str,
        /// How long.
        after: Duration,
    },
    /// The endpoint's peer was reported failed, or an earlier operation on
    /// the worker timed out; make a new endpoint (or worker).
    Closed {
        /// What closed it.
        reason: &'static str,
    },
    /// Bytes that do not parse as a [`Descriptor`](crate::ucx::Descriptor) (or
    /// as a worker address frame).
    BadDescriptor {
        /// What is wrong with them.
        reason: &'static str,
    },
    /// The owner did not confirm a descriptor ([`Link::verify`](crate::ucx::Link::verify)):
    /// it did not issue those bytes (they were forged or corrupted, or
    /// come from another process), or withdrew it, or its registration is
    /// gone, or the owner is revoking what the link holds.
    Refused {
        /// What the owner said.
        reason: &'static str,
    },
    /// The owner revoked the descriptor this [`Remote`](crate::ucx::Remote) or
    /// [`Grant`](crate::ucx::Grant) came from ([`Link::revoke`](crate::ucx::Link::revoke)):
    /// nothing was sent.
    Revoked,
    /// A [`Grant`](crate::ucx::Grant) used on an endpoint that was not connected
    /// through the link that confirmed it (to another process, or another
    /// context of it, whose key formats may differ).
    OtherPeer,
    /// A put or get outside the remote allocation a descriptor names:
    /// refused before anything was sent.
    OutOfRange {
        /// The offset asked for, in bytes from the allocation's start.
        offset: usize,
        /// The length asked for.
        len: usize,
        /// The allocation's length.
        registered: usize,
    },
    /// Memory that no registered range of this registration holds whole
    /// (outside its Blocks, or straddling two parts registered apart).
    NotRegistered {
        /// The first byte's address.
        address: usize,
        /// The length asked for.
        len: usize,
    },
    /// A local registration made with another [`Context`](crate::ucx::Context)
    /// than the endpoint's.
    OtherContext,
    /// The bootstrap link failed: a socket call, a timeout, or a peer that
    /// does not speak it.
    Bootstrap {
        /// What was being done.
        what: &'static str,
        /// The error (`ErrorKind::TimedOut`, `InvalidData` for a bad frame).
        source: io::Error,
    },
}

impl fmt::Display for UcxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UcxError::Call { call, status, text } => {
                write!(f, "{call} failed: {text} (UCX status {status})")
            }
            UcxError::TimedOut { call, after } => write!(
                f,
                "{call} did not complete within {after:?} (is the owner progressing its \
                 worker?); the worker is not used again"
            ),
            UcxError::Closed { reason } => write!(f, "the UCX endpoint is closed: {reason}"),
            UcxError::BadDescriptor { reason } => write!(f, "not a UCX descriptor: {reason}"),
            UcxError::Refused { reason } => {
                write!(f, "the owner did not confirm the descriptor: {reason}")
            }
            UcxError::Revoked => f.write_str(
                "the owner revoked this descriptor; nothing was sent (flush, drop the \
                 remote, and ask the owner again)",
            ),
            UcxError::OtherPeer => f.write_str(
                "the grant was confirmed over another link than the one this endpoint was \
                 connected through",
            ),
            UcxError::OutOfRange {
                offset,
                len,
                registered,
            } => write!(
                f,
                "{len} bytes at offset {offset} are outside the remote allocation of \
                 {registered} bytes; nothing was sent"
            ),
            UcxError::NotRegistered { address, len } => write!(
                f,
                "{len} bytes at {address:#x} are not inside one range registered with UCX"
            ),
            UcxError::OtherContext => f.write_str(
                "the local memory is registered with another UCX context than the endpoint's",
            ),
            UcxError::Bootstrap { what, source } => {
                write!(f, "bootstrap link: {what}: {source}")
            }
        }
    }
}

impl std::error::Error for UcxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UcxError::Bootstrap { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<UcxError> for Error {
    fn from(error: UcxError) -> Error {
        Error::Ucx(error)
    }
}
