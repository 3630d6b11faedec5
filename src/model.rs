//! [`Model`]: three Tapes that follow an inference engine's lifetimes, and
//! the guards ([`Talk`], [`Pass`]) that clear them when a conversation or a
//! forward pass ends.
//!
//! The contract: weights live as long as the `Model`; what a conversation
//! puts in the history lives as long as its [`Talk`]; what a pass puts in
//! the scratch lives as long as its [`Pass`]. Each is enforced by a borrow:
//! the history and scratch Tapes are reachable only through their guards,
//! whose lifetimes bound every allocation made from them, so a guard's drop
//! can clear its Tape through a shared reference. One conversation and one
//! pass exist at a time (a flag each; a second is [`Error::Busy`]), which is
//! what makes clearing on drop sound: no other guard can hold allocations
//! in the Tape it clears.

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::{BlockOptions, Error, Tape};

/// A model's memory, in three Tapes, one per lifetime of the data placed in
/// them:
///
/// - **weights**: loaded once, kept for the model's life ([`weights`](Model::weights));
/// - **history**: the KV cache of one conversation, cleared when its
///   [`Talk`] ends ([`talk`](Model::talk), [`Talk::history`]);
/// - **scratch**: the activations of one forward pass, cleared when its
///   [`Pass`] ends ([`Talk::pass`], [`Pass::scratch`]).
///
/// Each Tape reserves its size as address space and commits as it is used,
/// so generous sizes cost nothing until data lands. The guards take `&self`:
/// an engine keeps borrowing its weights across every pass and conversation.
///
/// ```
/// use unimem::allocator_api2::vec::Vec;
/// use unimem::Model;
///
/// struct Engine<'m> {
///     model: &'m Model,
///     layers: Vec<Vec<f32, &'m unimem::Tape>>,
/// }
///
/// impl<'m> Engine<'m> {
///     fn load(model: &'m Model) -> Engine<'m> {
///         let mut layers = Vec::new();
///         for layer in 0..4 {
///             let mut w = Vec::with_capacity_in(256, model.weights());
///             w.resize(256, 0.01 * layer as f32);
///             layers.push(w);
///         }
///         Engine { model, layers }
///     }
///
///     fn converse(&self, tokens: usize) -> Result<f32, unimem::Error> {
///         let talk = self.model.talk()?;
///         let mut cache = Vec::new_in(talk.history()); // lives for the conversation
///         for token in 0..tokens {
///             let pass = talk.pass()?;
///             let mut x = Vec::with_capacity_in(256, pass.scratch()); // lives for the pass
///             x.resize(256, token as f32);
///             for layer in &self.layers {
///                 for (x, w) in x.iter_mut().zip(layer.iter()) {
///                     *x += w;
///                 }
///             }
///             cache.push(x[0]);
///         } // each pass clears the scratch as it ends
///         Ok(cache.iter().sum())
///     } // the conversation clears the history (and the scratch) as it ends
/// }
///
/// let model = Model::open(1 << 20, 1 << 20, 1 << 20)?;
/// let engine = Engine::load(&model);
/// let first = engine.converse(8)?;
/// let second = engine.converse(8)?;
/// assert_eq!(first, second);
/// assert!(model.weights().used() >= 4 * 256 * 4);
/// # Ok::<(), unimem::Error>(())
/// ```
///
/// A `static` Model ([`Model::lazy`]) gives weights that borrow nothing:
/// `&'static Tape`, so an engine can own its views with no lifetime.
pub struct Model {
    weights: Tape,
    scratch: Tape,
    history: Tape,
    /// A [`Talk`] is alive.
    talking: AtomicBool,
}

impl Model {
    /// Reserves the three Tapes (weights, scratch, history: bytes of each),
    /// committed as they are used, with the default [`BlockOptions`]
    /// (pinned where the locked-memory limit allows).
    ///
    /// Errors: a size of zero ([`Error::ZeroSize`]) or one that overflows
    /// when rounded to pages ([`Error::Overflow`]), and whatever reserving a
    /// Block reports.
    pub fn open(weights: usize, scratch: usize, history: usize) -> Result<Model, Error> {
        Model::open_with(weights, scratch, history, &BlockOptions::new())
    }

