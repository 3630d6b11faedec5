//! What a lazy global allocator costs a small program: the same program,
//! allocating about 1 MiB and exiting, with a 1 GiB `Tape::lazy`, a 256 MiB
//! `Heap::lazy` and the system allocator as its global allocator, run as
//! separate processes in turn; wall time from start to exit, and peak RSS.
//!
//! Run with `cargo bench -p unimem-benches --bench startup` (`-- --runs N`, default 30).
//! The global allocator of this binary dispatches, on an environment
//! variable read once without allocating, to one of the three: the same code
//! runs on each.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use unimem::{Heap, Tape};

static TAPE: Tape = Tape::lazy(1 << 30);
static HEAP: Heap = Heap::lazy(256 << 20);

/// The variable that chooses the allocator, and so the child.
const CHILD: &str = "UNIMEM_STARTUP";

/// 0 not yet read, 1 system, 2 Tape, 3 Heap.
static CHOICE: AtomicU8 = AtomicU8::new(0);

fn choice() -> u8 {
    // Relaxed: every thread that reads the variable stores the same value.
    let seen = CHOICE.load(Ordering::Relaxed);
    if seen != 0 {
        return seen;
    }
    // SAFETY: a NUL-terminated name; getenv does not allocate, and nothing
    // in this program changes the environment.
    let value = unsafe { libc::getenv(c"UNIMEM_STARTUP".as_ptr()) };
    let chosen = if value.is_null() {
        1
    } else {
        // SAFETY: getenv returned a NUL-terminated string.
        match unsafe { *value.cast::<u8>() } {
            b't' => 2,
            b'h' => 3,
            _ => 1,
        }
    };
    CHOICE.store(chosen, Ordering::Relaxed);
    chosen
}

struct Dispatch;

// SAFETY: every call goes to one allocator, the same for the whole process,
// which is chosen before the first allocation.
unsafe impl GlobalAlloc for Dispatch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe {
            match choice() {
                2 => TAPE.alloc(layout),
                3 => HEAP.alloc(layout),
                _ => System.alloc(layout),
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded to where it came from.
        unsafe {
            match choice() {
                2 => TAPE.dealloc(ptr, layout),
                3 => HEAP.dealloc(ptr, layout),
                _ => System.dealloc(ptr, layout),
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded to where it came from.
        unsafe {
            match choice() {
                2 => TAPE.realloc(ptr, layout, new_size),
                3 => HEAP.realloc(ptr, layout, new_size),
                _ => System.realloc(ptr, layout, new_size),
            }
        }
    }
}

#[global_allocator]
static GLOBAL: Dispatch = Dispatch;

/// The small program: about 1 MiB of strings, a map and a buffer.
fn program() {
    let words: Vec<String> = (0..10_000).map(|i| format!("word number {i}")).collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for word in &words {
        *counts.entry(word).or_default() += 1;
    }
    let buffer = vec![1u8; 512 << 10];
    assert_eq!(counts.len(), words.len());
    assert_eq!(
        buffer.iter().map(|&b| usize::from(b)).sum::<usize>(),
        512 << 10
    );
}

/// Runs this binary as a child with `variant`; its wall time and peak RSS.
fn run(variant: &str) -> (Duration, usize) {
    let start = Instant::now();
    #[expect(
        clippy::zombie_processes,
        reason = "reaped by wait4 below, which also gives its peak RSS"
    )]
    let child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, variant)
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `rusage` is plain data; all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; valid out-pointers.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{variant} failed"
    );
    (wall, usage.ru_maxrss as usize * 1024)
}

fn main() {
    if let Ok(variant) = std::env::var(CHILD) {
        program();
        if variant == "tape" {
            assert!(TAPE.committed() > 0);
        } else if variant == "heap" {
            assert!(HEAP.stats().committed > 0);
        }
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(30usize);
    let variants = [
        ("system allocator", "system"),
        ("Tape::lazy(1 GiB)", "tape"),
        ("Heap::lazy(256 MiB)", "heap"),
    ];
    let mut times = vec![Vec::new(); variants.len()];
    let mut rss = vec![Vec::new(); variants.len()];
    for round in 0..runs {
        for step in 0..variants.len() {
            // Rotate the order each round, so no program always runs first.
            let i = (step + round) % variants.len();
            let (wall, peak) = run(variants[i].1);
            times[i].push(wall);
            rss[i].push(peak);
        }
    }
    println!("a program allocating about 1 MiB, start to exit, {runs} runs of each, in turn");
    println!(
        "| global allocator | fastest | median | peak RSS (median) | time ÷ system | RSS ÷ system |"
    );
    println!("|---|---|---|---|---|---|");
    let medians: Vec<(Duration, usize)> = (0..variants.len())
        .map(|i| {
            times[i].sort_unstable();
            rss[i].sort_unstable();
            (times[i][runs / 2], rss[i][runs / 2])
        })
        .collect();
    for (i, (name, _)) in variants.iter().enumerate() {
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.1} MiB | {:.2} | {:.2} |",
            times[i][0].as_secs_f64() * 1e3,
            medians[i].0.as_secs_f64() * 1e3,
            medians[i].1 as f64 / (1 << 20) as f64,
            medians[i].0.as_secs_f64() / medians[0].0.as_secs_f64(),
            medians[i].1 as f64 / medians[0].1 as f64,
        );
    }
}
