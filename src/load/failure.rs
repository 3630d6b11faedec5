//! [`Failure`]: how an engine's request failed, before the reader names
//! the file; and the rule both engines follow after each read returns.

use std::io;

use super::plan::Op;

/// One request's failure.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The read call failed.
    Io {
        op: usize,
        call: &'static str,
        source: io::Error,
    },
    /// The file ended before the bytes the request needs.
    Short { op: usize, found: usize },
}

/// What to do after a read of `op` brought the bytes arrived so far to
/// `got`, its last call having returned `n` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Everything the request needs has arrived.
    Done,
    /// Read on, from `got`.
    More,
    /// The file ended first.
    Short,
}

pub(crate) fn next(op: &Op, got: usize, n: usize) -> Next {
    if got >= op.need {
        return Next::Done;
    }
    // A read that returns nothing is at the end of the file; a direct read
    // that stops inside a block is too (and could not be continued there).
    if n == 0 || (op.unit > 0 && !got.is_multiple_of(op.unit)) {
        return Next::Short;
    }
    Next::More
}

/// The slice of `Op`s, shared with worker threads.
#[derive(Clone, Copy)]
pub(crate) struct Ops<'a>(pub(crate) &'a [Op]);

impl<'a> Ops<'a> {
    /// Op `index`. (A method, so that closures capture the whole `Ops`,
    /// which is Sync, rather than its slice.)
    pub(crate) fn get(&self, index: usize) -> Option<&'a Op> {
        self.0.get(index)
    }
}

// SAFETY: an `Op` holds destination pointers into memory the reader owns for
// the whole read (borrowed `&mut` by its caller); each op's destination is
// written by the one thread that takes that op, and no two ops' destinations
// overlap (the plan cuts disjoint ranges).
unsafe impl Send for Ops<'_> {}
// SAFETY: as above; the slice itself is only read.
unsafe impl Sync for Ops<'_> {}
