//! safetensors checkpoints read in one pass into a Tape: the header with
//! `pread`, every tensor placed aligned in one allocation, every file read
//! once by the [`Reader`](super::Reader), typed views out.
//!
//! A checkpoint is a single `.safetensors` file or an index
//! (`*.safetensors.index.json`) and its shards. [`Checkpoint::open`] reads
//! and checks each header ([`Header`]) and the index ([`Index`]) and keeps
//! the files open; [`Checkpoint::load`] places the tensors
//! ([`Placement`]), takes one allocation of that size from the Tape, reads
//! every file into it and returns [`Tensors`]: views by name with dtype,
//! shape, bytes, and typed slices ([`Tensor::as_slice`] and its
//! shorthands) that check dtype, length and alignment.
//!
//! # Guarantees
//!
//! - Every tensor's first byte is at a multiple of the checkpoint's
//!   alignment ([`DEFAULT_ALIGN`], 64 bytes, unless set), so typed slices
//!   of every dtype and device buffers over a tensor work; a tensor of no
//!   bytes is at the allocation's start.
//! - Files are untrusted. A header is at most [`MAX_HEADER`] bytes; every
//!   malformed header, index or file is a typed [`LoadError`](super::LoadError)
//!   naming the file and the tensor, before any tensor byte is read.
//! - A failed load leaves nothing behind: no views are returned and the
//!   allocation is given back.
//! - With a registered Tape (CUDA, Vulkan, UCX), the tensors are device- or
//!   peer-visible where they land: the reader writes the registered pages
//!   themselves.

mod checkpoint;
mod element;
mod header;
mod index;
mod placement;
mod tensor;
mod tensors;

pub use checkpoint::{Checkpoint, DEFAULT_ALIGN};
pub use element::Element;
pub use header::{Header, MAX_HEADER};
pub use index::Index;
pub use placement::{Placement, Run};
pub use safetensors::tensor::TensorInfo;
pub use tensor::Tensor;
pub use tensors::Tensors;
