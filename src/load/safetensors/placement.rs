//! [`Placement`]: where every tensor of a checkpoint lands in one
//! allocation, so that each is aligned (64 bytes by default) and as many
//! bytes as possible are read directly, with no copy.
//!
//! Tensors are contiguous in a safetensors file. Consecutive tensors whose
//! file offsets differ by a multiple of the alignment form a *run*, placed
//! contiguously, as the file has them: one range of the file, read in large
//! chunks. A tensor that would land misaligned starts a new run. Each run's
//! first byte is placed so that direct reads need no copy where that is
//! possible: at an address that agrees with its file offset modulo the
//! file's direct I/O memory alignment (with room before and after it for
//! the aligned blocks that hold its head and tail, which are read into
//! place too). That is possible when the run's offset within its aligned
//! block is a multiple of the smaller of the two alignments: always where
//! the storage wants 4-byte-aligned memory (NVMe), and only for tensors at
//! multiples of 64 in the file where it wants 512 (some virtual disks).
//! Runs where it is not possible land aligned, and their bytes go through
//! the bounce buffer when read directly (counted in
//! [`Report::copied`](super::super::Report::copied)).

use super::super::DirectAlign;
use super::Header;
use crate::Error;

/// One run: a range of one file, placed contiguously.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// Index of the file (shard).
    pub file: usize,
    /// The run's first byte in the file.
    pub offset: u64,
    /// Its length.
    pub len: usize,
    /// Where its first byte lands, from the allocation's start.
    pub at: usize,
    /// Room before `at` that direct reads of the head may fill.
    pub before: usize,
    /// Room after the run that direct reads of the tail may fill.
    pub after: usize,
}

/// Where each tensor of one or more headers lands in one allocation.
#[derive(Clone, Debug)]
pub struct Placement {
    size: usize,
    base_align: usize,
    align: usize,
    runs: Vec<Run>,
    /// For each file, each tensor's offset from the allocation's start.
    offsets: Vec<Vec<usize>>,
}

impl Placement {
    /// Places the tensors of `headers` (file `i` read with direct I/O
    /// alignment `aligns[i]`, `None` for buffered reads), each at a
    /// multiple of `align` (a power of two) from an allocation aligned to
    /// [`base_align`](Placement::base_align).
    ///
    /// Errors: an `align` that is not a power of two (or above 1 GiB),
    /// `aligns` of another length than `headers`
    /// ([`Error::InvalidArgument`]), or sizes that overflow
    /// ([`Error::Overflow`]).
    pub fn plan(
        headers: &[&Header],
        aligns: &[Option<DirectAlign>],
        align: usize,
    ) -> Result<Placement, Error> {
        if !align.is_power_of_two() || align > 1 << 30 {
            return Err(Error::InvalidArgument {
                reason: "a tensor alignment must be a power of two of at most 1 GiB",
            });
        }
        if aligns.len() != headers.len() {
            return Err(Error::InvalidArgument {
                reason: "one direct I/O alignment per header",
            });
        }
        let base_align = aligns
            .iter()
            .flatten()
            .map(|a| a.memory)
            .fold(align, usize::max);
        let overflow = |requested| Error::Overflow { requested };
        let mut placement = Placement {
            size: 0,
            base_align,
            align,
            runs: Vec::new(),
            offsets: Vec::with_capacity(headers.len()),
        };
        let mut cursor = 0usize;
        for (file, (header, &direct)) in headers.iter().zip(aligns).enumerate() {
            let mut offsets = vec![0usize; header.tensors().len()];
            let mut run: Option<Run> = None;
            for (i, (_, info)) in header.tensors().iter().enumerate() {
                let (start, end) = info.data_offsets;
                let len = end - start;
                if len == 0 {
                    // No bytes: the allocation's start, aligned for anything.
                    continue;
                }
                let offset = header.data_start() + start as u64;
                if let Some(open) = run.as_mut() {
                    let joins = open.offset + open.len as u64 == offset
                        && (offset - open.offset).is_multiple_of(align as u64);
                    if joins {
                        offsets[i] = open.at + open.len;
                        open.len = open.len.checked_add(len).ok_or_else(|| overflow(len))?;
                        continue;
                    }
                    cursor = placement.close(open, direct)?;
                }
                let opened =
                    place(file, offset, len, direct, align, cursor).ok_or_else(|| overflow(len))?;
                offsets[i] = opened.at;
                run = Some(opened);
            }
            if let Some(open) = run.as_mut() {
                cursor = placement.close(open, direct)?;
            }
            placement.offsets.push(offsets);
        }
        placement.size = cursor;
        Ok(placement)
    }

    /// Ends a run: its room after, and the cursor past it.
    fn close(&mut self, run: &mut Run, direct: Option<DirectAlign>) -> Result<usize, Error> {
        if let (Some(a), true) = (direct, agrees(run, direct)) {
            let end = run.offset + run.len as u64;
            run.after = (end.next_multiple_of(a.offset as u64) - end) as usize;
        }
        self.runs.push(*run);
        run.at
            .checked_add(run.len)
            .and_then(|n| n.checked_add(run.after))
            .ok_or(Error::Overflow { requested: run.len })
    }

    /// The allocation's size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The alignment the allocation needs: the tensor alignment, or the
    /// largest direct I/O memory alignment if that is larger.
    pub fn base_align(&self) -> usize {
        self.base_align
    }

    /// The tensor alignment.
    pub fn align(&self) -> usize {
        self.align
    }

    /// The runs, file by file, in file order.
    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// Where tensor `index` (in the order of
    /// [`Header::tensors`](super::Header::tensors)) of file `file` lands,
    /// from the allocation's start (0 for a tensor of no bytes).
    pub fn offset(&self, file: usize, index: usize) -> usize {
        self.offsets[file][index]
    }
}

/// Whether a run's address agrees with its file offset (so that it is
/// read directly, head and tail included).
fn agrees(run: &Run, direct: Option<DirectAlign>) -> bool {
    direct.is_some_and(|a| {
        let head = (run.offset % a.offset as u64) as usize;
        run.before == head && (run.at - head).is_multiple_of(a.memory)
    })
}

/// Opens a run at `offset` for `len` bytes at or after `cursor`.
fn place(
    file: usize,
    offset: u64,
    len: usize,
    direct: Option<DirectAlign>,
    align: usize,
    cursor: usize,
) -> Option<Run> {
    let aligned = |at: usize| at.checked_next_multiple_of(align);
    let mut run = Run {
        file,
        offset,
        len,
        at: aligned(cursor)?,
        before: 0,
        after: 0,
    };
    let Some(a) = direct else {
        return Some(run);
    };
    let head = (offset % a.offset as u64) as usize;
    // The run's address must be a multiple of `align` and agree with
    // `head` modulo `a.memory` (so that `at - head` is aligned for a
    // direct read): possible when `head` is a multiple of the smaller.
    if !head.is_multiple_of(a.memory.min(align)) {
        return Some(run);
    }
    let modulus = a.memory.max(align);
    let residue = if a.memory >= align {
        head % a.memory
    } else {
        0
    };
    let lowest = cursor.checked_add(head)?;
    // The first address at or after `lowest` that is `residue` modulo
    // `modulus`.
    let at = lowest.checked_add((residue + modulus - lowest % modulus) % modulus)?;
    debug_assert!(at >= lowest && at % align == 0 && (at - head).is_multiple_of(a.memory));
    run.at = at;
    run.before = head;
    Some(run)
}
