//! Tape against a model cursor.

use std::alloc::Layout;
use std::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use unimem::{BlockOptions, Pinning, Tape};

use super::{Input, Live, check_all, check_zeroed, next_seed};

pub const BYTES: usize = 64 << 10;

#[derive(Clone, Debug)]
pub enum Op {
    /// `tape.take(size, 1 << align_log2)`; raw takes live until `Clear`.
    Take { size: usize, align_log2: u8 },
    /// `Allocator::allocate` (or `allocate_zeroed`).
    Allocate {
        size: usize,
        align_log2: u8,
        zeroed: bool,
    },
    /// `Allocator::deallocate` of the `index`-th allocation made through the
    /// trait (modulo their number).
    Deallocate { index: usize },
    /// `Allocator::grow` (or `grow_zeroed`) by `extra` bytes.
    Grow {
        index: usize,
        extra: usize,
        zeroed: bool,
    },
    /// `Allocator::shrink` to `size` bytes (at least 1).
    Shrink { index: usize, size: usize },
    /// `tape.clear()`.
    Clear,
}

pub fn decode(bytes: &[u8]) -> Vec<Op> {
    let mut input = Input::new(bytes);
    let mut ops = Vec::new();
    while let Some(kind) = input.u8() {
        let op = match kind % 6 {
            0 => Op::Take {
                size: input.u16().unwrap_or(0) as usize % 9000,
                align_log2: input.u8().unwrap_or(0) % 18,
            },
            1 => Op::Allocate {
                size: input.u16().unwrap_or(0) as usize % 9000,
                align_log2: input.u8().unwrap_or(0) % 14,
                zeroed: kind & 0x80 != 0,
            },
            2 => Op::Deallocate {
                index: input.u8().unwrap_or(0) as usize,
            },
            3 => Op::Grow {
                index: input.u8().unwrap_or(0) as usize,
                extra: input.u16().unwrap_or(0) as usize % 9000,
                zeroed: kind & 0x80 != 0,
            },
            4 => Op::Shrink {
                index: input.u8().unwrap_or(0) as usize,
                size: input.u16().unwrap_or(0) as usize % 9000,
            },
            _ => Op::Clear,
        };
        ops.push(op);
    }
    ops
}

/// Runs `ops` on a fresh 64 KiB Tape.
pub fn run(ops: &[Op]) -> Result<(), String> {
    let options = BlockOptions::new()
        .pinning(Pinning::BestEffort)
        .prefault(false);
    let mut tape = Tape::open_with(BYTES, &options).map_err(|e| e.to_string())?;
    Model::new(&tape).run(&mut tape, ops)
}

/// The model: a cursor, and what is live.
struct Model {
    base: usize,
    capacity: usize,
    cursor: usize,
    /// Raw takes (live until `Clear`).
    taken: Vec<Live>,
    /// Allocations through the Allocator trait, with their offsets.
    allocated: Vec<(Live, usize)>,
    seed: u8,
}

impl Model {
    fn new(tape: &Tape) -> Model {
        Model {
            base: tape.block().as_ptr() as usize,
            capacity: tape.total(),
            cursor: 0,
            taken: Vec::new(),
            allocated: Vec::new(),
            seed: 0,
        }
    }

    /// Where a take of `size` at `align` lands, and the cursor after it.
    fn bump(&self, size: usize, align: usize) -> Option<(usize, usize)> {
        let start = (self.base + self.cursor).checked_next_multiple_of(align)? - self.base;
        let end = start.checked_add(size)?;
        (end <= self.capacity).then_some((start, end))
    }

    fn run(mut self, tape: &mut Tape, ops: &[Op]) -> Result<(), String> {
        for (step, op) in ops.iter().enumerate() {
            self.step(tape, op)
                .and_then(|()| self.check(tape))
                .map_err(|e| format!("step {step} ({op:?}): {e}"))?;
        }
        Ok(())
    }

