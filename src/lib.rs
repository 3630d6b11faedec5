//! Pinned memory that the CPU and the machine's accelerators address directly,
//! and allocators that put ordinary Rust data in it.
//!
//! A [`Block`] is a reserved range of address space with a committed
//! prefix: page-aligned, at a stable address, pinned (`mlock`) as it is
//! committed, growable in place. On Linux it is private anonymous memory
//! (copied into a forked child), or a sealed memfd when it is to be shared;
//! on Apple platforms an IOSurface. Three allocators carve Blocks up, and
//! commit them as they grow:
//!
//! - [`Tape`]: a lock-free bump allocator; `clear` frees everything at once.
//!   [`TapeLocal`] is one thread's handle on it, bumping without atomics.
//! - [`Grid`]: fixed-size cells with a lock-free free list and a slot per
//!   thread for the cell it gave back.
//! - [`Heap`]: a general-purpose allocator: per-thread size-class slabs and
//!   page runs, memory reused, more Blocks on demand.
//! - [`Layout`]: three Tapes for inference (weights, scratch, history).
//!
//! Tape, Grid and Heap implement `allocator_api2::alloc::Allocator`, so `Vec`,
//! `Box` and `hashbrown::HashMap` live in pinned memory, and `GlobalAlloc` with
//! `const` constructors, so a whole program's heap can.
//!
//! Registrations ([`register`]) make the committed parts of an allocator's
//! Blocks visible to a device (`cuda` with feature `cuda`) or to remote
//! peers (`ucx` with feature `ucx`), following the Blocks as they grow.
//!
//! # Caveats
//!
//! - Pinning is real: on Linux `mlock` counts against `RLIMIT_MEMLOCK` (often
//!   8 MiB for unprivileged users). An explicit open fails with
//!   [`Error::Pin`] past it; the lazy constructors of the global allocators
//!   pin what it allows and go on unpinned ([`Pinning::BestEffort`]), saying
//!   so once on standard error.
//! - A Tape reclaims memory only by `clear` (and the newest allocation by
//!   deallocation); a Grid serves one size.
//! - Memory shared with another process or device is outside Rust's aliasing
//!   model: [`Block::attach`] is `unsafe` for that reason.
//!
//! # Example
//!
//! ```
//! use allocator_api2::vec::Vec;
//! use unimem::{BlockOptions, Pinning, Tape};
//!
//! let tape = Tape::open_with(1 << 20, &BlockOptions::new().pinning(Pinning::BestEffort))?;
//! let mut v = Vec::new_in(&tape);
//! v.extend_from_slice(&[1.0f32, 2.0, 3.0]);
//! assert!(tape.owns(v.as_ptr()));
//! # Ok::<(), unimem::Error>(())
//! ```
#![cfg_attr(feature = "nightly", feature(allocator_api))]
#![warn(missing_docs)]

mod alloc;
mod api2;
mod block;
#[cfg(feature = "cuda")]
pub mod cuda;
mod error;
mod fork;
mod global;
mod grid;
mod heap;
mod lazy;
mod local;
mod lock;
#[cfg(all(feature = "metal", target_vendor = "apple"))]
pub mod metal;
mod misuse;
mod model;
mod once;
pub mod register;
mod stderr;
mod tape;
mod thread;
#[cfg(feature = "ucx")]
pub mod ucx;
#[cfg(feature = "vulkan")]
pub mod vulkan;

/// The `allocator-api2` series whose `Allocator` trait Tape, Grid and Heap
/// implement (0.2, the one hashbrown takes): `unimem::allocator_api2::vec::Vec`
/// always matches, whatever version a plain `cargo add allocator-api2` picks.
pub use allocator_api2;

pub use alloc::Exhaustion;
#[cfg(all(target_vendor = "apple", not(miri)))]
pub use block::IOSurfaceRef;
pub use block::{Block, BlockOptions, Export, Pages, Pinning, Region, page_size};
pub use error::Error;
pub use grid::{Cell, Grid, UninitCell};
pub use heap::{Heap, HeapStats};
pub use local::TapeLocal;
pub use model::{Model, Pass, Talk};
pub use tape::Tape;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
