//! The io_uring engine: one ring of `depth` entries on the calling thread,
//! every request a `IORING_OP_READ`, buffered ones handed to the kernel's
//! workers (`IOSQE_ASYNC`) so that page-cache copies run in parallel.
//!
//! Whether io_uring works is probed once per process (a ring of two
//! entries and `IORING_REGISTER_PROBE` for the read opcode): container
//! seccomp profiles and `/proc/sys/kernel/io_uring_disabled` refuse it on
//! many machines, and the reader then uses threads.

use std::io;
use std::sync::OnceLock;
use std::time::Duration;

use io_uring::{IoUring, Probe, opcode, squeue, types};

use super::LoadError;
use super::bounce::Bounce;
use super::failure::{self, Failure, Next};
use super::plan::{Kind, Plan};
use super::progress::Meter;

/// Whether io_uring can run reads here: the probe's answer, cached.
pub(crate) fn available() -> Result<(), LoadError> {
    static PROBED: OnceLock<Result<(), (&'static str, i32)>> = OnceLock::new();
    PROBED
        .get_or_init(probe)
        .map_err(|(call, errno)| LoadError::Uring {
            call,
            source: io::Error::from_raw_os_error(errno),
        })
}

fn probe() -> Result<(), (&'static str, i32)> {
    let errno = |error: io::Error| error.raw_os_error().unwrap_or(libc::ENOSYS);
    let ring = IoUring::new(2).map_err(|e| ("io_uring_setup", errno(e)))?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| ("io_uring_register(IORING_REGISTER_PROBE)", errno(e)))?;
    if !probe.is_supported(opcode::Read::CODE) {
        return Err(("IORING_OP_READ", libc::EOPNOTSUPP));
    }
    Ok(())
}

/// A ring and the bounce buffers its reads may land in. Dropping it waits
/// for every read in flight first, so no read outlives the memory it
/// writes (on an error or a panic in the progress callback too).
pub(crate) struct Ring {
    ring: IoUring,
    in_flight: usize,
    /// Dropped after the ring has drained (fields drop after `drop`).
    bounces: Vec<Bounce>,
}

/// A request in flight.
#[derive(Clone, Copy)]
struct Slot {
    op: usize,
    got: usize,
    /// Index of its bounce buffer, or `usize::MAX`.
    bounce: usize,
}

impl Ring {
    /// A ring of at least `depth` entries.
    pub(crate) fn new(depth: usize) -> Result<Ring, LoadError> {
        let entries = u32::try_from(depth.clamp(1, 4096)).unwrap_or(4096);
        let ring = IoUring::new(entries).map_err(|source| LoadError::Uring {
            call: "io_uring_setup",
            source,
        })?;
        Ok(Ring {
            ring,
            in_flight: 0,
            bounces: Vec::new(),
        })
    }

