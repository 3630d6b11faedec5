//! Pinned memory that the CPU and the machine's accelerators address directly,
//! and allocators that put ordinary Rust data — `Vec`, `Box`, `HashMap`, a
//! whole program's heap — inside it, with no copies.
//!
//! ```sh
//! cargo add unimem-pinned   # the library is `unimem`
//! ```
//!
//! A [`Block`] is a reserved range of address space with a committed
//! prefix: page-aligned, at a stable address, pinned (`mlock`) as it is
//! committed, growable in place. Allocators carve Blocks up and commit them
//! as they grow; registrations make them visible to a GPU or a remote peer.
//!
//! # Which allocator for which job
//!
//! | job | use | frees |
//! |---|---|---|
//! | a whole program's heap, or a service's collections | [`Heap`] | each allocation, reused; memory given back |
//! | tensors of one lifetime: a model's weights, a request's scratch | [`Tape`] (or [`Model`]) | all at once (`clear`), or the newest |
//! | an inference engine: weights, KV cache, activations | [`Model`], with [`Talk`] and [`Pass`] | per conversation, per pass |
//! | fixed-size buffers in a pool (I/O, frames) | [`Grid`] | each cell |
//! | raw pinned bytes, shared with another process | [`Block`] | the whole Block |
//!
//! Tape, Grid and Heap implement [`allocator_api2`]'s `Allocator` (this
//! crate re-exports the series it implements: `unimem::allocator_api2::vec::Vec`
//! always matches), so `Vec::new_in(&tape)` and `hashbrown::HashMap::new_in(&heap)`
//! work, and `GlobalAlloc` with `const` constructors, so a whole program's
//! heap can live in pinned memory:
//!
//! ```no_run
//! use unimem::Heap;
//!
//! // Reserved on first use, committed as the program grows (a first arena
//! // of 256 MiB of address space, then more), pinned where the limit allows.
//! #[global_allocator]
//! static HEAP: Heap = Heap::lazy(256 << 20);
//!
//! fn main() {
//!     let words: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
//!     assert!(HEAP.owns(words.as_ptr()));
//! }
//! ```
//!
//! With a collection:
//!
//! ```
//! use unimem::allocator_api2::vec::Vec;
//! use unimem::Tape;
//!
//! let tape = Tape::open(1 << 20)?;
//! let mut v = Vec::new_in(&tape);
//! v.extend_from_slice(&[1.0f32, 2.0, 3.0]);
//! assert!(tape.owns(v.as_ptr()));
//! # Ok::<(), unimem::Error>(())
//! ```
//!
//! Registrations ([`register`]) make the committed parts of an allocator's
//! Blocks visible to a device (`cuda` with feature `cuda`, `vulkan` with
//! feature `vulkan`, `metal` on Apple platforms, and `wgpu` buffers over
//! allocations with feature `wgpu`) or to remote peers (`ucx` with feature
//! `ucx`), following the Blocks as they grow. With feature `load` (Linux),
//! `unimem::load` reads files straight into Blocks and allocations (`O_DIRECT`,
//! io_uring), and safetensors checkpoints into a Tape with typed views.
//!
//! # Caveats
//!
//! - Pinning is real, and limited: on Linux `mlock` counts against
//!   `RLIMIT_MEMLOCK` (often 8 MiB for an ordinary user). By default what
//!   the limit allows is locked and the rest runs unpinned, told once on
//!   standard error ([`Pinning::BestEffort`]); [`Pinning::Required`] makes
//!   it an [`Error::Pin`] instead.
//! - A Tape reclaims memory only by `clear` (and the newest allocation by
//!   deallocation); a Grid serves one size.
//! - Memory shared with another process or device is outside Rust's aliasing
//!   model: [`Block::attach`] is `unsafe` for that reason.
//!
//! # Words
//!
//! Each word means one thing, in the docs and in the code:
//!
//! - **Block**: a reserved range of address space with a committed prefix,
//!   owned ([`Block`]); **Region**: what a Block is without its bytes
//!   ([`Region`]), what allocators hand out.
//! - **reserve**: take address space, inaccessible; **commit**: make a
//!   prefix usable (mapped, and pinned and populated as the options say);
//!   **decommit**: give the pages past a point back, inaccessible again;
//!   **discard**: give the pages of a committed range back while it stays
//!   committed (they read as zero when touched again); **granule**: the
//!   unit of commits, the page or huge page size.
//! - **pin**: lock pages in memory (`mlock`), as the [`Pinning`] policy
//!   says.
//! - **Heap**: **arena**, a data Block and its metadata Block; **unit**, 4
//!   KiB of an arena; **run**, consecutive units handed out or free
//!   (each with its **boundary tags**); **group**, 64 KiB of an arena, as
//!   a **slab** of one size **class** or part of a run.
//! - **tag**: a thread's small number, handed out and reused as threads
//!   come and go; **slot**: a tag's place in a per-thread table (a Heap's
//!   thread caches, a Grid's parked cells).
//! - **stamp**: a counter packed beside an index in one atomic word, moved
//!   on at every change, so that a stale compare-exchange fails (ABA).
//! - **registration**: an allocator's Blocks made visible to a device or a
//!   peer ([`register`]); **span**: one registered range and what the
//!   device gave for it; **chunk**: the most one registration call covers;
//!   **watcher**: a registration told of each commit of a Block;
//!   **follower**: a registration told of each arena a Heap opens.
//! - **token**: the random number that names a UCX descriptor to its owner.
#![cfg_attr(feature = "nightly", feature(allocator_api))]
// docs.rs (`--cfg docsrs`, nightly) marks each feature-gated item with its
// feature.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod alloc;
mod api2;
mod block;
#[cfg(feature = "cuda")]
#[cfg_attr(docsrs, doc(cfg(feature = "cuda")))]
pub mod cuda;
mod error;
mod fork;
mod global;
mod grid;
mod heap;
mod lazy;
#[cfg(all(feature = "load", unimem_linux))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "load", target_os = "linux"))))]
pub mod load;
mod local;
mod lock;
#[cfg(all(feature = "metal", target_vendor = "apple"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "metal", target_vendor = "apple"))))]
pub mod metal;
mod misuse;
mod model;
mod once;
pub mod register;
mod stderr;
mod sys;
mod tape;
mod thread;
#[cfg(feature = "ucx")]
#[cfg_attr(docsrs, doc(cfg(feature = "ucx")))]
pub mod ucx;
#[cfg(feature = "vulkan")]
#[cfg_attr(docsrs, doc(cfg(feature = "vulkan")))]
pub mod vulkan;
#[cfg(feature = "wgpu")]
#[cfg_attr(docsrs, doc(cfg(feature = "wgpu")))]
pub mod wgpu;

