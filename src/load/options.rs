//! [`ReadOptions`]: how a [`Reader`](super::Reader) reads: direct or
//! buffered, through io_uring or threads, in what chunks, how many at once.

/// Whether reads bypass the page cache (`O_DIRECT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Direct {
    /// Direct for a file that is not in the page cache (a sample of its
    /// pages is probed with `mincore`), buffered for one that is, and
    /// buffered where the file system offers no direct I/O. The default.
    #[default]
    Auto,
    /// Direct for every file; a file whose file system offers none is
    /// [`LoadError::DirectUnsupported`](super::LoadError::DirectUnsupported).
    On,
    /// Buffered for every file (through the page cache).
    Off,
}

/// Which engine keeps many requests in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Engine {
    /// io_uring where `io_uring_setup` works (probed once per process),
    /// else threads; threads too for a read whose bytes mostly go through
    /// bounce buffers (the copies then run on every core rather than on the
    /// ring's one thread). The environment variable `UNIMEM_LOAD_ENGINE`
    /// (`uring` or `threads`) overrides this choice, so that a whole test
    /// suite runs on either; it does not override an explicit choice.
    #[default]
    Auto,
    /// io_uring: one ring of `depth` entries on the calling thread;
    /// buffered reads are handed to the kernel's workers (`IOSQE_ASYNC`) so
    /// that page-cache copies run in parallel. A kernel that refuses it is
    /// [`LoadError::Uring`](super::LoadError::Uring).
    Uring,
    /// A pool of threads doing `pread`: `depth` threads for direct reads,
    /// `threads` for buffered ones.
    Threads,
}

/// How a [`Reader`](super::Reader) reads.
///
/// ```
/// use unimem::load::{Direct, Engine, ReadOptions};
///
/// let options = ReadOptions::new()
///     .direct(Direct::Auto)
///     .engine(Engine::Auto)
///     .chunk(4 << 20)
///     .depth(32)
///     .threads(8);
/// assert_eq!(options.chunk_bytes(), 4 << 20);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReadOptions {
    pub(crate) direct: Direct,
    pub(crate) engine: Engine,
    pub(crate) chunk: usize,
    pub(crate) depth: usize,
    pub(crate) threads: usize,
    pub(crate) warm: f64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions::new()
    }
}

impl ReadOptions {
    /// Direct and engine chosen automatically, 4 MiB chunks, 32 requests in
    /// flight, a thread per core (at most 16) for buffered reads, a file
    /// counted as warm when half its sampled pages are in the page cache.
    pub const fn new() -> Self {
        ReadOptions {
            direct: Direct::Auto,
            engine: Engine::Auto,
            chunk: 4 << 20,
            depth: 32,
            threads: 0,
            warm: 0.5,
        }
    }

    /// Direct, buffered, or chosen per file.
    pub const fn direct(mut self, direct: Direct) -> Self {
        self.direct = direct;
        self
    }

    /// io_uring, threads, or chosen at run time.
    pub const fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// The size of one request, in bytes (rounded up to the file's direct
    /// I/O alignment; at least 64 KiB).
    pub const fn chunk(mut self, bytes: usize) -> Self {
        self.chunk = bytes;
        self
    }

    /// How many requests are in flight at once (at least 1, at most 4096).
    pub const fn depth(mut self, depth: usize) -> Self {
        self.depth = depth;
        self
    }

    /// How many threads copy from the page cache at once (0: one per core,
    /// at most 16).
    pub const fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// The fraction of a file's sampled pages that must be in the page cache
    /// for [`Direct::Auto`] to read it buffered (0.5 by default; 0 reads
    /// every file buffered, above 1 none).
    pub const fn warm_fraction(mut self, fraction: f64) -> Self {
        self.warm = fraction;
        self
    }

    /// The chunk size asked for.
    pub const fn chunk_bytes(&self) -> usize {
        self.chunk
    }

    /// The chunk size in use: at least 64 KiB, at most 1 GiB.
    pub(crate) fn chunk_in_use(&self) -> usize {
        self.chunk.clamp(64 << 10, 1 << 30)
    }

    /// The depth in use: 1 to 4096.
    pub(crate) fn depth_in_use(&self) -> usize {
        self.depth.clamp(1, 4096)
    }

    /// The buffered threads in use.
    pub(crate) fn threads_in_use(&self) -> usize {
        if self.threads > 0 {
            return self.threads.min(1024);
        }
        std::thread::available_parallelism().map_or(4, |n| n.get().min(16))
    }
}
