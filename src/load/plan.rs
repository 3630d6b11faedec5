//! [`Plan`]: byte ranges of files, each with its destination, cut into the
//! requests an engine issues: direct reads straight into the destination
//! where file offset and address agree modulo the file's direct I/O
//! alignment, an unaligned head and tail through a bounce buffer, and
//! buffered reads for files read through the page cache.

use super::DirectAlign;

/// How many bytes one bounce read covers at most, when a whole range has to
/// go through the bounce buffer (its destination disagrees with the file's
/// alignment): one transparent huge page, as large as a request needs to be
/// to run at the storage's speed.
pub(crate) const BOUNCE_MAX: usize = 2 << 20;

/// One range of one file and where it lands.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    /// Index of the source.
    pub(crate) source: usize,
    /// The range's first byte in the file.
    pub(crate) offset: u64,
    /// Its length.
    pub(crate) len: usize,
    /// Where its first byte lands.
    pub(crate) dst: *mut u8,
    /// Bytes before `dst` that the reader may overwrite (room a placement
    /// left so that an unaligned head is read directly too).
    pub(crate) before: usize,
    /// Bytes after `dst + len` that the reader may overwrite.
    pub(crate) after: usize,
}

/// How one source is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Directly, through `fd` (opened `O_DIRECT`) with this alignment.
    Direct { fd: i32, align: DirectAlign },
    /// Through the page cache, through `fd`.
    Buffered { fd: i32 },
}

/// What one request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A direct read straight into the destination.
    Direct,
    /// A buffered read straight into the destination.
    Buffered,
    /// A direct read into a bounce buffer, of which `want` bytes from
    /// `skip` are then copied to the destination.
    Bounce { skip: usize, want: usize },
}

/// One request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Op {
    /// Index of the source, for errors.
    pub(crate) source: usize,
    /// The descriptor to read.
    pub(crate) fd: i32,
    /// The first byte in the file.
    pub(crate) offset: u64,
    /// Bytes to read.
    pub(crate) len: usize,
    /// Bytes that must arrive (fewer than `len` only where the read runs
    /// past the end of the file into room the placement left).
    pub(crate) need: usize,
    /// Where the read lands (for a bounce request: where the copy goes).
    pub(crate) dst: *mut u8,
    /// What it does.
    pub(crate) kind: Kind,
    /// Bytes of the asked ranges it fills, for progress.
    pub(crate) delivered: usize,
    /// For direct reads, the offset alignment a continued read needs.
    pub(crate) unit: usize,
}

/// Every request for one read, and what they add up to.
pub(crate) struct Plan {
    pub(crate) ops: Vec<Op>,
    /// The largest bounce read, and the alignment bounce buffers need.
    pub(crate) bounce_len: usize,
    pub(crate) bounce_align: usize,
    /// Bytes asked for.
    pub(crate) total: u64,
    /// Of those: read straight into place directly, read buffered, copied
    /// from a bounce buffer.
    pub(crate) direct: u64,
    pub(crate) buffered: u64,
    pub(crate) copied: u64,
}

impl Plan {
    /// Cuts `spans` into requests of at most `chunk` bytes (rounded up to
    /// each file's alignment), reading source `i` as `modes[i]` says.
    pub(crate) fn new(spans: &[Span], modes: &[Mode], chunk: usize) -> Plan {
        let mut plan = Plan {
            ops: Vec::new(),
            bounce_len: 0,
            bounce_align: 4096,
            total: 0,
            direct: 0,
            buffered: 0,
            copied: 0,
        };
        for span in spans.iter().filter(|span| span.len > 0) {
            plan.total += span.len as u64;
            match modes[span.source] {
                Mode::Buffered { fd } => plan.buffered_span(span, fd, chunk),
                Mode::Direct { fd, align } => plan.direct_span(span, fd, align, chunk),
            }
        }
        plan
    }

