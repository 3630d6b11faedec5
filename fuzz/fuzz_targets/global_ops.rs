//! Arbitrary bytes decoded into global operation programs, run against the
//! reference model shared with the proptests (tests/model/global.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/model/mod.rs"]
mod model;

fuzz_target!(|data: &[u8]| {
    if let Err(failure) = model::global::run(&model::global::decode(data)) {
        panic!("{failure}");
    }
});
