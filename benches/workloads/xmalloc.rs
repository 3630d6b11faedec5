//! xmalloc-test (Lever and Boreham's producer/consumer test,
//! `bench/xmalloc-test/xmalloc-test.c`), as mimalloc-bench runs it:
//! `xmalloc-test -w <threads> -t 5 -s 64`.
//!
//! `threads` allocator threads each fill batches of 4096 objects of 64 bytes
//! (writing the first 64 bytes of each, `min(size, 128)`) and push the batch
//! on one shared stack under a mutex, waiting while 100 batches are queued;
//! `threads` releaser threads pop batches and free every object and the
//! batch itself. Every object is thus freed by another thread than the one
//! that allocated it. The throughput is frees per second, as xmalloc-test's
//! "free/sec".
//!
//! Follows the original: the worker counts (`threads` allocators and as many
//! releasers: twice `threads` threads in all), the object size (64, the `-s 64`
//! of bench.sh), 4096 objects per batch (the batch itself is one 32 KiB + 8 B
//! allocation), the queue limit of 100, the condition-variable hand-off, the
//! LIFO stack of batches, the `memset` of each object.
//! Scaled: the run lasts 0.5 s instead of 5 s (0.15 s with `--quick`).
//! Changed: a releaser counts a batch only when it got one (the original also
//! adds 4096 for the empty pop that ends it), and the stop flag is set under
//! the queue's lock so that no waiter misses the wake-up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::common::{Outcome, free, malloc};

const OBJECT_SIZE: usize = 64;
const OBJECTS_PER_BATCH: usize = 4096;
const BATCH_LIMIT: usize = 100;

/// A batch: the next batch down the stack and the objects, one allocation
/// as in the original.
#[repr(C)]
struct Batch {
    next: *mut Batch,
    objects: [*mut u8; OBJECTS_PER_BATCH],
}

struct Stack {
    top: *mut Batch,
    count: usize,
}

// SAFETY: the batches are plain heap memory owned by whoever holds the lock.
unsafe impl Send for Stack {}

struct Queue {
    stack: Mutex<Stack>,
    empty: Condvar,
    full: Condvar,
    done: AtomicBool,
}

impl Queue {
    fn push(&self, batch: *mut Batch) {
        let mut stack = self.stack.lock().unwrap();
        while stack.count >= BATCH_LIMIT && !self.done.load(Ordering::Acquire) {
            stack = self.full.wait(stack).unwrap();
        }
        // SAFETY: `batch` is a live batch this thread owns.
        unsafe { (*batch).next = stack.top };
        stack.top = batch;
        stack.count += 1;
        self.empty.notify_one();
    }

    fn pop(&self) -> *mut Batch {
        let mut stack = self.stack.lock().unwrap();
        while stack.top.is_null() && !self.done.load(Ordering::Acquire) {
            stack = self.empty.wait(stack).unwrap();
        }
        let batch = stack.top;
        if !batch.is_null() {
            // SAFETY: a batch on the stack is live.
            stack.top = unsafe { (*batch).next };
            stack.count -= 1;
            self.full.notify_one();
        }
        batch
    }
}

/// With `-s 64` every object is 64 bytes; the random sizes of `-s -1` (and
/// the generator they need) are not ported.
fn allocator(queue: &Queue) {
    while !queue.done.load(Ordering::Acquire) {
        let batch = malloc(size_of::<Batch>()).cast::<Batch>();
        for i in 0..OBJECTS_PER_BATCH {
            let object = malloc(OBJECT_SIZE);
            // SAFETY: `object` holds OBJECT_SIZE bytes; `batch` is live.
            unsafe {
                object.write_bytes(i as u8, OBJECT_SIZE.min(128));
                (&raw mut (*batch).objects[i]).write(object);
            }
        }
        queue.push(batch);
    }
}

fn releaser(queue: &Queue, freed: &AtomicU64) {
    let mut count = 0;
    while !queue.done.load(Ordering::Acquire) {
        let batch = queue.pop();
        if batch.is_null() {
            continue;
        }
        // SAFETY: a popped batch and its objects are this thread's now.
        unsafe { free_batch(batch) };
        count += OBJECTS_PER_BATCH as u64;
    }
    freed.fetch_add(count, Ordering::Relaxed);
}

/// # Safety
///
/// `batch` is a filled batch no other thread holds.
unsafe fn free_batch(batch: *mut Batch) {
    for i in 0..OBJECTS_PER_BATCH {
        // SAFETY: the caller's contract: each object is a live malloc(64).
        unsafe { free((*batch).objects[i], OBJECT_SIZE) };
    }
    // SAFETY: as above, the batch itself.
    unsafe { free(batch.cast(), size_of::<Batch>()) };
}

pub fn run(threads: usize, scale: f64) -> Outcome {
    let run_time = Duration::from_secs_f64(0.5 * scale);
    let queue = Queue {
        stack: Mutex::new(Stack {
            top: std::ptr::null_mut(),
            count: 0,
        }),
        empty: Condvar::new(),
        full: Condvar::new(),
        done: AtomicBool::new(false),
    };
    let freed = AtomicU64::new(0);
    let begin = Instant::now();
    let elapsed = std::thread::scope(|s| {
        for _ in 0..threads {
            let (queue, freed) = (&queue, &freed);
            s.spawn(move || releaser(queue, freed));
            s.spawn(move || allocator(queue));
        }
        while begin.elapsed() <= run_time {
            std::thread::sleep(Duration::from_millis(1));
        }
        {
            let _stack = queue.stack.lock().unwrap();
            queue.done.store(true, Ordering::Release);
        }
        queue.empty.notify_all();
        queue.full.notify_all();
        // The scope joins the workers; the original times up to the joins.
        begin
    });
    let elapsed = elapsed.elapsed();
    // What is left on the stack, freed untimed as in the original.
    let mut top = queue.stack.into_inner().unwrap().top;
    while !top.is_null() {
        // SAFETY: every thread is gone; the stack's batches are live.
        let next = unsafe { (*top).next };
        // SAFETY: as above.
        unsafe { free_batch(top) };
        top = next;
    }
    Outcome::new(freed.load(Ordering::Relaxed) as f64, elapsed)
}
