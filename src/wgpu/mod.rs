//! wgpu: a `wgpu::Buffer` over any allocation, with no copy (feature
//! `wgpu`).
//!
//! wgpu's safe API has no buffer over existing host memory; its hal layer
//! does. [`Device::open`] opens a wgpu device that can take host memory (on
//! Vulkan, with `VK_EXT_external_memory_host` enabled through wgpu-hal's
//! `open_with_callback`; on Apple platforms, any Metal device), and
//! [`Registered`] imports every committed part of an allocator's Blocks into
//! it, following them as they grow (the same imports as
//! [`crate::vulkan::Registered`] and `metal::Registered` make,
//! through their code). Inside a [`Registered::scope`], [`Scope::buffer_mut`]
//! gives a `wgpu::Buffer` whose memory *is* a slice's bytes: a compute pass
//! writes them, and once the scope ends the CPU reads them in place.
//!
//! ```no_run
//! use allocator_api2::vec::Vec;
//! use unimem::Tape;
//! use unimem::wgpu::{Device, Registered, wgpu};
//!
//! let device = Device::open()?; // the first adapter that can take host memory
//! let tape = Registered::new(&device, Tape::open(16 << 20)?)?;
//! let mut v: Vec<f32, _> = Vec::with_capacity_in(1 << 20, &*tape);
//! v.resize(1 << 20, 1.0);
//! tape.scope(|scope| -> Result<(), unimem::Error> {
//!     let buffer = scope.buffer_mut(&mut v, wgpu::BufferUsages::STORAGE)?;
//!     // Bind `buffer.as_entire_binding()`, dispatch, submit.
//!     # let _ = buffer;
//!     Ok(())
//! })?; // waits for the GPU to finish with `v`
//! let first = v[0]; // what the GPU wrote, read in place
//! # let _ = first;
//! # Ok::<(), unimem::Error>(())
//! ```
//!
//! # Lifetimes: no buffer over freed memory
//!
//! A `wgpu::Buffer` is reference counted: clones, bind groups and recorded
//! commands keep it alive, and any of them could outlive a borrow. So
//! buffers are made inside a scope, as threads are in
//! [`std::thread::scope`]: a slice handed to [`Scope::buffer_mut`] (or
//! [`Scope::buffer`]) stays borrowed until [`Registered::scope`] returns,
//! and before it returns the scope
//!
//! 1. destroys every buffer it made (`wgpu::Buffer::destroy`): a clone,
//!    bind group or command buffer that still names one is refused by wgpu's
//!    validation from then on, and never reaches the GPU;
//! 2. submits the queue's pending writes and waits for the queue to finish
//!    everything submitted so far (`Device::poll` with a wait), so that no
//!    GPU work that reads or writes the slices is still running.
//!
//! Only then can the slices be touched, dropped or freed, or the allocator
//! cleared. This holds on unwinding too, and cannot be skipped with
//! `mem::forget`, since the scope, not the caller, owns that step. The
//! registration itself lives at least as long as every scope (scopes borrow
//! it), and it owns the allocator, so the Blocks stay mapped and imported
//! meanwhile.
//!
//! The CPU cannot touch a slice while the GPU may: [`Scope::buffer_mut`]
//! borrows it mutably. [`Scope::buffer`] borrows it shared and gives only
//! usages the GPU cannot write through (`COPY_SRC`, `UNIFORM`, `VERTEX`,
//! `INDEX`, `INDIRECT`): wgpu cannot make a `STORAGE` buffer read-only, so a
//! storage buffer, even one a shader only reads, takes the mutable borrow.
//! Element types are plain data: the GPU may read any `bytemuck::NoUninit`
//! and write any `bytemuck::Pod`. [`Scope::buffer_raw`] takes a pointer and
//! a length for memory that is not one slice (a `HashMap`'s table): the
//! same rules, kept by its caller.
//!
//! # Usages and alignment
//!
//! - **Usages**: any of `COPY_SRC`, `COPY_DST`, `INDEX`, `VERTEX`,
//!   `UNIFORM`, `STORAGE`, `INDIRECT`. No `MAP_READ` or `MAP_WRITE`: the CPU
//!   reads and writes the memory in place, and wgpu cannot map a buffer it
//!   did not allocate. Other usages ([`WgpuError::Usage`]) are refused.
//! - **Where**: the bytes lie in one registered part of the allocator's
//!   Blocks ([`WgpuError::NotRegistered`] otherwise). A part is what was
//!   committed at once: an allocation that straddles two commits has no
//!   buffer, so open the allocator with what it needs committed (as
//!   [`crate::vulkan::Registered`] says).
//! - **Alignment**: on Vulkan the slice's offset in its part (in practice,
//!   its address: parts start on pages) is a multiple of the buffer's
//!   memory alignment for those usages, [`Device::buffer_alignment`]
//!   (lavapipe: 64 bytes for storage buffers; other drivers say their
//!   own); on Metal the slice starts on a page. [`WgpuError::Misaligned`]
//!   otherwise. On Vulkan the first allocation of a Tape, a Heap's
//!   allocations over 32 KiB (runs of 4 KiB units) and slices of an element
//!   type aligned to the device's alignment (`#[repr(C, align(256))]`)
//!   always are.
//! - **Size**: not zero ([`WgpuError::Empty`]); the buffer is exactly the
//!   slice's bytes, so wgpu's own rules on binding sizes and copy sizes
//!   (multiples of 4) apply to it as to any buffer.
//! - **Memory order**: the CPU reads what a pass wrote after the scope's
//!   wait for the queue, as after wgpu's own buffer mapping (neither
//!   records a barrier to the host stage); the import takes a
//!   host-coherent memory type where the driver offers one (lavapipe does).
//!
//! What a buffer costs: a `VkBuffer` bound into the existing import (or an
//! `MTLBuffer` with no copy), made when asked and destroyed when the scope
//! ends; no memory is allocated and nothing is copied. The end of a scope
//! waits for the queue, as reading the results on the CPU must anyway.
//!
//! # Platforms
//!
//! Vulkan everywhere but Apple platforms (tested in CI on Mesa's lavapipe);
//! Metal on Apple platforms, through the no-copy `MTLBuffer`s of
//! `unimem::metal`, type-checked for `aarch64-apple-darwin` in CI and not
//! run (CI has no Mac).

