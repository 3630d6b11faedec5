//! Arbitrary bytes decoded into heap operation programs, run against the
//! reference model shared with the proptests (tests/model/heap.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/model/mod.rs"]
mod model;

fuzz_target!(|data: &[u8]| {
    if let Err(failure) = model::heap::run(&model::heap::decode(data)) {
        panic!("{failure}");
    }
});
