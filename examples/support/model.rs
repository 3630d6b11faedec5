//! What the `load_model` example and the `load` bench share: a model-sized
//! safetensors file written as the reference writers lay one out, the two
//! ceilings a load is measured against (direct `pread`s of the same file,
//! 4 MiB at depth 32: the storage's; a parallel `memcpy` of the same size:
//! memory's), making a file cold, and sizes from the machine.
#![allow(dead_code)]

use std::alloc::{Layout, alloc, dealloc};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The request size and depth of the storage ceiling.
pub const CEILING_REQUEST: usize = 4 << 20;
pub const CEILING_DEPTH: usize = 32;

/// A transformer-shaped checkpoint of about `bytes`: bf16 layers of a
/// hidden size of 4096 (attention and MLP matrices, f32 norms), an
/// embedding, written as the reference writers do (header padded to 8
/// bytes). Returns the tensors' bytes.
pub fn write_model(path: &Path, bytes: u64) -> io::Result<u64> {
    const HIDDEN: usize = 4096;
    const MLP: usize = 11008;
    // The embedding at most a quarter of the file, up to a 32000-word vocabulary.
    let vocab = (bytes / (HIDDEN as u64 * 2 * 4)).clamp(256, 32000) as usize;
    let mut tensors: Vec<(String, &str, Vec<usize>)> = Vec::new();
    let size = |t: &(String, &str, Vec<usize>)| {
        t.2.iter().product::<usize>() as u64 * if t.1 == "F32" { 4 } else { 2 }
    };
    tensors.push((
        "model.embed_tokens.weight".into(),
        "BF16",
        vec![vocab, HIDDEN],
    ));
    let mut total: u64 = tensors.iter().map(size).sum();
    let mut layer = 0;
    while total < bytes {
        let layer_tensors = [
            ("input_layernorm.weight", "F32", vec![HIDDEN]),
            ("self_attn.q_proj.weight", "BF16", vec![HIDDEN, HIDDEN]),
            ("self_attn.k_proj.weight", "BF16", vec![HIDDEN, HIDDEN]),
            ("self_attn.v_proj.weight", "BF16", vec![HIDDEN, HIDDEN]),
            ("self_attn.o_proj.weight", "BF16", vec![HIDDEN, HIDDEN]),
            ("post_attention_layernorm.weight", "F32", vec![HIDDEN]),
            ("mlp.gate_proj.weight", "BF16", vec![MLP, HIDDEN]),
            ("mlp.up_proj.weight", "BF16", vec![MLP, HIDDEN]),
            ("mlp.down_proj.weight", "BF16", vec![HIDDEN, MLP]),
        ];
        for (name, dtype, shape) in layer_tensors {
            let t = (format!("model.layers.{layer}.{name}"), dtype, shape);
            total += size(&t);
            tensors.push(t);
            if total >= bytes {
                break;
            }
        }
        layer += 1;
    }
    let mut entries = Vec::new();
    let mut offset = 0u64;
    for t in &tensors {
        let end = offset + size(t);
        entries.push(format!(
            "{:?}:{{\"dtype\":{:?},\"shape\":{:?},\"data_offsets\":[{offset},{end}]}}",
            t.0, t.1, t.2
        ));
        offset = end;
    }
    let mut json = format!(
        "{{\"__metadata__\":{{\"format\":\"pt\"}},{}}}",
        entries.join(",")
    )
    .into_bytes();
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut file = File::create(path)?;
    file.write_all(&(json.len() as u64).to_le_bytes())?;
    file.write_all(&json)?;
    let mut chunk = vec![0u8; 8 << 20];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut left = offset;
    while left > 0 {
        let n = (chunk.len() as u64).min(left) as usize;
        for word in chunk[..n].chunks_mut(8) {
            // xorshift: bytes that no disk or page cache can compress away.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
        }
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(offset)
}

/// Drops the file's pages from the page cache: `POSIX_FADV_DONTNEED`, and
/// as root `/proc/sys/vm/drop_caches` too. Returns whether the second was
/// possible.
pub fn make_cold(path: &Path) -> io::Result<bool> {
    let file = File::open(path)?;
    file.sync_all()?;
    // SAFETY: a valid fd; advice only.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let dropped = std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok();
    Ok(dropped)
}

/// How many of the file's pages are in the page cache (`mincore` over all
/// of it).
pub fn cached_bytes(path: &Path) -> io::Result<u64> {
    let file = File::open(path)?;
    let len = file.metadata()?.len() as usize;
    if len == 0 {
        return Ok(0);
    }
    // SAFETY: a fresh read-only shared mapping, never dereferenced, unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let page = 4096;
    let mut status = vec![0u8; len.div_ceil(page)];
    // SAFETY: the mapping's length, and one status byte per page.
    let rc = unsafe { libc::mincore(map, len, status.as_mut_ptr()) };
    let error = io::Error::last_os_error();
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(map, len) };
    if rc != 0 {
        return Err(error);
    }
    Ok(status.iter().filter(|&&s| s & 1 != 0).count() as u64 * page as u64)
}

