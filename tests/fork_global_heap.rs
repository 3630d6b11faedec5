//! `fork` with a Heap as the global allocator, from a parent whose other
//! threads allocate, free each other's memory, and start and exit threads
//! all the time: every child allocates, frees what the parent allocated
//! before the fork and exits, in time; a child killed in the middle of
//! allocating leaves the parent allocating.
//!
//! The children start no thread: std's thread start takes a lock of its own
//! (`stack_overflow::thread_info`) that a parent thread starting at the
//! moment of the fork leaves held in the child, which POSIX allows (after
//! `fork` in a multi-threaded program only async-signal-safe calls are
//! promised to work). A child's threads and their tags are tested in
//! `thread.rs`, forking from a parent whose other thread is idle.
#![cfg(unimem_linux)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::fork::{Ended, fork, wait};
use unimem::{BlockOptions, Heap};

#[global_allocator]
static HEAP: Heap = Heap::lazy_with(64 << 20, BlockOptions::lazy().quiet(true));

const FORKS: usize = 200;
const DEADLINE: Duration = Duration::from_secs(20);

/// Allocates and frees in every size class and some page runs, and checks
/// what it wrote; returns whether everything read back right.
fn churn(round: usize) -> bool {
    let mut map: HashMap<usize, Vec<u8>> = HashMap::new();
    for i in 0..200 {
        let len = (i * 37 + round) % 5000 + 1;
        map.insert(i, vec![(i % 251) as u8; len]);
        if i % 3 == 0 {
            map.remove(&(i / 2));
        }
    }
    let big = vec![round as u8; 100_000 + round % 7 * 4096];
    map.iter()
        .all(|(i, v)| v.iter().all(|&b| b == (i % 251) as u8))
        && big.iter().all(|&b| b == round as u8)
}

/// Threads that churn, hand allocations to each other to free, and start
/// short-lived threads (whose exits flush their caches through the heap
/// registry), until the flag is raised.
fn busy_parent() -> (Arc<AtomicBool>, Vec<JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::sync_channel::<Vec<String>>(4);
    let rx = Arc::new(Mutex::new(rx));
    let handles = (0..3)
        .map(|t| {
            let (tx, rx, stop) = (tx.clone(), rx.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut round = t;
                while !stop.load(Ordering::Relaxed) {
                    assert!(churn(round));
                    match t {
                        0 => {
                            let strings = (0..50).map(|i| format!("{round}-{i}")).collect();
                            let _ = tx.try_send(strings);
                        }
                        1 => drop(rx.lock().unwrap().try_recv()),
                        _ => assert!(std::thread::spawn(move || churn(round)).join().unwrap()),
                    }
                    round += 3;
                }
            })
        })
        .collect();
    (stop, handles)
}

#[test]
fn forks_of_a_busy_multithreaded_parent_never_hang() {
    let (stop, handles) = busy_parent();
    // Allocations the children free: this thread's, and another's.
    let mine: Vec<Vec<u64>> = (0..100).map(|i| vec![i; 1 + i as usize * 10]).collect();
    let theirs: Vec<String> = std::thread::spawn(|| (0..100).map(|i| "x".repeat(i)).collect())
        .join()
        .unwrap();
    let mut times = Vec::with_capacity(FORKS);
    for round in 0..FORKS {
        let start = Instant::now();
        let pid = fork(|| {
            let intact = mine
                .iter()
                .enumerate()
                .all(|(i, v)| v.iter().all(|&x| x == i as u64))
                && theirs.iter().enumerate().all(|(i, s)| s.len() == i);
            // SAFETY: the child's copies of the parent's allocations, freed
            // once here and never used again (the child leaves with _exit).
            unsafe {
                std::ptr::read(&mine);
                std::ptr::read(&theirs);
            }
            let allocated = churn(round) && churn(round + 1);
            match (intact, allocated) {
                (true, true) => 0,
                (false, _) => 2,
                (_, false) => 3,
            }
        });
        let ended = wait(pid, DEADLINE);
        times.push(start.elapsed());
        assert_eq!(ended, Ended::Exited(0), "child {round}");
    }
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.join().unwrap();
    }
    times.sort_unstable();
    eprintln!(
        "{FORKS} forks of a parent with 3 busy threads: each child done in {:?} (median), {:?} (slowest), {:?} (fastest)",
        times[FORKS / 2],
        times[FORKS - 1],
        times[0]
    );
    assert!(
        mine.iter()
            .enumerate()
            .all(|(i, v)| v.iter().all(|&x| x == i as u64))
    );
    assert_eq!(theirs.len(), 100);
}

#[test]
fn a_child_killed_mid_allocation_leaves_the_parent_allocating() {
    for round in 0..20 {
        let pid = fork(|| {
            let mut i = 0;
            loop {
                std::hint::black_box(churn(i));
                i += 1;
            }
        });
        std::thread::sleep(Duration::from_millis(5 + round));
        // SAFETY: our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(wait(pid, DEADLINE), Ended::Signalled(libc::SIGKILL));
        assert!(churn(round as usize), "the parent allocates on");
    }
    assert!(HEAP.stats().blocks >= 1);
}

#[test]
fn a_childs_writes_to_the_global_heap_never_reach_the_parent() {
    let mut v = vec![1u8; 4096];
    let pid = fork(|| {
        v.fill(2);
        let w = vec![3u8; 4096];
        if v.iter().all(|&b| b == 2) && w.iter().all(|&b| b == 3) {
            0
        } else {
            1
        }
    });
    assert_eq!(wait(pid, DEADLINE), Ended::Exited(0));
    assert!(v.iter().all(|&b| b == 1));
    assert!(HEAP.owns(v.as_ptr()));
}
