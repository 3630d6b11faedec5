//! A GPU reads and writes the same pages as the CPU: kernels work on `Vec`s
//! allocated in a Tape (and cells of a Grid) over registered Blocks, with no
//! copy anywhere. Without a driver or a device each test is reported
//! `ignored` with the reason (unless `UNIMEM_REQUIRE_CUDA` is set, which
//! makes that a failure).

mod support;

#[macro_use]
mod harness;

use std::sync::Arc;

use allocator_api2::vec::Vec;
use support::options;
use unimem::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
use unimem::cuda::cudarc::nvrtc::Ptx;
use unimem::cuda::{self, CudaContext, CudaError, Registered};
use unimem::{Block, Error, Grid, Node, Placement, Tape};

const PTX: &str = include_str!("../kernels/zero_copy.ptx");

/// Device 0; without a driver or device the test is skipped, or fails with
/// `UNIMEM_REQUIRE_CUDA` set (the GPU runner sets it).
fn gpu() -> Arc<CudaContext> {
    match cuda::context(0) {
        Ok(ctx) => {
            println!("on {}", ctx.name().unwrap_or_default());
            ctx
        }
        Err(Error::Cuda(error @ (CudaError::NoDriver | CudaError::NoDevice { .. }))) => {
            harness::component("UNIMEM_REQUIRE_CUDA", "needs an NVIDIA GPU", Err(error))
        }
        Err(error) => panic!("{error}"),
    }
}

fn kernels_write_and_read_a_vec_in_a_registered_tape() {
    let ctx = gpu();
    let module = ctx.load_module(Ptx::from_src(PTX)).unwrap();
    let write = module.load_function("write_affine").unwrap();
    let add = module.load_function("add_scalar").unwrap();
    let stream = ctx.default_stream();

    let tape = Registered::new(&ctx, Tape::open_with(64 << 20, &options()).unwrap()).unwrap();
    const N: usize = 1 << 20;
    let n = N as u32;
    let mut values: Vec<f32, _> = Vec::with_capacity_in(N, &*tape);
    values.resize(N, 0.0);
    let device_values = tape.device_slice(&values).expect("in the registered Block");
    let offset = values.as_ptr() as usize - tape.block().as_ptr() as usize;
    assert_eq!(
        tape.device_ptr_of(tape.block().as_ptr()).unwrap() + offset as u64,
        device_values,
        "block device pointer + offset"
    );

    // The GPU writes into the Vec; the CPU reads the results from it.
    let (a, b) = (2.0f32, 1.0f32);
    // SAFETY: the kernel writes `n` f32s at `device_values`, which is `values`.
    unsafe {
        stream
            .launch_builder(&write)
            .arg(&device_values)
            .arg(&n)
            .arg(&a)
            .arg(&b)
            .launch(LaunchConfig::for_num_elems(n))
    }
    .unwrap();
    stream.synchronize().unwrap();
    for (i, &x) in values.iter().enumerate() {
        assert_eq!(x, a * i as f32 + b, "element {i} written by the GPU");
    }

    // The CPU writes; a second kernel reads those writes into another Vec.
    for (i, x) in values.iter_mut().enumerate() {
        *x = (i % 1000) as f32;
    }
    let mut sums: Vec<f32, _> = Vec::with_capacity_in(N, &*tape);
    sums.resize(N, -1.0);
    let device_sums = tape.device_slice(&sums).unwrap();
    let c = 0.5f32;
    // SAFETY: the kernel reads `n` f32s of `values` and writes `n` of `sums`.
    unsafe {
        stream
            .launch_builder(&add)
            .arg(&device_values)
            .arg(&device_sums)
            .arg(&n)
            .arg(&c)
            .launch(LaunchConfig::for_num_elems(n))
    }
    .unwrap();
    stream.synchronize().unwrap();
    for (i, &x) in sums.iter().enumerate() {
        assert_eq!(x, (i % 1000) as f32 + c, "element {i} read by the GPU");
    }
    println!(
        "GPU {} wrote and read {N} floats in a registered Tape",
        ctx.name().unwrap()
    );
}

fn blocks_register_in_chunks_and_stay_contiguous() {
    let ctx = gpu();
    let module = ctx.load_module(Ptx::from_src(PTX)).unwrap();
    let write = module.load_function("write_affine").unwrap();
    let stream = ctx.default_stream();
    let tape = Tape::open_with(16 << 20, &options()).unwrap();
    let tape = Registered::with_chunk_size(&ctx, tape, 1 << 20).unwrap();
    assert_eq!(tape.chunks(), 16);
    // A Vec that spans every chunk boundary.
    const N: usize = (15 << 20) / 4;
    let mut values: Vec<f32, _> = Vec::with_capacity_in(N, &*tape);
    values.resize(N, 0.0);
    let device = tape
        .device_slice(&values)
        .expect("the driver maps the chunks contiguously");
    let n = N as u32;
    // SAFETY: writes `n` f32s into `values`.
    unsafe {
        stream
            .launch_builder(&write)
            .arg(&device)
            .arg(&n)
            .arg(&1.0f32)
            .arg(&0.0f32)
            .launch(LaunchConfig::for_num_elems(n))
    }
    .unwrap();
    stream.synchronize().unwrap();
    assert!(values.iter().enumerate().all(|(i, &x)| x == i as f32));
    assert_eq!(
        tape.device_range(values.as_ptr(), 17 << 20),
        None,
        "past the Block"
    );
}

