//! Registrations: a guard that owns an allocator (or a Block) and makes each
//! committed part of its Blocks visible to a device or a peer, following the
//! Blocks as they commit more.
//!
//! What is device-specific (registering a range with CUDA, importing it into
//! Vulkan, mapping it for UCX) is a [`Backend`]; everything else is here:
//! walking an allocator's Blocks ([`Regions`]), cutting ranges into chunks
//! the backend takes, watching each Block so that pages committed later are
//! registered before any allocation can land in them (`block/mod.rs`,
//! "watchers"), following Blocks an allocator opens later (a Heap's arenas),
//! looking up the chunk that covers an allocation, owning the allocator so
//! that its pages cannot go while the device may use them, and undoing it
//! all, in order, on drop.
//!
//! A registered Block keeps its pages: decommitting it is refused
//! ([`Error::Registered`]), since the device could go on reading pages the
//! CPU no longer maps. Allocators that decommit on their own (a Heap's trim,
//! a Tape's `clear_to`) keep the pages instead.

use core::fmt;
use core::mem::ManuallyDrop;
use core::ops::Deref;
use core::ptr::NonNull;

use crate::block::{Watch, Watcher};
use crate::lock::SpinLock;
use crate::{Block, Error, Grid, Heap, Model, Region, Tape};

/// What a registration does with a device or a peer: implemented by this
/// crate's registrations (`cuda::Cuda` with feature `cuda`), and open to
/// others (a driver this crate does not wrap), which
/// [`Registered::with_backend`] then follows like the crate's own.
pub trait Backend: Send + Sync + 'static {
    /// What one registered range gives: a device address, an imported
    /// memory object, a memory handle and its key.
    type Chunk: Copy + Send + Sync + fmt::Debug;

    /// Registers the `len` bytes at `host` (page-aligned, mapped, committed).
    fn register(&self, host: NonNull<u8>, len: usize) -> Result<Self::Chunk, Error>;

    /// Undoes a registration `register` made.
    ///
    /// # Safety
    /// `host`, `len` and `chunk` are those of one registration this backend
    /// made and has not undone.
    unsafe fn unregister(&self, host: NonNull<u8>, len: usize, chunk: Self::Chunk);

    /// The largest range one registration takes.
    fn max_chunk(&self) -> usize;

    /// Whether `next`, registered right after `prev` in host memory,
    /// continues it on the device side too (one device range covers both).
    fn continues(&self, prev: &Span<Self::Chunk>, next: &Span<Self::Chunk>) -> bool;

    /// Waits until the device no longer reads or writes memory of the
    /// registration that the allocator is about to hand out again (a
    /// Tape's `clear`) or that is about to be unregistered: work the
    /// backend knows is in flight on it (the CUDA backend: the copies
    /// queued through its `HostBuffer`s). Nothing to wait for by default.
    fn quiesce(&self) {}
}

/// `chunk_bytes` rounded up to whole pages: a backend's
/// [`max_chunk`](Backend::max_chunk) from what a caller asked for, as the
/// crate's backends take it. Zero is [`Error::ZeroSize`], a size that
/// overflows when rounded [`Error::Overflow`].
pub fn chunk_size(chunk_bytes: usize) -> Result<usize, Error> {
    if chunk_bytes == 0 {
        return Err(Error::ZeroSize);
    }
    chunk_bytes
        .checked_next_multiple_of(crate::page_size())
        .ok_or(Error::Overflow {
            requested: chunk_bytes,
        })
}

/// A span: one registered range of host memory, and what its registration
/// gave for it (the backend's `Chunk`).
#[derive(Clone, Copy, Debug)]
pub struct Span<C> {
    /// The first byte's address.
    pub host: usize,
    /// Its length in bytes.
    pub len: usize,
    /// What the backend gave for it.
    pub chunk: C,
    /// The first byte, with the provenance of its Block, for unregistering.
    start: Start,
}

/// A registered range's first byte.
#[derive(Clone, Copy, Debug)]
struct Start(NonNull<u8>);

// SAFETY: only an address into a Block the registration owns, handed back
// to the backend that registered it; never dereferenced here.
unsafe impl Send for Start {}
// SAFETY: as above.
unsafe impl Sync for Start {}

impl<C> Span<C> {
    /// Whether `addr` lies in the range.
    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.host) < self.len
    }
}

/// A hook a registration leaves with an allocator that opens Blocks later,
/// so that it watches them too. Made only by this crate.
#[doc(hidden)]
pub struct Follow(pub(crate) Watcher);

