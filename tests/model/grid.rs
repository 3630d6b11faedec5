//! Grid against a model free set.

use std::alloc::Layout;
use std::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use unimem::{BlockOptions, Cell, Grid, Pinning};

use super::{Input, Live, check_all, next_seed};

pub const CELL: usize = 256;
pub const CELLS: usize = 16;

type TestGrid = Grid<CELL, CELLS>;

#[derive(Clone, Debug)]
pub enum Op {
    /// `grid.take()`.
    Take,
    /// `grid.give(cell)` of the `index`-th held cell.
    Give { index: usize },
    /// Dropping the `index`-th held cell.
    Drop { index: usize },
    /// Giving the `index`-th held cell to another Grid: a panic, after which
    /// the cell is back in its own Grid. (Skipped when panics abort, as they
    /// do under the fuzzer.)
    ForeignGive { index: usize },
    /// `Allocator::allocate(size, 1 << align_log2)`.
    Allocate { size: usize, align_log2: u8 },
    /// `Allocator::deallocate` of the `index`-th allocation.
    Deallocate { index: usize },
}

pub fn decode(bytes: &[u8]) -> Vec<Op> {
    let mut input = Input::new(bytes);
    let mut ops = Vec::new();
    while let Some(kind) = input.u8() {
        let index = input.u8().unwrap_or(0) as usize;
        ops.push(match kind % 6 {
            0 => Op::Take,
            1 => Op::Give { index },
            2 => Op::Drop { index },
            3 => Op::ForeignGive { index },
            4 => Op::Allocate {
                size: input.u16().unwrap_or(0) as usize % 400,
                align_log2: (index % 16) as u8,
            },
            _ => Op::Deallocate { index },
        });
    }
    ops
}

fn options() -> BlockOptions<'static> {
    BlockOptions::new()
        .pinning(Pinning::BestEffort)
        .prefault(false)
}

/// Runs `ops` on a fresh Grid of 16 cells of 256 bytes.
pub fn run(ops: &[Op], panics_unwind: bool) -> Result<(), String> {
    let grid = TestGrid::open_with(&options()).map_err(|e| e.to_string())?;
    let other = TestGrid::open_with(&options()).map_err(|e| e.to_string())?;
    let mut held: Vec<(Cell<'_, CELL, CELLS>, Live)> = Vec::new();
    let mut allocated: Vec<(Live, Layout)> = Vec::new();
    let mut seed = 0u8;
    for (step, op) in ops.iter().enumerate() {
        let result = (|| -> Result<(), String> {
            match *op {
                Op::Take => {
                    let expect = held.len() + allocated.len() < CELLS;
                    match grid.take() {
                        Some(cell) if expect => {
                            let live = Live {
                                ptr: NonNull::new(cell.address()).unwrap(),
                                len: cell.size(),
                                align: grid.cell_align(),
                                seed: next_seed(&mut seed),
                            };
                            let base = grid.block().as_ptr() as usize;
                            if cell.address() as usize != base + cell.id() * grid.cell_size() {
                                return Err(format!("cell {} is not where its id says", cell.id()));
                            }
                            live.fill();
                            held.push((cell, live));
                        }
                        None if !expect => {}
                        got => return Err(format!("take gave {got:?} with {} held", held.len())),
                    }
                }
                Op::Give { index } | Op::Drop { index } => {
                    if !held.is_empty() {
                        let (cell, live) = held.remove(index % held.len());
                        live.check()?;
                        if matches!(op, Op::Give { .. }) {
                            grid.give(cell);
                        } else {
                            drop(cell);
                        }
                    }
                }
                Op::ForeignGive { index } => {
                    if panics_unwind && !held.is_empty() {
                        let (cell, live) = held.remove(index % held.len());
                        live.check()?;
                        let quiet = std::panic::take_hook();
                        std::panic::set_hook(Box::new(|_| {}));
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            other.give(cell)
                        }));
                        std::panic::set_hook(quiet);
                        if result.is_ok() {
                            return Err("giving a cell to another grid did not panic".into());
                        }
                        if other.free() != CELLS {
                            return Err("the foreign cell entered the other grid".into());
                        }
                    }
                }
                Op::Allocate { size, align_log2 } => {
                    let layout = Layout::from_size_align(size, 1 << align_log2).unwrap();
                    let fits =
                        layout.size() <= grid.cell_size() && layout.align() <= grid.cell_align();
                    let room = held.len() + allocated.len() < CELLS;
                    match grid.allocate(layout) {
                        Ok(block) if size == 0 => {
                            if !block.is_empty() {
                                return Err("zero-size allocate has length".into());
                            }
                        }
                        Ok(block) if fits && room => {
                            if block.len() != grid.cell_size() {
                                return Err(format!("length {} is not the cell size", block.len()));
                            }
                            let live = Live {
                                ptr: block.cast(),
                                len: block.len(),
                                align: layout.align(),
                                seed: next_seed(&mut seed),
                            };
                            live.fill();
                            allocated.push((live, layout));
                        }
                        Err(_) if !(fits && room) => {}
                        got => {
                            return Err(format!(
                                "allocate {layout:?} gave {got:?}; fits {fits}, room {room}"
                            ));
                        }
                    }
                }
                Op::Deallocate { index } => {
                    if !allocated.is_empty() {
                        let (live, layout) = allocated.remove(index % allocated.len());
                        live.check()?;
                        // SAFETY: allocated by `grid` with `layout`, not used again.
                        unsafe { grid.deallocate(live.ptr, layout) };
                    }
                }
            }
            if grid.free() != CELLS - held.len() - allocated.len() {
                return Err(format!(
                    "free {} but the model holds {}",
                    grid.free(),
                    held.len() + allocated.len()
                ));
            }
            let live: Vec<Live> = held
                .iter()
                .map(|(_, l)| *l)
                .chain(allocated.iter().map(|(l, _)| *l))
                .collect();
            check_all(&live, |p| grid.owns(p))
        })();
        result.map_err(|e| format!("step {step} ({op:?}): {e}"))?;
    }
    Ok(())
}
