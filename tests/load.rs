//! Files into memory (feature `load`): ranges into a Block and into Tape,
//! Heap and Grid allocations, by both engines, direct and buffered; warm
//! and cold files; tmpfs; a file that shrinks; progress; safetensors
//! checkpoints, single and sharded; and every malformed file a typed error.
//!
//! CI runs these with `UNIMEM_REQUIRE_DIRECT_IO=1` and
//! `UNIMEM_REQUIRE_IO_URING=1`, which make a target folder without direct
//! I/O or a kernel that refuses io_uring a failure; elsewhere the tests
//! that need them print SKIPPED and why.
#![cfg(all(feature = "load", unimem_linux))]

mod files;
mod harness;

use std::path::Path;

use allocator_api2::vec::Vec as AVec;
use files::{Spec, direct_works, pattern, scratch, tape, tmpfs, write, write_raw, write_synced};
use unimem::load::safetensors::{Header, Placement};
use unimem::load::{
    Checkpoint, Direct, Dtype, Engine, LoadError, Progress, ReadOptions, Reader, Request, Source,
    ViewError,
};
use unimem::{BlockOptions, Error, Grid, Heap, Pinning};

/// The engines to test: both, io_uring only where the kernel allows it
/// (required with `UNIMEM_REQUIRE_IO_URING`).
fn engines() -> Vec<Engine> {
    let mut engines = vec![Engine::Threads];
    match Reader::with_options(ReadOptions::new().engine(Engine::Uring)).engine() {
        Ok(_) => engines.push(Engine::Uring),
        Err(error) => {
            assert!(
                !harness::required("UNIMEM_REQUIRE_IO_URING"),
                "UNIMEM_REQUIRE_IO_URING is set, yet: {error}"
            );
            println!("io_uring is refused here ({error}): the thread engine alone");
        }
    }
    engines
}

fn reader(engine: Engine, direct: Direct) -> Reader {
    Reader::with_options(
        ReadOptions::new()
            .engine(engine)
            .direct(direct)
            .chunk(64 << 10)
            .depth(8)
            .threads(3),
    )
}

fn load_error(result: Result<impl std::fmt::Debug, Error>) -> LoadError {
    match result {
        Err(Error::Load(error)) => error,
        other => panic!("expected a load error, got {other:?}"),
    }
}

fn ranges_land_in_a_block_and_in_tape_heap_and_grid_allocations() {
    let dir = scratch("ranges");
    let path = dir.join("data.bin");
    let data = pattern((3 << 20) + 123, 1);
    write_synced(&path, &data);
    let source = Source::open(&path).unwrap();
    let options = BlockOptions::new().pinning(Pinning::BestEffort).quiet(true);
    for engine in engines() {
        for direct in [Direct::Auto, Direct::On, Direct::Off] {
            if direct == Direct::On && source.direct_alignment().is_none() {
                continue;
            }
            let mut block = options.open(2 << 20).unwrap();
            let tape = tape(1 << 20);
            let heap = Heap::open_with(8 << 20, &options).unwrap();
            let grid = Grid::<4096, 16>::open_with(&options).unwrap();
            let mut in_heap: AVec<u8, _> = AVec::with_capacity_in(100_000, &heap);
            in_heap.resize(100_000, 0);
            let cell = grid.take().unwrap();
            // SAFETY: the cell's 4096 bytes are ours until it is dropped,
            // after the read.
            let in_cell = unsafe { std::slice::from_raw_parts_mut(cell.address(), 4096) };
            let p = tape.take(70_000, 64).unwrap();
            // SAFETY: 70 000 bytes just taken from the Tape.
            let in_tape = unsafe { std::slice::from_raw_parts_mut(p, 70_000) };
            let in_block = &mut block.as_bytes_mut()[4096..4096 + (2 << 20) - 8192];
            let (a, b, c, d) = (8192u64, 1_000_001u64, 77u64, data.len() as u64 - 70_000);
            let report = reader(engine, direct)
                .read(&mut [
                    Request::new(&source, a, in_block),
                    Request::new(&source, b, &mut in_heap),
                    Request::new(&source, c, in_cell),
                    Request::new(&source, d, in_tape),
                ])
                .unwrap();
            let total = (2 << 20) - 8192 + 100_000 + 4096 + 70_000;
            assert_eq!(report.bytes, total as u64);
            assert_eq!(
                report.direct + report.buffered + report.copied,
                report.bytes
            );
            assert_eq!(report.engine, engine);
            let a = a as usize;
            assert!(
                block.as_bytes()[4096..4096 + (2 << 20) - 8192] == data[a..a + (2 << 20) - 8192]
            );
            assert!(in_heap[..] == data[b as usize..b as usize + 100_000]);
            // SAFETY: as above, read back after the read.
            let cell_bytes = unsafe { std::slice::from_raw_parts(cell.address(), 4096) };
            assert!(cell_bytes == &data[c as usize..c as usize + 4096]);
            // SAFETY: as above.
            let tape_bytes = unsafe { std::slice::from_raw_parts(p, 70_000) };
            assert!(tape_bytes == &data[d as usize..d as usize + 70_000]);
            match direct {
                Direct::Off => assert_eq!(report.buffered, report.bytes),
                Direct::On => {
                    assert_eq!(report.buffered, 0);
                    // The Block's range agrees with its offset: only what
                    // the others needed (less than all of them) was copied.
                    assert!(report.direct >= (2 << 20) - 8192, "{report:?}");
                }
                _ => {}
            }
        }
    }
}

