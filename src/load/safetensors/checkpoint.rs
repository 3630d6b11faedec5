//! [`Checkpoint`]: a safetensors file, or a sharded checkpoint (an index
//! and its shards), opened and checked, ready to be loaded into a Tape in
//! one pass.

use core::ptr::NonNull;
use std::path::Path;

use super::super::plan::Span;
use super::super::progress::Progress;
use super::super::reader::give_back;
use super::super::{LoadError, Reader, Source};
use super::tensors::Entry;
use super::{Header, Index, Placement, Tensors};
use crate::{Error, Tape};

/// The alignment tensors land at unless [`Checkpoint::set_align`] says
/// otherwise: 64 bytes, enough for any vector load on a CPU and for the
/// buffer offsets devices ask for (Vulkan's `minStorageBufferOffsetAlignment`
/// is at most 256: ask for that where it matters).
pub const DEFAULT_ALIGN: usize = 64;

/// A safetensors checkpoint, opened: every file's header read (with
/// `pread`, not the tensors) and checked, the files kept open so that what
/// was checked is what is read.
///
/// ```no_run
/// use unimem::Model;
/// use unimem::load::{Checkpoint, Reader};
///
/// let checkpoint = Checkpoint::open("model.safetensors.index.json")?;
/// let model = Model::open(checkpoint.needed()?, 1 << 20, 1 << 20)?;
/// let tensors = checkpoint.load(&Reader::new(), model.weights())?;
/// let embed = tensors.tensor("model.embed_tokens.weight")?;
/// println!("{} {:?} {:?}", embed.name(), embed.dtype(), embed.shape());
/// let values = embed.as_bf16()?;
/// # let _ = values;
/// # Ok::<(), unimem::Error>(())
/// ```
#[derive(Debug)]
pub struct Checkpoint {
    files: Vec<(Source, Header)>,
    index: Option<Index>,
    align: usize,
}

