//! Arbitrary bytes decoded into grid operation programs, run against the
//! reference model shared with the proptests (tests/model/grid.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/model/mod.rs"]
mod model;

fuzz_target!(|data: &[u8]| {
    if let Err(failure) = model::grid::run(&model::grid::decode(data), false) {
        panic!("{failure}");
    }
});
