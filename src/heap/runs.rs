//! Page runs: a two-level segregated-fit allocator (TLSF) over an arena's
//! 4 KiB units.
//!
//! Every committed unit of the arena belongs to exactly one run, free or
//! used, and runs tile the committed units; the arena grows by adding units
//! at the end (`extend`) and shrinks by taking a free run off the end
//! (`trim_top`). The boundary tags live out of band, in one [`UnitMeta`] per
//! unit: the first unit of a run holds `HEAD` and its length (and, if free,
//! its free-list links), the last unit holds `TAIL` and the length. Freeing a
//! run reads the tail before it and the head after it to merge with free
//! neighbours, so two free runs are never adjacent. Free runs sit in lists
//! binned by length (a power-of-two row, split in four), found through two
//! levels of bitmaps: allocation and freeing take constant time.
//!
//! Written by hand because the allocator crates that implement TLSF (talc,
//! rlsf) keep their tags inside the managed memory; here the memory is pinned
//! and shared with devices and other processes, and a stray device write must
//! not be able to corrupt the allocator. The tags live in the arena's
//! metadata Block, `GROUP_UNITS` of them after each group's slab header (the
//! layout `tag` computes). Callers hold the arena's lock.

use core::ptr::NonNull;

/// log2 of the unit.
pub(crate) const UNIT_SHIFT: u32 = 12;
/// The unit of a run, in bytes.
pub(crate) const UNIT: usize = 1 << UNIT_SHIFT;

const NIL: u32 = u32::MAX;
const HEAD: u32 = 1;
const TAIL: u32 = 2;
const FREE: u32 = 4;

/// Rows of bins: run lengths up to 2^32 units.
const ROWS: usize = 31;
/// Bins per row.
const COLUMNS: usize = 4;

/// The boundary tag of one unit. Only the first and last unit of each run
/// hold meaningful values; the others keep whatever they last held.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UnitMeta {
    flags: u32,
    len: u32,
    next: u32,
    prev: u32,
}

/// Units per group of tags: the tags of units `16g .. 16g + 16` are
/// consecutive, and groups are `group_bytes` apart.
pub(crate) const GROUP_UNITS: u32 = 16;

/// The free runs of one arena.
pub(crate) struct Runs {
    /// The tag of unit 0.
    meta: NonNull<UnitMeta>,
    /// Bytes from one group's first tag to the next group's.
    group_bytes: usize,
    /// Units committed and tiled by runs.
    units: u32,
    /// Address of unit 0, for alignments larger than a unit.
    base: usize,
    rows: u32,
    columns: [u32; ROWS],
    heads: [[u32; COLUMNS]; ROWS],
    free_units: u32,
}

// SAFETY: `meta` points to the arena's tag array, which lives as long as the
// arena; a Runs is only reached through the arena's lock.
unsafe impl Send for Runs {}

/// The bin holding runs of `len` units.
#[inline]
fn bin(len: u32) -> (usize, usize) {
    if len < COLUMNS as u32 {
        return (0, len as usize);
    }
    let octave = 31 - len.leading_zeros();
    ((octave - 1) as usize, ((len >> (octave - 2)) & 3) as usize)
}

/// The first bin whose every run holds at least `len` units.
#[inline]
fn bin_at_least(len: u64) -> Option<(usize, usize)> {
    if len < COLUMNS as u64 {
        return Some((0, len as usize));
    }
    let octave = 63 - len.leading_zeros();
    let rounded = len + (1 << (octave - 2)) - 1;
    u32::try_from(rounded).ok().map(bin)
}

impl Runs {
    /// Runs over `units` units whose tags are at `meta` (unit 0's tag;
    /// groups of `GROUP_UNITS` tags `group_bytes` apart), all free.
    ///
    /// # Safety
    /// The tags of `units` units (and of every unit `extend` adds later) are
    /// writable, and only this value uses them, for as long as it lives;
    /// `base` is the address of unit 0.
    pub(crate) unsafe fn new(
        meta: NonNull<UnitMeta>,
        group_bytes: usize,
        units: u32,
        base: usize,
    ) -> Runs {
        debug_assert!(group_bytes >= GROUP_UNITS as usize * size_of::<UnitMeta>());
        let mut runs = Runs {
            meta,
            group_bytes,
            units,
            base,
            rows: 0,
            columns: [0; ROWS],
            heads: [[NIL; COLUMNS]; ROWS],
            free_units: 0,
        };
        if units > 0 {
            runs.insert(0, units);
        }
        runs
    }

