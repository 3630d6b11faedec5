//! A Block that is opened on first use, for `const` constructors.

use std::sync::OnceLock;

use crate::{Block, BlockOptions, Error};

/// A Block opened at most once, on the first call to [`LazyBlock::force`].
///
/// `OnceLock` runs the opening exactly once even when many threads race to
/// the first allocation; the losers wait. Opening uses raw system calls only
/// and `OnceLock` itself never allocates, so this is safe inside a global
/// allocator. A failure is kept: a global allocator whose Block cannot be
/// opened does not retry a system call on every allocation.
pub(crate) struct LazyBlock {
    cell: OnceLock<Result<Block, Error>>,
    bytes: usize,
    options: BlockOptions<'static>,
}

impl LazyBlock {
    /// A Block of `bytes` bytes with `options`, not yet opened.
    pub(crate) const fn new(bytes: usize, options: BlockOptions<'static>) -> LazyBlock {
        LazyBlock {
            cell: OnceLock::new(),
            bytes,
            options,
        }
    }

    /// An already open Block.
    pub(crate) fn ready(block: Block) -> LazyBlock {
        LazyBlock {
            bytes: block.size(),
            cell: OnceLock::from(Ok(block)),
            options: BlockOptions::new(),
        }
    }

    /// The Block, if it is open.
    #[inline]
    pub(crate) fn get(&self) -> Option<&Block> {
        match self.cell.get() {
            Some(Ok(block)) => Some(block),
            _ => None,
        }
    }

    /// The Block, opening it first if nobody has tried yet.
    #[inline]
    pub(crate) fn force(&self) -> Result<&Block, &Error> {
        if let Some(block) = self.get() {
            return Ok(block);
        }
        self.force_slow()
    }

    #[cold]
    fn force_slow(&self) -> Result<&Block, &Error> {
        self.cell
            .get_or_init(|| Block::open_with(self.bytes, &self.options))
            .as_ref()
    }
}
