//! [`Report`]: what one read did: how many bytes, by which path, by which
//! engine, in what time.

use std::time::Duration;

use super::Engine;

/// What one read did, returned by every read and load.
///
/// The bytes asked for arrive by one of three paths: `direct` (DMA from
/// the storage straight into place, no CPU copy), `buffered` (through the
/// page cache, which the kernel copies from), or `copied` (a direct read
/// into a small bounce buffer, then copied into place by this crate: an
/// unaligned head or tail, or memory that could not be laid out to agree
/// with the file's alignment). `direct + buffered + copied == bytes`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Report {
    /// Bytes asked for and delivered.
    pub bytes: u64,
    /// Of those, read directly into place.
    pub direct: u64,
    /// Of those, read through the page cache.
    pub buffered: u64,
    /// Of those, copied by the CPU from a bounce buffer.
    pub copied: u64,
    /// Files read directly (all of their ranges), and through the page
    /// cache.
    pub direct_files: usize,
    /// Files read through the page cache.
    pub buffered_files: usize,
    /// The engine that ran the reads: [`Engine::Uring`] or
    /// [`Engine::Threads`].
    pub engine: Engine,
    /// Requests issued.
    pub requests: usize,
    /// Wall time of the read, from planning to the last byte.
    pub elapsed: Duration,
}

impl Report {
    /// Bytes per second over the whole read.
    pub fn bytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}