/// `Cached:` of /proc/meminfo, in bytes.
pub fn page_cache() -> u64 {
    meminfo("Cached:")
}

/// `MemAvailable:` of /proc/meminfo, in bytes.
pub fn available_memory() -> u64 {
    meminfo("MemAvailable:")
}

fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Free bytes on the file system holding `dir`.
pub fn free_disk(dir: &Path) -> u64 {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return 0;
    };
    // SAFETY: a zeroed statvfs is a valid out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    st.f_bavail as u64 * st.f_frsize as u64
}

/// An aligned, zeroed heap buffer; from 2 MiB on, 2 MiB-aligned with
/// transparent huge pages asked for and faulted in (a buffer of base pages
/// splits each direct read into many small requests on a virtual disk).
pub struct Aligned {
    ptr: *mut u8,
    layout: Layout,
}

impl Aligned {
    pub fn new(len: usize, align: usize) -> Aligned {
        let huge = len >= 2 << 20;
        let align = if huge { align.max(2 << 20) } else { align };
        let layout = Layout::from_size_align(len.max(1), align).unwrap();
        // SAFETY: a non-zero size.
        let ptr = unsafe { alloc(layout) };
        assert!(!ptr.is_null(), "out of memory");
        // SAFETY: advice on memory we own before its first touch (so that
        // the kernel can back it with huge pages); then every byte written.
        unsafe {
            if huge {
                libc::madvise(ptr.cast(), layout.size(), libc::MADV_HUGEPAGE);
            }
            std::ptr::write_bytes(ptr, 0, layout.size());
        }
        Aligned { ptr, layout }
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: allocated zeroed for `layout.size()` bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

// SAFETY: a uniquely owned heap buffer.
unsafe impl Send for Aligned {}

/// The storage's ceiling: the whole file read with `O_DIRECT` `pread`s of
/// 4 MiB, 32 in flight (32 threads), into aligned buffers that are thrown
/// away. Returns the time it took and the bytes read.
pub fn direct_ceiling(path: &Path) -> io::Result<(Duration, u64)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let len = file.metadata()?.len();
    let fd = file.as_raw_fd();
    let requests = len.div_ceil(CEILING_REQUEST as u64);
    let next = AtomicU64::new(0);
    let read = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..CEILING_DEPTH {
            scope.spawn(|| {
                let mut buffer = Aligned::new(CEILING_REQUEST, 4096);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        break;
                    }
                    // SAFETY: the buffer holds CEILING_REQUEST bytes.
                    let n = unsafe {
                        libc::pread(
                            fd,
                            buffer.as_mut_ptr().cast(),
                            CEILING_REQUEST,
                            (i * CEILING_REQUEST as u64) as libc::off_t,
                        )
                    };
                    assert!(n >= 0, "pread: {}", io::Error::last_os_error());
                    read.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    Ok((start.elapsed(), read.load(Ordering::Relaxed)))
}

/// Memory's ceiling: `bytes` copied by `threads` threads at once, each its
/// own part, from one buffer to another (of at most 1 GiB each, copied
/// over as often as needed, the last time in part). Returns the time it
/// took (for `bytes`).
pub fn memcpy_ceiling(bytes: u64, threads: usize) -> Duration {
    let window = bytes.min(1 << 30) as usize;
    // Both faulted in (on huge pages, as a Tape's are) before the copy.
    let mut src = Aligned::new(window, 4096);
    let mut dst = Aligned::new(window, 4096);
    let (src_addr, dst_addr) = (
        src.as_mut_ptr().expose_provenance(),
        dst.as_mut_ptr().expose_provenance(),
    );
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let round = left.min(window as u64) as usize;
        let part = round.div_ceil(threads).next_multiple_of(4096);
        std::thread::scope(|scope| {
            for t in 0..threads {
                scope.spawn(move || {
                    let from = (t * part).min(round);
                    let to = ((t + 1) * part).min(round);
                    // SAFETY: each thread copies its own part of two
                    // buffers of `window >= round` bytes that outlive the
                    // scope.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            std::ptr::with_exposed_provenance::<u8>(src_addr + from),
                            std::ptr::with_exposed_provenance_mut::<u8>(dst_addr + from),
                            to - from,
                        )
                    };
                });
            }
        });
        left -= round as u64;
    }
    let elapsed = start.elapsed();
    std::hint::black_box(dst.as_slice()[window / 2]);
    elapsed
}

/// Gigabytes per second.
pub fn gbps(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / time.as_secs_f64() / 1e9
}

/// A progress bar on standard error, redrawn in place.
pub fn draw_bar(label: &str, done: u64, total: u64, started: Instant) {
    const WIDTH: usize = 32;
    let fraction = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let filled = (fraction * WIDTH as f64) as usize;
    let rate = gbps(done, started.elapsed());
    eprint!(
        "\r{label} [{}{}] {:5.1}% {:6.2}/{:.2} GB {:6.2} GB/s",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        fraction * 100.0,
        done as f64 / 1e9,
        total as f64 / 1e9,
        rate
    );
    if done >= total {
        eprintln!();
    }
}
