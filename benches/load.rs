//! A safetensors checkpoint of a few GiB from a file into memory, every way
//! side by side in one run, each against the same run's ceilings:
//!
//! - **unimem cold / warm**: [`Checkpoint::load`] into a pinned Tape, the
//!   file's pages dropped first (`POSIX_FADV_DONTNEED`, and
//!   `/proc/sys/vm/drop_caches` as root) or all in the page cache; at the
//!   default tensor alignment (64) and at 8 (tensors where the file puts
//!   them), by the engine `Engine::Auto` picks and by the other one;
//! - **mmap + copy** (candle's path): `memmap2` over the file,
//!   `SafeTensors::deserialize`, every tensor copied into a `Vec`;
//! - **read + deserialize**: `std::fs::read` and `SafeTensors::deserialize`;
//! - **ceilings**: the whole file with `O_DIRECT` `pread`s of 4 MiB, 32 in
//!   flight (the storage's), and a parallel `memcpy` of the same size on
//!   every core (memory's).
//!
//! For each cold row it also gives the file's pages in the page cache after
//! the load (`mincore`: page-cache growth, from none) and the bytes the CPU
//! copied per byte loaded (unimem counts its own; the mmap and read paths
//! copy every byte once by construction: from the page cache into the
//! `Vec`, by page faults or `read`).
//!
//! With feature `cuda` and a GPU it adds the path to the device: the Tape
//! registered with the driver, the checkpoint loaded into it cold and warm
//! and copied to device memory, against the same run's pinned
//! host-to-device ceiling (the copy alone).
//!
//! ```text
//! cargo bench --features load --bench load [-- --size 4G] [--dir DIR] [--runs N] [--quick]
//! ```
//!
//! The file is written once to `target/load-bench/` (or DIR: it must be on
//! a file system with direct I/O), sized to a fifth of the free memory and
//! a third of the free disk, at most 4 GiB unless `--size` says otherwise.

#[path = "../examples/support/model.rs"]
mod model;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use safetensors::SafeTensors;
use unimem::load::{Checkpoint, Engine, ReadOptions, Reader, Report};
use unimem::{BlockOptions, Pinning, Tape};

struct Options {
    size: Option<u64>,
    dir: PathBuf,
    runs: usize,
}

fn options() -> Options {
    let mut options = Options {
        size: None,
        dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/load-bench"),
        runs: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--size" => {
                let text = args.next().expect("--size takes a size like 4G");
                let (n, unit) = text.split_at(text.len() - 1);
                let unit = match unit {
                    "G" | "g" => 1u64 << 30,
                    "M" | "m" => 1 << 20,
                    _ => panic!("--size takes a size like 4G or 512M"),
                };
                options.size = Some((n.parse::<f64>().expect("a number") * unit as f64) as u64);
            }
            "--dir" => options.dir = PathBuf::from(args.next().expect("--dir takes a folder")),
            "--runs" => options.runs = args.next().and_then(|n| n.parse().ok()).expect("--runs N"),
            "--quick" => options.runs = 1,
            // cargo bench passes --bench.
            _ => {}
        }
    }
    options
}

/// One row: its best run.
struct Row {
    name: String,
    time: Duration,
    bytes: u64,
    /// Against which ceiling: 0 storage, 1 memory, 2 host-to-device.
    ceiling: usize,
    copied_per_byte: Option<f64>,
    cached_after: Option<u64>,
}

/// What one run of a row measured.
struct Sample {
    time: Duration,
    copied_per_byte: Option<f64>,
    cached_after: Option<u64>,
    note: Option<String>,
}

impl Sample {
    fn of(time: Duration) -> Sample {
        Sample {
            time,
            copied_per_byte: None,
            cached_after: None,
            note: None,
        }
    }
}

/// A row to run: its name, its ceiling, its bytes, and one run of it.
type Subject<'a> = (String, usize, u64, Box<dyn FnMut() -> Sample + 'a>);

