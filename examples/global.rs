//! A program whose whole heap lives in one pinned Block: every `String`,
//! `Vec` and `HashMap` below, and the threads' own allocations, come from a
//! Tape that is the `#[global_allocator]`.
//!
//! Run with `cargo run --example global`.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use unimem::Tape;

/// 1 GiB of address space, reserved on the first allocation and committed
/// (and locked, as far as RLIMIT_MEMLOCK allows) as the program uses it.
/// Past the limit the Tape goes on unpinned, after one line on standard
/// error that says how to raise it; the last line below says how much was
/// locked.
#[global_allocator]
static HEAP: Tape = Tape::lazy(1 << 30);

fn main() {
    let started = Instant::now();

    // Generate a corpus and count words on four threads.
    let corpus: Vec<String> = (0..200_000)
        .map(|i| format!("w{} w{} w{}", i % 1000, i % 37, (i * 7) % 501))
        .collect();
    let counts: Vec<HashMap<&str, usize>> = std::thread::scope(|s| {
        corpus
            .chunks(corpus.len() / 4)
            .map(|chunk| {
                s.spawn(move || {
                    let mut counts = HashMap::new();
                    for line in chunk {
                        for word in line.split(' ') {
                            *counts.entry(word).or_default() += 1;
                        }
                    }
                    counts
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect()
    });
    let mut total: BTreeMap<&str, usize> = BTreeMap::new();
    for partial in &counts {
        for (word, n) in partial {
            *total.entry(word).or_default() += n;
        }
    }
    let mut top: Vec<_> = total.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    assert_eq!(total.values().sum::<usize>(), 3 * corpus.len());

    let block = HEAP.block();
    assert!(HEAP.owns(corpus.as_ptr()) && HEAP.owns(top.as_ptr()));
    println!(
        "{} distinct words, most frequent {:?}, in {:?}",
        total.len(),
        &top[..3],
        started.elapsed()
    );
    println!(
        "heap: {:.1} MiB used of a {} MiB Block at {:p}, {} MiB committed",
        HEAP.used() as f64 / (1 << 20) as f64,
        HEAP.total() >> 20,
        block.as_ptr(),
        block.committed() >> 20,
    );
    if block.is_pinned() {
        println!(
            "pinned: yes, all {} MiB committed are locked in memory",
            block.committed() >> 20
        );
    } else {
        println!(
            "pinned: {} of {} MiB committed are locked; the locked-memory limit \
             (RLIMIT_MEMLOCK) stopped the rest: raise it as the line above says",
            block.locked() >> 20,
            block.committed() >> 20
        );
    }
}
