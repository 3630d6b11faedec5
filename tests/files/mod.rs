//! Files for the load tests: scratch folders on a file system with direct
//! I/O and on tmpfs, a safetensors writer that lays files out as the
//! reference writers do (or with the data at a chosen offset), and a raw
//! writer for malformed files.
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use unimem::load::Source;
use unimem::{BlockOptions, Pinning, Tape};

/// A fresh folder for `test`: under `UNIMEM_LOAD_TEST_DIR` if set, else
/// under the target folder (a real file system: ext4 in CI, where direct
/// I/O works) where it exists (a test binary run on another machine has
/// none), else under the system's temporary folder.
pub fn scratch(test: &str) -> PathBuf {
    let base = std::env::var_os("UNIMEM_LOAD_TEST_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            option_env!("CARGO_TARGET_TMPDIR")
                .map(PathBuf::from)
                .filter(|p| p.exists())
        })
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("unimem-load-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fresh folder on tmpfs (`/dev/shm`), which offers no direct I/O, or
/// `None` where there is none.
pub fn tmpfs(test: &str) -> Option<PathBuf> {
    let shm = Path::new("/dev/shm");
    // SAFETY: a zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out-pointer.
    let rc = unsafe { libc::statfs(c"/dev/shm".as_ptr(), &mut st) };
    if rc != 0 || st.f_type != libc::TMPFS_MAGIC {
        return None;
    }
    let dir = shm.join(format!("unimem-load-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

/// Direct I/O in `dir`: where there is none the test is skipped, or fails
/// with `UNIMEM_REQUIRE_DIRECT_IO` set (CI sets it).
pub fn direct_works(dir: &Path) {
    let probe = dir.join("direct-probe");
    std::fs::write(&probe, [0u8; 4096]).unwrap();
    let works = Source::open(&probe).unwrap().direct_alignment().is_some();
    std::fs::remove_file(&probe).unwrap();
    crate::harness::component(
        "UNIMEM_REQUIRE_DIRECT_IO",
        "needs a file system with direct I/O",
        if works {
            Ok(())
        } else {
            Err(format!("{} offers none", dir.display()))
        },
    )
}

/// A Tape of `bytes`, pinned where the limit allows.
pub fn tape(bytes: usize) -> Tape {
    Tape::open_with(
        bytes,
        &BlockOptions::new().pinning(Pinning::BestEffort).quiet(true),
    )
    .unwrap()
}

/// Bytes that differ everywhere: a hash of the position and a seed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let x = (i ^ seed.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (x >> 56) as u8
        })
        .collect()
}

/// Writes `bytes` to `path` and flushes them to the disk, so that
/// dropping the page cache afterwards makes the file cold.
pub fn write_synced(path: &Path, bytes: &[u8]) {
    let mut file = File::create(path).unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
}

/// One tensor to write.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl Spec {
    /// A tensor of `dtype` (`size` bytes an element) and `shape`, filled
    /// with `pattern`.
    pub fn new(name: &str, dtype: &'static str, size: usize, shape: &[usize]) -> Spec {
        let elements: usize = shape.iter().product();
        Spec {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
            bytes: pattern(elements * size, name.len() as u64 * 7919 + elements as u64),
        }
    }
}

/// The JSON header for `specs`, laid out in the order given, with
/// `__metadata__` if any.
pub fn header(specs: &[Spec], metadata: &[(&str, &str)]) -> String {
    let mut entries = Vec::new();
    if !metadata.is_empty() {
        let pairs: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{k:?}:{v:?}"))
            .collect();
        entries.push(format!("\"__metadata__\":{{{}}}", pairs.join(",")));
    }
    let mut offset = 0;
    for spec in specs {
        let end = offset + spec.bytes.len();
        entries.push(format!(
            "{:?}:{{\"dtype\":{:?},\"shape\":{:?},\"data_offsets\":[{offset},{end}]}}",
            spec.name, spec.dtype, spec.shape
        ));
        offset = end;
    }
    format!("{{{}}}", entries.join(","))
}

/// Writes a safetensors file: the header padded with spaces as the
/// reference writers do (to 8 bytes), or, with `data_at = Some(r)`, so that
/// the tensors start at `r` modulo 64 in the file.
pub fn write(path: &Path, specs: &[Spec], data_at: Option<usize>) {
    let mut json = header(specs, &[]).into_bytes();
    match data_at {
        None => json.resize(json.len().next_multiple_of(8), b' '),
        Some(r) => {
            while (8 + json.len()) % 64 != r % 64 {
                json.push(b' ');
            }
        }
    }
    let mut file = File::create(path).unwrap();
    file.write_all(&(json.len() as u64).to_le_bytes()).unwrap();
    file.write_all(&json).unwrap();
    for spec in specs {
        file.write_all(&spec.bytes).unwrap();
    }
    file.sync_all().unwrap();
}

/// Writes a file of a raw header (its length given by `len`, or the
/// header's own) and `data`.
pub fn write_raw(path: &Path, json: &[u8], len: Option<u64>, data: &[u8]) {
    let mut file = File::create(path).unwrap();
    let len = len.unwrap_or(json.len() as u64);
    file.write_all(&len.to_le_bytes()).unwrap();
    file.write_all(json).unwrap();
    file.write_all(data).unwrap();
}

/// Every dtype whose elements are whole bytes, with its element size.
pub const DTYPES: &[(&str, usize)] = &[
    ("BOOL", 1),
    ("U8", 1),
    ("I8", 1),
    ("F8_E5M2", 1),
    ("F8_E4M3", 1),
    ("F8_E8M0", 1),
    ("I16", 2),
    ("U16", 2),
    ("F16", 2),
    ("BF16", 2),
    ("I32", 4),
    ("U32", 4),
    ("F32", 4),
    ("C64", 8),
    ("F64", 8),
    ("I64", 8),
    ("U64", 8),
];
