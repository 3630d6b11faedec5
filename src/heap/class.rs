//! Size classes: 16 bytes to 32 KiB, four classes per doubling.
//!
//! Classes above 16 bytes step by a quarter of the power of two below them
//! (16, 20, 24, 28, 32, 40, 48, 56, 64, 80, ...), so a request just above one
//! class lands in the next with under 20% of it wasted. A class's objects sit
//! at multiples of its size inside 64 KiB-aligned slabs, so each class is
//! aligned to the largest power of two dividing its size; a request that
//! needs more alignment moves up to the first class that has it.

/// Number of classes.
pub(crate) const CLASSES: usize = 45;
/// The largest size served from slabs; larger requests take page runs.
pub(crate) const MAX_SMALL: usize = 32 << 10;

/// The object size of class `class`, computed (the tables below hold it).
const fn compute_size(class: usize) -> usize {
    if class == 0 {
        return 16;
    }
    let octave = 4 + (class - 1) / 4;
    let step = (class - 1) % 4 + 1;
    (1 << octave) + step * (1 << (octave - 2))
}

/// The smallest class holding `size` bytes (1 ..= MAX_SMALL), computed.
const fn compute_class(size: usize) -> usize {
    if size <= 16 {
        return 0;
    }
    let s = size - 1;
    let octave = (usize::BITS - 1 - s.leading_zeros()) as usize;
    let step = (s >> (octave - 2)) & 3;
    (octave - 4) * 4 + step + 1
}

/// Object size per class.
const SIZES: [u32; CLASSES] = {
    let mut sizes = [0; CLASSES];
    let mut class = 0;
    while class < CLASSES {
        sizes[class] = compute_size(class) as u32;
        class += 1;
    }
    sizes
};

/// Requests up to this size find their class in `SMALL`.
const TABLE_LIMIT: usize = 1024;

/// The class of sizes `4k + 1 ..= 4k + 4`, at index `k`, up to TABLE_LIMIT:
/// one load instead of the arithmetic on the hot path.
const SMALL: [u8; TABLE_LIMIT / 4] = {
    let mut table = [0; TABLE_LIMIT / 4];
    let mut k = 0;
    while k < TABLE_LIMIT / 4 {
        table[k] = compute_class(4 * k + 4) as u8;
        k += 1;
    }
    table
};

/// The object size of class `class`.
#[inline]
pub(crate) fn size(class: usize) -> usize {
    SIZES[class] as usize
}

/// The alignment every object of class `class` has.
#[inline]
pub(crate) fn align(class: usize) -> usize {
    1 << SIZES[class].trailing_zeros()
}

/// As `SMALL`, for requests aligned to 8: the first class at or above the
/// size whose objects are 8-aligned (it skips 20 and 28).
const SMALL8: [u8; TABLE_LIMIT / 4] = {
    let mut table = [0; TABLE_LIMIT / 4];
    let mut k = 0;
    while k < TABLE_LIMIT / 4 {
        let mut class = compute_class(4 * k + 4);
        while !compute_size(class).is_multiple_of(8) {
            class += 1;
        }
        table[k] = class as u8;
        k += 1;
    }
    table
};

/// The class of a request up to 1 KiB aligned to at most 8, from one table
/// load; `None` for any other request (`of` has every case). The allocation
/// fast path uses this, so that it makes no call and keeps nothing on the
/// stack.
#[inline(always)]
pub(crate) fn of_common(size: usize, align: usize) -> Option<usize> {
    // One compare for both limits: `size - 1` is below TABLE_LIMIT (1024)
    // for sizes 1 ..= 1024, and `(align - 1) << 7` (align a power of two)
    // for alignments up to 8; either at or past the limit sets a bit at or
    // above it.
    let last = size.wrapping_sub(1);
    if last | (align.wrapping_sub(1) << 7) >= TABLE_LIMIT {
        return None;
    }
    // Every class is 4-aligned and every one but 20 and 28 bytes 8-aligned,
    // so either table has the answer.
    let table = if align <= 4 { &SMALL } else { &SMALL8 };
    Some(table[last / 4 % (TABLE_LIMIT / 4)] as usize)
}

