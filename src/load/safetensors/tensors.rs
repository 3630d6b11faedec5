//! [`Tensors`]: a loaded checkpoint: every tensor's bytes in one
//! allocation of a Tape, found by name.

use core::fmt;
use core::marker::PhantomData;
use core::ptr::NonNull;
use std::collections::HashMap;
use std::path::PathBuf;

use super::super::{Dtype, LoadError, Report};
use super::Tensor;
use crate::Tape;

/// One tensor's entry.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    /// From the allocation's start.
    pub(crate) offset: usize,
    pub(crate) len: usize,
    /// Index of its file.
    pub(crate) file: usize,
}

/// A checkpoint loaded into a Tape ([`Checkpoint::load`](super::Checkpoint::load)):
/// every tensor's bytes in one allocation, each at a multiple of the
/// placement's alignment (64 bytes by default), borrowed from the Tape for
/// `'t` (the Tape cannot be cleared while this lives).
pub struct Tensors<'t> {
    base: NonNull<u8>,
    size: usize,
    pub(crate) entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
    files: Vec<PathBuf>,
    report: Report,
    _tape: PhantomData<&'t Tape>,
}

// SAFETY: the allocation is only read through shared views after the load,
// like a `&'t [u8]`, which is Send and Sync.
unsafe impl Send for Tensors<'_> {}
// SAFETY: as above.
unsafe impl Sync for Tensors<'_> {}

impl<'t> Tensors<'t> {
    /// # Safety
    /// `base .. base + size` was taken from a Tape borrowed for `'t`, was
    /// filled by the load, and nothing writes it while this lives; each
    /// entry's bytes lie inside it.
    pub(crate) unsafe fn new(
        base: NonNull<u8>,
        size: usize,
        entries: Vec<Entry>,
        files: Vec<PathBuf>,
        report: Report,
    ) -> Tensors<'t> {
        debug_assert!(
            entries
                .iter()
                .all(|e| e.len == 0 || e.offset + e.len <= size)
        );
        let by_name = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        Tensors {
            base,
            size,
            entries,
            by_name,
            files,
            report,
            _tape: PhantomData,
        }
    }

    /// The tensor named `name`.
    pub fn get(&self, name: &str) -> Option<Tensor<'_>> {
        self.by_name.get(name).map(|&i| self.view(&self.entries[i]))
    }

    /// The tensor named `name`, or [`LoadError::NotFound`].
    pub fn tensor(&self, name: &str) -> Result<Tensor<'_>, LoadError> {
        self.get(name).ok_or_else(|| LoadError::NotFound {
            name: name.to_string(),
        })
    }

    /// Every tensor, file by file, each file's in the order of their
    /// offsets.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Tensor<'_>> + '_ {
        self.entries.iter().map(|e| self.view(e))
    }

    /// How many tensors there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The file a tensor came from.
    pub fn file_of(&self, name: &str) -> Option<&std::path::Path> {
        self.by_name
            .get(name)
            .map(|&i| self.files[self.entries[i].file].as_path())
    }

    /// The allocation's first byte: for a registration's lookups
    /// (a device address of the whole checkpoint).
    pub fn as_ptr(&self) -> *const u8 {
        self.base.as_ptr()
    }

    /// The allocation's size in bytes (tensors, the padding that aligns
    /// them, and the room direct reads needed around them).
    pub fn size(&self) -> usize {
        self.size
    }

    /// What the load did.
    pub fn report(&self) -> &Report {
        &self.report
    }

    fn view<'a>(&'a self, entry: &'a Entry) -> Tensor<'a> {
        // SAFETY: inside the allocation (`new`'s contract; a tensor of no
        // bytes is at its start, which is aligned for any element), filled
        // by the load, and never written while `self` lives.
        let bytes =
            unsafe { core::slice::from_raw_parts(self.base.as_ptr().add(entry.offset), entry.len) };
        Tensor {
            name: &entry.name,
            dtype: entry.dtype,
            shape: &entry.shape,
            bytes,
        }
    }
}

impl fmt::Debug for Tensors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensors")
            .field("tensors", &self.entries.len())
            .field("size", &self.size)
            .field("files", &self.files)
            .field("report", &self.report)
            .finish()
    }
}
