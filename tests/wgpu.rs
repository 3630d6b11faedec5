//! wgpu compute passes read and write collections in imported Blocks
//! through `wgpu::Buffer`s over the collections' own bytes, with no copy: a
//! pass doubles a `Vec<f32>` in a Tape and the values of a `hashbrown`
//! `HashMap` in a Heap, and the CPU reads every value in place. Each buffer
//! is checked to be the `VkBuffer` this crate bound into the import (wgpu's
//! own `as_hal` says so), and wgpu's allocator to have allocated nothing for
//! it. A buffer kept past its scope is dead; misuse is a typed error.
//!
//! CI runs these on Mesa's lavapipe with `UNIMEM_REQUIRE_VULKAN=1`, which
//! makes a missing loader or device a failure; elsewhere they are reported
//! `ignored` with the reason.

mod support;

#[macro_use]
mod harness;

use std::alloc::Layout;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::process::Command;
use std::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator};
use allocator_api2::vec::Vec;
use support::options;
use unimem::wgpu::{Device, Registered, WgpuError, wgpu};
use unimem::{Error, Heap, Tape};
use wgpu::BufferUsages;

/// Doubles every value.
const DOUBLE: &str = "
@group(0) @binding(0) var<storage, read_write> values: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&values) {
        values[id.x] = values[id.x] * 2.0;
    }
}
";

/// Doubles the words of `table` that `at` names.
const DOUBLE_AT: &str = "
@group(0) @binding(0) var<storage, read_write> table: array<f32>;
@group(0) @binding(1) var<storage, read> at: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&at) {
        let word = at[id.x];
        table[word] = table[word] * 2.0;
    }
}
";

/// The device; where there is none the test is skipped, or fails with
/// `UNIMEM_REQUIRE_VULKAN` set (CI sets it).
fn device() -> Device {
    let device = harness::component(
        "UNIMEM_REQUIRE_VULKAN",
        "needs a wgpu device that imports host memory",
        Device::open(),
    );
    let info = device.device().adapter_info();
    println!("on {} ({:?}, {})", info.name, info.backend, info.driver);
    device
}

/// Runs `shader` once over `buffers` (bindings 0, 1, ...) with
/// `invocations` invocations, and submits it; the scope's end waits for it.
fn dispatch(device: &Device, shader: &str, buffers: &[&wgpu::Buffer], invocations: u32) {
    let d = device.device();
    let module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(shader.into()),
    });
    let pipeline = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let entries: std::vec::Vec<_> = buffers
        .iter()
        .enumerate()
        .map(|(i, buffer)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: buffer.as_entire_binding(),
        })
        .collect();
    let group = d.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    });
    let mut encoder = d.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(invocations.div_ceil(64), 1, 1);
    }
    device.queue().submit([encoder.finish()]);
}

/// Bytes wgpu's own allocator holds for buffers and textures.
fn allocated(device: &Device) -> u64 {
    device
        .device()
        .generate_allocator_report()
        .map_or(0, |report| report.total_allocated_bytes)
}

/// Checks that `buffer` is the `VkBuffer` the scope bound at `offset` of
/// the import `memory`, over `size` bytes: wgpu's own accessor names the
/// same handle, so wgpu uses the import itself, with no buffer of its own.
fn assert_no_copy<A: unimem::register::Regions>(
    scope: &unimem::wgpu::Scope<'_, A>,
    buffer: &wgpu::Buffer,
    import: &unimem::vulkan::BufferRange,
    size: u64,
) {
    let binding = scope.binding(buffer).expect("a buffer the scope made");
    // SAFETY: the handle is only compared.
    let raw = unsafe { buffer.as_hal::<wgpu::hal::api::Vulkan>() }
        .map(|hal| unsafe { hal.raw_handle() })
        .expect("a Vulkan buffer");
    assert_eq!(raw, binding.buffer, "wgpu uses the VkBuffer bound here");
    assert_eq!(binding.memory, import.memory, "bound to the import");
    assert_eq!(binding.offset, import.offset, "at the allocation's offset");
    assert_eq!(binding.size, size);
    assert_eq!(buffer.size(), size);
}

