//! A model's weights from a file into a pinned weights Tape, at the
//! storage's speed: a safetensors checkpoint (a path given, or a
//! model-sized file written first) loaded cold (its pages dropped from the
//! page cache) and warm, with a progress bar, each against its ceiling
//! measured in the same run: direct `pread`s of the same file (4 MiB
//! requests, 32 in flight) for the cold load, a parallel `memcpy` of the
//! same size for the warm one. With feature `cuda` the Tape is registered
//! with the driver first, the tensors land in registered memory, and the
//! whole checkpoint is copied to the device (a skip line without a GPU).
//!
//! ```text
//! cargo run --release --features load --example load_model [-- PATH] [--size 2G] [--dir DIR]
//! cargo run --release --features load,cuda --example load_model
//! ```
//!
//! Written files go to `target/load_model/` (a file system with direct
//! I/O, where the target folder is on one). Works as an ordinary user: the
//! Tape is pinned as far as `RLIMIT_MEMLOCK` allows, and the page cache is
//! dropped with `posix_fadvise` (and `/proc/sys/vm/drop_caches` as root).

#[path = "support/model.rs"]
mod model;

use std::path::{Path, PathBuf};
use std::time::Instant;

use unimem::load::{Checkpoint, Reader, Report, Tensors};
use unimem::{BlockOptions, Pinning, Tape};

fn parse_size(text: &str) -> Option<u64> {
    let (number, unit) =
        text.split_at(text.find(|c: char| c.is_alphabetic()).unwrap_or(text.len()));
    let number: f64 = number.parse().ok()?;
    let unit = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1u64,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return None,
    };
    Some((number * unit as f64) as u64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut path: Option<PathBuf> = None;
    let mut size: Option<u64> = None;
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/load_model");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--size" => {
                size = Some(
                    parse_size(&args.next().ok_or("--size takes a size")?)
                        .ok_or("a size like 2G")?,
                )
            }
            "--dir" => dir = PathBuf::from(args.next().ok_or("--dir takes a folder")?),
            "-h" | "--help" => {
                println!("load_model [PATH] [--size 2G] [--dir DIR]");
                return Ok(());
            }
            other => path = Some(PathBuf::from(other)),
        }
    }
    let path = match path {
        Some(path) => path,
        None => {
            std::fs::create_dir_all(&dir)?;
            // A quarter of the memory and of the disk, at most 2 GiB.
            let size = size.unwrap_or_else(|| {
                (model::available_memory() / 4)
                    .min(model::free_disk(&dir) / 4)
                    .clamp(64 << 20, 2 << 30)
            });
            let path = dir.join(format!("model-{}M.safetensors", size >> 20));
            if !path.exists() {
                let started = Instant::now();
                let bytes = model::write_model(&path, size)?;
                println!(
                    "wrote {} ({:.2} GB of tensors) in {:.1?}",
                    path.display(),
                    bytes as f64 / 1e9,
                    started.elapsed()
                );
            }
            path
        }
    };
    run(&path)
}

fn run(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let checkpoint = Checkpoint::open(path)?;
    let reader = Reader::new();
    let files: Vec<_> = checkpoint
        .files()
        .map(|(s, _)| s.path().to_path_buf())
        .collect();
    let direct = checkpoint
        .files()
        .next()
        .and_then(|(s, _)| s.direct_alignment());
    println!(
        "{}: {} tensors in {} file(s), {:.2} GB; direct I/O: {}; engine {:?}",
        path.display(),
        checkpoint.len(),
        files.len(),
        checkpoint.data_len() as f64 / 1e9,
        direct.map_or("none (buffered)".to_string(), |a| format!(
            "memory {} B, offset {} B",
            a.memory, a.offset
        )),
        reader.engine()?
    );
    let needed = checkpoint.needed()?;
    let options = BlockOptions::new()
        .pinning(Pinning::BestEffort)
        .label("weights");
    let started = Instant::now();
    let weights = Tape::open_with(needed, &options)?;
    println!(
        "weights Tape of {:.2} GB committed in {:.1?} (pinned: {})",
        needed as f64 / 1e9,
        started.elapsed(),
        weights.block().is_pinned()
    );
    let mut weights = Weights::new(weights)?;

    // Cold: the files' pages dropped first.
    let mut dropped_all = true;
    for file in &files {
        dropped_all &= model::make_cold(file)?;
    }
    let cache_before = model::page_cache();
    let cold = load("cold", &checkpoint, &reader, weights.tape())?;
    let cache_growth = model::page_cache().saturating_sub(cache_before);
    let cold_report = *cold.report();
    weights.copy_to_device(&cold)?;
    drop(cold);
    weights.clear();

    // Warm: read once more (everything is in the page cache now).
    for file in &files {
        std::fs::read(file)?;
    }
    let warm = load("warm", &checkpoint, &reader, weights.tape())?;
    let warm_report = *warm.report();
    drop(warm);

    let bytes = checkpoint.data_len();
    let mut storage = 0.0f64;
    for file in &files {
        model::make_cold(file)?;
        let (time, read) = model::direct_ceiling(file)?;
        storage += time.as_secs_f64();
        let _ = read;
    }
    let storage = bytes as f64 / storage / 1e9;
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
    let memory = model::gbps(bytes, model::memcpy_ceiling(bytes, threads));
    println!();
    println!("| load | GB/s | ceiling | GB/s | ratio | CPU-copied | page cache growth |");
    println!("|---|---|---|---|---|---|---|");
    let cold_rate = cold_report.bytes_per_second() / 1e9;
    let warm_rate = warm_report.bytes_per_second() / 1e9;
    println!(
        "| cold{} | {cold_rate:.2} | O_DIRECT pread 4 MiB x 32 | {storage:.2} | {:.2} | {} B | {:.1} MB |",
        if dropped_all { "" } else { " (fadvise only)" },
        cold_rate / storage,
        cold_report.copied,
        cache_growth as f64 / 1e6
    );
    println!(
        "| warm | {warm_rate:.2} | memcpy x {threads} | {memory:.2} | {:.2} | {} B | - |",
        warm_rate / memory,
        warm_report.copied
    );
    Ok(())
}

