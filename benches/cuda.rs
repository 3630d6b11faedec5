//! Host–GPU figures for registered Blocks, printed as a table:
//!
//! - host-to-device copy bandwidth from a registered Block, from a Block that
//!   is only `mlock`ed, from pageable `Vec` memory and from `cuMemHostAlloc`
//!   memory;
//! - a kernel's read bandwidth from a mapped registered Block, from mapped
//!   `cuMemHostAlloc` memory and (for scale) from device memory;
//! - the cost of 10 000 pinned, device-mapped 4 KiB buffers: taken from a
//!   Tape over a registered Block, or one `cuMemHostAlloc` each;
//! - the time to register (and unregister) a committed 1 GiB Block, against
//!   `cuMemHostAlloc` of 1 GiB;
//! - cudarc's own copies (`memcpy_htod`, `memcpy_dtoh` on a second stream,
//!   each waited for): from and to a `HostBuffer` in a registered Tape, a
//!   cudarc `PinnedHostSlice`, and a plain `Vec`;
//! - the GPU's NUMA node (from its PCI address) and, on a machine of two
//!   nodes or more, host-to-device and device-to-host copy bandwidth from a
//!   registered Block on the GPU's node against one on another node
//!   (elsewhere it says why there is nothing to compare).
//!
//! Run with `cargo bench -p unimem-benches --features cuda --bench cuda`. Without a driver or a
//! device it prints why and exits successfully (unless `UNIMEM_REQUIRE_CUDA`
//! is set, as the GPU runner `tools/gpu-bundle.sh` sets it).

use std::ffi::c_void;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use unimem::allocator_api2::vec::Vec as InVec;
use unimem::cuda::cudarc::driver::{
    CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg, result, sys,
};
use unimem::cuda::cudarc::nvrtc::Ptx;
use unimem::cuda::{self, Registered};
use unimem::{Block, BlockOptions, Error, Node, Pinning, Placement, Tape};

const PTX: &str = include_str!("../kernels/zero_copy.ptx");
const BYTES: usize = 256 << 20;
const REPEATS: usize = 10;
const BUFFERS: usize = 10_000;

fn gb_per_s(bytes: usize, time: Duration) -> f64 {
    bytes as f64 / time.as_secs_f64() / 1e9
}