fn a_pass_doubles_a_vec_in_a_tape_in_place() {
    let device = device();
    let tape = Registered::new(&device, Tape::open_with(16 << 20, &options()).unwrap()).unwrap();
    let n = 1 << 20; // 4 MiB of f32
    let mut v: Vec<f32, _> = Vec::with_capacity_in(n, &*tape);
    v.extend((0..n).map(|i| i as f32));
    let at = v.as_ptr();
    let import = tape.import_of(&v).expect("in an imported part");
    let before = allocated(&device);
    tape.scope(|scope| {
        let buffer = scope.buffer_mut(&mut v, BufferUsages::STORAGE).unwrap();
        assert_no_copy(scope, &buffer, &import, (n * 4) as u64);
        dispatch(&device, DOUBLE, &[&buffer], n as u32);
        assert_eq!(
            allocated(&device),
            before,
            "wgpu allocated no memory for the buffer"
        );
    });
    // The pass wrote the Vec's own pages: read them in place.
    assert_eq!(v.as_ptr(), at);
    for (i, &x) in v.iter().enumerate() {
        assert_eq!(x, 2.0 * i as f32, "value {i}");
    }
    // And again: the CPU's writes are what the next pass reads.
    v.iter_mut().for_each(|x| *x = 1.5);
    tape.scope(|scope| {
        let buffer = scope.buffer_mut(&mut v, BufferUsages::STORAGE).unwrap();
        dispatch(&device, DOUBLE, &[&buffer], n as u32);
    });
    assert!(v.iter().all(|&x| x == 3.0));
}

/// An allocator that hands out a Heap's memory and remembers the last
/// allocation it made: how the test finds a `HashMap`'s table.
struct Recording<'h> {
    heap: &'h Heap,
    last: Cell<Option<(NonNull<u8>, usize)>>,
}

// SAFETY: forwards to the Heap, which upholds the contract.
unsafe impl Allocator for &Recording<'_> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let memory = self.heap.allocate(layout)?;
        self.last.set(Some((memory.cast(), layout.size())));
        Ok(memory)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract, for memory the Heap gave.
        unsafe { self.heap.deallocate(ptr, layout) }
    }
}

fn a_pass_doubles_a_hashmaps_values_in_a_heap() {
    let device = device();
    let heap = Heap::lazy_with(64 << 20, options()).open_now().unwrap();
    // Commit what the test uses before registering: a Heap grows in steps,
    // and an allocation across two steps has no single buffer.
    let warm: Vec<u8, _> = Vec::with_capacity_in(8 << 20, &heap);
    drop(warm);
    let heap = Registered::new(&device, heap).unwrap();
    let recording = Recording {
        heap: &heap,
        last: Cell::new(None),
    };
    let n = 10_000u32;
    let mut map = hashbrown::HashMap::with_capacity_in(n as usize, &recording);
    let (table, table_len) = recording.last.get().expect("the table");
    for key in 0..n {
        map.insert(key, key as f32 * 0.5);
    }
    assert_eq!(
        recording.last.get(),
        Some((table, table_len)),
        "one table, never grown"
    );
    // Where each value lies in the table, in 4-byte words.
    let mut at: Vec<u32, _> = Vec::with_capacity_in(n as usize, &*heap);
    at.extend(map.values().map(|value| {
        let offset = (value as *const f32).addr() - table.as_ptr().addr();
        assert_eq!(offset % 4, 0);
        (offset / 4) as u32
    }));
    let table_import = import_at(&heap, table, table_len);
    let before = allocated(&device);
    heap.scope(|scope| {
        // SAFETY: the table is the map's one allocation, live and untouched
        // by the CPU until the scope ends (the map is not used meanwhile);
        // the pass writes only the f32 values `at` names, and any bits are
        // a valid f32.
        let values = unsafe { scope.buffer_raw(table, table_len, BufferUsages::STORAGE) }.unwrap();
        assert_no_copy(scope, &values, &table_import, table_len as u64);
        let at = scope.buffer_mut(&mut at, BufferUsages::STORAGE).unwrap();
        dispatch(&device, DOUBLE_AT, &[&values, &at], n);
        assert_eq!(allocated(&device), before);
    });
    // Every value doubled in the map itself; every key intact.
    assert_eq!(map.len(), n as usize);
    for key in 0..n {
        assert_eq!(map.get(&key), Some(&(key as f32)), "key {key}");
    }
}

