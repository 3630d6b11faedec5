//! Arbitrary bytes decoded into tape operation programs, run against the
//! reference model shared with the proptests (tests/model/tape.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/model/mod.rs"]
mod model;

fuzz_target!(|data: &[u8]| {
    if let Err(failure) = model::tape::run(&model::tape::decode(data)) {
        panic!("{failure}");
    }
});