fn taken_ranges_are_read_directly_with_no_copy() {
    let dir = scratch("take");
    direct_works(&dir);
    let path = dir.join("data.bin");
    let data = pattern(5 << 20, 2);
    write_synced(&path, &data);
    let source = Source::open(&path).unwrap();
    for engine in engines() {
        let tape = tape(16 << 20);
        for (offset, len) in [
            (0u64, 5 << 20),
            (1, 1000),
            (4095, 2 << 20),
            (777, 3),
            ((5 << 20) - 9, 9),
        ] {
            let (bytes, report) = reader(engine, Direct::On)
                .take(&tape, &source, offset, len)
                .unwrap();
            assert!(
                bytes == &data[offset as usize..offset as usize + len],
                "{offset} {len}"
            );
            assert_eq!(report.copied, 0, "{report:?}");
            assert_eq!(report.direct, len as u64);
            assert!(tape.owns(bytes.as_ptr()));
        }
        // A range past the end takes nothing.
        let used = tape.used();
        let error = load_error(reader(engine, Direct::On).take(&tape, &source, 5 << 20, 1));
        assert!(matches!(error, LoadError::OutOfRange { .. }), "{error}");
        assert_eq!(tape.used(), used, "nothing stays taken");
    }
}

fn cold_files_are_read_directly_and_stay_out_of_the_page_cache() {
    let dir = scratch("cold");
    direct_works(&dir);
    let path = dir.join("data.bin");
    let data = pattern(8 << 20, 3);
    write_synced(&path, &data);
    let source = Source::open(&path).unwrap();
    for engine in engines() {
        source.drop_cached().unwrap();
        assert!(source.cached().unwrap() < 0.1, "cold after dropping");
        let tape = tape(16 << 20);
        let (bytes, report) = reader(engine, Direct::Auto)
            .take(&tape, &source, 0, data.len())
            .unwrap();
        assert!(bytes == &data[..]);
        assert_eq!((report.direct_files, report.buffered_files), (1, 0));
        assert_eq!(report.copied, 0);
        assert!(
            source.cached().unwrap() < 0.1,
            "a direct read leaves the page cache as it was"
        );
        // Warm it; the same read is then buffered.
        assert_eq!(std::fs::read(&path).unwrap().len(), data.len());
        assert!(source.cached().unwrap() > 0.9);
        let (bytes, report) = reader(engine, Direct::Auto)
            .take(&tape, &source, 0, data.len())
            .unwrap();
        assert!(bytes == &data[..]);
        assert_eq!((report.direct_files, report.buffered_files), (0, 1));
        assert_eq!(report.buffered, data.len() as u64);
    }
}

