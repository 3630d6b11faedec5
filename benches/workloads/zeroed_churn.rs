//! zeroed-churn: not from mimalloc-bench. Zeroed buffers of mixed sizes,
//! most of whose bytes the program never touches, churned and handed
//! between threads: what a program pays in resident memory when its
//! allocator writes zeros the kernel had already provided.
//!
//! Each thread runs rounds. A round builds a live set of 8192 buffers, each
//! made with `vec![0u8; n]` (`alloc_zeroed`): 80% of 8–128 B, 18% of
//! 128 B–8 KiB, 2% of 8 KiB–300 KB (uniform within each range); of each
//! buffer only the first and the last byte are read (they must be zero)
//! and then written. After each new buffer, one live buffer picked at
//! random is dropped with a chance of a quarter. The thread then frees what
//! the previous thread handed it (checking both bytes of each), hands half
//! of its own live set to the next thread, drops the other half, and waits
//! for the others to end the round too (so that no thread runs rounds ahead
//! and hand-offs pile up with the scheduler's whims). When every thread has
//! done its rounds it exits; the main thread frees the last hand-offs after
//! joining them (so the last frees of each thread's memory come after it
//! exited), and reads its resident set (`VmRSS`).
//!
//! The throughput is buffers allocated per second, all threads together,
//! from the start to the last join. Rounds are `48 / threads` (at least 6;
//! a quarter with `--quick`, at least 2), so that every run lasts about
//! 0.3–1.5 s on two cores.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::Instant;

use super::common::{Outcome, proc_status_kib};

const BUILD: usize = 8192;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Uniform in `lo ..= hi`.
fn uniform(state: &mut u64, lo: usize, hi: usize) -> usize {
    lo + (splitmix(state) % (hi - lo + 1) as u64) as usize
}

fn random_size(state: &mut u64) -> usize {
    match splitmix(state) % 100 {
        0..80 => uniform(state, 8, 128),
        80..98 => uniform(state, 128, 8 << 10),
        _ => uniform(state, 8 << 10, 300_000),
    }
}

/// A buffer as the program makes it: zeroed, its ends checked and marked.
fn make(size: usize, mark: u8) -> Vec<u8> {
    let mut v = vec![0u8; size];
    let last = size - 1;
    assert!(
        v[0] == 0 && v[last] == 0,
        "a zeroed buffer that is not zero"
    );
    v[0] = mark;
    v[last] = mark;
    v
}

/// Checks a buffer's ends and drops it.
fn check(v: Vec<u8>, mark: u8) {
    assert!(
        v[0] == mark && v[v.len() - 1] == mark,
        "a buffer handed over changed"
    );
}

fn worker(
    index: usize,
    rounds: usize,
    mailboxes: &[Mutex<Vec<Vec<u8>>>],
    made: &AtomicU64,
    start: &Barrier,
    round_end: &Barrier,
) {
    let threads = mailboxes.len();
    let mut state = 0x7a65_726f ^ (index as u64).wrapping_mul(0x9e37_79b9);
    let mark = index as u8 | 1;
    let from = (index + threads - 1) % threads;
    let mark_from = from as u8 | 1;
    let mut live: Vec<Vec<u8>> = Vec::with_capacity(BUILD);
    start.wait();
    for _ in 0..rounds {
        for _ in 0..BUILD {
            live.push(make(random_size(&mut state), mark));
            if splitmix(&mut state).is_multiple_of(4) {
                let victim = splitmix(&mut state) as usize % live.len();
                drop(live.swap_remove(victim));
            }
        }
        let arrived = std::mem::take(&mut *mailboxes[index].lock().unwrap());
        for v in arrived {
            check(v, mark_from);
        }
        let handed: Vec<Vec<u8>> = live.drain(live.len() / 2..).collect();
        mailboxes[(index + 1) % threads]
            .lock()
            .unwrap()
            .extend(handed);
        live.clear();
        round_end.wait();
    }
    made.fetch_add((rounds * BUILD) as u64, Ordering::Relaxed);
}

pub fn run(threads: usize, scale: f64) -> Outcome {
    let rounds = ((48.0 * scale) as usize / threads).max(if scale < 1.0 { 2 } else { 6 });
    let mailboxes: Vec<Mutex<Vec<Vec<u8>>>> = (0..threads).map(|_| Mutex::default()).collect();
    let made = AtomicU64::new(0);
    let start = Barrier::new(threads + 1);
    let round_end = Barrier::new(threads);
    let begin = std::thread::scope(|s| {
        for index in 0..threads {
            let (mailboxes, made, start, round_end) = (&mailboxes, &made, &start, &round_end);
            s.spawn(move || worker(index, rounds, mailboxes, made, start, round_end));
        }
        start.wait();
        Instant::now()
    });
    // Every worker has exited: the last hand-offs are freed here.
    for (index, mailbox) in mailboxes.into_iter().enumerate() {
        let mark = ((index + threads - 1) % threads) as u8 | 1;
        for v in mailbox.into_inner().unwrap() {
            check(v, mark);
        }
    }
    let elapsed = begin.elapsed();
    let mut outcome = Outcome::new(made.load(Ordering::Relaxed) as f64, elapsed);
    outcome.rss_after_kib = Some(proc_status_kib("VmRSS"));
    outcome
}
