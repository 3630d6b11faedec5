//! Proptest state-machine tests: random operation programs against Tape,
//! Grid and Heap and their reference models (`tests/model`), with every
//! invariant checked after every step. The same programs, decoded from raw
//! bytes, drive the cargo-fuzz targets.

mod model;

use proptest::prelude::*;

fn cases(normal: u32) -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 2 } else { normal },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Program lengths: shorter under Miri, which runs every step hundreds of
/// times slower.
const OPS: usize = if cfg!(miri) { 40 } else { 200 };
/// Fuzz-style inputs, in bytes.
const BYTES: usize = if cfg!(miri) { 200 } else { 1500 };

fn tape_op() -> impl Strategy<Value = model::tape::Op> {
    use model::tape::Op;
    prop_oneof![
        3 => (0usize..5000, 0u8..18).prop_map(|(size, align_log2)| Op::Take { size, align_log2 }),
        4 => (0usize..5000, 0u8..14, any::<bool>())
            .prop_map(|(size, align_log2, zeroed)| Op::Allocate { size, align_log2, zeroed }),
        2 => any::<usize>().prop_map(|index| Op::Deallocate { index }),
        2 => (any::<usize>(), 0usize..5000, any::<bool>())
            .prop_map(|(index, extra, zeroed)| Op::Grow { index, extra, zeroed }),
        2 => (any::<usize>(), 0usize..5000).prop_map(|(index, size)| Op::Shrink { index, size }),
        1 => Just(Op::Clear),
    ]
}

fn grid_op() -> impl Strategy<Value = model::grid::Op> {
    use model::grid::Op;
    prop_oneof![
        4 => Just(Op::Take),
        2 => any::<usize>().prop_map(|index| Op::Give { index }),
        2 => any::<usize>().prop_map(|index| Op::Drop { index }),
        1 => any::<usize>().prop_map(|index| Op::ForeignGive { index }),
        3 => (0usize..400, 0u8..16).prop_map(|(size, align_log2)| Op::Allocate { size, align_log2 }),
        2 => any::<usize>().prop_map(|index| Op::Deallocate { index }),
    ]
}

fn heap_size() -> impl Strategy<Value = usize> {
    prop_oneof![6 => 1usize..512, 3 => 1usize..(32 << 10), 1 => 1usize..(300 << 10)]
}

fn heap_op() -> impl Strategy<Value = model::heap::Op> {
    use model::heap::Op;
    prop_oneof![
        5 => (heap_size(), 0u8..14, any::<bool>())
            .prop_map(|(size, align_log2, zeroed)| Op::Allocate { size, align_log2, zeroed }),
        3 => any::<usize>().prop_map(|index| Op::Deallocate { index }),
        2 => (any::<usize>(), heap_size(), any::<bool>())
            .prop_map(|(index, size, zeroed)| Op::Grow { index, size, zeroed }),
        1 => (any::<usize>(), 1usize..4096).prop_map(|(index, size)| Op::Shrink { index, size }),
        1 => Just(Op::Trim),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn tape_matches_its_model(ops in prop::collection::vec(tape_op(), 0..OPS)) {
        model::tape::run(&ops).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn grid_matches_its_model(ops in prop::collection::vec(grid_op(), 0..OPS)) {
        model::grid::run(&ops, true).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn heap_matches_its_model(ops in prop::collection::vec(heap_op(), 0..OPS * 3 / 2)) {
        model::heap::run(&ops).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(cases(64))]

    /// The fuzz targets' decoding path, fed random bytes.
    #[test]
    fn decoded_programs_run_clean(bytes in prop::collection::vec(any::<u8>(), 0..BYTES)) {
        model::tape::run(&model::tape::decode(&bytes)).map_err(TestCaseError::fail)?;
        model::grid::run(&model::grid::decode(&bytes), true).map_err(TestCaseError::fail)?;
        model::heap::run(&model::heap::decode(&bytes)).map_err(TestCaseError::fail)?;
        model::global::run(&model::global::decode(&bytes)).map_err(TestCaseError::fail)?;
    }
}