/// What can be registered: the Blocks behind an allocator (or a Block).
pub trait Regions {
    /// Calls `f` on every Block this value owns now (a lazy allocator
    /// reserves its Blocks first).
    fn for_each_region(&self, f: &mut dyn FnMut(&Region));

    /// Arranges for Blocks this value opens from now on to be watched by
    /// `follow`'s watcher. Allocators with a fixed set of Blocks do nothing.
    #[doc(hidden)]
    fn follow(&self, follow: Follow) -> Result<(), Error> {
        let _ = follow;
        Ok(())
    }

    /// Undoes `follow` for the watcher with this `data`.
    #[doc(hidden)]
    fn unfollow(&self, data: *const ()) {
        let _ = data;
    }
}

impl Regions for Region {
    fn for_each_region(&self, f: &mut dyn FnMut(&Region)) {
        f(self)
    }
}

impl Regions for Block {
    fn for_each_region(&self, f: &mut dyn FnMut(&Region)) {
        f(self)
    }
}

impl Regions for Tape {
    fn for_each_region(&self, f: &mut dyn FnMut(&Region)) {
        if let Ok(region) = self.try_block() {
            f(region)
        }
    }
}

impl<const C: usize, const N: usize> Regions for Grid<C, N> {
    fn for_each_region(&self, f: &mut dyn FnMut(&Region)) {
        if let Ok(region) = self.try_block() {
            f(region)
        }
    }
}

/// A Heap's data Blocks; arenas it opens after registering are followed.
impl Regions for Heap {
    fn for_each_region(&self, f: &mut dyn FnMut(&Region)) {
        self.for_each_block(f)
    }

    fn follow(&self, follow: Follow) -> Result<(), Error> {
        self.follow_blocks(follow.0)
    }

    fn unfollow(&self, data: *const ()) {
        self.unfollow_blocks(data)
    }
}

impl Regions for Model {
    fn for_each_region(&self, f: &mut dyn FnMut(&Region)) {
        for tape in self.each_tape() {
            tape.for_each_region(f);
        }
    }
}

impl<R: Regions + ?Sized> Regions for &R {
    fn for_each_region(&self, f: &mut dyn FnMut(&Region)) {
        (**self).for_each_region(f)
    }

    fn follow(&self, follow: Follow) -> Result<(), Error> {
        (**self).follow(follow)
    }

    fn unfollow(&self, data: *const ()) {
        (**self).unfollow(data)
    }
}

/// What a registration keeps at a stable address: the Blocks' watchers
/// point here.
struct State<B: Backend> {
    backend: B,
    /// Every registered range, sorted by address.
    ranges: SpinLock<Vec<Span<B::Chunk>>>,
    /// The first failure to register a later commit, kept for `take_error`.
    error: SpinLock<Option<Error>>,
}

impl<B: Backend> State<B> {
    /// Registers `from..to` of the reservation at `base` in chunks; on
    /// failure, undoes this call's chunks.
    fn register(&self, base: NonNull<u8>, from: usize, to: usize) -> Result<(), Error> {
        let max = self.backend.max_chunk().max(1);
        let mut offset = from;
        let mut made = 0;
        while offset < to {
            let len = max.min(to - offset);
            // SAFETY: inside the reservation, which is committed there.
            let host = unsafe { base.add(offset) };
            let result = self.backend.register(host, len).and_then(|chunk| {
                let mut ranges = self.ranges.lock();
                // The watcher may run inside the registered allocator's own
                // growth: a failed reservation is an error, not an abort.
                ranges.try_reserve(1).map_err(|_| Error::OutOfMemory {
                    requested: size_of::<Span<B::Chunk>>(),
                    available: 0,
                })?;
                let at = ranges.partition_point(|r| r.host < host.as_ptr().addr());
                ranges.insert(
                    at,
                    Span {
                        host: host.as_ptr().addr(),
                        len,
                        chunk,
                        start: Start(host),
                    },
                );
                Ok(())
            });
            if let Err(error) = result {
                self.unregister_within(base, from, offset, made);
                return Err(error);
            }
            made += 1;
            offset += len;
        }
        Ok(())
    }