use core::fmt;
use core::future::Future;
use core::marker::PhantomData;
use core::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

pub use ::wgpu;
use ::wgpu::BufferUsages;
use bytemuck::{NoUninit, Pod};

use crate::Error;
pub use crate::error::WgpuError;
use crate::register::Regions;

#[cfg(target_vendor = "apple")]
mod metal;
#[cfg(target_vendor = "apple")]
use metal as native;
#[cfg(not(target_vendor = "apple"))]
mod vulkan;
#[cfg(not(target_vendor = "apple"))]
use vulkan as native;

/// The usages a buffer over host memory may have.
const ALLOWED: BufferUsages = BufferUsages::COPY_SRC
    .union(BufferUsages::COPY_DST)
    .union(BufferUsages::INDEX)
    .union(BufferUsages::VERTEX)
    .union(BufferUsages::UNIFORM)
    .union(BufferUsages::STORAGE)
    .union(BufferUsages::INDIRECT);

/// The usages through which the GPU only reads.
const READ_ONLY: BufferUsages = BufferUsages::COPY_SRC
    .union(BufferUsages::INDEX)
    .union(BufferUsages::VERTEX)
    .union(BufferUsages::UNIFORM)
    .union(BufferUsages::INDIRECT);

/// A wgpu device and queue that can take host memory, and what this crate
/// keeps beside them to import it (on Vulkan, its own handles to the same
/// `VkDevice`). Cloning is cheap: wgpu's handles are shared.
#[derive(Clone)]
pub struct Device {
    device: wgpu::Device,
    queue: wgpu::Queue,
    native: native::Native,
}