    fn buffered_span(&mut self, span: &Span, fd: i32, chunk: usize) {
        let mut done = 0;
        while done < span.len {
            let len = chunk.min(span.len - done);
            self.ops.push(Op {
                source: span.source,
                fd,
                offset: span.offset + done as u64,
                len,
                need: len,
                dst: span.dst.wrapping_add(done),
                kind: Kind::Buffered,
                delivered: len,
                unit: 0,
            });
            done += len;
        }
        self.buffered += span.len as u64;
    }

    fn direct_span(&mut self, span: &Span, fd: i32, align: DirectAlign, chunk: usize) {
        let unit = align.offset as u64;
        let chunk = chunk.next_multiple_of(align.unit()) as u64;
        let (f, e) = (span.offset, span.offset + span.len as u64);
        let (fa, eb) = (f - f % unit, e.next_multiple_of(unit));
        let head = (f - fa) as usize;
        let tail = (eb - e) as usize;
        let aligned = |addr: usize| addr.is_multiple_of(align.memory);

        // The whole range, head and tail included, straight into place: the
        // placement left room around it and the addresses agree.
        if span.before >= head && span.after >= tail && aligned(span.dst.addr().wrapping_sub(head))
        {
            self.direct_range(span, fd, fa, eb, chunk, unit);
            return;
        }
        // The aligned middle straight into place, head and tail bounced.
        let (ia, ib) = (f.next_multiple_of(unit), e - e % unit);
        if ia < ib && aligned(span.dst.addr() + (ia - f) as usize) {
            if f < ia {
                self.bounce(span, fd, fa, fa + unit, unit);
            }
            self.direct_range(span, fd, ia, ib, chunk, unit);
            if ib < e {
                self.bounce(span, fd, ib, ib + unit, unit);
            }
            return;
        }
        // Nothing agrees: everything through the bounce buffer.
        let window = (BOUNCE_MAX as u64).next_multiple_of(align.unit() as u64);
        let mut w = fa;
        while w < e {
            let end = (w + window).min(eb);
            self.bounce(span, fd, w, end, unit);
            w = end;
        }
        self.bounce_align = self.bounce_align.max(align.memory);
    }

    /// Direct reads of `[from, to)` (aligned) straight into the span's
    /// memory, in chunks.
    fn direct_range(&mut self, span: &Span, fd: i32, from: u64, to: u64, chunk: u64, unit: u64) {
        let (f, e) = (span.offset, span.offset + span.len as u64);
        let mut at = from;
        while at < to {
            let end = (at + chunk).min(to);
            let delivered = end.min(e).saturating_sub(at.max(f));
            self.ops.push(Op {
                source: span.source,
                fd,
                offset: at,
                len: (end - at) as usize,
                need: (e.min(end) - at) as usize,
                // `at - f` may be negative (the head before the span, in
                // room the placement left): wrapping arithmetic stays in
                // the allocation, as `before` promises.
                dst: span.dst.wrapping_offset((at as i128 - f as i128) as isize),
                kind: Kind::Direct,
                delivered: delivered as usize,
                unit: unit as usize,
            });
            self.direct += delivered;
            at = end;
        }
    }