/// Runs every subject once per round, rounds after rounds, so that a
/// machine whose speed drifts (a shared virtual disk, warm in its host's
/// cache or not) treats every row alike; keeps each row's best run.
fn interleave(rounds: usize, subjects: &mut [Subject<'_>]) -> Vec<Row> {
    let mut rows: Vec<Option<(Row, Option<String>)>> = subjects.iter().map(|_| None).collect();
    for round in 0..rounds.max(1) {
        for (i, (name, ceiling, bytes, run)) in subjects.iter_mut().enumerate() {
            let sample = run();
            eprintln!(
                "  round {round}: {name}: {:.3} s",
                sample.time.as_secs_f64()
            );
            if rows[i]
                .as_ref()
                .is_none_or(|(row, _)| sample.time < row.time)
            {
                rows[i] = Some((
                    Row {
                        name: name.clone(),
                        time: sample.time,
                        bytes: *bytes,
                        ceiling: *ceiling,
                        copied_per_byte: sample.copied_per_byte,
                        cached_after: sample.cached_after,
                    },
                    sample.note,
                ));
            }
        }
    }
    rows.into_iter()
        .flatten()
        .map(|(row, note)| {
            if let Some(note) = note {
                println!("  {}: {note}", row.name);
            }
            row
        })
        .collect()
}

fn main() {
    let options = options();
    std::fs::create_dir_all(&options.dir).unwrap();
    let size = options.size.unwrap_or_else(|| {
        (model::available_memory() / 5)
            .min(model::free_disk(&options.dir) / 3)
            .clamp(256 << 20, 4 << 30)
    });
    let path = options
        .dir
        .join(format!("bench-{}M.safetensors", size >> 20));
    if !path.exists() {
        let started = Instant::now();
        model::write_model(&path, size).unwrap();
        println!("wrote {} in {:.1?}", path.display(), started.elapsed());
    }
    let checkpoint = Checkpoint::open(&path).unwrap();
    let bytes = checkpoint.data_len();
    let (source, header) = checkpoint.files().next().unwrap();
    let file_len = source.len();
    let direct = source.direct_alignment();
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
    let root = std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok();
    println!(
        "{}: {} tensors, {:.2} GB, data at {} mod 64; direct I/O {}; {} cores; engine {:?}; \
         cold = fadvise{}; best of {} interleaved rounds",
        path.display(),
        checkpoint.len(),
        bytes as f64 / 1e9,
        header.data_start() % 64,
        direct.map_or("none".into(), |a| format!(
            "memory {} / offset {}",
            a.memory, a.offset
        )),
        threads,
        Reader::new().engine().unwrap(),
        if root {
            " + drop_caches"
        } else {
            " only (not root)"
        },
        options.runs,
    );
    if direct.is_none() {
        println!(
            "NOTE: {} offers no direct I/O: the cold rows read through the page cache",
            options.dir.display()
        );
    }
    let pinned = BlockOptions::new()
        .pinning(Pinning::BestEffort)
        .quiet(true)
        .label("weights");
    let tape = std::cell::RefCell::new(
        Tape::open_with(checkpoint.needed().unwrap().max(1), &pinned).unwrap(),
    );
    let path = path.as_path();
    let cold = move || {
        model::make_cold(path).unwrap();
    };
    let warm = move || {
        std::fs::read(path).unwrap();
    };
    let cached = move || model::cached_bytes(path).unwrap();

    let mut subjects: Vec<Subject<'_>> = Vec::new();
    subjects.push((
        "ceiling: O_DIRECT pread, 4 MiB x 32".into(),
        0,
        file_len,
        Box::new(move || {
            cold();
            let (time, _) = model::direct_ceiling(path).unwrap();
            Sample {
                copied_per_byte: Some(0.0),
                cached_after: Some(cached()),
                ..Sample::of(time)
            }
        }),
    ));
    subjects.push((
        format!("ceiling: memcpy x {threads} threads"),
        1,
        bytes,
        Box::new(move || Sample::of(model::memcpy_ceiling(bytes, threads))),
    ));
    let unimem = |engine: Engine, align: usize, is_warm: bool| -> Box<dyn FnMut() -> Sample + '_> {
        let mut checkpoint = Checkpoint::open(path).unwrap();
        checkpoint.set_align(align).unwrap();
        let reader = Reader::with_options(ReadOptions::new().engine(engine));
        let tape = &tape;
        Box::new(move || {
            let mut tape = tape.borrow_mut();
            tape.clear();
            if is_warm {
                warm()
            } else {
                cold()
            }
            let tensors = checkpoint.load(&reader, &tape).unwrap();
            let report: Report = *tensors.report();
            let after = cached();
            verify(path, &tensors);
            Sample {
                time: report.elapsed,
                copied_per_byte: Some(report.copied as f64 / report.bytes as f64),
                cached_after: (!is_warm).then_some(after),
                note: Some(format!(
                    "{:?}, direct {} B, buffered {} B, CPU-copied {} B, {} requests",
                    report.engine, report.direct, report.buffered, report.copied, report.requests
                )),
            }
        })
    };
    // Engine::Auto, then the engine it did not choose.
    let uring = Reader::with_options(ReadOptions::new().engine(Engine::Uring))
        .engine()
        .is_ok();
    for (name, engine, align, is_warm) in [
        ("unimem cold", Engine::Auto, 64, false),
        ("unimem cold, io_uring", Engine::Uring, 64, false),
        ("unimem cold, align 8", Engine::Auto, 8, false),
        ("unimem cold, align 8, threads", Engine::Threads, 8, false),
        ("unimem warm", Engine::Auto, 64, true),
        ("unimem warm, threads", Engine::Threads, 64, true),
    ] {
        if engine == Engine::Uring && !uring {
            println!("  {name}: skipped, io_uring is refused here");
            continue;
        }
        subjects.push((
            name.into(),
            usize::from(is_warm),
            bytes,
            unimem(engine, align, is_warm),
        ));
    }
    // candle's path: mmap, deserialize, a Vec per tensor.
    for is_warm in [false, true] {
        subjects.push((
            format!(
                "mmap + copy per tensor {}",
                if is_warm { "warm" } else { "cold" }
            ),
            usize::from(is_warm),
            bytes,
            Box::new(move || {
                if is_warm {
                    warm()
                } else {
                    cold()
                }
                let start = Instant::now();
                let file = std::fs::File::open(path).unwrap();
                // SAFETY: the file is not modified while mapped.
                let map = unsafe { memmap2::MmapOptions::new().map(&file) }.unwrap();
                let tensors = SafeTensors::deserialize(&map).unwrap();
                let copies: Vec<Vec<u8>> = tensors
                    .iter()
                    .map(|(_, view)| view.data().to_vec())
                    .collect();
                let time = start.elapsed();
                assert_eq!(copies.iter().map(Vec::len).sum::<usize>() as u64, bytes);
                Sample {
                    copied_per_byte: Some(1.0),
                    cached_after: (!is_warm).then(cached),
                    ..Sample::of(time)
                }
            }),
        ));
    }
    // std::fs::read and deserialize.
    let count = checkpoint.len();
    for is_warm in [false, true] {
        subjects.push((
            format!(
                "fs::read + deserialize {}",
                if is_warm { "warm" } else { "cold" }
            ),
            usize::from(is_warm),
            bytes,
            Box::new(move || {
                if is_warm {
                    warm()
                } else {
                    cold()
                }
                let start = Instant::now();
                let all = std::fs::read(path).unwrap();
                let tensors = SafeTensors::deserialize(&all).unwrap();
                assert_eq!(tensors.len(), count);
                let time = start.elapsed();
                Sample {
                    copied_per_byte: Some(1.0),
                    cached_after: (!is_warm).then(cached),
                    ..Sample::of(time)
                }
            }),
        ));
    }
    #[allow(unused_mut)]
    let mut rows = interleave(options.runs, &mut subjects);
    drop(subjects);

    #[cfg(feature = "cuda")]
    device::rows(path, options.runs, tape.into_inner(), &mut rows);
    #[cfg(not(feature = "cuda"))]
    drop(tape);

    print_table(&rows, file_len);
}

