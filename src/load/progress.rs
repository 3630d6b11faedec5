//! [`Progress`]: how far a read is, as the callback sees it; and the meter
//! that calls the callback, on the calling thread, a few hundred times per
//! read at most.

use std::time::{Duration, Instant};

/// How far a read is: bytes of the asked ranges that have landed, out of
/// all of them. Given to the callback of
/// [`Reader::read_with`](super::Reader::read_with) and
/// [`Checkpoint::load_with`](super::Checkpoint::load_with), always on the
/// calling thread; the last call has `done == total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes that have landed.
    pub done: u64,
    /// Bytes asked for.
    pub total: u64,
}

/// Calls the callback when enough changed: at least 1/256 of the total or
/// 50 ms since the last call, and once at the end.
pub(crate) struct Meter<'a> {
    total: u64,
    last_done: u64,
    last_call: Instant,
    callback: &'a mut dyn FnMut(Progress),
}

impl<'a> Meter<'a> {
    pub(crate) fn new(total: u64, callback: &'a mut dyn FnMut(Progress)) -> Meter<'a> {
        Meter {
            total,
            last_done: 0,
            last_call: Instant::now(),
            callback,
        }
    }

    /// `done` bytes have landed.
    pub(crate) fn update(&mut self, done: u64) {
        if done == self.last_done {
            return;
        }
        let step = (self.total / 256).max(1);
        if done - self.last_done >= step || self.last_call.elapsed() >= Duration::from_millis(50) {
            self.call(done);
        }
    }

    /// The read is over: the last call, with everything done.
    pub(crate) fn finish(&mut self) {
        if self.last_done != self.total || self.total == 0 {
            self.call(self.total);
        }
    }

    fn call(&mut self, done: u64) {
        self.last_done = done;
        self.last_call = Instant::now();
        (self.callback)(Progress {
            done,
            total: self.total,
        });
    }
}
