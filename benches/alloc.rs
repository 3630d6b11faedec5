//! Allocation benchmarks: unimem's allocators against the system allocator,
//! mimalloc, bumpalo and the standard containers. One module per subject;
//! `benches/README.md` says what each figure means.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mimalloc::MiMalloc;
use unimem::{BlockOptions, Heap, Pinning};

const OPTIONS: BlockOptions<'static> = BlockOptions::new().pinning(Pinning::BestEffort);

/// One allocation and its free, through `GlobalAlloc`.
fn pair<A: GlobalAlloc>(alloc: &A, layout: Layout) {
    // SAFETY: a non-zero layout; the pointer is freed with it at once.
    unsafe {
        let p = alloc.alloc(layout);
        black_box(p);
        alloc.dealloc(p, layout);
    }
}

mod heap {
    use super::*;

    static HEAP: Heap = Heap::lazy_with(64 << 20, OPTIONS);

    pub fn pairs(c: &mut Criterion) {
        for size in [64usize, 4096] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            let mut group = c.benchmark_group(format!("malloc+free {size} B"));
            group.bench_function("unimem Heap", |b| b.iter(|| pair(&HEAP, layout)));
            group.bench_function("mimalloc", |b| b.iter(|| pair(&MiMalloc, layout)));
            group.bench_function("system", |b| b.iter(|| pair(&System, layout)));
            group.finish();
        }
    }
}

criterion_group!(benches, heap::pairs);
criterion_main!(benches);
