//! Arbitrary bytes as a safetensors file: the header parser must answer
//! with a header or a typed error, never a panic; a header it accepts must
//! place (at several alignments, for several direct I/O alignments) with
//! every tensor aligned, inside the allocation and apart from every other;
//! and the file must then load, through a memfd, with every tensor's bytes
//! those of the file.
//!
//! The first byte chooses the tensor alignment; the rest is the file.
#![no_main]

use std::io::Write;
use std::os::fd::FromRawFd;

use libfuzzer_sys::fuzz_target;
use unimem::load::safetensors::{Header, Placement};
use unimem::load::{Checkpoint, DirectAlign, Reader};
use unimem::{BlockOptions, Pinning, Tape};

const DIRECT: [Option<DirectAlign>; 4] = [
    None,
    Some(DirectAlign { memory: 4, offset: 512 }),
    Some(DirectAlign { memory: 512, offset: 512 }),
    Some(DirectAlign { memory: 4096, offset: 4096 }),
];

fuzz_target!(|data: &[u8]| {
    let Some((&knob, file)) = data.split_first() else {
        return;
    };
    let align = 1usize << (knob % 13);
    let Ok(header) = Header::parse(file, file.len() as u64, "fuzz.safetensors") else {
        return;
    };
    for direct in DIRECT {
        let placement = Placement::plan(&[&header], &[direct], align).expect("a placement");
        let mut spans = Vec::new();
        for (i, (name, info)) in header.tensors().iter().enumerate() {
            let len = info.data_offsets.1 - info.data_offsets.0;
            let at = placement.offset(0, i);
            assert_eq!(at % align, 0, "{name} misaligned");
            assert!(at + len <= placement.size(), "{name} outside");
            if len > 0 {
                spans.push((at, at + len));
            }
        }
        spans.sort_unstable();
        assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "overlap");
        for run in placement.runs() {
            assert!(run.at >= run.before);
            assert!(run.at + run.len + run.after <= placement.size());
        }
        let mut runs: Vec<_> = placement
            .runs()
            .iter()
            .map(|r| (r.at - r.before, r.at + r.len + r.after))
            .collect();
        runs.sort_unstable();
        assert!(runs.windows(2).all(|w| w[0].1 <= w[1].0), "runs overlap");
    }

    // The whole file, loaded (a memfd: the buffered path).
    // SAFETY: a NUL-terminated name; the fd is owned by `memfd` below.
    let fd = unsafe { libc::memfd_create(c"fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: just created, owned here.
    let mut memfd = unsafe { std::fs::File::from_raw_fd(fd) };
    memfd.write_all(file).unwrap();
    let path = format!("/proc/self/fd/{fd}");
    let mut checkpoint = Checkpoint::open(&path).expect("what parsed opens");
    checkpoint.set_align(align).unwrap();
    let tape = Tape::open_with(
        checkpoint.needed().unwrap().max(1),
        &BlockOptions::new()
            .pinning(Pinning::Off)
            .prefault(false)
            .quiet(true),
    )
    .unwrap();
    let tensors = checkpoint.load(&Reader::new(), &tape).expect("what parsed loads");
    let start = header.data_start() as usize;
    for (name, info) in header.tensors() {
        let t = tensors.tensor(name).unwrap();
        let (from, to) = info.data_offsets;
        assert!(t.bytes() == &file[start + from..start + to], "{name}");
        assert_eq!(t.bytes().as_ptr().addr() % align, 0);
    }
    drop(memfd);
});