    /// As [`Model::open`], the Blocks opened with `options` (their capacity
    /// is each Tape's size; their labels are `weights`, `scratch` and
    /// `history`).
    pub fn open_with(
        weights: usize,
        scratch: usize,
        history: usize,
        options: &BlockOptions<'_>,
    ) -> Result<Model, Error> {
        let tape = |bytes: usize, label| {
            if bytes == 0 {
                return Err(Error::ZeroSize);
            }
            Tape::open_with(0, &options.capacity(bytes).label(label))
        };
        Ok(Model {
            weights: tape(weights, "weights")?,
            scratch: tape(scratch, "scratch")?,
            history: tape(history, "history")?,
            talking: AtomicBool::new(false),
        })
    }

    /// A Model whose Blocks are reserved on first use (as [`Tape::lazy`]):
    /// the form for a `static`, whose weights are then `&'static`.
    ///
    /// ```
    /// use unimem::Model;
    ///
    /// static MODEL: Model = Model::lazy(16 << 30, 1 << 30, 4 << 30);
    /// let w: &'static unimem::Tape = MODEL.weights();
    /// assert!(w.take(4096, 64).is_some());
    /// ```
    pub const fn lazy(weights: usize, scratch: usize, history: usize) -> Model {
        Model::lazy_with(weights, scratch, history, BlockOptions::lazy())
    }

    /// As [`Model::lazy`], with options for the Blocks.
    pub const fn lazy_with(
        weights: usize,
        scratch: usize,
        history: usize,
        options: BlockOptions<'static>,
    ) -> Model {
        Model {
            weights: Tape::lazy_with(weights, options.label("weights")),
            scratch: Tape::lazy_with(scratch, options.label("scratch")),
            history: Tape::lazy_with(history, options.label("history")),
            talking: AtomicBool::new(false),
        }
    }

    /// The Tape for data that lives as long as the Model: weights.
    pub fn weights(&self) -> &Tape {
        &self.weights
    }

    /// The Blocks of the three Tapes (weights, scratch, history), reserved
    /// if they were not: what a registration covers.
    pub fn blocks(&self) -> Vec<&crate::Region> {
        self.each_tape()
            .into_iter()
            .flat_map(Tape::blocks)
            .collect()
    }

    /// Starts a conversation: its [`Talk`] gives the history Tape and the
    /// passes; when it is dropped, the history and the scratch are cleared.
    ///
    /// Errors: [`Error::Busy`] while another conversation of this Model is
    /// alive (open a Model per concurrent conversation, sharing weights by
    /// loading them once into one of them, or into a Tape of their own).
    pub fn talk(&self) -> Result<Talk<'_>, Error> {
        // Acquire: pairs with the Release store in `Talk::drop`, so that the
        // clearing there happens before this conversation's first take.
        if self
            .talking
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(Error::Busy {
                what: "a conversation of this Model (one Talk at a time)",
            });
        }
        Ok(Talk {
            model: self,
            passing: AtomicBool::new(false),
        })
    }

    /// Ends a pass outside the guards: clears the scratch Tape.
    pub fn clear_pass(&mut self) {
        self.scratch.clear();
    }

    /// Ends a conversation outside the guards: clears the scratch and
    /// history Tapes, and makes room for a new [`Talk`] even if one was
    /// leaked (`mem::forget`).
    pub fn clear_talk(&mut self) {
        self.scratch.clear();
        self.history.clear();
        *self.talking.get_mut() = false;
    }

    /// The three Tapes, shared (for registrations, which own the Model and
    /// walk its Blocks).
    pub(crate) fn each_tape(&self) -> [&Tape; 3] {
        [&self.weights, &self.scratch, &self.history]
    }
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("weights", &self.weights)
            .field("scratch", &self.scratch)
            .field("history", &self.history)
            .field("talking", &self.talking.load(Ordering::Relaxed))
            .finish()
    }
}

/// One conversation of a [`Model`] (from [`Model::talk`]): the history Tape
/// for its lifetime, and its passes. Dropping it clears the history and the
/// scratch.
pub struct Talk<'m> {
    model: &'m Model,
    /// A [`Pass`] of this conversation is alive.
    passing: AtomicBool,
}