impl Checkpoint {
    /// Opens a checkpoint: a `.safetensors` file, or an index
    /// (`*.safetensors.index.json`, any path ending in `.json`) whose shards
    /// sit beside it.
    ///
    /// Errors: a file that cannot be opened ([`LoadError::Io`]), a shard
    /// that cannot ([`LoadError::MissingShard`]), a malformed header or
    /// index (the variants of [`LoadError`]), a tensor the index and the
    /// shards disagree on ([`LoadError::IndexMismatch`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint, Error> {
        let path = path.as_ref();
        if path.extension().is_some_and(|e| e == "json") {
            return Checkpoint::open_index(path);
        }
        let source = Source::open(path)?;
        let header = Header::read(&source)?;
        Ok(Checkpoint {
            files: vec![(source, header)],
            index: None,
            align: DEFAULT_ALIGN,
        })
    }

    fn open_index(path: &Path) -> Result<Checkpoint, Error> {
        let index = Index::read(path)?;
        let mut files = Vec::with_capacity(index.shards().len());
        for shard in index.shards() {
            let source = match Source::open(shard) {
                Ok(source) => source,
                Err(Error::Load(LoadError::Io { source, .. })) => {
                    return Err(LoadError::MissingShard {
                        index: path.to_path_buf(),
                        shard: shard.clone(),
                        source,
                    }
                    .into());
                }
                Err(error) => return Err(error),
            };
            let header = Header::read(&source)?;
            files.push((source, header));
        }
        // The index and the shards agree: each tensor the index places in
        // a shard is in that shard's header, and each shard holds only
        // tensors the index places there.
        let mismatch = |name: &str, shard: usize, reason| -> Error {
            LoadError::IndexMismatch {
                index: path.to_path_buf(),
                name: name.to_string(),
                shard: index.shards()[shard].clone(),
                reason,
            }
            .into()
        };
        let mut placed: std::collections::HashMap<&str, usize> = index
            .tensors()
            .iter()
            .map(|(name, shard)| (name.as_str(), *shard))
            .collect();
        for (shard, (_, header)) in files.iter().enumerate() {
            for (name, _) in header.tensors() {
                match placed.get(name.as_str()) {
                    Some(&at) if at == shard => {
                        placed.remove(name.as_str());
                    }
                    _ => {
                        return Err(mismatch(
                            name,
                            shard,
                            "the shard holds it and the index does not place it there",
                        ));
                    }
                }
            }
        }
        if let Some((name, &shard)) = placed.iter().next() {
            return Err(mismatch(
                name,
                shard,
                "the index places it in this shard, whose header does not have it",
            ));
        }
        Ok(Checkpoint {
            files,
            index: Some(index),
            align: DEFAULT_ALIGN,
        })
    }

    /// Sets the alignment tensors land at: a power of two, at most 1 GiB
    /// ([`Error::InvalidArgument`] otherwise). [`DEFAULT_ALIGN`] (64) unless
    /// set. Lower, down to the dtypes' sizes, makes a difference only where
    /// the storage wants direct reads 512-byte-aligned in memory and the
    /// file's tensors are not at multiples of 64: then tensors land as the
    /// file lays them out, and are read with no copy.
    pub fn set_align(&mut self, align: usize) -> Result<(), Error> {
        if !align.is_power_of_two() || align > 1 << 30 {
            return Err(Error::InvalidArgument {
                reason: "a tensor alignment must be a power of two of at most 1 GiB",
            });
        }
        self.align = align;
        Ok(())
    }

    /// The alignment tensors land at.
    pub fn align(&self) -> usize {
        self.align
    }

    /// Every file and its header (one for a single file; the shards, in
    /// the index's order).
    pub fn files(&self) -> impl ExactSizeIterator<Item = (&Source, &Header)> + '_ {
        self.files.iter().map(|(s, h)| (s, h))
    }

    /// The index of a sharded checkpoint.
    pub fn index(&self) -> Option<&Index> {
        self.index.as_ref()
    }

    /// How many tensors there are.
    pub fn len(&self) -> usize {
        self.files.iter().map(|(_, h)| h.tensors().len()).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of tensors, in all files.
    pub fn data_len(&self) -> u64 {
        self.files.iter().map(|(_, h)| h.data_len()).sum()
    }

    /// Where each tensor will land, at the alignment set.
    pub fn placement(&self) -> Result<Placement, Error> {
        let headers: Vec<&Header> = self.files.iter().map(|(_, h)| h).collect();
        let aligns: Vec<_> = self
            .files
            .iter()
            .map(|(s, _)| s.direct_alignment())
            .collect();
        Placement::plan(&headers, &aligns, self.align)
    }

    /// Bytes a Tape needs free to load this checkpoint (the placement's
    /// size and the most its alignment can cost).
    pub fn needed(&self) -> Result<usize, Error> {
        let placement = self.placement()?;
        placement
            .size()
            .checked_add(placement.base_align() - 1)
            .ok_or(Error::Overflow {
                requested: placement.size(),
            })
    }

    /// Loads every tensor into one allocation of `tape`, reading each file
    /// once with `reader` (directly where it can, see the [module
    /// documentation](super::super)).
    ///
    /// Errors: [`LoadError::TapeTooSmall`] (nothing taken); a read that
    /// fails or comes back short ([`LoadError::Shrunk`], the file shrank
    /// since it was opened): the allocation is given back (the Tape is
    /// rewound if no other thread took from it meanwhile) and nothing is
    /// returned, so nothing half-loaded is visible.
    pub fn load<'t>(&self, reader: &Reader, tape: &'t Tape) -> Result<Tensors<'t>, Error> {
        self.load_with(reader, tape, |_| {})
    }

    /// [`load`](Checkpoint::load), calling `progress` on this thread as
    /// bytes land.
    pub fn load_with<'t>(
        &self,
        reader: &Reader,
        tape: &'t Tape,
        mut progress: impl FnMut(Progress),
    ) -> Result<Tensors<'t>, Error> {
        let placement = self.placement()?;
        let (size, align) = (placement.size(), placement.base_align());
        let Some(base) = tape.take(size, align).and_then(NonNull::new) else {
            let pad = tape.try_block().map_or(0, |block| {
                (block.as_ptr().addr() + tape.used()).wrapping_neg() & (align - 1)
            });
            return Err(LoadError::TapeTooSmall {
                needed: size.saturating_add(pad),
                free: tape.free(),
            }
            .into());
        };
        let spans: Vec<Span> = placement
            .runs()
            .iter()
            .map(|run| Span {
                source: run.file,
                offset: run.offset,
                len: run.len,
                dst: base.as_ptr().wrapping_add(run.at),
                before: run.before,
                after: run.after,
            })
            .collect();
        let sources: Vec<&Source> = self.files.iter().map(|(s, _)| s).collect();
        // SAFETY: `base .. base + size` was just taken from the Tape: ours,
        // writable, touched by no one else. The placement keeps each run,
        // with its room before and after, inside it and apart from every
        // other run.
        let result = unsafe { reader.read_spans(&sources, &spans, &mut progress) };
        let report = match result {
            Ok(report) => report,
            Err(error) => {
                // SAFETY: taken just now with this size and alignment, and
                // no view of it was made.
                unsafe { give_back(tape, base.as_ptr(), size, align) };
                return Err(error);
            }
        };
        let mut entries = Vec::with_capacity(self.len());
        for (file, (_, header)) in self.files.iter().enumerate() {
            for (i, (name, info)) in header.tensors().iter().enumerate() {
                entries.push(Entry {
                    name: name.clone(),
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    offset: placement.offset(file, i),
                    len: info.data_offsets.1 - info.data_offsets.0,
                    file,
                });
            }
        }
        let files = self
            .files
            .iter()
            .map(|(s, _)| s.path().to_path_buf())
            .collect();
        // SAFETY: taken from `tape`, borrowed for 't; filled by the read;
        // the placement put every tensor inside it; only read from now on.
        Ok(unsafe { Tensors::new(base, size, entries, files, report) })
    }
}