impl Device {
    /// Opens the first adapter that can take host memory (a discrete GPU
    /// before an integrated one, a software driver last), with no optional
    /// features and the adapter's own limits.
    pub fn open() -> Result<Device, Error> {
        let mut instance = wgpu::InstanceDescriptor::new_without_display_handle().with_env();
        instance.backends = native::BACKENDS;
        let instance = wgpu::Instance::new(instance);
        let mut adapters: Vec<wgpu::Adapter> =
            block_on(instance.enumerate_adapters(native::BACKENDS))
                .into_iter()
                .filter(native::can_import)
                .collect();
        adapters.sort_by_key(|adapter| match adapter.get_info().device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        });
        let adapter = adapters.first().ok_or(WgpuError::NoAdapter)?;
        let descriptor = wgpu::DeviceDescriptor {
            label: Some("unimem"),
            required_limits: adapter.limits(),
            ..Default::default()
        };
        Device::open_adapter(adapter, &descriptor)
    }

    /// Opens `adapter` with `descriptor` (its features and limits), able to
    /// take host memory: on Vulkan, with `VK_EXT_external_memory_host`
    /// enabled besides what wgpu enables. Features or limits the adapter
    /// lacks are [`WgpuError::Open`], as `Adapter::request_device` checks
    /// them.
    pub fn open_adapter(
        adapter: &wgpu::Adapter,
        descriptor: &wgpu::DeviceDescriptor<'_>,
    ) -> Result<Device, Error> {
        if !adapter.features().contains(descriptor.required_features) {
            return Err(WgpuError::Open {
                reason: format!(
                    "the adapter lacks features {:?}",
                    descriptor.required_features - adapter.features()
                ),
            }
            .into());
        }
        if descriptor
            .required_features
            .intersects(wgpu::Features::all_experimental_mask())
            && !descriptor.experimental_features.is_enabled()
        {
            return Err(WgpuError::Open {
                reason: "experimental features asked for without enabling them".into(),
            }
            .into());
        }
        let allowed = adapter.limits();
        let mut exceeded = Vec::new();
        descriptor.required_limits.check_limits_with_fail_fn(
            &allowed,
            true,
            |name, asked, allowed| {
                exceeded.push(format!("{name}: {asked} asked, {allowed} allowed"));
            },
        );
        if !exceeded.is_empty() {
            return Err(WgpuError::Open {
                reason: format!("limits beyond the adapter's: {}", exceeded.join(", ")),
            }
            .into());
        }
        let (device, queue) = native::open(adapter, descriptor)?;
        Device::from_wgpu(&device, &queue)
    }

    /// Takes a device the application opened: on Vulkan it must have been
    /// created with `VK_EXT_external_memory_host` enabled (through
    /// wgpu-hal's `open_with_callback` and `Adapter::create_device_from_hal`,
    /// as [`Device::open_adapter`] does), or the error is
    /// [`VulkanError::MissingExtension`](crate::vulkan::VulkanError::MissingExtension);
    /// on Apple platforms any Metal device does. A device of another backend
    /// is [`WgpuError::Unsupported`].
    pub fn from_wgpu(device: &wgpu::Device, queue: &wgpu::Queue) -> Result<Device, Error> {
        Ok(Device {
            native: native::Native::of(device)?,
            device: device.clone(),
            queue: queue.clone(),
        })
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// Its queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The alignment a buffer with `usage` needs of where its bytes start
    /// (see the module docs): on Vulkan the `VkMemoryRequirements`
    /// alignment of such a buffer over imported memory, on Metal the page
    /// size.
    pub fn buffer_alignment(&self, usage: BufferUsages) -> Result<u64, Error> {
        check_usage(usage, ALLOWED)?;
        self.native.buffer_alignment(usage)
    }

    /// Waits until the queue has finished all the work submitted to it,
    /// its pending writes included.
    fn settle(&self) {
        self.queue.submit([]);
        if let Err(error) = self.device.poll(wgpu::PollType::wait_indefinitely()) {
            // The device is lost (or the wait failed): wait for the device
            // itself, which no lost device can keep waiting.
            self.native.wait_idle(&error);
        }
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.device.adapter_info();
        f.debug_struct("Device")
            .field("name", &info.name)
            .field("backend", &info.backend)
            .finish_non_exhaustive()
    }
}

/// An allocator (or Block) whose Blocks are imported into a wgpu [`Device`],
/// for buffers over its allocations ([`Registered::scope`]).
///
/// It owns the allocator, so the pages stay mapped and imported while any
/// buffer may use them, and derefs to it for allocation. Memory the
/// allocator commits later is imported as it is committed (see the module
/// docs for what a buffer can span).
pub struct Registered<A: Regions> {
    // Dropped first: the imports go while the device that holds them lives.
    imported: native::Imported<A>,
    device: Device,
}

impl<A: Regions> Registered<A> {
    /// Imports every committed part of `inner`'s Blocks into `device`, and
    /// what they commit from now on.
    pub fn new(device: &Device, inner: A) -> Result<Self, Error> {
        Ok(Registered {
            imported: device.native.import(inner)?,
            device: device.clone(),
        })
    }

