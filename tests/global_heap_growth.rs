//! The README's global Heap line grows past its first arena: a program that
//! allocates four times the first reservation, 10 MiB at a time, runs, and
//! every byte stays where it was written. When the system refuses more
//! address space (a child process under a small `RLIMIT_AS`), allocations
//! fail cleanly (`try_reserve` errors, no abort) and what was allocated stays
//! intact; a configured limit is honoured the same way.
#![cfg(unimem_linux)]

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;

use unimem::Heap;

const FIRST: usize = 64 << 20;
const STEP: usize = 10 << 20;

#[global_allocator]
static HEAP: Heap = Heap::lazy(FIRST);

/// Writes a pattern of `seed` into every 64-byte line of `v` (every page
/// is touched, and most bytes stay as zeroed).
fn fill(v: &mut [u8], seed: u8) {
    for (i, line) in v.chunks_mut(64).enumerate() {
        line[0] = seed.wrapping_add(i as u8);
    }
}

/// Whether `v` still holds `fill`'s pattern of `seed`, every byte checked.
fn intact(v: &[u8], seed: u8) -> bool {
    v.chunks(64)
        .enumerate()
        .all(|(i, line)| line[0] == seed.wrapping_add(i as u8) && line[1..].iter().all(|&b| b == 0))
}

#[test]
fn the_global_heap_grows_past_its_first_arena() {
    if std::env::var_os("UNIMEM_GROWTH_CHILD").is_some() {
        return;
    }
    let mut held: Vec<Vec<u8>> = Vec::new();
    for i in 0..(4 * FIRST).div_ceil(STEP) {
        let mut v = vec![0u8; STEP];
        fill(&mut v, i as u8);
        held.push(v);
    }
    for (i, v) in held.iter().enumerate() {
        assert!(intact(v, i as u8), "allocation {i} changed");
        assert!(HEAP.owns(v.as_ptr()), "allocation {i} is the Heap's");
    }
    let stats = HEAP.stats();
    assert!(stats.blocks >= 2, "{stats:?}");
    assert!(stats.in_use >= 4 * FIRST, "{stats:?}");
    let reserved: usize = HEAP.blocks().iter().map(|b| b.capacity()).sum();
    assert!(reserved >= 4 * FIRST, "{reserved}");
}

#[test]
fn a_limit_is_honoured() {
    if std::env::var_os("UNIMEM_GROWTH_CHILD").is_some() {
        return;
    }
    let heap = Heap::lazy(4 << 20).limit(16 << 20);
    let layout = Layout::from_size_align(STEP / 4, 8).unwrap();
    let mut got = Vec::new();
    loop {
        // SAFETY: a valid layout; freed below.
        let p = unsafe { heap.alloc(layout) };
        if p.is_null() {
            break;
        }
        got.push(p);
        assert!(got.len() < 64, "the limit stops it");
    }
    let reserved: usize = heap.blocks().iter().map(|b| b.capacity()).sum();
    assert!(reserved <= 16 << 20, "{reserved}");
    assert!(got.len() * layout.size() >= 8 << 20, "{}", got.len());
    for p in got {
        // SAFETY: allocated above with `layout`.
        unsafe { heap.dealloc(p, layout) };
    }
    // SAFETY: as above; freed memory is reused up to the limit again.
    let p = unsafe { heap.alloc(layout) };
    assert!(!p.is_null());
    // SAFETY: as above.
    unsafe { heap.dealloc(p, layout) };
}

#[test]
fn when_the_system_refuses_allocations_fail_cleanly() {
    if std::env::var_os("UNIMEM_GROWTH_CHILD").is_some() {
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_under_an_address_space_limit",
            "--nocapture",
        ])
        .env("UNIMEM_GROWTH_CHILD", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{text}");
    assert!(text.contains("child: refused cleanly"), "{text}");
}

/// Runs only in that child: with 1.5 GiB of address space in all, the Heap
/// grows until the system refuses to reserve more; the refused request is
/// an error, everything allocated before is intact, and memory freed then
/// is reused.
#[test]
fn child_under_an_address_space_limit() {
    if std::env::var_os("UNIMEM_GROWTH_CHILD").is_none() {
        return;
    }
    let limit = libc::rlimit {
        rlim_cur: 1536 << 20,
        rlim_max: 1536 << 20,
    };
    // SAFETY: setrlimit with a valid struct; this child is ours to limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(1000);
    let refused = loop {
        let mut v = Vec::new();
        if let Err(error) = v.try_reserve_exact(STEP) {
            break error;
        }
        v.resize(STEP, 0);
        fill(&mut v, held.len() as u8);
        held.push(v);
        assert!(held.len() < 1000, "1.5 GiB of address space ran out");
    };
    println!("refused after {} MiB: {refused}", held.len() * 10);
    assert!(held.len() >= 20, "{} allocations", held.len());
    for (i, v) in held.iter().enumerate() {
        assert!(intact(v, i as u8), "allocation {i} changed");
    }
    let count = held.len();
    held.truncate(count / 2);
    let mut again = Vec::new();
    again
        .try_reserve_exact(STEP)
        .expect("freed memory is reused");
    again.resize(STEP, 1);
    println!("child: refused cleanly");
}