/// Loads with a progress bar, and says what the load did.
fn load<'t>(
    label: &str,
    checkpoint: &Checkpoint,
    reader: &Reader,
    tape: &'t Tape,
) -> Result<Tensors<'t>, unimem::Error> {
    let started = Instant::now();
    let tensors = checkpoint.load_with(reader, tape, |p| {
        model::draw_bar(label, p.done, p.total, started)
    })?;
    say(label, tensors.report());
    Ok(tensors)
}

fn say(label: &str, r: &Report) {
    println!(
        "{label}: {:.2} GB in {:.2?} = {:.2} GB/s ({:?}; direct {:.2} GB, buffered {:.2} GB, CPU-copied {} B; {} requests)",
        r.bytes as f64 / 1e9,
        r.elapsed,
        r.bytes_per_second() / 1e9,
        r.engine,
        r.direct as f64 / 1e9,
        r.buffered as f64 / 1e9,
        r.copied,
        r.requests
    );
}

/// The weights Tape, registered with the CUDA driver where there is one
/// (feature `cuda`).
enum Weights {
    Plain(Tape),
    #[cfg(feature = "cuda")]
    Device(unimem::cuda::Registered<Tape>),
}

impl Weights {
    #[cfg(not(feature = "cuda"))]
    fn new(tape: Tape) -> Result<Weights, unimem::Error> {
        Ok(Weights::Plain(tape))
    }

    #[cfg(feature = "cuda")]
    fn new(tape: Tape) -> Result<Weights, unimem::Error> {
        match unimem::cuda::context(0) {
            Ok(ctx) => {
                let started = Instant::now();
                let registered = unimem::cuda::Registered::new(&ctx, tape)?;
                println!(
                    "{}: weights registered with the CUDA driver in {:.1?}",
                    ctx.name().unwrap_or_default(),
                    started.elapsed()
                );
                Ok(Weights::Device(registered))
            }
            Err(error @ unimem::Error::Cuda(_))
                if std::env::var_os("UNIMEM_REQUIRE_CUDA").is_none() =>
            {
                println!("SKIPPED device copy: {error}");
                Ok(Weights::Plain(tape))
            }
            Err(error) => Err(error),
        }
    }

    fn tape(&self) -> &Tape {
        match self {
            Weights::Plain(tape) => tape,
            #[cfg(feature = "cuda")]
            Weights::Device(registered) => registered,
        }
    }

    fn clear(&mut self) {
        match self {
            Weights::Plain(tape) => tape.clear(),
            #[cfg(feature = "cuda")]
            Weights::Device(registered) => registered.clear(),
        }
    }

    /// Copies the whole loaded checkpoint from the registered Tape to
    /// device memory (one `cuMemcpyHtoD`), where there is a device.
    fn copy_to_device(&self, tensors: &Tensors<'_>) -> Result<(), Box<dyn std::error::Error>> {
        match self {
            Weights::Plain(_) => {
                let _ = tensors;
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Weights::Device(registered) => {
                use unimem::cuda::cudarc::driver::{result, sys};
                let bytes = tensors.size();
                if registered.device_range(tensors.as_ptr(), bytes).is_none() {
                    return Err("the checkpoint is outside the registered ranges".into());
                }
                registered.context().bind_to_thread()?;
                // SAFETY: a plain device allocation, freed below.
                let device = unsafe { result::malloc_sync(bytes.max(1)) }?;
                let started = Instant::now();
                // SAFETY: `device` holds `bytes`; the source is the loaded
                // checkpoint's `bytes` of registered host memory.
                unsafe { sys::cuMemcpyHtoD_v2(device, tensors.as_ptr().cast(), bytes) }.result()?;
                let elapsed = started.elapsed();
                // SAFETY: allocated above, no longer used.
                unsafe { result::free_sync(device) }?;
                println!(
                    "to the device: {:.2} GB in {elapsed:.2?} = {:.2} GB/s from registered memory",
                    bytes as f64 / 1e9,
                    model::gbps(bytes as u64, elapsed)
                );
                Ok(())
            }
        }
    }
}
