//! A Block that is reserved on first use, for `const` constructors.

use crate::once::Once;
use crate::{Block, BlockOptions, Error};

/// A Block reserved at most once, on the first call to [`LazyBlock::force`],
/// with nothing committed: its allocator commits as it grows.
///
/// [`Once`] runs the reserving exactly once even when many threads race to
/// the first allocation; the losers wait. Reserving uses raw system calls
/// only and `Once` never allocates, so this is safe inside a global
/// allocator, and `fork` never sees it half done. A failure is kept: a
/// global allocator whose Block cannot be reserved does not retry a system
/// call on every allocation.
pub(crate) struct LazyBlock {
    cell: Once<Result<Block, Error>>,
    capacity: usize,
    options: BlockOptions<'static>,
}

/// What a reservation that asks for itself while being made gets.
static RECURSED: Error = Error::InvalidArgument {
    reason: "a lazy Block was asked for while it was being reserved",
};

impl LazyBlock {
    /// A Block of `capacity` bytes with `options`, not yet reserved.
    pub(crate) const fn new(capacity: usize, options: BlockOptions<'static>) -> LazyBlock {
        LazyBlock {
            cell: Once::new(),
            capacity,
            options,
        }
    }

    /// An already open Block.
    pub(crate) fn ready(block: Block) -> LazyBlock {
        LazyBlock {
            capacity: block.capacity(),
            cell: Once::from(Ok(block)),
            options: BlockOptions::new(),
        }
    }

    /// The Block, if it is reserved.
    #[inline]
    pub(crate) fn get(&self) -> Option<&Block> {
        match self.cell.get() {
            Some(Ok(block)) => Some(block),
            _ => None,
        }
    }

    /// The Block, reserving it first if nobody has tried yet.
    #[inline]
    pub(crate) fn force(&self) -> Result<&Block, &Error> {
        if let Some(block) = self.get() {
            return Ok(block);
        }
        self.force_slow()
    }

    #[cold]
    fn force_slow(&self) -> Result<&Block, &Error> {
        match self
            .cell
            .get_or_init(|| Block::reserve(self.capacity, &self.options))
        {
            Some(result) => result.as_ref(),
            None => Err(&RECURSED),
        }
    }
}
