//! Allocations through `GlobalAlloc` on each allocator, with spilling: what a
//! `#[global_allocator]` static sees.

use std::alloc::{GlobalAlloc, Layout};
use std::ptr::NonNull;

use unimem::{BlockOptions, Grid, Heap, Pinning, Tape};

use super::{Input, Live, check_all, check_zeroed, next_seed};

#[derive(Clone, Debug)]
pub enum Op {
    /// `alloc` (or `alloc_zeroed`) of `size` bytes aligned to `1 << align_log2`.
    Alloc {
        size: usize,
        align_log2: u8,
        zeroed: bool,
    },
    /// `dealloc` of the `index`-th live allocation.
    Dealloc { index: usize },
    /// `realloc` of the `index`-th live allocation to `size` bytes.
    Realloc { index: usize, size: usize },
}

pub fn decode(bytes: &[u8]) -> Vec<Op> {
    let mut input = Input::new(bytes);
    let mut ops = Vec::new();
    while let Some(kind) = input.u8() {
        let index = input.u8().unwrap_or(0) as usize;
        let size = 1 + match kind >> 5 {
            0..=4 => input.u16().unwrap_or(0) as usize % 600,
            5 | 6 => input.u16().unwrap_or(0) as usize * 2,
            _ => input.u32().unwrap_or(0) as usize % (200 << 10),
        };
        ops.push(match kind % 3 {
            0 => Op::Alloc {
                size,
                align_log2: (index % 13) as u8,
                zeroed: kind & 0x10 != 0,
            },
            1 => Op::Dealloc { index },
            _ => Op::Realloc { index, size },
        });
    }
    ops
}

fn options() -> BlockOptions<'static> {
    BlockOptions::new()
        .pinning(Pinning::BestEffort)
        .prefault(false)
}

/// Runs `ops` through `GlobalAlloc` on a spilling Heap, a spilling Tape and a
/// spilling Grid in turn.
pub fn run(ops: &[Op]) -> Result<(), String> {
    let heap = Heap::lazy_with(1 << 20, options()).spill();
    run_on("heap", &heap, ops)?;
    let tape = Tape::lazy_with(256 << 10, options()).spill();
    run_on("tape", &tape, ops)?;
    let grid: Grid<128, 64> = Grid::lazy_with(options()).spill();
    run_on("grid", &grid, ops)
}

fn run_on<A: GlobalAlloc>(name: &str, allocator: &A, ops: &[Op]) -> Result<(), String> {
    let mut live: Vec<(Live, Layout)> = Vec::new();
    let mut seed = 0u8;
    let result = (|| -> Result<(), String> {
        for (step, op) in ops.iter().enumerate() {
            step_one(allocator, &mut live, &mut seed, op)
                .and_then(|()| {
                    let all: Vec<Live> = live.iter().map(|(l, _)| *l).collect();
                    // Spilled memory lies anywhere: check patterns and overlap only.
                    check_all(&all, |_| true)
                })
                .map_err(|e| format!("{name}, step {step} ({op:?}): {e}"))?;
        }
        Ok(())
    })();
    let mut result = result;
    for (allocation, layout) in live {
        if result.is_ok() {
            result = allocation
                .check()
                .map_err(|e| format!("{name}, at the end: {e}"));
        }
        // SAFETY: allocated by `allocator` with `layout`, not used again.
        unsafe { allocator.dealloc(allocation.ptr.as_ptr(), layout) };
    }
    result
}

fn step_one<A: GlobalAlloc>(
    allocator: &A,
    live: &mut Vec<(Live, Layout)>,
    seed: &mut u8,
    op: &Op,
) -> Result<(), String> {
    match *op {
        Op::Alloc {
            size,
            align_log2,
            zeroed,
        } => {
            let layout = Layout::from_size_align(size, 1 << align_log2).unwrap();
            // SAFETY: `size` is at least 1.
            let ptr = unsafe {
                if zeroed {
                    allocator.alloc_zeroed(layout)
                } else {
                    allocator.alloc(layout)
                }
            };
            // Every allocator here spills, so nothing fails.
            let ptr = NonNull::new(ptr).ok_or("a spilling allocator returned null")?;
            if zeroed {
                check_zeroed(ptr, size)?;
            }
            let allocation = Live {
                ptr,
                len: size,
                align: layout.align(),
                seed: next_seed(seed),
            };
            allocation.fill();
            live.push((allocation, layout));
        }
        Op::Dealloc { index } => {
            if !live.is_empty() {
                let (allocation, layout) = live.swap_remove(index % live.len());
                allocation.check()?;
                // SAFETY: allocated by `allocator` with `layout`.
                unsafe { allocator.dealloc(allocation.ptr.as_ptr(), layout) };
            }
        }
        Op::Realloc { index, size } => {
            if !live.is_empty() {
                let at = index % live.len();
                let (allocation, layout) = live[at];
                // SAFETY: allocated by `allocator` with `layout`; `size` >= 1.
                let ptr = unsafe { allocator.realloc(allocation.ptr.as_ptr(), layout, size) };
                let ptr = NonNull::new(ptr).ok_or("a spilling allocator failed a realloc")?;
                Live {
                    ptr,
                    len: size.min(layout.size()),
                    ..allocation
                }
                .check()?;
                let moved = Live {
                    ptr,
                    len: size,
                    ..allocation
                };
                moved.fill();
                live[at] = (
                    moved,
                    Layout::from_size_align(size, layout.align()).unwrap(),
                );
            }
        }
    }
    Ok(())
}