    fn step(&mut self, tape: &mut Tape, op: &Op) -> Result<(), String> {
        match *op {
            Op::Take { size, align_log2 } => {
                let align = 1usize << align_log2;
                let got = tape.take(size, align);
                if size == 0 {
                    return match got {
                        Some(p) if p as usize == align => Ok(()),
                        other => Err(format!("zero-size take gave {other:?}")),
                    };
                }
                let expected = self.bump(size, align);
                match (got, expected) {
                    (None, None) => Ok(()),
                    (Some(p), Some((start, end))) if p as usize == self.base + start => {
                        self.cursor = end;
                        let live = Live {
                            ptr: NonNull::new(p).unwrap(),
                            len: size,
                            align,
                            seed: next_seed(&mut self.seed),
                        };
                        live.fill();
                        self.taken.push(live);
                        Ok(())
                    }
                    (got, expected) => Err(format!("take gave {got:?}, model {expected:?}")),
                }
            }
            Op::Allocate {
                size,
                align_log2,
                zeroed,
            } => {
                let align = 1usize << align_log2;
                let layout = Layout::from_size_align(size, align).unwrap();
                let got = if zeroed {
                    tape.allocate_zeroed(layout)
                } else {
                    tape.allocate(layout)
                };
                if size == 0 {
                    return got
                        .map(drop)
                        .map_err(|_| "zero-size allocate failed".into());
                }
                match (got, self.bump(size, align)) {
                    (Err(_), None) => Ok(()),
                    (Ok(block), Some((start, end)))
                        if block.cast::<u8>().as_ptr() as usize == self.base + start
                            && block.len() == size =>
                    {
                        if zeroed {
                            check_zeroed(block.cast(), size)?;
                        }
                        self.cursor = end;
                        let live = Live {
                            ptr: block.cast(),
                            len: size,
                            align,
                            seed: next_seed(&mut self.seed),
                        };
                        live.fill();
                        self.allocated.push((live, start));
                        Ok(())
                    }
                    (got, expected) => Err(format!("allocate gave {got:?}, model {expected:?}")),
                }
            }
            Op::Deallocate { index } => {
                if self.allocated.is_empty() {
                    return Ok(());
                }
                let (live, start) = self.allocated.remove(index % self.allocated.len());
                live.check()?;
                let layout = Layout::from_size_align(live.len, live.align).unwrap();
                // SAFETY: allocated by `tape` with `layout`, not used again.
                unsafe { tape.deallocate(live.ptr, layout) };
                if start + live.len == self.cursor {
                    self.cursor = start;
                }
                Ok(())
            }
            Op::Grow {
                index,
                extra,
                zeroed,
            } => {
                if self.allocated.is_empty() {
                    return Ok(());
                }
                let at = index % self.allocated.len();
                let (live, start) = self.allocated[at];
                let old = Layout::from_size_align(live.len, live.align).unwrap();
                let new = Layout::from_size_align(live.len + extra, live.align).unwrap();
                // What the model expects: in place if newest and it fits, else
                // a new allocation at the cursor, else failure.
                let newest = start + live.len == self.cursor;
                let in_place = extra == 0 || (newest && start + new.size() <= self.capacity);
                let moved = if in_place {
                    None
                } else {
                    self.bump(new.size(), live.align)
                };
                // SAFETY: allocated by `tape` with `old`; `new` is larger.
                let got = unsafe {
                    if zeroed {
                        tape.grow_zeroed(live.ptr, old, new)
                    } else {
                        tape.grow(live.ptr, old, new)
                    }
                };
                let block = match (got, in_place, moved) {
                    (Err(_), false, None) => return Ok(()),
                    (Ok(block), true, _) if block.cast() == live.ptr => {
                        if newest {
                            self.cursor = start + new.size();
                        }
                        (block, start)
                    }
                    (Ok(block), false, Some((to, end)))
                        if block.cast::<u8>().as_ptr() as usize == self.base + to =>
                    {
                        self.cursor = end;
                        (block, to)
                    }
                    (got, in_place, moved) => {
                        return Err(format!(
                            "grow gave {got:?}, model in place {in_place}, moved {moved:?}"
                        ));
                    }
                };
                let (block, start) = block;
                let grown = Live {
                    ptr: block.cast(),
                    len: live.len,
                    ..live
                };
                grown.check()?;
                if zeroed {
                    // SAFETY: the tail is inside the new allocation.
                    check_zeroed(unsafe { grown.ptr.add(live.len) }, extra)?;
                }
                let grown = Live {
                    len: new.size(),
                    ..grown
                };
                grown.fill();
                self.allocated[at] = (grown, start);
                Ok(())
            }
            Op::Shrink { index, size } => {
                if self.allocated.is_empty() {
                    return Ok(());
                }
                let at = index % self.allocated.len();
                let (live, start) = self.allocated[at];
                let size = size.clamp(1, live.len);
                let old = Layout::from_size_align(live.len, live.align).unwrap();
                let new = Layout::from_size_align(size, live.align).unwrap();
                // SAFETY: allocated by `tape` with `old`; `new` is not larger.
                let block = unsafe { tape.shrink(live.ptr, old, new) }
                    .map_err(|_| "shrink failed".to_string())?;
                if block.cast() != live.ptr {
                    return Err("shrink moved the allocation".into());
                }
                if start + live.len == self.cursor {
                    self.cursor = start + size;
                }
                self.allocated[at] = (Live { len: size, ..live }, start);
                Ok(())
            }
            Op::Clear => {
                for live in self
                    .taken
                    .iter()
                    .chain(self.allocated.iter().map(|(l, _)| l))
                {
                    live.check()?;
                }
                tape.clear();
                self.cursor = 0;
                self.taken.clear();
                self.allocated.clear();
                Ok(())
            }
        }
    }

    fn check(&self, tape: &Tape) -> Result<(), String> {
        if tape.used() != self.cursor {
            return Err(format!(
                "used {} but the model cursor is {}",
                tape.used(),
                self.cursor
            ));
        }
        if tape.free() != self.capacity - self.cursor {
            return Err(format!("free {} disagrees with the model", tape.free()));
        }
        let live: Vec<Live> = self
            .taken
            .iter()
            .copied()
            .chain(self.allocated.iter().map(|&(live, _)| live))
            .collect();
        check_all(&live, |p| tape.owns(p))
    }
}
