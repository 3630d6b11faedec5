//! Pinning and placement of what a commit maps (part of `block`): locking
//! it as the Block's [`Pinning`](super::Pinning) says, binding it to its
//! NUMA node as its [`Placement`](super::Placement) says, populating it,
//! and telling a refusal once.

use core::sync::atomic::Ordering;

use super::commit::Caller;
use super::numa::{self, Node, Placement};
use super::report::pin_error;
use super::{COMMIT_STEP, Pinning, Platform, Region, populate, report};
use crate::Error;

impl Region {
    /// Locks (or not, as pinning says) and populates the freshly mapped
    /// `from..to`.
    pub(super) fn lock_and_populate(
        &self,
        from: usize,
        to: usize,
        caller: Caller,
    ) -> Result<(), Error> {
        let settings = self.settings;
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
        self.bind(from, to, caller)?;
        let mut populated = false;
        if settings.pinning != Pinning::Off {
            // Keep the locked part a prefix: lock from its end, which is
            // below `from` where an earlier lock was refused.
            // Relaxed: under the commit lock.
            let locked = self.locked.load(Ordering::Relaxed);
            // A large commit right after the locked prefix: lock it from
            // several threads, each faulting its own part in.
            // SAFETY: `from..to` was mapped just now, nothing refers to it.
            let in_threads = settings.prefault
                && caller == Caller::User
                && locked == from
                && populate::worth_threads(to - from)
                && unsafe { populate::lock_in_threads(self.ptr, from, to, settings.node) };
            let result = if in_threads {
                Ok(())
            } else {
                // SAFETY: `locked..to` is mapped (committed or just mapped).
                unsafe { self.raw.lock(self.ptr, locked, to, settings.prefault) }
            };
            match result {
                Ok(()) => {
                    self.locked.store(to, Ordering::Relaxed);
                    populated |= settings.prefault;
                }
                Err(source) => {
                    let required = settings.pinning == Pinning::Required;
                    if required {
                        // The error says it all to a caller that gets it.
                        if caller == Caller::Allocator && !settings.quiet {
                            report::refusal(to - locked, &source, true);
                        }
                        return Err(pin_error(to - locked, source));
                    }
                    // Best effort: pin what the limit still allows, a step
                    // at a time, and go on unpinned past it.
                    let step = COMMIT_STEP.max(self.granule);
                    let mut end = locked;
                    while end < to {
                        let next = (end + step).min(to);
                        // SAFETY: as above, a part of `locked..to`.
                        if unsafe { self.raw.lock(self.ptr, end, next, settings.prefault) }.is_err()
                        {
                            break;
                        }
                        end = next;
                    }
                    self.locked.store(end, Ordering::Relaxed);
                    if !settings.quiet && end < to {
                        report::refusal(to - end, &source, false);
                    }
                }
            }
        }
        if settings.prefault && !populated {
            if caller == Caller::User && populate::worth_threads(to - from) {
                // SAFETY: as above.
                unsafe { populate::in_threads(self.ptr, from, to, settings.node)? };
            } else {
                // SAFETY: as above.
                unsafe { self.raw.populate(self.ptr, from, to)? };
            }
        }
        Ok(())
    }

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
