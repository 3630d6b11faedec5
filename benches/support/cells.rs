//! Fixed-size buffers: a Grid's cells against a queue of buffers and the
//! general allocators, with and without writing each (part of `support`).

use super::*;

/// An `ArrayQueue` holding every index of a pool of `cells`.
fn full_queue(cells: usize) -> ArrayQueue<usize> {
    let queue = ArrayQueue::new(cells);
    for i in 0..cells {
        queue.push(i).unwrap();
    }
    queue
}

/// Taking a 4 KiB buffer and giving it back.
pub fn cycle_4k() -> Vec<(&'static str, Subject)> {
    let layout = Layout::from_size_align(4096, 4096).unwrap();
    let with_global = |alloc: &'static dyn GlobalAlloc| -> Subject {
        Box::new(move |iters| {
            batched(
                iters,
                BATCH,
                &mut (),
                // SAFETY: a non-zero layout, freed at once.
                |_| unsafe {
                    let p = alloc.alloc(black_box(layout));
                    alloc.dealloc(black_box(p), layout);
                },
                |_| {},
            )
        })
    };
    vec![
        (
            "unimem",
            Box::new(|iters| {
                let grid = Grid::<4096, 64>::open_with(&OPTIONS).unwrap();
                batched(
                    iters,
                    BATCH,
                    &mut (),
                    |_| {
                        black_box(grid.take_uninit());
                    },
                    |_| {},
                )
            }),
        ),
        ("system", with_global(&SYSTEM)),
        ("mimalloc", with_global(&MIMALLOC)),
        (
            "ArrayQueue",
            Box::new(|iters| {
                let queue = full_queue(64);
                batched(
                    iters,
                    BATCH,
                    &mut (),
                    |_| {
                        let cell = black_box(queue.pop().unwrap());
                        queue.push(cell).unwrap();
                    },
                    |_| {},
                )
            }),
        ),
        (
            "Vec",
            Box::new(|iters| {
                batched(
                    iters,
                    BATCH,
                    &mut (),
                    |_| {
                        black_box(Vec::<u8>::with_capacity(4096));
                    },
                    |_| {},
                )
            }),
        ),
        (
            "mmap",
            Box::new(|iters| {
                batched(
                    iters,
                    BATCH,
                    &mut (),
                    |_| munmap(black_box(mmap(4096)), 4096),
                    |_| {},
                )
            }),
        ),
    ]
}

/// A Grid's take and give of a 4 KiB cell, against crossbeam's ArrayQueue
/// pop and push.
pub fn grid_cycle() -> Vec<(&'static str, Subject)> {
    cycle_4k()
        .into_iter()
        .filter(|(name, _)| matches!(*name, "unimem" | "ArrayQueue"))
        .collect()
}

/// Taking a 4 KiB buffer from a pool of 1024 (4 MiB), filling it and giving
/// it back: what a buffer pool is for. The Grid hands out the cell given
/// back last, which is still in cache; `ArrayQueue` is first in, first out,
/// so it cycles through all 4 MiB.
pub fn grid_cycle_write() -> Vec<(&'static str, Subject)> {
    const CELLS: usize = 1024;
    fn fill(buffer: *mut u8) {
        // SAFETY: callers pass a 4 KiB buffer they hold.
        unsafe { core::ptr::write_bytes(buffer, 0x5A, 4096) };
        black_box(buffer);
    }
    vec![
        (
            "unimem",
            Box::new(|iters| {
                let grid = Grid::<4096, CELLS>::open_with(&OPTIONS).unwrap();
                batched(
                    iters,
                    BATCH,
                    &mut (),
                    |_| {
                        let cell = grid.take_uninit().unwrap();
                        fill(cell.address());
                    },
                    |_| {},
                )
            }),
        ),
        (
            "ArrayQueue",
            Box::new(|iters| {
                let mut buffers = vec![0u8; CELLS * 4096];
                let base = buffers.as_mut_ptr();
                let queue = full_queue(CELLS);
                batched(
                    iters,
                    BATCH,
                    &mut (),
                    |_| {
                        let index = queue.pop().unwrap();
                        fill(base.wrapping_add(index * 4096));
                        queue.push(index).unwrap();
                    },
                    |_| {},
                )
            }),
        ),
    ]
}