fn grid_cells_have_device_addresses() {
    let ctx = gpu();
    let module = ctx.load_module(Ptx::from_src(PTX)).unwrap();
    let write = module.load_function("write_affine").unwrap();
    let stream = ctx.default_stream();
    let grid = Registered::new(&ctx, Grid::<4096, 8>::open_with(&options()).unwrap()).unwrap();
    let cells: std::vec::Vec<_> = (0..8).map(|_| grid.take().unwrap()).collect();
    for (k, cell) in cells.iter().enumerate() {
        let device = grid.device_range(cell.address(), 4096).unwrap();
        // SAFETY: writes 1024 f32s into this cell.
        unsafe {
            stream
                .launch_builder(&write)
                .arg(&device)
                .arg(&1024u32)
                .arg(&0.0f32)
                .arg(&(k as f32))
                .launch(LaunchConfig::for_num_elems(1024))
        }
        .unwrap();
    }
    stream.synchronize().unwrap();
    for (k, cell) in cells.iter().enumerate() {
        // SAFETY: the cell holds 1024 f32s, written by the kernel.
        let floats = unsafe { std::slice::from_raw_parts(cell.address().cast::<f32>(), 1024) };
        assert!(floats.iter().all(|&x| x == k as f32), "cell {k}");
    }
}

fn a_refused_registration_is_a_typed_error() {
    let ctx = gpu();
    let block = Block::open_with(1 << 20, &options()).unwrap();
    let first = Registered::new(&ctx, &block).unwrap();
    let Err(error) = Registered::new(&ctx, &block) else {
        panic!("the driver registered the same pages twice");
    };
    match &error {
        Error::Cuda(CudaError::Driver { call, error: code }) => {
            assert_eq!(*call, "cuMemHostRegister");
            assert_ne!(code.0 as i32, 0);
        }
        other => panic!("unexpected: {other}"),
    }
    assert!(error.to_string().contains("CUDA error"), "{error}");
    drop(first);
    // Unregistered on drop: registering again works.
    Registered::new(&ctx, &block).unwrap();
}

fn without_a_driver_context_is_an_error_not_a_panic() {
    if cuda::driver_present() {
        harness::skip("a driver is present");
    }
    assert!(matches!(
        cuda::context(0),
        Err(Error::Cuda(CudaError::NoDriver))
    ));
}

/// A device-to-host copy into a `HostBuffer`, read right after the call,
/// never shows stale bytes; a host-to-device copy from one is not disturbed
/// by writes right after the call. Over many rounds, on a stream of its own
/// (cudarc's asynchronous mode).
fn host_buffers_order_cudarc_copies() {
    let ctx = gpu();
    let stream = ctx.new_stream().unwrap();
    let tape = Registered::new(&ctx, Tape::open_with(64 << 20, &options()).unwrap()).unwrap();
    const N: usize = 4 << 20;
    let mut values: Vec<u32, _> = Vec::with_capacity_in(N, &*tape);
    values.resize(N, 0);
    let mut buffer = tape.host_buffer(values).unwrap();
    // SAFETY: written before it is read.
    let mut device = unsafe { stream.alloc::<u32>(N) }.unwrap();
    for round in 1..=20u32 {
        buffer.as_mut_slice().unwrap().fill(round);
        stream.memcpy_htod(&buffer, &mut device).unwrap();
        // Right after the call: the copy must still read `round`.
        buffer.as_mut_slice().unwrap().fill(u32::MAX);
        stream.memcpy_dtoh(&device, &mut buffer).unwrap();
        let back = buffer.as_slice().unwrap();
        assert!(
            back.iter().all(|&x| x == round),
            "round {round}: stale or disturbed bytes"
        );
    }
}

fn a_tape_near_the_gpu_has_its_pages_on_the_gpus_node() {
    let ctx = gpu();
    let bus_id = cuda::pci_bus_id(0).unwrap();
    let near = Node::near_cuda(0).unwrap();
    match near {
        Some(node) => println!("GPU 0 at PCI {bus_id} is nearest NUMA {node}"),
        None => println!("GPU 0 at PCI {bus_id}: the kernel names no NUMA node (one node)"),
    }
    let options = options().node(near).placement(Placement::Required);
    let (tape, bound) = match Tape::open_with(64 << 20, &options) {
        Ok(tape) => (tape, true),
        // A container that forbids memory policies: say so, go on unbound.
        Err(error @ Error::Placement { .. }) => {
            println!("not bound: {error}");
            let options = options.placement(Placement::BestEffort).quiet(true);
            (Tape::open_with(64 << 20, &options).unwrap(), false)
        }
        Err(error) => panic!("{error}"),
    };
    let tape = Registered::new(&ctx, tape).unwrap();
    assert_eq!(tape.block().node(), near.filter(|_| bound));
    let mut values: Vec<u8, _> = Vec::with_capacity_in(32 << 20, &*tape);
    values.resize(32 << 20, 1);
    assert!(tape.device_slice(&values).is_some());
    let nodes = tape.block().nodes().unwrap();
    println!("the registered Tape's pages: {nodes:?}");
    if let Some(node) = near.filter(|_| bound) {
        assert_eq!(nodes, [(node, tape.block().committed())]);
    }
}

fn main() {
    harness::main(&[
        test!(kernels_write_and_read_a_vec_in_a_registered_tape),
        test!(blocks_register_in_chunks_and_stay_contiguous),
        test!(grid_cells_have_device_addresses),
        test!(a_refused_registration_is_a_typed_error),
        test!(without_a_driver_context_is_an_error_not_a_panic),
        test!(host_buffers_order_cudarc_copies),
        test!(a_tape_near_the_gpu_has_its_pages_on_the_gpus_node),
    ]);
}
