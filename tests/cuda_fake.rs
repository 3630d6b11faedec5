//! Registration against a stand-in CUDA driver (tests/fake_cuda/libcuda.c),
//! so that the chunking, the device addresses and the unregistering are
//! checked on machines without a GPU. The stand-in gives device addresses
//! unlike the host ones, and can leave gaps between chunks or fail on demand.
//!
//! The parent test compiles the stand-in with the system C compiler and runs
//! this binary again with it first on LD_LIBRARY_PATH; the `fake_` tests do
//! their work only in that child (run directly, they are reported
//! `ignored`).

#[macro_use]
mod harness;

use std::path::PathBuf;
use std::process::Command;

use unimem::cuda::cudarc::driver::sys;
use unimem::cuda::{self, CudaError, Registered};
use unimem::{Block, BlockOptions, Error, Heap, Pinning, Tape};

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
    assert!(text.contains("test result: ok. 6 passed"), "{text}");
}

/// Outside the child, a `fake_` test is skipped: the stand-in is not loaded.
fn in_child() {
    if std::env::var_os(CHILD).is_none() {
        harness::skip("runs in the child of registration_against_a_stand_in_driver");
    }
}

fn options() -> BlockOptions<'static> {
    BlockOptions::new().pinning(Pinning::BestEffort)
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

fn main() {
    harness::main(&[
        test!(registration_against_a_stand_in_driver),
        test!(fake_contexts_and_devices),
        test!(fake_device_addresses_are_asked_of_the_driver),
        test!(fake_gaps_between_chunks_split_device_ranges),
        test!(fake_a_refused_registration_is_a_typed_error_and_undone),
        test!(fake_zero_chunk_sizes_and_unopened_blocks_are_errors),
        test!(fake_memory_committed_later_is_registered_as_it_is_committed),
    ]);
}