impl Talk<'_> {
    /// The Tape for data that lives as long as this conversation (a KV
    /// cache): allocations borrow the `Talk`, so none outlives it.
    pub fn history(&self) -> &Tape {
        &self.model.history
    }

    /// Starts a forward pass: its [`Pass`] gives the scratch Tape, cleared
    /// when the pass is dropped.
    ///
    /// Errors: [`Error::Busy`] while another pass of this conversation is
    /// alive.
    pub fn pass(&self) -> Result<Pass<'_>, Error> {
        // Acquire: pairs with the Release store in `Pass::drop`.
        if self
            .passing
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(Error::Busy {
                what: "a pass of this conversation (one Pass at a time)",
            });
        }
        Ok(Pass { talk: self })
    }
}

impl Drop for Talk<'_> {
    fn drop(&mut self) {
        // SAFETY: the history and scratch Tapes are reachable only through
        // this Talk and its Passes (the Model hands them out nowhere else,
        // but to `&mut self` methods, which the Talk's borrow excludes), and
        // every allocation from them borrows this Talk or one of its Passes,
        // which are all gone now. No other Talk exists (the flag), so no
        // other thread takes from them during the clear.
        unsafe {
            self.model.scratch.clear_shared();
            self.model.history.clear_shared();
        }
        // Release: the clearing above happens before the next Talk's takes.
        self.model.talking.store(false, Ordering::Release);
    }
}

impl fmt::Debug for Talk<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Talk")
            .field("history", &self.model.history)
            .field("passing", &self.passing.load(Ordering::Relaxed))
            .finish()
    }
}

/// One forward pass of a conversation (from [`Talk::pass`]): the scratch
/// Tape for its lifetime. Dropping it clears the scratch.
pub struct Pass<'t> {
    talk: &'t Talk<'t>,
}

impl Pass<'_> {
    /// The Tape for data that lives as long as this pass (activations):
    /// allocations borrow the `Pass`, so none outlives it. The Tape is
    /// `Sync`: the pass's threads (scoped) may all take from it.
    pub fn scratch(&self) -> &Tape {
        &self.talk.model.scratch
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        // SAFETY: the scratch Tape is reachable only through a Pass (see
        // `Talk::drop`), every allocation from it borrows this Pass, which
        // is going, and no other Pass exists (the flag).
        unsafe { self.talk.model.scratch.clear_shared() };
        // Release: the clearing happens before the next pass's takes.
        self.talk.passing.store(false, Ordering::Release);
    }
}

impl fmt::Debug for Pass<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pass")
            .field("scratch", &self.talk.model.scratch)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::options;

    #[test]
    fn bad_sizes_are_errors() {
        assert!(matches!(
            Model::open_with(0, 1, 1, &options()),
            Err(Error::ZeroSize)
        ));
        assert!(matches!(
            Model::open_with(1, usize::MAX, 1, &options()),
            Err(Error::Overflow { .. })
        ));
    }

    #[test]
    fn guards_clear_what_they_cover_and_exist_once() {
        let model = Model::open_with(1 << 16, 1 << 16, 1 << 16, &options()).unwrap();
        let w = model.weights().take(100, 8).unwrap();
        {
            let talk = model.talk().unwrap();
            assert!(matches!(model.talk(), Err(Error::Busy { .. })));
            talk.history().take(300, 8).unwrap();
            {
                let pass = talk.pass().unwrap();
                assert!(matches!(talk.pass(), Err(Error::Busy { .. })));
                pass.scratch().take(500, 8).unwrap();
                assert!(model.scratch.used() >= 500);
            }
            assert_eq!(model.scratch.used(), 0, "the pass cleared the scratch");
            assert!(model.history.used() >= 300, "the history stays");
            let pass = talk.pass().unwrap();
            pass.scratch().take(10, 8).unwrap();
            core::mem::forget(pass);
            assert!(
                matches!(talk.pass(), Err(Error::Busy { .. })),
                "a leaked pass keeps its place"
            );
        }
        assert_eq!(model.history.used(), 0, "the talk cleared the history");
        assert_eq!(model.scratch.used(), 0, "and the scratch");
        assert!(model.weights().owns(w));
        assert!(model.weights().used() >= 100, "the weights stay");
        let talk = model.talk().unwrap();
        drop(talk);
    }
}