    /// Runs `f` with a [`Scope`] that makes buffers over allocations, then
    /// destroys them and waits for the queue before returning (see the
    /// module docs): what the GPU wrote is then in the allocations, and
    /// they are the CPU's again.
    pub fn scope<'env, R>(&'env self, f: impl FnOnce(&Scope<'env, A>) -> R) -> R {
        let scope = Scope {
            registered: self,
            made: Mutex::new(Vec::new()),
            _env: PhantomData,
        };
        // The scope's drop ends it, on return and on unwinding alike.
        f(&scope)
    }

    /// The device the Blocks are imported into.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The first failure to import memory committed after the registration
    /// was made, if any (the allocation that needed it still succeeded; it
    /// has no buffer).
    pub fn take_error(&self) -> Option<Error> {
        self.imported.take_error()
    }

    /// How many parts are imported.
    pub fn chunks(&self) -> usize {
        self.imported.chunks()
    }

    /// Frees the imports, and gives the allocator back.
    pub fn into_inner(self) -> A {
        self.imported.into_inner()
    }
}

#[cfg(not(target_vendor = "apple"))]
#[cfg_attr(docsrs, doc(cfg(not(target_vendor = "apple"))))]
impl<A: Regions> Registered<A> {
    /// The imported part that holds a slice: its `VkDeviceMemory`, a buffer
    /// over the whole part, and the slice's offset and size there.
    pub fn import_of<T>(&self, slice: &[T]) -> Option<crate::vulkan::BufferRange> {
        self.imported.buffer_slice(slice)
    }
}

impl<A: Regions> core::ops::Deref for Registered<A> {
    type Target = A;

    fn deref(&self) -> &A {
        &self.imported
    }
}

impl Registered<crate::Tape> {
    /// [`Tape::clear`](crate::Tape::clear), keeping the registration (no
    /// scope can be open: they borrow the registration).
    pub fn clear(&mut self) {
        self.imported.clear();
    }
}

impl Registered<crate::Model> {
    /// [`Model::clear_pass`](crate::Model::clear_pass), keeping the
    /// registration.
    pub fn clear_pass(&mut self) {
        self.imported.clear_pass();
    }

    /// [`Model::clear_talk`](crate::Model::clear_talk), keeping the
    /// registration.
    pub fn clear_talk(&mut self) {
        self.imported.clear_talk();
    }
}

impl<A: Regions + fmt::Debug> fmt::Debug for Registered<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registered")
            .field("device", &self.device)
            .field("chunks", &self.imported.chunks())
            .field("inner", &*self.imported)
            .finish()
    }
}

/// Makes `wgpu::Buffer`s over allocations of a [`Registered`] allocator,
/// for the length of one [`Registered::scope`]; every buffer it made is
/// destroyed, and the queue waited for, when the scope ends.
///
/// `'env` is the borrow of the registration, and of every slice handed to
/// the scope: a slice cannot be freed, moved or touched until the scope has
/// ended. The slices must live outside the scope's closure:
///
/// ```compile_fail,E0597
/// # use allocator_api2::vec::Vec;
/// # use unimem::Tape;
/// # use unimem::wgpu::{Device, Registered, wgpu};
/// # let device = Device::open().unwrap();
/// # let tape = Registered::new(&device, Tape::open(1 << 20).unwrap()).unwrap();
/// tape.scope(|scope| {
///     let mut local: Vec<f32, _> = Vec::with_capacity_in(1024, &*tape);
///     local.resize(1024, 0.0);
///     let buffer = scope.buffer_mut(&mut local, wgpu::BufferUsages::STORAGE);
///     // `local` is dropped here, while the GPU may still use `buffer`
/// });
/// ```
///
/// and stay untouched while it runs:
///
/// ```compile_fail,E0499
/// # use allocator_api2::vec::Vec;
/// # use unimem::Tape;
/// # use unimem::wgpu::{Device, Registered, wgpu};
/// # let device = Device::open().unwrap();
/// # let tape = Registered::new(&device, Tape::open(1 << 20).unwrap()).unwrap();
/// let mut v: Vec<f32, _> = Vec::with_capacity_in(1024, &*tape);
/// v.resize(1024, 0.0);
/// tape.scope(|scope| {
///     let buffer = scope.buffer_mut(&mut v, wgpu::BufferUsages::STORAGE);
///     v[0] = 1.0; // the GPU may be writing `v`
/// });
/// ```
pub struct Scope<'env, A: Regions> {
    registered: &'env Registered<A>,
    /// Every buffer made, and where it lies, to destroy when the scope ends.
    made: Mutex<Vec<(wgpu::Buffer, native::Binding)>>,
    /// `'env` is invariant, so that it cannot shrink to a borrow shorter
    /// than the scope (as in `std::thread::Scope`).
    _env: PhantomData<&'env mut &'env ()>,
}

