//! [`Reader`]: reads byte ranges of files into memory the caller owns, or
//! into a Tape at an address that agrees with the file's alignment; and
//! [`Request`], one such range.

use core::ptr;
use std::time::Instant;

use super::failure::Failure;
use super::plan::{Mode, Plan, Span};
use super::progress::{Meter, Progress};
use super::{Direct, Engine, LoadError, ReadOptions, Report, Source, threads, uring};
use crate::{Error, Tape};

/// One range of a file and the memory it lands in: `dst.len()` bytes from
/// `offset`.
#[derive(Debug)]
pub struct Request<'a> {
    source: &'a Source,
    offset: u64,
    dst: &'a mut [u8],
}

impl<'a> Request<'a> {
    /// `dst.len()` bytes of `source` from `offset`, into `dst`: an
    /// allocation of a Tape, Heap or Grid, a Block's bytes, any memory.
    ///
    /// Direct reads land straight in `dst` where its address agrees with
    /// `offset` modulo the file's [`DirectAlign::memory`](super::DirectAlign);
    /// the unaligned head and tail (less than one alignment unit each) go
    /// through a bounce buffer and are counted in [`Report::copied`]. Where
    /// the address disagrees, every byte does:
    /// [`Reader::take`] lays the memory out to agree.
    pub fn new(source: &'a Source, offset: u64, dst: &'a mut [u8]) -> Request<'a> {
        Request {
            source,
            offset,
            dst,
        }
    }
}

/// Reads byte ranges of files into memory: directly (`O_DIRECT`) where
/// the file system allows it and the file is not in the page cache,
/// through the page cache otherwise, with many requests in flight
/// (io_uring, or a pool of threads where io_uring is refused). See the
/// [module documentation](super) for the contract.
///
/// A Reader holds only its options: make one and reuse it, or make one
/// per read.
#[derive(Clone, Debug, Default)]
pub struct Reader {
    options: ReadOptions,
}

impl Reader {
    /// A Reader with the default [`ReadOptions`].
    pub fn new() -> Reader {
        Reader::with_options(ReadOptions::new())
    }

    /// A Reader with `options`.
    pub fn with_options(options: ReadOptions) -> Reader {
        Reader { options }
    }

    /// Its options.
    pub fn options(&self) -> &ReadOptions {
        &self.options
    }

    /// The engine a read will use: [`Engine::Uring`] or
    /// [`Engine::Threads`], as the options, the environment variable
    /// `UNIMEM_LOAD_ENGINE` (for [`Engine::Auto`]) and the io_uring probe
    /// decide. Errors: [`LoadError::Uring`] where io_uring was required
    /// and is refused, [`Error::InvalidArgument`] for a variable naming
    /// neither engine.
    pub fn engine(&self) -> Result<Engine, Error> {
        match self.options.engine {
            Engine::Uring => uring::available()
                .map(|()| Engine::Uring)
                .map_err(Error::from),
            Engine::Threads => Ok(Engine::Threads),
            Engine::Auto => match std::env::var("UNIMEM_LOAD_ENGINE").as_deref() {
                Ok("uring") => uring::available()
                    .map(|()| Engine::Uring)
                    .map_err(Error::from),
                Ok("threads") => Ok(Engine::Threads),
                Ok("" | "auto") | Err(_) => Ok(match uring::available() {
                    Ok(()) => Engine::Uring,
                    Err(_) => Engine::Threads,
                }),
                Ok(_) => Err(Error::InvalidArgument {
                    reason: "UNIMEM_LOAD_ENGINE names neither `uring` nor `threads`",
                }),
            },
        }
    }