/// The best of `runs` runs of `f`.
#[cfg(feature = "cuda")]
fn best<T>(runs: usize, mut f: impl FnMut() -> (Duration, T)) -> (Duration, T) {
    let mut best: Option<(Duration, T)> = None;
    for _ in 0..runs.max(1) {
        let (time, value) = f();
        if best.as_ref().is_none_or(|(t, _)| time < *t) {
            best = Some((time, value));
        }
    }
    best.unwrap()
}

/// Every tensor's bytes against the file's (outside the timing).
fn verify(path: &std::path::Path, tensors: &unimem::load::Tensors<'_>) {
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: the file is not modified while mapped.
    let map = unsafe { memmap2::MmapOptions::new().map(&file) }.unwrap();
    let expected = SafeTensors::deserialize(&map).unwrap();
    for (name, view) in expected.iter() {
        let loaded = tensors.tensor(name).unwrap();
        assert!(
            loaded.bytes() == view.data(),
            "{name} differs from the file"
        );
    }
}

fn print_table(rows: &[Row], file_len: u64) {
    let rate = |row: &Row| model::gbps(row.bytes, row.time);
    let ceilings: Vec<f64> = (0..3)
        .map(|c| {
            rows.iter()
                .find(|r| r.ceiling == c && r.name.starts_with("ceiling"))
                .map_or(f64::NAN, rate)
        })
        .collect();
    println!();
    println!(
        "| load | time | GB/s | x ceiling | CPU-copied per byte | file cached after (page-cache growth) |"
    );
    println!("|---|---|---|---|---|---|");
    for row in rows {
        let r = rate(row);
        println!(
            "| {} | {:.3} s | {:.2} | {:.2} x {} | {} | {} |",
            row.name,
            row.time.as_secs_f64(),
            r,
            r / ceilings[row.ceiling],
            ["storage", "memcpy", "host-to-device"][row.ceiling],
            row.copied_per_byte
                .map_or("-".into(), |c| format!("{c:.6}")),
            row.cached_after.map_or("-".into(), |c| format!(
                "{:.1} MB ({:.1}%)",
                c as f64 / 1e6,
                100.0 * c as f64 / file_len as f64
            )),
        );
    }
}