/// The `allocator-api2` series whose `Allocator` trait Tape, Grid and Heap
/// implement (0.2, the one hashbrown takes): `unimem::allocator_api2::vec::Vec`
/// always matches, whatever version a plain `cargo add allocator-api2` picks.
pub use allocator_api2;

pub use alloc::Exhaustion;
#[cfg(unimem_apple)]
pub use block::IOSurfaceRef;
pub use block::{Block, BlockOptions, Export, Node, Pages, Pinning, Placement, Region, page_size};
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

/// What the unit tests share: the options their Blocks open with.
#[cfg(test)]
pub(crate) mod testing {
    use crate::BlockOptions;

    /// The defaults (pinned where the locked-memory limit allows), quiet,
    /// since a refusal is expected under an ordinary user's limit and is not
    /// what these tests check. (`tests/support` is the same for the test
    /// binaries.)
    pub(crate) fn options() -> BlockOptions<'static> {
        BlockOptions::new().quiet(true)
    }
}

#[cfg(test)]
mod tests {
    /// The README's install line names this package (not the older macOS
    /// crate that has the library's name on crates.io).
    #[test]
    fn the_readme_installs_this_package() {
        let line = concat!("cargo add ", env!("CARGO_PKG_NAME"));
        assert!(
            include_str!("../README.md").lines().any(|l| l == line),
            "README.md lacks the line `{line}`"
        );
    }
}
