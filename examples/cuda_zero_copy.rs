//! A GPU kernel and the CPU share one `Vec`: the Vec lives in a Tape over a
//! pinned Block registered with the CUDA driver, the kernel writes it through
//! its device address, and the CPU reads the results in place. No memcpy.
//!
//! Run with `cargo run --release --features cuda --example cuda_zero_copy`.
//! On a machine without an NVIDIA driver it says so and exits.

use std::time::Instant;

use allocator_api2::vec::Vec;
use unimem::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
use unimem::cuda::cudarc::nvrtc::Ptx;
use unimem::cuda::{self, Registered};
use unimem::{BlockOptions, Error, Pinning, Tape};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = match cuda::context(0) {
        Ok(ctx) => ctx,
        // With `UNIMEM_REQUIRE_CUDA` set (the GPU runner sets it), no GPU
        // is an error.
        Err(error @ Error::Cuda(_)) if std::env::var_os("UNIMEM_REQUIRE_CUDA").is_none() => {
            println!("no GPU to run on: {error}");
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    let module = ctx.load_module(Ptx::from_src(include_str!("../kernels/zero_copy.ptx")))?;
    let write = module.load_function("write_affine")?;
    let stream = ctx.default_stream();

    let started = Instant::now();
    let tape = Tape::open_with(256 << 20, &BlockOptions::new().pinning(Pinning::BestEffort))?;
    let tape = Registered::new(&ctx, tape)?;
    println!(
        "{}: registered a {} MiB Block in {:?} (pinned: {})",
        ctx.name()?,
        tape.total() >> 20,
        started.elapsed(),
        tape.block().is_pinned()
    );

    const N: usize = 32 << 20; // 128 MiB of f32
    let mut values: Vec<f32, _> = Vec::with_capacity_in(N, &*tape);
    values.resize(N, 0.0);
    let device = tape
        .device_slice(&values)
        .ok_or("the Vec is outside the Block")?;
    println!(
        "Vec of {N} f32 at host {:p}, device {device:#x}",
        values.as_ptr()
    );

    let n = N as u32;
    let started = Instant::now();
    // SAFETY: the kernel writes `n` f32s at `device`, which is the Vec's buffer.
    unsafe {
        stream
            .launch_builder(&write)
            .arg(&device)
            .arg(&n)
            .arg(&3.0f32)
            .arg(&0.5f32)
            .launch(LaunchConfig::for_num_elems(n))?;
    }
    stream.synchronize()?;
    let elapsed = started.elapsed();
    let wrong = values
        .iter()
        .enumerate()
        .filter(|&(i, &x)| x != 3.0 * i as f32 + 0.5)
        .count();
    println!(
        "the kernel wrote {} MiB straight into pinned host memory in {elapsed:?} ({:.1} GB/s); \
         the CPU read it in place: {wrong} wrong values",
        (N * 4) >> 20,
        (N * 4) as f64 / elapsed.as_secs_f64() / 1e9
    );
    assert_eq!(wrong, 0);
    Ok(())
}
