//! Criterion benchmarks of every row of the table (`benches/README.md`):
//! unimem's allocators against the system allocator, mimalloc, bumpalo,
//! `Vec`, `Box`, `mmap` and `mmap`+`mlock`, and the fast paths against their
//! baselines. `cargo bench -p unimem-benches --bench table` prints the same rows as one table.

mod support;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn all(c: &mut Criterion) {
    for row in support::rows() {
        let mut group = c.benchmark_group(row.name);
        if let support::Unit::Bandwidth(bytes) = row.unit {
            group.throughput(Throughput::Bytes(bytes));
            group.sample_size(10);
        }
        if row.name.starts_with("init") {
            group.sample_size(20);
        }
        for (name, subject) in &row.subjects {
            group.bench_function(*name, |b| b.iter_custom(subject));
        }
        group.finish();
    }
}

criterion_group!(benches, all);
criterion_main!(benches);