/// Best and median of `REPEATS` timings of `f`, after two warm-ups.
fn time(mut f: impl FnMut()) -> (Duration, Duration) {
    f();
    f();
    let mut times: Vec<Duration> = (0..REPEATS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    (times[0], times[REPEATS / 2])
}

struct Table {
    rows: Vec<(String, String, String)>,
}

impl Table {
    fn bandwidth(&mut self, what: &str, (best, median): (Duration, Duration)) -> f64 {
        let best = gb_per_s(BYTES, best);
        self.rows.push((
            what.to_string(),
            format!("{best:.1} GB/s"),
            format!("{:.1} GB/s", gb_per_s(BYTES, median)),
        ));
        best
    }

    fn row(&mut self, what: &str, best: String, median: String) {
        self.rows.push((what.to_string(), best, median));
    }

    fn print(&self) {
        let width = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        println!("| {:width$} | best | median |", "measure");
        println!("|{}|---|---|", "-".repeat(width + 2));
        for (what, best, median) in &self.rows {
            println!("| {what:width$} | {best} | {median} |");
        }
    }
}

/// Copies `BYTES` from `src` to `dst` with the synchronous driver copy.
fn htod(dst: sys::CUdeviceptr, src: *const u8) {
    // SAFETY: `dst` is a device allocation of BYTES, `src` BYTES of host memory.
    unsafe { sys::cuMemcpyHtoD_v2(dst, src.cast::<c_void>(), BYTES) }
        .result()
        .unwrap();
}

/// Copies `BYTES` from `src` (device) to `dst` (host) with the synchronous
/// driver copy.
fn dtoh(dst: *mut u8, src: sys::CUdeviceptr) {
    // SAFETY: `src` is a device allocation of BYTES, `dst` BYTES of host memory.
    unsafe { sys::cuMemcpyDtoH_v2(dst.cast::<c_void>(), src, BYTES) }
        .result()
        .unwrap();
}

/// The GPU's NUMA node, and copies from and into registered Blocks on it
/// and on another node, where there is one: rows of `table`, and a line.
fn numa(ctx: &Arc<CudaContext>, device: sys::CUdeviceptr, table: &mut Table) {
    let bus_id = cuda::pci_bus_id(ctx.ordinal()).unwrap();
    let near = match Node::near_cuda(ctx.ordinal()) {
        Ok(Some(node)) => node,
        Ok(None) => {
            println!(
                "NUMA: GPU at PCI {bus_id}: the kernel names no node for it (one node): nothing to compare"
            );
            return;
        }
        Err(error) => {
            println!("NUMA: GPU at PCI {bus_id}: {error}");
            return;
        }
    };
    let nodes = Node::with_memory().unwrap();
    println!("NUMA: GPU at PCI {bus_id} is nearest {near}; nodes with memory: {nodes:?}");
    let Some(far) = nodes.iter().copied().find(|&node| node != near) else {
        println!("NUMA: one node with memory: no far Block to compare");
        return;
    };
    let mut rates = Vec::new();
    for (side, node) in [("near", near), ("far", far)] {
        let options = BlockOptions::new()
            .pinning(Pinning::BestEffort)
            .node(Some(node))
            .placement(Placement::Required);
        let mut block = match Block::open_with(BYTES, &options) {
            Ok(block) => block,
            Err(error) => {
                println!("NUMA: a Block on {node}: {error}");
                return;
            }
        };
        block.as_bytes_mut().fill(1);
        println!(
            "NUMA: the {side} Block's pages: {:?}",
            block.nodes().unwrap()
        );
        let registered = Registered::new(ctx, block).unwrap();
        let host = registered.as_ptr();
        let h2d = table.bandwidth(
            &format!("H2D copy from a registered Block on the {side} {node}"),
            time(|| htod(device, host)),
        );
        let d2h = table.bandwidth(
            &format!("D2H copy into a registered Block on the {side} {node}"),
            time(|| dtoh(host, device)),
        );
        rates.push((h2d, d2h));
    }
    println!(
        "NUMA: near / far: host-to-device {:.2}x, device-to-host {:.2}x (best runs)",
        rates[0].0 / rates[1].0,
        rates[0].1 / rates[1].1,
    );
}

/// Runs `read_sum` over `BYTES` at `src` (a device address).
fn read(stream: &Arc<CudaStream>, kernel: &CudaFunction, src: u64, sink: u64, blocks: u32) {
    let n4 = (BYTES / 16) as u64;
    let config = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: `src` addresses BYTES readable bytes; `sink` one device f32.
    unsafe {
        stream
            .launch_builder(kernel)
            .arg(&src)
            .arg(&n4)
            .arg(&sink)
            .launch(config)
    }
    .unwrap();
    stream.synchronize().unwrap();
}

fn main() {
    let ctx = match cuda::context(0) {
        Ok(ctx) => ctx,
        Err(error @ Error::Cuda(_)) if std::env::var_os("UNIMEM_REQUIRE_CUDA").is_none() => {
            println!("SKIPPED cuda bench: {error}");
            return;
        }
        Err(error) => panic!("{error}"),
    };
    run(&ctx);
}

fn run(ctx: &Arc<CudaContext>) {
    let stream = ctx.default_stream();
    let module = ctx.load_module(Ptx::from_src(PTX)).unwrap();
    let kernel = module.load_function("read_sum").unwrap();
    let sms = ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .unwrap() as u32;
    println!(
        "device: {} ({sms} SMs), {} MiB per transfer, best and median of {REPEATS}",
        ctx.name().unwrap(),
        BYTES >> 20
    );
    let mut table = Table { rows: Vec::new() };

    // SAFETY: plain device allocations, freed at the end.
    let (device, sink) = unsafe {
        (
            result::malloc_sync(BYTES).unwrap(),
            result::malloc_sync(64).unwrap(),
        )
    };

    let options = BlockOptions::new().pinning(Pinning::BestEffort);
    let mut block = Block::open_with(BYTES, &options).unwrap();
    block.as_bytes_mut().fill(1);
    let locked = block.is_pinned();
    let src = block.as_ptr();
    let mlocked = table.bandwidth(
        &format!("H2D copy from an unregistered Block (mlock: {locked})"),
        time(|| htod(device, src)),
    );

    let registered = Registered::new(ctx, block).unwrap();
    let src = registered.as_ptr();
    let from_block = table.bandwidth(
        "H2D copy from a registered Block",
        time(|| htod(device, src)),
    );

    let pageable = vec![1u8; BYTES];
    table.bandwidth(
        "H2D copy from pageable Vec memory",
        time(|| htod(device, pageable.as_ptr())),
    );
    drop(pageable);

    // SAFETY: a host allocation of BYTES, freed below.
    let host = unsafe { result::malloc_host(BYTES, sys::CU_MEMHOSTALLOC_DEVICEMAP) }.unwrap();
    // SAFETY: BYTES writable bytes.
    unsafe { host.cast::<u8>().write_bytes(1, BYTES) };
    let from_host_alloc = table.bandwidth(
        "H2D copy from cuMemHostAlloc memory",
        time(|| htod(device, host.cast::<u8>())),
    );

    let blocks = sms * 8;
    let mapped = registered.device_ptr_of(registered.as_ptr()).unwrap();
    let read_block = table.bandwidth(
        "kernel reading the mapped registered Block",
        time(|| read(&stream, &kernel, mapped, sink, blocks)),
    );
    let mut host_device: sys::CUdeviceptr = 0;
    // SAFETY: `host` is a DEVICEMAP allocation.
    unsafe { sys::cuMemHostGetDevicePointer_v2(&mut host_device, host, 0) }
        .result()
        .unwrap();
    let read_host_alloc = table.bandwidth(
        "kernel reading mapped cuMemHostAlloc memory",
        time(|| read(&stream, &kernel, host_device, sink, blocks)),
    );
    table.bandwidth(
        "kernel reading device memory (for scale)",
        time(|| read(&stream, &kernel, device, sink, blocks)),
    );
    // SAFETY: allocated above, no longer used.
    unsafe { result::free_host(host) }.unwrap();
    drop(registered);

    // 10 000 pinned, device-mapped 4 KiB buffers.
    let mut tape_times = Vec::new();
    let mut alloc_times = Vec::new();
    let mut free_times = Vec::new();
    for _ in 0..REPEATS {
        let tape = Tape::open_with(BUFFERS * 4096, &options).unwrap();
        let mut tape = Registered::new(ctx, tape).unwrap();
        let start = Instant::now();
        for _ in 0..BUFFERS {
            let p = tape.take(4096, 4096).unwrap();
            black_box(tape.device_ptr_of(p).unwrap());
        }
        tape_times.push(start.elapsed());
        tape.clear();

        let mut buffers = Vec::with_capacity(BUFFERS);
        let start = Instant::now();
        for _ in 0..BUFFERS {
            // SAFETY: a 4 KiB host allocation, freed below.
            let p = unsafe { result::malloc_host(4096, sys::CU_MEMHOSTALLOC_DEVICEMAP) }.unwrap();
            let mut d: sys::CUdeviceptr = 0;
            // SAFETY: `p` is a DEVICEMAP allocation.
            unsafe { sys::cuMemHostGetDevicePointer_v2(&mut d, p, 0) }
                .result()
                .unwrap();
            buffers.push(black_box(p));
        }
        alloc_times.push(start.elapsed());
        let start = Instant::now();
        for p in buffers {
            // SAFETY: allocated above.
            unsafe { result::free_host(p) }.unwrap();
        }
        free_times.push(start.elapsed());
    }
    let per_buffer = |times: &mut Vec<Duration>| {
        times.sort_unstable();
        let per = |d: Duration| format!("{:.1} ns", d.as_nanos() as f64 / BUFFERS as f64);
        (per(times[0]), per(times[times.len() / 2]))
    };
    let (best, median) = per_buffer(&mut tape_times);
    table.row(
        "4 KiB pinned buffer: Tape take + device address",
        best,
        median,
    );
    let (best, median) = per_buffer(&mut alloc_times);
    table.row(
        "4 KiB pinned buffer: cuMemHostAlloc + device address",
        best,
        median,
    );
    let (best, median) = per_buffer(&mut free_times);
    table.row("4 KiB pinned buffer: cuMemFreeHost", best, median);
    let tape_vs_alloc = alloc_times[0].as_secs_f64() / tape_times[0].as_secs_f64();

    // Registering a committed, populated 1 GiB Block (once per repeat: the
    // Block is opened and filled outside the timing).
    const GIB: usize = 1 << 30;
    let mut register_times = Vec::new();
    let mut unregister_times = Vec::new();
    let mut host_alloc_times = Vec::new();
    for _ in 0..3 {
        let mut block = Block::open_with(GIB, &options).unwrap();
        block.as_bytes_mut().fill(1);
        let start = Instant::now();
        let registered = Registered::new(ctx, block).unwrap();
        register_times.push(start.elapsed());
        black_box(registered.device_ptr_of(registered.as_ptr()).unwrap());
        let start = Instant::now();
        drop(registered.into_inner());
        unregister_times.push(start.elapsed());

        let start = Instant::now();
        // SAFETY: a host allocation of 1 GiB, freed at once.
        let host = unsafe { result::malloc_host(GIB, sys::CU_MEMHOSTALLOC_DEVICEMAP) }.unwrap();
        host_alloc_times.push(start.elapsed());
        // SAFETY: allocated just above, unused.
        unsafe { result::free_host(host) }.unwrap();
    }
    let millis = |times: &mut Vec<Duration>| {
        times.sort_unstable();
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        (ms(times[0]), ms(times[times.len() / 2]))
    };
    let register_best = register_times.iter().min().copied().unwrap();
    let (best, median) = millis(&mut register_times);
    table.row("register a committed 1 GiB Block", best, median);
    let (best, median) = millis(&mut unregister_times);
    table.row("unregister it", best, median);
    let (best, median) = millis(&mut host_alloc_times);
    table.row("cuMemHostAlloc of 1 GiB (for scale)", best, median);

    let (view_htod, view_dtoh, pinned_htod, pinned_dtoh, vec_htod, vec_dtoh) =
        cudarc_copies(ctx, &options, &mut table);

    numa(ctx, device, &mut table);

    // SAFETY: allocated above, no longer used.
    unsafe {
        result::free_sync(device).unwrap();
        result::free_sync(sink).unwrap();
    }
    table.print();
    println!(
        "cudarc copies through a HostBuffer / PinnedHostSlice: H2D {:.2}, D2H {:.2}; / plain Vec: H2D {:.1}x, D2H {:.1}x",
        view_htod / pinned_htod,
        view_dtoh / pinned_dtoh,
        view_htod / vec_htod,
        view_dtoh / vec_dtoh,
    );
    println!(
        "registered Block / cuMemHostAlloc: copies {:.1}%, kernel reads {:.1}%; mlock alone reached {:.1}% of the registered copy",
        100.0 * from_block / from_host_alloc,
        100.0 * read_block / read_host_alloc,
        100.0 * mlocked / from_block,
    );
    println!(
        "10 000 pinned 4 KiB buffers: a Tape over a registered Block was {tape_vs_alloc:.0}x faster than cuMemHostAlloc each (best runs); registering 1 GiB took {:.2} s per GiB",
        register_best.as_secs_f64(),
    );
}

/// cudarc's copies on a stream of their own (its multi-stream mode, where
/// copies are asynchronous), each waited for: through a `HostBuffer` in a
/// registered Tape, a `PinnedHostSlice`, a plain `Vec`. Returns the best
/// bandwidths, H2D and D2H for each, in that order.
fn cudarc_copies(
    ctx: &Arc<CudaContext>,
    options: &BlockOptions<'static>,
    table: &mut Table,
) -> (f64, f64, f64, f64, f64, f64) {
    let stream = ctx.new_stream().unwrap();
    let n = BYTES / 4;
    // SAFETY: written by the copies before anything reads it.
    let mut device = unsafe { stream.alloc::<f32>(n) }.unwrap();
    let tape = Registered::new(ctx, Tape::open_with(BYTES, options).unwrap()).unwrap();
    let mut values: InVec<f32, _> = InVec::with_capacity_in(n, &*tape);
    values.resize(n, 1.0);
    let mut buffer = tape.host_buffer(values).unwrap();
    let view_htod = table.bandwidth(
        "cudarc H2D from a HostBuffer (registered Tape)",
        time(|| {
            stream.memcpy_htod(&buffer, &mut device).unwrap();
            stream.synchronize().unwrap();
        }),
    );
    let view_dtoh = table.bandwidth(
        "cudarc D2H into a HostBuffer (registered Tape)",
        time(|| {
            stream.memcpy_dtoh(&device, &mut buffer).unwrap();
            buffer.as_slice().unwrap();
        }),
    );
    drop(buffer);
    // SAFETY: filled before it is read.
    let mut pinned = unsafe { ctx.alloc_pinned::<f32>(n) }.unwrap();
    pinned.as_mut_slice().unwrap().fill(1.0);
    let pinned_htod = table.bandwidth(
        "cudarc H2D from a PinnedHostSlice",
        time(|| {
            stream.memcpy_htod(&pinned, &mut device).unwrap();
            stream.synchronize().unwrap();
        }),
    );
    let pinned_dtoh = table.bandwidth(
        "cudarc D2H into a PinnedHostSlice",
        time(|| {
            stream.memcpy_dtoh(&device, &mut pinned).unwrap();
            stream.synchronize().unwrap();
        }),
    );
    drop(pinned);
    let mut plain = vec![1.0f32; n];
    let vec_htod = table.bandwidth(
        "cudarc H2D from a plain Vec (pageable)",
        time(|| {
            stream.memcpy_htod(&plain, &mut device).unwrap();
            stream.synchronize().unwrap();
        }),
    );
    let vec_dtoh = table.bandwidth(
        "cudarc D2H into a plain Vec (pageable)",
        time(|| {
            stream.memcpy_dtoh(&device, &mut plain).unwrap();
            stream.synchronize().unwrap();
        }),
    );
    (
        view_htod,
        view_dtoh,
        pinned_htod,
        pinned_dtoh,
        vec_htod,
        vec_dtoh,
    )
}
