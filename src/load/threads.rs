//! The thread engine: a pool of scoped threads, each taking the next
//! request and doing it with blocking `pread`s, while the calling thread
//! meters progress. Used where io_uring is refused, or chosen.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::bounce::Bounce;
use super::failure::{self, Failure, Next, Ops};
use super::plan::{Kind, Op, Plan};
use super::progress::Meter;

/// Runs every request of `plan` on `threads` threads (the calling thread
/// meters progress and waits). Returns once no request is in flight,
/// whatever happened.
pub(crate) fn run(plan: &Plan, threads: usize, meter: &mut Meter<'_>) -> Result<(), Failure> {
    let ops = Ops(&plan.ops);
    let next = AtomicUsize::new(0);
    let done = AtomicU64::new(0);
    let running = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<Failure>> = Mutex::new(None);
    let workers = threads.clamp(1, plan.ops.len().max(1));
    let caller = std::thread::current();
    let bounce_shape = (plan.bounce_len, plan.bounce_align);

    std::thread::scope(|scope| {
        // If the progress callback panics, the workers stop taking requests
        // (the scope still waits for the ones they are doing).
        let _stop = StopOnDrop(&stop);
        let work = || {
            let mut bounce: Option<Bounce> = None;
            // Relaxed, all: `stop` is advice to stop early; the work queue
            // index hands out each op once whatever the ordering; `done` is
            // a progress count, exact once the scope has joined the thread.
            while !stop.load(Ordering::Relaxed) {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(op) = ops.get(index) else { break };
                match execute(index, op, bounce_shape, &mut bounce) {
                    Ok(()) => {
                        done.fetch_add(op.delivered as u64, Ordering::Relaxed);
                    }
                    Err(error) => {
                        failure
                            .lock()
                            .unwrap_or_else(|poison| poison.into_inner())
                            .get_or_insert(error);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                caller.unpark();
            }
            // Release: pairs with the Acquire load in the caller's wait
            // loop (the scope's join is what makes the bytes visible).
            running.fetch_sub(1, Ordering::Release);
            caller.unpark();
        };
        let mut spawned = 0;
        // Relaxed increments: made by this thread before the thread they
        // count exists (its spawn orders them before its decrement), and
        // read by this thread's wait loop below.
        for _ in 0..workers {
            running.fetch_add(1, Ordering::Relaxed);
            let spawn = std::thread::Builder::new()
                .name("unimem-load".into())
                .spawn_scoped(scope, work);
            if spawn.is_err() {
                running.fetch_sub(1, Ordering::Relaxed);
                break;
            }
            spawned += 1;
        }
        if spawned == 0 {
            // No thread could be made: do the work here.
            running.fetch_add(1, Ordering::Relaxed);
            work();
        }
        // Acquire: pairs with each worker's Release decrement.
        while running.load(Ordering::Acquire) > 0 {
            std::thread::park_timeout(Duration::from_millis(20));
            meter.update(done.load(Ordering::Relaxed));
        }
    });
    match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Sets the flag when dropped (on a panic, too).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        // Relaxed: advice, as above.
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Does one request with blocking reads.
fn execute(
    index: usize,
    op: &Op,
    (bounce_len, bounce_align): (usize, usize),
    bounce: &mut Option<Bounce>,
) -> Result<(), Failure> {
    let target = match op.kind {
        Kind::Bounce { .. } => bounce
            .get_or_insert_with(|| Bounce::new(bounce_len, bounce_align))
            .as_mut_ptr(),
        Kind::Direct | Kind::Buffered => op.dst,
    };
    let mut got = 0;
    loop {
        // SAFETY: `target + got .. target + op.len` is memory this request
        // owns: a bounce buffer of at least `bounce_len >= op.len` bytes, or
        // the destination range (with the room the placement left), which
        // no other request touches.
        let n = unsafe {
            libc::pread(
                op.fd,
                target.wrapping_add(got).cast(),
                op.len - got,
                (op.offset + got as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let source = io::Error::last_os_error();
            if source.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Failure::Io {
                op: index,
                call: "pread",
                source,
            });
        }
        got += n as usize;
        match failure::next(op, got, n as usize) {
            Next::Done => break,
            Next::More => continue,
            Next::Short => {
                return Err(Failure::Short {
                    op: index,
                    found: got,
                });
            }
        }
    }
    if let Kind::Bounce { skip, want } = op.kind {
        // SAFETY: `skip + want <= need <= got` bytes of the bounce buffer
        // were read; the destination's `want` bytes are this request's own.
        unsafe { core::ptr::copy_nonoverlapping(target.add(skip), op.dst, want) };
    }
    Ok(())
}
