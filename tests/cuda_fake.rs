//! Registration against a stand-in CUDA driver (tests/fake_cuda/libcuda.c),
//! so that the chunking, the device addresses and the unregistering are
//! checked on machines without a GPU. The stand-in gives device addresses
//! unlike the host ones, and can leave gaps between chunks or fail on demand.
//! Its copies follow the driver's ordering (copies with pinned memory are
//! queued and done later; pageable ones are done before the call returns),
//! so that the race of a bare registered slice in cudarc's copies, and the
//! order `HostBuffer` keeps, show here too.
//!
//! The parent test compiles the stand-in with the system C compiler and runs
//! this binary again with it first on LD_LIBRARY_PATH; the `fake_` tests do
//! their work only in that child (run directly, they are reported
//! `ignored`).

mod support;

#[macro_use]
mod harness;

use std::path::PathBuf;
use std::process::Command;

use allocator_api2::vec::Vec;
use support::options;
use unimem::cuda::cudarc::driver::sys;
use unimem::cuda::{self, CudaError, Registered};
use unimem::{Block, Error, Heap, Model, Node, Tape};

const CHILD: &str = "UNIMEM_FAKE_CUDA";

fn registration_against_a_stand_in_driver() {
    if std::env::var_os(CHILD).is_some() {
        harness::skip("the parent test");
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fake-cuda");
    std::fs::create_dir_all(&dir).unwrap();
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fake_cuda/libcuda.c");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = Command::new(&compiler)
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(dir.join("libcuda.so"))
        .arg(source)
        .status();
    match built {
        Ok(status) if status.success() => {}
        other => harness::skip(format_args!(
            "`{compiler}` could not build the stand-in driver ({other:?})"
        )),
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["fake_", "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .env("LD_LIBRARY_PATH", &dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{text}");
    assert!(text.contains("test result: ok. 11 passed"), "{text}");
}

/// Outside the child, a `fake_` test is skipped: the stand-in is not loaded.
fn in_child() {
    if std::env::var_os(CHILD).is_none() {
        harness::skip("runs in the child of registration_against_a_stand_in_driver");
    }
}

/// The stand-in's test hook `name`, of C type `F`.
fn hook<F: Copy>(name: &str) -> F {
    // SAFETY: the child runs with the stand-in first on the library path, so
    // cudarc loaded it; it exports these hooks with the C types the callers
    // below give.
    unsafe {
        let lib = sys::culib();
        *lib.get::<F>(format!("{name}\0").as_bytes()).unwrap()
    }
}

fn configure(gaps: bool, fail_at: i32) {
    let f: unsafe extern "C" fn(i32, i32) = hook("fake_configure");
    // SAFETY: `void fake_configure(int, int)`.
    unsafe { f(i32::from(gaps), fail_at) }
}

fn registered_bytes() -> u64 {
    let f: unsafe extern "C" fn() -> u64 = hook("fake_registered_bytes");
    // SAFETY: `uint64_t fake_registered_bytes(void)`.
    unsafe { f() }
}

fn offset() -> u64 {
    let f: unsafe extern "C" fn() -> u64 = hook("fake_offset");
    // SAFETY: `uint64_t fake_offset(void)`.
    unsafe { f() }
}

fn fake_contexts_and_devices() {
    in_child();
    assert!(cuda::driver_present());
    let ctx = cuda::context(0).unwrap();
    assert_eq!(ctx.ordinal(), 0);
    match cuda::context(1) {
        Err(Error::Cuda(CudaError::NoDevice {
            ordinal: 1,
            count: 1,
        })) => {}
        other => panic!("expected NoDevice, got {other:?}"),
    }
}

fn fake_device_addresses_are_asked_of_the_driver() {
    in_child();
    configure(false, 0);
    let ctx = cuda::context(0).unwrap();
    let tape = Tape::open_with(1 << 20, &options()).unwrap();
    let tape = Registered::with_chunk_size(&ctx, tape, 256 << 10).unwrap();
    assert_eq!(tape.chunks(), 4);
    assert_eq!(registered_bytes(), 1 << 20);
    let base = tape.block().as_ptr();
    let device = tape.device_ptr_of(base).unwrap();
    assert_eq!(
        device,
        base as u64 + offset(),
        "the driver's address, not the host's"
    );
    let p = tape.take(100_000, 64).unwrap();
    let start = p as u64 - base as u64;
    assert_eq!(tape.device_range(p, 100_000), Some(device + start));
    // Contiguous chunks: a range across a chunk boundary has one address.
    let across = base.wrapping_add((256 << 10) - 8);
    assert_eq!(
        tape.device_range(across, 16),
        Some(device + (256 << 10) - 8)
    );
    // Outside the Block: none.
    assert_eq!(tape.device_ptr_of(base.wrapping_add(1 << 20)), None);
    assert_eq!(tape.device_range(base, (1 << 20) + 1), None);
    drop(tape);
    assert_eq!(registered_bytes(), 0, "dropping unregisters every chunk");
}

fn fake_gaps_between_chunks_split_device_ranges() {
    in_child();
    configure(true, 0);
    let ctx = cuda::context(0).unwrap();
    let block = Block::open_with(1 << 20, &options()).unwrap();
    let registered = Registered::with_chunk_size(&ctx, block, 512 << 10).unwrap();
    let base = registered.as_ptr();
    let first = registered.device_ptr_of(base).unwrap();
    let second = registered
        .device_ptr_of(base.wrapping_add(512 << 10))
        .unwrap();
    assert_ne!(second, first + (512 << 10), "the stand-in left a gap");
    assert_eq!(registered.device_range(base, 512 << 10), Some(first));
    assert_eq!(
        registered.device_range(base.wrapping_add((512 << 10) - 4), 8),
        None,
        "a range across a gap has no single device address"
    );
    let block = registered.into_inner();
    assert_eq!(registered_bytes(), 0, "into_inner unregisters");
    assert_eq!(block.size(), 1 << 20);
    configure(false, 0);
}

fn fake_a_refused_registration_is_a_typed_error_and_undone() {
    in_child();
    let ctx = cuda::context(0).unwrap();
    // Fail the third chunk: the first two must be unregistered again.
    configure(false, 3);
    let block = Block::open_with(1 << 20, &options()).unwrap();
    let error = Registered::with_chunk_size(&ctx, &block, 256 << 10).unwrap_err();
    match &error {
        Error::Cuda(CudaError::Driver { call, error }) => {
            assert_eq!(*call, "cuMemHostRegister");
            assert_eq!(error.0, sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(error.to_string().contains("CUDA error 2"), "{error}");
    assert_eq!(registered_bytes(), 0);

    // Registering the same pages twice is refused by the driver.
    configure(false, 0);
    let first = Registered::new(&ctx, &block).unwrap();
    match Registered::new(&ctx, &block) {
        Err(Error::Cuda(CudaError::Driver { error, .. })) => {
            assert_eq!(
                error.0 as i32, 712,
                "CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        registered_bytes(),
        1 << 20,
        "the refusal left the first alone"
    );
    drop(first);
    assert_eq!(registered_bytes(), 0);
}

fn fake_zero_chunk_sizes_and_unopened_blocks_are_errors() {
    in_child();
    let ctx = cuda::context(0).unwrap();
    let tape = Tape::open_with(4096, &options()).unwrap();
    assert!(matches!(
        Registered::with_chunk_size(&ctx, tape, 0),
        Err(Error::ZeroSize)
    ));
    let broken = Tape::lazy_with(0, options());
    assert!(matches!(
        Registered::new(&ctx, broken),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(registered_bytes(), 0);
}

fn fake_memory_committed_later_is_registered_as_it_is_committed() {
    in_child();
    configure(false, 0);
    let ctx = cuda::context(0).unwrap();
    let tape = Tape::open_with(1 << 20, &options().capacity(64 << 20)).unwrap();
    let tape = Registered::new(&ctx, tape).unwrap();
    assert_eq!(registered_bytes(), 1 << 20);
    let p = tape.take(10 << 20, 64).unwrap();
    assert_eq!(
        registered_bytes() as usize,
        tape.committed(),
        "the growth is registered"
    );
    let base = tape.block().as_ptr();
    assert_eq!(
        tape.device_range(p, 10 << 20),
        Some(p as u64 - base as u64 + tape.device_ptr_of(base).unwrap()),
        "one device range across the commits"
    );
    drop(tape);
    assert_eq!(registered_bytes(), 0);

    // A Heap's arenas opened after the registration are registered too.
    let heap = Heap::lazy_with(4 << 20, options()).open_now().unwrap();
    let heap = Registered::new(&ctx, heap).unwrap();
    let layout = std::alloc::Layout::from_size_align(3 << 20, 4096).unwrap();
    let first = allocator_api2::alloc::Allocator::allocate(&*heap, layout).unwrap();
    let second = allocator_api2::alloc::Allocator::allocate(&*heap, layout).unwrap();
    assert_eq!(heap.stats().blocks, 2, "the second needed a new arena");
    let committed: usize = heap.blocks().iter().map(|b| b.committed()).sum();
    assert_eq!(registered_bytes() as usize, committed);
    for block in [first, second] {
        let device = heap.device_range(block.cast::<u8>().as_ptr(), 3 << 20);
        assert_eq!(device, Some(block.cast::<u8>().as_ptr() as u64 + offset()));
    }
    // SAFETY: allocated above with `layout`.
    unsafe {
        allocator_api2::alloc::Allocator::deallocate(&*heap, first.cast(), layout);
        allocator_api2::alloc::Allocator::deallocate(&*heap, second.cast(), layout);
    }
    drop(heap);
    assert_eq!(registered_bytes(), 0, "every range unregistered");
}

/// Copies queued in the stand-in and not done yet.
fn pending() -> u64 {
    let f: unsafe extern "C" fn() -> u64 = hook("fake_pending");
    // SAFETY: `uint64_t fake_pending(void)`.
    unsafe { f() }
}

const N: usize = 4096;

/// A bare slice of registered memory handed to cudarc's copies races: the
/// copy is queued, the call returns, and the program's next write lands in
/// what the device reads (host to device), or the program reads before the
/// bytes land (device to host). Through a `HostBuffer` neither happens.
fn fake_a_bare_registered_slice_races_and_a_host_buffer_does_not() {
    in_child();
    let ctx = cuda::context(0).unwrap();
    // A second stream: cudarc's multi-stream mode, where copies are
    // asynchronous and ordered by events.
    let stream = ctx.new_stream().unwrap();
    assert!(ctx.is_managing_stream_synchronization());
    let tape = Registered::new(&ctx, Tape::open_with(1 << 20, &options()).unwrap()).unwrap();
    // SAFETY: filled before it is read.
    let mut device = unsafe { stream.alloc::<u32>(N) }.unwrap();

    // Host to device from a bare slice: the write after the call wins.
    let mut bare: Vec<u32, _> = Vec::with_capacity_in(N, &*tape);
    bare.resize(N, 1);
    stream.memcpy_htod(&bare[..], &mut device).unwrap();
    assert_eq!(pending(), 1, "the copy from pinned memory is queued");
    bare.fill(2);
    let seen = stream.clone_dtoh(&device).unwrap();
    assert!(
        seen.iter().all(|&x| x == 2),
        "the race: the device read the later write"
    );

    // Through a buffer: host access waits for the copy.
    let mut values: Vec<u32, _> = Vec::with_capacity_in(N, &*tape);
    values.resize(N, 1);
    let mut buffer = tape.host_buffer(values).unwrap();
    stream.memcpy_htod(&buffer, &mut device).unwrap();
    assert_eq!(pending(), 1, "queued, not done");
    buffer.as_mut_slice().unwrap().fill(2);
    let seen = stream.clone_dtoh(&device).unwrap();
    assert!(
        seen.iter().all(|&x| x == 1),
        "the device read what was there at the call"
    );

    // Device to host into a bare slice: read right after, stale.
    stream.memcpy_htod(&vec![7u32; N], &mut device).unwrap();
    stream.memcpy_dtoh(&device, &mut bare[..]).unwrap();
    assert!(
        bare.iter().all(|&x| x == 2),
        "the race: the bytes have not landed"
    );
    stream.synchronize().unwrap();
    assert!(bare.iter().all(|&x| x == 7));

    // Into a buffer: read right after, the new bytes.
    stream.memcpy_htod(&vec![9u32; N], &mut device).unwrap();
    stream.memcpy_dtoh(&device, &mut buffer).unwrap();
    assert_eq!(pending(), 1);
    assert!(buffer.as_slice().unwrap().iter().all(|&x| x == 9));
    let values = buffer.into_vec().unwrap();
    assert!(values.iter().all(|&x| x == 9));
    drop((values, bare, device));
    assert_eq!(pending(), 0);
}

/// Memory outside the registration is no host buffer, and the Vec comes
/// back.
fn fake_a_host_buffer_needs_registered_memory() {
    in_child();
    let ctx = cuda::context(0).unwrap();
    let tape = Registered::new(&ctx, Tape::open_with(1 << 20, &options()).unwrap()).unwrap();
    let elsewhere = Tape::open_with(1 << 20, &options()).unwrap();
    let mut v: Vec<u32, _> = Vec::with_capacity_in(16, &elsewhere);
    v.push(3);
    let rejected = tape.host_buffer(v).unwrap_err();
    assert!(
        matches!(rejected.error, Error::InvalidArgument { .. }),
        "{rejected}"
    );
    assert_eq!(rejected.vec[0], 3, "the Vec comes back untouched");
    // An empty Vec has no memory to check.
    let empty: Vec<u32, _> = Vec::new_in(&elsewhere);
    assert!(tape.host_buffer(empty).is_ok());
}

/// Where cudarc records no events (one stream), a copy through a buffer is
/// done before the call returns.
fn fake_with_one_stream_a_copy_is_done_when_it_returns() {
    in_child();
    let ctx = cuda::context(0).unwrap();
    assert!(!ctx.is_managing_stream_synchronization());
    let stream = ctx.default_stream();
    let tape = Registered::new(&ctx, Tape::open_with(1 << 20, &options()).unwrap()).unwrap();
    let mut values: Vec<u32, _> = Vec::with_capacity_in(N, &*tape);
    values.resize(N, 4);
    let buffer = tape.host_buffer(values).unwrap();
    // SAFETY: filled before it is read.
    let mut device = unsafe { stream.alloc::<u32>(N) }.unwrap();
    stream.memcpy_htod(&buffer, &mut device).unwrap();
    assert_eq!(pending(), 0, "synchronized after the copy");
}

/// Memory handed out again without a free — a registered Tape's clear, a
/// Model's pass ending — waits for the copies of every buffer over it, a
/// leaked one too.
fn fake_reuse_waits_for_the_copies_of_leaked_buffers() {
    in_child();
    let ctx = cuda::context(0).unwrap();
    let stream = ctx.new_stream().unwrap();
    // SAFETY: filled before it is read.
    let mut device = unsafe { stream.alloc::<u32>(N) }.unwrap();

    let mut tape = Registered::new(&ctx, Tape::open_with(1 << 20, &options()).unwrap()).unwrap();
    let mut values: Vec<u32, _> = Vec::with_capacity_in(N, &*tape);
    values.resize(N, 5);
    let buffer = tape.host_buffer(values).unwrap();
    stream.memcpy_htod(&buffer, &mut device).unwrap();
    core::mem::forget(buffer);
    assert_eq!(pending(), 1);
    tape.clear();
    assert_eq!(pending(), 0, "the clear waited for the copy");
    let p = tape.take(N * 4, 64).unwrap().cast::<u32>();
    // SAFETY: N u32s just taken (the leaked buffer's memory again).
    unsafe { core::slice::from_raw_parts_mut(p, N) }.fill(6);
    let seen = stream.clone_dtoh(&device).unwrap();
    assert!(
        seen.iter().all(|&x| x == 5),
        "the device read the values at the call"
    );

    let model = Registered::new(
        &ctx,
        Model::open_with(1 << 20, 1 << 20, 1 << 20, &options()).unwrap(),
    )
    .unwrap();
    let talk = model.talk().unwrap();
    {
        let pass = talk.pass().unwrap();
        let mut values: Vec<u32, _> = Vec::with_capacity_in(N, pass.scratch());
        values.resize(N, 8);
        let buffer = model.host_buffer(values).unwrap();
        stream.memcpy_htod(&buffer, &mut device).unwrap();
        core::mem::forget(buffer);
        assert_eq!(pending(), 1);
    }
    assert_eq!(pending(), 0, "the pass waited for the copy as it ended");
    let pass = talk.pass().unwrap();
    let p = pass.scratch().take(N * 4, 64).unwrap().cast::<u32>();
    // SAFETY: N u32s just taken.
    unsafe { core::slice::from_raw_parts_mut(p, N) }.fill(9);
    let seen = stream.clone_dtoh(&device).unwrap();
    assert!(seen.iter().all(|&x| x == 8));
}

fn fake_the_node_near_a_device_comes_from_its_pci_address() {
    in_child();
    // The stand-in's own address names no device here: the lookup says so.
    assert_eq!(cuda::pci_bus_id(0).unwrap(), "FFFF:FF:1F.7");
    match Node::near_cuda(0) {
        Err(Error::Os { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            assert!(source.to_string().contains("ffff:ff:1f.7"), "{source}");
        }
        other => panic!("expected no such PCI device, got {other:?}"),
    }
    assert!(matches!(
        Node::near_cuda(1),
        Err(Error::Cuda(CudaError::NoDevice {
            ordinal: 1,
            count: 1
        }))
    ));
    // A device this machine has, written as the driver writes addresses
    // (eight-digit domain, capitals): its node is what sysfs says.
    let device = std::fs::read_dir("/sys/bus/pci/devices")
        .ok()
        .and_then(|mut dir| dir.next())
        .and_then(Result::ok)
        .map(|entry| entry.file_name().into_string().unwrap());
    let Some(device) = device else {
        return;
    };
    let (domain, rest) = device.split_once(':').unwrap();
    let driver_style = format!("0000{domain}:{}", rest.to_uppercase());
    // SAFETY: the harness runs tests on this one thread, and nothing else
    // reads the environment meanwhile.
    unsafe { std::env::set_var("FAKE_CUDA_PCI_BUS_ID", &driver_style) };
    assert_eq!(cuda::pci_bus_id(0).unwrap(), driver_style);
    let near = Node::near_cuda(0).unwrap();
    assert_eq!(near, Node::near_pci(&device).unwrap(), "{device}");
    // SAFETY: as above.
    unsafe { std::env::remove_var("FAKE_CUDA_PCI_BUS_ID") };
}

fn main() {
    harness::main(&[
        test!(registration_against_a_stand_in_driver),
        test!(fake_contexts_and_devices),
        test!(fake_device_addresses_are_asked_of_the_driver),
        test!(fake_gaps_between_chunks_split_device_ranges),
        test!(fake_a_refused_registration_is_a_typed_error_and_undone),
        test!(fake_zero_chunk_sizes_and_unopened_blocks_are_errors),
        test!(fake_memory_committed_later_is_registered_as_it_is_committed),
        test!(fake_a_bare_registered_slice_races_and_a_host_buffer_does_not),
        test!(fake_a_host_buffer_needs_registered_memory),
        test!(fake_with_one_stream_a_copy_is_done_when_it_returns),
        test!(fake_reuse_waits_for_the_copies_of_leaked_buffers),
        test!(fake_the_node_near_a_device_comes_from_its_pci_address),
    ]);
}