    /// Where the tag of `unit` is.
    #[inline]
    fn tag_ptr(&self, unit: u32) -> NonNull<UnitMeta> {
        let group = (unit / GROUP_UNITS) as usize;
        let within = (unit % GROUP_UNITS) as usize;
        // SAFETY: callers pass units inside the arena, whose tags `new`'s
        // contract gives us at these places.
        unsafe { self.meta.byte_add(group * self.group_bytes).add(within) }
    }

    #[inline]
    fn tag(&self, unit: u32) -> &UnitMeta {
        debug_assert!(unit < self.units);
        // SAFETY: `unit < units` (callers stay inside the arena), and `new`'s
        // contract gives us the tags.
        unsafe { self.tag_ptr(unit).as_ref() }
    }

    #[inline]
    fn tag_mut(&mut self, unit: u32) -> &mut UnitMeta {
        debug_assert!(unit < self.units);
        // SAFETY: as `tag`; `&mut self` makes this the only access.
        unsafe { self.tag_ptr(unit).as_mut() }
    }

    /// Units committed and tiled by runs.
    pub(crate) fn units(&self) -> u32 {
        self.units
    }

    /// Adds the units `self.units..units` (whose tags are committed now) as
    /// free, merged with a free run at the old end.
    pub(crate) fn extend(&mut self, units: u32) {
        if units <= self.units {
            return;
        }
        let (mut start, mut len) = (self.units, units - self.units);
        if self.units > 0 {
            let last = *self.tag(self.units - 1);
            if last.flags & (TAIL | FREE) == TAIL | FREE {
                start -= last.len;
                len += last.len;
                self.remove(start);
            }
        }
        self.units = units;
        self.insert(start, len);
    }

    /// Takes the free run at the end off the arena, down to `keep` units at
    /// least; returns the units left (what is committed and tiled now), or
    /// `None` if nothing came off.
    pub(crate) fn trim_top(&mut self, keep: u32) -> Option<u32> {
        if self.units <= keep {
            return None;
        }
        let last = *self.tag(self.units - 1);
        if last.flags & (TAIL | FREE) != TAIL | FREE {
            return None;
        }
        let start = self.units - last.len;
        let end = start.max(keep);
        if end >= self.units {
            return None;
        }
        self.remove(start);
        if end > start {
            self.insert(start, end - start);
        }
        self.units = end;
        // The run inserted above (if any) now ends the arena: its tail tag is
        // inside `end`.
        Some(end)
    }

    /// The length of the free run that ends the arena, if the last run is free.
    pub(crate) fn free_top(&self) -> u32 {
        if self.units == 0 {
            return 0;
        }
        let last = *self.tag(self.units - 1);
        if last.flags & (TAIL | FREE) == TAIL | FREE {
            last.len
        } else {
            0
        }
    }

    /// Units in free runs.
    pub(crate) fn free_units(&self) -> u32 {
        self.free_units
    }

    /// Calls `f` with the start and length of every free run, in no
    /// particular order.
    pub(crate) fn for_each_free(&self, mut f: impl FnMut(u32, u32)) {
        for row in 0..ROWS {
            if self.rows & (1 << row) == 0 {
                continue;
            }
            for column in 0..COLUMNS {
                let mut at = self.heads[row][column];
                while at != NIL {
                    let tag = *self.tag(at);
                    f(at, tag.len);
                    at = tag.next;
                }
            }
        }
    }