impl<'env, A: Regions> Scope<'env, A> {
    /// A buffer over `slice`'s bytes that the GPU may read and write with
    /// `usage` (see the module docs for what is allowed). `slice` stays
    /// borrowed until the scope ends.
    pub fn buffer_mut<T: Pod>(
        &self,
        slice: &'env mut [T],
        usage: BufferUsages,
    ) -> Result<wgpu::Buffer, Error> {
        check_usage(usage, ALLOWED)?;
        let len = size_of_val(slice);
        let bytes = NonNull::from(slice).cast::<u8>();
        // SAFETY: the bytes are one live slice of plain data (any bit
        // pattern the GPU writes is a valid `T`), borrowed mutably for
        // `'env`, which outlasts the scope: nothing else touches or frees
        // them before the scope's end has waited for the GPU.
        unsafe { self.make(bytes, len, usage) }
    }

    /// A buffer over `slice`'s bytes that the GPU may only read: `usage`
    /// takes `COPY_SRC`, `UNIFORM`, `VERTEX`, `INDEX` and `INDIRECT` (a
    /// storage buffer needs [`Scope::buffer_mut`]). `slice` stays borrowed
    /// until the scope ends; the CPU may read it meanwhile.
    pub fn buffer<T: NoUninit>(
        &self,
        slice: &'env [T],
        usage: BufferUsages,
    ) -> Result<wgpu::Buffer, Error> {
        check_usage(usage, READ_ONLY)?;
        let len = size_of_val(slice);
        let bytes = NonNull::from(slice).cast::<u8>();
        // SAFETY: the bytes are one live slice of initialized bytes with no
        // interior mutability (`NoUninit` types are `Copy`), borrowed for
        // `'env`; the usages let the GPU read them only.
        unsafe { self.make(bytes, len, usage) }
    }

    /// A buffer over the `len` bytes at `bytes`, with `usage` (any allowed
    /// one): for memory an allocation owns that is not a slice, such as a
    /// `HashMap`'s table.
    ///
    /// # Safety
    /// Until the scope ends:
    /// - the bytes stay allocated, and nothing frees, moves or reuses them;
    /// - if `usage` lets the GPU write (`STORAGE`, `COPY_DST`), the CPU
    ///   neither reads nor writes them, and every bit pattern the GPU may
    ///   write there is valid for what they hold;
    /// - otherwise the CPU does not write them, and they are initialized.
    pub unsafe fn buffer_raw(
        &self,
        bytes: NonNull<u8>,
        len: usize,
        usage: BufferUsages,
    ) -> Result<wgpu::Buffer, Error> {
        check_usage(usage, ALLOWED)?;
        // SAFETY: the caller's contract.
        unsafe { self.make(bytes, len, usage) }
    }

    /// The registration the scope borrows.
    pub fn registered(&self) -> &'env Registered<A> {
        self.registered
    }

    /// Makes the buffer and keeps a handle to destroy it.
    ///
    /// # Safety
    /// As [`Scope::buffer_raw`], for the usage given.
    unsafe fn make(
        &self,
        bytes: NonNull<u8>,
        len: usize,
        usage: BufferUsages,
    ) -> Result<wgpu::Buffer, Error> {
        if len == 0 {
            return Err(WgpuError::Empty.into());
        }
        let registered = self.registered;
        // SAFETY: the caller's contract; the registration outlives the
        // buffer's use, which ends with the scope.
        let (buffer, binding) = unsafe {
            registered.device.native.buffer(
                &registered.device.device,
                &registered.imported,
                bytes,
                len,
                usage,
            )
        }?;
        self.made
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((buffer.clone(), binding));
        Ok(buffer)
    }
}

#[cfg(not(target_vendor = "apple"))]
#[cfg_attr(docsrs, doc(cfg(not(target_vendor = "apple"))))]
impl<A: Regions> Scope<'_, A> {
    /// Where a buffer this scope made lies: the `VkBuffer` it made (the one
    /// wgpu uses, `wgpu::Buffer::as_hal`), the imported `VkDeviceMemory` it
    /// is bound to, and the offset and size there. `None` for a buffer this
    /// scope did not make.
    pub fn binding(&self, buffer: &wgpu::Buffer) -> Option<crate::vulkan::BufferRange> {
        let made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        made.iter()
            .find(|(made, _)| made == buffer)
            .map(|&(_, binding)| binding)
    }
}

