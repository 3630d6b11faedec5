//! Heap against a map of live ranges.

use std::alloc::Layout;

use allocator_api2::alloc::Allocator;
use unimem::{BlockOptions, Heap, Pinning};

use super::{Input, Live, check_all, check_zeroed, next_seed};

/// Two Blocks of 1 MiB: small enough that programs reach exhaustion and the
/// second Block.
pub const BLOCK: usize = 1 << 20;

#[derive(Clone, Debug)]
pub enum Op {
    /// `Allocator::allocate` (or `allocate_zeroed`).
    Allocate {
        size: usize,
        align_log2: u8,
        zeroed: bool,
    },
    /// `Allocator::deallocate` of the `index`-th live allocation.
    Deallocate { index: usize },
    /// `Allocator::grow` (or `grow_zeroed`) to `size` (at least the old size).
    Grow {
        index: usize,
        size: usize,
        zeroed: bool,
    },
    /// `Allocator::shrink` to `size` (at least 1, at most the old size).
    Shrink { index: usize, size: usize },
    /// `Heap::trim`: free memory goes back to the system, and comes back
    /// zero when reused.
    Trim,
}

/// Sizes spread over the small classes, the medium ones and page runs.
fn size(selector: u8, raw: u32) -> usize {
    match selector % 10 {
        0..=5 => 1 + raw as usize % 512,
        6..=8 => 1 + raw as usize % (32 << 10),
        _ => 1 + raw as usize % (300 << 10),
    }
}

pub fn decode(bytes: &[u8]) -> Vec<Op> {
    let mut input = Input::new(bytes);
    let mut ops = Vec::new();
    while let Some(kind) = input.u8() {
        let index = input.u8().unwrap_or(0) as usize;
        let raw = input.u32().unwrap_or(0);
        ops.push(match kind % 5 {
            0 => Op::Allocate {
                size: size(kind >> 2, raw),
                align_log2: (index % 14) as u8,
                zeroed: kind & 0x80 != 0,
            },
            1 => Op::Deallocate { index },
            2 => Op::Grow {
                index,
                size: size(kind >> 2, raw),
                zeroed: kind & 0x80 != 0,
            },
            3 => Op::Shrink {
                index,
                size: 1 + raw as usize % 4096,
            },
            _ => Op::Trim,
        });
    }
    ops
}

/// Runs `ops` on a fresh Heap (two 1 MiB Blocks), then frees what is left
/// and checks that the heap counts nothing in use.
pub fn run(ops: &[Op]) -> Result<(), String> {
    let options = BlockOptions::new()
        .pinning(Pinning::BestEffort)
        .prefault(false);
    let heap = Heap::lazy_with(BLOCK, options)
        .open_now()
        .map_err(|e| e.to_string())?;
    let mut live: Vec<(Live, Layout)> = Vec::new();
    let mut seed = 0u8;
    for (step, op) in ops.iter().enumerate() {
        step_one(&heap, &mut live, &mut seed, op)
            .map_err(|e| format!("step {step} ({op:?}): {e}"))?;
    }
    for (allocation, layout) in live.drain(..) {
        allocation.check()?;
        // SAFETY: allocated by `heap` with `layout`, not used again.
        unsafe { heap.deallocate(allocation.ptr, layout) };
    }
    match heap.stats().in_use {
        0 => Ok(()),
        left => Err(format!("{left} bytes in use after freeing everything")),
    }
}

fn step_one(
    heap: &Heap,
    live: &mut Vec<(Live, Layout)>,
    seed: &mut u8,
    op: &Op,
) -> Result<(), String> {
    let before = heap.stats();
    match *op {
        Op::Allocate {
            size,
            align_log2,
            zeroed,
        } => {
            let layout = Layout::from_size_align(size, 1 << align_log2).unwrap();
            let got = if zeroed {
                heap.allocate_zeroed(layout)
            } else {
                heap.allocate(layout)
            };
            match got {
                Ok(block) => {
                    if block.len() < size {
                        return Err(format!("{} bytes for a request of {size}", block.len()));
                    }
                    if zeroed {
                        // The whole returned slice, as the trait promises.
                        check_zeroed(block.cast(), block.len())?;
                    }
                    let allocation = Live {
                        ptr: block.cast(),
                        len: block.len(),
                        align: layout.align(),
                        seed: next_seed(seed),
                    };
                    allocation.fill();
                    live.push((allocation, layout));
                }
                // A full heap may refuse; then nothing changed.
                Err(_) if heap.stats().in_use == before.in_use => {}
                Err(_) => return Err("a refused allocation changed what is in use".into()),
            }
        }
        Op::Deallocate { index } => {
            if !live.is_empty() {
                let (allocation, layout) = live.swap_remove(index % live.len());
                allocation.check()?;
                // SAFETY: allocated by `heap` with `layout`, not used again.
                unsafe { heap.deallocate(allocation.ptr, layout) };
            }
        }
        Op::Grow {
            index,
            size,
            zeroed,
        } => {
            if !live.is_empty() {
                let at = index % live.len();
                let (allocation, layout) = live[at];
                let new = Layout::from_size_align(size.max(layout.size()), layout.align()).unwrap();
                // SAFETY: allocated by `heap` with `layout`; `new` is not smaller.
                let got = unsafe {
                    if zeroed {
                        heap.grow_zeroed(allocation.ptr, layout, new)
                    } else {
                        heap.grow(allocation.ptr, layout, new)
                    }
                };
                if let Ok(block) = got {
                    // The old bytes moved (or stayed) with the allocation.
                    Live {
                        ptr: block.cast(),
                        len: layout.size(),
                        ..allocation
                    }
                    .check()?;
                    if zeroed {
                        // SAFETY: inside the grown allocation.
                        let tail = unsafe { block.cast::<u8>().add(layout.size()) };
                        check_zeroed(tail, block.len() - layout.size())?;
                    }
                    let grown = Live {
                        ptr: block.cast(),
                        len: block.len(),
                        ..allocation
                    };
                    grown.fill();
                    live[at] = (grown, new);
                }
            }
        }
        Op::Shrink { index, size } => {
            if !live.is_empty() {
                let at = index % live.len();
                let (allocation, layout) = live[at];
                let new = Layout::from_size_align(size.min(layout.size()), layout.align()).unwrap();
                // SAFETY: allocated by `heap` with `layout`; `new` is not larger.
                let block = unsafe { heap.shrink(allocation.ptr, layout, new) }
                    .map_err(|_| "shrink failed".to_string())?;
                let shrunk = Live {
                    ptr: block.cast(),
                    len: new.size(),
                    ..allocation
                };
                shrunk.check()?;
                let shrunk = Live {
                    len: block.len(),
                    ..shrunk
                };
                shrunk.fill();
                live[at] = (shrunk, new);
            }
        }
        Op::Trim => {
            heap.trim();
        }
    }
    let in_use: usize = live.iter().map(|(allocation, _)| allocation.len).sum();
    let stats = heap.stats();
    if stats.in_use != in_use {
        return Err(format!(
            "in use {} but the model holds {in_use}",
            stats.in_use
        ));
    }
    if stats.high_water < stats.committed || stats.committed < stats.in_use {
        return Err(format!("inconsistent stats {stats:?}"));
    }
    let all: Vec<Live> = live.iter().map(|(allocation, _)| *allocation).collect();
    check_all(&all, |p| heap.owns(p))
}