fn tmpfs_has_no_direct_io_and_falls_back_to_buffered() {
    let Some(dir) = tmpfs("tmpfs") else {
        harness::skip("needs tmpfs at /dev/shm");
    };
    let path = dir.join("data.bin");
    let data = pattern(1 << 20, 4);
    write_synced(&path, &data);
    let source = Source::open(&path).unwrap();
    assert_eq!(source.direct_alignment(), None);
    for engine in engines() {
        let tape = tape(4 << 20);
        let (bytes, report) = reader(engine, Direct::Auto)
            .take(&tape, &source, 10, data.len() - 10)
            .unwrap();
        assert!(bytes == &data[10..]);
        assert_eq!(report.buffered, report.bytes);
        let error = load_error(reader(engine, Direct::On).take(&tape, &source, 0, 10));
        assert!(
            matches!(error, LoadError::DirectUnsupported { .. }),
            "{error}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn a_file_that_shrinks_while_it_is_read_is_a_typed_error() {
    let dir = scratch("shrink");
    let path = dir.join("data.bin");
    let data = pattern(4 << 20, 5);
    for engine in engines() {
        for direct in [Direct::Auto, Direct::On, Direct::Off] {
            write_synced(&path, &data);
            let source = Source::open(&path).unwrap();
            if direct == Direct::On && source.direct_alignment().is_none() {
                continue;
            }
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(1 << 20)
                .unwrap();
            let tape = tape(8 << 20);
            let error = load_error(reader(engine, direct).take(&tape, &source, 0, data.len()));
            match error {
                LoadError::Shrunk {
                    offset,
                    expected,
                    found,
                    ..
                } => assert!(found < expected && offset + found <= 1 << 20 || offset >= 1 << 20),
                other => panic!("{engine:?} {direct:?}: {other}"),
            }
            assert_eq!(tape.used(), 0, "the Tape was rewound");
        }
    }
}

fn progress_reaches_the_total_on_the_calling_thread() {
    let dir = scratch("progress");
    let path = dir.join("data.bin");
    let data = pattern(6 << 20, 6);
    write_synced(&path, &data);
    let source = Source::open(&path).unwrap();
    for engine in engines() {
        let mut dst = vec![0u8; data.len() - 5];
        let caller = std::thread::current().id();
        let mut seen: Vec<Progress> = Vec::new();
        let report = reader(engine, Direct::Auto)
            .read_with(&mut [Request::new(&source, 5, &mut dst)], |p| {
                assert_eq!(std::thread::current().id(), caller);
                seen.push(p);
            })
            .unwrap();
        assert!(dst == data[5..]);
        let last = *seen.last().unwrap();
        assert_eq!(last.done, last.total);
        assert_eq!(last.total, report.bytes);
        assert!(seen.windows(2).all(|w| w[0].done <= w[1].done));
    }
}

fn a_panicking_progress_callback_leaves_no_read_behind() {
    let dir = scratch("panic");
    let path = dir.join("data.bin");
    let data = pattern(4 << 20, 7);
    write_synced(&path, &data);
    let source = Source::open(&path).unwrap();
    for engine in engines() {
        let mut dst = vec![0u8; data.len()];
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            reader(engine, Direct::Auto).read_with(
                &mut [Request::new(&source, 0, &mut dst)],
                |_| {
                    // Unwinds as a panic does, without the hook's message.
                    std::panic::resume_unwind(Box::new("stop"))
                },
            )
        }));
        assert!(result.is_err());
        // The buffer is ours again: nothing writes it any more.
        dst.fill(0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(dst.iter().all(|&b| b == 0));
    }
}

fn the_engine_can_be_forced_from_the_environment() {
    if let Ok(expected) = std::env::var("UNIMEM_LOAD_ENGINE_CHILD") {
        let engine = Reader::new().engine();
        match (expected.as_str(), engine) {
            ("threads", Ok(Engine::Threads)) | ("uring", Ok(Engine::Uring)) => {
                println!("child saw {expected}")
            }
            ("bogus", Err(Error::InvalidArgument { .. })) => println!("child saw bogus"),
            other => panic!("{other:?}"),
        }
        return;
    }
    let mut cases = vec!["threads", "bogus"];
    if engines().contains(&Engine::Uring) {
        cases.push("uring");
    }
    for case in cases {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "the_engine_can_be_forced_from_the_environment",
                "--nocapture",
            ])
            .env("UNIMEM_LOAD_ENGINE", case)
            .env("UNIMEM_LOAD_ENGINE_CHILD", case)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(text.contains(&format!("child saw {case}")), "{text}");
    }
}

/// A checkpoint of every dtype, a scalar, a zero-size tensor and odd
/// shapes.
fn every_dtype() -> Vec<Spec> {
    let mut specs = Vec::new();
    for (i, &(dtype, size)) in files::DTYPES.iter().enumerate() {
        specs.push(Spec::new(
            &format!("t{i:02}.{dtype}"),
            dtype,
            size,
            &[3, 5, i + 1],
        ));
    }
    specs.push(Spec::new("scalar", "F32", 4, &[]));
    specs.push(Spec::new("empty", "F16", 2, &[0, 7]));
    specs.push(Spec::new("odd", "BF16", 2, &[1, 13, 1, 3]));
    specs.push(Spec::new("f4", "F4", 1, &[6]).half_bytes());
    specs
}

trait HalfBytes {
    fn half_bytes(self) -> Self;
}

impl HalfBytes for Spec {
    /// For a 4-bit dtype: `shape` elements in half as many bytes.
    fn half_bytes(mut self) -> Spec {
        let n: usize = self.shape.iter().product();
        self.bytes.truncate(n / 2);
        self
    }
}

fn check_loaded(tensors: &unimem::load::Tensors<'_>, specs: &[Spec], align: usize) {
    assert_eq!(tensors.len(), specs.len());
    for spec in specs {
        let t = tensors.tensor(&spec.name).unwrap();
        assert_eq!(t.shape(), &spec.shape[..]);
        assert_eq!(t.dtype().to_string(), spec.dtype);
        assert!(t.bytes() == &spec.bytes[..], "{}", spec.name);
        assert_eq!(
            t.bytes().as_ptr().addr() % align,
            0,
            "{} aligned",
            spec.name
        );
    }
}