    /// Writes the tags of a run.
    fn tag_run(&mut self, start: u32, len: u32, free: u32) {
        let single = if len == 1 { TAIL } else { 0 };
        *self.tag_mut(start) = UnitMeta {
            flags: HEAD | single | free,
            len,
            next: NIL,
            prev: NIL,
        };
        if len > 1 {
            *self.tag_mut(start + len - 1) = UnitMeta {
                flags: TAIL | free,
                len,
                next: NIL,
                prev: NIL,
            };
        }
    }

    /// Adds the free run `start..start + len` to its bin. Its neighbours must
    /// not be free.
    fn insert(&mut self, start: u32, len: u32) {
        let (row, column) = bin(len);
        let first = self.heads[row][column];
        self.tag_run(start, len, FREE);
        self.tag_mut(start).next = first;
        if first != NIL {
            self.tag_mut(first).prev = start;
        }
        self.heads[row][column] = start;
        self.columns[row] |= 1 << column;
        self.rows |= 1 << row;
        self.free_units += len;
    }

    /// Takes the free run at `start` out of its bin.
    fn remove(&mut self, start: u32) {
        let UnitMeta {
            flags,
            len,
            next,
            prev,
        } = *self.tag(start);
        debug_assert_eq!(flags & (HEAD | FREE), HEAD | FREE);
        let (row, column) = bin(len);
        if prev == NIL {
            self.heads[row][column] = next;
        } else {
            self.tag_mut(prev).next = next;
        }
        if next != NIL {
            self.tag_mut(next).prev = prev;
        }
        if self.heads[row][column] == NIL {
            self.columns[row] &= !(1 << column);
            if self.columns[row] == 0 {
                self.rows &= !(1 << row);
            }
        }
        self.free_units -= len;
    }

    /// The head of a free run in the first non-empty bin at or after `bin`.
    fn find(&self, (row, column): (usize, usize)) -> Option<u32> {
        let mut columns = self.columns[row] & (!0 << column);
        let mut row = row;
        if columns == 0 {
            let rows = self.rows & (!0u32).checked_shl(row as u32 + 1).unwrap_or(0);
            if rows == 0 {
                return None;
            }
            row = rows.trailing_zeros() as usize;
            columns = self.columns[row];
        }
        Some(self.heads[row][columns.trailing_zeros() as usize])
    }

    /// Where `len` units aligned to `step` units start inside the free run at
    /// `start`, if they fit.
    #[inline]
    fn fit(&self, start: u32, len: u32, step: u32) -> Option<u32> {
        // The first unit at or after `start` whose address is aligned.
        let phase = ((self.base >> UNIT_SHIFT).wrapping_neg() & (step as usize - 1)) as u32;
        let aligned = start + (phase.wrapping_sub(start) & (step - 1));
        let end = u64::from(start) + u64::from(self.tag(start).len);
        (u64::from(aligned) + u64::from(len) <= end).then_some(aligned)
    }

    /// Walks the bins from `from` up to (not including) `to` for a free run
    /// that fits `len` units aligned to `step`: the runs that the constant-time
    /// search skips because only some of their bin's runs are long enough.
    fn scan(
        &self,
        from: (usize, usize),
        to: (usize, usize),
        len: u32,
        step: u32,
    ) -> Option<(u32, u32)> {
        let (mut row, mut column) = from;
        while (row, column) < to && row < ROWS {
            let mut at = self.heads[row][column];
            while at != NIL {
                if let Some(aligned) = self.fit(at, len, step) {
                    return Some((at, aligned));
                }
                at = self.tag(at).next;
            }
            column += 1;
            if column == COLUMNS {
                (row, column) = (row + 1, 0);
            }
        }
        None
    }

