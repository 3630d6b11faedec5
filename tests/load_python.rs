//! Interop with the reference writer: Python's `safetensors` package writes
//! files (every dtype it has, a scalar, a zero-size tensor, odd shapes,
//! bfloat16, the float8s and float4, and a sharded checkpoint as
//! transformers writes one; `tools/safetensors_interop.py`), and every
//! tensor read back here matches what Python wrote, bit for bit, by both
//! engines, direct and buffered, from a real file system and from tmpfs;
//! typed views give the values numpy summed.
//!
//! CI pip-installs `safetensors` and `numpy` and sets
//! `UNIMEM_REQUIRE_PYTHON_SAFETENSORS=1`, which makes a missing Python or
//! package a failure; elsewhere the test prints SKIPPED and why.
#![cfg(all(feature = "load", unimem_linux))]

mod files;
mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use unimem::load::{Checkpoint, Direct, Dtype, Engine, ReadOptions, Reader, Tensor};

/// Runs the writer into a fresh folder; where Python or its packages are
/// missing the test is skipped, or fails with
/// `UNIMEM_REQUIRE_PYTHON_SAFETENSORS` set (CI sets it).
fn python_files() -> PathBuf {
    let out = files::scratch("python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/safetensors_interop.py");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let result = Command::new(&python).arg(&script).arg(&out).output();
    let why = match result {
        Ok(output) if output.status.success() => {
            print!("{}", String::from_utf8_lossy(&output.stdout));
            return out;
        }
        Ok(output) => format!(
            "{python} {} failed ({}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => format!("{python} cannot run: {error}"),
    };
    harness::component::<(), _>(
        "UNIMEM_REQUIRE_PYTHON_SAFETENSORS",
        "needs Python with safetensors and numpy",
        Err(why),
    );
    unreachable!("component fails or skips the test on an error")
}

fn engines() -> Vec<Engine> {
    let mut engines = vec![Engine::Threads];
    if Reader::with_options(ReadOptions::new().engine(Engine::Uring))
        .engine()
        .is_ok()
    {
        engines.push(Engine::Uring);
    }
    engines
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Sums a tensor's values through its typed view, in f64.
fn typed_sum(t: &Tensor<'_>) -> Option<(f64, usize)> {
    let finite = |values: &mut dyn Iterator<Item = f64>| {
        let mut kept: Vec<f64> = values.filter(|v| v.is_finite()).collect();
        let n = kept.len();
        // An exact sum (as math.fsum): sort by magnitude, then compensate.
        kept.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
        let (mut sum, mut c) = (0.0f64, 0.0f64);
        for v in kept {
            let y = v - c;
            let t = sum + y;
            c = (t - sum) - y;
            sum = t;
        }
        (sum, n)
    };
    Some(match t.dtype() {
        Dtype::F32 => finite(&mut t.as_f32().unwrap().iter().map(|&v| f64::from(v))),
        Dtype::F64 => finite(&mut t.as_f64().unwrap().iter().copied()),
        Dtype::F16 => finite(&mut t.as_f16().unwrap().iter().map(|v| v.to_f64())),
        Dtype::BF16 => finite(&mut t.as_bf16().unwrap().iter().map(|v| v.to_f64())),
        Dtype::I8 => finite(&mut t.as_i8().unwrap().iter().map(|&v| f64::from(v))),
        Dtype::U8 => finite(&mut t.as_u8().unwrap().iter().map(|&v| f64::from(v))),
        Dtype::BOOL => finite(&mut t.bytes().iter().map(|&v| f64::from(v))),
        Dtype::I16 => finite(&mut t.as_i16().unwrap().iter().map(|&v| f64::from(v))),
        Dtype::U16 => finite(&mut t.as_u16().unwrap().iter().map(|&v| f64::from(v))),
        Dtype::I32 => finite(&mut t.as_i32().unwrap().iter().map(|&v| f64::from(v))),
        Dtype::U32 => finite(&mut t.as_u32().unwrap().iter().map(|&v| f64::from(v))),
        Dtype::I64 => finite(&mut t.as_i64().unwrap().iter().map(|&v| v as f64)),
        Dtype::U64 => finite(&mut t.as_u64().unwrap().iter().map(|&v| v as f64)),
        _ => return None,
    })
}

/// Loads `path` every way and checks each tensor against `expected`.
fn check(path: &Path, expected: &serde_json::Map<String, Value>, tmpfs: bool) {
    let checkpoint = Checkpoint::open(path).unwrap();
    assert_eq!(checkpoint.len(), expected.len(), "{}", path.display());
    let mut directs = vec![Direct::Auto, Direct::Off];
    if !tmpfs
        && checkpoint
            .files()
            .all(|(s, _)| s.direct_alignment().is_some())
    {
        directs.push(Direct::On);
    }
    for engine in engines() {
        for &direct in &directs {
            let reader = Reader::with_options(ReadOptions::new().engine(engine).direct(direct));
            let tape = files::tape(checkpoint.needed().unwrap());
            let tensors = checkpoint.load(&reader, &tape).unwrap();
            for (name, item) in expected {
                let t = tensors.tensor(name).unwrap();
                let context = format!("{} {name} ({engine:?}, {direct:?})", path.display());
                assert_eq!(
                    t.dtype().to_string(),
                    item["dtype"].as_str().unwrap(),
                    "{context}"
                );
                let shape: Vec<usize> = item["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect();
                assert_eq!(t.shape(), &shape[..], "{context}");
                assert!(
                    t.bytes() == &hex(item["hex"].as_str().unwrap())[..],
                    "{context}: bytes"
                );
                assert_eq!(t.bytes().as_ptr().addr() % 64, 0, "{context}: aligned");
                if let Some(sum) = item.get("sum").and_then(Value::as_f64) {
                    let (ours, n) = typed_sum(&t).expect("a typed view");
                    assert_eq!(n as u64, item["finite"].as_u64().unwrap(), "{context}");
                    let tolerance = 1e-9 * sum.abs().max(1.0);
                    assert!(
                        (ours - sum).abs() <= tolerance,
                        "{context}: {ours} != {sum}"
                    );
                }
            }
            let report = tensors.report();
            assert_eq!(report.bytes, checkpoint.data_len());
            if tmpfs || direct == Direct::Off {
                assert_eq!(report.buffered, report.bytes, "{report:?}");
            }
        }
    }
}

fn files_python_wrote_read_back_bit_for_bit() {
    let out = python_files();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let written = manifest["files"].as_object().unwrap();
    assert_eq!(written.len(), 3);
    for (file, expected) in written {
        check(&out.join(file), expected.as_object().unwrap(), false);
    }
    // The same files from tmpfs, which has no direct I/O.
    if let Some(shm) = files::tmpfs("python") {
        std::fs::create_dir_all(shm.join("sharded")).unwrap();
        for (file, expected) in written {
            let from = out.join(file);
            if file.ends_with(".json") {
                for entry in std::fs::read_dir(from.parent().unwrap()).unwrap() {
                    let entry = entry.unwrap().path();
                    std::fs::copy(&entry, shm.join("sharded").join(entry.file_name().unwrap()))
                        .unwrap();
                }
            } else {
                std::fs::copy(&from, shm.join(file)).unwrap();
            }
            check(&shm.join(file), expected.as_object().unwrap(), true);
        }
        std::fs::remove_dir_all(&shm).unwrap();
    }
    let checkpoint = Checkpoint::open(out.join("every_dtype.safetensors")).unwrap();
    let (_, header) = checkpoint.files().next().unwrap();
    assert!(
        header
            .metadata()
            .iter()
            .any(|(k, v)| k == "format" && v == "np"),
        "{:?}",
        header.metadata()
    );
}

fn main() {
    harness::main(&[test!(files_python_wrote_read_back_bit_for_bit)]);
}