    /// Undoes the `made` chunks registered in `from..to` of the reservation
    /// at `base`.
    fn unregister_within(&self, base: NonNull<u8>, from: usize, to: usize, made: usize) {
        let (start, end) = (base.as_ptr().addr() + from, base.as_ptr().addr() + to);
        let mut ranges = self.ranges.lock();
        let mut undone = 0;
        ranges.retain(|range| {
            if undone < made && range.host >= start && range.host < end {
                undone += 1;
                // SAFETY: registered by `register` above and not undone.
                unsafe {
                    self.backend
                        .unregister(range.start.0, range.len, range.chunk)
                };
                return false;
            }
            true
        });
    }

    /// The watcher's hook: a Block committed `from..to`.
    ///
    /// # Safety
    /// `data` is a live `State<B>`; as `Watcher::committed`.
    unsafe fn committed(data: *const (), base: NonNull<u8>, from: usize, to: usize) {
        // SAFETY: the caller's contract.
        let state = unsafe { &*data.cast::<State<B>>() };
        if let Err(error) = state.register(base, from, to) {
            state.error.lock().get_or_insert(error);
        }
    }

    /// The watcher's hook: the Block's memory is about to be reused.
    ///
    /// # Safety
    /// `data` is a live `State<B>`.
    unsafe fn reused(data: *const ()) {
        // SAFETY: the caller's contract.
        let state = unsafe { &*data.cast::<State<B>>() };
        state.backend.quiesce();
    }

    fn watcher(&self) -> Watcher {
        Watcher {
            data: core::ptr::from_ref(self).cast(),
            committed: Self::committed,
            reused: Self::reused,
        }
    }
}

/// An allocator (or Block) whose Blocks are registered with a device or a
/// peer through backend `B` (see `cuda::Registered`).
///
/// It owns what it registers, so the pages cannot be unmapped while the
/// device may use them, and derefs to it for allocation. Every part of its
/// Blocks committed when it is made is registered at once; what they commit
/// later is registered as it is committed, before an allocation can land
/// there. Dropping it unregisters every range;
/// [`into_inner`](Registered::into_inner) unregisters and gives the
/// allocator back.
pub struct Registered<A: Regions, B: Backend> {
    state: Owned<State<B>>,
    inner: ManuallyDrop<A>,
}

/// A heap value owned through a raw pointer rather than a `Box`: the
/// watchers keep shared pointers to the state while the `Registered` that
/// owns it moves, and moving a `Box` asserts it is the only pointer (Miri's
/// Stacked Borrows rejects the watchers' later reads). Freed by `free`.
struct Owned<T>(NonNull<T>);

// SAFETY: `Owned<T>` is a uniquely owned `T` on the heap, exactly like
// `Box<T>`; only shared references to it are handed out.
unsafe impl<T: Send> Send for Owned<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for Owned<T> {}

impl<T> Owned<T> {
    fn new(value: T) -> Self {
        Owned(NonNull::from(Box::leak(Box::new(value))))
    }

    fn get(&self) -> &T {
        // SAFETY: live from `new` until `free`, which takes the value.
        unsafe { self.0.as_ref() }
    }