    /// Allocates `len` units starting at an address aligned to `align` (a power
    /// of two); returns the first unit.
    ///
    /// A run from a bin whose every run is long enough is taken in constant
    /// time (two-level segregated fit); failing that, the bins whose runs are
    /// only sometimes long enough are searched. Aligned requests (slabs) search
    /// those first, so that a freed slab's group is reused before a larger run
    /// is split.
    pub(crate) fn alloc(&mut self, len: u32, align: usize) -> Option<u32> {
        if len == 0 || len > self.units {
            return None;
        }
        let step = (align >> UNIT_SHIFT).max(1);
        let step = u32::try_from(step).ok().filter(|&s| s <= self.units)?;
        let sure = bin_at_least(u64::from(len) + u64::from(step) - 1);
        let maybe = bin(len);
        let constant = |runs: &Self| {
            let start = runs.find(sure?)?;
            Some((start, runs.fit(start, len, step)?))
        };
        let searched = |runs: &Self| runs.scan(maybe, sure.unwrap_or((ROWS, 0)), len, step);
        let (start, aligned) = if step > 1 {
            searched(self).or_else(|| constant(self))
        } else {
            constant(self).or_else(|| searched(self))
        }?;
        let found = self.tag(start).len;
        self.remove(start);
        let prefix = aligned - start;
        let suffix = found - prefix - len;
        if prefix > 0 {
            self.insert(start, prefix);
        }
        if suffix > 0 {
            self.insert(aligned + len, suffix);
        }
        self.tag_run(aligned, len, 0);
        Some(aligned)
    }

    /// The length of the used run at `start`, if a used run starts there.
    pub(crate) fn used_len(&self, start: u32) -> Option<u32> {
        if start >= self.units {
            return None;
        }
        let tag = self.tag(start);
        (tag.flags & (HEAD | FREE) == HEAD).then_some(tag.len)
    }

    /// Frees the used run at `start`, merging it with free neighbours.
    pub(crate) fn free(&mut self, start: u32) {
        let Some(len) = self.used_len(start) else {
            debug_assert!(false, "freeing unit {start}, which starts no used run");
            return;
        };
        let (mut start, mut len) = (start, len);
        if start > 0 {
            let before = *self.tag(start - 1);
            if before.flags & (TAIL | FREE) == TAIL | FREE {
                start -= before.len;
                len += before.len;
                self.remove(start);
            }
        }
        let end = start + len;
        if end < self.units {
            let after = *self.tag(end);
            if after.flags & (HEAD | FREE) == HEAD | FREE {
                self.remove(end);
                len += after.len;
            }
        }
        self.insert(start, len);
    }

    /// Grows the used run at `start` to `len` units by taking from the free
    /// run after it; false if there is not enough.
    pub(crate) fn grow(&mut self, start: u32, len: u32) -> bool {
        let Some(old) = self.used_len(start) else {
            return false;
        };
        if len <= old {
            return len == old;
        }
        let end = start + old;
        let need = len - old;
        if end >= self.units {
            return false;
        }
        let after = *self.tag(end);
        if after.flags & (HEAD | FREE) != HEAD | FREE || after.len < need {
            return false;
        }
        self.remove(end);
        if after.len > need {
            self.insert(start + len, after.len - need);
        }
        self.tag_run(start, len, 0);
        true
    }

    /// Shrinks the used run at `start` to `len` (at least 1) units, freeing
    /// the tail.
    pub(crate) fn shrink(&mut self, start: u32, len: u32) {
        let Some(old) = self.used_len(start) else {
            return;
        };
        if len == 0 || len >= old {
            return;
        }
        self.tag_run(start, len, 0);
        self.tag_run(start + len, old - len, 0);
        self.free(start + len);
    }

