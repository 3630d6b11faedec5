//! Files straight into pinned memory (feature `load`, Linux): byte ranges
//! of files read into Blocks and allocations with no copy on the way, and
//! safetensors checkpoints placed in a Tape in one pass.
//!
//! # The contract
//!
//! A [`Reader`] fills memory the caller owns (an allocation of a Tape, Heap
//! or Grid, a Block's bytes: any `&mut [u8]`, through [`Request`]) or takes
//! it from a Tape itself ([`Reader::take`]), from byte ranges of files
//! ([`Source`]):
//!
//! - **Direct where it can.** A file whose file system offers direct I/O
//!   is read with `O_DIRECT`, at the alignment `statx(STATX_DIOALIGN)`
//!   gives (else the logical block size of its device), straight into the
//!   destination: DMA from the storage into the final pages, no page
//!   cache, no copy. Where the destination's address agrees with the file
//!   offset modulo that alignment, only an unaligned head and tail (less
//!   than one block each) go through a small bounce buffer; memory the
//!   reader lays out itself ([`Reader::take`], [`Checkpoint::load`]) is
//!   placed so that they need none either. Where it disagrees, every byte
//!   is bounced. Every byte copied by the CPU is counted
//!   ([`Report::copied`]).
//! - **Cold direct, warm buffered.** With [`Direct::Auto`], a file whose
//!   sampled pages are in the page cache (`mincore`) is read buffered, by
//!   many requests at once, at the speed of memory; a cold one directly,
//!   which leaves the page cache as it was (its header too is read
//!   directly). Files on tmpfs, which offers no direct I/O, are read
//!   buffered. [`ReadOptions`] override: direct on, off or auto, the chunk
//!   size, the depth, the threads.
//! - **Many requests in flight.** io_uring (probed at run time: container
//!   seccomp profiles and `io_uring_disabled` refuse it on many machines)
//!   keeps `depth` reads in flight from the calling thread (buffered ones
//!   copied by the kernel's workers in parallel); where it is refused, and
//!   for reads whose bytes mostly go through bounce buffers, a pool of
//!   threads does `pread`s on every core ([`Engine`]; the variable
//!   `UNIMEM_LOAD_ENGINE=uring|threads` forces one under `Engine::Auto`).
//! - **Progress** ([`Progress`]) reaches a callback on the calling thread,
//!   as bytes land.
//! - **Untrusted files.** A read that comes back short (the file shrank
//!   since it was opened) is [`LoadError::Shrunk`]; ranges past the end are
//!   refused before a read. No read outlives the call that started it, on
//!   an error or a panic in the callback too.
//! - **No lock of an allocator is held while reading**: memory is taken
//!   first, then filled.
//!
//! The [`safetensors`] module reads checkpoints with it:
//! [`Checkpoint`], [`Tensors`], [`Tensor`].
//!
//! ```
//! use unimem::load::{Reader, Source};
//! use unimem::{BlockOptions, Pinning, Tape};
//!
//! # let dir = std::env::temp_dir().join(format!("unimem-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let path = dir.join("bytes.bin");
//! std::fs::write(&path, (0..100_000u32).map(|i| i as u8).collect::<Vec<_>>())?;
//! let tape = Tape::open_with(1 << 20, &BlockOptions::new().pinning(Pinning::BestEffort))?;
//! let source = Source::open(&path)?;
//! let (bytes, report) = Reader::new().take(&tape, &source, 1000, 50_000)?;
//! assert_eq!(bytes[0], (1000 % 256) as u8);
//! assert!(tape.owns(bytes.as_ptr()));
//! assert_eq!(report.bytes, 50_000);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Little-endian targets only: safetensors stores numbers little-endian,
//! and typed views read them in place.

#[cfg(target_endian = "big")]
compile_error!("feature `load` reads little-endian tensors in place: little-endian targets only");

mod alignment;
mod bounce;
mod failure;
mod options;
mod plan;
mod progress;
mod reader;
mod report;
pub mod safetensors;
mod source;
mod threads;
mod uring;

pub use self::safetensors::{Checkpoint, Element, Tensor, Tensors};
pub use crate::error::{LoadError, ViewError};
pub use ::safetensors::Dtype;
pub use alignment::DirectAlign;
pub use half::{bf16, f16};
pub use options::{Direct, Engine, ReadOptions};
pub use progress::Progress;
pub use reader::{Reader, Request};
pub use report::Report;
pub use source::Source;