    /// Runs every request of `plan`, at most `depth` at once. Returns once
    /// none is in flight.
    pub(crate) fn run(
        &mut self,
        plan: &Plan,
        depth: usize,
        meter: &mut Meter<'_>,
    ) -> Result<(), Failure> {
        let depth = depth.clamp(1, self.ring.params().sq_entries() as usize);
        let ops = &plan.ops;
        let mut slots: Vec<Option<Slot>> = vec![None; depth];
        let mut free_slots: Vec<usize> = (0..depth).rev().collect();
        let mut free_bounces: Vec<usize> = Vec::new();
        let mut reaped: Vec<(usize, i32)> = Vec::with_capacity(depth);
        let mut next_op = 0;
        let mut done = 0u64;
        let mut failure: Option<Failure> = None;
        loop {
            // Fill the ring.
            while failure.is_none() && next_op < ops.len() {
                let Some(&slot) = free_slots.last() else {
                    break;
                };
                let bounce = match ops[next_op].kind {
                    Kind::Bounce { .. } => match free_bounces.pop() {
                        Some(index) => index,
                        None => {
                            self.bounces
                                .push(Bounce::new(plan.bounce_len, plan.bounce_align));
                            self.bounces.len() - 1
                        }
                    },
                    Kind::Direct | Kind::Buffered => usize::MAX,
                };
                free_slots.pop();
                let state = Slot {
                    op: next_op,
                    got: 0,
                    bounce,
                };
                slots[slot] = Some(state);
                self.push(plan, slot, state);
                next_op += 1;
            }
            if self.in_flight == 0 {
                break;
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(error) if matches!(error.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(source) => {
                    failure.get_or_insert(Failure::Io {
                        op: slots.iter().flatten().next().map_or(0, |s| s.op),
                        call: "io_uring_enter",
                        source,
                    });
                    break;
                }
            }
            reaped.clear();
            reaped.extend(
                self.ring
                    .completion()
                    .map(|cqe| (cqe.user_data() as usize, cqe.result())),
            );
            for &(slot, result) in &reaped {
                self.in_flight -= 1;
                let Some(mut state) = slots[slot] else {
                    continue;
                };
                let op = &ops[state.op];
                let finish = if result < 0 {
                    let errno = -result;
                    if matches!(errno, libc::EINTR | libc::EAGAIN) && failure.is_none() {
                        None
                    } else {
                        failure.get_or_insert(Failure::Io {
                            op: state.op,
                            call: "io_uring read",
                            source: io::Error::from_raw_os_error(errno),
                        });
                        Some(false)
                    }
                } else {
                    let n = result as usize;
                    state.got += n;
                    match failure::next(op, state.got, n) {
                        Next::Done => Some(true),
                        Next::More if failure.is_none() => None,
                        Next::More => Some(false),
                        Next::Short => {
                            failure.get_or_insert(Failure::Short {
                                op: state.op,
                                found: state.got,
                            });
                            Some(false)
                        }
                    }
                };
                match finish {
                    None => {
                        // Read on from where it stopped.
                        slots[slot] = Some(state);
                        self.push(plan, slot, state);
                    }
                    Some(complete) => {
                        if let (true, Kind::Bounce { skip, want }) = (complete, op.kind) {
                            let from = self.bounces[state.bounce].as_mut_ptr();
                            // SAFETY: the bounce buffer holds `got >= need =
                            // skip + want` bytes read, and nothing reads into
                            // it now; the destination's `want` bytes are this
                            // request's own.
                            unsafe { core::ptr::copy_nonoverlapping(from.add(skip), op.dst, want) };
                        }
                        if complete {
                            done += op.delivered as u64;
                        }
                        if state.bounce != usize::MAX {
                            free_bounces.push(state.bounce);
                        }
                        slots[slot] = None;
                        free_slots.push(slot);
                    }
                }
            }
            meter.update(done);
        }
        self.drain();
        match failure {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    /// Queues the rest of the request in `slot`.
    fn push(&mut self, plan: &Plan, slot: usize, state: Slot) {
        let op = &plan.ops[state.op];
        let base = match op.kind {
            Kind::Bounce { .. } => self.bounces[state.bounce].as_mut_ptr(),
            Kind::Direct | Kind::Buffered => op.dst,
        };
        let len = op.len - state.got;
        let mut entry = opcode::Read::new(
            types::Fd(op.fd),
            base.wrapping_add(state.got),
            u32::try_from(len).expect("requests are at most 1 GiB"),
        )
        .offset(op.offset + state.got as u64)
        .build()
        .user_data(slot as u64);
        if op.kind == Kind::Buffered {
            entry = entry.flags(squeue::Flags::ASYNC);
        }
        // SAFETY: the buffer (`len` bytes from `base + got`) is memory this
        // request owns: a bounce buffer of `bounce_len >= op.len` bytes that
        // no other request uses meanwhile, or the destination range (with the
        // room the placement left), which no other request touches. It stays
        // valid until the completion is reaped: `run` does not return, and
        // `Ring` does not drop, before every read in flight has completed.
        // (A full queue, of entries pushed and not yet submitted, is flushed
        // to the kernel and the push tried again.)
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            if self.ring.submit().is_err() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.in_flight += 1;
    }

    /// Waits until no read is in flight.
    fn drain(&mut self) {
        while self.in_flight > 0 {
            if self.ring.submit_and_wait(1).is_err() {
                // Interrupted or refused: the completions come anyway.
                std::thread::sleep(Duration::from_millis(1));
            }
            let reaped = self.ring.completion().count();
            self.in_flight -= reaped;
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        self.drain();
    }
}
