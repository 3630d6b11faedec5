//! Pinning and placement of what a commit maps (part of `block`): locking
//! it as the Block's [`Pinning`](super::Pinning) says, binding it to its
//! NUMA node as its [`Placement`](super::Placement) says, populating it,
//! and telling a refusal once.

use super::commit::{Caller, Committing};
use super::numa::{self, Node, Placement};
use super::report::pin_error;
use super::{COMMIT_STEP, Pinning, Platform, Region, populate, report};
use crate::Error;

/// What [`Committing::pin`] did.
pub(super) struct Pinned {
    /// The end of what is locked now: `to` if everything was, less where
    /// best-effort pinning ran into the limit, `from` if nothing was.
    pub(super) locked_to: usize,
    /// Whether locking also faulted every page of the range in.
    pub(super) populated: bool,
}

impl Committing<'_> {
    /// Locks `from..to` (mapped, committed or being committed) as the
    /// Block's pinning says: the one statement of the pinning policy, for
    /// fresh commits and for ranges taken back after a discard.
    ///
    /// - `Off`: nothing is locked.
    /// - `Required`: all of it or an [`Error::Pin`]; when the caller is an
    ///   allocator, whose error reaches no one, the refusal is also told on
    ///   standard error, once per process.
    /// - `BestEffort`: what the limit allows, a commit step at a time from
    ///   `from`, and the refusal told once on standard error.
    ///
    /// A large range a program commits itself (`in_threads`) is locked from
    /// several threads, each faulting its own part in.
    pub(super) fn pin(
        &self,
        from: usize,
        to: usize,
        caller: Caller,
        in_threads: bool,
    ) -> Result<Pinned, Error> {
        let region = self.region;
        let settings = region.settings;
        let nothing = Pinned {
            locked_to: from,
            populated: false,
        };
        if settings.pinning == Pinning::Off || from >= to {
            return Ok(nothing);
        }
        // SAFETY: `from..to` is mapped and nothing else refers to it (the
        // caller's range, under the commit lock `self` proves).
        let threaded = in_threads
            && settings.prefault
            && caller == Caller::User
            && populate::worth_threads(to - from)
            && unsafe { populate::lock_in_threads(region.ptr, from, to, settings.node) };
        let locked = if threaded {
            Ok(())
        } else {
            // SAFETY: as above.
            unsafe { region.raw.lock(region.ptr, from, to, settings.prefault) }
        };
        let source = match locked {
            Ok(()) => {
                return Ok(Pinned {
                    locked_to: to,
                    populated: settings.prefault,
                });
            }
            Err(source) => source,
        };
        if settings.pinning == Pinning::Required {
            // The error says it all to a caller that gets it.
            if caller == Caller::Allocator && !settings.quiet {
                report::refusal(to - from, &source, true);
            }
            return Err(pin_error(to - from, source));
        }
        // Best effort: pin what the limit still allows, a step at a time,
        // and go on unpinned past it.
        let step = COMMIT_STEP.max(region.granule);
        let mut end = from;
        while end < to {
            let next = (end + step).min(to);
            // SAFETY: as above, a part of `from..to`.
            if unsafe { region.raw.lock(region.ptr, end, next, settings.prefault) }.is_err() {
                break;
            }
            end = next;
        }
        if !settings.quiet && end < to {
            report::refusal(to - end, &source, false);
        }
        Ok(Pinned {
            locked_to: end,
            ..nothing
        })
    }

    /// Binds (to the Block's node), pins and populates the freshly mapped
    /// `from..to` of a commit.
    pub(super) fn pin_and_populate(
        &self,
        from: usize,
        to: usize,
        caller: Caller,
    ) -> Result<(), Error> {
        let region = self.region;
        let settings = region.settings;
        // More than the machine's memory (or the node's, for a required
        // placement) can be neither pinned nor faulted in: say so now rather
        // than after the kernel has tried (and pushed everything else out
        // of memory on the way).
        if settings.prefault && to - from > settings.memory {
            return Err(Error::OutOfMemory {
                requested: to - from,
                available: settings.memory,
            });
        }
        // Before a page is touched: a mapping made afresh (a shared or
        // huge-page commit) does not keep the reservation's policy.
        region.bind(from, to, caller)?;
        // Keep the locked part a prefix: lock from its end, which is below
        // `from` where an earlier lock was refused; in threads only a range
        // right after the prefix.
        let locked = self.locked();
        let pinned = self.pin(locked, to, caller, locked == from)?;
        if settings.pinning != Pinning::Off {
            self.set_locked(pinned.locked_to);
        }
        if settings.prefault && !pinned.populated {
            if caller == Caller::User && populate::worth_threads(to - from) {
                // SAFETY: `from..to` was mapped just now, nothing refers to it.
                unsafe { populate::in_threads(region.ptr, from, to, settings.node)? };
            } else {
                // SAFETY: as above.
                unsafe { region.raw.populate(region.ptr, from, to)? };
            }
        }
        Ok(())
    }
}

impl Region {
    /// Binds `from..to` of the reservation to the Block's node, if it has
    /// one (see [`bind_reservation`](Region::bind_reservation) for what a
    /// refusal does).
    fn bind(&self, from: usize, to: usize, caller: Caller) -> Result<(), Error> {
        let Some((node, placement)) = self.placement else {
            return Ok(());
        };
        // SAFETY: `from..to` lies in our own reservation, page-aligned.
        let bound = unsafe { numa::bind(self.ptr.as_ptr().add(from), to - from, node, placement) };
        match bound {
            Ok(()) => Ok(()),
            Err(source) => self.refused(node, placement, source, caller),
        }
    }

    /// Binds the whole reservation to `node` as `placement` says, before
    /// anything is committed, and records it. A refusal (`EPERM`,
    /// `ENOSYS`: the system forbids memory policies) is
    /// [`Error::Placement`] when placement is required (told once on
    /// standard error too when an allocator opens the Block, whose error
    /// reaches no one); best effort tells standard error once and goes on
    /// unbound. `EINVAL` (a node this process may not use: its cpuset) is
    /// [`Error::Node`] either way.
    pub(super) fn bind_reservation(
        &mut self,
        node: Node,
        placement: Placement,
        caller: Caller,
    ) -> Result<(), Error> {
        // SAFETY: the whole reservation, ours, page-aligned.
        match unsafe { numa::bind(self.ptr.as_ptr(), self.capacity, node, placement) } {
            Ok(()) => {
                self.placement = Some((node, placement));
                Ok(())
            }
            Err(source) => self.refused(node, placement, source, caller),
        }
    }

    /// What a refused `mbind` of the Block to `node` means; see
    /// [`bind_reservation`](Region::bind_reservation).
    fn refused(
        &self,
        node: Node,
        placement: Placement,
        source: std::io::Error,
        caller: Caller,
    ) -> Result<(), Error> {
        let quiet = self.settings.quiet;
        match numa::refusal(&source) {
            numa::Refusal::Forbidden => {
                let required = placement == Placement::Required;
                if required {
                    if caller == Caller::Allocator && !quiet {
                        report::placement_refusal(node.index(), &source, true);
                    }
                    return Err(Error::Placement {
                        node: node.index(),
                        source,
                    });
                }
                if !quiet {
                    report::placement_refusal(node.index(), &source, false);
                }
                Ok(())
            }
            numa::Refusal::NotAllowed => Err(Error::Node {
                node: node.index(),
                reason: "not among the memory nodes this process may use (its cpuset: \
                         Mems_allowed in /proc/self/status)",
            }),
            numa::Refusal::Other => Err(Error::Os {
                call: "mbind",
                source,
            }),
        }
    }
}
