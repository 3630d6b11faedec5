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

    /// Checks every byte (when the allocation is freed or moved, and at the
    /// end of a program). Compares 4 KiB at a time against a buffer of the
    /// pattern, through `memcmp`, which the fuzzer's coverage
    /// instrumentation leaves alone.
    pub fn check(&self) -> Result<(), String> {
        let pattern = [self.seed; 4096];
        // SAFETY: as `fill`.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) };
        for (k, chunk) in bytes.chunks(pattern.len()).enumerate() {
            if chunk != &pattern[..chunk.len()] {
                let base = k * pattern.len();
                return self.check_bytes(base..base + chunk.len());
            }
        }
        Ok(())
    }

    /// Checks the first, middle and last 64 bytes (after every step, for
    /// every live allocation: cheap enough to keep programs fast, while an
    /// overwrite anywhere is still caught by the full check when the
    /// allocation is freed or moved).
    pub fn check_sampled(&self) -> Result<(), String> {
        let pattern = [self.seed; 64];
        // SAFETY: as `fill`.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) };
        let window = self.len.min(64);
        let middle = (self.len - window) / 2;
        for start in [0, middle, self.len - window] {
            if bytes[start..start + window] != pattern[..window] {
                return self.check_bytes(start..start + window);
            }
        }
        Ok(())
    }

    fn check_bytes(&self, offsets: impl Iterator<Item = usize>) -> Result<(), String> {
        // SAFETY: as `fill`.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) };
        for i in offsets {
            if bytes[i] != self.seed {
                return Err(format!(
                    "byte {i} of {:?} ({} bytes) is {:#x}, not the pattern {:#x}",
                    self.ptr, self.len, bytes[i], self.seed
                ));
            }
        }
        Ok(())
    }
}

/// Checks that the live allocations keep their patterns (sampled, see
/// `Live::check_sampled`) and alignment, lie where `owns` says, and never
/// overlap.
pub fn check_all(live: &[Live], owns: impl Fn(*const u8) -> bool) -> Result<(), String> {
    let mut ranges: Vec<(usize, usize)> = Vec::with_capacity(live.len());
    for allocation in live {
        allocation.check_sampled()?;
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

/// Checks that the first `len` bytes at `ptr` are zero (4 KiB at a time,
/// through `memcmp`, as `Live::check`).
pub fn check_zeroed(ptr: NonNull<u8>, len: usize) -> Result<(), String> {
    const ZEROS: [u8; 4096] = [0; 4096];
    // SAFETY: callers pass a live allocation of at least `len` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.as_ptr(), len) };
    for (k, chunk) in bytes.chunks(ZEROS.len()).enumerate() {
        if chunk != &ZEROS[..chunk.len()] {
            let i = chunk.iter().position(|&b| b != 0).unwrap_or(0);
            return Err(format!(
                "byte {} of a zeroed allocation is {:#x}",
                k * ZEROS.len() + i,
                chunk[i]
            ));
        }
    }
    Ok(())
}

/// A program's seed for the next pattern byte (never 0, which zeroed
/// allocations hold).
pub fn next_seed(seed: &mut u8) -> u8 {
    *seed = seed.wrapping_add(1).max(1);
    *seed
}