/// The import that holds the `len` bytes at `ptr`.
fn import_at<A: unimem::register::Regions>(
    registered: &Registered<A>,
    ptr: NonNull<u8>,
    len: usize,
) -> unimem::vulkan::BufferRange {
    // SAFETY: only the address and length are used.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.as_ptr().cast_const(), 0) };
    let mut import = registered.import_of(bytes).expect("in an imported part");
    import.size = len as u64;
    import
}

fn memory_committed_after_registering_gets_buffers() {
    let device = device();
    let tape = Tape::open_with(2 << 20, &options().capacity(64 << 20)).unwrap();
    let tape = Registered::new(&device, tape).unwrap();
    assert_eq!(tape.chunks(), 1);
    // Cross the first commit: the next step is imported as it is committed.
    tape.take(3 << 20, 4096).unwrap();
    assert_eq!(tape.chunks(), 2, "the second commit was imported");
    let mut v: Vec<f32, _> = Vec::with_capacity_in(4096, &*tape);
    v.resize(4096, 0.25);
    tape.scope(|scope| {
        let buffer = scope.buffer_mut(&mut v, BufferUsages::STORAGE).unwrap();
        dispatch(&device, DOUBLE, &[&buffer], 4096);
    });
    assert!(v.iter().all(|&x| x == 0.5));
    // Bytes across the two parts have no buffer.
    let across = NonNull::new(tape.block().as_ptr().wrapping_add((2 << 20) - 64)).unwrap();
    tape.scope(|scope| {
        // SAFETY: refused before any buffer is made.
        let refused = unsafe { scope.buffer_raw(across, 128, BufferUsages::STORAGE) };
        assert!(
            matches!(
                refused,
                Err(Error::Wgpu(WgpuError::NotRegistered { len: 128, .. }))
            ),
            "{refused:?}"
        );
    });
}