    /// Drops and frees the value.
    ///
    /// # Safety
    /// Called once, after which `self` is never used.
    unsafe fn free(&mut self) {
        // SAFETY: made by `Box::leak` in `new`; the caller's contract.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

impl<A: Regions, B: Backend> Registered<A, B> {
    /// Registers every committed part of `inner`'s Blocks with `backend`,
    /// and watches them (and Blocks `inner` opens later) for more.
    ///
    /// Errors: whatever the backend's first registration reports (what was
    /// registered before it is undone), a Block or Heap already covered by
    /// four registrations, or an allocator whose Block could not be opened.
    pub fn with_backend(backend: B, inner: A) -> Result<Self, Error> {
        let registered = Registered {
            state: Owned::new(State {
                backend,
                ranges: SpinLock::new(Vec::new()),
                error: SpinLock::new(None),
            }),
            inner: ManuallyDrop::new(inner),
        };
        // From here, dropping `registered` undoes whatever was done.
        let watcher = registered.state.get().watcher();
        registered.inner.follow(Follow(watcher))?;
        let mut result = Ok(());
        let mut regions = 0;
        registered.inner.for_each_region(&mut |region| {
            regions += 1;
            if result.is_err() {
                return;
            }
            result = match region.watch(watcher) {
                Watch::Added(committed) => {
                    registered.state.get().register(region.base(), 0, committed)
                }
                Watch::Already => Ok(()),
                Watch::Full => Err(Error::InvalidArgument {
                    reason: "a Block takes at most four registrations at once",
                }),
            };
        });
        result?;
        if regions == 0 {
            return Err(Error::InvalidArgument {
                reason: "nothing to register: the allocator's Block could not be opened",
            });
        }
        Ok(registered)
    }

    /// The registered range that holds the address `ptr`, and the offset of
    /// `ptr` in it, if the `bytes` bytes from `ptr` are all registered and
    /// the ranges they cross continue each other on the device side
    /// ([`Backend::continues`]).
    pub fn lookup(&self, ptr: usize, bytes: usize) -> Option<(Span<B::Chunk>, usize)> {
        let end = ptr.checked_add(bytes.max(1))?;
        let ranges = self.state.get().ranges.lock();
        let first = ranges.partition_point(|r| r.host + r.len <= ptr);
        let head = *ranges.get(first).filter(|r| r.contains(ptr))?;
        let mut last = head;
        for next in &ranges[first + 1..] {
            if last.host + last.len >= end {
                break;
            }
            let contiguous = next.host == last.host + last.len;
            if !contiguous || !self.state.get().backend.continues(&last, next) {
                return None;
            }
            last = *next;
        }
        (last.host + last.len >= end).then_some((head, ptr - head.host))
    }

    /// Every registered range, in address order.
    pub fn spans(&self) -> Vec<Span<B::Chunk>> {
        self.state.get().ranges.lock().clone()
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.state.get().backend
    }

    /// How many ranges are registered.
    pub fn chunks(&self) -> usize {
        self.state.get().ranges.lock().len()
    }

    /// The first failure to register memory committed after the
    /// registration was made, if any (the allocation that needed it still
    /// succeeded; it has no device address).
    pub fn take_error(&self) -> Option<Error> {
        self.state.get().error.lock().take()
    }

    /// Unregisters, and gives back what was registered.
    pub fn into_inner(self) -> A {
        let mut this = ManuallyDrop::new(self);
        this.unregister();
        // SAFETY: `this` is never dropped, so `inner` is taken exactly once;
        // the state is dropped here by hand, after nothing refers to it.
        unsafe {
            this.state.free();
            ManuallyDrop::take(&mut this.inner)
        }
    }

    /// Waits for the device's work on the ranges, stops watching, then
    /// unregisters every range.
    fn unregister(&mut self) {
        self.state.get().backend.quiesce();
        let data = self.state.0.as_ptr().cast_const().cast::<()>();
        self.inner.unfollow(data);
        self.inner
            .for_each_region(&mut |region| region.unwatch(data));
        let ranges = core::mem::take(&mut *self.state.get().ranges.lock());
        for range in ranges.into_iter().rev() {
            // SAFETY: registered by this value and not undone; the watchers
            // are gone, so nothing registers more meanwhile.
            unsafe {
                self.state
                    .get()
                    .backend
                    .unregister(range.start.0, range.len, range.chunk)
            };
        }
    }

    /// The allocator, mutably, for the shims that keep the registration
    /// (`clear` and friends).
    pub(crate) fn inner_mut(&mut self) -> &mut A {
        &mut self.inner
    }
}

impl<A: Regions, B: Backend> Drop for Registered<A, B> {
    fn drop(&mut self) {
        self.unregister();
        // SAFETY: dropped once, here, after the pages were unregistered;
        // the state last, once nothing can refer to it.
        unsafe {
            ManuallyDrop::drop(&mut self.inner);
            self.state.free();
        }
    }
}

impl<A: Regions, B: Backend> Deref for Registered<A, B> {
    type Target = A;

    fn deref(&self) -> &A {
        &self.inner
    }
}

impl<B: Backend> Registered<Tape, B> {
    /// [`Tape::clear`], keeping the registration.
    pub fn clear(&mut self) {
        self.inner_mut().clear();
    }
}

impl<B: Backend> Registered<Model, B> {
    /// [`Model::clear_pass`], keeping the registration.
    pub fn clear_pass(&mut self) {
        self.inner_mut().clear_pass();
    }

    /// [`Model::clear_talk`], keeping the registration.
    pub fn clear_talk(&mut self) {
        self.inner_mut().clear_talk();
    }
}

impl<B: Backend> Registered<Block, B> {
    /// [`Block::as_bytes_mut`], keeping the registration.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        self.inner_mut().as_bytes_mut()
    }

    /// [`Block::as_f32_mut`], keeping the registration.
    pub fn as_f32_mut(&mut self) -> &mut [f32] {
        self.inner_mut().as_f32_mut()
    }

    /// [`Block::as_u16_mut`], keeping the registration.
    pub fn as_u16_mut(&mut self) -> &mut [u16] {
        self.inner_mut().as_u16_mut()
    }
}

impl<A: Regions + fmt::Debug, B: Backend> fmt::Debug for Registered<A, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registered")
            .field("ranges", &*self.state.get().ranges.lock())
            .field("inner", &*self.inner)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlockOptions, Pinning};
    use core::sync::atomic::{AtomicUsize, Ordering};

    /// A backend that records what it was given, and fails on demand.
    #[derive(Default)]
    struct Recorder {
        registered: AtomicUsize,
        fail_after: Option<usize>,
        calls: AtomicUsize,
    }

    impl Backend for Recorder {
        type Chunk = usize;

        fn register(&self, host: NonNull<u8>, len: usize) -> Result<usize, Error> {
            let call = self.calls.fetch_add(1, Ordering::Relaxed);
            if self.fail_after.is_some_and(|n| call >= n) {
                return Err(Error::Unsupported { what: "on demand" });
            }
            self.registered.fetch_add(len, Ordering::Relaxed);
            Ok(host.as_ptr().addr() ^ (1 << 40))
        }

        unsafe fn unregister(&self, _host: NonNull<u8>, len: usize, _chunk: usize) {
            self.registered.fetch_sub(len, Ordering::Relaxed);
        }

        fn max_chunk(&self) -> usize {
            1 << 20
        }

        fn continues(&self, prev: &Span<usize>, next: &Span<usize>) -> bool {
            next.chunk == prev.chunk + prev.len
        }
    }

    fn options() -> BlockOptions<'static> {
        BlockOptions::new()
            .pinning(Pinning::BestEffort)
            .quiet(true)
            .prefault(false)
    }

    #[test]
    fn later_commits_are_registered_before_they_are_used() {
        let tape = Tape::open_with(1 << 20, &options().capacity(16 << 20)).unwrap();
        let registered = Registered::with_backend(Recorder::default(), tape).unwrap();
        assert_eq!(
            registered.backend().registered.load(Ordering::Relaxed),
            1 << 20
        );
        let p = registered.take(6 << 20, 64).unwrap();
        let committed = registered.committed();
        assert!(committed >= 6 << 20);
        assert_eq!(
            registered.backend().registered.load(Ordering::Relaxed),
            committed,
            "every committed byte is registered"
        );
        let (range, offset) = registered.lookup(p.addr(), 6 << 20).unwrap();
        assert_eq!(range.host + offset, p.addr());
        let ranges = registered.spans();
        assert!(ranges.windows(2).all(|w| w[0].host + w[0].len <= w[1].host));
        let tape = registered.into_inner();
        assert!(tape.committed() >= 6 << 20);
    }

    #[test]
    fn a_registered_block_keeps_its_pages() {
        let block = options().capacity(4 << 20).open(2 << 20).unwrap();
        let mut registered = Registered::with_backend(Recorder::default(), block).unwrap();
        assert!(matches!(
            registered.inner_mut().decommit(0),
            Err(Error::Registered)
        ));
        let mut block = registered.into_inner();
        block.decommit(0).unwrap();
    }

    #[test]
    fn a_failed_registration_undoes_itself() {
        let block = options().open(4 << 20).unwrap();
        let recorder = Recorder {
            fail_after: Some(2),
            ..Recorder::default()
        };
        assert!(Registered::with_backend(recorder, block).is_err());
    }

    #[test]
    fn lookups_need_contiguous_chunks() {
        let block = options().open(3 << 20).unwrap();
        let base = block.as_ptr().addr();
        let registered = Registered::with_backend(Recorder::default(), block).unwrap();
        assert_eq!(registered.chunks(), 3);
        assert!(registered.lookup(base + 10, (3 << 20) - 10).is_some());
        assert!(
            registered.lookup(base, (3 << 20) + 1).is_none(),
            "past the end"
        );
        assert!(registered.lookup(base - 1, 2).is_none(), "before the start");
    }

    #[test]
    fn chunk_sizes_round_to_pages() {
        let page = crate::page_size();
        assert_eq!(chunk_size(1).unwrap(), page);
        assert_eq!(chunk_size(page).unwrap(), page);
        assert_eq!(chunk_size(page + 1).unwrap(), 2 * page);
        assert!(matches!(chunk_size(0), Err(Error::ZeroSize)));
        assert!(matches!(
            chunk_size(usize::MAX),
            Err(Error::Overflow {
                requested: usize::MAX
            })
        ));
    }
}