impl<A: Regions> Drop for Scope<'_, A> {
    fn drop(&mut self) {
        let made = core::mem::take(self.made.get_mut().unwrap_or_else(PoisonError::into_inner));
        if made.is_empty() {
            return;
        }
        // Nothing submitted from now on can use them (wgpu's validation
        // refuses a destroyed buffer) ...
        for (buffer, _) in &made {
            buffer.destroy();
        }
        // ... and nothing submitted before is still running afterwards.
        self.registered.device.settle();
    }
}

impl<A: Regions> fmt::Debug for Scope<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Scope")
            .field("buffers", &made.len())
            .finish_non_exhaustive()
    }
}

/// `usage` is not empty and within `allowed`.
fn check_usage(usage: BufferUsages, allowed: BufferUsages) -> Result<(), Error> {
    let reason = if usage.is_empty() {
        "a buffer needs at least one usage"
    } else if usage.intersects(BufferUsages::MAP_READ | BufferUsages::MAP_WRITE) {
        "the CPU reads and writes host memory in place: wgpu cannot map a buffer it did not \
         allocate"
    } else if !ALLOWED.contains(usage) {
        "not a usage a buffer over host memory takes here"
    } else if !allowed.contains(usage) {
        "the GPU could write through it while the slice is borrowed shared: use buffer_mut"
    } else {
        return Ok(());
    };
    Err(WgpuError::Usage { usage, reason }.into())
}

/// Runs a future to completion on this thread. wgpu's native futures
/// (adapter enumeration, error scopes) are ready when first polled.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark()
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = core::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// Runs `make` inside error scopes for every kind of error, and returns
/// what wgpu reported instead of letting its handler panic.
fn caught<T>(device: &wgpu::Device, make: impl FnOnce() -> T) -> Result<T, Error> {
    let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
    let memory = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let made = make();
    let errors = [validation.pop(), memory.pop(), internal.pop()].map(block_on);
    match errors.into_iter().flatten().next() {
        Some(error) => Err(WgpuError::Refused {
            reason: error.to_string(),
        }
        .into()),
        None => Ok(made),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usages_are_checked() {
        assert!(check_usage(BufferUsages::STORAGE, ALLOWED).is_ok());
        assert!(check_usage(BufferUsages::UNIFORM | BufferUsages::COPY_SRC, READ_ONLY).is_ok());
        for (usage, allowed, says) in [
            (BufferUsages::empty(), ALLOWED, "at least one"),
            (BufferUsages::MAP_READ, ALLOWED, "map"),
            (
                BufferUsages::STORAGE | BufferUsages::MAP_WRITE,
                ALLOWED,
                "map",
            ),
            (BufferUsages::QUERY_RESOLVE, ALLOWED, "not a usage"),
            (BufferUsages::STORAGE, READ_ONLY, "buffer_mut"),
            (BufferUsages::COPY_DST, READ_ONLY, "buffer_mut"),
        ] {
            match check_usage(usage, allowed) {
                Err(Error::Wgpu(WgpuError::Usage { usage: u, reason })) => {
                    assert_eq!(u, usage);
                    assert!(reason.contains(says), "{reason}");
                }
                other => panic!("{usage:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn errors_name_the_cause() {
        let error = Error::from(WgpuError::Misaligned {
            address: 0x1004,
            alignment: 64,
        });
        assert!(error.to_string().contains("multiple of 64"), "{error}");
        let error = Error::from(WgpuError::NotRegistered {
            address: 0x1000,
            len: 8,
        });
        assert!(error.to_string().contains("registered part"), "{error}");
    }

    #[test]
    fn block_on_sleeps_until_woken() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let woken = Arc::new(AtomicBool::new(false));
        let mut spawned = false;
        let value = block_on(core::future::poll_fn(|cx| {
            // Acquire pairs with the Release store of the thread that wakes
            // this one.
            if woken.load(Ordering::Acquire) {
                return Poll::Ready(7);
            }
            if !spawned {
                spawned = true;
                let (woken, waker) = (woken.clone(), cx.waker().clone());
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    woken.store(true, Ordering::Release);
                    waker.wake();
                });
            }
            Poll::Pending
        }));
        assert_eq!(value, 7);
    }
}
