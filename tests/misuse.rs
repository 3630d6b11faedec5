//! Misuse the allocators cannot survive is caught, not silent: freeing an
//! object twice, or freeing a pointer that is not the start of one, aborts
//! the process with a message naming the allocator and the address, as a
//! double free in glibc does, instead of handing the memory out twice.
//!
//! Each case runs in a child process (this binary, run again with the case
//! in `UNIMEM_MISUSE`), whose abort and standard error the parent checks.
#![cfg(unimem_fork)]

mod support;

use std::alloc::Layout;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use allocator_api2::alloc::Allocator;
use support::options;
use unimem::{Grid, Heap};

const CASE: &str = "UNIMEM_MISUSE";

const CASES: &[(&str, &str)] = &[
    ("heap-double-free", "double free detected"),
    (
        "heap-double-free-from-another-thread",
        "double free detected",
    ),
    ("heap-interior-pointer", "not the start of an allocation"),
    (
        "heap-large-double-free",
        "not the start of a live allocation",
    ),
    (
        "heap-large-interior-pointer",
        "not the start of a live allocation",
    ),
    ("grid-double-free", "given back twice"),
    ("grid-interior-pointer", "not the start of a cell"),
];

#[test]
fn misuse_aborts_with_a_message() {
    if std::env::var_os(CASE).is_some() {
        return;
    }
    for (case, message) in CASES {
        let output = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_misuses",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CASE, case)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGABRT),
            "{case}: {:?}\n{stderr}",
            output.status
        );
        assert!(stderr.contains(message), "{case}: {stderr}");
        assert!(stderr.contains("(address 0x"), "{case}: {stderr}");
        assert!(
            !String::from_utf8_lossy(&output.stdout).contains("went on"),
            "{case}"
        );
    }
}

/// Runs only in the child: the misuse its case names.
#[test]
fn child_misuses() {
    let Ok(case) = std::env::var(CASE) else {
        return;
    };
    let heap = Heap::lazy_with(8 << 20, options()).open_now().unwrap();
    let grid = Grid::<64, 16>::open_with(&options()).unwrap();
    let small = Layout::from_size_align(64, 8).unwrap();
    let large = Layout::from_size_align(1 << 20, 8).unwrap();
    // SAFETY: none: each case breaks the contract on purpose, and the
    // allocator must abort before anything is corrupted.
    unsafe {
        match case.as_str() {
            "heap-double-free" => {
                let p = heap.allocate(small).unwrap().cast::<u8>();
                heap.deallocate(p, small);
                heap.deallocate(p, small);
            }
            "heap-double-free-from-another-thread" => {
                // Two objects out, so that the first free does not empty the
                // exited thread's slab (which would then go back to its arena).
                let (p, _kept) = std::thread::scope(|s| {
                    s.spawn(|| {
                        let p = heap.allocate(small).unwrap().cast::<u8>().as_ptr() as usize;
                        let kept = heap.allocate(small).unwrap().cast::<u8>().as_ptr() as usize;
                        (p, kept)
                    })
                    .join()
                    .unwrap()
                });
                let p = std::ptr::NonNull::new(std::ptr::with_exposed_provenance_mut(p)).unwrap();
                heap.deallocate(p, small);
                heap.deallocate(p, small);
            }
            "heap-interior-pointer" => {
                let p = heap.allocate(small).unwrap().cast::<u8>();
                heap.deallocate(p.add(16), small);
            }
            "heap-large-double-free" => {
                let p = heap.allocate(large).unwrap().cast::<u8>();
                heap.deallocate(p, large);
                heap.deallocate(p, large);
            }
            "heap-large-interior-pointer" => {
                let p = heap.allocate(large).unwrap().cast::<u8>();
                heap.deallocate(p.add(4096), large);
            }
            "grid-double-free" => {
                let p = grid.allocate(small).unwrap().cast::<u8>();
                grid.deallocate(p, small);
                grid.deallocate(p, small);
            }
            "grid-interior-pointer" => {
                let p = grid.allocate(small).unwrap().cast::<u8>();
                grid.deallocate(p.add(8), small);
            }
            other => panic!("no case {other}"),
        }
    }
    println!("went on after {case}");
}