fn a_checkpoint_of_every_dtype_loads_bit_for_bit_aligned() {
    let dir = scratch("dtypes");
    let specs = every_dtype();
    for (i, data_at) in [None, Some(0), Some(8), Some(40)].into_iter().enumerate() {
        let path = dir.join(format!("model-{i}.safetensors"));
        write(&path, &specs, data_at);
        for engine in engines() {
            for direct in [Direct::Auto, Direct::On, Direct::Off] {
                let mut checkpoint = Checkpoint::open(&path).unwrap();
                if direct == Direct::On
                    && checkpoint
                        .files()
                        .next()
                        .unwrap()
                        .0
                        .direct_alignment()
                        .is_none()
                {
                    continue;
                }
                for align in [64, 256] {
                    checkpoint.set_align(align).unwrap();
                    let tape = tape(1 << 20);
                    let tensors = checkpoint.load(&reader(engine, direct), &tape).unwrap();
                    check_loaded(&tensors, &specs, align);
                    let report = tensors.report();
                    assert_eq!(report.bytes, checkpoint.data_len());
                    if direct == Direct::Off {
                        assert_eq!(report.buffered, report.bytes);
                    }
                }
            }
        }
    }
}

fn typed_views_check_dtype_length_and_alignment() {
    let dir = scratch("views");
    let path = dir.join("model.safetensors");
    let values: Vec<f32> = (0..100).map(|i| i as f32 * 0.5 - 3.0).collect();
    let halves: Vec<u16> = (0..10)
        .map(|i| unimem::load::f16::from_f32(i as f32).to_bits())
        .collect();
    let brains: Vec<u16> = (0..10)
        .map(|i| unimem::load::bf16::from_f32(i as f32 * 2.0).to_bits())
        .collect();
    let ints: Vec<i64> = (0..7).map(|i| -(i as i64) << 40).collect();
    let specs = vec![
        Spec {
            name: "w".into(),
            dtype: "F32",
            shape: vec![10, 10],
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        },
        Spec {
            name: "h".into(),
            dtype: "F16",
            shape: vec![10],
            bytes: halves.iter().flat_map(|v| v.to_le_bytes()).collect(),
        },
        Spec {
            name: "b".into(),
            dtype: "BF16",
            shape: vec![2, 5],
            bytes: brains.iter().flat_map(|v| v.to_le_bytes()).collect(),
        },
        Spec {
            name: "i".into(),
            dtype: "I64",
            shape: vec![7],
            bytes: ints.iter().flat_map(|v| v.to_le_bytes()).collect(),
        },
        Spec::new("e", "F32", 4, &[0]),
    ];
    write(&path, &specs, Some(24));
    let tape = tape(1 << 20);
    let tensors = Checkpoint::open(&path)
        .unwrap()
        .load(&Reader::new(), &tape)
        .unwrap();
    assert_eq!(tensors.tensor("w").unwrap().as_f32().unwrap(), &values[..]);
    let h = tensors.tensor("h").unwrap().as_f16().unwrap();
    assert_eq!(h[3].to_f32(), 3.0);
    let b = tensors.tensor("b").unwrap().as_bf16().unwrap();
    assert_eq!(b[4].to_f32(), 8.0);
    assert_eq!(tensors.tensor("i").unwrap().as_i64().unwrap(), &ints[..]);
    assert_eq!(
        tensors.tensor("e").unwrap().as_f32().unwrap(),
        &[] as &[f32]
    );
    assert_eq!(tensors.tensor("w").unwrap().elements(), 100);
    // The wrong dtype, a missing name.
    match tensors.tensor("w").unwrap().as_f16() {
        Err(LoadError::View {
            name,
            error:
                ViewError::Dtype {
                    dtype: Dtype::F32,
                    asked: Dtype::F16,
                },
        }) => assert_eq!(name, "w"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        tensors.tensor("i").unwrap().as_u64(),
        Err(LoadError::View { .. })
    ));
    assert!(matches!(
        tensors.tensor("nope"),
        Err(LoadError::NotFound { .. })
    ));

    // Placed at an alignment of 1, a tensor may sit where f32 cannot be
    // read: the view says so instead of reading it.
    let mut checkpoint = Checkpoint::open(&path).unwrap();
    checkpoint.set_align(1).unwrap();
    let specs = vec![
        Spec::new("byte", "U8", 1, &[3]),
        Spec::new("word", "F32", 4, &[4]),
    ];
    let odd = dir.join("odd.safetensors");
    write(&odd, &specs, Some(0));
    let mut checkpoint2 = Checkpoint::open(&odd).unwrap();
    checkpoint2.set_align(1).unwrap();
    let tape2 = files::tape(1 << 20);
    let tensors = checkpoint2
        .load(&reader(Engine::Threads, Direct::Off), &tape2)
        .unwrap();
    let word = tensors.tensor("word").unwrap();
    assert!(word.bytes() == &specs[1].bytes[..]);
    if word.bytes().as_ptr().addr() % 4 != 0 {
        assert!(matches!(
            word.as_f32(),
            Err(LoadError::View {
                error: ViewError::Alignment { .. },
                ..
            })
        ));
    }
    assert!(checkpoint.set_align(3).is_err());
    assert!(checkpoint.set_align(0).is_err());
}