#[cfg(feature = "cuda")]
mod device {
    //! file → registered Tape → device memory.

    use std::path::Path;

    use super::*;
    use unimem::cuda::cudarc::driver::{result, sys};
    use unimem::cuda::{self, Registered};

    pub fn rows(path: &Path, runs: usize, tape: Tape, rows: &mut Vec<Row>) {
        let ctx = match cuda::context(0) {
            Ok(ctx) => ctx,
            Err(error) if std::env::var_os("UNIMEM_REQUIRE_CUDA").is_none() => {
                println!("SKIPPED the device rows: {error}");
                return;
            }
            Err(error) => panic!("{error}"),
        };
        let mut tape = Registered::new(&ctx, tape).unwrap();
        ctx.bind_to_thread().unwrap();
        let checkpoint = Checkpoint::open(path).unwrap();
        let reader = Reader::new();
        let size = checkpoint.placement().unwrap().size().max(1);
        // SAFETY: a plain device allocation, freed at the end.
        let device = unsafe { result::malloc_sync(size) }.unwrap();
        let copy = |host: *const u8, bytes: usize| {
            let start = Instant::now();
            // SAFETY: `device` holds `size >= bytes`; `host` is `bytes` of
            // the registered Tape.
            unsafe { sys::cuMemcpyHtoD_v2(device, host.cast(), bytes) }
                .result()
                .unwrap();
            start.elapsed()
        };
        // The ceiling: the copy alone, from the loaded registered Tape.
        let (h2d, _) = best(runs, || {
            tape.clear();
            let tensors = checkpoint.load(&reader, &tape).unwrap();
            (copy(tensors.as_ptr(), tensors.size()), ())
        });
        rows.push(Row {
            name: "ceiling: registered host to device (cuMemcpyHtoD)".into(),
            time: h2d,
            bytes: size as u64,
            ceiling: 2,
            copied_per_byte: None,
            cached_after: None,
        });
        for warm in [false, true] {
            let (time, _) = best(runs, || {
                tape.clear();
                if warm {
                    std::fs::read(path).unwrap();
                } else {
                    model::make_cold(path).unwrap();
                }
                let start = Instant::now();
                let tensors = checkpoint.load(&reader, &tape).unwrap();
                copy(tensors.as_ptr(), tensors.size());
                (start.elapsed(), ())
            });
            rows.push(Row {
                name: format!(
                    "file -> registered Tape -> device {}",
                    if warm { "warm" } else { "cold" }
                ),
                time,
                bytes: checkpoint.data_len(),
                ceiling: 2,
                copied_per_byte: None,
                cached_after: None,
            });
        }
        // SAFETY: allocated above, no longer used.
        unsafe { result::free_sync(device) }.unwrap();
    }
}