    /// A bounce read of `[from, to)` (aligned), of which the part inside the
    /// span is copied into place.
    fn bounce(&mut self, span: &Span, fd: i32, from: u64, to: u64, unit: u64) {
        let (f, e) = (span.offset, span.offset + span.len as u64);
        let start = from.max(f);
        let want = (to.min(e) - start) as usize;
        let skip = (start - from) as usize;
        self.ops.push(Op {
            source: span.source,
            fd,
            offset: from,
            len: (to - from) as usize,
            need: skip + want,
            dst: span.dst.wrapping_add((start - f) as usize),
            kind: Kind::Bounce { skip, want },
            delivered: want,
            unit: unit as usize,
        });
        self.bounce_len = self.bounce_len.max((to - from) as usize);
        self.copied += want as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A512: DirectAlign = DirectAlign {
        memory: 512,
        offset: 512,
    };

    fn span(offset: u64, len: usize, dst: usize, before: usize, after: usize) -> Span {
        Span {
            source: 0,
            offset,
            len,
            dst: core::ptr::without_provenance_mut(dst),
            before,
            after,
        }
    }

    /// Every byte of the span is delivered exactly once, into the right
    /// place, and direct reads are aligned.
    fn check(plan: &Plan, span: &Span) {
        let mut covered = vec![0u8; span.len];
        for op in &plan.ops {
            match op.kind {
                Kind::Direct => {
                    assert_eq!(op.offset % 512, 0);
                    assert_eq!(op.len % 512, 0);
                    assert_eq!(op.dst.addr() % 512, 0);
                    for i in 0..op.len {
                        let file = op.offset + i as u64;
                        if file >= span.offset && file < span.offset + span.len as u64 {
                            let at = (file - span.offset) as usize;
                            assert_eq!(op.dst.addr() + i, span.dst.addr() + at);
                            covered[at] += 1;
                        }
                    }
                }
                Kind::Bounce { skip, want } => {
                    assert_eq!(op.offset % 512, 0);
                    assert_eq!(op.len % 512, 0);
                    let file = op.offset + skip as u64;
                    let at = (file - span.offset) as usize;
                    assert_eq!(op.dst.addr(), span.dst.addr() + at);
                    for c in &mut covered[at..at + want] {
                        *c += 1;
                    }
                }
                Kind::Buffered => unreachable!(),
            }
        }
        assert!(covered.iter().all(|&c| c == 1), "{covered:?}");
        assert_eq!(plan.direct + plan.copied, span.len as u64);
    }

    #[test]
    fn agreeing_addresses_with_room_read_everything_directly() {
        let s = span(1000, 10_000, 0x10000 + 1000 % 512, 512, 512);
        let plan = Plan::new(&[s], &[Mode::Direct { fd: 3, align: A512 }], 4096);
        check(&plan, &s);
        assert_eq!(plan.copied, 0);
        assert!(plan.ops.iter().all(|op| op.kind == Kind::Direct));
        assert_eq!(plan.bounce_len, 0);
    }

    #[test]
    fn without_room_head_and_tail_are_bounced() {
        let s = span(1000, 10_000, 0x10000 + 1000 % 512, 0, 0);
        let plan = Plan::new(&[s], &[Mode::Direct { fd: 3, align: A512 }], 4096);
        check(&plan, &s);
        assert_eq!(plan.copied, (1024 - 1000) + (11_000 - 10_752));
        assert!(plan.copied < 1024);
    }

    #[test]
    fn disagreeing_addresses_bounce_everything() {
        let s = span(1000, 3 << 20, 0x10000, 4096, 4096);
        let plan = Plan::new(&[s], &[Mode::Direct { fd: 3, align: A512 }], 1 << 20);
        check(&plan, &s);
        assert_eq!(plan.copied, 3 << 20);
        assert!(plan.bounce_len <= BOUNCE_MAX + 512);
    }

    #[test]
    fn small_ranges_inside_one_block() {
        for (offset, len) in [(0, 1), (5, 10), (511, 1), (511, 2), (0, 512), (100, 600)] {
            let s = span(offset, len, 0x20000 + 7, 0, 0);
            let plan = Plan::new(&[s], &[Mode::Direct { fd: 3, align: A512 }], 4096);
            check(&plan, &s);
        }
    }

    #[test]
    fn buffered_ranges_are_chunked() {
        let s = span(3, 10_000, 0x10001, 0, 0);
        let plan = Plan::new(&[s], &[Mode::Buffered { fd: 3 }], 4096);
        assert_eq!(plan.ops.len(), 3);
        assert_eq!(plan.buffered, 10_000);
        assert_eq!(plan.ops.iter().map(|op| op.len).sum::<usize>(), 10_000);
    }
}