fn a_sharded_checkpoint_loads_from_its_index() {
    let dir = scratch("sharded");
    let first: Vec<Spec> = (0..5)
        .map(|i| Spec::new(&format!("a.{i}"), "F32", 4, &[i + 1, 33]))
        .collect();
    let second: Vec<Spec> = (0..4)
        .map(|i| Spec::new(&format!("b.{i}"), "BF16", 2, &[17, i + 2]))
        .collect();
    write(&dir.join("model-00001-of-00002.safetensors"), &first, None);
    write(&dir.join("model-00002-of-00002.safetensors"), &second, None);
    let mut map: Vec<String> = first
        .iter()
        .map(|s| format!("{:?}:\"model-00001-of-00002.safetensors\"", s.name))
        .collect();
    map.extend(
        second
            .iter()
            .map(|s| format!("{:?}:\"model-00002-of-00002.safetensors\"", s.name)),
    );
    let index = dir.join("model.safetensors.index.json");
    std::fs::write(
        &index,
        format!(
            "{{\"metadata\":{{\"total_size\":123}},\"weight_map\":{{{}}}}}",
            map.join(",")
        ),
    )
    .unwrap();
    let checkpoint = Checkpoint::open(&index).unwrap();
    assert_eq!(checkpoint.files().len(), 2);
    assert_eq!(checkpoint.len(), 9);
    for engine in engines() {
        let tape = tape(1 << 20);
        let tensors = checkpoint
            .load(&reader(engine, Direct::Auto), &tape)
            .unwrap();
        let all: Vec<Spec> = first.iter().chain(&second).cloned().collect();
        check_loaded(&tensors, &all, 64);
        assert!(
            tensors
                .file_of("b.3")
                .unwrap()
                .ends_with("model-00002-of-00002.safetensors")
        );
    }
}

fn cold_checkpoints_whose_tensors_agree_with_the_storage_load_with_no_copy() {
    let dir = scratch("zero-copy");
    direct_works(&dir);
    // Sizes that keep every tensor at a multiple of 64 from the first.
    let specs: Vec<Spec> = (0..6)
        .map(|i| Spec::new(&format!("w{i}"), "F16", 2, &[64 * (i + 1), 96]))
        .collect();
    for data_at in [0usize, 8, 48] {
        let path = dir.join(format!("model-{data_at}.safetensors"));
        write(&path, &specs, Some(data_at));
        let checkpoint = Checkpoint::open(&path).unwrap();
        let (source, _) = checkpoint.files().next().unwrap();
        let align = source.direct_alignment().unwrap();
        source.drop_cached().unwrap();
        let tape = tape(4 << 20);
        let tensors = checkpoint
            .load(&reader(Engine::Threads, Direct::Auto), &tape)
            .unwrap();
        check_loaded(&tensors, &specs, 64);
        let report = tensors.report();
        assert_eq!(report.direct_files, 1);
        // At 64 mod 64 the tensors agree with any storage's alignment; at 8
        // or 48 only with one that takes memory aligned to 8 or 16 (NVMe
        // takes 4), not with one that wants 512 (a virtual disk).
        if data_at % align.memory.min(64) == 0 {
            assert_eq!(report.copied, 0, "{data_at}: {report:?}");
        } else {
            assert_eq!(report.copied, report.bytes, "{data_at}: {report:?}");
        }
        assert!(
            source.cached().unwrap() < 0.1,
            "the page cache stayed as it was"
        );
    }
}

fn a_tape_too_small_is_a_typed_error_and_takes_nothing() {
    let dir = scratch("small");
    let path = dir.join("model.safetensors");
    let specs = vec![Spec::new("big", "F32", 4, &[300, 1000])];
    write(&path, &specs, None);
    let checkpoint = Checkpoint::open(&path).unwrap();
    let tape = tape(1 << 20);
    tape.take(100, 8).unwrap();
    let used = tape.used();
    let error = load_error(checkpoint.load(&Reader::new(), &tape));
    match error {
        LoadError::TapeTooSmall { needed, free } => {
            assert!(needed >= 1_200_000 && free < needed, "{needed} {free}");
            assert!(
                error_text(&Error::Load(LoadError::TapeTooSmall { needed, free }))
                    .contains(&needed.to_string())
            );
        }
        other => panic!("{other}"),
    }
    assert_eq!(tape.used(), used);
    let big = files::tape(checkpoint.needed().unwrap());
    checkpoint.load(&Reader::new(), &big).unwrap();
}

