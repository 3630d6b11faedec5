//! A whole test binary whose heap is a Tape over one Block of 1 TiB of
//! address space, committed (and pinned, as far as the limit allows) as the
//! program uses it: it starts at once and costs what it uses.

mod common;

use unimem::{BlockOptions, Tape};

#[global_allocator]
static HEAP: Tape = Tape::lazy_with(1 << 40, BlockOptions::lazy().label("unimem-global-tape"));

/// A line of /proc/self/status, in bytes.
#[cfg(target_os = "linux")]
fn status(key: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn std_workload_runs_in_the_tape() {
    let before = HEAP.used();
    common::strings(2000);
    common::maps(20);
    common::vectors(200);
    common::threads(4, 1000);
    assert!(HEAP.used() > before);
    assert_eq!(HEAP.total(), 1 << 40);
    // What is committed follows what was taken, not the capacity.
    assert!(
        HEAP.committed() <= HEAP.used() + Tape::COMMIT_STEP,
        "{} committed for {} used",
        HEAP.committed(),
        HEAP.used()
    );
    #[cfg(target_os = "linux")]
    {
        let peak = status("VmHWM:");
        assert!(
            peak < HEAP.committed() + (64 << 20),
            "peak RSS {peak} for {} committed",
            HEAP.committed()
        );
    }
}

#[test]
fn allocations_come_from_the_block() {
    let text = format!("{} pinned bytes", 42);
    assert!(HEAP.owns(text.as_ptr()));
    let boxed = Box::new([1u64; 64]);
    assert!(HEAP.owns(&*boxed));
    let on_thread = std::thread::spawn(|| vec![7u32; 1000]).join().unwrap();
    assert!(HEAP.owns(on_thread.as_ptr()));
    assert_eq!(on_thread.iter().sum::<u32>(), 7000);
}

#[test]
fn realloc_of_the_newest_allocation_grows_in_place() {
    use std::alloc::{GlobalAlloc, Layout};
    let layout = Layout::from_size_align(64, 8).unwrap();
    // Other tests run on other threads and may take in between; retry until
    // this thread's allocation is the newest when it grows.
    for _ in 0..100 {
        // SAFETY: a non-zero layout; freed below.
        let p = unsafe { HEAP.alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: `p` came from HEAP with `layout`.
        let q = unsafe { HEAP.realloc(p, layout, 4096) };
        assert!(!q.is_null());
        // SAFETY: `q` holds 4096 bytes.
        unsafe { HEAP.dealloc(q, Layout::from_size_align(4096, 8).unwrap()) };
        if p == q {
            return;
        }
    }
    panic!("realloc never grew in place");
}