    /// Checks every invariant: runs tile the units, tags agree at both ends,
    /// no two free runs touch, every free run is in the right bin once, and
    /// the bitmaps and the free count agree with the bins.
    #[cfg(test)]
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut unit = 0;
        let mut free = 0;
        let mut previous_free = false;
        let mut free_heads = Vec::new();
        while unit < self.units {
            let head = *self.tag(unit);
            if head.flags & HEAD == 0 || head.len == 0 || unit + head.len > self.units {
                return Err(format!("unit {unit}: bad head {head:?}"));
            }
            let tail = *self.tag(unit + head.len - 1);
            let is_free = head.flags & FREE != 0;
            if tail.flags & TAIL == 0 || tail.len != head.len || (tail.flags & FREE != 0) != is_free
            {
                return Err(format!(
                    "run at {unit}: tail {tail:?} disagrees with {head:?}"
                ));
            }
            if is_free {
                if previous_free {
                    return Err(format!("free run at {unit} touches the one before"));
                }
                free += head.len;
                free_heads.push(unit);
            }
            previous_free = is_free;
            unit += head.len;
        }
        if free != self.free_units {
            return Err(format!(
                "free units {} counted as {}",
                free, self.free_units
            ));
        }
        let mut listed = Vec::new();
        for row in 0..ROWS {
            for column in 0..COLUMNS {
                let mut at = self.heads[row][column];
                let mut prev = NIL;
                let bit = self.columns[row] & (1 << column) != 0;
                if bit != (at != NIL) {
                    return Err(format!("bitmap of bin ({row}, {column}) is wrong"));
                }
                while at != NIL {
                    let tag = *self.tag(at);
                    if bin(tag.len) != (row, column) || tag.prev != prev {
                        return Err(format!("run at {at} misfiled or mislinked"));
                    }
                    listed.push(at);
                    prev = at;
                    at = tag.next;
                }
            }
            if (self.rows & (1 << row) != 0) != (self.columns[row] != 0) {
                return Err(format!("row bitmap {row} is wrong"));
            }
        }
        listed.sort_unstable();
        if listed != free_heads {
            return Err(format!(
                "bins hold {listed:?}, free runs are {free_heads:?}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Runs over `units` units with tags in a Vec (which must outlive them),
    /// room for `room` units in all.
    pub(crate) fn runs_with_room(
        tags: &mut Vec<UnitMeta>,
        units: u32,
        room: u32,
        base: usize,
    ) -> Runs {
        tags.clear();
        tags.resize(
            room.next_multiple_of(GROUP_UNITS) as usize,
            UnitMeta::default(),
        );
        let group_bytes = GROUP_UNITS as usize * size_of::<UnitMeta>();
        // SAFETY: the Vec holds the tags of `room` units, consecutive (so
        // groups are `group_bytes` apart), and outlives the Runs in tests.
        unsafe {
            Runs::new(
                NonNull::new(tags.as_mut_ptr()).unwrap(),
                group_bytes,
                units,
                base,
            )
        }
    }

    /// Runs over `units` units with tags in a Vec (which must outlive them).
    pub(crate) fn runs(tags: &mut Vec<UnitMeta>, units: u32, base: usize) -> Runs {
        runs_with_room(tags, units, units, base)
    }

    /// The shortest run a bin holds.
    fn bin_min((row, column): (usize, usize)) -> u64 {
        if row == 0 {
            column as u64
        } else {
            (4 + column as u64) << (row - 1)
        }
    }

    #[test]
    fn bins_partition_lengths() {
        let mut last = (0, 0);
        let lengths = if cfg!(miri) { 2_000 } else { 200_000 };
        for len in (1..lengths).chain([u32::MAX / 2, u32::MAX - (1 << 29)]) {
            let b = bin(len);
            assert!(b >= last, "bins grow with length");
            last = b;
            assert!(
                bin_min(b) <= u64::from(len),
                "len {len} below its bin {b:?}"
            );
            // Every run in the `at least` bin is long enough.
            let sure = bin_at_least(u64::from(len)).unwrap();
            assert!(bin_min(sure) >= u64::from(len), "len {len}: bin {sure:?}");
            assert!(sure >= b);
        }
        assert_eq!(bin_at_least(u64::from(u32::MAX)), None);
    }

    #[test]
    fn alloc_free_and_merge() {
        let mut tags = Vec::new();
        let mut r = runs(&mut tags, 100, 0);
        let a = r.alloc(10, UNIT).unwrap();
        let b = r.alloc(1, UNIT).unwrap();
        let c = r.alloc(20, UNIT).unwrap();
        r.check().unwrap();
        assert_eq!(r.free_units(), 69);
        r.free(b);
        r.check().unwrap();
        r.free(a);
        r.check().unwrap();
        r.free(c);
        r.check().unwrap();
        assert_eq!(r.free_units(), 100);
        assert_eq!(r.alloc(100, UNIT), Some(0), "merged back into one run");
        assert_eq!(r.alloc(1, UNIT), None);
    }

    #[test]
    fn aligned_runs_start_on_aligned_addresses() {
        let mut tags = Vec::new();
        let base = 0x10_0000 + 3 * UNIT; // unit 0 is not 64 KiB-aligned
        let mut r = runs(&mut tags, 200, base);
        r.alloc(1, UNIT).unwrap();
        for _ in 0..5 {
            let start = r.alloc(16, 64 << 10).unwrap();
            assert_eq!((base + start as usize * UNIT) % (64 << 10), 0);
            r.check().unwrap();
        }
        assert_eq!(
            r.alloc(16, 1 << 30),
            None,
            "alignment larger than the arena"
        );
    }

    #[test]
    fn grow_and_shrink_in_place() {
        let mut tags = Vec::new();
        let mut r = runs(&mut tags, 64, 0);
        let a = r.alloc(4, UNIT).unwrap();
        assert!(r.grow(a, 10));
        assert_eq!(r.used_len(a), Some(10));
        r.check().unwrap();
        let b = r.alloc(4, UNIT).unwrap();
        assert!(!r.grow(a, 11), "b is in the way");
        r.shrink(a, 2);
        r.check().unwrap();
        assert_eq!(r.free_units(), 64 - 2 - 4);
        assert!(r.grow(a, 10), "the freed tail is there again");
        r.free(b);
        r.free(a);
        r.check().unwrap();
        assert_eq!(r.free_units(), 64);
    }

    #[test]
    fn extend_merges_and_trim_takes_the_free_top_off() {
        let mut tags = Vec::new();
        let mut r = runs_with_room(&mut tags, 16, 256, 0);
        let a = r.alloc(10, UNIT).unwrap();
        r.extend(64);
        r.check().unwrap();
        assert_eq!(r.units(), 64);
        assert_eq!(
            r.free_top(),
            54,
            "the old free tail merged with the new units"
        );
        assert_eq!(r.alloc(54, UNIT), Some(10), "one run past the old end");
        r.free(10);
        let b = r.alloc(4, UNIT).unwrap();
        r.check().unwrap();
        r.free(b);
        assert_eq!(r.trim_top(20), Some(20), "down to the kept units");
        r.check().unwrap();
        assert_eq!(r.free_units(), 10);
        assert_eq!(r.trim_top(0), Some(10), "then down to the used run");
        r.check().unwrap();
        assert_eq!(r.trim_top(0), None, "nothing free on top");
        r.extend(32);
        r.free(a);
        r.check().unwrap();
        assert_eq!(r.free_top(), 32);
        assert_eq!(r.trim_top(0), Some(0));
        assert_eq!(r.units(), 0);
        r.extend(8);
        r.check().unwrap();
        assert_eq!(r.alloc(8, UNIT), Some(0));
    }

    #[test]
    fn free_runs_are_all_walked() {
        let mut tags = Vec::new();
        let mut r = runs(&mut tags, 100, 0);
        let taken: Vec<u32> = (0..10).map(|i| r.alloc(1 + i, UNIT).unwrap()).collect();
        for &start in taken.iter().step_by(2) {
            r.free(start);
        }
        let mut seen = Vec::new();
        r.for_each_free(|start, len| seen.push((start, len)));
        seen.sort_unstable();
        assert_eq!(
            seen.iter().map(|&(_, len)| len).sum::<u32>(),
            r.free_units()
        );
        assert!(
            seen.windows(2).all(|w| w[0].0 + w[0].1 < w[1].0),
            "{seen:?}"
        );
        for &start in taken.iter().skip(1).step_by(2) {
            r.free(start);
        }
        let mut all = Vec::new();
        r.for_each_free(|start, len| all.push((start, len)));
        assert_eq!(all, [(0, 100)]);
    }

    #[test]
    fn bad_requests_fail() {
        let mut tags = Vec::new();
        let mut r = runs(&mut tags, 8, 0);
        assert_eq!(r.alloc(0, UNIT), None);
        assert_eq!(r.alloc(9, UNIT), None);
        assert_eq!(r.used_len(3), None);
        assert_eq!(r.used_len(100), None);
        r.check().unwrap();
    }
}
