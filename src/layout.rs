//! [`Layout`]: three Tapes that follow an inference engine's lifetimes.

use crate::{BlockOptions, Error, Tape};

/// Three Tapes for inference, one per lifetime of the data placed in them:
///
/// - `weights`: loaded once, kept for the program's life;
/// - `scratch`: activations of one forward pass, cleared per token
///   ([`clear_pass`](Layout::clear_pass));
/// - `history`: the KV cache of one conversation, cleared with the scratch
///   when the conversation ends ([`clear_talk`](Layout::clear_talk)).
///
/// Clearing takes `&mut self`, so nothing borrowed from a Tape outlives it.
/// To keep weights and a conversation's history borrowed while the scratch
/// is cleared token by token, [`split`](Layout::split) the Layout into its
/// three Tapes.
///
/// ```
/// use unimem::{BlockOptions, Layout, Pinning};
///
/// let options = BlockOptions::new().pinning(Pinning::BestEffort);
/// let mut layout = Layout::new_with(1 << 20, 1 << 16, 1 << 16, &options)?;
/// let w = layout.weights().take(4096, 64).unwrap();
/// layout.scratch().take(1024, 64).unwrap();
/// layout.history().take(512, 64).unwrap();
/// layout.clear_pass();
/// assert_eq!(layout.scratch().used(), 0);
/// assert!(layout.history().used() > 0);
/// layout.clear_talk();
/// assert_eq!(layout.history().used(), 0);
/// assert!(layout.weights().owns(w));
/// # Ok::<(), unimem::Error>(())
/// ```
#[derive(Debug)]
pub struct Layout {
    weights: Tape,
    scratch: Tape,
    history: Tape,
}

impl Layout {
    /// Opens three pinned Blocks of the given sizes in bytes.
    pub fn new(weights: usize, scratch: usize, history: usize) -> Result<Layout, Error> {
        Layout::new_with(weights, scratch, history, &BlockOptions::new())
    }

    /// As [`Layout::new`], opening the Blocks with `options`; their labels are
    /// `weights`, `scratch` and `history`.
    pub fn new_with(
        weights: usize,
        scratch: usize,
        history: usize,
        options: &BlockOptions<'_>,
    ) -> Result<Layout, Error> {
        Ok(Layout {
            weights: Tape::start_with(weights, &options.label("weights"))?,
            scratch: Tape::start_with(scratch, &options.label("scratch"))?,
            history: Tape::start_with(history, &options.label("history"))?,
        })
    }

    /// The Tape for data that lives as long as the program.
    pub fn weights(&self) -> &Tape {
        &self.weights
    }

    /// The Tape for data that lives one pass.
    pub fn scratch(&self) -> &Tape {
        &self.scratch
    }

    /// The Tape for data that lives one conversation.
    pub fn history(&self) -> &Tape {
        &self.history
    }

    /// Ends a pass: clears the scratch Tape.
    pub fn clear_pass(&mut self) {
        self.scratch.clear();
    }

    /// Ends a conversation: clears the scratch and history Tapes.
    pub fn clear_talk(&mut self) {
        self.scratch.clear();
        self.history.clear();
    }

    /// The three Tapes, borrowed separately: the weights shared, the scratch
    /// and history uniquely, so that each can be cleared while allocations
    /// in the others are alive.
    ///
    /// ```
    /// use allocator_api2::vec::Vec;
    /// use unimem::{BlockOptions, Layout, Pinning};
    ///
    /// let options = BlockOptions::new().pinning(Pinning::BestEffort);
    /// let mut layout = Layout::new_with(1 << 16, 1 << 16, 1 << 16, &options)?;
    /// let split = layout.split();
    /// let mut weights: Vec<f32, _> = Vec::with_capacity_in(64, split.weights);
    /// weights.resize(64, 0.5);
    /// for _conversation in 0..2 {
    ///     let mut cache: Vec<f32, _> = Vec::with_capacity_in(256, &*split.history);
    ///     for token in 0..4 {
    ///         let mut activation: Vec<f32, _> = Vec::with_capacity_in(64, &*split.scratch);
    ///         activation.extend(weights.iter().map(|w| w * token as f32));
    ///         cache.extend_from_slice(&activation[..4]);
    ///         drop(activation);
    ///         split.scratch.clear(); // the weights and the cache stay
    ///     }
    ///     drop(cache);
    ///     split.history.clear();
    /// }
    /// # Ok::<(), unimem::Error>(())
    /// ```
    pub fn split(&mut self) -> Split<'_> {
        Split {
            weights: &self.weights,
            scratch: &mut self.scratch,
            history: &mut self.history,
        }
    }
}

/// A [`Layout`]'s three Tapes, borrowed separately (from [`Layout::split`]).
#[derive(Debug)]
pub struct Split<'a> {
    /// Data that lives as long as the program.
    pub weights: &'a Tape,
    /// Data that lives one pass: clear it with `scratch.clear()`.
    pub scratch: &'a mut Tape,
    /// Data that lives one conversation: clear it with `history.clear()`.
    pub history: &'a mut Tape,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pinning;

    #[test]
    fn bad_sizes_are_errors() {
        let options = BlockOptions::new().pinning(Pinning::BestEffort);
        assert!(matches!(
            Layout::new_with(0, 1, 1, &options),
            Err(Error::ZeroSize)
        ));
        assert!(matches!(
            Layout::new_with(1, usize::MAX, 1, &options),
            Err(Error::Overflow { .. })
        ));
    }
}
