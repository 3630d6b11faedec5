//! A long-running service whose whole heap is a unimem Heap over pinned
//! Blocks: worker threads build responses (strings, maps, buffers up to
//! 256 KiB), a cache evicts old entries, and a writer thread frees what the
//! workers allocated. Every second it prints what the heap holds: memory is
//! reused, so the footprint stays flat however long it runs.
//!
//! Run with `cargo run --release --example heap_service [seconds]`.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use unimem::{BlockOptions, Heap, Pinning};

/// Up to 4 Blocks of 64 MiB, opened on demand; past them the system
/// allocator. Best-effort pinning keeps it running under a small
/// RLIMIT_MEMLOCK.
#[global_allocator]
static HEAP: Heap = Heap::lazy_with(
    64 << 20,
    BlockOptions::new()
        .pinning(Pinning::BestEffort)
        .label("unimem-heap-service"),
)
.spill();

const WORKERS: usize = 4;

/// Recent responses' headers by request id, and the ids oldest first.
type Cache = Mutex<(HashMap<u64, String>, VecDeque<u64>)>;
const CACHE_ENTRIES: usize = 2000;

/// A synthetic request's response: a header string and a body whose size
/// varies from a few bytes to 256 KiB.
fn respond(id: u64) -> (String, Vec<u8>) {
    let header = format!(
        "HTTP/1.1 200 OK\r\nx-request: {id}\r\nx-shard: {}\r\n",
        id % 17
    );
    let size = match id % 100 {
        0 => 256 << 10,
        1..=9 => 16 << 10,
        _ => 64 + (id % 2000) as usize,
    };
    let body = (0..size).map(|i| (i as u64 ^ id) as u8).collect();
    (header, body)
}

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let cache: Arc<Cache> = Arc::default();
    let (to_writer, responses) = mpsc::sync_channel::<(u64, String, Vec<u8>)>(256);

    // The writer frees what the workers allocated: frees from another thread.
    let writer = std::thread::spawn(move || {
        let (mut count, mut bytes) = (0u64, 0usize);
        for (id, header, body) in responses {
            assert!(header.contains(&format!("x-request: {id}")));
            assert!(
                body.iter()
                    .enumerate()
                    .all(|(i, &b)| b == (i as u64 ^ id) as u8)
            );
            count += 1;
            bytes += header.len() + body.len();
        }
        (count, bytes)
    });

    let workers: Vec<_> = (0..WORKERS as u64)
        .map(|w| {
            let (cache, to_writer) = (cache.clone(), to_writer.clone());
            std::thread::spawn(move || {
                let mut id = w;
                while Instant::now() < deadline {
                    let (header, body) = respond(id);
                    {
                        let mut guard = cache.lock().unwrap();
                        let (entries, order) = &mut *guard;
                        entries.insert(id, header.clone());
                        order.push_back(id);
                        while order.len() > CACHE_ENTRIES {
                            let old = order.pop_front().unwrap();
                            entries.remove(&old);
                        }
                    }
                    to_writer.send((id, header, body)).unwrap();
                    id += WORKERS as u64;
                }
            })
        })
        .collect();
    drop(to_writer);

    let started = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1).min(deadline - Instant::now()));
        let stats = HEAP.stats();
        println!(
            "{:>4.1}s  in use {:>6.1} MiB  committed {:>6.1} MiB  high water {:>6.1} MiB  blocks {}  spilled {} B",
            started.elapsed().as_secs_f64(),
            stats.in_use as f64 / (1 << 20) as f64,
            stats.committed as f64 / (1 << 20) as f64,
            stats.high_water as f64 / (1 << 20) as f64,
            stats.blocks,
            stats.spilled,
        );
    }
    for worker in workers {
        worker.join().unwrap();
    }
    let (count, bytes) = writer.join().unwrap();
    let stats = HEAP.stats();
    println!(
        "served {count} responses ({:.1} GiB) in {:.1}s through a heap that peaked at {:.1} MiB in {} Block(s)",
        bytes as f64 / (1u64 << 30) as f64,
        started.elapsed().as_secs_f64(),
        stats.high_water as f64 / (1 << 20) as f64,
        stats.blocks,
    );
}
