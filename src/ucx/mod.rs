//! UCX: a remote process puts and gets straight into a Block's
//! collections (feature `ucx`).
//!
//! [`Registered`] maps every committed part of an allocator's Blocks with
//! the system's UCX (`ucp_mem_map`, libucp 1.13 or later), and what they
//! commit later as it is committed, and unmaps each part before its pages
//! go (the registration layer is `register.rs`; this module is the UCX
//! calls). For any allocation, [`Registered::descriptor_of`] issues a
//! [`Descriptor`]: its address, length, packed remote key and a random token,
//! as bytes to send to a peer. Owner and peer talk over a [`Link`]: the
//! owner sends its worker's address ([`Link::send_address`]), the peer
//! connects a [`Worker`] to it ([`Worker::connect`]), reads a descriptor
//! from bytes ([`Descriptor::from_bytes`]), has the owner confirm it
//! ([`Link::verify`], which gives a [`Grant`]), turns the grant into a
//! [`Remote`] ([`Endpoint::remote`]) and puts and gets bytes at offsets
//! inside the allocation, one at a time or many in flight
//! ([`Remote::batch`]); [`Endpoint::flush`] returns once its puts have
//! landed in the owner's memory. The owner's `Vec`, `HashMap` or tensor
//! then holds the bytes: nothing is copied on its side. Before it frees
//! what it shared or drops the registration, the owner revokes it
//! ([`Link::revoke`]).
//!
//! # Trust
//!
//! **UCX trusts its peers.** A context with remote memory access serves
//! software puts and gets on every worker, over every transport: a put
//! message names an address and the owner's worker writes there, with no
//! key check (UCX 1.13.1 `src/ucp/rma/rma_sw.c`, `ucp_put_handler`; the
//! get handler reads the same way), and UCX connects any peer that asks,
//! without authentication. So any process that connects to a worker can
//! read and write all of its process's memory by driving UCX itself,
//! whatever is registered; [`Context`]'s constructors take
//! [`Peers::Trusted`] to say so where the choice is made. Who can connect
//! is the transports' matter: over `tcp`, anyone who reaches the worker's
//! TCP port; over shared memory, processes of the same user on the machine;
//! over InfiniBand or RoCE, the fabric.
//!
//! What unimem guarantees on top, through its safe API:
//!
//! - **No bytes but the peer's reach UCX.** The bytes that UCX parses
//!   without checking them (worker addresses, packed keys: a well-framed
//!   key with a bad part aborts the process inside `ucp_ep_rkey_unpack`
//!   with the shared-memory transports) reach it only when they came from
//!   the process at the other end of the [`Link`], the peer the endpoint
//!   connects to: its address frame ([`Worker::connect`]), or a descriptor
//!   it confirmed as one it issued, byte for byte ([`Link::verify`]). A
//!   descriptor from anywhere else (another channel, a file, a third
//!   process, a corrupted copy) is refused by its owner
//!   ([`UcxError::Refused`]); a grant is unpacked only on an endpoint
//!   connected through the link that confirmed it ([`UcxError::OtherPeer`]).
//!   Raw bytes reach UCX only through `unsafe` calls whose contract says
//!   where they must come from ([`Worker::connect_unchecked`],
//!   [`Endpoint::remote_unchecked`]). That a peer is what it claims to be
//!   is as far as TCP goes: the link is neither encrypted nor
//!   authenticated, as UCX's own traffic is not.
//! - **A peer that uses unimem writes only what it was granted.** The owner
//!   confirms only descriptors it issued, and each carries a random 128-bit
//!   token: a peer cannot name another allocation (another address under a
//!   valid key, a range 8 bytes longer) without that allocation's
//!   descriptor. A [`Remote`] refuses any put or get outside its range
//!   with [`UcxError::OutOfRange`] before any UCX call. (These checks run
//!   in the peer's unimem: UCX itself bounds nothing, as above.)
//! - **The owner does not die of a peer's late put.** A registration knows
//!   which links hold its descriptors ([`Registered::held`]). The owner
//!   revokes them ([`Link::revoke`], [`Link::revoke_in`],
//!   [`Link::revoke_descriptor`]): the peer's remotes refuse every
//!   operation from then on ([`UcxError::Revoked`]), and once what they
//!   started has been flushed the peer lets go, and the revocation returns.
//!   A peer also lets go of what it drops, flushed. A registration dropped
//!   while a descriptor of it is held (not revoked, or revoked by a peer
//!   that did not answer in time: every wait has a timeout, so a peer
//!   cannot hold the owner up) is not unmapped: it keeps its memory,
//!   mapped and registered, for the rest of the process, and says so on
//!   standard error, so that a put that comes later lands in pages that
//!   are still there. ([`Registered::into_inner`] gives the allocator back
//!   only when nothing is held.) Without it, the software path writes into
//!   whatever is mapped at the address then, or kills the owner with
//!   SIGSEGV where nothing is.
//!
//! What each transport does with a put into memory UCX did not allocate
//! (a Block's), and what a peer can then reach (UCX 1.13.1, from its
//! sources and measured on loopback as noted):
//!
//! | `UCX_TLS` | who writes the bytes | key checked | a peer through unimem | a peer driving UCX itself |
//! |---|---|---|---|---|
//! | `tcp` | the owner's worker, in software, when progressed (`ucp_put_handler`; tcp's own put, `uct_tcp_ep_handle_put_req`, likewise) | no | what it was granted | any address in the owner's process; measured: a forged address lands, an unmapped one kills the owner |
//! | `posix`, `sysv` (with `cma`) | the owner's worker, as over tcp, through a shared-memory queue: these memory domains map only memory UCX allocated | no | what it was granted | as over tcp; measured the same |
//! | `cma` | the peer itself, `process_vm_writev` into the owner (UCX 1.13 moves large with token messages this way; puts took the queue above here) | no: the key is empty; the kernel checks only that the peer may trace the owner | what it was granted | any address the kernel lets it write; an unmapped one fails in the peer (`EFAULT`) |
//! | `ud` | the owner's worker, in software (`uct_ud` copies to the address in the message) | no | what it was granted | as over tcp |
//! | `rc`, `dc` (InfiniBand, RoCE) | the NIC, against the registration | yes: the key and the registered part it names | what it was granted | with a key it holds, the whole registered part (a committed part of a Block, other allocations in it included); through the software messages every worker also serves, any address |
//!
//! No RDMA transport was available here: the `rc`, `dc` and `ud` rows are
//! read from UCX's sources, not measured.
//!
//! # The contract
//!
//! - **The owner progresses its worker.** With no RDMA hardware (the
//!   machines this was tested on), UCX carries out puts and gets into
//!   memory it did not allocate in software, over its active messages: the
//!   owner's worker writes and reads the bytes while the owner calls
//!   [`Worker::progress`], [`Worker::serve_until`], [`Worker::serve_for`],
//!   [`Link::recv_serving`] or [`Link::revoke`]. An owner that stops
//!   progressing stalls its peers until they time out. The bytes land only
//!   inside those calls.
//! - **The owner answers on its link.** Confirmations and revocations go
//!   over the [`Link`]; the owner answers a peer's [`Link::verify`] while it
//!   waits on the link (`recv`, `recv_serving`, `revoke`), and a peer
//!   hears a revocation while it waits on its own.
//! - **Every wait has a timeout** ([`DEFAULT_TIMEOUT`],
//!   [`Endpoint::set_timeout`], and each link call's). An operation that
//!   times out is freed (UCX releases it when it ends) and poisons its
//!   worker: UCX may still hold its buffer and would touch it if
//!   progressed, so the worker is never progressed again, every later call
//!   fails with [`UcxError::Closed`], and dropping it leaks the UCX
//!   objects (and what its remotes started stays unsettled, so their
//!   owners keep their memory). A broken peer costs a worker, never memory
//!   safety or a hung test.
//! - **Endpoints close on drop**: they first flush what their remotes
//!   started (two seconds at most), then close, forced where the
//!   transports detect a failed peer ([`ErrorMode::Peer`]: tcp, RDMA), with
//!   a flush that waits two seconds at most where they do not
//!   ([`ErrorMode::None`]: UCX 1.13's shared-memory transports).
//!   [`Endpoint::flush`] before dropping.
//! - **Remote writes are writes by another process.** As with a shared
//!   Block, the bytes of a shared allocation change under the owner while
//!   it progresses its worker; the owner reads them once the peer says it
//!   has flushed (over the [`Link`], or any other channel). A descriptor
//!   reaches its bytes until it is revoked, whatever the allocation
//!   becomes: revoke it ([`Link::revoke_descriptor`]) before freeing or
//!   clearing the allocation, and [`Registered::withdraw`] it so that no
//!   peer has it confirmed again.
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
//! quiets its warnings, `fatal` its errors too (a peer that exits makes
//! the other side log the connection it lost).
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
//! use unimem::ucx::{Context, Descriptor, Link, Peers, Registered};
//!
//! let wait = Duration::from_secs(30);
//! // The owner: a Vec in a registered Tape, shared with one peer.
//! let context = Context::new(Peers::Trusted)?;
//! let worker = context.worker()?;
//! let tape = Registered::new(&context, Tape::open(16 << 20)?)?;
//! let mut values: Vec<f32, _> = Vec::with_capacity_in(1 << 20, &*tape);
//! values.resize(1 << 20, 0.0);
//! let listener = TcpListener::bind("127.0.0.1:7000").expect("bind");
//! let mut link = Link::accept(&listener, wait)?;
//! link.send_address(&worker)?;
//! link.send(&tape.descriptor_of(&values)?.to_bytes())?;
//! // Confirms the descriptor when asked, and progresses the worker, until
//! // the peer says it is done: `values` then holds what it put.
//! link.recv_serving(&worker, wait)?;
//! link.revoke(&worker, wait)?; // before `values` and `tape` go
//!
//! // The peer, in another process:
//! let context = Context::new(Peers::Trusted)?;
//! let worker = context.worker()?;
//! let mut link = Link::connect("127.0.0.1:7000", wait)?;
//! let endpoint = worker.connect(&mut link, wait)?;
//! let descriptor = Descriptor::from_bytes(&link.recv(wait)?)?; // unverified
//! let grant = link.verify(&descriptor, wait)?; // the owner issued exactly this
//! let remote = endpoint.remote(&grant)?;
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

pub use crate::error::UcxError;
pub use crate::register::{Regions, Span};
pub use batch::{Batch, WINDOW};
pub use bootstrap::{Link, MAX_FRAME};
pub use context::{Context, Peers};
pub use descriptor::{Descriptor, MAX_KEY};
pub use endpoint::{DEFAULT_TIMEOUT, Endpoint, ErrorMode, MAX_ADDRESS};
pub use grant::Grant;
pub use registered::{DEFAULT_CHUNK, MemHandle, Registered, Ucx};
pub use remote::Remote;
pub use worker::Worker;