fn misuse_is_a_typed_error() {
    let device = device();
    let alignment = device.buffer_alignment(BufferUsages::STORAGE).unwrap();
    println!("storage buffers over host memory start on multiples of {alignment} bytes");
    assert!(alignment.is_power_of_two() && alignment <= 4096);
    let tape = Registered::new(&device, Tape::open_with(1 << 20, &options()).unwrap()).unwrap();
    let mut first: Vec<f32, _> = Vec::with_capacity_in(1, &*tape);
    first.push(1.0);
    let mut second: Vec<f32, _> = Vec::with_capacity_in(16, &*tape);
    second.resize(16, 1.0);
    let empty: Vec<f32, _> = Vec::new_in(&*tape);
    let mut outside = std::vec![0f32; 1024];
    let mut mapped = std::vec![0f32; 1024];
    assert_eq!(first.as_ptr().addr(), tape.block().as_ptr().addr());
    let mut shared: Vec<f32, _> = Vec::with_capacity_in(1024, &*tape);
    shared.resize(1024, 0.0);
    tape.scope(|scope| {
        let storage = BufferUsages::STORAGE;
        // 4 bytes into the Tape: short of the device's alignment.
        if alignment > 4 {
            match scope.buffer_mut(&mut second, storage) {
                Err(Error::Wgpu(WgpuError::Misaligned { alignment: a, .. })) => {
                    assert_eq!(a, alignment)
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            scope.buffer_mut(&mut outside, storage),
            Err(Error::Wgpu(WgpuError::NotRegistered { len: 4096, .. }))
        ));
        assert!(matches!(
            scope.buffer(&empty, BufferUsages::COPY_SRC),
            Err(Error::Wgpu(WgpuError::Empty))
        ));
        // A shared borrow gives no usage the GPU writes through.
        for usage in [storage, BufferUsages::COPY_DST] {
            assert!(matches!(
                scope.buffer(&shared, usage),
                Err(Error::Wgpu(WgpuError::Usage { .. }))
            ));
        }
        assert!(matches!(
            scope.buffer_mut(&mut mapped, storage | BufferUsages::MAP_READ),
            Err(Error::Wgpu(WgpuError::Usage { .. }))
        ));
        // The first allocation of the Tape starts its Block: it has a buffer.
        let buffer = scope.buffer_mut(&mut first, storage).unwrap();
        assert_eq!(buffer.size(), 4);
    });
    assert_eq!(first[0], 1.0, "nothing ran over it");
}

/// Validation errors `f` raises on `device`, caught.
fn errors_of(device: &Device, f: impl FnOnce()) -> Option<wgpu::Error> {
    let scope = device
        .device()
        .push_error_scope(wgpu::ErrorFilter::Validation);
    f();
    block_on(scope.pop())
}

fn a_buffer_kept_past_its_scope_is_dead() {
    let device = device();
    let tape = Registered::new(&device, Tape::open_with(1 << 20, &options()).unwrap()).unwrap();
    let mut v: Vec<f32, _> = Vec::with_capacity_in(1024, &*tape);
    v.resize(1024, 1.0);
    // A clone of the buffer leaves the scope ...
    let kept = tape.scope(|scope| scope.buffer_mut(&mut v, BufferUsages::STORAGE).unwrap());
    // ... and so does one from a scope that unwinds.
    let mut w: Vec<f32, _> = Vec::with_capacity_in(1024, &*tape);
    w.resize(1024, 1.0);
    let escaped = Cell::new(None);
    let unwound = panic::catch_unwind(AssertUnwindSafe(|| {
        tape.scope(|scope| {
            escaped.set(Some(
                scope.buffer_mut(&mut w, BufferUsages::STORAGE).unwrap(),
            ));
            panic!("the pass failed");
        })
    }));
    assert!(unwound.is_err());
    // The memory goes back to the Tape's owner ...
    drop(v);
    drop(w);
    // ... and neither buffer can reach it: wgpu refuses both.
    for buffer in [kept, escaped.take().unwrap()] {
        let error = errors_of(&device, || dispatch(&device, DOUBLE, &[&buffer], 1024));
        let error = error.expect("wgpu refuses a destroyed buffer");
        println!("refused as it should be: {error}");
    }
}

fn a_device_without_the_extension_is_refused() {
    let ours = device();
    let info = ours.device().adapter_info();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::VULKAN,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapters = block_on(instance.enumerate_adapters(wgpu::Backends::VULKAN));
    let adapter = adapters
        .iter()
        .find(|a| a.get_info().name == info.name)
        .expect("the same adapter");
    let (plain, queue) = block_on(adapter.request_device(&Default::default())).unwrap();
    match Device::from_wgpu(&plain, &queue) {
        Err(Error::Vulkan(unimem::vulkan::VulkanError::MissingExtension { extension })) => {
            assert_eq!(extension, "VK_EXT_external_memory_host")
        }
        other => panic!("{other:?}"),
    }
    // A device opened through this crate's helper is taken as it is.
    Device::from_wgpu(ours.device(), ours.queue()).unwrap();
}

/// Without a driver (an ICD list that names none), opening is a typed error.
fn no_adapter_is_a_typed_error() {
    if std::env::var_os("UNIMEM_WGPU_CHILD").is_some() {
        match Device::open() {
            Err(Error::Wgpu(WgpuError::NoAdapter)) => println!("child saw NoAdapter"),
            other => panic!("expected no adapter, got {other:?}"),
        }
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "no_adapter_is_a_typed_error", "--nocapture"])
        .env("UNIMEM_WGPU_CHILD", "1")
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("child saw NoAdapter"), "{text}");
}

/// Polls a wgpu future to completion (native ones are ready at once).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::yield_now();
    }
}

fn main() {
    harness::main(&[
        test!(a_pass_doubles_a_vec_in_a_tape_in_place),
        test!(a_pass_doubles_a_hashmaps_values_in_a_heap),
        test!(memory_committed_after_registering_gets_buffers),
        test!(misuse_is_a_typed_error),
        test!(a_buffer_kept_past_its_scope_is_dead),
        test!(a_device_without_the_extension_is_refused),
        test!(no_adapter_is_a_typed_error),
    ]);
}