fn error_text(error: &Error) -> String {
    error.to_string()
}

fn a_shrunk_checkpoint_leaves_nothing_half_loaded() {
    let dir = scratch("shrunk-checkpoint");
    let path = dir.join("model.safetensors");
    let specs = vec![
        Spec::new("a", "F32", 4, &[1000, 300]),
        Spec::new("b", "F32", 4, &[1000, 300]),
    ];
    write(&path, &specs, None);
    for engine in engines() {
        let checkpoint = Checkpoint::open(&path).unwrap();
        let len = checkpoint.files().next().unwrap().1.file_len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        let tape = tape(4 << 20);
        let error = load_error(checkpoint.load(&reader(engine, Direct::Auto), &tape));
        assert!(matches!(error, LoadError::Shrunk { .. }), "{error}");
        assert_eq!(tape.used(), 0);
        write(&path, &specs, None);
    }
}

/// Writes `json` as a header (8-byte length, then it, then `data`) and
/// opens it as a checkpoint.
fn open_raw(dir: &Path, name: &str, json: &str, data: &[u8]) -> LoadError {
    let path = dir.join(name);
    write_raw(&path, json.as_bytes(), None, data);
    load_error(Checkpoint::open(&path))
}

fn malformed_files_are_typed_errors() {
    let dir = scratch("malformed");
    let t = |name: &str, dtype: &str, shape: &str, start: usize, end: usize| {
        format!(
            "{name:?}:{{\"dtype\":{dtype:?},\"shape\":{shape},\"data_offsets\":[{start},{end}]}}"
        )
    };
    let data = [0u8; 64];

    // Shorter than the 8-byte length.
    std::fs::write(dir.join("tiny"), [1, 2, 3]).unwrap();
    assert!(matches!(
        load_error(Checkpoint::open(dir.join("tiny"))),
        LoadError::Truncated {
            needed: 8,
            len: 3,
            ..
        }
    ));
    // A header length past the end of the file.
    write_raw(&dir.join("past"), b"{}", Some(1000), &[]);
    assert!(matches!(
        load_error(Checkpoint::open(dir.join("past"))),
        LoadError::Truncated { needed: 1008, .. }
    ));
    // Absurdly large.
    write_raw(&dir.join("huge"), b"{}", Some(u64::MAX), &[]);
    assert!(matches!(
        load_error(Checkpoint::open(dir.join("huge"))),
        LoadError::HeaderTooLarge { len: u64::MAX, .. }
    ));
    write_raw(&dir.join("huge2"), b"{}", Some(200_000_000), &[]);
    assert!(matches!(
        load_error(Checkpoint::open(dir.join("huge2"))),
        LoadError::HeaderTooLarge { .. }
    ));
    // Not JSON, not UTF-8, not an object, an unknown dtype, a negative size.
    for (name, json) in [
        ("notjson", "hello world"),
        ("array", "[1, 2, 3]"),
        ("unknown", &format!("{{{}}}", t("a", "F128", "[1]", 0, 16))),
        ("negative", &format!("{{{}}}", t("a", "F32", "[-1]", 0, 4))),
        ("nooffsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}"),
        ("unclosed", "{\"a\":"),
    ] {
        let error = open_raw(&dir, name, json, &[]);
        assert!(matches!(error, LoadError::Header { .. }), "{name}: {error}");
    }
    write_raw(&dir.join("utf8"), &[b'{', 0xff, 0xfe, b'}'], None, &[]);
    assert!(matches!(
        load_error(Checkpoint::open(dir.join("utf8"))),
        LoadError::Header { .. }
    ));

    type Case = (&'static str, String, usize, fn(&LoadError) -> bool);
    let cases: Vec<Case> = vec![
        (
            "reversed",
            format!("{{{}}}", t("a", "F32", "[0]", 8, 4)),
            8,
            |e| {
                matches!(
                    e,
                    LoadError::ReversedOffsets {
                        start: 8,
                        end: 4,
                        ..
                    }
                )
            },
        ),
        (
            "overlap",
            format!(
                "{{{},{}}}",
                t("a", "F32", "[2]", 0, 8),
                t("b", "F32", "[2]", 4, 12)
            ),
            12,
            |e| matches!(e, LoadError::Overlap { name, other, .. } if name == "b" && other == "a"),
        ),
        (
            "same-offsets",
            format!(
                "{{{},{}}}",
                t("a", "F32", "[2]", 0, 8),
                t("b", "F32", "[2]", 0, 8)
            ),
            8,
            |e| matches!(e, LoadError::Overlap { .. }),
        ),
        (
            "gap",
            format!(
                "{{{},{}}}",
                t("a", "F32", "[2]", 0, 8),
                t("b", "F32", "[2]", 12, 20)
            ),
            20,
            |e| {
                matches!(
                    e,
                    LoadError::Gap {
                        expected: 8,
                        start: 12,
                        ..
                    }
                )
            },
        ),
        (
            "first-gap",
            format!("{{{}}}", t("a", "F32", "[2]", 4, 12)),
            12,
            |e| {
                matches!(
                    e,
                    LoadError::Gap {
                        expected: 0,
                        start: 4,
                        ..
                    }
                )
            },
        ),
        (
            "past-end",
            format!("{{{}}}", t("a", "F32", "[16]", 0, 64)),
            32,
            |e| matches!(e, LoadError::TensorPastEnd { .. }),
        ),
        (
            "size",
            format!("{{{}}}", t("a", "F32", "[3]", 0, 8)),
            8,
            |e| {
                matches!(
                    e,
                    LoadError::SizeMismatch {
                        expected: 12,
                        found: 8,
                        ..
                    }
                )
            },
        ),
        (
            "overflow",
            format!("{{{}}}", t("a", "F32", "[4294967296,4294967296]", 0, 8)),
            8,
            |e| matches!(e, LoadError::ShapeOverflow { .. }),
        ),
        (
            "overflow-bits",
            format!("{{{}}}", t("a", "F64", "[2305843009213693952]", 0, 8)),
            8,
            |e| matches!(e, LoadError::ShapeOverflow { .. }),
        ),
        (
            "partial",
            format!("{{{}}}", t("a", "F4", "[3]", 0, 2)),
            2,
            |e| matches!(e, LoadError::PartialByte { .. }),
        ),
        (
            "duplicate",
            format!(
                "{{{},{}}}",
                t("a", "F32", "[1]", 0, 4),
                t("a", "F32", "[1]", 4, 8)
            ),
            8,
            |e| matches!(e, LoadError::DuplicateName { name, .. } if name == "a"),
        ),
        (
            "duplicate-same",
            format!(
                "{{{},{}}}",
                t("a", "F32", "[1]", 0, 4),
                t("a", "F32", "[1]", 0, 4)
            ),
            4,
            |e| matches!(e, LoadError::DuplicateName { .. }),
        ),
        (
            "duplicate-metadata",
            format!(
                "{{\"__metadata__\":{{}},\"__metadata__\":{{}},{}}}",
                t("a", "F32", "[1]", 0, 4)
            ),
            4,
            |e| matches!(e, LoadError::DuplicateName { name, .. } if name == "__metadata__"),
        ),
        (
            "trailing",
            format!("{{{}}}", t("a", "F32", "[1]", 0, 4)),
            12,
            |e| matches!(e, LoadError::TrailingBytes { .. }),
        ),
    ];
    for (name, json, data_len, expected) in cases {
        let error = open_raw(&dir, name, &json, &data[..data_len]);
        assert!(expected(&error), "{name}: {error}");
        // The same bytes through the in-memory parser.
        let path = dir.join(name);
        let bytes = std::fs::read(&path).unwrap();
        match Header::parse(&bytes, bytes.len() as u64, &path) {
            Err(Error::Load(error)) => assert!(expected(&error), "{name} (parse): {error}"),
            other => panic!("{name} (parse): {other:?}"),
        }
    }
    // A file is not a folder.
    assert!(matches!(
        load_error(Checkpoint::open(&dir)),
        LoadError::Io { .. }
    ));
    assert!(matches!(
        load_error(Checkpoint::open(dir.join("absent.safetensors"))),
        LoadError::Io { .. }
    ));
}

fn malformed_indexes_are_typed_errors() {
    let dir = scratch("bad-index");
    write(
        &dir.join("one.safetensors"),
        &[Spec::new("a", "F32", 4, &[4])],
        None,
    );
    write(
        &dir.join("two.safetensors"),
        &[Spec::new("b", "F32", 4, &[4])],
        None,
    );
    write(
        &dir.join("pair.safetensors"),
        &[
            Spec::new("c", "F32", 4, &[4]),
            Spec::new("d", "F32", 4, &[4]),
        ],
        None,
    );
    let index = |name: &str, json: &str| {
        let path = dir.join(name);
        std::fs::write(&path, json).unwrap();
        load_error(Checkpoint::open(&path))
    };
    let good = dir.join("good.index.json");
    std::fs::write(
        &good,
        r#"{"weight_map":{"a":"one.safetensors","b":"two.safetensors"}}"#,
    )
    .unwrap();
    assert_eq!(Checkpoint::open(&good).unwrap().len(), 2);
    for (name, json, check) in [
        ("notjson.index.json", "nope", "Index"),
        ("nomap.index.json", r#"{"metadata":{}}"#, "Index"),
        ("notobject.index.json", r#"{"weight_map":[1]}"#, "Index"),
        (
            "twomaps.index.json",
            r#"{"weight_map":{},"weight_map":{}}"#,
            "Index",
        ),
        (
            "parent.index.json",
            r#"{"weight_map":{"a":"../one.safetensors"}}"#,
            "Index",
        ),
        (
            "absolute.index.json",
            r#"{"weight_map":{"a":"/etc/passwd"}}"#,
            "Index",
        ),
        (
            "dup.index.json",
            r#"{"weight_map":{"a":"one.safetensors","a":"one.safetensors"}}"#,
            "DuplicateName",
        ),
        (
            "missing.index.json",
            r#"{"weight_map":{"a":"three.safetensors"}}"#,
            "MissingShard",
        ),
        (
            "wrong-shard.index.json",
            r#"{"weight_map":{"a":"two.safetensors","b":"two.safetensors"}}"#,
            "IndexMismatch",
        ),
        (
            "unlisted.index.json",
            r#"{"weight_map":{"c":"pair.safetensors"}}"#,
            "IndexMismatch",
        ),
        (
            "not-in-shard.index.json",
            r#"{"weight_map":{"a":"one.safetensors","c":"one.safetensors","b":"two.safetensors"}}"#,
            "IndexMismatch",
        ),
    ] {
        let error = index(name, json);
        let debug = format!("{error:?}");
        assert!(debug.starts_with(check), "{name}: {debug}");
    }
}

fn placements_keep_tensors_aligned_apart_and_inside() {
    let dir = scratch("placement");
    let path = dir.join("model.safetensors");
    let specs: Vec<Spec> = (0..20)
        .map(|i| {
            Spec::new(
                &format!("t{i}"),
                if i % 3 == 0 { "U8" } else { "F32" },
                if i % 3 == 0 { 1 } else { 4 },
                &[i * 7 + 1, 3],
            )
        })
        .collect();
    write(&path, &specs, None);
    let checkpoint = Checkpoint::open(&path).unwrap();
    let (_, header) = checkpoint.files().next().unwrap();
    for direct in [
        None,
        Some(unimem::load::DirectAlign {
            memory: 4,
            offset: 512,
        }),
        Some(unimem::load::DirectAlign {
            memory: 512,
            offset: 512,
        }),
        Some(unimem::load::DirectAlign {
            memory: 4096,
            offset: 4096,
        }),
    ] {
        for align in [1, 8, 64, 4096] {
            let placement = Placement::plan(&[header], &[direct], align).unwrap();
            let mut spans: Vec<(usize, usize)> = Vec::new();
            for (i, (_, info)) in header.tensors().iter().enumerate() {
                let len = info.data_offsets.1 - info.data_offsets.0;
                let at = placement.offset(0, i);
                assert_eq!(at % align, 0);
                assert!(at + len <= placement.size());
                if len > 0 {
                    spans.push((at, at + len));
                }
            }
            spans.sort();
            assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "apart");
            for run in placement.runs() {
                assert!(run.at >= run.before && run.at + run.len + run.after <= placement.size());
            }
        }
    }
}

fn main() {
    harness::main(&[
        test!(ranges_land_in_a_block_and_in_tape_heap_and_grid_allocations),
        test!(taken_ranges_are_read_directly_with_no_copy),
        test!(cold_files_are_read_directly_and_stay_out_of_the_page_cache),
        test!(tmpfs_has_no_direct_io_and_falls_back_to_buffered),
        test!(a_file_that_shrinks_while_it_is_read_is_a_typed_error),
        test!(progress_reaches_the_total_on_the_calling_thread),
        test!(a_panicking_progress_callback_leaves_no_read_behind),
        test!(the_engine_can_be_forced_from_the_environment),
        test!(a_checkpoint_of_every_dtype_loads_bit_for_bit_aligned),
        test!(typed_views_check_dtype_length_and_alignment),
        test!(a_sharded_checkpoint_loads_from_its_index),
        test!(cold_checkpoints_whose_tensors_agree_with_the_storage_load_with_no_copy),
        test!(a_tape_too_small_is_a_typed_error_and_takes_nothing),
        test!(a_shrunk_checkpoint_leaves_nothing_half_loaded),
        test!(malformed_files_are_typed_errors),
        test!(malformed_indexes_are_typed_errors),
        test!(placements_keep_tensors_aligned_apart_and_inside),
    ]);
}
