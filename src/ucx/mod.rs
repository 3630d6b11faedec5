//! UCX: a remote process puts and gets straight into a Block's
//! collections (feature `ucx`).
//!
//! [`Registered`] maps every committed part of an allocator's Blocks with
//! the system's UCX (`ucp_mem_map`, libucp 1.13 or later), and what they
//! commit later as it is committed, and unmaps each part before its pages
//! go (the registration layer is `register.rs`; this module is the UCX
//! calls). For any allocation, [`Registered::descriptor_of`] gives a
//! [`Descriptor`]: its address, length and packed remote key, as bytes to
//! send to a peer. The peer connects a [`Worker`] to the owner's worker
//! ([`Worker::connect`], with the address exchanged over a [`Link`]), turns
//! the descriptor into a [`Remote`] ([`Endpoint::remote`]) and puts and
//! gets bytes at offsets inside the allocation, one at a time or many in
//! flight ([`Remote::batch`]); [`Endpoint::flush`] returns once its puts
//! have landed in the owner's memory. The owner's `Vec`, `HashMap` or
//! tensor then holds the bytes: nothing is copied on its side.
//!
//! # The contract
//!
//! - **The owner progresses its worker.** With no RDMA hardware (the
//!   machines this was tested on), UCX carries out puts and gets into
//!   memory it did not allocate in software, over its active messages: the
//!   owner's worker writes and reads the bytes while the owner calls
//!   [`Worker::progress`], [`Worker::serve_until`], [`Worker::serve_for`]
//!   or [`Link::recv_serving`]. An owner that stops progressing stalls its
//!   peers until they time out. The bytes land only inside those calls.
//! - **Every range is checked before anything is sent.** UCX does not check
//!   remote addresses against a key (the owner's worker would write wherever
//!   the address points, inside the registration or not, and crash or
//!   corrupt the owner outside it). A [`Remote`] refuses any put or get
//!   outside its descriptor's range with [`UcxError::OutOfRange`], before
//!   any UCX call. The owner hands out descriptors of exactly the
//!   allocations it shares; a peer using them through unimem can reach
//!   nothing else. The check runs in the peer: a process that drives UCX
//!   directly against the owner's worker is bounded only by UCX, which does
//!   not bound it, so connect only trusted peers.
//! - **Descriptors are untrusted input.** [`Descriptor::from_bytes`] refuses
//!   anything malformed (short, long, another format or version, an empty,
//!   wrapping or absurd range) and checks the framing of the packed key,
//!   which UCX parses without a length (`ucp_ep_rkey_unpack`), so its parse
//!   stays inside the bytes given; the key goes to UCX in a zero-padded copy
//!   so that a transport reading its own part of the key stays inside it
//!   too. What each part holds is the transports' to trust. Worker addresses
//!   go to UCX as they are (bounded in length): UCX parses them without a
//!   length too, and unimem does not parse their format.
//! - **Every wait has a timeout** ([`DEFAULT_TIMEOUT`],
//!   [`Endpoint::set_timeout`]). An operation that times out is freed (UCX
//!   releases it when it ends) and poisons its worker: UCX may still hold
//!   its buffer and would touch it if progressed, so the worker is never
//!   progressed again, every later call fails with [`UcxError::Closed`],
//!   and dropping it leaks the UCX objects. A broken peer costs a worker,
//!   never memory safety or a hung test.
//! - **Endpoints close on drop**: forced where the transports detect a
//!   failed peer ([`ErrorMode::Peer`]: tcp, RDMA), with a flush that waits
//!   two seconds at most where they do not ([`ErrorMode::None`]: UCX 1.13's
//!   shared-memory transports). [`Endpoint::flush`] before dropping.
//! - **Remote writes are writes by another process.** As with a shared
//!   Block, the bytes of a shared allocation change under the owner while
//!   it progresses its worker; the owner reads them once the peer says it
//!   has flushed (over the [`Link`], or any other channel). A descriptor
//!   reaches its bytes for as long as the registration lives, whatever the
//!   allocation becomes: peers stop using it before the owner frees or
//!   clears the allocation, and before it drops the registration (after
//!   that, the software path would write into whatever is mapped there).
//!   A descriptor is for an endpoint to the process that made it: the
//!   range check knows the allocation's bounds, not whose they are.
//! - **Allocations inside one part.** Each part of a Block committed after
//!   registration is mapped on its own, with its own key; an allocation
//!   straddling two has no descriptor ([`UcxError::NotRegistered`]). Open
//!   allocators with what they need committed, or commit ahead.
//!
//! Transports are UCX's: chosen by `UCX_TLS` (`tcp` with
//! `UCX_NET_DEVICES=lo` on loopback, `posix,sysv,cma` for shared memory on
//! one machine, `rc`, `ud` or `dc` with InfiniBand or RoCE). UCX writes its
//! log to standard output unless `UCX_LOG_FILE` says otherwise (the tests,
//! example and bench set `UCX_LOG_FILE=stderr`); `UCX_LOG_LEVEL=error`
//! quiets its warnings.
//!
//! The feature links the system's libucp (found with `pkg-config ucx`): the
//! declarations are written by hand and checked against the installed
//! headers on every build (`sys.rs`).
//!
//! ```no_run
//! use std::net::TcpListener;
//! use std::time::Duration;
//! use allocator_api2::vec::Vec;
//! use unimem::Tape;
//! use unimem::ucx::{Context, Descriptor, Link, Registered};
//!
//! let wait = Duration::from_secs(30);
//! // The owner: a Vec in a registered Tape, shared with one peer.
//! let context = Context::new()?;
//! let worker = context.worker()?;
//! let tape = Registered::new(&context, Tape::open(16 << 20)?)?;
//! let mut values: Vec<f32, _> = Vec::with_capacity_in(1 << 20, &*tape);
//! values.resize(1 << 20, 0.0);
//! let listener = TcpListener::bind("127.0.0.1:7000").expect("bind");
//! let mut link = Link::accept(&listener, wait)?;
//! link.send(&worker.address()?)?;
//! link.send(&tape.descriptor_of(&values)?.to_bytes())?;
//! link.recv_serving(&worker, wait)?; // the peer's "done", progressing meanwhile
//! // `values` now holds what the peer put.
//!
//! // The peer, in another process:
//! let context = Context::new()?;
//! let worker = context.worker()?;
//! let mut link = Link::connect("127.0.0.1:7000", wait)?;
//! let endpoint = worker.connect(&link.recv(wait)?)?;
//! let remote = endpoint.remote(&Descriptor::from_bytes(&link.recv(wait)?)?)?;
//! remote.put(0, &1.5f32.to_ne_bytes())?;
//! endpoint.flush()?; // landed in the owner's Vec
//! link.send(b"done")?;
//! # Ok::<(), unimem::Error>(())
//! ```

mod batch;
mod bootstrap;
mod context;
mod descriptor;
mod endpoint;
mod error;
mod grant;
mod registered;
mod remote;
mod sys;
#[cfg(test)]
mod tests;
mod worker;

pub use crate::register::{Range, Regions};
pub use batch::{Batch, WINDOW};
pub use bootstrap::{Link, MAX_FRAME};
pub use context::{Context, Peers};
pub use descriptor::{Descriptor, MAX_KEY};
pub use endpoint::{DEFAULT_TIMEOUT, Endpoint, ErrorMode, MAX_ADDRESS};
pub use error::UcxError;
pub use grant::Grant;
pub use registered::{DEFAULT_CHUNK, MemHandle, Registered, Ucx};
pub use remote::Remote;
pub use worker::Worker;