/// The index of `size` (1 ..= TABLE_LIMIT) in `SMALL` and `SMALL8`; the
/// modulo keeps any other size in bounds, so no check is emitted.
#[inline(always)]
fn small_index(size: usize) -> usize {
    size.wrapping_sub(1) / 4 % (TABLE_LIMIT / 4)
}

/// The class for a request, or `None` when it needs a page run.
#[inline]
pub(crate) fn of(size: usize, align: usize) -> Option<usize> {
    if let Some(class) = of_common(size, align) {
        return Some(class);
    }
    if size > MAX_SMALL {
        return None;
    }
    // Classes at or below TABLE_LIMIT are multiples of 4, so every size in
    // 4k + 1 ..= 4k + 4 has the same class.
    let first = if size > TABLE_LIMIT {
        compute_class(size)
    } else {
        SMALL[small_index(size)] as usize
    };
    (first..CLASSES).find(|&class| self::align(class) >= align)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_span_16_bytes_to_32_kib() {
        assert_eq!(size(0), 16);
        assert_eq!(size(1), 20);
        assert_eq!(size(4), 32);
        assert_eq!(size(CLASSES - 1), MAX_SMALL);
        for class in 1..CLASSES {
            assert!(size(class) > size(class - 1));
            assert_eq!(size(class) % 4, 0, "free-list links are u32s");
        }
    }

    #[test]
    fn internal_waste_is_at_most_a_quarter() {
        for class in 1..CLASSES {
            // The smallest request that lands here is one byte above the
            // class below.
            let smallest = size(class - 1) + 1;
            let waste = (size(class) - smallest) as f64 / size(class) as f64;
            assert!(waste <= 0.25, "class {} wastes {waste:.2}", size(class));
        }
    }

    #[test]
    fn the_tables_agree_with_the_arithmetic() {
        for class in 0..CLASSES {
            assert_eq!(size(class), compute_size(class));
        }
        let step = if cfg!(miri) { 97 } else { 1 };
        for request in (1..=MAX_SMALL).step_by(step) {
            assert_eq!(of(request, 1), Some(compute_class(request)), "{request}");
        }
    }

    #[test]
    fn every_size_maps_to_the_smallest_class_that_holds_it() {
        let step = if cfg!(miri) { 97 } else { 1 };
        for request in (1..=MAX_SMALL).step_by(step) {
            let class = of(request, 1).unwrap();
            assert!(size(class) >= request);
            if class > 0 {
                assert!(
                    size(class - 1) < request,
                    "{request} could use a smaller class"
                );
            }
        }
        assert_eq!(of(MAX_SMALL + 1, 1), None);
    }

    #[test]
    fn alignment_moves_requests_up() {
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096, 16384, 32768] {
            for request in [1, 17, 20, 33, 100, 1000, 5000, 30000] {
                if let Some(class) = of(request, align) {
                    assert!(super::align(class) >= align);
                    assert!(size(class) >= request);
                }
            }
        }
        assert_eq!(of(17, 8).map(size), Some(24));
        assert_eq!(of(17, 16).map(size), Some(32));
        assert_eq!(of(8, 65536), None, "no class is aligned to 64 KiB");
    }

    #[test]
    fn the_fast_lookup_agrees_with_a_search_over_every_class() {
        let step = if cfg!(miri) { 97 } else { 1 };
        for align in [1, 2, 4, 8, 16, 64, 4096] {
            for request in (1..=MAX_SMALL + 1).step_by(step) {
                let reference =
                    (0..CLASSES).find(|&c| size(c) >= request && super::align(c) >= align);
                assert_eq!(
                    of(request, align),
                    reference,
                    "{request} aligned to {align}"
                );
                let common = of_common(request, align);
                if request <= TABLE_LIMIT && align <= 8 {
                    assert_eq!(common, reference, "{request} aligned to {align}");
                } else {
                    assert_eq!(common, None, "{request} aligned to {align}");
                }
            }
        }
    }
}