    /// Reads every request; returns once every byte has landed, or the
    /// first failure (after every read in flight has finished; the bytes
    /// of the destinations are then unspecified).
    pub fn read(&self, requests: &mut [Request<'_>]) -> Result<Report, Error> {
        self.read_with(requests, |_| {})
    }

    /// [`read`](Reader::read), calling `progress` on this thread as bytes
    /// land (a few hundred times at most, and once at the end).
    pub fn read_with(
        &self,
        requests: &mut [Request<'_>],
        mut progress: impl FnMut(Progress),
    ) -> Result<Report, Error> {
        let mut sources: Vec<&Source> = Vec::new();
        let mut spans = Vec::with_capacity(requests.len());
        for request in requests.iter_mut() {
            let index = match sources.iter().position(|s| ptr::eq(*s, request.source)) {
                Some(index) => index,
                None => {
                    sources.push(request.source);
                    sources.len() - 1
                }
            };
            spans.push(Span {
                source: index,
                offset: request.offset,
                len: request.dst.len(),
                dst: request.dst.as_mut_ptr(),
                before: 0,
                after: 0,
            });
        }
        // SAFETY: each span's destination is a `&mut [u8]` borrowed for this
        // call, so the spans are disjoint and writable, with no room around.
        unsafe { self.read_spans(&sources, &spans, &mut progress) }
    }

    /// Takes `len` bytes from `tape` and reads `len` bytes of `source` from
    /// `offset` into them, laid out so that a direct read needs no copy:
    /// the first byte lands at an address congruent to `offset` modulo the
    /// file's [`DirectAlign::memory`](super::DirectAlign) (with room taken
    /// around it for the aligned blocks that hold the head and tail).
    ///
    /// On an error nothing stays taken (if no other thread took from the
    /// Tape meanwhile), and nothing is returned. Errors: as
    /// [`read`](Reader::read), and [`LoadError::TapeTooSmall`].
    #[expect(
        clippy::mut_from_ref,
        reason = "each take is a fresh range of the Tape, as `Vec::new_in(&tape)` is"
    )]
    pub fn take<'t>(
        &self,
        tape: &'t Tape,
        source: &Source,
        offset: u64,
        len: usize,
    ) -> Result<(&'t mut [u8], Report), Error> {
        let (head, tail, align) = match source.direct_alignment() {
            Some(a) => {
                let unit = a.offset as u64;
                let head = (offset % unit) as usize;
                let end = offset.saturating_add(len as u64);
                let tail = (end.next_multiple_of(unit) - end) as usize;
                (head, tail, a.memory.max(a.offset))
            }
            None => (0, 0, 64),
        };
        let size = head
            .checked_add(len)
            .and_then(|n| n.checked_add(tail))
            .ok_or(Error::Overflow { requested: len })?;
        let Some(base) = tape.take(size, align) else {
            return Err(LoadError::TapeTooSmall {
                needed: size + align,
                free: tape.free(),
            }
            .into());
        };
        let span = Span {
            source: 0,
            offset,
            len,
            dst: base.wrapping_add(head),
            before: head,
            after: tail,
        };
        // SAFETY: `base .. base + size` was just taken from the Tape: ours,
        // writable, touched by no one else; the span leaves `head` bytes
        // before and `tail` after inside it.
        match unsafe { self.read_spans(&[source], &[span], &mut |_| {}) } {
            Ok(report) => {
                // SAFETY: taken from `tape` for `'t` (the Tape frees memory
                // only through `&mut`), initialized (committed memory is),
                // and filled by the read; no one else holds it.
                let bytes = unsafe { core::slice::from_raw_parts_mut(span.dst, len) };
                Ok((bytes, report))
            }
            Err(error) => {
                // SAFETY: `base` was taken from `tape` just now with this
                // size and alignment and is not used again.
                unsafe { give_back(tape, base, size, align) };
                Err(error)
            }
        }
    }

    /// Reads `spans` of `sources`: plans, chooses per file direct or
    /// buffered, runs the engine.
    ///
    /// # Safety
    /// Each span's destination, with `before` bytes ahead of it and `after`
    /// bytes behind it, is writable memory that nothing else reads or
    /// writes during the call, and no two spans' (so extended) ranges
    /// overlap.
    pub(crate) unsafe fn read_spans(
        &self,
        sources: &[&Source],
        spans: &[Span],
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Report, Error> {
        let start = Instant::now();
        let mut used = vec![false; sources.len()];
        for span in spans {
            let source = sources[span.source];
            let end = span.offset.checked_add(span.len as u64);
            if end.is_none_or(|end| end > source.len()) {
                return Err(LoadError::OutOfRange {
                    path: source.path().to_path_buf(),
                    offset: span.offset,
                    len: span.len as u64,
                    file_len: source.len(),
                }
                .into());
            }
            used[span.source] |= span.len > 0;
        }
        let mut modes = Vec::with_capacity(sources.len());
        let (mut direct_files, mut buffered_files) = (0, 0);
        for (source, &used) in sources.iter().zip(&used) {
            let mode = self.mode(source, used)?;
            if used {
                match mode {
                    Mode::Direct { .. } => direct_files += 1,
                    Mode::Buffered { .. } => buffered_files += 1,
                }
            }
            modes.push(mode);
        }
        let plan = Plan::new(spans, &modes, self.options.chunk_in_use());
        let mut engine = self.engine()?;
        // Where most bytes go through bounce buffers, this crate's copies
        // dominate: the ring would do them all on its one thread, the pool
        // does them on every core. (Buffered reads stay on the ring: the
        // kernel's workers copy from the page cache in parallel.)
        let forced = self.options.engine != Engine::Auto
            || std::env::var_os("UNIMEM_LOAD_ENGINE").is_some_and(|v| !v.is_empty() && v != "auto");
        if !forced && plan.copied.saturating_mul(2) > plan.total {
            engine = Engine::Threads;
        }
        let mut meter = Meter::new(plan.total, progress);
        let result = match engine {
            Engine::Uring => {
                let mut ring = uring::Ring::new(self.options.depth_in_use())?;
                ring.run(&plan, self.options.depth_in_use(), &mut meter)
            }
            _ => {
                let threads = if plan.direct + plan.copied > 0 {
                    self.options
                        .depth_in_use()
                        .max(self.options.threads_in_use())
                } else {
                    self.options.threads_in_use()
                };
                threads::run(&plan, threads.min(256), &mut meter)
            }
        };
        if let Err(failure) = result {
            return Err(failure_error(failure, &plan, sources));
        }
        meter.finish();
        Ok(Report {
            bytes: plan.total,
            direct: plan.direct,
            buffered: plan.buffered,
            copied: plan.copied,
            direct_files,
            buffered_files,
            engine,
            requests: plan.ops.len(),
            elapsed: start.elapsed(),
        })
    }

    /// How `source` is read, as the options say.
    fn mode(&self, source: &Source, used: bool) -> Result<Mode, Error> {
        let buffered = Mode::Buffered {
            fd: source.buffered_fd(),
        };
        let direct = match (source.direct_fd(), source.direct_alignment()) {
            (Some(fd), Some(align)) => Some(Mode::Direct { fd, align }),
            _ => None,
        };
        Ok(match self.options.direct {
            Direct::Off => buffered,
            Direct::On => direct.ok_or_else(|| LoadError::DirectUnsupported {
                path: source.path().to_path_buf(),
            })?,
            Direct::Auto => match direct {
                Some(direct) if used && source.cached()? < self.options.warm => direct,
                _ => buffered,
            },
        })
    }
}

/// Rewinds `tape` past an allocation that is not used after all.
///
/// # Safety
/// `ptr` was taken from `tape` with `size` and `align` and is not used
/// again.
pub(crate) unsafe fn give_back(tape: &Tape, ptr: *mut u8, size: usize, align: usize) {
    if let (Some(ptr), Ok(layout)) = (
        ptr::NonNull::new(ptr),
        core::alloc::Layout::from_size_align(size, align),
    ) {
        // SAFETY: the caller's contract; `give` rewinds the Tape if this is
        // still its newest allocation, and does nothing otherwise.
        unsafe { <Tape as crate::alloc::Engine>::give(tape, ptr, layout) };
    }
}

/// Names the file of a failed request.
fn failure_error(failure: Failure, plan: &Plan, sources: &[&Source]) -> Error {
    match failure {
        Failure::Io { op, call, source } => {
            let path = sources[plan.ops[op].source].path();
            super::source::io_error(path, call, source)
        }
        Failure::Short { op, found } => {
            let op = &plan.ops[op];
            sources[op.source].shrunk(op.offset, op.need as u64, found as u64)
        }
    }
}
