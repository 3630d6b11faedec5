//! Operation programs run against unimem's allocators and a simple reference
//! model, checking after every step that live allocations never overlap,
//! stay inside their Blocks, keep the bytes written into them, and that the
//! allocator's own counts match the model.
//!
//! Shared by the proptests (`tests/models.rs`) and the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`), which decode arbitrary bytes into the same
//! programs with the `decode` functions here.
#![allow(dead_code, clippy::new_without_default)]

pub mod global;
pub mod grid;
pub mod heap;
pub mod tape;

use std::ptr::NonNull;

/// Reads fixed-width values off the front of fuzz input; `None` at the end.
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Input { bytes }
    }

    pub fn u8(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(first)
    }

    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }
}

/// One live allocation as the model sees it.
#[derive(Clone, Copy, Debug)]
pub struct Live {
    pub ptr: NonNull<u8>,
    /// Bytes the caller may use (and that hold the pattern).
    pub len: usize,
    pub align: usize,
    /// The byte every one of them holds.
    pub seed: u8,
}

impl Live {
    pub fn fill(&self) {
        // SAFETY: a live allocation of `len` bytes (see the callers).
        unsafe { self.ptr.as_ptr().write_bytes(self.seed, self.len) }
    }

    pub fn check(&self) -> Result<(), String> {
        // SAFETY: as `fill`.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) };
        match bytes.iter().position(|&b| b != self.seed) {
            None => Ok(()),
            Some(i) => Err(format!(
                "byte {i} of {:?} ({} bytes) is {:#x}, not the pattern {:#x}",
                self.ptr, self.len, bytes[i], self.seed
            )),
        }
    }
}

/// Checks that the live allocations keep their patterns and alignment, lie
/// where `owns` says, and never overlap.
pub fn check_all(live: &[Live], owns: impl Fn(*const u8) -> bool) -> Result<(), String> {
    let mut ranges: Vec<(usize, usize)> = Vec::with_capacity(live.len());
    for allocation in live {
        allocation.check()?;
        let start = allocation.ptr.as_ptr() as usize;
        if !start.is_multiple_of(allocation.align) {
            return Err(format!("{start:#x} is not aligned to {}", allocation.align));
        }
        if allocation.len > 0 {
            let last = allocation.ptr.as_ptr().wrapping_add(allocation.len - 1);
            if !owns(allocation.ptr.as_ptr()) || !owns(last) {
                return Err(format!(
                    "{start:#x}+{} is not inside the Block",
                    allocation.len
                ));
            }
            ranges.push((start, allocation.len));
        }
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        if pair[0].0 + pair[0].1 > pair[1].0 {
            return Err(format!("allocations overlap: {pair:x?}"));
        }
    }
    Ok(())
}

/// Checks that the first `len` bytes at `ptr` are zero.
pub fn check_zeroed(ptr: NonNull<u8>, len: usize) -> Result<(), String> {
    // SAFETY: callers pass a live allocation of at least `len` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.as_ptr(), len) };
    match bytes.iter().position(|&b| b != 0) {
        None => Ok(()),
        Some(i) => Err(format!(
            "byte {i} of a zeroed allocation is {:#x}",
            bytes[i]
        )),
    }
}

/// A program's seed for the next pattern byte (never 0, which zeroed
/// allocations hold).
pub fn next_seed(seed: &mut u8) -> u8 {
    *seed = seed.wrapping_add(1).max(1);
    *seed
}
